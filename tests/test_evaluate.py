"""`cellpaint evaluate` end to end on a tiny model and synthetic class folders."""
import json

import numpy as np
import pytest
from PIL import Image

from cellpaint.cli import main
from shared.options import OPTIONS
from tests.conftest import synthetic_cell


def test_evaluate_reports_every_method(tmp_path, tiny_weights, rng):
    for c in ("alpha", "beta"):
        (tmp_path / "val" / c).mkdir(parents=True)
        Image.fromarray(synthetic_cell(rng, 60, 64)).save(tmp_path / "val" / c / "0.jpg")
    out = tmp_path / "eval"
    rc = main(["evaluate", "--data", str(tmp_path / "val"), "--out", str(out), "--weights", str(tiny_weights),
               "--per-class", "1", "--steps", "2", "4", "--ddpm-images", "1", "--ddpm-steps", "3", "--ddpm-mean-steps", "3", "--mean-of", "2", "--device", "cpu",
               "--variant", "one-tex3:texture_steps=3"])
    assert rc == 0
    rep = json.loads((out / "metrics.json").read_text())
    methods = set(rep["summary"])
    assert {"cellpaint default", "cellpaint DDIM-2", "cellpaint DDIM-4", f"cellpaint DDIM-{OPTIONS['steps'].default} mean of 2", f"cellpaint DDIM-{OPTIONS['steps'].default} mean of 2, no seam fix",
            "cellpaint DDPM-3", "cellpaint DDPM-3 mean of 2", "cellpaint DDPM-1000", "mean colour", "OpenCV Telea", "OpenCV NS", "biharmonic", "harmonic + biharmonic",
            "cellpaint one-tex3"} == methods
    for meth, kinds in rep["summary"].items():
        assert kinds["all"]["max_err_outside"] == 0, meth  # nothing outside the mask changes
        assert kinds["all"]["n"] == (6 if meth == "cellpaint DDPM-1000" else 12)  # strided DDPM: every pair and set(kinds) == {"box", "ellipse", "stroke", "all"}
    assert all(d["all"]["n"] == 6 for d in rep["ddpm_subset"].values())  # every method on DDPM's images
    assert {(r["sampler"], r["batch"]) for r in rep["speed"]} == {(s, b) for s in ("DDIM-2", "DDIM-4", f"DDIM-{OPTIONS['steps'].default} mean of 2", "DDPM-1000") for b in (1, 16)}
    for name in ("metrics.md", "quality_vs_steps.png", "before_after.png"):
        assert (out / name).stat().st_size > 0


def test_detail_ratio_tells_texture_from_smoothness(rng):
    import numpy as np

    from gpu_job.data.metrics import detail_ratio, masked_metrics

    ref = rng.integers(0, 256, (40, 40, 3)).astype(np.uint8)  # all texture
    mask = np.zeros((40, 40), bool)
    mask[10:30, 10:30] = True
    flat = ref.copy()
    flat[mask] = 128
    assert detail_ratio(ref, ref, mask) == 1.0
    assert detail_ratio(ref, flat, mask) == 0.0  # the rim, where kept pixels mix in, is not counted
    assert masked_metrics(ref, flat, mask)["detail"] == 0.0
    thin = np.zeros((40, 40), bool)
    thin[5, 5:30] = True  # no pixel with 4 masked neighbours
    assert np.isnan(detail_ratio(ref, flat, thin))


def test_masked_psnr_counts_only_the_mask(rng):
    from gpu_job.data.metrics import masked_metrics, masked_psnr

    ref = rng.integers(0, 200, (24, 24, 3)).astype(np.uint8)
    mask = np.zeros((24, 24), bool)
    mask[4:12, 6:20] = True
    out = ref.copy()
    out[mask] += 9  # off by 9 levels inside the mask
    out[~mask] = 0  # and wholly wrong outside it, which the score must not see
    assert masked_psnr(ref, out, mask) == pytest.approx(10 * np.log10(255**2 / 81))
    assert masked_psnr(ref, out, mask) == pytest.approx(masked_metrics(ref, out, mask)["psnr"])


def test_speckle_limit_flags_noisy_cells_not_smooth_ones(rng):
    from gpu_job.data.metrics import cell_detail, speckle_limit

    smooth = np.stack([np.full((16, 16, 3), v, np.uint8) for v in range(100, 200)])
    smooth[:, 4:12, 4:12] += 30  # a "nucleus": some edges, no grain
    noisy = rng.integers(0, 256, (3, 16, 16, 3)).astype(np.uint8)
    limit = speckle_limit(smooth)
    assert (cell_detail(smooth) <= limit).all() and (cell_detail(noisy) > limit).all()


def test_label_truth_tells_each_image_its_own_class():
    from gpu_job.evaluation.domain_shift import parse_variant
    from gpu_job.evaluation.evaluate import told
    from shared.options import InpaintOptions

    name, opts = parse_variant("told:label=truth,steps=2")
    per_pair = told(InpaintOptions(**opts), ["ig", None, "monocyte"])
    assert name == "told" and [o.label for o in per_pair] == ["ig", "none", "monocyte"]
    assert all(o.steps == 2 for o in per_pair)
    auto = InpaintOptions()
    assert told(auto, ["ig"]) is auto and auto.label == "auto"  # anything else is left as it is
