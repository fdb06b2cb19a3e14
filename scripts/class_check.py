"""Are generated cells recognisable as their class? A small CNN classifier, trained on the train
set at 64x64, labels (a) real val cells, the reference, and (b) whole cells the weights generate
with each label (at guidance 1 and 3 by default) and without one.

    scripts/paused.sh .venv/bin/python scripts/class_check.py --out runs/class_check [--weights W] [--guidance 1 3 5]

Writes OUT/class_check.json and prints a markdown table (BENCHMARKS.md). The classifier is a
measuring tool only, never shipped; its accuracy on real val cells says how far to trust it.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from gpu_job.data import augment, load_cellset
from gpu_job.defaults import DEFAULT_GENERATE_STEPS
from gpu_job.inpaint import Inpainter
from gpu_job.report import from_uint8


def classifier(n: int) -> nn.Module:
    def block(i, o):
        return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(), nn.Conv2d(o, o, 3, padding=1),
                             nn.BatchNorm2d(o), nn.ReLU(), nn.MaxPool2d(2))

    return nn.Sequential(block(3, 32), block(32, 64), block(64, 128), block(128, 128), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Dropout(0.2), nn.Linear(128, n))


@torch.no_grad()
def predict(net: nn.Module, images: np.ndarray) -> np.ndarray:
    net.eval()
    return np.concatenate([net(from_uint8(images[i : i + 256])).argmax(1).numpy() for i in range(0, len(images), 256)])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", default="../shared/data/pbc/train")
    ap.add_argument("--val", default="../shared/data/pbc/val")
    ap.add_argument("--weights")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--per-class", type=int, default=24, help="generated cells per label")
    ap.add_argument("--steps", type=int, default=DEFAULT_GENERATE_STEPS, help="DDIM steps for generation")
    ap.add_argument("--guidance", type=float, nargs="+", default=[1.0, 3.0], help="classifier-free guidance scales to try")
    ap.add_argument("--out", type=Path, default=Path("runs/class_check"))
    a = ap.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    train, val = load_cellset(a.train), load_cellset(a.val)
    n = len(train.classes)
    net = classifier(n)
    opt = torch.optim.AdamW(net.parameters(), 2e-3, weight_decay=1e-4)
    steps = a.epochs * len(train.images) // 64
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=steps)
    t0 = time.time()
    net.train()
    for _ in tqdm(range(steps), desc="classifier"):
        idx = rng.integers(0, len(train.images), 64)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = nn.functional.cross_entropy(net(from_uint8(augment(train.images[idx], rng))), torch.from_numpy(train.labels[idx]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    report = {"classes": train.classes, "classifier_train_s": round(time.time() - t0), "val": {}, "generated": {}}
    pred = predict(net, val.images)
    report["val"] = {c: float((pred[val.labels == i] == i).mean()) for i, c in enumerate(train.classes)}
    report["val"]["all"] = float((pred == val.labels).mean())

    inp = Inpainter(a.weights, "cpu")
    assert inp.classes == train.classes, "the weights and the data name different classes"
    for guidance in a.guidance:
        acc = {}
        for i, c in enumerate(tqdm(train.classes, desc=f"generate, guidance {guidance}")):
            cells = inp.generate(a.per_class, c, seed=1000 + i, steps=a.steps, guidance=guidance)
            acc[c] = float((predict(net, cells) == i).mean())
        acc["all"] = float(np.mean(list(acc.values())))
        report["generated"][f"guidance {guidance:g}"] = acc
    free = predict(net, inp.generate(a.per_class * n, None, seed=999, steps=a.steps))
    report["unlabelled_share"] = {c: float((free == i).mean()) for i, c in enumerate(train.classes)}
    report["train_share"] = {c: float((train.labels == i).mean()) for i, c in enumerate(train.classes)}
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "class_check.json").write_text(json.dumps(report, indent=1) + "\n")
    rows = [("real val cells (classifier's own accuracy)", report["val"])] + [(f"generated, {k}", v) for k, v in report["generated"].items()]
    print("| cells | " + " | ".join(train.classes) + " | all |")
    print("|---" * (n + 2) + "|")
    for name, d in rows:
        print(f"| {name} | " + " | ".join(f"{100 * d[c]:.0f} %" for c in train.classes) + f" | {100 * d['all']:.0f} % |")
    print(f"| generated without a label: share classified as each class | " + " | ".join(f"{100 * report['unlabelled_share'][c]:.0f} %" for c in train.classes) + " | |")
    print(f"| train set: share of each class | " + " | ".join(f"{100 * report['train_share'][c]:.0f} %" for c in train.classes) + " | |")


if __name__ == "__main__":
    main()
