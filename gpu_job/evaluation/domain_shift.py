"""`cellpaint evaluate --domain-shift`: fills on images unlike the training set, judged the way a
hematologist would, beside classical fills.

Three sources, none ever trained on:
- BCCD whole-field smear photos (another microscope, camera and stain; ../shared/data/bccd): per
  photo, disks on plain background and inside a red cell (their VOC boxes and the image's own
  background say where), and an ellipse over part of the white cell; with `crops`, also the white
  cell cropped as a lab would upload it, masked as people draw (a blob, a box, strokes);
- the Chula fields held back from training (a third microscope and camera; every 5th photo,
  shared/photos.split, as training holds them back), as they are and with a strong colour cast:
  two disks on plain background and one inside a red cell (its labelled centre), sized by the
  photo's own cell width;
- PBC val cells with synthetic shifts (stain, scale, small, blur, soft) and without: an ellipse over part of
  the cell's nucleus and cytoplasm, and a disk on background; with `pbc_crops`, also masked as the
  BCCD crops are (the same masks on sharp cells of the training set's microscope, restained, or
  restained and soft as BCCD's photos are).

Per region kind and method: PSNR / SSIM / MAE inside the region; the invented-nucleus rate (a
background or red-cell region whose truth has no nucleus-coloured pixels and whose fill does);
the share of fills more than 6 dB below biharmonic's; and for white-cell regions, class kept (a
classifier trained on PBC train gives the restored cell the class it gives the real one) and a
realism distance (KID on that classifier's features, restored against real cells).
"""
from __future__ import annotations

import json
import time
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter
from tqdm import tqdm

from gpu_job.inpainter.inpaint import Inpainter
from gpu_job.inpainter.ood import features
from shared.imaging.images import load_image, save_png
from shared.options import OPTIONS, OWN_MACHINE, InpaintOptions
from shared.imaging.masks import USER_KINDS, user_mask
from shared.imaging.photos import list_photos, split
from shared.imaging.preprocess import preprocess
from shared.imaging.preview import grid, overlay
from shared.imaging.scale import cell_px
from shared.imaging.colour import hed_to_rgb, nucleus_coloured, rgb_to_hed, rgb_to_lab, to_uint8

from gpu_job.evaluation.classifier import load_or_train_classifier, predict
from gpu_job.evaluation.evaluate import baselines, told
from gpu_job.data.metrics import masked_metrics

INVENTED = 0.015  # a fill invents a nucleus when at least this share of its region is nucleus-coloured...
ABSENT = 0.002  # ...and at most this share of the truth's is
WORSE_DB = 6.0


@dataclass
class DomainConfig:
    bccd: str = "../shared/data/bccd"
    chula: str = "../shared/data/chula"  # fields/ and labels/; the held-back fields only
    hold_every: int = 5  # as training's --hold-every: every n-th field photo is the measuring set
    chula_shifts: tuple[str, ...] = ("none", "cast")
    pbc: str = "../shared/data/pbc/val"
    train: str = "../shared/data/pbc/train"  # the classifier's training set
    out: str = "runs/domain"  # holds data-derived pictures: never commit it (data licence rule)
    weights: str | None = None
    texture: str | None = None  # texture-stage weights (None: the shipped ones)
    images: int = 40  # BCCD photos (the first, sorted by name)...
    crops: int = 0  # ...and BCCD photos whose white cell is cropped and masked as a lab would (blob, box, strokes)
    skip_images: int = 0  # ...after passing over this many (photos 41-110 are where the fallback share was chosen)
    per_class: int = 2  # PBC val cells per class, for each shift
    pbc_crops: int = 0  # ...and PBC val cells per class, for each shift, masked as the BCCD crops are
    shifts: tuple[str, ...] = ("none", "stain", "scale", "blur")
    radius: int = 22  # px of the disks
    variants: dict[str, dict] = field(default_factory=dict)  # name -> options on top of the default
    device: str = "auto"
    seed: int = 0


@dataclass
class Region:
    kind: str  # background | rbc | wbc (regions of whole photos); blob | box | strokes (white-cell crops)
    mask: np.ndarray  # (H, W) bool


