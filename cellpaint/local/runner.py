"""What moto cannot run, run here, small and faithful:

- Lambda: each function's SQS event source (as in the template: queue, BatchSize,
  MaximumBatchingWindowInSeconds, ReportBatchItemFailures) polls its moto queue and calls the
  function's own `lambda_handler`, in this process, with the SQS event Lambda would build.
  Messages it did not report as failed are deleted; the others come back after the queue's
  visibility timeout, and go to the dead-letter queue after maxReceiveCount (moto's SQS).
- EventBridge schedules: a function with a `Schedule` event (the sweeper, `rate(1 hour)`) is
  called with a Scheduled Event at that rate, the first time one period after the stack starts.
- Batch: jobs submitted to the moto job queue are found with ListJobs/DescribeJobs, and the job
  definition's command (`Ref::` parameters filled in) runs as a subprocess on CPU, with its
  environment, AWS_BATCH_JOB_ID (the same for all its attempts, as in Batch) and AWS_ENDPOINT_URL
  pointing at moto; its retry strategy and attempt timeout apply.
  A job that fails for good sends the "Batch Job State Change" FAILED event to EventBridge (moto),
  whose rule from the template routes it to the notify queue.
"""
from __future__ import annotations

import fnmatch
import importlib.util
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import unquote_plus

from shared.pipeline.s3 import ADAPT, FAILED, INCOMING, MODELS, RESULTS, get_json, items_of, parse_uri

from cellpaint.local.stack import FunctionSpec, Stack


class Console:
    """Stage lines for the person watching (the Lambda and job logs go to files)."""

    def __init__(self, stream):
        self.stream, self.t0, self.lock = stream, time.time(), threading.Lock()

    def say(self, stage: str, text: str = "") -> None:
        with self.lock:
            self.stream.write(f"[{time.time() - self.t0:6.1f}s] {stage:<21} {text}\n")
            self.stream.flush()


class Context:
    """The LambdaContext fields Powertools reads."""

    def __init__(self, spec: FunctionSpec, region: str, account: str):
        self.function_name = spec.logical_id
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:{region}:{account}:function:{spec.logical_id}"
        self.memory_limit_in_mb = 128
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{spec.logical_id}"
        self.log_stream_name = "local"
        self._deadline = time.time() + spec.timeout

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.time()) * 1000))


def load_handler(spec: FunctionSpec):
    """The function's code (CodeUri + Handler) loaded with its own Environment; the handler modules
    read their settings at import, as in Lambda."""
    module_name, attr = spec.handler.rsplit(".", 1)
    saved = dict(os.environ)
    os.environ.update(spec.environment)
    try:
        mspec = importlib.util.spec_from_file_location(f"cellpaint_local_{spec.logical_id}", spec.code_uri / f"{module_name}.py")
        module = importlib.util.module_from_spec(mspec)
        mspec.loader.exec_module(module)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return getattr(module, attr)


# Lambda's pollers long-poll, and so do these: polling every second, the idle sources kept moto
# answering several empty receives a second beside a running job (925 of the 6,646 requests of a
# 200-pair run). A long poll returns as soon as a message arrives, and LocalStack.stop does not
# wait for an idle one.
LONG_POLL_S = 20


def s3_keys(body: dict) -> list[str]:
    return [unquote_plus(r["s3"]["object"]["key"]) for r in body.get("Records", []) if "s3" in r]


