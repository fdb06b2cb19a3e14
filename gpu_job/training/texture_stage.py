"""Training the texture stage (gpu_job/inpainter/texture.py) on random crops of the full-size images.

Training pairs come from the real images alone: the condition is the image taken down to the
first stage's 64 px and back up by the very functions the pipeline uses (shared.imaging.preprocess),
blurred a little more at random, because a mean of first-stage samples is softer still. With
`fields`, whole-field photos of other microscopes are mixed in (as the first stage's are), each
taken down per window as the pipeline windows it, so that the stage does not learn one
microscope's texture. The loop is loop.py; this file is the stage's data, val set and checkpoint.
"""
from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from functools import partial
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter
from tqdm import tqdm

from gpu_job.inpainter.diffusion import training_loss
from gpu_job.inpainter.model import UNetConfig
from gpu_job.inpainter.tensors import from_uint8, mask_tensor, to_uint8
from gpu_job.inpainter.texture import STAGE, refine_crops
from gpu_job.inpainter.weights import save_weights
from shared.imaging.images import InputError, load_image
from shared.imaging.photos import list_photos, split
from shared.imaging.scale import auto_window, one_window
from shared.options import OPTIONS
from shared.imaging.masks import random_mask
from shared.imaging.preprocess import MODEL_SIZE, preprocess, upsample

from gpu_job.data.metrics import masked_metrics
from gpu_job.data.augment import recolour_pair
from gpu_job.data.cells import list_images
from gpu_job.data.fields import load_photos
from gpu_job.training.loop import RunConfig, fixed_loss, train_loop


def texture_unet() -> UNetConfig:
    # image_size is the training crop; without attention the model runs on any size.
    return UNetConfig(image_size=64, base_channels=32, channel_mults=(1, 2, 2), num_res_blocks=2,
                      attn_resolutions=(), num_classes=0, mid_attn=False)


@dataclass
class TextureConfig(RunConfig):
    out: str = "runs/texture"
    max_images: int = 4000  # full-size images held in memory (0.8 MB each with their condition)
    crop: int = 64
    lr: float = 2e-4
    ckpt_minutes: float = 10.0
    t_max: int = 400  # trained on t < t_max only: sampling starts below it
    start: int = OPTIONS["texture_start"].default  # where checkpoints measure the redrawing from: the sampling default
    full_mask_prob: float = 0.3  # a crop wholly inside a large hole
    max_blur: float = 2.0  # extra Gaussian blur of the condition, in source px (uniform 0..max_blur)
    augment: str = "domain"  # "domain": each crop's stain, light and grain as another microscope's (augment.py); "none"
    fields: tuple[str, ...] = ()  # whole-field photos of other microscopes (folders or files; no labels)
    field_share: float = 0.35  # share of each batch cut from `fields`
    hold_every: int = 5  # every n-th field photo is held back for measuring (as the first stage's training holds them)
    val_images: int = 128
    unet: UNetConfig = field(default_factory=texture_unet)


def coarse_view(image: np.ndarray) -> np.ndarray:
    """What the first stage can give back at best: the image at 64 px, upsampled to its own size."""
    prep = preprocess(image, None, MODEL_SIZE)
    return upsample(prep.image, prep)


def coarse_field(image: np.ndarray) -> np.ndarray:
    """coarse_view of a photo as the pipeline windows it (shared/imaging/windows.py): a photo no
    larger than ~1.25 windows is one window; a larger one is seen window by window, each at 64 px,
    which is the whole photo taken down by window / 64 and back up."""
    h, w = image.shape[:2]
    window = auto_window(image, np.zeros((h, w), bool))
    if one_window(h, w, window):
        return coarse_view(image)
    f = MODEL_SIZE / window
    small = Image.fromarray(image).resize((max(1, round(w * f)), max(1, round(h * f))), Image.Resampling.LANCZOS)
    return np.asarray(small.resize((w, h), Image.Resampling.BICUBIC))


def _load(path: str) -> tuple[np.ndarray, np.ndarray]:
    img = load_image(path)
    return img, coarse_view(img)


def _load_field(path: str, crop: int) -> tuple[np.ndarray, np.ndarray] | str:
    try:
        img = load_image(path)
    except InputError as exc:
        return str(exc)
    if min(img.shape[:2]) < crop:
        return f"{path}: smaller than the {crop}-px training crop"
    return img, coarse_field(img)


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


def load_native_fields(sources: list[str], hold_every: int, crop: int, workers: int = 2) -> tuple[NativeSet, NativeSet, dict]:
    """(training photos, held-back photos, what the record says of them): full size with their
    coarse views. Photos smaller than a training crop or unreadable are left out, and said."""
    train, held = split(list_photos(sources), hold_every)
    sets = []
    for files in (train, held):
        keep = load_photos(files, partial(_load_field, crop=crop), workers)
        sets.append((NativeSet([x[0] for _, x in keep], [x[1] for _, x in keep]), [str(f) for f, _ in keep]))
    (ds, names), (held_ds, held_names) = sets
    if not ds.images:
        raise ValueError(f"{', '.join(sources)}: no usable field photos")
    return ds, held_ds, {"photos": names, "held_back": held_names}


def _turn(a: np.ndarray, k: int, flip: bool) -> np.ndarray:
    a = np.rot90(a, k)
    return a[:, ::-1] if flip else a


