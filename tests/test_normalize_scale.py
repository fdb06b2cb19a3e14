"""Colour normalisation around the model (shared/imaging/colour.py), the cell-size estimate that sizes
windows (shared/imaging/scale.py), and the ways K samples become one fill (gpu_job.inpainter.inpaint.combine)."""
import json

import numpy as np
import pytest

from shared.imaging import colour
from shared.imaging.scale import PBC_CELL_PX, auto_window, cell_px
from shared.imaging.colour import od_to_rgb, rgb_to_lab
from tests.conftest import synthetic_cell


def two_stains(rng, h=96, w=96, scale=(1.0, 1.0), white=(250, 245, 240)):
    """An image made of two known dyes in optical density: blobs of each on an empty slide."""
    stains = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11]])
    stains /= np.linalg.norm(stains, axis=1, keepdims=True)
    conc = np.zeros((h, w, 2))
    yy, xx = np.mgrid[:h, :w]
    for k in range(2):
        for _ in range(6):
            cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(6, 14)
            conc[..., k] += (((yy - cy) ** 2 + (xx - cx) ** 2) < r * r) * rng.uniform(0.4, 1.0) * scale[k]
    return np.clip(np.round(od_to_rgb(conc @ stains, np.array(white, float))), 0, 255).astype(np.uint8), stains


def test_reinhard_moves_the_known_pixels_statistics_to_the_reference(rng):
    img = synthetic_cell(rng, 80, 90)
    ref = colour.reference(np.stack([synthetic_cell(np.random.default_rng(i), 64, 64) // 2 + 100 for i in range(6)]))
    known = np.ones(img.shape[:2], bool)
    known[20:50, 30:60] = False
    t = colour.fit("reinhard", img, known, ref)
    moved = rgb_to_lab(t.forward(img)[known])
    assert np.allclose(moved.mean(0), ref["reinhard"]["mean"], atol=1.5)
    assert np.allclose(moved.std(0), ref["reinhard"]["std"], rtol=0.1)
    back = t.inverse(t.forward(img))
    assert np.abs(back - img).mean() < 1.0  # in-gamut colours come back


def test_macenko_finds_the_stains_and_matches_their_range(rng):
    img, stains = two_stains(rng)
    est = np.array(colour.macenko_stats(img.reshape(-1, 3))["stains"])
    assert (np.abs((est @ stains.T).diagonal()) > 0.98).all()  # each estimated vector is its dye's
    ref_img, _ = two_stains(np.random.default_rng(5), scale=(2.0, 0.5))
    ref = colour.reference(ref_img[None])
    t = colour.fit("macenko", img, np.ones(img.shape[:2], bool), ref)
    moved = colour.macenko_stats(colour.to_uint8(t.forward(img)).reshape(-1, 3))
    assert np.allclose(moved["max_conc"], ref["macenko"]["max_conc"], rtol=0.2)


def test_no_statistics_no_change(rng):
    img = synthetic_cell(rng, 40, 40)
    ref = colour.reference(img[None])
    assert colour.fit("reinhard", img, np.zeros((40, 40), bool), ref) is colour.IDENTITY  # nothing known
    assert colour.fit("reinhard", img, np.ones((40, 40), bool), None) is colour.IDENTITY  # weights without a reference
    assert colour.fit("none", img, np.ones((40, 40), bool), ref) is colour.IDENTITY
    with pytest.raises(ValueError, match="normalize must be one of"):
        colour.fit("vahadane", img, np.ones((40, 40), bool), ref)


def disks(rng, diameter, side=700, n=None):
    """A whole-field photo's shape: dark disks of one size on a light background."""
    img = np.full((side, side, 3), 235, np.uint8)
    yy, xx = np.mgrid[:side, :side]
    for _ in range(n or int(0.3 * side * side / diameter**2)):
        cy, cx = rng.uniform(0, side, 2)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < (diameter / 2) ** 2] = (190, 120, 130)
    return img


def test_cell_size_follows_the_cells(rng):
    small, large = cell_px(disks(rng, 40)), cell_px(disks(rng, 60))
    assert 24 < small < 44 and 1.3 < large / small < 1.7
    assert cell_px(np.full((300, 300, 3), 230, np.uint8)) is None  # a blank field has no cells


def test_windows_grow_with_the_cells_only_where_they_are_clearly_larger(rng):
    mask = np.zeros((700, 700), bool)
    mask[100:120, 100:120] = True
    d = PBC_CELL_PX / 0.7  # the disk diameter whose estimate is PBC's
    assert auto_window(disks(rng, d), mask) == 360
    big = auto_window(disks(rng, 1.6 * d), mask)
    assert 1.4 * 360 < big < 1.9 * 360
    assert auto_window(disks(rng, 1.6 * d, side=400), np.zeros((400, 400), bool) | mask[:400, :400]) == 360  # one field anyway


def test_a_small_photo_of_many_small_cells_is_windowed(rng):
    """A lower-power objective: a 400-px field of cells at a third of PBC's width is windows of a
    third of 360 px, so the model sees its cells at the training scale; a cell image as large in
    pixels, showing a few cells only, stays one field."""
    d = PBC_CELL_PX / 0.7  # the disk diameter whose estimate is PBC's
    free = np.zeros((400, 400), bool)
    small = auto_window(disks(rng, 0.35 * d, side=400), free)
    assert 0.28 * 360 < small < 0.45 * 360
    assert auto_window(disks(rng, d, side=400), free) == 360
    assert auto_window(disks(rng, 0.7 * d, side=400), free) == 360  # 11 cells across: one field of a few cells


def test_normalised_inpainting_keeps_every_pixel_outside_the_mask(tiny_weights, tmp_path, rng):
    from gpu_job.inpainter.inpaint import Inpainter, InpaintOptions

    rec = json.loads(tiny_weights.with_suffix(".json").read_text())
    rec["normalize"] = colour.reference(np.stack([synthetic_cell(np.random.default_rng(i), 64, 64) for i in range(8)]))
    (tmp_path / "w.safetensors").write_bytes(tiny_weights.read_bytes())
    (tmp_path / "w.json").write_text(json.dumps(rec))
    inp = Inpainter(tmp_path / "w.safetensors", "cpu")
    img = (synthetic_cell(rng, 60, 64) * np.array([0.8, 1.0, 1.1])).clip(0, 255).astype(np.uint8)  # another lab's tint
    mask = np.zeros((60, 64), bool)
    mask[15:40, 20:45] = True
    outs = {m: inp.inpaint(img, mask, InpaintOptions(steps=2, samples=2, normalize=m, texture=False)).image for m in colour.METHODS}
    for out in outs.values():
        assert np.array_equal(out[~mask], img[~mask])
    assert not np.array_equal(outs["reinhard"], outs["none"])  # the tint was moved before the model and back after


def test_nearest_is_the_sample_nearest_the_mean():
    from gpu_job.inpainter.inpaint import combine
    from shared.imaging.preprocess import Prepared
    from shared.imaging.windows import Box, Window

    w = Window(Box(0, 0, 4, 4, -1), Prepared(np.zeros((4, 4, 3), np.uint8), np.ones((4, 4), bool), 4, 4, (0, 0, 0, 0)), np.ones((4, 4), bool))
    samples = [[np.full((4, 4, 3), v, np.float32)] for v in (0.0, 40.0, 100.0)]  # mean 46.7: 40 is nearest
    assert combine(samples, [w], "nearest")[0][0, 0, 0] == 40
    assert combine(samples, [w], "first")[0][0, 0, 0] == 0
    assert abs(combine(samples, [w], "mean")[0][0, 0, 0] - 140 / 3) < 1e-4
