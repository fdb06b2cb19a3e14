"""The one training loop both stages run: resume, warm-up, EMA, bf16 autocast, signals, atomic
checkpoints, `log.jsonl` and the loss plot. A stage (first_stage.py, texture_stage.py) brings its
data, its loss and what its checkpoint writes beside `ckpt.pt`.
"""
from __future__ import annotations

import copy
import json
import math
import os
import platform
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from tqdm import tqdm

from gpu_job.inpainter.diffusion import Diffusion, DiffusionConfig, training_loss
from gpu_job.inpainter.model import UNet, UNetConfig, count_params
from gpu_job.inpainter.weights import lineage, read_config, totals

from gpu_job.training.prefetch import Prefetch
from gpu_job.training.report import plot_history

CODE_VERSION = "0.1.0"
LOSS_READ_EVERY = 50  # CUDA: training losses are read back in groups, so the CPU can run ahead


@dataclass
class RunConfig:
    """What every training run has; each stage's config adds its own fields and defaults."""
    data: str = "../shared/data/pbc/train"
    val_data: str | None = "../shared/data/pbc/val"  # val loss picks the weights we ship
    out: str = "runs/train"
    init: str | None = None  # start from these weights (safetensors) instead of scratch
    batch_size: int = 32
    lr: float = 3e-4
    warmup_steps: int = 200
    max_steps: int = 1_000_000
    max_minutes: float = 60.0  # wall-clock budget; the run checkpoints and stops cleanly
    # Wall-clock time (time.time()) at which training stops whatever max_minutes says. A command with a
    # budget for all it does (`cellpaint adapt --minutes`) sets it, so that the run's own setup (loading
    # and windowing the photos: 8 s of 126 crops on 2 CPU cores) comes out of training, not over the budget.
    deadline: float | None = None
    ckpt_minutes: float = 15.0
    ema_decay: float = 0.999
    threads: int = 2  # torch intra-op threads; set deliberately, never oversubscribe 2 cores
    workers: int | None = None  # processes drawing batches (prefetch.py); None: batch_workers decides
    device: str = "auto"
    compile: bool = False
    seed: int = 0
    val_images: int = 256
    mirror: str | None = None  # s3://BUCKET/PREFIX: `out` is filled from it at the start and uploaded to at every checkpoint
    unet: UNetConfig = field(default_factory=UNetConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)


class Stage(Protocol):
    """What a stage gives the loop. Made after the run's config is settled (a resumed run or
    --init weights decide the architecture), before the model is built."""
    name: str  # the progress bar's label

    def draw(self, rng: np.random.Generator) -> tuple: ...  # one training batch as numpy arrays (a worker may draw it)
    def to_device(self, drawn: tuple) -> tuple: ...  # that batch on the device
    def loss(self, fwd, diff: Diffusion, batch: tuple) -> torch.Tensor: ...  # under autocast
    def val_loss(self, ema, diff: Diffusion, autocast_ctx) -> float: ...  # nan without val data
    def val_metrics(self, ema, diff: Diffusion) -> dict[str, float]: ...
    def save(self, out: Path, ema, diff: Diffusion, meta: dict, metrics: dict, improved: bool, step: int) -> list[str]: ...  # files written


@dataclass
class Run:
    """A run's state: what ckpt.pt holds."""
    step: int = 0
    seen: int = 0
    history: dict = field(default_factory=lambda: {"train": [], "val": []})
    best: float = math.inf
    elapsed_before: float = 0.0
    before: list = field(default_factory=list)  # the training segments of the --init weights (lineage)


@torch.no_grad()
def fixed_loss(model, diff, autocast_ctx, x, m, labels, t, noise, cond=None, chunk: int = 64) -> float:
    """The loss over a fixed set (its masks, t and noise drawn once), in chunks: comparable across
    checkpoints. `cond`: the texture stage's condition (texture_stage.py)."""
    total = 0.0
    for i in range(0, len(x), chunk):
        s = slice(i, i + chunk)
        with autocast_ctx():
            total += training_loss(model, diff, x[s], m[s], None if labels is None else labels[s], t=t[s], noise=noise[s],
                                   cond=None if cond is None else cond[s]).item() * len(x[s])
    return total / len(x)


def batch_workers(cfg: RunConfig, device: torch.device) -> int:
    """Processes drawing batches: on a GPU the spare cores (up to 8), since batches drawn by the
    training process kept an H200 waiting; on a CPU none, since the step needs every core."""
    if cfg.workers is not None:
        return cfg.workers
    return max(0, min(8, (os.cpu_count() or 1) - cfg.threads - 1)) if device.type == "cuda" else 0


def start_run(threads: int, device: str, out: str, seed: int) -> tuple[torch.device, Path]:
    """Threads set deliberately, the device chosen ("auto": CUDA when present), the run folder
    made, torch seeded."""
    torch.set_num_threads(threads)
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device))
    Path(out).mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    return dev, Path(out)


