"""Explanation distributions and predictive summaries over a sampler's T models.

:func:`explanation_distribution` runs an explainer on every sample and returns the mean map
E_μ, the standard deviation E_σ and the guarded coefficient of variation
(:func:`coefficient_of_variation`); :func:`mean_cv` and :func:`cv_by_class` summarise the CV
per input and per class. :func:`predictive_uncertainty` gives the predictive distribution, its
entropy and mutual information (:class:`PredictiveUncertainty`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from calix._validation import check_count
from calix.explain.base import Explainer, Explanation
from calix.models import Model, as_tensor
from calix.uncertainty.samplers import DeepEnsemble, Sampler

__all__ = [
    "explanation_distribution", "coefficient_of_variation", "predictive_uncertainty",
    "PredictiveUncertainty", "mean_cv", "cv_by_class",
]


def coefficient_of_variation(mean: np.ndarray, std: np.ndarray, *, eps: float | None = None
                             ) -> np.ndarray:
    """CV = E_σ / |E_μ| per feature with a guard where |E_μ| ≈ 0.

    The guard: where |E_μ| < ε the CV is set to 0 and reported as masked; ε defaults to 1% of
    the largest |E_μ| of each input (so the CV is never inf or NaN).

    Returns
    -------
    ndarray like ``mean`` (the CV) -- masked entries are 0.
    """
    m = np.abs(np.asarray(mean, dtype=np.float64))
    s = np.asarray(std, dtype=np.float64)
    flat = m.reshape(len(m), -1)
    if eps is None:
        eps_i = 0.01 * flat.max(1)
        eps_arr = eps_i.reshape(-1, *([1] * (m.ndim - 1)))
    else:
        eps_arr = float(eps)
    ok = m >= np.maximum(eps_arr, 1e-12)
    return np.where(ok, s / np.where(ok, m, 1.0), 0.0)


def explanation_distribution(explainer: Explainer | Callable[[Model], Explainer],
                             sampler: Sampler, x: Any, *, target: Any = None) -> Explanation:
    """Explain ``x`` under every stochastic sample and summarise.

    Parameters
    ----------
    explainer : an Explainer of the sampler's model, or a factory model -> Explainer (needed
        for ensembles, whose members are different models)
    sampler : MCDropout, MCDropConnect or DeepEnsemble
    x : array of shape (n, *input_shape), or one input of shape (*input_shape)
    target : None (the class predicted by the mean of the samples, explained in every
        sample), an int, or one label per input (the paper's ground-truth variant)

    Returns
    -------
    Explanation
        ``values`` = E_μ of shape (n, ...), ``std`` = E_σ, ``extra["cv"]`` (guarded CV),
        ``extra["cv_masked"]`` (where |E_μ| was too small), ``extra["samples"]`` of shape
        (T, n, ...), and ``n_queries`` over all samples.
    """
    if isinstance(explainer, Explainer) and isinstance(sampler, DeepEnsemble):
        raise ValueError("an ensemble's members are different models: pass a factory "
                         "model -> Explainer, e.g. lambda m: IntegratedGradients(m)")

    def make(model: Model) -> Explainer:
        return explainer if isinstance(explainer, Explainer) else explainer(model)

    xb = as_tensor(x, name="x")
    first = sampler.model
    if first.input_shape is not None and tuple(xb.shape) == first.input_shape:
        xb = xb[None]
    if xb.ndim < 2 or len(xb) == 0:
        raise ValueError(f"x must be one input or a non-empty batch (n, *input_shape), got "
                         f"shape {tuple(xb.shape)}")
    n = len(xb)
    if target is None:
        probs = predictive_uncertainty(sampler, xb).mean_probs
        tgt = probs.argmax(1)
    else:  # indices, class names and their range, as every explainer resolves them
        tgt = make(first).targets(first.check_input(xb), target).numpy()
    T = check_count(sampler.n_samples, "n_samples", width=xb.numel())
    queries = 0
    if sampler.batched and getattr(make(sampler.model), "single_pass", False):
        with sampler.active() as model:
            ex = make(model)
            rep = xb.repeat(T, *([1] * (xb.ndim - 1)))  # sample t = rows t·n … (t+1)·n
            out = ex.explain(rep, target=np.tile(tgt, T))
        maps = out.values.reshape(T, n, *out.values.shape[1:])
        queries, method, params = out.n_queries or 0, out.method, out.params
    else:
        collected = []
        for model in sampler.models():  # T different models: one batched call each
            out = make(model).explain(xb, target=tgt)
            collected.append(out.values)
            queries += out.n_queries or 0
        maps = np.stack(collected)
        method, params = out.method, out.params
    maps = maps.astype(np.float64)
    mean, std = maps.mean(0), maps.std(0)
    cv = coefficient_of_variation(mean, std)
    masked = (cv == 0) & (std > 0)
    return Explanation(values=mean, method=f"{method}@{type(sampler).__name__}", target=tgt,
                       n_queries=queries, params={**params, "n_samples": T}, std=std,
                       extra={"cv": cv, "cv_masked": masked, "samples": maps})


@dataclass
class PredictiveUncertainty:
    """Predictive summaries over T samples.

    Attributes
    ----------
    mean_probs : ndarray of shape (n, k) -- the predictive distribution (mean of the samples).
    entropy : ndarray of shape (n,) -- total uncertainty H[E p].
    mutual_information : ndarray of shape (n,) -- epistemic part H[E p] − E H[p].
    probs : ndarray of shape (T, n, k)
    """

    mean_probs: np.ndarray
    entropy: np.ndarray
    mutual_information: np.ndarray
    probs: np.ndarray


def predictive_uncertainty(sampler: Sampler, x: Any) -> PredictiveUncertainty:
    """Predictive entropy and mutual information of a sampler on inputs x (n, ...)."""
    xb = as_tensor(x, name="x")
    if xb.ndim < 2 or len(xb) == 0:
        raise ValueError(f"x must be a non-empty batch of shape (n, *input_shape), got shape "
                         f"{tuple(xb.shape)}")
    # the T copies of the batch are built at once
    T = check_count(sampler.n_samples, "n_samples", width=xb.numel())
    with torch.no_grad():
        if sampler.batched:
            with sampler.active() as model:
                rep = xb.repeat(T, *([1] * (xb.ndim - 1)))
                probs = torch.softmax(model.forward(rep), -1).reshape(T, len(xb), -1)
        else:
            probs = torch.stack([torch.softmax(m.forward(xb), -1) for m in sampler.models()])
    p = probs.double().cpu().numpy()
    mean = p.mean(0)

    def ent(q):
        return -(q * np.log(np.clip(q, 1e-12, 1.0))).sum(-1)

    h = ent(mean)
    return PredictiveUncertainty(mean, h, h - ent(p).mean(0), p)



def mean_cv(exp: Explanation) -> np.ndarray:
    """Mean guarded CV per input over the features where it is defined, shape (n,)."""
    cv, masked = exp.extra["cv"], exp.extra["cv_masked"]
    flat_cv = cv.reshape(len(cv), -1)
    valid = ~masked.reshape(len(cv), -1) & (exp.std.reshape(len(cv), -1) > 0)
    counts = valid.sum(1)
    return np.where(counts > 0, (flat_cv * valid).sum(1) / np.maximum(counts, 1), 0.0)


def cv_by_class(exp: Explanation, labels: Any = None) -> dict[int, float]:
    """Mean CV per class (the paper's class-level analysis); ``labels`` default: the targets."""
    lab = np.asarray(exp.target if labels is None else labels)
    per_input = mean_cv(exp)
    return {int(c): float(per_input[lab == c].mean()) for c in np.unique(lab)}
