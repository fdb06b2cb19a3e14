"""A training set packed into one small file, for machines without ../shared (a lent GPU).

`python -m gpu_job.pack ../shared/data/pbc/train .cache/pack/train.npz` stores every image after
the shared preprocessing (64x64) as a JPEG in one .npz: q92 without chroma subsampling gives a
mean error of 2.4/255 and 39 MB, small enough to travel to a GPU machine (64 MiB a call) beside
the weights. That error costs something: at small t the noise is as faint as the JPEG artefacts,
and a model trained on them expects them (BENCHMARKS.md, runs table). Where size does not matter
(a pack in S3 for a Batch job), `--lossless` stores PNGs instead: exact, about 96 MB for the same
cells. `load_cellset` reads a pack wherever it takes a class-folder root.
Never commit a pack: it holds the data.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from .data import CellSet, load_cellset


def pack(root: str | Path, out: str | Path, size: int = 64, quality: int = 92, lossless: bool = False) -> Path:
    cells = load_cellset(root, size)
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


def unpack(path: str | Path) -> CellSet:
    with np.load(path) as z:
        data, off = z["jpeg"], z["offsets"]
        images = np.stack([np.asarray(Image.open(io.BytesIO(data[a:b].tobytes())).convert("RGB")) for a, b in zip(off[:-1], off[1:])])
        return CellSet(images, z["labels"].astype(np.int64), [str(c) for c in z["classes"]], [str(n) for n in z["names"]])


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(prog="python -m gpu_job.pack", description="Pack a class-folder image set into one .npz.")
    ap.add_argument("root", help="folder of class subfolders (like pbc/train)")
    ap.add_argument("out", help="the pack to write (.npz)")
    ap.add_argument("--lossless", action="store_true", help="PNG instead of JPEG q92: exact, about 2.5x larger")
    a = ap.parse_args()
    print(pack(a.root, a.out, lossless=a.lossless))
