"""Classical fills (gpu_job/inpainter/classical.py): both reproduce a ramp, the classical fill is their mean,
only the unknown pixels change, and a hole thinner than the model can draw
takes the biharmonic fill alone."""
import numpy as np

from gpu_job.inpainter.classical import biharmonic, classical_fill, harmonic, lean


def disk(n=64, r=12):
    yy, xx = np.mgrid[:n, :n]
    return (yy - n / 2) ** 2 + (xx - n / 2) ** 2 < r**2


def test_a_ramp_is_filled_by_both():
    ramp = np.repeat(np.linspace(20, 220, 64)[None, :, None], 64, 0).repeat(3, -1).round().astype(np.uint8)
    m = disk()
    for fill in (harmonic, biharmonic, classical_fill):
        out = fill(ramp, m)
        assert np.abs(out.astype(int) - ramp).max() <= 2, fill.__name__


def test_the_classical_fill_is_the_mean_of_the_two():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)
    m = disk(40, 9)
    want = (harmonic(img, m).astype(float) + biharmonic(img, m)) / 2
    assert np.abs(classical_fill(img, m).astype(float) - want).max() <= 0.5
    assert np.abs(harmonic(img, m).astype(float) - biharmonic(img, m))[m].max() > 3  # two different fills


def test_only_unknown_pixels_change_and_lean_moves_part_way():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (48, 40, 3), dtype=np.uint8)
    m = np.zeros((48, 40), bool)
    m[5:15, 8:30] = True
    m[30:40, 2:6] = True
    out = classical_fill(img, m)
    np.testing.assert_array_equal(out[~m], img[~m])
    fill = img.copy()
    fill[m] = 0
    half = lean(fill, img, m, 0.5)
    np.testing.assert_array_equal(half[~m], img[~m])
    assert np.abs(half[m].astype(float) - out[m] / 2).max() <= 1
    np.testing.assert_array_equal(lean(fill, img, m, 0.0), fill)


def test_a_thin_hole_takes_the_biharmonic_fill_alone_and_a_deep_one_the_mean():
    rng = np.random.default_rng(2)
    img = rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)
    m = np.zeros((48, 48), bool)
    m[6:9, 4:44] = True  # a stroke 3 px wide: no pixel more than 2 px from its edge
    m[24:40, 16:32] = True  # a box 16 px wide: 8 px deep
    stroke, box = m.copy(), m.copy()
    stroke[20:] = False
    box[:20] = False
    bi, mean = biharmonic(img, m).astype(float), (harmonic(img, m).astype(float) + biharmonic(img, m)) / 2
    out = classical_fill(img, m, thin=3).astype(float)
    assert np.abs(out - bi)[stroke].max() <= 0.5 and np.abs(out - mean)[box].max() <= 0.5
    assert np.abs(bi - mean)[stroke].max() > 3  # the two differ there: the test tells them apart
    assert np.abs(classical_fill(img, m).astype(float) - mean)[m].max() <= 0.5  # thin=0: the mean everywhere
    half = lean(np.zeros_like(img), img, m, 0.5, thin=3).astype(float)
    assert np.abs(half - bi / 2)[stroke].max() <= 1


def test_the_guard_replaces_a_fill_foreign_to_its_ring_and_keeps_one_that_belongs():
    from gpu_job.inpainter.guard import MAX_FOREIGN, guard

    img = np.full((64, 64, 3), (225, 215, 220), np.uint8)  # plain slide
    m = disk(64, 10)
    blob = img.copy()
    blob[m] = (90, 40, 140)  # a purple, nucleus-like object where the slide is plain
    out, share = guard(blob, m, m)
    assert share > MAX_FOREIGN and np.abs(out[m].astype(int) - img[m]).max() <= 2  # back to the plain slide
    faint = img.copy()
    faint[m] = (215, 180, 190)  # a faint red cell drawn in a hole of plain slide: nothing around says it is there
    out, share = guard(faint, m, m)
    assert share == 1.0 and np.abs(out[m].astype(int) - img[m]).max() <= 2
    cells = img.copy()
    cells[:, 32:] = (200, 120, 130)  # the ring shows slide and a red cell
    fill = cells.copy()
    left = np.broadcast_to(np.arange(64)[None, :, None] < 32, (64, 64, 1))
    fill[m] = np.where(left, np.array([224, 214, 219]), np.array([201, 121, 131]))[m]  # the ring's own colours
    out, share = guard(fill, m, m)
    assert share == 0.0 and np.array_equal(out, fill)  # it belongs: kept
