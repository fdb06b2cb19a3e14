"""`cellpaint evaluate --domain-shift` and the out-of-distribution flag, on inputs made here: a
folder of smear 'photos' with VOC boxes, and class folders of synthetic cells."""
import json

import numpy as np
import pytest
from PIL import Image

from gpu_job.evaluation.domain_shift import INVENTED, kid, nucleus_share, parse_variant, shift
from tests.conftest import smear, synthetic_cell, synthetic_field, write_voc


@pytest.fixture
def folders(tmp_path, rng):
    (tmp_path / "bccd").mkdir()
    for i in range(2):
        img, boxes = smear(rng)
        Image.fromarray(img).save(tmp_path / "bccd" / f"BloodImage_{i:05d}.jpg", quality=95)
        write_voc(tmp_path / "bccd" / f"BloodImage_{i:05d}.xml", boxes, *img.shape[:2])
    (tmp_path / "chula" / "fields").mkdir(parents=True)
    (tmp_path / "chula" / "labels").mkdir()
    for i in range(1, 6):  # photo 5 is the one held back from training, and measured on
        img = synthetic_field(rng)
        Image.fromarray(img).save(tmp_path / "chula" / "fields" / f"{i}.jpg", quality=95)
        red = np.argwhere((img[..., 1] < 140)[::40, ::40]) * 40  # points on red discs
        (tmp_path / "chula" / "labels" / f"{i}.txt").write_text("".join(f"{x} {y} 0\n" for y, x in red))
    for split, n in (("train", 6), ("val", 1)):
        for c in ("alpha", "beta"):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(synthetic_cell(rng, 120, 124)).save(tmp_path / split / c / f"{i}.jpg", quality=95)
    return tmp_path


def test_nucleus_colour_and_the_kernel_distance(rng):
    img, _ = smear(rng)
    region = np.zeros(img.shape[:2], bool)
    region[140:160, 190:210] = True  # inside the nucleus
    assert nucleus_share(img, region) > 0.9
    region[:] = False
    region[5:25, 5:25] = True  # background
    assert nucleus_share(img, region) < INVENTED
    a, b = rng.normal(0, 1, (60, 16)), rng.normal(0, 1, (60, 16))
    assert abs(kid(a, b)) < kid(a, b + 1.5)  # one distribution ~0; a shifted one clearly more


def test_shifts_change_what_they_should(rng):
    img = synthetic_cell(rng, 60, 64)
    assert np.array_equal(shift(img, "none", rng), img)
    assert shift(img, "scale", rng).shape == (90, 96, 3)
    assert shift(img, "small", rng).shape == (36, 38, 3)  # 0.6x: a lower-power objective
    assert shift(img, "stain", rng).shape == img.shape and not np.array_equal(shift(img, "stain", rng), img)
    assert np.abs(np.diff(shift(img, "blur", rng).astype(float), axis=1)).mean() < np.abs(np.diff(img.astype(float), axis=1)).mean()
    soft = shift(img, "soft", rng)  # restained and softer: the same size, less fine detail than the restained cell
    assert soft.shape == img.shape and not np.array_equal(soft, img)
    assert np.abs(np.diff(soft.astype(float), axis=1)).mean() < 0.8 * np.abs(np.diff(img.astype(float), axis=1)).mean()
    with pytest.raises(ValueError, match="unknown shift 'fog'"):
        shift(img, "fog", rng)
    assert parse_variant("one:combine=first,samples=1,texture=false,window=auto") == ("one", {"combine": "first", "samples": 1, "texture": False, "window": None})
    with pytest.raises(ValueError, match="unknown option 'colour'"):
        parse_variant("x:colour=red")


def test_each_region_is_compared_with_biharmonic_on_that_region(rng):
    from gpu_job.evaluation.domain_shift import Case, Region, score

    img = np.full((64, 128, 3), 200, np.uint8)
    img[:, 64:] = rng.integers(0, 255, (64, 64, 3))  # a plain half and a noisy half
    plain, noisy = np.zeros((64, 128), bool), np.zeros((64, 128), bool)
    plain[20:40, 20:40], noisy[20:40, 84:104] = True, True
    case = Case("bccd", "two", img, [Region("background", noisy), Region("background", plain)])
    bih = img.copy()
    bih[noisy], bih[plain] = 128, 200  # a poor fill of the noisy disk, a perfect one of the plain
    rows = score([case], {"biharmonic": [bih], "same": [bih.copy()]}, net=None)
    assert not any(r["below_biharmonic"] for r in rows)  # the same fill is never 6 dB below itself


