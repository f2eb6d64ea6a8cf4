"""Stability of explanations: reproducibility across seeds, neighbourhood stability, surrogate
sample quality, interval coverage and queries-to-stability (the EAGLE comparison).

Explainers are passed as factories ``make(seed)`` or ``make(budget, seed)`` so the metric
controls the randomness; every call explains all inputs at once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import combinations
from typing import Any

import numpy as np
import torch

from calix._stats import spearman
from calix._validation import check_count
from calix.metrics._base import metric, metrics_of, neighbours
from calix.models import as_tensor

__all__ = ["reproducibility", "neighborhood_stability", "neighbourhood_stability", "surrogate_r2",
           "interval_coverage", "queries_to_stability", "topk_jaccard", "spearman", "METRICS"]



def _attr(exp: Any) -> np.ndarray:
    v = exp.feature_values if getattr(exp, "feature_values", None) is not None else exp.values
    return np.asarray(v, dtype=np.float64).reshape(len(v), -1)


def topk_jaccard(a: np.ndarray, b: np.ndarray, k: int) -> np.ndarray:
    """Row-wise Jaccard index of the top-k features by value of (n, d) arrays."""
    ta = np.argsort(-a, axis=1, kind="stable")[:, :k]
    tb = np.argsort(-b, axis=1, kind="stable")[:, :k]
    inter = np.array([len(set(p) & set(q)) for p, q in zip(ta, tb, strict=True)])
    return inter / (2 * k - inter)


@metric("higher", "stability", names=("reproducibility_spearman", "reproducibility_jaccard"))
def reproducibility(make: Callable[[int], Any], x: Any, *, seeds: Sequence[int] = (0, 1, 2, 3, 4),
                    k: int = 5, target: Any = None) -> dict[str, np.ndarray]:
    """Agreement of |attributions| across seeds: mean pairwise Spearman and top-k Jaccard.

    Parameters
    ----------
    make : seed -> Explainer
    x : array of shape (n, *input_shape)

    Returns
    -------
    dict
        ``spearman`` and ``jaccard`` of shape (n,), ``attributions`` of shape
        (n_seeds, n, d).
    """
    if len(seeds) < 2:
        raise ValueError("reproducibility needs at least two seeds")
    atts = np.stack([np.abs(_attr(make(s).explain(x, target=target))) for s in seeds])
    pairs = list(combinations(range(len(seeds)), 2))
    sp = np.mean([spearman(atts[i], atts[j]) for i, j in pairs], axis=0)
    jc = np.mean([topk_jaccard(atts[i], atts[j], k) for i, j in pairs], axis=0)
    return {"spearman": sp, "jaccard": jc, "attributions": atts}


@metric("higher", "stability", names=("neighbourhood_spearman",))
def neighborhood_stability(explainer: Any, x: Any, *, radius: float = 0.05,
                            n_neighbours: int = 5, seed: int = 0) -> np.ndarray:
    """Mean Spearman correlation between |E(x)| and |E(x')| for x' = x + N(0, radius²) noise
    (the explained class is the one predicted at x). Returns (n,); higher is steadier."""
    xt = as_tensor(x, name="x")
    base = explainer.explain(xt)
    nb = neighbours(xt, n_neighbours, radius, ball="gaussian", seed=seed)
    near = explainer.explain(nb.reshape(-1, *xt.shape[1:]),
                             target=np.repeat(base.target, n_neighbours))
    a0 = np.abs(_attr(base))
    a1 = np.abs(_attr(near)).reshape(len(a0), n_neighbours, -1)
    return np.mean([spearman(a0, a1[:, j]) for j in range(n_neighbours)], axis=0)


@metric("higher", "sample_quality")
def surrogate_r2(explainer: Any, exp: Any, x: Any, *, n_holdout: int = 500,
                 seed: int = 12345) -> np.ndarray:
    """Sample quality: LIME-kernel-weighted R² of the surrogate (intercept + z·φ) on held-out
    LIME coalitions that the explainer did not query. Returns (n,).

    Inputs with fewer features than the widest of the batch (superpixels; read from
    ``exp.labels``) are scored on their own features: padding columns are off in the held-out
    coalitions and the kernel counts the real features only."""
    from calix._random import make_generator
    from calix.explain.surrogate import LIME, lime_kernel, real_columns

    if "intercept" not in exp.extra or exp.feature_values is None:
        raise ValueError("surrogate_r2 needs a surrogate explanation (feature_values and "
                         "extra['intercept'])")
    xt = explainer._batch(x)
    d = exp.feature_values.shape[1]
    n_holdout = check_count(n_holdout, "n_holdout", width=len(xt) * d)
    nf = None
    if exp.labels is not None:
        nf = torch.as_tensor(np.asarray(exp.labels).reshape(len(exp.labels), -1).max(1) + 1)
    valid = None if nf is None else real_columns(nf, d)
    g = make_generator(seed)
    masks = LIME(explainer.model, n_samples=n_holdout + 1).sample(len(xt), d, g)[:, 1:]
    if valid is not None:
        masks = masks & valid[:, None, :]
    y, _ = explainer._scores(xt, masks, torch.as_tensor(exp.target), seed=g)
    y = y.double().cpu().numpy()
    z = masks.double().numpy()
    pred = z @ exp.feature_values.astype(np.float64)[..., None]
    pred = pred[..., 0] + np.asarray(exp.extra["intercept"])[:, None]
    w = lime_kernel(masks, None, None if valid is None else nf).numpy()
    ym = (w * y).sum(1, keepdims=True) / w.sum(1, keepdims=True)
    ss_res = (w * (y - pred) ** 2).sum(1)
    ss_tot = (w * (y - ym) ** 2).sum(1)
    return 1 - ss_res / np.maximum(ss_tot, 1e-300)


@metric("higher", "uncertainty")
def interval_coverage(exp: Any, truth: Any) -> float:
    """Share of features whose credible interval [lower, upper] contains ``truth`` (n, d)."""
    if exp.lower is None or exp.upper is None:
        raise ValueError(f"{exp.method} reports no intervals")
    t = np.asarray(truth, dtype=np.float64).reshape(exp.lower.shape)
    return float(np.mean((exp.lower <= t) & (t <= exp.upper)))


@metric("lower", "efficiency")
def queries_to_stability(make: Callable[[int, int], Any], x: Any, *,
                         budgets: Sequence[int] = (100, 300, 1000, 3000),
                         seeds: Sequence[int] = (0, 1, 2, 3, 4), threshold: float = 0.9
                         ) -> dict[str, Any]:
    """Smallest budget whose mean reproducibility (Spearman) reaches ``threshold``.

    Parameters
    ----------
    make : (budget, seed) -> Explainer

    Returns
    -------
    dict with ``budget`` (int or None when never reached) and ``curve`` {budget: mean Spearman}.
    """
    curve = {}
    for b in budgets:  # each budget is a separate experiment: the quantity being measured
        curve[b] = float(reproducibility(lambda s, b=b: make(b, s), x, seeds=seeds)[
            "spearman"].mean())
        if curve[b] >= threshold:
            return {"budget": b, "curve": curve}
    return {"budget": None, "curve": curve}


#: name -> :class:`MetricInfo` of every number of the metrics above (read from the functions)
#: the former (British) spelling, kept as an alias
neighbourhood_stability = neighborhood_stability

METRICS = metrics_of(reproducibility, neighborhood_stability, surrogate_r2, interval_coverage,
                     queries_to_stability)
