"""Train the labeller (gpu_job/inpainter/labeler.py) and set how sure it must be:

    .venv/bin/python -m gpu_job.evaluation.fit_labeler [--train ../shared/data/pbc/train] [--val ../shared/data/pbc/val] [--calibrate]

It learns on 90 % of PBC train, each cell seen through a random mask: 40 % an ellipse over the
cell's middle (the defect that hides the most of its class), the rest the training masks. The
threshold is the lowest confidence, in twentieths from 0.5, at which at least 95 % of its guesses
are right on the other 10 % of train. Writes gpu_job/weights/labeler.safetensors and labeler.json,
with its accuracy on PBC val through the same masks for the record. `--calibrate` keeps the
trained weights and sets the threshold again (a minute, against 6.5 for the training).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from safetensors.torch import save_file

from gpu_job.inpainter.labeler import DEFAULT_LABELER_WEIGHTS, Labeler
from shared.imaging.masks import random_mask

from gpu_job.data.cells import load_cellset
from gpu_job.evaluation.classifier import train_classifier

EPOCHS = 6
HOLDOUT = 0.1
# The share of confident guesses that must be right. 95 % (threshold 0.55) scored better than 98 %
# (0.85) on PBC val at temperature 0.6 on both seeds: +0.06 dB, class kept +2 points
# (BENCHMARKS "Temperature").
RIGHT = 0.95
SIZE = 64


def cell_mask(rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    """A training mask: 40 % an ellipse over the middle of the cell, else a training-set mask."""
    if rng.random() >= 0.4:
        return random_mask(rng, size, size)
    yy, xx = np.mgrid[:size, :size]
    cy, cx = size / 2 + rng.uniform(-6, 6), size / 2 + rng.uniform(-6, 6)
    ry, rx = rng.uniform(4, 14) * size / 64, rng.uniform(4, 14) * size / 64
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1


def masked_accuracy(lab: Labeler, images: np.ndarray, labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(confidence, right) per cell, each seen through one random mask."""
    rng = np.random.default_rng(seed)
    p = lab.probabilities(images, np.stack([cell_mask(rng) for _ in images]))
    return p.max(1), p.argmax(1) == labels


def threshold(conf: np.ndarray, right: np.ndarray) -> float:
    for t in np.round(np.arange(0.5, 1.0, 0.05), 2):  # rounded: 0.5 + 2 * 0.05 is not 0.6 in binary
        sel = conf >= t
        if sel.any() and right[sel].mean() >= RIGHT:
            return round(float(t), 2)
    return 1.0  # never sure enough: "auto" gives no label


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m gpu_job.evaluation.fit_labeler")
    ap.add_argument("--train", default="../shared/data/pbc/train")
    ap.add_argument("--val", default="../shared/data/pbc/val")
    ap.add_argument("--out", type=Path, default=DEFAULT_LABELER_WEIGHTS)
    ap.add_argument("--epochs", type=float, default=EPOCHS)
    ap.add_argument("--calibrate", action="store_true", help="keep the trained weights at --out; only set the threshold again")
    a = ap.parse_args()
    train, val = load_cellset(a.train), load_cellset(a.val)
    order = np.random.default_rng(0).permutation(len(train.images))
    held, fit = order[: int(HOLDOUT * len(order))], order[int(HOLDOUT * len(order)) :]
    if a.calibrate:
        record = json.loads(a.out.with_suffix(".json").read_text())
    else:
        net, seconds = train_classifier(train.images[fit], train.labels[fit], len(train.classes), a.epochs, seed=1, masks=cell_mask)
        save_file({k: v.detach().contiguous() for k, v in net.state_dict().items()}, str(a.out))
        record = {"classes": train.classes, "inputs": "64x64 window, unknown pixels at the known ones' mean colour, and the mask",
                  "training": {"cells": len(fit), "epochs": a.epochs, "seconds": round(seconds)}}
        record["threshold"] = 1.0  # Labeler needs one to load; the confidences below do not depend on it
        a.out.with_suffix(".json").write_text(json.dumps(record))
    conf, right = masked_accuracy(Labeler(a.out), train.images[held], train.labels[held], seed=2)
    record["threshold"] = threshold(conf, right)
    vconf, vright = masked_accuracy(Labeler(a.out), val.images, val.labels, seed=3)
    sure = vconf >= record["threshold"]
    record["calibration"] = {
        "threshold": f"the lowest confidence (in twentieths from 0.5) at which {RIGHT:.0%} of guesses were right on {len(held)} held-out train cells",
        "held_out": {"accuracy": round(float(right.mean()), 4), "sure": round(float((conf >= record['threshold']).mean()), 3)},
        "val": {"cells": len(vconf), "accuracy": round(float(vright.mean()), 4), "sure": round(float(sure.mean()), 3),
                "right_when_sure": round(float(vright[sure].mean()), 4) if sure.any() else None}}
    a.out.with_suffix(".json").write_text(json.dumps(record))
    print(f"{a.out}: threshold {record['threshold']}; {json.dumps(record['calibration'])}")


if __name__ == "__main__":
    main()
