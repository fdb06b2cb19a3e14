#!/usr/bin/env python
"""Speed and memory of `cellpaint inpaint` on the CPU workload of issue 18 ("a default that keeps up").

The workload: 32 held-out PBC val cells (4 per class, the first in sorted order; 360x363 px), each
with one mask of 5-25 % of its area, the kinds in a fixed cycle (ellipse, box, stroke; shared/imaging/masks.py)
and the covers drawn from a fixed seed. They are written as NAME.jpg + NAME.mask.png (shared/pipeline/pairs.py)
to a temporary folder under --out, which is deleted at the end: no data image ever lands anywhere
git sees. `--pairs-count 50` cycles the cells (each repeat with its own mask) to state the peak
memory of 50 pairs in one job; `--synthetic N` makes N cell-like images instead (for tests, and
machines without the data).

For each `--setting` (`default`, or `NAME:opt=value,...` with the options of shared/options.py,
e.g. `fast:samples=1,combine=first,texture_steps=2`) it runs, --repeats times,

    python -m cellpaint inpaint --pairs DIR -o OUT --device cpu [the setting's flags]

as a child process, model load included, on --threads torch threads (OMP_NUM_THREADS and
MKL_NUM_THREADS in the child's environment; the CLI has no threads flag), and reports the median
wall time, pairs/s, the child's peak RSS (os.wait4), the time to its first output, and each
setting's pairs/s against the first setting's. `--runner job` runs the pairs the way the Batch job
does instead (gpu_job/job.py: one `inpaint_many` call over every pair), where the CLI goes
`batch_size // samples` pairs at a time.

Writes bench_speed.json and bench_speed.md to --out (default runs/bench_speed). Run it with
nothing else using the CPU:

    .venv/bin/python scripts/bench_speed.py --setting default --setting "fast:samples=1,combine=first,texture_steps=2"
    .venv/bin/python scripts/bench_speed.py --pairs-count 50 --repeats 1 --runner job
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shared.imaging.masks import random_mask  # noqa: E402
from shared.options import OPTIONS, OWN_MACHINE, InpaintOptions, OptionError  # noqa: E402
from shared.pipeline.pairs import MASK_SUFFIX  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "pbc" / "val"
PER_CLASS = 4  # 8 classes x 4 = the 32 cells
COVER = (0.05, 0.25)  # share of the image's area a mask covers
KIND_CYCLE = ("ellipse", "box", "stroke")  # shared/imaging/masks.py's kinds: the blob, the box, the stroke
PBC_SIZE = (363, 360)  # (H, W) of a PBC cell image: the synthetic images' default size
SEED = 18
CLI_BATCH = 16  # gpu_job/inpainter/inpaint.py BATCH, the CLI's Inpainter batch (not imported: that would import torch here)
GB = 1e9  # the "under 2 GB" for 50 pairs on the CPU path


# ---- The workload ------------------------------------------------------------------------------------

def pbc_cells(data: Path, per_class: int = PER_CLASS) -> list[tuple[str, Path]]:
    """(class, file) of the first `per_class` images of each class folder of `data`, sorted."""
    classes = sorted(d for d in data.iterdir() if d.is_dir())
    cells = []
    for d in classes:
        files = sorted(f for f in d.iterdir() if f.suffix.lower() in (".jpg", ".jpeg", ".png"))[:per_class]
        cells += [(d.name, f) for f in files]
    if not cells:
        raise SystemExit(f"bench: {data}: no DATA/<class>/*.jpg images")
    return cells


def synthetic_image(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A cell-like picture with random texture: a pink field, red discs, a purple nucleus, and
    smooth noise at a few scales over it (so the fills have something to continue). Made here."""
    yy, xx = np.mgrid[:h, :w]
    img = np.empty((h, w, 3), np.float32)
    img[:] = (232, 210, 200)
    for _ in range(max(3, h * w // 6000)):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(0.04, 0.09) * min(h, w)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = (205, 120, 125)
    cy, cx, r = h / 2 + rng.normal(0, h / 30), w / 2 + rng.normal(0, w / 30), min(h, w) / 4
    img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = (110, 60, 150)
    for scale in (4, 16, 48):
        small = rng.normal(0, 1, (max(2, h // scale), max(2, w // scale), 3)).astype(np.float32)
        up = np.stack([np.asarray(Image.fromarray(small[..., c]).resize((w, h), Image.Resampling.BICUBIC)) for c in range(3)], -1)
        img += up * (10.0 if scale > 4 else 6.0)
    img += rng.normal(0, 4, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def pair_mask(i: int, h: int, w: int, seed: int = SEED) -> tuple[np.ndarray, str]:
    """Pair i's mask: kind KIND_CYCLE[i % 3], a cover drawn uniformly from COVER; the drawn shape is
    kept once its real cover is inside COVER too (a stroke's cover is only roughly what it was
    asked for). Deterministic in (seed, i)."""
    kind = KIND_CYCLE[i % len(KIND_CYCLE)]
    rng = np.random.default_rng([seed, i])
    best = None
    for _ in range(50):
        m = random_mask(rng, h, w, kind, float(rng.uniform(*COVER)))
        if COVER[0] <= m.mean() <= COVER[1]:
            return m, kind
        if best is None or abs(m.mean() - np.mean(COVER)) < abs(best.mean() - np.mean(COVER)):
            best = m
    return best, kind


def make_pairs(folder: Path, count: int | None = None, data: Path | None = DATA, synthetic: int | None = None,
               size: tuple[int, int] = PBC_SIZE, seed: int = SEED, per_class: int = PER_CLASS) -> dict:
    """Writes the workload's pairs into `folder` and returns its description. `synthetic`: that many
    made-up images of `size` (H, W) instead of `data`'s cells. `count` pairs (default: one per
    image) cycle the images, each pair with its own mask."""
    folder.mkdir(parents=True, exist_ok=True)
    if synthetic:
        rng = np.random.default_rng([seed, 0x5EED])
        sources = [("synthetic", synthetic_image(rng, *size)) for _ in range(synthetic)]
    else:
        require_data(data)
        sources = pbc_cells(Path(data), per_class)
    count = count or len(sources)
    pairs, kinds, covers, sizes = [], {}, [], {}
    for i in range(count):
        label, src = sources[i % len(sources)]
        if isinstance(src, Path):
            name = f"{i:03d}-{label}-{src.stem}"
            shutil.copyfile(src, folder / f"{name}{src.suffix.lower()}")  # the file as it is: no recompression
            with Image.open(src) as im:
                w, h = im.size
        else:
            name = f"{i:03d}-{label}"
            Image.fromarray(src).save(folder / f"{name}.png")
            h, w = src.shape[:2]
        mask, kind = pair_mask(i, h, w, seed)
        Image.fromarray(mask.astype(np.uint8) * 255).save(folder / f"{name}{MASK_SUFFIX}")
        pairs.append(name)
        kinds[kind] = kinds.get(kind, 0) + 1
        covers.append(float(mask.mean()))
        sizes[(h, w)] = sizes.get((h, w), 0) + 1
    return {"source": "synthetic" if synthetic else "pbc", "data": None if synthetic else str(data), "per_class": None if synthetic else per_class,
            "pairs": count,
            "distinct_images": len(sources),
            "size_hw": list(max(sizes, key=sizes.get)), "sizes_hw": [list(x) for x in sorted(sizes)], "kinds": kinds, "seed": seed,
            "cover": {"min": round(min(covers), 4), "median": round(statistics.median(covers), 4), "max": round(max(covers), 4)}}


def require_data(data: Path | None) -> None:
    if data is None or not Path(data).is_dir():
        raise SystemExit(f"bench: {data}: no such folder. This benchmark's workload is the PBC val split "
                         "(DATA/<class>/*.jpg; the project keeps it at ../shared/data/pbc/val). "
                         "Give --data FOLDER, or --synthetic N for made-up images.")


# ---- Settings ----------------------------------------------------------------------------------------

def _value(name: str, text: str, kind: type):
    if kind is bool:
        low = text.strip().lower()
        if low not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
            raise SystemExit(f"bench: {name}={text!r}: give true or false")
        return low in ("true", "1", "yes", "on")
    try:
        return kind(text)
    except ValueError:
        raise SystemExit(f"bench: {name}={text!r}: not {kind.__name__}") from None


def parse_setting(text: str, knobs: dict[str, type] | None = None) -> tuple[str, dict, dict]:
    """'default' -> ('default', {}, {}); 'NAME:opt=v,opt=v' -> (NAME, options, knobs): options of
    shared/options.py (checked as the CLI checks them), and the caller's own `knobs` (name -> type)."""
    knobs = knobs or {}
    name, _, rest = text.partition(":")
    name = name.strip()
    if not name:
        raise SystemExit(f"bench: --setting {text!r}: give NAME or NAME:opt=value,...")
    opts, extra = {}, {}
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, eq, val = item.partition("=")
        key = key.strip().replace("-", "_")
        if not eq:
            raise SystemExit(f"bench: --setting {text!r}: {item!r} is not opt=value")
        if key in OPTIONS:
            opts[key] = None if (OPTIONS[key].default is None and val.strip().lower() == "default") else _value(key, val, OPTIONS[key].kind)
        elif key in knobs:
            extra[key] = _value(key, val, knobs[key])
        else:
            allowed = list(OPTIONS) + list(knobs)
            raise SystemExit(f"bench: --setting {text!r}: unknown option {key!r}; the options are {', '.join(allowed)}")
    try:
        InpaintOptions(**opts).check(OWN_MACHINE)
    except OptionError as exc:
        raise SystemExit(f"bench: --setting {text!r}: {exc}") from None
    return name, opts, extra


def cli_flags(opts: dict) -> list[str]:
    """Options -> `cellpaint inpaint` flags (booleans as --x / --no-x)."""
    flags = []
    for k, v in opts.items():
        flag = k.replace("_", "-")
        if OPTIONS[k].kind is bool:
            flags.append(f"--{flag}" if v else f"--no-{flag}")
        elif v is not None:
            flags += [f"--{flag}", str(v)]
    return flags


# ---- The machine -------------------------------------------------------------------------------------

def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or "unknown"


def machine(env: dict | None = None) -> dict:
    """The CPU (lscpu's model name), the cores this process may use, RAM, and torch's version and
    threads as a child with `env` sees them."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    mem = None
    if Path("/proc/meminfo").exists():
        mem = round(int(Path("/proc/meminfo").read_text().split()[1]) / 2**20, 1)
    probe = ("import json, torch; print(json.dumps({'torch': torch.__version__, 'threads': torch.get_num_threads(), "
             "'interop_threads': torch.get_num_interop_threads()}))")
    try:
        t = json.loads(subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True,
                                      timeout=300).stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError):
        t = {"torch": None, "threads": None, "interop_threads": None}
    return {"cpu": cpu_model(), "cores": cores, "ram_gib": mem, "python": platform.python_version(),
            "os": f"{platform.system()} {platform.release()}", **t}


def child_env(threads: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


# ---- One timed run -----------------------------------------------------------------------------------

def timed_child(cmd: list[str], env: dict, log: Path) -> dict:
    """Runs `cmd`; its wall time, peak RSS (os.wait4's ru_maxrss: this child alone), exit code, and
    when each line of its stdout arrived (the CLI prints a line per pair written)."""
    stamps = []
    with log.open("w") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=err, text=True, cwd=ROOT)
        for _ in proc.stdout:
            stamps.append(time.perf_counter() - t0)
        proc.stdout.close()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    rss = usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024)  # bytes on macOS, KiB on Linux
    return {"rc": proc.returncode, "wall_s": round(wall, 3), "peak_rss_mib": round(rss / 2**20, 1), "peak_rss_bytes": rss,
            "first_output_s": round(stamps[0], 3) if stamps else None, "last_output_s": round(stamps[-1], 3) if stamps else None,
            "lines": len(stamps)}


def run_as_job(pairs_dir: str, out: str, options: str, weights: str | None, texture_weights: str | None, device: str) -> int:
    """The child of --runner job: every pair in one `inpaint_many` call, as gpu_job/job.py runs a
    manifest (the windows planned here, where ingest plans them for the job)."""
    from gpu_job.inpainter.inpaint import Inpainter
    from shared.imaging.images import load_image, load_mask, save_png
    from shared.pipeline.pairs import find_pairs

    opts = InpaintOptions.from_dict(json.loads(options), OWN_MACHINE)
    found, _ = find_pairs(pairs_dir)
    loaded = [(img, (load_image(str(img)), load_mask(str(msk)))) for img, msk in found]
    inp = Inpainter(weights, device, texture_weights=texture_weights)
    if opts.texture:
        inp.texturer()
    results = inp.inpaint_many([p for _, p in loaded], opts)
    for (img, _), res in zip(loaded, results):
        path = Path(out) / f"{img.name[: -len(img.suffix)]}.png"
        save_png(res.image, path)
        print(path, flush=True)
    return 0


def command(a, pairs_dir: Path, out: Path, opts: dict) -> list[str]:
    if a.runner == "job":
        cmd = [sys.executable, str(Path(__file__).resolve()), "--as-job", str(pairs_dir), "--job-out", str(out),
               "--job-options", json.dumps(opts), "--device", a.device]
    else:
        cmd = [sys.executable, "-m", "cellpaint", "inpaint", "--pairs", str(pairs_dir), "-o", str(out), "--device", a.device,
               *cli_flags(opts)]
    if a.weights:
        cmd += ["--weights", str(a.weights)]
    if a.texture_weights:
        cmd += ["--texture-weights", str(a.texture_weights)]
    return cmd


# ---- Report ------------------------------------------------------------------------------------------

def markdown(rep: dict) -> str:
    m, w = rep["machine"], rep["workload"]
    sizes = ", ".join(f"{x[1]}x{x[0]}" for x in w.get("sizes_hw", [w["size_hw"]]))
    sizes = f" of {sizes} px" if len(w.get("sizes_hw", [])) <= 1 else f" of {sizes} px, mostly {w['size_hw'][1]}x{w['size_hw'][0]}"
    src = f"PBC val ({w['data']})" if w["source"] == "pbc" else "synthetic cell-like images (no PBC data)"
    lines = [f"`scripts/bench_speed.py`, {rep['date']}: {w['pairs']} pairs ({w['distinct_images']} images{sizes}, "
             f"{src}; masks {', '.join(f'{k} {v}' for k, v in w['kinds'].items())}, cover {w['cover']['min']:.1%}-{w['cover']['max']:.1%}, "
             f"median {w['cover']['median']:.1%}); runner `{rep['runner']}`, median of {rep['repeats']} runs, model load included.", "",
             f"Machine: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB; Python {m['python']}, torch {m['torch']}, "
             f"{m['threads']} torch threads.", "",
             "| setting | options | median wall s | pairs/s | x first | first output s | steady pairs/s | peak RSS MiB |",
             "|---|---|---|---|---|---|---|---|"]
    for s in rep["settings"]:
        opts = ", ".join(f"{k}={v}" for k, v in s["options"].items()) or "(defaults)"
        steady = f"{s['steady_pairs_per_s']:.2f}" if s.get("steady_pairs_per_s") else "-"
        first = f"{s['first_output_s']:.1f}" if s.get("first_output_s") else "-"
        lines.append(f"| {s['name']} | {opts} | {s['median_wall_s']:.2f} | {s['pairs_per_s']:.3f} | {s['ratio_to_first']:.2f} | {first} | "
                     f"{steady} | {s['peak_rss_mib']:.0f} |")
    under = ", ".join(f"{s['name']} " + ("yes" if s["under_2gb"] else "NO") for s in rep["settings"])
    lines += ["", "- pairs/s: pairs over the median wall time of the whole child (start, imports, model load, every pair written).",
              "- x first: this setting's pairs/s over the first setting's.",
              "- first output / steady: when the first pair was written, and pairs/s after it (the CLI's steady rate, load excluded).",
              f"- peak RSS: the child's maximum resident memory (os.wait4), the largest of the runs; "
              f"under 2 GB for {w['pairs']} pairs: {under}."]
    return "\n".join(lines) + "\n"


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--setting", action="append", default=[], metavar="NAME[:OPT=V,...]",
                    help="a setting to time (repeatable; default: default); the first is the ratios' reference")
    ap.add_argument("--repeats", type=int, default=3, help="runs per setting; the median is reported")
    ap.add_argument("--pairs-count", type=int, help="pairs in the job (default: one per image, 32 for PBC); more cycle the images")
    ap.add_argument("--data", type=Path, default=DATA, help="PBC val folder of class subfolders (default: ../shared/data/pbc/val)")
    ap.add_argument("--per-class", type=int, default=PER_CLASS, help="images per class")
    ap.add_argument("--synthetic", type=int, metavar="N", help="N synthetic cell-like images instead of the data")
    ap.add_argument("--size", type=int, nargs=2, default=list(PBC_SIZE), metavar=("H", "W"), help="synthetic images' size")
    ap.add_argument("--seed", type=int, default=SEED, help="seed of the masks")
    ap.add_argument("--threads", type=int, default=2, help="torch threads of the child (OMP_NUM_THREADS, MKL_NUM_THREADS)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    ap.add_argument("--runner", default="cli", choices=["cli", "job"],
                    help="cli: `cellpaint inpaint --pairs`; job: one inpaint_many over every pair, as the Batch job does")
    ap.add_argument("--weights", type=Path, help="first-stage weights (default: the shipped ones)")
    ap.add_argument("--texture-weights", type=Path, help="texture-stage weights (default: the shipped ones)")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_speed", help="folder for bench_speed.json and .md")
    ap.add_argument("--keep", action="store_true", help="keep the pairs and the last run's outputs (under --out/work)")
    ap.add_argument("--as-job", help=argparse.SUPPRESS)
    ap.add_argument("--job-out", help=argparse.SUPPRESS)
    ap.add_argument("--job-options", default="{}", help=argparse.SUPPRESS)
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = parser()
    a = ap.parse_args(argv)
    if a.as_job:
        return run_as_job(a.as_job, a.job_out, a.job_options, a.weights and str(a.weights), a.texture_weights and str(a.texture_weights), a.device)
    if a.repeats < 1:
        ap.error("--repeats must be >= 1")
    settings = [parse_setting(s) for s in (a.setting or ["default"])]
    if len({n for n, _, _ in settings}) != len(settings):
        ap.error("two settings share a name")

    if not a.synthetic:
        require_data(a.data)
    a.out.mkdir(parents=True, exist_ok=True)
    work = a.out / "work" if a.keep else Path(tempfile.mkdtemp(prefix="bench-speed-", dir=a.out))
    shutil.rmtree(work, ignore_errors=True)
    pairs_dir = work / "pairs"
    try:
        workload = make_pairs(pairs_dir, a.pairs_count, a.data, a.synthetic, tuple(a.size), a.seed, a.per_class)
        env = child_env(a.threads)
        mach = machine(env)
        print(f"machine: {mach['cpu']}, {mach['cores']} cores, {mach['ram_gib']} GiB RAM; Python {mach['python']}, "
              f"torch {mach['torch']}, {mach['threads']} torch threads", flush=True)
        print(f"workload: {workload['pairs']} pairs ({workload['source']}), masks {workload['kinds']}, cover {workload['cover']}", flush=True)
        rows = []
        for name, opts, _ in settings:
            runs = []
            for r in range(a.repeats):
                out = work / "out" / name
                shutil.rmtree(out, ignore_errors=True)
                cmd = command(a, pairs_dir, out, opts)
                res = timed_child(cmd, env, a.out / f"{name}.log")
                if res["rc"] != 0 or res["lines"] != workload["pairs"]:
                    tail = (a.out / f"{name}.log").read_text(errors="replace")[-2000:]
                    raise SystemExit(f"bench: setting {name}: exit {res['rc']}, {res['lines']} of {workload['pairs']} pairs written:\n"
                                     f"{' '.join(cmd)}\n{tail}")
                runs.append(res)
                print(f"{name} run {r + 1}/{a.repeats}: {res['wall_s']:.2f} s, peak RSS {res['peak_rss_mib']:.0f} MiB", flush=True)
            med = statistics.median(x["wall_s"] for x in runs)
            # The CLI writes a chunk of batch_size // samples pairs at once; after the first chunk is the steady rate.
            chunk = max(1, CLI_BATCH // InpaintOptions(**opts).samples) if a.runner == "cli" else workload["pairs"]
            steady = None
            if workload["pairs"] > chunk:
                steady = statistics.median((workload["pairs"] - chunk) / max(x["last_output_s"] - x["first_output_s"], 1e-9) for x in runs)
            peak = max(x["peak_rss_bytes"] for x in runs)
            rows.append({"name": name, "options": opts, "flags": cli_flags(opts), "command": command(a, Path("PAIRS"), Path("OUT"), opts),
                         "runs": runs, "median_wall_s": med, "pairs_per_s": workload["pairs"] / med,
                         "first_output_s": statistics.median(x["first_output_s"] for x in runs), "steady_pairs_per_s": steady,
                         "peak_rss_mib": round(peak / 2**20, 1), "under_2gb": peak < 2 * GB})
        for r in rows:
            r["ratio_to_first"] = r["pairs_per_s"] / rows[0]["pairs_per_s"]
        rep = {"benchmark": "bench_speed", "date": datetime.date.today().isoformat(), "machine": mach, "workload": workload,
               "runner": a.runner, "device": a.device, "threads": a.threads, "repeats": a.repeats, "argv": sys.argv[1:] if argv is None else argv,
               "settings": rows}
        (a.out / "bench_speed.json").write_text(json.dumps(rep, indent=1) + "\n")
        md = markdown(rep)
        (a.out / "bench_speed.md").write_text(md)
        print("\n" + md)
        print(f"wrote {a.out / 'bench_speed.json'} and {a.out / 'bench_speed.md'}")
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
