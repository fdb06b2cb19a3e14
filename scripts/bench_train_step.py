"""Seconds per training step of the shipped architecture on this machine, for each way of running it:
fp32, bf16 autocast, bf16 + channels_last, and bf16 + channels_last + torch.compile.

    .venv/bin/python scripts/bench_train_step.py [--batch 32] [--steps 12] [--no-compile]
    python3 scripts/bench_train_step.py --device cuda --batch 256 --steps 30 --skip fp32 "bf16 autocast"   # a lent GPU

The step is train.py's own `train_step` (loss, backward, clipped AdamW step) on random tensors,
so no data is needed. Prints a markdown table of median seconds per step and the ratio to fp32.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from gpu_job.inpainter.diffusion import Diffusion, DiffusionConfig
from gpu_job.inpainter.model import UNet, UNetConfig
from gpu_job.training.first_stage import train_step


def bench(batch: int, steps: int, bf16: bool, channels_last: bool, compile_: bool, device: str = "cpu") -> tuple[float, float]:
    torch.manual_seed(0)
    cfg = UNetConfig()
    model, diff = UNet(cfg).to(device), Diffusion(DiffusionConfig()).to(device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    fwd = torch.compile(model) if compile_ else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = (torch.rand(batch, 3, cfg.image_size, cfg.image_size, device=device) * 2 - 1).contiguous(memory_format=fmt)
    m = (torch.rand(batch, 1, cfg.image_size, cfg.image_size, device=device) < 0.3).float().contiguous(memory_format=fmt)
    labels = torch.randint(0, cfg.num_classes + 1, (batch,), device=device)
    times = []
    for _ in range(steps + 2):  # the first two warm up (and, with compile, compile)
        t = time.perf_counter()
        loss = train_step(fwd, model, opt, diff, x, m, labels, lambda: torch.autocast(device, dtype=torch.bfloat16, enabled=bf16))
        loss.item()  # waits for the GPU, so the time is the step's, not its launch's
        times.append(time.perf_counter() - t)
    return statistics.median(times[2:]), sum(times[:2])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile settings (each compiles for ~1-2 min)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--skip", nargs="*", default=[], help="settings to leave out, by name")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    settings = {"fp32": (False, False, False), "bf16 autocast": (True, False, False),
                "bf16 + channels_last": (True, True, False), "bf16 + channels_last + torch.compile": (True, True, True),
                "bf16 + torch.compile": (True, False, True)}
    settings = {k: v for k, v in settings.items() if k not in a.skip and not (a.no_compile and v[2])}
    rows = {}
    for name, s in settings.items():
        rows[name] = bench(a.batch, a.steps, *s, device=a.device)
        print(f"{name}: {rows[name][0]:.4f} s/step", flush=True)
    base_name = next(iter(rows))
    base = rows[base_name][0]
    where = torch.cuda.get_device_name() if a.device == "cuda" else f"{a.threads} threads"
    print(f"\ntorch {torch.__version__}, {where}, batch {a.batch}, median of {a.steps} steps after 2 warm-up steps\n")
    print(f"| setting | s/step (median) | images/s | speed-up over {base_name} | first 2 steps (s) |")
    print("|---|---|---|---|---|")
    for name, (med, warm) in rows.items():
        print(f"| {name} | {med:.4f} | {a.batch / med:.1f} | {base / med:.2f}× | {warm:.1f} |")


if __name__ == "__main__":
    main()
