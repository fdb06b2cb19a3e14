"""Digest: a folder's delayed checks (scheduled by the notify function) -> SQS -> here. Once every
pair of the folder has an answer: results/<folder>/summary.json, a contact sheet, and one SNS
message for the folder (shared/pipeline/digest.py). This file only wires AWS and Powertools.
"""
from __future__ import annotations

import os

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from shared.pipeline import digest, notify
from shared.pipeline.s3 import client, presign

BUCKET, TOPIC_ARN, QUEUE_URL = os.environ["BUCKET"], os.environ["TOPIC_ARN"], os.environ["DIGEST_QUEUE_URL"]
LINK_EXPIRY_SECONDS = int(os.environ["LINK_EXPIRY_SECONDS"])

logger, tracer, metrics = Logger(), Tracer(), Metrics()
S3, SNS, SQS = client("s3"), client("sns"), client("sqs")
processor = BatchProcessor(event_type=EventType.SQS)


@tracer.capture_method
def record_handler(record: SQSRecord) -> None:
    folder = record.json_body["digest_check"]
    status, n = digest.check(S3, SQS, BUCKET, folder, QUEUE_URL, start=str(record.json_body.get("from") or ""))
    if n is not None:
        if n.keys.get("contact_sheet"):
            n.link, n.link_expires_in = presign(S3, BUCKET, n.keys["contact_sheet"], LINK_EXPIRY_SECONDS)
        notify.publish(SNS, S3, BUCKET, TOPIC_ARN, n, logger=logger)
        metrics.add_metric(name="FolderDigests", unit=MetricUnit.Count, value=1)
    logger.info(status, extra={"folder": folder})


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
