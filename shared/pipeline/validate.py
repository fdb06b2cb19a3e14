"""Validation of uploaded bytes: an image, its mask and an optional sidecar (numpy + Pillow only).

Every check that can be done from the header (format, byte count, pixel count) is done before
anything is decoded, so a 40 kB PNG that claims 100 000 x 100 000 pixels costs nothing. The
decoding itself goes through `images.load_image` / `load_mask`, the same functions the CLI and the
GPU job use, so "valid here" means "readable there" (EXIF orientation, 16-bit, palette, CMYK,
which frame of a multi-frame file). The work a mask asks of the GPU is bounded too: at most
`Limits.max_windows` windows per image (`plan_mask`).

The contract, which the fuzz test in tests/pipeline holds us to: for *any* bytes, these functions
either return or raise `InputError` with a reason a person can act on. Pillow raises many other
types on hostile input (TypeError, struct.error, ValueError, SyntaxError, ...); they all become
InputError here.
"""
from __future__ import annotations

import io
import json
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image

from shared.imaging.images import ALLOWED_FORMATS, InputError, check_frames, check_orientation, load_image, load_mask
from shared.options import SIDECAR, InpaintOptions, OptionError, UnknownOptions
from shared.imaging.windows import DEFAULT_WINDOW, Box, plan_windows

# (magic bytes, Pillow format): sniffed from the content, never from the file name.
MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)
assert {fmt for _, fmt in MAGIC} == ALLOWED_FORMATS


@dataclass(frozen=True)
class Limits:
    """What one upload may cost the ingest function. Memory per pair is about 12 bytes per pixel
    (RGB + mask + conversions), so max_pixels = 40 M needs ~0.5 GB: see the function's MemorySize."""

    max_bytes: int = 50 * 2**20  # per file; aws s3 cp of a 50 MB TIFF still takes seconds
    max_pixels: int = 40_000_000  # e.g. 8000 x 5000; a smear photo is rarely above 24 Mpx
    max_sidecar_bytes: int = 16 * 2**10
    # Windows (one per separate mask region, shared/imaging/windows.py) per image. Each window is sampled
    # on its own (samples x steps model calls) and carries ~10-20 kB of base64 PNGs in the manifest:
    # 64 covers a heavily scratched smear; 10,000 specks would be a manifest of 100+ MB and a job
    # far longer than any real mask needs. The ingest function reads it from MAX_WINDOWS.
    max_windows: int = 64
    # Model evaluations (one 64x64 field through the UNet) per pair, both stages: what bounds a pair's
    # time in the job, whatever its options and mask (check_cost). About 22 ms each on 2 CPU cores
    # (BENCHMARKS.md, mean of 8 against one sample), so the bound is ~20 min there and seconds on a GPU;
    # the default asks for 5-10 per window, 1000 steps x 8 samples x 6 windows still fits.
    max_evaluations: int = 50_000


@dataclass(frozen=True)
class Header:
    format: str  # PNG | JPEG | TIFF
    width: int  # as stored, before EXIF rotation
    height: int
    frames: int


def sniff(data: bytes, name: str) -> str:
    """The format from the first bytes, or InputError naming what it looks like instead."""
    for magic, fmt in MAGIC:
        if data.startswith(magic):
            return fmt
    if not data:
        raise InputError(name, "the file is empty (0 bytes); upload it again")
    raise InputError(name, f"not a PNG, JPEG or TIFF file{_looks_like(data)}; convert it to PNG and upload it again")


def _looks_like(data: bytes) -> str:
    head = data[:16]
    for magic, what in ((b"GIF8", "GIF"), (b"BM", "BMP"), (b"RIFF", "WEBP or another RIFF file"),
                        (b"%PDF", "PDF"), (b"PK\x03\x04", "ZIP archive"), (b"\x00\x00\x00", "HEIC/MP4 or other ISO media")):
        if head.startswith(magic):
            return f" (it looks like {what})"
    if head[:1] in (b"{", b"["):
        return " (it looks like JSON text)"
    return ""


def read_header(data: bytes, name: str, limits: Limits) -> Header:
    """Format, size and frame count from the header only; enforces the byte and pixel limits."""
    if len(data) > limits.max_bytes:
        raise InputError(name, f"{len(data)} bytes is over the limit of {limits.max_bytes} bytes; "
                               "downscale or compress the image")
    fmt = sniff(data, name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the pixel check below replaces Pillow's bomb warning
            with Image.open(io.BytesIO(data), formats=[fmt]) as img:
                width, height = img.size
                frames = int(getattr(img, "n_frames", 1) or 1) if fmt == "TIFF" else 1
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types on bad headers
        raise InputError(name, f"the {fmt} header is damaged ({_describe(exc)}); export the file again") from exc
    check_frames(fmt, frames, name)
    if width < 1 or height < 1:
        raise InputError(name, f"the image has no pixels ({width}x{height})")
    if width * height > limits.max_pixels:
        raise InputError(name, f"{width}x{height} = {width * height} pixels is over the limit of "
                               f"{limits.max_pixels} pixels (a possible decompression bomb); downscale the image")
    return Header(fmt, width, height, frames)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


def _decode(loader, data: bytes, name: str, header: Header) -> np.ndarray:
    try:
        return loader(data, name)
    except InputError as exc:
        raise InputError(name, _actionable(exc.reason, header)) from exc
    except Exception as exc:  # noqa: BLE001 - the contract: nothing but InputError leaves here
        raise InputError(name, f"the {header.format} data cannot be decoded ({_describe(exc)}); "
                               "export the file again") from exc


def _actionable(reason: str, header: Header) -> str:
    low = reason.lower()
    if "truncated" in low or "broken data stream" in low or "unexpected end" in low:
        return f"the {header.format} file is truncated (the upload may have been cut off); upload it again"
    if "decompression bomb" in low:
        return reason + "; downscale the image"
    if not low.endswith("again"):
        return reason + "; export the file again as PNG"
    return reason


def validate_image(data: bytes, name: str, limits: Limits = Limits()) -> np.ndarray:
    """(H, W, 3) uint8 RGB, EXIF orientation applied, or InputError."""
    header = read_header(data, name, limits)
    image = _decode(load_image, data, name, header)
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] * image.shape[1] > limits.max_pixels:
        raise InputError(name, f"decoded to an unexpected shape {image.shape}; export the file again as PNG")
    return image


