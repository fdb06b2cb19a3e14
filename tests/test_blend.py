"""Seam-free compositing (shared/imaging/blend.py): the fill solves Laplace's equation, the correction
removes the patch's low-frequency error and keeps its detail, and nothing outside the mask moves."""
import numpy as np
import pytest

from shared.imaging.blend import seamless, smooth_fill
from shared.imaging.preprocess import composite, preprocess
from tests.conftest import synthetic_cell


def hole(h, w, box):
    known = np.ones((h, w), bool)
    y0, y1, x0, x1 = box
    known[y0:y1, x0:x1] = False
    return known


@pytest.mark.parametrize("shape,box", [((300, 300), (60, 240, 80, 260)), ((37, 91), (5, 30, 10, 80))])
def test_smooth_fill_reproduces_a_linear_field(shape, box):
    # A linear function is harmonic, so the Laplace fill of a hole must give it back.
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(np.float32)
    field = np.stack([0.3 * xx - 0.2 * yy + 5, 100 - 0.1 * xx], -1)
    known = hole(*shape, box)
    filled = smooth_fill(field, known)
    assert np.array_equal(filled[known], field[known])  # trusted values are kept exactly
    assert np.abs(filled - field).max() < 1.0  # range ~150: under one grey level everywhere


def test_smooth_fill_at_the_border_stays_within_the_known_range(rng):
    # A hole touching the edge has no boundary there (the fill treats it as mirror-flat); a
    # harmonic fill still never overshoots the values it was given (maximum principle).
    field = rng.normal(0, 30, (64, 64, 3)).astype(np.float32)
    known = hole(64, 64, (0, 40, 0, 64))
    filled = smooth_fill(field, known)
    lo, hi = field[known].min(0), field[known].max(0)
    assert (filled >= lo - 1e-3).all() and (filled <= hi + 1e-3).all()


def test_smooth_fill_converges_with_more_sweeps():
    yy, xx = np.mgrid[:200, :200].astype(np.float32)
    field = (np.sin(xx / 40) * 50 + yy * 0.2)[..., None]
    known = hole(200, 200, (30, 170, 40, 160))
    ref = smooth_fill(field, known, iters=400)
    errs = [np.abs(smooth_fill(field, known, iters=n) - ref).max() for n in (0, 5, 20)]
    assert errs[0] > errs[1] > errs[2]


def test_smooth_fill_edge_cases():
    v = np.arange(12, dtype=np.float32).reshape(2, 2, 3)
    assert np.array_equal(smooth_fill(v, np.ones((2, 2), bool)), v)
    assert not smooth_fill(v, np.zeros((2, 2), bool)).any()  # nothing trusted: no correction


def test_seamless_removes_an_offset_and_keeps_detail(rng):
    original = (synthetic_cell(rng, 120, 140) // 2 + 40).astype(np.uint8)  # mid-range: nothing below clips
    unknown = ~hole(120, 140, (30, 90, 40, 110))
    detail = np.where((np.indices((120, 140)).sum(0) % 2)[..., None] == 1, 6, -6)  # one-pixel checkerboard
    # The model's patch: the true content plus fine detail, in the wrong overall colour.
    patch = np.clip(original.astype(int) + detail + np.array([30, -25, 30]), 0, 255).astype(np.uint8)
    fixed = seamless(original, unknown, patch)
    want = np.clip(original.astype(int) + detail, 0, 255)
    inside = fixed[unknown].astype(int)
    assert np.abs(patch[unknown].astype(int) - want[unknown]).mean() > 25  # before: far off
    assert np.abs(inside - want[unknown]).mean() < 2  # after: the offset is gone, the checkerboard stays
    assert np.array_equal(fixed[~unknown], patch[~unknown])  # only `unknown` is touched


def test_composite_with_seam_keeps_outside_bit_identical(rng):
    img = synthetic_cell(rng, 97, 131)
    mask = np.zeros((97, 131), bool)
    mask[20:60, 30:90] = True
    unknown = mask.copy()
    unknown[15:65, 25:95] = True  # a wider region the original cannot be trusted at (another window's hole)
    p = preprocess(img, mask, 64)
    pred = np.full((64, 64, 3), 250, np.uint8)
    plain = composite(img, mask, pred, p)
    for kw in ({"seam": True}, {"seam": True, "unknown": unknown}, {"seam": True, "feather": 3}):
        out = composite(img, mask, pred, p, **kw)
        assert np.array_equal(out[~mask], img[~mask]), kw
        # the flat bright patch is pulled toward the cell's colours at the hole's edge
        edge = np.zeros_like(mask)
        edge[20, 30:90] = True
        assert np.abs(out[edge].astype(int) - img[edge]).mean() < np.abs(plain[edge].astype(int) - img[edge]).mean(), kw


def test_seamless_is_linear_in_the_patch(rng):
    # Inpainter fixes the seam once, on the mean of K samples, instead of on each: this is why.
    orig = (60 + synthetic_cell(rng, 50, 60) // 2).astype(np.uint8)  # 60..187: no fix hits 0 or 255
    unknown = np.zeros((50, 60), bool)
    unknown[12:38, 15:45] = True
    patches = [(orig.astype(int) + rng.integers(-30, 30) + rng.integers(-15, 15, orig.shape)).astype(np.uint8) for _ in range(6)]
    fixed_each = np.mean([seamless(orig, unknown, p).astype(np.float32) for p in patches], axis=0)
    fixed_mean = seamless(orig, unknown, np.round(np.mean(patches, axis=0)).astype(np.uint8)).astype(np.float32)
    d = np.abs(fixed_each - fixed_mean)[unknown]
    assert d.mean() < 0.6 and d.max() <= 3  # rounding of the patch and of each fix, no more


def test_across_a_thin_hole_the_seam_continues_the_originals_gradients():
    # x^2 + y^2 is biharmonic, not harmonic: across a thin strip the Laplace fill sags below it and
    # the fill that also continues its gradients gives it back. A strip 8 px wide is thinner than one
    # model pixel of a 575-px window, the case the thin-hole fill is for.
    y, x = np.indices((80, 120), dtype=np.float32)
    original = np.repeat((40 + ((x - 60) ** 2 + (y - 40) ** 2) / 30)[..., None], 3, -1).round().astype(np.uint8)
    unknown = np.zeros((80, 120), bool)
    unknown[:, 56:64] = True
    patch = np.full_like(original, 100)  # a flat patch: everything inside comes from the correction
    err = lambda out: np.abs(out[unknown].astype(int) - original[unknown]).mean()  # noqa: E731
    harmonic_only, thin = seamless(original, unknown, patch), seamless(original, unknown, patch, thin=5)
    assert err(harmonic_only) > 1.0
    assert err(thin) < 0.5 * err(harmonic_only)
    assert np.array_equal(thin[~unknown], patch[~unknown])


def test_a_deeper_hole_keeps_the_smooth_fill(rng):
    original = (60 + synthetic_cell(rng, 90, 90) // 2).astype(np.uint8)
    unknown = ~hole(90, 90, (15, 75, 15, 75))  # 30 px deep
    unknown[5:9, 10:80] = True  # and a strip 4 px wide: 2 px deep
    patch = np.full_like(original, 120)
    plain, thin = seamless(original, unknown, patch), seamless(original, unknown, patch, thin=6)
    box = ~hole(90, 90, (15, 75, 15, 75))
    assert np.array_equal(thin[box], plain[box])  # bit for bit: the disks and blobs of the benchmarks did not move
    assert not np.array_equal(thin[unknown & ~box], plain[unknown & ~box])
