"""Ingest: S3 (incoming/) -> SQS -> here. Validates and leases each complete pair, writes
failed/<pair>/error.json for bad input, and hands the ready pairs, as one manifest, to the running
GPU job or a new Batch job. The logic is in shared/pipeline/ingest.py; this file wires AWS."""
from __future__ import annotations

import json
import os
from functools import partial

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from shared.pipeline import ingest
from shared.pipeline.leases import seconds_left
from shared.pipeline.s3 import client
from shared.pipeline.s3events import object_events
from shared.pipeline.validate import Limits

BUCKET, JOB_QUEUE, JOB_DEFINITION = os.environ["BUCKET"], os.environ["JOB_QUEUE"], os.environ["JOB_DEFINITION"]
LIMITS = Limits(max_bytes=int(os.environ["MAX_UPLOAD_BYTES"]), max_pixels=int(os.environ["MAX_PIXELS"]),
                max_windows=int(os.environ["MAX_WINDOWS"]))

logger, tracer, metrics = Logger(), Tracer(), Metrics()
S3, BATCH, SQS = client("s3"), client("batch"), client("sqs")
QUEUE_URL = os.environ["INGEST_QUEUE_URL"]  # its own queue: a re-upload's first half is looked at again after a settle


@tracer.capture_method
def record_handler(record: SQSRecord, lambda_context: LambdaContext, folders: ingest.Folders) -> list[ingest.Outcome]:
    """Every object event in one SQS message; raising fails (and redelivers) only this message, and
    so does too little time left to start it."""
    ingest.check_time(lambda_context.get_remaining_time_in_millis())
    outcomes = []
    for ev in object_events(record.json_body):
        if ev.bucket != BUCKET:
            logger.warning("event for another bucket ignored", extra={"bucket": ev.bucket, "key": ev.key})
            continue
        outcome = ingest.ingest_object(S3, BUCKET, ev.key, ev.version, LIMITS, lease_s=seconds_left(lambda_context), folders=folders)
        logger.info(outcome.detail or outcome.status, extra={"status": outcome.status, "key": ev.key, "pair": outcome.pair})
        if outcome.status == "settling":  # looked at again later: the same event, delayed on this queue
            SQS.send_message(QueueUrl=QUEUE_URL, MessageBody=record.body, DelaySeconds=min(900, int(outcome.retry_in) + 1))
        metrics.add_metric(name=f"Pairs{outcome.status.capitalize()}", unit=MetricUnit.Count, value=1)
        outcomes.append(outcome)
    return outcomes


def _events(record: dict) -> list:
    """The object events of one SQS record, or none when its body is not one (it fails alone, later)."""
    try:
        return object_events(json.loads(record["body"]))
    except (KeyError, TypeError, ValueError):
        return []


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
    # Each folder listed once per invocation, over the key range of the pairs its events name.
    folders = ingest.Folders(S3, BUCKET, [ev.key for rec in event["Records"] for ev in _events(rec)])
    handler = partial(record_handler, folders=folders)
    with processor(records=event["Records"], handler=handler, lambda_context=context):
        results = processor.process()
    ready = [(rec["messageId"], o) for ok, outs, rec in results if ok == "success" for o in outs if o.status in ("ready", "resubmit")]
    handed = ingest.submit_ready(S3, BATCH, BUCKET, JOB_QUEUE, JOB_DEFINITION, ready, logger)
    metrics.add_metric(name="JobsSubmitted", unit=MetricUnit.Count, value=handed.jobs)
    return {"batchItemFailures": processor.response()["batchItemFailures"] + [{"itemIdentifier": mid} for mid in handed.retry]}
