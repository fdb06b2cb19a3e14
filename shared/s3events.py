"""The bucket's layout and the S3 events the stack delivers, as plain data (no AWS calls).

    incoming/[FOLDER/]NAME.{png,jpg,jpeg,tif,tiff}   uploads: never deleted or overwritten by us
    incoming/[FOLDER/]NAME.mask.png
    incoming/[FOLDER/]NAME.json                       optional options (the sidecar)
    jobs/<job-id>/manifest.json                       ingest -> GPU job
    jobs/claims/<sha256>.json                         exactly-once claims (conditional writes)
    results/<pair>/{inpainted.png,preview.png,result.json}   GPU job; result.json last
    failed/<pair>/error.json                          ingest or GPU job

The pair id is the key under incoming/ without its suffix: incoming/a/b.png -> "a/b".
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from urllib.parse import unquote_plus

from .images import IMAGE_SUFFIXES, MASK_SUFFIX, InputError
from .pairs import split_name

INCOMING = "incoming/"
JOBS = "jobs/"
CLAIMS = "jobs/claims/"
RESULTS = "results/"
FAILED = "failed/"
MAX_KEY_BYTES = 1024  # S3's own limit


@dataclass(frozen=True)
class ObjectEvent:
    bucket: str
    key: str  # URL-decoded
    version: str | None  # None when the bucket is not versioned
    etag: str


@dataclass(frozen=True)
class Upload:
    pair: str  # "a/b"
    role: str  # image | mask | sidecar


def is_test_event(body: dict) -> bool:
    """S3 sends one `s3:TestEvent` when a notification is configured; it names no object."""
    return body.get("Event") == "s3:TestEvent"


def object_events(body: dict) -> list[ObjectEvent]:
    """Object-created events in one S3 notification (as SQS delivers it) or one EventBridge
    "Object Created" event. Keys in S3 notifications are URL-encoded ('+' is a space)."""
    if is_test_event(body):
        return []
    if body.get("detail-type") == "Object Created":  # EventBridge form: keys are not encoded
        d = body["detail"]
        return [ObjectEvent(d["bucket"]["name"], d["object"]["key"], d["object"].get("version-id"),
                            d["object"].get("etag", ""))]
    events = []
    for rec in body.get("Records", []):
        if not str(rec.get("eventName", "")).startswith("ObjectCreated:"):
            continue
        obj = rec["s3"]["object"]
        events.append(ObjectEvent(rec["s3"]["bucket"]["name"], unquote_plus(obj["key"]),
                                  obj.get("versionId"), obj.get("eTag", "")))
    return events


def classify(key: str) -> Upload | None:
    """What an incoming key is. None: not an upload to process (outside incoming/, a folder
    marker, a hidden file such as .DS_Store). InputError: a key under incoming/ that breaks the
    naming convention."""
    if not key.startswith(INCOMING):
        return None
    rest = key[len(INCOMING):]
    if not rest or rest.endswith("/") or rest.rsplit("/", 1)[-1].startswith("."):
        return None
    bad = _bad_path(key, rest)
    if bad:
        raise InputError(key, bad)
    parsed = split_name(rest)
    if parsed is None:
        raise InputError(key, f"the name does not follow the upload convention: upload NAME.png (or "
                              f"{', '.join(s for s in IMAGE_SUFFIXES if s != '.png')}) with NAME{MASK_SUFFIX}, "
                              "and optionally NAME.json")
    stem, role = parsed
    if not stem or stem.endswith("/"):
        raise InputError(key, "there is no NAME before the extension; rename the file")
    return Upload(stem, role)


def _bad_path(key: str, rest: str) -> str | None:
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        return f"the key is longer than {MAX_KEY_BYTES} bytes; use a shorter name"
    if any(ord(c) < 32 or ord(c) == 127 for c in key):
        return "the key contains control characters; rename the file"
    if any(part in ("", ".", "..") for part in rest.split("/")):
        return "the key has an empty, '.' or '..' folder; use plain folder names"
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        return "the key is not valid UTF-8; rename the file"
    return None


def failed_prefix_for_key(key: str) -> str:
    """Where the error of a key that names no pair goes: failed/<key under incoming/>/, or a hash
    when the key itself is unusable as a path."""
    rest = key[len(INCOMING):] if key.startswith(INCOMING) else key
    if rest and not rest.endswith("/") and _bad_path(key, rest) is None:
        return f"{FAILED}{rest}/"
    return f"{FAILED}bad-key-{digest(key)[:16]}/"


def error_key(pair: str) -> str:
    return f"{FAILED}{pair}/error.json"


def result_key(pair: str, name: str = "result.json") -> str:
    return f"{RESULTS}{pair}/{name}"


def pair_from_output_key(key: str) -> tuple[str, str] | None:
    """results/<pair>/result.json -> (pair, "succeeded"); failed/<pair>/error.json -> (pair, "failed")."""
    for prefix, leaf, status in ((RESULTS, "/result.json", "succeeded"), (FAILED, "/error.json", "failed")):
        if key.startswith(prefix) and key.endswith(leaf) and len(key) > len(prefix) + len(leaf):
            return key[len(prefix):-len(leaf)], status
    return None


def digest(*parts: object) -> str:
    return hashlib.sha256("\x00".join(map(str, parts)).encode("utf-8", "surrogatepass")).hexdigest()
