"""The sweeper (functions/sweep/app.py, on an EventBridge schedule): what no event will ever report.

- **A half-uploaded pair**: an image whose mask never came, a mask without its image, or options
  alone, the newest of them older than `half_pair_s`.
- **A late sidecar**: NAME.json uploaded after its pair was submitted with other options (or none),
  so it was never used, whether it is valid or not.
- **An abandoned lease**: ingest leased a pair and never finished (its message ran out of receives:
  the function died on it every time) and no job took its manifest.

Each is reported once, as failed/<pair>/error.json (stage "sweep"), which the notify function turns
into the usual failure notification. Once: a lease under jobs/claims/sweep/ guards each report, and
an abandoned ingest lease is itself taken over (shared/pipeline/leases.py), so a delivery that comes back
later finds it done. Each sweep looks back `lookback_s`; what is older was looked at before.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Callable, Iterator

from botocore.client import BaseClient

from shared.errors import InputError
from shared.pipeline.ingest import ObjectRef, PairRef
from shared.pipeline.leases import DEFAULT_LEASE_S, Lease, acquire, expired, finish, lease_key, now_utc, read, release_quietly, report
from shared.pipeline.s3 import (INCOMING, INGEST_CLAIMS, JOBS, SWEEP_CLAIMS, classify, error_key, get_bytes, get_json, get_json_or_none,
                                put_json, take_keys)
from shared.pipeline.validate import validate_sidecar


CURSOR = f"{JOBS}sweep/cursor.json"  # where a sweep that ran out of time stopped


@dataclass(frozen=True)
class SweepConfig:
    half_pair_s: float = 24 * 3600  # HalfPairHours: how long the first half of a pair waits for the second
    # LeaseGraceSeconds: how long an expired ingest lease may wait for its redelivery. Longer than
    # the RUNNABLE limit (2 h) plus one redelivery (the ingest queue's 90 min visibility timeout).
    lease_grace_s: float = 4 * 3600
    lookback_s: float = 7 * 24 * 3600  # a week of sweeps that failed is still caught up


@dataclass(frozen=True)
class Found:
    kind: str  # half-pair | late-sidecar | abandoned
    pair: str
    reason: str
    error_key: str | None  # None: reported already (or, for abandoned leases, nothing to report)


@dataclass(frozen=True)
class Upload:
    ref: ObjectRef
    modified: datetime


class Incoming:
    """Every pair under incoming/ with its current objects by role (image, mask, sidecar), each
    yielded as soon as the listing has passed all of its keys (they share the prefix
    incoming/<pair>.), so a sweep reports while it lists rather than after listing a million
    objects. It lists from `start` (a KeyMarker) and stops between pages once `out_of_time()`;
    `resume` is then the KeyMarker the next sweep starts from, and None once the listing finished."""

    def __init__(self, s3: BaseClient, bucket: str, start: str | None, out_of_time: Callable[[], bool], prefix: str = INCOMING):
        self.s3, self.bucket, self.start, self.out_of_time, self.prefix = s3, bucket, start, out_of_time, prefix
        self.resume: str | None = None

    def __iter__(self) -> Iterator[tuple[str, dict[str, list[Upload]]]]:
        pending: dict[str, dict[str, list[Upload]]] = {}
        before: dict[str, str | None] = {}  # each pending pair: the key listed just before its first
        last = self.start
        kw = {"Bucket": self.bucket, "Prefix": self.prefix, **({"KeyMarker": self.start} if self.start else {})}
        for page in self.s3.get_paginator("list_object_versions").paginate(**kw):
            for v in page.get("Versions", []):
                key = v["Key"]
                for pair in [p for p in pending if not key.startswith(f"{INCOMING}{p}.")]:  # sorted: all of its keys are behind
                    before.pop(pair)
                    yield pair, pending.pop(pair)
                if v.get("IsLatest"):
                    self._add(pending, before, v, last)
                last = key
            if self.out_of_time():
                # Re-list the pairs not yet complete; "" (not None, which means finished): from the start.
                self.resume = (next(iter(before.values())) if before else last) or ""
                return
        yield from pending.items()

    @staticmethod
    def _add(pending: dict, before: dict, v: dict, last: str | None) -> None:
        try:
            upload = classify(v["Key"])
        except InputError:  # an odd key: ingest reported it
            return
        if upload is None:
            return
        version = None if v.get("VersionId") in (None, "null") else v["VersionId"]
        ref = ObjectRef(v["Key"], version, v.get("ETag", ""), int(v.get("Size", 0)))
        if upload.pair not in pending:
            pending[upload.pair], before[upload.pair] = {"image": [], "mask": [], "sidecar": []}, last
        pending[upload.pair][upload.role].append(Upload(ref, v["LastModified"]))


def _group(s3: BaseClient, bucket: str, pair: str) -> dict[str, list[Upload]] | None:
    """One pair's current objects by role, listed by its own prefix."""
    for found, g in Incoming(s3, bucket, None, lambda: False, prefix=f"{INCOMING}{pair}."):
        if found == pair:
            return g
    return None


