"""Copy a random subset of a class-folder image set, files unchanged (python scripts/native_subset.py SRC DST N).

For the texture stage on a lent GPU (scripts/gpu_train_texture.sh): a device call carries 64 MiB,
the full train set is 228 MB, and re-encoding would change the very pixel-scale texture the stage
learns, so a subset of the originals travels instead. DST must be an ignored folder (.cache/):
these are the dataset's images and never go into the repository.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from gpu_job.data import list_images  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("n", type=int)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    files, _ = list_images(Path(a.src))
    pick = np.random.default_rng(a.seed).choice(len(files), min(a.n, len(files)), replace=False)
    size = 0
    for i in sorted(pick):
        dst = Path(a.dst) / files[i].relative_to(a.src)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(files[i], dst)
        size += dst.stat().st_size
    print(f"{len(pick)} files, {size / 1e6:.1f} MB -> {a.dst}")


if __name__ == "__main__":
    main()
