"""The Batch job: `python -m gpu_job run --manifest s3://BUCKET/jobs/<id>/manifest.json`.

For each pair of the manifest it reads the validated originals (by S3 version id), samples the
planned windows in shared batches, composites at full size and writes results/<pair>/
inpainted.png, preview.png, [uncertainty.png] and last result.json, the completion signal. A pair
that fails gets failed/<pair>/error.json and the others go on. A retried job skips pairs whose
result.json exists, so a spot reclaim never produces a second result.

The job is also the runner (serve; shared/pipeline/runner.py): after its own manifest it takes
the manifests ingest queued to it while it ran, so a folder uploaded over many minutes is one job.

One job does the work of one manifest: at start the job takes it (jobs/<id>/taken.json, a
conditional write naming its AWS_BATCH_JOB_ID, shared/pipeline/leases.py). Another attempt of the same Batch
job may take it again; any other job for the same manifest (a SubmitJob that Batch applied but
answered with an error, and that was retried) logs that it is a duplicate and exits 0, writing nothing.

The pairs go through the model in job batches (plan_batches: consecutive pairs, about
4 x the inpainter's batch of windows each, and a bound on their pixels). Three stages overlap, each
on its own thread: while batch i samples, batch i+1's inputs are downloaded and decoded (one
reader thread) and batch i-1's outputs are encoded and uploaded (one writer thread). So the GPU
waits for S3 only at the first batch, and memory holds at most three batches, never the manifest.
Each result.json's `timings` keeps model load, I/O and sampling apart (docs/pipeline.md).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from shared.imaging.images import FAST, InputError, load_image, load_mask, png_bytes
from shared.pipeline.manifest import PairJob, job_size, read_manifest, window_from_dict
from shared.options import InpaintOptions, OptionError
from shared.imaging.preview import before_after, heatmap
from shared.pipeline import runner
from shared.pipeline.leases import acquire, now_utc
from shared.pipeline.publish import publish
from shared.pipeline.records import Result
from shared.pipeline.s3 import (download, get_bytes, get_json, item_of, items_of, parse_uri, put_json, result_key, take_key, write_error,
                                written_by)
from shared.imaging.windows import reprepare

from gpu_job.inpainter.inpaint import Inpainter, InpaintResult
from gpu_job.inpainter.stand_in import HarmonicStandIn
from gpu_job.inpainter.weights import default_weights, summary

EXIT_BAD_MANIFEST = 2  # input error: the job definition's retry strategy exits, never retries
# Out of time or told to stop (SIGTERM: a Spot reclaim, a cancel): the pairs not started are handed
# back, and the retry strategy retries this exit code; the next attempt skips what this one wrote.
EXIT_HANDED_BACK = 75
STOP = threading.Event()  # set by the SIGTERM handler (gpu_job/__main__.py)
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


def model_info(inpainter: Inpainter, weights: str) -> dict:
    """What result.json and the notification say of the weights that made a fill."""
    info = summary(inpainter.record)
    return {**info, "sha256": info["sha256"] or hashlib.sha256(open(weights, "rb").read()).hexdigest()}


class Models:
    """The job's inpainters: the stack's, and each lab's own (models/<lab>/, named per pair by the
    manifest, at the version ingest saw), each loaded once, on first use, by either thread."""

    def __init__(self, s3, bucket: str, default: Inpainter, info: dict, device: str):
        self.s3, self.bucket, self.device = s3, bucket, device
        self.default = (default, info)
        self.cache: dict[tuple, tuple[Inpainter, dict]] = {}
        self.lock = threading.Lock()

    def for_pair(self, p: PairJob) -> tuple[Inpainter, dict]:
        if not p.model:
            return self.default
        key = (p.model["key"], p.model.get("version"))
        with self.lock:
            if key not in self.cache:
                self.cache[key] = self._load(p.model)
        return self.cache[key]

    def _load(self, m: dict) -> tuple[Inpainter, dict]:
        folder = Path(tempfile.mkdtemp(prefix="cellpaint-lab-"))
        path = folder / "weights.safetensors"
        path.write_bytes(get_bytes(self.s3, self.bucket, m["key"], m.get("version")))
        record = get_json(self.s3, self.bucket, str(Path(m["key"]).with_suffix(".json")))
        if record.get("sha256") != hashlib.sha256(path.read_bytes()).hexdigest():
            raise ValueError(f"s3://{self.bucket}/{m['key']}: the lab's model changed while this pair waited; upload the pair again")
        path.with_suffix(".json").write_text(json.dumps(record))
        inp = Inpainter(str(path), self.device)
        return inp, {**model_info(inp, str(path)), "lab": m.get("lab"), "key": m["key"], "key_version": m.get("version")}


def load_pair(s3, bucket: str, p: PairJob, inpainter: Inpainter):
    """The pair's validated originals, its options and its windows; InputError, OptionError or
    ValueError (an unknown label, no texture stage) fail this pair only."""
    name_i, name_m = f"s3://{bucket}/{p.image_key}", f"s3://{bucket}/{p.mask_key}"
    image = load_image(get_bytes(s3, bucket, p.image_key, p.image_version), name_i)
    mask = load_mask(get_bytes(s3, bucket, p.mask_key, p.mask_version), name_m)
    if image.shape[:2] != (p.height, p.width) or mask.shape != (p.height, p.width):
        raise InputError(name_i, f"size {image.shape[1]}x{image.shape[0]} differs from the manifest's {p.width}x{p.height}")
    # The options were checked once, at ingest, and the manifest carries them whole; the label is the weights' to check.
    opts = InpaintOptions.from_record(p.options)
    inpainter.label_index(opts.label)
    if opts.texture:
        inpainter.texturer()  # no texture-stage weights: this pair fails with the reason, the others go on
    wins = [window_from_dict(w) for w in p.windows]
    if any(w.prep.image.shape[0] != inpainter.size for w in wins):
        wins = reprepare(image, mask, wins, inpainter.size)  # MODEL_URI of another resolution: the same plan
    return image, mask, opts, wins


def write_result(s3, bucket: str, p: PairJob, job_id: str, image, mask, opts: InpaintOptions, res: InpaintResult,
                 model: dict, device: str, timings: dict, t_start: float | None = None) -> str:
    """The pair's images, then result.json (the completion signal), as one attempt under the pair's
    results lease (shared/pipeline/publish.py): "written", or "superseded" when a newer upload's
    result is already there. `timings` gets the pair's encode_upload_s and total_s (since t_start)."""
    inputs = {"image_key": p.image_key, "image_version": p.image_version, "mask_key": p.mask_key,
              "mask_version": p.mask_version, "uploaded": p.uploaded, "claimed": p.claimed}

    def write() -> None:
        t0 = time.time()
        outputs, versions = {}, {}
        # (name, picture, zlib level): the restored image as compact as PIL makes it; the pictures to look at, fast
        images = [("inpainted", lambda: res.image, 6), ("preview", lambda: before_after(image, mask, res.image, res.std), FAST)]
        if res.std is not None:
            images.append(("uncertainty", lambda: heatmap(res.std), FAST))
        for name, draw, level in images:
            key = result_key(p.pair, f"{name}.png")
            r = s3.put_object(Bucket=bucket, Key=key, Body=png_bytes(draw(), level), ContentType="image/png")
            outputs[name], versions[name] = key, r.get("VersionId")
        done = {**timings, "encode_upload_s": round(time.time() - t0, 3)}
        done["total_s"] = round(time.time() - (t0 if t_start is None else t_start), 3)
        result = Result(p.pair, job_id, inputs, outputs, {"width": p.width, "height": p.height}, len(p.windows), res.model or model,
                        opts.to_dict(), res.labels, res.fell_back, res.ood, device, done, datetime.now(timezone.utc).isoformat(),
                        output_versions=versions)
        put_json(s3, bucket, result_key(p.pair), result.to_json(), indent=2)  # last: the completion signal

    return publish(s3, bucket, p.pair, job_id, inputs, write)


