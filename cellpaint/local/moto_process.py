"""moto's server in a process of its own, so that it has a CPU to itself.

In the process that also runs the functions and the runner, moto's request handling (its XML,
its listings) and the functions shared one interpreter lock: on 2 cores, a 10,000-pair folder ran
on one. Run as `python -m cellpaint.local.moto_process PORT`: it prints its endpoint on one line
and serves until its standard input closes, so it also ends when the process that started it dies.
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys

import requests


def serve(port: int) -> None:
    from moto.moto_server.threaded_moto_server import ThreadedMotoServer

    from cellpaint.local import moto_speed

    s3_events_carry_version_ids()
    moto_speed.apply()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{server.get_host_and_port()[1]}"
    # Batch's submissions are recorded, not run: the runner runs each job's command (see runner.py).
    requests.post(f"{endpoint}/moto-api/config", json={"batch": {"use_docker": False}}, timeout=10).raise_for_status()
    print(endpoint, flush=True)
    os.dup2(2, 1)  # nobody reads the pipe after that line: anything moto prints later goes to stderr, not a pipe that fills
    sys.stdin.read()  # until the parent closes it, or dies
    server.stop()


def s3_events_carry_version_ids() -> None:
    """S3 puts `versionId` in the event of a write to a versioned bucket; moto 5.2 leaves it out,
    and the handlers' exactly-once keys use it. Add it, as S3 does."""
    from moto.s3 import notifications

    if getattr(notifications._get_s3_event, "cellpaint", False):
        return
    original = notifications._get_s3_event

    def with_version(event_name, bucket, key, notification_id):
        event = original(event_name, bucket, key, notification_id)
        if bucket.is_versioned and getattr(key, "version_id", None):
            event["Records"][0]["s3"]["object"]["versionId"] = str(key.version_id)
        return event

    with_version.cellpaint = True
    notifications._get_s3_event = with_version


class MotoProcess:
    """The running server: `endpoint`, and `stop()`."""

    def __init__(self, port: int):
        # A session of its own: Ctrl-C at the terminal stops `cellpaint local up`, which then saves
        # its state through this server before it stops it, so the server must not stop first.
        self.proc = subprocess.Popen([sys.executable, "-m", "cellpaint.local.moto_process", str(port)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True)
        self.endpoint = self.proc.stdout.readline().strip()
        if not self.endpoint.startswith("http://"):
            self.stop()
            raise RuntimeError(f"moto did not start on port {port} (exit status {self.proc.returncode}); "
                               "is the port in use? `cellpaint local up --port N` takes another")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


if __name__ == "__main__":
    serve(int(sys.argv[1]))
