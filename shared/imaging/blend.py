"""Seam-free compositing: the model's patch, shifted by a smooth correction so it meets the original.

The model works at 64x64, so its output is a little off in colour and brightness where it meets
the full-size original, and that shows as a seam. As in Poisson image editing (Perez et al.
2003), we keep the patch's detail and replace its lowest frequencies: the correction is the
original minus the patch on the trusted pixels around the hole, filled smoothly into the hole.
The fill solves Laplace's equation coarse to fine (a weighted image pyramid as in push-pull,
Gortler et al. 1996, with Jacobi relaxation at every level); numpy and Pillow only, so the
Lambdas can use it.

A hole about three model pixels wide or less (a stroke across a cell) is below what the 64x64 patch can
draw: there the correction also continues the residual's gradients (the biharmonic equation,
scikit-image's solver, imported only when a patch is composited: the GPU job, the CLI and the UI,
never a Lambda). The harmonic fill alone left the patch's own values in such holes
(docs/benchmarks-log.md, "Thin holes").
"""
from __future__ import annotations

import numpy as np
from PIL import Image

RELAX_ITERS = 20  # Jacobi sweeps per pyramid level (docs/benchmarks-log.md, the seam fix)


def _resize(a: np.ndarray, h: int, w: int) -> np.ndarray:
    """(h0, w0, C) float32 -> (h, w, C), bilinear per channel (Pillow's float mode)."""
    return np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(a[..., c])).resize((w, h), Image.Resampling.BILINEAR)) for c in range(a.shape[-1])], -1)


def smooth_fill(values: np.ndarray, known: np.ndarray, iters: int | None = None) -> np.ndarray:
    """values: (H, W, C) float, trusted where `known`; returns a float32 copy with the rest filled
    by (approximately) the solution of Laplace's equation with the known pixels as boundary.

    Coarse to fine: each level starts from the coarser level's solution and relaxes `iters`
    Jacobi sweeps, so a hole of any size converges in a fixed number of sweeps per level
    (plain Jacobi needs ~size^2 sweeps)."""
    iters = RELAX_ITERS if iters is None else iters
    v = values.astype(np.float32)
    if known.all():
        return v.copy()
    if not known.any():
        return np.zeros_like(v)
    return _fill(v, known, iters)


