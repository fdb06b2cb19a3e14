"""An honest flag: is this image unlike the training images?

Two measures, each of the pair's windows as the model sees them (64x64, the restored region
filled with the known pixels' mean colour, so the defect itself does not count):
- colour: how far the empty slide's light (the lightest quarter of the known pixels, CIELAB) lies
  from the training images', in their own spread (shared/imaging/colour.py: the same measure gates the
  colour normalisation). A window's overall colour depends on what it shows; the slide's light
  tells another microscope or stain from another crop;
- features: the Mahalanobis distance of a small classifier's penultimate features (trained on PBC
  train, gpu_job/weights/ood.safetensors) from the training cells' feature distribution.

Each is divided by its threshold, the 99th percentile over PBC val (so about 1 % of cells like
the training set's are flagged), and the score is the larger of the two: above 1, the result
carries "this image is unlike the training images; check the result". The weights file holds the
classifier and the feature statistics; the record beside it (ood.json) the colour statistics,
the thresholds and how they were calibrated (gpu_job/evaluation/fit_ood.py).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn

from shared.imaging.colour import MIN_KNOWN, background_distance

from gpu_job.inpainter.tensors import from_uint8
from gpu_job.inpainter.weights import shipped, weights_path

DEFAULT_OOD_WEIGHTS = shipped("ood")
MESSAGE = "this image is unlike the training images; check the result"


# The classical share may grow with how unlike the image is: none at the flag's threshold (score 1),
# all of `fallback` from FULL_SHARE_AT on; 1.0 = all or nothing, the whole share on every flagged image
# (BENCHMARKS.md, Other labs' images, measures the choice).
FULL_SHARE_AT = 1.0


def lean_share(score: float, fallback: float, full_at: float | None = None) -> float:
    """The share of the fill taken from a classical fill, for an image of this OOD score."""
    full_at = FULL_SHARE_AT if full_at is None else full_at
    if score <= 1.0:
        return 0.0
    return float(fallback * np.clip((score - 1.0) / max(full_at - 1.0, 1e-9), 0.0, 1.0))


def leaning_message(share: float) -> str:
    """MESSAGE, when the fill was moved toward a classical fill (the `fallback` option)."""
    return f"this image is unlike the training images, so {share:.0%} of the fill is a classical fill's; check the result"


def classifier(n: int, inputs: int = 3) -> nn.Module:
    """A small CNN on 64x64 cells: four conv blocks, global average pooling, a linear layer.
    `inputs`: channels in (RGB; the labeller, gpu_job/inpainter/labeler.py, adds the mask)."""
    def block(i, o):
        return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(), nn.Conv2d(o, o, 3, padding=1),
                             nn.BatchNorm2d(o), nn.ReLU(), nn.MaxPool2d(2))

    return nn.Sequential(block(inputs, 32), block(32, 64), block(64, 128), block(128, 128), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Dropout(0.2), nn.Linear(128, n))


@torch.no_grad()
def features(net: nn.Module, images: np.ndarray) -> np.ndarray:
    """(N, 64, 64, 3) uint8 -> (N, 128) float64: the classifier's penultimate layer."""
    net.eval()
    body = net[:-1]  # all but the last Linear (Dropout is the identity in eval)
    return np.concatenate([body(from_uint8(images[i : i + 256])).double().numpy() for i in range(0, len(images), 256)])


def blank_unknown(image: np.ndarray, known: np.ndarray) -> np.ndarray:
    """The image with its unknown pixels set to the known ones' mean colour."""
    out = image.copy()
    if known.any() and not known.all():
        out[~known] = image[known].mean(0).round().astype(np.uint8)
    return out


def default_ood_weights() -> Path:
    return weights_path("ood")


class OODScorer:
    """`lab`: a lab model's own calibration (its weights record's "ood": the slide light of its
    photos and thresholds fitted on them, gpu_job/training/adapt.py), so that "unlike the training
    images" means unlike the images that model was adapted to."""

    def __init__(self, weights: str | Path | None = None, lab: dict | None = None):
        path = Path(weights or default_ood_weights())
        self.record = {**json.loads(path.with_suffix(".json").read_text()), **(lab or {})}
        tensors = load_file(str(path))
        self.net = classifier(len(self.record["classes"]))
        self.net.load_state_dict({k: v.float() for k, v in tensors.items() if not k.startswith("stats.")})
        self.net.eval()
        self.mean = tensors["stats.feature_mean"].double().numpy()
        self.precision = tensors["stats.feature_precision"].double().numpy()
        self.light = self.record["colour"]["background"]

    def distances(self, fields: np.ndarray, known: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """fields: (N, 64, 64, 3) uint8 windows, known: (N, 64, 64) bool -> (colour, feature) distances."""
        colour = np.array([background_distance(f[k], self.light) if k.sum() >= MIN_KNOWN else 0.0 for f, k in zip(fields, known)])
        d = features(self.net, np.stack([blank_unknown(f, k) for f, k in zip(fields, known)])) - self.mean
        return colour, np.sqrt(np.einsum("ni,ij,nj->n", d, self.precision, d))

    def score(self, fields: np.ndarray, known: np.ndarray) -> dict:
        """One pair's windows -> what result.json says of them."""
        colour, feature = self.distances(fields, known)
        t = self.record["thresholds"]
        c, f = float(colour.max() / t["colour"]), float(feature.max() / t["feature"])
        score = max(c, f)
        return {"score": round(score, 3), "colour": round(c, 3), "features": round(f, 3), "unlike_training": score > 1.0,
                **({"message": MESSAGE} if score > 1.0 else {})}
