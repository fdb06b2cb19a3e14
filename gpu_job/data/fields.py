"""Whole-field smear photos as training data: no labels, no centred white cell.

Inpainting needs no labels, so every field a lab photographs teaches the model what its
microscope shows: plain background, red cells alone, clumps, platelets, edges. Each photo is
brought to the training scale the way the pipeline windows it (shared/scale.auto_window: the
cell size is estimated per image), so a training crop shows what a window would show the model.

Photos are kept in memory at that scale (one window = FIELD px, the size domain augmentation
reframes from); a batch cuts random FIELD-px crops out of them. Every `hold_every`-th photo (in
name order) is held back for measuring and never trained on: the split travels in the weights
record.

White cells are rare in a field (a few in most photos, none in many) and they are what users
mask most, so each photo's white cells are found once as it is loaded (nucleus-coloured blobs the
size of a nucleus, not a platelet) and a share of crops (`cell_share`) is cut around one of them.
"""
from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from shared.imaging.colour import nucleus_coloured
from shared.imaging.components import coarse_regions
from shared.imaging.images import InputError, load_image
from shared.imaging.photos import list_photos, split
from shared.imaging.preprocess import preprocess
from shared.imaging.scale import DEFAULT_WINDOW, PBC_CELL_PX, auto_window, one_window

from gpu_job.data.augment import FIELD


@dataclass
class FieldSet:
    fields: list[np.ndarray]  # each (H, W, 3) uint8, rescaled so that one window is FIELD px (at least FIELD a side)
    names: list[str]  # the photos trained on
    held_back: list[str]  # the photos kept for measuring
    windows: list[int]  # each photo's window, in its own pixels
    cells: list[np.ndarray]  # each photo's white cells: (k, 2) centres (y, x) in the rescaled photo's pixels

    def crops(self, rng: np.random.Generator, n: int, cell_share: float = 0.0) -> np.ndarray:
        """(n, FIELD, FIELD, 3) uint8: random windows, photos drawn in proportion to their area; with
        probability `cell_share`, a window around one of the set's white cells instead (every white
        cell as likely), its centre up to a quarter window off the cell's."""
        area = np.array([f.shape[0] * f.shape[1] for f in self.fields], float)
        around = [(j, c) for j, cs in enumerate(self.cells) for c in cs]
        out = np.empty((n, FIELD, FIELD, 3), np.uint8)
        for i, j in enumerate(rng.choice(len(self.fields), n, p=area / area.sum())):
            if around and cell_share > 0 and rng.random() < cell_share:
                j, (cy, cx) = around[rng.integers(len(around))]
                cy, cx = np.array([cy, cx]) + rng.uniform(-FIELD / 4, FIELD / 4, 2)
            else:
                cy, cx = rng.uniform(FIELD / 2, np.array(self.fields[j].shape[:2]) - FIELD / 2 + 1)
            f = self.fields[j]
            y = int(np.clip(round(cy - FIELD / 2), 0, f.shape[0] - FIELD))
            x = int(np.clip(round(cx - FIELD / 2), 0, f.shape[1] - FIELD))
            out[i] = f[y:y + FIELD, x:x + FIELD]
        return out


RED_CELL = FIELD * PBC_CELL_PX / DEFAULT_WINDOW  # a red cell's width in a field at training scale (~19 px)
NUCLEUS_AREA = 0.25  # of a red cell's square: a white cell's nucleus is at least this large, a platelet smaller


def white_cells(field: np.ndarray) -> np.ndarray:
    """(k, 2) centres (y, x) of the white cells in a field at training scale: 8-connected
    nucleus-coloured blobs of at least NUCLEUS_AREA red-cell squares (a multi-lobed nucleus
    counts once per lobe that large: a lobe's centre is still on the cell)."""
    labels, n = coarse_regions(nucleus_coloured(field))
    if n == 0:
        return np.empty((0, 2))
    flat = labels.ravel()
    inside = flat >= 0
    counts = np.bincount(flat[inside], minlength=n)
    ys, xs = np.divmod(np.flatnonzero(inside), field.shape[1])
    centres = np.stack([np.bincount(flat[inside], ys, n), np.bincount(flat[inside], xs, n)], 1) / np.maximum(counts, 1)[:, None]
    return centres[counts >= NUCLEUS_AREA * RED_CELL ** 2]


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


def _load(path: str) -> tuple[np.ndarray, int, np.ndarray] | str:
    try:
        field, window = at_training_scale(load_image(path))
    except InputError as exc:
        return str(exc)
    return field, window, white_cells(field)


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
    return FieldSet([x[0] for _, x in keep], [str(f) for f, _ in keep], [str(f) for f in held], [x[1] for _, x in keep],
                    [x[2] for _, x in keep])
