"""The training log as pictures for docs/training/: generated cells at milestones, and the curves.

    .venv/bin/python scripts/training_log.py runs/main --steps 568 1568 4654 12782 --out docs/training

Reads the run folder's `generated-<step>.png` grids (whole cells the model generated, same seeds
at every checkpoint, so they compare) and `log.jsonl`. Grids from before the split into
generated-/inpaint- files (`samples-<step>.png`) are cropped to their generated rows: the rows
below them show val images and never leave the run folder. Re-plots the run's loss and val
metrics up to the last milestone from `ckpt.pt` (copies `loss.png` without one).
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

CELL, PAD = 64, 2  # report.sample_grid: 64-px cells, shared.imaging.preview.grid's padding


def generated_grid(run: Path, step: int, rows: int) -> np.ndarray:
    new = run / f"generated-{step:07d}.png"
    if new.exists():
        return np.asarray(Image.open(new).convert("RGB"))
    old = np.asarray(Image.open(run / f"samples-{step:07d}.png").convert("RGB"))
    return old[: rows * (CELL + PAD) + PAD]  # the class rows and the unlabelled row only


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path)
    ap.add_argument("--steps", type=int, nargs="+", required=True)
    ap.add_argument("--out", type=Path, default=Path("docs/training"))
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    classes = json.loads((a.run / "best.json").read_text())["classes"]
    log = {e["step"]: e for e in map(json.loads, (a.run / "log.jsonl").read_text().splitlines())}
    fig, axes = plt.subplots(1, len(a.steps), figsize=(3.2 * len(a.steps), 5.2))
    for ax, step in zip(np.atleast_1d(axes), a.steps):
        ax.imshow(generated_grid(a.run, step, len(classes) + 1))
        e = log.get(step, {})
        title = f"step {step:,}"
        if e:
            title += f"\n{e['images_seen'] / 1000:.0f}k images, val loss {e['val_loss']:.4f}"
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([(i + 0.5) * (CELL + PAD) for i in range(len(classes) + 1)], classes + ["no label"], fontsize=8)
    fig.suptitle("Whole cells generated at milestones (same seeds; one row per label)", fontsize=10)
    fig.tight_layout()
    fig.savefig(a.out / "milestones.png", dpi=90)
    last = log.get(max(a.steps))
    if (a.run / "ckpt.pt").exists() and last:
        # Re-plot the curves up to the last milestone (the run may have gone on since).
        import torch

        from gpu_job.training.report import plot_history

        hist = torch.load(a.run / "ckpt.pt", map_location="cpu", weights_only=False)["history"]
        plot_history({k: [r for r in v if r[0] <= last["images_seen"]] for k, v in hist.items()}, a.out / "loss.png")
    else:
        shutil.copy(a.run / "loss.png", a.out / "loss.png")
    print(a.out / "milestones.png", a.out / "loss.png")


if __name__ == "__main__":
    main()
