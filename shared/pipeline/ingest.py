"""Ingest: from one uploaded object to a validated, preprocessed, leased pair; and from the pairs
of one invocation to one manifest, queued to the running job or submitted as a Batch job
(shared/pipeline/runner.py). The Lambda handler (functions/ingest/app.py) only wires these.

Exactly once, and never lost (shared/pipeline/leases.py): a pair is leased at
jobs/claims/ingest/<sha256 of the pair and both objects' versions>.json. Duplicate deliveries and
the two halves' racing events meet a held lease and stop. The lease lasts as long as the
invocation that holds it; if that invocation dies (timeout, out of memory), the redelivered
message takes the expired lease over and does the work. Before SubmitJob the lease records the
manifest, so whatever happens after that point (a crash, a SubmitJob answered 5xx) the retry
submits that same manifest, and the job that takes it first is the only one that works on it
(gpu_job/job.py). A re-upload of either half is a new version, hence a new lease and a new job.
"""
from __future__ import annotations

import itertools
import unicodedata
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime

from botocore.client import BaseClient
from botocore.exceptions import ClientError

from shared.imaging.images import InputError
from shared.pipeline.adapt import LAB, model_key
from shared.pipeline.leases import (DEFAULT_LEASE_S, Lease, acquire, finish, lease_key, now_utc, put_if, read, record, release_quietly,
                                   report)
from shared.pipeline.manifest import DRAIN_S, PairJob, job_seconds, job_size, manifest, window_to_dict
from shared.pipeline.pairs import split_name
from shared.pipeline.runner import enqueue, opened
from shared.pipeline.s3 import (CLAIMS, INCOMING, INGEST_CLAIMS, classify, digest, error_key, failed_prefix_for_key, get_bytes, get_json,
                 is_not_found, manifest_key, put_json, take_keys)
from shared.imaging.scale import auto_window
from shared.options import InpaintOptions
from shared.pipeline.validate import Limits, check_cost, plan_mask, validate_pair, validate_sidecar
from shared.imaging.windows import prepare

# A record is started only with this much of the invocation left: a pair at MAX_PIXELS (8000x5000)
# validated, planned and preprocessed in 2.3 s on the 2-CPU development machine, and SubmitJob
# needs seconds (more while botocore backs off). Records left over go back to the queue (partial
# batch failure); should the invocation still time out, its leases expire and the retry takes over.
RESERVE_S = 60.0
# A re-upload's two halves arrive seconds apart. A new version of one half that meets the version of
# the other half already restored with another (the last pairing, kept in the NAME's record) waits
# this long for the other half's new version before it is paired with the old one (a deliberate
# re-use: a new mask on the same image). So a re-upload of both is never restored as new image + old mask.
REUPLOAD_SETTLE_S = 60.0
# One record per NAME (its canonical form) in a folder: the first NAME of that form (check_near_names)
# and the pair's last pairing (settle_left). One record, not two: the check reads it anyway, so
# the settle costs no request of its own.
NAMES = f"{CLAIMS}ingest-names/"


class OutOfTime(Exception):
    """This record was not started: too little of the invocation is left. SQS redelivers it."""


def check_time(remaining_ms: int, reserve_s: float = RESERVE_S) -> None:
    if remaining_ms < reserve_s * 1000:
        raise OutOfTime(f"{remaining_ms / 1000:.0f} s left of the invocation, {reserve_s:.0f} s needed to start a record; "
                        "left for redelivery")


@dataclass(frozen=True)
class ObjectRef:
    key: str
    version: str | None
    etag: str
    size: int
    modified: str = ""  # ISO 8601: when this version was uploaded (which of two uploads is newer)
    body: bytes | None = field(default=None, repr=False, compare=False)  # this version's bytes, when already read

    @property
    def ref(self) -> list:
        return [self.key, self.version]


