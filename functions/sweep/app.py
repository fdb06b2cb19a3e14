"""Sweep: an EventBridge schedule -> here. Reports, once each, what no event will: half-uploaded
pairs, sidecars that came after their pair, and ingest leases abandoned without a job.
The logic is in shared/pipeline/sweep.py; this file only wires AWS and Powertools.
"""
from __future__ import annotations

import os

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from shared.pipeline import sweep
from shared.pipeline.leases import seconds_left
from shared.pipeline.s3 import client

BUCKET = os.environ["BUCKET"]
CONFIG = sweep.SweepConfig(half_pair_s=float(os.environ["HALF_PAIR_SECONDS"]),
                           lease_grace_s=float(os.environ["LEASE_GRACE_SECONDS"]))

RESERVE_MS = 60_000

logger, tracer, metrics = Logger(), Tracer(), Metrics()
S3 = client("s3")


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    # Stop listing with a minute left: what was found is reported, and the next sweep goes on from there.
    found = sweep.sweep(S3, BUCKET, CONFIG, lease_s=seconds_left(context),
                        out_of_time=lambda: context.get_remaining_time_in_millis() < RESERVE_MS)
    for f in found:
        logger.info("reported" if f.error_key else "reported before", extra={"kind": f.kind, "pair": f.pair, "reason": f.reason})
        if f.error_key:
            metrics.add_metric(name="Swept" + f.kind.title().replace("-", ""), unit=MetricUnit.Count, value=1)
    return {"reported": [f.error_key for f in found if f.error_key]}
