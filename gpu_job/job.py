"""The Batch job: `python -m gpu_job run --manifest s3://BUCKET/jobs/<id>/manifest.json`.

For each pair of the manifest it reads the validated originals (by S3 version id), samples the
planned windows in shared batches, composites at full size and writes results/<pair>/
inpainted.png, preview.png, [uncertainty.png] and last result.json, the completion signal. A pair
that fails gets failed/<pair>/error.json and the others go on. A retried job skips pairs whose
result.json exists, so a spot reclaim never produces a second result.

One job does the work of one manifest: at start the job takes it (jobs/<id>/taken.json, a
conditional write naming its AWS_BATCH_JOB_ID, shared/leases.py). Another attempt of the same Batch
job may take it again; any other job for the same manifest (a SubmitJob that Batch applied but
answered with an error, and that was retried) logs that it is a duplicate and exits 0, writing nothing.
"""
from __future__ import annotations

import hashlib
import logging
import os
import time
from datetime import datetime, timezone

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from shared.images import InputError, load_image, load_mask, png_bytes
from shared.manifest import PairJob, read_manifest, window_from_dict
from shared.options import InpaintOptions, OptionError
from shared.preview import before_after, heatmap
from shared.leases import acquire
from shared.s3 import download, get_bytes, get_json, parse_uri, put_json, result_key, take_key, write_error, written_by
from shared.windows import reprepare

from .inpaint import Inpainter, InpaintResult
from .weights import default_weights

EXIT_BAD_MANIFEST = 2  # input error: the job definition's retry strategy exits, never retries
# Who this job is: Batch sets AWS_BATCH_JOB_ID in every job's container, the same for all its
# attempts. Run by hand (or by a test) without it, every run is the same "local" job.
LOCAL_JOB = "local"
log = logging.getLogger("gpu_job")
_RETRY = Config(retries={"max_attempts": 8, "mode": "adaptive"})  # throttling and 5xx


def fetch_weights(s3, model_uri: str | None) -> str:
    """MODEL_URI may be s3://... (downloaded with its .json beside it), a local path, or unset
    (the weights baked into the image)."""
    if not model_uri:
        return str(default_weights())
    return download(model_uri, s3=s3) if model_uri.startswith("s3://") else model_uri


def load_pair(s3, bucket: str, p: PairJob, inpainter: Inpainter):
    """The pair's validated originals, its options and its windows; InputError, OptionError or
    ValueError (an unknown label, no texture stage) fail this pair only."""
    name_i, name_m = f"s3://{bucket}/{p.image_key}", f"s3://{bucket}/{p.mask_key}"
    image = load_image(get_bytes(s3, bucket, p.image_key, p.image_version), name_i)
    mask = load_mask(get_bytes(s3, bucket, p.mask_key, p.mask_version), name_m)
    if image.shape[:2] != (p.height, p.width) or mask.shape != (p.height, p.width):
        raise InputError(name_i, f"size {image.shape[1]}x{image.shape[0]} differs from the manifest's {p.width}x{p.height}")
    # The upload's bounds were checked at ingest (shared/validate.py); the label is the weights' to check.
    opts = InpaintOptions.from_dict(p.options, local=True)
    inpainter.label_index(opts.label)
    if opts.texture:
        inpainter.texturer()  # no texture-stage weights: this pair fails with the reason, the others go on
    wins = [window_from_dict(w) for w in p.windows]
    if any(w.prep.image.shape[0] != inpainter.size for w in wins):
        wins = reprepare(image, mask, wins, inpainter.size)  # MODEL_URI of another resolution: the same plan
    return image, mask, opts, wins


