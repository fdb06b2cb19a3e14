"""Adapt: S3 (adapt/<lab>/...) and this function's own delayed checks -> SQS -> here. A photo's
event schedules one check of its lab; a check submits the lab's training job once the upload has
settled (shared/pipeline/adapt.py). This file only wires AWS, Powertools and the batch response.
"""
from __future__ import annotations

import os

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from shared.pipeline import adapt
from shared.pipeline.leases import Sent
from shared.pipeline.s3 import client
from shared.pipeline.s3events import object_events

BUCKET, QUEUE_URL = os.environ["BUCKET"], os.environ["ADAPT_QUEUE_URL"]
JOB_QUEUE, JOB_DEFINITION = os.environ["JOB_QUEUE"], os.environ["ADAPT_JOB_DEFINITION"]
SETTLE_S = float(os.environ.get("SETTLE_SECONDS", adapt.SETTLE_S))

logger, tracer, metrics = Logger(), Tracer(), Metrics()
S3, SQS, BATCH = client("s3"), client("sqs"), client("batch")
processor = BatchProcessor(event_type=EventType.SQS)
SENT = Sent()  # the lab checks this warm function put on their way


@tracer.capture_method
def record_handler(record: SQSRecord) -> None:
    body = record.json_body
    if "adapt_check" in body:
        c = adapt.check(S3, BATCH, SQS, BUCKET, body["adapt_check"], QUEUE_URL, JOB_QUEUE, JOB_DEFINITION, settle_s=SETTLE_S)
        logger.info(c.detail, extra={"status": c.status, "lab": c.lab, "manifest": c.manifest})
        metrics.add_metric(name=f"Adapt{c.status.capitalize()}", unit=MetricUnit.Count, value=1)
        return
    for ev in object_events(body):
        lab = adapt.lab_of_key(ev.key) if ev.bucket == BUCKET else None
        if lab and adapt.schedule(S3, SQS, BUCKET, lab, QUEUE_URL, min(adapt.CHECK_DELAY_S, SETTLE_S + 5), SENT):
            logger.info("check scheduled", extra={"lab": lab, "key": ev.key})


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
