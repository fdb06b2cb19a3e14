"""Decoding image and mask files into plain arrays. numpy + Pillow only.

Everything that reads a user's file goes through `load_image` / `load_mask`, so the CLI,
the Lambda and the GPU job agree on what a file means (EXIF orientation, 16-bit, palette,
CMYK, which frame of a multi-frame file, alpha).
"""
from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
from PIL import Image, ImageOps

from shared.errors import InputError

Source = Union[str, Path, bytes, BinaryIO]

# Formats we accept; anything else is refused before decoding.
ALLOWED_FORMATS = {"PNG", "JPEG", "TIFF"}
# What Pillow reports for files of an allowed format. A multi-picture JPEG (MPO: stereo and
# phone cameras write one, with a depth map or preview after the photo) is a JPEG whose first
# picture is the photo; Pillow names it MPO.
FORMAT_OF = {"PNG": "PNG", "JPEG": "JPEG", "MPO": "JPEG", "TIFF": "TIFF"}


def check_frames(fmt: str, frames: int, name: str) -> None:
    """Which frame is the image, decided once (validate.py checks the header with this too).
    JPEG (MPO) and PNG (APNG): the first frame is the picture every viewer shows. A TIFF with
    several pages is a stack (z-planes, channels, a series) and no page is *the* image: refused,
    rather than silently restoring page 1."""
    if fmt == "TIFF" and frames > 1:
        raise InputError(name, f"the TIFF has {frames} pages (a stack or series); cellpaint restores one picture per "
                               "file: save the page you want as its own TIFF or PNG and upload it again")


def _open(src: Source, name: str) -> Image.Image:
    if isinstance(src, bytes):
        src = io.BytesIO(src)
    try:
        with warnings.catch_warnings():
            # A decompression-bomb *warning* becomes an error: we never want half-trusted decodes.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(src)
            if img.format not in FORMAT_OF:
                raise InputError(name, f"format {img.format or 'unknown'} is not one of PNG, JPEG, TIFF")
            check_frames(FORMAT_OF[img.format], int(getattr(img, "n_frames", 1) or 1), name)
            img.seek(0)  # MPO, APNG: the first frame is the picture
            img.load()
            return img
    except InputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InputError(name, f"too many pixels (possible decompression bomb): {exc}") from exc
    except FileNotFoundError as exc:
        raise InputError(name, "file not found") from exc
    except Exception as exc:  # Pillow raises many types (OSError, SyntaxError, TypeError, ...)
        raise InputError(name, f"not a readable image ({type(exc).__name__}: {exc})") from exc


# Sensors write 10, 12 or 14 bits into 16-bit files; the data's own range says which.
SENSOR_BITS = (8, 10, 12, 14, 16)


def sensor_top(arr: np.ndarray) -> int:
    """The full scale of integer data: 2**bits - 1 for the fewest sensor bits that hold its
    maximum. 12-bit data in a 16-bit PNG is scaled by 4095, not 65535 (which would make it near-black)."""
    peak = int(arr.max(initial=0))
    return next(2**b - 1 for b in SENSOR_BITS if peak <= 2**b - 1)


def _to_uint8(img: Image.Image) -> Image.Image:
    """16-bit, 32-bit integer and float modes scaled to 8 bits by their real range, not clipped."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.int64)
        return Image.fromarray(np.clip(np.round(arr * 255.0 / sensor_top(arr)), 0, 255).astype(np.uint8), "L")
    if img.mode == "F":
        arr = np.nan_to_num(np.asarray(img, dtype=np.float32))
        top = 1.0 if arr.max(initial=0) <= 1.0 else 255.0
        return Image.fromarray(np.clip(np.round(arr * 255.0 / top), 0, 255).astype(np.uint8), "L")
    return img


def load_image(src: Source, name: str | None = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB, EXIF orientation applied."""
    name = name or str(src if not isinstance(src, (bytes, io.IOBase)) else "image")
    img = _open(src, name)
    try:
        img = ImageOps.exif_transpose(img)
        img = _to_uint8(img)
        if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
            # Transparent pixels are shown on white, as a viewer would.
            img = img.convert("RGBA")
            bg = Image.new("RGBA", img.size, (255, 255, 255, 255))
            img = Image.alpha_composite(bg, img)
        arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(name, f"could not convert to RGB ({type(exc).__name__}: {exc})") from exc
    if arr.ndim != 3 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise InputError(name, "image has no pixels")
    return arr


def orientation(src: Source) -> int:
    """The file's EXIF orientation (1 = as stored; 2-8 = mirrored and/or turned), 1 without EXIF."""
    try:
        img = Image.open(io.BytesIO(src) if isinstance(src, bytes) else src)
        return int(img.getexif().get(0x0112, 1) or 1)
    except Exception:  # an unreadable file is load_image's to name
        return 1


def check_orientation(image_src: Source, mask_src: Source, image_name: str, mask_name: str) -> None:
    """Both files are turned upright by their EXIF orientation; if only one carries a turn, the
    mask would be read against a different picture than the one it was drawn on (a square image
    passes the size check either way). Refused, naming both."""
    oi, om = orientation(image_src), orientation(mask_src)
    if oi != om:
        raise InputError(mask_name, f"the image {image_name} has EXIF orientation {oi} and the mask has {om}; one would be "
                                    "turned and the other not. Save both upright (or export the mask from the same, "
                                    "turned image) and upload them again")


def load_mask(src: Source, name: str | None = None) -> np.ndarray:
    """(H, W) bool, True = restore. White (>127) means restore, black means keep.

    Colour masks are read by luminance; an alpha channel counts as transparent = keep (the mask
    as it looks on black). A mask whose drawing is *only* in the alpha channel is refused: an
    opaque stroke on a transparent layer means "restore here", but so does a hole erased out of
    an opaque layer, and the two are the same bytes with opposite meanings. Guessing would
    restore the wrong pixels with no error; refusing costs the user one re-export.
    """
    name = name or str(src if not isinstance(src, (bytes, io.IOBase)) else "mask")
    img = _open(src, name)
    try:
        img = ImageOps.exif_transpose(img)
        img = _to_uint8(img)
        if "A" in img.getbands() or (img.mode == "P" and "transparency" in img.info):
            rgba = np.asarray(img.convert("RGBA"))
            lum = np.asarray(Image.fromarray(rgba[..., :3]).convert("L"))
            opaque = rgba[..., 3] > 127
            visible = (lum > 127) & opaque
            if not visible.any() and opaque.any() and not opaque.all():
                raise InputError(name, "the mask has no white pixels: its drawing is only in the alpha channel "
                                       "(transparency), which can mean restore or keep; save it without alpha, "
                                       "white (>127) = restore and black = keep, and upload it again")
            return visible
        return binarise(np.asarray(img.convert("L")))
    except InputError:
        raise
    except Exception as exc:
        raise InputError(name, f"could not read mask ({type(exc).__name__}: {exc})") from exc


def binarise(mask: np.ndarray) -> np.ndarray:
    """White (>127) means restore. A bool mask passes through unchanged."""
    if mask.dtype == bool:
        return mask
    return np.asarray(mask) > 127


def save_png(arr: np.ndarray, path: Union[str, Path]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, format="PNG")


# zlib level 1 encodes a preview in about half the time of PIL's default (6) for a tenth more
# bytes: for pictures people look at once, not for the restored image itself.
FAST = 1


def png_bytes(arr: np.ndarray, level: int = 6) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", compress_level=level)
    return buf.getvalue()