@dataclass
class Case:
    source: str  # "bccd", "bccd crops", "chula:<shift>", "pbc:<shift>" or "pbc crops:<shift>"
    name: str
    image: np.ndarray
    regions: list[Region]
    field: tuple[int, int, int, int] | None = None  # (top, left, side, side) of the white cell's field, for class kept

    @property
    def mask(self) -> np.ndarray:
        return np.any([r.mask for r in self.regions], axis=0)

    @property
    def known_class(self) -> str | None:
        """A PBC cell's class (its folder); BCCD's boxes say only "WBC"."""
        return self.name.split("/")[0] if self.source.startswith("pbc") else None


def nucleus_share(image: np.ndarray, region: np.ndarray) -> float:
    return float(nucleus_coloured(image[region]).mean())


def _disk(shape, cy, cx, r) -> np.ndarray:
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def _ellipse(shape, cy, cx, ry, rx) -> np.ndarray:
    img = Image.new("L", (shape[1], shape[0]), 0)
    ImageDraw.Draw(img).ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=255)
    return np.asarray(img) > 127


def background(image: np.ndarray, margin: int) -> np.ndarray:
    """Pixels of plain background at least `margin` px from any cell: lighter than Otsu's
    threshold on L*, then eroded."""
    from shared.imaging.scale import _otsu

    light = rgb_to_lab(image)[..., 0]
    bg = Image.fromarray(((light > _otsu(light)) * 255).astype(np.uint8))
    return np.asarray(bg.filter(ImageFilter.MinFilter(2 * margin + 1))) > 127


def _voc(xml: Path) -> list[tuple[str, int, int, int, int]]:
    out = []
    for o in ET.parse(xml).getroot().iter("object"):
        b = o.find("bndbox")
        out.append((o.find("name").text, *(int(float(b.find(k).text)) for k in ("xmin", "ymin", "xmax", "ymax"))))
    return out


def background_disks(free: np.ndarray, r: int, rng: np.random.Generator, n: int = 2) -> list[Region]:
    """Up to n disks of radius r on plain background (`free`), away from the border and 4 r apart."""
    free = free.copy()
    free[: r + 2], free[-r - 2 :], free[:, : r + 2], free[:, -r - 2 :] = False, False, False, False
    regions, (ys, xs) = [], np.nonzero(free)
    for _ in range(n):
        if not len(ys):
            break
        k = rng.integers(len(ys))
        regions.append(Region("background", _disk(free.shape, ys[k], xs[k], r)))
        far = (ys - ys[k]) ** 2 + (xs - xs[k]) ** 2 > (4 * r) ** 2
        ys, xs = ys[far], xs[far]
    return regions


