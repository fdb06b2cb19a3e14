"""The texture stage (gpu_job/inpainter/texture.py): its training pairs, training and resume, and refining
a full-size composite without touching a pixel outside the mask."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from gpu_job.inpainter.model import UNetConfig
from gpu_job.inpainter.sampler import timesteps
from gpu_job.inpainter.texture import Texturer
from gpu_job.training.texture_stage import NativeSet, TextureConfig, coarse_field, coarse_view, make_batch, train_texture
from gpu_job.inpainter.weights import load_weights, read_config
from shared.options import OPTIONS
from shared.imaging.preprocess import preprocess, upsample
from tests.conftest import synthetic_cell, synthetic_field

TINY = UNetConfig(image_size=16, base_channels=8, channel_mults=(1, 2), num_res_blocks=1, attn_resolutions=(), num_classes=0,
                  groups=4, mid_attn=False)


def make_dataset(root, rng, n=4):
    (root / "cells").mkdir(parents=True)
    for i in range(n):
        Image.fromarray(synthetic_cell(rng, 40, 44)).save(root / "cells" / f"{i}.png")


def test_condition_is_the_first_stage_view_inside_the_mask_and_the_truth_outside(rng):
    img = synthetic_cell(rng, 90, 96)
    prep = preprocess(img)
    assert np.array_equal(coarse_view(img), upsample(prep.image, prep))  # the pipeline's own round trip
    ds = NativeSet([img], [coarse_view(img)])
    x0, cond, masks = make_batch(ds, np.random.default_rng(1), 24, 32, full_prob=0.3, max_blur=0.0)
    assert x0.shape == cond.shape == (24, 32, 32, 3) and masks.shape == (24, 32, 32)
    assert masks.any() and (~masks).any() and masks.reshape(24, -1).all(1).any()  # some crops wholly masked
    assert np.array_equal(cond[~masks], x0[~masks])
    # inside the mask the condition has lost the fine detail the stage must put back
    diff = np.abs(np.diff(x0.astype(float), axis=2))[masks[:, :, 1:]].mean()
    assert np.abs(np.diff(cond.astype(float), axis=2))[masks[:, :, 1:]].mean() < 0.6 * diff
    again = make_batch(ds, np.random.default_rng(1), 24, 32, full_prob=0.3, max_blur=0.0)
    assert all(np.array_equal(a, b) for a, b in zip((x0, cond, masks), again))


def test_crops_through_another_microscope_keep_truth_and_condition_together(rng):
    img = synthetic_cell(rng, 90, 96)
    ds = NativeSet([img], [coarse_view(img)])
    plain = make_batch(ds, np.random.default_rng(2), 64, 32, full_prob=1.0, max_blur=0.0)
    other = make_batch(ds, np.random.default_rng(2), 64, 32, full_prob=1.0, max_blur=0.0, domain=True)
    for x0, cond, masks in (plain, other):
        assert np.array_equal(cond[~masks], x0[~masks])

    def gap(x0, cond, masks):  # per crop: the condition's mean colour inside the mask against the truth's
        return np.mean([np.abs(x[m].mean(0) - c[m].mean(0)).max() for x, c, m in zip(x0.astype(float), cond.astype(float), masks)])

    assert gap(*other) < gap(*plain) + 3  # one stain and light for both: the condition still says the truth's colours


def test_recolour_pair_moves_truth_and_condition_alike(rng):
    from gpu_job.data.augment import recolour_pair

    img = synthetic_cell(rng, 64, 64)
    coarse = coarse_view(img)
    moved, apart = [], []
    for seed in range(40):
        t, c = recolour_pair(img, coarse, np.random.default_rng(seed))
        dt, dc = t.astype(float).mean((0, 1)) - img.mean((0, 1)), c.astype(float).mean((0, 1)) - coarse.mean((0, 1))
        moved.append(np.abs(dt).max())
        apart.append(np.abs(dt - dc).max())
    assert np.mean(np.array(moved) > 8) > 0.4  # most draws show the cell in another lab's colours...
    assert max(apart) < 4  # ...and move its condition with it


def test_sampling_can_start_part_way():
    assert timesteps(1000, 4, start=300) == [300, 200, 100, 0]
    with pytest.raises(ValueError, match="start"):
        timesteps(1000, 4, start=1000)
    with pytest.raises(ValueError, match="steps"):
        timesteps(1000, 5, start=3)


@pytest.fixture(scope="module")
def texture_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("texture")
    rng = np.random.default_rng(0)
    make_dataset(tmp / "train", rng)
    make_dataset(tmp / "val", rng, n=2)
    (tmp / "fields").mkdir()
    for i in range(3):
        Image.fromarray(synthetic_field(rng, 96, 128)).save(tmp / "fields" / f"{i + 1}.png")
    cfg = TextureConfig(data=str(tmp / "train"), val_data=str(tmp / "val"), out=str(tmp / "run"), crop=16, batch_size=4,
                        max_steps=3, val_images=4, threads=1, unet=TINY, t_max=50, start=30,
                        fields=(str(tmp / "fields"),), field_share=0.5, hold_every=3)
    return cfg, train_texture(cfg)


def test_field_photos_are_seen_window_by_window(rng):
    photo = synthetic_field(rng)  # 640 px wide, cells of ~34 px: windows smaller than the photo
    err = lambda a: float(np.abs(a.astype(float) - photo).mean())  # noqa: E731
    per_window, whole = coarse_field(photo), coarse_view(photo)
    assert per_window.shape == photo.shape
    assert 0 < err(per_window) < 0.8 * err(whole)  # softer than the photo, sharper than the whole photo at 64 px


def test_texture_training_checkpoints_and_resumes(texture_run):
    cfg, out = texture_run
    for name in ("ckpt.pt", "best.safetensors", "best.json", "loss.png", "log.jsonl"):
        assert (out / name).exists(), name
    _, _, rec = load_weights(out / "best.safetensors")
    assert rec["stage"] == "texture" and rec["texture"]["start"] == 30 and rec["training"]["steps"] == 3
    assert np.isfinite(rec["val"]["loss"]) and rec["val"]["cond_psnr"] > 0
    f = rec["training"]["fields"]  # the mix, and the photos it held back, measured apart
    assert [p.split("/")[-1] for p in f["held_back"]] == ["3.png"] and len(f["photos"]) == 2 and f["share"] == 0.5
    assert rec["val"]["fields_cond_psnr"] > 0
    cfg.max_steps = 5
    train_texture(cfg)  # resumes from ckpt.pt
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert [x["step"] for x in log] == [3, 5] and log[1]["images_seen"] == 20


def test_refine_redraws_only_the_masked_pixels(texture_run, rng):
    _, out = texture_run
    tex = Texturer(out / "best.safetensors")
    img = synthetic_cell(rng, 37, 41)  # sides the UNet cannot take: the crop is padded
    mask = np.zeros((37, 41), bool)
    mask[20:37, 30:41] = True  # touches two borders
    res = tex.refine(img, mask, steps=3)
    assert res.shape == img.shape and res.dtype == np.uint8
    assert np.array_equal(res[~mask], img[~mask])
    assert not np.array_equal(res[mask], img[mask])
    assert np.array_equal(tex.refine(img, mask, steps=3), res)  # seeded
    assert np.array_equal(tex.refine(img, np.zeros_like(mask)), img)


def test_texturer_refuses_first_stage_weights(tiny_weights):
    with pytest.raises(ValueError, match="not texture-stage weights"):
        Texturer(tiny_weights)


def test_weights_records_from_before_a_config_field_load_with_its_default(tiny_weights, tmp_path):
    rec = json.loads(tiny_weights.with_suffix(".json").read_text())
    old = {**rec, "unet": {k: v for k, v in rec["unet"].items() if k != "mid_attn"}}
    (tmp_path / "w.safetensors").write_bytes(tiny_weights.read_bytes())
    (tmp_path / "w.json").write_text(json.dumps(old))
    model, _, _ = load_weights(tmp_path / "w.safetensors")
    assert model.cfg.mid_attn is True
    (tmp_path / "w.json").write_text(json.dumps({**rec, "unet": {**rec["unet"], "wings": 2}}))
    with pytest.raises(ValueError, match="wings"):
        read_config(tmp_path / "w.safetensors")


def test_evaluate_scores_the_texture_stage(texture_run, tiny_weights, tmp_path, rng):
    from cellpaint.cli import main

    _, run = texture_run
    (tmp_path / "val" / "a").mkdir(parents=True)
    Image.fromarray(synthetic_cell(rng, 60, 64)).save(tmp_path / "val" / "a" / "0.png")
    out = tmp_path / "eval"
    assert main(["evaluate", "--data", str(tmp_path / "val"), "--out", str(out), "--weights", str(tiny_weights), "--per-class", "1",
                 "--steps", "2", "--mean-of", "2", "--no-ddpm", "--no-speed", "--device", "cpu",
                 "--texture", str(run / "best.safetensors"), "--variant", "t20:texture_start=20,texture_steps=3",
                 "--variant", "t40:texture_start=40"]) == 0
    rep = json.loads((out / "metrics.json").read_text())
    for name in ("cellpaint default", "cellpaint t20", "cellpaint t40"):  # the default row runs the texture stage too
        d = rep["summary"][name]["all"]
        assert d["n"] == 6 and d["max_err_outside"] == 0 and np.isfinite(d["psnr"])
    assert rep["summary"]["cellpaint t20"]["all"]["psnr"] != rep["summary"]["cellpaint t40"]["all"]["psnr"]


def test_inpaint_with_the_texture_stage(texture_run, tiny_weights, tmp_path, rng, monkeypatch, capsys):
    from cellpaint.cli import main
    from gpu_job.inpainter.inpaint import Inpainter, InpaintOptions

    _, run = texture_run
    img = synthetic_cell(rng, 50, 54)
    mask = np.zeros((50, 54), bool)
    mask[10:30, 12:40] = True
    inp = Inpainter(tiny_weights, "cpu", texture_weights=run / "best.safetensors")
    plain = inp.inpaint(img, mask, InpaintOptions(steps=2, samples=2, seed=3, texture=False))
    textured = inp.inpaint(img, mask, InpaintOptions(steps=2, samples=2, seed=3))  # the default: on
    assert np.array_equal(textured.image[~mask], img[~mask])
    assert not np.array_equal(textured.image[mask], plain.image[mask])
    assert np.array_equal(textured.std, plain.std)  # the spread is the first stage's
    Image.fromarray(img).save(tmp_path / "cell.png")
    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "cell.mask.png")
    args = ["inpaint", str(tmp_path / "cell.png"), str(tmp_path / "cell.mask.png"), "-o", str(tmp_path / "out.png"),
            "--weights", str(tiny_weights), "--steps", "2", "--samples", "2", "--seed", "3", "--texture"]
    assert main([*args, "--texture-weights", str(run / "best.safetensors")]) == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out.png")), textured.image)
    assert main([*args, "--no-texture"]) == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out.png")), plain.image)
    monkeypatch.setenv("CELLPAINT_TEXTURE_WEIGHTS", str(tmp_path / "absent.safetensors"))
    (tmp_path / "out.png").unlink()
    assert main(args) == 2
    assert "absent.safetensors: no texture-stage weights" in capsys.readouterr().err
    assert not (tmp_path / "out.png").exists()


def test_texture_weights_ship_as_bfloat16(texture_run, tmp_path, rng):
    import hashlib
    import subprocess
    import sys

    _, run = texture_run
    out = tmp_path / "texture.safetensors"
    r = subprocess.run([sys.executable, "scripts/ship_weights.py", str(run / "best.safetensors"), "--bf16", "--out", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert out.stat().st_size < 0.6 * (run / "best.safetensors").stat().st_size
    rec = json.loads(out.with_suffix(".json").read_text())
    assert rec["dtype"] == "bfloat16" and hashlib.sha256(out.read_bytes()).hexdigest() == rec["sha256"]
    img = synthetic_cell(rng, 40, 44)
    mask = np.zeros((40, 44), bool)
    mask[8:30, 10:36] = True
    a = Texturer(run / "best.safetensors").refine(img, mask, steps=3).astype(float)
    b = Texturer(out).refine(img, mask, steps=3).astype(float)
    assert np.abs(a - b).mean() < 1.0  # under CPU bf16 autocast only the norms' weights differ
