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
    evaluations: int = 0  # model evaluations the pair costs (shared/pipeline/validate.py evaluations): the job's time limit
    model: dict | None = None  # a lab's own model for this pair: {"key", "version"} under models/<lab>/ (None: the stack's)


# The job's time limit follows its manifest: start-up and model load, each pair's I/O, and its
# evaluations at the 2-CPU rate (BENCHMARKS.md), an upper bound for a GPU; Batch's own floor is 60 s.
JOB_BASE_S, PAIR_IO_S, EVALUATION_S = 600, 2.0, 0.022


def time_limit(pairs: list[PairJob]) -> int:
    """Seconds a job of these pairs may run before Batch stops it (SubmitJob's attemptDurationSeconds)."""
    return int(JOB_BASE_S + sum(PAIR_IO_S + p.evaluations * EVALUATION_S for p in pairs))


def manifest(job_id: str, bucket: str, pairs: list[PairJob], created: str) -> dict:
    return {"version": MANIFEST_VERSION, "job_id": job_id, "bucket": bucket, "created": created,
            "pairs": [asdict(p) for p in pairs]}


def read_manifest(doc: dict) -> list[PairJob]:
    if doc.get("version") != MANIFEST_VERSION:
        raise ValueError(f"manifest version {doc.get('version')!r}; this code reads {MANIFEST_VERSION}")
    return [PairJob(**p) for p in doc["pairs"]]
