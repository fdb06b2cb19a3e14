"""Leases: work done once, on S3 conditional writes, that no crash can orphan.

A lease is a small JSON object (the keys are in shared/pipeline/s3.py: jobs/claims/<function>/...):

    {"owner": "<token>", "expires": "<ISO time>" | null, "write": "<token>", ...what the work records}

- **Taking it.** The first writer creates it with `If-None-Match: *`; S3 answers 412 to the others.
- **Expiry.** A lease held by running work expires when the function holding it can no longer act:
  its remaining time (`context.get_remaining_time_in_millis()`) plus a margin for clock skew. After
  that, a later delivery may take it over with `If-Match: <the expired lease's ETag>`, so of two
  deliveries racing for an expired lease exactly one wins. `expires: null` is final: the work is
  done (or reported) and nobody takes it over.
- **State carried over.** A takeover keeps what the previous holder recorded (say, the manifest it
  wrote before SubmitJob), so the new holder continues the work instead of redoing it twice.
- **Ambiguous answers.** A write that S3 applied but answered with a 5xx is retried by botocore and
  then meets 412; the `write` token in the object tells our own write from someone else's.
- **Releasing** is not deleting: the lease is rewritten as expired now, keeping what it recorded,
  so the redelivered message takes it over at once. Nothing ever deletes a lease; the bucket's
  lifecycle rule on jobs/ does, after JobsRetentionDays.

Why S3 and not the Powertools idempotency utility with DynamoDB: docs/pipeline.md, "Exactly once"
(measured: docs/history.md, bench_claims).
"""
from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Callable

from botocore.client import BaseClient
from botocore.exceptions import ClientError

from shared.pipeline.s3 import CLAIMS, JOBS, digest, is_not_found, write_error

# Lambda's clocks are NTP-synchronised to milliseconds; 30 s covers any skew between the
# instance that wrote an expiry and the one that reads it, and the time a dying invocation
# still has between its last check and the kill.
MARGIN_S = 30.0
DEFAULT_LEASE_S = 900.0  # Lambda's longest timeout: the lease of a caller that has no context (tests, scripts)


def now_utc() -> datetime:
    """The one clock leases are judged by (tests move it forward instead of sleeping)."""
    return datetime.now(timezone.utc)


def seconds_left(context, margin: float = MARGIN_S) -> float:
    """How long a lease taken now must last: the invocation's remaining time, plus the margin."""
    return context.get_remaining_time_in_millis() / 1000 + margin


class LeaseLost(Exception):
    """Our lease was taken over: we ran past its expiry, and someone else now does the work."""


@dataclass(frozen=True)
class Lease:
    key: str
    owner: str
    etag: str
    doc: dict  # what the object holds now
    previous: dict | None = None  # the expired lease this one took over, if any
    fresh: bool = False  # this call created the object: nobody held the lease before, not even this owner

    @property
    def state(self) -> str | None:
        return self.doc.get("state")


def _precondition_failed(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "412") or \
        exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 412


def _put(s3: BaseClient, bucket: str, key: str, doc: dict, **condition) -> str | None:
    """The ETag of the new object, or None when the condition did not hold (412)."""
    try:
        r = s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(doc, default=str).encode(),
                          ContentType="application/json", **condition)
        return r["ETag"]
    except ClientError as exc:
        if _precondition_failed(exc):
            return None
        raise


def put_if(s3: BaseClient, bucket: str, key: str, doc: dict, **condition) -> str | None:
    """A JSON document written only if `condition` (IfMatch=etag, IfNoneMatch="*") holds: its
    ETag, or None when it did not (412)."""
    return _put(s3, bucket, key, doc, **condition)


def read(s3: BaseClient, bucket: str, key: str) -> tuple[dict, str] | None:
    """The lease document and its ETag, or None if there is none."""
    try:
        r = s3.get_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if is_not_found(exc):
            return None
        raise
    try:
        doc = json.loads(r["Body"].read())
    except ValueError:
        doc = {}  # not ours to judge: an unreadable lease never expires, so nothing runs twice
    return (doc if isinstance(doc, dict) else {}), r["ETag"]


def expired(doc: dict, now: datetime) -> bool:
    """True if the lease may be taken over. A final lease (`expires: null`) never is."""
    when = doc.get("expires")
    if not isinstance(when, str):
        return False
    try:
        return datetime.fromisoformat(when) <= now
    except ValueError:
        return False


def _expiry(seconds: float | None, now: datetime) -> str | None:
    return None if seconds is None else (now + timedelta(seconds=seconds)).isoformat()


