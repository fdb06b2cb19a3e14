#!/usr/bin/env python
"""GPU throughput of the inpainter (issue 18: the default should do > 500 pairs/s on an H100/H200).

For each setting (always `default` and `first-stage` = texture=false, then any `--setting
NAME:opt=v,...`) and each batch size B (default 1, 16, 64, 256) it builds
`Inpainter(batch_size=B)` and times `inpaint_many` on B pairs, the way gpu_job/job.py calls it:
with the windows planned beforehand (in the pipeline the ingest Lambda plans them; their cost is
reported apart). Warm-up runs are excluded (they also let cudnn.benchmark choose its kernels);
the median of --repeats runs is reported, with pairs/s, the peak GPU memory
(torch.cuda.max_memory_allocated, reset after the warm-up) and where each run's time went
(first-stage sampling, pasting with the seam fix, the texture stage, the rest of finishing).

The pairs: PBC val cells (4 per class, cycled, each pair with its own 5-25 % mask; the workload of
scripts/bench_speed.py) if ../shared/data/pbc/val is there, else synthetic random-texture cells of
360x363 (the output says which). Images are written only to a temporary folder, then deleted.

Settings may also set these knobs of the benchmark, which change nothing in the repository:
  autocast=true    bf16 autocast on CUDA too (gpu_job/inpainter/sampler.py autocasts only on the CPU; CUDA runs fp32)
  tf32=true        TF32 matmuls (torch.backends.cuda.matmul.allow_tf32; cuDNN convolutions allow TF32 by default)
  tile_batch=N     texture-stage tiles per model call (gpu_job/inpainter/texture.py TILE_BATCH, 64)

The whole run keeps to --budget-s (default 420 s of measuring): repeats shrink, and measurements
that cannot fit are skipped and marked so. On one H200:

    python scripts/bench_gpu.py --setting "bf16:autocast=true" --setting "bf16-tiles:autocast=true,tile_batch=1024"

A tiny version for tests and machines without a GPU:

    python scripts/bench_gpu.py --device cpu --quick
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_speed import DATA, PBC_SIZE, SEED, cpu_model, make_pairs, parse_setting  # noqa: E402

KNOBS = {"autocast": bool, "tf32": bool, "tile_batch": int}
BUILTIN = ("default", "first-stage:texture=false")
TARGET = 500.0  # pairs/s for the default on an H100/H200 (issue 18)
STAGES = ("sample", "paste", "texture", "finish", "other")


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def knobs_applied(knobs: dict):
    """The benchmark's knobs for the duration of one measurement, put back afterwards."""
    import torch

    import gpu_job.inpainter.inpaint as gi
    import gpu_job.inpainter.texture as gt

    saved = {"inpaint_sample": gi.sample, "texture_sample": gt.sample, "defaults": gt.refine_many.__defaults__,
             "tf32": (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)}
    try:
        if "autocast" in knobs:
            def forced(orig):
                def sample(*a, **k):
                    k["autocast"] = knobs["autocast"]
                    return orig(*a, **k)
                return sample
            gi.sample, gt.sample = forced(gi.sample), forced(gt.sample)
        if "tf32" in knobs:
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = knobs["tf32"]
        if "tile_batch" in knobs:
            names = gt.refine_many.__code__.co_varnames[: gt.refine_many.__code__.co_argcount]
            d = list(gt.refine_many.__defaults__)
            d[names[-len(d):].index("batch")] = knobs["tile_batch"]
            gt.refine_many.__defaults__ = tuple(d)
        yield
    finally:
        gi.sample, gt.sample, gt.refine_many.__defaults__ = saved["inpaint_sample"], saved["texture_sample"], saved["defaults"]
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved["tf32"]


def instrument(inp, device) -> dict:
    """Wraps the inpainter's stages (on this instance only) to add their seconds to the returned
    dict; each stage ends with a device sync, so its time is its own."""
    times = {s: 0.0 for s in STAGES if s != "other"}
    depth = {"finish": 0}

    def wrap(stage, f):
        def g(*a, **k):
            if stage == "paste" and depth["finish"]:  # the plain pastes inside _finish count as finishing
                return f(*a, **k)
            depth["finish"] += stage == "finish"
            t = time.perf_counter()
            try:
                r = f(*a, **k)
                sync(device)
                return r
            finally:
                times[stage] += time.perf_counter() - t
                depth["finish"] -= stage == "finish"
        return g

    for stage, name in (("sample", "_sample_windows"), ("paste", "_paste"), ("texture", "_texture_all"), ("finish", "_finish")):
        setattr(inp, name, wrap(stage, getattr(inp, name)))
    return times


