#!/usr/bin/env python
"""Leases on S3 conditional writes (shared/pipeline/leases.py) against the Powertools idempotency utility
with a DynamoDB table, measured on moto in server mode (real HTTP on loopback, one process per
delivery where a crash is involved). The decision and its trade-offs: docs/pipeline.md, "Exactly once".

    PYTHONPATH=$PWD .venv/bin/python scripts/bench_claims.py [--claims 200]

For each: HTTP requests and latency per claim (first delivery, then done), per duplicate
delivery, and what happens when the holder dies (a child process that exits with os._exit
after taking the claim): does a later delivery take over once the lease expires, and does it
see what the dead holder recorded (the manifest it wrote before SubmitJob)?

moto shows requests, conditional-write semantics and crash/takeover behaviour; its latencies are
loopback + Python, not AWS's (no network, no replication, no throttling), so they compare the two
clients' work, nothing more.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import boto3  # noqa: E402

BUCKET, TABLE, REGION = "bench-claims", "bench-idempotency", "us-east-1"
CREDS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": REGION}
# Prices, us-east-1, on-demand, 2026: S3 Standard PUT $0.005 / 1000, GET $0.0004 / 1000;
# DynamoDB on-demand $0.625 per million write request units, $0.125 per million read units
# (1 unit per item up to 1 kB written, 4 kB read strongly consistent).
PRICE = {("s3", "PUT"): 0.005 / 1000, ("s3", "GET"): 0.0004 / 1000, ("dynamodb", "WRITE"): 0.625e-6,
         ("dynamodb", "READ"): 0.125e-6}


class Counted:
    """A client whose HTTP attempts are counted by kind (PUT/GET for S3, WRITE/READ for DynamoDB)."""

    def __init__(self, service: str, endpoint: str):
        self.client = boto3.client(service, endpoint_url=endpoint, region_name=REGION,
                                   aws_access_key_id="test", aws_secret_access_key="test")
        self.service, self.counts = service, {}
        self.client.meta.events.register("before-send", self._count)

    def _count(self, request, **kw):
        if self.service == "s3":
            kind = request.method
        else:
            op = request.headers.get("X-Amz-Target", b"").decode().rsplit(".", 1)[-1]
            kind = "READ" if op in ("GetItem", "Query", "Scan") else "WRITE"
        self.counts[kind] = self.counts.get(kind, 0) + 1

    def take(self) -> dict:
        out, self.counts = self.counts, {}
        return out


# ---- the two candidates ---------------------------------------------------------------------------

def s3_claim(s3, key: str, seconds: float, record: dict | None = None):
    from shared.pipeline.leases import acquire, record as keep

    lease = acquire(s3, BUCKET, key, {"pair": key}, seconds)
    if lease is not None and record:
        lease = keep(s3, BUCKET, lease, **record)
    return lease


def s3_done(s3, lease) -> None:
    from shared.pipeline.leases import finish

    finish(s3, BUCKET, lease, state="submitted")


def powertools_function(ddb, remaining_ms: int, body):
    """An idempotent function as ingest would use it: keyed on the pair, in-progress expiry from
    the Lambda context's remaining time, the result (the Batch job id) stored for duplicates."""
    from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer, IdempotencyConfig, idempotent_function

    class Ctx:
        function_name, memory_limit_in_mb, aws_request_id = "bench", 128, "r"
        invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:bench"

        def get_remaining_time_in_millis(self):
            return remaining_ms

    layer = DynamoDBPersistenceLayer(table_name=TABLE, boto3_client=ddb)
    config = IdempotencyConfig(event_key_jmespath="pair", expires_after_seconds=14 * 86400)
    config.register_lambda_context(Ctx())

    @idempotent_function(data_keyword_argument="ref", persistence_store=layer, config=config)
    def work(ref: dict) -> dict:
        return body(ref)

    return work


# ---- measurements ---------------------------------------------------------------------------------

def timed(fn, n: int, counted: Counted):
    times, counts = [], []
    for i in range(n):
        t0 = time.perf_counter()
        fn(i)
        times.append((time.perf_counter() - t0) * 1000)
        counts.append(counted.take())
    per = {k: sum(c.get(k, 0) for c in counts) / n for k in set().union(*counts)}
    return {"ms_median": statistics.median(times), "ms_p95": sorted(times)[int(0.95 * (n - 1))], "requests": per}


def cost(service: str, requests: dict) -> float:
    return sum(PRICE[(service, k)] * v for k, v in requests.items())


def child(args) -> None:
    """A delivery that takes the claim and dies (os._exit: no cleanup runs), as a Lambda killed at
    its timeout would. It records a manifest first, where the candidate lets it."""
    if args.child == "s3":
        s3 = boto3.client("s3", endpoint_url=args.endpoint, region_name=REGION)
        s3_claim(s3, args.key, args.seconds, record={"state": "submitting", "manifest": "jobs/X/manifest.json"})
        os._exit(1)
    ddb = boto3.client("dynamodb", endpoint_url=args.endpoint, region_name=REGION)

    def die(ref):
        os._exit(1)  # the manifest exists only in this process: Powertools stores nothing before the result

    powertools_function(ddb, int(args.seconds * 1000), die)(ref={"pair": args.key})


