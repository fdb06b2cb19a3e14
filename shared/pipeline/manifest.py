"""The job manifest: what ingest hands the GPU job, as plain JSON (numpy + Pillow only).

`jobs/<job-id>/manifest.json` lists every pair of one Batch job with its S3 keys (and version ids,
so the job reads exactly the bytes that were validated), its options, and its plan: one Window per
mask region, with its preprocessed model input and the pixels it writes, as base64 PNGs. The job
trusts the plan; it does not make its own.
"""
from __future__ import annotations

import base64
import io
from dataclasses import asdict, dataclass, field

import numpy as np
from PIL import Image

from shared.imaging.preprocess import Prepared
from shared.imaging.windows import Box, Window
from shared.pipeline.s3 import items_of

MANIFEST_VERSION = 2  # 2: each window carries the pixels it writes


def _png_b64(arr: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _from_b64(s: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(s))))


def window_to_dict(w: Window) -> dict:
    p = w.prep
    return {"box": asdict(w.box), "height": p.height, "width": p.width, "pad": list(p.pad),
            "image": _png_b64(p.image), "mask": _png_b64(p.mask.astype(np.uint8) * 255),
            "writes": _png_b64(w.writes.astype(np.uint8) * 255)}


def window_from_dict(d: dict) -> Window:
    prep = Prepared(_from_b64(d["image"]), _from_b64(d["mask"]) > 127, int(d["height"]), int(d["width"]), tuple(d["pad"]))
    return Window(Box(**d["box"]), prep, _from_b64(d["writes"]) > 127)


@dataclass
class PairJob:
    pair: str  # the pair id, from the key: incoming/<pair>.<ext>
    image_key: str
    mask_key: str
    height: int
    width: int
    options: dict = field(default_factory=dict)  # every option, checked at ingest (InpaintOptions.to_dict); the job reads it back unchecked
    windows: list[dict] = field(default_factory=list)  # window_to_dict(...) each
    image_version: str | None = None
    mask_version: str | None = None
    uploaded: str | None = None  # the later of the two halves' upload times: the newest upload's result wins (shared/pipeline/publish.py)
    claimed: str | None = None  # when ingest took the pair: breaks a tie of upload times (whole seconds)
    evaluations: int = 0  # model evaluations the pair costs (shared/pipeline/validate.py evaluations): the job's time limit
    model: dict | None = None  # a lab's own model for this pair: {"key", "version"} under models/<lab>/ (None: the stack's)


# The job's time limit follows its manifest: start-up and model load, each pair's I/O, and its
# evaluations at the 2-CPU rate (BENCHMARKS.md), an upper bound for a GPU; Batch's own floor is 60 s.
JOB_BASE_S, PAIR_IO_S, EVALUATION_S = 600, 2.0, 0.022
# A work item: about this much of the estimate above, so that one GPU job's start-up (instance,
# image pull, model load: minutes) is paid for tens of minutes of work, and a folder of 10,000
# pairs is tens of work items, run as the children of a few array jobs, not hundreds of jobs.
ITEM_S = 1800.0
# A job is also the runner that takes the manifests queued after it (shared/pipeline/runner.py):
# its time limit leaves this much for them, and ingest queues to it no more estimated work than
# that. An hour of estimate (about 1,600 default pairs) is minutes on a GPU: a 10,000-pair folder
# is about 7 jobs, each start-up paid for ~1,600 pairs.
DRAIN_S = 3600.0


def pair_seconds(p: PairJob) -> float:
    return PAIR_IO_S + p.evaluations * EVALUATION_S


def time_limit(pairs: list[PairJob]) -> int:
    """Seconds a job of these pairs may run before Batch stops it (SubmitJob's attemptDurationSeconds)."""
    return int(JOB_BASE_S + sum(pair_seconds(p) for p in pairs))


def plan_items(pairs: list[PairJob], item_s: float | None = None) -> list[list[int]]:
    """The manifest's pairs cut into work items: consecutive [start, end) slices of about `item_s`
    estimated seconds each (at least one pair). One item is a plain job; more are one array job,
    child i doing item i (AWS_BATCH_JOB_ARRAY_INDEX)."""
    item_s = ITEM_S if item_s is None else item_s
    items, start, acc = [], 0, 0.0
    for i, p in enumerate(pairs):
        if i > start and acc + pair_seconds(p) > item_s:
            items.append([start, i])
            start, acc = i, 0.0
        acc += pair_seconds(p)
    if pairs:
        items.append([start, len(pairs)])
    return items


def manifest(job_id: str, bucket: str, pairs: list[PairJob], created: str, item_s: float | None = None) -> dict:
    return {"version": MANIFEST_VERSION, "job_id": job_id, "bucket": bucket, "created": created,
            "items": plan_items(pairs, item_s), "pairs": [asdict(p) for p in pairs]}


def read_manifest(doc: dict, item: int | None = None) -> list[PairJob]:
    """The manifest's pairs, or only work item `item`'s (an array child's)."""
    if doc.get("version") != MANIFEST_VERSION:
        raise ValueError(f"manifest version {doc.get('version')!r}; this code reads {MANIFEST_VERSION}")
    pairs = doc["pairs"]
    if item is not None:
        items = items_of(doc)
        if not 0 <= item < len(items):
            raise ValueError(f"work item {item} of a manifest with {len(items)}")
        pairs = pairs[items[item][0]:items[item][1]]
    return [PairJob(**p) for p in pairs]


def job_seconds(doc: dict) -> float:
    """The estimated work of a whole manifest (every item), as a runner's budget counts it."""
    return sum(pair_seconds(p) for p in read_manifest(doc))


def job_size(doc: dict) -> tuple[int | None, int]:
    """(array size or None for a plain job, time limit in seconds: the longest item's, and
    DRAIN_S for the manifests queued to the job while it runs)."""
    items = items_of(doc)
    pairs = read_manifest(doc)
    limit = max(time_limit(pairs[a:b]) for a, b in items) if pairs else JOB_BASE_S
    return (len(items) if len(items) > 1 else None), int(limit + DRAIN_S)
