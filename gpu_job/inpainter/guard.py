"""A guard against gross failures: a fill whose colours appear nowhere around it falls back to a
classical fill.

The model fills from what it learned of cells; on a photo unlike them it can paint what is not
there, a purple nucleus-like blob on plain background. What surrounds the hole says which colours
are plausible inside it: a fill pixel whose CIELAB colour is more than FOREIGN_DE from every
colour of the known ring around the region is foreign. When more than MAX_FOREIGN of a region is
foreign, its fill is replaced by the smooth (harmonic) fill of the ring, the same Laplace solver
the seam fix uses (gpu_job/inpainter/classical.py): plain, and never an invented object. A mask over part
of a white cell keeps the model's fill, because its ring shows the nucleus and cytoplasm colours
the fill uses.

A hole in plain surroundings is guarded too (with any classical share allowed: `fallback` above
0): where every pixel of the ring is the same empty slide (within PLAIN_DE of the ring's median),
nothing that enters the hole says a cell is in it, and the likeliest content is more slide, so the
smooth fill replaces whatever the model drew (on other microscopes' photos it could draw a faint
red cell there).
"""
from __future__ import annotations

import numpy as np

from shared.imaging.masks import dilate
from shared.imaging.colour import rgb_to_lab

from gpu_job.inpainter.classical import harmonic

FOREIGN_DE = 20.0  # CIELAB distance: a colour clearly unlike every colour of the ring
MAX_FOREIGN = 0.05  # share of a region's pixels that may be foreign before it falls back
RING = 12  # px of known pixels around the region that say which colours are plausible
SAMPLE = 512  # ring colours compared against (enough for a palette, cheap at any size)
PLAIN_DE = 8.0  # CIELAB distance from the ring's median that 95 % of a plain ring stays within


def foreign_share(fill: np.ndarray, region: np.ndarray, unknown: np.ndarray, rng: np.random.Generator | None = None) -> float:
    """fill: (H, W, 3) uint8 with the region filled; region: the pixels filled; unknown: every
    pixel the original cannot be trusted at. The share of region pixels foreign to the ring."""
    ring = dilate(region, RING) & ~unknown
    if not ring.any() or not region.any():
        return 0.0
    palette = rgb_to_lab(fill[ring])
    if len(palette) > SAMPLE:
        palette = palette[(rng or np.random.default_rng(0)).choice(len(palette), SAMPLE, replace=False)]
    inside = rgb_to_lab(fill[region])
    nearest = np.min(((inside[:, None, :] - palette[None, :, :]) ** 2).sum(-1), axis=1) if len(inside) <= 4096 else \
        np.concatenate([np.min(((c[:, None, :] - palette[None]) ** 2).sum(-1), axis=1) for c in np.array_split(inside, len(inside) // 4096 + 1)])
    return float((np.sqrt(nearest) > FOREIGN_DE).mean())


def plain_ring(image: np.ndarray, region: np.ndarray, unknown: np.ndarray) -> bool:
    """True if the known ring around the region is one plain colour: empty slide, no cell edge in it."""
    ring = dilate(region, RING) & ~unknown
    if ring.sum() < 16:
        return False
    lab = rgb_to_lab(image[ring])
    return bool(np.percentile(np.sqrt(((lab - np.median(lab, axis=0)) ** 2).sum(-1)), 95) < PLAIN_DE)


def guard(fill: np.ndarray, region: np.ndarray, unknown: np.ndarray, foreign: bool = True, plain: bool = True) -> tuple[np.ndarray, float]:
    """The fill, or the classical fill where it is foreign to its surroundings (`foreign`) or its
    surroundings are plain slide (`plain`); and the foreign share (1.0 for a plain ring)."""
    share = 1.0 if plain and plain_ring(fill, region, unknown) else foreign_share(fill, region, unknown) if foreign else 0.0
    if share <= MAX_FOREIGN:
        return fill, share
    out = fill.copy()
    out[region] = harmonic(fill, unknown)[region]
    return out, share
