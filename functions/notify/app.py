"""Notify: results/*/result.json, failed/*/error.json (S3 -> SQS) and Batch FAILED (EventBridge ->
SQS) -> one SNS message per pair, text for email and JSON for webhooks.

The logic is in shared/notify.py; this file only wires AWS, Powertools and the batch response.
"""
from __future__ import annotations

import os

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes import EventBridgeEvent
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from shared import notify
from shared.ingest import client
from shared.s3events import object_events, pair_from_output_key

BUCKET = os.environ["BUCKET"]
TOPIC_ARN = os.environ["TOPIC_ARN"]
LINK_EXPIRY_SECONDS = int(os.environ["LINK_EXPIRY_SECONDS"])

logger, tracer, metrics = Logger(), Tracer(), Metrics()
S3, SNS = client("s3"), client("sns")
processor = BatchProcessor(event_type=EventType.SQS)


def notices(body: dict) -> list[notify.Notice]:
    if body.get("source") == "aws.batch":
        event = EventBridgeEvent(body)
        if event.detail_type != "Batch Job State Change" or event.detail.get("status") != "FAILED":
            return []
        return notify.from_batch_failure(S3, event.detail)
    found = []
    for ev in object_events(body):
        parsed = pair_from_output_key(ev.key) if ev.bucket == BUCKET else None
        if parsed and parsed[1] == "succeeded":
            found.append(notify.from_result(S3, BUCKET, ev.key, LINK_EXPIRY_SECONDS, ev.version))
        elif parsed:
            found.append(notify.from_error(S3, BUCKET, ev.key, ev.version))
        else:
            logger.warning("not a result or an error; ignored", extra={"bucket": ev.bucket, "key": ev.key})
    return found


@tracer.capture_method
def record_handler(record: SQSRecord) -> None:
    for n in notices(record.json_body):
        message_id = notify.publish(SNS, S3, BUCKET, TOPIC_ARN, n)
        logger.info("published" if message_id else "duplicate; already published",
                    extra={"pair": n.pair, "status": n.status, "message_id": message_id})
        if message_id:
            metrics.add_metric(name=f"Notified{n.status.capitalize()}", unit=MetricUnit.Count, value=1)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