def settle_config(cfg: RunConfig, state: dict | None) -> None:
    """A resumed run's stored architecture wins over the command line; --init weights bring theirs."""
    if state:
        cfg.unet = UNetConfig(**state["config"]["unet"])
        cfg.diffusion = DiffusionConfig(**state["config"].get("diffusion", asdict(cfg.diffusion)))
    elif cfg.init:
        rec = read_config(cfg.init)
        cfg.unet, cfg.diffusion = UNetConfig(**rec["unet"]), DiffusionConfig(**rec["diffusion"])


def init_weights(path: str, model: UNet) -> dict:
    from safetensors.torch import load_file

    w = load_file(path)
    emb = getattr(model, "label_emb", None)
    if emb is not None and w["label_emb.weight"].shape != emb.weight.shape:
        # Fine-tuning on other classes: keep everything else; the "no label" row becomes the new
        # "no label" row, and every new class starts from it (the unconditional model).
        old = w["label_emb.weight"]
        w["label_emb.weight"] = old[-1:].expand(emb.weight.shape[0], -1).clone()
        print(f"--init: {len(old) - 1} classes in the weights, {emb.weight.shape[0] - 1} in the data: class embeddings start from 'no label'")
    return w


def _resume(cfg: RunConfig, state: dict | None, model, ema, opt) -> tuple[Run, np.random.Generator]:
    """The run's state and batch generator: a checkpoint's, else the --init weights' (their
    lineage kept), else a fresh start."""
    run = Run(before=lineage(read_config(cfg.init)) if cfg.init else [])
    if state:
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["opt"])
        run = Run(state["step"], state["images_seen"], state["history"], state["best_val"], state.get("elapsed_s", 0.0),
                  state.get("before", run.before))
        return run, np.random.default_rng([cfg.seed, run.step])  # not the first run's batches again
    if cfg.init:
        w = init_weights(cfg.init, model)
        model.load_state_dict(w)
        ema.load_state_dict(w)
    return run, np.random.default_rng(cfg.seed)