def test_white_cell_crops_are_masked_as_people_draw(folders):
    from gpu_job.evaluation.domain_shift import bccd_crop_cases

    cases = bccd_crop_cases(folders / "bccd", 2, seed=0)
    assert [c.regions[0].kind for c in cases] == ["blob", "box", "strokes"] * 2 and all(len(c.regions) == 1 for c in cases)
    for c in cases:
        h, w = c.image.shape[:2]
        assert h == w == 234  # 2.6x the white cell's 90-px box, around it
        m = c.mask
        assert 0.005 < m.mean() < 0.4 and m[h // 2 - 45 : h // 2 + 45, w // 2 - 45 : w // 2 + 45].mean() > 0.5 * m.mean()  # over the cell


def test_pbc_cells_are_masked_as_the_crops_are(folders):
    from gpu_job.evaluation.domain_shift import pbc_crop_cases

    cases = pbc_crop_cases(folders / "val", 1, ("none", "soft"), seed=0)
    assert [c.source for c in cases] == ["pbc crops:none"] * 6 + ["pbc crops:soft"] * 6  # 2 classes x 3 masks, per shift
    assert [c.regions[0].kind for c in cases[:6]] == ["blob", "box", "strokes"] * 2
    for c in cases:
        h, w = c.image.shape[:2]
        assert h == w == 120  # the 120x124 cell, squared around its middle
        m = c.mask
        assert 0.005 < m.mean() < 0.4 and m[30:90, 30:90].mean() > 0.5 * m.mean()  # over the cell in the middle
    assert np.array_equal(cases[0].mask, cases[6].mask) and not np.array_equal(cases[0].image, cases[6].image)  # same masks, shifted cell


def test_crops_script_writes_the_crops_that_are_measured(folders, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    from gpu_job.evaluation.domain_shift import bccd_crop_cases

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "crops"
    run = subprocess.run([sys.executable, "scripts/bccd_crops.py", str(folders / "bccd"), "--skip", "1", "--out", str(out)],
                         capture_output=True, text=True, cwd=root, timeout=120)
    assert run.returncode == 0, run.stderr
    assert [f.name for f in out.iterdir()] == ["BloodImage_00001.png"]  # --skip 1 passes over the first photo
    crop = np.asarray(Image.open(out / "BloodImage_00001.png"))
    assert np.array_equal(crop, bccd_crop_cases(folders / "bccd", 1, seed=0, skip=1)[0].image)


def test_domain_shift_report(folders, tiny_weights, monkeypatch):
    from cellpaint.cli import main

    monkeypatch.chdir(folders)  # the classifier's cache goes to ./.cache
    out = folders / "report"
    assert main(["evaluate", "--domain-shift", "--data", str(folders / "val"), "--bccd", str(folders / "bccd"), "--chula", str(folders / "chula"), "--train-data", str(folders / "train"),
                 "--images", "2", "--crops", "2", "--per-class", "1", "--pbc-crops", "1", "--shifts", "none", "blur", "--variant", "one:samples=1,combine=first,texture=false",
                 "--weights", str(tiny_weights), "--out", str(out), "--device", "cpu"]) == 0
    rep = json.loads((out / "metrics.json").read_text())
    s = rep["summary"]
    assert set(s) == {"cellpaint default", "cellpaint one", "biharmonic", "harmonic + biharmonic", "OpenCV Telea"}
    assert {"bccd background", "bccd wbc", "pbc wbc", "pbc (blur) wbc", "chula background", "chula (cast) all",
            "bccd crops blob", "bccd crops box", "bccd crops strokes", "pbc crops all", "pbc crops (blur) strokes"} <= set(s["biharmonic"])
    assert {r["case"] for r in rep["rows"] if r.get("source", "").startswith("chula")} and rep["config"]["hold_every"] == 5
    rows = [r for r in rep["rows"] if "kind" in r]
    assert all(0 < r["psnr"] < 100 and 0 <= r["fill_nucleus"] <= 1 for r in rows)
    assert all(not r["below_biharmonic"] for r in rows if r["method"] == "biharmonic")  # itself, by definition
    assert all("class_kept" in r for r in rows if r["kind"] == "wbc")
    assert (out / "fills.png").exists() and "invented" in (out / "metrics.md").read_text()


def test_realism_report(folders, tiny_weights, monkeypatch):
    from cellpaint.cli import main

    monkeypatch.chdir(folders)
    out = folders / "realism"
    assert main(["evaluate", "--realism", "--data", str(folders / "val"), "--chula", str(folders / "chula"), "--train-data", str(folders / "train"),
                 "--cells", "10", "--fields", "1", "--weights", str(tiny_weights), "--out", str(out), "--device", "cpu",
                 "--variant", "plain:texture=false", "--cnn-epochs", "1"]) == 0
    rep = json.loads((out / "realism.json").read_text())
    assert set(rep["sources"]) == {"pbc", "chula"}
    m = rep["sources"]["pbc"]["methods"]
    assert set(m) == {"cellpaint default", "cellpaint plain", "biharmonic"}
    assert all(0 <= r["probe"] <= 1 and 0 <= r["cnn"] <= 1 for r in m.values())
    assert (out / "easiest-pbc.png").exists() and rep["sources"]["chula"]["chance_band"] > 0
