"""How far is a folder? Every pair under incoming/<folder>/, as the stack sees it now: done (a
result.json made from the pair's current image and mask), failed (an error.json newer than the
pair's last upload, and no such result), or pending (anything else: waiting for a half, queued,
running). `cellpaint status` prints it; counts are of distinct pairs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from botocore.client import BaseClient

from shared.pipeline.leases import now_utc
from shared.pipeline.pairs import split_name
from shared.pipeline.records import RecordError, Result
from shared.pipeline.s3 import FAILED, INCOMING, RESULTS, get_json


@dataclass
class PairState:
    pair: str
    state: str  # done | failed | pending
    detail: str = ""
    result: Result | None = None  # a done pair's result.json
    error_key: str | None = None  # a failed pair's error.json


@dataclass
class FolderStatus:
    folder: str
    pairs: list[PairState] = field(default_factory=list)
    running_jobs: int = 0
    queued_jobs: int = 0
    first_upload: datetime | None = None
    seconds_left: float | None = None  # None: nothing done yet to estimate from, or nothing left

    def count(self, state: str) -> int:
        return sum(p.state == state for p in self.pairs)

    @property
    def finished(self) -> bool:
        return self.count("pending") == 0

    def line(self) -> str:
        return f"{self.count('done')} done, {self.count('failed')} failed, {self.count('pending')} pending"


def _latest(s3: BaseClient, bucket: str, prefix: str) -> dict[str, dict]:
    out = {}
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
        for v in page.get("Versions", []):
            if v["IsLatest"]:
                out[v["Key"]] = v
    return out


def _listings(s3: BaseClient, bucket: str, folder: str) -> tuple[dict, dict, dict]:
    """The folder's pairs ({pair: {"image"/"mask": latest version}}), its result.json and its
    error.json versions ({pair: latest version}), from listings alone."""
    prefix = f"{INCOMING}{folder}/" if folder else INCOMING
    halves: dict[str, dict] = {}
    for key, v in _latest(s3, bucket, prefix).items():
        parsed = split_name(key[len(INCOMING):])
        if parsed and parsed[1] in ("image", "mask"):
            halves.setdefault(parsed[0], {})[parsed[1]] = v
    sub = f"{folder}/" if folder else ""
    results = {k[len(RESULTS):-len("/result.json")]: v for k, v in _latest(s3, bucket, f"{RESULTS}{sub}").items() if k.endswith("/result.json")}
    errors = {k[len(FAILED):-len("/error.json")]: v for k, v in _latest(s3, bucket, f"{FAILED}{sub}").items() if k.endswith("/error.json")}
    return halves, results, errors


def first_unanswered(s3: BaseClient, bucket: str, folder: str, start: str = "") -> str | None:
    """Where a watch of the folder goes on from: the first pair, in key order from pair `start` on,
    not known to have an answer (a half missing, or neither a result.json nor an error.json), or
    None when every pair has one. It reads listings only, and only from `start` to that pair: a
    digest check resumes where the last one stopped, so watching a 10,000-pair folder every minute
    costs the pairs answered in that minute, not the folder. A lower bound of folder_status's
    pending (an old answer of a re-uploaded pair counts), which decides exactly once this is None."""
    folder = folder.strip("/")
    sub = f"{folder}/" if folder else ""
    after = {"StartAfter": f"{INCOMING}{start}"} if start else {}
    # Pairs from `start` on with a result.json or an error.json. results/<pair>/ lists from `start`
    # whenever incoming/<pair>. does ('/' follows '.'), so no answer of a pair read below is missed.
    answered = set()
    for root, name in ((RESULTS, "/result.json"), (FAILED, "/error.json")):
        since = {"StartAfter": f"{root}{start}"} if start else {}
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{root}{sub}", **since):
            answered.update(o["Key"][len(root):-len(name)] for o in page.get("Contents", []) if o["Key"].endswith(name))
    halves: dict[str, set] = {}  # pairs seen so far, in key order: a pair's two halves need not be next to each other
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{INCOMING}{sub}", **after,
                                                          PaginationConfig={"PageSize": 250})
    for page in pages:
        for o in page.get("Contents", []):
            parsed = split_name(o["Key"][len(INCOMING):])
            if not parsed or parsed[1] not in ("image", "mask"):
                continue
            roles = halves.setdefault(parsed[0], set())
            roles.add(parsed[1])
            if len(roles) == 2 and parsed[0] not in answered:
                return next(p for p, r in halves.items() if len(r) < 2 or p == parsed[0])  # the first not known answered
    return next((p for p, r in halves.items() if len(r) < 2), None)


def folder_status(s3: BaseClient, bucket: str, folder: str, batch: BaseClient | None = None, now: datetime | None = None) -> FolderStatus:
    """`folder`: the part after incoming/ ("lab1/2026-12-03"); "" is the whole of incoming/."""
    folder = folder.strip("/")
    halves, results, errors = _listings(s3, bucket, folder)
    st = FolderStatus(folder)
    for pair, h in sorted(halves.items()):
        st.pairs.append(_state(s3, bucket, pair, h, results.get(pair), errors.get(pair)))
        for v in h.values():
            st.first_upload = min(st.first_upload or v["LastModified"], v["LastModified"])
    if batch is not None:
        st.running_jobs, st.queued_jobs = _jobs(batch)
    done = st.count("done") + st.count("failed")
    if done and not st.finished and st.first_upload:
        rate = done / max(1.0, ((now or now_utc()) - st.first_upload).total_seconds())
        st.seconds_left = st.count("pending") / rate
    return st


def _state(s3, bucket: str, pair: str, halves: dict, result: dict | None, error: dict | None) -> PairState:
    if set(halves) != {"image", "mask"}:
        return PairState(pair, "pending", f"waiting for its {'mask' if 'image' in halves else 'image'}")
    if result is not None:
        try:
            r = Result.from_json(get_json(s3, bucket, result["Key"], result.get("VersionId")))
        except RecordError:
            r = None
        # Done only if made from the versions uploaded last: a re-upload is pending again.
        if r and r.inputs.get("image_version") == halves["image"].get("VersionId") and r.inputs.get("mask_version") == halves["mask"].get("VersionId"):
            return PairState(pair, "done", result=r)
    last_upload = max(v["LastModified"] for v in halves.values())
    if error is not None and error["LastModified"] >= last_upload:
        reason = get_json(s3, bucket, error["Key"], error.get("VersionId")).get("reason", "")
        return PairState(pair, "failed", str(reason)[:200], error_key=error["Key"])
    return PairState(pair, "pending")


def _jobs(batch: BaseClient) -> tuple[int, int]:
    """(running, queued) cellpaint jobs in every job queue these credentials see."""
    running = queued = 0
    for q in batch.describe_job_queues().get("jobQueues", []):
        for status, is_running in (("RUNNING", True), ("STARTING", True), ("RUNNABLE", False), ("PENDING", False), ("SUBMITTED", False)):
            jobs = batch.list_jobs(jobQueue=q["jobQueueArn"], jobStatus=status).get("jobSummaryList", [])
            n = sum(j["jobName"].startswith("cellpaint-") for j in jobs)
            running, queued = (running + n, queued) if is_running else (running, queued + n)
    return running, queued