def _fill(v: np.ndarray, known: np.ndarray, iters: int) -> np.ndarray:
    h, w = known.shape
    if min(h, w) <= 2:
        coarse = np.broadcast_to(v[known].mean(0), v.shape)
    else:
        # Half resolution: weighted mean of each 2x2 block's known pixels; a block is known if any is.
        H, W = h + h % 2, w + w % 2
        k = np.pad(known.astype(np.float32), ((0, H - h), (0, W - w)))
        vs = np.pad(v * known[..., None], ((0, H - h), (0, W - w), (0, 0))).reshape(H // 2, 2, W // 2, 2, -1).sum((1, 3))
        ks = k.reshape(H // 2, 2, W // 2, 2).sum((1, 3))
        ck = ks > 0
        cv = vs / np.maximum(ks, 1e-6)[..., None]
        coarse = _resize(cv if ck.all() else _fill(cv, ck, iters), H, W)[:h, :w]
    out = np.where(known[..., None], v, coarse).astype(np.float32)
    unknown = ~known
    for _ in range(iters):  # Laplace relaxation: each unknown pixel becomes its 4-neighbour mean
        p = np.pad(out, ((1, 1), (1, 1), (0, 0)), mode="edge")
        out[unknown] = ((p[:-2, 1:-1] + p[2:, 1:-1] + p[1:-1, :-2] + p[1:-1, 2:]) / 4)[unknown]
    return out


def thin_regions(unknown: np.ndarray, thin: float) -> np.ndarray:
    """(H, W) bool: the holes of `unknown` no pixel of which is more than `thin` px from the edge.
    Holes are 8-connected: a thin hole touching a deep one corner to corner is the deep one's."""
    from scipy.ndimage import distance_transform_edt, label, maximum

    if thin <= 0 or not unknown.any():
        return np.zeros(unknown.shape, bool)
    regions, n = label(unknown, np.ones((3, 3)))
    depth = distance_transform_edt(unknown)
    narrow = np.flatnonzero(np.asarray(maximum(depth, regions, np.arange(1, n + 1))) <= thin) + 1
    return np.isin(regions, narrow)


def thin_holes(resid: np.ndarray, unknown: np.ndarray, smooth: np.ndarray, thin: float) -> np.ndarray:
    """The correction `smooth` (the harmonic fill of `resid`), replaced in every hole no pixel of
    which is more than `thin` px from the edge by the biharmonic fill of `resid`. Wider holes keep
    the smooth fill: there the model draws, and continuing the edge's gradients (mostly noise)
    into a disk cost plain background 0.4 dB."""
    from skimage.restoration import inpaint_biharmonic

    where = thin_regions(unknown, thin)
    if not where.any():
        return smooth
    # Only the thin holes are solved for; the deeper ones count as known at their smooth correction
    # (their residual is the defect's, not the original's), so a large blob beside a stroke costs nothing.
    known = np.where(unknown[..., None], smooth, resid)
    return np.where(where[..., None], inpaint_biharmonic(known, where, channel_axis=-1), smooth).astype(np.float32)


def seamless(original: np.ndarray, unknown: np.ndarray, patch: np.ndarray, margin: int = 8, thin: float = 0.0) -> np.ndarray:
    """original, patch: (H, W, 3) uint8; unknown: (H, W) bool, the pixels the original cannot be
    trusted at. Returns the patch (uint8) corrected inside `unknown` to meet the original; pixels
    outside `unknown` are returned as the patch had them (callers composite inside the mask only).
    `thin` > 0: holes no deeper than this (px from the edge) get a correction that also continues
    the residual's gradients."""
    if not unknown.any() or unknown.all():
        return patch.copy()
    ys, xs = np.nonzero(unknown)
    y0, y1 = max(ys.min() - margin, 0), min(ys.max() + margin + 1, unknown.shape[0])
    x0, x1 = max(xs.min() - margin, 0), min(xs.max() + margin + 1, unknown.shape[1])
    u = unknown[y0:y1, x0:x1]
    resid = original[y0:y1, x0:x1].astype(np.float32) - patch[y0:y1, x0:x1].astype(np.float32)
    corr = smooth_fill(resid, ~u)
    if thin > 0:
        corr = thin_holes(resid, u, corr, thin)
    out = patch.copy()
    fixed = np.clip(np.round(patch[y0:y1, x0:x1].astype(np.float32) + corr), 0, 255).astype(np.uint8)
    out[y0:y1, x0:x1][u] = fixed[u]
    return out


def box_sum(a: np.ndarray, r: int) -> np.ndarray:
    """Sum over a (2r+1)-square around each pixel (zero outside), by cumulative sums: (H, W, C)."""
    for axis in (0, 1):
        n = a.shape[axis]
        c = np.cumsum(np.pad(a, [(r + 1, r) if i == axis else (0, 0) for i in range(a.ndim)]), axis=axis)
        a = np.take(c, np.arange(2 * r + 1, 2 * r + 1 + n), axis=axis) - np.take(c, np.arange(n), axis=axis)
    return a


def keep_low_frequencies(reference: np.ndarray, redrawn: np.ndarray, region: np.ndarray, radius: int = 4) -> np.ndarray:
    """`redrawn` (H, W, 3) inside `region` with its change from `reference` stripped of everything
    smoother than about `radius` px: the detail it drew stays, a colour or brightness drift goes.
    The texture stage and gpu_job/inpainter/grain.py own detail; the first stage and the seam fix own colour."""
    ref, new = reference.astype(np.float32), redrawn.astype(np.float32)
    w = region.astype(np.float32)[..., None]
    num, den = box_sum(box_sum((new - ref) * w, radius), radius), box_sum(box_sum(w, radius), radius)
    out = new - num / np.maximum(den, 1e-6)
    res = redrawn.copy()
    res[region] = np.clip(np.round(out[region]), 0, 255).astype(redrawn.dtype)
    return res