def device_info(device) -> dict:
    import torch

    info = {"torch": torch.__version__, "device": str(device), "cpu": cpu_model(),
            "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "python": platform.python_version()}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        info |= {"name": torch.cuda.get_device_name(device), "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
                 "capability": f"{p.major}.{p.minor}", "gpu_memory_gib": round(p.total_memory / 2**30, 1),
                 "cudnn_benchmark": torch.backends.cudnn.benchmark,
                 "matmul_tf32": torch.backends.cuda.matmul.allow_tf32, "cudnn_tf32": torch.backends.cudnn.allow_tf32}
    else:
        info["name"] = info["cpu"]
    return info


def markdown(rep: dict) -> str:
    d, w = rep["device"], rep["workload"]
    src = "PBC val cells" if w["source"] == "pbc" else "synthetic random-texture cells (no PBC data here)"
    lines = [f"`scripts/bench_gpu.py`, {rep['date']}: {d['name']} ({d['device']}), torch {d['torch']}"
             + (f", CUDA {d['cuda']}, cuDNN {d['cudnn']}, cudnn.benchmark {d['cudnn_benchmark']}" if d.get("cuda") else "")
             + f"; pairs: {src}, {w['size_hw'][1]}x{w['size_hw'][0]} px, masks {w['cover']['min']:.0%}-{w['cover']['max']:.0%} of the area. "
             f"{rep['precision']}. Median of up to {rep['repeats']} runs after {rep['warmup']} warm-up run(s).", "",
             "| setting | batch | pairs/s | median s | runs | peak GPU MiB | sample | paste | texture | finish | other |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in rep["settings"]:
        for r in s["results"]:
            if r.get("skipped"):
                lines.append(f"| {s['name']} | {r['batch']} | skipped: {r['skipped']} |  |  |  |  |  |  |  |  |")
                continue
            mem = f"{r['peak_gpu_mib']:.0f}" if r.get("peak_gpu_mib") is not None else "-"
            st = r["stages_ms_per_pair"]
            lines.append(f"| {s['name']} | {r['batch']} | {r['pairs_per_s']:.1f} | {r['median_s']:.3f} | {len(r['times_s'])} | {mem} | "
                         + " | ".join(f"{st[k]:.2f}" for k in STAGES) + " |")
    lines += ["", "- stages: ms per pair of the median run's time: first-stage sampling (with the colour moves), pasting with the seam fix "
              "(numpy, CPU), the texture stage, finishing (the samples' plain pastes and spread, the guard), and the rest.",
              f"- window planning (shared/imaging/windows.py `prepare`, the ingest Lambda's work in the pipeline, not timed above): "
              + ", ".join(f"{s['name']} {s['plan_ms_per_pair']:.1f} ms/pair" for s in rep["settings"]) + "."]
    t = rep.get("target")
    if t:
        lines.append(f"- target (issue 18): the default at > {t['pairs_per_s']:.0f} pairs/s: best measured {t['best_pairs_per_s']:.1f} "
                     f"pairs/s at batch {t['best_batch']}: {'met' if t['met'] else 'not met'}.")
    return "\n".join(lines) + "\n"


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu", "auto"])
    ap.add_argument("--batches", type=int, nargs="+", help="batch sizes = pairs per inpaint_many call (default: 1 16 64 256; --quick: 1 2)")
    ap.add_argument("--setting", action="append", default=[], metavar="NAME:OPT=V,...",
                    help=f"a setting to time besides {' and '.join(BUILTIN)} (repeatable); options of shared/options.py and the knobs above")
    ap.add_argument("--no-builtin", action="store_true", help=f"time only the --setting ones, not {' and '.join(BUILTIN)}")
    ap.add_argument("--repeats", type=int, help="timed runs per measurement (default 3; --quick 1)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed runs first")
    ap.add_argument("--budget-s", type=float, default=420.0, help="seconds of measuring in all; repeats shrink to fit, the rest is skipped")
    ap.add_argument("--data", type=Path, default=DATA, help="PBC val folder (default ../shared/data/pbc/val); synthetic cells if absent")
    ap.add_argument("--synthetic", action="store_true", help="synthetic cells even if the data is there")
    ap.add_argument("--size", type=int, nargs=2, default=list(PBC_SIZE), metavar=("H", "W"), help="synthetic cells' size")
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--weights", type=Path, help="first-stage weights (default: the shipped ones)")
    ap.add_argument("--texture-weights", type=Path, help="texture-stage weights (default: the shipped ones)")
    ap.add_argument("--no-cudnn-benchmark", action="store_true", help="leave torch.backends.cudnn.benchmark off")
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: torch's own)")
    ap.add_argument("--quick", action="store_true", help="a tiny run: batches 1 2, one timed run each")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_gpu", help="folder for bench_gpu.json and .md")
    return ap


def open_device(a):
    """The device, set up as asked, and what it is (printed)."""
    import torch

    from gpu_job.inpainter.inpaint import pick_device

    if a.threads:
        torch.set_num_threads(a.threads)
    try:
        device = pick_device(a.device)
    except ValueError:
        raise SystemExit("bench: no CUDA device here; on a machine without one, run --device cpu --quick") from None
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not a.no_cudnn_benchmark
    info = device_info(device)
    print(f"device: {info['name']} ({device}); torch {info['torch']}" + (f", CUDA {info['cuda']}, cuDNN {info['cudnn']}, "
          f"capability {info['capability']}, {info['gpu_memory_gib']} GiB, cudnn.benchmark {info['cudnn_benchmark']}" if info.get("cuda") else "")
          + f"; host {info['cpu']}, {info['cores']} cores, {info['torch_threads']} torch threads", flush=True)
    return device, info


def load_workload(a, n: int) -> tuple[list, dict, bool]:
    """n pairs, written to a temporary folder as the CLI would read them, loaded, the folder deleted."""
    from shared.imaging.images import load_image, load_mask
    from shared.pipeline.pairs import find_pairs

    synthetic = a.synthetic or not Path(a.data).is_dir()
    a.out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="bench-gpu-", dir=a.out))
    try:
        workload = make_pairs(tmp, n, None if synthetic else a.data, min(n, 32) if synthetic else None, tuple(a.size), a.seed)
        pairs = [(load_image(str(i)), load_mask(str(m))) for i, m in find_pairs(tmp)[0]]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"pairs: {len(pairs)} ({'synthetic random-texture cells' if synthetic else 'PBC val cells'}), cover {workload['cover']}", flush=True)
    return pairs, workload, synthetic


