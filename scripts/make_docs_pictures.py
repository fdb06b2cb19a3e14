"""Pictures for the docs and the shipped example pair, all made by the model (never from ../shared/data).

    .venv/bin/python scripts/make_docs_pictures.py [--weights W]

- docs/samples.png: generated cells, one row per class, then a row without a label.
- examples/cell.png + examples/cell.mask.png: a generated neutrophil, upsampled to 256 px, with a
  drawn stroke mask: the pair `make demo` runs.
- docs/before_after.png: generated cells with box, ellipse and stroke masks restored
  (original | mask | the default result, one sample | the mean of 8 samples | their spread).
- docs/domain_shift.png: generated cells as another lab's microscope shows them (restained, a
  warmer light, 1.35x magnified), with a disk on the background and one on the cell: the shifted
  cell | the mask | biharmonic | cellpaint as it was (a fixed 360 px window, no colour
  normalisation) | the model's fill alone (window from the cell size, colours normalised; where the
  image is flagged unlike the training images, the model of two microscopes) | the default (there,
  leaning on a classical fill). `--only-domain` writes this one alone.
- docs/texture.png, with --texture W: the texture stage at full size (360 px) on generated cells.
  Each row: a generated cell upsampled (what the first stage gives at this size) | the same
  redrawn by the texture stage | a 3x crop of each. Then the textured cell with a box mask, and 3x
  crops of the mask's region: the cell, restored by the default, restored with the texture stage.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from shared.options import GENERATE_STEPS, OPTIONS
from gpu_job.inpainter.inpaint import Inpainter, InpaintOptions
from shared.imaging.images import save_png
from shared.imaging.masks import random_mask
from shared.imaging.preview import grid, heatmap, overlay

ROOT = Path(__file__).resolve().parents[1]
SIDE = 256  # the example's size: a 64 px cell shown at a size a person can paint on


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights")
    ap.add_argument("--steps", type=int, default=OPTIONS["steps"].default, help="DDIM steps for inpainting")
    ap.add_argument("--texture", help="texture-stage weights: also write docs/texture.png")
    ap.add_argument("--generate-steps", type=int, default=GENERATE_STEPS, help="sampler steps for whole cells (the generate default sampler)")
    ap.add_argument("--only-domain", action="store_true", help="write docs/domain_shift.png only")
    a = ap.parse_args()
    torch.set_num_threads(2)
    inp = Inpainter(a.weights, "cpu")
    if a.only_domain:
        return domain_picture(a, inp)
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
        one = inp.inpaint(img, m, InpaintOptions(steps=a.steps, seed=1)).image  # the default: one sample
        res = inp.inpaint(img, m, InpaintOptions(steps=a.steps, seed=1, samples=8, combine="mean"))
        out.append([img, overlay(img, m), one, res.image, heatmap(res.std)])
    save_png(grid(out, pad=4), ROOT / "docs" / "before_after.png")
    print("wrote docs/samples.png, docs/before_after.png, examples/cell.png, examples/cell.mask.png")
    domain_picture(a, inp)
    if a.texture:
        texture_picture(a, inp)
        grain_picture(a, inp)


def other_lab(cell: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A generated 64 px cell as another lab's microscope might show it: at 1.35x the PBC scale
    (486 px for PBC's 360), restained in HED space and under a warmer, dimmer light."""
    from shared.imaging.colour import hed_to_rgb, rgb_to_hed, to_uint8

    big = np.asarray(Image.fromarray(cell).resize((486, 486), Image.Resampling.LANCZOS))
    hed = rgb_to_hed(big) * np.array([1.3, 0.75, 1.0])
    return to_uint8(hed_to_rgb(hed) * np.array([1.0, 0.88, 0.78]) * rng.uniform(0.95, 1.0))


