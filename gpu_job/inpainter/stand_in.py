"""A stand-in for the Inpainter in tests of the plumbing only (see HarmonicStandIn)."""
from __future__ import annotations

from gpu_job.inpainter.classical import harmonic
from gpu_job.inpainter.inpaint import InpaintResult


class HarmonicStandIn:
    """Tests of the plumbing only (CELLPAINT_TEST_FILL=harmonic, read by gpu_job/job.py): the
    harmonic fill in the Inpainter's place, so that a large folder crosses the whole chain without
    the model's cost (scripts/bench_local.py --fill harmonic). Every result names the stand-in."""

    size, batch_size, device = 64, 64, "cpu"
    record = {"code_version": "harmonic stand-in (tests only)", "sha256": "harmonic-stand-in"}

    def label_index(self, label) -> int:
        return 0

    def texturer(self) -> None:
        return None

    def inpaint_many(self, pairs, opts, windows=None) -> list:
        return [InpaintResult(harmonic(image, mask)) for image, mask in pairs]
