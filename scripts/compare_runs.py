"""Runs side by side: val loss and val inpainting PSNR against images seen, from each run's log.jsonl.

    .venv/bin/python scripts/compare_runs.py runs/main runs/minsnr --labels "plain loss" "min-SNR 5" \
        --since 19414 --out docs/training/min_snr.png

For A/B runs branched from one checkpoint (copy its ckpt.pt into the new run folder, change one
setting, train the same number of steps). `--since` drops checkpoints before the branch point.

Runs that continue one another with `--init` (each counts its images from 0, at its own batch
size) line up against images seen with `--offsets`, the images seen before each run began:

    .venv/bin/python scripts/compare_runs.py runs/main runs/gpu6 runs/ft6 --since 13000 \
        --offsets 0 706432 1533568 --out docs/training/session6.png
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read_log(run: Path, since: int) -> list[dict]:
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]
    return [r for r in rows if r["step"] >= since]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", type=Path, nargs="+")
    ap.add_argument("--labels", nargs="+", help="one per run (default: the folder names)")
    ap.add_argument("--since", type=int, default=0, help="first step to show (the branch point)")
    ap.add_argument("--offsets", type=int, nargs="+", help="images seen before each run began: plot against images seen")
    ap.add_argument("--out", type=Path, default=Path("runs/compare.png"))
    a = ap.parse_args()
    if a.offsets and len(a.offsets) != len(a.runs):
        ap.error(f"{len(a.runs)} runs but {len(a.offsets)} offsets")
    labels = a.labels or [r.name for r in a.runs]
    if len(labels) != len(a.runs):
        ap.error(f"{len(a.runs)} runs but {len(labels)} labels")
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for i, (run, label) in enumerate(zip(a.runs, labels)):
        # --since applies to the first run only: later runs of a chain start again at step 0
        rows = read_log(run, a.since if i == 0 or not a.offsets else 0)
        if not rows:
            raise SystemExit(f"{run / 'log.jsonl'}: no checkpoint at or after step {a.since}")
        x = {id(r): (a.offsets[i] + r["images_seen"]) / 1e6 if a.offsets else r["step"] for r in rows}
        left.plot([x[id(r)] for r in rows], [r["val_loss"] for r in rows], "o-", label=label)
        psnr = [(x[id(r)], r["val_psnr"]) for r in rows if "val_psnr" in r]
        if psnr:
            right.plot(*zip(*psnr), "o-", label=label)
        last = rows[-1]
        print(f"{label}: step {last['step']}, val loss {last['val_loss']:.5f}, DDIM-10 64 px PSNR {last.get('val_psnr', float('nan')):.2f} / SSIM {last.get('val_ssim', float('nan')):.3f}")
    xlabel = "images seen (millions)" if a.offsets else "step"
    left.set(xlabel=xlabel, ylabel="val loss (masked-weighted ε-MSE, unweighted in t)", title="val loss, EMA weights")
    right.set(xlabel=xlabel, ylabel="masked PSNR (dB)", title="val inpainting, DDIM-10 at 64×64 (48 cells)")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best" if ax is left else "lower right")  # PSNR rises to the upper right
    fig.tight_layout()
    a.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(a.out, dpi=100)
    print(a.out)


if __name__ == "__main__":
    main()
