"""The runner (shared/pipeline/runner.py): a folder that arrives over many ingest invocations is
one GPU job, which takes the manifests queued after it; nothing queued is lost when it closes,
runs out of time or fails."""
from __future__ import annotations

import json

from .conftest import BUCKET, Context, batch_jobs, handoffs, keys, run_jobs
from .test_ingest import upload_pairs


def invocation(stack, folder: str, n: int) -> None:
    assert stack.ingest.lambda_handler({"Records": upload_pairs(stack, folder, n)}, Context()) == {"batchItemFailures": []}


def answered(stack) -> list[str]:
    return sorted(k[len("results/"):-len("/result.json")] for k in keys(stack, "results/") if k.endswith("/result.json"))


def test_later_invocations_are_queued_to_the_running_job_and_it_takes_them(stack, inpainter):
    invocation(stack, "day", 2)
    invocation(stack, "noon", 3)
    invocation(stack, "late", 2)
    assert len(stack.submits) == 1 and len(handoffs(stack)) == 3, "one job; the later manifests queued to it"
    [status] = run_jobs(stack, inpainter)
    assert sorted(status) == ["day/0", "day/1", "late/0", "late/1", "noon/0", "noon/1", "noon/2"]
    assert set(status.values()) == {"succeeded"}
    assert answered(stack) == sorted(status)
    runner = json.loads(stack.s3.get_object(Bucket=BUCKET, Key="jobs/runner.json")["Body"].read())
    assert runner["state"] == "closed"
    # closed: the next upload is a job of its own, and running both jobs again redoes nothing
    invocation(stack, "next", 1)
    assert len(stack.submits) == 2
    again = run_jobs(stack, inpainter)
    assert again[1] == {"next/0": "succeeded"} and set(again[0].values()) <= {"skipped", "duplicate"}


def test_a_runner_takes_no_more_queued_work_than_its_time_limit_holds(stack, inpainter, monkeypatch):
    """Its budget for queued work (DRAIN_S of estimated seconds) spent, the next manifest is a new
    job, the new runner, which runs beside it; each job does what was queued to it."""
    from shared.pipeline import ingest

    monkeypatch.setattr(ingest, "DRAIN_S", 5.0)  # a default pair is estimated at 2 s + its evaluations: 2 pairs
    for folder in "abcd":
        invocation(stack, folder, 1)
    assert len(stack.submits) == 2 and len(handoffs(stack)) == 4  # a; b, c queued to it; d a new job
    first, second = run_jobs(stack, inpainter)
    assert first == {"a/0": "succeeded", "b/0": "succeeded", "c/0": "succeeded"} and second == {"d/0": "succeeded"}


def test_an_idle_runner_waits_a_while_for_the_rest_of_a_folder(stack, inpainter, monkeypatch):
    """A folder whose upload outpaces ingest leaves the runner idle between manifests: it waits
    (LINGER_S) instead of closing, so the next manifest is not a new job's start-up."""
    from gpu_job import job

    invocation(stack, "a", 1)
    [first] = batch_jobs(stack)
    monkeypatch.setattr(job, "LINGER_POLL_S", 0.01)
    real_wait, waits = job.STOP.wait, []

    def upload_while_waiting(seconds):
        if not waits:
            invocation(stack, "b", 1)  # the next window of the folder, while the runner waits
        waits.append(seconds)
        return real_wait(seconds)

    monkeypatch.setattr(job.STOP, "wait", upload_while_waiting)
    status = job.serve(first["manifest"], s3=stack.s3, inpainter=inpainter, batch_job_id=first["jobId"], linger_s=0.3)
    assert status == {"a/0": "succeeded", "b/0": "succeeded"} and len(stack.submits) == 1 and waits


