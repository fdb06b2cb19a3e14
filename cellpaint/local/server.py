"""The running local stack: moto + resources + webhook + runner threads, started and stopped as one."""
from __future__ import annotations

import shutil
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

from cellpaint.local.runner import BatchRunner, Console, ScheduleSource, SqsEventSource
from cellpaint.local.stack import client_env, create_stack, start_moto, use_embedded_aws
from cellpaint.local.state import BucketMirror
from cellpaint.local.template import samconfig
from cellpaint.local.webhook import Receiver

SNAPSHOT_SECONDS = 5


class LocalStack:
    def __init__(self, port: int = 4566, state: str | Path | None = None, console=None, params: dict | None = None):
        self.port, self.params = port, params or {}  # template parameters over the defaults (AdaptMinutes, say)
        self.keep = state is not None
        self.state = Path(state) if state else Path(tempfile.mkdtemp(prefix="cellpaint-local-"))
        self.out = console or sys.stdout  # the terminal: sys.stdout is the functions' log while running
        self.console = Console(self.out)
        self.stop_event = threading.Event()
        self.threads: list[threading.Thread] = []
        self.server = self.receiver = self.stack = self.mirror = self.batch = self.lambda_log = None

    def start(self) -> "LocalStack":
        (self.state / "logs").mkdir(parents=True, exist_ok=True)
        self.server, self.endpoint = start_moto(self.port)
        self.region = samconfig()["region"]
        use_embedded_aws(self.endpoint, self.region)  # the handlers' and the jobs' boto3 clients
        self.receiver = Receiver(self.state / "notifications.jsonl", self.endpoint, on_message=self.show).start()
        self.mirror = BucketMirror(self.state) if self.keep else None
        self.stack = create_stack(self.endpoint, self.receiver.url, restore=self.mirror.restore if self.mirror else None, params=self.params)
        self.receiver.expect_topic(self.stack.topic_arn)
        # The functions' logs and metrics (Powertools writes both to stdout) go where CloudWatch would have them.
        self.saved_stdout, self.lambda_log = sys.stdout, (self.state / "logs" / "lambda.log").open("a", buffering=1)
        sys.stdout = self.lambda_log
        # Powertools warns on stderr when an invocation records no metric (an S3 test event, say); in Lambda that
        # lands in the function's log, and so it does here.
        self.saved_showwarning = warnings.showwarning
        warnings.showwarning = lambda message, category, filename, lineno, file=None, line=None: self.lambda_log.write(
            warnings.formatwarning(message, category, filename, lineno, line))
        self.sources = [SqsEventSource(self.stack, spec, src, self.console, self.stop_event)
                        for spec in self.stack.functions for src in spec.sqs_sources]
        self.sources += [ScheduleSource(self.stack, spec, seconds, self.console, self.stop_event)
                         for spec in self.stack.functions for seconds in spec.schedules]
        self.batch = BatchRunner(self.stack, self.console, self.stop_event, self.state / "logs")
        self.threads = [*self.sources, self.batch]
        if self.mirror:
            self.threads.append(threading.Thread(target=self._snapshots, name="snapshot", daemon=True))
        for t in self.threads:
            t.start()
        return self

    @property
    def bucket(self) -> str:
        return self.stack.bucket

    def env(self) -> dict:
        return client_env(self.endpoint, self.region)

    def upload_example(self) -> str:
        return self.stack.output("UploadExample").replace("aws s3 ", f"aws --endpoint-url {self.endpoint} s3 ")

    def banner(self, out) -> None:
        e = self.env()
        print(f"endpoint: {self.endpoint}  (S3, SQS, SNS, Batch, EventBridge: moto)", file=out)
        print(f"bucket: {self.bucket}", file=out)
        print(f"webhook: {self.receiver.url}  (subscribed to {self.stack.topic_arn})", file=out)
        print(f"state: {self.state}" + ("" if self.keep else "  (deleted at exit; use --state DIR to keep it)"), file=out)
        print(f"export AWS_ACCESS_KEY_ID={e['AWS_ACCESS_KEY_ID']} AWS_SECRET_ACCESS_KEY={e['AWS_SECRET_ACCESS_KEY']} "
              f"AWS_DEFAULT_REGION={e['AWS_DEFAULT_REGION']}", file=out)
        print(self.upload_example(), file=out)
        out.flush()

    def show(self, msg: dict) -> None:
        b = msg["body"]
        what = f"[{b.get('status')}] {b.get('pair')}: {msg.get('subject')}"
        if b.get("kind") == "model":  # a lab's own model: the reason says it all
            what = f"[{b.get('status')}] {b.get('reason')}"
        elif b.get("status") == "succeeded":
            what += f" -> s3://{b.get('bucket')}/{(b.get('keys') or {}).get('inpainted')}"
        else:
            what += f" -> {b.get('reason')}"
        self.console.say("notification received", what)

    def _snapshots(self) -> None:
        s3 = self.stack.client("s3")
        wait = SNAPSHOT_SECONDS
        while not self.stop_event.wait(wait):
            t0 = time.time()
            try:
                self.mirror.save(s3, self.bucket)
            except Exception as exc:
                self.console.say("snapshot error", repr(exc))
            # A snapshot lists the whole bucket: on a bucket of 10,000 pairs' objects, every 5 s
            # was most of the machine. At most a tenth of the time goes to it.
            wait = max(SNAPSHOT_SECONDS, 9 * (time.time() - t0))

    def stop(self) -> None:
        self.stop_event.set()
        if self.batch:
            self.batch.terminate()
        for t in self.threads:
            t.finish() if isinstance(t, SqsEventSource) else t.join(timeout=30)
        if self.lambda_log:
            sys.stdout, warnings.showwarning = self.saved_stdout, self.saved_showwarning
            self.lambda_log.close()
        if self.mirror and self.stack:
            self.mirror.save(self.stack.client("s3"), self.bucket)
        if self.receiver:
            self.receiver.stop()
        if self.server:
            self.server.stop()
        if not self.keep:
            shutil.rmtree(self.state, ignore_errors=True)

    def __enter__(self) -> "LocalStack":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()