@dataclass(frozen=True)
class PairRef:
    pair: str
    image: ObjectRef
    mask: ObjectRef
    sidecar: ObjectRef | None

    @property
    def claim_key(self) -> str:
        return lease_key(INGEST_CLAIMS, self.pair, *(f"{o.key}@{o.version}@{o.etag}" for o in (self.image, self.mask)))


@dataclass
class Outcome:
    status: str  # ignored | waiting | settling | duplicate | failed | ready | resubmit
    key: str
    pair: str | None = None
    detail: str = ""
    job: PairJob | None = None
    lease: Lease | None = None
    error_key: str | None = None
    sidecar: list | None = None  # [key, version] of the options used (ready)
    manifest_key: str | None = None  # resubmit: the manifest an earlier delivery wrote and may have submitted
    retry_in: float = 0.0  # settling: seconds until the event is to be looked at again


# ---- The pair as it is in the bucket -------------------------------------------------------

def _ref(key: str, r: dict, size: int, body: bytes | None = None) -> ObjectRef:
    """The ObjectRef of a HeadObject or GetObject answer `r`."""
    version = r.get("VersionId")
    modified = r["LastModified"].isoformat() if r.get("LastModified") else ""
    return ObjectRef(key, None if version in (None, "null") else version, r.get("ETag", ""), size, modified, body)


def _head(s3: BaseClient, bucket: str, key: str) -> ObjectRef:
    r = s3.head_object(Bucket=bucket, Key=key)
    return _ref(key, r, int(r["ContentLength"]))


def _fetch(s3: BaseClient, bucket: str, key: str, listed_size: int, cap: int) -> ObjectRef:
    """The object as it is now, read whole: its bytes are validated next, so one GET, not a HEAD
    and then a GET (400 of a 200-pair folder's requests). One the listing shows over `cap` is only
    looked at (load_pair refuses it before it is downloaded)."""
    if listed_size > cap:
        return _head(s3, bucket, key)
    r = s3.get_object(Bucket=bucket, Key=key)
    body = r["Body"].read()
    return _ref(key, r, len(body), body)


def _get(s3: BaseClient, bucket: str, ref: ObjectRef) -> bytes:
    return ref.body if ref.body is not None else get_bytes(s3, bucket, ref.key, ref.version)


class Folders:
    """One invocation's listings of the upload folders. Listing a whole folder per event made
    ingest of an N-pair folder N² work, and so did listing it whole once per invocation of 100
    events (20,000 keys: 3.7 s, moto's XML): each folder is listed once, over the key range of
    the pairs the invocation's events name (`expect`), so an invocation reads about its own
    keys. A pair outside that range (not expected) lists its own keys. A listing taken during the
    invocation holds every object its events name (they were uploaded before it began); an object
    uploaded later has its own event, in a later invocation, which lists again. The pairs an event
    of this invocation answered are remembered too: the other half's event, seeing the same
    listing, would only meet the lease (4 S3 calls for nothing)."""

    def __init__(self, s3: BaseClient, bucket: str, keys: Iterable[str] = ()):
        self.s3, self.bucket, self.listed, self.answered = s3, bucket, {}, set()
        self.expected: dict[str, set[str]] = {}
        self.named: dict[str, "Name"] = {}  # pairs whose NAME this invocation checked (check_near_names)
        self.models: dict[str, dict | None] = {}  # lab -> its model as lab_model found it, once per invocation
        self.expect(keys)

    def expect(self, keys: Iterable[str]) -> None:
        """The uploads this invocation's events name: their folders are listed over their range."""
        for key in keys:
            parsed = split_name(key[len(INCOMING):]) if key.startswith(INCOMING) else None
            if parsed:
                folder, _, stem = parsed[0].rpartition("/")
                self.expected.setdefault(folder, set()).add(stem)

    def index(self, pair: str) -> "Listing":
        """The listing that holds `pair`'s keys: its folder's range, listed once, or its own."""
        folder, _, stem = pair.rpartition("/")
        stems = self.expected.get(folder, set())
        if stem not in stems:
            return self._list(folder, {stem})
        if folder not in self.listed:
            self.listed[folder] = self._list(folder, stems)
        return self.listed[folder]

    def _list(self, folder: str, stems: set[str]) -> "Listing":
        """The keys of incoming/<folder>/ from the first stem's to the last's. Every key of stem s
        starts with <prefix>s. and so sorts in [<prefix>s., <prefix>s/) ('/' follows '.')."""
        prefix = f"{INCOMING}{folder}/" if folder else INCOMING
        first = min(stems, key=lambda s: prefix + s + ".")
        end = max(prefix + s + "/" for s in stems)
        # Pages about the size of the range (3 keys a pair at most), not 1,000 keys of the folder.
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix, Delimiter="/",
                                                                   StartAfter=prefix + first,
                                                                   PaginationConfig={"PageSize": min(1000, 3 * len(stems) + 10)})
        objects = ((o["Key"], int(o.get("Size", 0))) for page in pages for o in page.get("Contents", []))
        return Listing(list(itertools.takewhile(lambda o: o[0] < end, objects)))  # no page read past the range's end


