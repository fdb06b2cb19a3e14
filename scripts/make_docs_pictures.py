"""Pictures for the docs and the shipped example pair, all made by the model (never from ../shared/data).

    scripts/paused.sh .venv/bin/python scripts/make_docs_pictures.py [--weights W]

- docs/samples.png: generated cells, one row per class, then a row without a label.
- examples/cell.png + examples/cell.mask.png: a generated neutrophil, upsampled to 256 px, with a
  drawn stroke mask: the pair `make demo` runs.
- docs/before_after.png: generated cells with box, ellipse and stroke masks restored
  (original | mask | one sample | the default result, the mean of 8 samples | their spread).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from gpu_job.defaults import DEFAULT_GENERATE_STEPS, DEFAULT_STEPS
from gpu_job.inpaint import Inpainter, InpaintOptions
from shared.images import save_png
from shared.masks import random_mask
from shared.preview import grid, heatmap, overlay

ROOT = Path(__file__).resolve().parents[1]
SIDE = 256  # the example's size: a 64 px cell shown at a size a person can paint on


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights")
    ap.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="DDIM steps for inpainting")
    ap.add_argument("--generate-steps", type=int, default=DEFAULT_GENERATE_STEPS, help="sampler steps for whole cells (the generate default sampler)")
    a = ap.parse_args()
    torch.set_num_threads(2)
    inp = Inpainter(a.weights, "cpu")
    # one row per class, the unconditional model's row, then the `cellpaint sample` default (--label any)
    rows = [list(inp.generate(8, label, seed=i, steps=a.generate_steps)) for i, label in enumerate([*inp.classes, None, "any"])]
    save_png(grid(rows), ROOT / "docs" / "samples.png")

    # The least grainy of 8 generated neutrophils (smallest mean neighbour difference): a demo
    # input should look like a cell, and some samples of these weights are still speckled.
    cands = inp.generate(8, "neutrophil", seed=7, steps=a.generate_steps).astype(np.float32)
    grain = np.abs(np.diff(cands, axis=1)).mean(axis=(1, 2, 3)) + np.abs(np.diff(cands, axis=2)).mean(axis=(1, 2, 3))
    cell = cands[int(grain.argmin())].astype(np.uint8)
    big = np.asarray(Image.fromarray(cell).resize((SIDE, SIDE), Image.Resampling.BICUBIC))
    mask = Image.new("L", (SIDE, SIDE), 0)
    ImageDraw.Draw(mask).line([(40, 200), (110, 150), (150, 160), (215, 90)], fill=255, width=22, joint="curve")
    (ROOT / "examples").mkdir(exist_ok=True)
    Image.fromarray(big).save(ROOT / "examples" / "cell.png")
    mask.save(ROOT / "examples" / "cell.mask.png")

    rng = np.random.default_rng(3)
    cells = inp.generate(3, None, seed=100, steps=a.generate_steps)
    out = []
    for c, kind in zip(cells, ("box", "ellipse", "stroke")):
        img = np.asarray(Image.fromarray(c).resize((SIDE, SIDE), Image.Resampling.BICUBIC))
        m = random_mask(rng, SIDE, SIDE, kind, 0.2)
        res = inp.inpaint(img, m, InpaintOptions(steps=a.steps, seed=1))  # the defaults: mean of 8, seam fix
        one = inp.inpaint(img, m, InpaintOptions(steps=a.steps, seed=1, combine="first")).image  # its sample 0, seam fixed
        out.append([img, overlay(img, m), one, res.image, heatmap(res.std)])
    save_png(grid(out, pad=4), ROOT / "docs" / "before_after.png")
    print("wrote docs/samples.png, docs/before_after.png, examples/cell.png, examples/cell.mask.png")


if __name__ == "__main__":
    main()
