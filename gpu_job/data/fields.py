"""Whole-field smear photos as training data: no labels, no centred white cell.

Inpainting needs no labels, so every field a lab photographs teaches the model what its
microscope shows: plain background, red cells alone, clumps, platelets, edges. Each photo is
brought to the training scale the way the pipeline windows it (shared/scale.auto_window: the
cell size is estimated per image), so a training crop shows what a window would show the model.

Photos are kept in memory at that scale (one window = FIELD px, the size domain augmentation
reframes from); a batch cuts random FIELD-px crops out of them. Every `hold_every`-th photo (in
name order) is held back for measuring and never trained on: the split travels in the weights
record.
"""
from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from shared.imaging.images import InputError, load_image
from shared.imaging.photos import list_photos, split
from shared.imaging.preprocess import preprocess
from shared.imaging.scale import auto_window, one_window

from gpu_job.data.augment import FIELD


@dataclass
class FieldSet:
    fields: list[np.ndarray]  # each (H, W, 3) uint8, rescaled so that one window is FIELD px (at least FIELD a side)
    names: list[str]  # the photos trained on
    held_back: list[str]  # the photos kept for measuring
    windows: list[int]  # each photo's window, in its own pixels

    def crops(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """(n, FIELD, FIELD, 3) uint8: random windows, photos drawn in proportion to their area."""
        area = np.array([f.shape[0] * f.shape[1] for f in self.fields], float)
        out = np.empty((n, FIELD, FIELD, 3), np.uint8)
        for i, j in enumerate(rng.choice(len(self.fields), n, p=area / area.sum())):
            f = self.fields[j]
            y, x = int(rng.integers(f.shape[0] - FIELD + 1)), int(rng.integers(f.shape[1] - FIELD + 1))
            out[i] = f[y:y + FIELD, x:x + FIELD]
        return out


def at_training_scale(image: np.ndarray) -> tuple[np.ndarray, int]:
    """(the photo rescaled so that its window is FIELD px, the window in source px). A photo no
    larger than a window is one field, as the pipeline treats it: padded square, then FIELD px."""
    window = auto_window(image, np.zeros(image.shape[:2], bool))
    h, w = image.shape[:2]
    if one_window(h, w, window):
        return preprocess(image, None, FIELD).image, max(h, w)
    f = FIELD / window
    size = (max(FIELD, round(w * f)), max(FIELD, round(h * f)))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.LANCZOS)), window


def _load(path: str) -> tuple[np.ndarray, int] | str:
    try:
        return at_training_scale(load_image(path))
    except InputError as exc:
        return str(exc)


def load_photos(files: list[Path], load, workers: int = 2) -> list[tuple[Path, object]]:
    """(photo, load(path)) for each photo that `load` takes, in worker processes; `load` returns a
    message for a photo it refuses, and the photos left out are said. Both stages' field data."""
    with ProcessPoolExecutor(workers) as pool:
        loaded = list(tqdm(pool.map(load, map(str, files)), total=len(files), desc="loading fields"))
    bad = [x for x in loaded if isinstance(x, str)]
    if bad:
        print(f"skipped {len(bad)} photos: " + "; ".join(bad[:5]))
    return [(f, x) for f, x in zip(files, loaded) if not isinstance(x, str)]


def load_fields(sources: list[str | Path], hold_every: int = 5, workers: int = 2) -> FieldSet:
    files = list_photos(sources)
    if not files:
        raise FileNotFoundError(f"{', '.join(map(str, sources))}: no images")
    train, held = split(files, hold_every)
    keep = load_photos(train, _load, workers)
    if not keep:
        raise ValueError(f"{', '.join(map(str, sources))}: no usable photos")
    return FieldSet([x[0] for _, x in keep], [str(f) for f, _ in keep], [str(f) for f in held], [x[1] for _, x in keep])
