"""Large images: inpaint through a window around each connected mask region, at training scale.

The model was trained on 360-px fields of view squeezed to 64x64. A 1200-px smear photo squeezed
the same way would show cells at a third of their trained size, so instead each mask region gets
its own window of about the training field (default 360 px), and only that region's pixels are
written from it. An image no larger than ~1.25 windows is one window: the whole image.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from .preprocess import MODEL_SIZE, Prepared, preprocess

DEFAULT_WINDOW = 360  # the PBC training images' field of view, in source pixels


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


def regions(mask: np.ndarray, cell: int) -> np.ndarray:
    """Label connected mask regions on a coarse grid of `cell`-px cells (8-connected), so specks a
    few pixels apart share a window. Returns (H, W) int32 labels, -1 outside the mask."""
    h, w = mask.shape
    gh, gw = -(-h // cell), -(-w // cell)
    padded = np.zeros((gh * cell, gw * cell), bool)
    padded[:h, :w] = mask
    coarse = padded.reshape(gh, cell, gw, cell).any(axis=(1, 3))
    labels = np.full((gh, gw), -1, np.int32)
    n = 0
    for sy, sx in zip(*np.nonzero(coarse)):
        if labels[sy, sx] >= 0:
            continue
        labels[sy, sx] = n
        todo = deque([(sy, sx)])
        while todo:
            y, x = todo.popleft()
            for ny in (y - 1, y, y + 1):
                for nx in (x - 1, x, x + 1):
                    if 0 <= ny < gh and 0 <= nx < gw and coarse[ny, nx] and labels[ny, nx] < 0:
                        labels[ny, nx] = n
                        todo.append((ny, nx))
        n += 1
    full = np.repeat(np.repeat(labels, cell, axis=0), cell, axis=1)[:h, :w]
    return np.where(mask, full, -1)


def plan_windows(mask: np.ndarray, window: int = DEFAULT_WINDOW) -> tuple[list[Box], np.ndarray]:
    """The windows for one mask, and the region label map they refer to.

    window <= 0, or an image no larger than 1.25 windows: one box, the whole image."""
    h, w = mask.shape
    if window <= 0 or max(h, w) <= 1.25 * window:
        return [Box(0, 0, h, w, -1)], np.full(mask.shape, -1, np.int32)
    labels = regions(mask, max(4, window // 45))
    boxes = []
    for r in range(int(labels.max()) + 1):
        ys, xs = np.nonzero(labels == r)
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        # A region larger than the window gets a larger window (a margin of 1/8 for context).
        side = max(window, int(max(y1 - y0, x1 - x0) * 1.25))
        top = int(np.clip((y0 + y1) // 2 - side // 2, 0, max(0, h - side)))
        left = int(np.clip((x0 + x1) // 2 - side // 2, 0, max(0, w - side)))
        boxes.append(Box(top, left, min(side, h), min(side, w), r))
    return boxes, labels


def region_mask(mask: np.ndarray, labels: np.ndarray, box: Box) -> np.ndarray:
    """The pixels `box` writes, within its crop."""
    crop = box.crop(mask)
    return crop if box.region < 0 else box.crop(labels) == box.region


def prepare(image: np.ndarray, mask: np.ndarray, window: int = DEFAULT_WINDOW, size: int = MODEL_SIZE) -> list[Window]:
    """Everything the model needs for one image/mask pair. The crop's model mask is the *whole*
    mask inside the crop, so damaged pixels of a neighbouring region are never read as known."""
    return windows_for(image, mask, plan_windows(mask, window)[0], size)


def windows_for(image: np.ndarray, mask: np.ndarray, boxes: list[Box], size: int = MODEL_SIZE) -> list[Window]:
    """The model inputs for already planned boxes (callers that also need the region labels)."""
    return [Window(b, preprocess(b.crop(image), b.crop(mask), size)) for b in boxes]
