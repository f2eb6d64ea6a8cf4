"""Complexity of explanations: sparseness (Gini), complexity (entropy) and effective
complexity. A concise map puts its relevance on few features.

Every function takes ``maps`` of shape ``(n, ...)`` and returns one score per input, shape
``(n,)``, computed on ``|maps|`` (these measure where the magnitude goes, whatever the sign).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from calix.metrics._base import metric, metrics_of
from calix.metrics._maps import flat_maps

__all__ = ["sparseness", "complexity", "effective_complexity", "METRICS"]


@metric("higher", "complexity")
def sparseness(maps: Any) -> np.ndarray:
    """Sparseness: the Gini index of ``|maps|`` (Chalasani et al. 2020, "Concise explanations
    of neural networks using adversarial training", ICML; Gini index as in Hurley & Rickard
    2009), G = Σ_i (2i − d − 1) a_(i) / (d Σ a) over the d sorted magnitudes a_(1) ≤ … ≤ a_(d).

    Returns
    -------
    ndarray of shape (n,) in [0, 1 − 1/d]: 0 for a uniform map (and for an all-zero one),
    1 − 1/d for a single non-zero feature; higher is sparser.

    Example
    -------
    >>> sparseness([[0.0, 0.0, 0.0, 2.0], [1.0, 1.0, 1.0, 1.0]]).tolist()
    [0.75, 0.0]
    """
    a = np.sort(np.abs(flat_maps(maps)), axis=1)
    d = a.shape[1]
    total = a.sum(1)
    num = ((2 * np.arange(1, d + 1) - d - 1) * a).sum(1)
    return np.where(total > 0, num / (d * np.where(total > 0, total, 1.0)), 0.0)


@metric("lower", "complexity")
def complexity(maps: Any) -> np.ndarray:
    """Complexity: the Shannon entropy (nats) of the fractional contributions
    p_i = |a_i| / Σ|a| (Bhatt et al. 2020, "Evaluating and aggregating feature-based model
    explanations", IJCAI), with 0·log 0 = 0.

    Returns
    -------
    ndarray of shape (n,) in [0, log d], NaN for an all-zero map; lower is simpler.

    Example
    -------
    >>> complexity([[0.0, 0.0, 3.0], [1.0, 1.0, 0.0]]).round(6).tolist()
    [0.0, 0.693147]
    """
    a = np.abs(flat_maps(maps))
    total = a.sum(1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = a / total
        h = np.where(p > 0, -p * np.log(np.where(p > 0, p, 1.0)), 0.0).sum(1) + 0.0
    return np.where(total[:, 0] > 0, h, np.nan)


@metric("lower", "complexity")
def effective_complexity(maps: Any, *, eps: float = 1e-5, normalize: bool = True
                         ) -> np.ndarray:
    """Effective complexity (Nguyen & Martínez 2020, "On quantitative aspects of model
    interpretability", arXiv:2007.07584): the number of features with ``|a| > eps``.

    Parameters
    ----------
    eps : float >= 0 -- the threshold.
    normalize : divide each map by its own largest ``|a|`` first (so ``eps`` is relative).

    Returns
    -------
    ndarray of shape (n,) (integer counts, as floats); lower is simpler.

    Example
    -------
    >>> effective_complexity([[0.0, 1e-7, 0.5, -2.0]]).tolist()
    [2.0]
    """
    if isinstance(eps, bool) or not np.isfinite(eps) or eps < 0:
        raise ValueError(f"eps must be a finite number >= 0, got {eps!r}")
    a = np.abs(flat_maps(maps))
    if normalize:
        top = a.max(1, keepdims=True)
        a = a / np.where(top > 0, top, 1.0)
    return (a > eps).sum(1).astype(np.float64)


#: name -> :class:`MetricInfo` of every number of the metrics above (read from the functions)
METRICS = metrics_of(sparseness, complexity, effective_complexity)
