"""The texture stage: a second DDPM that redraws the restored region at the image's own resolution.

The first stage restores a cell at 64x64, and compositing upsamples its patch about 5.6 times
(360 px cells), so the fill has the right shapes and colours but almost none of the chromatin
texture and granules around it: its fine detail is a quarter of the truth's (BENCHMARKS.md).
This stage works on the original pixels. Its input is x_t, the condition (the first stage's
full-size composite, whole, inside the mask too) and the mask; sampling starts from the
condition noised to level `start` (SDEdit, Meng et al. 2022), so the first stage's structure
stays and only detail at the scale that noise level erases is drawn anew, with the pixels
outside the mask clamped as in the first stage. Same UNet (no attention: it runs on crops of any
size), same linear schedule, epsilon prediction.

Training pairs come from the real images alone: the condition is the image taken down to the
first stage's 64 px and back up by the very functions the pipeline uses (shared.preprocess),
blurred a little more at random, because a mean of first-stage samples is softer still.
"""
from __future__ import annotations

import copy
import json
import math
import os
import platform
import signal
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter
from tqdm import tqdm

from shared.images import load_image
from shared.masks import random_mask
from shared.preprocess import MODEL_SIZE, preprocess, upsample

from .data import list_images
from .diffusion import Diffusion, DiffusionConfig, training_loss
from .evaluate import masked_metrics
from .model import UNet, UNetConfig, count_params
from .report import from_uint8, plot_history, to_uint8
from .sampler import sample
from .train import fixed_loss, start_run
from .weights import load_weights, read_config, save_weights

STAGE = "texture"
DEFAULT_TEXTURE_WEIGHTS = Path(__file__).parent / "weights" / "texture.safetensors"
MULTIPLE = 4  # crop sides the UNet takes: two 2x downsamplings


def texture_unet() -> UNetConfig:
    # image_size is the training crop; without attention the model runs on any size.
    return UNetConfig(image_size=64, base_channels=32, channel_mults=(1, 2, 2), num_res_blocks=2,
                      attn_resolutions=(), num_classes=0, mid_attn=False)


@dataclass
class TextureConfig:
    data: str = "../shared/data/pbc/train"
    val_data: str | None = "../shared/data/pbc/val"
    out: str = "runs/texture"
    init: str | None = None  # start from these texture-stage weights instead of scratch
    max_images: int = 4000  # full-size images held in memory (0.8 MB each with their condition)
    crop: int = 64
    batch_size: int = 32
    lr: float = 2e-4
    warmup_steps: int = 200
    max_minutes: float = 60.0
    max_steps: int = 1_000_000
    ckpt_minutes: float = 10.0
    ema_decay: float = 0.999
    t_max: int = 400  # trained on t < t_max only: sampling starts below it
    start: int = 200  # the sampling default stored with the weights: noise of std 0.59 erases granules and chromatin, not a nucleus
    full_mask_prob: float = 0.3  # a crop wholly inside a large hole
    max_blur: float = 2.0  # extra Gaussian blur of the condition, in source px (uniform 0..max_blur)
    threads: int = 2
    device: str = "auto"
    seed: int = 0
    val_images: int = 128
    unet: UNetConfig = field(default_factory=texture_unet)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)


def coarse_view(image: np.ndarray) -> np.ndarray:
    """What the first stage can give back at best: the image at 64 px, upsampled to its own size."""
    prep = preprocess(image, None, MODEL_SIZE)
    return upsample(prep.image, prep)


def _load(path: str) -> tuple[np.ndarray, np.ndarray]:
    img = load_image(path)
    return img, coarse_view(img)


@dataclass
class NativeSet:
    images: list[np.ndarray]  # full-size originals, (H, W, 3) uint8
    coarse: list[np.ndarray]  # coarse_view of each


def load_native(root: str | Path, max_images: int, seed: int = 0, workers: int = 2) -> NativeSet:
    files, _ = list_images(Path(root))
    rng = np.random.default_rng(seed)
    pick = sorted(rng.choice(len(files), min(max_images, len(files)), replace=False))
    with ProcessPoolExecutor(workers) as pool:
        loaded = list(tqdm(pool.map(_load, [str(files[i]) for i in pick], chunksize=32), total=len(pick), desc=f"loading {Path(root).name}"))
    return NativeSet([a for a, _ in loaded], [b for _, b in loaded])