def _canonical(name: str) -> str:
    return unicodedata.normalize("NFC", name).casefold()


class Listing:
    """One folder's listed keys by pair and role, so that finding a pair is a lookup: scanning the
    listing per pair made a 10,000-pair folder N² again."""

    def __init__(self, objects: list[tuple[str, int]]):
        self.roles, self.sizes = {}, dict(objects)  # sizes: as listed, to refuse a large object unread
        for key, _ in objects:
            parsed = split_name(key[len(INCOMING):])
            if parsed:
                self.roles.setdefault(parsed[0], {}).setdefault(parsed[1], []).append(key)


@dataclass
class Name:
    """A pair's NAME record (NAMES): the record's key, its first upload, and the pair's last pairing
    ({"image": [key, version], "mask": [...], "claimed": ...}; None before the first)."""
    key: str
    first: str
    pairing: dict | None = None


def name_key(pair: str) -> str:
    folder, _, stem = pair.rpartition("/")
    return f"{NAMES}{digest(folder, _canonical(stem))}.json"


def check_near_names(s3: BaseClient, bucket: str, pair: str, key: str, checked: dict[str, Name] | None = None) -> Name:
    """The pair's NAME record; InputError if another upload in the folder has a NAME that differs
    from this pair's only in case or Unicode form (Cell.mask.png beside cell.png; é typed two
    ways): such halves never pair, or one is picked silently. The first NAME of a folder's
    canonical form is recorded at jobs/claims/ingest-names/ (a conditional write, so two racing
    events agree); a later NAME of that form is refused, naming the first upload, while any of
    that NAME's files is still there. A record, not a listing: the other NAME may sort anywhere in
    the folder, and listing the folder per invocation was the N² this replaced. `checked`: the
    records this invocation has read or written, by pair."""
    if checked is not None and pair in checked:  # the other half's event in this invocation
        return checked[pair]
    rkey = name_key(pair)
    name = Name(rkey, key)
    for _ in range(3):
        if put_if(s3, bucket, rkey, {"pair": pair, "key": key}, IfNoneMatch="*"):
            break  # the first of its NAME: no pairing yet
        found = read(s3, bucket, rkey)
        if found is None:
            continue  # deleted between our 412 and our read (the lifecycle rule): try again
        first, etag = found
        if first.get("pair") == pair:
            name = Name(rkey, first.get("key") or key, first.get("pairing") if isinstance(first.get("pairing"), dict) else None)
            break
        other = f"{INCOMING}{first.get('pair')}."
        if first.get("pair") and s3.list_objects_v2(Bucket=bucket, Prefix=other, MaxKeys=1).get("KeyCount", 0):
            raise InputError(key, f"{first.get('key')} has a NAME that differs from this one only in case or Unicode form, so "
                                  "the two would never pair (or one would be picked silently); rename one so the NAMEs match "
                                  "exactly")
        if put_if(s3, bucket, rkey, {"pair": pair, "key": key}, IfMatch=etag):  # the other NAME was deleted: not its pairing
            break
    if checked is not None:
        checked[pair] = name
    return name


