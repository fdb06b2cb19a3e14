"""Calibrate and check the cell-size estimate of shared/imaging/scale.py.

    .venv/bin/python scripts/measure_cell_scale.py [--pbc ../shared/data/pbc/train] [--bccd ../shared/data/bccd] [--n 400]

Prints the median cell width on PBC images (the reference, `PBC_CELL_PX`), its spread, and on
the BCCD smear photos the estimate beside the median red-cell box of their VOC annotations (which
the estimate never sees), with the seconds per image.
"""
from __future__ import annotations

import argparse
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from shared.imaging.images import load_image
from shared.imaging.scale import PBC_CELL_PX, cell_px


def rbc_box(xml: Path) -> float:
    sides = [max(int(b.find("xmax").text) - int(b.find("xmin").text), int(b.find("ymax").text) - int(b.find("ymin").text))
             for o in ET.parse(xml).getroot().iter("object") if o.find("name").text == "RBC" for b in [o.find("bndbox")]]
    return float(np.median(sides)) if sides else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pbc", default="../shared/data/pbc/train")
    ap.add_argument("--bccd", default="../shared/data/bccd")
    ap.add_argument("--n", type=int, default=400)
    a = ap.parse_args()
    files = sorted(Path(a.pbc).glob("*/*.jpg"))
    pick = np.random.default_rng(0).choice(len(files), min(a.n, len(files)), replace=False)
    t0 = time.time()
    pbc = np.array([cell_px(load_image(files[i])) or np.nan for i in pick], float)
    s = (time.time() - t0) / len(pick)
    q = np.nanpercentile(pbc, [10, 50, 90])
    print(f"PBC ({len(pick)} images): cell width median {q[1]:.1f} px, p10 {q[0]:.1f}, p90 {q[2]:.1f}; {s:.3f} s an image; PBC_CELL_PX = {PBC_CELL_PX}")
    rows = []
    t0 = time.time()
    for f in sorted(Path(a.bccd).glob("*.jpg")):
        est = cell_px(load_image(f))
        rows.append((est or np.nan, rbc_box(f.with_suffix(".xml"))))
    s = (time.time() - t0) / len(rows)
    est, box = np.array(rows).T
    ratio = est / box
    print(f"BCCD ({len(rows)} photos): estimate median {np.nanmedian(est):.1f} px, red-cell box median {np.nanmedian(box):.1f} px; "
          f"estimate/box p10 {np.nanpercentile(ratio, 10):.2f}, median {np.nanmedian(ratio):.2f}, p90 {np.nanpercentile(ratio, 90):.2f}; "
          f"scale against PBC: median {np.nanmedian(est) / PBC_CELL_PX:.2f}; {s:.3f} s an image")


if __name__ == "__main__":
    main()
