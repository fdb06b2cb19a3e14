"""A small CNN cell classifier trained on PBC train at 64x64: a measuring tool (is a generated or
restored cell still recognisably its class?), never part of the inpainting. Its accuracy on
real val cells says how far to trust it."""
from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from gpu_job.tensors import from_uint8

from ..training.augment import turn


def classifier(n: int) -> nn.Module:
    def block(i, o):
        return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(), nn.Conv2d(o, o, 3, padding=1),
                             nn.BatchNorm2d(o), nn.ReLU(), nn.MaxPool2d(2))

    return nn.Sequential(block(3, 32), block(32, 64), block(64, 128), block(128, 128), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Dropout(0.2), nn.Linear(128, n))


def train_classifier(images: np.ndarray, labels: np.ndarray, n: int, epochs: int = 4, seed: int = 0) -> tuple[nn.Module, float]:
    """(N, 64, 64, 3) uint8 cells and their class indices -> (classifier, seconds it took)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = classifier(n)
    opt = torch.optim.AdamW(net.parameters(), 2e-3, weight_decay=1e-4)
    steps = epochs * len(images) // 64
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=steps)
    t0 = time.time()
    net.train()
    for _ in tqdm(range(steps), desc="classifier"):
        idx = rng.integers(0, len(images), 64)
        batch = np.stack([turn(img, rng) for img in images[idx]])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = nn.functional.cross_entropy(net(from_uint8(batch)), torch.from_numpy(labels[idx]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return net.eval(), time.time() - t0


@torch.no_grad()
def predict(net: nn.Module, images: np.ndarray) -> np.ndarray:
    net.eval()
    return np.concatenate([net(from_uint8(images[i : i + 256])).argmax(1).numpy() for i in range(0, len(images), 256)])
