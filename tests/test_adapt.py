"""`cellpaint adapt` on a folder of synthetic photos made here, with tiny random weights: what it
refuses, what it measures and writes, and that the result is a weights file `inpaint` takes."""
import json

import numpy as np
import pytest
from PIL import Image

from gpu_job.training.adapt import MIN_IMAGES, TEMPERATURES, AdaptConfig, adapt, check_photos
from shared.imaging.masks import user_mask
from shared.errors import InputError
from tests.conftest import synthetic_cell


def lab_folder(root, rng, n):
    root.mkdir()
    for i in range(n):
        Image.fromarray(synthetic_cell(rng, 96, 120)).save(root / f"{i + 1}.png")
    return root


def test_too_few_photos_and_stray_masks_are_named(tmp_path, rng):
    folder = lab_folder(tmp_path / "lab", rng, MIN_IMAGES - 1)
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(folder / "x.mask.png")
    Image.fromarray((230 + rng.integers(-3, 4, (60, 60, 3))).astype(np.uint8)).save(folder / "blank.png")  # an empty slide
    with pytest.raises(InputError, match=f"{MIN_IMAGES - 1} usable photos, at least {MIN_IMAGES}"):
        check_photos([str(folder)])
    Image.fromarray(synthetic_cell(rng, 96, 120)).save(folder / "last.png")
    usable, skipped = check_photos([str(folder)])
    assert len(usable) == MIN_IMAGES and any("x.mask.png: a mask" in s for s in skipped) and any("blank.png: no cells" in s for s in skipped)


def test_user_masks_are_sized_by_the_window():
    rng = np.random.default_rng(0)
    for kind in ("blob", "box", "strokes"):
        m = user_mask(rng, 480, 640, 200, kind)
        assert m.any() and m.mean() < 0.15, kind  # a defect, not the field


def test_adapt_measures_writes_and_inpaint_takes_it(tmp_path, rng, tiny_weights, tiny_texture_weights, monkeypatch):
    from cellpaint.cli import main

    monkeypatch.chdir(tmp_path)
    folder = lab_folder(tmp_path / "lab", rng, 22)
    out = tmp_path / "models" / "lab1.safetensors"
    res = adapt(AdaptConfig(images=[str(folder)], out=str(out), base=str(tiny_weights), minutes=3, device="cpu", batch_size=2,
                            threads=1, force=True, max_steps=2, measure_images=2))
    assert res.written and out.exists()
    rec = json.loads(out.with_suffix(".json").read_text())
    a = rec["adapt"]
    assert a["images"] == 22 and a["held_back"] == 4 and a["steps"] == 2 and len(a["images_sha256"]) == 64
    assert a["base_sha256"] == json.loads(tiny_weights.with_suffix(".json").read_text())["sha256"]
    assert set(a["held_back_psnr"]) == {"base", "adapted", "biharmonic"} and set(a["held_back_psnr"]["base"]) == {"blob", "box", "strokes", "all"}
    assert list(a["phases_s"]) == ["checking photos", "measuring the base", "training", "measuring the adapted model", "calibrating the flag"]
    assert all(v >= 0 for v in a["phases_s"].values()) and sum(a["phases_s"].values()) <= a["minutes"] * 60 + 1
    assert rec["normalize"]["background"]["median"] and rec["ood"]["thresholds"]["colour"] > 0  # the lab's own colours and flag
    assert rec["training"]["augment"]["clean"] == AdaptConfig.clean  # the lab's own look, not other microscopes'
    # the temperature the adapted model scored best at on the held-back photos becomes its own
    s = rec["sampling"]
    assert s["temperature"] in TEMPERATURES and s["held_back_psnr"][str(s["temperature"])] == max(s["held_back_psnr"].values())
    assert rec["training"]["fields"]["held_back"] and not set(rec["training"]["fields"]["held_back"]) & set(rec["training"]["fields"]["photos"])
    img, mask = tmp_path / "a.png", tmp_path / "a.mask.png"
    Image.fromarray(synthetic_cell(rng, 96, 120)).save(img)
    m = np.zeros((96, 120), np.uint8)
    m[30:50, 40:70] = 255
    Image.fromarray(m).save(mask)
    assert main(["inpaint", str(img), str(mask), "-o", str(tmp_path / "o.png"), "--weights", str(out), "--steps", "2", "--no-texture",
                 "--device", "cpu"]) == 0
    # A lab's model draws no grain and skips the texture stage (its photos' fine detail is mostly
    # their camera's noise); the base does both.
    from gpu_job.inpainter.inpaint import Inpainter
    from shared.options import InpaintOptions

    pair = (np.asarray(Image.open(img).convert("RGB")), m > 0)
    for weights, drawn in ((out, False), (tiny_weights, True)):
        inp = Inpainter(str(weights), "cpu", texture_weights=tiny_texture_weights)
        grained, plain = (inp.inpaint(*pair, InpaintOptions(steps=2, texture=False, fallback=0.0, grain=g)).image for g in (1.0, 0.0))
        assert (not np.array_equal(grained, plain)) is drawn, weights
        textured = inp.inpaint(*pair, InpaintOptions(steps=2, fallback=0.0, grain=0)).image
        assert (not np.array_equal(textured, plain)) is drawn, weights


def test_only_a_better_model_is_written(tmp_path, rng, tiny_weights, monkeypatch):
    from gpu_job.training.adapt import should_write

    assert not should_write({"base": {"all": 20.0}, "adapted": {"all": 19.9}}) and should_write({"base": {"all": 20.0}, "adapted": {"all": 19.9}}, True)
    assert should_write({"base": {"all": 20.0}, "adapted": {"all": 20.1}})
    monkeypatch.chdir(tmp_path)
    folder = lab_folder(tmp_path / "lab", rng, 20)
    out = tmp_path / "lab1.safetensors"
    res = adapt(AdaptConfig(images=[str(folder)], out=str(out), base=str(tiny_weights), minutes=3, device="cpu", batch_size=2,
                            threads=1, lr=10.0, max_steps=1, measure_images=1))
    better = res.scores["adapted"]["all"] > res.scores["base"]["all"]
    assert res.written == better == out.exists() == out.with_suffix(".json").exists()
