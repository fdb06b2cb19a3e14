"""Transient faults: SubmitJob throttling and S3 5xx are retried (botocore standard mode, real
moto behind it); a fault that outlasts the retries fails only the affected messages, releases the
claims, and the redelivery completes the work. Nothing is lost, nothing runs twice."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest
from botocore.awsrequest import AWSResponse
from moto.core.botocore_stubber import MockRawResponse
from moto.core.models import botocore_stubber

from shared.pipeline.leases import expired, now_utc

from .conftest import (BUCKET, Context, Crash, batch_jobs, crash_on, handoffs, encode, good_pair, inbox, keys, later, load_event,
                       notify_outputs, run_jobs, sqs_event, upload)


def gate(client):
    """Route this client's requests through a list of fault rules before moto. A rule that answers
    keeps the request from reaching moto at all: the service never saw it (throttled, or a 5xx
    before processing)."""
    rules = []
    client.meta.events.unregister("before-send", botocore_stubber)

    def send(request, **kwargs):
        for rule in rules:
            response = rule(request, **kwargs)
            if response is not None:
                return response
        return botocore_stubber(request=request, **kwargs)

    client.meta.events.register("before-send", send)
    return rules


def error(request, status: int, code: str, json_body: bool = False) -> AWSResponse:
    body = (f'{{"__type": "{code}", "message": "injected"}}' if json_body
            else f"<Error><Code>{code}</Code><Message>injected</Message></Error>").encode()
    return AWSResponse(request.url, status, {}, MockRawResponse(body))


def inject(client, operation: str, status: int, code: str, times: int, json_body: bool = False):
    """The first `times` HTTP attempts of `operation` get an error response; the rest reach moto."""
    if not hasattr(client, "_fault_rules"):
        client._fault_rules = gate(client)
    seen = {"attempts": 0}

    def fault(request, event_name, **kwargs):
        if not event_name.endswith(f".{operation}"):
            return None
        seen["attempts"] += 1
        return error(request, status, code, json_body) if seen["attempts"] <= times else None

    client._fault_rules.append(fault)
    return seen


def no_sleep(monkeypatch):
    import botocore.retries.standard as standard
    monkeypatch.setattr(standard.ExponentialBackoff, "delay_amount", lambda self, context: 0)


def test_submitjob_throttling_is_retried(stack, monkeypatch):
    no_sleep(monkeypatch)
    seen = inject(stack.ingest.BATCH, "SubmitJob", 429, "TooManyRequestsException", times=3, json_body=True)
    image, mask = good_pair()
    upload(stack, "incoming/t.png", image)
    assert stack.ingest.lambda_handler(upload(stack, "incoming/t.mask.png", mask), Context()) == {"batchItemFailures": []}
    assert seen["attempts"] == 4 and len(stack.submits) == 1  # one API call, four HTTP attempts
    assert len(stack.batch.list_jobs(jobQueue=stack.job_queue, filters=[{"name": "JOB_NAME", "values": ["cellpaint-*"]}])["jobSummaryList"]) == 1


def test_s3_5xx_is_retried(stack, monkeypatch):
    no_sleep(monkeypatch)
    image, mask = good_pair()
    upload(stack, "incoming/s.png", image)
    event = upload(stack, "incoming/s.mask.png", mask)
    gets = inject(stack.ingest.S3, "GetObject", 500, "InternalError", times=2)
    puts = inject(stack.ingest.S3, "PutObject", 503, "SlowDown", times=2)
    lists = inject(stack.ingest.S3, "ListObjectsV2", 503, "ServiceUnavailable", times=1)
    assert stack.ingest.lambda_handler(event, Context()) == {"batchItemFailures": []}
    assert gets["attempts"] > 2 and puts["attempts"] > 2 and lists["attempts"] > 1
    assert len(stack.submits) == 1 and len([k for k in keys(stack, "jobs/") if k.endswith("manifest.json")]) == 1


def test_persistent_submit_failure_is_redelivered_and_runs_once(stack, monkeypatch):
    no_sleep(monkeypatch)
    image, mask = good_pair()
    upload(stack, "incoming/p.png", image)
    event = upload(stack, "incoming/p.mask.png", mask)
    inject(stack.ingest.BATCH, "SubmitJob", 503, "ServerException", times=9, json_body=True)  # all 9 attempts (8 retries)
    r = stack.ingest.lambda_handler(event, Context())
    assert r == {"batchItemFailures": [{"itemIdentifier": event["Records"][0]["messageId"]}]}
    [lease_key] = keys(stack, "jobs/claims/ingest/")
    lease = json.loads(stack.s3.get_object(Bucket=BUCKET, Key=lease_key)["Body"].read())
    assert expired(lease, now_utc()), "the lease is released (expired now) for the retry"
    assert lease["state"] == "submitting" and lease["manifest"].endswith("/manifest.json")  # kept: the retry submits it
    assert keys(stack, "failed/") == []
    # SQS redelivers the message; the service has recovered
    assert stack.ingest.lambda_handler(event, Context()) == {"batchItemFailures": []}
    assert stack.ingest.lambda_handler(event, Context()) == {"batchItemFailures": []}  # and once more
    assert len(stack.submits) == 2  # the failed call and the one that succeeded
    # the same manifest both times: had the failed call been applied after all, its job and this one
    # would share one manifest, and only the first to take it would work (test_submitjob_applied_...)
    assert len({s["parameters"]["manifest"] for s in stack.submits}) == 1
    assert len([k for k in keys(stack, "jobs/") if k.endswith("manifest.json")]) == 1
    assert len(stack.batch.list_jobs(jobQueue=stack.job_queue, filters=[{"name": "JOB_NAME", "values": ["cellpaint-*"]}])["jobSummaryList"]) == 1
    for key, data in (("incoming/p.png", image), ("incoming/p.mask.png", mask)):
        assert stack.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == data


def test_persistent_s3_failure_fails_only_that_message(stack, monkeypatch):
    no_sleep(monkeypatch)
    image, mask = good_pair()
    upload(stack, "incoming/ok.png", image)
    ok = upload(stack, "incoming/ok.mask.png", mask)["Records"][0]
    upload(stack, "incoming/bad.png", image)
    bad = upload(stack, "incoming/bad.mask.png", mask)["Records"][0]
    state = {"n": 0}

    def fault(request, event_name, **kwargs):  # every read of bad.png fails with 500
        if event_name.endswith(".GetObject") and "bad.png" in request.url:
            state["n"] += 1
            return error(request, 500, "InternalError")
        return None

    rules = gate(stack.ingest.S3)
    rules.append(fault)
    r = stack.ingest.lambda_handler({"Records": [ok, bad]}, Context())
    assert r == {"batchItemFailures": [{"itemIdentifier": bad["messageId"]}]}
    assert state["n"] == 9  # the first attempt and 8 retries
    assert len(stack.submits) == 1
    rules.clear()  # the service has recovered
    assert stack.ingest.lambda_handler({"Records": [bad]}, Context()) == {"batchItemFailures": []}
    assert len(stack.submits) == 1 and len(handoffs(stack)) == 2  # queued to the job submitted first


def test_ambiguous_claim_write_is_still_ours(stack, monkeypatch):
    """A PutObject that S3 applied but answered with 500: the retry gets 412, and the claim's
    owner token shows it is ours, so the pair is not lost."""
    no_sleep(monkeypatch)
    image, mask = good_pair()
    upload(stack, "incoming/amb.png", image)
    event = upload(stack, "incoming/amb.mask.png", mask)
    state = {"n": 0}

    def applied_then_500(request, event_name, **kwargs):
        if event_name.endswith(".PutObject") and "/jobs/claims/" in request.url and state["n"] == 0:
            state["n"] += 1
            botocore_stubber(request=request, event_name=event_name, **kwargs)  # S3 applies it...
            return error(request, 500, "InternalError")  # ...but the answer is lost
        return None

    gate(stack.ingest.S3).append(applied_then_500)
    assert stack.ingest.lambda_handler(event, Context()) == {"batchItemFailures": []}
    assert state["n"] == 1 and len(stack.submits) == 1


# ---- crashes, lost answers, slow uploads (issue 16) ------------------------------------------------

def results_and_messages(stack) -> tuple[list[str], list[dict]]:
    """result.json / error.json written so far, and the messages the notify function publishes for them."""
    assert notify_outputs(stack) == {"batchItemFailures": []}
    return keys(stack, "results/"), [json.loads(m["text"]) for m in inbox(stack)]


def lease_doc(stack, prefix: str = "jobs/claims/ingest/") -> dict:
    [key] = keys(stack, prefix)
    return json.loads(stack.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())


CRASH_POINTS = {  # where the ingest invocation dies, between the lease and SubmitJob (and just after it)
    # the pair's last pairing, recorded once the lease is held (the pair was read before it)
    "pairing": ("s3", "PutObject", lambda p: p["Key"].startswith("jobs/claims/ingest-names/") and b'"pairing"' in p["Body"], False),
    "before-manifest": ("s3", "PutObject", lambda p: p["Key"].endswith("/manifest.json"), False),
    "before-submit": ("batch", "SubmitJob", lambda p: True, False),
    "after-submit": ("batch", "SubmitJob", lambda p: True, True),
}


@pytest.mark.parametrize("point", sorted(CRASH_POINTS))
def test_a_crash_after_the_lease_ends_in_one_working_job_once_it_expires(stack, inpainter, monkeypatch, point):
    client, operation, when, after = CRASH_POINTS[point]
    image, mask = good_pair()
    upload(stack, "incoming/c.png", image)
    ev = upload(stack, "incoming/c.mask.png", mask)
    crash_on(stack.ingest.S3 if client == "s3" else stack.ingest.BATCH, operation, when, after)
    with pytest.raises(Crash):
        stack.ingest.lambda_handler(ev, Context())
    assert lease_doc(stack)["expires"], "the lease is held, with an expiry"
    # S3 redelivers before the lease expires (a duplicate event): the held lease stops it
    assert stack.ingest.lambda_handler(ev, Context()) == {"batchItemFailures": []}
    jobs_before = len(batch_jobs(stack))  # jobs Batch holds (stack.submits counts calls, applied or not)
    assert jobs_before == (1 if point == "after-submit" else 0)
    # SQS redelivers the crashed message after its visibility timeout, when the lease has expired
    later(monkeypatch, 300 + 60)
    assert stack.ingest.lambda_handler(ev, Context()) == {"batchItemFailures": []}
    assert len(batch_jobs(stack)) == jobs_before + 1
    lease = lease_doc(stack)
    assert lease["state"] == "submitted" and lease["expires"] is None and lease["takeovers"] == 1
    # ... and any later delivery finds it done
    assert stack.ingest.lambda_handler(ev, Context()) == {"batchItemFailures": []}
    assert len(batch_jobs(stack)) == jobs_before + 1
    statuses = run_jobs(stack, inpainter)
    assert [s["c"] for s in statuses] == (["succeeded", "duplicate"] if point == "after-submit" else ["succeeded"])
    results, messages = results_and_messages(stack)
    assert "results/c/result.json" in results
    assert [(m["pair"], m["status"]) for m in messages] == [("c", "succeeded")]


def applied_then(status: int, times: int):
    """A SubmitJob that Batch applies (moto creates the job) but whose answer is lost: a 5xx."""
    seen = {"n": 0}

    def rule(request, event_name, **kwargs):
        if event_name.endswith(".SubmitJob") and seen["n"] < times:
            seen["n"] += 1
            botocore_stubber(request=request, event_name=event_name, **kwargs)
            return error(request, status, "ServerException", json_body=True)
        return None

    return rule, seen


def test_submitjob_applied_but_answered_5xx_gives_one_working_job_and_one_notification(stack, inpainter, monkeypatch):
    no_sleep(monkeypatch)
    rule, seen = applied_then(500, times=1)
    gate(stack.ingest.BATCH).append(rule)
    image, mask = good_pair()
    upload(stack, "incoming/a.png", image)
    assert stack.ingest.lambda_handler(upload(stack, "incoming/a.mask.png", mask), Context()) == {"batchItemFailures": []}
    jobs = batch_jobs(stack)
    assert seen["n"] == 1 and len(jobs) == 2 and len({j["manifest"] for j in jobs}) == 1  # botocore's retry: two jobs, one manifest
    assert [s["a"] for s in run_jobs(stack, inpainter)] == ["succeeded", "duplicate"]
    results, messages = results_and_messages(stack)
    assert [(m["pair"], m["status"]) for m in messages] == [("a", "succeeded")]
    # the duplicate wrote nothing: the one result.json names the job that took the manifest
    taken = json.loads(stack.s3.get_object(Bucket=BUCKET, Key=jobs[0]["manifest"].split(f"{BUCKET}/")[1].replace(
        "manifest.json", "taken.json"))["Body"].read())
    assert taken["owner"] == jobs[0]["jobId"]


def test_every_submitjob_attempt_applied_but_answered_5xx_then_redelivered(stack, inpainter, monkeypatch):
    """All 9 attempts create a job and lose the answer: the message is redelivered, and the
    redelivery submits the same manifest again. Ten jobs, one manifest, one does the work. A Batch
    FAILED event for one of the copies (cancelled in RUNNABLE, say) tells the user nothing false."""
    no_sleep(monkeypatch)
    rules = gate(stack.ingest.BATCH)
    rule, seen = applied_then(503, times=9)
    rules.append(rule)
    image, mask = good_pair()
    upload(stack, "incoming/b.png", image)
    ev = upload(stack, "incoming/b.mask.png", mask)
    assert stack.ingest.lambda_handler(ev, Context()) == {"batchItemFailures": [{"itemIdentifier": ev["Records"][0]["messageId"]}]}
    assert seen["n"] == 9 and len(batch_jobs(stack)) == 9
    rules.clear()
    assert stack.ingest.lambda_handler(ev, Context()) == {"batchItemFailures": []}  # the redelivery, lease released
    jobs = batch_jobs(stack)
    assert len(jobs) == 10 and len({j["manifest"] for j in jobs}) == 1
    statuses = [s["b"] for s in run_jobs(stack, inpainter)]
    assert statuses.count("succeeded") == 1 and statuses.count("duplicate") == 9
    cancelled = runnable_timeout_event(jobs[-1]["jobId"], jobs[-1]["manifest"])
    assert stack.notify.lambda_handler(cancelled, Context()) == {"batchItemFailures": []}
    _, messages = results_and_messages(stack)
    assert [(m["pair"], m["status"]) for m in messages] == [("b", "succeeded")]


def runnable_timeout_event(batch_job_id: str, manifest_uri: str) -> dict:
    """The Batch FAILED event of a job the queue's JobStateTimeLimitActions cancelled in RUNNABLE."""
    body = load_event("eventbridge-batch-runnable-timeout.json")
    body["detail"]["jobId"] = batch_job_id
    body["detail"]["parameters"]["manifest"] = manifest_uri
    return sqs_event(body)


