#!/usr/bin/env python
"""Benchmarks of `cellpaint local` (the whole stack on this machine; see docs/local.md):

- latency: upload (the real aws CLI, image then mask) -> the webhook has the notification, for
  one pair at a time; the median of --runs runs;
- throughput: --pairs pairs uploaded at once (`aws s3 cp --recursive`) -> all their notifications;
  pairs per minute, SubmitJob calls, manifests, folder digests and `cellpaint status`'s last line;
- the same pairs through `cellpaint inpaint --pairs` (one process, no AWS), for the ratio.

`--fill harmonic` tests the plumbing at scale: the job's model is swapped for the harmonic fill
(CELLPAINT_TEST_FILL, tests only), no latency runs and no CLI, and it checks that every pair was
answered exactly once, e.g. `--runs 0 --pairs 10000 --size 64 64 --fill harmonic --timeout 7200`.

Prints a markdown table and the machine. Run it with nothing else using the CPU:
    .venv/bin/python scripts/bench_local.py [--weights W] [--runs 5] [--pairs 50] [--size 363 360]
"""
from __future__ import annotations

import argparse
import collections
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def cell(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """A cell-like image (the tests' synthetic cell) and a box mask."""
    from tests.conftest import synthetic_cell

    img = synthetic_cell(rng, h, w)
    mask = np.zeros((h, w), np.uint8)
    y, x = int(rng.integers(10, h // 2)), int(rng.integers(10, w // 2))
    mask[y:y + h // 4, x:x + w // 3] = 255
    return img, mask


def write_pair(folder: Path, name: str, rng, h: int, w: int) -> None:
    img, mask = cell(rng, h, w)
    Image.fromarray(img).save(folder / f"{name}.png")
    Image.fromarray(mask).save(folder / f"{name}.mask.png")


def machine() -> str:
    info = Path("/proc/cpuinfo")
    model = next((x.split(":", 1)[1].strip() for x in info.read_text().splitlines() if x.startswith("model name")),
                 platform.processor()) if info.exists() else platform.processor()
    mem = f", {int(Path('/proc/meminfo').read_text().split()[1]) / 2**20:.0f} GiB RAM" if Path("/proc/meminfo").exists() else ""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{model}, {cpus} CPUs{mem}, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def main() -> int:
    """One straight run, top to bottom (stack up, latency runs, the folder, the CLI on the same
    pairs, the table): its steps share the stack and the timings, so it stays one function."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", help="model weights (default: $CELLPAINT_WEIGHTS or the shipped ones)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--pairs", type=int, default=50)
    ap.add_argument("--size", type=int, nargs=2, default=[120, 124], metavar=("H", "W"), help="image size of every pair")
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--fill", choices=("model", "harmonic"), default="model", help="harmonic: the plumbing test (see above)")
    ap.add_argument("--state", help="as `cellpaint local up --state`: keep the stack's state and logs there (its snapshots "
                                    "of the bucket cost time; by default, as `local up`, a temporary folder and no snapshots)")
    a = ap.parse_args()
    if a.fill == "harmonic":
        os.environ["CELLPAINT_TEST_FILL"] = "harmonic"
    if a.weights:
        os.environ["CELLPAINT_WEIGHTS"] = str(Path(a.weights).resolve())
    from cellpaint.local.cli import aws_cli
    from cellpaint.local.server import LocalStack
    from gpu_job.inpainter.weights import default_weights

    weights = default_weights()
    tmp = Path(tempfile.mkdtemp(prefix="cellpaint-bench-"))
    rng = np.random.default_rng(0)
    h, w = a.size
    quiet = open(os.devnull, "w")
    with LocalStack(0, a.state, console=quiet) as stack:
        env = {**os.environ, **stack.env()}

        def aws(*args: str) -> None:
            subprocess.run([aws_cli(), "--endpoint-url", stack.endpoint, *args], env=env, check=True, stdout=subprocess.DEVNULL)

        def wait(pairs: set[str]) -> float:
            got, seen, deadline = {}, 0, time.time() + a.timeout
            while len(got) < len(pairs) and time.time() < deadline:
                time.sleep(0.5)
                new = list(stack.receiver.messages[seen:])  # only what came since the last look: 10,000 pairs' worth each time was n² work
                seen += len(new)
                got.update({m["body"]["pair"]: m["body"].get("status") for m in new if m["body"].get("pair") in pairs})
            missing = [p for p in sorted(pairs) if got.get(p) != "succeeded"]
            if missing:
                raise SystemExit(f"bench: no success notification for {missing[:5]}; logs in {stack.state / 'logs'} "
                                 f"(kept with --state)")
            return time.time()

        latencies = []
        for i in range(a.runs):
            d = tmp / f"lat{i}"
            d.mkdir()
            write_pair(d, "cell", rng, h, w)
            t0 = time.time()
            aws("s3", "cp", str(d / "cell.png"), f"s3://{stack.bucket}/incoming/lat{i}/cell.png")
            aws("s3", "cp", str(d / "cell.mask.png"), f"s3://{stack.bucket}/incoming/lat{i}/cell.mask.png")
            latencies.append(wait({f"lat{i}/cell"}) - t0)
            print(f"latency run {i + 1}: {latencies[-1]:.1f} s", file=sys.stderr)

        d = tmp / "many"
        d.mkdir()
        for i in range(a.pairs):
            write_pair(d, f"p{i:03d}", rng, h, w)
        t0 = time.time()
        aws("s3", "cp", str(d), f"s3://{stack.bucket}/incoming/many/", "--recursive")
        t_up = time.time()
        t_end = wait({f"many/p{i:03d}" for i in range(a.pairs)})
        answers = collections.Counter(m["body"]["pair"] for m in list(stack.receiver.messages) if m["body"].get("kind") == "pair"
                                      and str(m["body"].get("pair")).startswith("many/"))
        once = sum(n == 1 for n in answers.values())
        # The grouping, from the manifests ingest wrote (jobs/<id>/manifest.json), in submission order.
        s3 = stack.stack.client("s3")
        manifests = sorted(o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=stack.bucket, Prefix="jobs/")
                           for o in page.get("Contents", []) if o["Key"].endswith("/manifest.json"))
        docs = {k: json.loads(s3.get_object(Bucket=stack.bucket, Key=k)["Body"].read()) for k in manifests}
        per_manifest = [n for n in (sum(p["pair"].startswith("many/") for p in doc["pairs"]) for doc in docs.values()) if n]
        items = sum(len(doc.get("items") or [0]) for doc in docs.values() if any(p["pair"].startswith("many/") for p in doc["pairs"]))
        # SubmitJob calls: the jobs whose own manifest holds the folder's pairs (the rest were queued to them)
        batch = stack.stack.client("batch")
        listed = batch.list_jobs(jobQueue=stack.stack.job_queue, filters=[{"name": "JOB_NAME", "values": ["cellpaint-*"]}])["jobSummaryList"]
        ids = [j["jobId"] for j in listed if ":" not in j["jobId"]]  # array children are their parent's SubmitJob
        described = [d for i in range(0, len(ids), 100) for d in batch.describe_jobs(jobs=ids[i:i + 100])["jobs"]]
        submitted = [d["jobId"] for d in described if any(p["pair"].startswith("many/") for p in docs.get(
            d.get("parameters", {}).get("manifest", "").split(f"{stack.bucket}/", 1)[-1], {}).get("pairs", []))]
        time.sleep(70)  # a folder digest goes out within a minute of the folder's last answer
        digests = [m for m in list(stack.receiver.messages) if m["body"].get("kind") == "folder" and "many" in json.dumps(m["body"])]
        status = subprocess.run([sys.executable, "-m", "cellpaint", "status", f"s3://{stack.bucket}/incoming/many/"], env=env,
                                capture_output=True, text=True)
        status_line = (status.stdout.strip().splitlines() or [""])[-1]
        print(f"throughput: {a.pairs} pairs in {t_end - t0:.1f} s (uploaded in {t_up - t0:.1f} s), {len(submitted)} jobs, manifests {per_manifest}, "
              f"status: {status_line} (exit {status.returncode})",
              file=sys.stderr)
    t1 = time.time()
    if a.fill == "model":
        subprocess.run([sys.executable, "-m", "cellpaint", "inpaint", "--pairs", str(d), "-o", str(tmp / "cli-out")], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cli_s = time.time() - t1
    print(f"cellpaint inpaint --pairs: {cli_s:.1f} s", file=sys.stderr)

    fill = f"weights {weights}" if a.fill == "model" else "the harmonic fill in the model's place (plumbing test)"
    print(f"\n`cellpaint local` benchmark, {datetime.date.today()}: {fill}, pairs of {w}x{h} px\n")
    print("| measure | value |")
    print("| --- | --- |")
    if latencies:
        print(f"| latency, upload -> notification, 1 pair (median of {a.runs}) | {statistics.median(latencies):.1f} s "
              f"(min {min(latencies):.1f}, max {max(latencies):.1f}) |")
    print(f"| throughput, {a.pairs} pairs uploaded at once | {a.pairs / (t_end - t0) * 60:.1f} pairs/min "
          f"({t_end - t0:.1f} s from the first upload to the last notification; `aws s3 cp --recursive` took {t_up - t0:.1f} s) |")
    print(f"| Batch jobs (SubmitJob calls) for those {a.pairs} pairs | {len(submitted)}; their manifests (one per ingest "
          f"invocation, pairs each): {len(per_manifest)} ({', '.join(map(str, per_manifest[:12]))}{', ...' * (len(per_manifest) > 12)}); "
          f"{items} work item{'s' * (items != 1)} |")
    if a.fill == "model":
        print(f"| the same pairs, `cellpaint inpaint --pairs` | {cli_s:.1f} s: the stack ran at {cli_s / (t_end - t0):.2f} of its speed |")
    print(f"| pairs answered exactly once (one `pair` notification each) | {once} of {a.pairs} |")
    print(f"| folder digests | {len(digests)} |")
    print(f"| `cellpaint status` | {status_line} (exit {status.returncode}) |")
    window = next(s["window"] for f in stack.stack.functions if f.logical_id == "IngestFunction" for s in f.sqs_sources)
    print(f"\nmachine: {machine()}; jobs run one at a time on CPU; the ingest queue's batching window is {window} s "
          "(template.yaml)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
