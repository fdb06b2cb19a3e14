"""Pictures of a training run: the loss curve and a sample grid at each checkpoint."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from shared.imaging.images import save_png  # noqa: E402
from shared.imaging.preview import grid, overlay  # noqa: E402

from gpu_job.inpainter.sampler import sample  # noqa: E402
from gpu_job.inpainter.tensors import to_uint8  # noqa: E402

GRID_STEPS = 25  # DDIM steps for checkpoint grids: cheap enough to run every checkpoint


def plot_history(history: dict, path: Path) -> None:
    """Loss (left) and, once checkpoints have measured it, val inpainting quality (right) against images seen."""
    metrics = history.get("metrics") or []
    # Shared x: the metrics may start later than the loss (runs begun before they were recorded).
    fig, axes = plt.subplots(1, 2 if metrics else 1, figsize=(12 if metrics else 7, 4), squeeze=False, sharex=True)
    ax = axes[0, 0]
    if history["train"]:
        seen, loss = np.array(history["train"]).T
        k = max(1, len(loss) // 200)  # running mean so the trend is readable
        smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
        ax.plot(seen, loss, color="0.8", lw=0.5, label="train (per step)")
        ax.plot(seen[k - 1 :], smooth, color="C0", label=f"train (mean of {k})")
    if history["val"]:
        seen, loss = np.array(history["val"]).T
        ax.plot(seen, loss, "o-", color="C3", label="val (EMA weights)")
    ax.set_xlabel("images seen")
    ax.set_ylabel("masked-weighted ε-MSE")
    ax.set_yscale("log")
    ax.legend()
    ax.grid(alpha=0.3)
    if metrics:
        seen, psnr, ssim = np.array(metrics).T
        ax = axes[0, 1]
        ax.plot(seen, psnr, "o-", color="C2")
        ax.set_xlabel("images seen")
        ax.set_ylabel("masked PSNR (dB)", color="C2")
        ax.set_title("val inpainting, DDIM-10 at 64×64 (48 cells, fixed masks and seeds)")
        ax.ticklabel_format(axis="x", style="plain", useOffset=False)
        ax.grid(alpha=0.3)
        ax2 = ax.twinx()
        ax2.plot(seen, ssim, "s--", color="C4")
        ax2.set_ylabel("masked SSIM", color="C4")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


@torch.no_grad()
def sample_grid(model, diff, val, path: Path, inpaint_path: Path, per_row: int = 6) -> None:
    """`path`: one row per class (whole cell generated with that label), one unlabelled row; the
    same seeds every checkpoint, so grids of a run compare. Generated pixels only: shareable.
    `inpaint_path`: val inpainting examples as (original | masked | result) triples. They show val
    images, so they stay in the run folder (data licence)."""
    device = next(model.parameters()).device
    n_cls = model.cfg.num_classes
    size = model.cfg.image_size
    labels = torch.arange(n_cls + 1, device=device).repeat_interleave(per_row)  # last row: "none"
    gen_known = torch.zeros(len(labels), 3, size, size, device=device)
    gen_mask = torch.ones(len(labels), 1, size, size, device=device)
    part = (val.m[:, 0].flatten(1).mean(1) < 0.99).nonzero()[:per_row, 0]
    known = torch.cat([gen_known, val.x[part]])
    mask = torch.cat([gen_mask, val.m[part]])
    lab = torch.cat([labels, torch.full((len(part),), n_cls, device=device)])
    out = to_uint8(sample(model, diff, known=known, mask=mask, labels=lab, seeds=list(range(len(lab))), steps=GRID_STEPS,
                          autocast=device.type == "cpu"))
    save_png(grid([list(out[i * per_row : (i + 1) * per_row]) for i in range(n_cls + 1)]), path)
    orig, ms = to_uint8(val.x[part]), val.m[part, 0].cpu().numpy() > 0.5
    inpaint = []
    for o, m, r in zip(orig, ms, out[len(labels) :]):
        inpaint += [o, overlay(o, m), r]
    save_png(grid([inpaint[i : i + per_row] for i in range(0, len(inpaint), per_row)]), inpaint_path)
