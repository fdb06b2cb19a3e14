"""`cellpaint local up` end to end: the stack runs as its own process, uploads go through the real
aws CLI, the jobs run the real `python -m gpu_job run` on CPU (tiny weights), and the webhook's
log is what a user's endpoint would have received."""
from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import boto3
import numpy as np
import pytest
from PIL import Image

from tests.conftest import ROOT, synthetic_cell

AWS = Path(sys.executable).parent / "aws"
pytestmark = pytest.mark.skipif(not AWS.exists(), reason="needs the aws CLI beside python (pip install awscli)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Local:
    """A running `cellpaint local up` and what it printed."""

    def __init__(self, state: Path, weights: Path, extra_env: dict | None = None):
        self.state, self.lines = state, []
        # CELLPAINT_LINGER_S=0: a job closes as soon as its queue is empty, so the jobs of these tests
        # follow their uploads one to one (tests/pipeline/test_runner.py tests the wait).
        env = {**os.environ, "CELLPAINT_WEIGHTS": str(weights), "PYTHONUNBUFFERED": "1", "CELLPAINT_LINGER_S": "0", **(extra_env or {})}
        self.proc = subprocess.Popen([sys.executable, "-m", "cellpaint", "local", "up", "--port", str(free_port()),
                                      "--state", str(state)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        threading.Thread(target=lambda: [self.lines.append(line.rstrip()) for line in self.proc.stdout], daemon=True).start()
        self.wait(lambda: any(line.startswith("ready:") for line in self.lines), 90, "the stack to start")
        self.endpoint = self.value("endpoint: ").split()[0]
        self.bucket = self.value("bucket: ")
        self.env = {**os.environ, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}
        self.s3 = boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                               aws_access_key_id="test", aws_secret_access_key="test")

    def value(self, prefix: str) -> str:
        return next(line[len(prefix):] for line in self.lines if line.startswith(prefix))

    def wait(self, cond, timeout: float, what: str):
        end = time.time() + timeout
        while time.time() < end:
            got = cond()
            if got:
                return got
            if self.proc.poll() is not None:
                break
            time.sleep(0.3)
        raise AssertionError(f"timed out waiting for {what}; output:\n" + "\n".join(self.lines))

    def cp(self, src: Path, key: str) -> None:
        subprocess.run([str(AWS), "--endpoint-url", self.endpoint, "s3", "cp", str(src), f"s3://{self.bucket}/{key}"],
                       env=self.env, check=True, capture_output=True)

    def notifications(self) -> list[dict]:
        path = self.state / "notifications.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def wait_notes(self, pair: str, n: int, timeout: float = 120) -> list[dict]:
        return self.wait(lambda: (lambda ms: ms if len(ms) >= n else None)(
            [m for m in self.notifications() if m["body"].get("pair") == pair]), timeout, f"{n} notification(s) for {pair}")

    def get(self, key: str) -> bytes:
        return self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def keys(self, prefix: str) -> list[str]:
        return sorted(o["Key"] for p in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
                      for o in p.get("Contents", []))

    def jobs_with(self, pair: str) -> list[str]:
        return [k for k in self.keys("jobs/") if k.endswith("/manifest.json")
                and any(p["pair"] == pair for p in json.loads(self.get(k))["pairs"])]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # Ctrl-C
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                raise AssertionError(f"the stack did not stop within 60 s; its last lines: {self.lines[-12:]}") from None
        return self.proc.returncode


@pytest.fixture
def pair_files(tmp_path):
    image = synthetic_cell(np.random.default_rng(3), 120, 124)
    mask = np.zeros(image.shape[:2], np.uint8)
    mask[40:75, 30:90] = 255
    Image.fromarray(image).save(tmp_path / "good.png")
    Image.fromarray(mask).save(tmp_path / "good.mask.png")
    png = (tmp_path / "good.png").read_bytes()
    (tmp_path / "bad.png").write_bytes(png[: len(png) // 2])  # truncated: a corrupt image
    Image.fromarray(mask).save(tmp_path / "bad.mask.png")
    return tmp_path, image, mask


def test_upload_to_notification(tmp_path, tiny_weights, pair_files):
    files, image, mask = pair_files
    newer = image[:, ::-1].copy()  # the pair's second upload: another image, the same mask
    Image.fromarray(newer).save(files / "good2.png")
    stack = Local(tmp_path / "state", tiny_weights)
    try:
        stack.cp(files / "good.png", "incoming/good.png")
        stack.cp(files / "good.mask.png", "incoming/good.mask.png")
        stack.wait(lambda: any(" job running " in line for line in stack.lines), 120, "the first job to start")

        # The same pair again (a new version of each half) while its first job runs, and a pair
        # with a corrupt image.
        for name, key in (("good2.png", "good.png"), ("good.mask.png", "good.mask.png"), ("bad.png", "bad.png"),
                          ("bad.mask.png", "bad.mask.png")):
            stack.cp(files / name, f"incoming/{key}")
        [bad] = stack.wait_notes("bad", 1)
        assert bad["body"]["status"] == "failed" and "bad.png" in bad["body"]["reason"], bad
        assert json.loads(stack.get("failed/bad/error.json"))["stage"] == "ingest"
        assert stack.jobs_with("bad") == []
        notes = stack.wait_notes("good", 2)  # each manifest's result notified
        # The re-upload gets its own manifest; it runs in a job of its own, or queued to the first
        # job when that one is still running (the runner): either way every submitted job finishes.
        count = lambda what: sum(f" job {what} " in line for line in stack.lines)  # noqa: E731
        stack.wait(lambda: count("finished") >= count("submitted"), 120, "the jobs to finish")
        time.sleep(3)  # anything still in flight would show up now
        assert len(stack.jobs_with("good")) == 2  # one for the upload, exactly one for the re-upload's two halves
        assert count("submitted") in (1, 2) and count("finished") == count("submitted")
        assert [m["body"]["status"] for m in notes] == ["succeeded", "succeeded"]

        # What stands is the newest upload's, whole: result.json names its versions, the image is its fill.
        result = json.loads(stack.get("results/good/result.json"))
        heads = {k: stack.s3.head_object(Bucket=stack.bucket, Key=f"incoming/{k}")["VersionId"] for k in ("good.png", "good.mask.png")}
        assert (result["inputs"]["image_version"], result["inputs"]["mask_version"]) == (heads["good.png"], heads["good.mask.png"])
        got = stack.s3.get_object(Bucket=stack.bucket, Key="results/good/inpainted.png")
        out = np.asarray(Image.open(io.BytesIO(got["Body"].read())).convert("RGB"))
        assert result["size"] == {"width": 124, "height": 120} and out.shape == image.shape
        assert np.array_equal(out[mask == 0], newer[mask == 0])  # only the masked pixels change, of the newer image
        assert got["VersionId"] == result["output_versions"]["inpainted"]
        assert "results/good/preview.png" in stack.keys("results/good/")
        assert f"versionId={result['output_versions']['inpainted']}" in notes[-1]["body"]["link"]  # the notice of what stands

        # The webhook received every notification the notify function published (one lease each).
        published = stack.keys("jobs/claims/notify/")
        assert len(stack.notifications()) == len(published) == 3
        assert {m["message_id"] for m in stack.notifications()} and all(m["body"]["bucket"] == stack.bucket
                                                                       for m in stack.notifications())
    finally:
        rc = stack.stop()
    assert rc == 0 and stack.lines[-1].startswith("stopped"), stack.lines[-5:]
    # --state: the bucket was mirrored; a restart restores it and triggers nothing.
    assert (tmp_path / "state" / "bucket" / "results" / "good" / "inpainted.png").is_file()
    again = Local(tmp_path / "state", tiny_weights)
    try:
        assert "results/good/result.json" in again.keys("results/")
        time.sleep(2)
        assert not any("uploaded" in line for line in again.lines)
    finally:
        assert again.stop() == 0


def test_job_that_dies_is_reported(tmp_path, tiny_weights, pair_files):
    """The Batch FAILED path: the job exits non-zero before writing anything (its weights are
    missing) -> EventBridge rule -> notify queue -> a failure notification for its pair."""
    files, _, _ = pair_files
    stack = Local(tmp_path / "state", tmp_path / "missing.safetensors")
    try:
        stack.cp(files / "good.png", "incoming/good.png")
        stack.cp(files / "good.mask.png", "incoming/good.mask.png")
        [note] = stack.wait_notes("good", 1)
        body = note["body"]
        assert body["status"] == "failed" and "exit code 1" in body["reason"], body
        assert body["job"]["batch_job_id"] and stack.keys("results/") == []
    finally:
        assert stack.stop() == 0
