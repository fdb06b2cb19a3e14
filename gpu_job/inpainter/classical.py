"""Classical fills: what the model's fill leans on where it should not be trusted alone.

- harmonic: Laplace's equation with the known pixels as boundary (the seam fix's solver,
  shared/imaging/blend.py): smooth, never an invented object; the closer of the two on plain background;
- biharmonic: the fourth-order equation (scikit-image's solver), the classical fill our
  benchmarks compare against; the closer of the two inside red cells;
- classical_fill: their mean. On other labs' smear photos it beat either alone in every region
  kind (background, red cell, white cell; BENCHMARKS.md): two fills whose errors differ. Except
  in a hole thinner than the model can draw (a stroke): there a line that crosses it goes on
  across it in the biharmonic fill and breaks in the harmonic one, so the fill is biharmonic's
  alone (strokes over another lab's white cells: 39.26 -> 40.45 dB; docs/benchmarks-log.md).
"""
from __future__ import annotations

import numpy as np

from shared.imaging.blend import smooth_fill, thin_regions


def harmonic(image: np.ndarray, unknown: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 with the unknown pixels filled harmonically from the known ones."""
    return np.clip(np.round(smooth_fill(image.astype(np.float32), ~unknown)), 0, 255).astype(np.uint8)


def biharmonic(image: np.ndarray, unknown: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 with the unknown pixels filled biharmonically (one sparse solve per region)."""
    from skimage.restoration import inpaint_biharmonic  # only when a fill needs it: the import takes a second

    if not unknown.any():
        return image.copy()
    out = inpaint_biharmonic(image, unknown, channel_axis=-1)
    return np.clip(np.round(out * 255), 0, 255).astype(np.uint8)


def classical_fill(image: np.ndarray, unknown: np.ndarray, thin: float = 0.0) -> np.ndarray:
    """The mean of the harmonic and the biharmonic fill, (H, W, 3) uint8; known pixels unchanged.
    Holes no deeper than `thin` px (shared/imaging/blend.py thin_regions) take the biharmonic fill alone."""
    bi = biharmonic(image, unknown).astype(np.float32)
    mean = (harmonic(image, unknown).astype(np.float32) + bi) / 2
    narrow = thin_regions(unknown, thin)
    mean[narrow] = bi[narrow]
    out = image.copy()
    out[unknown] = np.round(mean[unknown]).astype(np.uint8)
    return out


def lean(fill: np.ndarray, image: np.ndarray, unknown: np.ndarray, share: float, thin: float = 0.0) -> np.ndarray:
    """`fill` moved `share` of the way toward the classical fill of `image` (`thin`: as classical_fill's),
    inside `unknown` only."""
    if share <= 0 or not unknown.any():
        return fill
    classical = classical_fill(image, unknown, thin).astype(np.float32)
    out = fill.copy()
    out[unknown] = np.round((1 - share) * fill[unknown].astype(np.float32) + share * classical[unknown]).astype(np.uint8)
    return out