HAND_BACK_MARGIN_S = 120.0  # at least this long before the deadline, no new batch is started

# A job batch: about this many model batches of windows (x samples), so that a batch's model calls
# are mostly full ones; and at most this many pixels, which bounds the memory of the three batches
# in flight (a manifest may hold many 40-megapixel images, MAX_PIXELS).
BATCHES_PER_JOB_BATCH = 4
MAX_BATCH_PIXELS = 64_000_000


def pair_rows(p: PairJob) -> int:
    """The model rows a pair adds to its batch: windows x samples (1 where its options are bad:
    that pair fails at load, with the reason)."""
    try:
        samples = int(InpaintOptions.from_record(p.options).samples)
    except (OptionError, ValueError, TypeError, KeyError):
        samples = 1
    return max(1, len(p.windows)) * samples


def plan_batches(pairs: list[PairJob], rows: int, max_pixels: int = MAX_BATCH_PIXELS) -> list[list[PairJob]]:
    """Consecutive pairs, in manifest order: a batch closes once it holds `rows` model rows or
    `max_pixels` pixels (a pair larger than either is a batch of its own)."""
    batches, cur, n, px = [], [], 0, 0
    for p in pairs:
        cur.append(p)
        n, px = n + pair_rows(p), px + p.width * p.height
        if n >= rows or px >= max_pixels:
            batches.append(cur)
            cur, n, px = [], 0, 0
    return batches + ([cur] if cur else [])


