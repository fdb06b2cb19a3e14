"""Random masks for training, the deterministic masks of `cellpaint evaluate`, and masks as people
draw them on a photo (`user_mask`: what `cellpaint adapt` and `--domain-shift --crops` measure with).

Shapes are drawn relative to the image size, so a mask made at 64x64 for training and one made
at 360x363 for evaluation have the same character. True = restore.
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

KINDS = ("box", "ellipse", "stroke")
USER_KINDS = ("blob", "box", "strokes")  # the masks people draw on a photo (user_mask): how fills are measured on their images
MIN_COVER, MAX_COVER = 0.03, 0.60


def dilate(m: np.ndarray, r: int = 1) -> np.ndarray:
    """(H, W) bool grown by r px: r 3x3 steps, a square of side 2r + 1 (outside the image counts as False)."""
    out = m.copy()
    for _ in range(r):
        p = np.pad(out, 1)
        rows = p[:-2] | p[1:-1] | p[2:]
        out = rows[:, :-2] | rows[:, 1:-1] | rows[:, 2:]
    return out


def _box(rng: np.random.Generator, draw: ImageDraw.ImageDraw, h: int, w: int, cover: float) -> None:
    aspect = rng.uniform(0.5, 2.0)
    bw = min(w, np.sqrt(cover * h * w * aspect))
    bh = min(h, cover * h * w / max(bw, 1))
    x0, y0 = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
    draw.rectangle([x0, y0, x0 + bw, y0 + bh], fill=255)


def _ellipse(rng: np.random.Generator, draw: ImageDraw.ImageDraw, h: int, w: int, cover: float) -> None:
    aspect = rng.uniform(0.6, 1.6)
    area = cover * h * w / (np.pi / 4)  # bounding-box area that gives the wanted ellipse area
    ew, eh = min(w, np.sqrt(area * aspect)), min(h, np.sqrt(area / aspect))
    cx, cy = rng.uniform(ew / 2, w - ew / 2 + 1e-6), rng.uniform(eh / 2, h - eh / 2 + 1e-6)
    draw.ellipse([cx - ew / 2, cy - eh / 2, cx + ew / 2, cy + eh / 2], fill=255)


def _stroke(rng: np.random.Generator, draw: ImageDraw.ImageDraw, h: int, w: int, cover: float) -> None:
    side = min(h, w)
    width = max(1, int(side * rng.uniform(0.04, 0.12)))
    # Stroke length that gives roughly the wanted cover for this width.
    length = cover * h * w / width
    x, y = rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h
    angle = rng.uniform(0, 2 * np.pi)
    pts = [(x, y)]
    drawn = 0.0
    while drawn < length:
        angle += rng.normal(0, 0.8)
        seg = rng.uniform(0.1, 0.3) * side
        nx = float(np.clip(x + seg * np.cos(angle), 0, w - 1))
        ny = float(np.clip(y + seg * np.sin(angle), 0, h - 1))
        drawn += max(np.hypot(nx - x, ny - y), 0.05 * side)  # progress even when pinned at a border
        x, y = nx, ny
        pts.append((x, y))
    draw.line(pts, fill=255, width=width, joint="curve")
    r = width / 2
    for px, py in pts:
        draw.ellipse([px - r, py - r, px + r, py + r], fill=255)


_DRAW = {"box": _box, "ellipse": _ellipse, "stroke": _stroke}


def random_mask(
    rng: np.random.Generator, h: int, w: int, kind: str | None = None, cover: float | None = None
) -> np.ndarray:
    """(h, w) bool mask of one shape kind with about `cover` of the area masked.

    Kinds: box, ellipse, stroke, or "full" (everything masked: whole-cell generation).
    The result is never empty and, unless kind == "full", never the whole image.
    """
    if kind == "full":
        return np.ones((h, w), bool)
    kind = kind or KINDS[rng.integers(len(KINDS))]
    # Log-uniform cover: small defects are as common in practice as large ones.
    cover = cover if cover is not None else float(np.exp(rng.uniform(np.log(MIN_COVER), np.log(MAX_COVER))))
    img = Image.new("L", (w, h), 0)
    _DRAW[kind](rng, ImageDraw.Draw(img), h, w, cover)
    m = np.asarray(img) > 127
    if not m.any():
        m[h // 2, w // 2] = True
    if m.all():
        m[0, 0] = False
    return m


def eval_masks(h: int, w: int, seed: int) -> dict[str, np.ndarray]:
    """The deterministic masks `cellpaint evaluate` scores, one per kind and size, for one image."""
    out = {}
    for i, kind in enumerate(KINDS):
        for j, (label, cover) in enumerate((("small", 0.05), ("large", 0.25))):
            rng = np.random.default_rng([seed, i, j])
            out[f"{kind}-{label}"] = random_mask(rng, h, w, kind, cover)
    return out


def user_mask(rng: np.random.Generator, h: int, w: int, side: int, kind: str, centre: tuple[float, float] | None = None) -> np.ndarray:
    """A mask as people draw them, sized by the window that shows the cells at training scale:
    a blob of radius 10-18 % of it, a box of 20-32 %, or 3-6 strokes 6-14 px wide (for a 575-px window).
    Anywhere in the image, or around `centre` (y, x)."""
    side = min(side, h, w)
    cy, cx = centre or (rng.uniform(side / 2, h - side / 2), rng.uniform(side / 2, w - side / 2))
    img = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(img)
    if kind == "blob":
        r = rng.uniform(0.10, 0.18) * side
        draw.ellipse([cx - r, cy - r * rng.uniform(0.7, 1.0), cx + r, cy + r * rng.uniform(0.7, 1.0)], fill=255)
    elif kind == "box":
        a, b = rng.uniform(0.20, 0.32, 2) * side
        draw.rectangle([cx - a / 2, cy - b / 2, cx + a / 2, cy + b / 2], fill=255)
    else:
        for _ in range(int(rng.integers(3, 7))):
            x0, y0, x1, y1 = cx + rng.uniform(-0.4, 0.4, 4) * side
            draw.line([x0, y0 - cx + cy, x1, y1 - cx + cy], fill=255, width=max(2, int(rng.uniform(6, 14) * side / 575)))
    return np.asarray(img) > 127