def _once(s3, bucket, kind: str, pair: str, parts: list, reason: str, keys: dict, now, lease_s) -> Found:
    lease = acquire(s3, bucket, lease_key(SWEEP_CLAIMS, kind, pair, *parts), {"kind": kind, "pair": pair}, lease_s, now=now)
    if lease is None:
        return Found(kind, pair, reason, None)
    return Found(kind, pair, reason, report(s3, bucket, lease, pair=pair, reason=reason, keys=keys, key=error_key(pair),
                                            stage="sweep", now=now))


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.0f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def half_pair(s3, bucket, pair: str, g: dict, cfg: SweepConfig, now, lease_s) -> Found | None:
    if g["image"] and g["mask"]:
        return None
    objs = g["image"] + g["mask"] + g["sidecar"]
    age = (now - max(o.modified for o in objs)).total_seconds()
    if not cfg.half_pair_s < age <= cfg.half_pair_s + cfg.lookback_s:
        return None
    waited = _hours(cfg.half_pair_s)
    if g["image"]:
        reason = (f"{g['image'][0].ref.key}: its mask {INCOMING}{pair}.mask.png has not arrived in {waited}, and nothing is "
                  "restored until both are there: upload the mask (white = restore, black = keep, the image's size)")
    elif g["mask"]:
        reason = (f"{g['mask'][0].ref.key}: its image has not arrived in {waited}: upload {INCOMING}{pair}.png "
                  "(or .jpg, .tif) beside it")
    else:
        reason = (f"{g['sidecar'][0].ref.key}: options without an image or a mask for {waited}: upload {INCOMING}{pair}.png "
                  f"and {INCOMING}{pair}.mask.png")
    keys = {role: g[role][0].ref.key for role in ("image", "mask", "sidecar") if g[role]}
    return _once(s3, bucket, "half-pair", pair, sorted(f"{o.ref.key}@{o.ref.version}@{o.ref.etag}" for o in objs), reason,
                 keys, now, lease_s)


def _pair_ref(pair: str, g: dict) -> PairRef | None:
    if len(g["image"]) != 1 or not g["mask"]:  # half, or two images (ingest reported that)
        return None
    return PairRef(pair, g["image"][0].ref, g["mask"][0].ref, g["sidecar"][0].ref if g["sidecar"] else None)


def late_sidecar(s3, bucket, pair: str, g: dict, cfg: SweepConfig, now, lease_s) -> Found | None:
    ref = _pair_ref(pair, g)
    if ref is None or ref.sidecar is None or (now - g["sidecar"][0].modified).total_seconds() > cfg.lookback_s:
        return None
    found = read(s3, bucket, ref.claim_key)
    if not found or found[0].get("state") not in ("submitting", "submitted") or found[0].get("sidecar") == ref.sidecar.ref:
        return None  # not submitted yet (a later sweep looks again), or submitted with these very options
    used = found[0].get("sidecar")
    reason = (f"{ref.sidecar.key}: these options arrived after the pair had been submitted "
              f"{'with the options it had then' if used else 'without options'}, so they were not used; "
              "upload the image or the mask again to restore the pair with them")
    try:
        validate_sidecar(get_bytes(s3, bucket, ref.sidecar.key, ref.sidecar.version), ref.sidecar.key)
    except InputError as exc:
        reason += f" (and fix them first: {exc.reason})"
    keys = {"image": ref.image.key, "mask": ref.mask.key, "sidecar": ref.sidecar.key}
    return _once(s3, bucket, "late-sidecar", pair, [f"{ref.sidecar.key}@{ref.sidecar.version}@{ref.sidecar.etag}"], reason,
                 keys, now, lease_s)