def find_pair(s3: BaseClient, bucket: str, pair: str, folders: Folders, limits: Limits = Limits()) -> PairRef | None:
    """The pair's image, mask and sidecar as they are now (read, unless over the limits), or None
    while a half is missing."""
    listing = folders.index(pair)
    roles = listing.roles.get(pair, {})
    images, masks, sidecars = roles.get("image", []), roles.get("mask", []), roles.get("sidecar", [])
    if len(images) > 1:
        raise InputError(f"{INCOMING}{pair}", f"more than one image for this pair ({', '.join(sorted(images))}); "
                                              "keep one and upload the others under another name")
    if not images or not masks:
        return None
    sidecar = _fetch(s3, bucket, sidecars[0], listing.sizes[sidecars[0]], limits.max_sidecar_bytes) if sidecars else None
    return PairRef(pair, _fetch(s3, bucket, images[0], listing.sizes[images[0]], limits.max_bytes),
                   _fetch(s3, bucket, masks[0], listing.sizes[masks[0]], limits.max_bytes), sidecar)


# ---- One object event ------------------------------------------------------------------------

def ingest_object(s3: BaseClient, bucket: str, key: str, version: str | None = None, limits: Limits = Limits(),
                  now: datetime | None = None, lease_s: float = DEFAULT_LEASE_S, folders: Folders | None = None) -> Outcome:
    """Everything ingest does for one created object, short of submitting the job. `lease_s`: how
    long the lease must last (shared.pipeline.leases.seconds_left of the invocation); `folders`:
    the invocation's listings (a fresh listing without it)."""
    folders = folders or Folders(s3, bucket)
    outcome = _ingest_object(s3, bucket, key, version, limits, now or now_utc(), lease_s, folders)
    if outcome.status in ("ready", "resubmit", "failed", "duplicate") and outcome.pair:
        folders.answered.add(outcome.pair)
    return outcome


def _ingest_object(s3: BaseClient, bucket: str, key: str, version: str | None, limits: Limits, now: datetime, lease_s: float,
                   folders: Folders) -> Outcome:
    try:
        upload = classify(key)
    except InputError as exc:  # an odd key under incoming/: reported once per version
        return _fail_once(s3, bucket, lease_key(INGEST_CLAIMS, "key", key, version), key, None, exc.reason,
                          {"upload": key}, failed_prefix_for_key(key) + "error.json", now, lease_s)
    if upload is None:
        return Outcome("ignored", key, detail="not an upload under incoming/")
    if upload.role == "sidecar":
        return Outcome("ignored", key, upload.pair, "options are read when the image and mask are both there")
    if upload.pair in folders.answered:
        return Outcome("duplicate", key, upload.pair, "the other half's event in this invocation answered the pair")
    try:
        name = check_near_names(s3, bucket, upload.pair, key, folders.named)
        ref = find_pair(s3, bucket, upload.pair, folders, limits)
    except InputError as exc:
        return _fail_once(s3, bucket, lease_key(INGEST_CLAIMS, "pair", key, version), key, upload.pair, exc.reason,
                          {"upload": key}, error_key(upload.pair), now, lease_s)
    if ref is None:
        return Outcome("waiting", key, upload.pair, "the other half of the pair has not arrived")
    wait = settle_left(name.pairing, ref, now)
    if wait > 0:
        return Outcome("settling", key, ref.pair, f"one half is new and the other was restored with another version: waiting "
                                                  f"{wait:.0f} s for the other half's new version", retry_in=wait)
    doc = {"pair": ref.pair, "image": ref.image.ref, "mask": ref.mask.ref, "event_key": key, "claimed": now.isoformat()}
    lease = acquire(s3, bucket, ref.claim_key, doc, lease_s, now=now)
    if lease is None:
        return Outcome("duplicate", key, ref.pair, "this version of the pair is held or done by another delivery")
    name.pairing = {"image": ref.image.ref, "mask": ref.mask.ref, "claimed": now.isoformat()}
    put_json(s3, bucket, name.key, {"pair": ref.pair, "key": name.first, "pairing": name.pairing})
    if lease.state == "submitting" and _exists(s3, bucket, lease.doc.get("manifest", "")):
        return Outcome("resubmit", key, ref.pair, "an earlier delivery stopped after writing its manifest", lease=lease,
                       manifest_key=lease.doc["manifest"])
    keys = {"image": ref.image.key, "mask": ref.mask.key, "sidecar": ref.sidecar.key if ref.sidecar else None}
    try:
        job = replace(load_pair(s3, bucket, ref, limits, folders.models), claimed=now.isoformat())
    except InputError as exc:
        err = report(s3, bucket, lease, pair=ref.pair, reason=str(exc), keys=keys, key=error_key(ref.pair), stage="ingest", now=now)
        return Outcome("failed", key, ref.pair, str(exc), lease=lease, error_key=err)
    except Exception:
        release_quietly(s3, bucket, lease)
        raise
    return Outcome("ready", key, ref.pair, job=job, lease=lease, sidecar=ref.sidecar.ref if ref.sidecar else None)


