"""Colour, the one home for it: colour spaces for stained smears and normalisation around the model.

**Colour spaces** (numpy only): optical density and HED stain concentrations (Ruifrok & Johnston
2001), and CIELAB. Training perturbs the stains in HED space (gpu_job/data/augment.py) and
inference moves an image's colours to the training set's and back (below): both use these
conversions, so "the stain" means the same thing in both.

**Normalisation around the model**: another lab's colours in, the training set's colours to the
model, the fill back in the lab's colours.

For every window: statistics from its known pixels only (the masked ones are the defect), a
transform that gives them the training set's statistics (stored in the weights record), the
model, and the inverse transform on the fill alone. Pixels outside the mask are never touched.

- **Reinhard** (Reinhard et al. 2001, "Color transfer between images"): each CIELAB channel's
  mean and standard deviation matched to the reference's.
- **Macenko** (Macenko et al. 2009, "A method for normalizing histology slides for quantitative
  analysis"): the two stain vectors of the image found in optical-density space (the plane of
  its two main directions, the extreme angles within it), each stain's concentration scaled so
  that its 99th percentile matches the reference's, and rebuilt with the reference's stain
  vectors.
  Optical density is taken against the image's own empty-slide light (its brightest known
  pixels), not pure white: smear photos often have a grey or tinted background, which would
  otherwise count as a stain.
- **auto**: Reinhard, as strongly as the window's light differs from the training set's. A
  window's own colour statistics depend on what it shows (a mask over half a nucleus leaves a
  lighter crop), so they cannot tell another lab from another crop; the empty slide between the
  cells can: the lightest quarter of the known pixels, whose CIELAB mean lies within 1.4 of the
  training images' spread for 3 in 4 PBC val windows and 11 to 15 spreads away on every BCCD
  photo. Below GATE[0] spreads nothing changes, from GATE[1] on the transform is Reinhard's in full.
numpy only.
"""
from __future__ import annotations

from dataclasses import dataclass

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


NUCLEUS_B = -20.0  # CIELAB b* below this is nucleus-coloured: PBC, BCCD and Chula nuclei alike, never red cells or background


