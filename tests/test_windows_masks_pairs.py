import numpy as np

from shared.imaging.masks import KINDS, dilate, eval_masks, random_mask
from shared.pipeline.pairs import find_pairs, split_name
from shared.imaging.windows import plan_windows, prepare, region_mask


def test_small_image_is_one_window():
    mask = np.zeros((363, 360), bool)
    mask[100:150, 100:200] = True
    boxes, _ = plan_windows(mask, 360)
    assert len(boxes) == 1 and (boxes[0].height, boxes[0].width) == (363, 360)


def test_large_image_gets_a_window_per_region_at_training_scale():
    mask = np.zeros((1200, 1600), bool)
    mask[100:140, 100:160] = True
    mask[900:1000, 1300:1350] = True
    boxes, labels = plan_windows(mask, 360)
    assert len(boxes) == 2
    written = np.zeros_like(mask, int)
    for b in boxes:
        assert (b.height, b.width) == (360, 360)  # training scale, not the whole image
        region = region_mask(mask, labels, b)
        written[b.top : b.top + b.height, b.left : b.left + b.width] += region
    assert np.array_equal(written > 0, mask) and written.max() == 1  # every pixel written once
    wins = prepare(np.zeros((1200, 1600, 3), np.uint8), mask, 360, 64)
    assert [w.prep.image.shape for w in wins] == [(64, 64, 3)] * 2


def test_region_larger_than_window_gets_larger_window():
    mask = np.zeros((1500, 1500), bool)
    mask[100:700, 100:200] = True
    (box,), _ = plan_windows(mask, 360)
    assert box.height >= 600 and box.top <= 100 and box.top + box.height >= 700


def test_random_masks_cover_range_and_kinds(rng):
    covers = []
    for kind in KINDS:
        for _ in range(30):
            m = random_mask(rng, 64, 64, kind)
            assert m.any() and not m.all()
            covers.append(m.mean())
    assert 0.01 < min(covers) and max(covers) < 0.8
    assert random_mask(rng, 8, 8, "full").all()


def test_eval_masks_are_deterministic():
    a, b = eval_masks(363, 360, seed=3), eval_masks(363, 360, seed=3)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["box-small"], eval_masks(363, 360, seed=4)["box-small"])


def test_split_name_and_find_pairs(tmp_path):
    assert split_name("incoming/a/b.mask.png") == ("incoming/a/b", "mask")
    assert split_name("x.JPG") == ("x", "image")
    assert split_name("x.json") == ("x", "sidecar")
    assert split_name("x.mask.jpg") is None and split_name("x.gif") is None
    for n in ("a.png", "a.mask.png", "b.tif", "c.mask.png", ".d.png"):
        (tmp_path / n).write_bytes(b"")
    pairs, lonely = find_pairs(tmp_path)
    assert [(p.name, m.name) for p, m in pairs] == [("a.png", "a.mask.png")]
    assert len(lonely) == 2


def test_dilate_grows_a_square_of_side_2r_plus_1():
    m = np.zeros((9, 9), bool)
    m[4, 4] = True
    assert dilate(m, 2).sum() == 25 and dilate(m, 2)[2:7, 2:7].all()
    assert np.array_equal(dilate(m, 0), m) and dilate(m, 0) is not m
    edge = np.zeros((5, 5), bool)
    edge[0, 0] = True
    assert dilate(edge, 1).sum() == 4  # nothing grows past the border
