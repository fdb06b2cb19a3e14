#!/usr/bin/env python
"""Coverage-guided fuzzing (atheris / libFuzzer) of what ingest does with untrusted input.

The contract (shared/pipeline/validate.py): for ANY bytes, validate_image / validate_mask (then the window
plan under its cap, as ingest does) / validate_sidecar return or raise InputError with a non-empty
reason within BUDGET_S seconds (a slow input is a finding: an upload built to stall the ingest), and for ANY key, shared.pipeline.s3events.object_events
+ classify + failed_prefix_for_key return, raise InputError, or give a failed/ prefix. Anything
else escaping (TypeError, struct.error, MemoryError, ...) is a crash: libFuzzer stops and writes
the input to .cache/fuzz/crashes/crash-<sha1>. Keep every one as a regression case in
tests/pipeline/test_fuzz_validate.py (REGRESSIONS).

    .venv/bin/pip install atheris
    .venv/bin/python tests/pipeline/fuzz_validate.py -runs=1000000            # the long run
    .venv/bin/python tests/pipeline/fuzz_validate.py -runs=2000                                  # a smoke run
    .venv/bin/python tests/pipeline/fuzz_validate.py .cache/fuzz/crashes/crash-...               # replay one input

Any libFuzzer flag works (-runs=N, -max_total_time=S, -max_len=N, -timeout=S). Positional
arguments are corpus directories (default .cache/fuzz/corpus, git-ignored) or, to replay, files.
Before fuzzing, small valid PNG/JPEG/TIFF files (and a few keys and sidecars) are written into the
first corpus directory as seeds.

One input exercises one target, picked by its first byte (see TARGETS); the rest is the payload.
The seeds carry that prefix byte, so mutations of a valid PNG stay aimed at the PNG decoder.
"""
from __future__ import annotations

import hashlib
import io
import os
import sys
import time
from pathlib import Path

import atheris

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

with atheris.instrument_imports(include=["PIL", "shared"]):
    # Pillow loads its format plugins lazily; import them here so they are instrumented too.
    from PIL import Image, ImageFile, JpegImagePlugin, PngImagePlugin, TiffImagePlugin  # noqa: F401

    from shared.imaging.images import InputError
    from shared.pipeline.s3 import classify, failed_prefix_for_key
    from shared.pipeline.s3events import object_events
    from shared.pipeline.validate import Limits, plan_mask, validate_image, validate_mask, validate_pair, validate_sidecar

# Small limits keep each execution cheap; the checks themselves do not depend on the numbers.
LIMITS = Limits(max_bytes=1 << 20, max_pixels=1 << 20, max_sidecar_bytes=16 << 10)
# Seconds one input may take (1 Mpx decodes and plans in ~0.1 s); libFuzzer's -timeout only
# catches hangs, this catches inputs that are merely slow.
BUDGET_S = float(os.environ.get("CELLPAINT_FUZZ_BUDGET_S", "2"))


def _only_input_error(fn, *args) -> None:
    t0 = time.perf_counter()
    try:
        fn(*args)
    except InputError as exc:
        if not (isinstance(exc.reason, str) and exc.reason.strip()):
            raise AssertionError(f"InputError without a reason: {exc!r}") from exc
    took = time.perf_counter() - t0
    if took > BUDGET_S:
        raise AssertionError(f"{fn.__name__} took {took:.2f} s on one input (budget {BUDGET_S} s)")


def _image(data: bytes) -> None:
    _only_input_error(validate_image, data, "incoming/x.png", LIMITS)


def _mask_and_plan(data: bytes, name: str, limits: Limits):
    return plan_mask(validate_mask(data, name, limits), name, limits)


def _mask(data: bytes) -> None:
    _only_input_error(_mask_and_plan, data, "incoming/x.mask.png", LIMITS)


def _pair(data: bytes) -> None:
    cut = data[0] * len(data) // 256 if data else 0  # first byte: where the mask starts
    _only_input_error(validate_pair, data[1:cut + 1], data[cut + 1:], "incoming/x.png", "incoming/x.mask.png", LIMITS)


def _sidecar(data: bytes) -> None:
    _only_input_error(validate_sidecar, data, "incoming/x.json", LIMITS)


def _key(data: bytes) -> None:
    """The key as S3 puts it in a notification (URL-encoded text, any bytes), through the event
    parser, then the naming convention and the failed/ prefix it would be reported under."""
    raw = data.decode("utf-8", "surrogateescape")
    body = {"Records": [{"eventName": "ObjectCreated:Put",
                         "s3": {"bucket": {"name": "b"}, "object": {"key": raw, "versionId": "v", "eTag": "e"}}}]}
    for ev in object_events(body):
        for key in (ev.key, "incoming/" + ev.key):
            _only_input_error(classify, key)
            prefix = failed_prefix_for_key(key)
            if not (prefix.startswith("failed/") and prefix.endswith("/")):
                raise AssertionError(f"failed_prefix_for_key({key!r}) = {prefix!r}")


