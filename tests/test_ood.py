"""The out-of-distribution flag (gpu_job/inpainter/ood.py): a slide lit unlike the training set's is flagged,
one lit like it is not, and the flag reaches the inpainting result."""
import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from gpu_job.inpainter.ood import MESSAGE, OODScorer, classifier, features, leaning_message
from shared.imaging.colour import background


def slide(rng, light, n=64):
    """A 64 px field: a slide of colour `light` with a darker blob (a cell) on it."""
    img = np.clip(np.asarray(light, float) + rng.normal(0, 2, (n, n, 3)), 0, 255)
    yy, xx = np.ogrid[:n, :n]
    img[(yy - 32) ** 2 + (xx - 30) ** 2 < 15**2] = (150, 90, 160)
    return img.astype(np.uint8)


def fitted(tmp_path, rng):
    """OOD weights fitted as fit_ood fits them, on synthetic 'training' slides."""
    torch.manual_seed(0)
    net = classifier(2).eval()
    train = np.stack([slide(rng, (228 + rng.normal(0, 2), 222, 230)) for _ in range(32)])
    f = features(net, train)
    cov = np.eye(f.shape[1]) * f.var(0).mean()  # 32 slides are too few for a full covariance
    light = np.stack([background(x.reshape(-1, 3)) for x in train])
    path = tmp_path / "ood.safetensors"
    save_file({**net.state_dict(), "stats.feature_mean": torch.from_numpy(f.mean(0)).float(),
               "stats.feature_precision": torch.from_numpy(np.linalg.inv(cov)).float()}, str(path))
    record = {"classes": ["a", "b"], "colour": {"background": {"median": np.median(light, 0).tolist(), "spread": light.std(0).tolist()}},
              "thresholds": {"colour": 1.0, "feature": 1.0}}
    path.with_suffix(".json").write_text(json.dumps(record))
    scorer = OODScorer(path)
    val = np.stack([slide(rng, (228 + rng.normal(0, 2), 222, 230)) for _ in range(32)])  # held out, as PBC val is
    known = np.ones(val.shape[:3], bool)
    known[:, 20:40, 20:40] = False  # masked as the pairs are
    c, d = scorer.distances(val, known)
    record["thresholds"] = {"colour": 1.5 * float(c.max()), "feature": 1.5 * float(d.max())}
    path.with_suffix(".json").write_text(json.dumps(record))
    return path


def test_a_slide_under_another_light_is_flagged(tmp_path, rng):
    scorer = OODScorer(fitted(tmp_path, rng))
    known = np.ones((1, 64, 64), bool)
    known[0, 20:40, 20:40] = False  # the restored region does not count
    like = scorer.score(slide(rng, (228, 222, 230))[None], known)
    warm = scorer.score(slide(rng, (240, 200, 160))[None], known)  # a yellow lamp, as on many smear photos
    assert not like["unlike_training"] and "message" not in like
    assert warm["unlike_training"] and warm["message"] == MESSAGE and warm["colour"] > 1


def test_the_flag_reaches_the_result(tmp_path, tiny_weights, rng):
    from gpu_job.inpainter.inpaint import Inpainter
    from shared.options import InpaintOptions

    inp = Inpainter(tiny_weights, "cpu", ood_weights=fitted(tmp_path, rng))
    img = slide(rng, (240, 200, 160))
    mask = np.zeros((64, 64), bool)
    mask[10:20, 10:20] = True
    res = inp.inpaint(img, mask, InpaintOptions(steps=2, texture=False, fallback=0.0))
    assert res.ood["unlike_training"] and res.ood["message"] == MESSAGE and "fallback" not in res.ood


def test_an_unlike_image_leans_on_the_classical_fill(tmp_path, tiny_weights, rng):
    from gpu_job.inpainter.inpaint import Inpainter
    from gpu_job.inpainter.classical import classical_fill
    from shared.imaging.preprocess import thin_px
    from shared.options import InpaintOptions

    for d in ("strict", "lenient"):
        (tmp_path / d).mkdir()
    strict, lenient = fitted(tmp_path / "strict", rng), fitted(tmp_path / "lenient", rng)
    record = json.loads(lenient.with_suffix(".json").read_text())
    record["thresholds"] = {k: v * 1e6 for k, v in record["thresholds"].items()}  # nothing is unlike enough
    lenient.with_suffix(".json").write_text(json.dumps(record))
    img = slide(rng, (240, 200, 160))
    mask = np.zeros((64, 64), bool)
    mask[10:20, 10:20] = True
    for weights, flagged in ((strict, True), (lenient, False)):
        inp = Inpainter(tiny_weights, "cpu", ood_weights=weights)
        alone = inp.inpaint(img, mask, InpaintOptions(steps=2, texture=False, fallback=0.0)).image
        res = inp.inpaint(img, mask, InpaintOptions(steps=2, texture=False, fallback=0.7))
        assert res.ood["unlike_training"] is flagged, res.ood
        np.testing.assert_array_equal(res.image[~mask], img[~mask])  # outside the mask nothing moves
        if not flagged:  # an image like the training ones keeps the model's fill
            np.testing.assert_array_equal(res.image, alone)
            continue
        assert res.ood["fallback"] == 0.7 and res.ood["message"] == leaning_message(0.7)
        thin = thin_px(64, inp.size)  # as the seam fix judges "thinner than the model can draw"
        want = 0.3 * alone[mask].astype(float) + 0.7 * classical_fill(img, mask, thin)[mask]
        assert np.abs(res.image[mask] - want).max() <= 1
        assert np.abs(alone[mask].astype(float) - want).max() > 5  # and that is a change


