"""One sampler for generation and inpainting: DDPM ancestral or DDIM, with known pixels clamped.

Inpainting is the `known=` / `mask=` arguments: before every model call the known pixels of x_t
are replaced by the observed image noised to level t (as in RePaint, Lugmayr et al. 2022), and
after the last step they are replaced by the observed image itself. With mask all ones this is
plain unconditional (or class-conditional) generation.
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch

from gpu_job.inpainter.diffusion import Diffusion, model_input


@dataclass
class StepOutput:
    prev_sample: torch.Tensor  # x_{t_prev}
    pred_x0: torch.Tensor  # the model's estimate of x_0 at this step


def timesteps(T: int, steps: int, start: int | None = None) -> list[int]:
    """`steps` timesteps from T-1 (or `start`) down to 0, evenly spaced ("trailing": always starts
    at T-1, so the first step sees pure noise, Lin et al. 2024)."""
    top = T - 1 if start is None else start
    if not 0 <= top < T:
        raise ValueError(f"start must be in 0..{T - 1}, got {start}")
    if not 1 <= steps <= top + 1:
        raise ValueError(f"steps must be in 1..{top + 1}, got {steps}")
    return [int(round(x)) for x in np.linspace(top, 0, steps)]


def step(
    diff: Diffusion, eps: torch.Tensor, t: int, t_prev: int, x_t: torch.Tensor, method: str, noise: torch.Tensor
) -> StepOutput:
    ac = diff.alphas_cumprod
    a_t = ac[t]
    a_prev = ac[t_prev] if t_prev >= 0 else torch.ones_like(a_t)
    # 1. x0 from epsilon (Ho et al. eq. 15), clipped to the data range
    x0 = ((x_t - (1 - a_t).sqrt() * eps) / a_t.sqrt()).clamp(-1, 1)
    # 2. epsilon consistent with the clipped x0
    eps = (x_t - a_t.sqrt() * x0) / (1 - a_t).sqrt()
    if method == "ddim":
        # 3. DDIM with eta = 0 (Song et al. 2021 eq. 12): deterministic given x_T
        prev = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
    elif method == "ddpm":
        # 3. posterior q(x_prev | x_t, x0) (Ho et al. eq. 6-7), for any stride t -> t_prev
        beta = 1 - a_t / a_prev
        mean = (a_prev.sqrt() * beta / (1 - a_t)) * x0 + ((1 - beta).sqrt() * (1 - a_prev) / (1 - a_t)) * x_t
        var = beta * (1 - a_prev) / (1 - a_t)
        prev = mean + (var.sqrt() * noise if t_prev >= 0 else 0)
    else:
        raise ValueError(f"unknown sampler {method!r}: use ddim or ddpm")
    return StepOutput(prev, x0)


def _randn(shape: tuple[int, ...], gens: list[torch.Generator], device: torch.device) -> torch.Tensor:
    # One CPU generator per item: image i gets the same noise whatever batch it is in.
    return torch.stack([torch.randn(shape, generator=g) for g in gens]).to(device)


def sample(
    model: torch.nn.Module,
    diff: Diffusion,
    *,
    known: torch.Tensor,
    mask: torch.Tensor,
    seeds: list[int],
    steps: int,
    method: str = "ddim",
    labels: torch.Tensor | None = None,
    guidance: float = 1.0,
    temperature: float = 1.0,
    autocast: bool = False,
    start: int | None = None,
    whole: bool = False,
) -> torch.Tensor:
    """known: (B,3,H,W) in [-1,1]; mask: (B,1,H,W), 1 = restore. Returns (B,3,H,W) in [-1,1]
    with the known pixels exactly equal to `known`.

    The texture stage (texture.py) passes whole=True, with `known` a first-stage result inside the
    mask too, which the model sees whole; and `start`, to begin from `known` noised to that level
    instead of pure noise (SDEdit, Meng et al. 2022): structure stays, finer detail is redrawn.

    `temperature` scales the starting noise x_T (from pure noise only). Below 1 the deterministic
    DDIM path lands nearer the fill the model finds likeliest than a full-temperature sample, yet still
    commits to one fill, where the mean of samples averages several (BENCHMARKS.md "Temperature").
    DDPM draws fresh noise at every step, so there it changes only the start."""
    with torch.no_grad():
        return unrolled(model, diff, known=known, mask=mask, seeds=seeds, steps=steps, method=method, labels=labels,
                        guidance=guidance, temperature=temperature, autocast=autocast, start=start, whole=whole)


def unrolled(
    model: torch.nn.Module, diff: Diffusion, *, known: torch.Tensor, mask: torch.Tensor, seeds: list[int], steps: int,
    method: str = "ddim", labels: torch.Tensor | None = None, guidance: float = 1.0, temperature: float = 1.0,
    autocast: bool = False, start: int | None = None, whole: bool = False,
) -> torch.Tensor:
    """`sample` with gradients kept through every step: what training through the sampler
    (`sampler_loss` below) backpropagates."""
    device = known.device
    b, c, h, w = known.shape
    if len(seeds) != b:
        raise ValueError(f"need one seed per image: {len(seeds)} seeds for {b} images")
    gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
    null = torch.full((b,), model.cfg.num_classes, dtype=torch.long, device=device)
    # Guidance needs a label to push toward: rows all without one ("none") get one model call a step.
    guided = labels is not None and guidance != 1.0 and bool((labels != model.cfg.num_classes).any())
    ctx = torch.autocast(device.type, dtype=torch.bfloat16) if autocast else nullcontext()
    ts = timesteps(diff.T, steps, start)
    x = _randn((c, h, w), gens, device)
    if start is None:
        x = x * temperature
    else:
        x = diff.q_sample(known, torch.full((b,), start, dtype=torch.long, device=device), x)
    for i, t in enumerate(ts):
        t_prev = ts[i + 1] if i + 1 < len(ts) else -1
        tt = torch.full((b,), t, dtype=torch.long, device=device)
        # Clamp: the known region of x_t is the observed image noised to level t.
        x = mask * x + (1 - mask) * diff.q_sample(known, tt, _randn((c, h, w), gens, device))
        inp = model_input(x, known, mask, whole)
        with ctx:
            if guided:
                # Classifier-free guidance (Ho & Salimans 2022): one batch, conditional and not.
                e = model(torch.cat([inp, inp]), torch.cat([tt, tt]), torch.cat([labels, null])).float()
                e_c, e_u = e.chunk(2)
                eps = e_u + guidance * (e_c - e_u)
            else:
                eps = model(inp, tt, labels).float()
        noise = _randn((c, h, w), gens, device) if method == "ddpm" else None
        x = step(diff, eps, t, t_prev, x, method, noise).prev_sample
    return mask * x.clamp(-1, 1) + (1 - mask) * known


def sampler_loss(
    model: torch.nn.Module, diff: Diffusion, x0: torch.Tensor, mask: torch.Tensor, *, steps: int, temperature: float,
    labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean over rows of the squared error inside the mask of the fill inference draws (`steps`
    DDIM steps at `temperature`, known pixels clamped) against the truth, backpropagated through
    every step.

    Masked PSNR rewards a fill's expected value. One sample commits to one fill: over another
    microscope's white cells its departures from a smooth fill carry signal but are drawn about
    twice as strongly as the truth bears out (docs/benchmarks-log.md, "what did not move them").
    Training through the sampler teaches the model to draw them as strongly as they are likely."""
    seeds = torch.randint(0, 2**31 - 1, (len(x0),)).tolist()
    out = unrolled(model, diff, known=x0, mask=mask, seeds=seeds, steps=steps, labels=labels, temperature=temperature)
    err = ((out.float() - x0) ** 2 * mask).flatten(1).sum(1)
    return (err / (mask.flatten(1).sum(1) * x0.shape[1]).clamp(min=1)).mean()
