"""The texture stage: a second DDPM that redraws the restored region at the image's own resolution.

The first stage restores a cell at 64x64, and compositing upsamples its patch about 5.6 times
(360 px cells), so the fill has the right shapes and colours but almost none of the chromatin
texture and granules around it: its fine detail is a quarter of the truth's (BENCHMARKS.md).
This stage works on the original pixels. Its input is x_t, the condition (the first stage's
full-size composite, whole, inside the mask too) and the mask; sampling starts from the
condition noised to level `start` (SDEdit, Meng et al. 2022), so the first stage's structure
stays and only detail at the scale that noise level erases is drawn anew, with the pixels
outside the mask clamped as in the first stage. Same UNet (no attention: it runs on crops of any
size), same linear schedule, epsilon prediction. Its training is gpu_job/training/texture_stage.py.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from gpu_job.inpainter.sampler import sample
from shared.options import OPTIONS
from gpu_job.inpainter.tensors import from_uint8, mask_tensor, to_uint8
from gpu_job.inpainter.weights import load_weights, shipped, weights_path

STAGE = "texture"
DEFAULT_TEXTURE_WEIGHTS = shipped("texture")
TILE = 64  # the crop the stage was trained on: its GroupNorm statistics and its borders are the ones it knows
TILE_BATCH = 64  # tiles per model call


@torch.no_grad()
def refine_crops(model, diff, cond: torch.Tensor, mask: torch.Tensor, seeds: list[int], steps: int, start: int, autocast: bool) -> torch.Tensor:
    """cond: (B,3,H,W) in [-1,1], the first stage's result (the original outside the mask);
    mask: (B,1,H,W). Returns (B,3,H,W): outside the mask exactly `cond`."""
    return sample(model, diff, known=cond, mask=mask, seeds=seeds, steps=steps, start=start, whole=True, autocast=autocast)


def tiles(writes: np.ndarray, tile: int = TILE) -> list[tuple[int, int, int, int]]:
    """The TILE x TILE tiles that cover `writes` (H, W >= tile): (top, left) of the tile and
    (top, left) of the grid cell it writes. Cells step by `tile` from the mask's first pixel and
    only cells holding a masked pixel are kept, so a stroke across the image costs the tiles it
    crosses, not its bounding box. A cell past the image edge is served by a tile moved back
    inside, overlapping its neighbour; it writes only its own cell."""
    ys, xs = np.nonzero(writes)
    h, w = writes.shape
    out = []
    for cy in range(int(ys.min()), int(ys.max()) + 1, tile):
        for cx in range(int(xs.min()), int(xs.max()) + 1, tile):
            if writes[cy : cy + tile, cx : cx + tile].any():
                out.append((min(cy, h - tile), min(cx, w - tile), cy, cx))
    return out


def refine_many(model, diff, items: list[tuple[np.ndarray, np.ndarray]], seeds: list[int], steps: int, start: int,
                batch: int = TILE_BATCH) -> list[np.ndarray]:
    """items: (composite (H, W, 3) uint8, writes (H, W) bool), the first stage's results. Returns
    each composite with its `writes` pixels redrawn; every other pixel is left as it was. The
    tiles of all items go through the model together, `batch` at a time."""
    padded, jobs = [], []  # jobs: (item, tile top, tile left, cell top, cell left, seed)
    for i, ((img, writes), seed) in enumerate(zip(items, seeds)):
        # Images smaller than a tile are padded to one; padded pixels count as known and are cut off.
        ph, pw = max(TILE - img.shape[0], 0), max(TILE - img.shape[1], 0)
        img_p = np.pad(img, ((0, ph), (0, pw), (0, 0)), mode="edge")
        wr_p = np.pad(writes, ((0, ph), (0, pw)))
        padded.append((img_p, wr_p))
        if writes.any():
            jobs += [(i, *t, int(np.random.SeedSequence([seed, n]).generate_state(1)[0])) for n, t in enumerate(tiles(wr_p))]
    outs = [p[0].copy() for p in padded]
    device = next(model.parameters()).device
    for b in range(0, len(jobs), batch):
        part = jobs[b : b + batch]
        cond = np.stack([padded[i][0][ty : ty + TILE, tx : tx + TILE] for i, ty, tx, *_ in part])  # (B, TILE, TILE, 3)
        m = np.stack([padded[i][1][ty : ty + TILE, tx : tx + TILE] for i, ty, tx, *_ in part])
        cond_t = from_uint8(torch.from_numpy(cond)).to(device).contiguous(memory_format=torch.channels_last)
        x = refine_crops(model, diff, cond_t, mask_tensor(m, device),
                         [j[-1] for j in part], steps, start, device.type == "cpu")
        for (i, ty, tx, cy, cx, _), tile_out in zip(part, to_uint8(x)):
            cell = (slice(cy, min(cy + TILE, ty + TILE)), slice(cx, min(cx + TILE, tx + TILE)))
            local = (slice(cy - ty, cell[0].stop - ty), slice(cx - tx, cell[1].stop - tx))
            wr = padded[i][1][cell]
            outs[i][cell][wr] = tile_out[local][wr]
    return [o[: img.shape[0], : img.shape[1]] for o, (img, _) in zip(outs, items)]


def default_texture_weights() -> Path:
    return weights_path("texture")


class Texturer:
    """Texture-stage weights, loaded once: `Texturer(path).refine(composite, mask)`."""

    def __init__(self, weights: str | Path, device: str | torch.device = "cpu"):
        self.model, self.diff, self.record = load_weights(weights, device)
        self.model.to(memory_format=torch.channels_last)  # about 1.35x on the CPU's bf16 convolutions (BENCHMARKS.md)
        if self.record.get("stage") != STAGE:
            raise ValueError(f"{weights}: not texture-stage weights (train them with `cellpaint train-texture`)")

    # The stage's default strength is the options' (texture_steps, texture_start): stated once, there.
    def refine(self, composite: np.ndarray, mask: np.ndarray, seed: int = 0, steps: int = OPTIONS["texture_steps"].default,
               start: int = OPTIONS["texture_start"].default) -> np.ndarray:
        return self.refine_many([(composite, mask)], [seed], steps, start)[0]

    def refine_many(self, items: list[tuple[np.ndarray, np.ndarray]], seeds: list[int], steps: int = OPTIONS["texture_steps"].default,
                    start: int = OPTIONS["texture_start"].default) -> list[np.ndarray]:
        return refine_many(self.model, self.diff, items, seeds, steps, start)
