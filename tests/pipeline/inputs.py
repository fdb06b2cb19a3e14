"""Generated test inputs: valid-but-unusual files and a corpus of bad ones (never real data)."""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image

from .conftest import cell_image, disc_mask, encode


def png_with_header(width: int, height: int) -> bytes:
    """A small, well-formed PNG whose header claims width x height: a decompression bomb."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 4096, 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def exif_rotated(arr: np.ndarray, fmt: str = "JPEG") -> bytes:
    """Stored as given, with EXIF orientation 6 (rotate 90 degrees clockwise to view)."""
    exif = Image.Exif()
    exif[0x0112] = 6
    kw = {"quality": 95} if fmt == "JPEG" else {}
    return encode(arr, fmt, exif=exif, **kw)


def sixteen_bit_png(h=48, w=64) -> bytes:
    arr = (disc_mask(h, w).astype(np.uint16) * 200 + 1000)
    return encode(Image.fromarray(arr), "PNG")


def sixteen_bit_tiff(h=48, w=64) -> bytes:
    arr = (cell_image(h, w)[..., 0].astype(np.uint16) * 257)
    return encode(Image.fromarray(arr), "TIFF")


def cmyk(h=48, w=64, fmt="JPEG") -> bytes:
    return encode(Image.fromarray(cell_image(h, w)).convert("CMYK"), fmt)


def multi_frame_tiff(h=48, w=64) -> bytes:
    frames = [Image.fromarray(cell_image(h, w, seed=i)) for i in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, format="TIFF", save_all=True, append_images=frames[1:])
    return buf.getvalue()


def mpo(h=48, w=64) -> bytes:
    """A multi-picture JPEG as stereo and phone cameras write it: the photo, then a second picture."""
    frames = [Image.fromarray(cell_image(h, w, seed=i)) for i in range(2)]
    buf = io.BytesIO()
    frames[0].save(buf, format="MPO", save_all=True, append_images=frames[1:])
    assert Image.open(io.BytesIO(buf.getvalue())).format == "MPO"
    return buf.getvalue()


def alpha_only_mask(h=48, w=64) -> bytes:
    """Black everywhere; the drawing is only in the alpha channel (opaque where painted)."""
    rgba = np.zeros((h, w, 4), np.uint8)
    rgba[..., 3] = disc_mask(h, w)
    return encode(Image.fromarray(rgba, "RGBA"), "PNG")


def palette_png(h=48, w=64) -> bytes:
    return encode(Image.fromarray(cell_image(h, w)).convert("P", palette=Image.Palette.ADAPTIVE), "PNG")


def rgba_png(h=48, w=64) -> bytes:
    img = Image.fromarray(cell_image(h, w)).convert("RGBA")
    return encode(img, "PNG")


def apng(h=48, w=64) -> bytes:
    frames = [Image.fromarray(cell_image(h, w, seed=i)) for i in range(2)]
    buf = io.BytesIO()
    frames[0].save(buf, format="PNG", save_all=True, append_images=frames[1:])
    return buf.getvalue()


IMAGE = encode(cell_image())
MASK = encode(disc_mask())

# name -> (files {key suffix: bytes}, a word the reason must contain). The pair is incoming/<name>.
BAD = {
    "not-an-image": ({".png": b"hello, this is a text file\n" * 20, ".mask.png": MASK}, "not a PNG, JPEG or TIFF"),
    "empty-file": ({".png": b"", ".mask.png": MASK}, "empty"),
    "gif-renamed": ({".png": encode(cell_image(), "GIF"), ".mask.png": MASK}, "GIF"),
    "bmp-renamed": ({".jpg": encode(cell_image(), "BMP"), ".mask.png": MASK}, "BMP"),
    "truncated-png": ({".png": IMAGE[: len(IMAGE) // 2], ".mask.png": MASK}, "truncated"),
    "truncated-jpeg": ({".jpg": encode(cell_image(), "JPEG")[:400], ".mask.png": MASK}, "truncated"),
    "damaged-header": ({".png": IMAGE[:8] + b"\x00" * 40 + IMAGE[48:], ".mask.png": MASK}, "header"),
    "decompression-bomb": ({".png": png_with_header(30000, 30000), ".mask.png": MASK}, "decompression bomb"),
    "bomb-mask": ({".png": IMAGE, ".mask.png": png_with_header(20000, 20000)}, "decompression bomb"),
    "wrong-size": ({".png": IMAGE, ".mask.png": encode(disc_mask(40, 64))}, "mask is 64x40"),
    "rotated-by-exif": ({".jpg": exif_rotated(cell_image()), ".mask.png": MASK}, "EXIF orientation 6"),
    # square: the sizes agree either way, so only the orientations can tell
    "square-rotated-by-exif": ({".jpg": exif_rotated(cell_image(48, 48)), ".mask.png": encode(disc_mask(48, 48))}, "EXIF orientation 6"),
    "empty-mask": ({".png": IMAGE, ".mask.png": encode(np.zeros((48, 64), np.uint8))}, "all black"),
    "full-mask": ({".png": IMAGE, ".mask.png": encode(np.full((48, 64), 255, np.uint8))}, "all white"),
    "mask-not-an-image": ({".png": IMAGE, ".mask.png": b"%PDF-1.4 not a mask"}, "PDF"),
    "sidecar-unknown-key": ({".png": IMAGE, ".mask.png": MASK, ".json": b'{"steps": 10, "strength": 2}'}, "unknown option"),
    "sidecar-bad-steps": ({".png": IMAGE, ".mask.png": MASK, ".json": b'{"steps": 5000}'}, "from 1 to 1000"),
    "sidecar-bad-label": ({".png": IMAGE, ".mask.png": MASK, ".json": b'{"label": "cat"}'}, "one of basophil"),
    "sidecar-bool-seed": ({".png": IMAGE, ".mask.png": MASK, ".json": b'{"seed": true}'}, "integer from 0 to"),
    "sidecar-not-json": ({".png": IMAGE, ".mask.png": MASK, ".json": b"steps=50"}, "not valid JSON"),
    "sidecar-not-object": ({".png": IMAGE, ".mask.png": MASK, ".json": b"[1, 2]"}, "JSON object"),
    "sidecar-nan": ({".png": IMAGE, ".mask.png": MASK, ".json": b'{"steps": NaN}'}, "not valid JSON"),
    "sidecar-number-texture": ({".png": IMAGE, ".mask.png": MASK, ".json": b'{"texture": 1}'}, "true or false"),
    "sidecar-bad-combine": ({".png": IMAGE, ".mask.png": MASK, ".json": b'{"combine": "median"}'}, "mean (of the samples) or first"),
    "two-images": ({".png": IMAGE, ".tif": encode(cell_image(), "TIFF"), ".mask.png": MASK}, "more than one image"),
    "multi-page-tiff": ({".tif": multi_frame_tiff(), ".mask.png": MASK}, "the TIFF has 3 pages"),
    "alpha-only-mask": ({".png": IMAGE, ".mask.png": alpha_only_mask()}, "alpha channel"),
    "too-many-bytes": ({".tif": encode(cell_image(400, 400), "TIFF"), ".mask.png": encode(disc_mask(400, 400))}, "over the limit"),
}

# Odd keys under incoming/: each gets failed/<key under incoming/>/error.json (or a hashed folder).
ODD_KEYS = {
    "incoming/notes.txt": "upload convention",
    "incoming/cell.mask.jpg": "upload convention",
    "incoming/a/../b.png": "'..'",
    "incoming/a//b.png": "empty",
    "incoming/tab\there.png": "control characters",
}

# Valid but unusual: each must be accepted and submitted.
GOOD = {
    "sixteen-bit-png-mask": {".png": IMAGE, ".mask.png": sixteen_bit_png()},
    "sixteen-bit-tiff": {".tif": sixteen_bit_tiff(), ".mask.png": MASK},
    "cmyk-jpeg": {".jpeg": cmyk(), ".mask.png": MASK},
    "cmyk-tiff": {".tiff": cmyk(fmt="TIFF"), ".mask.png": MASK},
    "mpo-camera-jpeg": {".jpg": mpo(), ".mask.png": MASK},
    "animated-png": {".png": apng(), ".mask.png": MASK},
    "palette-png": {".png": palette_png(), ".mask.png": encode(Image.fromarray(disc_mask()).convert("P"))},
    "rgba-png": {".png": rgba_png(), ".mask.png": MASK},
    "both-exif-rotated": {".jpg": exif_rotated(cell_image()), ".mask.png": exif_rotated(disc_mask(), "PNG")},
    "jpeg-named-png": {".png": encode(cell_image(), "JPEG"), ".mask.png": MASK},
    "unicode name é 细胞": {".png": IMAGE, ".mask.png": MASK},
    "sidecar-full": {".png": IMAGE, ".mask.png": MASK,
                     ".json": b'{"steps": 1000, "seed": 0, "label": "none", "samples": 8, "combine": "first", "sampler": "ddpm"}'},
}