def settle_left(last: dict | None, ref: PairRef, now: datetime) -> float:
    """Seconds this pair must wait before it is paired: >0 only when one half is a new version and
    the other is the very version the last pairing (`last`) used with another (REUPLOAD_SETTLE_S)."""
    if last is None:
        return 0.0
    same = [list(last.get(role) or []) == half.ref for role, half in (("image", ref.image), ("mask", ref.mask))]
    if same.count(True) != 1:
        return 0.0  # the same pairing again (the lease decides), or both halves new
    new = ref.mask if same[0] else ref.image
    if not new.modified:
        return 0.0
    age = (now - datetime.fromisoformat(new.modified)).total_seconds()
    return max(0.0, REUPLOAD_SETTLE_S - age)


def _exists(s3: BaseClient, bucket: str, key: str) -> bool:
    if not key:
        return False
    try:
        s3.head_object(Bucket=bucket, Key=key)
        return True
    except ClientError as exc:
        if is_not_found(exc):
            return False
        raise


def _fail_once(s3, bucket, lkey, key, pair, reason, keys, err_key, now, lease_s) -> Outcome:
    lease = acquire(s3, bucket, lkey, {"key": key, "claimed": now.isoformat()}, lease_s, now=now)
    if lease is None:
        return Outcome("duplicate", key, pair, "this failure was already reported")
    report(s3, bucket, lease, pair=pair, reason=f"{key}: {reason}", keys=keys, key=err_key, stage="ingest", now=now)
    return Outcome("failed", key, pair, reason, lease=lease, error_key=err_key)


