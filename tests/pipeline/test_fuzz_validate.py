"""Fuzzing the validator: for any bytes and any key, only InputError may escape, and no input
takes longer than BUDGET_S (a slow input is a finding too: an upload built to stall the ingest).
A mask that validates is also planned into windows and held to the window cap, as ingest does.

CI runs ~200 examples per target (HYPOTHESIS_PROFILE=ci, the default); a long run sets
CELLPAINT_FUZZ_EXAMPLES. Every crash found is kept below as a regression case (REGRESSIONS).
"""
from __future__ import annotations

import io
import os
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from shared.imaging.images import InputError
from shared.pipeline.s3 import classify, failed_prefix_for_key
from shared.pipeline.s3events import object_events
from shared.pipeline.validate import Limits, plan_mask, validate_image, validate_mask, validate_pair, validate_sidecar

EXAMPLES = int(os.environ.get("CELLPAINT_FUZZ_EXAMPLES", "200"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=EXAMPLES <= 200,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
LIMITS = Limits(max_bytes=1 << 20, max_pixels=1 << 20)
# Seconds one input may take. LIMITS allow 1 Mpx, which decodes and plans in ~0.1 s here; 2 s
# leaves room for a loaded CI machine and still catches anything that scales badly.
BUDGET_S = float(os.environ.get("CELLPAINT_FUZZ_BUDGET_S", "2"))


def _seed(fmt: str, mode: str) -> bytes:
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 255, (12, 10, 3), dtype=np.uint8)
    img = Image.fromarray(arr).convert(mode)
    buf = io.BytesIO()
    kw = {"save_all": True, "append_images": [img]} if fmt == "TIFF" else {}
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


SEEDS = [_seed("PNG", "RGB"), _seed("PNG", "P"), _seed("PNG", "L"), _seed("JPEG", "RGB"), _seed("JPEG", "CMYK"),
         _seed("TIFF", "RGB"), _seed("TIFF", "CMYK"), _seed("TIFF", "I;16")]

# Hand-made hostile headers, plus every crash the fuzzer finds (appended with the date found).
REGRESSIONS = [
    b"II*\x00\x08\x00\x00\x00\x01\x00\x00\x01\x04\x00\x01\x00\x00\x00\x00\x00\x00\x00",  # TIFF: zero-size IFD entry
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x00\x00\x00\x00\x00\x08\x02\x00\x00\x00",  # PNG 0x0, bad CRC
    b"\xff\xd8\xff\xe1\x00\x10Exif\x00\x00MM\x00*\x00\x00\x00\x08",  # JPEG with a cut EXIF block
    b"MM\x00*\x00\x00\x00\x08\x00\x01\x01\x00\x00\x03\xff\xff\xff\xff\x00\x00\x00\x00",  # TIFF: huge count
]


@st.composite
def mutated(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "zero"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "cut":
            del data[pos: pos + draw(st.integers(1, 64))]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif op == "zero":
            data[pos: pos + 4] = b"\x00\x00\x00\x00"
    return bytes(data)


image_bytes = st.one_of(st.binary(max_size=512), mutated(),
                        st.builds(lambda magic, tail: magic + tail,
                                  st.sampled_from([b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*"]),
                                  st.binary(max_size=256)))


def only_input_error(fn, *args):
    t0 = time.perf_counter()
    try:
        out = fn(*args)
    except InputError as exc:
        assert exc.reason and isinstance(exc.reason, str)
        out = None
    took = time.perf_counter() - t0
    assert took < BUDGET_S, f"{fn.__name__} took {took:.2f} s on one input of {len(args[0])} bytes (budget {BUDGET_S} s)"
    return out


def mask_and_plan(data: bytes, name: str, limits: Limits):
    """What ingest does with a mask: validate it, then plan its windows under the cap."""
    mask = validate_mask(data, name, limits)
    return plan_mask(mask, name, limits)


@pytest.mark.parametrize("data", REGRESSIONS + SEEDS)
def test_regressions_and_seeds(data):
    only_input_error(validate_image, data, "x.png", LIMITS)
    only_input_error(mask_and_plan, data, "x.mask.png", LIMITS)


def test_the_budget_catches_a_slow_input(monkeypatch):
    monkeypatch.setitem(globals(), "BUDGET_S", 0.01)
    with pytest.raises(AssertionError, match="took"):
        only_input_error(lambda data: time.sleep(0.05), b"slow")


def test_many_regions_are_refused_within_the_budget():
    dots = np.zeros((2000, 2000), np.uint8)
    dots[10::20, 10::20] = 255  # 10,000 separate one-pixel regions, a PNG of a few kB
    buf = io.BytesIO()
    Image.fromarray(dots).save(buf, format="PNG")
    limits = Limits(max_bytes=1 << 20, max_pixels=4_000_000)
    with pytest.raises(InputError, match="the mask has 10,000 separate regions; at most 64"):
        mask_and_plan(buf.getvalue(), "x.mask.png", limits)
    only_input_error(mask_and_plan, buf.getvalue(), "x.mask.png", limits)


@FUZZ
@given(image_bytes)
def test_image_bytes(data):
    only_input_error(validate_image, data, "x.png", LIMITS)


@FUZZ
@given(image_bytes)
def test_mask_bytes(data):
    only_input_error(mask_and_plan, data, "x.mask.png", LIMITS)


@FUZZ
@given(image_bytes, image_bytes)
def test_pair_bytes(a, b):
    only_input_error(validate_pair, a, b, "x.png", "x.mask.png", LIMITS)


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                           max_leaves=10)


@FUZZ
@given(st.one_of(st.binary(max_size=256),
                 st.dictionaries(st.sampled_from(["steps", "seed", "label", "samples", "sampler", "x"]), json_values)
                 .map(lambda d: __import__("json").dumps(d).encode())))
@example(b"[" * 100_000)
@example(b'{"steps": 1' + b"0" * 5000 + b"}")
@example(b'{"steps": 1e400}')
def test_sidecar_bytes(data):
    only_input_error(validate_sidecar, data, "x.json")


@FUZZ
@given(st.text(max_size=80).map(lambda t: "incoming/" + t) | st.text(max_size=80))
@example("incoming/\udcff.png")
@example("incoming/a/../b.mask.png")
@example("incoming/.mask.png")
def test_keys(key):
    only_input_error(classify, key)
    assert failed_prefix_for_key(key).startswith("failed/")


@FUZZ
@given(st.text(max_size=60))
def test_encoded_keys_in_events(raw):
    body = {"Records": [{"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "b"}, "object": {"key": raw}}}]}
    for ev in object_events(body):
        only_input_error(classify, ev.key)
