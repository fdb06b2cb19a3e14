#!/usr/bin/env bash
# A lent GPU's short window (about 15 minutes in all, start-up included; BENCHMARKS.md, "Training"):
# nine minutes more of the multi-microscope training, then the inference throughput of
# scripts/bench_gpu.py, all written under $OUT (what comes back from the device machine).
#
#   scripts/gpu_window.sh prepare [WEIGHTS]   here: .gpu/ = the weights to go on from, a PBC pack and
#                                             the training Chula fields (under 64 MiB, what may travel)
#   scripts/gpu_window.sh train               there, with .gpu carried: $OUT/run/{last,best}.safetensors,
#                                             log.jsonl, loss.png, $OUT/bench_gpu.{json,md}
# Then go on here from what came back: cellpaint train ... --init <files_at>/run/last.safetensors
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
prepare)
  mkdir -p .gpu/fields && grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
  w="${2:-gpu_job/weights/cellpaint.safetensors}"
  # bf16 (half the bytes); training loads it into its fp32 model.
  .venv/bin/python -c "import sys; from safetensors.torch import load_file, save_file
save_file({k: v.bfloat16() for k, v in load_file(sys.argv[1]).items()}, '.gpu/init.safetensors')" "$w"
  cp "${w%.safetensors}.json" .gpu/init.json
  # What travels (the working tree with it) stays under 64 MiB: every 4th PBC cell at 96 px (the augmentation
  # reframes from it, a little softer than at 128) in JPEG q75, and the fields re-encoded at q80.
  .venv/bin/python -m gpu_job.data.pack ../shared/data/pbc/train .gpu/pbc.npz --size 96 --quality 75 --every 4
  # The Chula fields training may see (every 5th is held back for measuring, as in training).
  .venv/bin/python -c "import sys; sys.path.insert(0, '.')
from shared.imaging.photos import list_photos, split
train, _ = split(list_photos(['../shared/data/chula/fields']), 5)
from PIL import Image
[Image.open(f).convert('RGB').save(f'.gpu/fields/{f.stem}.jpg', quality=80) for f in train]"
  du -sh .gpu ;;
train)
  pip install -q -r gpu_job/requirements.txt
  export PYTHONUNBUFFERED=1
  timeout 570 python -m gpu_job train --data .gpu/pbc.npz --fields .gpu/fields --hold-every 0 --init .gpu/init.safetensors \
    --out "$OUT/run" --device cuda --batch-size 256 --lr 1e-4 --field-share 0.25 --clean 0.5 --mask-bank 16384 \
    --threads 8 --minutes 8.5 --ckpt-minutes 4 || true
  rm -f "$OUT/run/ckpt.pt" "$OUT"/run/generated-* "$OUT"/run/inpaint-*  # too large to come back; EMA weights suffice
  python scripts/bench_gpu.py --weights "$OUT/run/last.safetensors" --synthetic --budget-s 120 --out "$OUT" || true ;;
*)
  echo "usage: scripts/gpu_window.sh prepare [WEIGHTS] | train" >&2; exit 2 ;;
esac