def abandoned(s3, bucket, cfg: SweepConfig, now, lease_s, start: str | None = None,
              out_of_time: Callable[[], bool] = lambda: False) -> tuple[list[Found], str | None]:
    """Ingest leases whose holder died and whose message never came back (or ran out of receives),
    listed from `start` (StartAfter) until `out_of_time()`: (found, where the next sweep resumes or None)."""
    out, last = [], start
    kw = {"Bucket": bucket, "Prefix": INGEST_CLAIMS, **({"StartAfter": start} if start else {})}
    for page in s3.get_paginator("list_objects_v2").paginate(**kw):
        for obj in page.get("Contents", []):
            last = obj["Key"]
            if not cfg.lease_grace_s < (now - obj["LastModified"]).total_seconds() <= cfg.lease_grace_s + cfg.lookback_s:
                continue
            found = read(s3, bucket, obj["Key"])
            doc = found[0] if found else {}
            if "image" not in doc or not expired(doc, now - timedelta(seconds=cfg.lease_grace_s)):
                continue  # finished, still held, or not a pair's lease
            lease = acquire(s3, bucket, obj["Key"], {"swept": now.isoformat()}, lease_s, now=now)
            if lease is not None:
                out += [f for f in [_settle(s3, bucket, lease, _group(s3, bucket, doc["pair"]), now)] if f]
        if out_of_time():
            return out, last
    return out, None


def _settle(s3, bucket, lease: Lease, g: dict | None, now) -> Found | None:
    doc, pair = lease.doc, lease.doc["pair"]
    ref = _pair_ref(pair, g) if g else None
    if ref is None or ref.claim_key != lease.key:  # uploaded again since: the new version has its own lease
        finish(s3, bucket, lease, state="superseded")
        return None
    manifest = doc.get("manifest") if doc.get("state") == "submitting" else None
    if manifest:  # a job may have started on it after all; if none did, none may now (the takes are ours)
        mine = []
        for take in take_keys(manifest, get_json(s3, bucket, manifest)):
            held = acquire(s3, bucket, take, {"swept": lease.key}, None, owner=f"sweep-{lease.owner}")
            if held is None:
                taken = read(s3, bucket, take)
                if not (taken and taken[0].get("swept") == lease.key):  # not an earlier sweep's that died before reporting
                    for m in mine:  # an array child ran, so the array was submitted: let its other children run too
                        release_quietly(s3, bucket, m)
                    finish(s3, bucket, lease, state="submitted", batch_job_id=taken[0].get("owner") if taken else None)
                    return None
            else:
                mine.append(held)
    times = int(doc.get("takeovers") or 0)  # the first holder, and every takeover but ours, stopped once
    reason = (f"the pair was accepted at {doc.get('claimed')} but no GPU job ever started for it: processing it stopped "
              f"{times} time{'s' * (times != 1)} without finishing{' after its job manifest was written' if manifest else ''} "
              "(the ingest function ran out of time or memory on it); upload the image or the mask again to retry, and if "
              "it stops again, make the image smaller")
    keys = {"image": doc["image"][0], "mask": doc["mask"][0], **({"manifest": manifest} if manifest else {})}
    return Found("abandoned", pair, reason, report(s3, bucket, lease, pair=pair, reason=reason, keys=keys, key=error_key(pair),
                                                   stage="sweep", now=now))


def sweep(s3: BaseClient, bucket: str, cfg: SweepConfig = SweepConfig(), now: datetime | None = None,
          lease_s: float = DEFAULT_LEASE_S, out_of_time: Callable[[], bool] = lambda: False) -> list[Found]:
    """One sweep of the bucket: everything found, reported or (error_key None) reported before.
    On a bucket too large for one invocation it stops between pages once `out_of_time()` and
    saves where it stopped (CURSOR); the next sweep goes on from there, and starts over once
    both listings have finished."""
    now = now or now_utc()
    cursor = get_json_or_none(s3, bucket, CURSOR) or {}
    found = []
    if cursor.get("claims") is None:  # the incoming/ listing is not done yet
        listing = Incoming(s3, bucket, cursor.get("incoming"), out_of_time)
        for pair, g in listing:
            f = half_pair(s3, bucket, pair, g, cfg, now, lease_s) or late_sidecar(s3, bucket, pair, g, cfg, now, lease_s)
            if f:
                found.append(f)
        if listing.resume is not None:
            _save_cursor(s3, bucket, {"incoming": listing.resume, "claims": None}, now)
            return found
    more, resume = abandoned(s3, bucket, cfg, now, lease_s, cursor.get("claims") or None, out_of_time)
    _save_cursor(s3, bucket, {"incoming": None, "claims": resume or ""} if resume else {}, now)
    return found + more


def _save_cursor(s3: BaseClient, bucket: str, cursor: dict, now: datetime) -> None:
    """Where the next sweep starts: {"incoming": KeyMarker} while incoming/ is being listed,
    {"claims": StartAfter} while the leases are, {} to start over."""
    put_json(s3, bucket, CURSOR, {**cursor, "saved": now.isoformat()})
