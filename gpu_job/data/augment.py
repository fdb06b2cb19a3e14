"""Training augmentation, so that the model does not learn one microscope.

Every training cell comes from one CellaVision DM96 with one stain, one camera and one
magnification, with the white cell in the middle. A lab's photos differ in all of those (on the
BCCD smear photos the model invented nuclei and lost to a classical fill). Each cell is therefore
drawn, at random, through what another microscope would do to it:

- scale (cells at 0.6-1.6x the PBC magnification) and translation (the cell off centre, so that
  the middle of a field is not always a nucleus), from a field cached at twice the model's size;
- stain (HED concentrations scaled and shifted, Tellez et al. 2018), white balance (now and then
  a strong colour cast, as a camera set wrong gives), brightness, contrast, gamma and saturation;
- defocus blur, sensor noise and JPEG compression.

A share of cells stays as it was (flips and turns only), so PBC itself is still seen as it is.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from shared.imaging.colour import hed_to_rgb, rgb_to_hed, to_uint8

FIELD = 128  # px of the cached field (the padded square image): room to zoom in 1.6x at 64 px


@dataclass
class DomainAug:
    clean: float = 0.2  # share of cells left as they are (flips and turns only)
    p_scale: float = 0.7
    scale: tuple[float, float] = (0.6, 1.6)  # log-uniform; >1: cells larger than PBC's
    p_shift: float = 0.5
    shift: float = 0.3  # of the field of view, each axis
    p_stain: float = 0.8
    stain_alpha: float = 0.35  # HED concentration scale 1 +- this
    stain_beta: float = 0.04  # HED concentration shift +- this (optical density units)
    p_light: float = 0.7
    gain: float = 0.12  # per-channel white balance 1 +- this
    p_cast: float = 0.25
    cast: float = 0.3  # a camera's strong colour cast (white balance far off): per-channel 1 +- this, on top
    brightness: float = 0.12
    contrast: tuple[float, float] = (0.75, 1.3)
    gamma: tuple[float, float] = (0.7, 1.4)
    saturation: tuple[float, float] = (0.6, 1.4)
    p_blur: float = 0.3
    blur: tuple[float, float] = (0.3, 1.2)  # Gaussian sigma in model px
    p_noise: float = 0.3
    noise: tuple[float, float] = (1.0, 6.0)  # sigma in levels of 255
    p_jpeg: float = 0.25
    jpeg: tuple[int, int] = (50, 95)


def turn(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random 90-degree rotation and flip: cells have no preferred orientation."""
    img = np.rot90(img, rng.integers(4))
    return img[:, ::-1] if rng.random() < 0.5 else img


def reframe(field: np.ndarray, size: int, scale: float = 1.0, dx: float = 0.0, dy: float = 0.0) -> np.ndarray:
    """(F, F, 3) field -> (size, size, 3): cells `scale` times their size, the view's centre
    moved by (dx, dy) of the view. Beyond the field, the field is mirrored."""
    f = field.shape[0]
    view = f / scale
    cx, cy = f / 2 + dx * view, f / 2 + dy * view
    x0, y0 = cx - view / 2, cy - view / 2
    pad = int(np.ceil(max(0.0, -x0, -y0, x0 + view - f, y0 + view - f))) + 1
    src = np.pad(field, ((pad, pad), (pad, pad), (0, 0)), mode="symmetric") if pad else field
    box = (x0 + pad, y0 + pad, x0 + pad + view, y0 + pad + view)
    return np.asarray(Image.fromarray(np.ascontiguousarray(src)).resize((size, size), Image.Resampling.LANCZOS, box=box))


def stain(img: np.ndarray, rng: np.random.Generator, alpha: float, beta: float) -> np.ndarray:
    hed = rgb_to_hed(img)
    hed = hed * rng.uniform(1 - alpha, 1 + alpha, 3) + rng.uniform(-beta, beta, 3)
    return to_uint8(hed_to_rgb(hed))


FADE = (0.5, 0.9)  # hematoxylin kept by fade_nuclei: 0.65 brings PBC's nuclei (87/42/137) to BCCD's as the model sees them


