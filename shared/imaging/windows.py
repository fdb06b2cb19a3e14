"""Large images: inpaint through a window around each connected mask region, at training scale.

The model was trained on 360-px fields of view squeezed to 64x64. A 1200-px smear photo squeezed
the same way would show cells at a third of their trained size, so instead each mask region gets
its own window of about the training field (default 360 px), and only that region's pixels are
written from it. An image no larger than ~1.25 windows is one window: the whole image.

The plan is made once per pair: by the ingest Lambda (it travels in the job's manifest, which
the GPU job trusts) or by the CLI and the UI, which call `prepare` themselves.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shared.imaging.components import coarse_regions
from shared.imaging.preprocess import MODEL_SIZE, Prepared, preprocess
from shared.imaging.scale import DEFAULT_WINDOW, auto_window, one_window


@dataclass(frozen=True)
class Box:
    top: int
    left: int
    height: int
    width: int
    region: int  # which connected mask region this window writes; -1 = all of the mask

    def crop(self, a: np.ndarray) -> np.ndarray:
        return a[self.top : self.top + self.height, self.left : self.left + self.width]


@dataclass
class Window:
    box: Box
    prep: Prepared  # the crop, preprocessed for the model (the full mask inside the crop)
    writes: np.ndarray  # (box.height, box.width) bool: the pixels this window restores (its region's)


def _cells(mask: np.ndarray, cell: int) -> np.ndarray:
    """(H, W) -> (gh, cell, gw, cell): the mask padded to whole `cell`-px cells."""
    h, w = mask.shape
    gh, gw = -(-h // cell), -(-w // cell)
    padded = np.zeros((gh * cell, gw * cell), bool)
    padded[:h, :w] = mask
    return padded.reshape(gh, cell, gw, cell)


def cell_size(window: int) -> int:
    return max(4, window // 45)


def plan_windows(mask: np.ndarray, window: int = DEFAULT_WINDOW) -> tuple[list[Box], np.ndarray]:
    """The windows for one mask, and the (H, W) region label map they refer to (-1 outside the mask).
    The cost is a few passes over the pixels, however many regions there are.

    window <= 0, or an image no larger than 1.25 windows: one box, the whole image."""
    h, w = mask.shape
    if window <= 0 or one_window(h, w, window):
        return [Box(0, 0, h, w, -1)], np.full(mask.shape, -1, np.int32)
    cell = cell_size(window)
    cells = _cells(mask, cell)
    coarse, n = coarse_regions(cells.any(axis=(1, 3)))
    # Each masked cell's pixel extent, then each region's: the min and max over its cells.
    rows, cols = cells.any(axis=3), cells.any(axis=1)  # (gh, cell, gw), (gh, gw, cell)
    gy, gx = np.nonzero(coarse >= 0)
    lab = coarse[gy, gx]
    ext = {"y0": gy * cell + rows.argmax(axis=1)[gy, gx], "y1": (gy + 1) * cell - rows[:, ::-1].argmax(axis=1)[gy, gx],
           "x0": gx * cell + cols.argmax(axis=2)[gy, gx], "x1": (gx + 1) * cell - cols[:, :, ::-1].argmax(axis=2)[gy, gx]}
    y0, x0, y1, x1 = np.full(n, h), np.full(n, w), np.zeros(n, int), np.zeros(n, int)
    np.minimum.at(y0, lab, ext["y0"])
    np.minimum.at(x0, lab, ext["x0"])
    np.maximum.at(y1, lab, ext["y1"])
    np.maximum.at(x1, lab, ext["x1"])
    boxes = []
    for r in range(n):
        # A region larger than the window gets a larger window (a margin of 1/8 for context).
        side = max(window, int(max(y1[r] - y0[r], x1[r] - x0[r]) * 1.25))
        top = int(np.clip((y0[r] + y1[r]) // 2 - side // 2, 0, max(0, h - side)))
        left = int(np.clip((x0[r] + x1[r]) // 2 - side // 2, 0, max(0, w - side)))
        boxes.append(Box(top, left, min(side, h), min(side, w), r))
    full = np.repeat(np.repeat(coarse, cell, axis=0), cell, axis=1)[:h, :w]
    return boxes, np.where(mask, full, -1)


def region_mask(mask: np.ndarray, labels: np.ndarray, box: Box) -> np.ndarray:
    """The pixels `box` writes, within its crop."""
    crop = box.crop(mask)
    return crop if box.region < 0 else box.crop(labels) == box.region


def prepare(image: np.ndarray, mask: np.ndarray, window: int | None = None, size: int = MODEL_SIZE,
            plan: tuple[list[Box], np.ndarray] | None = None) -> list[Window]:
    """Everything the model needs for one image/mask pair: the plan (or `plan`, made already by
    `plan_windows`), and each window's crop preprocessed. The crop's model mask is the *whole*
    mask inside the crop, so damaged pixels of a neighbouring region are never read as known.
    window None: sized by the image's cells (shared/imaging/scale.py)."""
    boxes, labels = plan or plan_windows(mask, auto_window(image, mask) if window is None else window)
    return [Window(b, preprocess(b.crop(image), b.crop(mask), size), region_mask(mask, labels, b)) for b in boxes]


def reprepare(image: np.ndarray, mask: np.ndarray, windows: list[Window], size: int) -> list[Window]:
    """The same plan at another model resolution (weights trained at another size)."""
    return [Window(w.box, preprocess(w.box.crop(image), w.box.crop(mask), size), w.writes) for w in windows]