def load_pair(s3: BaseClient, bucket: str, ref: PairRef, limits: Limits = Limits(), models: dict | None = None) -> PairJob:
    """Read exactly the leased versions, validate them, plan the windows (at most
    limits.max_windows) and preprocess with the shared function. `models`: the labs' models found
    so far (lab_model's `seen`)."""
    for obj in (ref.image, ref.mask) + ((ref.sidecar,) if ref.sidecar else ()):
        cap = limits.max_sidecar_bytes if obj is ref.sidecar else limits.max_bytes
        if obj.size > cap:  # refused before it is downloaded
            raise InputError(obj.key, f"{obj.size} bytes is over the limit of {cap} bytes; "
                                      "downscale or compress it and upload it again")
    # Checked here, once, and carried whole: the job reads them back as they are (InpaintOptions.from_record).
    opts = validate_sidecar(_get(s3, bucket, ref.sidecar), ref.sidecar.key, limits) if ref.sidecar else InpaintOptions()
    image, mask = validate_pair(_get(s3, bucket, ref.image), _get(s3, bucket, ref.mask),
                                ref.image.key, ref.mask.key, limits)
    window = auto_window(image, mask)  # cells at the training scale (shared/imaging/scale.py)
    plan = plan_mask(mask, ref.mask.key, limits, window)  # at most limits.max_windows, before any window is prepared
    cost = check_cost(opts, len(plan[0]), int(mask.sum()), ref.mask.key, limits)
    windows = [window_to_dict(w) for w in prepare(image, mask, window, plan=plan)]
    return PairJob(pair=ref.pair, image_key=ref.image.key, mask_key=ref.mask.key, height=image.shape[0],
                   width=image.shape[1], options=opts.to_dict(), windows=windows,
                   image_version=ref.image.version, mask_version=ref.mask.version, model=lab_model(s3, bucket, ref.pair, models),
                   uploaded=max(ref.image.modified, ref.mask.modified) or None, evaluations=cost)


def lab_model(s3: BaseClient, bucket: str, pair: str, seen: dict | None = None) -> dict | None:
    """The pair's lab's own model, if the lab has one: pairs under incoming/<lab>/ are restored with
    models/<lab>/ (`cellpaint adapt`), the version there now. Only the pair's own lab's: the lab is
    the first part of the pair's own key, so no pair can name another lab's model. `seen`: lab ->
    what an earlier pair of the same invocation found (one request per lab, not per pair)."""
    lab = pair.split("/", 1)[0] if "/" in pair else None
    if lab is None or not LAB.match(lab):
        return None
    if seen is not None and lab in seen:
        return seen[lab]
    try:
        head = s3.head_object(Bucket=bucket, Key=model_key(lab))
        found = {"key": model_key(lab), "version": head.get("VersionId"), "lab": lab}
    except ClientError as exc:
        if not is_not_found(exc):
            raise
        found = None
    if seen is not None:
        seen[lab] = found
    return found


# ---- One manifest per invocation: queued to the running job, or a job of its own ----------------

@dataclass
class Handoff:
    retry: list[str]  # the message ids to redeliver
    jobs: int = 0  # SubmitJob calls that succeeded


def submit_ready(s3: BaseClient, batch: BaseClient, bucket: str, job_queue: str, job_definition: str,
                 ready: list[tuple[str, Outcome]], logger, now: datetime | None = None) -> Handoff:
    """One manifest for the invocation's new pairs, queued to the running job
    (shared/pipeline/runner.py) or else submitted as a job (an array job when it holds more than
    one work item); and the manifests that taken-over leases name submitted again."""
    retry, jobs = [], 0
    fresh = [(mid, o) for mid, o in ready if o.status == "ready"]
    if fresh:
        failed, submitted = _submit_new(s3, batch, bucket, job_queue, job_definition, fresh, logger, now or now_utc())
        retry, jobs = retry + failed, jobs + submitted
    again: dict[str, list] = {}
    for mid, o in ready:
        if o.status == "resubmit":
            again.setdefault(o.manifest_key, []).append((mid, o))
    for key, items in again.items():
        taken = taken_by(s3, bucket, key)
        if taken:  # a job already started on this manifest: nothing to submit
            _finish_all(s3, bucket, items, logger, state="submitted", batch_job_id=taken)
        else:
            failed = _submit(s3, batch, bucket, job_queue, job_definition, key, items, logger)
            retry, jobs = retry + failed, jobs + (not failed)
    return Handoff(list(dict.fromkeys(retry)), jobs)