def nucleus_coloured(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) sRGB -> (...) bool: the blue-violet of a stained nucleus (a platelet's too)."""
    return rgb_to_lab(rgb)[..., 2] < NUCLEUS_B


def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """CIELAB -> sRGB as float 0..255 (not rounded; out-of-gamut colours are clipped to 0..255)."""
    lab = np.asarray(lab, np.float64)
    fy = (lab[..., 0] + 16) / 116
    f = np.stack([fy + lab[..., 1] / 500, fy, fy - lab[..., 2] / 200], axis=-1)
    xyz = np.where(f > 0.206893, f**3, (f - 16 / 116) / 7.787) * _WHITE
    lin = np.clip(xyz @ _RGB_FROM_XYZ.T, 0, None)
    c = np.where(lin > 0.0031308, 1.055 * lin ** (1 / 2.4) - 0.055, 12.92 * lin)
    return np.clip(c * 255.0, 0, 255)

METHODS = ("none", "auto", "reinhard", "macenko")
MIN_KNOWN = 64  # known pixels below this carry no statistics worth trusting: the window is left alone
OD_MIN = 0.15  # optical density below this is background (Macenko et al.'s beta): no stain to measure
ANGLE_PCT = 1.0  # Macenko et al.'s alpha: robust extremes of the stain angles
GATE = (6.0, 9.0)  # background distances (in training spreads) where auto starts to move colours, and moves them in full


@dataclass
class Transform:
    """forward: the image's colours -> the reference's; inverse: back. Both on (..., 3) float 0..255."""
    method: str
    params: dict

    def forward(self, rgb: np.ndarray) -> np.ndarray:
        return _apply(self, rgb, inverse=False)

    def inverse(self, rgb: np.ndarray) -> np.ndarray:
        return _apply(self, rgb, inverse=True)


IDENTITY = Transform("none", {})


def reinhard_stats(rgb: np.ndarray) -> dict:
    """(N, 3) pixels -> their CIELAB mean and standard deviation."""
    lab = rgb_to_lab(rgb)
    return {"mean": lab.mean(0).tolist(), "std": np.maximum(lab.std(0), 1e-3).tolist()}


def macenko_stats(rgb: np.ndarray) -> dict | None:
    """(N, 3) pixels -> the empty-slide light, the two stain vectors (rows, unit length in OD space,
    haematoxylin first) and each stain's 99th-percentile concentration; None when there is too
    little stain."""
    white = np.percentile(rgb, 99, axis=0).astype(np.float64)
    od = rgb_to_od(rgb, white)
    od = od[(od > OD_MIN).all(axis=1)]
    if len(od) < MIN_KNOWN:
        return None
    _, vecs = np.linalg.eigh(np.cov(od.T))
    plane = vecs[:, [2, 1]]  # the two main directions
    plane *= np.sign(plane.sum(axis=0, keepdims=True) + 1e-12)  # point them into positive density
    proj = od @ plane
    angle = np.arctan2(proj[:, 1], proj[:, 0])
    lo, hi = np.percentile(angle, [ANGLE_PCT, 100 - ANGLE_PCT])
    v1 = plane @ np.array([np.cos(lo), np.sin(lo)])
    v2 = plane @ np.array([np.cos(hi), np.sin(hi)])
    # Haematoxylin is the bluer stain: more density in red (it absorbs red), eosin in green.
    stains = np.stack([v1, v2]) if v1[0] > v2[0] else np.stack([v2, v1])
    stains /= np.linalg.norm(stains, axis=1, keepdims=True)
    conc = od @ np.linalg.pinv(stains)
    return {"white": white.tolist(), "stains": stains.tolist(), "max_conc": np.maximum(np.percentile(conc, 99, axis=0), 1e-3).tolist()}


def background(rgb: np.ndarray) -> np.ndarray:
    """(N, 3) pixels -> the CIELAB mean of the lightest quarter: the empty slide's colour."""
    lab = rgb_to_lab(rgb)
    return lab[lab[:, 0] >= np.percentile(lab[:, 0], 75)].mean(0)


def reference(images: np.ndarray) -> dict:
    """The training set's statistics, the targets of both methods: the median over images of each
    image's own statistics (the set's typical slide, not a mixture of slides)."""
    flat = images.reshape(len(images), -1, 3)
    rein = [reinhard_stats(x) for x in flat]
    light = np.stack([background(x) for x in flat])
    mac = [m for m in (macenko_stats(x) for x in flat) if m is not None]
    med = lambda rows, k: np.median(np.array([r[k] for r in rows]), axis=0).tolist()  # noqa: E731
    ref = {"reinhard": {"mean": med(rein, "mean"), "std": med(rein, "std")},
           "background": {"median": np.median(light, 0).tolist(), "spread": light.std(0).tolist()}}
    if mac:  # images with too little stain to separate have no Macenko statistics (fit() then leaves them alone)
        stains = np.array(med(mac, "stains"))
        stains /= np.linalg.norm(stains, axis=1, keepdims=True)
        ref["macenko"] = {"white": med(mac, "white"), "stains": stains.tolist(), "max_conc": med(mac, "max_conc")}
    return ref


def fit(method: str, image: np.ndarray, known: np.ndarray, ref: dict | None) -> Transform:
    """The transform for one window: `image` (H, W, 3) uint8, `known` (H, W) bool."""
    if method not in METHODS:
        raise ValueError(f"normalize must be one of {', '.join(METHODS)}, got {method!r}")
    if method == "none" or ref is None or known.sum() < MIN_KNOWN:
        return IDENTITY
    pixels = image[known]
    if method in ("reinhard", "auto"):
        src = reinhard_stats(pixels)
        strength = 1.0 if method == "reinhard" else gate(pixels, ref)
        if strength <= 0:
            return IDENTITY
        # Part of the way: the target statistics between the window's own and the reference's.
        goal = {"mean": (np.asarray(src["mean"]) + strength * (np.asarray(ref["reinhard"]["mean"]) - src["mean"])).tolist(),
                "std": (np.asarray(src["std"]) * (np.asarray(ref["reinhard"]["std"]) / src["std"]) ** strength).tolist()}
        return Transform("reinhard", {"src": src, "ref": goal, "strength": strength})
    src = macenko_stats(pixels)
    return IDENTITY if src is None or "macenko" not in ref else Transform(method, {"src": src, "ref": ref["macenko"]})


def as_model_sees(method: str, image: np.ndarray, known: np.ndarray, ref: dict | None) -> tuple[Transform, np.ndarray]:
    """A window as the model sees it: `image` (H, W, 3) uint8 moved to the reference's colours
    from its `known` pixels (uint8; the image itself where nothing moves), and the move, whose
    inverse brings the fill back. Inference and training (`--seen-as-inferred`) both call it."""
    move = fit(method, image, known, ref)
    return move, image if move is IDENTITY else to_uint8(move.forward(image))


def background_distance(pixels: np.ndarray, light: dict) -> float:
    """How far the empty slide's colour in these (N, 3) pixels lies from the training set's
    (`light`: the "background" entry of a reference), in the training images' own spread. It
    also serves the out-of-distribution flag (gpu_job/inpainter/ood.py)."""
    return float(np.abs((background(pixels) - np.asarray(light["median"])) / np.asarray(light["spread"])).max())


def gate(pixels: np.ndarray, ref: dict) -> float:
    """0..1: how far the empty slide's colour is from the training set's, mapped through GATE."""
    b = ref.get("background")
    if b is None:
        return 1.0
    return float(np.clip((background_distance(pixels, b) - GATE[0]) / (GATE[1] - GATE[0]), 0.0, 1.0))


def _apply(t: Transform, rgb: np.ndarray, inverse: bool) -> np.ndarray:
    if t.method == "none":
        return np.asarray(rgb, np.float64)
    a, b = (t.params["ref"], t.params["src"]) if inverse else (t.params["src"], t.params["ref"])
    if t.method == "reinhard":
        lab = rgb_to_lab(rgb)
        lab = (lab - np.asarray(a["mean"])) / np.asarray(a["std"]) * np.asarray(b["std"]) + np.asarray(b["mean"])
        return lab_to_rgb(lab)
    od = rgb_to_od(rgb, a["white"])
    sa, sb = np.asarray(a["stains"]), np.asarray(b["stains"])
    # Each stain's amount in a's stain vectors (no negative amounts: there is no negative dye), scaled
    # to b's range and rebuilt from b's vectors. What the two stains do not explain is dropped, as
    # Macenko et al. do; the seam fix meets the original's colours at the mask's edge anyway.
    conc = np.clip(od @ np.linalg.pinv(sa), 0, None)
    conc = conc / np.asarray(a["max_conc"]) * np.asarray(b["max_conc"])
    return np.clip(od_to_rgb(conc @ sb, b["white"]), 0, 255)
