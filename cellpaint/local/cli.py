"""`cellpaint local up` (serve until Ctrl-C) and `cellpaint local demo` (one pair, end to end)."""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the stack needs boto3 and moto: imported when a command runs, so `cellpaint train` works without them
    from cellpaint.local.server import LocalStack


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="local_cmd", required=True)
    up = sub.add_parser("up", help="run the stack on this machine until Ctrl-C")
    up.add_argument("--port", type=int, default=4566, help="port of the embedded AWS endpoint on 127.0.0.1 (0: any free port)")
    up.add_argument("--state", help="keep the bucket, notifications and logs in this folder across restarts")
    up.add_argument("--adapt-minutes", type=float, default=10, help="time budget of a lab's adapt job (photos under adapt/<lab>/) on this CPU")
    up.set_defaults(local_func=cmd_up)
    demo = sub.add_parser("demo", help="start the stack, upload one pair with the aws CLI, wait for its result")
    demo.add_argument("image", nargs="?", default="examples/cell.png")
    demo.add_argument("mask", nargs="?", default="examples/cell.mask.png")
    demo.add_argument("--out", default="out/demo", help="where inpainted.png and preview.png are downloaded")
    demo.add_argument("--port", type=int, default=0)
    demo.add_argument("--state")
    demo.add_argument("--timeout", type=float, default=600, help="seconds to wait for the notification")
    demo.set_defaults(local_func=cmd_demo)


def aws_cli() -> str:
    """The real aws CLI (awscli from PyPI), preferably the one installed beside this Python."""
    here = Path(sys.executable).parent / "aws"
    found = str(here) if here.exists() else shutil.which("aws")
    if not found:
        from cellpaint.errors import UsageError

        raise UsageError("the aws CLI is missing: pip install awscli (it is in requirements-dev.txt)")
    return found


def aws(stack: LocalStack, *args: str, show=True) -> None:
    cmd = [aws_cli(), "--endpoint-url", stack.endpoint, *args]
    if show:
        stack.console.say("$ aws", " ".join(["--endpoint-url", stack.endpoint, *args]))
    subprocess.run(cmd, env={**os.environ, **stack.env()}, check=True, stdout=subprocess.DEVNULL)


def _sigterm_is_ctrl_c() -> None:
    def raise_interrupt(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, raise_interrupt)
    # A shell starts background commands (`cmd &`) with SIGINT ignored, and Python then keeps it
    # ignored: the stack would not stop on SIGINT. Stop on it wherever we were started.
    signal.signal(signal.SIGINT, raise_interrupt)


def cmd_up(a) -> int:
    _sigterm_is_ctrl_c()
    from cellpaint.local.server import LocalStack

    stack = LocalStack(a.port, a.state, params={"AdaptMinutes": f"{a.adapt_minutes:g}"})
    try:
        stack.start()
        stack.banner(stack.out)
        print("ready: upload pairs under incoming/; Ctrl-C stops", file=stack.out, flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("stopping...", file=stack.out, flush=True)
    finally:
        stack.stop()
    print("stopped" + (f"; state kept in {stack.state}" if a.state else ""), flush=True)
    return 0


def cmd_demo(a) -> int:
    from cellpaint.errors import UsageError
    from shared.pipeline.s3 import INCOMING, result_key

    image, mask = Path(a.image), Path(a.mask)
    for f in (image, mask):
        if not f.is_file():
            raise UsageError(f"{f}: no such file")
    pair = image.name[: -len(image.suffix)]
    t0 = time.time()
    _sigterm_is_ctrl_c()
    from cellpaint.local.server import LocalStack

    with LocalStack(a.port, a.state) as stack:
        stack.banner(stack.out)
        incoming = f"s3://{stack.bucket}/{INCOMING}{pair}"
        sidecar = image.with_name(f"{pair}.json")
        if sidecar.is_file():  # the pair's options (steps, seed, label, samples): before the pair is complete
            aws(stack, "s3", "cp", str(sidecar), f"{incoming}.json")
        aws(stack, "s3", "cp", str(image), f"{incoming}{image.suffix.lower()}")
        aws(stack, "s3", "cp", str(mask), f"{incoming}.mask.png")
        msg = stack.receiver.wait_for(lambda m: m["body"].get("pair") == pair, a.timeout)
        if msg is None:
            print(f"cellpaint: no notification for {pair} within {a.timeout:.0f} s; logs in {stack.state / 'logs'}", file=sys.stderr)
            return 1
        if msg["body"].get("status") != "succeeded":
            print(f"cellpaint: {pair} failed: {msg['body'].get('reason')}", file=sys.stderr)
            return 1
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        paths = []
        for name in ("inpainted.png", "preview.png"):
            aws(stack, "s3", "cp", f"s3://{stack.bucket}/{result_key(pair, name)}", str(out / name), show=False)
            paths.append(out / name)
    print(f"done in {time.time() - t0:.1f} s:")
    for p in paths:
        print(p)
    return 0

