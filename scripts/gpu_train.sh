#!/usr/bin/env bash
# Continue training the shipped weights on a lent GPU for about 8.5 minutes (issue 3).
# Prepare here, once:  .venv/bin/python -m gpu_job.pack ../shared/data/pbc/train .cache/pack/train.npz
#                      .venv/bin/python -m gpu_job.pack ../shared/data/pbc/val   .cache/pack/val.npz
# Dry run here first:  PATH=$PWD/.venv/bin:$PATH DEVICE=cpu BATCH=8 MINUTES=0.3 COMPILE=0 OUT=/tmp/gpu-dry scripts/paused.sh bash scripts/gpu_train.sh
# Then call the device tool with carry [".cache/pack"] and command: bash scripts/gpu_train.sh
# It brings back $OUT/run/: best.json, log.jsonl, loss.png, the last sample grid, and the best
# weights split in 15 MB parts (a device call returns files of at most 16 MB). Rejoin with
#   cat best.safetensors.part-* > best.safetensors
# Then train on here, on the real images: the packs' JPEG error teaches the model JPEG artefacts at
# small t (session 6: real-val loss 0.00959 -> 0.01131 on the GPU, then 0.00925 after 626 CPU steps):
#   cellpaint train --data ../shared/data/pbc/train --val-data ../shared/data/pbc/val \
#     --init runs/gpu/best.safetensors --lr 1e-4 --out runs/ft --minutes 60
# The device has torch with CUDA but no boto3: `python -m gpu_job train` needs neither boto3 nor moto.
# torch.compile: on an H100 a step at batch 256 took 75 ms against 107 eager, after 113 s of
# compiling (scripts/bench_train_step.py, BENCHMARKS.md), so it pays from about 6.3 minutes on.
# COMPILE=0 trains eager (the quick dry run above uses it).
set -euo pipefail
export PYTHONPATH=. PYTHONUNBUFFERED=1
OUT=${OUT:-out/gpu}
MIN=${MINUTES:-8.5}
DEVICE=${DEVICE:-cuda} BATCH=${BATCH:-256}
COMPILE_FLAG=$([ "${COMPILE:-1}" = 1 ] && echo --compile || true)
mkdir -p "$OUT"
nvidia-smi -L || true
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
python3 -m gpu_job train --data .cache/pack/train.npz --val-data .cache/pack/val.npz \
  --init gpu_job/weights/cellpaint.safetensors --out "$OUT/run" --device "$DEVICE" \
  --minutes "$MIN" --ckpt-minutes 2 --batch-size "$BATCH" --lr 2e-4 --threads 8 --mask-bank 16384 $COMPILE_FLAG 2>&1 | tr '\r' '\n' | grep -v '^train:.*\(it/s\|s/it\)' | tee "$OUT/train.log"
cd "$OUT/run"
rm -f ckpt.pt last.safetensors last.json
ls generated-*.png | head -n -1 | xargs -r rm -f; ls inpaint-*.png | head -n -1 | xargs -r rm -f
split -b 15000000 best.safetensors best.safetensors.part-
rm best.safetensors
ls -la
