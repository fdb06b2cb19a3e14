"""Fit and calibrate the out-of-distribution flag (gpu_job/inpainter/ood.py):

    .venv/bin/python -m gpu_job.evaluation.fit_ood [--train ../shared/data/pbc/train] [--val ../shared/data/pbc/val] [--bccd ../shared/data/bccd]

The classifier is trained on PBC train (or taken from the cache the domain-shift evaluation
keeps); the training cells give the feature mean and covariance and the colour statistics; the
thresholds are the 99th percentiles over PBC val cells with random masks; BCCD photos, with the
masks of `evaluate --domain-shift`, say how often a photo from another microscope is flagged.
Writes gpu_job/weights/ood.safetensors and ood.json.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from gpu_job.inpainter.ood import DEFAULT_OOD_WEIGHTS, OODScorer, features
from shared.imaging.colour import background
from shared.imaging.windows import prepare

from gpu_job.data.cells import load_cellset
from gpu_job.evaluation.classifier import load_or_train_classifier, predict
from gpu_job.evaluation.domain_shift import bccd_cases, pbc_cases

CALIBRATION_CELLS = 40  # PBC val cells per class whose pairs set the thresholds
SHRINK = 0.05  # covariance shrinkage toward its diagonal: 128 features, a few thousand cells


def pair_fields(cases) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each case's windows at 64 px, as the job's planner makes them."""
    out = []
    for c in cases:
        ws = prepare(c.image, c.mask)
        out.append((np.stack([w.prep.image for w in ws]), np.stack([~w.prep.mask for w in ws])))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m gpu_job.evaluation.fit_ood")
    ap.add_argument("--train", default="../shared/data/pbc/train")
    ap.add_argument("--val", default="../shared/data/pbc/val")
    ap.add_argument("--bccd", default="../shared/data/bccd")
    ap.add_argument("--out", type=Path, default=DEFAULT_OOD_WEIGHTS)
    a = ap.parse_args()
    train, val = load_cellset(a.train), load_cellset(a.val)
    net = load_or_train_classifier(a.train)
    acc = float((predict(net, val.images) == val.labels).mean())
    f = features(net, train.images)
    cov = np.cov(f.T)
    cov = (1 - SHRINK) * cov + SHRINK * np.diag(np.diag(cov))
    light = np.stack([background(img.reshape(-1, 3)) for img in train.images])
    record = {"classes": train.classes, "val_accuracy": round(acc, 4), "features": {"shrink": SHRINK, "train_cells": len(f)},
              "colour": {"background": {"median": np.median(light, 0).tolist(), "spread": light.std(0).tolist()}},
              "thresholds": {"colour": 1.0, "feature": 1.0}}
    stats = {"stats.feature_mean": torch.from_numpy(f.mean(0)).float(), "stats.feature_precision": torch.from_numpy(np.linalg.inv(cov)).float()}
    save_file({**{k: v.detach().contiguous() for k, v in net.state_dict().items()}, **stats}, str(a.out))
    a.out.with_suffix(".json").write_text(json.dumps(record))
    scorer = OODScorer(a.out)
    # Thresholds on pairs as the job scores them: each pair's windows, its largest distance.
    calib = [scorer.distances(fields, known) for fields, known in pair_fields(pbc_cases(a.val, CALIBRATION_CELLS, ("none",), 22, 1))]
    record["thresholds"] = {"colour": float(np.percentile([c.max() for c, _ in calib], 99)),
                            "feature": float(np.percentile([d.max() for _, d in calib], 99))}
    a.out.with_suffix(".json").write_text(json.dumps(record))
    scorer = OODScorer(a.out)
    rates = {}
    for name, cases in (("pbc val", pbc_cases(a.val, 10, ("none",), 22, 0)), ("pbc val, stain shift", pbc_cases(a.val, 10, ("stain",), 22, 0)),
                        ("pbc val, blur", pbc_cases(a.val, 10, ("blur",), 22, 0)), ("pbc val, 1.5x scale", pbc_cases(a.val, 10, ("scale",), 22, 0)),
                        ("bccd", bccd_cases(a.bccd, 1000, 22, 0) if Path(a.bccd).is_dir() else [])):
        if cases:
            scores = [scorer.score(fields, known)["score"] for fields, known in pair_fields(cases)]
            rates[name] = {"pairs": len(scores), "flagged": round(float(np.mean(np.array(scores) > 1)), 3), "median_score": round(float(np.median(scores)), 2)}
            print(f"{name}: {len(scores)} pairs, {100 * rates[name]['flagged']:.0f} % flagged, median score {rates[name]['median_score']}")
    record["calibration"] = {"thresholds": f"99th percentile over the pairs of {CALIBRATION_CELLS} PBC val cells a class "
                                           "(an ellipse over part of the white cell, a disk on the background)", "classifier_val_accuracy": round(acc, 4), "flagged": rates}
    a.out.with_suffix(".json").write_text(json.dumps(record))
    print(f"{a.out}: classifier val accuracy {100 * acc:.1f} %; thresholds {record['thresholds']}")


if __name__ == "__main__":
    main()
