"""Training augmentation (gpu_job/data/augment.py) and the stain conversions it uses (shared/imaging/colour.py)."""
import numpy as np

from gpu_job.data.augment import DomainAug, domain_augment, reframe
from shared.imaging.colour import hed_to_rgb, lab_to_rgb, rgb_to_hed, rgb_to_lab


def _field(seed=0, size=128):
    rng = np.random.default_rng(seed)
    img = np.full((size, size, 3), (230, 210, 200), np.uint8)
    yy, xx = np.mgrid[:size, :size]
    img[(yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 6) ** 2] = (90, 40, 140)  # a "nucleus" in the middle
    return np.clip(img + rng.integers(-5, 6, img.shape), 0, 255).astype(np.uint8)


def test_conversions_round_trip():
    rgb = np.random.default_rng(0).integers(0, 256, (50, 3)).astype(np.float64)
    assert np.abs(hed_to_rgb(rgb_to_hed(rgb)) - rgb).max() < 1e-6
    assert np.abs(lab_to_rgb(rgb_to_lab(rgb)) - rgb).max() < 1e-3
    assert np.allclose(rgb_to_lab(np.array([255.0, 255, 255])), [100, 0, 0], atol=0.01)


def test_reframe_scales_and_shifts():
    f = _field()
    same = reframe(f, 64, 1.0, 0, 0)
    dark = lambda a: (a.mean(-1) < 120)  # noqa: E731
    assert abs(dark(same).mean() - np.pi / 36) < 0.01  # the disk covers (1/6)^2 pi of the view
    assert dark(reframe(f, 64, 1.5, 0, 0)).mean() > 2 * dark(same).mean()  # zoomed in: larger
    assert dark(reframe(f, 64, 0.6, 0, 0)).mean() < 0.5 * dark(same).mean()  # zoomed out: smaller
    moved = reframe(f, 64, 1.0, 0.25, 0)
    cols = np.nonzero(dark(moved).any(0))[0]
    assert cols.mean() < 32 - 10  # the view moved right, so the disk moved left


def test_domain_augment_shapes_and_clean_share():
    fields = np.stack([_field(i) for i in range(40)])
    rng = np.random.default_rng(0)
    out = domain_augment(fields, rng, 64)
    assert out.shape == (40, 64, 64, 3) and out.dtype == np.uint8
    clean = domain_augment(fields, np.random.default_rng(1), 64, DomainAug(clean=1.0))
    # clean cells are only turned and flipped: the same pixels in another order
    assert all(sorted(map(tuple, c.reshape(-1, 3))) == sorted(map(tuple, reframe(f, 64, 1.0, 0, 0).reshape(-1, 3))) for c, f in zip(clean[:3], fields[:3]))
    assert not np.array_equal(np.sort(out.reshape(40, -1), axis=1), np.sort(np.stack([reframe(f, 64, 1.0, 0, 0) for f in fields]).reshape(40, -1), axis=1))


def test_fade_nuclei_lightens_the_nucleus_and_leaves_slide_and_red_cells():
    from gpu_job.data.augment import fade_nuclei

    img = np.array([[(87, 42, 137), (254, 229, 202), (200, 140, 150)]], np.uint8)  # PBC's nucleus, slide, a red cell
    out = fade_nuclei(img, np.random.default_rng(0), kept=(0.65, 0.65)).astype(int)
    assert (out[0, 0] - img[0, 0] > 15).all()  # the nucleus: lighter in every channel...
    assert rgb_to_lab(out[0, 0])[2] < -20  # ...and still nucleus-coloured (BCCD's as the model sees them: 122/81/149)
    assert np.abs(out[0, 1:] - img[0, 1:].astype(int)).max() <= 6  # slide and red cell barely move
