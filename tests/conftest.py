"""Shared fixtures. Every input is made here; only tests marked `data` read ../shared/data."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
# `make test` runs two pytest workers (pytest-xdist) on two cores: one thread each, for torch here and for
# the processes the tests start, or the workers oversubscribe the cores and both run several times slower.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")
sys.path.insert(0, str(ROOT))
PBC = ROOT.parent / "shared" / "data" / "pbc"


def synthetic_cell(rng: np.random.Generator, h: int = 120, w: int = 124) -> np.ndarray:
    """A pink background with red discs and one purple 'nucleus': something cell-like, made here."""
    yy, xx = np.mgrid[:h, :w]
    img = np.empty((h, w, 3), np.float32)
    img[:] = (232, 210, 200)
    for _ in range(5):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(8, 16)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = (205, 120, 125)
    cy, cx, r = h / 2 + rng.normal(0, 4), w / 2 + rng.normal(0, 4), min(h, w) / 4
    img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = (110, 60, 150)
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def smear(rng, h=300, w=400):
    """A whole-field photo: a grey-blue background, red cells, one white cell with a blue-violet nucleus."""
    img = np.full((h, w, 3), (215, 218, 222), np.float32)
    yy, xx = np.mgrid[:h, :w]
    boxes = []
    for _ in range(14):
        cy, cx, r = rng.uniform(30, h - 30), rng.uniform(30, w - 30), rng.uniform(24, 30)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = (200, 140, 140)
        boxes.append(("RBC", int(cx - r), int(cy - r), int(cx + r), int(cy + r)))
    cy, cx = h / 2, w / 2
    img[(yy - cy) ** 2 + (xx - cx) ** 2 < 45**2] = (190, 170, 200)
    img[(yy - cy) ** 2 + (xx - cx) ** 2 < 25**2] = (100, 90, 200)
    boxes.append(("WBC", int(cx - 45), int(cy - 45), int(cx + 45), int(cy + 45)))
    img += rng.normal(0, 3, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), boxes


def write_voc(path, boxes, h, w):
    objs = "".join(f"<object><name>{n}</name><bndbox><xmin>{a}</xmin><ymin>{b}</ymin><xmax>{c}</xmax><ymax>{d}</ymax></bndbox></object>"
                   for n, a, b, c, d in boxes)
    path.write_text(f"<annotation><size><width>{w}</width><height>{h}</height></size>{objs}</annotation>")


def synthetic_field(rng, h=480, w=640):
    """A whole-field photo of another microscope, made here: many small red discs, no white cell."""
    yy, xx = np.mgrid[:h, :w]
    img = np.full((h, w, 3), (200, 215, 205), np.float32)
    for _ in range(110):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < 17 ** 2] = (170, 110, 130)
    return np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)


def pytest_configure(config):
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def tiny_texture_weights(tmp_path_factory) -> Path:
    """Random texture-stage weights (gpu_job/inpainter/texture.py) in the shipped format: tiny, untrained."""
    import torch

    from gpu_job.inpainter.diffusion import DiffusionConfig
    from gpu_job.inpainter.model import UNet, UNetConfig
    from gpu_job.inpainter.weights import save_weights

    torch.manual_seed(1)
    model = UNet(UNetConfig(image_size=16, base_channels=8, channel_mults=(1, 2), num_res_blocks=1, attn_resolutions=(), num_classes=0,
                            groups=4, mid_attn=False))
    torch.nn.init.normal_(model.conv_out.weight, std=0.02)
    path = tmp_path_factory.mktemp("texture") / "texture.safetensors"
    save_weights(path, model, DiffusionConfig(), [], {"stage": "texture", "texture": {"t_max": 50, "start": 30}, "training": {"steps": 0}})
    return path


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    """A tiny random model saved in the shipped format (16x16, so tests run in seconds)."""
    import torch

    from gpu_job.inpainter.diffusion import DiffusionConfig
    from gpu_job.inpainter.model import UNet, UNetConfig
    from gpu_job.inpainter.weights import save_weights

    torch.manual_seed(0)
    model = UNet(UNetConfig(image_size=16, base_channels=8, channel_mults=(1, 2), num_res_blocks=1, attn_resolutions=(8,), groups=4))
    torch.nn.init.normal_(model.conv_out.weight, std=0.02)  # zero-init would make every output the same
    classes = ["basophil", "eosinophil", "erythroblast", "ig", "lymphocyte", "monocyte", "neutrophil", "platelet"]
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    save_weights(path, model, DiffusionConfig(), classes, {"code_version": "test", "training": {"steps": 0}})
    return path
