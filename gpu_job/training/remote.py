"""Training as a Batch job: data, initial weights and the run folder may live in S3.

`--data s3://B/training/train.npz` (a pack from pack.py; one file, so one GET) and `--init`
are downloaded once. `--out s3://B/training/runs/NAME` trains into a local folder that mirrors
that prefix: it is filled from S3 at the start (so a Spot reclaim resumes from the last
checkpoint) and every checkpoint's files are uploaded as they are written. boto3 is imported here
only, so training on a plain GPU box needs no AWS libraries.
"""
from __future__ import annotations

import hashlib
from pathlib import Path


def is_s3(uri: str | None) -> bool:
    return bool(uri) and uri.startswith("s3://")


def _client():
    import boto3

    return boto3.client("s3")


def fetch(uri: str, folder: str | Path = ".cache/s3") -> str:
    """A local copy of s3://BUCKET/KEY (and of KEY's .json beside it for .safetensors weights)."""
    from shared.pipeline.s3 import download

    return download(uri, str(folder))


def local_run_dir(uri: str) -> Path:
    """Where an s3:// run folder is mirrored on this machine."""
    return Path("runs") / ("s3-" + hashlib.sha1(uri.encode()).hexdigest()[:10])


def download_run(uri: str, folder: Path) -> int:
    """Copy every object under the run prefix into `folder` (resume). Returns how many."""
    from shared.pipeline.s3 import parse_uri

    bucket, prefix = parse_uri(uri.rstrip("/"))
    s3 = _client()
    folder.mkdir(parents=True, exist_ok=True)
    n = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/"):
        for obj in page.get("Contents", []):
            name = obj["Key"][len(prefix) + 1 :]
            if name and "/" not in name:
                s3.download_file(bucket, obj["Key"], str(folder / name))
                n += 1
    return n


def upload_run(folder: Path, uri: str, names: list[str]) -> None:
    """Upload these files of the run folder; ckpt.pt last, so a resume never sees a checkpoint
    newer than the weights and log beside it."""
    from shared.pipeline.s3 import parse_uri

    bucket, prefix = parse_uri(uri.rstrip("/"))
    s3 = _client()
    for name in sorted(names, key=lambda n: n == "ckpt.pt"):
        path = folder / name
        if path.exists():
            s3.upload_file(str(path), bucket, f"{prefix}/{name}")
