import io

import numpy as np
import pytest
from PIL import Image

from shared.imaging.images import InputError, load_image, load_mask
from shared.imaging.preprocess import composite, preprocess
from tests.conftest import synthetic_cell


def png(arr, mode=None, **kw) -> bytes:
    buf = io.BytesIO()
    (Image.fromarray(arr, mode) if mode else Image.fromarray(arr)).save(buf, format="PNG", **kw)
    return buf.getvalue()


def test_preprocess_pads_to_square_and_resizes(rng):
    img = synthetic_cell(rng, 90, 150)
    p = preprocess(img, None, 64)
    assert p.image.shape == (64, 64, 3) and p.image.dtype == np.uint8
    assert (p.height, p.width) == (90, 150)
    assert p.pad == (30, 30, 0, 0) and p.side == 150
    assert not p.mask.any()


def test_every_masked_source_pixel_is_covered(rng):
    img = synthetic_cell(rng, 101, 77)
    for _ in range(20):
        mask = np.zeros((101, 77), bool)
        y, x = rng.integers(0, 101), rng.integers(0, 77)
        mask[y, x] = True  # a single pixel must still reach the model
        p = preprocess(img, mask, 16)
        top, _, left, _ = p.pad
        scale = 16 / p.side
        assert p.mask[int((y + top + 0.5) * scale), int((x + left + 0.5) * scale)]


def test_mask_binarised_at_127(rng):
    img = synthetic_cell(rng, 64, 64)
    mask = np.full((64, 64), 127, np.uint8)
    assert not preprocess(img, mask, 64).mask.any()
    mask[10:20, 10:20] = 128
    assert preprocess(img, mask, 64).mask[10:20, 10:20].all()


def test_mask_size_mismatch_is_an_error(rng):
    with pytest.raises(ValueError, match="mask is 10x10"):
        preprocess(synthetic_cell(rng, 20, 20), np.ones((10, 10), bool))


def test_composite_exact_size_and_untouched_outside(rng):
    img = synthetic_cell(rng, 97, 131)
    mask = np.zeros((97, 131), bool)
    mask[20:60, 30:90] = True
    p = preprocess(img, mask, 64)
    pred = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    for feather in (0, 4):
        out = composite(img, mask, pred, p, feather=feather)
        assert out.shape == img.shape
        assert np.array_equal(out[~mask], img[~mask])
        assert not np.array_equal(out[mask], img[mask])


def test_feather_blends_only_inside(rng):
    img = np.zeros((40, 40, 3), np.uint8)
    mask = np.zeros((40, 40), bool)
    mask[10:30, 10:30] = True
    p = preprocess(img, mask, 40)
    out = composite(img, mask, np.full((40, 40, 3), 200, np.uint8), p, feather=5)
    assert out[20, 20, 0] == 200  # deep inside: the prediction
    assert 0 < out[10, 20, 0] < 200  # at the edge: a blend
    assert out[9, 20, 0] == 0  # outside: untouched


def test_exif_orientation_applied():
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = 255  # white on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", exif=exif, quality=95)
    out = load_image(buf.getvalue(), "x.jpg")
    assert out.shape == (40, 20, 3)
    assert out[:20].mean() > 200 and out[20:].mean() < 50  # left became top


def test_modes_16bit_palette_cmyk_multiframe():
    a16 = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16)
    out = load_image(png(a16), "a.png")
    assert out.shape == (64, 64, 3) and out.max() > 200  # scaled, not clipped to white
    pal = Image.fromarray(np.full((8, 8, 3), (10, 200, 30), np.uint8)).convert("P", palette=Image.Palette.ADAPTIVE)
    buf = io.BytesIO()
    pal.save(buf, format="PNG")
    assert tuple(load_image(buf.getvalue(), "p.png")[0, 0]) == (10, 200, 30)
    buf = io.BytesIO()
    Image.new("CMYK", (8, 6), (0, 255, 255, 0)).save(buf, format="JPEG")
    rgb = load_image(buf.getvalue(), "c.jpg")
    assert rgb.shape == (6, 8, 3) and rgb[0, 0, 0] > 200 and rgb[0, 0, 1] < 60
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, format="PNG", save_all=True, append_images=frames[1:])  # APNG: the first frame is the picture
    assert tuple(load_image(buf.getvalue(), "m.png")[0, 0]) == (255, 0, 0)
    buf = io.BytesIO()
    frames[0].save(buf, format="TIFF", save_all=True, append_images=frames[1:])  # a stack: no page is the picture
    with pytest.raises(InputError, match="m.tif: the TIFF has 2 pages"):
        load_image(buf.getvalue(), "m.tif")


def test_bad_files_name_file_and_reason(tmp_path):
    with pytest.raises(InputError, match="notes.png: not a readable image"):
        load_image(b"hello", "notes.png")
    with pytest.raises(InputError, match="x.gif: format GIF"):
        buf = io.BytesIO()
        Image.new("RGB", (4, 4)).save(buf, format="GIF")
        load_image(buf.getvalue(), "x.gif")
    good = png(np.zeros((50, 50, 3), np.uint8))
    with pytest.raises(InputError, match="t.png"):
        load_image(good[: len(good) // 2], "t.png")
    with pytest.raises(InputError, match="file not found"):
        load_image(str(tmp_path / "missing.png"))


def test_mask_white_means_restore_and_alpha_means_keep():
    m = np.zeros((10, 10), np.uint8)
    m[2:5, 2:5] = 255
    assert np.array_equal(load_mask(png(m), "m.png"), m > 127)
    rgba = np.zeros((10, 10, 4), np.uint8)
    rgba[..., :3] = 255
    rgba[:5, :, 3] = 255  # only the top half is opaque white
    got = load_mask(png(rgba), "m.png")
    assert got[:5].all() and not got[5:].any()
