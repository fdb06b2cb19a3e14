"""cellpaint/local/moto_speed.py changes moto's time, never its answers: a message past the
queue's retention period is dropped and a fresh one received, as by moto itself."""
from __future__ import annotations

import boto3
from moto import mock_aws


def receive_after(seconds_old: float, monkeypatch) -> list:
    from moto.core import utils
    from moto.sqs import models

    with mock_aws():
        sqs = boto3.client("sqs", region_name="us-east-1")
        url = sqs.create_queue(QueueName="q", Attributes={"MessageRetentionPeriod": "60"})["QueueUrl"]
        sqs.send_message(QueueUrl=url, MessageBody="old")
        now = utils.unix_time() + seconds_old
        monkeypatch.setattr(models, "unix_time", lambda *a: now)
        monkeypatch.setattr(utils, "unix_time", lambda *a: now)
        return [m["Body"] for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])]


def counts_after_sends(n: int) -> list[str]:
    with mock_aws():
        sqs = boto3.client("sqs", region_name="us-east-1")
        url = sqs.create_queue(QueueName="q")["QueueUrl"]
        seen = []
        for i in range(n):
            sqs.send_message(QueueUrl=url, MessageBody=str(i))
            seen.append(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"])
        return [a["ApproximateNumberOfMessages"] for a in seen]


def test_answers_are_kept_with_the_speed_up(monkeypatch):
    from cellpaint.local import moto_speed
    from moto.sqs.models import Queue, SQSBackend

    plain = (receive_after(30, monkeypatch), receive_after(90, monkeypatch))
    saved = (SQSBackend.is_message_valid_based_on_retention_period, {n: getattr(Queue, n) for n in moto_speed.COUNTS},
             SQSBackend.get_queue_attributes)
    try:
        moto_speed.apply()
        assert SQSBackend.is_message_valid_based_on_retention_period is not saved[0]
        assert (receive_after(30, monkeypatch), receive_after(90, monkeypatch)) == plain == (["old"], [])
        assert counts_after_sends(3) == ["1", "2", "3"]  # the API counts afresh
    finally:
        SQSBackend.is_message_valid_based_on_retention_period = saved[0]
        for name, prop in saved[1].items():
            setattr(Queue, name, prop)
        SQSBackend.get_queue_attributes = saved[2]