@dataclass
class Loaded:
    """One job batch's inputs, as the reader thread left them."""
    todo: list = field(default_factory=list)  # (PairJob, image, mask, opts, windows, download_decode_s, inpainter, model info)
    status: dict = field(default_factory=dict)  # pair -> "skipped" | "failed", for pairs that go no further
    seconds: float = 0.0  # the reader's time on this batch


def read_batch(s3, bucket: str, batch: list[PairJob], models: Models, job_id: str, retried: bool = True) -> Loaded:
    """Downloads and decodes a batch's pairs (the reader thread). A pair whose inputs or options are
    bad gets failed/<pair>/error.json here; one that an earlier attempt finished is skipped.
    `retried`: the manifest was taken before (else no pair of it can have a result yet: no read)."""
    out, t_batch = Loaded(), time.time()
    for p in batch:
        t0 = time.time()
        try:
            if retried and written_by(s3, bucket, result_key(p.pair), job_id):
                out.status[p.pair] = "skipped"  # an earlier attempt of this job (a spot reclaim) finished it
                continue
            inp, info = models.for_pair(p)
            out.todo.append((p, *load_pair(s3, bucket, p, inp), round(time.time() - t0, 3), inp, info))
        except (InputError, OptionError, ValueError, KeyError, ClientError) as exc:
            write_error(s3, bucket, p.pair, str(exc), stage="gpu", keys={"image": p.image_key, "mask": p.mask_key}, job_id=job_id)
            out.status[p.pair] = "failed"
    out.seconds = time.time() - t_batch
    return out


def write_batch(s3, bucket: str, job_id: str, items: list, results: list[InpaintResult], device: str,
                timings: list[dict], t_start: float) -> dict:
    """Writes a batch's results (the writer thread): {pair: "succeeded" | "failed"}."""
    status = {}
    for (p, image, mask, opts, _, _, _, model), res, t in zip(items, results, timings):
        try:
            written = write_result(s3, bucket, p, job_id, image, mask, opts, res, model, device, t, t_start)
            status[p.pair] = "succeeded" if written == "written" else "superseded"
        except (ClientError, TimeoutError) as exc:
            write_error(s3, bucket, p.pair, f"could not write results: {exc}", stage="gpu", keys={"image": p.image_key, "mask": p.mask_key},
                        job_id=job_id)
            status[p.pair] = "failed"
    return status


def sample_batch(todo: list) -> list[InpaintResult]:
    """Each pair restored by its own model (the stack's, or its lab's); pairs of one model share
    its model batches, and pairs with the same sampler settings share them inside inpaint_many."""
    results: list = [None] * len(todo)
    groups: dict[int, list[int]] = {}
    for i, t in enumerate(todo):
        groups.setdefault(id(t[6]), []).append(i)
    for idx in groups.values():
        inp = todo[idx[0]][6]
        for i, r in zip(idx, inp.inpaint_many([(todo[i][1], todo[i][2]) for i in idx], [todo[i][3] for i in idx], [todo[i][4] for i in idx])):
            results[i] = r
    return results


def load_models(s3, bucket: str, inpainter: Inpainter | None, device: str) -> Models:
    """The job's models: `inpainter`, or the weights of MODEL_URI (the image's own by default)."""
    weights = fetch_weights(s3, os.environ.get("MODEL_URI"))
    if inpainter is None and os.environ.get("CELLPAINT_TEST_FILL") == "harmonic":  # plumbing tests only
        inpainter = HarmonicStandIn()
    inpainter = inpainter or Inpainter(weights, device)
    return Models(s3, bucket, inpainter, model_info(inpainter, weights), device)