def _turn(a: np.ndarray, k: int, flip: bool) -> np.ndarray:
    a = np.rot90(a, k)
    return a[:, ::-1] if flip else a


def make_batch(ds: NativeSet, rng: np.random.Generator, n: int, crop: int, full_prob: float, max_blur: float):
    """n random crops: (truth, condition, mask), uint8/uint8/bool, each turned and flipped at random.
    The condition is the truth outside the mask and the (blurred) coarse view inside it."""
    x0 = np.empty((n, crop, crop, 3), np.uint8)
    cond = np.empty_like(x0)
    masks = np.empty((n, crop, crop), bool)
    for i in range(n):
        j = int(rng.integers(len(ds.images)))
        img, coarse = ds.images[j], ds.coarse[j]
        y, x = int(rng.integers(img.shape[0] - crop + 1)), int(rng.integers(img.shape[1] - crop + 1))
        truth, c = img[y:y + crop, x:x + crop], coarse[y:y + crop, x:x + crop]
        sigma = rng.uniform(0, max_blur)
        if sigma > 0.25:
            c = np.asarray(Image.fromarray(np.ascontiguousarray(c)).filter(ImageFilter.GaussianBlur(sigma)))
        m = random_mask(rng, crop, crop, "full" if rng.random() < full_prob else None)
        k, flip = int(rng.integers(4)), bool(rng.random() < 0.5)  # one turn for truth, condition and mask
        x0[i], masks[i] = _turn(truth, k, flip), _turn(m, k, flip)
        cond[i] = np.where(masks[i][..., None], _turn(c, k, flip), x0[i])
    return x0, cond, masks


def _tensors(x0, cond, masks, device):
    return (from_uint8(torch.from_numpy(x0)).to(device), from_uint8(torch.from_numpy(cond)).to(device),
            torch.from_numpy(masks[:, None].astype(np.float32)).to(device))


@torch.no_grad()
def refine_crops(model, diff, cond: torch.Tensor, mask: torch.Tensor, seeds: list[int], steps: int, start: int, autocast: bool) -> torch.Tensor:
    """cond: (B,3,H,W) in [-1,1], the first stage's result (the original outside the mask);
    mask: (B,1,H,W). Returns (B,3,H,W): outside the mask exactly `cond`."""
    return sample(model, diff, known=cond, mask=mask, seeds=seeds, steps=steps, start=start, whole=True, autocast=autocast)


def refine(model, diff, composite: np.ndarray, mask: np.ndarray, seed: int = 0, steps: int = 10, start: int = 200,
           margin: int = 8) -> np.ndarray:
    """composite: (H, W, 3) uint8, the first stage's full-size result; mask: (H, W) bool. Returns the
    composite with the masked pixels redrawn; every pixel outside `mask` is left as it was."""
    if not mask.any():
        return composite.copy()
    ys, xs = np.nonzero(mask)
    y0, y1 = max(ys.min() - margin, 0), min(ys.max() + margin + 1, mask.shape[0])
    x0, x1 = max(xs.min() - margin, 0), min(xs.max() + margin + 1, mask.shape[1])
    ph, pw = -(y1 - y0) % MULTIPLE, -(x1 - x0) % MULTIPLE
    # Pad the crop to a side the UNet takes; padded pixels count as known, and are cut off again.
    c = np.pad(composite[y0:y1, x0:x1], ((0, ph), (0, pw), (0, 0)), mode="reflect" if min(y1 - y0, x1 - x0) > max(ph, pw) else "edge")
    m = np.pad(mask[y0:y1, x0:x1], ((0, ph), (0, pw)))
    device = next(model.parameters()).device
    cond = from_uint8(torch.from_numpy(c)[None]).to(device)
    mt = torch.from_numpy(m[None, None].astype(np.float32)).to(device)
    out = to_uint8(refine_crops(model, diff, cond, mt, [seed], steps, start, device.type == "cpu"))[0]
    res = composite.copy()
    region = res[y0:y1, x0:x1]
    region[mask[y0:y1, x0:x1]] = out[: y1 - y0, : x1 - x0][mask[y0:y1, x0:x1]]
    return res


