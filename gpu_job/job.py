"""The Batch job: `python -m gpu_job run --manifest s3://BUCKET/jobs/<id>/manifest.json`.

For each pair of the manifest it reads the validated originals (by S3 version id), samples the
prepared windows in shared batches, composites at full size and writes results/<pair>/
inpainted.png, preview.png, [uncertainty.png] and last result.json, the completion signal. A pair
that fails gets failed/<pair>/error.json and the others go on. A retried job skips pairs whose
result.json exists, so a spot reclaim never produces a second result.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from datetime import datetime, timezone

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from shared.images import InputError, load_image, load_mask, png_bytes
from shared.manifest import read_manifest, window_from_dict
from shared.preview import before_after, heatmap
from shared.windows import plan_windows, prepare

from .inpaint import Inpainter, InpaintOptions
from .remote import parse_s3
from .weights import default_weights

EXIT_BAD_MANIFEST = 2  # input error: the job definition's retry strategy exits, never retries
_RETRY = Config(retries={"max_attempts": 8, "mode": "adaptive"})  # throttling and 5xx


def fetch_weights(s3, model_uri: str | None) -> str:
    """MODEL_URI may be s3://... (downloaded with its .json beside it), a local path, or unset
    (the weights baked into the image)."""
    if not model_uri:
        return str(default_weights())
    if not model_uri.startswith("s3://"):
        return model_uri
    bucket, key = parse_s3(model_uri)
    folder = tempfile.mkdtemp(prefix="cellpaint-weights-")
    local = os.path.join(folder, os.path.basename(key))
    s3.download_file(bucket, key, local)
    s3.download_file(bucket, key.rsplit(".", 1)[0] + ".json", local.rsplit(".", 1)[0] + ".json")
    return local


def _get(s3, bucket: str, key: str, version: str | None) -> bytes:
    kw = {"VersionId": version} if version else {}
    return s3.get_object(Bucket=bucket, Key=key, **kw)["Body"].read()


def done_by_this_job(s3, bucket: str, pair: str, job_id: str) -> bool:
    """True if an earlier attempt of *this* job finished the pair. A result left by an older job
    (for an older upload of the same pair) does not count: a corrected mask is restored again."""
    try:
        doc = json.loads(_get(s3, bucket, f"results/{pair}/result.json", None))
    except ClientError as exc:
        if exc.response["Error"]["Code"] in ("404", "NoSuchKey", "NotFound"):
            return False
        raise
    return doc.get("job_id") == job_id


def _put_json(s3, bucket: str, key: str, doc: dict) -> None:
    s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(doc, indent=2).encode(), ContentType="application/json")


def write_error(s3, bucket: str, pair, job_id: str, reason: str) -> None:
    _put_json(s3, bucket, f"failed/{pair.pair}/error.json", {
        "status": "failed", "pair": pair.pair, "job_id": job_id, "stage": "gpu", "reason": reason,
        "keys": {"image": pair.image_key, "mask": pair.mask_key}, "time": datetime.now(timezone.utc).isoformat()})


def run(manifest_uri: str, s3=None, inpainter: Inpainter | None = None, device: str = "auto") -> dict:
    """Runs one manifest; returns {pair: "succeeded" | "failed" | "skipped"}."""
    t_start = time.time()
    s3 = s3 or boto3.client("s3", config=_RETRY)
    bucket, key = parse_s3(manifest_uri)
    doc = json.loads(_get(s3, bucket, key, None))
    pairs = read_manifest(doc)
    job_id = doc["job_id"]
    weights = fetch_weights(s3, os.environ.get("MODEL_URI"))
    inpainter = inpainter or Inpainter(weights, device)
    model_sha = inpainter.record.get("sha256") or hashlib.sha256(open(weights, "rb").read()).hexdigest()
    t_loaded = time.time()

    status, todo = {}, []
    for p in pairs:
        try:
            if done_by_this_job(s3, bucket, p.pair, job_id):
                status[p.pair] = "skipped"  # an earlier attempt of this job (a spot reclaim) finished it
                continue
            name_i, name_m = f"s3://{bucket}/{p.image_key}", f"s3://{bucket}/{p.mask_key}"
            image = load_image(_get(s3, bucket, p.image_key, p.image_version), name_i)
            mask = load_mask(_get(s3, bucket, p.mask_key, p.mask_version), name_m)
            if image.shape[:2] != (p.height, p.width) or mask.shape != (p.height, p.width):
                raise InputError(name_i, f"size {image.shape[1]}x{image.shape[0]} differs from the manifest's {p.width}x{p.height}")
            o = p.options
            opts = InpaintOptions(steps=int(o.get("steps", InpaintOptions.steps)), sampler=o.get("sampler", InpaintOptions.sampler),
                                  seed=int(o.get("seed", 0)), label=o.get("label"), samples=int(o.get("samples", InpaintOptions.samples)),
                                  combine=o.get("combine", InpaintOptions.combine), texture=bool(o.get("texture", InpaintOptions.texture)))
            inpainter.label_index(opts.label)
            if opts.texture:
                inpainter.texturer()  # no texture-stage weights: this pair fails with the reason, the others go on
            wins = [window_from_dict(w) for w in p.windows]
            if [w.box for w in wins] != plan_windows(mask, opts.window)[0]:
                raise InputError(name_m, "the manifest's windows do not match this mask")
            if any(w.prep.image.shape[0] != inpainter.size for w in wins):
                wins = prepare(image, mask, opts.window, inpainter.size)  # MODEL_URI of another resolution
            todo.append((p, image, mask, opts, wins))
        except (InputError, ValueError, KeyError, ClientError) as exc:
            write_error(s3, bucket, p, job_id, str(exc))
            status[p.pair] = "failed"

    t_sample = time.time()
    # Pairs with the same sampler settings share batches inside inpaint_many.
    results = inpainter.inpaint_many([(t[1], t[2]) for t in todo], [t[3] for t in todo], [t[4] for t in todo]) if todo else []
    sample_s = time.time() - t_sample
    for (p, image, mask, opts, _), res in zip(todo, results):
        try:
            base = f"results/{p.pair}"
            s3.put_object(Bucket=bucket, Key=f"{base}/inpainted.png", Body=png_bytes(res.image), ContentType="image/png")
            s3.put_object(Bucket=bucket, Key=f"{base}/preview.png", Body=png_bytes(before_after(image, mask, res.image, res.std)), ContentType="image/png")
            outputs = {"inpainted": f"{base}/inpainted.png", "preview": f"{base}/preview.png"}
            if res.std is not None:
                s3.put_object(Bucket=bucket, Key=f"{base}/uncertainty.png", Body=png_bytes(heatmap(res.std)), ContentType="image/png")
                outputs["uncertainty"] = f"{base}/uncertainty.png"
            _put_json(s3, bucket, f"{base}/result.json", {  # last: the completion signal
                "status": "succeeded", "pair": p.pair, "job_id": job_id,
                "inputs": {"image_key": p.image_key, "image_version": p.image_version,
                           "mask_key": p.mask_key, "mask_version": p.mask_version},
                "outputs": outputs, "size": {"width": p.width, "height": p.height}, "windows": len(p.windows),
                "model": {"version": inpainter.record.get("code_version"), "sha256": model_sha,
                          "trained_steps": inpainter.record.get("training", {}).get("steps")},
                "sampler": opts.sampler, "steps": opts.steps, "seed": opts.seed, "label": opts.label, "samples": opts.samples, "combine": opts.combine,
                "texture": opts.texture,
                "device": str(inpainter.device),
                "timings": {"model_load_s": round(t_loaded - t_start, 3), "batch_sample_s": round(sample_s, 3),
                            "batch_pairs": len(todo), "total_s": round(time.time() - t_start, 3)},
                "time": datetime.now(timezone.utc).isoformat()})
            status[p.pair] = "succeeded"
        except ClientError as exc:
            write_error(s3, bucket, p, job_id, f"could not write results: {exc}")
            status[p.pair] = "failed"
    return status
