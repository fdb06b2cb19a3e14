"""Training the small CNN cell classifier (its architecture is gpu_job/inpainter/ood.py's) on PBC train at
64x64: a measuring tool (is a generated or restored cell still recognisably its class?) and the
feature extractor of the out-of-distribution flag. Its accuracy on real val cells says how far to
trust it."""
from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from gpu_job.inpainter.labeler import labeler_input
from gpu_job.inpainter.ood import classifier
from gpu_job.inpainter.tensors import from_uint8

from gpu_job.data.augment import turn


def train_classifier(images: np.ndarray, labels: np.ndarray, n: int, epochs: int = 4, seed: int = 0,
                     masks: Callable[[np.random.Generator], np.ndarray] | None = None) -> tuple[nn.Module, float]:
    """(N, 64, 64, 3) uint8 cells and their class indices -> (classifier, seconds it took).
    `masks`: draws a (64, 64) mask per cell, and the classifier reads the cell through it as the
    labeller does (gpu_job/inpainter/labeler.py)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = classifier(n, inputs=3 if masks is None else 4)
    opt = torch.optim.AdamW(net.parameters(), 2e-3, weight_decay=1e-4)
    steps = max(1, epochs * len(images) // 64)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=steps)
    t0 = time.time()
    net.train()
    for _ in tqdm(range(steps), desc="classifier"):
        idx = rng.integers(0, len(images), 64)
        batch = np.stack([turn(img, rng) for img in images[idx]])
        x = from_uint8(batch) if masks is None else labeler_input(batch, np.stack([masks(rng) for _ in idx]))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = nn.functional.cross_entropy(net(x), torch.from_numpy(labels[idx]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return net.eval(), time.time() - t0


@torch.no_grad()
def predict(net: nn.Module, images: np.ndarray) -> np.ndarray:
    net.eval()
    return np.concatenate([net(from_uint8(images[i : i + 256])).argmax(1).numpy() for i in range(0, len(images), 256)])


def load_or_train_classifier(train: str | Path, cache: str | Path = ".cache", epochs: int = 4) -> nn.Module:
    """The classifier trained on `train` (64-px cells), from the cache if this very set trained it before."""
    from gpu_job.data.cells import load_cellset

    cells = load_cellset(train)
    key = hashlib.sha1(f"{Path(train).resolve()}|{len(cells.names)}|{'|'.join(cells.names[:50])}|{epochs}".encode()).hexdigest()[:12]
    path = Path(cache) / f"classifier-{key}.pt"
    net = classifier(len(cells.classes))
    if path.exists():
        net.load_state_dict(torch.load(path, map_location="cpu"))
        return net.eval()
    net, _ = train_classifier(cells.images, cells.labels, len(cells.classes), epochs)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)
    return net
