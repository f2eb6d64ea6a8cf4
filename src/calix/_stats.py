"""Small statistics shared by the metrics: the standard error of a mean and the row-wise rank
correlation."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["standard_error", "spearman"]


def standard_error(a: Any) -> float:
    """Standard error of the mean of the values ``a`` (sample standard deviation, ``ddof=1``,
    over √n); NaN for fewer than two values."""
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    return float(a.std(ddof=1) / math.sqrt(len(a))) if len(a) > 1 else float("nan")


def spearman(a: np.ndarray, b: np.ndarray, *, constant: float = 1.0) -> np.ndarray:
    """Row-wise Spearman rank correlation of (n, ...) arrays flattened per row (average
    ranks for ties); rows where either side is constant get ``constant``."""
    from scipy.stats import rankdata

    ra = rankdata(np.reshape(a, (len(a), -1)), axis=1)
    rb = rankdata(np.reshape(b, (len(b), -1)), axis=1)
    ra, rb = ra - ra.mean(1, keepdims=True), rb - rb.mean(1, keepdims=True)
    den = np.sqrt((ra**2).sum(1) * (rb**2).sum(1))
    return np.where(den > 0, (ra * rb).sum(1) / np.where(den > 0, den, 1.0), constant)
