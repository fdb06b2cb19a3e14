"""What the browser page does, as plain functions (no streamlit here, so tests import this).

Every function that can fail on a person's input returns an error *message* (a string the page
shows) instead of raising: the page never shows a traceback.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
from PIL import Image

from cellpaint.endpoints import is_loopback, origin
from shared.imaging.images import InputError, png_bytes
from shared.options import InpaintOptions, OptionError, UnknownOptions, offered
from shared.pipeline.records import RecordError, Result
from shared.pipeline.s3 import INCOMING, error_key, get_or_none, result_key
from shared.pipeline.validate import Limits, validate_image, validate_mask

# What one upload may cost: the pipeline's own limits (bytes and pixels per file), so a file the
# page takes is one the pipeline takes too.
LIMITS = Limits()

# Said plainly on the page (the model's working size and the mask convention).
MODEL_SIZE_NOTE = (
    "The model works at 64×64 pixels inside the masked region: the area around each painted region "
    "(a window of about 360 source pixels, or the whole image if it is smaller) is scaled to 64×64, "
    "restored there, and scaled back, so detail finer than that is not recreated. "
    "Only the masked pixels change."
)
MASK_NOTE = "Mask convention: white = restore, black = keep. Paint (white) over what should be restored."

# The canvas brush colours: the drawing comes back as RGBA; light strokes mean restore, dark ones
# (the eraser) mean keep. Semi-transparent, so the cell stays visible under the paint; the last
# stroke over a pixel decides (see canvas_strokes).
RESTORE_COLOUR = "rgba(255, 255, 255, 0.7)"
ERASE_COLOUR = "rgba(0, 0, 0, 0.7)"

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
EXAMPLE_IMAGE = EXAMPLES / "cell.png"
EXAMPLE_MASK = EXAMPLES / "cell.mask.png"

# The options the page offers: those the declaration offers in the UI (shared/options.py).
PAGE_OPTIONS = tuple(o.name for o in offered("ui"))


# ---- Inputs --------------------------------------------------------------------------------------

def decode_upload(data: bytes | None, name: str) -> tuple[np.ndarray | None, str | None]:
    """An uploaded image file -> ((H, W, 3) uint8, None), or (None, message). Bounded and checked
    as the pipeline checks an upload (shared/pipeline/validate.py)."""
    try:
        return validate_image(bytes(data or b""), name, LIMITS), None
    except InputError as exc:
        return None, str(exc)


def decode_mask_upload(data: bytes | None, name: str, shape: tuple[int, int]) -> tuple[np.ndarray | None, str | None]:
    """An uploaded mask file (white = restore) -> ((H, W) bool, None), or (None, message). All-black
    and all-white masks are refused with the pipeline's messages."""
    try:
        mask = validate_mask(bytes(data or b""), name, LIMITS)
    except InputError as exc:
        return None, str(exc)
    if mask.shape != tuple(shape):
        return None, (f"{name}: mask is {mask.shape[1]}x{mask.shape[0]}, the image is {shape[1]}x{shape[0]}; "
                      "they must be the same size")
    return mask, None


def load_example() -> tuple[np.ndarray | None, np.ndarray | None, str | None]:
    """The shipped example pair (examples/cell.png + cell.mask.png): (image, mask or None, message)."""
    if not EXAMPLE_IMAGE.is_file():
        return None, None, f"The shipped example ({EXAMPLE_IMAGE.relative_to(EXAMPLES.parent)}) is not in this installation; upload an image instead."
    image, err = decode_upload(EXAMPLE_IMAGE.read_bytes(), EXAMPLE_IMAGE.name)
    if err:
        return None, None, err
    mask = None
    if EXAMPLE_MASK.is_file():
        mask, err = decode_mask_upload(EXAMPLE_MASK.read_bytes(), EXAMPLE_MASK.name, image.shape[:2])
        if err:
            return image, None, err
    return image, mask, None


def image_key(image: np.ndarray) -> str:
    """A short content hash: the page resets the canvas and the results when the image changes."""
    return hashlib.sha1(np.ascontiguousarray(image).tobytes() + str(image.shape).encode()).hexdigest()[:12]