def crash_then_retry(kind: str, endpoint: str, seconds: float, s3: Counted, ddb: Counted) -> dict:
    key = f"jobs/claims/ingest/crash-{uuid.uuid4().hex}.json" if kind == "s3" else f"crash-{uuid.uuid4().hex}"
    r = subprocess.run([sys.executable, __file__, "--child", kind, "--endpoint", endpoint, "--key", key, "--seconds", str(seconds)],
                       env={**os.environ, **CREDS})
    assert r.returncode == 1, r.returncode
    out = {}
    if kind == "s3":
        out["before_expiry"] = "held (duplicate)" if s3_claim(s3.client, key, 60) is None else "taken over!"
        time.sleep(seconds + 0.5)
        s3.take()
        t0 = time.perf_counter()
        lease = s3_claim(s3.client, key, 60)
        out["takeover_ms"] = (time.perf_counter() - t0) * 1000
        out["takeover_requests"] = s3.take()
        out["after_expiry"] = "taken over" if lease is not None else "still held!"
        out["sees_manifest"] = bool(lease and lease.previous and lease.previous.get("manifest"))
        return out
    from aws_lambda_powertools.utilities.idempotency.exceptions import IdempotencyAlreadyInProgressError

    seen = {}
    work = powertools_function(ddb.client, 60_000, lambda ref: seen.setdefault("ran", ref) and {"job": "j"})
    try:
        work(ref={"pair": key})
        out["before_expiry"] = "re-ran!"
    except IdempotencyAlreadyInProgressError:
        out["before_expiry"] = "IdempotencyAlreadyInProgressError (the message is retried)"
    time.sleep(seconds + 1.0)
    ddb.take()
    t0 = time.perf_counter()
    work(ref={"pair": key})
    out["takeover_ms"] = (time.perf_counter() - t0) * 1000
    out["takeover_requests"] = ddb.take()
    out["after_expiry"] = "re-ran from the start" if "ran" in seen else "not re-run!"
    out["sees_manifest"] = False  # the re-run gets the event, nothing the dead run recorded
    return out


def crashes(kind: str, endpoint: str, a, s3: Counted, ddb: Counted) -> dict:
    runs = [crash_then_retry(kind, endpoint, a.seconds, s3, ddb) for _ in range(a.crashes)]
    out = dict(runs[0])
    for field in ("before_expiry", "after_expiry", "sees_manifest", "takeover_requests"):
        assert all(r[field] == out[field] for r in runs), (field, [r[field] for r in runs])  # the same every time
    out["takeover_ms"] = statistics.median(r["takeover_ms"] for r in runs)
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--claims", type=int, default=200)
    p.add_argument("--child")
    p.add_argument("--endpoint")
    p.add_argument("--key")
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--crashes", type=int, default=5, help="holders killed per candidate (the takeover latency is their median)")
    a = p.parse_args()
    if a.child:
        return child(a)
    os.environ.update(CREDS)
    import logging

    from moto.moto_server.threaded_moto_server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{server.get_host_and_port()[1]}"
    try:
        s3, ddb = Counted("s3", endpoint), Counted("dynamodb", endpoint)
        s3.client.create_bucket(Bucket=BUCKET)
        s3.client.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        ddb.client.create_table(TableName=TABLE, KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
                                AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}], BillingMode="PAY_PER_REQUEST")
        s3.take(), ddb.take()
        n = a.claims
        keys = [f"jobs/claims/ingest/{uuid.uuid4().hex}.json" for _ in range(n)]
        pkeys = [uuid.uuid4().hex for _ in range(n)]
        fn = powertools_function(ddb.client, 300_000, lambda ref: {"job": "j"})
        rows = {
            "S3 lease": {
                "claim + done": timed(lambda i: s3_done(s3.client, s3_claim(s3.client, keys[i], 300)), n, s3),
                "duplicate": timed(lambda i: s3_claim(s3.client, keys[i], 300), n, s3),
                "crash": crashes("s3", endpoint, a, s3, ddb)},
            "Powertools + DynamoDB": {
                "claim + done": timed(lambda i: fn(ref={"pair": pkeys[i]}), n, ddb),
                "duplicate": timed(lambda i: fn(ref={"pair": pkeys[i]}), n, ddb),
                "crash": crashes("ddb", endpoint, a, s3, ddb)},
        }
    finally:
        server.stop()
    print(f"{n} claims and {a.crashes} killed holders each, moto {__import__('moto').__version__} server mode on loopback\n")
    print("| | S3 lease | Powertools + DynamoDB |\n| --- | --- | --- |")
    for what in ("claim + done", "duplicate"):
        cells = []
        for name, svc in (("S3 lease", "s3"), ("Powertools + DynamoDB", "dynamodb")):
            m = rows[name][what]
            reqs = ", ".join(f"{v:g} {k}" for k, v in sorted(m["requests"].items()))
            cells.append(f"{reqs}; {m['ms_median']:.1f} ms median, {m['ms_p95']:.1f} ms p95; ${cost(svc, m['requests']) * 1e6:.2f} per million")
        print(f"| {what} | {cells[0]} | {cells[1]} |")
    for field in ("before_expiry", "after_expiry", "sees_manifest", "takeover_requests", "takeover_ms"):  # ms: the median
        vals = [rows[name]["crash"][field] for name in rows]
        vals = [f"{v:.1f}" if isinstance(v, float) else (json.dumps(v) if isinstance(v, dict) else str(v)) for v in vals]
        print(f"| holder killed: {field.replace('_', ' ')} | {vals[0]} | {vals[1]} |")


if __name__ == "__main__":
    main()