class SqsEventSource(threading.Thread):
    """One Lambda event source mapping: SQS queue -> function, invoked one batch at a time."""

    def __init__(self, stack: Stack, spec: FunctionSpec, source: dict, console: Console, stop: threading.Event):
        super().__init__(name=f"esm-{spec.logical_id}", daemon=True)
        self.stack, self.spec, self.source, self.console, self.stop = stack, spec, source, console, stop
        self.handler = load_handler(spec)
        self.sqs = stack.client("sqs")
        self.busy = False

    def _receive(self, n: int, wait: int) -> list[dict]:
        return self.sqs.receive_message(QueueUrl=self.source["url"], MaxNumberOfMessages=min(10, n), WaitTimeSeconds=wait,
                                        MessageSystemAttributeNames=["All"], MessageAttributeNames=["All"]).get("Messages", [])

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.poll_once()
            except Exception as exc:  # the mapping keeps polling, as Lambda's does
                if self.stop.is_set():
                    return  # moto stopped under a long poll
                self.console.say("runner error", f"{self.spec.logical_id}: {exc!r}")
                time.sleep(1)

    def poll_once(self) -> None:
        msgs = self._receive(self.source["batch_size"], LONG_POLL_S)
        if not msgs:
            return
        self.busy = True  # before looking at stop: LocalStack.stop sets stop, then waits for the busy
        try:
            if self.stop.is_set():  # received while the stack stops: not invoked, so back to the queue at once
                self.hand_back(msgs)
                return
            self.show(msgs)
            deadline = time.time() + self.source["window"]  # MaximumBatchingWindowInSeconds
            while len(msgs) < self.source["batch_size"] and not self.stop.is_set():
                left = deadline - time.time()
                if left <= 0:
                    break
                if left < 1:  # WaitTimeSeconds is whole seconds: the window's last fraction is waited out here
                    self.stop.wait(left)
                    more = self._receive(self.source["batch_size"] - len(msgs), 0)
                else:
                    more = self._receive(self.source["batch_size"] - len(msgs), min(LONG_POLL_S, int(left)))
                self.show(more)
                msgs += more
            self.invoke(msgs)
        finally:
            self.busy = False

    def finish(self) -> None:
        """After stop is set: wait for the invocation under way, not for an idle long poll (what it
        receives now goes back to the queue)."""
        self.join(timeout=30 if self.busy else 0.05)

    def hand_back(self, msgs: list[dict]) -> None:
        try:
            for i in range(0, len(msgs), 10):
                self.sqs.change_message_visibility_batch(QueueUrl=self.source["url"], Entries=[
                    {"Id": str(j), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
                    for j, m in enumerate(msgs[i:i + 10])])
        except Exception:  # noqa: BLE001 - moto is stopping: they come back after the visibility timeout
            pass

    def invoke(self, msgs: list[dict]) -> None:
        records = [{"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
                    "attributes": m.get("Attributes", {}), "messageAttributes": m.get("MessageAttributes", {}),
                    "md5OfBody": m.get("MD5OfBody"), "eventSource": "aws:sqs", "eventSourceARN": self.source["arn"],
                    "awsRegion": self.stack.region} for m in msgs]
        try:
            response = self.handler({"Records": records}, Context(self.spec, self.stack.region, "123456789012")) or {}
        except Exception as exc:  # the whole batch comes back after the visibility timeout
            self.console.say("function error", f"{self.spec.logical_id}: {exc!r} (see logs/lambda.log)")
            return
        failed = {f["itemIdentifier"] for f in response.get("batchItemFailures", [])} if self.source["partial"] else set()
        done = [m for m in msgs if m["MessageId"] not in failed]
        for i in range(0, len(done), 10):
            self.sqs.delete_message_batch(QueueUrl=self.source["url"], Entries=[
                {"Id": str(j), "ReceiptHandle": m["ReceiptHandle"]} for j, m in enumerate(done[i:i + 10])])
        if failed:
            self.console.say("retry later", f"{self.spec.logical_id}: {len(failed)} message(s) reported as failed")

    def show(self, msgs: list[dict]) -> None:
        for m in msgs:
            self.show_body(json.loads(m["Body"]))

    def show_body(self, body: dict) -> None:
        if body.get("source") == "aws.batch":
            d = body.get("detail", {})
            self.console.say("job failed", f"{d.get('jobName')}: {d.get('statusReason')} -> {self.spec.logical_id}")
        for key in s3_keys(body):
            if key.startswith(INCOMING):
                self.console.say("uploaded", key)
            elif key.startswith(RESULTS):
                self.console.say("result written", key)
            elif key.startswith(FAILED):
                self.console.say("error written", key)
            elif key.startswith(ADAPT):
                self.console.say("lab photo uploaded", key)
            elif key.startswith(MODELS):
                self.console.say("lab model written", key)
        if "adapt_check" in body:
            self.console.say("lab upload checked", body["adapt_check"])


class ScheduleSource(threading.Thread):
    """One EventBridge schedule -> function: the Scheduled Event, every `seconds`."""

    def __init__(self, stack: Stack, spec: FunctionSpec, seconds: int, console: Console, stop: threading.Event):
        super().__init__(name=f"schedule-{spec.logical_id}", daemon=True)
        self.stack, self.spec, self.seconds, self.console, self.stop = stack, spec, seconds, console, stop
        self.handler = load_handler(spec)

    def run(self) -> None:
        while not self.stop.wait(self.seconds):
            event = {"version": "0", "id": str(uuid.uuid4()), "detail-type": "Scheduled Event", "source": "aws.events",
                     "account": "123456789012", "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                     "region": self.stack.region, "resources": [], "detail": {}}
            try:
                out = self.handler(event, Context(self.spec, self.stack.region, "123456789012")) or {}
                self.console.say("swept", f"{self.spec.logical_id}: {len(out.get('reported', []))} reported")
            except Exception as exc:  # EventBridge retries; the next period comes anyway
                self.console.say("function error", f"{self.spec.logical_id}: {exc!r} (see logs/lambda.log)")


def array_index(job: dict) -> int | None:
    """An array child's index (None: a plain job): from arrayProperties, or the child's job id,
    which Batch (and moto, which leaves the index out of DescribeJobs) forms as <parent id>:<index>."""
    index = (job.get("arrayProperties") or {}).get("index")
    if index is None and ":" in job.get("jobId", ""):
        index = int(job["jobId"].rsplit(":", 1)[1])
    return index


class BatchRunner(threading.Thread):
    """Runs the jobs of the stack's job queue one at a time (this machine is the compute environment)."""

    def __init__(self, stack: Stack, console: Console, stop: threading.Event, log_dir: Path, seen: set | None = None):
        super().__init__(name="batch", daemon=True)
        self.stack, self.console, self.stop, self.log_dir = stack, console, stop, Path(log_dir)
        self.batch, self.events, self.s3 = stack.client("batch"), stack.client("events"), stack.client("s3")
        self.seen = seen if seen is not None else set()
        self.proc: subprocess.Popen | None = None
        self.busy = False
        self.jobs: list[dict] = []  # what ran: {"job_id", "name", "status", "pairs", "seconds"}

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                new = self.new_jobs()
                for job in new:
                    if self.stop.is_set():
                        break
                    self.busy = True
                    self.run_job(job)
                    self.busy = False
            except Exception as exc:
                self.console.say("runner error", f"batch: {exc!r}")
            finally:
                self.busy = False
            self.stop.wait(0.5)

    def new_jobs(self) -> list[dict]:
        listed = self.batch.list_jobs(jobQueue=self.stack.job_queue, filters=[{"name": "JOB_NAME", "values": ["*"]}])["jobSummaryList"]
        ids = [j["jobId"] for j in sorted(listed, key=lambda j: j.get("createdAt", 0)) if j["jobId"] not in self.seen]
        jobs = self.batch.describe_jobs(jobs=ids)["jobs"] if ids else []
        self.seen.update(j["jobId"] for j in jobs if "size" in (j.get("arrayProperties") or {}))  # parents: their children below
        # An array job's parent does no work of its own: its children (one per work item) do. Batch
        # lists them by arrayJobId (moto also lists them with the queue's).
        out = []
        for j in jobs:
            if "size" not in (j.get("arrayProperties") or {}):
                if j["jobId"] not in self.seen:
                    self.seen.add(j["jobId"])
                    out.append(j)
                continue
            kids = self.batch.list_jobs(arrayJobId=j["jobId"])["jobSummaryList"]
            kid_ids = [k["jobId"] for k in sorted(kids, key=lambda k: array_index(k) or 0)
                       if k["jobId"] not in self.seen]
            self.seen.update(kid_ids)
            out += self.batch.describe_jobs(jobs=kid_ids)["jobs"] if kid_ids else []
        return out

    def run_job(self, job: dict) -> None:
        jobdef = self.batch.describe_job_definitions(jobDefinitions=[job["jobDefinition"]])["jobDefinitions"][0]
        params = {**jobdef.get("parameters", {}), **job.get("parameters", {})}
        command = [next((part.replace(f"Ref::{k}", v) for k, v in params.items() if f"Ref::{k}" in part), part)
                   for part in jobdef["containerProperties"]["command"]]
        pairs = self.announce(job, params, array_index(job))
        if command[0] == "python":  # the container's python is this venv's
            command[0] = sys.executable
        env = {**os.environ, **{e["name"]: e["value"] for e in jobdef["containerProperties"].get("environment", [])},
               "AWS_BATCH_JOB_ID": job["jobId"]}
        index = array_index(job)
        if index is not None:  # an array child, as Batch runs it
            env["AWS_BATCH_JOB_ARRAY_INDEX"] = str(index)
        timeout = (job.get("timeout") or jobdef.get("timeout") or {}).get("attemptDurationSeconds")
        strategy = jobdef.get("retryStrategy", {})
        attempts = []
        log = self.log_dir / f"job-{job['jobName']}.log"
        t0 = time.time()
        for n in range(1, int(strategy.get("attempts", 1)) + 1):
            self.console.say("job running", f"{job['jobName']} attempt {n}: {' '.join(command[1:])}")
            with log.open("a") as out:
                self.proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=Path(__file__).parents[2])
                try:
                    code = self.proc.wait(timeout=timeout)
                    reason = "Essential container in task exited"
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    code, reason = self.proc.wait(), "Job attempt duration exceeded timeout"
            if self.stop.is_set():
                return
            attempts.append({"container": {"exitCode": code, "reason": reason}, "statusReason": reason})
            if code == 0:
                break
            if self.action(strategy, code, reason) == "EXIT":
                break
        secs = round(time.time() - t0, 1)
        status = "SUCCEEDED" if code == 0 else "FAILED"
        self.jobs.append({"job_id": job["jobId"], "name": job["jobName"], "status": status, "pairs": pairs, "seconds": secs})
        lines = log.read_text(errors="replace").splitlines()
        summary = lines[-1] if code == 0 and lines and lines[-1].startswith("{") else ""  # gpu_job prints {pair: status}
        self.console.say("job finished", f"{job['jobName']} {status} (exit {code}) in {secs} s {summary}")
        self.console.say("job log", str(log))
        if status == "FAILED":
            self.send_failed_event(job, params, attempts, reason, code)

    def announce(self, job: dict, params: dict, index: int | None = None) -> list[str]:
        """'validated' per pair of the manifest ingest wrote (an array child: of its work item), then 'job submitted'."""
        pairs = []
        uri = params.get("manifest", "")
        try:
            doc = get_json(self.s3, *parse_uri(uri))
            if "photos" in doc:  # a lab's adapt job (shared/pipeline/adapt.py)
                self.console.say("job submitted", f"{job['jobName']} ({len(doc['photos'])} photos of {doc.get('lab')}, {uri})")
                return []
            start, end = items_of(doc)[index] if index is not None else (0, len(doc.get("pairs", [])))
            for p in doc.get("pairs", [])[start:end]:
                pairs.append(p.get("pair"))
                self.console.say("validated", f"{p.get('pair')} ({p.get('width')}x{p.get('height')})")
        except Exception as exc:
            self.console.say("manifest unreadable", f"{uri}: {exc!r}")
        child = f" work item {index}" if index is not None else ""
        self.console.say("job submitted", f"{job['jobName']}{child} ({len(pairs)} pair{'s' * (len(pairs) != 1)}, {uri})")
        return pairs

    @staticmethod
    def action(strategy: dict, code: int, reason: str) -> str:
        """The job definition's evaluateOnExit: first match wins; no match retries (Batch's default)."""
        for rule in strategy.get("evaluateOnExit", []):
            if all(fnmatch.fnmatchcase(value, rule[k]) for k, value in
                   (("onExitCode", str(code)), ("onReason", reason), ("onStatusReason", reason)) if k in rule):
                return rule["action"].upper()
        return "RETRY"

    def send_failed_event(self, job: dict, params: dict, attempts: list, reason: str, code: int) -> None:
        detail = {"jobArn": job.get("jobArn"), "jobName": job["jobName"], "jobId": job["jobId"], "jobQueue": job["jobQueue"],
                  "status": "FAILED", "statusReason": reason, "attempts": attempts, "parameters": params,
                  "jobDefinition": job["jobDefinition"], "container": {"exitCode": code},
                  **({"arrayProperties": {"index": array_index(job)}} if array_index(job) is not None else {})}
        self.events.put_events(Entries=[{"Source": "aws.batch", "DetailType": "Batch Job State Change",
                                         "Detail": json.dumps(detail), "Resources": [job.get("jobArn", job["jobId"])]}])

    def terminate(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
