"""Localization of explanations against ground-truth masks: pointing game, relevance mass and
rank accuracy, top-k intersection, and the ROC AUC of the map against the mask.

Every function takes ``maps`` (attributions, shape ``(n, ...)``) and ``masks`` (booleans or
0/1, the same shape, or one channel ``(n, 1, H, W)`` / ``(n, H, W)`` for ``(n, C, H, W)``
maps, which are then summed over channels) and returns one score per input, shape ``(n,)``.
Inputs whose mask is empty (or, for the AUC, full) get NaN: there is nothing to localize.
:func:`calix.metrics.bootstrap_interval` turns the scores into a mean with a 95% interval.

Ties: rankings sort stably (equal values keep index order); the pointing game counts a hit
when any of the tied maxima lies in the mask.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from calix._validation import check_count
from calix.metrics._base import metric, metrics_of
from calix.metrics._maps import flat_pair

__all__ = ["pointing_game", "relevance_mass_accuracy", "relevance_rank_accuracy",
           "top_k_intersection", "attribution_auc", "METRICS"]


def _prepare(maps: Any, masks: Any, absolute: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    a, s = flat_pair(maps, masks, "masks", boolean=True, absolute=absolute)
    return a, s, s.sum(1)


def _top_order(a: np.ndarray) -> np.ndarray:
    """Feature indices, most important first (stable: ties keep index order)."""
    return np.argsort(-a, axis=1, kind="stable")


@metric("higher", "localization")
def pointing_game(maps: Any, masks: Any, *, absolute: bool = False) -> np.ndarray:
    """Pointing game (Zhang et al. 2018, "Top-down neural attention by excitation backprop",
    IJCV 126): 1 when the map's maximum falls inside the mask, else 0.

    Parameters
    ----------
    maps : array of shape (n, ...) -- attributions.
    masks : array of shape (n, ...) -- True inside the ground-truth region.
    absolute : rank ``|maps|`` instead of the signed maps.

    Returns
    -------
    ndarray of shape (n,) -- 1.0 (hit) / 0.0 (miss), NaN for an empty mask; higher is better.

    Example
    -------
    >>> pointing_game([[0.1, 0.9, 0.3]], [[0, 1, 0]]).tolist()
    [1.0]
    """
    a, s, k = _prepare(maps, masks, absolute)
    at_max = a == a.max(1, keepdims=True)
    return np.where(k > 0, (at_max & s).any(1).astype(np.float64), np.nan)


@metric("higher", "localization")
def relevance_mass_accuracy(maps: Any, masks: Any, *, absolute: bool = False) -> np.ndarray:
    """Relevance mass accuracy (Arras et al. 2022, "CLEVR-XAI: a benchmark dataset for the
    ground truth evaluation of neural network explanations", Information Fusion 81): the share
    of the map's total relevance that lies inside the mask, Σ_{mask} a / Σ a.

    With signed maps the ratio can leave [0, 1]; ``absolute=True`` (or non-negative maps) keeps
    it there. A map summing to 0 gives NaN (no mass to share).

    Returns
    -------
    ndarray of shape (n,); higher is better.

    Example
    -------
    >>> relevance_mass_accuracy([[1.0, 3.0, 0.0, 4.0]], [[0, 1, 1, 0]]).tolist()
    [0.375]
    """
    a, s, k = _prepare(maps, masks, absolute)
    total = a.sum(1)
    inside = (a * s).sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = inside / total
    return np.where((k > 0) & (total != 0), out, np.nan)


@metric("higher", "localization")
def relevance_rank_accuracy(maps: Any, masks: Any, *, absolute: bool = False) -> np.ndarray:
    """Relevance rank accuracy (Arras et al. 2022, Information Fusion 81): with K the mask's
    size, the share of the K highest-ranked features that lie inside the mask.

    Returns
    -------
    ndarray of shape (n,) in [0, 1], NaN for an empty mask; higher is better.

    Example
    -------
    >>> relevance_rank_accuracy([[0.9, 0.8, 0.1, 0.7]], [[1, 0, 0, 1]]).tolist()
    [0.5]
    """
    a, s, k = _prepare(maps, masks, absolute)
    hit = np.take_along_axis(s, _top_order(a), axis=1)  # mask value of each rank
    within = np.arange(a.shape[1])[None, :] < k[:, None]  # the first K ranks
    with np.errstate(divide="ignore", invalid="ignore"):
        out = (hit & within).sum(1) / k
    return np.where(k > 0, out, np.nan)


@metric("higher", "localization")
def top_k_intersection(maps: Any, masks: Any, *, k: int = 1000, absolute: bool = False,
                       concept_influence: bool = False) -> np.ndarray:
    """Top-k intersection (Theiner et al. 2022, "Interpretable semantic photo geolocation",
    WACV): the share of the map's k highest-ranked features that lie inside the mask.

    Parameters
    ----------
    k : int -- features taken (at most the number of features d).
    concept_influence : multiply by d / |mask| (the share relative to the mask's size; a
        random map scores 1 on average).

    Returns
    -------
    ndarray of shape (n,), NaN for an empty mask; higher is better.

    Example
    -------
    >>> top_k_intersection([[0.9, 0.8, 0.1, 0.7]], [[1, 0, 0, 1]], k=2).tolist()
    [0.5]
    """
    a, s, size = _prepare(maps, masks, absolute)
    k = check_count(k, "k")
    if k > a.shape[1]:
        raise ValueError(f"k must be at most the number of features {a.shape[1]}, got {k}")
    top = np.take_along_axis(s, _top_order(a)[:, :k], axis=1)
    out = top.mean(1)
    if concept_influence:
        with np.errstate(divide="ignore", invalid="ignore"):
            out = out * a.shape[1] / size
    return np.where(size > 0, out, np.nan)


@metric("higher", "localization")
def attribution_auc(maps: Any, masks: Any, *, absolute: bool = False) -> np.ndarray:
    """Area under the ROC curve of the map as a score for the mask (Fawcett 2006, "An
    introduction to ROC analysis", Pattern Recognition Letters 27): the probability that a
    feature inside the mask outranks one outside (ties count one half).

    Computed from average ranks (the Mann-Whitney statistic), all inputs at once.

    Returns
    -------
    ndarray of shape (n,) in [0, 1], 0.5 for a random map, NaN when the mask is empty or
    full; higher is better.

    Example
    -------
    >>> attribution_auc([[0.9, 0.2, 0.4, 0.1]], [[1, 0, 1, 0]]).tolist()
    [1.0]
    """
    from scipy.stats import rankdata

    a, s, pos = _prepare(maps, masks, absolute)
    neg = a.shape[1] - pos
    ranks = rankdata(a, axis=1)  # average ranks, 1-based
    u = (ranks * s).sum(1) - pos * (pos + 1) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        out = u / (pos * neg)
    return np.where((pos > 0) & (neg > 0), out, np.nan)


#: name -> :class:`MetricInfo` of every number of the metrics above (read from the functions)
METRICS = metrics_of(pointing_game, relevance_mass_accuracy, relevance_rank_accuracy,
                     top_k_intersection, attribution_auc)
