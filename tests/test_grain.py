"""Grain: noise that gives a smooth fill the detail of its surroundings, scale by scale, and nothing else."""
from __future__ import annotations

import numpy as np

from gpu_job.inpainter.grain import add_grain, bands, spread


def textured(seed: int = 0, size: int = 120) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(128 + 20 * rng.standard_normal((size, size, 3)), 0, 255).astype(np.uint8)


def square(size: int = 120, lo: int = 40, hi: int = 80) -> np.ndarray:
    m = np.zeros((size, size), bool)
    m[lo:hi, lo:hi] = True
    return m


def test_a_smooth_fill_gets_the_detail_of_its_surroundings_at_every_scale():
    img, fill = textured(), square()
    smooth = img.copy()
    smooth[fill] = 128
    out = add_grain(smooth, fill, ~fill, seed=0)
    inner = square(lo=48, hi=72)  # away from the fill's edge, where bands mix in the known pixels
    # the coarsest band (4-8 px) has few independent samples in a 24-px square: a wider tolerance
    for real, ours, rtol in zip(bands(img.astype(np.float32)), bands(out.astype(np.float32)), (0.25, 0.25, 0.4)):
        assert np.allclose(spread(ours[inner]), spread(real[inner]), rtol=rtol)
    assert abs(out[fill].astype(float).mean() - 128) < 1.0  # detail only: the fill's colour stays
    assert (out[~fill] == smooth[~fill]).all()


def test_nothing_is_added_where_the_fill_is_as_detailed_as_around_it_or_strength_is_zero():
    img, fill = textured(), square()
    change = np.abs(add_grain(img, fill, ~fill, seed=0).astype(int) - img)[fill]
    assert change.mean() < 0.5 and (change > 0).mean() < 0.2  # within the estimates' chance difference
    smooth = img.copy()
    smooth[fill] = 128
    assert (add_grain(smooth, fill, ~fill, seed=0, strength=0) == smooth).all()


def test_a_smooth_hole_among_textured_cells_stays_as_smooth_as_what_is_as_bright_around_it():
    """Plasma between red cells: the dark textured cells in the ring must not lend it their grain."""
    img, fill = textured(), square()
    img[:, :60] = 230  # left half plain and bright (plasma), right half textured and darker (cells)
    img[:, 60:] //= 2
    smooth = img.copy()
    smooth[:, :60][fill[:, :60]] = 230
    smooth[:, 60:][fill[:, 60:]] = 64
    out = add_grain(smooth, fill, ~fill, seed=0).astype(int)
    plasma, cells = fill.copy(), fill.copy()
    plasma[:, 52:], cells[:, :68] = False, False  # away from the edge between them
    assert np.abs(out - smooth)[plasma].mean() < 0.5 and out[cells].std() > 5


def test_plain_surroundings_give_no_grain_and_the_seed_decides_the_noise():
    plain, fill = np.full((120, 120, 3), 200, np.uint8), square()
    assert (add_grain(plain, fill, ~fill, seed=0) == plain).all()
    img = textured()
    smooth = img.copy()
    smooth[fill] = 128
    a, b, c = (add_grain(smooth, fill, ~fill, seed=s) for s in (1, 1, 2))
    assert (a == b).all() and (a != c).any()