def test_the_classical_share_grows_with_how_unlike_the_image_is():
    from gpu_job.inpainter.ood import lean_share

    assert lean_share(1.0, 0.9, 2.0) == 0.0 and lean_share(0.5, 0.9, 2.0) == 0.0  # at and below the threshold: the model's fill
    assert lean_share(1.5, 0.9, 2.0) == pytest.approx(0.45) and lean_share(2.0, 0.9, 2.0) == pytest.approx(0.9)
    assert lean_share(10.0, 0.9, 2.0) == pytest.approx(0.9) and lean_share(10.0, 0.0, 2.0) == 0.0  # fallback 0: no classical share at all
    assert lean_share(1.01, 0.9, 1.0) == pytest.approx(0.9)  # all or nothing


def test_an_unlike_image_is_filled_by_the_model_of_more_microscopes(tmp_path, tiny_weights, tiny_texture_weights, rng):
    from gpu_job.inpainter.inpaint import Inpainter
    from gpu_job.inpainter.weights import load_weights, read_config, save_weights
    from shared.options import InpaintOptions

    model, diff, record = load_weights(tiny_weights)
    torch.manual_seed(5)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)  # another model: another fill
    fields = tmp_path / "fields.safetensors"
    save_weights(fields, model, diff.cfg, record["classes"], {"training": {"steps": 7}})
    for d in ("strict", "lenient"):
        (tmp_path / d).mkdir()
    strict, lenient = fitted(tmp_path / "strict", rng), fitted(tmp_path / "lenient", rng)
    record = json.loads(lenient.with_suffix(".json").read_text())
    record["thresholds"] = {k: v * 1e6 for k, v in record["thresholds"].items()}
    lenient.with_suffix(".json").write_text(json.dumps(record))
    img = slide(rng, (240, 200, 160))
    mask = np.zeros((64, 64), bool)
    mask[10:20, 10:20] = True
    opts = InpaintOptions(steps=2, texture=False, fallback=0.0)

    routed = Inpainter(tiny_weights, "cpu", ood_weights=strict, fields_weights=fields).inpaint(img, mask, opts)
    assert routed.ood["unlike_training"] and routed.ood["model"] == "more microscopes"
    assert routed.model["sha256"] == read_config(fields)["sha256"] and routed.model["trained_steps"] == 7
    # the other model's own fill, without grain (grain would copy the other camera's noise)
    other = Inpainter(fields, "cpu", ood_weights=lenient).inpaint(img, mask, InpaintOptions(steps=2, texture=False, fallback=0.0, grain=0))
    np.testing.assert_array_equal(routed.image, other.image)
    # ...and without the texture stage (it drew detail those softer photos lack); a pair not routed gets it
    textured = InpaintOptions(steps=2, fallback=0.0)
    np.testing.assert_array_equal(Inpainter(tiny_weights, "cpu", ood_weights=strict, fields_weights=fields,
                                            texture_weights=tiny_texture_weights).inpaint(img, mask, textured).image, routed.image)
    assert not np.array_equal(Inpainter(tiny_weights, "cpu", ood_weights=lenient, texture_weights=tiny_texture_weights)
                              .inpaint(img, mask, textured).image, Inpainter(tiny_weights, "cpu", ood_weights=lenient).inpaint(img, mask, opts).image)

    like = Inpainter(tiny_weights, "cpu", ood_weights=lenient, fields_weights=fields).inpaint(img, mask, opts)
    own = Inpainter(tiny_weights, "cpu", ood_weights=lenient).inpaint(img, mask, opts)
    assert like.model is None and "model" not in like.ood
    np.testing.assert_array_equal(like.image, own.image)
    assert not np.array_equal(like.image, routed.image)
    # beside weights other than the shipped first stage (a lab's, a run's), nothing is routed
    assert Inpainter(tiny_weights, "cpu", ood_weights=strict).fields() is None


def test_a_routed_pair_is_told_no_class(tmp_path, tiny_weights, rng):
    """The labeller knows PBC's cells only: a pair filled by the model of more microscopes gets no
    label under "auto", even from a labeller that is always sure (on other microscopes' fields it
    called plain background a platelet, and the model drew a faint cell there)."""
    from types import SimpleNamespace

    from gpu_job.inpainter.inpaint import Inpainter
    from gpu_job.inpainter.weights import load_weights, save_weights
    from shared.options import InpaintOptions
    from test_labeler import CLASSES, reads_labels, save

    model, diff, record = load_weights(tiny_weights)
    fields = tmp_path / "fields.safetensors"
    save_weights(fields, model, diff.cfg, record["classes"], {"training": {"steps": 7}})
    (tmp_path / "strict").mkdir()
    (tmp_path / "sure").mkdir()
    strict = fitted(tmp_path / "strict", rng)
    torch.manual_seed(0)
    sure = save(tmp_path / "sure", classifier(len(CLASSES), inputs=4).eval(), CLASSES, 0.0)
    img = slide(rng, (240, 200, 160))
    mask = np.zeros((64, 64), bool)
    mask[10:20, 10:20] = True
    opts = dict(steps=2, texture=False, fallback=0.0)

    inp = Inpainter(tiny_weights, "cpu", ood_weights=strict, fields_weights=fields, labeler_weights=sure)
    reads_labels(SimpleNamespace(model=inp.fields()[0]))  # the routed model reads its label
    res = inp.inpaint(img, mask, InpaintOptions(label="auto", **opts))
    assert res.ood["model"] == "more microscopes" and res.labels == ["none"]
    np.testing.assert_array_equal(res.image, inp.inpaint(img, mask, InpaintOptions(label="none", **opts)).image)
    # the same labeller does label a pair the PBC model fills, so "none" above is the routing's
    plain = Inpainter(tiny_weights, "cpu", labeler_weights=sure).inpaint(img, mask, InpaintOptions(label="auto", **opts))
    assert plain.labels[0] in CLASSES