def domain_picture(a, inp: Inpainter) -> None:
    from gpu_job.inpainter.classical import biharmonic

    rng = np.random.default_rng(11)
    rows = []
    for i, label in enumerate(("neutrophil", "lymphocyte", "eosinophil")):
        img = other_lab(inp.generate(1, label, seed=300 + i, steps=a.generate_steps)[0], rng)
        yy, xx = np.ogrid[:486, :486]
        m = ((yy - 70) ** 2 + (xx - 80) ** 2 <= 30**2) | ((yy - 250) ** 2 + (xx - 290) ** 2 <= 30**2)  # background | the cell
        before = inp.inpaint(img, m, InpaintOptions(steps=a.steps, seed=1, window=360, normalize="none", fallback=0.0)).image
        alone = inp.inpaint(img, m, InpaintOptions(steps=a.steps, seed=1, fallback=0.0)).image
        now = inp.inpaint(img, m, InpaintOptions(steps=a.steps, seed=1)).image
        rows.append([img, overlay(img, m), biharmonic(img, m), before, alone, now])
    save_png(grid(rows, pad=4), ROOT / "docs" / "domain_shift.png")
    print("wrote docs/domain_shift.png")


def zoom(img: np.ndarray, y: int, x: int, side: int = 120) -> np.ndarray:
    """A side x side crop at (y, x), shown three times as large (nearest: the pixels as they are)."""
    return np.asarray(Image.fromarray(img[y:y + side, x:x + side]).resize((3 * side, 3 * side), Image.Resampling.NEAREST))


def texture_picture(a, inp: Inpainter) -> None:
    from gpu_job.inpainter.texture import Texturer
    from gpu_job.training.texture_stage import coarse_view

    inp.texture_weights = a.texture
    tex = inp.texturer()
    full = 360  # the size of the cells the stages were trained on
    rows = []
    for i, label in enumerate(("eosinophil", "neutrophil", "lymphocyte")):
        cell = inp.generate(1, label, seed=200 + i, steps=a.generate_steps)[0]
        up = coarse_view(np.asarray(Image.fromarray(cell).resize((full, full), Image.Resampling.LANCZOS)))
        redrawn = tex.refine(up, np.ones((full, full), bool), seed=i)
        rows.append([up, redrawn, zoom(up, 120, 120), zoom(redrawn, 120, 120)])
        if i == 0:
            m = np.zeros((full, full), bool)
            m[150:200, 155:210] = True  # part of the cell: a nucleus lobe and its granular cytoplasm
            plain = inp.inpaint(redrawn, m, InpaintOptions(steps=a.steps, seed=1, texture=False, grain=0.0)).image
            textured = inp.inpaint(redrawn, m, InpaintOptions(steps=a.steps, seed=1, texture=True, grain=0.0)).image
            inpaint_row = [overlay(redrawn, m), zoom(redrawn, 120, 120), zoom(plain, 120, 120), zoom(textured, 120, 120)]
    rows.append(inpaint_row)
    save_png(grid(rows, pad=4), ROOT / "docs" / "texture.png")
    print("wrote docs/texture.png")


def grain_picture(a, inp: Inpainter) -> None:
    """Generated cells at full size (redrawn by the texture stage, as real ones have detail at every
    scale), a blob over the nucleus: the truth, biharmonic, no grain, the default; 3x crops."""
    from gpu_job.inpainter.classical import biharmonic
    from gpu_job.training.texture_stage import coarse_view

    full, rows = 360, []
    yy, xx = np.ogrid[:full, :full]
    m = (yy - 180) ** 2 + (xx - 180) ** 2 <= 45**2
    for i, label in enumerate(("neutrophil", "lymphocyte", "monocyte")):
        cell = inp.generate(1, label, seed=400 + i, steps=a.generate_steps)[0]
        real = inp.texturer().refine(coarse_view(np.asarray(Image.fromarray(cell).resize((full, full), Image.Resampling.LANCZOS))),
                                     np.ones((full, full), bool), seed=i)
        fills = [biharmonic(real, m)] + [inp.inpaint(real, m, InpaintOptions(steps=a.steps, seed=1, grain=g)).image for g in (0.0, 1.0)]
        rows.append([overlay(real, m), zoom(real, 120, 120)] + [zoom(f, 120, 120) for f in fills])
    save_png(grid(rows, pad=4), ROOT / "docs" / "grain.png")
    print("wrote docs/grain.png")


if __name__ == "__main__":
    main()
