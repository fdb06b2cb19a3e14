"""How often do generated cells come out speckled, by sampler, step count, guidance and precision?

    scripts/paused.sh .venv/bin/python scripts/speckle_sweep.py [--weights W] ddim:25:5:bf16:labels ddpm:25:5:bf16:labels ...

Each setting is SAMPLER:STEPS:GUIDANCE:PRECISION:WHO (PRECISION bf16 or fp32; WHO "labels" = the
classes in turn, "none" = no label). 48 whole cells a setting, seeds 0-47. A cell is speckled when
its mean |Laplacian| at 64x64 is above that of 99 % of real val cells (the definition
scripts/class_check.py uses). About 12 s per setting for DDIM-25 without guidance on 2 cores.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from gpu_job.data import load_cellset
from gpu_job.evaluate import cell_detail, speckle_limit
from gpu_job.report import to_uint8
from gpu_job.sampler import sample
from gpu_job.weights import load_weights


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("settings", nargs="+", help="SAMPLER:STEPS:GUIDANCE:PRECISION:WHO, e.g. ddpm:25:5:bf16:labels")
    ap.add_argument("--weights")
    ap.add_argument("--val", default="../shared/data/pbc/val")
    ap.add_argument("-n", type=int, default=48)
    a = ap.parse_args()
    torch.set_num_threads(2)
    limit = speckle_limit(load_cellset(a.val).images)
    model, diff, _ = load_weights(a.weights, torch.device("cpu"))
    nc, s = model.cfg.num_classes, model.cfg.image_size
    print("| sampler | steps | guidance | precision | labels | speckled | median detail | s |")
    print("|---|---|---|---|---|---|---|---|")
    for setting in a.settings:
        method, steps, guidance, precision, who = setting.split(":")
        labels = torch.arange(a.n) % nc if who == "labels" else torch.full((a.n,), nc)
        t0 = time.time()
        x = sample(model, diff, known=torch.zeros(a.n, 3, s, s), mask=torch.ones(a.n, 1, s, s), seeds=list(range(a.n)),
                   steps=int(steps), method=method, labels=labels, guidance=float(guidance), autocast=precision == "bf16")
        d = cell_detail(to_uint8(x))
        print(f"| {method} | {steps} | {guidance} | {precision} | {who} | {np.mean(d > limit):.0%} | {np.median(d):.1f} (real p99 {limit:.1f}) | {time.time() - t0:.0f} |", flush=True)


if __name__ == "__main__":
    main()
