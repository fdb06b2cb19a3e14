#!/usr/bin/env python
"""White-cell crops of BCCD photos, written as a lab would upload them: the square of 2.6x each
photo's first white-cell box (gpu_job/evaluation/domain_shift.py bccd_crop_cases, the crops that
`cellpaint evaluate --domain-shift --crops` masks and measures). BENCHMARKS.md ("A lab's own
model") adapts on the crops of photos 41-170 and measures on those of photos 1-40:

    python scripts/bccd_crops.py ../shared/data/bccd --skip 40 --images 130 --out runs/bccd-crops
    cellpaint adapt runs/bccd-crops -o runs/adapt/crops.safetensors --minutes 14 --device cpu

The crops are the photos' pixels: keep them out of the repository (runs/ is ignored).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image

from gpu_job.evaluation.domain_shift import bccd_crop_cases


def main(argv: list[str] | None = None) -> list[Path]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("bccd", help="folder of BCCD photos (.jpg) with their VOC boxes (.xml)")
    p.add_argument("--skip", type=int, default=0, help="photos to pass over first (in name order)")
    p.add_argument("--images", type=int, default=1_000_000, help="photos to crop after --skip")
    p.add_argument("--out", required=True, help="folder for the crops (PNG, one per photo with a white cell)")
    a = p.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for case in bccd_crop_cases(a.bccd, a.images, seed=0, skip=a.skip):
        stem, kind = case.name.split(":")
        if kind == "blob":  # one case per mask kind, the same crop in each
            written.append(out / f"{stem}.png")
            Image.fromarray(case.image).save(written[-1])
    print(f"wrote {len(written)} crops to {out}")
    return written


if __name__ == "__main__":
    main()