def default_texture_weights() -> Path:
    """$CELLPAINT_TEXTURE_WEIGHTS if set, else the shipped texture-stage weights."""
    env = os.environ.get("CELLPAINT_TEXTURE_WEIGHTS")
    return Path(env) if env else DEFAULT_TEXTURE_WEIGHTS


class Texturer:
    """Texture-stage weights, loaded once: `Texturer(path).refine(composite, mask)`."""

    def __init__(self, weights: str | Path, device: str | torch.device = "cpu"):
        self.model, self.diff, self.record = load_weights(weights, device)
        if self.record.get("stage") != STAGE:
            raise ValueError(f"{weights}: not texture-stage weights (train them with `cellpaint train-texture`)")
        self.start = int(self.record[STAGE]["start"])

    def refine(self, composite: np.ndarray, mask: np.ndarray, seed: int = 0, steps: int = 10, start: int | None = None) -> np.ndarray:
        return refine(self.model, self.diff, composite, mask, seed, steps, self.start if start is None else start)


class TextureVal:
    """Fixed val crops, timesteps and noise: a val loss comparable across checkpoints, and the
    refined crops' PSNR and fine detail inside the mask against the condition's."""

    def __init__(self, ds: NativeSet, cfg: TextureConfig, device):
        rng = np.random.default_rng(1234)
        x0, cond, masks = make_batch(ds, rng, cfg.val_images, cfg.crop, cfg.full_mask_prob, cfg.max_blur)
        self.x0, self.cond, self.m = _tensors(x0, cond, masks, device)
        self.raw = (x0, cond, masks)
        g = torch.Generator().manual_seed(99)
        self.t = torch.randint(0, cfg.t_max, (len(x0),), generator=g).to(device)
        self.noise = torch.randn(self.x0.shape, generator=g).to(device)

    def loss(self, model, diff, autocast_ctx) -> float:
        return fixed_loss(model, diff, autocast_ctx, self.x0, self.m, None, self.t, self.noise, cond=self.cond)

    def metrics(self, model, diff, start: int, n: int = 32, steps: int = 10) -> dict[str, float]:
        n = min(n, len(self.raw[0]))
        x0, cond, masks = (a[:n] for a in self.raw)
        out = to_uint8(refine_crops(model, diff, self.cond[:n], self.m[:n], list(range(n)), steps, start, self.x0.device.type == "cpu"))
        ours = [masked_metrics(r, o, k) for r, o, k in zip(x0, out, masks)]
        theirs = [masked_metrics(r, c, k) for r, c, k in zip(x0, cond, masks)]
        mean = lambda rows, key: float(np.nanmean([r[key] for r in rows]))  # noqa: E731
        return {"psnr": mean(ours, "psnr"), "detail": mean(ours, "detail"), "cond_psnr": mean(theirs, "psnr"), "cond_detail": mean(theirs, "detail")}


