"""Colour spaces for stained smears, numpy only: optical density and HED stain concentrations
(Ruifrok & Johnston 2001), and CIELAB (for Reinhard et al. 2001 colour transfer).

Training perturbs the stains in HED space (gpu_job/training/augment.py); inference can move an image's
colours to the training set's and back (shared/normalize.py). Both use these conversions, so
"the stain" means the same thing in both.
"""
from __future__ import annotations

import numpy as np

# Rows: the RGB optical density of haematoxylin, eosin and DAB (skimage.color.rgb_from_hed).
RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
HED_FROM_RGB = np.linalg.inv(RGB_FROM_HED)


def rgb_to_od(rgb: np.ndarray, white=255.0) -> np.ndarray:
    """(..., 3) uint8 or float 0..255 -> optical density -ln((I + 1) / (I0 + 1)): the +1 keeps a
    black pixel finite. `white` is I0, the light through an empty slide (per channel, or 255)."""
    return -np.log((np.asarray(rgb, np.float64) + 1.0) / (np.asarray(white, np.float64) + 1.0))


def od_to_rgb(od: np.ndarray, white=255.0) -> np.ndarray:
    """The inverse of rgb_to_od, as float 0..255 (not rounded, not clipped)."""
    return (np.asarray(white, np.float64) + 1.0) * np.exp(-od) - 1.0


def rgb_to_hed(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) -> (..., 3) stain concentrations (haematoxylin, eosin, residual). Not clipped at
    0, so hed_to_rgb(rgb_to_hed(x)) == x."""
    return rgb_to_od(rgb) @ HED_FROM_RGB


def hed_to_rgb(hed: np.ndarray) -> np.ndarray:
    return od_to_rgb(hed @ RGB_FROM_HED)


def to_uint8(rgb: np.ndarray) -> np.ndarray:
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8)


# sRGB D65 -> XYZ (IEC 61966-2-1), and the white point for CIELAB.
_XYZ_FROM_RGB = np.array([[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]])
_RGB_FROM_XYZ = np.linalg.inv(_XYZ_FROM_RGB)
_WHITE = np.array([0.950456, 1.0, 1.088754])


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) sRGB 0..255 -> CIELAB (L 0..100)."""
    c = np.asarray(rgb, np.float64) / 255.0
    lin = np.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
    xyz = lin @ _XYZ_FROM_RGB.T / _WHITE
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1)


def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """CIELAB -> sRGB as float 0..255 (not rounded; out-of-gamut colours are clipped to 0..255)."""
    lab = np.asarray(lab, np.float64)
    fy = (lab[..., 0] + 16) / 116
    f = np.stack([fy + lab[..., 1] / 500, fy, fy - lab[..., 2] / 200], axis=-1)
    xyz = np.where(f > 0.206893, f**3, (f - 16 / 116) / 7.787) * _WHITE
    lin = np.clip(xyz @ _RGB_FROM_XYZ.T, 0, None)
    c = np.where(lin > 0.0031308, 1.055 * lin ** (1 / 2.4) - 0.055, 12.92 * lin)
    return np.clip(c * 255.0, 0, 255)
