"""Pictures people look at: image grids and before/after previews. numpy + Pillow only."""
from __future__ import annotations

import numpy as np
from PIL import Image


def grid(rows: list[list[np.ndarray]], pad: int = 2, bg: int = 255) -> np.ndarray:
    """Tile (H, W, 3) uint8 images into rows; each row may differ in length, cells are resized to
    the first image's size."""
    h, w = rows[0][0].shape[:2]
    ncol = max(len(r) for r in rows)
    out = np.full((len(rows) * (h + pad) + pad, ncol * (w + pad) + pad, 3), bg, np.uint8)
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            if img.shape[:2] != (h, w):
                img = np.asarray(Image.fromarray(img).resize((w, h), Image.Resampling.BICUBIC))
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            out[y : y + h, x : x + w] = img
    return out


def overlay(image: np.ndarray, mask: np.ndarray, colour=(255, 0, 255), alpha: float = 0.45) -> np.ndarray:
    """The image with the mask (True = restore) tinted, so a person sees what was replaced."""
    out = image.astype(np.float32)
    out[mask] = (1 - alpha) * out[mask] + alpha * np.asarray(colour, np.float32)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def heatmap(std: np.ndarray) -> np.ndarray:
    """(H, W) float uncertainty -> (H, W, 3) uint8, black (certain) through red to yellow."""
    v = std / max(float(std.max()), 1e-6)
    rgb = np.stack([np.clip(2 * v, 0, 1), np.clip(2 * v - 1, 0, 1), np.zeros_like(v)], axis=-1)
    return np.round(rgb * 255).astype(np.uint8)


def before_after(image: np.ndarray, mask: np.ndarray, result: np.ndarray, std: np.ndarray | None = None) -> np.ndarray:
    """original | mask overlay | result [| uncertainty], at the original's size."""
    row = [image, overlay(image, mask), result]
    if std is not None:
        row.append(heatmap(std))
    return grid([row], pad=4)
