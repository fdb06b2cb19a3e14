"""The notify handler: result.json, error.json and Batch FAILED events -> one SNS message each."""
from __future__ import annotations

import json

from moto.sns.models import sns_backends

from shared.options import InpaintOptions
from shared.pipeline import notify
from shared.pipeline.records import Result
from shared.pipeline.s3 import pair_from_output_key

from .conftest import BUCKET, REGION, Context, good_pair, inbox, keys, load_event, upload

RESULT = Result("demo/cell 1", "20261126T120000Z-0a1b2c3d", {"image_key": "incoming/demo/cell 1.png", "mask_key": "incoming/demo/cell 1.mask.png"},
                {"inpainted": "results/demo/cell 1/inpainted.png"}, {"width": 8, "height": 6}, 1, {"version": "v1", "sha256": "ab" * 32},
                InpaintOptions(steps=50).to_dict(), timings={"load_s": 0.4, "sample_s": 3.2, "total_s": 4.1}).to_json()


def aws_event(name: str, version: str) -> dict:
    """One of AWS's own event files, naming the object version the test just wrote (a notice
    reads exactly the version its event names)."""
    ev = load_event(name)
    for r in ev["Records"]:
        r["body"] = r["body"].replace("3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY", version)
    return ev


def published(st):
    """The raw messages moto's SNS received (the inbox queue only sees the "sqs" part)."""
    return sns_backends["123456789012"][REGION].topics[st.topic_arn].sent_notifications


def test_result_event_file(stack):
    stack.s3.put_object(Bucket=BUCKET, Key="results/demo/cell 1/inpainted.png", Body=b"png")
    put = stack.s3.put_object(Bucket=BUCKET, Key="results/demo/cell 1/result.json", Body=json.dumps(RESULT))
    ev = aws_event("sqs-s3-results-put.json", put["VersionId"])
    calls = []
    stack.notify.SNS.meta.events.register("provide-client-params.sns.Publish", lambda params, **kw: calls.append(params))
    assert stack.notify.lambda_handler(ev, Context()) == {"batchItemFailures": []}
    [msg] = inbox(stack)
    body = json.loads(msg["text"])
    assert body["status"] == "succeeded" and body["pair"] == "demo/cell 1"
    assert body["keys"]["inpainted"] == "results/demo/cell 1/inpainted.png"
    assert "X-Amz-Expires=3600" in body["link"] and body["link_expires_in"] == 3600
    assert body["timings"] == RESULT["timings"] and body["options"] == RESULT["options"] and body["model"]["sha256"] == "ab" * 32
    [call] = calls
    assert call["MessageStructure"] == "json" and call["TopicArn"] == stack.topic_arn
    [(_, message, subject, *_)] = published(stack)
    assert message == call["Message"]
    parts = json.loads(message)
    assert "Restored image (link valid for 1 h)" in parts["email"] and parts["default"] == parts["email"]
    assert json.loads(parts["https"]) == json.loads(parts["http"]) == body
    assert subject == "cellpaint: demo/cell 1 is restored"
    # S3 delivers the same event again: no second message
    assert stack.notify.lambda_handler(ev, Context()) == {"batchItemFailures": []}
    assert inbox(stack) == []


def test_error_event_file(stack):
    put = stack.s3.put_object(Bucket=BUCKET, Key="failed/demo/cell 1/error.json",
                              Body=json.dumps({"pair": "demo/cell 1", "stage": "gpu", "reason": "CUDA out of memory", "job_id": "j1"}))
    assert stack.notify.lambda_handler(aws_event("sqs-s3-failed-put.json", put["VersionId"]), Context()) == {"batchItemFailures": []}
    [msg] = inbox(stack)
    body = json.loads(msg["text"])
    assert body["status"] == "failed" and body["reason"] == "CUDA out of memory" and body["job"]["stage"] == "gpu"