def make_batch(ds: NativeSet, rng: np.random.Generator, n: int, crop: int, full_prob: float, max_blur: float, domain: bool = False,
               fields: NativeSet | None = None, field_share: float = 0.0):
    """n random crops: (truth, condition, mask), uint8/uint8/bool, each turned and flipped at random
    (and, with `domain`, seen through another microscope: augment.recolour_pair). The condition is
    the truth outside the mask and the (blurred) coarse view inside it. With `fields`, each crop is
    cut from them with probability `field_share`."""
    x0 = np.empty((n, crop, crop, 3), np.uint8)
    cond = np.empty_like(x0)
    masks = np.empty((n, crop, crop), bool)
    for i in range(n):
        src = fields if fields is not None and rng.random() < field_share else ds
        j = int(rng.integers(len(src.images)))
        img, coarse = src.images[j], src.coarse[j]
        y, x = int(rng.integers(img.shape[0] - crop + 1)), int(rng.integers(img.shape[1] - crop + 1))
        truth, c = img[y:y + crop, x:x + crop], coarse[y:y + crop, x:x + crop]
        if domain:
            truth, c = recolour_pair(truth, c, rng)
        sigma = rng.uniform(0, max_blur)
        if sigma > 0.25:
            c = np.asarray(Image.fromarray(np.ascontiguousarray(c)).filter(ImageFilter.GaussianBlur(sigma)))
        m = random_mask(rng, crop, crop, "full" if rng.random() < full_prob else None)
        k, flip = int(rng.integers(4)), bool(rng.random() < 0.5)  # one turn for truth, condition and mask
        x0[i], masks[i] = _turn(truth, k, flip), _turn(m, k, flip)
        cond[i] = np.where(masks[i][..., None], _turn(c, k, flip), x0[i])
    return x0, cond, masks


def _tensors(x0, cond, masks, device):
    return from_uint8(torch.from_numpy(x0)).to(device), from_uint8(torch.from_numpy(cond)).to(device), mask_tensor(masks, device)


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

    def metrics(self, model, diff, start: int, n: int = 32, steps: int = OPTIONS["texture_steps"].default) -> dict[str, float]:
        n = min(n, len(self.raw[0]))
        x0, cond, masks = (a[:n] for a in self.raw)
        out = to_uint8(refine_crops(model, diff, self.cond[:n], self.m[:n], list(range(n)), steps, start, self.x0.device.type == "cpu"))
        ours = [masked_metrics(r, o, k) for r, o, k in zip(x0, out, masks)]
        theirs = [masked_metrics(r, c, k) for r, c, k in zip(x0, cond, masks)]
        mean = lambda rows, key: float(np.nanmean([r[key] for r in rows]))  # noqa: E731
        return {"psnr": mean(ours, "psnr"), "detail": mean(ours, "detail"), "cond_psnr": mean(theirs, "psnr"), "cond_detail": mean(theirs, "detail")}


class TextureStage:
    name = "train-texture"

    def __init__(self, cfg: TextureConfig, device):
        self.cfg, self.device = cfg, device
        if cfg.augment not in ("domain", "none"):
            raise ValueError(f"augment must be domain or none, got {cfg.augment!r}")
        self.ds = load_native(cfg.data, cfg.max_images, cfg.seed)
        small = sum(min(a.shape[:2]) < cfg.crop for a in self.ds.images)
        if small:
            raise ValueError(f"{cfg.data}: {small} images are smaller than the {cfg.crop}-px training crop; this stage learns full-size texture")
        self.val = TextureVal(load_native(cfg.val_data, cfg.val_images, 1), cfg, device) if cfg.val_data else None
        self.fields, self.field_val, self.field_record = None, None, {}
        if cfg.fields:
            self.fields, held, self.field_record = load_native_fields(list(cfg.fields), cfg.hold_every, cfg.crop)
            self.field_val = TextureVal(held, cfg, device) if held.images else None
        print(f"{len(self.ds.images)} train images" + (f", {len(self.fields.images)} field photos "
                                                      f"({len(self.field_record['held_back'])} held back)" if self.fields else ""))

    def draw(self, rng: np.random.Generator) -> tuple:
        cfg = self.cfg
        drawn = make_batch(self.ds, rng, cfg.batch_size, cfg.crop, cfg.full_mask_prob, cfg.max_blur, cfg.augment == "domain",
                           self.fields, cfg.field_share)
        return (*drawn, rng.integers(0, cfg.t_max, cfg.batch_size))

    def to_device(self, drawn: tuple) -> tuple:
        *arrays, t = drawn
        return (*_tensors(*arrays, self.device), torch.from_numpy(t).to(self.device))

    def loss(self, fwd, diff, batch) -> torch.Tensor:
        x0, cond, m, t = batch
        return training_loss(fwd, diff, x0, m, None, t=t, cond=cond)

    def val_loss(self, ema, diff, autocast_ctx) -> float:
        return self.val.loss(ema, diff, autocast_ctx) if self.val else float("nan")

    def val_metrics(self, ema, diff) -> dict[str, float]:
        metrics = self.val.metrics(ema, diff, self.cfg.start) if self.val else {}
        if self.field_val is not None:
            metrics.update({f"fields_{k}": v for k, v in self.field_val.metrics(ema, diff, self.cfg.start).items()})
        return metrics

    def save(self, out: Path, ema, diff, meta: dict, metrics: dict, improved: bool, step: int) -> list[str]:
        cfg = self.cfg
        meta = {"stage": STAGE, STAGE: {"t_max": cfg.t_max, "start": cfg.start, "crop": cfg.crop, "max_blur": cfg.max_blur, "augment": cfg.augment}, **meta}
        meta["training"]["train_images"] = len(self.ds.images)
        if self.fields is not None:
            meta["training"]["fields"] = {**self.field_record, "share": cfg.field_share}
        meta["val"].update({k: round(v, 4) for k, v in metrics.items()})
        if not improved:
            return []
        save_weights(out / "best.safetensors", ema, diff.cfg, [], meta)
        return ["best.safetensors", "best.json"]


def train_texture(cfg: TextureConfig) -> Path:
    return train_loop(cfg, TextureStage)
