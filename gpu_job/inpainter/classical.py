"""Classical fills: what the model's fill leans on where it should not be trusted alone.

- harmonic: Laplace's equation with the known pixels as boundary (the seam fix's solver,
  shared/imaging/blend.py): smooth, never an invented object; the closer of the two on plain background;
- biharmonic: the fourth-order equation (scikit-image's solver), the classical fill our
  benchmarks compare against; the closer of the two inside red cells;
- classical_fill: their mean. On other labs' smear photos it beat either alone in every region
  kind (background, red cell, white cell; BENCHMARKS.md): two fills whose errors differ.
"""
from __future__ import annotations

import numpy as np

from shared.imaging.blend import smooth_fill


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


def classical_fill(image: np.ndarray, unknown: np.ndarray) -> np.ndarray:
    """The mean of the harmonic and the biharmonic fill, (H, W, 3) uint8; known pixels unchanged."""
    mean = (harmonic(image, unknown).astype(np.float32) + biharmonic(image, unknown).astype(np.float32)) / 2
    out = image.copy()
    out[unknown] = np.round(mean[unknown]).astype(np.uint8)
    return out


def lean(fill: np.ndarray, image: np.ndarray, unknown: np.ndarray, share: float) -> np.ndarray:
    """`fill` moved `share` of the way toward the classical fill of `image`, inside `unknown` only."""
    if share <= 0 or not unknown.any():
        return fill
    classical = classical_fill(image, unknown).astype(np.float32)
    out = fill.copy()
    out[unknown] = np.round((1 - share) * fill[unknown].astype(np.float32) + share * classical[unknown]).astype(np.uint8)
    return out


class HarmonicStandIn:
    """Tests of the plumbing only (CELLPAINT_TEST_FILL=harmonic, read by gpu_job/job.py): the
    harmonic fill in the Inpainter's place, so that 10,000 pairs cross the whole chain in minutes
    on a CPU (scripts/bench_local.py --fill harmonic). Every result says it was made this way."""

    size, batch_size, device = 64, 64, "cpu"
    record = {"code_version": "harmonic stand-in (tests only)", "sha256": "harmonic-stand-in"}

    def label_index(self, label) -> int:
        return 0

    def texturer(self) -> None:
        return None

    def inpaint_many(self, pairs, opts, windows=None) -> list:
        from gpu_job.inpainter.inpaint import InpaintResult

        return [InpaintResult(harmonic(image, mask)) for image, mask in pairs]
