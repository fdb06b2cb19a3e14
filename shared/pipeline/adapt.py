"""A lab's own model, the pipeline's side: photos uploaded under adapt/<lab>/ become one training
job once the upload settles; the job (gpu_job/training/adapt_job.py) writes models/<lab>/, and from
then on that lab's pairs (incoming/<lab>/...) are restored with it.

    adapt/<lab>/**.{png,jpg,jpeg,tif,tiff}     a lab's ordinary, unmasked photos (never changed by us)
    jobs/adapt/<lab>/<digest>/manifest.json    the photos (key, version) one job trains on
    jobs/claims/adapt/<lab>/<digest>.json      the lease: one job per settled set of photos
    models/<lab>/weights.safetensors + .json   the lab's model and its record
    models/<lab>/adapted.json                  the completion signal (notify: "a model for <lab> is ready")
    failed/adapt/<lab>/error.json              why no model was made (too few photos, ...)

Settling: an upload has no end event. Every photo's event sends a check for its lab back to the
queue, delayed; a check that finds the lab's newest photo younger than SETTLE_S sends itself
again, later. The first check after the upload has been quiet that long leases the set of photos
it lists (their keys and versions) and submits one job for it; every later check of the same set
finds the lease and does nothing. The rule for more photos while a job runs: they settle into a
new set, which gets its own job on all the lab's photos; a job never replaces a model made from a
newer set of photos than its own.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime

from botocore.client import BaseClient

from shared.pipeline.leases import Sent, acquire, finish, now_utc, release_quietly, schedule_once
from shared.pipeline.pairs import IMAGE_SUFFIXES
from shared.pipeline.s3 import ADAPT, CLAIMS, JOBS, MODELS, digest, put_json

SETTLE_S = 120  # quiet this long after the last photo: the upload is complete
CHECK_DELAY_S = 150  # a check comes back after this (SQS allows up to 900)
LEASE_S = 300  # the adapt function's timeout, and then some
LAB = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")  # one path segment; also a Batch job name part


@dataclass
class Check:
    status: str  # settling | submitted | already | empty
    lab: str
    detail: str = ""
    manifest: str | None = None


def lab_of_key(key: str) -> str | None:
    """adapt/<lab>/... -> <lab> (None for anything else, or a name that is not a plain segment)."""
    if not key.startswith(ADAPT):
        return None
    lab = key[len(ADAPT):].split("/", 1)[0]
    return lab if LAB.match(lab) and "/" in key[len(ADAPT):] else None


def model_key(lab: str, name: str = "weights.safetensors") -> str:
    return f"{MODELS}{lab}/{name}"


def photos(s3: BaseClient, bucket: str, lab: str) -> list[dict]:
    """The lab's photos, latest versions: [{key, version, modified}] in key order."""
    out = []
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=f"{ADAPT}{lab}/"):
        for v in page.get("Versions", []):
            if v["IsLatest"] and v["Key"].lower().endswith(IMAGE_SUFFIXES):
                out.append({"key": v["Key"], "version": v.get("VersionId"), "modified": v["LastModified"]})
    return sorted(out, key=lambda p: p["key"])


def schedule(s3: BaseClient, sqs: BaseClient, bucket: str, lab: str, queue_url: str, delay_s: float = CHECK_DELAY_S,
             sent: Sent | None = None) -> bool:
    """A photo arrived: one check of its lab, unless one is already on its way (an upload of 200
    photos schedules one check, not 200). False if one was."""
    return schedule_once(s3, bucket, f"{CLAIMS}adapt/{lab}/scheduled.json", {"lab": lab}, delay_s,
                         lambda: ask_later(sqs, queue_url, lab, delay_s), sent)


def ask_later(sqs: BaseClient, queue_url: str, lab: str, delay_s: float = CHECK_DELAY_S) -> None:
    sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps({"adapt_check": lab}), DelaySeconds=int(min(900, max(0, delay_s))))


def check(s3: BaseClient, batch: BaseClient, sqs: BaseClient, bucket: str, lab: str, queue_url: str, job_queue: str,
          job_definition: str, now: datetime | None = None, settle_s: float = SETTLE_S) -> Check:
    """Submit the lab's training job if its upload has settled and this set of photos has none yet."""
    now = now or now_utc()
    found = photos(s3, bucket, lab)
    if not found:
        return Check("empty", lab, "no photos under adapt/")
    age = (now - max(p["modified"] for p in found)).total_seconds()
    if age < settle_s:
        ask_later(sqs, queue_url, lab, settle_s - age + 5)
        return Check("settling", lab, f"{len(found)} photos, the newest {age:.0f} s old")
    d = digest(*[f"{p['key']}@{p['version']}" for p in found])[:16]
    key = f"{JOBS}adapt/{lab}/{d}/manifest.json"
    # One job per set of photos: the lease is final once SubmitJob answered; a check that dies
    # before then leaves a lease that expires, and the redelivered check submits.
    lease = acquire(s3, bucket, f"{CLAIMS}adapt/{lab}/{d}.json", {"manifest": key, "photos": len(found)}, LEASE_S)
    if lease is None:
        return Check("already", lab, "this set of photos has its job", key)
    try:
        put_json(s3, bucket, key, {"lab": lab, "bucket": bucket, "photos_as_of": max(p["modified"] for p in found).isoformat(),
                                   "photos": [{"key": p["key"], "version": p["version"]} for p in found]})
        job = batch.submit_job(jobName=f"adapt-{lab.replace('.', '-')}-{d[:8]}", jobQueue=job_queue, jobDefinition=job_definition,
                               parameters={"manifest": f"s3://{bucket}/{key}"})
    except Exception:
        release_quietly(s3, bucket, lease)
        raise
    finish(s3, bucket, lease, batch_job_id=job.get("jobId"))
    return Check("submitted", lab, f"{len(found)} photos", key)