def display_size(height: int, width: int, max_side: int = 512, min_side: int = 256) -> tuple[int, int]:
    """(canvas height, canvas width) with the image's aspect ratio, at a usable size on screen:
    small images are enlarged, large ones shrunk."""
    scale = max_side / max(height, width)
    if min(height, width) * scale < min_side // 4:  # very thin strips: keep them paintable
        scale = (min_side // 4) / min(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def _resize_bool(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if mask.shape == tuple(shape):
        return mask
    img = Image.fromarray(mask.astype(np.uint8) * 255, "L").resize((shape[1], shape[0]), Image.Resampling.BILINEAR)
    return np.asarray(img) > 127


def canvas_strokes(rgba: np.ndarray | None, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The canvas drawing (h, w, 4) RGBA at canvas size -> (restore, erase) (H, W) bool at the
    image's size. Painted pixels (alpha >= 64) that are light are restore, dark ones are erase."""
    empty = np.zeros(shape, bool)
    if rgba is None:
        return empty, empty.copy()
    a = np.asarray(rgba)
    if a.ndim != 3 or a.shape[2] not in (3, 4) or a.size == 0:
        return empty, empty.copy()
    a = a.astype(np.float32)
    alpha = a[..., 3] if a.shape[2] == 4 else np.full(a.shape[:2], 255.0, np.float32)
    lum = 0.299 * a[..., 0] + 0.587 * a[..., 1] + 0.114 * a[..., 2]
    painted = alpha >= 64
    return _resize_bool(painted & (lum > 127), shape), _resize_bool(painted & (lum <= 127), shape)


def canvas_to_mask(rgba: np.ndarray | None, shape: tuple[int, int], base: np.ndarray | None = None) -> np.ndarray:
    """The mask to restore, (H, W) bool, white = restore: `base` (an uploaded or shipped mask) plus
    the light strokes, minus the eraser's dark strokes."""
    restore, erase = canvas_strokes(rgba, shape)
    mask = restore if base is None else (np.asarray(base, bool) | restore)
    return mask & ~erase


def mask_png(mask: np.ndarray) -> bytes:
    """(H, W) bool -> a white-on-black PNG (white = restore), as the CLI and the pipeline read it."""
    return png_bytes(np.asarray(mask, bool).astype(np.uint8) * 255)


def page_options(opts: dict) -> tuple[InpaintOptions | None, str | None]:
    """The page's choices as checked options (the same bounds as a sidecar's), or (None, message).
    The label is the loaded weights' to check (their classes may not be the shipped ones)."""
    try:
        o = InpaintOptions.from_dict({k: v for k, v in opts.items() if k in PAGE_OPTIONS and k != "label"})
    except (OptionError, UnknownOptions) as exc:
        return None, str(exc)
    o.label = None if opts.get("label") in (None, "none") else opts["label"]
    return o, None


def check_options(opts: dict) -> str | None:
    return page_options(opts)[1]


def check_pair(image: np.ndarray | None, mask: np.ndarray | None) -> str | None:
    if image is None:
        return "Choose an image first: upload one or take the shipped example."
    if mask is None:
        return "Paint (white) over the part of the cell to restore."
    if mask.shape != image.shape[:2]:
        return f"The mask is {mask.shape[1]}x{mask.shape[0]} but the image is {image.shape[1]}x{image.shape[0]}."
    try:  # the painted mask as the pipeline will read it: the same refusals, in the same words
        validate_mask(mask_png(mask), "the painted mask", LIMITS)
    except InputError as exc:
        return str(exc)
    return None


# ---- Direct mode: the local model ------------------------------------------------------------------

def load_inpainter(weights: str | None = None, device: str = "auto"):
    """(Inpainter, None) or (None, message). weights=None: $CELLPAINT_WEIGHTS or the shipped weights."""
    try:
        from gpu_job.inpainter.inpaint import Inpainter

        return Inpainter(weights, device), None
    except FileNotFoundError as exc:
        return None, (f"No model weights: {exc}. Set CELLPAINT_WEIGHTS to a .safetensors file "
                      "(with its .json beside it), or use the pipeline mode.")
    except Exception as exc:
        return None, f"Could not load the model: {type(exc).__name__}: {exc}"


@dataclass
class Restored:
    image: np.ndarray  # (H, W, 3) uint8, the first sample
    uncertainty: np.ndarray | None = None  # (H, W, 3) uint8 heat map when samples > 1
    info: dict = field(default_factory=dict)

    @property
    def warning(self) -> str | None:
        """What the page says above the result when the image is unlike the training images."""
        ood = self.info.get("ood") or {}
        return f"{ood.get('message', 'this image is unlike the training images; check the result').capitalize()} (score {ood.get('score')})." \
            if ood.get("unlike_training") else None


def run_direct(inpainter, image: np.ndarray, mask: np.ndarray, opts: dict) -> tuple[Restored | None, str | None]:
    """Restore with the local model. opts: steps, seed, label ("none" or a class), samples."""
    err = check_pair(image, mask) or check_options(opts)
    if err:
        return None, err
    if inpainter is None:
        return None, "The local model is not loaded."
    try:
        from shared.imaging.preview import heatmap

        o, _ = page_options(opts)
        label = o.label
        inpainter.label_index(label)  # ValueError names the classes
        t0 = time.time()
        res = inpainter.inpaint(image, mask, o)
        rec = inpainter.record
        # A lab's own model (`cellpaint ui --weights LAB.safetensors`) says what it was adapted from and how it measured.
        model = {"sha256": rec.get("sha256"), **({"adapt": {k: rec["adapt"].get(k) for k in ("base_sha256", "images", "held_back_psnr")}}
                                                 if rec.get("adapt") else {})}
        info = {"mode": "direct", "seconds": round(time.time() - t0, 2), "model": model, "options": o.to_dict(), "labels": res.labels,
                "device": str(inpainter.device), **({"ood": res.ood} if res.ood else {})}
        return Restored(res.image, heatmap(res.std) if res.std is not None else None, info), None
    except ValueError as exc:
        return None, str(exc)
    except Exception as exc:
        return None, f"Restoring failed: {type(exc).__name__}: {exc}"


# ---- Pipeline mode: through the stack's bucket -------------------------------------------------------

@dataclass
class Stage:
    """One step of a pipeline run, as the page shows it. kind: uploaded | waiting | done | failed |
    timeout | error. A `done` stage carries the result."""
    kind: str
    message: str
    result: Restored | None = None


def default_region(region: str | None = None) -> str:
    return (region or "").strip() or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"


def s3_client(region: str | None, endpoint_url: str | None = None):
    """A boto3 S3 client. With an endpoint (the local stack) and no AWS credentials around, the
    local stack's dummy credentials are used. Check the target (check_target) first."""
    import boto3
    from botocore.config import Config

    endpoint_url = (endpoint_url or "").strip() or None
    kw: dict[str, Any] = {"region_name": default_region(region),
                          "config": Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5, read_timeout=30)}
    if endpoint_url:
        kw["endpoint_url"] = endpoint_url
        if boto3.session.Session().get_credentials() is None:
            kw.update(aws_access_key_id="test", aws_secret_access_key="test")
    return boto3.client("s3", **kw)


# ---- Where the page may send requests ----------------------------------------------------------
# The page signs its requests with the operator's AWS credentials, and a visitor types the endpoint,
# region and bucket: unchecked, they would send signed requests to any host (the instance metadata
# address, say). So the endpoint is this machine or S3 itself, unless the operator allowed another.

REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-\d{1,2}")  # us-east-1, us-gov-west-1, eu-isoe-west-1
BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
BUCKET_RESERVED = (("xn--", "sthree-", "amzn-s3-demo-"), ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3"))


def check_region(region: str) -> str | None:
    if not REGION.fullmatch(region):
        return f"Region {region!r} is not an AWS region name (like us-east-1)."
    return None


def check_bucket(bucket: str) -> str | None:
    """S3's naming rules for a general purpose bucket."""
    if not bucket:
        return "Give the stack's bucket name."
    starts, ends = BUCKET_RESERVED
    if (not BUCKET.fullmatch(bucket) or ".." in bucket or bucket.startswith(starts) or bucket.endswith(ends)
            or re.fullmatch(r"\d+\.\d+\.\d+\.\d+", bucket)):
        return (f"Bucket {bucket!r} is not an S3 bucket name: 3-63 lowercase letters, digits, dots and hyphens, "
                "starting and ending with a letter or digit.")
    return None


def s3_hosts(region: str) -> set[str]:
    """S3's own endpoints for a region (regional, dual-stack, FIPS)."""
    suffix = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    hosts = {f"{name}.{region}.{suffix}" for name in ("s3", "s3.dualstack", "s3-fips", "s3-fips.dualstack")}
    return hosts | ({"s3.amazonaws.com"} if region == "us-east-1" else set())


def check_endpoint(endpoint: str, region: str, allowed: tuple[str, ...] = ()) -> str | None:
    """None if the page may send requests to endpoint: empty (boto3's own for the region), this
    machine, S3 in the region, or an endpoint the operator allowed (`cellpaint ui --allow-endpoint`)."""
    if not endpoint:
        return None
    where = origin(endpoint, bare=True)
    if where is None:
        return f"Endpoint {endpoint!r}: give only http(s)://host[:port], like http://127.0.0.1:4566."
    scheme, host, port = where
    if where in {origin(a, bare=True) for a in allowed} or is_loopback(host) or (scheme == "https" and host in s3_hosts(region)):
        return None
    return (f"Endpoint {endpoint!r} is neither this machine nor S3 in {region}: the page sends requests signed with "
            f"this server's AWS credentials only there. To allow it, start `cellpaint ui --allow-endpoint {scheme}://{host}:{port}`.")


def check_target(bucket: str, region: str, endpoint: str, allowed: tuple[str, ...] = ()) -> str | None:
    """Every check on where the page sends its requests, before any request is made."""
    return check_bucket(bucket) or check_region(region) or check_endpoint(endpoint, region, allowed)


def own_output(pair: str, key: object, what: str) -> str:
    """`key` if it lies under the pair's own results/<pair>/, else InputError: a result.json names
    the objects the page then reads, and may not name any other object in the bucket."""
    prefix = result_key(pair, "")
    rest = key[len(prefix):] if isinstance(key, str) and key.startswith(prefix) else None
    if not rest or any(part in ("", ".", "..") for part in rest.split("/")):
        raise InputError(result_key(pair), f"outputs.{what} is {key!r}, not under {prefix}; "
                                           "the page reads only the pair's own results")
    return key


def new_pair_name(prefix: str = "ui") -> str:
    """A fresh pair name per run: the pipeline never redoes a pair whose result exists."""
    return f"{prefix}-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def check_pair_name(name: str) -> str | None:
    if not name or name.strip() != name:
        return "The pair name must not be empty or start/end with spaces."
    if name.startswith("/") or name.endswith("/") or "//" in name or any(p in ("", ".", "..") for p in name.split("/")):
        return f"The pair name {name!r} is not a valid key (use letters, digits, - _ and / between parts)."
    if name.endswith(".mask") or "." in name.rsplit("/", 1)[-1]:
        return f"The pair name {name!r} must not contain a dot in its last part."
    return None


def sidecar(opts: dict) -> dict:
    """The options the pipeline reads from incoming/<name>.json: what the page chose."""
    o, err = page_options(opts)
    if err:
        raise ValueError(err)
    doc = {k: getattr(o, k) for k in PAGE_OPTIONS}
    doc["label"] = doc["label"] or "none"
    return doc


def _client_message(exc: Exception, bucket: str) -> str:
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

    if isinstance(exc, NoCredentialsError):
        return "No AWS credentials: set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or give the local stack's endpoint URL."
    if isinstance(exc, EndpointConnectionError):
        return f"Cannot reach the S3 endpoint ({exc}). Is the stack up (`cellpaint local up`)?"
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("NoSuchBucket", "404"):
            return f"Bucket {bucket!r} does not exist (or is in another region/endpoint)."
        if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return f"Access to bucket {bucket!r} was denied ({code}): check the credentials and region."
        return f"S3 error on bucket {bucket!r}: {code}: {exc.response.get('Error', {}).get('Message', exc)}"
    return f"S3 error: {type(exc).__name__}: {exc}"


def upload_pair(s3, bucket: str, name: str, image: np.ndarray, mask: np.ndarray, opts: dict) -> list[str]:
    """Put incoming/<name>.json (first, so it is there when the pair completes), .mask.png and .png.
    Raises botocore errors; run_pipeline turns them into messages."""
    keys = []
    side = f"{INCOMING}{name}.json"
    s3.put_object(Bucket=bucket, Key=side, Body=json.dumps(sidecar(opts)).encode(), ContentType="application/json")
    keys.append(side)
    for key, body in ((f"{INCOMING}{name}.mask.png", mask_png(mask)), (f"{INCOMING}{name}.png", png_bytes(image))):
        s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="image/png")
        keys.append(key)
    return keys


def fetch_result(s3, bucket: str, name: str, doc: dict) -> Restored:
    """The images a result.json names, each under results/<name>/ and bounded as uploads are."""
    try:
        r = Result.from_json(doc)
    except RecordError as exc:
        raise InputError(f"s3://{bucket}/{result_key(name)}", str(exc)) from exc
    outputs = r.outputs
    key = own_output(name, outputs.get("inpainted") or result_key(name, "inpainted.png"), "inpainted")
    data = get_or_none(s3, bucket, key)
    if data is None:
        raise InputError(f"s3://{bucket}/{key}", "result.json is there but the inpainted image is missing")
    image = validate_image(data, f"s3://{bucket}/{key}", LIMITS)
    ukey = own_output(name, outputs.get("uncertainty") or result_key(name, "uncertainty.png"), "uncertainty")
    udata = get_or_none(s3, bucket, ukey)
    unc = validate_image(udata, f"s3://{bucket}/{ukey}", LIMITS) if udata is not None else None
    info = {"mode": "pipeline", "pair": name, "job_id": r.job_id, "model": r.model, "options": r.options, "labels": r.labels,
            "device": r.device, "timings": r.timings, "ood": r.ood}
    return Restored(image, unc, info)


def poll(s3, bucket: str, name: str, timeout_s: float = 900.0, interval_s: float = 3.0,
         sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> Iterator[Stage]:
    """Wait for results/<name>/result.json or failed/<name>/error.json; yields a `waiting` stage per
    poll and ends with done, failed or timeout."""
    start = clock()
    while True:
        doc = get_or_none(s3, bucket, result_key(name))
        if doc is not None:
            try:
                parsed = json.loads(doc)
            except ValueError:
                parsed = {}
            result = fetch_result(s3, bucket, name, parsed if isinstance(parsed, dict) else {})
            yield Stage("done", f"result written: s3://{bucket}/{result_key(name, '')}", result)
            return
        err = get_or_none(s3, bucket, error_key(name))
        if err is not None:
            try:
                parsed = json.loads(err)
                reason = parsed.get("reason") or json.dumps(parsed)
                stage = parsed.get("stage")
            except (ValueError, AttributeError):
                reason, stage = err.decode("utf-8", "replace")[:500], None
            where = f" (in {stage})" if stage else ""
            yield Stage("failed", f"the pipeline failed{where}: {reason}")
            return
        elapsed = clock() - start
        if elapsed >= timeout_s:
            yield Stage("timeout", f"no result after {elapsed:.0f} s ({result_key(name)}); "
                                   "the job may still be queued: look in the bucket later")
            return
        yield Stage("waiting", f"waiting for {result_key(name)} ({elapsed:.0f} s)")
        sleep(interval_s)


def run_pipeline(image: np.ndarray | None, mask: np.ndarray | None, opts: dict, bucket: str, region: str | None = None,
                 endpoint_url: str | None = None, name: str | None = None, timeout_s: float = 900.0,
                 interval_s: float = 3.0, s3=None, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic, allowed_endpoints: tuple[str, ...] = ()) -> Iterator[Stage]:
    """Upload the pair, then poll: yields uploaded, waiting..., and one of done / failed / timeout /
    error. Never raises: every problem is an `error` stage with a message. Nothing is sent before
    the bucket, region and endpoint pass check_target."""
    bucket, endpoint_url = (bucket or "").strip(), (endpoint_url or "").strip()
    region = default_region(region)
    name = name or new_pair_name()
    err = (check_pair(image, mask) or check_options(opts) or check_pair_name(name)
           or check_target(bucket, region, endpoint_url, allowed_endpoints))
    if err:
        yield Stage("error", err)
        return
    try:
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:
        yield Stage("error", "boto3 is not installed: pip install boto3")
        return
    try:
        s3 = s3 or s3_client(region, endpoint_url)
        keys = upload_pair(s3, bucket, name, image, mask, opts)
        yield Stage("uploaded", "uploaded " + ", ".join(f"s3://{bucket}/{k}" for k in keys))
        yield from poll(s3, bucket, name, timeout_s, interval_s, sleep, clock)
    except (BotoCoreError, ClientError) as exc:
        yield Stage("error", _client_message(exc, bucket))
    except InputError as exc:
        yield Stage("error", str(exc))
    except Exception as exc:
        yield Stage("error", f"Pipeline error: {type(exc).__name__}: {exc}")


def png_download(arr: np.ndarray) -> bytes:
    return png_bytes(np.ascontiguousarray(arr))


def background_png(image: np.ndarray, base_mask: np.ndarray | None, size: tuple[int, int]) -> bytes:
    """The canvas background: the image at canvas size, with a given (uploaded/shipped) mask tinted."""
    from shared.imaging.preview import overlay

    shown = overlay(image, base_mask) if base_mask is not None and base_mask.any() else image
    buf = io.BytesIO()
    Image.fromarray(shown).resize((size[1], size[0]), Image.Resampling.LANCZOS).save(buf, format="PNG")
    return buf.getvalue()
