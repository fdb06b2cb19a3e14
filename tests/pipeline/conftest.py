"""Fixtures for the serverless pipeline: a moto account with the stack's resources, the two
handlers loaded from functions/*/app.py, and helpers to make uploads and events. No network."""
from __future__ import annotations

import copy
import importlib.util
import io
import json
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import numpy as np
import pytest
from moto import mock_aws
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "tests" / "events"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

BUCKET = "cellpaint-test-bucket"
REGION = "us-east-1"


@dataclass
class Stack:
    s3: object
    batch: object
    sns: object
    sqs: object
    topic_arn: str
    inbox_url: str  # an SQS queue subscribed to the topic: what a webhook would receive
    job_queue: str
    job_definition: str
    ingest: object = None
    notify: object = None
    submits: list = field(default_factory=list)  # kwargs of every SubmitJob the ingest handler made


class Context:
    function_name = "ingest"
    memory_limit_in_mb = 1024
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:ingest"
    aws_request_id = "req-1"

    def __init__(self, remaining_ms: int = 300_000):  # the ingest function's Timeout
        self.remaining_ms = remaining_ms

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


def load_handler(name: str):
    spec = importlib.util.spec_from_file_location(f"cellpaint_fn_{name}_{uuid.uuid4().hex}", ROOT / "functions" / name / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def env(monkeypatch):
    for k, v in {"AWS_DEFAULT_REGION": REGION, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_SESSION_TOKEN": "testing", "POWERTOOLS_TRACE_DISABLED": "true",
                 "POWERTOOLS_SERVICE_NAME": "cellpaint", "POWERTOOLS_METRICS_NAMESPACE": "cellpaint",
                 "POWERTOOLS_DEV": "false", "BUCKET": BUCKET, "MAX_UPLOAD_BYTES": str(50 * 2**20),
                 "MAX_PIXELS": "40000000", "MAX_WINDOWS": "64", "LINK_EXPIRY_SECONDS": "3600",
                 "HALF_PAIR_SECONDS": "86400", "LEASE_GRACE_SECONDS": "10800"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return monkeypatch


@pytest.fixture
def stack(env):
    with mock_aws(config={"batch": {"use_docker": False}}):
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket=BUCKET)
        s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        iam = boto3.client("iam", region_name=REGION)
        role = iam.create_role(RoleName="batch", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
        batch = boto3.client("batch", region_name=REGION)
        ce = batch.create_compute_environment(computeEnvironmentName="gpu", type="UNMANAGED", state="ENABLED",
                                              serviceRole=role)["computeEnvironmentArn"]
        queue = batch.create_job_queue(jobQueueName="cellpaint", state="ENABLED", priority=1,
                                       computeEnvironmentOrder=[{"order": 1, "computeEnvironment": ce}])["jobQueueArn"]
        jobdef = batch.register_job_definition(
            jobDefinitionName="cellpaint-gpu", type="container",
            containerProperties={"image": "cellpaint:gpu", "command": ["python", "-m", "gpu_job", "run", "--manifest", "Ref::manifest"],
                                 "resourceRequirements": [{"type": "VCPU", "value": "4"}, {"type": "MEMORY", "value": "14000"}]},
        )["jobDefinitionArn"]
        sns = boto3.client("sns", region_name=REGION)
        topic = sns.create_topic(Name="cellpaint")["TopicArn"]
        sqs = boto3.client("sqs", region_name=REGION)
        inbox = sqs.create_queue(QueueName="inbox")["QueueUrl"]
        inbox_arn = sqs.get_queue_attributes(QueueUrl=inbox, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=inbox_arn, Attributes={"RawMessageDelivery": "false"})
        env.setenv("JOB_QUEUE", queue)
        env.setenv("JOB_DEFINITION", jobdef)
        env.setenv("TOPIC_ARN", topic)
        env.setenv("DIGEST_QUEUE_URL", sqs.create_queue(QueueName="digest")["QueueUrl"])
        env.setenv("INGEST_QUEUE_URL", sqs.create_queue(QueueName="ingest")["QueueUrl"])
        st = Stack(s3, batch, sns, sqs, topic, inbox, queue, jobdef)
        st.ingest = load_handler("ingest")
        st.notify = load_handler("notify")
        st.ingest.BATCH.meta.events.register("provide-client-params.batch.SubmitJob",
                                             lambda params, **kw: st.submits.append(params))
        yield st


# ---- uploads ----------------------------------------------------------------------------------

def cell_image(h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), (230, 200, 210), np.uint8)
    yy, xx = np.mgrid[:h, :w]
    img[(yy - h / 2) ** 2 + (xx - w / 2) ** 2 < (min(h, w) / 3) ** 2] = (120, 60, 150)
    return np.clip(img.astype(int) + rng.integers(-10, 10, img.shape), 0, 255).astype(np.uint8)


def disc_mask(h: int = 48, w: int = 64) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return (((yy - h / 3) ** 2 + (xx - w / 3) ** 2 < (min(h, w) / 6) ** 2) * 255).astype(np.uint8)


def encode(arr_or_img, fmt: str = "PNG", **kw) -> bytes:
    img = arr_or_img if isinstance(arr_or_img, Image.Image) else Image.fromarray(arr_or_img)
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def good_pair(h: int = 48, w: int = 64) -> tuple[bytes, bytes]:
    return encode(cell_image(h, w)), encode(disc_mask(h, w))


# ---- events -----------------------------------------------------------------------------------

def load_event(name: str) -> dict:
    return json.loads((EVENTS / name).read_text())


def s3_body(key: str, bucket: str = BUCKET, version: str | None = None) -> dict:
    """An S3 notification as S3 puts it on SQS, from the checked-in example, key URL-encoded."""
    from urllib.parse import quote_plus
    body = json.loads(load_event("sqs-s3-object-created.json")["Records"][0]["body"])
    rec = body["Records"][0]
    rec["s3"]["bucket"]["name"] = bucket
    rec["s3"]["bucket"]["arn"] = f"arn:aws:s3:::{bucket}"
    rec["s3"]["object"]["key"] = quote_plus(key, safe="/")
    if version:
        rec["s3"]["object"]["versionId"] = version
    else:
        rec["s3"]["object"].pop("versionId", None)
    return body


def sqs_event(*bodies: dict) -> dict:
    template = load_event("sqs-s3-object-created.json")["Records"][0]
    records = []
    for body in bodies:
        r = copy.deepcopy(template)
        r["messageId"] = str(uuid.uuid4())
        r["body"] = json.dumps(body)
        records.append(r)
    return {"Records": records}


def upload(st: Stack, key: str, data: bytes) -> dict:
    """Put an object and return the SQS event S3 would send for it."""
    r = st.s3.put_object(Bucket=BUCKET, Key=key, Body=data)
    return sqs_event(s3_body(key, version=r.get("VersionId")))


def inbox(st: Stack) -> list[dict]:
    """Every SNS message delivered so far: {"subject", "text", "json"}."""
    out = []
    while True:
        msgs = st.sqs.receive_message(QueueUrl=st.inbox_url, MaxNumberOfMessages=10).get("Messages", [])
        if not msgs:
            return out
        for m in msgs:
            env = json.loads(m["Body"])
            out.append({"subject": env.get("Subject"), "text": env["Message"], "envelope": env})
            st.sqs.delete_message(QueueUrl=st.inbox_url, ReceiptHandle=m["ReceiptHandle"])


def keys(st: Stack, prefix: str) -> list[str]:
    r = st.s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    return sorted(o["Key"] for o in r.get("Contents", []))


def handoffs(st: Stack) -> list[str]:
    """Every manifest ingest handed to a job, oldest first: submitted as a new job, or queued to
    the job that is running (shared/pipeline/runner.py)."""
    submitted = [s["parameters"]["manifest"].split(f"{BUCKET}/", 1)[1] for s in st.submits]
    queued = [f"jobs/{k.rsplit('/', 1)[1][:-len('.json')]}/manifest.json" for k in keys(st, "jobs/queue/")]
    created = {k: json.loads(st.s3.get_object(Bucket=BUCKET, Key=k)["Body"].read())["created"] for k in submitted + queued}
    return sorted(created, key=created.get)  # the job id's time has whole seconds only


def notify_outputs(st: Stack) -> dict:
    """Feed every results/*/result.json and failed/*/error.json to the notify handler, as the
    stack's S3 notification would."""
    outs = [k for k in keys(st, "results/") + keys(st, "failed/") if k.endswith(("/result.json", "/error.json"))]
    return st.notify.lambda_handler(sqs_event(*map(s3_body, outs)), Context()) if outs else {"batchItemFailures": []}


# ---- faults and time ----------------------------------------------------------------------------

class Crash(BaseException):
    """The invocation dies here (a Lambda timeout or out-of-memory kill): no except clause and no
    cleanup of ours runs, exactly as when the process is frozen and dropped."""


def crash_on(client, operation: str, when=lambda params: True, after: bool = False) -> dict:
    """Raise Crash the first time `operation` is called with API params for which `when` holds:
    before the request is sent, or (`after`) once the service has applied it and answered."""
    state = {"crashed": 0, "params": {}}
    svc = client.meta.service_model.service_id.hyphenize()

    def maybe_crash(params):
        if not state["crashed"] and when(params):
            state["crashed"] += 1
            raise Crash(f"{operation} {'applied' if after else 'not sent'}")

    def before(params, **kwargs):
        state["params"] = dict(params)
        if not after:
            maybe_crash(params)

    client.meta.events.register(f"before-parameter-build.{svc}.{operation}", before)
    if after:
        client.meta.events.register(f"after-call.{svc}.{operation}", lambda **kwargs: maybe_crash(state["params"]))
    return state


def later(monkeypatch, seconds: float) -> None:
    """Move the lease clock `seconds` into the future (every module that reads it)."""
    from datetime import timedelta

    import shared.pipeline.ingest
    import shared.pipeline.leases
    import shared.pipeline.notify
    import shared.pipeline.sweep

    now = shared.pipeline.leases.now_utc() + timedelta(seconds=seconds)
    for mod in (shared.pipeline.leases, shared.pipeline.ingest, shared.pipeline.notify, shared.pipeline.sweep):
        monkeypatch.setattr(mod, "now_utc", lambda: now)


def batch_jobs(st: Stack) -> list[dict]:
    """Every job submitted to the moto queue, oldest first: {"jobId", "manifest"}."""
    listed = st.batch.list_jobs(jobQueue=st.job_queue, filters=[{"name": "JOB_NAME", "values": ["cellpaint-*"]}])["jobSummaryList"]
    ids = [j["jobId"] for j in sorted(listed, key=lambda j: j.get("createdAt", 0))]
    jobs = st.batch.describe_jobs(jobs=ids)["jobs"] if ids else []
    # an array job's parent does no work: its children do, one work item each
    from cellpaint.local.runner import array_index

    return [{"jobId": j["jobId"], "manifest": j["parameters"]["manifest"], "item": array_index(j)}
            for j in jobs if "size" not in (j.get("arrayProperties") or {})]


def run_jobs(st: Stack, inpainter) -> list[dict]:
    """Run every submitted Batch job once, as Batch would (each with its own AWS_BATCH_JOB_ID, and
    each taking the manifests queued to it): [{pair: status} per job]."""
    from gpu_job.job import serve

    return [serve(j["manifest"], s3=st.s3, inpainter=inpainter, batch_job_id=j["jobId"], item=j["item"], linger_s=0)
            for j in batch_jobs(st)]


@pytest.fixture
def inpainter(tiny_weights):
    from gpu_job.inpainter.inpaint import Inpainter
    return Inpainter(tiny_weights, "cpu")