TARGETS = (_image, _mask, _pair, _sidecar, _key)
IMAGE, MASK, PAIR, SIDECAR, KEY = range(len(TARGETS))


def TestOneInput(data: bytes) -> None:  # noqa: N802 - atheris' name
    if data:
        TARGETS[data[0] % len(TARGETS)](data[1:])


# ---- seeds ------------------------------------------------------------------------------------

def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def seeds() -> list[bytes]:
    """Small, valid files of every kind validation accepts, each with its target byte in front."""
    import numpy as np

    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 255, (12, 10, 3), dtype=np.uint8))
    yy, xx = np.mgrid[:12, :10]
    mask = Image.fromarray((((yy - 6) ** 2 + (xx - 5) ** 2 < 9) * 255).astype(np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6
    images = [
        _encode(rgb, "PNG"), _encode(rgb.convert("P"), "PNG"), _encode(rgb.convert("L"), "PNG"),
        _encode(rgb.convert("RGBA"), "PNG"), _encode(rgb, "PNG", save_all=True, append_images=[rgb]),  # APNG
        _encode(Image.fromarray((np.asarray(rgb)[..., 0].astype(np.uint16) * 257)), "PNG"),  # 16-bit
        _encode(rgb, "JPEG"), _encode(rgb.convert("CMYK"), "JPEG"), _encode(rgb, "JPEG", exif=exif),
        _encode(rgb, "JPEG", progressive=True),
        _encode(rgb, "TIFF"), _encode(rgb.convert("CMYK"), "TIFF"), _encode(rgb, "TIFF", compression="tiff_lzw"),
        _encode(rgb, "TIFF", compression="tiff_deflate"), _encode(rgb, "TIFF", save_all=True, append_images=[rgb]),
        _encode(Image.fromarray((np.asarray(rgb)[..., 0].astype(np.uint16) * 257)), "TIFF"),
    ]
    masks = [_encode(mask, "PNG"), _encode(mask.convert("1"), "PNG"), _encode(mask.convert("P"), "PNG"),
             _encode(mask, "PNG", exif=exif), _encode(mask.convert("LA"), "PNG")]
    sidecars = [b'{"steps": 50, "seed": 0, "label": "monocyte", "samples": 2, "sampler": "ddim"}', b"{}", b'{"steps": 1e3}']
    keys = [b"incoming/cell.png", b"incoming/lab+1/cell%201.mask.png", b"incoming/a/../b.json",
            b"incoming/%C3%A9%E7%BB%86.tif", b"results/x/result.json", b"incoming/%FF%00.png"]
    out = [bytes([IMAGE]) + b for b in images] + [bytes([MASK]) + b for b in masks + images[:3]]
    out += [bytes([PAIR, int(256 * (len(i) + 1) / (len(i) + len(m) + 1))]) + i + m
            for i, m in zip(images[:3] + images[6:8], masks * 2)]
    out += [bytes([SIDECAR]) + s for s in sidecars] + [bytes([KEY]) + k for k in keys]
    return out


def write_seeds(corpus: Path) -> int:
    corpus.mkdir(parents=True, exist_ok=True)
    found = seeds()
    for s in found:
        (corpus / f"seed-{hashlib.sha1(s).hexdigest()[:16]}").write_bytes(s)
    return len(found)


def main() -> None:
    args = sys.argv[1:]
    flags = [a for a in args if a.startswith("-")]
    paths = [a for a in args if not a.startswith("-")]
    replay = paths and all(os.path.isfile(p) for p in paths)
    if not replay:
        if not paths:
            paths = [str(ROOT / ".cache" / "fuzz" / "corpus")]
        n = write_seeds(Path(paths[0]))
        print(f"fuzz_validate: {n} seeds in {paths[0]}", file=sys.stderr)
        crashes = ROOT / ".cache" / "fuzz" / "crashes"
        crashes.mkdir(parents=True, exist_ok=True)
        if not any(f.startswith("-artifact_prefix=") for f in flags):
            flags.append(f"-artifact_prefix={crashes}/")
        if not any(f.startswith("-max_len=") for f in flags):
            flags.append("-max_len=8192")  # seeds are < 2 kB; room to grow, cheap per run
        if not any(f.startswith("-timeout=") for f in flags):
            flags.append("-timeout=20")  # a slow input is a finding too (a hang in a decoder)
    t0 = time.time()
    atheris.Setup([sys.argv[0], *flags, *paths], TestOneInput)
    try:
        atheris.Fuzz()
    finally:
        print(f"fuzz_validate: {time.time() - t0:.1f} s wall", file=sys.stderr)


if __name__ == "__main__":
    main()
