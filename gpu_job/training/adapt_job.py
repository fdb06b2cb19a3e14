"""`python -m gpu_job adapt --manifest s3://BUCKET/jobs/adapt/<lab>/<set>/manifest.json`: a lab's
adapt job in the stack (shared/pipeline/adapt.py submits it). It reads exactly the photo versions
its manifest lists, runs `cellpaint adapt` on them (training.adapt), and writes models/<lab>/
(weights, then their record) and, last, models/<lab>/adapted.json, which the notify function turns
into "a model for <lab> is ready". Photos that cannot make a model (too few, no cells) end in
failed/adapt/<lab>/error.json with the reason. One job per manifest: it takes the manifest first,
as the restoring job does, so a SubmitJob retried after a lost answer trains once.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import boto3

from shared.errors import InputError
from shared.pipeline.adapt import model_key
from shared.pipeline.leases import acquire
from shared.pipeline.records import ModelReady
from shared.pipeline.s3 import download, get_bytes, get_json, is_not_found, parse_uri, put_json, take_key, write_error

from .adapt import AdaptConfig, adapt

LOCAL_JOB = "local"


def newer_model(s3, bucket: str, lab: str, photos_as_of: str) -> bool:
    """True if models/<lab>/ holds a model made from photos newer than these."""
    from botocore.exceptions import ClientError

    try:
        rec = get_json(s3, bucket, model_key(lab, "weights.json"))
    except ClientError as exc:
        if is_not_found(exc):
            return False
        raise
    return (rec.get("adapt") or {}).get("photos_as_of", "") > photos_as_of


def run_adapt_job(manifest_uri: str, minutes: float, device: str = "auto", s3=None, **overrides) -> str:
    """ready | not better | superseded | failed | duplicate. `overrides`: AdaptConfig fields (tests)."""
    s3 = s3 or boto3.client("s3")
    bucket, key = parse_uri(manifest_uri)
    doc = get_json(s3, bucket, key)
    lab, job_id = doc["lab"], os.environ.get("AWS_BATCH_JOB_ID") or LOCAL_JOB
    if acquire(s3, bucket, take_key(key), {"manifest": key}, None, owner=job_id) is None:
        return "duplicate"
    work = Path(tempfile.mkdtemp(prefix="cellpaint-adapt-job-"))
    try:
        for p in doc["photos"]:  # exactly the versions the set was made of
            dest = work / "photos" / p["key"]
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(get_bytes(s3, bucket, p["key"], p.get("version")))
        base = download(os.environ["MODEL_URI"], str(work), s3=s3) if os.environ.get("MODEL_URI") else None
        out = work / "out" / "weights.safetensors"
        try:
            res = adapt(AdaptConfig(**{"images": [str(work / "photos")], "out": str(out), "base": base, "minutes": minutes,
                                       "device": device, **overrides}))
        except (InputError, ValueError) as exc:
            # The reason names the photos as the lab knows them, in the bucket, not this job's copies.
            reason = str(exc).replace(f"{work / 'photos'}/", f"s3://{bucket}/").replace(str(work / "photos"), f"s3://{bucket}/adapt/{lab}/")
            write_error(s3, bucket, f"adapt/{lab}", reason, stage="adapt", keys={"photos": f"adapt/{lab}/", "manifest": key}, job_id=job_id)
            return "failed"
        scores = res.record.get("adapt", {}).get("held_back_psnr", {})
        gain = round(scores["adapted"]["all"] - scores["base"]["all"], 2) if scores else None
        status, model = ("ready" if res.written else "not better"), None
        if res.written and newer_model(s3, bucket, lab, doc["photos_as_of"]):
            status = "superseded"
        elif res.written:
            rec = json.loads(out.with_suffix(".json").read_text())
            rec["adapt"].update(photos_as_of=doc["photos_as_of"], manifest=key, job_id=job_id)
            put = s3.put_object(Bucket=bucket, Key=model_key(lab), Body=out.read_bytes())
            put_json(s3, bucket, model_key(lab, "weights.json"), rec)  # after the weights: ingest names the weights' version
            model = {"key": model_key(lab), "version": put.get("VersionId"), "sha256": rec["sha256"]}
        put_json(s3, bucket, model_key(lab, "adapted.json"), ModelReady(
            lab, status, job_id, gain, scores, res.record.get("adapt", {}).get("images", 0), res.record.get("adapt", {}).get("held_back", 0),
            model, datetime.now(timezone.utc).isoformat()).to_json())
        return status
    finally:
        shutil.rmtree(work, ignore_errors=True)
