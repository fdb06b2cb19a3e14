"""The inpainter as the CLI, the GPU job and the UI call it: weights in, full-size images out.

Windows of many pairs (and K samples of each) are batched into one sampler call, so the
model is loaded once and the GPU (or the CPU's AMX units) sees full batches.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from shared.imaging import colour
from shared.imaging.blend import keep_low_frequencies
from shared.options import GENERATE_GUIDANCE, GENERATE_SAMPLER, GENERATE_STEPS, SAMPLER_ARGS, InpaintOptions
from shared.imaging.preprocess import composite, thin_px
from shared.imaging.windows import Window, prepare

from gpu_job.inpainter.classical import lean
from gpu_job.inpainter.grain import add_grain
from gpu_job.inpainter.guard import MAX_FOREIGN, guard
from gpu_job.inpainter.ood import lean_share, leaning_message
from gpu_job.inpainter.sampler import sample
from gpu_job.inpainter.tensors import from_uint8, mask_tensor, to_uint8
from gpu_job.inpainter.weights import default_weights, load_weights, own_temperature, shipped, summary, weights_path

OTHER_MODEL = "more microscopes"  # what result.json's ood and model say filled a flagged pair
BATCH = 16  # windows per model call: the speed table in BENCHMARKS.md shows why


def combine(per_sample: list[list[np.ndarray]], ws: list[Window], how: str) -> list[np.ndarray]:
    """K samples of each window -> one prediction per window.

    mean: the mean of the samples, an estimate of the posterior mean: closest to the truth on
    average, and soft where the samples disagree (a nucleus's lobes become a haze). It is taken at
    model resolution and pasted once: the seam fix is linear in the patch, so one fix of the mean
    matches the mean of K fixes (to rounding) at 1/K of its cost.
    first: sample 0, a sharp, committed fill.
    nearest: the sample nearest the mean inside the window's mask: committed like one sample, and
    the one closest to the average."""
    if how == "first" or len(per_sample) == 1:
        return per_sample[0]
    means = [np.mean([s[j] for s in per_sample], axis=0, dtype=np.float32) for j in range(len(ws))]
    if how == "mean":
        return means
    picks = []
    for j, w in enumerate(ws):
        m = w.prep.mask
        picks.append(min((s[j] for s in per_sample), key=lambda x: float(((x - means[j])[m] ** 2).sum())))
    return picks


@dataclass
class InpaintResult:
    image: np.ndarray  # (H, W, 3) uint8: sample 0 (or the samples' mean), composited at the input's size (and redrawn by the texture stage if asked)
    samples: list[np.ndarray] = field(default_factory=list)  # K > 1: each sample pasted as it is (no seam fix)
    std: np.ndarray | None = None  # (H, W) float32 per-pixel std over samples (0 outside the mask)
    ood: dict | None = None  # is the image unlike the training images? (gpu_job/inpainter/ood.py; None without its weights)
    labels: list[str] = field(default_factory=list)  # the class each window's fill was conditioned on ("none": no label)
    fell_back: int = 0  # windows whose fill the guard replaced with a classical fill (gpu_job/inpainter/guard.py)
    model: dict | None = None  # the weights that made the fill, where not the inpainter's own: the model of more microscopes


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
    def __init__(self, weights=None, device: str = "auto", batch_size: int = BATCH, texture_weights=None, ood_weights=None,
                 labeler_weights=None, fields_weights=None):
        self.device = pick_device(device)
        self.texture_weights = texture_weights  # None: the shipped texture weights, loaded when an option asks
        self._texturer = None
        self.ood_weights = ood_weights  # None: the shipped out-of-distribution flag's, if they are there
        self._ood = None
        self.labeler_weights = labeler_weights  # None: the shipped labeller's, if they are there
        self._labeler = None
        self.model, self.diff, self.record = load_weights(weights, self.device)
        self.weights_file = Path(weights or default_weights()).resolve()
        self.fields_weights = fields_weights  # None: the shipped model of more microscopes, beside the shipped first stage
        self._fields = None
        self.model.to(memory_format=torch.channels_last)
        self.classes: list[str] = self.record["classes"]
        self.reference = self.record.get("normalize")  # the training set's colour statistics (shared/imaging/colour.py)
        self.lab = "adapt" in self.record  # a lab's adapted model (cellpaint adapt)
        self.batch_size = batch_size
        self.size = self.model.cfg.image_size

    def texturer(self):
        if self._texturer is None:
            from gpu_job.inpainter.texture import Texturer, default_texture_weights  # loaded only when an option asks for it

            path = self.texture_weights or default_texture_weights()
            if not Path(path).exists():
                raise ValueError(f"{path}: no texture-stage weights (train them with `cellpaint train-texture`)")
            self._texturer = Texturer(path, self.device)
        return self._texturer

    def ood_scorer(self):
        if self._ood is None:
            from gpu_job.inpainter.ood import OODScorer, default_ood_weights

            path = Path(self.ood_weights or default_ood_weights())
            self._ood = OODScorer(path, self.record.get("ood")) if path.exists() else False
        return self._ood or None

    def fields(self):
        """(model, diffusion, record) of the model trained on more microscopes (PBC cells and whole
        fields of another lab's smears), which fills the pairs the out-of-distribution flag calls
        unlike the training images; or None. Only beside the shipped first stage: a lab's weights
        (`cellpaint adapt`) or a run's fill every pair themselves."""
        if self._fields is None:
            path = self.fields_weights
            if path is None and self.weights_file == shipped("cellpaint").resolve():
                path = weights_path("fields")
            self._fields = load_weights(path, self.device) if path is not None and Path(path).exists() else False
            if self._fields:
                self._fields[0].to(memory_format=torch.channels_last)
        return self._fields or None

    def labeler(self):
        """The labeller ("auto" labels), or None: no weights, or weights of other classes than the model's."""
        if self._labeler is None:
            from gpu_job.inpainter.labeler import Labeler, default_labeler_weights

            path = Path(self.labeler_weights or default_labeler_weights())
            lab = Labeler(path) if path.exists() else None
            self._labeler = lab if lab is not None and lab.classes == self.classes else False
        return self._labeler or None

    def label_index(self, label: str | None) -> int:
        """A class's index for the model; none (and "auto", where the labeller is unsure) is the
        unconditional model's."""
        if label is None or label in ("none", "auto"):
            return self.model.cfg.num_classes
        if label not in self.classes:
            raise ValueError(f"unknown label {label!r}: choose one of {', '.join(self.classes)}, auto or none")
        return self.classes.index(label)

    def _run(self, known: np.ndarray, mask: np.ndarray, labels: list[int], seeds: list[int], opts: InpaintOptions,
             other: bool = False) -> np.ndarray:
        """known: (N,S,S,3) uint8, mask: (N,S,S) bool -> (N,S,S,3) uint8, in batches. `other`: with
        the model of more microscopes."""
        model, diff = self.fields()[:2] if other else (self.model, self.diff)
        out = []
        for i in range(0, len(known), self.batch_size):
            s = slice(i, i + self.batch_size)
            k = from_uint8(known[s]).to(self.device)
            m = mask_tensor(mask[s], self.device)
            lab = torch.tensor(labels[s], dtype=torch.long, device=self.device)
            # Every option the declaration routes to the sampler (shared/options.py SAMPLER_ARGS), by its keyword there.
            x = sample(model, diff, known=k.contiguous(memory_format=torch.channels_last), mask=m, seeds=seeds[s], labels=lab,
                       autocast=self.device.type == "cpu", **{arg: getattr(opts, name) for name, arg in SAMPLER_ARGS.items()})
            out.append(to_uint8(x))
        return np.concatenate(out)

    def inpaint_many(self, pairs: list[tuple[np.ndarray, np.ndarray]], opts: InpaintOptions | list[InpaintOptions],
                     windows: list[list[Window]] | None = None) -> list[InpaintResult]:
        """pairs: (image (H,W,3) uint8, mask (H,W) bool). `windows`: each pair's plan, if it was made
        already (a job manifest's, shared/imaging/windows.py); otherwise it is made here. The options
        were checked where they entered (InpaintOptions.check): they are used as they are."""
        optlist = opts if isinstance(opts, list) else [opts] * len(pairs)
        if windows is None:
            windows = [prepare(img, m, o.window, self.size) for (img, m), o in zip(pairs, optlist)]
        # Is each image unlike the training images? Those that are go to the model of more microscopes, if there is one.
        scorer = self.ood_scorer()
        oods = [scorer.score(np.stack([w.prep.image for w in ws]), np.stack([~w.prep.mask for w in ws])) if scorer else None
                for ws in windows]
        routed = [bool(ood and ood["unlike_training"]) for ood in oods]
        if any(routed) and self.fields() is None:
            routed = [False] * len(pairs)
        refs = [self.fields()[2].get("normalize") if r else self.reference for r in routed]
        # Each window's colours, moved to its model's training set's from its known pixels alone (or left as they are).
        moved = {(p, j): colour.as_model_sees(o.normalize, w.prep.image, ~w.prep.mask, refs[p])
                 for p, (o, ws) in enumerate(zip(optlist, windows)) for j, w in enumerate(ws)}
        moves = {key: move for key, (move, _) in moved.items()}
        # Each window as the model sees it (the labeller and the sampler read the same array).
        seen = {key: window for key, (_, window) in moved.items()}
        labels = self._window_labels(windows, optlist, seen, routed)
        preds = self._sample_windows(windows, optlist, moves, labels, seen, routed)
        per_pair = [[[preds[(p, k, j)] for j in range(len(ws))] for k in range(o.samples)] for p, (o, ws) in enumerate(zip(optlist, windows))]
        firsts = [self._paste(image, mask, o, ws, combine(per, ws, o.combine), o.seam)
                  for (image, mask), o, ws, per in zip(pairs, optlist, windows, per_pair)]
        # The texture stage and grain draw PBC's fine detail; they were measured on its microscope
        # (BENCHMARKS.md#realism). Another microscope's photos, routed to the model of more microscopes or
        # filled by a lab's own model, are softer and their fine detail is mostly their camera's noise:
        # grain cost the routed model 1.7 dB on Chula, the texture stage 0.15-0.3 dB on BCCD and Chula
        # (0.7 on thin strokes; one trained on their fields too still 0.2) and a lab's model 0.19, and a
        # classifier told no fill from real crops with or without them. Those pairs get neither.
        pbc_detail = [not other and not self.lab for other in routed]
        textured = [o.texture and d for o, d in zip(optlist, pbc_detail)]
        firsts = self._texture_all(firsts, [m for _, m in pairs], optlist, windows, refs, textured)
        for out, (_, mask), o, ws, d in zip(firsts, pairs, optlist, windows, pbc_detail):
            for j, w in enumerate(ws if o.grain > 0 and d else []):
                crop = w.box.crop(out)
                crop[...] = add_grain(crop, w.writes, ~w.box.crop(mask), item_seed(o.seed, o.samples, j), o.grain)  # the stream after the samples'
        results = [self._finish(image, mask, o, ws, per, out)
                   for (image, mask), o, ws, per, out in zip(pairs, optlist, windows, per_pair, firsts)]
        for p, res in enumerate(results):
            res.labels = [self._label_name(labels[(p, j)]) for j in range(len(windows[p]))]
        for res, ood, other, (image, mask), o, ws in zip(results, oods, routed, pairs, optlist, windows):
            res.ood = ood
            if ood is None:
                continue
            if other:
                res.model = {**summary(self.fields()[2]), "name": OTHER_MODEL}
                res.ood["model"] = OTHER_MODEL
            share = lean_share(res.ood["score"], o.fallback) if res.ood["unlike_training"] else 0.0
            if share > 0:
                # Where the model has not seen images like this one, its fill is not trusted alone: the
                # further from what it has seen, the more of the fill is a classical fill's.
                # Holes thinner than the model can draw (as the seam fix judges them) lean on biharmonic's fill alone.
                thin = thin_px(max((w.prep.side for w in ws), default=0), self.size)
                res.image = lean(res.image, image, mask, share, thin)
                res.ood.update(fallback=round(share, 3), message=leaning_message(share))
        return results

    def _label_name(self, index: int) -> str:
        return self.classes[index] if index < len(self.classes) else "none"

    def _window_labels(self, windows: list[list[Window]], optlist: list[InpaintOptions], seen: dict, routed: list[bool]) -> dict:
        """{(pair, window): class index}. "auto": the labeller's guess from the window as the model
        will see it (in the training set's colours), where it is sure enough; else no label. A pair
        routed to the model of more microscopes gets none: the labeller knows PBC's cells only, and
        on other microscopes' photos it was sure of platelet or erythroblast for plain background
        in out-of-focus fields (the model then drew a faint cell there) and of erythroblast for
        BCCD's white cells (BENCHMARKS.md, other labs' images). A lab's model keeps the guess: on
        BCCD's crops it scored 0.1 dB more with it than without."""
        out = {(p, j): self.label_index(o.label) for p, (o, ws) in enumerate(zip(optlist, windows)) for j in range(len(ws))}
        auto = [(p, j) for p, (o, ws) in enumerate(zip(optlist, windows)) if o.label == "auto" and not routed[p] for j in range(len(ws))]
        lab = self.labeler() if auto else None
        if lab is not None:
            fields = np.stack([seen[key] for key in auto])
            unknown = np.stack([windows[p][j].prep.mask for p, j in auto])
            for key, name in zip(auto, lab.guess(fields, unknown)):
                if name is not None:
                    out[key] = self.classes.index(name)
        return out

    def _sample_windows(self, windows: list[list[Window]], optlist: list[InpaintOptions], moves: dict, labels: dict,
                        seen: dict, routed: list[bool]) -> dict:
        """{(pair, sample, window): (S, S, 3) float32 prediction in the image's own colours}. Rows of
        all pairs that share a model and sampler settings go through it in the same batches. `seen`:
        each window in its model's training set's colours, `moves` the way back."""
        groups: dict[tuple, list[tuple[int, int, int]]] = {}
        for p, (o, ws) in enumerate(zip(optlist, windows)):
            if o.temperature is None:  # the temperature of the model that fills this pair
                o = replace(o, temperature=own_temperature(self.fields()[2] if routed[p] else self.record, o.samples))
            for k in range(o.samples):
                for j in range(len(ws)):
                    groups.setdefault((routed[p], *(getattr(o, f) for f in SAMPLER_ARGS)), []).append((p, k, j))
        preds = {}
        for (other, *key), rows in groups.items():
            o = InpaintOptions(**dict(zip(SAMPLER_ARGS, key)))
            known = np.stack([seen[(p, j)] for p, _, j in rows])
            mask = np.stack([windows[p][j].prep.mask for p, _, j in rows])
            seeds = [item_seed(optlist[p].seed, k, j) for p, k, j in rows]
            for (p, k, j), pred in zip(rows, self._run(known, mask, [labels[(p, j)] for p, _, j in rows], seeds, o, other)):
                preds[(p, k, j)] = moves[(p, j)].inverse(pred).astype(np.float32)
        return preds

    @staticmethod
    def _paste(image: np.ndarray, mask: np.ndarray, o: InpaintOptions, ws: list[Window], window_preds: list[np.ndarray], seam: bool) -> np.ndarray:
        """One prediction per window -> the pair at full size (only the mask's pixels change)."""
        out = image.copy()
        for w, pred in zip(ws, window_preds):
            crop = w.box.crop(out)
            crop[...] = composite(crop, w.writes, pred, w.prep, o.feather, seam, w.box.crop(mask))
        return out

    def _texture_all(self, images: list[np.ndarray], masks: list[np.ndarray], optlist: list[InpaintOptions],
                     windows: list[list[Window]], refs: list[dict | None], textured: list[bool]) -> list[np.ndarray]:
        """The texture stage on every window of the pairs that get it (`textured`), of every pair at
        once: their tiles share model calls (gpu_job/inpainter/texture.py). Per window, in the training
        set's colours when asked; only each window's `writes` change."""
        jobs: dict[tuple, list[tuple]] = {}  # (steps, start) -> (pair, window, colour move, crop in model colours, seed)
        for p, (o, ws) in enumerate(zip(optlist, windows)):
            if not textured[p]:
                continue
            for j, w in enumerate(ws):
                crop = w.box.crop(images[p])
                move, src = colour.as_model_sees(o.normalize, crop, ~w.box.crop(masks[p]), refs[p])
                jobs.setdefault((o.texture_steps, o.texture_start), []).append((p, w, move, src, item_seed(o.seed, 0, j)))
        out = [im.copy() for im in images]
        for (steps, start), rows in jobs.items():
            redrawn_all = self.texturer().refine_many([(src, w.writes) for _, w, _, src, _ in rows], [r[-1] for r in rows], steps, start)
            for (p, w, move, _, _), red in zip(rows, redrawn_all):
                crop = w.box.crop(out[p])
                redrawn = crop.copy()
                redrawn[w.writes] = red[w.writes] if move is colour.IDENTITY else colour.to_uint8(move.inverse(red[w.writes]))
                # Grain only: the normalisation's round trip and the stage itself drift colours a little,
                # and on a plain background that showed as a tinted disk (BENCHMARKS.md).
                crop[...] = keep_low_frequencies(crop, redrawn, w.writes)
        return out

    def _finish(self, image: np.ndarray, mask: np.ndarray, o: InpaintOptions, ws: list[Window], per_sample: list[list[np.ndarray]],
                image_out: np.ndarray) -> InpaintResult:
        """One pair's composited (and textured) result -> its InpaintResult: the guard, and the
        samples' spread when there are several."""
        fell_back = 0
        if o.guard or o.fallback > 0:  # `--fallback 0 --no-guard`: the model's fill, with no classical share at all
            for w in ws:
                crop = w.box.crop(image_out)
                crop[...], share = guard(crop, w.writes, w.box.crop(mask), foreign=o.guard, plain=o.fallback > 0)
                fell_back += share > MAX_FOREIGN
        samples, std = [image_out], None
        if o.samples > 1:
            samples = [self._paste(image, mask, o, ws, s, False) for s in per_sample]  # plain pastes: cheap, and enough for the spread
            std = np.stack(samples).astype(np.float32).std(axis=0).mean(axis=-1)
            std[~mask] = 0.0
        return InpaintResult(image_out, samples, std, fell_back=fell_back)

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

    def generate(self, n: int, label: str | None = None, seed: int = 0, steps: int = GENERATE_STEPS, sampler: str = GENERATE_SAMPLER,
                 guidance: float = GENERATE_GUIDANCE) -> np.ndarray:
        """Whole cells (phase 1): everything masked. (n, S, S, 3) uint8. `label`: a class, "any"
        (a class per cell, drawn from the training mix; guided) or None/"none" (unconditional)."""
        s = self.size
        known = np.zeros((n, s, s, 3), np.uint8)
        mask = np.ones((n, s, s), bool)
        opts = InpaintOptions(steps=steps, sampler=sampler, guidance=guidance, temperature=1.0)  # whole cells: the model's own spread
        return self._run(known, mask, self.generate_labels(n, label, seed), [item_seed(seed, i, 0) for i in range(n)], opts)