def acquire(s3: BaseClient, bucket: str, key: str, doc: dict, seconds: float | None, owner: str | None = None,
            now: datetime | None = None) -> Lease | None:
    """The lease on `key` for this caller, or None if someone else holds it (unexpired) or its
    work is finished. `seconds`: how long it lasts (None: final at once, e.g. a job taking its
    manifest). `owner`: a name that may take it again (a retried attempt of the same Batch job);
    by default a fresh token, so only this call holds it."""
    assert key.startswith(JOBS), key
    now = now or now_utc()
    owner = owner or uuid.uuid4().hex
    write = uuid.uuid4().hex
    body = {**doc, "owner": owner, "expires": _expiry(seconds, now), "write": write}
    for _ in range(3):  # a lease deleted between our 412 and our read (the lifecycle rule): try again
        etag = _put(s3, bucket, key, body, IfNoneMatch="*")
        if etag:
            return Lease(key, owner, etag, body, fresh=True)
        found = read(s3, bucket, key)
        if found is None:
            continue
        cur, etag = found
        if cur.get("write") == write or cur.get("owner") == owner:  # our own write, or the same owner again
            return Lease(key, owner, etag, cur, fresh=cur.get("write") == write)
        if not expired(cur, now):
            return None
        taken = {**cur, **body, "write": uuid.uuid4().hex, "takeovers": int(cur.get("takeovers") or 0) + 1}
        new_etag = _put(s3, bucket, key, taken, IfMatch=etag)
        if new_etag:
            return Lease(key, owner, new_etag, taken, previous=cur)
        again = read(s3, bucket, key)
        if again and again[0].get("write") == taken["write"]:  # applied, answered 5xx, retried into 412
            return Lease(key, owner, again[1], taken, previous=cur)
        return None  # another delivery took it over first
    return None


def _rewrite(s3: BaseClient, bucket: str, lease: Lease, expires: str | None | bool, fields: dict) -> Lease:
    """The lease with `fields` recorded and its expiry set (False: unchanged); LeaseLost if
    someone took it over."""
    doc = {**lease.doc, **fields, "write": uuid.uuid4().hex}
    if expires is not False:
        doc["expires"] = expires
    etag = _put(s3, bucket, lease.key, doc, IfMatch=lease.etag)
    if etag is None:
        found = read(s3, bucket, lease.key)
        if not found or found[0].get("write") != doc["write"]:
            raise LeaseLost(f"{lease.key}: taken over by {found[0].get('owner') if found else 'nobody (deleted)'}")
        etag = found[1]
    return Lease(lease.key, lease.owner, etag, doc, lease.previous)


def record(s3: BaseClient, bucket: str, lease: Lease, **fields) -> Lease:
    """Write progress into a held lease (its expiry unchanged), so a takeover continues from here."""
    return _rewrite(s3, bucket, lease, False, fields)


def finish(s3: BaseClient, bucket: str, lease: Lease, **fields) -> Lease:
    """The work is done: the lease becomes final and is never taken over."""
    return _rewrite(s3, bucket, lease, None, fields)


def release(s3: BaseClient, bucket: str, lease: Lease, now: datetime | None = None, **fields) -> Lease:
    """Give the work back: the lease expires now (keeping what it recorded), so the redelivered
    message takes it over at once."""
    return _rewrite(s3, bucket, lease, (now or now_utc()).isoformat(), fields)


def release_quietly(s3: BaseClient, bucket: str, lease: Lease | None, logger=None) -> None:
    """`release`, for an error path: a failure here only delays the retry until the lease expires."""
    if lease is None:
        return
    try:
        release(s3, bucket, lease)
    except Exception:  # noqa: BLE001 - the original error is the one to raise
        if logger:
            logger.exception("could not release the lease; it expires on its own", extra={"lease": lease.key})


def lease_key(prefix: str, *parts: object) -> str:
    """jobs/claims/<function>/<sha256 of parts>.json (prefix from shared/pipeline/s3.py)."""
    assert prefix.startswith(CLAIMS), prefix
    return f"{prefix}{digest(*parts)}.json"


def report(s3: BaseClient, bucket: str, lease: Lease, *, pair: str | None, reason: str, keys: dict, key: str, stage: str,
           now: datetime | None = None) -> str:
    """failed/.../error.json (`key`) for the leased work, then the lease is final: reported once.
    If either write fails the lease is released, so the retry reports it."""
    try:
        write_error(s3, bucket, pair, reason, stage=stage, keys=keys, key=key, now=now)
        finish(s3, bucket, lease, state="reported", error=key)
    except Exception:
        release_quietly(s3, bucket, lease)
        raise
    return key


class Sent:
    """The delayed checks this (warm) function put on their way (schedule_once), by lease key,
    until their lease runs out: while one holds, another event for the same thing needs no request
    at all, since the check already on its way reads it. Without it, each answer of a 200-pair
    folder cost a conditional write that failed and a read (three quarters of the notify
    function's time in a 200-pair run on one machine)."""

    MARGIN_S = 5.0  # forgotten this much before the lease's expiry, which was set after the clock was read

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock, self.until = clock, {}

    def holds(self, key: str) -> bool:
        return self.until.get(key, 0.0) > self.clock()

    def note(self, key: str, since: float, seconds: float) -> None:
        now = self.clock()
        self.until = {k: t for k, t in self.until.items() if t > now}  # a warm function sees many folders and labs
        self.until[key] = since + seconds - self.MARGIN_S


def schedule_once(s3: BaseClient, bucket: str, key: str, doc: dict, seconds: float, send: Callable[[], None],
                  sent: Sent | None = None) -> bool:
    """One delayed check on its way per `key`: the lease on `key` for `seconds` (the check's
    delay), then `send()` (the delayed message). False if one already is. `sent`: the checks this
    function sent itself, known without a request while their lease holds."""
    if sent is not None and sent.holds(key):
        return False
    since = sent.clock() if sent is not None else 0.0
    if acquire(s3, bucket, key, doc, seconds) is None:
        return False
    send()
    if sent is not None:
        sent.note(key, since, seconds)
    return True