def test_a_manifest_queued_as_the_runner_closes_is_never_stranded(stack, inpainter, monkeypatch):
    """The close and the queueing race: whichever comes first, the manifest is run once."""
    from gpu_job import job
    from shared.pipeline import runner

    invocation(stack, "a", 1)
    [first] = batch_jobs(stack)
    real_close = runner.close

    def close_then_upload(s3, bucket, me, now):  # ingest reads the runner open, the runner closes, then ingest queues
        monkeypatch.setattr(runner, "close", real_close)
        invocation(stack, "b", 1)  # queued: the runner was still open when ingest looked
        real_close(s3, bucket, me, now)
        invocation(stack, "c", 1)  # after the close: a job of its own

    monkeypatch.setattr(runner, "close", close_then_upload)
    status = job.serve(first["manifest"], s3=stack.s3, inpainter=inpainter, batch_job_id=first["jobId"], linger_s=0)
    assert status == {"a/0": "succeeded", "b/0": "succeeded"}
    assert len(stack.submits) == 2
    assert run_jobs(stack, inpainter)[1] == {"c/0": "succeeded"}
    assert answered(stack) == ["a/0", "b/0", "c/0"]


def test_a_runner_told_to_stop_hands_its_queue_to_its_next_attempt(stack, inpainter, monkeypatch):
    """Stopped (a Spot reclaim; or out of time) after its own manifest: the queued pairs are handed
    back (exit 75), and the next attempt of the same job takes them."""
    from gpu_job import job

    invocation(stack, "a", 1)
    invocation(stack, "b", 2)
    [first] = batch_jobs(stack)
    kw = {"s3": stack.s3, "inpainter": inpainter, "batch_job_id": first["jobId"], "linger_s": 0}
    real_run = job.run

    def stop_after(*a, **k):
        out = real_run(*a, **k)
        job.STOP.set()
        return out

    monkeypatch.setattr(job, "run", stop_after)
    try:
        status = job.serve(first["manifest"], **kw)
    finally:
        job.STOP.clear()
        monkeypatch.setattr(job, "run", real_run)
    assert status["a/0"] == "succeeded" and {status["b/0"], status["b/1"]} == {"handed back"}
    assert answered(stack) == ["a/0"]
    again = job.serve(first["manifest"], **kw)  # Batch retries exit 75: the same job id, a new attempt
    assert again == {"a/0": "skipped", "b/0": "succeeded", "b/1": "succeeded"}


def test_a_runner_that_fails_for_good_speaks_for_its_queue(stack, inpainter):
    """Its own pairs, the queued ones it took, and the queued ones nobody took: each told once,
    and a job started later takes none of them."""
    from gpu_job import job
    from shared.pipeline import notify

    invocation(stack, "own", 1)
    invocation(stack, "queued", 2)
    [first] = batch_jobs(stack)
    detail = {"jobId": first["jobId"], "jobName": "cellpaint-x", "statusReason": "Host EC2 terminated",
              "parameters": {"manifest": first["manifest"]}}
    notices = notify.from_batch_failure(stack.s3, detail)
    assert sorted(n.pair for n in notices) == ["own/0", "queued/0", "queued/1"]
    assert all("Host EC2 terminated" in n.reason for n in notices)
    for key in handoffs(stack):  # a job started later (a copy still queued) takes none of them
        assert set(job.run(f"s3://{BUCKET}/{key}", s3=stack.s3, inpainter=inpainter, batch_job_id="later").values()) == {"duplicate"}
    assert answered(stack) == []


def test_a_manifest_whose_runner_closes_while_it_is_queued_is_withdrawn_and_submitted(stack, inpainter, monkeypatch):
    """Ingest read the runner open, wrote the pointer, and then found it closed when it took the
    budget: the pointer is withdrawn (left empty) and the manifest is a job of its own, run once."""
    from shared.pipeline import runner
    from shared.pipeline.leases import now_utc

    invocation(stack, "a", 1)
    [first] = batch_jobs(stack)
    was_open = runner.read(stack.s3, BUCKET, runner.RUNNER)
    runner.close(stack.s3, BUCKET, first["jobId"], now_utc())
    real_read, reads = runner.read, []

    def open_at_first_look(s3, bucket, key):
        if key == runner.RUNNER and not reads:
            reads.append(key)
            return was_open
        return real_read(s3, bucket, key)

    monkeypatch.setattr(runner, "read", open_at_first_look)
    invocation(stack, "b", 1)
    assert reads and len(stack.submits) == 2
    assert keys(stack, f"jobs/queue/{first['jobId']}/") and runner.queued(stack.s3, BUCKET, first["jobId"]) == []
    assert [sorted(s) for s in run_jobs(stack, inpainter)] == [["a/0"], ["b/0"]]
    assert answered(stack) == ["a/0", "b/0"]
