#!/usr/bin/env bash
# Train the texture stage (gpu_job/texture.py) on a lent GPU for about 8 minutes.
# Prepare here, once: a subset of the original images (not re-encoded: the stage learns their
# pixel-scale texture); about 38 MB, which with the ~23 MB that always travels fits a call's 64 MiB:
#   .venv/bin/python scripts/native_subset.py ../shared/data/pbc/train .cache/native/train 2000
#   .venv/bin/python scripts/native_subset.py ../shared/data/pbc/val   .cache/native/val   128
# Dry run here: PATH=$PWD/.venv/bin:$PATH DEVICE=cpu BATCH=8 MINUTES=0.3 OUT=/tmp/tex-dry scripts/paused.sh bash scripts/gpu_train_texture.sh
# Then call the device tool with carry [".cache/native"] and command: bash scripts/gpu_train_texture.sh
# INIT=weights continues from texture-stage weights (e.g. a CPU run's best.safetensors, carried too).
# It brings back $OUT/run/: best.safetensors (6.6 MB), best.json, log.jsonl, loss.png.
set -euo pipefail
export PYTHONPATH=. PYTHONUNBUFFERED=1
OUT=${OUT:-out/gpu}
DEVICE=${DEVICE:-cuda} BATCH=${BATCH:-256}
INIT_FLAG=$([ -n "${INIT:-}" ] && echo "--init $INIT" || true)
mkdir -p "$OUT"
nvidia-smi -L || true
python3 -m gpu_job train-texture --data .cache/native/train --val-data .cache/native/val --max-images 2000 $INIT_FLAG \
  --out "$OUT/run" --device "$DEVICE" --minutes "${MINUTES:-8}" --ckpt-minutes 2 --batch-size "$BATCH" --lr 3e-4 --threads 8 \
  2>&1 | tr '\r' '\n' | grep -v '^train-texture:.*\(it/s\|s/it\)' | tee "$OUT/train.log"
rm -f "$OUT/run/ckpt.pt"
ls -la "$OUT/run"
