#!/usr/bin/env python
"""CPU execution levers for the inference models (issue 18): torch.compile and int8 dynamic
quantisation, against the eager bf16-autocast call the pipeline makes.

For each model, the first stage at its batch (16 windows of 64x64) and the texture stage at its
tile batch (64 tiles of 64x64), it times one model call (the median of --repeats, after
--warmup calls) eagerly, compiled (`torch.compile`, inductor, the compile time reported apart),
and with `torch.ao.quantization.quantize_dynamic` on its Linear layers (dynamic int8 has no
convolution kernels, so that is all it can reach), and states how far each output is from the
eager one (max |difference| in the model's [-1, 1] units). Run it with nothing else on the CPU:

    .venv/bin/python scripts/bench_cpu_levers.py --threads 2
"""
from __future__ import annotations

import argparse
import statistics
import time
from contextlib import nullcontext

import torch

from bench_speed import cpu_model
from gpu_job.inpainter.texture import TILE, TILE_BATCH, default_texture_weights
from gpu_job.inpainter.weights import load_weights


def timed(fn, warmup: int, repeats: int) -> tuple[float, torch.Tensor]:
    for _ in range(warmup):
        out = fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def levers(name: str, weights, batch: int, warmup: int, repeats: int, compile_: bool = True) -> list[dict]:
    model, _, _ = load_weights(weights, "cpu")
    model.to(memory_format=torch.channels_last)
    cfg = model.cfg
    g = torch.Generator().manual_seed(0)
    inp = torch.randn(batch, cfg.in_channels, TILE, TILE, generator=g).contiguous(memory_format=torch.channels_last)
    t = torch.full((batch,), 500, dtype=torch.long)
    labels = torch.full((batch,), cfg.num_classes, dtype=torch.long) if cfg.num_classes else None

    def call(m, autocast=True):
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else nullcontext()
        with torch.no_grad(), ctx:
            return m(inp, t, labels).float()

    rows = []
    eager_s, ref = timed(lambda: call(model), warmup, repeats)
    rows.append({"model": name, "lever": "eager, bf16 autocast (the pipeline's)", "s": eager_s, "diff": 0.0})
    fp32_s, out = timed(lambda: call(model, autocast=False), warmup, repeats)
    rows.append({"model": name, "lever": "eager, fp32", "s": fp32_s, "diff": float((out - ref).abs().max())})
    if compile_:
        compiled = torch.compile(model)
        t0 = time.perf_counter()
        call(compiled)
        compile_s = time.perf_counter() - t0
        s, out = timed(lambda: call(compiled), warmup, repeats)
        rows.append({"model": name, "lever": f"torch.compile, bf16 autocast (first call {compile_s:.0f} s)", "s": s, "diff": float((out - ref).abs().max())})
    q = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    s, out = timed(lambda: call(q, autocast=False), warmup, repeats)
    rows.append({"model": name, "lever": "int8 dynamic (Linear layers), fp32 otherwise", "s": s, "diff": float((out - ref).abs().max())})
    for r in rows:
        r["x"] = eager_s / r["s"]
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile (its first call takes minutes)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    rows = levers("first stage (16 windows)", None, 16, a.warmup, a.repeats, not a.no_compile)
    rows += levers(f"texture stage ({TILE_BATCH} tiles)", default_texture_weights(), TILE_BATCH, a.warmup, a.repeats, not a.no_compile)
    print(f"Machine: {cpu_model()}, {a.threads} torch threads, torch {torch.__version__}; "
          f"median of {a.repeats} calls after {a.warmup} warm-up calls.\n")
    print("| model | lever | s per call | x eager bf16 | max output difference |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['lever']} | {r['s']:.3f} | {r['x']:.2f} | {r['diff']:.3f} |")


if __name__ == "__main__":
    main()
