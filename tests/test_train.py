"""`cellpaint train` on a tiny synthetic dataset: checkpoints, pictures, weights, resume."""
import json

import numpy as np
from PIL import Image

from gpu_job.model import UNetConfig
from gpu_job.train import TrainConfig, train
from gpu_job.weights import load_weights
from tests.conftest import synthetic_cell


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
    for name in ("ckpt.pt", "best.safetensors", "best.json", "loss.png", "samples-0000003.png"):
        assert (out / name).exists(), name
    model, _, rec = load_weights(out / "best.safetensors")
    assert rec["classes"] == ["alpha", "beta"] and model.cfg.num_classes == 2
    assert rec["training"]["steps"] == 3 and np.isfinite(rec["val"]["loss"])
    cfg.max_steps = 5
    train(cfg)  # resumes from ckpt.pt
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert [x["step"] for x in log] == [3, 5] and log[1]["images_seen"] == 20
    # every checkpoint measures val inpainting, and the numbers travel with the weights
    assert all(0 < x["val_psnr"] < 60 and -1 <= x["val_ssim"] <= 1 and x["val_mae"] > 0 for x in log)
    _, _, rec = load_weights(out / "last.safetensors")
    assert rec["val"]["ddim10_64px_psnr"] == log[1]["val_psnr"]


def test_pack_roundtrip(tmp_path, rng, monkeypatch):
    from gpu_job.data import load_cellset
    from gpu_job.pack import pack

    monkeypatch.chdir(tmp_path)
    make_dataset(tmp_path / "train", rng, per_class=2)
    direct = load_cellset(tmp_path / "train", 16)
    packed = load_cellset(pack(tmp_path / "train", tmp_path / "p.npz", size=16), 16)
    assert packed.classes == direct.classes and packed.names == direct.names
    assert (packed.labels == direct.labels).all()
    assert np.abs(packed.images.astype(int) - direct.images).mean() < 4  # JPEG q92


def test_train_command_needs_no_aws_libraries():
    # The GPU device and a plain training box have torch but maybe not boto3/moto: block them.
    import subprocess
    import sys

    block = "import sys; sys.modules.update(boto3=None, botocore=None, moto=None); "
    for entry in ("from cellpaint.cli import main; main(['train', '--help'])", "from gpu_job.__main__ import main; main(['train', '--help'])"):
        r = subprocess.run([sys.executable, "-c", block + entry], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0 and "--val-data" in r.stdout, (entry, r.stderr[-500:])