def write_result(s3, bucket: str, p: PairJob, job_id: str, image, mask, opts: InpaintOptions, res: InpaintResult,
                 model: dict, device: str, timings: dict) -> None:
    s3.put_object(Bucket=bucket, Key=result_key(p.pair, "inpainted.png"), Body=png_bytes(res.image), ContentType="image/png")
    s3.put_object(Bucket=bucket, Key=result_key(p.pair, "preview.png"), Body=png_bytes(before_after(image, mask, res.image, res.std)),
                  ContentType="image/png")
    outputs = {"inpainted": result_key(p.pair, "inpainted.png"), "preview": result_key(p.pair, "preview.png")}
    if res.std is not None:
        s3.put_object(Bucket=bucket, Key=result_key(p.pair, "uncertainty.png"), Body=png_bytes(heatmap(res.std)), ContentType="image/png")
        outputs["uncertainty"] = result_key(p.pair, "uncertainty.png")
    put_json(s3, bucket, result_key(p.pair), {  # last: the completion signal
        "status": "succeeded", "pair": p.pair, "job_id": job_id,
        "inputs": {"image_key": p.image_key, "image_version": p.image_version, "mask_key": p.mask_key, "mask_version": p.mask_version},
        "outputs": outputs, "size": {"width": p.width, "height": p.height}, "windows": len(p.windows),
        "model": model, "sampler": opts.sampler, "steps": opts.steps, "seed": opts.seed, "label": opts.label, "samples": opts.samples,
        "combine": opts.combine, "texture": opts.texture, "normalize": opts.normalize, "guard": {"on": opts.guard, "fell_back": res.fell_back}, "ood": res.ood, "device": device, "timings": timings,
        "time": datetime.now(timezone.utc).isoformat()}, indent=2)


def run(manifest_uri: str, s3=None, inpainter: Inpainter | None = None, device: str = "auto",
        batch_job_id: str | None = None) -> dict:
    """Runs one manifest; returns {pair: "succeeded" | "failed" | "skipped" | "duplicate"}."""
    t_start = time.time()
    s3 = s3 or boto3.client("s3", config=_RETRY)
    bucket, key = parse_uri(manifest_uri)
    doc = get_json(s3, bucket, key)
    pairs = read_manifest(doc)
    job_id = doc["job_id"]
    me = batch_job_id or os.environ.get("AWS_BATCH_JOB_ID") or LOCAL_JOB
    if acquire(s3, bucket, take_key(key), {"manifest": key}, None, owner=me) is None:  # before the weights: a duplicate costs seconds
        owner = get_json(s3, bucket, take_key(key)).get("owner")
        log.warning("duplicate: %s is taken by Batch job %s; this job (%s) exits without writing anything", key, owner, me)
        return {p.pair: "duplicate" for p in pairs}
    weights = fetch_weights(s3, os.environ.get("MODEL_URI"))
    inpainter = inpainter or Inpainter(weights, device)
    rec = inpainter.record
    model = {"version": rec.get("code_version"), "sha256": rec.get("sha256") or hashlib.sha256(open(weights, "rb").read()).hexdigest(),
             "trained_steps": rec.get("training", {}).get("steps")}
    t_loaded = time.time()

    status, todo = {}, []
    for p in pairs:
        keys = {"image": p.image_key, "mask": p.mask_key}
        try:
            if written_by(s3, bucket, result_key(p.pair), job_id):
                status[p.pair] = "skipped"  # an earlier attempt of this job (a spot reclaim) finished it
                continue
            todo.append((p, *load_pair(s3, bucket, p, inpainter)))
        except (InputError, OptionError, ValueError, KeyError, ClientError) as exc:
            write_error(s3, bucket, p.pair, str(exc), stage="gpu", keys=keys, job_id=job_id)
            status[p.pair] = "failed"

    t_sample = time.time()
    # Pairs with the same sampler settings share batches inside inpaint_many.
    results = inpainter.inpaint_many([(t[1], t[2]) for t in todo], [t[3] for t in todo], [t[4] for t in todo]) if todo else []
    sample_s = time.time() - t_sample
    for (p, image, mask, opts, _), res in zip(todo, results):
        timings = {"model_load_s": round(t_loaded - t_start, 3), "batch_sample_s": round(sample_s, 3),
                   "batch_pairs": len(todo), "total_s": round(time.time() - t_start, 3)}
        try:
            write_result(s3, bucket, p, job_id, image, mask, opts, res, model, str(inpainter.device), timings)
            status[p.pair] = "succeeded"
        except ClientError as exc:
            write_error(s3, bucket, p.pair, f"could not write results: {exc}", stage="gpu", keys={"image": p.image_key, "mask": p.mask_key},
                        job_id=job_id)
            status[p.pair] = "failed"
    return status
