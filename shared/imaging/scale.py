"""How large the cells of an image are, so that windows bring them to the model at training scale.

The model learned cells from one magnification: a 360-px field of a CellaVision image. Another
microscope's whole-field photo shows red cells larger or smaller, and a fixed 360-px window then
hands the model cells of the wrong size. The cell size is estimated from the image itself with a
granulometry (Matheron 1975): cells are the pixels darker than the background (Otsu on CIELAB L*),
pale centres filled; the cell mask is opened with squares of growing side, and the side at which
the most area disappears is the width of the commonest cells, the red cells. numpy only.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from shared.imaging.components import coarse_regions
from shared.imaging.masks import dilate
from shared.imaging.colour import rgb_to_lab

DEFAULT_WINDOW = 360  # the PBC training images' field of view, in source pixels
SIDE = 256  # px: the image is measured at this size (the estimate needs cells, not detail)
# The granulometry's cell width on the PBC training images, in their own pixels: the median over
# 400 train images (docs/history.md, measure_cell_scale). Windows are scaled by measured / this.
PBC_CELL_PX = 53.7
# Beyond these the estimate is not trusted. Chula's photos measure 0.45-0.58 of PBC's width, and a
# lower-power objective less (0.6x of Chula's: 0.27-0.35); at 0.5, where this was, a third of Chula's
# photos kept 360-px windows and showed the model cells at half its training scale.
MIN_RATIO, MAX_RATIO = 0.25, 2.0
FIELD_CELLS = 15  # an image this many cell widths across is a field of cells, whatever its size in pixels (a PBC cell image is 6.7)
NOISE = 1.15  # ratios within 1/NOISE..NOISE are PBC's own spread: the window stays as it is


def _otsu(v: np.ndarray) -> float:
    hist, edges = np.histogram(v, 128)
    centre = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    m0 = np.cumsum(hist * centre)
    w1, m1 = w0[-1] - w0, m0[-1] - m0
    between = w0 * w1 * (m0 / np.maximum(w0, 1) - m1 / np.maximum(w1, 1)) ** 2
    return float(centre[np.argmax(between)])


def _erode(m: np.ndarray) -> np.ndarray:
    """3x3 square erosion (outside the image counts as background)."""
    p = np.pad(m, 1)
    rows = p[:-2] & p[1:-1] & p[2:]
    return rows[:, :-2] & rows[:, 1:-1] & rows[:, 2:]


MIN_CONTRAST = 8.0  # L* between the lightest and darkest tenth: below it Otsu splits noise, not cells from slide


def _contrast(image: np.ndarray) -> float:
    light = rgb_to_lab(np.asarray(image[:: max(1, image.shape[0] // 128), :: max(1, image.shape[1] // 128)]))[..., 0]
    lo, hi = np.percentile(light, [10, 90])
    return float(hi - lo)


def cell_mask(image: np.ndarray, known: np.ndarray | None = None, side: int = SIDE) -> tuple[np.ndarray, float]:
    """(mask of cell pixels at the measuring size, scale factor of that size). Pixels not known
    (masked for restoring) count as background: their content is the defect, not the slide."""
    h, w = image.shape[:2]
    f = min(1.0, side / max(h, w))
    size = (max(1, round(w * f)), max(1, round(h * f)))
    small = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BOX))
    light = rgb_to_lab(small)[..., 0]
    cells = light < _otsu(light)
    # Pale centres of red cells are as light as the background: fill every hole that does not reach the border.
    labels, _ = coarse_regions(~cells)
    outside = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    cells |= (labels >= 0) & ~np.isin(labels, outside)
    if known is not None:
        k = np.asarray(Image.fromarray(known.astype(np.uint8) * 255).resize(size, Image.Resampling.BOX)) > 127
        cells &= k
    return cells, f


def cell_px(image: np.ndarray, known: np.ndarray | None = None, below: float | None = None, side: int = SIDE) -> float | None:
    """The width, in the image's pixels, of its commonest cells; None if it shows none (a blank
    field, or cells everywhere). `below`: only a width under this is of use to the caller, so the
    opening stops there (its cost grows with the square of the width), and the answer is None
    unless no wider cells can be the commonest; where it is not None it is the full answer. `side`:
    the size it is measured at (smaller: cheaper and coarser)."""
    cells, f = cell_mask(image, known, side)
    if not 0.05 < cells.mean() < 0.95 or _contrast(image) < MIN_CONTRAST:
        return None
    # Opening with a (2j+1)-px square: j erosions, then j dilations. The area each step removes is
    # the pattern spectrum; its peak is the width of the commonest objects.
    full = max(2, int(0.3 * min(cells.shape)))
    # With `below`, the steps up to that width and two past it, for the peak's neighbours.
    last = full if below is None else min(full, max(2, int((below * f - 1) / 2) + 3))
    areas, eroded = [cells.mean()], cells
    for j in range(1, last):
        eroded = _erode(eroded)
        if not eroded.any():
            areas.append(0.0)
            break
        opened = eroded
        for _ in range(j):
            opened = dilate(opened)
        areas.append((opened & cells).mean())
    drop = np.convolve(-np.diff(areas), np.ones(3) / 3, mode="same")
    if last < full and areas[-1] > 0:
        # Stopped early: drop[:-1] is as the whole spectrum has it. Every later (smoothed) drop is at
        # most the largest of the last two steps and the area still left, so a peak above that, with
        # both its neighbours known, is the whole spectrum's peak; anything else may be a wider cell.
        if len(areas) < 4:
            return None
        rest = max(areas[-3] - areas[-2], areas[-2] - areas[-1], areas[-1])
        drop = drop[:-1]
        if drop.max() <= rest or int(np.argmax(drop)) >= len(drop) - 1:
            return None
    i = int(np.argmax(drop))
    if 0 < i < len(drop) - 1:  # the peak between steps: the vertex of the parabola through its neighbours
        a, b, c = drop[i - 1 : i + 2]
        i += 0.5 * (a - c) / (a - 2 * b + c) if a - 2 * b + c < 0 else 0.0
    return (2 * (i + 1) + 1) / f


def one_window(h: int, w: int, window: int) -> bool:
    """An image no larger than about 1.25 windows is one window, the whole image: windowing it
    would cut a cell in two for little gain in scale. The plan, the cell-size estimate and the
    training data all follow this one rule."""
    return max(h, w) <= 1.25 * window


def auto_window(image: np.ndarray, mask: np.ndarray, window: int = DEFAULT_WINDOW) -> int:
    """The window that shows this image's cells at the training scale: `window` scaled by the
    image's cell width over PBC's. Only for images that show a field of cells (a single cell's
    image is one field whatever its cells' size; a small image of many small cells, from a
    lower-power objective, is windowed), and only when the estimate is clearly off PBC's own spread."""
    h, w = image.shape[:2]
    small = one_window(h, w, window)
    if small and max(h, w) < FIELD_CELLS * MIN_RATIO * PBC_CELL_PX:
        return window  # too few pixels to be a field of cells of any size the estimate trusts
    # A small image is a field only if its cells are narrow: the estimate need not look for wider ones,
    # and a coarse look at half the measuring size (a quarter of its cost) first rules out the
    # single-cell images that nearly all small ones are (with margin: that look rounds widths to 4 px).
    if small and cell_px(image, ~mask, below=1.5 * max(h, w) / FIELD_CELLS, side=SIDE // 2) is None:
        return window
    px = cell_px(image, ~mask, below=max(h, w) / FIELD_CELLS if small else None)
    if px is None or (small and max(h, w) < FIELD_CELLS * px):
        return window
    ratio = px / PBC_CELL_PX
    if not MIN_RATIO <= ratio <= MAX_RATIO or 1 / NOISE < ratio < NOISE:
        return window
    return int(round(window * ratio))
