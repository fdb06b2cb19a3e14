"""`cellpaint evaluate --realism`: can a classifier tell restored crops from real ones?

A two-sample classifier test (Lopez-Paz & Oquab 2017): for each cell, a square crop around its
mask from the original (real) and from each method's fill (restored). Two classifiers learn to
tell them apart, cross-validated by cell (a cell's real and restored crops are always in the same
fold, so a classifier cannot win by recognising the cell):
- a linear probe (logistic regression) on a frozen PBC cell classifier's features, which sees
  what a cell classifier sees;
- a small CNN trained from scratch on the crops, which also sees grain, seams and sharpness.
Held-out accuracy 0.5 means it cannot tell them apart; for n crops the chance band is about
0.5 ± 0.82/sqrt(n) (two-sided 95 %, binomial). The kernel distance (KID) on the same features
stands beside it. The crops the CNN found easiest are drawn next to their real ones: that is where
the tell is.

Sources: PBC val cells (blob and box masks over the cell) and the held-back Chula fields (blob and
box masks at random), never trained on.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import nn
from tqdm import tqdm

from gpu_job.evaluation.classifier import load_or_train_classifier
from gpu_job.evaluation.domain_shift import kid
from gpu_job.evaluation.evaluate import baselines
from gpu_job.inpainter.inpaint import Inpainter
from gpu_job.inpainter.ood import classifier, features
from gpu_job.inpainter.tensors import from_uint8
from shared.imaging.images import load_image, save_png
from shared.imaging.photos import list_photos, split
from shared.imaging.preprocess import preprocess
from shared.imaging.preview import grid
from shared.options import OWN_MACHINE, InpaintOptions

CROP = 64  # px the classifiers see
FOLDS = 5


@dataclass
class RealismConfig:
    pbc: str = "../shared/data/pbc/val"
    chula: str = "../shared/data/chula"
    train: str = "../shared/data/pbc/train"  # the feature classifier's training set
    out: str = "runs/realism"  # data-derived pictures: never commit it
    weights: str | None = None
    cells: int = 200  # PBC val cells (spread over the classes)
    fields: int = 40  # held-back Chula photos (two masks each)
    hold_every: int = 5
    variants: dict[str, dict] = field(default_factory=dict)  # name -> options on top of the default
    device: str = "auto"
    seed: int = 0
    cnn_epochs: int = 30


def user_mask(rng: np.random.Generator, h: int, w: int, cy: float, cx: float, r: float, kind: str) -> np.ndarray:
    img = Image.new("L", (w, h), 0)
    d = ImageDraw.Draw(img)
    if kind == "blob":
        ry, rx = r * rng.uniform(0.7, 1.0), r * rng.uniform(0.7, 1.0)
        d.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=255)
    else:
        a, b = r * rng.uniform(1.2, 1.8, 2)
        d.rectangle([cx - a / 2, cy - b / 2, cx + a / 2, cy + b / 2], fill=255)
    return np.asarray(img) > 127


def pbc_items(root: str, n: int, seed: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, image, mask): the first n // classes cells of each class, a blob or a box over the cell."""
    classes = sorted(p for p in Path(root).iterdir() if p.is_dir())
    per = max(1, n // len(classes))
    out = []
    for c in classes:
        for i, f in enumerate(sorted(c.glob("*.jpg"))[:per]):
            rng = np.random.default_rng([seed, len(out)])
            img = load_image(f)
            h, w = img.shape[:2]
            m = user_mask(rng, h, w, h / 2 + rng.uniform(-15, 15), w / 2 + rng.uniform(-15, 15), rng.uniform(35, 55), "blob" if i % 2 else "box")
            out.append((f"{c.name}/{f.stem}", img, m))
    return out


def field_items(root: str, n: int, hold_every: int, seed: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Two masks (a blob and a box) at random places of each held-back field photo."""
    from shared.imaging.scale import cell_px

    _, held = split(list_photos([Path(root) / "fields"]), hold_every)
    out = []
    for i, f in enumerate(held[:n]):
        img = load_image(f)
        h, w = img.shape[:2]
        r = 0.6 * (cell_px(img) or 30)
        for kind in ("blob", "box"):
            rng = np.random.default_rng([seed, i, len(kind)])
            out.append((f"{f.stem}:{kind}", img, user_mask(rng, h, w, rng.uniform(3 * r, h - 3 * r), rng.uniform(3 * r, w - 3 * r), r, kind)))
    return out


def crop(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """A square around the mask, twice its extent, at CROP px: the fill and its surroundings."""
    ys, xs = np.nonzero(mask)
    side = max(32, int(2 * max(np.ptp(ys), np.ptp(xs))))
    cy, cx = (ys.min() + ys.max()) // 2, (xs.min() + xs.max()) // 2
    h, w = image.shape[:2]
    top, left = int(np.clip(cy - side // 2, 0, max(0, h - side))), int(np.clip(cx - side // 2, 0, max(0, w - side)))
    return preprocess(np.ascontiguousarray(image[top:top + side, left:left + side]), None, CROP).image


def folds(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).permutation(n) % FOLDS


def probe_accuracy(real_f: np.ndarray, fake_f: np.ndarray, fold: np.ndarray) -> tuple[float, np.ndarray]:
    """Held-out accuracy of logistic regression on (standardised) features; and each fake crop's
    held-out probability of being restored."""
    p_fake = np.zeros(len(fake_f))
    correct = 0
    for k in range(FOLDS):
        tr, te = fold != k, fold == k
        x = np.concatenate([real_f[tr], fake_f[tr]])
        mu, sd = x.mean(0), x.std(0) + 1e-6
        xt = torch.tensor((x - mu) / sd, dtype=torch.float32)
        yt = torch.tensor([0] * tr.sum() + [1] * tr.sum(), dtype=torch.float32)
        lin = nn.Linear(x.shape[1], 1)
        opt = torch.optim.LBFGS(lin.parameters(), max_iter=200)

        def closure():
            opt.zero_grad()
            loss = nn.functional.binary_cross_entropy_with_logits(lin(xt)[:, 0], yt) + 1e-3 * lin.weight.pow(2).sum()
            loss.backward()
            return loss

        opt.step(closure)
        with torch.no_grad():
            pr = torch.sigmoid(lin(torch.tensor((real_f[te] - mu) / sd, dtype=torch.float32)))[:, 0].numpy()
            pf = torch.sigmoid(lin(torch.tensor((fake_f[te] - mu) / sd, dtype=torch.float32)))[:, 0].numpy()
        correct += (pr < 0.5).sum() + (pf >= 0.5).sum()
        p_fake[te] = pf
    return correct / (2 * len(fake_f)), p_fake


def cnn_accuracy(real: np.ndarray, fake: np.ndarray, fold: np.ndarray, epochs: int, seed: int) -> tuple[float, np.ndarray]:
    """Held-out accuracy of a small CNN trained from scratch (turns and flips as augmentation)."""
    from gpu_job.data.augment import turn

    p_fake = np.zeros(len(fake))
    correct = 0
    for k in range(FOLDS):
        torch.manual_seed(seed + k)
        rng = np.random.default_rng([seed, k])
        tr, te = fold != k, fold == k
        x, y = np.concatenate([real[tr], fake[tr]]), np.array([0] * tr.sum() + [1] * tr.sum())
        net = classifier(2)
        opt = torch.optim.AdamW(net.parameters(), 1e-3, weight_decay=1e-4)
        net.train()
        for _ in range(epochs * max(1, len(x) // 32)):
            idx = rng.integers(0, len(x), 32)
            batch = from_uint8(np.stack([turn(im, rng) for im in x[idx]]))
            loss = nn.functional.cross_entropy(net(batch), torch.from_numpy(y[idx]))
            opt.zero_grad()
            loss.backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            pr = torch.softmax(net(from_uint8(real[te])), 1)[:, 1].numpy()
            pf = torch.softmax(net(from_uint8(fake[te])), 1)[:, 1].numpy()
        correct += (pr < 0.5).sum() + (pf >= 0.5).sum()
        p_fake[te] = pf
    return correct / (2 * len(fake)), p_fake


def evaluate_realism(cfg: RealismConfig) -> dict:
    out_dir = Path(cfg.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    sources = {}
    if cfg.cells and Path(cfg.pbc).is_dir():
        sources["pbc"] = pbc_items(cfg.pbc, cfg.cells, cfg.seed)
    if cfg.fields and (Path(cfg.chula) / "fields").is_dir():
        sources["chula"] = field_items(cfg.chula, cfg.fields, cfg.hold_every, cfg.seed)
    if not sources:
        raise FileNotFoundError(f"{cfg.pbc}, {cfg.chula}: no images to measure on")
    net = load_or_train_classifier(cfg.train)
    inp = Inpainter(cfg.weights, cfg.device)
    methods = {"cellpaint default": InpaintOptions(seed=cfg.seed)}
    methods.update({f"cellpaint {k}": InpaintOptions.from_dict({"seed": cfg.seed, **v}, OWN_MACHINE) for k, v in cfg.variants.items()})
    report: dict = {"config": asdict(cfg), "sources": {}}
    for src, items in sources.items():
        real = np.stack([crop(img, m) for _, img, m in items])
        fold = folds(len(items), cfg.seed)
        real_f = features(net, real)
        rows, pictures, fills = {}, [], {}
        for name, opts in methods.items():
            outs = []
            for i in tqdm(range(0, len(items), 8), desc=f"{src}: {name}"):
                outs += [r.image for r in inp.inpaint_many([(img, m) for _, img, m in items[i:i + 8]], opts)]
            fills[name] = outs
        fills["biharmonic"] = [baselines()["biharmonic"](img, m) for _, img, m in tqdm(items, desc=f"{src}: biharmonic")]
        for name, outs in fills.items():
            fake = np.stack([crop(o, m) for o, (_, _, m) in zip(outs, items)])
            fake_f = features(net, fake)
            probe, _ = probe_accuracy(real_f, fake_f, fold)
            cnn, p = cnn_accuracy(real, fake, fold, cfg.cnn_epochs, cfg.seed)
            rows[name] = {"probe": round(float(probe), 3), "cnn": round(float(cnn), 3), "kid": round(kid(real_f, fake_f), 4), "n": len(items)}
            easiest = np.argsort(-p)[:6]
            pictures.append([real[i] for i in easiest] + [fake[i] for i in easiest])
        chance = round(0.82 / np.sqrt(len(items)), 3)
        report["sources"][src] = {"methods": rows, "chance_band": chance}
        save_png(grid(pictures, pad=3), out_dir / f"easiest-{src}.png")
    (out_dir / "realism.json").write_text(json.dumps(report, indent=1) + "\n")
    print(markdown(report))
    return report


def markdown(report: dict) -> str:
    lines = ["Held-out accuracy of telling restored from real crops (0.5 = cannot tell), and KID:", "",
             "| source | method | linear probe (PBC features) | small CNN | KID |", "|---|---|---|---|---|"]
    for src, r in report["sources"].items():
        for name, m in r["methods"].items():
            lines.append(f"| {src} (n={m['n']}, chance 0.5 ± {r['chance_band']}) | {name} | {m['probe']:.3f} | {m['cnn']:.3f} | {m['kid']:.4f} |")
    return "\n".join(lines) + "\n"
