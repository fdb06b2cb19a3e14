"""`cellpaint evaluate`: quality inside the mask against classical baselines, and speed.

Masks are deterministic (shared.imaging.masks.eval_masks, seeded by image index) and drawn at each
image's original size; every method's output is composited the same way and scored on the
original pixels. Outside the mask the error must be exactly 0 for every method.
"""
from __future__ import annotations

import json
import re
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from shared.imaging.images import load_image, save_png
from shared.imaging.masks import eval_masks
from shared.imaging.preview import grid, overlay

from gpu_job.inpainter.inpaint import Inpainter
from gpu_job.data.cells import list_images
from shared.options import OPTIONS, InpaintOptions

from gpu_job.data.metrics import masked_metrics

DEFAULT_STEPS = OPTIONS["steps"].default


DEFAULT = "cellpaint default"
FULL_DDPM = "cellpaint DDPM-1000"  # 1000 model calls a sample: scored on a subset of the images
TRUTH = "truth"  # a variant's label=truth: each image is told its own class, the most `label=auto` could give


def told(opts: InpaintOptions, classes: list[str | None]) -> InpaintOptions | list[InpaintOptions]:
    """`opts`, or with label=truth one copy per pair told its class (none where it has no known class)."""
    if opts.label != TRUTH:
        return opts
    return [replace(opts, label=c or "none") for c in classes]


@dataclass
class EvalConfig:
    data: str = "../shared/data/pbc/val"
    out: str = "runs/eval"  # holds val-derived pictures: never commit it (data licence rule)
    weights: str | None = None
    per_class: int = 4  # val images per class (8 classes x 6 masks each)
    steps: tuple[int, ...] = (5, 10, 25, 50)  # DDIM settings to score, one sample each
    mean_of: int = 8  # also score the mean of this many DDIM samples (the first stage alone), with and without the seam fix; 1 = skip
    ddpm: bool = True  # DDPM-1000, on the first image of each class, at most `ddpm_images`
    ddpm_images: int = 8
    ddpm_steps: tuple[int, ...] = ()  # ancestral (DDPM) sampling strided to these step counts, one sample each, every pair
    ddpm_mean_steps: tuple[int, ...] = ()  # the same, the mean of `mean_of` samples with the seam fix (the default's shape)
    speed: bool = True
    device: str = "auto"
    seed: int = 0
    texture: str | None = None  # texture-stage weights (texture.py) for every row that uses the texture stage (None: the shipped ones)
    no_texture: bool = False  # the default row without the texture stage
    variants: dict = field(default_factory=dict)  # name -> options over the defaults: the whole pipeline (texture stage included), scored like the rest


def baselines() -> dict:
    import cv2

    from gpu_job.inpainter.classical import biharmonic, classical_fill

    def mean_fill(img, m):
        out = img.copy()
        out[m] = img[~m].mean(axis=0).round().astype(np.uint8)
        return out

    def cv(flag):
        return lambda img, m: cv2.inpaint(img, m.astype(np.uint8) * 255, 5, flag)

    return {"mean colour": mean_fill, "OpenCV Telea": cv(cv2.INPAINT_TELEA), "OpenCV NS": cv(cv2.INPAINT_NS),
            "biharmonic": biharmonic, "harmonic + biharmonic": classical_fill}


def _keep_outside(img, m, out):
    """Every method is composited identically: only masked pixels may change."""
    res = img.copy()
    res[m] = out[m]
    return res