def time_batch(inp, times: dict, device, part, o, wins, warmup: int, repeats: int, share_s: float, load_s: float) -> dict:
    """One measurement: `warmup` untimed calls, then as many timed calls (at most `repeats`) as fit
    in `share_s`; the median, the stages of the median run, and peak memory."""
    import torch

    from gpu_job.evaluation.evaluate import peak_reset, peak_rss_mib

    b, t_w = len(part), None
    for _ in range(warmup):
        sync(device)
        t = time.perf_counter()
        inp.inpaint_many(part, o, wins)
        sync(device)
        t_w = time.perf_counter() - t
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device) / 2**20
    peak_reset()
    reps = repeats if t_w is None else max(1, min(repeats, int(share_s / max(t_w, 1e-6))))
    runs, stage_runs = [], []
    for _ in range(reps):
        for k in times:
            times[k] = 0.0
        sync(device)
        t = time.perf_counter()
        inp.inpaint_many(part, o, wins)
        sync(device)
        runs.append(time.perf_counter() - t)
        stage_runs.append(dict(times))
    med = statistics.median(runs)
    m = sorted(range(len(runs)), key=runs.__getitem__)[len(runs) // 2]  # the median run (the upper one of an even count)
    stages = {k: v / b * 1e3 for k, v in stage_runs[m].items()}
    stages["other"] = max(0.0, runs[m] - sum(stage_runs[m].values())) / b * 1e3
    res = {"batch": b, "pairs": b, "windows": sum(len(w) for w in wins), "model_rows": sum(len(w) for w in wins) * o.samples,
           "warmup": warmup, "warmup_s": t_w, "times_s": [round(x, 4) for x in runs], "median_s": med, "pairs_per_s": b / med,
           "stages_ms_per_pair": stages, "load_s": round(load_s, 3), "peak_rss_mib": peak_rss_mib(), "repeats": reps, "peak_gpu_mib": None}
    if device.type == "cuda":
        res |= {"peak_gpu_mib": torch.cuda.max_memory_allocated(device) / 2**20, "resident_before_mib": base,
                "peak_reserved_mib": torch.cuda.max_memory_reserved(device) / 2**20}
    return res


def main(argv: list[str] | None = None) -> int:
    ap = parser()
    a = ap.parse_args(argv)
    batches = sorted(set(a.batches or ([1, 2] if a.quick else [1, 16, 64, 256])))
    repeats = a.repeats or (1 if a.quick else 3)
    if min(batches) < 1 or repeats < 1 or a.warmup < 0:
        ap.error("batches and --repeats must be >= 1, --warmup >= 0")
    texts = ([] if a.no_builtin else list(BUILTIN)) + a.setting
    if not texts:
        ap.error("no settings: give --setting, or leave out --no-builtin")
    settings = [parse_setting(t, KNOBS) for t in texts]
    if len({n for n, _, _ in settings}) != len(settings):
        ap.error("two settings share a name")
    t_start = time.perf_counter()

    from tqdm import tqdm

    from gpu_job.inpainter.inpaint import Inpainter
    from shared.imaging.windows import prepare
    from shared.options import OWN_MACHINE, InpaintOptions

    device, info = open_device(a)
    precision = ("fp32 on CUDA (gpu_job/inpainter/sampler.py autocasts only on the CPU) unless a setting has autocast=true"
                 if device.type == "cuda" else "bf16 autocast (the CPU path)")
    print(f"precision: {precision}", flush=True)
    pairs, workload, synthetic = load_workload(a, max(batches))

    inpainters: dict[int, tuple] = {}

    def inpainter(b: int):
        if b not in inpainters:
            t = time.perf_counter()
            inp = Inpainter(str(a.weights) if a.weights else None, str(device), batch_size=b,
                            texture_weights=str(a.texture_weights) if a.texture_weights else None)
            inpainters[b] = (inp, instrument(inp, device), time.perf_counter() - t)
        return inpainters[b]

    size = inpainter(batches[0])[0].size
    deadline = time.perf_counter() + a.budget_s
    todo = [(s, b) for s in range(len(settings)) for b in batches]
    rows = [{"name": name, "options": opts, "knobs": knobs, "results": []} for name, opts, knobs in settings]
    per_pair_est: float | None = None
    for idx, (si, b) in enumerate(tqdm(todo, desc="measuring", unit="meas")):
        name, opts, knobs = settings[si]
        row, o = rows[si], InpaintOptions(**opts).check(OWN_MACHINE)
        if "windows" not in row:
            t = time.perf_counter()
            row["windows"] = [prepare(img, m, o.window, size) for img, m in pairs]
            row["plan_ms_per_pair"] = (time.perf_counter() - t) / len(pairs) * 1e3
        remaining = deadline - time.perf_counter()
        if per_pair_est and per_pair_est * b * (a.warmup + 1) > remaining:
            row["results"].append({"batch": b, "skipped": f"out of budget ({remaining:.0f} s left, one run ~{per_pair_est * b:.0f} s)"})
            tqdm.write(f"{name} batch {b}: skipped, out of budget")
            continue
        inp, times, load_s = inpainter(b)
        share = remaining * b / sum(bb for _, bb in todo[idx:])  # this measurement's share of what is left, by batch size
        with knobs_applied(knobs):
            if o.texture:
                inp.texturer()
            res = time_batch(inp, times, device, pairs[:b], o, row["windows"][:b], a.warmup, repeats, share, load_s)
        per_pair_est = res["median_s"] / b
        row["results"].append(res)
        tqdm.write(f"{name} batch {b}: {res['pairs_per_s']:.1f} pairs/s (median of {res['repeats']}: {res['median_s']:.3f} s)"
                   + (f", peak GPU {res['peak_gpu_mib']:.0f} MiB" if res["peak_gpu_mib"] is not None else "")
                   + "; ms/pair " + ", ".join(f"{k} {v:.1f}" for k, v in res["stages_ms_per_pair"].items()))
    for row in rows:
        row.pop("windows", None)
    write_report(a, argv, info, precision, workload, synthetic, batches, repeats, rows, t_start)
    return 0


def write_report(a, argv, info, precision, workload, synthetic, batches, repeats, rows, t_start) -> None:
    rep = {"benchmark": "bench_gpu", "date": datetime.date.today().isoformat(), "device": info, "precision": precision,
           "workload": workload | {"synthetic": synthetic}, "batches": batches, "repeats": repeats, "warmup": a.warmup,
           "budget_s": a.budget_s, "argv": sys.argv[1:] if argv is None else argv, "settings": rows}
    default = next((r for r in rows if r["name"] == "default"), None)
    done = [r for r in (default or {}).get("results", []) if not r.get("skipped")]
    if done:
        best = max(done, key=lambda r: r["pairs_per_s"])
        rep["target"] = {"pairs_per_s": TARGET, "best_pairs_per_s": best["pairs_per_s"], "best_batch": best["batch"],
                         "met": best["pairs_per_s"] > TARGET}
    rep["total_s"] = round(time.perf_counter() - t_start, 1)
    (a.out / "bench_gpu.json").write_text(json.dumps(rep, indent=1, default=float) + "\n")
    md = markdown(rep)
    (a.out / "bench_gpu.md").write_text(md)
    print("\n" + md)
    print(f"wrote {a.out / 'bench_gpu.json'} and {a.out / 'bench_gpu.md'} ({rep['total_s']} s in all)")


if __name__ == "__main__":
    sys.exit(main())
