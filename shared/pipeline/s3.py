"""The bucket: its layout, and every way the stack reads and writes it (both Lambdas, the GPU job,
the UI and the local stack use these, never their own copies).

    incoming/[FOLDER/]NAME.{png,jpg,jpeg,tif,tiff}   uploads: never deleted or overwritten by us
    incoming/[FOLDER/]NAME.mask.png
    incoming/[FOLDER/]NAME.json                       optional options (the sidecar)
    jobs/<job-id>/manifest.json                       ingest -> GPU job
    jobs/<job-id>/taken.json                          the Batch job that does the manifest's work
    jobs/claims/{ingest,notify,sweep}/<sha256>.json   leases, one prefix per function (shared/pipeline/leases.py)
    results/<pair>/{inpainted.png,preview.png,result.json}   GPU job; result.json last
    failed/<pair>/error.json                          ingest or GPU job
    adapt/<lab>/..., models/<lab>/...                 a lab's photos and its own model (shared/pipeline/adapt.py)

The pair id is the key under incoming/ without its suffix: incoming/a/b.png -> "a/b".
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import urlparse

import boto3
from botocore.client import BaseClient
from botocore.config import Config
from botocore.exceptions import ClientError

from shared.errors import InputError
from shared.pipeline.pairs import IMAGE_SUFFIXES, MASK_SUFFIX, split_name

INCOMING = "incoming/"
JOBS = "jobs/"
CLAIMS = "jobs/claims/"
# One prefix per function, so each function's IAM policy writes only its own (template.yaml).
INGEST_CLAIMS = f"{CLAIMS}ingest/"
NOTIFY_CLAIMS = f"{CLAIMS}notify/"
SWEEP_CLAIMS = f"{CLAIMS}sweep/"
RESULT_CLAIMS = f"{CLAIMS}results/"  # the GPU job: one writer of a pair's outputs at a time (shared/pipeline/publish.py)
RESULTS = "results/"
FAILED = "failed/"
ADAPT = "adapt/"  # a lab's photos for its own model (shared/pipeline/adapt.py)
MODELS = "models/"  # weights: the stack's MODEL_URI, and models/<lab>/ (a lab's own)
MAX_KEY_BYTES = 1024  # S3's own limit

# Throttling (429, SlowDown, TooManyRequestsException) and 5xx are retried with exponential
# backoff and jitter; 8 retries (9 attempts) wait up to ~20 s each, well inside the function timeout.
RETRY = Config(retries={"max_attempts": 8, "mode": "standard"}, connect_timeout=5, read_timeout=60)
NOT_FOUND = ("404", "NoSuchKey", "NotFound")


def client(service: str) -> BaseClient:
    # SigV4 for S3 also makes presigned links carry X-Amz-Expires (SigV2 links are deprecated).
    config = RETRY.merge(Config(signature_version="s3v4")) if service == "s3" else RETRY
    return boto3.client(service, config=config)


# ---- Keys ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Upload:
    pair: str  # "a/b"
    role: str  # image | mask | sidecar


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


_CONTROL = re.compile("[\x00-\x1f\x7f]")  # a regex, not a loop over characters: the sweeper classifies every key


def _bad_path(key: str, rest: str) -> str | None:
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        return f"the key is longer than {MAX_KEY_BYTES} bytes; use a shorter name"
    if _CONTROL.search(key):
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


def manifest_key(job_id: str) -> str:
    return f"{JOBS}{job_id}/manifest.json"


def take_key(manifest: str, item: int | None = None) -> str:
    """jobs/<id>/manifest.json -> jobs/<id>/taken.json: which Batch job does that manifest's work;
    taken-<i>.json for work item i, an array job's child i (shared/pipeline/manifest.py)."""
    assert manifest.startswith(JOBS) and manifest.endswith("/manifest.json"), manifest
    return manifest[: -len("manifest.json")] + ("taken.json" if item is None else f"taken-{item}.json")


def take_keys(manifest: str, doc: dict) -> list[str]:
    """Every take of a manifest: taken.json for one work item, taken-<i>.json for each of more."""
    n = len(items_of(doc))
    return [take_key(manifest)] if n == 1 else [take_key(manifest, i) for i in range(n)]


def item_of(doc: dict, index: int | None) -> int | None:
    """The work item an array child's index names, or None for the whole manifest (a plain job's)."""
    return None if index is None or len(items_of(doc)) == 1 else int(index)


def items_of(manifest: dict) -> list[list[int]]:
    """A manifest's work items, [start, end) slices of its pairs (shared/pipeline/manifest.py
    plans them; a manifest without them is one item). Here, beside take_key, so that the notify
    function reads them without loading the imaging code."""
    return manifest.get("items") or [[0, len(manifest.get("pairs", []))]]


def pair_from_output_key(key: str) -> tuple[str, str] | None:
    """results/<pair>/result.json -> (pair, "succeeded"); failed/<pair>/error.json -> (pair, "failed")."""
    for prefix, leaf, status in ((RESULTS, "/result.json", "succeeded"), (FAILED, "/error.json", "failed")):
        if key.startswith(prefix) and key.endswith(leaf) and len(key) > len(prefix) + len(leaf):
            return key[len(prefix):-len(leaf)], status
    return None