def run(manifest_uri: str, s3=None, inpainter: Inpainter | None = None, device: str = "auto",
        batch_job_id: str | None = None, batch_rows: int | None = None, item: int | None = None,
        deadline: float | None = None, get_models: Callable[[], Models] | None = None) -> dict:
    """Runs one manifest; returns {pair: "succeeded" | "failed" | "skipped" | "duplicate" |
    "superseded" (a newer upload's result was there first) | "handed back"}, in
    manifest order. `batch_rows`: model rows (windows x samples) per job batch (default:
    BATCHES_PER_JOB_BATCH x the inpainter's batch size). `item`: the work item to do (default: an
    array child's AWS_BATCH_JOB_ARRAY_INDEX; a plain job does the whole manifest). `deadline` (epoch
    s; under Batch by default the start plus the manifest's time limit): no batch is started so
    near it, nor once STOP is set; the pairs left are "handed back". `get_models`: the models
    loaded once for every manifest a runner does (serve); without it, loaded here."""
    t_start = time.time()
    s3 = s3 or boto3.client("s3", config=_RETRY)
    bucket, key = parse_uri(manifest_uri)
    doc = get_json(s3, bucket, key)
    item = item_of(doc, item if item is not None else os.environ.get("AWS_BATCH_JOB_ARRAY_INDEX"))  # an array child: its work item
    pairs = read_manifest(doc, item)
    job_id = doc["job_id"]
    me = batch_job_id or os.environ.get("AWS_BATCH_JOB_ID") or LOCAL_JOB
    take = take_key(key, item)
    taken = acquire(s3, bucket, take, {"manifest": key, "item": item}, None, owner=me)
    if taken is None:  # before the weights: a duplicate costs seconds
        owner = get_json(s3, bucket, take).get("owner")
        log.warning("duplicate: %s is taken by Batch job %s; this job (%s) exits without writing anything", key, owner, me)
        return {p.pair: "duplicate" for p in pairs}
    t_load = time.time()
    models = get_models() if get_models else load_models(s3, bucket, inpainter, device)
    inpainter = models.default[0]
    model_load_s = round(time.time() - t_load, 3)
    dev = str(inpainter.device)

    batches = plan_batches(pairs, batch_rows or BATCHES_PER_JOB_BATCH * inpainter.batch_size)
    status: dict[str, str] = {}
    if deadline is None and os.environ.get("AWS_BATCH_JOB_ID"):  # the time limit ingest gave this job (its manifest's)
        deadline = t_start + job_size(doc)[1]
    longest = 0.0
    totals = {"input_wait_s": 0.0, "sample_s": 0.0, "output_wait_s": 0.0, "download_decode_s": 0.0}
    with ThreadPoolExecutor(1, thread_name_prefix="gpu_job-read") as reader, \
            ThreadPoolExecutor(1, thread_name_prefix="gpu_job-write") as writer:
        # Taken for the first time: no attempt before this one wrote a result, so none is looked for (a read per pair).
        retried = not taken.fresh
        reading = reader.submit(read_batch, s3, bucket, batches[0], models, job_id, retried) if batches else None
        writing: Future | None = None
        for i in range(len(batches)):
            if STOP.is_set() or (deadline is not None and time.time() > deadline - max(HAND_BACK_MARGIN_S, 2 * longest)):
                log.warning("job %s: %s; %d pairs not started are handed back for the next attempt", job_id,
                            "told to stop" if STOP.is_set() else "near its time limit", sum(len(b) for b in batches[i:]))
                status.update({p.pair: "handed back" for b in batches[i:] for p in b})
                break
            t_batch = t0 = time.time()
            loaded = reading.result()
            input_wait = time.time() - t0
            if i + 1 < len(batches):  # the next batch downloads while this one samples
                reading = reader.submit(read_batch, s3, bucket, batches[i + 1], models, job_id, retried)
            status.update(loaded.status)
            totals["input_wait_s"] += input_wait
            totals["download_decode_s"] += loaded.seconds
            todo = loaded.todo
            if not todo:
                continue
            t0 = time.time()
            results = sample_batch(todo)
            sample_s = time.time() - t0
            totals["sample_s"] += sample_s
            rows = sum(len(t[4]) * t[3].samples for t in todo)
            timings = [{"model_load_s": model_load_s, "download_decode_s": t[5], "input_wait_s": round(input_wait, 3),
                        "sample_s": round(sample_s, 3), "batch": i, "batch_pairs": len(todo), "batch_rows": rows} for t in todo]
            if writing is not None:  # one batch's writes in flight at a time: memory stays bounded
                t0 = time.time()
                status.update(writing.result())
                totals["output_wait_s"] += time.time() - t0
            writing = writer.submit(write_batch, s3, bucket, job_id, todo, results, dev, timings, t_start)
            longest = max(longest, time.time() - t_batch)
        if writing is not None:
            status.update(writing.result())
    total = time.time() - t_start
    log.info("job %s: %d pairs in %d batches on %s; model load %.1f s, sampling %.1f s (%.0f %% of %.1f s), waiting for inputs %.1f s "
             "(download and decode took %.1f s), waiting for uploads %.1f s", job_id, len(pairs), len(batches), dev, model_load_s,
             totals["sample_s"], 100 * totals["sample_s"] / max(total, 1e-9), total, totals["input_wait_s"], totals["download_decode_s"],
             totals["output_wait_s"])
    return {p.pair: status[p.pair] for p in pairs}


