"""`cellpaint train` on a tiny synthetic dataset: checkpoints, pictures, weights, resume."""
import json

import numpy as np
import pytest
from PIL import Image

from gpu_job.inpainter.model import UNetConfig
from gpu_job.training.first_stage import TrainConfig, train
from gpu_job.inpainter.weights import load_weights
from tests.conftest import synthetic_cell, synthetic_field


def make_dataset(root, rng, per_class=6):
    for c in ("alpha", "beta"):
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(synthetic_cell(rng, 40, 42)).save(root / c / f"{i}.jpg", quality=95)


def test_train_checkpoints_and_resumes(tmp_path, rng, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the data cache goes to ./.cache
    make_dataset(tmp_path / "train", rng)
    make_dataset(tmp_path / "val", rng, per_class=3)
    unet = UNetConfig(image_size=16, base_channels=8, channel_mults=(1, 2), num_res_blocks=1, attn_resolutions=(8,), groups=4)
    cfg = TrainConfig(data=str(tmp_path / "train"), val_data=str(tmp_path / "val"), out=str(tmp_path / "run"),
                      batch_size=4, max_steps=3, val_images=6, unet=unet, threads=1)
    out = train(cfg)
    for name in ("ckpt.pt", "best.safetensors", "best.json", "loss.png", "generated-0000003.png", "inpaint-0000003.png"):
        assert (out / name).exists(), name
    model, _, rec = load_weights(out / "best.safetensors")
    assert rec["classes"] == ["alpha", "beta"] and model.cfg.num_classes == 2
    assert rec["training"]["steps"] == 3 and np.isfinite(rec["val"]["loss"])
    assert rec["training"]["class_counts"] == {"alpha": 6, "beta": 6}  # `sample --label any` draws from these
    cfg.max_steps = 5
    train(cfg)  # resumes from ckpt.pt
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert [x["step"] for x in log] == [3, 5] and log[1]["images_seen"] == 20
    # every checkpoint measures val inpainting, and the numbers travel with the weights
    assert all(0 < x["val_psnr"] < 60 and -1 <= x["val_ssim"] <= 1 and x["val_mae"] > 0 for x in log)
    _, _, rec = load_weights(out / "last.safetensors")
    assert rec["val"]["ddim10_64px_psnr"] == log[1]["val_psnr"]
    # trained on from those weights: the record keeps both segments and totals them
    cfg2 = TrainConfig(**{**cfg.__dict__, "out": str(tmp_path / "run2"), "init": str(out / "last.safetensors"), "max_steps": 2, "batch_size": 2})
    _, _, rec2 = load_weights(train(cfg2) / "last.safetensors")
    t = rec2["training"]
    assert [(g["steps"], g["batch_size"]) for g in t["segments"]] == [(5, 4), (2, 2)]
    assert t["steps"] == 7 and t["images_seen"] == 24 and t["batch_size"] == 2


def test_pack_roundtrip(tmp_path, rng, monkeypatch):
    from gpu_job.data.cells import load_cellset
    from gpu_job.data.pack import pack

    monkeypatch.chdir(tmp_path)
    make_dataset(tmp_path / "train", rng, per_class=2)
    direct = load_cellset(tmp_path / "train", 16)
    packed = load_cellset(pack(tmp_path / "train", tmp_path / "p.npz", size=16), 16)
    assert packed.classes == direct.classes and packed.names == direct.names
    assert (packed.labels == direct.labels).all()
    assert np.abs(packed.images.astype(int) - direct.images).mean() < 4  # JPEG q92
    exact = load_cellset(pack(tmp_path / "train", tmp_path / "exact.npz", size=16, lossless=True), 16)
    assert np.array_equal(exact.images, direct.images) and exact.names == direct.names  # PNG


def test_train_command_needs_no_aws_libraries():
    # The GPU device and a plain training box have torch but maybe not boto3/moto: block them.
    import subprocess
    import sys

    block = "import sys; sys.modules.update(boto3=None, botocore=None, moto=None); "
    for cmd in ("train", "train-texture"):
        for entry in (f"from cellpaint.cli import main; main(['{cmd}', '--help'])", f"from gpu_job.__main__ import main; main(['{cmd}', '--help'])"):
            r = subprocess.run([sys.executable, "-c", block + entry], capture_output=True, text=True, timeout=120)
            assert r.returncode == 0 and "--val-data" in r.stdout, (entry, r.stderr[-500:])


def test_train_as_a_batch_job_reads_and_mirrors_s3(tmp_path, rng, monkeypatch, tiny_weights):
    # `python -m gpu_job train` in the job image: pack and weights in S3, the run mirrored to S3,
    # and a second attempt (a Spot reclaim: fresh disk) resumes from the checkpoint in S3.
    import shutil

    import boto3
    from moto import mock_aws

    from gpu_job.__main__ import main as job_main
    from gpu_job.data.pack import pack

    monkeypatch.chdir(tmp_path)
    for k, v in {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    make_dataset(tmp_path / "train", rng)  # 2 classes; the tiny weights have 8
    make_dataset(tmp_path / "val", rng, per_class=2)
    with mock_aws():
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="lab")
        s3.upload_file(str(pack(tmp_path / "train", tmp_path / "train.npz", size=16)), "lab", "training/train.npz")
        s3.upload_file(str(pack(tmp_path / "val", tmp_path / "val.npz", size=16)), "lab", "training/val.npz")
        s3.upload_file(str(tiny_weights), "lab", "training/init.safetensors")
        s3.upload_file(str(tiny_weights.with_suffix(".json")), "lab", "training/init.json")
        args = ["train", "--data", "s3://lab/training/train.npz", "--val-data", "s3://lab/training/val.npz",
                "--init", "s3://lab/training/init.safetensors", "--out", "s3://lab/training/runs/r1", "--batch-size", "4", "--threads", "1"]
        assert job_main(args + ["--max-steps", "2"]) == 0
        keys = {o["Key"].split("/")[-1] for o in s3.list_objects_v2(Bucket="lab", Prefix="training/runs/r1/")["Contents"]}
        assert {"ckpt.pt", "best.safetensors", "best.json", "last.safetensors", "log.jsonl", "loss.png", "generated-0000002.png", "inpaint-0000002.png"} <= keys
        shutil.rmtree(tmp_path / "runs")  # the second attempt starts on a fresh disk
        assert job_main(args + ["--max-steps", "4"]) == 0
        log = s3.get_object(Bucket="lab", Key="training/runs/r1/log.jsonl")["Body"].read().decode().splitlines()
        assert [json.loads(x)["step"] for x in log] == [2, 4]
        rec = json.loads(s3.get_object(Bucket="lab", Key="training/runs/r1/best.json")["Body"].read())
        assert rec["classes"] == ["alpha", "beta"]


def test_ship_weights_records_the_whole_lineage(tmp_path, tiny_weights, rng):
    # Weights trained on from other weights by code that predates lineage records (scripts/ship_weights.py --before).
    import hashlib
    import shutil
    import subprocess
    import sys

    first, last = tmp_path / "first.safetensors", tmp_path / "last.safetensors"
    for path, steps, batch in ((first, 100, 32), (last, 20, 256)):
        shutil.copy(tiny_weights, path)
        rec = json.loads(tiny_weights.with_suffix(".json").read_text())
        rec["training"] = {"steps": steps, "images_seen": steps * batch, "batch_size": batch, "hours": 0.5, "data": "d", "machine": "m"}
        path.with_suffix(".json").write_text(json.dumps(rec))
    classes = json.loads(tiny_weights.with_suffix(".json").read_text())["classes"]
    for i, c in enumerate(classes):
        (tmp_path / "train" / c).mkdir(parents=True)
        for k in range(i % 3):
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(tmp_path / "train" / c / f"{k}.jpg")
    out = tmp_path / "shipped" / "cellpaint.safetensors"
    out.parent.mkdir()
    run = subprocess.run([sys.executable, "scripts/ship_weights.py", str(last), "--before", str(first.with_suffix(".json")),
                          "--data", str(tmp_path / "train"), "--out", str(out)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    _, _, rec = load_weights(out)
    t = rec["training"]
    assert [g["steps"] for g in t["segments"]] == [100, 20] and t["steps"] == 120 and t["images_seen"] == 100 * 32 + 20 * 256 and t["hours"] == 1.0
    assert t["class_counts"] == {c: i % 3 for i, c in enumerate(classes)}
    assert hashlib.sha256(out.read_bytes()).hexdigest() == rec["sha256"]
    assert "sampling" not in rec  # no temperature measured: the PBC model's
    for args, want in ((["--temperature", "0"], 0.0), ([], 0.0), (["--temperature", "0.3"], 0.3)):
        # a model's measured temperature is recorded, and kept when newer weights are shipped over it
        run = subprocess.run([sys.executable, "scripts/ship_weights.py", str(last), "--out", str(out), *args], capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        assert load_weights(out)[2]["sampling"] == {"temperature": want}
    last.write_bytes(last.read_bytes()[:-1] + b"x")  # weights that do not match their record are refused
    run = subprocess.run([sys.executable, "scripts/ship_weights.py", str(last), "--out", str(out)], capture_output=True, text=True)
    assert run.returncode != 0 and "sha256 does not match" in run.stderr


def test_fields_are_cut_at_the_pipelines_window_and_some_held_back(tmp_path, rng):
    from gpu_job.data.augment import FIELD
    from gpu_job.data.fields import load_fields
    from shared.imaging.scale import auto_window

    (tmp_path / "f").mkdir()
    photos = [synthetic_field(rng) for _ in range(5)]
    for i, p in enumerate(photos):
        Image.fromarray(p).save(tmp_path / "f" / f"{i + 1}.png")
    fs = load_fields([tmp_path / "f"], hold_every=5, workers=1)
    assert [n.split("/")[-1] for n in fs.held_back] == ["5.png"] and len(fs.names) == 4
    window = auto_window(photos[0], np.zeros(photos[0].shape[:2], bool))
    assert window < 360 and fs.windows[0] == window  # small cells: a smaller window, as the pipeline plans it
    assert abs(fs.fields[0].shape[1] - 640 * FIELD / window) <= 1
    crops = fs.crops(np.random.default_rng(0), 6)
    assert crops.shape == (6, FIELD, FIELD, 3) and crops.dtype == np.uint8


@pytest.mark.parametrize("workers", [0, 2])  # 2: the batches drawn by worker processes (gpu_job/training/prefetch.py)
def test_train_with_fields_records_the_mix(tmp_path, rng, monkeypatch, workers):
    monkeypatch.chdir(tmp_path)
    make_dataset(tmp_path / "train", rng)
    (tmp_path / "fields").mkdir()
    for i in range(4):
        Image.fromarray(synthetic_field(rng)).save(tmp_path / "fields" / f"{i}.png")
    unet = UNetConfig(image_size=16, base_channels=8, channel_mults=(1, 2), num_res_blocks=1, attn_resolutions=(8,), groups=4)
    cfg = TrainConfig(data=str(tmp_path / "train"), val_data=None, out=str(tmp_path / "run"), batch_size=4, max_steps=2, unet=unet,
                      threads=1, fields=(str(tmp_path / "fields"),), field_share=0.5, hold_every=2, workers=workers,
                      p_blur=0.6, blur=(0.6, 2.4))
    out = train(cfg)
    _, _, rec = load_weights(out / "last.safetensors")
    f = rec["training"]["fields"]
    assert len(f["photos"]) == 2 and len(f["held_back"]) == 2 and not set(f["photos"]) & set(f["held_back"])
    aug = rec["training"]["augment"]
    assert aug["kind"] == "domain" and aug["clean"] == 0.4 and aug["p_blur"] == 0.6 and aug["blur"] == [0.6, 2.4]
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert 0 < log[-1]["val_fields_psnr"] < 60  # measured on the held-back photos


def test_a_run_stops_at_its_deadline_and_may_skip_measuring(tmp_path, rng, monkeypatch):
    """`adapt --minutes` bounds the whole command: its training stops at the deadline it is given,
    however long loading the photos took, and leaves measuring the held-back photos to adapt."""
    import time

    monkeypatch.chdir(tmp_path)
    (tmp_path / "fields").mkdir()
    for i in range(4):
        Image.fromarray(synthetic_field(rng)).save(tmp_path / "fields" / f"{i}.png")
    unet = UNetConfig(image_size=16, base_channels=8, channel_mults=(1, 2), num_res_blocks=1, attn_resolutions=(8,), groups=4)
    cfg = TrainConfig(data=None, val_data=None, out=str(tmp_path / "run"), batch_size=2, max_steps=3, unet=unet, threads=1,
                      fields=(str(tmp_path / "fields"),), field_share=1.0, hold_every=2, workers=0,
                      deadline=time.time() - 1, measure_held_back=False)
    out = train(cfg)
    _, _, rec = load_weights(out / "last.safetensors")
    assert rec["training"]["steps"] == 0  # past its deadline before the first step: weights written, nothing trained
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert log and not any(k.startswith("val_fields") for k in log[-1])
    cfg.deadline = time.time() + 600
    _, _, rec = load_weights(train(cfg) / "last.safetensors")  # resumed: a deadline to come leaves the step limit to decide
    assert rec["training"]["steps"] == 3


@pytest.mark.parametrize("share", [{"cell_share": 1.5}, {"fade": -0.1}])
def test_train_refuses_a_share_that_is_not_one(tmp_path, share):
    from gpu_job.training.first_stage import FirstStage

    with pytest.raises(ValueError, match="--cell-share|--fade"):
        FirstStage(TrainConfig(data=str(tmp_path / "none"), out=str(tmp_path / "run"), **share), "cpu")


@pytest.mark.parametrize("blur, p_blur", [((2.0, 1.0), 0.3), ((-0.5, 1.0), 0.3), ((0.3, 1.2), 1.5)])
def test_train_refuses_a_blur_range_that_is_not_one(tmp_path, blur, p_blur):
    from gpu_job.training.first_stage import FirstStage

    with pytest.raises(ValueError, match="--blur"):
        FirstStage(TrainConfig(data=str(tmp_path / "none"), out=str(tmp_path / "run"), blur=blur, p_blur=p_blur), "cpu")


def test_progress_bar_ends_where_the_time_budget_does():
    from types import SimpleNamespace

    from gpu_job.training.loop import bar_total

    bar = SimpleNamespace(n=100, format_dict={"rate": 2.0})  # 2 steps/s so far
    assert bar_total(bar, 1_000_000, left_s=60) == 220  # a minute left: 120 more steps, not a million
    assert bar_total(bar, 150, left_s=60) == 150  # a step limit that comes first stays the end
    assert bar_total(bar, 1_000_000, left_s=-5) == 100  # past the budget: this step is the last
    assert bar_total(SimpleNamespace(n=0, format_dict={"rate": None}), 500, left_s=60) == 500  # no rate yet


def test_rows_seen_as_inference_sees_them(tmp_path, rng, monkeypatch):
    """--seen-as-inferred: a drawn row under another microscope's colours reaches the model moved to
    the training set's colours from its known pixels, by the same move inference makes (colour.fit)."""
    from gpu_job.training.first_stage import FirstStage
    from shared.imaging import colour

    monkeypatch.chdir(tmp_path)
    make_dataset(tmp_path / "train", rng)
    unet = UNetConfig(image_size=16, base_channels=8, channel_mults=(1, 2), num_res_blocks=1, attn_resolutions=(8,), groups=4)
    base = dict(data=str(tmp_path / "train"), val_data=None, out=str(tmp_path / "run"), batch_size=16, unet=unet, threads=1, clean=0.0, full_mask_prob=0.0)
    plain = FirstStage(TrainConfig(**base), "cpu")
    seen = FirstStage(TrainConfig(**base, seen_as_inferred=True), "cpu")
    (a, ma, _), (b, mb, _) = plain.draw(np.random.default_rng(3)), seen.draw(np.random.default_rng(3))
    np.testing.assert_array_equal(ma, mb)  # the same rows and masks: only their colours may differ
    moved = 0
    for x, y, m in zip(a, b, ma):
        move = colour.fit("auto", x, ~m, seen.reference)  # the move as inference fits it, applied by hand
        np.testing.assert_array_equal(y, x if move is colour.IDENTITY else colour.to_uint8(move.forward(x)))
        moved += move is not colour.IDENTITY
    assert moved  # some rows were far enough from the training set's light to be moved


def test_the_sampler_loss_adds_the_drawn_fills_error_and_the_record_says_so(tmp_path, rng, monkeypatch):
    """--sampler-loss W: each batch's loss is the epsilon loss plus W times the error of the fill the
    sampler draws on its partly masked rows (sampler.sampler_loss), and the weights' record keeps it."""
    import torch
    from gpu_job.inpainter.diffusion import Diffusion, DiffusionConfig
    from gpu_job.inpainter.model import UNet
    from gpu_job.training.first_stage import FirstStage

    monkeypatch.chdir(tmp_path)
    make_dataset(tmp_path / "train", rng)
    unet = UNetConfig(image_size=16, base_channels=8, channel_mults=(1, 2), num_res_blocks=1, attn_resolutions=(8,), groups=4)
    base = dict(data=str(tmp_path / "train"), val_data=None, out=str(tmp_path / "run"), batch_size=4, unet=unet, threads=1,
                full_mask_prob=0.0, max_steps=2)
    cpu = torch.device("cpu")
    plain, with_sampler = FirstStage(TrainConfig(**base), cpu), FirstStage(TrainConfig(**base, sampler_loss=1.0, sampler_rows=2), cpu)
    model, diff = UNet(plain.cfg.unet), Diffusion(DiffusionConfig())
    torch.nn.init.normal_(model.conv_out.weight, std=0.05)
    batch = plain.to_device(plain.draw(np.random.default_rng(5)))
    torch.manual_seed(0)
    a = plain.loss(model, diff, batch)
    torch.manual_seed(0)
    b = with_sampler.loss(model, diff, batch)
    assert b.item() > a.item() > 0  # the same epsilon loss (same draws), plus the fills' error
    rec = load_weights(train(TrainConfig(**base, sampler_loss=0.5, sampler_rows=2)) / "last.safetensors")[2]
    assert rec["training"]["sampler_loss"] == {"weight": 0.5, "rows": 2, "steps": 5, "temperature": 0.0}


def test_white_cells_are_found_and_a_share_of_field_crops_is_cut_around_them(tmp_path, rng):
    from gpu_job.data.augment import FIELD
    from gpu_job.data.fields import RED_CELL, load_fields, white_cells

    field = synthetic_field(rng)
    yy, xx = np.mgrid[: field.shape[0], : field.shape[1]]
    field[(yy - 300) ** 2 + (xx - 420) ** 2 < 40 ** 2] = (90, 45, 140)  # a nucleus, at the field's scale
    field[(yy - 100) ** 2 + (xx - 100) ** 2 < 6 ** 2] = (90, 45, 140)  # a platelet: nucleus-coloured, too small
    (tmp_path / "f").mkdir()
    Image.fromarray(field).save(tmp_path / "f" / "1.png")
    Image.fromarray(synthetic_field(rng)).save(tmp_path / "f" / "2.png")  # red cells only
    fs = load_fields([tmp_path / "f"], hold_every=0, workers=1)
    f = fs.windows[0] and FIELD / fs.windows[0]  # the photo's rescaling to training scale
    assert len(fs.cells[0]) == 1 and len(fs.cells[1]) == 0
    assert np.abs(fs.cells[0][0] - np.array([300, 420]) * f).max() < 2
    assert len(white_cells(np.full((FIELD, FIELD, 3), (90, 45, 140), np.uint8))) == 1 and RED_CELL > 10

    def nucleus_in_middle(crops):
        mid = crops[:, FIELD // 4 : -FIELD // 4, FIELD // 4 : -FIELD // 4].astype(int)
        return ((mid[..., 2] - mid[..., 1] > 60).sum((1, 2)) > 50).mean()

    around = fs.crops(np.random.default_rng(1), 40, cell_share=1.0)
    anywhere = fs.crops(np.random.default_rng(1), 40, cell_share=0.0)
    assert nucleus_in_middle(around) == 1.0 and nucleus_in_middle(anywhere) < 0.5
