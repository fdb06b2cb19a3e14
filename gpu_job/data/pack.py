"""A training set packed into one small file, for machines without ../shared (a lent GPU).

`python -m gpu_job.data.pack ../shared/data/pbc/train train.npz` stores every image after the
shared preprocessing as a JPEG in one .npz, at 128 px by default (the field that training's domain
augmentation reframes; `--size 64` for `--augment flips`): q92 without chroma subsampling gives a
mean error of 2.4/255 at 64 px and 39 MB. That error costs something: at small t the noise is as faint as the JPEG artefacts,
and a model trained on them expects them (docs/training/history.md). Where size does not matter
(a pack in S3 for a Batch job), `--lossless` stores PNGs instead: exact, about 96 MB for the same
cells. `load_cellset` (data.py) reads a pack wherever it takes a class-folder root.
Never commit a pack: it holds the data.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from gpu_job.data.augment import FIELD
from gpu_job.data.cells import load_cellset


def pack(root: str | Path, out: str | Path, size: int = FIELD, quality: int = 92, lossless: bool = False, every: int = 1) -> Path:
    """`every`: keep every n-th cell only (a pack that must travel small: a lent GPU's 64 MiB)."""
    cells = load_cellset(root, size)
    keep = slice(None, None, every)
    cells = type(cells)(cells.images[keep], cells.labels[keep], cells.classes, cells.names[keep])
    blobs = []
    for img in cells.images:
        buf = io.BytesIO()
        if lossless:
            Image.fromarray(img).save(buf, format="PNG", optimize=True)
        else:
            Image.fromarray(img).save(buf, format="JPEG", quality=quality, subsampling=0)
        blobs.append(np.frombuffer(buf.getvalue(), np.uint8))
    offsets = np.cumsum([0] + [len(b) for b in blobs])
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, jpeg=np.concatenate(blobs), offsets=offsets, labels=cells.labels,
             classes=np.array(cells.classes), names=np.array(cells.names), size=size)
    return out


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(prog="python -m gpu_job.data.pack", description="Pack a class-folder image set into one .npz.")
    ap.add_argument("root", help="folder of class subfolders (like pbc/train)")
    ap.add_argument("out", help="the pack to write (.npz)")
    ap.add_argument("--lossless", action="store_true", help="PNG instead of JPEG q92: exact, about 2.5x larger")
    ap.add_argument("--size", type=int, default=FIELD, help=f"px of each cell's field (default {FIELD}; 64 for --augment flips)")
    ap.add_argument("--quality", type=int, default=92, help="JPEG quality (default 92; less for a pack that must travel small)")
    ap.add_argument("--every", type=int, default=1, help="keep every n-th cell only")
    a = ap.parse_args()
    print(pack(a.root, a.out, a.size, a.quality, lossless=a.lossless, every=a.every))
