"""Ingest: from one uploaded object to a validated, preprocessed, claimed pair; and from the pairs
of one invocation to one Batch job. The Lambda handler (functions/ingest/app.py) only wires these.

Exactly once: a pair is claimed with a conditional write (`If-None-Match: *`) of
jobs/claims/<sha256 of the pair and both objects' versions>.json. S3 answers 412 to every later
writer, so duplicate deliveries and the two halves' racing events lead to one job. A claim is
released (deleted: it is ours, not an upload) when the work it guards fails, so the redelivered
message can try again. A re-upload of either half is a new version, hence a new claim and a new job.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone

from botocore.client import BaseClient

from .images import InputError
from .manifest import PairJob, manifest, window_to_dict
from .pairs import split_name
from .s3 import CLAIMS, INCOMING, classify, claim, digest, error_key, failed_prefix_for_key, get_bytes, manifest_key, put_json, release, write_error
from .validate import Limits, validate_pair, validate_sidecar
from .windows import prepare


@dataclass(frozen=True)
class ObjectRef:
    key: str
    version: str | None
    etag: str
    size: int


@dataclass(frozen=True)
class PairRef:
    pair: str
    image: ObjectRef
    mask: ObjectRef
    sidecar: ObjectRef | None

    @property
    def claim_key(self) -> str:
        parts = [self.pair, *(f"{o.key}@{o.version}@{o.etag}" for o in (self.image, self.mask))]
        return f"{CLAIMS}{digest(*parts)}.json"


@dataclass
class Outcome:
    status: str  # ignored | waiting | duplicate | failed | ready
    key: str
    pair: str | None = None
    detail: str = ""
    job: PairJob | None = None
    claim_key: str | None = None
    error_key: str | None = None


@dataclass
class Submitted:
    job_id: str
    batch_job_id: str
    manifest_key: str
    pairs: list[str] = field(default_factory=list)


# ---- The pair as it is in the bucket ----------------------------------------------------------

def _head(s3: BaseClient, bucket: str, key: str) -> ObjectRef:
    r = s3.head_object(Bucket=bucket, Key=key)
    version = r.get("VersionId")
    return ObjectRef(key, None if version in (None, "null") else version, r.get("ETag", ""), int(r["ContentLength"]))


def _get(s3: BaseClient, bucket: str, ref: ObjectRef) -> bytes:
    return get_bytes(s3, bucket, ref.key, ref.version)


def find_pair(s3: BaseClient, bucket: str, pair: str) -> PairRef | None:
    """The pair's image, mask and sidecar as they are now, or None while a half is missing."""
    images, masks, sidecars = [], [], []
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{INCOMING}{pair}.")
    for page in pages:
        for obj in page.get("Contents", []):
            parsed = split_name(obj["Key"][len(INCOMING):])
            if parsed and parsed[0] == pair:
                {"image": images, "mask": masks, "sidecar": sidecars}[parsed[1]].append(obj["Key"])
    if len(images) > 1:
        raise InputError(f"{INCOMING}{pair}", f"more than one image for this pair ({', '.join(sorted(images))}); "
                                              "keep one and upload the others under another name")
    if not images or not masks:
        return None
    sidecar = _head(s3, bucket, sidecars[0]) if sidecars else None
    return PairRef(pair, _head(s3, bucket, images[0]), _head(s3, bucket, masks[0]), sidecar)


# ---- One object event ------------------------------------------------------------------------

def ingest_object(s3: BaseClient, bucket: str, key: str, version: str | None = None,
                  limits: Limits = Limits(), now: datetime | None = None) -> Outcome:
    """Everything ingest does for one created object, short of submitting the job."""
    now = now or datetime.now(timezone.utc)
    try:
        upload = classify(key)
    except InputError as exc:  # an odd key under incoming/: reported once per version
        err = failed_prefix_for_key(key) + "error.json"
        return _fail_once(s3, bucket, f"{CLAIMS}{digest('key', key, version)}.json", key, None,
                          exc.reason, {"upload": key}, err, now)
    if upload is None:
        return Outcome("ignored", key, detail="not an upload under incoming/")
    if upload.role == "sidecar":
        return Outcome("ignored", key, upload.pair, "options are read when the image and mask are both there")
    try:
        ref = find_pair(s3, bucket, upload.pair)
    except InputError as exc:
        return _fail_once(s3, bucket, f"{CLAIMS}{digest('pair', key, version)}.json", key, upload.pair,
                          exc.reason, {"upload": key}, error_key(upload.pair), now)
    if ref is None:
        return Outcome("waiting", key, upload.pair, "the other half of the pair has not arrived")
    body = {"pair": ref.pair, "image": [ref.image.key, ref.image.version], "mask": [ref.mask.key, ref.mask.version],
            "event_key": key, "claimed": now.isoformat()}
    if not claim(s3, bucket, ref.claim_key, body):
        return Outcome("duplicate", key, ref.pair, "this version of the pair is already claimed")
    keys = {"image": ref.image.key, "mask": ref.mask.key, "sidecar": ref.sidecar.key if ref.sidecar else None}
    try:
        try:
            job = load_pair(s3, bucket, ref, limits)
        except InputError as exc:
            err = write_error(s3, bucket, ref.pair, str(exc), stage="ingest", keys=keys, now=now)
            return Outcome("failed", key, ref.pair, str(exc), claim_key=ref.claim_key, error_key=err)
    except BaseException:
        release(s3, bucket, ref.claim_key)
        raise
    return Outcome("ready", key, ref.pair, job=job, claim_key=ref.claim_key)


