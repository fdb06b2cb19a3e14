"""Sending dead letters on: nothing the stack could not deliver is dropped without a trace, and
nothing stays undelivered once its cause is fixed (`cellpaint redrive`).

Two kinds of dead-letter queue: a function's (the message that failed five deliveries to it: an
S3 event, a Batch state change, a check), moved back to the queue it came from, whose redrive
policy names this one; and the subscriptions' (a notification that SNS could not deliver), whose
messages are published to the topic again, with their attributes (a subscription's filter still
applies).
"""
from __future__ import annotations

import json

from botocore.client import BaseClient


def source_queues(sqs: BaseClient, dlq_arn: str) -> list[str]:
    """The queues whose redrive policy sends their dead letters to `dlq_arn`."""
    return sqs.list_dead_letter_source_queues(QueueUrl=_url(sqs, dlq_arn)).get("queueUrls", [])


def _url(sqs: BaseClient, arn: str) -> str:
    return sqs.get_queue_url(QueueName=arn.rsplit(":", 1)[1])["QueueUrl"]


def redrive(sqs: BaseClient, sns: BaseClient, dlq_url: str, topic_arn: str | None = None, limit: int = 10_000) -> int:
    """Send the queue's dead letters on; returns how many. A message is deleted only once it is sent."""
    arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sources = source_queues(sqs, arn)
    if not sources and not topic_arn:
        raise ValueError(f"{dlq_url}: no queue sends its dead letters here; for the subscriptions' queue give the topic")
    sent = 0
    while sent < limit:
        msgs = sqs.receive_message(QueueUrl=dlq_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"],
                                   WaitTimeSeconds=0).get("Messages", [])
        if not msgs:
            break
        for m in msgs:
            if sources:
                sqs.send_message(QueueUrl=sources[0], MessageBody=m["Body"])
            else:
                republish(sns, topic_arn, json.loads(m["Body"]))
            sqs.delete_message(QueueUrl=dlq_url, ReceiptHandle=m["ReceiptHandle"])
            sent += 1
    return sent


def republish(sns: BaseClient, topic_arn: str, envelope: dict) -> None:
    """A notification SNS dead-lettered (its JSON envelope), published again as it was."""
    attrs = {k: {"DataType": v.get("Type", "String"), "StringValue": v["Value"]}
             for k, v in (envelope.get("MessageAttributes") or {}).items()}
    kw = {"Subject": envelope["Subject"]} if envelope.get("Subject") else {}
    sns.publish(TopicArn=topic_arn, Message=envelope["Message"], MessageAttributes=attrs, **kw)
