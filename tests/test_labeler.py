"""The labeller (gpu_job/inpainter/labeler.py): it learns a class that shows around a mask, it says nothing
where it is unsure, and "auto" tells the model the class it guessed, window by window."""
import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from gpu_job.evaluation.classifier import train_classifier
from gpu_job.evaluation.fit_labeler import cell_mask, threshold
from gpu_job.inpainter.labeler import Labeler, labeler_input
from gpu_job.inpainter.ood import classifier

CLASSES = ["basophil", "eosinophil", "erythroblast", "ig", "lymphocyte", "monocyte", "neutrophil", "platelet"]


def cell(rng, kind: int, n: int = 64) -> np.ndarray:
    """A pale slide with a cell whose rim is purple (kind 0) or pink (kind 1): a class that a mask
    over the middle leaves visible."""
    img = np.clip(np.asarray((225, 220, 228), float) + rng.normal(0, 3, (n, n, 3)), 0, 255)
    yy, xx = np.ogrid[:n, :n]
    r2 = (yy - n / 2) ** 2 + (xx - n / 2) ** 2
    img[r2 < (0.4 * n) ** 2] = (120, 60, 170) if kind == 0 else (230, 120, 140)
    img[r2 < (0.2 * n) ** 2] = (200, 180, 200)
    return img.astype(np.uint8)


def save(tmp_path, net, classes, thr) -> str:
    path = tmp_path / "labeler.safetensors"
    save_file({k: v.detach().contiguous() for k, v in net.state_dict().items()}, str(path))
    path.with_suffix(".json").write_text(json.dumps({"classes": classes, "threshold": thr}))
    return str(path)


def reads_labels(inp) -> None:
    """The tiny model's residual branches start at zero, so it ignores its label: open them."""
    from gpu_job.inpainter.model import ResBlock

    torch.manual_seed(1)
    with torch.no_grad():
        for m in inp.model.modules():
            if isinstance(m, ResBlock):
                torch.nn.init.normal_(m.conv2.weight, std=0.05)
        inp.model.label_emb.weight.mul_(10)


def test_the_input_blanks_the_unknown_pixels_and_adds_the_mask(rng):
    field = rng.integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)
    unknown = np.zeros((1, 64, 64), bool)
    unknown[0, 10:30, 10:30] = True
    x = labeler_input(field, unknown)
    assert x.shape == (1, 4, 64, 64)
    assert torch.equal(x[0, 3] > 0, torch.from_numpy(unknown[0]))
    inside = x[0, :3, 10:30, 10:30].flatten(1)
    assert torch.allclose(inside, inside[:, :1].expand_as(inside))  # one colour where the pixels are unknown


def test_it_learns_a_class_that_shows_around_the_mask(tmp_path, rng):
    images = np.stack([cell(rng, k) for k in (0, 1) * 64])
    labels = np.array([0, 1] * 64)
    net, _ = train_classifier(images, labels, 2, epochs=25, seed=0, masks=cell_mask)  # 50 steps
    lab = Labeler(save(tmp_path, net, ["purple", "pink"], 0.5))
    test = np.stack([cell(rng, k) for k in (0, 1) * 8])
    unknown = np.zeros(test.shape[:3], bool)
    unknown[:, 22:42, 22:42] = True  # the middle of every cell
    assert lab.guess(test, unknown) == ["purple", "pink"] * 8


def test_the_threshold_is_the_least_confidence_that_is_right_often_enough():
    conf = np.array([0.55, 0.6, 0.72, 0.8, 0.9, 0.95, 0.99])
    right = np.array([False, False, True, True, True, True, True])
    assert threshold(conf, right) == 0.65
    assert threshold(conf, np.zeros(7, bool)) == 1.0  # never right: never sure


def test_auto_tells_the_model_the_guessed_class(tmp_path, tiny_weights, rng):
    from gpu_job.inpainter.inpaint import Inpainter
    from shared.options import InpaintOptions

    torch.manual_seed(0)
    net = classifier(len(CLASSES), inputs=4).eval()
    img = cell(rng, 0)
    mask = np.zeros((64, 64), bool)
    mask[20:40, 24:44] = True
    opts = dict(steps=2, texture=False, fallback=0.0)
    (tmp_path / "sure").mkdir()
    sure = Inpainter(tiny_weights, "cpu", labeler_weights=save(tmp_path / "sure", net, CLASSES, 0.0))  # always sure
    reads_labels(sure)
    auto = sure.inpaint(img, mask, InpaintOptions(label="auto", **opts))
    (guessed,) = auto.labels
    assert guessed in CLASSES
    told = sure.inpaint(img, mask, InpaintOptions(label=guessed, **opts))
    assert np.array_equal(auto.image, told.image)
    other = next(c for c in CLASSES if c != guessed)
    assert not np.array_equal(auto.image, sure.inpaint(img, mask, InpaintOptions(label=other, **opts)).image)

    (tmp_path / "unsure").mkdir()
    unsure = Inpainter(tiny_weights, "cpu", labeler_weights=save(tmp_path / "unsure", net, CLASSES, 1.01))  # never sure
    reads_labels(unsure)
    assert not np.array_equal(unsure.inpaint(img, mask, InpaintOptions(label=guessed, **opts)).image,
                              unsure.inpaint(img, mask, InpaintOptions(label="none", **opts)).image)
    res = unsure.inpaint(img, mask, InpaintOptions(label="auto", **opts))
    assert res.labels == ["none"]
    assert np.array_equal(res.image, unsure.inpaint(img, mask, InpaintOptions(label="none", **opts)).image)


def test_a_labeller_of_other_classes_is_not_used(tmp_path, tiny_weights):
    from gpu_job.inpainter.inpaint import Inpainter

    net = classifier(2, inputs=4)
    inp = Inpainter(tiny_weights, "cpu", labeler_weights=save(tmp_path, net, ["purple", "pink"], 0.0))
    assert inp.labeler() is None


def test_the_shipped_labeller_fits_the_shipped_weights():
    from gpu_job.inpainter.labeler import DEFAULT_LABELER_WEIGHTS

    if not DEFAULT_LABELER_WEIGHTS.exists():
        pytest.skip("no shipped labeller in gpu_job/weights/")
    from gpu_job.inpainter.weights import load_weights

    _, _, record = load_weights(None, torch.device("cpu"))
    lab = Labeler()
    assert lab.classes == record["classes"] and 0.5 <= lab.threshold <= 1.0


def test_auto_is_the_default_and_none_or_null_mean_no_label():
    from shared.options import InpaintOptions, OptionError
    from shared.pipeline.validate import validate_sidecar

    assert InpaintOptions().label == "auto"
    assert validate_sidecar(b'{"label": "auto"}', "a.json").label == "auto"
    assert validate_sidecar(b'{"label": null}', "a.json").label is None  # JSON null: no label
    assert InpaintOptions(label=None).check().label is None
    with pytest.raises(OptionError, match="platelet, auto, none"):
        InpaintOptions(label="dragon").check()  # uploads are held to the known classes