def _fail_once(s3, bucket, claim_key, key, pair, reason, keys, err_key, now) -> Outcome:
    if not claim(s3, bucket, claim_key, {"key": key, "claimed": now.isoformat()}):
        return Outcome("duplicate", key, pair, "this failure was already reported")
    try:
        write_error(s3, bucket, pair, f"{key}: {reason}", stage="ingest", keys=keys, key=err_key, now=now)
    except BaseException:
        release(s3, bucket, claim_key)
        raise
    return Outcome("failed", key, pair, reason, claim_key=claim_key, error_key=err_key)


def load_pair(s3: BaseClient, bucket: str, ref: PairRef, limits: Limits = Limits()) -> PairJob:
    """Read exactly the claimed versions, validate them and preprocess with the shared function."""
    for obj in (ref.image, ref.mask) + ((ref.sidecar,) if ref.sidecar else ()):
        cap = limits.max_sidecar_bytes if obj is ref.sidecar else limits.max_bytes
        if obj.size > cap:  # refused before it is downloaded
            raise InputError(obj.key, f"{obj.size} bytes is over the limit of {cap} bytes; "
                                      "downscale or compress it and upload it again")
    options = validate_sidecar(_get(s3, bucket, ref.sidecar), ref.sidecar.key, limits) if ref.sidecar else {}
    image, mask = validate_pair(_get(s3, bucket, ref.image), _get(s3, bucket, ref.mask),
                                ref.image.key, ref.mask.key, limits)
    windows = [window_to_dict(w) for w in prepare(image, mask)]
    return PairJob(pair=ref.pair, image_key=ref.image.key, mask_key=ref.mask.key, height=image.shape[0],
                   width=image.shape[1], options=options, windows=windows,
                   image_version=ref.image.version, mask_version=ref.mask.version)


# ---- One job per invocation -----------------------------------------------------------------

def submit_job(s3: BaseClient, batch: BaseClient, bucket: str, job_queue: str, job_definition: str,
               pairs: list[PairJob], now: datetime | None = None) -> Submitted:
    """Write jobs/<job-id>/manifest.json for all `pairs` and submit one Batch job that reads it.
    The job definition's command takes the manifest as `Ref::manifest`."""
    now = now or datetime.now(timezone.utc)
    job_id = f"{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"
    key = manifest_key(job_id)
    # No If-None-Match: the job id is new, and an ambiguous 5xx retry must not turn into a 412.
    put_json(s3, bucket, key, manifest(job_id, bucket, pairs, now.isoformat()), indent=None)
    r = batch.submit_job(jobName=f"cellpaint-{job_id}", jobQueue=job_queue, jobDefinition=job_definition,
                         parameters={"manifest": f"s3://{bucket}/{key}"})
    return Submitted(job_id, r["jobId"], key, [p.pair for p in pairs])


def submit_ready(s3: BaseClient, batch: BaseClient, bucket: str, job_queue: str, job_definition: str,
                 ready: list[tuple[str, Outcome]], logger) -> list[str]:
    """One job for every ready pair of an invocation. Returns the message ids to redeliver: all
    of them if submitting failed (their claims are released first, so the redelivery claims
    and submits again)."""
    if not ready:
        return []
    try:
        job = submit_job(s3, batch, bucket, job_queue, job_definition, [o.job for _, o in ready])
    except Exception:
        logger.exception("job submission failed; releasing the claims so the messages are retried")
        for _, o in ready:
            release(s3, bucket, o.claim_key)
        return list(dict.fromkeys(mid for mid, _ in ready))
    logger.info("job submitted", extra={"job_id": job.job_id, "batch_job_id": job.batch_job_id, "pairs": job.pairs})
    return []