def digest(*parts: object) -> str:
    return hashlib.sha256("\x00".join(map(str, parts)).encode("utf-8", "surrogatepass")).hexdigest()


def parse_uri(uri: str) -> tuple[str, str]:
    """s3://BUCKET/KEY -> (BUCKET, KEY); ValueError for anything else."""
    u = urlparse(uri)
    if u.scheme != "s3" or not u.netloc or not u.path.strip("/"):
        raise ValueError(f"{uri}: expected s3://BUCKET/KEY")
    return u.netloc, u.path.lstrip("/")


# ---- Reading and writing -------------------------------------------------------------------------

def is_not_found(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") in NOT_FOUND


def get_bytes(s3: BaseClient, bucket: str, key: str, version: str | None = None) -> bytes:
    """The object's bytes; with `version`, exactly that version (what was validated, not a newer upload)."""
    kwargs = {"VersionId": version} if version else {}
    return s3.get_object(Bucket=bucket, Key=key, **kwargs)["Body"].read()


def presign(s3: BaseClient, bucket: str, key: str, expires_in: int, version: str | None = None,
            now: datetime | None = None) -> tuple[str, int]:
    """A GET link to one object (version) and how long it really works: a link signed with
    temporary credentials dies with them, whatever it says, so `expires_in` is cut to the signing
    credentials' remaining life when botocore knows it (an assumed role, an instance profile).
    Lambda's own credentials carry no expiry; LinkExpirySeconds is bounded for them (template.yaml)."""
    creds = getattr(getattr(s3, "_request_signer", None), "_credentials", None)
    expiry = getattr(creds, "_expiry_time", None)
    if expiry is not None:
        left = int((expiry - (now or datetime.now(timezone.utc))).total_seconds()) - 60  # a minute for clocks
        expires_in = max(1, min(expires_in, left))
    params = {"Bucket": bucket, "Key": key, **({"VersionId": version} if version else {})}
    return s3.generate_presigned_url("get_object", Params=params, ExpiresIn=expires_in), expires_in


def get_json(s3: BaseClient, bucket: str, key: str, version: str | None = None) -> dict:
    """A JSON document; one that is not an object comes back as {"value": ...}."""
    doc = json.loads(get_bytes(s3, bucket, key, version))
    return doc if isinstance(doc, dict) else {"value": doc}


def get_or_none(s3: BaseClient, bucket: str, key: str) -> bytes | None:
    try:
        return get_bytes(s3, bucket, key)
    except ClientError as exc:
        if is_not_found(exc):
            return None
        raise


def get_json_or_none(s3: BaseClient, bucket: str, key: str) -> dict | None:
    """get_json, or None where there is no such object or it is not JSON (nothing to go by)."""
    data = get_or_none(s3, bucket, key)
    try:
        doc = json.loads(data) if data is not None else None
    except ValueError:
        return None
    return doc if isinstance(doc, dict) or doc is None else {"value": doc}


def put_json(s3: BaseClient, bucket: str, key: str, doc: dict, indent: int | None = 1) -> None:
    s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(doc, indent=indent, default=str).encode(), ContentType="application/json")


def written_by(s3: BaseClient, bucket: str, key: str, job_id: str | None) -> bool:
    """True if `key` exists and was written by job `job_id` (its "job_id" field). An output left
    by an older job, for an older upload of the same pair, does not count."""
    doc = get_json_or_none(s3, bucket, key)
    return doc is not None and doc.get("job_id") == job_id


def write_error(s3: BaseClient, bucket: str, pair: str | None, reason: str, *, stage: str, keys: dict,
                job_id: str | None = None, key: str | None = None, now: datetime | None = None) -> str:
    """failed/<pair>/error.json (or `key`): the notify function turns it into the failure
    notification. Returns the key written."""
    key = key or error_key(pair)
    doc = {"status": "failed", "pair": pair, **({"job_id": job_id} if job_id else {}), "stage": stage, "reason": reason,
           "keys": keys, "time": (now or datetime.now(timezone.utc)).isoformat()}
    put_json(s3, bucket, key, doc)
    return key


def download(uri: str, folder: str | None = None, s3: BaseClient | None = None) -> str:
    """A local copy of s3://BUCKET/KEY, and of KEY's .json beside it for .safetensors weights
    (weights need their record). Returns the local path."""
    bucket, key = parse_uri(uri)
    s3 = s3 or boto3.client("s3")
    folder = folder or tempfile.mkdtemp(prefix="cellpaint-s3-")
    local = os.path.join(folder, bucket, key)
    os.makedirs(os.path.dirname(local), exist_ok=True)
    s3.download_file(bucket, key, local)
    if key.endswith(".safetensors"):
        s3.download_file(bucket, key[: -len(".safetensors")] + ".json", local[: -len(".safetensors")] + ".json")
    return local
