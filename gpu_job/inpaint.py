"""The inpainter as the CLI, the GPU job and the UI call it: weights in, full-size images out.

Windows of many pairs (and K samples of each) are batched into one sampler call, so the
model is loaded once and the GPU (or the CPU's AMX units) sees full batches.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from shared.preprocess import composite
from shared.windows import DEFAULT_WINDOW, Window, plan_windows, region_mask, windows_for

from .defaults import COMBINE_CHOICES, DEFAULT_BATCH, DEFAULT_COMBINE, DEFAULT_TEXTURE, DEFAULT_GENERATE_GUIDANCE, DEFAULT_GENERATE_SAMPLER, DEFAULT_GENERATE_STEPS, DEFAULT_SAMPLES, DEFAULT_STEPS
from .report import from_uint8, to_uint8
from .sampler import sample
from .weights import load_weights


@dataclass
class InpaintOptions:
    steps: int = DEFAULT_STEPS
    sampler: str = "ddim"
    seed: int = 0
    label: str | None = None  # a class name of the weights, or None for "no label"
    samples: int = DEFAULT_SAMPLES  # K > 1 also gives a per-pixel standard deviation (uncertainty)
    guidance: float = 1.0  # classifier-free guidance scale; 1 = plain conditional
    feather: int = 0  # px inside the mask edge blended toward the original
    seam: bool = True  # correct the patch's low frequencies to meet the original (shared/blend.py)
    combine: str = DEFAULT_COMBINE  # "mean": the mean of the K samples; "first": sample 0
    window: int = DEFAULT_WINDOW  # source px per model field; <= 0 = whole image as one field
    texture: bool = DEFAULT_TEXTURE  # redraw the fill at full resolution with the texture stage (texture.py)


@dataclass
class InpaintResult:
    image: np.ndarray  # (H, W, 3) uint8: sample 0 (or the samples' mean), composited at the input's size (and redrawn by the texture stage if asked)
    samples: list[np.ndarray] = field(default_factory=list)  # K > 1: each sample pasted as it is (no seam fix)
    std: np.ndarray | None = None  # (H, W) float32 per-pixel std over samples (0 outside the mask)


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available")
    return torch.device(name)


def item_seed(seed: int, sample: int, window: int) -> int:
    """Independent, reproducible noise streams per (seed, sample, window)."""
    return int(np.random.SeedSequence([seed, sample, window]).generate_state(1)[0])


class Inpainter:
    def __init__(self, weights=None, device: str = "auto", batch_size: int = DEFAULT_BATCH, texture_weights=None):
        self.device = pick_device(device)
        self.texture_weights = texture_weights  # None: the shipped texture weights, loaded when an option asks
        self._texturer = None
        self.model, self.diff, self.record = load_weights(weights, self.device)
        self.model.to(memory_format=torch.channels_last)
        self.classes: list[str] = self.record["classes"]
        self.batch_size = batch_size
        self.size = self.model.cfg.image_size

    def texturer(self):
        if self._texturer is None:
            from .texture import Texturer, default_texture_weights

            path = self.texture_weights or default_texture_weights()
            if not Path(path).exists():
                raise ValueError(f"{path}: no texture-stage weights (train them with `cellpaint train-texture`)")
            self._texturer = Texturer(path, self.device)
        return self._texturer

    def label_index(self, label: str | None) -> int:
        if label is None or label == "none":
            return self.model.cfg.num_classes
        if label not in self.classes:
            raise ValueError(f"unknown label {label!r}: choose one of {', '.join(self.classes)} or none")
        return self.classes.index(label)

    def _run(self, known: np.ndarray, mask: np.ndarray, labels: list[int], seeds: list[int], opts: InpaintOptions) -> np.ndarray:
        """known: (N,S,S,3) uint8, mask: (N,S,S) bool -> (N,S,S,3) uint8, in batches."""
        out = []
        for i in range(0, len(known), self.batch_size):
            s = slice(i, i + self.batch_size)
            k = from_uint8(known[s]).to(self.device)
            m = torch.from_numpy(mask[s][:, None].astype(np.float32)).to(self.device)
            lab = torch.tensor(labels[s], dtype=torch.long, device=self.device)
            x = sample(self.model, self.diff, known=k.contiguous(memory_format=torch.channels_last), mask=m, seeds=seeds[s],
                       steps=opts.steps, method=opts.sampler, labels=lab, guidance=opts.guidance,
                       autocast=self.device.type == "cpu")
            out.append(to_uint8(x))
        return np.concatenate(out)

    def inpaint_many(self, pairs: list[tuple[np.ndarray, np.ndarray]], opts: InpaintOptions | list[InpaintOptions],
                     windows: list[list[Window]] | None = None) -> list[InpaintResult]:
        """pairs: (image (H,W,3) uint8, mask (H,W) bool). `windows`, if given, are the already
        prepared model inputs (from a job manifest); otherwise they are prepared here."""
        optlist = opts if isinstance(opts, list) else [opts] * len(pairs)
        for o in optlist:
            if o.combine not in COMBINE_CHOICES:
                raise ValueError(f"combine must be one of {', '.join(COMBINE_CHOICES)}, got {o.combine!r}")
            if o.samples < 1:
                raise ValueError(f"samples must be at least 1, got {o.samples}")
        plans = [plan_windows(m, o.window) for (_, m), o in zip(pairs, optlist)]
        if windows is None:
            windows = [windows_for(img, m, boxes, self.size) for (img, m), (boxes, _) in zip(pairs, plans)]
        for p, (ws, (boxes, _)) in enumerate(zip(windows, plans)):
            if [w.box for w in ws] != boxes:  # windows from a manifest must describe this very mask
                raise ValueError(f"pair {p}: prepared windows do not match its mask")
        # Flatten (pair, sample, window) into rows; rows sharing sampler settings batch together.
        groups: dict[tuple, list[tuple[int, int, int]]] = {}
        for p, (o, ws) in enumerate(zip(optlist, windows)):
            for k in range(o.samples):
                for j in range(len(ws)):
                    groups.setdefault((o.steps, o.sampler, o.guidance), []).append((p, k, j))
        preds: dict[tuple[int, int, int], np.ndarray] = {}
        for key, rows in groups.items():
            o = InpaintOptions(steps=key[0], sampler=key[1], guidance=key[2])
            known = np.stack([windows[p][j].prep.image for p, _, j in rows])
            mask = np.stack([windows[p][j].prep.mask for p, _, j in rows])
            labels = [self.label_index(optlist[p].label) for p, _, _ in rows]
            seeds = [item_seed(optlist[p].seed, k, j) for p, k, j in rows]
            for row, pred in zip(rows, self._run(known, mask, labels, seeds, o)):
                preds[row] = pred
        results = []
        for p, ((image, mask), o, ws, (_, labels)) in enumerate(zip(pairs, optlist, windows, plans)):
            def paste(window_preds: list[np.ndarray], seam: bool) -> np.ndarray:
                out = image.copy()
                for w, pred in zip(ws, window_preds):
                    crop = w.box.crop(out)
                    crop[...] = composite(crop, region_mask(mask, labels, w.box), pred, w.prep, o.feather, seam, w.box.crop(mask))
                return out

            per_sample = [[preds[(p, k, j)] for j in range(len(ws))] for k in range(o.samples)]
            # The mean of K samples estimates the posterior mean: smoother, closer on average. It is
            # taken at model resolution and pasted once: the seam fix is linear in the patch, so one
            # fix of the mean matches the mean of K fixes (to rounding) at 1/K of its cost.
            chosen = per_sample[0] if o.combine == "first" else [np.mean([s[j] for s in per_sample], axis=0, dtype=np.float32) for j in range(len(ws))]
            image_out = paste(chosen, o.seam)
            if o.texture:  # per window, as the first stage ran: a large image's scattered defects stay small crops
                for j, w in enumerate(ws):
                    crop = w.box.crop(image_out)
                    crop[...] = self.texturer().refine(crop, region_mask(mask, labels, w.box), seed=item_seed(o.seed, 0, j))
            samples, std = [image_out], None
            if o.samples > 1:
                samples = [paste(s, False) for s in per_sample]  # plain pastes: cheap, and enough for the spread
                std = np.stack(samples).astype(np.float32).std(axis=0).mean(axis=-1)
                std[~mask] = 0.0
            results.append(InpaintResult(image_out, samples, std))
        return results

    def inpaint(self, image: np.ndarray, mask: np.ndarray, opts: InpaintOptions | None = None) -> InpaintResult:
        return self.inpaint_many([(image, mask)], opts or InpaintOptions())[0]

    def class_shares(self) -> np.ndarray:
        """Each class's share of the training set, from the weights' record (uniform if it has none)."""
        counts = self.record.get("training", {}).get("class_counts")
        shares = np.array([counts[c] for c in self.classes], float) if counts else np.ones(len(self.classes))
        return shares / shares.sum()

    def generate_labels(self, n: int, label: str | None, seed: int) -> list[int]:
        """Class indices for n cells. "any" draws each cell's class from the training set's mix: the
        unconditional model (None/"none") over-produces some classes and never makes basophils."""
        if label != "any":
            return [self.label_index(label)] * n
        rng = np.random.default_rng([seed, 0xC1A55])
        return rng.choice(len(self.classes), n, p=self.class_shares()).tolist()

    def generate(self, n: int, label: str | None = None, seed: int = 0, steps: int = DEFAULT_GENERATE_STEPS, sampler: str = DEFAULT_GENERATE_SAMPLER,
                 guidance: float = DEFAULT_GENERATE_GUIDANCE) -> np.ndarray:
        """Whole cells (phase 1): everything masked. (n, S, S, 3) uint8. `label`: a class, "any"
        (a class per cell, drawn from the training mix; guided) or None/"none" (unconditional)."""
        s = self.size
        known = np.zeros((n, s, s, 3), np.uint8)
        mask = np.ones((n, s, s), bool)
        opts = InpaintOptions(steps=steps, sampler=sampler, guidance=guidance)
        return self._run(known, mask, self.generate_labels(n, label, seed), [item_seed(seed, i, 0) for i in range(n)], opts)
