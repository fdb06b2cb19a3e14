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


def test_retention_is_kept_with_the_speed_up(monkeypatch):
    from cellpaint.local import moto_speed
    from moto.sqs.models import SQSBackend

    plain = (receive_after(30, monkeypatch), receive_after(90, monkeypatch))
    saved = SQSBackend.is_message_valid_based_on_retention_period
    try:
        moto_speed.apply()
        assert SQSBackend.is_message_valid_based_on_retention_period is not saved
        assert (receive_after(30, monkeypatch), receive_after(90, monkeypatch)) == plain == (["old"], [])
    finally:
        SQSBackend.is_message_valid_based_on_retention_period = saved
