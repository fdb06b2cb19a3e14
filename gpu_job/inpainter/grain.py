"""Grain: the fine detail a fill lacks, drawn as noise whose strength per scale matches the pixels
around the hole.

The first stage restores at 64 px and the texture stage redraws only detail below about 4 px, so a
fill is smoother than the cell around it at the scales between; a classifier told restored crops
from real ones by that alone (BENCHMARKS.md, realism). For each of a few scales (band-pass by
differences of box blurs, as in a Laplacian pyramid) this measures the detail's standard deviation
per channel on the known pixels around the hole and inside the fill, and adds band-passed noise
that makes up the difference inside the fill only: the fill's own structure and colours stay, and
nothing is added where the fill is already as detailed as its surroundings. Detail is matched
per brightness: a nucleus is grainier than plasma, so fill pixels as dark as the ring's darkest
quarter get that quarter's detail, and plasma between red cells stays as smooth as plasma (matched
to the whole ring at once, plain-background fills were 5 dB worse). The same noise field
serves the three channels, as the stain's texture darkens all three together. Like matching the
subband energies of texture synthesis (Heeger & Bergen 1995), with the surroundings as the exemplar.
"""
from __future__ import annotations

import numpy as np

from shared.imaging.blend import box_sum

RADII = (1, 2, 4)  # box radii of the blurs between bands: bands of about 1, 2-3 and 4-8 px
RING = 12  # px around the hole whose detail the fill is matched to
LEVELS = 4  # brightness classes (quartiles of the ring) matched separately
ENOUGH = 0.8


def _blur(a: np.ndarray, r: int) -> np.ndarray:
    """Box blur applied twice (close to a Gaussian), normalised at the edges."""
    ones = np.ones(a.shape[:2] + (1,), np.float32)
    return box_sum(box_sum(a, r), r) / box_sum(box_sum(ones, r), r)


def bands(a: np.ndarray) -> list[np.ndarray]:
    """(H, W, C) float -> the band-pass images, finest first."""
    levels = [a] + [_blur(a, r) for r in RADII]
    return [levels[i] - levels[i + 1] for i in range(len(RADII))]


def spread(values: np.ndarray) -> np.ndarray:
    """(N, C) -> the standard deviation per channel as the median absolute deviation estimates it:
    the few strong edges around a hole (a cell's rim) are structure, not grain."""
    return 1.4826 * np.median(np.abs(values - np.median(values, 0)), 0)


def add_grain(image: np.ndarray, fill: np.ndarray, known: np.ndarray, seed: int, strength: float = 1.0) -> np.ndarray:
    """image: (H, W, 3) uint8, restored inside `fill` (bool); `known`: the pixels that are the
    original's. Returns a copy with grain added inside `fill`; every other pixel unchanged."""
    if strength <= 0 or not fill.any():
        return image.copy()
    # Only the fill, its ring and the blurs' reach around them are read: a window is often far larger.
    ys, xs = np.nonzero(fill)
    margin = RING + 4 * RADII[-1]
    box = (slice(max(ys.min() - margin, 0), ys.max() + margin + 1), slice(max(xs.min() - margin, 0), xs.max() + margin + 1))
    out = image.copy()
    out[box] = _add_grain(image[box], fill[box], known[box], seed, strength)
    return out


def _add_grain(image: np.ndarray, fill: np.ndarray, known: np.ndarray, seed: int, strength: float) -> np.ndarray:
    near = box_sum(fill.astype(np.float32)[..., None], RING)[..., 0] > 0
    ring = near & known & ~fill
    if ring.sum() < 32:  # too little around the hole to say what its detail is
        return image.copy()
    img = image.astype(np.float32)
    lum = _blur(img, RADII[-1]).mean(-1)  # the local brightness, not the pixel's own grain
    level = np.digitize(lum, np.quantile(lum[ring], np.linspace(0, 1, LEVELS + 1)[1:-1]))
    noise = np.random.default_rng(seed).standard_normal(image.shape[:2] + (1,)).astype(np.float32)
    out = img.copy()
    for band, nband in zip(bands(img), bands(noise)):
        unit = nband / max(float(spread(nband[fill])[0]), 1e-6)
        for k in range(LEVELS):
            r, f = ring & (level == k), fill & (level == k)
            if r.sum() < 16 or not f.any():  # no ring pixel this bright: nothing to match to
                continue
            want, have = spread(band[r]), spread(band[f])  # per channel
            # A fill within ENOUGH of its surroundings' detail gets none: the two estimates differ that much by chance.
            extra = np.sqrt(np.maximum(want ** 2 - have ** 2, 0.0)) * (have < ENOUGH * want)
            out[f] += strength * extra * unit[f]
    res = image.copy()
    res[fill] = np.clip(np.round(out[fill]), 0, 255).astype(np.uint8)
    return res
