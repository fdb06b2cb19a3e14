"""Training the first stage, the 64x64 inpainter: its batches, val set and checkpoint (the loop is loop.py).

Each checkpoint writes `ckpt.pt` (everything needed to resume), `loss.png`, `log.jsonl`,
`generated-<step>.png` (whole cells: shareable), `inpaint-<step>.png` (val examples: not shareable),
`last.safetensors`, and, when the val loss improves, `best.safetensors` + `best.json` (the
shippable weights).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from gpu_job.inpainter.diffusion import training_loss
from gpu_job.inpainter.sampler import sample, sampler_loss
from gpu_job.inpainter.tensors import from_uint8, to_uint8
from gpu_job.inpainter.weights import read_config, save_weights
from shared.imaging import colour
from shared.imaging.masks import random_mask

from gpu_job.data.metrics import masked_metrics
from gpu_job.data.augment import FIELD, DomainAug, domain_augment, fade_nuclei, reframe, turn
from gpu_job.data.cells import CellSet, load_cellset
from gpu_job.data.fields import load_fields
from gpu_job.training.loop import RunConfig, fixed_loss, train_loop
from gpu_job.training.report import sample_grid

METRIC_IMAGES = 48  # val cells inpainted at each checkpoint (~5 s on 2 CPU cores)


@dataclass
class TrainConfig(RunConfig):
    full_mask_prob: float = 0.10  # whole image masked: phase-1 generation from the same weights
    label_drop_prob: float = 0.15  # label -> "none", so the weights work with and without one
    mask_bank: int = 0  # >0: draw masks from this many pre-made ones (x8 by rotation/flip); keeps a GPU fed
    min_snr: float = 0.0  # >0: min-SNR-gamma loss weighting (diffusion.training_loss); val loss stays unweighted
    augment: str = "domain"  # "domain": other microscopes' scale, stain, blur, noise (augment.py); "flips": turns and flips only
    clean: float = 0.4  # share of rows left as their microscope shows them (flips and turns only)
    p_blur: float = DomainAug.p_blur  # share of augmented rows defocused...
    blur: tuple[float, float] = DomainAug.blur  # ...by a Gaussian of this sigma (model px): softer optics merge a nucleus's lobes
    fields: tuple[str, ...] = ()  # folders or files of whole-field photos from other microscopes (fields.py); no labels
    field_share: float = 0.35  # share of each batch cut from `fields`
    hold_every: int = 5  # every n-th field photo is held back for measuring, never trained on
    measure_held_back: bool = True  # DDIM-10 at 64 px on the held-back fields at each checkpoint (adapt measures them itself, at full size)
    seen_as_inferred: bool = False  # each row moved to the training set's colours from its known pixels, as inference moves a window
    cell_share: float = 0.0  # share of field rows cut around one of the fields' white cells (fields.py)
    fade: float = 0.0  # share of rows whose nuclei are made lighter, as the model sees them (augment.fade_nuclei)
    # >0: the weight of sampler.sampler_loss, the error of the fill inference draws, beside the epsilon loss;
    # on `sampler_rows` partly masked rows of each batch, told no class (as routed and lab pairs are), at
    # the sampler's `sampler_steps` and `sampler_temperature` (the routed model's own: DDIM-5 at 0).
    sampler_loss: float = 0.0
    sampler_rows: int = 8
    sampler_steps: int = 5
    sampler_temperature: float = 0.0


def colour_reference(images: np.ndarray, n: int = 2000, seed: int = 0) -> dict:
    """The training set's colour and stain statistics (shared/imaging/colour.py), from up to n cells:
    what inference moves another lab's colours to. Stored in the weights record."""
    pick = np.random.default_rng(seed).choice(len(images), min(n, len(images)), replace=False)
    return colour.reference(images[np.sort(pick)])


def make_masks(rng: np.random.Generator, n: int, size: int, full_prob: float) -> np.ndarray:
    """(n, size, size) bool: random boxes, ellipses and strokes; full masks with `full_prob`."""
    return np.stack([random_mask(rng, size, size, "full" if rng.random() < full_prob else None) for _ in range(n)])


