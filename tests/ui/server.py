"""`cellpaint ui` started as a user starts it, on a free port, for the tests that need the server."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import ROOT


def other_address() -> str | None:
    """A non-loopback IPv4 address of this machine (its default route's source), or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # a UDP connect sends nothing: it only picks the source address
            addr = s.getsockname()[0]
        except OSError:
            return None
    return None if addr.startswith("127.") or addr == "0.0.0.0" else addr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Ui:
    """A running `cellpaint ui --port PORT ARGS...`; what it prints goes to `log`."""

    def __init__(self, log: Path, *args: str, env: dict | None = None, timeout: float = 90):
        self.port, self.log = free_port(), Path(log)
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, **(env or {}), "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "cellpaint", "ui", "--port", str(self.port), *args], cwd=ROOT,
                                         env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.time() + timeout
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2).read()
                return
            except OSError:
                if self.proc.poll() is not None or time.time() > deadline:
                    self.stop()
                    pytest.fail(f"cellpaint ui did not start (exit {self.proc.poll()}):\n{self.output()[-3000:]}")
                time.sleep(0.5)

    def output(self) -> str:
        return self.log.read_text()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
