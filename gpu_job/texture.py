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

import os
from pathlib import Path

import numpy as np
import torch

from .sampler import sample
from .tensors import from_uint8, mask_tensor, to_uint8
from .weights import load_weights

STAGE = "texture"
DEFAULT_TEXTURE_WEIGHTS = Path(__file__).parent / "weights" / "texture.safetensors"
MULTIPLE = 4  # crop sides the UNet takes: two 2x downsamplings


@torch.no_grad()
def refine_crops(model, diff, cond: torch.Tensor, mask: torch.Tensor, seeds: list[int], steps: int, start: int, autocast: bool) -> torch.Tensor:
    """cond: (B,3,H,W) in [-1,1], the first stage's result (the original outside the mask);
    mask: (B,1,H,W). Returns (B,3,H,W): outside the mask exactly `cond`."""
    return sample(model, diff, known=cond, mask=mask, seeds=seeds, steps=steps, start=start, whole=True, autocast=autocast)


def refine(model, diff, composite: np.ndarray, mask: np.ndarray, seed: int = 0, steps: int = 10, start: int = 200,
           margin: int = 8) -> np.ndarray:
    """composite: (H, W, 3) uint8, the first stage's full-size result; mask: (H, W) bool. Returns the
    composite with the masked pixels redrawn; every pixel outside `mask` is left as it was."""
    if not mask.any():
        return composite.copy()
    ys, xs = np.nonzero(mask)
    y0, y1 = max(ys.min() - margin, 0), min(ys.max() + margin + 1, mask.shape[0])
    x0, x1 = max(xs.min() - margin, 0), min(xs.max() + margin + 1, mask.shape[1])
    ph, pw = -(y1 - y0) % MULTIPLE, -(x1 - x0) % MULTIPLE
    # Pad the crop to a side the UNet takes; padded pixels count as known, and are cut off again.
    c = np.pad(composite[y0:y1, x0:x1], ((0, ph), (0, pw), (0, 0)), mode="reflect" if min(y1 - y0, x1 - x0) > max(ph, pw) else "edge")
    m = np.pad(mask[y0:y1, x0:x1], ((0, ph), (0, pw)))
    device = next(model.parameters()).device
    cond = from_uint8(torch.from_numpy(c)[None]).to(device)
    out = to_uint8(refine_crops(model, diff, cond, mask_tensor(m[None], device), [seed], steps, start, device.type == "cpu"))[0]
    res = composite.copy()
    region = res[y0:y1, x0:x1]
    region[mask[y0:y1, x0:x1]] = out[: y1 - y0, : x1 - x0][mask[y0:y1, x0:x1]]
    return res


def default_texture_weights() -> Path:
    """$CELLPAINT_TEXTURE_WEIGHTS if set, else the shipped texture-stage weights."""
    env = os.environ.get("CELLPAINT_TEXTURE_WEIGHTS")
    return Path(env) if env else DEFAULT_TEXTURE_WEIGHTS


class Texturer:
    """Texture-stage weights, loaded once: `Texturer(path).refine(composite, mask)`."""

    def __init__(self, weights: str | Path, device: str | torch.device = "cpu"):
        self.model, self.diff, self.record = load_weights(weights, device)
        if self.record.get("stage") != STAGE:
            raise ValueError(f"{weights}: not texture-stage weights (train them with `cellpaint train-texture`)")
        self.start = int(self.record[STAGE]["start"])

    def refine(self, composite: np.ndarray, mask: np.ndarray, seed: int = 0, steps: int = 10, start: int | None = None) -> np.ndarray:
        return refine(self.model, self.diff, composite, mask, seed, steps, self.start if start is None else start)
