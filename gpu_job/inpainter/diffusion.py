"""The forward process and training loss of DDPM (Ho et al. 2020), with a mask-conditioned input."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class DiffusionConfig:
    timesteps: int = 1000  # T in Ho et al. 2020
    beta_start: float = 1e-4  # linear schedule, Ho et al. 2020 sec. 4
    beta_end: float = 0.02
    # Loss weight on known pixels. The model reads them off its input, so at weight 1 they
    # dominate the loss and teach nothing (measured: worse than a mean-colour fill).
    known_weight: float = 0.1


def linear_beta_schedule(timesteps: int, start: float, end: float) -> np.ndarray:
    """Ho et al. 2020, sec. 4: betas rising linearly from 1e-4 to 0.02. Float64."""
    return np.linspace(start, end, timesteps, dtype=np.float64)


class Diffusion(nn.Module):
    """Schedule buffers (computed in float64, stored float32) and the forward process."""

    def __init__(self, cfg: DiffusionConfig):
        super().__init__()
        self.cfg = cfg
        betas = linear_beta_schedule(cfg.timesteps, cfg.beta_start, cfg.beta_end)
        alphas_cumprod = np.cumprod(1.0 - betas)
        f32 = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
        self.register_buffer("alphas_cumprod", f32(alphas_cumprod), persistent=False)
        self.register_buffer("sqrt_ac", f32(np.sqrt(alphas_cumprod)), persistent=False)
        self.register_buffer("sqrt_1mac", f32(np.sqrt(1.0 - alphas_cumprod)), persistent=False)

    @property
    def T(self) -> int:
        return self.cfg.timesteps

    def snr(self, t: torch.Tensor) -> torch.Tensor:
        """Signal-to-noise ratio abar_t / (1 - abar_t) of each timestep in `t`."""
        ac = self.alphas_cumprod[t]
        return ac / (1 - ac)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps  (Ho et al. eq. 4)."""
        return self.sqrt_ac[t].view(-1, 1, 1, 1) * x0 + self.sqrt_1mac[t].view(-1, 1, 1, 1) * noise


def model_input(x_t: torch.Tensor, known: torch.Tensor, mask: torch.Tensor, whole: bool = False) -> torch.Tensor:
    """(B, 7, H, W): x_t, the masked image (zero = mid-grey where unknown), the mask (1 = restore).
    whole=True: `known` goes in whole, inside the mask too (the texture stage's condition, texture.py)."""
    return torch.cat([x_t, known if whole else known * (1 - mask), mask], dim=1)


def training_loss(
    model: nn.Module, diff: Diffusion, x0: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor,
    generator: torch.Generator | None = None, t: torch.Tensor | None = None, noise: torch.Tensor | None = None,
    min_snr: float = 0.0, cond: torch.Tensor | None = None,
) -> torch.Tensor:
    """Epsilon-MSE weighted toward the masked region. x0: (B,3,H,W) in [-1,1]; mask: (B,1,H,W).

    min_snr > 0 (gamma of Hang et al. 2023, "Efficient Diffusion Training via Min-SNR Weighting"):
    each sample's loss is scaled by min(SNR_t, gamma) / SNR_t, the epsilon-prediction form. It
    takes weight off the nearly clean timesteps (t < ~130 at gamma 5), which the few-step
    samplers never visit, and leaves the rest at 1.

    cond: the texture stage's condition (texture.py), given whole in place of the masked x0."""
    b = x0.shape[0]
    if t is None:
        t = torch.randint(0, diff.T, (b,), device=x0.device, generator=generator)
    if noise is None:
        noise = torch.randn(x0.shape, device=x0.device, generator=generator)
    x_t = diff.q_sample(x0, t, noise)
    eps = model(model_input(x_t, x0, mask) if cond is None else model_input(x_t, cond, mask, whole=True), t, labels)
    w = mask + diff.cfg.known_weight * (1 - mask)
    per_px = F.mse_loss(eps.float(), noise, reduction="none") * w
    if min_snr > 0:
        snr = diff.snr(t)
        # Normalised by the unscaled mask weights, so gamma only reweights timesteps.
        return (per_px * (torch.clamp(snr, max=min_snr) / snr).view(-1, 1, 1, 1)).sum() / (w.sum() * x0.shape[1])
    return per_px.sum() / (w.sum() * x0.shape[1])
