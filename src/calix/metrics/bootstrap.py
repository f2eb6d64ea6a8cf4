"""A bootstrap interval over inputs for any per-input metric score."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from calix._validation import check_count

__all__ = ["BootstrapInterval", "bootstrap_interval"]


@dataclass(frozen=True)
class BootstrapInterval:
    """Mean of per-input scores and its percentile-bootstrap interval.

    Attributes
    ----------
    mean, lower, upper : float
    level : float -- e.g. 0.95.
    n : int -- finite scores used (NaN scores, e.g. inputs with an empty mask, are left out).
    n_resamples : int
    """

    mean: float
    lower: float
    upper: float
    level: float
    n: int
    n_resamples: int


def bootstrap_interval(scores: Any, *, level: float = 0.95, n_resamples: int = 2000,
                       seed: int | None = 0) -> BootstrapInterval:
    """Percentile bootstrap interval of the mean score over inputs (Efron & Tibshirani 1993,
    *An Introduction to the Bootstrap*, ch. 13).

    Parameters
    ----------
    scores : array of shape (n,) -- one score per input (NaN entries are left out).
    level : float in (0, 1) -- coverage of the interval (default 95%).
    n_resamples : int -- bootstrap resamples of the inputs, drawn with replacement.
    seed : int or None -- the resampling stream (numpy's PCG64).

    Returns
    -------
    BootstrapInterval -- ``lower``/``upper`` are the (1 ± level)/2 quantiles of the resampled
    means; with a single finite score both equal it.

    Example
    -------
    >>> bootstrap_interval([0.2, 0.4, 0.6, 0.8]).mean
    0.5
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1:
        raise ValueError(f"scores must have shape (n,), one per input, got {s.shape}")
    if isinstance(level, bool) or not 0 < float(level) < 1:
        raise ValueError(f"level must be in (0, 1), e.g. 0.95, got {level!r}")
    n_resamples = check_count(n_resamples, "n_resamples")
    s = s[np.isfinite(s)]
    if len(s) == 0:
        raise ValueError("scores has no finite value to bootstrap")
    rng = np.random.default_rng(seed)
    means = np.empty(n_resamples)
    block = max(1, (1 << 22) // len(s))  # bounded memory: block x n indices at a time
    for b0 in range(0, n_resamples, block):
        b1 = min(b0 + block, n_resamples)
        means[b0:b1] = s[rng.integers(0, len(s), size=(b1 - b0, len(s)))].mean(1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return BootstrapInterval(mean=float(s.mean()), lower=float(lo), upper=float(hi),
                             level=float(level), n=len(s), n_resamples=n_resamples)