# An idle runner waits this long for more of a folder before it closes: a GPU job's start-up
# (instance, image pull, model load) is minutes, so two minutes of waiting cost less than the
# new job the next manifest would otherwise be; it looks every LINGER_POLL_S.
LINGER_S, LINGER_POLL_S = 120.0, 5.0


def serve(manifest_uri: str, s3=None, inpainter: Inpainter | None = None, device: str = "auto",
          batch_job_id: str | None = None, batch_rows: int | None = None, item: int | None = None,
          deadline: float | None = None, linger_s: float | None = None) -> dict:
    """The Batch command: this job's manifest (run), then, as the runner, every manifest ingest
    queued to it (shared/pipeline/runner.py), oldest first, until none has come for `linger_s`
    (default CELLPAINT_LINGER_S, else LINGER_S); the models are loaded once for all. Returns
    {pair: status} for every pair it ran or handed back."""
    linger_s = float(os.environ.get("CELLPAINT_LINGER_S", LINGER_S)) if linger_s is None else linger_s
    t_start = time.time()
    s3 = s3 or boto3.client("s3", config=_RETRY)
    bucket, key = parse_uri(manifest_uri)
    me = batch_job_id or os.environ.get("AWS_BATCH_JOB_ID") or LOCAL_JOB
    if deadline is None and os.environ.get("AWS_BATCH_JOB_ID"):  # the time limit ingest gave this job (its manifest's)
        deadline = t_start + job_size(get_json(s3, bucket, key))[1]
    until = datetime.now(timezone.utc) + (timedelta(seconds=deadline - t_start) if deadline else timedelta(days=1))
    runner.started(s3, bucket, me, until, now_utc())
    loaded: list[Models] = []

    def get_models() -> Models:
        if not loaded:
            loaded.append(load_models(s3, bucket, inpainter, device))
        return loaded[0]

    kw = {"s3": s3, "device": device, "batch_job_id": me, "batch_rows": batch_rows, "deadline": deadline, "get_models": get_models}
    status = run(manifest_uri, item=item, **kw)
    done, closed, idle_since = set(), False, time.time()
    while "handed back" not in status.values():
        todo = [m for m in runner.queued(s3, bucket, runner.runner_of(me)) if m not in done]
        if not todo and closed:
            break
        if not todo and time.time() - idle_since < linger_s and not STOP.is_set() and \
                (deadline is None or time.time() + LINGER_POLL_S < deadline - HAND_BACK_MARGIN_S) and \
                runner.accepts(s3, bucket, me, now_utc()):
            STOP.wait(LINGER_POLL_S)  # a folder still uploading: its next manifest is cheaper here than a new job's start-up
            continue
        if not todo:  # close, then look once more: whatever was queued before the close is found now
            runner.close(s3, bucket, me, now_utc())
            closed = True
            continue
        idle_since = float("inf")
        for m in todo:
            doc = get_json(s3, bucket, m)
            n = len(items_of(doc))
            for i in range(n) if n > 1 else [None]:
                status.update(run(f"s3://{bucket}/{m}", item=i, **kw))
            done.add(m)
            if "handed back" in status.values():
                break
        idle_since = time.time()
    if "handed back" in status.values():  # the next attempt drains what is left
        log.warning("job %s: handing back; %d manifests queued to it are left for its next attempt", me,
                    len([m for m in runner.queued(s3, bucket, runner.runner_of(me)) if m not in done]))
    return status
