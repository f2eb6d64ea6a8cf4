"""Agreement of explanations with true attributions, and prediction gaps (OpenXAI).

For models whose true attribution is known (a linear model's weights, a synthetic benchmark's
generating features), Agarwal et al. 2022 ("OpenXAI: towards a transparent evaluation of model
explanations", NeurIPS Datasets and Benchmarks) compare an explanation with the truth through
the disagreement measures of Krishna et al. 2022 ("The disagreement problem in explainable
machine learning", arXiv:2202.01602): feature, rank, sign and signed-rank agreement of the
top-k features, and the rank correlation over all features. Without a truth, the prediction
gaps on important (PGI) and unimportant (PGU) features measure faithfulness.

Top-k features are the k largest ``|attribution|`` (stable sort: ties keep index order).
Every function returns one score per input, shape ``(n,)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from calix._stats import spearman
from calix._validation import check_count
from calix.explain.base import _OUTPUTS, score
from calix.metrics._base import metric, metrics_of
from calix.metrics._maps import flat_pair
from calix.models import wrap
from calix.perturb import Columns, Noise, Perturbation, Pixels

__all__ = ["feature_agreement", "rank_agreement", "sign_agreement", "signed_rank_agreement",
           "rank_correlation", "prediction_gap_important", "prediction_gap_unimportant",
           "METRICS"]


def _top(maps: Any, truth: Any, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    a, t = flat_pair(maps, truth, "truth")
    k = check_count(k, "k")
    if k > a.shape[1]:
        raise ValueError(f"k must be at most the number of features {a.shape[1]}, got {k}")
    ta = np.argsort(-np.abs(a), axis=1, kind="stable")[:, :k]
    tt = np.argsort(-np.abs(t), axis=1, kind="stable")[:, :k]
    return a, t, ta, tt


def _in_both(ta: np.ndarray, tt: np.ndarray) -> np.ndarray:
    """(n, k) bools: is the explanation's j-th top feature among the truth's top k?"""
    return (ta[:, :, None] == tt[:, None, :]).any(2)


def _same_sign(a: np.ndarray, t: np.ndarray, idx: np.ndarray) -> np.ndarray:
    return np.sign(np.take_along_axis(a, idx, 1)) == np.sign(np.take_along_axis(t, idx, 1))


@metric("higher", "agreement")
def feature_agreement(maps: Any, truth: Any, *, k: int = 5) -> np.ndarray:
    """Feature agreement (Krishna et al. 2022; OpenXAI, Agarwal et al. 2022): the share of
    the truth's top-k features that are also among the explanation's top k.

    Parameters
    ----------
    maps : array of shape (n, d) or (n, ...) -- attributions.
    truth : array of the same shape -- the true attributions.
    k : int -- top features compared.

    Returns
    -------
    ndarray of shape (n,) in [0, 1]; higher is better.

    Example
    -------
    >>> feature_agreement([[3.0, -2.0, 0.1, 0.0]], [[1.0, 0.0, 0.5, 0.0]], k=2).tolist()
    [0.5]
    """
    _, _, ta, tt = _top(maps, truth, k)
    return _in_both(ta, tt).mean(1)


@metric("higher", "agreement")
def rank_agreement(maps: Any, truth: Any, *, k: int = 5) -> np.ndarray:
    """Rank agreement (Krishna et al. 2022; OpenXAI): the share of the top-k ranks at which the
    explanation and the truth put the same feature.

    Example
    -------
    >>> rank_agreement([[3.0, 2.0, 0.1]], [[1.0, 0.0, 0.5]], k=2).tolist()
    [0.5]
    """
    _, _, ta, tt = _top(maps, truth, k)
    return (ta == tt).mean(1)


@metric("higher", "agreement")
def sign_agreement(maps: Any, truth: Any, *, k: int = 5) -> np.ndarray:
    """Sign agreement (Krishna et al. 2022; OpenXAI): the share of the top k features that
    are among both top-k sets and have the same sign in both.

    Example
    -------
    >>> sign_agreement([[3.0, -2.0, 0.1]], [[-1.0, -0.9, 0.5]], k=2).tolist()
    [0.5]
    """
    a, t, ta, tt = _top(maps, truth, k)
    return (_in_both(ta, tt) & _same_sign(a, t, ta)).mean(1)


@metric("higher", "agreement")
def signed_rank_agreement(maps: Any, truth: Any, *, k: int = 5) -> np.ndarray:
    """Signed rank agreement (Krishna et al. 2022; OpenXAI): the share of the top-k ranks that
    hold the same feature, with the same sign, in the explanation and the truth.

    Example
    -------
    >>> signed_rank_agreement([[3.0, -2.0, 0.1]], [[1.0, 0.9, 0.5]], k=2).tolist()
    [0.5]
    """
    a, t, ta, tt = _top(maps, truth, k)
    return ((ta == tt) & _same_sign(a, t, ta)).mean(1)


@metric("higher", "agreement")
def rank_correlation(maps: Any, truth: Any, *, absolute: bool = True) -> np.ndarray:
    """Spearman rank correlation between the explanation and the truth over all features
    (Krishna et al. 2022; OpenXAI), of ``|maps|`` and ``|truth|`` by default; average ranks
    for ties; 0 where either side is constant.

    Example
    -------
    >>> rank_correlation([[3.0, -2.0, 0.1]], [[1.0, 0.9, 0.5]]).tolist()
    [1.0]
    """
    a, t = flat_pair(maps, truth, "truth", absolute=absolute)
    if absolute:
        t = np.abs(t)
    return spearman(a, t, constant=0.0)


def _prediction_gap(model: Any, x: Any, maps: Any, *, k: int | float, important: bool,
                    n_samples: int, std: float, target: Any, output: str,
                    seed: int | None) -> np.ndarray:
    from calix.metrics.faithfulness import _flat_maps, _targets

    if output not in _OUTPUTS:
        raise ValueError(f"output must be one of {_OUTPUTS}, got {output!r}")
    if isinstance(std, bool) or not np.isfinite(std) or std <= 0:
        raise ValueError(f"std must be a finite number > 0, got {std!r}")
    model = wrap(model)
    xb = model.check_input(x)
    if len(xb) == 0:
        raise ValueError(f"x has no inputs (shape {tuple(xb.shape)})")
    flat = _flat_maps(maps, xb)
    if not torch.isfinite(flat).all():
        raise ValueError("maps contain NaN or infinite values")
    n, d = flat.shape
    if isinstance(k, float) and not isinstance(k, bool) and 0 < k < 1:
        k = max(1, int(round(k * d)))
    k = check_count(k, "k")
    if k > d:
        raise ValueError(f"k must be at most the number of features {d}, got {k}")
    n_samples = check_count(n_samples, "n_samples", width=n * d)
    order = torch.argsort(flat.abs(), dim=1, descending=True, stable=True)
    top = torch.zeros(n, d, dtype=torch.bool, device=flat.device)
    top.scatter_(1, order[:, :k], True)
    keep = ~top if important else top  # True keeps a feature; the others get noise
    masks = keep[:, None, :].expand(n, n_samples, d)
    engine = Perturbation(Pixels() if xb.ndim == 4 else Columns(),
                          Noise(std, around_input=True))
    with torch.no_grad():
        clean = model.forward(xb)
        tgt = (clean.argmax(1) if target is None and model.task == "classification"
               else torch.zeros(n, dtype=torch.long) if target is None
               else _targets(target, n, clean.shape[1])).to(clean.device)
        res = engine.query(model, xb, masks, seed=seed)
    s0 = score(clean[:, None], tgt, output, model.task)
    s = score(res.outputs, tgt, output, model.task)
    return (s - s0).abs().double().mean(1).cpu().numpy()


@metric("higher", "faithfulness", names=("pgi",))
def prediction_gap_important(model: Any, x: Any, maps: Any, *, k: int | float = 0.25,
                             n_samples: int = 100, std: float = 0.1, target: Any = None,
                             output: str = "probability", seed: int | None = 0) -> np.ndarray:
    """Prediction gap on important features, PGI (Agarwal et al. 2022, OpenXAI; Dai et al.
    2022, "Fairness via explanation quality", AIES): the mean over ``n_samples`` draws of
    |f(x) − f(x')|, where x' adds N(0, std²) noise to the k most important features (by
    ``|maps|``) only.

    Parameters
    ----------
    model : anything :func:`calix.wrap` takes
    x : array of shape (n, d) or (n, C, H, W) (pixels are the features of images)
    maps : array of the shape of ``x``, or of shape (n, 1, H, W)
        Channels are summed to rank pixels.
    k : int (number of features) or float in (0, 1) (a share of them; default 25%)
    n_samples : int -- noisy copies per input, evaluated in model batches (memory bounded by
        the model's ``batch_size``).
    std : float -- noise standard deviation, in the input's units.
    target : None (the clean prediction) or class indices.
    output : "probability" (default), "logit" or "log_probability".
    seed : int -- the noise stream (identical on every device).

    Returns
    -------
    ndarray of shape (n,); higher is better (the important features matter).
    """
    return _prediction_gap(model, x, maps, k=k, important=True, n_samples=n_samples, std=std,
                           target=target, output=output, seed=seed)


@metric("lower", "faithfulness", names=("pgu",))
def prediction_gap_unimportant(model: Any, x: Any, maps: Any, *, k: int | float = 0.25,
                               n_samples: int = 100, std: float = 0.1, target: Any = None,
                               output: str = "probability",
                               seed: int | None = 0) -> np.ndarray:
    """Prediction gap on unimportant features, PGU (Agarwal et al. 2022, OpenXAI): as
    :func:`prediction_gap_important`, but the noise goes to every feature *except* the k most
    important ones. Returns (n,); lower is better."""
    return _prediction_gap(model, x, maps, k=k, important=False, n_samples=n_samples, std=std,
                           target=target, output=output, seed=seed)


#: name -> :class:`MetricInfo` of every number of the metrics above (read from the functions)
METRICS = metrics_of(feature_agreement, rank_agreement, sign_agreement, signed_rank_agreement,
                     rank_correlation, prediction_gap_important, prediction_gap_unimportant)
