"""uint8 images <-> the model's tensors, the one conversion every stage uses (inference and training)."""
from __future__ import annotations

import numpy as np
import torch


def from_uint8(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(B,H,W,3) uint8 -> (B,3,H,W) float in [-1,1]: the model's image range (to_uint8 undoes it).
    A tensor is converted where it is (training copies uint8 to the GPU, then converts there)."""
    t = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(images))
    return t.permute(0, 3, 1, 2).float().div(127.5).sub(1)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(B,3,H,W) in [-1,1] -> (B,H,W,3) uint8."""
    return ((x.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def mask_tensor(mask: np.ndarray, device) -> torch.Tensor:
    """(B,H,W) bool -> (B,1,H,W) float on `device`, 1 = restore."""
    return torch.from_numpy(np.ascontiguousarray(mask)[:, None].astype(np.float32)).to(device)
