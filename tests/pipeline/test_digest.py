"""One message per folder, on moto: when every pair of a folder has an answer, the digest with
its summary.json and contact sheet; pairs still pending only reschedule the check; a second check
of the same answers sends nothing; and what the subscriptions filter on."""
from __future__ import annotations

import json

import numpy as np

from shared.pipeline import digest
from shared.pipeline.leases import Sent
from shared.pipeline.notify import attributes
from shared.pipeline.records import Notice

from .conftest import BUCKET, Context, encode, good_pair, inbox, load_handler, run_jobs, s3_body, sqs_event, upload


def test_messages_say_what_they_are_for_the_filters():
    kinds = {k: {a: v["StringValue"] for a, v in attributes(n).items()} for k, n in {
        "in folder": Notice("succeeded", "lab1/day1/a"), "alone": Notice("succeeded", "a"),
        "digest": Notice("succeeded", None, kind="folder"), "model": Notice("succeeded", None, kind="model")}.items()}
    assert kinds["in folder"] == {"status": "succeeded", "kind": "pair", "folder": "lab1/day1", "lab": "lab1"}
    assert "folder" not in kinds["alone"] and "lab" not in kinds["alone"] and kinds["digest"]["kind"] == "folder"
    assert kinds["model"]["kind"] == "model"
    assert attributes(Notice("failed", "adapt/lab9", kind="pair"))["lab"]["StringValue"] == "lab9"
    assert attributes(Notice("succeeded", None, kind="model", job={"lab": "lab2"}))["lab"]["StringValue"] == "lab2"
    assert attributes(Notice("succeeded", None, kind="folder", job={"folder": "lab3/day1"}))["lab"]["StringValue"] == "lab3"


def test_a_folder_gets_one_digest_once_every_pair_is_answered(stack, inpainter, monkeypatch):
    fn = load_handler("digest")
    image, mask = good_pair()
    for name in ("a", "b"):
        stack.ingest.lambda_handler(upload(stack, f"incoming/lab1/day1/{name}.png", image), Context())
    stack.ingest.lambda_handler(upload(stack, "incoming/lab1/day1/a.mask.png", mask), Context())
    stack.ingest.lambda_handler(upload(stack, "incoming/lab1/day1/b.mask.png", encode(np.zeros((48, 64), np.uint8))), Context())
    url = stack.sqs.get_queue_url(QueueName="digest")["QueueUrl"]
    assert fn.lambda_handler(sqs_event({"digest_check": "lab1/day1"}), Context()) == {"batchItemFailures": []}
    assert not any(json.loads(m["text"]).get("kind") == "folder" for m in inbox(stack))  # a is still pending: no digest
    run_jobs(stack, inpainter)
    # each answer's notice schedules the folder's check
    answers = [k for k in ("results/lab1/day1/a/result.json", "failed/lab1/day1/b/error.json")]
    stack.notify.lambda_handler(sqs_event(*map(s3_body, answers)), Context())
    delayed = stack.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert int(delayed["ApproximateNumberOfMessagesDelayed"]) >= 1
    for _ in range(2):  # a redelivered check of the same answers sends nothing more
        assert fn.lambda_handler(sqs_event({"digest_check": "lab1/day1"}), Context()) == {"batchItemFailures": []}
    folder = [json.loads(m["text"]) for m in inbox(stack) if json.loads(m["text"]).get("kind") == "folder"]
    assert len(folder) == 1
    body = folder[0]
    assert body["reason"].startswith("lab1/day1: 1 restored, 1 failed (") and "all black" in body["reason"]
    assert body["keys"]["summary"] == "results/lab1/day1/summary.json" and "contact-sheet.png" in body["link"]
    summary = json.loads(stack.s3.get_object(Bucket=BUCKET, Key="results/lab1/day1/summary.json")["Body"].read())
    flagged = json.loads(stack.s3.get_object(Bucket=BUCKET, Key="results/lab1/day1/a/result.json")["Body"].read())["ood"]["unlike_training"]
    assert summary["counts"] == {"done": 1, "failed": 1, "flagged": int(flagged)}
    assert [p["pair"] for p in summary["pairs"]] == ["lab1/day1/b", "lab1/day1/a"]  # the failed first
    sheet = stack.s3.get_object(Bucket=BUCKET, Key="results/lab1/day1/contact-sheet.png")["Body"].read()
    assert sheet[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_warm_notify_schedules_a_folders_check_without_a_request_while_its_own_is_on_its_way(stack):
    url = stack.sqs.get_queue_url(QueueName="digest")["QueueUrl"]
    calls = []
    stack.s3.meta.events.register("before-call.s3.*", lambda model, **kw: calls.append(model.name))
    now = [1000.0]
    mine, other = Sent(clock=lambda: now[0]), Sent(clock=lambda: now[0])
    assert digest.schedule(stack.s3, stack.sqs, BUCKET, "lab1/day1", url, mine)
    assert calls == ["PutObject"]  # the lease, then the delayed check
    calls.clear()
    now[0] += digest.CHECK_DELAY_S - Sent.MARGIN_S - 1
    assert not digest.schedule(stack.s3, stack.sqs, BUCKET, "lab1/day1", url, mine) and calls == []  # its check is on its way
    assert not digest.schedule(stack.s3, stack.sqs, BUCKET, "lab1/day1", url, other) and calls  # another instance asks S3: held
    calls.clear()
    assert digest.schedule(stack.s3, stack.sqs, BUCKET, "lab1/day2", url, mine) and calls  # another folder is another check
    calls.clear()
    now[0] += 2  # this instance no longer trusts its memory: it asks S3 (where the lease still holds)
    assert not digest.schedule(stack.s3, stack.sqs, BUCKET, "lab1/day1", url, mine) and calls
    delayed = stack.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert int(delayed["ApproximateNumberOfMessagesDelayed"]) == 2  # one check per folder