def bccd_cases(root: str | Path, n: int, r: int, seed: int, skip: int = 0) -> list[Case]:
    cases = []
    for i, f in enumerate(sorted(Path(root).glob("*.jpg"))[: skip + n]):
        if i < skip:  # photo i's regions are the same whichever subset it is measured in
            continue
        rng = np.random.default_rng([seed, i])
        img = load_image(f)
        h, w = img.shape[:2]
        boxes = _voc(f.with_suffix(".xml"))
        free = background(img, r + 6)
        for _, x0, y0, x1, y1 in boxes:  # the boxes say where cells are, also where the colour does not
            free[max(0, y0 - r) : y1 + r, max(0, x0 - r) : x1 + r] = False
        regions = background_disks(free, r, rng)
        wbcs = [b for b in boxes if b[0] == "WBC"]
        rbcs = [b for b in boxes if b[0] == "RBC" and min(b[3] - b[1], b[4] - b[2]) >= 2 * r + 8
                and b[1] > 0 and b[2] > 0 and b[3] < w and b[4] < h
                and not any(_overlap(b, c) for c in wbcs)]
        if rbcs:
            _, x0, y0, x1, y1 = rbcs[rng.integers(len(rbcs))]
            regions.append(Region("rbc", _disk((h, w), (y0 + y1) // 2, (x0 + x1) // 2, r)))
        field_box = None
        inside = [b for b in wbcs if b[1] > 4 and b[2] > 4 and b[3] < w - 4 and b[4] < h - 4]
        if inside:
            _, x0, y0, x1, y1 = inside[0]
            cy, cx = (y0 + y1) / 2 + rng.uniform(-0.1, 0.1) * (y1 - y0), (x0 + x1) / 2 + rng.uniform(-0.1, 0.1) * (x1 - x0)
            m = _ellipse((h, w), cy, cx, 0.22 * (y1 - y0), 0.3 * (x1 - x0))
            if not any((m & reg.mask).any() for reg in regions):
                regions.append(Region("wbc", m))
                side = int(2.6 * max(x1 - x0, y1 - y0))
                field_box = (int((y0 + y1) / 2 - side / 2), int((x0 + x1) / 2 - side / 2), side, side)
        if regions:
            cases.append(Case("bccd", f.stem, img, regions, field_box))
    return cases


def bccd_crop_cases(root: str | Path, n: int, seed: int, skip: int = 0) -> list[Case]:
    """A crop around each BCCD photo's white cell, as a lab would upload a white cell: the square
    of 2.6x the cell's box (at most the photo's height), with one mask of each kind people draw
    (shared/imaging/masks.py user_mask: a blob, a box, strokes, sized by the crop), near its middle
    so that it covers part of the cell. One case per mask: each crop is restored on its own."""
    cases = []
    for i, f in enumerate(sorted(Path(root).glob("*.jpg"))[: skip + n]):
        if i < skip:
            continue
        img = load_image(f)
        h, w = img.shape[:2]
        wbcs = [b for b in _voc(f.with_suffix(".xml")) if b[0] == "WBC"]
        if not wbcs:
            continue
        _, x0, y0, x1, y1 = wbcs[0]
        side = min(h, w, int(2.6 * max(x1 - x0, y1 - y0)))
        top = int(np.clip((y0 + y1) / 2 - side / 2, 0, h - side))
        left = int(np.clip((x0 + x1) / 2 - side / 2, 0, w - side))
        crop = np.ascontiguousarray(img[top : top + side, left : left + side])
        cy, cx = (y0 + y1) / 2 - top, (x0 + x1) / 2 - left
        cases += crop_cases("bccd crops", f.stem, crop, (cy, cx), [seed, i])
    return cases


def crop_cases(source: str, name: str, crop: np.ndarray, centre: tuple[float, float], seed: list[int]) -> list[Case]:
    """One case per kind of mask people draw (a blob, a box, strokes; shared/imaging/masks.py
    user_mask, sized by the square crop), near the white cell's centre so that it covers part of it."""
    side = crop.shape[0]
    cases = []
    for k, kind in enumerate(USER_KINDS):
        rng = np.random.default_rng([*seed, 7, k])
        jitter = rng.uniform(-0.1, 0.1, 2) * side
        cases.append(Case(source, f"{name}:{kind}", crop, [Region(kind, user_mask(rng, side, side, side, kind, (centre[0] + jitter[0], centre[1] + jitter[1])))]))
    return cases


def pbc_files(root: str | Path, per_class: int) -> list[Path]:
    """The first `per_class` cells of each class folder, by name."""
    return [f for c in sorted(p for p in Path(root).iterdir() if p.is_dir()) for f in sorted(c.glob("*.jpg"))[:per_class]]


def pbc_crop_cases(root: str | Path, per_class: int, shifts: tuple[str, ...], seed: int) -> list[Case]:
    """PBC val cells (the white cell in the middle of each) under each shift, masked as the BCCD
    crops are: the same masks on the training set's microscope, or on it made to look like another."""
    files = pbc_files(root, per_class)
    cases = []
    for s in shifts:
        for i, f in enumerate(files):
            img = shift(load_image(f), s, np.random.default_rng([seed, i, len(s)]))
            side = min(img.shape[:2])
            top, left = (img.shape[0] - side) // 2, (img.shape[1] - side) // 2
            crop = np.ascontiguousarray(img[top : top + side, left : left + side])
            cases += crop_cases(f"pbc crops:{s}", f"{f.parent.name}/{f.stem}", crop, (side / 2, side / 2), [seed, i])
    return cases


def chula_cases(root: str | Path, hold_every: int, shifts: tuple[str, ...], seed: int) -> list[Case]:
    """The held-back Chula fields: two background disks and one inside a labelled red cell each,
    of radius 0.4 of the photo's red-cell width (so inside a red cell means inside it)."""
    root = Path(root)
    _, held = split(list_photos([root / "fields"]), hold_every)
    cases = []
    for s in shifts:
        for i, f in enumerate(held):
            rng = np.random.default_rng([seed, i, len(s)])
            img = shift(load_image(f), s, rng)
            h, w = img.shape[:2]
            r = max(6, int(round(0.4 * (cell_px(img) or 30))))
            regions = background_disks(background(img, r + 4), r, rng)
            labels = root / "labels" / f"{f.stem}.txt"
            points = [tuple(map(int, line.split()[:2])) for line in labels.read_text().splitlines() if line.strip()] if labels.exists() else []
            points = [(x, y) for x, y in points if 2 * r < x < w - 2 * r and 2 * r < y < h - 2 * r
                      and not any((_disk((h, w), y, x, r) & reg.mask).any() for reg in regions)]
            if points:
                x, y = points[rng.integers(len(points))]
                regions.append(Region("rbc", _disk((h, w), y, x, r)))
            if regions:
                cases.append(Case(f"chula:{s}", f.stem, img, regions))
    return cases


def _overlap(a, b) -> bool:
    return not (a[3] <= b[1] or b[3] <= a[1] or a[4] <= b[2] or b[4] <= a[2])


def shift(image: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """Another microscope's view of a PBC cell: its stain, its magnification or its focus."""
    if kind == "none":
        return image
    if kind == "stain":  # stain concentrations and white balance of another lab (Tellez et al. 2018)
        hed = rgb_to_hed(image) * rng.uniform(0.65, 1.35, 3) + rng.uniform(-0.05, 0.05, 3)
        return to_uint8(hed_to_rgb(hed) * rng.uniform(0.9, 1.1, 3))
    if kind in ("scale", "small"):  # 1.5x the magnification, or 0.6x (a lower-power objective)
        h, w = image.shape[:2]
        f = 1.5 if kind == "scale" else 0.6
        return np.asarray(Image.fromarray(image).resize((int(w * f), int(h * f)), Image.Resampling.LANCZOS))
    if kind == "blur":  # out of focus
        return np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(2.5)))
    if kind == "soft":  # another lab's stain seen through softer optics by a camera of about a third the resolution
        h, w = image.shape[:2]
        coarse = Image.fromarray(shift(image, "stain", rng)).filter(ImageFilter.GaussianBlur(1.0)).resize((round(w * 0.35), round(h * 0.35)), Image.Resampling.BILINEAR)
        return np.asarray(coarse.resize((w, h), Image.Resampling.BICUBIC))
    if kind == "cast":  # a camera's white balance set far off: one channel up to 30 % stronger, another weaker
        gains = np.ones(3)
        up, down = rng.choice(3, 2, replace=False)
        gains[up], gains[down] = rng.uniform(1.15, 1.3), rng.uniform(0.75, 0.88)
        return to_uint8(image * gains)
    raise ValueError(f"unknown shift {kind!r}: use none, stain, scale, small, blur, soft or cast")


def pbc_cases(root: str | Path, per_class: int, shifts: tuple[str, ...], r: int, seed: int) -> list[Case]:
    files = pbc_files(root, per_class)
    cases = []
    for s in shifts:
        for i, f in enumerate(files):
            rng = np.random.default_rng([seed, i, len(s)])
            img = shift(load_image(f), s, rng)
            h, w = img.shape[:2]
            k = w / 360  # masks scale with the image: the same cell parts at every magnification
            cy, cx = h / 2 + rng.uniform(-12, 12) * k, w / 2 + rng.uniform(-12, 12) * k
            regions = [Region("wbc", _ellipse((h, w), cy, cx, rng.uniform(28, 42) * k, rng.uniform(36, 52) * k))]
            free = background(img, int(r * k) + 4)
            free[: int(r * k) + 2], free[-int(r * k) - 2 :], free[:, : int(r * k) + 2], free[:, -int(r * k) - 2 :] = False, False, False, False
            free &= ~_disk((h, w), h / 2, w / 2, 110 * k)  # not the cell in the middle
            ys, xs = np.nonzero(free)
            if len(ys):
                j = rng.integers(len(ys))
                regions.append(Region("background", _disk((h, w), ys[j], xs[j], int(r * k))))
            cases.append(Case(f"pbc:{s}", f"{f.parent.name}/{f.stem}", img, regions, (0, 0, max(h, w), max(h, w))))
    return cases


def field_crop(image: np.ndarray, box: tuple[int, int, int, int], size: int = 64) -> np.ndarray:
    """The white cell's field at the classifier's size (edge-padded where it leaves the image)."""
    top, left, side, _ = box
    h, w = image.shape[:2]
    pad = max(0, -top, -left, top + side - h, left + side - w)
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    crop = padded[top + pad : top + pad + side, left + pad : left + pad + side]
    return preprocess(np.ascontiguousarray(crop), None, size).image


def kid(a: np.ndarray, b: np.ndarray) -> float:
    """Kernel inception distance (Binkowski et al. 2018): unbiased MMD^2 with the cubic polynomial
    kernel, on feature rows of a and b, both scaled by a's mean feature norm (so the kernel sees
    unit-size features whatever the classifier's scale). 0 when they come from one distribution;
    the estimate is unbiased, so on small sets it can dip below 0."""
    s = np.linalg.norm(a, axis=1).mean() / np.sqrt(a.shape[1])
    a, b = a / s, b / s
    d = a.shape[1]
    k = lambda x, y: (x @ y.T / d + 1) ** 3  # noqa: E731
    kaa, kbb, kab = k(a, a), k(b, b), k(a, b)
    m, n = len(a), len(b)
    return float((kaa.sum() - np.trace(kaa)) / (m * (m - 1)) + (kbb.sum() - np.trace(kbb)) / (n * (n - 1)) - 2 * kab.mean())


def methods(cfg: DomainConfig) -> dict[str, InpaintOptions]:
    out = {"cellpaint default": InpaintOptions(seed=cfg.seed)}
    for name, opts in cfg.variants.items():
        out[f"cellpaint {name}"] = InpaintOptions.from_dict({"seed": cfg.seed, **opts}, OWN_MACHINE)
    return out


def evaluate_domain_shift(cfg: DomainConfig) -> dict:
    out_dir = Path(cfg.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    cases = []
    if cfg.images and Path(cfg.bccd).is_dir():
        cases += bccd_cases(cfg.bccd, cfg.images, cfg.radius, cfg.seed, cfg.skip_images)
    if cfg.crops and Path(cfg.bccd).is_dir():
        cases += bccd_crop_cases(cfg.bccd, cfg.crops, cfg.seed, cfg.skip_images)
    if cfg.chula_shifts and (Path(cfg.chula) / "fields").is_dir():
        cases += chula_cases(cfg.chula, cfg.hold_every, cfg.chula_shifts, cfg.seed)
    if cfg.per_class and Path(cfg.pbc).is_dir():
        cases += pbc_cases(cfg.pbc, cfg.per_class, cfg.shifts, cfg.radius, cfg.seed)
    if cfg.pbc_crops and Path(cfg.pbc).is_dir():
        cases += pbc_crop_cases(cfg.pbc, cfg.pbc_crops, cfg.shifts, cfg.seed)
    if not cases:
        raise FileNotFoundError(f"{cfg.bccd}, {cfg.chula}, {cfg.pbc}: no images to measure on")
    net = load_or_train_classifier(cfg.train)
    inp = Inpainter(cfg.weights, cfg.device, texture_weights=cfg.texture)
    outputs: dict[str, list[np.ndarray]] = {}
    timing = {}
    for name, opts in methods(cfg).items():
        t0, res = time.time(), []
        for i in tqdm(range(0, len(cases), 8), desc=name):
            part = cases[i : i + 8]
            res += [r.image for r in inp.inpaint_many([(c.image, c.mask) for c in part], told(opts, [c.known_class for c in part]))]
        outputs[name], timing[name] = res, (time.time() - t0) / len(cases)
    for name, fn in {k: v for k, v in baselines().items() if k in ("biharmonic", "harmonic + biharmonic", "OpenCV Telea")}.items():
        t0 = time.time()
        outputs[name] = [_keep_outside(c, fn(c.image, c.mask)) for c in tqdm(cases, desc=name)]
        timing[name] = (time.time() - t0) / len(cases)
    rows = score(cases, outputs, net)
    report = {"config": asdict(cfg), "cases": len(cases), "seconds_per_pair": timing, "summary": summarise(rows), "rows": rows}
    (out_dir / "metrics.json").write_text(json.dumps(report, indent=1, default=float) + "\n")
    (out_dir / "metrics.md").write_text(markdown(report))
    pictures(cases, outputs, out_dir / "fills.png")
    print(markdown(report))
    return report


def _keep_outside(c: Case, out: np.ndarray) -> np.ndarray:
    res = c.image.copy()
    res[c.mask] = out[c.mask]
    return res


@torch.no_grad()
def score(cases: list[Case], outputs: dict[str, list[np.ndarray]], net) -> list[dict]:
    rows = []
    with_cell = [c for c in cases if c.field]
    real = np.stack([field_crop(c.image, c.field) for c in with_cell]) if with_cell else None
    truth_class = predict(net, real) if with_cell else []
    real_features = features(net, real) if with_cell else None
    groups = {g: np.array([group(c.source) == g for c in with_cell]) for g in {group(c.source) for c in with_cell}}
    for name, outs in outputs.items():
        crops = np.stack([field_crop(o, c.field) for c, o in zip(cases, outs) if c.field]) if with_cell else None
        kept = (predict(net, crops) == truth_class) if with_cell else []
        fake_features = features(net, crops) if with_cell else None
        for g, sel in groups.items():
            if sel.sum() > 2:
                rows.append({"method": name, "group": g, "kid": kid(real_features[sel], fake_features[sel]), "n": int(sel.sum())})
        j = 0
        for i, (c, o) in enumerate(zip(cases, outs)):
            for k, reg in enumerate(c.regions):
                m = masked_metrics(c.image, o, reg.mask)
                row = {"method": name, "case": i, "region": k, "source": c.source, "kind": reg.kind, "psnr": m["psnr"], "ssim": m["ssim"], "mae": m["mae"],
                       "truth_nucleus": nucleus_share(c.image, reg.mask), "fill_nucleus": nucleus_share(o, reg.mask)}
                if reg.kind == "wbc" and c.field:
                    row["class_kept"] = bool(kept[j])
                rows.append(row)
            j += bool(c.field)
    # Each region against biharmonic's fill of the same region (a photo has two background disks).
    bih = {(r["case"], r["region"]): r["psnr"] for r in rows if r["method"] == "biharmonic" and "kind" in r}
    for r in rows:
        if "kind" in r:
            r["below_biharmonic"] = bool(r["psnr"] < bih[(r["case"], r["region"])] - WORSE_DB)
            r["invented_nucleus"] = bool(r["kind"] in ("background", "rbc") and r["truth_nucleus"] <= ABSENT and r["fill_nucleus"] >= INVENTED)
    return rows


def group(source: str) -> str:
    """A report's group: the source, and its shift where it has one ("chula (cast)", "pbc crops (soft)")."""
    name, _, shifted = source.partition(":")
    return name if shifted in ("", "none") else f"{name} ({shifted})"


def summarise(rows: list[dict]) -> dict:
    out: dict = {}
    for r in rows:
        if "kind" not in r:
            out.setdefault(r["method"], {}).setdefault("kid", {})[r["group"]] = r["kid"]
            continue
        src = group(r["source"])
        for key in (f"{src} {r['kind']}", f"{src} all"):
            d = out.setdefault(r["method"], {}).setdefault(key, {"psnr": [], "ssim": [], "mae": [], "below": [], "invented": [], "kept": []})
            d["psnr"].append(r["psnr"]), d["ssim"].append(r["ssim"]), d["mae"].append(r["mae"]), d["below"].append(r["below_biharmonic"])
            if r["kind"] in ("background", "rbc"):
                d["invented"].append(r["invented_nucleus"])
            if "class_kept" in r:
                d["kept"].append(r["class_kept"])
    return {m: {k: (v if k == "kid" else {s: (float(np.mean(x)) if x else None) for s, x in v.items()} | {"n": len(v["psnr"])})
                for k, v in d.items()} for m, d in out.items()}


def markdown(report: dict) -> str:
    s = report["summary"]
    keys = sorted({k for d in s.values() for k in d if k != "kid"})
    pct = lambda x: "-" if x is None else f"{100 * x:.0f} %"  # noqa: E731
    lines = ["Inside each region: PSNR dB / SSIM / MAE; invented = fills with a nucleus the truth lacks (background and red-cell regions);"
             f" below = fills more than {WORSE_DB:g} dB below biharmonic's; kept = class kept (white-cell regions).", ""]
    lines += ["| method | region | n | PSNR / SSIM / MAE | invented | below | kept |", "|---|---|---|---|---|---|---|"]
    for k in keys:
        for meth, d in s.items():
            if k in d:
                v = d[k]
                lines.append(f"| {meth} | {k} | {v['n']} | {v['psnr']:.2f} / {v['ssim']:.3f} / {v['mae']:.1f} | {pct(v['invented'])} | {pct(v['below'])} | {pct(v['kept'])} |")
    groups = sorted({g for d in s.values() for g in d.get("kid", {})})
    lines += ["", "KID on the classifier's features, restored against real white cells (lower = more realistic; ~0 = indistinguishable)"
              + (":" if groups else "; no white-cell regions in this run, so seconds per pair only:"), "",
              "| " + " | ".join(["method", *groups, "s/pair"]) + " |", "|---" * (len(groups) + 2) + "|"]
    lines += ["| " + " | ".join([m, *(f"{d.get('kid', {}).get(g, float('nan')):.4f}" for g in groups), f"{report['seconds_per_pair'][m]:.2f}"]) + " |"
              for m, d in s.items()]
    return "\n".join(lines) + "\n"


def pictures(cases: list[Case], outputs: dict[str, list[np.ndarray]], path: Path, per_kind: int = 3, crop: int = 96) -> None:
    """Rows: one region each (crops around it) as original | masked | each method."""
    rows, seen = [], {}
    for i, c in enumerate(cases):
        for reg in c.regions:
            key = (c.source, reg.kind)
            if seen.get(key, 0) >= per_kind:
                continue
            seen[key] = seen.get(key, 0) + 1
            ys, xs = np.nonzero(reg.mask)
            side = max(crop, int(1.6 * max(np.ptp(ys), np.ptp(xs))))
            top = int(np.clip((ys.min() + ys.max()) // 2 - side // 2, 0, max(0, c.image.shape[0] - side)))
            left = int(np.clip((xs.min() + xs.max()) // 2 - side // 2, 0, max(0, c.image.shape[1] - side)))
            cut = lambda a: np.ascontiguousarray(a[top : top + side, left : left + side])  # noqa: E731
            rows.append([cut(c.image), cut(overlay(c.image, reg.mask))] + [cut(outputs[m][i]) for m in outputs])
    if rows:
        save_png(grid([[np.asarray(Image.fromarray(x).resize((crop, crop), Image.Resampling.LANCZOS)) for x in r] for r in rows], pad=3), path)


def parse_variant(text: str) -> tuple[str, dict]:
    """'name:key=value,key=value' -> (name, options), each value typed by shared/options.py."""
    name, _, spec = text.partition(":")
    opts = {}
    for part in filter(None, spec.split(",")):
        k, _, v = part.partition("=")
        o = OPTIONS.get(k)
        if o is None:
            raise ValueError(f"--variant {text}: unknown option {k!r}; the options are {', '.join(OPTIONS)}")
        if o.default is None and v.lower() in ("auto", "none"):
            opts[k] = None  # the option's own default: the window from the cells' size, no label
        else:
            opts[k] = (v.lower() in ("1", "true", "yes")) if o.kind is bool else o.kind(v)
    return name, opts
