"""Training: one loop, resumable, with EMA and bf16 autocast, on CUDA when present, else the CPU.

Each checkpoint writes `ckpt.pt` (everything needed to resume), `loss.png`, `log.jsonl`,
`generated-<step>.png` (whole cells: shareable), `inpaint-<step>.png` (val examples: not shareable),
`last.safetensors`, and, when the val loss improves, `best.safetensors` + `best.json` (the
shippable weights).
"""
from __future__ import annotations

import copy
import json
import math
import platform
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from shared.masks import random_mask

from .augment import FIELD, domain_augment
from .data import CellSet, augment, load_cellset
from .diffusion import Diffusion, DiffusionConfig, training_loss
# At the top, not inside the checkpoint: a run lasts hours, and a module first imported mid-run
# is read from the source tree as it is then. An edit made meanwhile cost a run its metrics once.
from .evaluate import masked_metrics
from .model import UNet, UNetConfig, count_params
from .report import from_uint8, plot_history, sample_grid, to_uint8
from .sampler import sample
from .weights import lineage, read_config, save_weights, totals

CODE_VERSION = "0.1.0"
LOSS_READ_EVERY = 50  # CUDA: training losses are read back in groups, so the CPU can run ahead
METRIC_IMAGES = 48  # val cells inpainted at each checkpoint (~5 s on 2 CPU cores)


@dataclass
class TrainConfig:
    data: str = "../shared/data/pbc/train"
    val_data: str | None = "../shared/data/pbc/val"  # val loss picks the weights we ship
    out: str = "runs/train"
    init: str | None = None  # start from these weights (safetensors) instead of scratch
    batch_size: int = 32
    lr: float = 3e-4
    warmup_steps: int = 200
    max_steps: int = 1_000_000
    max_minutes: float = 60.0  # wall-clock budget; the run checkpoints and stops cleanly
    ckpt_minutes: float = 15.0
    ema_decay: float = 0.999
    full_mask_prob: float = 0.10  # whole image masked: phase-1 generation from the same weights
    label_drop_prob: float = 0.15  # label -> "none", so the weights work with and without one
    threads: int = 2  # torch intra-op threads; set deliberately, never oversubscribe 2 cores
    device: str = "auto"
    compile: bool = False
    seed: int = 0
    val_images: int = 256
    mirror: str | None = None  # s3://BUCKET/PREFIX: `out` is filled from it at the start and uploaded to at every checkpoint
    mask_bank: int = 0  # >0: draw masks from this many pre-made ones (x8 by rotation/flip); keeps a GPU fed
    min_snr: float = 0.0  # >0: min-SNR-gamma loss weighting (diffusion.training_loss); val loss stays unweighted
    augment: str = "domain"  # "domain": other microscopes' scale, stain, blur, noise (augment.py); "flips": turns and flips only
    unet: UNetConfig = field(default_factory=UNetConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)


def make_masks(rng: np.random.Generator, n: int, size: int, full_prob: float) -> np.ndarray:
    """(n, size, size) bool: random boxes, ellipses and strokes; full masks with `full_prob`."""
    return np.stack([random_mask(rng, size, size, "full" if rng.random() < full_prob else None) for _ in range(n)])


def draw_masks(bank: np.ndarray, rng: np.random.Generator, n: int) -> np.ndarray:
    """n masks from a pre-made bank, each turned by a random rotation and flip (8 variants per mask)."""
    out = np.empty((n, *bank.shape[1:]), dtype=bank.dtype)
    for i, j in enumerate(rng.integers(0, len(bank), n)):
        m = np.rot90(bank[j], rng.integers(4))
        out[i] = m[:, ::-1] if rng.random() < 0.5 else m
    return out