def train_texture(cfg: TextureConfig) -> Path:
    device, out = start_run(cfg.threads, cfg.device, cfg.out, cfg.seed)
    ckpt_path = out / "ckpt.pt"
    state = torch.load(ckpt_path, map_location="cpu", weights_only=False) if ckpt_path.exists() else None
    if state:
        cfg.unet = UNetConfig(**state["config"]["unet"])
    elif cfg.init:
        cfg.unet = UNetConfig(**read_config(cfg.init)["unet"])
    ds = load_native(cfg.data, cfg.max_images, cfg.seed)
    small = sum(min(a.shape[:2]) < cfg.crop for a in ds.images)
    if small:
        raise ValueError(f"{cfg.data}: {small} images are smaller than the {cfg.crop}-px training crop; this stage learns full-size texture")
    val = TextureVal(load_native(cfg.val_data, cfg.val_images, 1), cfg, device) if cfg.val_data else None
    model = UNet(cfg.unet).to(device)
    diff = Diffusion(cfg.diffusion).to(device)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    step, seen, history, best, elapsed_before = 0, 0, {"train": [], "val": []}, math.inf, 0.0
    rng = np.random.default_rng(cfg.seed)
    if state:
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["opt"])
        step, seen, history, best, elapsed_before = state["step"], state["images_seen"], state["history"], state["best_val"], state["elapsed_s"]
        rng = np.random.default_rng([cfg.seed, step])
    elif cfg.init:
        from safetensors.torch import load_file

        model.load_state_dict(load_file(cfg.init))
        ema.load_state_dict(model.state_dict())
    print(f"texture model: {count_params(model) / 1e6:.2f}M params on {device}; {len(ds.images)} train images; step {step}")
    autocast_ctx = lambda: torch.autocast(device.type, dtype=torch.bfloat16)  # noqa: E731
    ema_params, model_params = list(ema.parameters()), list(model.parameters())
    stop: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.append(1))
    start, last_ckpt = time.time(), time.time()
    bar = tqdm(initial=step, desc="train-texture", dynamic_ncols=True)

    def checkpoint() -> None:
        nonlocal best, last_ckpt
        elapsed = elapsed_before + time.time() - start
        val_loss = val.loss(ema, diff, autocast_ctx) if val else float("nan")
        metrics = val.metrics(ema, diff, cfg.start) if val else {}
        history["val"].append((seen, val_loss))
        improved = val is None or val_loss < best
        best = min(best, val_loss) if val else best
        torch.save({"config": {"unet": asdict(cfg.unet)}, "model": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(),
                    "step": step, "images_seen": seen, "history": history, "best_val": best, "elapsed_s": elapsed}, out / "ckpt.tmp")
        (out / "ckpt.tmp").replace(ckpt_path)
        meta = {"stage": STAGE, STAGE: {"t_max": cfg.t_max, "start": cfg.start, "crop": cfg.crop, "max_blur": cfg.max_blur},
                "training": {"steps": step, "images_seen": seen, "batch_size": cfg.batch_size, "hours": round(elapsed / 3600, 3), "data": cfg.data,
                             "train_images": len(ds.images), "machine": f"{platform.machine()} {torch.get_num_threads()} threads, {device.type}"},
                "val": {"loss": val_loss, "data": cfg.val_data, **{k: round(v, 4) for k, v in metrics.items()}}}
        if improved:
            save_weights(out / "best.safetensors", ema, cfg.diffusion, [], meta)
        plot_history(history, out / "loss.png")
        with (out / "log.jsonl").open("a") as log:
            log.write(json.dumps({"step": step, "images_seen": seen, "val_loss": val_loss, **metrics, "elapsed_s": round(elapsed), "improved": improved}) + "\n")
        shown = ", ".join(f"{k} {v:.3f}" for k, v in metrics.items())
        tqdm.write(f"checkpoint step {step}: val loss {val_loss:.4f}; {shown}{' (best)' if improved else ''}")
        last_ckpt = time.time()

    while not stop and step < cfg.max_steps and (time.time() - start) / 60 < cfg.max_minutes:
        x0, cond, m = _tensors(*make_batch(ds, rng, cfg.batch_size, cfg.crop, cfg.full_mask_prob, cfg.max_blur), device)
        t = torch.from_numpy(rng.integers(0, cfg.t_max, cfg.batch_size)).to(device)
        for g in opt.param_groups:
            g["lr"] = cfg.lr * min(1.0, (step + 1) / cfg.warmup_steps)
        with autocast_ctx():
            loss = training_loss(model, diff, x0, m, None, t=t, cond=cond)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        decay = min(cfg.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(ema_params, model_params, 1 - decay)
        step, seen = step + 1, seen + cfg.batch_size
        value = loss.item()
        history["train"].append((seen, value))
        bar.update(1)
        bar.set_postfix(loss=f"{value:.4f}")
        if time.time() - last_ckpt > cfg.ckpt_minutes * 60:
            checkpoint()
    bar.close()
    checkpoint()
    return out
