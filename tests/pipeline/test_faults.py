"""Transient faults: SubmitJob throttling and S3 5xx are retried (botocore standard mode, real
moto behind it); a fault that outlasts the retries fails only the affected messages, releases the
claims, and the redelivery completes the work. Nothing is lost, nothing runs twice."""
from __future__ import annotations

import json

from botocore.awsrequest import AWSResponse
from moto.core.botocore_stubber import MockRawResponse
from moto.core.models import botocore_stubber

from shared.leases import expired, now_utc

from .conftest import BUCKET, Context, good_pair, keys, upload


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
    assert len(stack.submits) == 2


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
