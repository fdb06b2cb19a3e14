"""The pair naming convention: NAME.<png|jpg|jpeg|tif|tiff> + NAME.mask.png (+ optional NAME.json).

The same rule names pairs in an S3 prefix (`incoming/[FOLDER/]NAME...`) and in a local folder.
"""
from __future__ import annotations

from pathlib import Path

from shared.imaging import IMAGE_SUFFIXES

MASK_SUFFIX = ".mask.png"
SIDECAR_SUFFIX = ".json"


def split_name(name: str) -> tuple[str, str] | None:
    """'a/b.mask.png' -> ('a/b', 'mask'); 'a/b.JPG' -> ('a/b', 'image'); 'a/b.json' -> ('a/b',
    'sidecar'); anything else -> None."""
    low = name.lower()
    if low.endswith(MASK_SUFFIX):
        return name[: -len(MASK_SUFFIX)], "mask"
    for suf in IMAGE_SUFFIXES:
        if low.endswith(suf):
            stem = name[: -len(suf)]
            # 'x.mask.jpg' is a mistake, not an image named 'x.mask'
            return (stem, "image") if not stem.lower().endswith(".mask") else None
    if low.endswith(SIDECAR_SUFFIX):
        return name[: -len(SIDECAR_SUFFIX)], "sidecar"
    return None


def find_pairs(folder: str | Path) -> tuple[list[tuple[Path, Path]], list[str]]:
    """Local pairs in `folder` (not recursive), and one message per file left without a partner."""
    folder = Path(folder)
    images, masks = {}, {}
    for f in sorted(folder.iterdir()):
        parsed = split_name(f.name) if f.is_file() and not f.name.startswith(".") else None
        if parsed and parsed[1] == "image":
            images[parsed[0]] = f
        elif parsed and parsed[1] == "mask":
            masks[parsed[0]] = f
    pairs = [(images[s], masks[s]) for s in sorted(images) if s in masks]
    lonely = [f"{images[s]}: no mask {s}{MASK_SUFFIX}" for s in sorted(set(images) - set(masks))]
    lonely += [f"{masks[s]}: no image {s}.png/.jpg/.tif" for s in sorted(set(masks) - set(images))]
    return pairs, lonely