def fade_nuclei(img: np.ndarray, rng: np.random.Generator, kept: tuple[float, float] = FADE) -> np.ndarray:
    """Nuclei lighter against the rest: every pixel's hematoxylin scaled by one random factor, so
    nuclei, which hold the most, lighten most (the slide, holding little, hardly moves). Another microscope's nuclei can be lighter than PBC's while its slide and
    red cells are not; a colour move fitted on the whole window (shared/imaging/colour.py) brings
    slide and red cells to PBC's and leaves those nuclei light blue-violet, the colour of PBC's
    cytoplasm (BENCHMARKS.md), and a stain jitter applied before that move is undone by it. So this
    runs on rows as the model sees them, after the move."""
    hed = rgb_to_hed(img)
    hed[..., 0] -= (1 - rng.uniform(*kept)) * np.maximum(hed[..., 0], 0)
    return to_uint8(hed_to_rgb(hed))


def light(img: np.ndarray, rng: np.random.Generator, a: DomainAug) -> np.ndarray:
    x = img.astype(np.float64) / 255.0
    x = x * rng.uniform(1 - a.gain, 1 + a.gain, 3)
    if rng.random() < a.p_cast:
        x = x * rng.uniform(1 - a.cast, 1 + a.cast, 3)
    grey = x.mean(axis=-1, keepdims=True)
    x = grey + (x - grey) * rng.uniform(*a.saturation)
    x = (x - 0.5) * rng.uniform(*a.contrast) + 0.5 + rng.uniform(-a.brightness, a.brightness)
    x = np.clip(x, 0, 1) ** rng.uniform(*a.gamma)
    return to_uint8(x * 255.0)


def degrade(img: np.ndarray, rng: np.random.Generator, a: DomainAug) -> np.ndarray:
    if rng.random() < a.p_blur:
        img = np.asarray(Image.fromarray(img).filter(ImageFilter.GaussianBlur(rng.uniform(*a.blur))))
    if rng.random() < a.p_noise:
        img = to_uint8(img + rng.normal(0, rng.uniform(*a.noise), img.shape))
    if rng.random() < a.p_jpeg:
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=int(rng.integers(a.jpeg[0], a.jpeg[1] + 1)))
        img = np.asarray(Image.open(buf).convert("RGB"))
    return img


def recolour_pair(truth: np.ndarray, condition: np.ndarray, rng: np.random.Generator, a: DomainAug | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The texture stage's crops through another microscope: the same stain and light on the
    truth and its coarse condition (one draw for both, so the condition still says the truth's
    colours), then blur, noise and JPEG on the truth alone: the grain the stage learns to draw is
    then that microscope's. No scale or shift: the crops are cut at random already."""
    a = a or DomainAug()
    if rng.random() < a.clean:
        return truth, condition
    if rng.random() < a.p_stain:
        seed = int(rng.integers(2**32))
        truth, condition = (stain(x, np.random.default_rng(seed), a.stain_alpha, a.stain_beta) for x in (truth, condition))
    if rng.random() < a.p_light:
        seed = int(rng.integers(2**32))
        truth, condition = (light(x, np.random.default_rng(seed), a) for x in (truth, condition))
    return degrade(np.ascontiguousarray(truth), rng, a), condition


def domain_augment(fields: np.ndarray, rng: np.random.Generator, size: int, a: DomainAug | None = None,
                   clean: np.ndarray | None = None) -> np.ndarray:
    """(B, F, F, 3) uint8 fields -> (B, size, size, 3) uint8 cells, each drawn through another
    microscope at random (or left as it is, with probability `a.clean`, and always where `clean`)."""
    a = a or DomainAug()
    out = np.empty((len(fields), size, size, 3), np.uint8)
    for i, f in enumerate(fields):
        if rng.random() < a.clean or (clean is not None and clean[i]):
            out[i] = turn(reframe(f, size, 1.0, 0.0, 0.0), rng)
            continue
        scale = float(np.exp(rng.uniform(*np.log(a.scale)))) if rng.random() < a.p_scale else 1.0
        # Off centre only when zoomed in: a zoomed-out view already reaches past the field, where
        # a shift would show the mirrored cell itself.
        dx, dy = rng.uniform(-a.shift, a.shift, 2) if scale >= 1 and rng.random() < a.p_shift else (0.0, 0.0)
        img = reframe(f, size, scale, dx, dy)
        if rng.random() < a.p_stain:
            img = stain(img, rng, a.stain_alpha, a.stain_beta)
        if rng.random() < a.p_light:
            img = light(img, rng, a)
        out[i] = turn(degrade(img, rng, a), rng)
    return out