def to_device(images: np.ndarray, masks: np.ndarray, labels: np.ndarray, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A training batch on `device`: uint8 images travel (4x fewer bytes than float) and are scaled
    there. On CUDA from pinned memory without blocking: a copy from pageable memory waits for the
    GPU to finish the step before, so the next batch could not be drawn while the GPU works."""
    cpu = (torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(masks[:, None]), torch.from_numpy(labels))
    if device.type == "cuda":
        cpu = tuple(t.pin_memory() for t in cpu)
    x, m, lab = (t.to(device, non_blocking=True) for t in cpu)
    return from_uint8(x), m.float(), lab


def train_step(fwd, model, opt, diff, x, m, labels, autocast_ctx, min_snr: float = 0.0) -> torch.Tensor:
    """One optimiser step on a batch: masked-weighted loss, backward, clipped AdamW. `fwd` is the
    model or its torch.compile wrapper. Returns the loss (scripts/bench_train_step.py times this)."""
    with autocast_ctx():
        loss = training_loss(fwd, diff, x, m, labels, min_snr=min_snr)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return loss


@torch.no_grad()
def fixed_loss(model, diff, autocast_ctx, x, m, labels, t, noise, cond=None, chunk: int = 64) -> float:
    """The loss over a fixed set (its masks, t and noise drawn once), in chunks: comparable across
    checkpoints. `cond`: the texture stage's condition (texture.py)."""
    total = 0.0
    for i in range(0, len(x), chunk):
        s = slice(i, i + chunk)
        with autocast_ctx():
            total += training_loss(model, diff, x[s], m[s], None if labels is None else labels[s], t=t[s], noise=noise[s],
                                   cond=None if cond is None else cond[s]).item() * len(x[s])
    return total / len(x)


class ValSet:
    """A fixed val batch: fixed masks, timesteps and noise, so val loss is comparable across steps."""

    def __init__(self, cells: CellSet, cfg: TrainConfig, device):
        rng = np.random.default_rng(1234)
        idx = rng.choice(len(cells.images), min(cfg.val_images, len(cells.images)), replace=False)
        masks = make_masks(rng, len(idx), cfg.unet.image_size, cfg.full_mask_prob)
        self.x, self.m, self.labels = to_device(cells.images[idx], masks, cells.labels[idx], device)
        g = torch.Generator().manual_seed(99)
        self.t = torch.randint(0, cfg.diffusion.timesteps, (len(idx),), generator=g).to(device)
        self.noise = torch.randn(self.x.shape, generator=g).to(device)
        self.images, self.classes = cells.images[idx], cells.classes

    def loss(self, model, diff, autocast_ctx) -> float:
        return fixed_loss(model, diff, autocast_ctx, self.x, self.m, self.labels, self.t, self.noise)

    @torch.no_grad()
    def inpaint_metrics(self, model, diff, n: int = METRIC_IMAGES) -> dict[str, float]:
        """Masked PSNR/SSIM of DDIM-10 inpainting on the first `n` partly-masked val cells, fixed seeds.

        Val loss is an average over all t; this is what users see, so checkpoints track both.
        At 64x64 it is not the full-size `cellpaint evaluate` number, but it moves with it."""
        part = (self.m[:, 0].flatten(1).mean(1) < 0.99).nonzero()[:n, 0]
        x, m = self.x[part], self.m[part]
        out = to_uint8(sample(model, diff, known=x * (1 - m), mask=m, labels=None, seeds=list(range(len(part))), steps=10,
                              autocast=x.device.type == "cpu"))
        ref, ms = to_uint8(x), m[:, 0].cpu().numpy() > 0.5
        rows = [masked_metrics(r, o, k) for r, o, k in zip(ref, out, ms)]
        return {k: float(np.mean([r[k] for r in rows])) for k in ("psnr", "ssim", "mae")}


def start_run(threads: int, device: str, out: str, seed: int) -> tuple[torch.device, Path]:
    """What every training run does first (both stages): threads set deliberately, the device
    chosen ("auto": CUDA when present), the run folder made, torch seeded."""
    torch.set_num_threads(threads)
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device))
    Path(out).mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    return dev, Path(out)