def evaluate(cfg: EvalConfig) -> dict:
    out_dir = Path(cfg.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    files, classes = list_images(Path(cfg.data))
    chosen = [f for c in classes for f in [f for f in files if f.parent.name == c][: cfg.per_class]]
    cases = []  # (image index, file, kind, image, mask)
    for i, f in enumerate(chosen):
        img = load_image(str(f))
        for kind, m in eval_masks(*img.shape[:2], seed=i).items():
            cases.append((i, f, kind, img, m))
    inp = Inpainter(cfg.weights, cfg.device, texture_weights=cfg.texture)
    methods = method_options(cfg)
    # DDPM-1000 is 1000 model calls: score it on the first image of each class (up to ddpm_images).
    ddpm_set = set(range(0, len(chosen), cfg.per_class)[: cfg.ddpm_images])
    rows, outputs, timing = [], {}, {}
    for name, opts in methods.items():
        sub = [c for c in cases if name != FULL_DDPM or c[0] in ddpm_set]
        t0 = time.time()
        res = []
        for i in tqdm(range(0, len(sub), inp.batch_size), desc=name):
            part = sub[i : i + inp.batch_size]
            res += inp.inpaint_many([(c[3], c[4]) for c in part], told(opts, [c[1].parent.name for c in part]))
        timing[name] = (time.time() - t0) / len(sub)
        for c, r in zip(sub, res):
            rows.append({"method": name, "image": c[0], "kind": c[2], **masked_metrics(c[3], r.image, c[4])})
            outputs[(name, c[0], c[2])] = r.image
    for name, fn in baselines().items():
        t0 = time.time()
        for c in tqdm(cases, desc=name):
            r = _keep_outside(c[3], c[4], fn(c[3], c[4]))
            rows.append({"method": name, "image": c[0], "kind": c[2], **masked_metrics(c[3], r, c[4])})
            outputs[(name, c[0], c[2])] = r
        timing[name] = (time.time() - t0) / len(cases)
    report = {"config": asdict(cfg), "machine": machine(inp.device), "images": [str(f) for f in chosen],
              "seconds_per_image": timing, "summary": summarise(rows), "rows": rows,
              "ddpm_subset": summarise([r for r in rows if r["image"] in ddpm_set]) if cfg.ddpm else None}
    if cfg.speed:
        report["speed"] = speed(inp, cfg)
    (out_dir / "metrics.json").write_text(json.dumps(report, indent=1, default=float) + "\n")
    (out_dir / "metrics.md").write_text(markdown(report))
    plot_quality(report, out_dir / "quality_vs_steps.png")
    shown = [DEFAULT] + [k for k in methods if k.endswith(f"mean of {cfg.mean_of}")]
    before_after_grid(cases, outputs, shown, out_dir / "before_after.png")
    print(markdown(report))
    return report


def method_options(cfg: EvalConfig) -> dict[str, InpaintOptions]:
    """Name -> options. Names matter: plot_quality reads the step count after "DDIM-"/"DDPM-".
    The default row is the whole pipeline as users get it; the rest are the first stage alone."""
    one = dict(samples=1, combine="first", seed=cfg.seed, texture=False)
    methods = {DEFAULT: InpaintOptions(seed=cfg.seed, texture=not cfg.no_texture and OPTIONS["texture"].default)}
    methods.update({f"cellpaint DDIM-{s}": InpaintOptions(steps=s, **one) for s in cfg.steps})
    if cfg.mean_of > 1:
        mean = dict(steps=DEFAULT_STEPS, samples=cfg.mean_of, combine="mean", seed=cfg.seed, texture=False)
        methods[f"cellpaint DDIM-{DEFAULT_STEPS} mean of {cfg.mean_of}"] = InpaintOptions(**mean)
        methods[f"cellpaint DDIM-{DEFAULT_STEPS} mean of {cfg.mean_of}, no seam fix"] = InpaintOptions(**mean, seam=False)
    methods.update({f"cellpaint DDPM-{s}": InpaintOptions(steps=s, sampler="ddpm", **one) for s in cfg.ddpm_steps})
    if cfg.mean_of > 1:
        methods.update({f"cellpaint DDPM-{s} mean of {cfg.mean_of}": InpaintOptions(steps=s, sampler="ddpm", samples=cfg.mean_of, combine="mean", seed=cfg.seed, texture=False)
                        for s in cfg.ddpm_mean_steps})
    methods.update({f"cellpaint {name}": InpaintOptions(**{"seed": cfg.seed, **o}) for name, o in cfg.variants.items()})
    if cfg.ddpm:
        methods[FULL_DDPM] = InpaintOptions(steps=1000, sampler="ddpm", **one)
    return methods


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name()} (torch {torch.__version__})"
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads (torch {torch.__version__})"


def summarise(rows: list[dict]) -> dict:
    out: dict = {}
    for r in rows:
        for key in (r["kind"].split("-")[0], "all"):
            d = out.setdefault(r["method"], {}).setdefault(key, {"psnr": [], "ssim": [], "mae": [], "detail": [], "max_err_outside": []})
            for m in d:
                d[m].append(r[m])
    return {meth: {k: {m: (max(v) if m == "max_err_outside" else float(np.nanmean(v))) for m, v in d.items()} | {"n": len(d["psnr"])}
                   for k, d in kinds.items()} for meth, kinds in out.items()}


def _cell(d: dict) -> str:
    return f"{d['psnr']:.2f} / {d['ssim']:.3f} / {d['mae']:.1f} (n={d['n']})"


