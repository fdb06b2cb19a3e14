"""What a fill is scored by, in training checkpoints and in `cellpaint evaluate` alike: PSNR,
SSIM and MAE inside the mask, and fine detail against the truth's."""
from __future__ import annotations

import numpy as np


def psnr_of_error(err: np.ndarray) -> float:
    """PSNR (dB, 8-bit range) of an array of errors: what every PSNR here is made of."""
    return float(10 * np.log10(255.0**2 / max(float(np.mean(err**2)), 1e-10)))


def masked_psnr(ref: np.ndarray, out: np.ndarray, mask: np.ndarray) -> float:
    """PSNR inside the mask alone: what a report that needs nothing else pays (SSIM's full-image
    map is most of masked_metrics' time on a whole photo)."""
    return psnr_of_error(ref[mask].astype(np.float64) - out[mask].astype(np.float64))


def masked_metrics(ref: np.ndarray, out: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    from skimage.metrics import structural_similarity

    r, o = ref.astype(np.float64), out.astype(np.float64)
    err = (r - o)[mask]
    _, smap = structural_similarity(ref, out, data_range=255, channel_axis=-1, full=True)
    return {
        "psnr": psnr_of_error(err),
        "ssim": float(smap[mask].mean()),
        "mae": float(np.abs(err).mean()),
        "detail": detail_ratio(r, o, mask),
        "max_err_outside": float(np.abs(r - o)[~mask].max(initial=0)),
    }


def abs_laplacian(a: np.ndarray) -> np.ndarray:
    """|4-neighbour Laplacian| of the grey image(s): (..., H, W, 3) -> (..., H-2, W-2). Fine
    detail, and speckle, are what it measures."""
    g = a.mean(axis=-1)
    return np.abs(4 * g[..., 1:-1, 1:-1] - g[..., :-2, 1:-1] - g[..., 2:, 1:-1] - g[..., 1:-1, :-2] - g[..., 1:-1, 2:])


def cell_detail(images: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) -> (N,): each image's mean |Laplacian|."""
    return abs_laplacian(images).mean(axis=(-2, -1))


def speckle_limit(real: np.ndarray) -> float:
    """A generated cell is speckled when its detail is above that of 99 % of these real cells."""
    return float(np.percentile(cell_detail(real), 99))


def detail_ratio(ref: np.ndarray, out: np.ndarray, mask: np.ndarray) -> float:
    """Fine detail inside the mask, against the truth's: mean |Laplacian| of the grey result over
    that of the original, on mask pixels whose 4 neighbours are masked too (the rim mixes in the
    kept original). 1 = as much texture as the truth; a smooth fill scores near 0. PSNR and SSIM
    reward smoothness, so this shows what they hide."""
    inner = mask[1:-1, 1:-1] & mask[:-2, 1:-1] & mask[2:, 1:-1] & mask[1:-1, :-2] & mask[1:-1, 2:]
    if not inner.any():
        return float("nan")
    return float(abs_laplacian(out)[inner].mean() / max(abs_laplacian(ref)[inner].mean(), 1e-6))