def test_a_job_cancelled_in_runnable_notifies_no_gpu_capacity(stack):
    image, mask = good_pair()
    upload(stack, "incoming/r.png", image)
    stack.ingest.lambda_handler(upload(stack, "incoming/r.mask.png", mask), Context())
    [job] = batch_jobs(stack)
    ev = runnable_timeout_event(job["jobId"], job["manifest"])
    for _ in range(2):  # EventBridge delivers at least once
        assert stack.notify.lambda_handler(ev, Context()) == {"batchItemFailures": []}
    [msg] = [json.loads(m["text"]) for m in inbox(stack)]
    assert msg["pair"] == "r" and msg["status"] == "failed" and msg["reason"].startswith("no GPU capacity")
    assert "CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY" in msg["reason"] and msg["job"]["batch_job_id"] == job["jobId"]
    # the cancelled job spoke for the manifest: a copy of it that starts later does no work
    from gpu_job.job import run
    assert run(job["manifest"], s3=stack.s3, batch_job_id="a-later-copy") == {"r": "duplicate"}


def test_the_many_region_mask_fails_in_seconds_and_the_other_pair_goes_on(stack, inpainter):
    """The issue's upload: a 2000x2000 mask of 10,000 one-pixel dots (a PNG of a few kB) beside an
    ordinary pair, in one SQS batch."""
    dots = np.zeros((2000, 2000), np.uint8)
    dots[10::20, 10::20] = 255
    assert (dots > 0).sum() == 10_000
    flat = np.full((2000, 2000, 3), (230, 200, 210), np.uint8)
    image, mask = good_pair()
    t0 = time.time()
    records = [upload(stack, "incoming/dots.png", encode(flat))["Records"][0],
               upload(stack, "incoming/good.png", image)["Records"][0],
               upload(stack, "incoming/dots.mask.png", encode(dots))["Records"][0],
               upload(stack, "incoming/good.mask.png", mask)["Records"][0]]
    assert stack.ingest.lambda_handler({"Records": records}, Context()) == {"batchItemFailures": []}
    ingest_s = time.time() - t0
    error_doc = json.loads(stack.s3.get_object(Bucket=BUCKET, Key="failed/dots/error.json")["Body"].read())
    assert error_doc["reason"] == ("incoming/dots.mask.png: the mask has 10,000 separate regions; at most 64 are inpainted "
                                   "per image: join nearby regions or split the image")
    assert [s for s in run_jobs(stack, inpainter)] == [{"good": "succeeded"}]
    results, messages = results_and_messages(stack)
    total_s = time.time() - t0
    assert {(m["pair"], m["status"]) for m in messages} == {("dots", "failed"), ("good", "succeeded")}
    assert ingest_s < 20 and total_s < 60, (ingest_s, total_s)