def draw_masks(bank: np.ndarray, rng: np.random.Generator, n: int) -> np.ndarray:
    """n masks from a pre-made bank, each turned by a random rotation and flip (8 variants per mask)."""
    return np.stack([turn(bank[j], rng) for j in rng.integers(0, len(bank), n)])


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
    """One optimiser step on a batch, as the loop takes it (timed for docs/history.md, bench_train_step)."""
    with autocast_ctx():
        loss = training_loss(fwd, diff, x, m, labels, min_snr=min_snr)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return loss


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

    @classmethod
    def from_fields(cls, paths: list[str], cfg: TrainConfig, device, n: int = 96) -> "ValSet":
        """Fixed windows of held-back field photos, unlabelled: how the model does on another microscope."""
        held = load_fields(paths, hold_every=0)
        crops = held.crops(np.random.default_rng(4321), n)
        images = np.stack([reframe(c, cfg.unet.image_size) for c in crops])
        return cls(CellSet(images, np.full(n, cfg.unet.num_classes), [], []), cfg, device)

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


class FirstStage:
    """Cells at 64x64 with random masks; a tenth wholly masked (generation) and labels dropped at
    random (so the weights work with and without one)."""
    name = "train"

    def __init__(self, cfg: TrainConfig, device):
        if cfg.augment not in ("domain", "flips"):
            raise ValueError(f"augment must be domain or flips, got {cfg.augment!r}")
        if not (0 <= cfg.blur[0] <= cfg.blur[1] and 0 <= cfg.p_blur <= 1):
            raise ValueError(f"--blur LOW HIGH needs 0 <= LOW <= HIGH and --p-blur a share in [0, 1], got {tuple(cfg.blur)} and {cfg.p_blur}")
        for flag, share in (("--cell-share", cfg.cell_share), ("--fade", cfg.fade)):
            if not 0 <= share <= 1:
                raise ValueError(f"{flag} needs a share in [0, 1], got {share}")
        self.cfg, self.device = cfg, device
        # Domain augmentation reframes cells, from a field at twice the model's size so that zooming
        # in keeps detail (a pack has the size it was made at, pack.py --size; a smaller one works, softer).
        self.domain = cfg.augment == "domain"
        if not cfg.data and not cfg.fields:
            raise ValueError("nothing to train on: give class folders (data), field photos (fields), or both")
        # No class folders: field photos alone (a lab's own images, `cellpaint adapt`); the classes are the --init weights'.
        self.cells = load_cellset(cfg.data, FIELD if self.domain else cfg.unet.image_size) if cfg.data else None
        self.classes = self.cells.classes if self.cells else (read_config(cfg.init)["classes"] if cfg.init else [])
        self.val = ValSet(load_cellset(cfg.val_data, cfg.unet.image_size), cfg, device) if cfg.val_data else None
        if self.cells and self.cells.classes and len(self.cells.classes) != cfg.unet.num_classes:
            cfg.unet.num_classes = len(self.cells.classes)
        self.aug = DomainAug(clean=cfg.clean, p_blur=cfg.p_blur, blur=tuple(cfg.blur))
        self.fields = load_fields(list(cfg.fields), cfg.hold_every) if cfg.fields else None
        self.field_val = (ValSet.from_fields(self.fields.held_back, cfg, device)
                          if self.fields and self.fields.held_back and cfg.measure_held_back else None)
        # The colours inference moves images to: the class folders' (the training set's), or, with field
        # photos alone, theirs (a lab's own reference, so its images are moved nowhere).
        self.reference = colour_reference(self.cells.images if self.cells else self.fields.crops(np.random.default_rng(cfg.seed), 2000))
        # Python mask drawing costs ~10 ms per 128: nothing on 2 CPU cores at ~1 s/step, half the step on a GPU.
        self.bank = make_masks(np.random.default_rng(cfg.seed), cfg.mask_bank, cfg.unet.image_size, cfg.full_mask_prob) if cfg.mask_bank else None
        print(f"{len(self.cells.images) if self.cells else 0} train images"
              + (f", {len(self.fields.fields)} field photos ({len(self.fields.held_back)} held back)" if self.fields else ""))

    def draw(self, rng: np.random.Generator) -> tuple:
        cfg, size = self.cfg, self.cfg.unet.image_size
        n_fields = (cfg.batch_size if self.cells is None else int(rng.binomial(cfg.batch_size, cfg.field_share))) if self.fields else 0
        n_cells = cfg.batch_size - n_fields
        masks = draw_masks(self.bank, rng, cfg.batch_size) if self.bank is not None else make_masks(rng, cfg.batch_size, size, cfg.full_mask_prob)
        fields, labels = np.empty((0, FIELD, FIELD, 3), np.uint8), np.empty(0, np.int64)
        if n_cells:
            idx = rng.integers(0, len(self.cells.images), n_cells)
            fields = self.cells.images[idx]
            labels = np.where(rng.random(n_cells) < cfg.label_drop_prob, cfg.unet.num_classes, self.cells.labels[idx])
        # Wholly masked rows teach generation (`cellpaint sample`): they stay PBC cells. With nothing
        # known there is no other microscope to adapt to, and generated cells should look like the training set's.
        full = masks.reshape(len(masks), -1).all(1)
        if n_fields:  # field rows are never wholly masked: a generated field is nobody's cell
            full[n_cells:] = False
            masks[n_cells:] = make_masks(rng, n_fields, size, 0.0)
            fields = [*fields, *self.fields.crops(rng, n_fields, cfg.cell_share)]  # a list: a pack's cells may be smaller than FIELD
            labels = np.concatenate([labels, np.full(n_fields, cfg.unet.num_classes)])
        images = (domain_augment(fields, rng, size, self.aug, clean=full) if self.domain
                  else np.stack([turn(reframe(f, size) if len(f) != size else f, rng) for f in fields]))
        if cfg.seen_as_inferred:
            for i in np.flatnonzero(~full):
                images[i] = colour.as_model_sees("auto", images[i], ~masks[i], self.reference)[1]
        for i in np.flatnonzero(~full & (rng.random(len(images)) < cfg.fade)) if cfg.fade else []:
            images[i] = fade_nuclei(images[i], rng)
        return images, masks, labels

    def to_device(self, drawn: tuple) -> tuple:
        return to_device(*drawn, self.device)

    def loss(self, fwd, diff, batch) -> torch.Tensor:
        x, m, labels = batch
        cfg = self.cfg
        loss = training_loss(fwd, diff, x, m, labels, min_snr=cfg.min_snr)
        if cfg.sampler_loss > 0:
            rows = (m.flatten(1).mean(1) < 1).nonzero()[: cfg.sampler_rows, 0]
            if len(rows):
                none = torch.full((len(rows),), cfg.unet.num_classes, dtype=torch.long, device=x.device)
                loss = loss + cfg.sampler_loss * sampler_loss(fwd, diff, x[rows], m[rows], steps=cfg.sampler_steps,
                                                              temperature=cfg.sampler_temperature, labels=none)
        return loss

    def val_loss(self, ema, diff, autocast_ctx) -> float:
        return self.val.loss(ema, diff, autocast_ctx) if self.val else float("nan")

    def val_metrics(self, ema, diff) -> dict[str, float]:
        metrics = self.val.inpaint_metrics(ema, diff) if self.val else {}
        if self.field_val is not None:
            metrics.update({f"fields_{k}": v for k, v in self.field_val.inpaint_metrics(ema, diff).items()})
        return metrics

    def save(self, out: Path, ema, diff, meta: dict, metrics: dict, improved: bool, step: int) -> list[str]:
        cells = self.cells
        if cells is not None:
            meta["training"].update(train_images=len(cells.images), class_counts={c: int((cells.labels == i).sum()) for i, c in enumerate(cells.classes)})
        if self.cfg.sampler_loss > 0:
            meta["training"]["sampler_loss"] = {"weight": self.cfg.sampler_loss, "rows": self.cfg.sampler_rows,
                                                "steps": self.cfg.sampler_steps, "temperature": self.cfg.sampler_temperature}
        meta["training"]["augment"] = {"kind": self.cfg.augment, **(asdict(self.aug) if self.domain else {}),
                                       "seen_as_inferred": self.cfg.seen_as_inferred, "fade": self.cfg.fade}
        if self.fields:
            meta["training"]["fields"] = {"photos": self.fields.names, "held_back": self.fields.held_back, "share": self.cfg.field_share,
                                          "white_cells": sum(map(len, self.fields.cells)), "cell_share": self.cfg.cell_share}
        meta["normalize"] = self.reference
        meta["val"].update({f"ddim10_64px_{k}": round(v, 4) for k, v in metrics.items()})
        written = ["last.safetensors", "last.json"]
        if improved:
            save_weights(out / "best.safetensors", ema, diff.cfg, self.classes, meta)
            written += ["best.safetensors", "best.json"]
        save_weights(out / "last.safetensors", ema, diff.cfg, self.classes, meta)
        if self.val is not None:
            grids = [f"generated-{step:07d}.png", f"inpaint-{step:07d}.png"]
            sample_grid(ema, diff, self.val, out / grids[0], out / grids[1])
            written += grids
        return written


def train(cfg: TrainConfig) -> Path:
    return train_loop(cfg, FirstStage)
