"""The runner: one GPU job that keeps taking the manifests ingest writes after it was submitted.

A folder of thousands of pairs arrives over minutes, and ingest sees it as one invocation after
another (the queue's batching window). A job per invocation pays a GPU start-up per window and
runs nothing while the upload goes on. Instead:

- ingest submits a job only when no runner accepts work. The job it submits is the runner
  (jobs/runner.json names it); later manifests are queued to it as pointers,
  jobs/queue/<runner>/<job-id>.json, and no job is submitted for them, until the estimated work
  queued to it fills its budget (DRAIN_S, the part of its time limit kept for queued work): then
  the next manifest is a new job, the new runner. So a folder is as many jobs as its work needs
  (each with its own start-up, and running side by side), not one per batching window;
- the runner does its own manifest, then the manifests queued to it, oldest first, each work
  item taken as any job takes one (gpu_job/job.py), so no pair runs twice;
- when nothing is queued it closes (jobs/runner.json says so) and looks once more. A manifest that
  ingest queued was queued *before* ingest saw the runner still open, so before it closed: the
  last look finds it. After the close, ingest submits a new job again.

Nothing queued is lost: a runner out of time hands the rest back (exit 75, Batch retries the
job, whose next attempt drains its queue again), and a runner that fails for good is answered by
the notify function for its own manifest and for every manifest queued to it
(shared/pipeline/notify.py). Why not SQS between ingest and the job: the queue would have to be
drained by a job that Batch starts on demand anyway, and the takes already make each item once.
"""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Callable

from botocore.client import BaseClient

from shared.pipeline.leases import put_if, read
from shared.pipeline.s3 import JOBS, manifest_key

RUNNER = f"{JOBS}runner.json"
QUEUE = f"{JOBS}queue/"
# A submitted runner is trusted this long to start; past it, ingest submits another job (GPU
# capacity may be short; the late one still drains what was queued to it).
START_S = 900.0
# A runner stops accepting work this long before its time limit; what is queued and not started
# by then is handed back (exit 75) to its next attempt.
ACCEPT_MARGIN_S = 600.0


def runner_of(batch_job_id: str) -> str:
    """An array child (<parent>:<index>) drains its parent's queue."""
    return batch_job_id.split(":", 1)[0]


def queue_prefix(runner: str) -> str:
    return f"{QUEUE}{runner}/"


def queue_key(runner: str, manifest_key: str) -> str:
    return f"{queue_prefix(runner)}{manifest_key.split('/')[-2]}.json"


def _accepting(doc: dict | None, now: datetime) -> bool:
    if not doc or doc.get("state") not in ("submitted", "running"):
        return False
    try:
        return datetime.fromisoformat(doc["accepts_until"]) > now
    except (KeyError, TypeError, ValueError):
        return False


def _update(s3: BaseClient, bucket: str, change: Callable[[dict], dict | None]) -> dict | None:
    """Read jobs/runner.json, apply `change` (None: leave it) and write it back only if nobody
    wrote it in between (If-Match); on a race, read again. The document written, or None."""
    for _ in range(10):
        found = read(s3, bucket, RUNNER)
        new = change(found[0]) if found else None
        if new is None:
            return None
        if put_if(s3, bucket, RUNNER, new, IfMatch=found[1]):
            return new
    return None  # ten races lost in a row: treated as "no": a new job, or a runner that stays open a while


def enqueue(s3: BaseClient, bucket: str, manifest_key: str, seconds: float, now: datetime) -> str | None:
    """Queue the manifest (`seconds` of estimated work) to the open runner: its Batch job id, or
    None when no runner accepts it (closed, late to start, near its limit, or its budget for
    queued work spent), and the caller submits a job. The pointer is written before the runner's
    budget is taken (If-Match), so a runner that closes after that finds it in its last look, and
    one that closed before makes the take fail."""
    found = read(s3, bucket, RUNNER)
    if not found or not _accepting(found[0], now) or found[0].get("budget_s", 0) < seconds:
        return None
    runner = found[0]["batch_job_id"]
    pointer = queue_key(runner, manifest_key)
    put_if(s3, bucket, pointer, {"manifest": manifest_key, "runner": runner, "seconds": seconds, "queued": now.isoformat()})

    def take(doc: dict) -> dict | None:
        if doc.get("batch_job_id") != runner or not _accepting(doc, now) or doc.get("budget_s", 0) < seconds:
            return None
        return {**doc, "budget_s": doc["budget_s"] - seconds}

    if _update(s3, bucket, take):
        return runner
    # Not queued after all (the job submitted for it does it): withdrawn, as an empty pointer,
    # which `queued` skips by its size. Nothing under jobs/ is deleted but by the lifecycle rule.
    s3.put_object(Bucket=bucket, Key=pointer, Body=b"")
    return None


def opened(s3: BaseClient, bucket: str, batch_job_id: str, budget_s: float, now: datetime) -> None:
    """The job just submitted is the runner, with `budget_s` of estimated work to take from the
    queue (the last submitted wins; an earlier one still drains what was queued to it)."""
    put_if(s3, bucket, RUNNER, {"batch_job_id": batch_job_id, "state": "submitted", "updated": now.isoformat(),
                                "budget_s": budget_s, "accepts_until": (now + timedelta(seconds=START_S)).isoformat()})


def started(s3: BaseClient, bucket: str, batch_job_id: str, deadline: datetime, now: datetime) -> bool:
    """A job starting: if it is the open runner, it accepts work until shortly before its
    deadline. False when it is not (another was submitted since, or it closed)."""
    until = max(now, deadline - timedelta(seconds=ACCEPT_MARGIN_S)).isoformat()
    return _update(s3, bucket, lambda doc: {**doc, "state": "running", "updated": now.isoformat(), "accepts_until": until}
                   if doc.get("batch_job_id") == runner_of(batch_job_id) and doc.get("state") != "closed" else None) is not None


def close(s3: BaseClient, bucket: str, batch_job_id: str, now: datetime) -> None:
    """Stop accepting work (only if jobs/runner.json still names this runner)."""
    _update(s3, bucket, lambda doc: {**doc, "state": "closed", "updated": now.isoformat()}
            if doc.get("batch_job_id") == runner_of(batch_job_id) and doc.get("state") != "closed" else None)


def accepts(s3: BaseClient, bucket: str, batch_job_id: str, now: datetime) -> bool:
    """Whether ingest may still queue work to this job (it is the open runner, with budget left):
    if not, nothing more will come, and waiting for it is waste."""
    found = read(s3, bucket, RUNNER)
    return bool(found and found[0].get("batch_job_id") == runner_of(batch_job_id) and _accepting(found[0], now)
                and found[0].get("budget_s", 0) > 0)


def queued(s3: BaseClient, bucket: str, runner: str) -> list[str]:
    """The manifest keys queued to a runner, oldest first (job ids start with their UTC time)."""
    out = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=queue_prefix(runner)):
        out += [o["Key"] for o in page.get("Contents", []) if o.get("Size", 0) > 0]  # empty: withdrawn (enqueue)
    return [manifest_key(k.rsplit("/", 1)[1][:-len(".json")]) for k in sorted(out)]