def validate_mask(data: bytes, name: str, limits: Limits = Limits()) -> np.ndarray:
    """(H, W) bool, True = restore, EXIF orientation applied, or InputError. Emptiness is checked
    here; the size check against the image is in `validate_pair`."""
    header = read_header(data, name, limits)
    mask = _decode(load_mask, data, name, header)
    if mask.ndim != 2 or mask.shape[0] * mask.shape[1] > limits.max_pixels:
        raise InputError(name, f"decoded to an unexpected shape {mask.shape}; save the mask as a 1-channel PNG")
    if not mask.any():
        raise InputError(name, "the mask is all black, so there is nothing to restore; "
                               "paint the damaged area white (>127) and upload the mask again")
    if mask.all():
        raise InputError(name, "the mask is all white, so no pixel is kept for the model to work from; "
                               "paint only the damaged area white and leave the rest black")
    return mask


def validate_pair(image_bytes: bytes, mask_bytes: bytes, image_name: str, mask_name: str,
                  limits: Limits = Limits()) -> tuple[np.ndarray, np.ndarray]:
    """Both files decoded, oriented and checked against each other."""
    check_orientation(image_bytes, mask_bytes, image_name, mask_name)
    image = validate_image(image_bytes, image_name, limits)
    mask = validate_mask(mask_bytes, mask_name, limits)
    if mask.shape != image.shape[:2]:
        (mh, mw), (ih, iw) = mask.shape, image.shape[:2]
        turned = " (the mask looks rotated: check the EXIF orientation of both files)" if (mh, mw) == (iw, ih) else ""
        raise InputError(mask_name, f"the mask is {mw}x{mh} pixels but the image is {iw}x{ih} "
                                    f"(after EXIF orientation){turned}; draw the mask on the image itself")
    return image, mask


def plan_mask(mask: np.ndarray, mask_name: str, limits: Limits = Limits(), window: int = DEFAULT_WINDOW) -> tuple[list[Box], np.ndarray]:
    """The mask's windows (shared.imaging.windows.plan_windows: one per separate region, O(pixels)), or
    InputError when there are more than `limits.max_windows`; checked before any window is prepared."""
    plan = plan_windows(mask, window)
    if len(plan[0]) > limits.max_windows:
        raise InputError(mask_name, f"the mask has {len(plan[0]):,} separate regions; at most {limits.max_windows} are "
                                    "inpainted per image: join nearby regions or split the image")
    return plan


TEXTURE_TILE = 64  # the texture stage's tile (gpu_job/inpainter/texture.py TILE): its cost is tiles x steps


def evaluations(options: InpaintOptions, windows: int, masked_px: int) -> int:
    """Model evaluations one pair costs: each window's samples x steps in the first stage, and the
    texture stage's steps over the tiles that cover the mask at full size (at least masked / 64²)."""
    first = windows * options.samples * options.steps
    texture = options.texture_steps * -(-masked_px // TEXTURE_TILE**2) if options.texture else 0
    return first + texture


def check_cost(options: InpaintOptions, windows: int, masked_px: int, name: str, limits: Limits = Limits()) -> int:
    """The pair's evaluations, or InputError naming the limit when one pair would hold a job too long."""
    n = evaluations(options, windows, masked_px)
    if n > limits.max_evaluations:
        texture = (f" + the texture stage's {options.texture_steps} step(s) over {-(-masked_px // TEXTURE_TILE**2):,} tiles"
                   if options.texture else "")
        raise InputError(name, f"this pair asks for {n:,} model evaluations ({windows} window(s) x {options.samples} sample(s) x "
                               f"{options.steps} steps{texture}); at most {limits.max_evaluations:,} are run per pair: lower steps or "
                               "samples in the options, turn texture off, or split the image")
    return n


# ---- The sidecar: NAME.json, per-pair options --------------------------------------------------

def _no_constants(token: str):
    raise ValueError(f"{token} is not valid JSON")


def validate_sidecar(data: bytes, name: str, limits: Limits = Limits()) -> InpaintOptions:
    """The options of one pair: a JSON object with only sidecar options (shared/options.py),
    checked with an upload's bounds; the options it does not give take their defaults."""
    if len(data) > limits.max_sidecar_bytes:
        raise InputError(name, f"the options file is {len(data)} bytes, over the limit of "
                               f"{limits.max_sidecar_bytes}; it should hold a few options only")
    try:
        doc = json.loads(data.decode("utf-8"), parse_constant=_no_constants)
    except UnicodeDecodeError as exc:
        raise InputError(name, "the options file is not UTF-8 text; save it as UTF-8 JSON") from exc
    except (ValueError, RecursionError) as exc:
        raise InputError(name, f"the options file is not valid JSON ({_describe(exc)}); "
                               'write it like {"steps": 50, "seed": 0}') from exc
    if not isinstance(doc, dict):
        raise InputError(name, f"the options file must be a JSON object, not a {type(doc).__name__}; "
                               'write it like {"steps": 50, "seed": 0}')
    try:
        return InpaintOptions.from_dict(doc, allowed=SIDECAR)
    except (OptionError, UnknownOptions) as exc:
        raise InputError(name, exc.in_document()) from exc