def test_batch_failed_reports_pairs_without_output(stack):
    image, mask = good_pair()
    records = []
    for name in ("a", "b", "c"):
        records += upload(stack, f"incoming/{name}.png", image)["Records"]
        records += upload(stack, f"incoming/{name}.mask.png", mask)["Records"]
    stack.ingest.lambda_handler({"Records": records}, Context())
    [manifest_key] = [k for k in keys(stack, "jobs/") if k.endswith("manifest.json")]
    job_id = json.loads(stack.s3.get_object(Bucket=BUCKET, Key=manifest_key)["Body"].read())["job_id"]
    # the job finished "a" and failed "b" before it died; "c" only has a result from an older job
    stack.s3.put_object(Bucket=BUCKET, Key="results/a/result.json", Body=json.dumps({"pair": "a", "job_id": job_id}))
    stack.s3.put_object(Bucket=BUCKET, Key="failed/b/error.json", Body=json.dumps({"pair": "b", "reason": "x", "job_id": job_id}))
    stack.s3.put_object(Bucket=BUCKET, Key="results/c/result.json", Body=json.dumps({"pair": "c", "job_id": "an-older-job"}))
    ev = load_event("sqs-eventbridge-batch-failed.json")
    body = json.loads(ev["Records"][0]["body"])
    body["detail"]["parameters"]["manifest"] = f"s3://{BUCKET}/{manifest_key}"
    ev["Records"][0]["body"] = json.dumps(body)
    assert stack.notify.lambda_handler(ev, Context()) == {"batchItemFailures": []}
    [msg] = inbox(stack)
    got = json.loads(msg["text"])
    assert got["pair"] == "c" and "Essential container in task exited" in got["reason"] and "exit code 1" in got["reason"]
    stack.notify.lambda_handler(ev, Context())
    assert inbox(stack) == []


def test_batch_failed_with_unreadable_manifest(stack):
    assert stack.notify.lambda_handler(load_event("sqs-eventbridge-batch-failed.json"), Context()) == {"batchItemFailures": []}
    [msg] = inbox(stack)
    assert "cannot be read" in json.loads(msg["text"])["reason"]


def test_batch_events_other_than_failed_are_ignored(stack):
    ev = load_event("sqs-eventbridge-batch-failed.json")
    body = json.loads(ev["Records"][0]["body"])
    body["detail"]["status"] = "SUCCEEDED"
    ev["Records"][0]["body"] = json.dumps(body)
    assert stack.notify.lambda_handler(ev, Context()) == {"batchItemFailures": []}
    assert inbox(stack) == []


def test_a_missing_object_fails_only_its_record(stack):
    put = stack.s3.put_object(Bucket=BUCKET, Key="failed/demo/cell 1/error.json", Body=b'{"reason": "r"}')
    good = aws_event("sqs-s3-failed-put.json", put["VersionId"])["Records"][0]
    missing = load_event("sqs-s3-results-put.json")["Records"][0]  # no such result.json
    r = stack.notify.lambda_handler({"Records": [good, missing]}, Context())
    assert r == {"batchItemFailures": [{"itemIdentifier": missing["messageId"]}]}
    assert len(inbox(stack)) == 1


def test_render_is_well_formed():
    n = notify.Notice("failed", "x/" + "é" * 200, reason="bad\nmask", keys={"error": "failed/x/error.json"}, bucket="b")
    subject, message = notify.render(n)
    assert len(subject) <= 100 and subject.isascii() and "\n" not in subject
    parts = json.loads(message)
    assert set(parts) >= {"default", "email", "http", "https"}
    assert json.loads(parts["https"])["reason"] == "bad\nmask"


def test_output_keys():
    assert pair_from_output_key("results/a/b/result.json") == ("a/b", "succeeded")
    assert pair_from_output_key("failed/a/error.json") == ("a", "failed")
    assert pair_from_output_key("results/result.json") is None
    assert pair_from_output_key("results/a/inpainted.png") is None


def test_a_link_claims_no_longer_than_its_signing_credentials_last(stack):
    """A presigned link dies with the temporary credentials that signed it: where botocore knows
    their expiry, the link (and the validity the message states) is cut to it."""
    from datetime import datetime, timedelta, timezone
    from urllib.parse import parse_qs, urlparse

    import boto3
    from botocore.config import Config
    from botocore.credentials import RefreshableCredentials

    from shared.pipeline.s3 import presign

    now = datetime.now(timezone.utc)
    url, secs = presign(stack.s3, BUCKET, "results/a/inpainted.png", 3600, "v1")  # static test keys: no expiry known
    assert secs == 3600 and parse_qs(urlparse(url).query)["versionId"] == ["v1"]
    session = boto3.Session(region_name=REGION)
    soon = RefreshableCredentials("AKIDEXAMPLE", "secret", "token", now + timedelta(minutes=20),
                                  lambda: {"access_key": "a", "secret_key": "s", "token": "t", "expiry_time": (now + timedelta(hours=1)).isoformat()},
                                  "assume-role")
    session._session._credentials = soon
    s3 = session.client("s3", config=Config(signature_version="s3v4"))
    url, secs = presign(s3, BUCKET, "results/a/inpainted.png", 3600, now=now)
    assert secs == 19 * 60 and parse_qs(urlparse(url).query)["X-Amz-Expires"] == [str(secs)]
    assert "link valid for 19 min" in notify.render(notify.Notice("succeeded", "a", None, {"inpainted": "results/a/inpainted.png"},
                                                                  BUCKET, url, secs))[1]
