#!/usr/bin/env bash
# Continue training the shipped weights on a lent GPU for about 8 minutes (issue 3).
# Prepare here, once:  .venv/bin/python -m gpu_job.pack ../shared/data/pbc/train .cache/pack/train.npz
#                      .venv/bin/python -m gpu_job.pack ../shared/data/pbc/val   .cache/pack/val.npz
# Then call the device tool with carry [".cache/pack"] and command: bash scripts/gpu_train.sh
# It brings back $OUT/run/{best,last}.{safetensors,json}, loss.png, the last sample grid, log.jsonl.
set -euo pipefail
export PYTHONPATH=. PYTHONUNBUFFERED=1
OUT=${OUT:-out/gpu}
MIN=${MINUTES:-8}
nvidia-smi -L || true
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
python3 -m cellpaint train --data .cache/pack/train.npz --val-data .cache/pack/val.npz \
  --init gpu_job/weights/cellpaint.safetensors --out "$OUT/run" --device cuda \
  --minutes "$MIN" --ckpt-minutes 2 --batch-size 128 --lr 2e-4 --threads 8 2>&1 | tr '\r' '\n' | grep -v '^train:.*it/s' | tee "$OUT/train.log"
cd "$OUT/run" && rm -f ckpt.pt && ls samples-*.png | head -n -1 | xargs -r rm -f  # at most 8 files come back
ls -la
