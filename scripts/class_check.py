"""Are generated cells recognisable as their class? A small CNN classifier, trained on the train
set at 64x64, labels (a) real val cells, the reference, and (b) whole cells the weights generate
with each label (at the guidance scales asked for) and without one, with each sampler asked for.
It also counts speckled cells: generated cells whose mean |Laplacian| (fine detail, at 64x64) is
above that of 99 % of real val cells; real cells are speckled 1 % of the time by this definition.

    .venv/bin/python scripts/class_check.py --out runs/class_check [--weights W] [--guidance 1 3 5] [--sampler ddim ddpm]

Writes OUT/class_check.json and prints a markdown table (BENCHMARKS.md). The classifier is a
measuring tool only, never shipped; its accuracy on real val cells says how far to trust it.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from gpu_job.evaluation.classifier import predict, train_classifier
from gpu_job.data.metrics import cell_detail, speckle_limit
from gpu_job.inpainter.inpaint import Inpainter
from gpu_job.data.cells import load_cellset
from shared.options import GENERATE_GUIDANCE, GENERATE_SAMPLER, GENERATE_STEPS


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", default="../shared/data/pbc/train")
    ap.add_argument("--val", default="../shared/data/pbc/val")
    ap.add_argument("--weights")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--per-class", type=int, default=24, help="generated cells per label")
    ap.add_argument("--steps", type=int, default=GENERATE_STEPS, help="sampler steps for generation")
    ap.add_argument("--guidance", type=float, nargs="+", default=[1.0, GENERATE_GUIDANCE], help="classifier-free guidance scales to try")
    ap.add_argument("--sampler", nargs="+", default=[GENERATE_SAMPLER], choices=["ddim", "ddpm"], help="samplers to try")
    ap.add_argument("--out", type=Path, default=Path("runs/class_check"))
    a = ap.parse_args()
    torch.set_num_threads(2)
    train, val = load_cellset(a.train), load_cellset(a.val)
    n = len(train.classes)
    net, seconds = train_classifier(train.images, train.labels, n, a.epochs)
    report = {"classes": train.classes, "classifier_train_s": round(seconds), "val": {}, "generated": {}}
    pred = predict(net, val.images)
    report["val"] = {c: float((pred[val.labels == i] == i).mean()) for i, c in enumerate(train.classes)}
    report["val"]["all"] = float((pred == val.labels).mean())

    limit = speckle_limit(val.images)
    report["speckle_limit"] = limit

    inp = Inpainter(a.weights, "cpu")
    assert inp.classes == train.classes, "the weights and the data name different classes"
    report["unlabelled_share"], report["speckled"] = {}, {}
    for sampler in a.sampler:
        for guidance in a.guidance:
            acc, made = {}, []
            for i, c in enumerate(tqdm(train.classes, desc=f"generate, {sampler}, guidance {guidance}")):
                cells = inp.generate(a.per_class, c, seed=1000 + i, steps=a.steps, sampler=sampler, guidance=guidance)
                acc[c] = float((predict(net, cells) == i).mean())
                made.append(cells)
            acc["all"] = float(np.mean(list(acc.values())))
            name = f"{sampler}-{a.steps}, guidance {guidance:g}"
            report["generated"][name] = acc
            report["speckled"][name] = float((cell_detail(np.concatenate(made)) > limit).mean())
        # `--label any` (the CLI default): a class per cell from the training mix, guided.
        drawn = np.array(inp.generate_labels(a.per_class * n, "any", 998))
        anyc = inp.generate(a.per_class * n, "any", seed=998, steps=a.steps, sampler=sampler, guidance=GENERATE_GUIDANCE)
        pred = predict(net, anyc)
        report.setdefault("any_label", {})[sampler] = {"share": {c: float((pred == i).mean()) for i, c in enumerate(train.classes)},
                                                       "recognised": float((pred == drawn).mean())}
        report["speckled"][f"{sampler}-{a.steps}, label any"] = float((cell_detail(anyc) > limit).mean())
        free = inp.generate(a.per_class * n, None, seed=999, steps=a.steps, sampler=sampler)
        pred = predict(net, free)
        report["unlabelled_share"][sampler] = {c: float((pred == i).mean()) for i, c in enumerate(train.classes)}
        report["speckled"][f"{sampler}-{a.steps}, no label"] = float((cell_detail(free) > limit).mean())
    report["train_share"] = {c: float((train.labels == i).mean()) for i, c in enumerate(train.classes)}
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "class_check.json").write_text(json.dumps(report, indent=1) + "\n")
    pct = lambda x: f"{100 * x:.0f} %"  # noqa: E731
    rows = [("real val cells (classifier's own accuracy)", report["val"], float((cell_detail(val.images) > limit).mean()))]
    rows += [(f"generated, {k}", v, report["speckled"][k]) for k, v in report["generated"].items()]
    print("| cells | " + " | ".join(train.classes) + " | all | speckled |")
    print("|---" * (n + 3) + "|")
    for name, d, sp in rows:
        print(f"| {name} | " + " | ".join(pct(d[c]) for c in train.classes) + f" | {pct(d['all'])} | {pct(sp)} |")
    for sampler, share in report["unlabelled_share"].items():
        sp = report["speckled"][f"{sampler}-{a.steps}, no label"]
        print(f"| generated without a label ({sampler}-{a.steps}): share classified as each class | " + " | ".join(pct(share[c]) for c in train.classes) + f" | | {pct(sp)} |")
    for sampler, d in report.get("any_label", {}).items():
        sp = report["speckled"][f"{sampler}-{a.steps}, label any"]
        print(f"| generated with `--label any` ({sampler}-{a.steps}, guidance {GENERATE_GUIDANCE:g}): share classified as each class; all = recognised as the class drawn | "
              + " | ".join(pct(d["share"][c]) for c in train.classes) + f" | {pct(d['recognised'])} | {pct(sp)} |")
    print("| train set: share of each class | " + " | ".join(pct(report["train_share"][c]) for c in train.classes) + " | | |")

if __name__ == "__main__":
    main()