def _submit_new(s3, batch, bucket, job_queue, job_definition, items, logger, now: datetime) -> tuple[list[str], int]:
    """jobs/<job-id>/manifest.json for all the pairs, then queued or SubmitJob: (message ids to
    redeliver, jobs submitted). Each lease records the
    manifest *before* it is written, so a manifest exists only if every one of its pairs' leases
    names it: a takeover then submits that manifest again (never a second one for the same pair),
    and a lease naming a manifest that was never written is redone from the start."""
    job_id = f"{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"
    key = manifest_key(job_id)
    try:
        items = [(mid, replace(o, lease=record(s3, bucket, o.lease, state="submitting", manifest=key, sidecar=o.sidecar)))
                 for mid, o in items]
        # No If-None-Match: the job id is new, and an ambiguous 5xx retry must not turn into a 412.
        doc = manifest(job_id, bucket, [o.job for _, o in items], now.isoformat())
        put_json(s3, bucket, key, doc, indent=None)
    except Exception:
        logger.exception("could not write the manifest; the leases are released so the messages are retried")
        for _, o in items:
            release_quietly(s3, bucket, o.lease, logger)
        return [mid for mid, _ in items], 0
    runner = enqueue(s3, bucket, key, job_seconds(doc), now)  # a job that is running (or about to) takes it: no new job
    if runner:
        logger.info("queued to the running job", extra={"job_id": job_id, "batch_job_id": runner, "pairs": [o.pair for _, o in items]})
        _finish_all(s3, bucket, items, logger, state="submitted", batch_job_id=runner, queued=True)
        return [], 0
    failed = _submit(s3, batch, bucket, job_queue, job_definition, key, items, logger, doc)
    return failed, int(not failed)


def taken_by(s3: BaseClient, bucket: str, key: str) -> str | None:
    """The Batch job that took manifest `key` (or any of its work items), if one did."""
    for take in take_keys(key, get_json(s3, bucket, key)):
        found = read(s3, bucket, take)
        if found:
            return found[0].get("owner") or "unknown"
    return None


def _submit(s3, batch, bucket, job_queue, job_definition, key, items, logger, doc: dict | None = None) -> list[str]:
    """SubmitJob for the manifest `key`: one job, or one array job with a child per work item
    (shared/pipeline/manifest.py), with the time limit its longest item needs. A failure (after
    botocore's retries) releases the leases, which keep the manifest: the redelivery submits this
    same manifest again."""
    job_id = key.split("/")[-2]
    try:
        size, seconds = job_size(doc or get_json(s3, bucket, key))  # no doc: a manifest an earlier delivery wrote
        r = batch.submit_job(jobName=f"cellpaint-{job_id}", jobQueue=job_queue, jobDefinition=job_definition,
                             parameters={"manifest": f"s3://{bucket}/{key}"}, timeout={"attemptDurationSeconds": seconds},
                             **({"arrayProperties": {"size": size}} if size else {}))
    except Exception:
        logger.exception("job submission failed; the messages are retried with the same manifest", extra={"manifest": key})
        for _, o in items:
            release_quietly(s3, bucket, o.lease, logger)
        return [mid for mid, _ in items]
    logger.info("job submitted", extra={"job_id": job_id, "batch_job_id": r["jobId"], "pairs": [o.pair for _, o in items],
                                        "work_items": size or 1})
    try:
        opened(s3, bucket, r["jobId"], DRAIN_S, now_utc())  # the manifests ingest writes next are queued to it
    except Exception:  # noqa: BLE001 - the job exists; the next invocation submits its own
        logger.exception("could not name the job the runner", extra={"batch_job_id": r["jobId"]})
    _finish_all(s3, bucket, items, logger, state="submitted", batch_job_id=r["jobId"])
    return []


def _finish_all(s3, bucket, items, logger, **fields) -> None:
    """Mark the leases done. A failure here is only logged: the job exists, the message is done,
    and a lease left "submitting" is closed by the sweeper once it sees the job took the manifest."""
    for _, o in items:
        try:
            finish(s3, bucket, o.lease, **fields)
        except Exception:  # noqa: BLE001
            logger.exception("could not mark the lease done", extra={"lease": o.lease.key})
