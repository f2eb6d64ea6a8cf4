"""Small statistics shared by the metrics and the studies: the standard error of a mean and the
row-wise Pearson and Spearman (rank) correlations."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["standard_error", "pearson", "spearman"]


def standard_error(a: Any) -> float:
    """Standard error of the mean of the values ``a`` (sample standard deviation, ``ddof=1``,
    over √n); NaN for fewer than two values."""
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    return float(a.std(ddof=1) / math.sqrt(len(a))) if len(a) > 1 else float("nan")


def pearson(a: Any, b: Any, *, constant: float = 1.0) -> np.ndarray:
    """Row-wise Pearson correlation of (n, ...) arrays flattened per row: one value per row
    pair, in the inputs' precision; rows where either side is constant get ``constant``.

    >>> pearson(np.array([[1., 2., 3.], [1., 1., 1.]]), np.array([[2., 4., 7.], [1., 2., 3.]]),
    ...         constant=0.0).round(4).tolist()
    [0.9934, 0.0]
    """
    a, b = np.asarray(a), np.asarray(b)
    if len(a) != len(b):
        raise ValueError(f"row-wise correlation needs as many rows on both sides, got "
                         f"{len(a)} and {len(b)}")
    a = a.reshape(len(a), -1) - a.reshape(len(a), -1).mean(1, keepdims=True)
    b = b.reshape(len(b), -1) - b.reshape(len(b), -1).mean(1, keepdims=True)
    if a.shape != b.shape:
        raise ValueError(f"row-wise correlation needs rows of the same size, got "
                         f"{a.shape[1]} and {b.shape[1]}")
    den = np.sqrt((a**2).sum(1) * (b**2).sum(1))
    return np.where(den > 0, (a * b).sum(1) / np.where(den > 0, den, 1.0), constant)


def spearman(a: Any, b: Any, *, constant: float = 1.0) -> np.ndarray:
    """Row-wise Spearman rank correlation of (n, ...) arrays flattened per row (average
    ranks for ties): :func:`pearson` of the ranks; rows where either side is constant get
    ``constant``.

    >>> spearman(np.array([[1., 2., 3.]]), np.array([[1., 5., 9.]])).tolist()
    [1.0]
    """
    from scipy.stats import rankdata

    ra = rankdata(np.reshape(a, (len(a), -1)), axis=1)
    rb = rankdata(np.reshape(b, (len(b), -1)), axis=1)
    return pearson(ra, rb, constant=constant)
