"""Shipped weights: one safetensors file (EMA weights) plus a JSON config beside it.

Loading rebuilds the model from the stored config and refuses a file whose format version or
architecture fields do not match this code, rather than loading half the tensors.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, fields
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from gpu_job.inpainter.diffusion import Diffusion, DiffusionConfig
from gpu_job.inpainter.model import UNet, UNetConfig
from shared.options import TEMPERATURE

FORMAT = "cellpaint-weights"
FORMAT_VERSION = 1
# The shipped weights of every stage, package data beside the code: gpu_job/weights/<stage>.safetensors.
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"


def shipped(stage: str) -> Path:
    """The shipped weights file of a stage: cellpaint (the first stage), fields (the first stage of
    more microscopes, for images unlike PBC's), texture, labeler or ood."""
    return WEIGHTS_DIR / f"{stage}.safetensors"


def weights_path(stage: str = "cellpaint") -> Path:
    """$CELLPAINT_WEIGHTS (first stage) or $CELLPAINT_<STAGE>_WEIGHTS if set (tests, the UI, a
    newer run), else the shipped weights. The one place every stage's default is looked up."""
    env = os.environ.get("CELLPAINT_WEIGHTS" if stage == "cellpaint" else f"CELLPAINT_{stage.upper()}_WEIGHTS")
    return Path(env) if env else shipped(stage)


DEFAULT_WEIGHTS = shipped("cellpaint")


def default_weights() -> Path:
    return weights_path("cellpaint")


def summary(record: dict) -> dict:
    """What result.json and the notification say of the weights that made a fill."""
    return {"version": record.get("code_version"), "sha256": record.get("sha256"), "trained_steps": record.get("training", {}).get("steps")}


def own_temperature(record: dict, samples: int = 1) -> float:
    """The sampler temperature measured best for one sample of these weights (`sampling` in their
    record: the model of more microscopes, a lab's model), else the shipped PBC model's. Several
    samples are drawn at the PBC model's, whatever the record says: at 0 every DDIM sample would
    start from the same point, and their spread (the uncertainty map) would say nothing."""
    return float(record.get("sampling", {}).get("temperature", TEMPERATURE)) if samples == 1 else TEMPERATURE


def config_path(weights: Path) -> Path:
    return Path(weights).with_suffix(".json")


def save_weights(path: str | Path, model: UNet, diff_cfg: DiffusionConfig, classes: list[str], meta: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().float().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(path))
    record = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "unet": asdict(model.cfg), "diffusion": asdict(diff_cfg), "classes": list(classes),
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(), **meta,
    }
    config_path(path).write_text(json.dumps(record, indent=2) + "\n")


def read_config(path: str | Path) -> dict:
    cfg_file = config_path(Path(path))
    if not cfg_file.exists():
        raise FileNotFoundError(f"{cfg_file}: missing (weights need their JSON config beside them)")
    record = json.loads(cfg_file.read_text())
    if record.get("format") != FORMAT or record.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{cfg_file}: format {record.get('format')} v{record.get('format_version')}, "
                         f"this code reads {FORMAT} v{FORMAT_VERSION}")
    for key, cls in (("unet", UNetConfig), ("diffusion", DiffusionConfig)):
        # A field this code lacks is an error. One the file lacks was added after it was written,
        # with a default that keeps the older behaviour (UNetConfig.mid_attn).
        want, got = {f.name for f in fields(cls)}, set(record.get(key, {}))
        if got - want or not got:
            raise ValueError(f"{cfg_file}: {key} config fields {sorted(got - want) or 'missing'} do not match this code")
    return record


SEGMENT_KEYS = ("steps", "images_seen", "batch_size", "hours", "data", "machine")


def lineage(record: dict) -> list[dict]:
    """The training segments behind a weights record, oldest first. Weights trained on from other
    weights (`--init`) keep the segments before them, so a record says all that went into it."""
    t = record.get("training", {})
    return t.get("segments") or ([{k: t[k] for k in SEGMENT_KEYS if k in t}] if t.get("steps") else [])


def totals(segments: list[dict]) -> dict:
    """Steps, images seen and hours over a lineage's segments."""
    out = {k: sum(g.get(k, 0) for g in segments) for k in ("steps", "images_seen")}
    return {**out, "hours": round(sum(g.get("hours", 0) for g in segments), 3)}


def load_weights(path: str | Path | None = None, device: str | torch.device = "cpu") -> tuple[UNet, Diffusion, dict]:
    path = Path(path or default_weights())
    record = read_config(path)
    model = UNet(UNetConfig(**record["unet"]))
    diff = Diffusion(DiffusionConfig(**record["diffusion"]))
    state = load_file(str(path))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path}: tensors do not match the config (missing {missing[:3]}, unexpected {unexpected[:3]})")
    model.eval().to(device)
    return model, diff.to(device), record
