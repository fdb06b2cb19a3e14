"""One pair's outputs as one attempt: results/<pair>/ holds the images and the result.json of one
upload, the newest, whatever order parallel jobs finish in.

Two jobs can restore the same pair: the pair was uploaded again while its first job ran, or a
re-upload's first half met the other half's old version. Plain puts would let the last writer win
file by file, so inpainted.png and result.json could come from different inputs. Instead every
writer takes the pair's results lease (jobs/claims/results/, shared/pipeline/leases.py), looks at
the result.json there, and writes all of its outputs only if its inputs are newer; an older
upload's outputs are dropped whole (the job reports the pair "superseded") and the newer result
stands. result.json records the version of every image it names, so a reader that follows it
never mixes attempts even while a writer is between puts.
"""
from __future__ import annotations

import time
from typing import Callable

from botocore.client import BaseClient

from shared.pipeline.leases import acquire, lease_key, release_quietly
from shared.pipeline.s3 import RESULT_CLAIMS, get_json_or_none, result_key

# A writer holds the lease for its puts only (seconds); one that dies holding it is taken over
# after this long, which is also how long a live writer waits at most.
LEASE_S = 120.0


def order(inputs: dict) -> tuple:
    """Which upload is newer: the later of the two halves' upload times (S3 keeps whole seconds),
    then when ingest took the pair, then the versions (only to break a tie the same way in every job)."""
    return (inputs.get("uploaded") or "", inputs.get("claimed") or "", inputs.get("image_version") or "",
            inputs.get("mask_version") or "")


def publish(s3: BaseClient, bucket: str, pair: str, job_id: str, inputs: dict, write: Callable[[], None],
            wait_s: float = LEASE_S + 30, sleep: Callable[[float], None] = time.sleep) -> str:
    """Runs `write` (every output of the pair, result.json last) under the pair's results lease,
    unless result.json is already a newer upload's. Returns "written" or "superseded"."""
    key = lease_key(RESULT_CLAIMS, pair)
    deadline, lease = time.monotonic() + wait_s, None
    while lease is None:
        lease = acquire(s3, bucket, key, {"pair": pair, "job_id": job_id}, LEASE_S)
        if lease is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"results/{pair}/ stayed locked by another job for {wait_s:.0f} s")
            sleep(1.0)
    try:
        there = get_json_or_none(s3, bucket, result_key(pair))
        if there and there.get("job_id") != job_id and order(there.get("inputs") or {}) > order(inputs):
            return "superseded"
        write()
        return "written"
    finally:
        release_quietly(s3, bucket, lease)
