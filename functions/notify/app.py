"""Notify: results/*/result.json, failed/*/error.json (S3 -> SQS) and Batch FAILED (EventBridge ->
SQS) -> one SNS message per pair, text for email and JSON for webhooks; each answered pair of a
folder also schedules the check that sends the folder's digest (shared/pipeline/digest.py).

The logic is in shared/pipeline/notify.py; this file only wires AWS, Powertools and the batch response.
"""
from __future__ import annotations

import os

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from shared.pipeline import digest, notify
from shared.pipeline.leases import Sent, seconds_left
from shared.pipeline.s3 import client

BUCKET = os.environ["BUCKET"]
TOPIC_ARN = os.environ["TOPIC_ARN"]
LINK_EXPIRY_SECONDS = int(os.environ["LINK_EXPIRY_SECONDS"])
DIGEST_QUEUE_URL = os.environ["DIGEST_QUEUE_URL"]

logger, tracer, metrics = Logger(), Tracer(), Metrics()
S3, SNS, SQS = client("s3"), client("sns"), client("sqs")
processor = BatchProcessor(event_type=EventType.SQS)
SENT = Sent()  # the digest checks this warm function put on their way


@tracer.capture_method
def record_handler(record: SQSRecord, lambda_context: LambdaContext) -> None:
    for n in notify.notices_for(S3, BUCKET, record.json_body, LINK_EXPIRY_SECONDS, logger):
        message_id = notify.publish(SNS, S3, BUCKET, TOPIC_ARN, n, lease_s=seconds_left(lambda_context), logger=logger)
        logger.info("published" if message_id else "duplicate; already published",
                    extra={"pair": n.pair, "status": n.status, "message_id": message_id})
        if message_id:
            metrics.add_metric(name=f"Notified{n.status.capitalize()}", unit=MetricUnit.Count, value=1)
        folder = digest.folder_of(n.pair) if n.kind == "pair" else None
        if folder:
            digest.schedule(S3, SQS, BUCKET, folder, DIGEST_QUEUE_URL, SENT)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
