"""Similarity and readability of maps: SSIM between two maps, and Otsu-TV."""

from __future__ import annotations

from typing import Any

import numpy as np

from calix.metrics._base import metric, metrics_of, real_array

__all__ = ["ssim", "otsu_tv", "minmax", "METRICS"]



def _maps2d(maps: Any) -> np.ndarray:
    m = real_array(maps, "maps")
    if m.ndim == 4:
        m = m.sum(1)
    if m.ndim == 2:
        m = m[None]
    if m.ndim != 3:
        raise ValueError(f"maps must have shape (n, C, H, W), (n, H, W) or (H, W), got {m.shape}")
    if m.shape[1] * m.shape[2] == 0:
        raise ValueError(f"maps have no pixels (shape {m.shape})")
    if not np.isfinite(m).all():
        raise ValueError("maps contain NaN or infinite values")
    return m


def minmax(maps: Any) -> np.ndarray:
    """Per-map min-max normalisation to [0, 1] of (n, H, W) maps (constant maps become 0)."""
    m = _maps2d(maps)
    lo = m.min((1, 2), keepdims=True)
    span = m.max((1, 2), keepdims=True) - lo
    return (m - lo) / np.where(span > 0, span, 1.0)


@metric("higher", "similarity")
def ssim(a: Any, b: Any, *, normalize: bool = True) -> np.ndarray:
    """Structural similarity between paired maps (scikit-image, data_range 1 after min-max).

    Returns (n,); 1 for identical maps.
    """
    from skimage.metrics import structural_similarity

    ma, mb = (minmax(a), minmax(b)) if normalize else (_maps2d(a), _maps2d(b))
    if ma.shape != mb.shape:
        raise ValueError(f"maps differ in shape: {ma.shape} vs {mb.shape}")
    win = min(7, *ma.shape[1:])
    win = win if win % 2 else win - 1
    return np.array([structural_similarity(p, q, data_range=1.0, win_size=win)
                     for p, q in zip(ma, mb, strict=True)])  # one call per image pair


@metric("lower", "readability")
def otsu_tv(maps: Any) -> np.ndarray:
    """Otsu-TV (Calibrate-to-Interpret): binarise each min-max map at Otsu's threshold, then
    TV = (mean |row differences|)³ + (mean |column differences|)³. Lower: more compact maps.
    Constant maps give 0."""
    from skimage.filters import threshold_otsu

    m = minmax(maps)
    out = np.zeros(len(m))
    for i, mi in enumerate(m):  # Otsu's threshold is per image
        if mi.max() == mi.min():
            continue
        b = (mi > threshold_otsu(mi)).astype(np.float64)
        out[i] = np.abs(np.diff(b, axis=0)).mean() ** 3 + np.abs(np.diff(b, axis=1)).mean() ** 3
    return out


#: name -> :class:`MetricInfo` of every number of the metrics above (read from the functions)
METRICS = metrics_of(ssim, otsu_tv)
