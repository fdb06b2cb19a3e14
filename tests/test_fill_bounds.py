"""scripts/fill_bounds.py: the truth-picked bounds of a model's fills over white-cell crops, on
pixels and a folder of smear 'photos' made here."""
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from tests.conftest import smear, write_voc

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import fill_bounds  # noqa: E402


def test_bounds_rank_as_their_definitions_say(rng):
    truth = rng.uniform(60, 200, (400, 3))
    fill = truth + (12.0, -8.0, 5.0) + rng.normal(0, 6, truth.shape)  # a colour cast and noise
    classical = np.full_like(truth, 130.0) + rng.normal(0, 2, truth.shape)  # smooth, and further off
    b = fill_bounds.bounds(truth, fill, classical)
    assert b["less_mean_error"] > b["alone"] + 3  # the cast was most of the error
    assert b["best_blend"] >= max(b["alone"], b["classical"])  # shares 0 and 1 are among the blends
    assert b["alone"] > b["classical"]
    same = fill_bounds.bounds(truth, truth + 4.0, truth + 4.0)
    assert same["less_mean_error"] > 120  # an error that is only a cast: none left but rounding
    assert abs(same["best_blend"] - same["alone"]) < 1e-9


def test_the_script_fills_crops_and_writes_the_table_and_plot(tiny_weights, tmp_path, rng, capsys):
    (tmp_path / "bccd").mkdir()
    for i in range(2):
        img, boxes = smear(rng)
        Image.fromarray(img).save(tmp_path / "bccd" / f"BloodImage_{i:05d}.jpg", quality=95)
        write_voc(tmp_path / "bccd" / f"BloodImage_{i:05d}.xml", boxes, *img.shape[:2])
    rows = fill_bounds.main([str(tmp_path / "bccd"), "--crops", "2", "--model", str(tiny_weights), "--model", str(tiny_weights),
                             "--plot", str(tmp_path / "b.png")])
    assert list(rows) == [str(tiny_weights), "the mean of 2 models"]
    assert all(len(per) == 6 for per in rows.values())  # 2 crops x blob, box, strokes
    for per in rows.values():
        for r in per:
            assert r["best_blend"] >= max(r["alone"], r["classical"]) - 1e-9 and r["less_mean_error"] >= r["alone"] - 1e-9
    # The same weights twice fill alike (seed 0), so their mean scores as either.
    a, m = (np.mean([r["alone"] for r in per]) for per in rows.values())
    assert abs(a - m) < 0.05
    out = capsys.readouterr().out
    assert "| biharmonic |" in out and "| the mean of 2 models |" in out and "| blob | box | strokes | all |" in out
    assert Image.open(tmp_path / "b.png").size[0] > 200