def markdown(report: dict) -> str:
    s = report["summary"]
    kinds = [k for k in next(iter(s.values())) if k != "all"] + ["all"]
    lines = [f"Machine: {report['machine']}. Masks inside-mask metrics (PSNR dB / SSIM / MAE); n = pairs scored.", "",
             "| method | " + " | ".join(kinds) + " | s/image | max err outside |", "|---" * (len(kinds) + 3) + "|"]
    for meth, d in s.items():
        cells = [_cell(d[k]) if k in d else "-" for k in kinds]
        lines.append(f"| {meth} | " + " | ".join(cells) + f" | {report['seconds_per_image'][meth]:.3f} | {d['all']['max_err_outside']:.0f} |")
    lines += ["", "Fine detail inside the mask against the truth's (mean |Laplacian|; 1 = as much texture as the original):", "",
              "| method | " + " | ".join(kinds) + " |", "|---" * (len(kinds) + 1) + "|"]
    lines += [f"| {meth} | " + " | ".join(f"{d[k]['detail']:.2f}" if k in d else "-" for k in kinds) + " |" for meth, d in s.items()]
    if report.get("ddpm_subset"):
        sub = report["ddpm_subset"]
        lines += ["", "The same images DDPM-1000 was scored on (first image of each class), every method:", "",
                  "| method | " + " | ".join(kinds) + " |", "|---" * (len(kinds) + 1) + "|"]
        for meth, d in sub.items():
            lines.append(f"| {meth} | " + " | ".join(_cell(d[k]) if k in d else "-" for k in kinds) + " |")
    if "speed" in report:
        lines += ["", "| sampler | batch | images/s (median) | peak RSS MB |", "|---|---|---|---|"]
        for r in report["speed"]:
            lines.append(f"| {r['sampler']} | {r['batch']} | {r['images_per_s']:.2f} | {r['peak_mb']:.0f} |")
    return "\n".join(lines) + "\n"


def peak_reset() -> None:
    """Resets this process's peak resident memory (VmHWM, Linux), so each measurement gets its own peak."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_rss_mib() -> float | None:
    """This process's peak resident memory since start or the last peak_reset (None off Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def _peak_mb(device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    rss = peak_rss_mib()
    return float("nan") if rss is None else rss


def speed(inp: Inpainter, cfg: EvalConfig, repeats: int = 3) -> list[dict]:
    s = inp.size
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (s, s, 3), dtype=np.uint8)
    from shared.imaging.masks import random_mask

    m = random_mask(rng, s, s, "ellipse", 0.25)
    out = []
    settings = [("ddim", n, 1) for n in cfg.steps] + ([("ddim", DEFAULT_STEPS, cfg.mean_of)] if cfg.mean_of > 1 else [])
    settings += [("ddpm", 1000, 1)] if cfg.ddpm else []
    for sampler, steps, k in settings:
        for batch in (1, 16):
            opts = InpaintOptions(steps=steps, sampler=sampler, window=0, samples=k, texture=False)  # the first stage's model throughput
            reps = 1 if sampler == "ddpm" else repeats
            peak_reset()
            if inp.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            times = []
            for _ in range(reps):
                t0 = time.perf_counter()
                inp.inpaint_many([(img, m)] * batch, opts)
                if inp.device.type == "cuda":
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - t0)
            out.append({"sampler": f"{sampler.upper()}-{steps}" + (f" mean of {k}" if k > 1 else ""), "batch": batch, "images_per_s": batch / statistics.median(times),
                        "peak_mb": _peak_mb(inp.device), "repeats": reps})
            print(out[-1])
    return out


def plot_quality(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s, t = report["summary"], report["seconds_per_image"]
    ddim = sorted((int(k.split("-")[1]), k) for k in s if re.fullmatch(r"cellpaint DDIM-\d+", k))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, metric in zip(axes[:2], ("psnr", "ssim")):
        ax.plot([n for n, _ in ddim], [s[k]["all"][metric] for _, k in ddim], "o-", label="cellpaint DDIM")
        for k in s:
            if "cellpaint" in k and not re.search(r"-(\d+)", k):  # no step count to place it at: a line
                ax.axhline(s[k]["all"][metric], lw=1.5, color="k" if k == DEFAULT else f"C{list(s).index(k) % 8}", label=k)
            elif "cellpaint" in k and k not in dict(map(reversed, ddim)):
                ax.plot([int(re.search(r"-(\d+)", k).group(1))], [s[k]["all"][metric]], "s^vD"[list(s).index(k) % 4], label=k)
            elif "cellpaint" not in k:
                ax.axhline(s[k]["all"][metric], ls="--", lw=1, color=f"C{1 + list(s).index(k) % 8}", label=k)
        ax.set_xscale("log")
        ax.set_xlabel("sampler steps")
        ax.set_ylabel(f"{metric.upper()} inside mask")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    ax = axes[2]
    for k in s:
        ax.plot(t[k], s[k]["all"]["psnr"], "o" if "cellpaint" in k else "x")
        ax.annotate(k.replace("cellpaint ", ""), (t[k], s[k]["all"]["psnr"]), fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("seconds per image (batched, this machine)")
    ax.set_ylabel("PSNR inside mask")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def before_after_grid(cases, outputs, ours: list[str], path: Path, n: int = 6) -> None:
    """Rows: original | mask | Telea | biharmonic | each of `ours`, one row per mask kind."""
    rows, seen = [], set()
    for i, f, kind, img, m in cases:
        if kind in seen or len(rows) >= n:
            continue
        seen.add(kind)
        rows.append([img, overlay(img, m), outputs[("OpenCV Telea", i, kind)], outputs[("biharmonic", i, kind)]] + [outputs[(k, i, kind)] for k in ours])
    save_png(grid(rows, pad=4), path)