def train(cfg: TrainConfig) -> Path:
    device, out = start_run(cfg.threads, cfg.device, cfg.out, cfg.seed)
    rng = np.random.default_rng(cfg.seed)

    if cfg.mirror:  # a Batch job: resume from the run in S3 (a Spot reclaim loses at most one checkpoint interval)
        from .remote import download_run

        print(f"{cfg.mirror}: {download_run(cfg.mirror, out)} files of an earlier attempt")
    ckpt_path = out / "ckpt.pt"
    state = torch.load(ckpt_path, map_location="cpu", weights_only=False) if ckpt_path.exists() else None
    if state:  # resume: the stored config wins over the command line for the architecture
        cfg.unet = UNetConfig(**state["config"]["unet"])
        cfg.diffusion = DiffusionConfig(**state["config"]["diffusion"])
    elif cfg.init:
        rec = read_config(cfg.init)
        cfg.unet, cfg.diffusion = UNetConfig(**rec["unet"]), DiffusionConfig(**rec["diffusion"])
    # Data after the config: a resumed run or --init weights decide the image size.
    if cfg.augment not in ("domain", "flips"):
        raise ValueError(f"augment must be domain or flips, got {cfg.augment!r}")
    domain = cfg.augment == "domain" and not Path(cfg.data).is_file()  # a pack holds 64-px cells only
    cells = load_cellset(cfg.data, FIELD if domain else cfg.unet.image_size)
    val = ValSet(load_cellset(cfg.val_data, cfg.unet.image_size), cfg, device) if cfg.val_data else None
    if cells.classes and len(cells.classes) != cfg.unet.num_classes:
        cfg.unet.num_classes = len(cells.classes)

    # Plain NCHW everywhere. channels_last made a CPU step 6-9 % slower for this model, and on an H100
    # it gained 3 % eager but lost 12 % under torch.compile (scripts/bench_train_step.py, BENCHMARKS.md).
    model = UNet(cfg.unet).to(device)
    diff = Diffusion(cfg.diffusion).to(device)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    step, seen, history, best = 0, 0, {"train": [], "val": []}, math.inf
    before = state["before"] if state and "before" in state else lineage(read_config(cfg.init)) if cfg.init else []
    if state:
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["opt"])
        step, seen, history, best = state["step"], state["images_seen"], state["history"], state["best_val"]
        rng = np.random.default_rng([cfg.seed, step])
    elif cfg.init:
        from safetensors.torch import load_file

        w = load_file(cfg.init)
        emb = model.label_emb.weight
        if w["label_emb.weight"].shape != emb.shape:
            # Fine-tuning on other classes: keep everything else; the "no label" row becomes the
            # new "no label" row, and every new class starts from it (the unconditional model).
            old = w["label_emb.weight"]
            w["label_emb.weight"] = old[-1:].expand(emb.shape[0], -1).clone()
            print(f"--init: {len(old) - 1} classes in the weights, {emb.shape[0] - 1} in the data: class embeddings start from 'no label'")
        model.load_state_dict(w)
        ema.load_state_dict(w)
    print(f"model: {count_params(model) / 1e6:.2f}M params on {device}; {len(cells.images)} train images; step {step}")

    # Python mask drawing costs ~10 ms per 128: nothing on 2 CPU cores at ~1 s/step, half the step on a GPU.
    bank = make_masks(rng, cfg.mask_bank, cfg.unet.image_size, cfg.full_mask_prob) if cfg.mask_bank else None
    ema_params, model_params = list(ema.parameters()), list(model.parameters())
    use_amp = device.type == "cpu" or torch.cuda.is_available()
    autocast_ctx = lambda: torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp)  # noqa: E731
    fwd = torch.compile(model) if cfg.compile else model
    start = time.time()
    # Checkpoints come every `ckpt_minutes` of training, not of wall clock: a run paused with
    # SIGSTOP (scripts/paused.sh) would otherwise checkpoint after every pause. A step that took
    # over a minute was paused, and counts as one second.
    active, last_ckpt, tick = 0.0, 0.0, time.time()
    elapsed_before = state["elapsed_s"] if state else 0.0
    bar = tqdm(total=cfg.max_steps, initial=step, desc="train", dynamic_ncols=True)
    pending: list[tuple[int, torch.Tensor]] = []  # (images seen, loss) not yet read back from the device
    stop = []  # SIGTERM/SIGINT finish the step, checkpoint and exit: a stopped run loses nothing
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.append(1))
    while not stop and step < cfg.max_steps and (time.time() - start) / 60 < cfg.max_minutes:
        idx = rng.integers(0, len(cells.images), cfg.batch_size)
        masks = draw_masks(bank, rng, cfg.batch_size) if bank is not None else make_masks(rng, cfg.batch_size, cfg.unet.image_size, cfg.full_mask_prob)
        images = domain_augment(cells.images[idx], rng, cfg.unet.image_size) if domain else augment(cells.images[idx], rng)
        labels = np.where(rng.random(cfg.batch_size) < cfg.label_drop_prob, cfg.unet.num_classes, cells.labels[idx])
        x, m, labels = to_device(images, masks, labels, device)
        for g in opt.param_groups:
            g["lr"] = cfg.lr * min(1.0, (step + 1) / cfg.warmup_steps)
        loss = train_step(fwd, model, opt, diff, x, m, labels, autocast_ctx, cfg.min_snr)
        # EMA with warm-up: early on the average should follow the fast-moving weights.
        decay = min(cfg.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(ema_params, model_params, 1 - decay)  # one launch, not one per tensor
        step += 1
        seen += cfg.batch_size
        pending.append((seen, loss.detach()))
        bar.update(1)
        # Reading a loss waits for the GPU; on CUDA do it every LOSS_READ_EVERY steps, not every step.
        if device.type != "cuda" or len(pending) >= LOSS_READ_EVERY:
            _read_losses(pending, history, bar)
        now = time.time()
        active, tick = active + (now - tick if now - tick < 60 else 1.0), now
        if active - last_ckpt > cfg.ckpt_minutes * 60:
            _read_losses(pending, history, bar)
            best = _checkpoint(cfg, out, model, ema, opt, diff, val, cells, step, seen, history, best, elapsed_before + time.time() - start, autocast_ctx, before)
            last_ckpt, tick = active, time.time()
    bar.close()
    _read_losses(pending, history, bar)
    _checkpoint(cfg, out, model, ema, opt, diff, val, cells, step, seen, history, best, elapsed_before + time.time() - start, autocast_ctx, before)
    return out


def _read_losses(pending: list, history: dict, bar) -> None:
    if pending:
        values = torch.stack([loss for _, loss in pending]).float().cpu().tolist()
        history["train"].extend((seen, v) for (seen, _), v in zip(pending, values))
        bar.set_postfix(loss=f"{values[-1]:.4f}")
        pending.clear()


def _checkpoint(cfg, out, model, ema, opt, diff, val, cells, step, seen, history, best, elapsed, autocast_ctx, before) -> float:
    val_loss = val.loss(ema, diff, autocast_ctx) if val else float("nan")
    history["val"].append((seen, val_loss))
    try:
        metrics = val.inpaint_metrics(ema, diff) if val else {}
    except Exception as exc:  # a measuring bug must not end an hours-long run; the val loss still picks the weights
        tqdm.write(f"checkpoint step {step}: val inpainting metrics failed: {type(exc).__name__}: {exc}")
        metrics = {}
    if metrics:
        history.setdefault("metrics", []).append((seen, metrics["psnr"], metrics["ssim"]))
    improved = val is None or val_loss < best
    best = min(best, val_loss) if val else best
    record = {"config": {"unet": asdict(cfg.unet), "diffusion": asdict(cfg.diffusion)}, "train_config": {k: v for k, v in asdict(cfg).items() if k not in ("unet", "diffusion")},
              "model": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(), "step": step, "images_seen": seen,
              "history": history, "best_val": best, "elapsed_s": elapsed, "code_version": CODE_VERSION, "before": before}
    torch.save(record, out / "ckpt.tmp")
    (out / "ckpt.tmp").replace(out / "ckpt.pt")  # atomic: a kill mid-save never loses the last checkpoint
    this = {"steps": step, "images_seen": seen, "batch_size": cfg.batch_size, "hours": round(elapsed / 3600, 3), "data": cfg.data,
            "machine": f"{platform.machine()} {torch.get_num_threads()} threads, {'cuda' if next(ema.parameters()).is_cuda else 'cpu'}"}
    segments = [*before, this]
    # steps, images seen and hours: totals over every segment; the rest: this run's
    training = {**this, **totals(segments), "train_images": len(cells.images),
                "class_counts": {c: int((cells.labels == i).sum()) for i, c in enumerate(cells.classes)}}
    if before:
        training["segments"] = segments
    meta = {"code_version": CODE_VERSION, "training": training,
            "val": {"loss": val_loss, "data": cfg.val_data, **{f"ddim10_64px_{k}": round(v, 4) for k, v in metrics.items()}}}
    if improved:
        save_weights(out / "best.safetensors", ema, cfg.diffusion, cells.classes, meta)
    save_weights(out / "last.safetensors", ema, cfg.diffusion, cells.classes, meta)
    plot_history(history, out / "loss.png")
    grids = [f"generated-{step:07d}.png", f"inpaint-{step:07d}.png"]
    if val is not None:
        sample_grid(ema, diff, val, out / grids[0], out / grids[1])
    entry = {"step": step, "images_seen": seen, "val_loss": val_loss, **{f"val_{k}": round(v, 4) for k, v in metrics.items()},
             "elapsed_s": round(elapsed), "improved": improved}
    with (out / "log.jsonl").open("a") as log:
        log.write(json.dumps(entry) + "\n")
    if cfg.mirror:
        from .remote import upload_run

        upload_run(out, cfg.mirror, ["last.safetensors", "last.json", "loss.png", *grids, "log.jsonl", "ckpt.pt"]
                   + (["best.safetensors", "best.json"] if improved else []))
    shown = f", DDIM-10 {metrics['psnr']:.2f} dB / SSIM {metrics['ssim']:.3f}" if metrics else ""
    tqdm.write(f"checkpoint step {step}: val loss {val_loss:.4f}{shown}{' (best)' if improved else ''}")
    return best
