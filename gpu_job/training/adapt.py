"""`cellpaint adapt`: the shipped model taught a lab's own microscope from the lab's ordinary,
unmasked images. No labels: every photo is training data (random windows at the pipeline's own
scale, random masks of the kinds people draw, domain augmentation), through the same training
loop and first stage as `cellpaint train` (fields alone, or with `--replay` cells of the base's
training set beside them).

It measures itself before writing: part of the lab's photos is held back (shared/imaging/photos
split), and on them, with masks like users draw (a blob, a box, strokes), it scores the base
model, the adapted model (each alone: no classical share; the adapted one at each of TEMPERATURES,
keeping the best as its own) and biharmonic. An adapted model that
is not better than the base is not written unless asked (`force`). The record beside the weights
says what went in (base model, photos, steps, minutes, device), what came out, and carries the
lab's own colour reference and out-of-distribution calibration, so that the lab's images are
neither recoloured toward PBC's nor flagged as unlike the training images.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from gpu_job.data.metrics import masked_psnr
from gpu_job.inpainter.classical import biharmonic
from gpu_job.inpainter.inpaint import Inpainter
from gpu_job.inpainter.weights import default_weights, read_config
from shared.errors import InputError
from shared.imaging.images import load_image
from shared.imaging.masks import USER_KINDS, user_mask
from shared.imaging.photos import list_photos, split
from shared.imaging.scale import auto_window, cell_px
from shared.options import TEMPERATURE, InpaintOptions

from .first_stage import TrainConfig, train

MIN_IMAGES = 20  # fewer photos teach too little and leave too few to measure on
# The temperatures an adapted model is measured at: the PBC model's, and the deterministic DDIM path
# from zero noise, which scored +0.18 dB for a lab's model over another lab's white cells.
TEMPERATURES = (TEMPERATURE, 0.0)


@dataclass
class AdaptConfig:
    images: list[str]  # folders or files of the lab's unmasked photos
    out: str  # LAB.safetensors (LAB.json is written beside it)
    base: str | None = None  # weights to start from (default: the shipped ones)
    minutes: float = 10.0  # the whole command: loading, training and the held-back measurement
    device: str = "auto"
    replay: str | None = None  # class folders of the base's training set, mixed in so that it is not forgotten
    hold_every: int = 5  # every n-th photo is held back for measuring
    batch_size: int = 16
    # A lab's model serves the lab's own photos only, so it learns them as the lab's microscope
    # shows them (clean: turns and flips, no domain augmentation), at twice the learning rate of a
    # PBC fine-tune. On BCCD photos, --minutes 14 on 2 CPU cores: 30.79 -> 31.10 dB on 34 x 3
    # held-back pairs against lr 1e-4 and clean 0.4 (BENCHMARKS.md, a lab's own model).
    lr: float = 2e-4
    clean: float = 1.0
    # A lab's whole fields show few white cells, which users mask most: 30 % of rows are cut around
    # one (gpu_job/data/fields.py). On 130 BCCD photos, 10 minutes: +0.20 dB over its white-cell crops
    # and +0.09 on its own held-back photos against none (BENCHMARKS.md, a lab's own model).
    cell_share: float = 0.3
    # >0: the sampler loss beside the epsilon loss (first_stage.TrainConfig.sampler_loss). Measured and
    # not adopted: +0.45 dB on another lab's white-cell crops at equal steps, but a step costs 3.7 plain
    # ones on 2 CPU cores, and at equal minutes it scores within the spread of plain runs (BENCHMARKS.md).
    sampler_loss: float = 0.0
    threads: int = 2
    workers: int | None = None  # processes drawing batches (loop.batch_workers; None: on a GPU the spare cores)
    force: bool = False  # write even if the adapted model is not better than the base
    measure_images: int = 12  # held-back photos measured (3 masks each)
    max_steps: int = 1_000_000  # the time budget ends a run first, but on a fast GPU a step count may
    seed: int = 0


@dataclass
class Adapted:
    written: bool
    scores: dict = field(default_factory=dict)  # method -> {kind: mean masked PSNR}
    record: dict = field(default_factory=dict)


def _why_not(path: str) -> str | None:
    """Why a file is no photo to learn from (a mask uploaded by mistake, an unreadable file, a
    photo with no cells in it), or None for a usable one."""
    if path.lower().endswith(".mask.png"):
        return f"{path}: a mask, not a photo (adapt learns from unmasked images only)"
    try:
        img = load_image(path)
    except InputError as exc:
        return str(exc)
    if len(np.unique(img[::4, ::4].reshape(-1, 3), axis=0)) <= 2:
        return f"{path}: two colours only; it looks like a mask, not a photo"
    if cell_px(img) is None:
        return f"{path}: no cells found (a blank field, or not a blood smear)"
    return None


def check_photos(sources: list[str], workers: int | None = None) -> tuple[list[Path], list[str]]:
    """The usable photos, and one message per file left out. Too few usable photos is an error.
    Checked in worker processes (decoding and the cell-size estimate are most of a GPU run's fixed cost)."""
    files = list_photos(sources)
    with ProcessPoolExecutor(workers or min(8, os.cpu_count() or 1)) as pool:
        why = list(tqdm(pool.map(_why_not, map(str, files), chunksize=4), total=len(files), desc="checking photos", leave=False))
    usable = [f for f, w in zip(files, why) if w is None]
    skipped = [w for w in why if w is not None]
    if len(usable) < MIN_IMAGES:
        raise InputError(", ".join(map(str, sources)), f"{len(usable)} usable photos, at least {MIN_IMAGES} are needed"
                         + (f" ({len(skipped)} left out: {skipped[0]})" if skipped else ""))
    return usable, skipped


def held_back_pairs(photos: list[Path], n: int, seed: int) -> list[tuple[np.ndarray, np.ndarray, str]]:
    """(image, mask, kind): each held-back photo with one mask of each kind."""
    out = []
    for i, f in enumerate(photos[:n]):
        img = load_image(str(f))
        window = auto_window(img, np.zeros(img.shape[:2], bool))
        rng = np.random.default_rng([seed, i])
        out += [(img, user_mask(rng, *img.shape[:2], window, k), k) for k in USER_KINDS]
    return out


def score(pairs, fills: list[np.ndarray]) -> dict[str, float]:
    rows = [(k, masked_psnr(img, out, m)) for (img, m, k), out in zip(pairs, fills)]
    by = {k: float(np.mean([p for kk, p in rows if kk == k])) for k in USER_KINDS}
    return {**by, "all": float(np.mean([p for _, p in rows]))}


def measure(pairs, models: dict, device: str, classical: bool = True, clock: dict | None = None) -> dict:
    """Masked PSNR of each model alone (no classical share, no guard), and of biharmonic. `models`:
    name -> (weights, temperature; None = the weights' own). Each weights file is loaded once.
    `clock` gets "fills_s": the seconds one model's fills of all pairs take once loaded and warm."""
    out, loaded = {}, {}
    for name, (path, temperature) in models.items():
        if path not in loaded:
            loaded[path] = Inpainter(path, device)
        inp = loaded[path]
        alone = InpaintOptions(fallback=0.0, guard=False, temperature=temperature)
        fills, times = [], []
        for i in tqdm(range(0, len(pairs), 8), desc=f"measuring {name}", leave=False):
            t = time.time()
            fills += [r.image for r in inp.inpaint_many([(img, m) for img, m, _ in pairs[i:i + 8]], alone)]
            times.append(time.time() - t)
        out[name] = score(pairs, fills)
        if clock is not None:
            # The first batch pays a GPU's start-up (tens of seconds, once a process): the pace is the rest's.
            clock["fills_s"] = float(np.mean(times[1:] if len(times) > 1 else times) * len(times))
    if classical:
        out["biharmonic"] = score(pairs, [biharmonic(img, m) for img, m, _ in pairs])
    return out


def calibrate_ood(photos: list[Path], weights: str, device: str, seed: int) -> dict:
    """The lab's own out-of-distribution calibration: the slide light of its photos, and
    thresholds no lower than the shipped ones that its own windows stay under (99th percentile)."""
    from shared.imaging import colour
    from shared.imaging.windows import prepare

    inp = Inpainter(weights, device)
    scorer = inp.ood_scorer()
    if scorer is None:
        return {}
    fields, known = [], []
    for i, f in enumerate(photos[:40]):
        img = load_image(str(f))
        window = auto_window(img, np.zeros(img.shape[:2], bool))
        m = user_mask(np.random.default_rng([seed, 1000 + i]), *img.shape[:2], window, USER_KINDS[i % 3])
        for w in prepare(img, m, window, inp.size):
            fields.append(w.prep.image)
            known.append(~w.prep.mask)
    fields, known = np.stack(fields), np.stack(known)
    shipped = scorer.record
    bg = np.stack([colour.background(f[k]) for f, k in zip(fields, known)])  # the slide's light, as colour.reference measures it
    # Never narrower than the training set's own spread: a lab's photos may be more alike than PBC's.
    light = {"median": np.median(bg, 0).tolist(), "spread": np.maximum(bg.std(0), shipped["colour"]["background"]["spread"]).tolist()}
    scorer.light = light
    c, feat = scorer.distances(fields, known)
    thresholds = {"colour": max(shipped["thresholds"]["colour"], float(np.percentile(c, 99))),
                  "feature": max(shipped["thresholds"]["feature"], float(np.percentile(feat, 99)))}
    return {"colour": {"background": light}, "thresholds": thresholds,
            "calibration": f"the lab's own photos: {len(fields)} windows of {min(40, len(photos))} photos (99th percentile)"}


def adapt(cfg: AdaptConfig) -> Adapted:
    t0 = time.time()
    # Where the budget goes (seconds per phase, in the record and printed): on a GPU the phases
    # around training, not training, decide whether the command fits its minutes.
    phases, tick = {}, [t0]

    def lap(name: str) -> None:
        now = time.time()
        phases[name] = round(now - tick[0], 1)
        tick[0] = now

    base = str(cfg.base or default_weights())
    photos, skipped = check_photos(cfg.images)
    for msg in skipped:
        print(f"skipped {msg}")
    train_photos, held = split(photos, cfg.hold_every)
    if len(held) < 3:
        raise InputError(", ".join(cfg.images), f"{len(held)} photos held back for measuring; hold back more (--hold-every)")
    pairs = held_back_pairs(held, cfg.measure_images, cfg.seed)
    lap("checking photos")
    # The base is measured first, so that the clock says what measuring costs on this device.
    clock = {}
    base_scores = measure(pairs, {"base": (base, None)}, cfg.device, clock=clock)
    lap("measuring the base")
    # Kept back for after training: the adapted model's fills at each temperature, at the pace the
    # base's took once warm (a GPU's start-up is paid once), the flag's calibration and writing.
    reserve_s = 1.25 * len(TEMPERATURES) * clock["fills_s"] + 5 + 0.03 * cfg.minutes * 60
    train_minutes = (cfg.minutes * 60 - (time.time() - t0) - reserve_s) / 60
    if train_minutes < 0.5:
        raise ValueError(f"--minutes {cfg.minutes:g} leaves {train_minutes:.1f} min for training after measuring; give more")
    run = Path(tempfile.mkdtemp(prefix="cellpaint-adapt-"))
    try:
        tc = TrainConfig(data=cfg.replay, val_data=None, fields=tuple(map(str, photos)), hold_every=cfg.hold_every, field_share=0.75,
                         init=base, out=str(run), batch_size=cfg.batch_size, lr=cfg.lr, clean=cfg.clean, warmup_steps=20, max_minutes=train_minutes, max_steps=cfg.max_steps,
                         deadline=t0 + cfg.minutes * 60 - reserve_s, measure_held_back=False,
                         ckpt_minutes=train_minutes + 1, threads=cfg.threads, workers=cfg.workers, device=cfg.device,
                         seed=cfg.seed, cell_share=cfg.cell_share, sampler_loss=cfg.sampler_loss)
        train(tc)
        lap("training")
        adapted = run / "last.safetensors"
        rec = read_config(adapted)
        steps = rec["training"]["segments"][-1]["steps"] if rec["training"].get("segments") else rec["training"]["steps"]
        rec["adapt"] = {
            "base_sha256": read_config(base).get("sha256"), "images": len(photos), "held_back": len(held),
            "images_sha256": hashlib.sha256("\n".join(sorted(p.name for p in photos)).encode()).hexdigest(),
            "skipped": len(skipped), "steps": steps, "device": rec["training"]["machine"], "replay": cfg.replay}
        # Measured as the lab will use it: a lab's model (the record says so) draws no grain nor texture stage.
        adapted.with_suffix(".json").write_text(json.dumps(rec, indent=2) + "\n")
        # The adapted model at each candidate temperature: the one that scores best on the held-back
        # photos becomes its own (a lab's model samples its own microscope; BENCHMARKS.md).
        by_t = measure(pairs, {t: (str(adapted), t) for t in TEMPERATURES}, cfg.device, classical=False)
        best = max(TEMPERATURES, key=lambda t: by_t[t]["all"])
        adapted_scores = {"adapted": by_t[best]}
        rec["sampling"] = {"temperature": best, "held_back_psnr": {str(t): round(by_t[t]["all"], 2) for t in TEMPERATURES}}
        lap("measuring the adapted model")
        scores = {"base": base_scores["base"], **adapted_scores, "biharmonic": base_scores["biharmonic"]}
        rec["adapt"]["held_back_psnr"] = {k: {kk: round(v, 2) for kk, v in s.items()} for k, s in scores.items()}
        rec["ood"] = calibrate_ood(train_photos, str(adapted), cfg.device, cfg.seed)
        lap("calibrating the flag")
        rec["adapt"].update(minutes=round((time.time() - t0) / 60, 2), phases_s=phases)
        gain = scores["adapted"]["all"] - scores["base"]["all"]
        report(scores)
        print("the adapted model samples at temperature " + f"{best:g} (held-back photos, all: "
              + ", ".join(f"{v:.2f} dB at {t}" for t, v in rec["sampling"]["held_back_psnr"].items()) + ")")
        print("seconds: " + ", ".join(f"{k} {v:g}" for k, v in phases.items()))
        write = should_write(scores, cfg.force)
        if write:
            out = Path(cfg.out)
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(adapted, out)
            out.with_suffix(".json").write_text(json.dumps(rec, indent=2) + "\n")
            print(f"wrote {out} and {out.with_suffix('.json')}: {gain:+.2f} dB over the base model on {len(held)} held-back photos")
        else:
            print(f"not written: the adapted model is {gain:+.2f} dB against the base on the held-back photos (--force writes it anyway)")
        return Adapted(write, scores, rec)
    finally:
        shutil.rmtree(run, ignore_errors=True)


def should_write(scores: dict, force: bool = False) -> bool:
    """Only a model better than the base on the lab's held-back photos replaces it, unless forced."""
    return force or scores["adapted"]["all"] > scores["base"]["all"]


def report(scores: dict) -> None:
    print("masked PSNR (dB) on the held-back photos:")
    print(f"{'':12s}" + "".join(f"{k:>9s}" for k in (*USER_KINDS, "all")))
    for name, s in scores.items():
        print(f"{name:12s}" + "".join(f"{s[k]:9.2f}" for k in (*USER_KINDS, "all")))
