#!/usr/bin/env bash
# A lent GPU's short window (about 15 minutes in all, start-up included; BENCHMARKS.md, "Training"):
# `cellpaint adapt` timed on the GPU (one minute, issue 27's goal; two where that refuses, as it did when
# measuring the base alone took 40 s on 34 photos; its record's phases_s says where the seconds go), the inference throughput of
# scripts/bench_gpu.py on PBC val cells, then the multi-microscope training with the minutes left
# (from the shipped model of two microscopes, gpu_job/weights/fields.safetensors, which travels with the tree),
# all written under $OUT (what comes back from the device machine: at most 8 files).
#
#   scripts/gpu_window.sh prepare [ADAPT_PHOTOS]
#         here: .gpu/ = a PBC pack, the training Chula fields, 4 PBC val cells a class and the photos to adapt on:
#         ADAPT_PHOTOS, else the white-cell crops of BCCD photos 41-170 (issue 27's form: a lab's crops; the
#         crops of photos 1-40 are what `evaluate --domain-shift --crops 40` measures)
#         (under 64 MiB, what may travel; .gpu/ is git-ignored)
#   scripts/gpu_window.sh run [SECONDS]
#         there, with .gpu carried; stops itself within SECONDS (default 540):
#         $OUT/adapt.{log,json}, $OUT/bench_gpu.{json,md}, $OUT/run/{last.safetensors,last.json,log.jsonl,loss.png}
# Then go on here from what came back: cellpaint train ... --init <files_at>/run/last.safetensors
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
prepare)
  mkdir -p .gpu/fields .gpu/adapt && grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
  # Every 4th PBC cell at 96 px (the augmentation reframes from it, a little softer than at 128) in JPEG q75.
  [ -f .gpu/pbc.npz ] || .venv/bin/python -m gpu_job.data.pack ../shared/data/pbc/train .gpu/pbc.npz --size 96 --quality 75 --every 4
  # The Chula fields training may see (every 5th is held back for measuring, as in training), re-encoded at q80.
  .venv/bin/python -c "import sys; sys.path.insert(0, '.')
from shared.imaging.photos import list_photos, split
train, _ = split(list_photos(['../shared/data/chula/fields']), 5)
from PIL import Image
[Image.open(f).convert('RGB').save(f'.gpu/fields/{f.stem}.jpg', quality=80) for f in train]"
  for d in ../shared/data/pbc/val/*/; do mkdir -p ".gpu/val/$(basename "$d")"; ls "$d" | head -4 | while read -r f; do cp "$d$f" ".gpu/val/$(basename "$d")/"; done; done
  if [ -n "${2:-}" ]; then cp -r "$2"/. .gpu/adapt/
  else .venv/bin/python scripts/bccd_crops.py ../shared/data/bccd --skip 40 --images 130 --out .gpu/adapt; fi
  du -sh .gpu ;;
run)
  t0=$(date +%s); limit=${2:-540}
  export PYTHONUNBUFFERED=1
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
  python -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"
  # No pip here: the image holds numpy, pillow, safetensors, scikit-image, tqdm and matplotlib; training
  # and adapting need nothing else (no boto3 unless a path is s3://).
  # Issue 27's budget first (one minute, the whole command); where it refuses (too little left to
  # train after measuring the base), two, so that the record still says where the seconds go.
  for minutes in 1.0 2.0; do
    (time python -c "from gpu_job.training.adapt import AdaptConfig, adapt
adapt(AdaptConfig(images=['.gpu/adapt'], out='/tmp/adapt/lab.safetensors', minutes=$minutes, device='cuda', force=True, threads=8))" ) 2>&1 \
      | tr '\r' '\n' | grep -v '^\s*$' | grep -v 'it/s\]$\|s/it\]$' >> "$OUT/adapt.log" || true
    [ -f /tmp/adapt/lab.json ] && break
  done
  tail -c 3000 "$OUT/adapt.log"; cp /tmp/adapt/lab.json "$OUT/adapt.json" 2>/dev/null || true
  timeout 150 python scripts/bench_gpu.py --data .gpu/val --budget-s 100 --out "$OUT" || true
  left=$(( limit - ($(date +%s) - t0) - 45 ))
  minutes=$(python -c "print(max(0.5, $left / 60))")
  echo "training for $minutes min"
  timeout $(( left + 30 )) python -m gpu_job train --data .gpu/pbc.npz --fields .gpu/fields --hold-every 0 --init gpu_job/weights/fields.safetensors \
    --out /tmp/run --device cuda --batch-size 256 --lr 5e-5 --field-share 0.25 --clean 0.6 --seen-as-inferred --cell-share 0.3 --fade 0.3 --mask-bank 16384 \
    --threads 4 --workers 11 --minutes "$minutes" --ckpt-minutes 100 2>&1 | tr '\r' '\n' | grep -v 'it/s\]$\|s/it\]$' | tail -c 3000 || true
  # The weights come back in bf16 (float32 is 19.5 MB, over the 16 MB a file that comes back).
  mkdir -p "$OUT/run"; for f in last.json log.jsonl loss.png; do cp "/tmp/run/$f" "$OUT/run/" 2>/dev/null || true; done
  python -c "from safetensors.torch import load_file, save_file
save_file({k: v.bfloat16() for k, v in load_file('/tmp/run/last.safetensors').items()}, '$OUT/run/last.safetensors')" || true
  ls -la "$OUT" "$OUT/run"; echo "window took $(( $(date +%s) - t0 )) s" ;;
*)
  echo "usage: scripts/gpu_window.sh prepare [ADAPT_PHOTOS] | run [SECONDS]" >&2; exit 2 ;;
esac
