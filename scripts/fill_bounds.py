#!/usr/bin/env python
"""How far a model's fills over another lab's white cells are from beating biharmonic's, and how far
any product built on those fills could go: the truth-picked bounds of docs/benchmarks-log.md
("White-cell crops: how far any fill of these models is from the goals").

Each model fills the white-cell crops that `cellpaint evaluate --domain-shift --crops N` measures
(blob, box and strokes over the cell) alone: no classical share, no guard, at its own temperature.
Beside its masked PSNR, two numbers that use the truth, so no product can reach them: each fill less
its own mean error in R, G and B (a perfect colour correction), and each fill blended with
biharmonic's at the share, in twentieths, that suits that pair best (a perfect classical share).
With more than one weights file, the mean of their fills too.

    python scripts/fill_bounds.py ../shared/data/bccd --crops 40 --model shipped \\
        --model runs/adapt/a.safetensors --model runs/adapt/b.safetensors --plot runs/fill_bounds.png

`shipped` is the default Inpainter: a crop the flag calls unlike PBC goes to the model of more
microscopes, as it does for users. Measuring only: BCCD is never training data for shipped weights.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpu_job.data.metrics import psnr_of_error  # noqa: E402

SHARES = np.linspace(0.0, 1.0, 21)


def bounds(truth: np.ndarray, fill: np.ndarray, classical: np.ndarray) -> dict[str, float]:
    """One pair's masked pixels, (N, 3) each -> PSNR of the fill, of the classical fill, of each less
    its mean error per channel, and of the best blend of the two (share of the fill in SHARES)."""
    t, f, c = (a.astype(np.float64) for a in (truth, fill, classical))
    return {"alone": psnr_of_error(f - t), "classical": psnr_of_error(c - t),
            "less_mean_error": psnr_of_error(f - f.mean(0) - (t - t.mean(0))),
            "classical_less_mean_error": psnr_of_error(c - c.mean(0) - (t - t.mean(0))),
            "best_blend": max(psnr_of_error(s * f + (1 - s) * c - t) for s in SHARES)}


def table(rows: dict[str, list[dict[str, float]]], kinds: list[str]) -> str:
    """{model: per-pair bounds} -> a markdown table, mean PSNR per mask kind and over all pairs."""
    order = sorted(set(kinds))
    head = "| fills (masked PSNR, dB) | " + " | ".join(order) + " | all | less its mean error | best blend per pair |"
    lines = [head, "|" + "---|" * (len(order) + 4)]
    k = np.array(kinds)
    for name, per in [("biharmonic", [{"alone": r["classical"], "less_mean_error": r["classical_less_mean_error"], "best_blend": np.nan}
                                          for r in next(iter(rows.values()))])] + list(rows.items()):
        a = {key: np.array([r[key] for r in per]) for key in ("alone", "less_mean_error", "best_blend")}
        cells = [f"{a['alone'][k == kind].mean():.2f}" for kind in order] + [f"{a['alone'].mean():.2f}"]
        cells += ["" if np.isnan(a[key]).all() else f"{a[key].mean():.2f}" for key in ("less_mean_error", "best_blend")]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows: dict[str, list[dict[str, float]]], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(rows)
    bh = float(np.mean([r["classical"] for r in rows[names[0]]]))
    fig, ax = plt.subplots(figsize=(2.0 + 1.05 * len(names), 3.8))
    x = np.arange(len(names))
    for i, (key, label) in enumerate([("alone", "the model alone"), ("less_mean_error", "less its mean error (truth)"), ("best_blend", "best blend per pair (truth)")]):
        ax.bar(x + (i - 1) * 0.26, [np.mean([r[key] for r in rows[n]]) for n in names], 0.26, label=label)
    for dy, style, label in ((0.0, "-", "biharmonic"), (0.5, "--", "+0.5"), (1.0, ":", "+1.0")):
        ax.axhline(bh + dy, color="k", ls=style, lw=1, label=label)
    ax.set_xticks(x, [Path(n).stem for n in names], rotation=20, ha="right")
    ax.set_ylim(bh - 1.0, bh + 1.6)
    ax.set_ylabel("masked PSNR, all pairs (dB)")
    ax.legend(fontsize=7, loc="upper left", ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("bccd", help="folder of BCCD photos (.jpg) with their VOC boxes (.xml)")
    p.add_argument("--crops", type=int, default=40, help="photos to crop, in name order")
    p.add_argument("--skip", type=int, default=0, help="photos to pass over first")
    p.add_argument("--model", action="append", required=True, help="'shipped' or a weights file; repeat for more")
    p.add_argument("--plot", help="write a bar chart of the bounds here (PNG)")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)

    import torch
    from tqdm import tqdm

    from gpu_job.evaluation.domain_shift import bccd_crop_cases
    from gpu_job.evaluation.evaluate import baselines
    from gpu_job.inpainter.inpaint import Inpainter
    from shared.options import InpaintOptions

    torch.set_num_threads(a.threads)
    cases = bccd_crop_cases(a.bccd, a.crops, 0, a.skip)
    if not cases:
        sys.exit(f"{a.bccd}: no photo with a white-cell box among the {a.crops} after the first {a.skip}")
    kinds = [c.regions[0].kind for c in cases]
    truths = [c.image[c.mask] for c in cases]
    bh = baselines()["biharmonic"]
    classical = [bh(c.image, c.mask)[c.mask] for c in tqdm(cases, desc="biharmonic")]
    alone = InpaintOptions(seed=0, fallback=0.0, guard=False)
    fills = {}
    for name in a.model:
        inp = Inpainter(None if name == "shipped" else name, "cpu")
        fills[name] = []
        for i in tqdm(range(0, len(cases), 8), desc=Path(name).stem):
            part = cases[i : i + 8]
            fills[name] += [r.image[c.mask] for c, r in zip(part, inp.inpaint_many([(c.image, c.mask) for c in part], alone))]
    labs = [n for n in a.model if n != "shipped"]
    if len(labs) > 1:
        fills[f"the mean of {len(labs)} models"] = [np.mean([fills[n][i].astype(np.float64) for n in labs], 0) for i in range(len(cases))]
    rows = {name: [bounds(t, f, c) for t, f, c in zip(truths, fs, classical)] for name, fs in fills.items()}
    print(table(rows, kinds))
    if a.plot:
        plot(rows, Path(a.plot))
        print(f"wrote {a.plot}")
    return rows


if __name__ == "__main__":
    main()