def train_loop(cfg: RunConfig, make_stage) -> Path:
    """Trains (or resumes) until max_steps, max_minutes or SIGTERM/SIGINT; checkpoints every
    ckpt_minutes of training and at the end. `make_stage(cfg, device)` -> Stage."""
    device, out = start_run(cfg.threads, cfg.device, cfg.out, cfg.seed)
    if cfg.mirror:  # a Batch job: resume from the run in S3 (a Spot reclaim loses at most one checkpoint interval)
        from gpu_job.training.remote import download_run

        print(f"{cfg.mirror}: {download_run(cfg.mirror, out)} files of an earlier attempt")
    ckpt_path = out / "ckpt.pt"
    # weights_only: a checkpoint is tensors and plain data, and loading must never run code from a crafted file.
    state = torch.load(ckpt_path, map_location="cpu", weights_only=True) if ckpt_path.exists() else None
    settle_config(cfg, state)
    stage = make_stage(cfg, device)  # data after the config: it may also set the number of classes

    # Plain NCHW everywhere. channels_last made a CPU step 6-9 % slower for this model, and on an H100
    # it gained 3 % eager but lost 12 % under torch.compile (docs/history.md, bench_train_step).
    model = UNet(cfg.unet).to(device)
    diff = Diffusion(cfg.diffusion).to(device)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    run, rng = _resume(cfg, state, model, ema, opt)
    print(f"{stage.name}: {count_params(model) / 1e6:.2f}M params on {device}; step {run.step}")

    ema_params, model_params = list(ema.parameters()), list(model.parameters())
    use_amp = device.type == "cpu" or torch.cuda.is_available()
    autocast_ctx = lambda: torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp)  # noqa: E731
    fwd = torch.compile(model) if cfg.compile else model
    start = time.time()
    stop_at = min(start + cfg.max_minutes * 60, cfg.deadline or math.inf)
    # Checkpoints come every `ckpt_minutes` of training, not of wall clock: a run paused with
    # SIGSTOP (to measure something else on the same cores) would otherwise checkpoint after every
    # pause. A step that took over a minute was paused, and counts as one second.
    active, last_ckpt, tick = 0.0, 0.0, time.time()
    bar = tqdm(total=cfg.max_steps, initial=run.step, desc=stage.name, dynamic_ncols=True)
    pending: list[tuple[int, torch.Tensor]] = []  # (images seen, loss) not yet read back from the device
    stop = []  # SIGTERM/SIGINT finish the step, checkpoint and exit: a stopped run loses nothing
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.append(1))

    def checkpoint() -> None:
        _checkpoint(cfg, out, stage, model, ema, opt, diff, run, run.elapsed_before + time.time() - start, autocast_ctx)

    # Workers draw from the step the run starts at: a resumed run draws new batches, as `rng` does.
    workers = batch_workers(cfg, device)
    prefetch = Prefetch(stage.draw, workers, [cfg.seed, run.step]) if workers else None
    try:
        while not stop and run.step < cfg.max_steps and time.time() < stop_at:
            batch = stage.to_device(prefetch.next() if prefetch else stage.draw(rng))
            for g in opt.param_groups:
                g["lr"] = cfg.lr * min(1.0, (run.step + 1) / cfg.warmup_steps)
            with autocast_ctx():
                loss = stage.loss(fwd, diff, batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            # EMA with warm-up: early on the average should follow the fast-moving weights.
            decay = min(cfg.ema_decay, (1 + run.step) / (10 + run.step))
            with torch.no_grad():
                torch._foreach_lerp_(ema_params, model_params, 1 - decay)  # one launch, not one per tensor
            run.step += 1
            run.seen += cfg.batch_size
            pending.append((run.seen, loss.detach()))
            bar.update(1)
            # Reading a loss waits for the GPU; on CUDA do it every LOSS_READ_EVERY steps, not every step.
            if device.type != "cuda" or len(pending) >= LOSS_READ_EVERY:
                left_s = stop_at - time.time()
                bar.total = bar_total(bar, cfg.max_steps, left_s)
                _read_losses(pending, run.history, bar, left_s)
            now = time.time()
            active, tick = active + (now - tick if now - tick < 60 else 1.0), now
            if active - last_ckpt > cfg.ckpt_minutes * 60:
                _read_losses(pending, run.history, bar)
                checkpoint()
                last_ckpt, tick = active, time.time()
    finally:
        if prefetch:
            prefetch.close()
    bar.close()
    _read_losses(pending, run.history, bar)
    checkpoint()
    return out


def bar_total(bar, max_steps: int, left_s: float) -> int:
    """The step the run will stop at: the time budget ends most runs long before max_steps, and a
    bar measured against max_steps would show 0 % and an ETA of days."""
    rate = bar.format_dict.get("rate")  # steps/s, smoothed; None until tqdm has timed a step
    return max_steps if not rate else min(max_steps, bar.n + int(rate * max(0.0, left_s)))


def _read_losses(pending: list, history: dict, bar, left_s: float | None = None) -> None:
    if pending:
        values = torch.stack([loss for _, loss in pending]).float().cpu().tolist()
        history["train"].extend((seen, v) for (seen, _), v in zip(pending, values))
        # The time budget, not the step count, ends most runs: the bar says how long is left.
        left = {} if left_s is None else {"left": f"{int(max(0, left_s)) // 60}:{int(max(0, left_s)) % 60:02d}"}
        bar.set_postfix(loss=f"{values[-1]:.4f}", **left)
        pending.clear()


def _checkpoint(cfg: RunConfig, out: Path, stage: Stage, model, ema, opt, diff, run: Run, elapsed: float, autocast_ctx) -> None:
    val_loss = stage.val_loss(ema, diff, autocast_ctx)
    try:
        metrics = stage.val_metrics(ema, diff)
    except Exception as exc:  # a measuring bug must not end an hours-long run; the val loss still picks the weights
        tqdm.write(f"checkpoint step {run.step}: val metrics failed: {type(exc).__name__}: {exc}")
        metrics = {}
    run.history["val"].append((run.seen, val_loss))
    if "psnr" in metrics and "ssim" in metrics:
        run.history.setdefault("metrics", []).append((run.seen, metrics["psnr"], metrics["ssim"]))
    improved = bool(np.isnan(val_loss) or val_loss < run.best)
    run.best = run.best if np.isnan(val_loss) else min(run.best, val_loss)
    record = {"config": {"unet": asdict(cfg.unet), "diffusion": asdict(cfg.diffusion)},
              "train_config": {k: v for k, v in asdict(cfg).items() if k not in ("unet", "diffusion")},
              "model": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(), "step": run.step, "images_seen": run.seen,
              "history": run.history, "best_val": run.best, "elapsed_s": elapsed, "code_version": CODE_VERSION, "before": run.before}
    torch.save(record, out / "ckpt.tmp")
    (out / "ckpt.tmp").replace(out / "ckpt.pt")  # atomic: a kill mid-save never loses the last checkpoint
    this = {"steps": run.step, "images_seen": run.seen, "batch_size": cfg.batch_size, "hours": round(elapsed / 3600, 3), "data": cfg.data,
            "machine": f"{platform.machine()} {torch.get_num_threads()} threads, {'cuda' if next(ema.parameters()).is_cuda else 'cpu'}"}
    segments = [*run.before, this]
    # steps, images seen and hours: totals over every segment; the rest: this run's
    training = {**this, **totals(segments), **({"segments": segments} if run.before else {})}
    meta = {"code_version": CODE_VERSION, "training": training, "val": {"loss": val_loss, "data": cfg.val_data}}
    written = stage.save(out, ema, diff, meta, metrics, improved, run.step)
    plot_history(run.history, out / "loss.png")
    entry = {"step": run.step, "images_seen": run.seen, "val_loss": val_loss, **{f"val_{k}": round(v, 4) for k, v in metrics.items()},
             "elapsed_s": round(elapsed), "improved": improved}
    with (out / "log.jsonl").open("a") as log:
        log.write(json.dumps(entry) + "\n")
    if cfg.mirror:
        from gpu_job.training.remote import upload_run

        upload_run(out, cfg.mirror, [*written, "loss.png", "log.jsonl", "ckpt.pt"])
    shown = "".join(f", {k} {v:.3f}" for k, v in metrics.items())
    tqdm.write(f"checkpoint step {run.step}: val loss {val_loss:.4f}{shown}{' (best)' if improved else ''}")
