"""The training set in memory: class folders -> (N, S, S, 3) uint8 via the shared preprocessing.

Decoding 12,800 JPEGs takes about a minute on 2 cores, so the result is cached as one .npz in an
ignored folder (`.cache/`), keyed by the folder, its file list and the resolution.
"""
from __future__ import annotations

import hashlib
import io
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import warnings

import numpy as np
from PIL import Image
from tqdm import tqdm

from shared.imaging.images import InputError, load_image
from shared.imaging import IMAGE_SUFFIXES
from shared.imaging.preprocess import preprocess


@dataclass
class CellSet:
    images: np.ndarray  # (N, S, S, 3) uint8
    labels: np.ndarray  # (N,) int64 index into classes
    classes: list[str]
    names: list[str]  # relative paths, for reports


def list_images(root: Path) -> tuple[list[Path], list[str]]:
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise FileNotFoundError(f"{root}: no class subfolders (expected ROOT/<class>/*.jpg)")
    # Hidden files (macOS ._ and .DS_ droppings) are not images even when named .jpg.
    files = sorted(
        f for c in classes for f in (root / c).iterdir()
        if f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith(".")
    )
    if not files:
        raise FileNotFoundError(f"{root}: no images in the class subfolders")
    return files, classes


def _load(args: tuple[str, int]) -> np.ndarray | str:
    path, size = args
    try:
        return preprocess(load_image(path), None, size).image
    except InputError as exc:
        return str(exc)  # reported and skipped: one bad file should not stop a training run


def load_cellset(root: str | Path, size: int = 64, cache_dir: str | Path | None = ".cache", workers: int = 2) -> CellSet:
    root = Path(root)
    if root.is_file():  # a pack made by pack.py
        return unpack(root)
    files, classes = list_images(root)
    names = [str(f.relative_to(root)) for f in files]
    labels = np.array([classes.index(f.parent.name) for f in files], dtype=np.int64)
    key = hashlib.sha1(f"{root.resolve()}|{size}|{'|'.join(names)}".encode()).hexdigest()[:12]
    cache = Path(cache_dir) / f"cells-{root.name}-{size}-{key}.npz" if cache_dir else None
    if cache and cache.exists():
        with np.load(cache) as z:
            images, keep = z["images"], z["keep"]
    else:
        jobs = [(str(f), size) for f in files]
        with ProcessPoolExecutor(workers) as pool:
            loaded = list(tqdm(pool.map(_load, jobs, chunksize=64), total=len(jobs), desc=f"loading {root.name}"))
        keep = np.array([not isinstance(x, str) for x in loaded])
        for msg in (x for x in loaded if isinstance(x, str)):
            warnings.warn(f"skipped {msg}", stacklevel=2)
        images = np.stack([x for x in loaded if not isinstance(x, str)])
        if cache:
            cache.parent.mkdir(parents=True, exist_ok=True)
            np.savez(cache, images=images, keep=keep)
    labels, names = labels[keep], [n for n, k in zip(names, keep) if k]
    return CellSet(images, labels, classes, names)


def unpack(path: str | Path) -> CellSet:
    with np.load(path) as z:
        data, off = z["jpeg"], z["offsets"]
        images = np.stack([np.asarray(Image.open(io.BytesIO(data[a:b].tobytes())).convert("RGB")) for a, b in zip(off[:-1], off[1:])])
        return CellSet(images, z["labels"].astype(np.int64), [str(c) for c in z["classes"]], [str(n) for n in z["names"]])
