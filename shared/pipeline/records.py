"""The records the stack writes and others read, each with its version: `result.json` (one pair
restored, written by the GPU job; read by the notify Lambda, the UI and people), `adapted.json`
(a lab's model made), `summary.json` (a folder's digest), and the notification's body (a `Notice`, what e-mail and webhooks get). Written and read only through
these classes, so a field is added in one place.

A reader takes any version it knows: result.json of version 1 (before this module) kept the
options as top-level keys and is read into version 2's shape.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

RESULT_VERSION = 2
NOTICE_VERSION = 2
MODEL_READY_VERSION = 1
FOLDER_SUMMARY_VERSION = 1
# The options version 1 wrote at the top level (and "guard" as {"on": ..., "fell_back": ...}).
_V1_OPTIONS = ("sampler", "steps", "temperature", "seed", "label", "samples", "combine", "texture", "normalize")


class RecordError(ValueError):
    """A record that cannot be read: another writer, a newer version, or not a record at all."""


@dataclass
class Result:
    """results/<pair>/result.json: the completion signal of one pair, written last."""
    pair: str
    job_id: str
    inputs: dict  # image_key, image_version, mask_key, mask_version: exactly what was restored
    outputs: dict  # bucket keys: inpainted, preview, and uncertainty where samples > 1
    size: dict  # width, height
    windows: int
    model: dict  # the weights that made the fill: sha256, version, trained_steps
    options: dict  # every option, as the fill was made (shared/options.py, InpaintOptions.to_dict)
    labels: list | None = None  # the class each window was told (label auto), None where none
    fell_back: int = 0  # windows the guard gave to a classical fill
    ood: dict | None = None  # the "unlike the training images" flag (gpu_job/inpainter/ood.py)
    device: str = ""
    timings: dict = field(default_factory=dict)  # model load, I/O and sampling apart (docs/pipeline.md)
    time: str = ""  # ISO 8601, UTC
    status: str = "succeeded"
    version: int = RESULT_VERSION
    output_versions: dict = field(default_factory=dict)  # each output's S3 version: exactly these images, whatever is written later

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, doc) -> "Result":
        if not isinstance(doc, dict) or not isinstance(doc.get("pair"), str):
            raise RecordError("not a result.json: no pair")
        version = doc.get("version", 1)
        if version == 1:
            guard = doc.get("guard") if isinstance(doc.get("guard"), dict) else {}
            doc = {"inputs": {}, "outputs": {}, "size": {}, "windows": 0, "model": {}, **doc,
                   "options": {**{k: doc[k] for k in _V1_OPTIONS if k in doc}, "guard": guard.get("on", False)},
                   "fell_back": guard.get("fell_back", 0), "version": RESULT_VERSION}
        elif version != RESULT_VERSION:
            raise RecordError(f"result.json of version {version!r}; this reader knows 1 and {RESULT_VERSION}")
        known = {f.name for f in fields(cls)}
        try:
            return cls(**{k: v for k, v in doc.items() if k in known})
        except TypeError as exc:  # a required field missing
            raise RecordError(f"result.json is incomplete: {exc}") from exc


@dataclass
class ModelReady:
    """models/<lab>/adapted.json: the end of a lab's adapt job, written last (the notify function
    tells the lab). `status`: ready (the lab's pairs now use it), not better (the base model stays
    in use), or superseded (a model from a newer set of the lab's photos is already there)."""
    lab: str
    status: str
    job_id: str
    gain_db: float | None = None  # the lab's model over the base, masked PSNR on its held-back photos
    held_back_psnr: dict = field(default_factory=dict)  # base | adapted | biharmonic -> {kind: dB}
    photos: int = 0
    held_back: int = 0
    model: dict | None = None  # key, version, sha256 of what was written
    time: str = ""
    version: int = MODEL_READY_VERSION

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, doc) -> "ModelReady":
        if not isinstance(doc, dict) or doc.get("version") != MODEL_READY_VERSION:
            raise RecordError(f"not an adapted.json of version {MODEL_READY_VERSION}")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in doc.items() if k in known})


@dataclass
class FolderSummary:
    """results/<folder>/summary.json: every pair of a folder once all have an answer (the digest)."""
    folder: str
    counts: dict  # done, failed, flagged
    pairs: list  # [{pair, status, reason, keys, flagged, fell_back, model}], failed and flagged first
    contact_sheet: str | None = None  # results/<folder>/contact-sheet.png
    time: str = ""
    version: int = FOLDER_SUMMARY_VERSION

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class Notice:
    """One notification: a pair restored or failed. Its body goes to webhooks as JSON; e-mail gets
    text made from it (shared/pipeline/notify.py)."""
    status: str  # succeeded | failed
    pair: str | None
    reason: str | None = None
    keys: dict = field(default_factory=dict)  # inputs and outputs, bucket-relative
    bucket: str | None = None
    link: str | None = None  # presigned GET of inpainted.png
    link_expires_in: int | None = None  # seconds
    timings: dict = field(default_factory=dict)
    job: dict = field(default_factory=dict)  # job_id, batch_job_id, status_reason, ...
    ood: dict | None = None  # the job's "unlike the training images" flag (gpu_job/inpainter/ood.py)
    model: dict | None = None  # the weights that made the fill
    options: dict | None = None  # every option the fill was made with
    labels: list | None = None
    fell_back: int | None = None
    kind: str = "pair"  # pair | folder (the digest of a folder) | model (a lab's own model, `cellpaint adapt`)
    dedupe: str = ""  # what makes this notice unique (not sent)

    def body(self) -> dict:
        d = asdict(self)
        d.pop("dedupe")
        return {"version": NOTICE_VERSION, **d}
