"""The one preprocessing function (training, Lambda, GPU job, CLI) and its inverse, compositing.

An image of any size is padded to a square (never cropped, so every masked pixel reaches the
model), resized to the model's resolution, and the mask binarised and reduced so that a
model pixel counts as "restore" if *any* source pixel under it is masked. Compositing maps the
prediction back and touches only pixels inside the original mask.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from shared.imaging.blend import seamless
from shared.imaging.images import binarise

MODEL_SIZE = 64
# A hole no pixel of which is more than this many model px from its edge is thinner than the model
# can draw: the seam fix continues the original's gradients across it (blend.py thin_holes). Thin
# strokes over another lab's white cells +3 dB, PBC val's +1.6; disks and blobs are deeper: unchanged
# (docs/benchmarks-log.md, "Thin holes").
THIN_HOLE = 1.5


def thin_px(side: int, size: int = MODEL_SIZE) -> float:
    """THIN_HOLE in the source's px, for a window of `side` source px drawn at `size` model px:
    the seam fix and the classical share a flagged image leans on judge thin holes alike."""
    return THIN_HOLE * side / size


@dataclass
class Prepared:
    image: np.ndarray  # (S, S, 3) uint8, the padded, resized image
    mask: np.ndarray  # (S, S) bool, True = restore (conservative: covers every masked source pixel)
    height: int  # the source's height and width, before padding
    width: int
    pad: tuple[int, int, int, int]  # top, bottom, left, right padding in source pixels

    @property
    def side(self) -> int:
        return self.height + self.pad[0] + self.pad[1]


def square_pad(h: int, w: int) -> tuple[int, int, int, int]:
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    return top, side - h - top, left, side - w - left


def preprocess(image: np.ndarray, mask: np.ndarray | None = None, size: int = MODEL_SIZE) -> Prepared:
    """image: (H, W, 3) uint8 RGB (see images.load_image); mask: (H, W) bool or uint8, or None."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected (H, W, 3) uint8, got {image.shape} {image.dtype}")
    h, w = image.shape[:2]
    pad = square_pad(h, w)
    top, bottom, left, right = pad
    # Edge padding keeps the border looking like background, which the model has seen; a flat
    # colour would be a hard edge the model never saw in training.
    padded = np.pad(image, ((top, bottom), (left, right), (0, 0)), mode="edge")
    small = np.asarray(Image.fromarray(padded).resize((size, size), Image.Resampling.LANCZOS))
    if mask is None:
        small_mask = np.zeros((size, size), bool)
    else:
        mask = binarise(mask)
        if mask.shape != (h, w):
            raise ValueError(f"mask is {mask.shape[1]}x{mask.shape[0]}, image is {w}x{h}")
        small_mask = any_pool(np.pad(mask, ((top, bottom), (left, right))), size)
    return Prepared(small, small_mask, h, w, pad)


def any_pool(mask: np.ndarray, size: int) -> np.ndarray:
    """(side, side) bool -> (size, size) bool: a cell is True if any source pixel that overlaps it,
    even partly, is True. Conservative on purpose: the model must see every masked pixel."""
    side = mask.shape[0]
    edges = np.arange(size + 1) * side / size
    spans = [(int(np.floor(a)), max(int(np.ceil(b)), int(np.floor(a)) + 1)) for a, b in zip(edges[:-1], edges[1:])]
    rows = np.stack([mask[a:b].any(axis=0) for a, b in spans])
    return np.stack([rows[:, a:b].any(axis=1) for a, b in spans], axis=1)


def upsample(pred: np.ndarray, prep: Prepared) -> np.ndarray:
    """(S, S, 3) prediction -> (H, W, 3) uint8 on the source grid (padding removed)."""
    pred = np.asarray(pred)
    if pred.dtype != np.uint8:
        pred = np.clip(np.round(pred), 0, 255).astype(np.uint8)
    big = np.asarray(Image.fromarray(pred).resize((prep.side, prep.side), Image.Resampling.BICUBIC))
    top, _, left, _ = prep.pad
    return big[top : top + prep.height, left : left + prep.width]


def feather_weights(mask: np.ndarray, feather: int) -> np.ndarray:
    """Weight of the prediction: 1 deep inside the mask, ramping down to 1/(feather+1) at its edge,
    0 outside. Outside the mask stays exactly 0, so those pixels are never touched."""
    w = mask.astype(np.float32)
    if feather <= 0:
        return w
    # Chamfer-style distance inside the mask by repeated 3x3 erosion (numpy only, small radii).
    dist = np.zeros(mask.shape, np.float32)
    cur = mask.copy()
    for step in range(1, feather + 1):
        dist[cur] = step
        p = np.pad(cur, 1)
        cur = p[1:-1, 1:-1] & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
        if not cur.any():
            break
    dist[cur] = feather + 1
    return np.where(mask, dist / (feather + 1), 0.0).astype(np.float32)


def composite(original: np.ndarray, mask: np.ndarray, pred: np.ndarray, prep: Prepared, feather: int = 0,
              seam: bool = False, unknown: np.ndarray | None = None) -> np.ndarray:
    """The result at the original's exact size: pixels outside `mask` are bit-identical to
    `original`; inside is the upsampled prediction, optionally corrected to meet the original
    without a seam (`seam=True`, see blend.py; `unknown` = every pixel the original cannot be
    trusted at, default `mask`), and optionally feathered toward the original near the mask's
    edge (useful when the mask was drawn generously around a defect)."""
    mask = binarise(mask)
    big = upsample(pred, prep)
    if seam:
        thin = thin_px(prep.side, pred.shape[0])
        big = seamless(original, mask if unknown is None else binarise(unknown) | mask, big, thin=thin)
    out = original.copy()
    if feather <= 0:
        out[mask] = big[mask]
        return out
    a = feather_weights(mask, feather)[..., None]
    blend = np.round(a * big.astype(np.float32) + (1 - a) * original.astype(np.float32))
    out[mask] = np.clip(blend, 0, 255).astype(np.uint8)[mask]
    return out
