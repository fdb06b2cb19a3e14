"""Folders of unmasked photos (training fields, a lab's own images): which files, and which of
them are held back for measuring. Training and evaluation both call `split`, so a photo that
was measured on was never trained on."""
from __future__ import annotations

from pathlib import Path

from shared.imaging import IMAGE_SUFFIXES


def list_photos(sources) -> list[Path]:
    """Image files in the given folders (recursively) and files, in natural order (2.jpg before
    10.jpg), hidden files skipped. FileNotFoundError names a source that does not exist."""
    files: list[Path] = []
    for src in map(Path, sources):
        if src.is_dir():
            files += [f for f in src.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith(".")]
        elif src.is_file():
            files.append(src)
        else:
            raise FileNotFoundError(f"{src}: not found (expected a folder of photos or an image file)")
    return sorted(set(files), key=lambda p: (str(p.parent), len(p.stem), p.name))


def split(files: list[Path], hold_every: int) -> tuple[list[Path], list[Path]]:
    """(train, held back): every `hold_every`-th photo held back; 0 holds none back."""
    if hold_every <= 0:
        return list(files), []
    held = set(files[hold_every - 1 :: hold_every])
    return [f for f in files if f not in held], [f for f in files if f in held]
