"""Ship a run's weights: copy them into gpu_job/weights/ with a record that says all that went into them.

    .venv/bin/python scripts/ship_weights.py runs/ft6/best.safetensors \
        --before runs/shipped-22076.json runs/gpu6/best.json --data ../shared/data/pbc/train

Runs started with `--init` from this code on record their lineage themselves (weights.lineage).
`--before` is for runs that did not: the records of the weights that came before this run, oldest
first; each one's own lineage is kept. `--data` counts the train set's classes for
`cellpaint sample --label any` when the record has no counts, and gives its colour statistics
(shared/imaging/colour.py) when the record has none. Ship only weights that beat the
shipped ones on val (BENCHMARKS.md says how that is measured).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
from pathlib import Path

from gpu_job.inpainter.weights import DEFAULT_WEIGHTS, config_path, lineage, read_config, totals


def shipped_record(src: Path, before: list[Path], data: str | None) -> dict:
    rec = read_config(src)
    t = rec["training"]
    segments = [g for b in before for g in lineage(read_config(b.with_suffix(".safetensors")))] + lineage(rec)
    if before:
        t["segments"] = segments
        t.update(totals(segments))
    if "class_counts" not in t and data:
        from gpu_job.data.cells import list_images

        files, classes = list_images(Path(data))
        t["class_counts"] = {c: sum(f.parent.name == c for f in files) for c in classes}
    if "normalize" not in rec and data and rec.get("stage") != "texture":  # weights trained before colour statistics were recorded
        from gpu_job.data.cells import load_cellset
        from gpu_job.training.first_stage import colour_reference

        rec["normalize"] = colour_reference(load_cellset(data, rec["unet"]["image_size"]).images)
    if t.get("class_counts") and list(t["class_counts"]) != rec["classes"]:
        raise SystemExit(f"{data or src}: classes {list(t['class_counts'])} differ from the weights' {rec['classes']}")
    return rec


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("weights", type=Path, help="a run's best.safetensors (its .json beside it)")
    ap.add_argument("--before", type=Path, nargs="*", default=[], help="records of the weights it started from, oldest first")
    ap.add_argument("--data", help="train folder, to count classes when the record has no counts")
    ap.add_argument("--out", type=Path, default=DEFAULT_WEIGHTS)
    ap.add_argument("--temperature", type=float, help="the sampler temperature measured best for these weights, recorded as their "
                    "default (`sampling`; without it: the shipped record's at --out, if it names one, else shared.options.TEMPERATURE)")
    ap.add_argument("--bf16", action="store_true", help="store the tensors as bfloat16: half the file, and on the CPU the same output, since "
                    "bf16 autocast rounds convolution weights to bfloat16 anyway (the texture stage: gpu_job/weights/texture.safetensors)")
    a = ap.parse_args()
    rec = shipped_record(a.weights, a.before, a.data)
    # A model's measured temperature stays with it when newer weights of it are shipped over it.
    kept = read_config(a.out).get("sampling") if config_path(a.out).exists() else None
    if a.temperature is not None or kept:
        rec["sampling"] = {"temperature": a.temperature} if a.temperature is not None else kept
    if hashlib.sha256(a.weights.read_bytes()).hexdigest() != rec["sha256"]:
        raise SystemExit(f"{a.weights}: its sha256 does not match its record")
    if a.bf16:
        import torch
        from safetensors.torch import load_file, save_file

        save_file({k: v.to(torch.bfloat16) for k, v in load_file(str(a.weights)).items()}, str(a.out))
        rec.update(dtype="bfloat16", sha256=hashlib.sha256(a.out.read_bytes()).hexdigest())
    else:
        shutil.copyfile(a.weights, a.out)
    config_path(a.out).write_text(json.dumps(rec, indent=2) + "\n")
    t = rec["training"]
    print(f"{a.out}: {t['steps']} steps, {t['images_seen']} images, {t['hours']} h; val {rec.get('val', 'not measured')}")


if __name__ == "__main__":
    main()