class Dwindling(Context):
    """An invocation whose remaining time runs out after `n` calls."""

    def __init__(self, n: int):
        super().__init__()
        self.calls = n

    def get_remaining_time_in_millis(self) -> int:
        self.calls -= 1
        return 300_000 if self.calls >= 0 else 30_000


def test_records_the_invocation_has_no_time_for_are_left_for_redelivery(stack):
    image, mask = good_pair()
    records = []
    for name in ("t1", "t2", "t3"):
        upload(stack, f"incoming/{name}.png", image)
        records += upload(stack, f"incoming/{name}.mask.png", mask)["Records"]
    # each started record asks twice (the time check, then its lease): time runs out after the first
    r = stack.ingest.lambda_handler({"Records": records}, Dwindling(2))
    assert r == {"batchItemFailures": [{"itemIdentifier": rec["messageId"]} for rec in records[1:]]}
    assert len(keys(stack, "jobs/claims/ingest/")) == 1, "no lease is taken for a record not started"
    assert [p["pair"] for p in json.loads(stack.s3.get_object(Bucket=BUCKET, Key=[k for k in keys(stack, "jobs/") if
            k.endswith("manifest.json")][0])["Body"].read())["pairs"]] == ["t1"]
    assert stack.ingest.lambda_handler({"Records": records[1:]}, Context()) == {"batchItemFailures": []}
    assert len(handoffs(stack)) == 2


def test_a_notify_crash_after_its_lease_still_notifies_once(stack, monkeypatch):
    stack.s3.put_object(Bucket=BUCKET, Key="failed/n/error.json", Body=json.dumps({"pair": "n", "reason": "r", "stage": "gpu"}))
    crash_on(stack.notify.SNS, "Publish")
    with pytest.raises(Crash):
        notify_outputs(stack)
    assert notify_outputs(stack) == {"batchItemFailures": []} and inbox(stack) == []  # the lease is held
    later(monkeypatch, 300 + 60)  # the invocation (300 s left, in Context) is over: the redelivery takes over
    assert notify_outputs(stack) == {"batchItemFailures": []}
    assert [json.loads(m["text"])["pair"] for m in inbox(stack)] == ["n"]
    notify_outputs(stack)
    assert inbox(stack) == []
