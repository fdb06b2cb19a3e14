"""One writer of a pair's outputs at a time, and the newest upload's outputs stand (shared/pipeline/publish.py)."""
import json
import time

import pytest

from shared.pipeline.leases import acquire, lease_key
from shared.pipeline.publish import LEASE_S, publish
from shared.pipeline.s3 import RESULT_CLAIMS, result_key

from .conftest import BUCKET


def _writer(s3, pair, job_id, inputs):
    def write():
        s3.put_object(Bucket=BUCKET, Key=result_key(pair, "inpainted.png"), Body=job_id.encode())
        s3.put_object(Bucket=BUCKET, Key=result_key(pair), Body=json.dumps({"pair": pair, "job_id": job_id, "inputs": inputs}).encode())
    return write


def _current(s3, pair):
    return (json.loads(s3.get_object(Bucket=BUCKET, Key=result_key(pair))["Body"].read())["job_id"],
            s3.get_object(Bucket=BUCKET, Key=result_key(pair, "inpainted.png"))["Body"].read().decode())


def test_older_upload_is_dropped_whole_and_newer_replaces(stack):
    s3 = stack.s3
    old, new = {"uploaded": "2026-12-03T10:00:00+00:00"}, {"uploaded": "2026-12-03T10:00:01+00:00"}
    assert publish(s3, BUCKET, "lab/p", "job-new", new, _writer(s3, "lab/p", "job-new", new)) == "written"
    assert publish(s3, BUCKET, "lab/p", "job-old", old, _writer(s3, "lab/p", "job-old", old)) == "superseded"
    assert _current(s3, "lab/p") == ("job-new", "job-new")
    newest = {"uploaded": "2026-12-03T10:00:02+00:00"}
    assert publish(s3, BUCKET, "lab/p", "job-3", newest, _writer(s3, "lab/p", "job-3", newest)) == "written"
    assert _current(s3, "lab/p") == ("job-3", "job-3")


def test_a_writer_waits_for_the_lease_and_gives_up_with_a_reason(stack):
    s3 = stack.s3
    held = acquire(s3, BUCKET, lease_key(RESULT_CLAIMS, "lab/q"), {"pair": "lab/q"}, LEASE_S)
    assert held is not None
    slept = []
    with pytest.raises(TimeoutError, match="results/lab/q/ stayed locked"):
        publish(s3, BUCKET, "lab/q", "job-1", {}, lambda: pytest.fail("wrote without the lease"), wait_s=0.2,
                sleep=lambda s: (slept.append(s), time.sleep(0.15)))
    assert slept and set(slept) == {1.0}  # it waited for the holder before giving up


def test_a_dead_writers_lease_is_taken_over(stack):
    s3 = stack.s3
    acquire(s3, BUCKET, lease_key(RESULT_CLAIMS, "lab/r"), {"pair": "lab/r"}, -1.0)  # expired: its holder died
    inputs = {"uploaded": "2026-12-03T10:00:00+00:00"}
    assert publish(s3, BUCKET, "lab/r", "job-1", inputs, _writer(s3, "lab/r", "job-1", inputs), wait_s=0.0) == "written"
    # and released after: the next writer gets it at once
    assert publish(s3, BUCKET, "lab/r", "job-2", inputs, _writer(s3, "lab/r", "job-2", inputs), wait_s=0.0) == "written"
