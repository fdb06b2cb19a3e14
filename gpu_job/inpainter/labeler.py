"""The cell's class from what the mask leaves of it: the `label` option's "auto" (the default).

The first stage is class-conditional. Told the right class, one sample keeps the restored cell's
class more often and lands closer to the truth (BENCHMARKS.md), but a person rarely says it. So a
small classifier guesses it from each window as the model sees it: 64x64, the unknown pixels set to
the known ones' mean colour, and the mask as a fourth channel. It is trained on PBC train cells
with random masks (gpu_job/evaluation/fit_labeler.py). Where it is less sure than the record's
threshold, the window gets no label, as without this module.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from gpu_job.inpainter.ood import blank_unknown, classifier
from gpu_job.inpainter.tensors import from_uint8
from gpu_job.inpainter.weights import shipped, weights_path

DEFAULT_LABELER_WEIGHTS = shipped("labeler")


def default_labeler_weights() -> Path:
    return weights_path("labeler")


def labeler_input(fields: np.ndarray, unknown: np.ndarray) -> torch.Tensor:
    """(N, 64, 64, 3) uint8 windows and (N, 64, 64) bool masks (True = to restore) -> (N, 4, 64, 64)
    in [-1, 1]: what the labeller reads, in training and at inference alike."""
    x = from_uint8(np.stack([blank_unknown(f, ~m) for f, m in zip(fields, unknown)]))
    return torch.cat([x, torch.from_numpy(np.asarray(unknown, np.float32))[:, None] * 2 - 1], 1)


class Labeler:
    def __init__(self, weights: str | Path | None = None):
        path = Path(weights or default_labeler_weights())
        self.record = json.loads(path.with_suffix(".json").read_text())
        self.classes: list[str] = self.record["classes"]
        self.threshold: float = self.record["threshold"]
        self.net = classifier(len(self.classes), inputs=4)
        self.net.load_state_dict({k: v.float() for k, v in load_file(str(path)).items()})
        self.net.eval()

    @torch.no_grad()
    def probabilities(self, fields: np.ndarray, unknown: np.ndarray) -> np.ndarray:
        """(N, classes) softmax probabilities."""
        if not len(fields):
            return np.zeros((0, len(self.classes)), np.float32)
        return np.concatenate([torch.softmax(self.net(labeler_input(fields[i : i + 256], unknown[i : i + 256])).float(), -1).numpy()
                               for i in range(0, len(fields), 256)])

    def guess(self, fields: np.ndarray, unknown: np.ndarray) -> list[str | None]:
        """Each window's class, or None where the labeller is less sure than its threshold."""
        p = self.probabilities(fields, unknown)
        return [self.classes[int(row.argmax())] if row.max() >= self.threshold else None for row in p]
