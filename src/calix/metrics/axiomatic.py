"""Axiomatic properties of explanations: completeness, non-sensitivity and input invariance.

Each returns one number per input, shape ``(n,)``: a gap or a count of violations, 0 when the
property holds exactly.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from calix._validation import check_count
from calix.explain.base import score
from calix.metrics._base import metric, metrics_of
from calix.metrics.faithfulness import _flat_maps
from calix.metrics.removal import _prepare
from calix.models import as_tensor
from calix.perturb import Columns, Constant, Fill, Perturbation, Pixels

__all__ = ["completeness", "non_sensitivity", "input_invariance", "METRICS"]


def _finite(flat: torch.Tensor) -> None:
    if not torch.isfinite(flat).all():
        raise ValueError("maps contain NaN or infinite values")


@metric("lower", "axiomatic", names=("completeness_gap",))
def completeness(model: Any, x: Any, maps: Any, *, baseline: Fill | None = None,
                 target: Any = None, output: str = "logit") -> np.ndarray:
    """Completeness gap (Sundararajan et al. 2017, "Axiomatic attribution for deep networks",
    ICML): |Σ_i a_i − (f(x) − f(x̄))|, with x̄ the baseline (every feature removed).

    Parameters
    ----------
    model : anything :func:`calix.wrap` takes
    x : array of shape (n, d) or (n, C, H, W)
    maps : array of the shape of ``x``
        All elements are summed.
    baseline : the fill giving x̄ (default ``Constant(0)``).
    output : the explained score (default "logit", what Integrated Gradients completes).

    Returns
    -------
    ndarray of shape (n,) -- 0 for an attribution that sums exactly to the score's change;
    lower is better.
    """
    model, xb, clean, tgt = _prepare(model, x, target, output)
    a = as_tensor(maps, name="maps")
    if a.shape[0] != len(xb):
        raise ValueError(f"maps has {a.shape[0]} rows for {len(xb)} inputs")
    _finite(a)
    engine = Perturbation(Pixels() if xb.ndim == 4 else Columns(), baseline or Constant(0.0))
    d = engine.n_features(xb)
    with torch.no_grad():
        res = engine.query(model, xb, torch.zeros(1, d, dtype=torch.bool))
    s0 = score(clean[:, None], tgt, output, model.task)[:, 0].double().cpu()
    s1 = score(res.outputs, tgt, output, model.task)[:, 0].double().cpu()
    total = a.reshape(len(a), -1).double().sum(1).cpu()
    return (total - (s0 - s1)).abs().numpy()


@metric("lower", "axiomatic", names=("non_sensitivity",))
def non_sensitivity(model: Any, x: Any, maps: Any, *, eps: float = 1e-5,
                    fill: Fill | None = None, target: Any = None,
                    output: str = "probability") -> np.ndarray:
    """Non-sensitivity (Nguyen & Martínez 2020, "On quantitative aspects of model
    interpretability", arXiv:2007.07584): the number of features whose attribution and whose
    effect disagree about being zero -- |a_i| < eps while removing feature i alone moves the
    score by eps or more, or the other way round.

    Every feature (column; pixel, channels together) is removed alone: n × d model
    evaluations, in model batches.

    Parameters
    ----------
    eps : the threshold for "zero", on |a| and on |Δ score|.
    fill : what a removed feature becomes (default ``Constant(0)``).
    output : default "probability".

    Returns
    -------
    ndarray of shape (n,) -- counts (as floats); lower is better.
    """
    if isinstance(eps, bool) or not np.isfinite(eps) or eps < 0:
        raise ValueError(f"eps must be a finite number >= 0, got {eps!r}")
    model, xb, clean, tgt = _prepare(model, x, target, output)
    flat = _flat_maps(maps, xb).abs()  # channels summed first for images
    _finite(flat)
    n, d = flat.shape
    check_count(d, "features", width=n * d)
    keep = ~torch.eye(d, dtype=torch.bool)
    engine = Perturbation(Pixels() if xb.ndim == 4 else Columns(), fill or Constant(0.0))
    with torch.no_grad():
        res = engine.query(model, xb, keep)
    s0 = score(clean[:, None], tgt, output, model.task).double()
    s = score(res.outputs, tgt, output, model.task).double()
    inert = ((s - s0).abs() < eps).cpu()
    unattributed = (flat < eps).cpu()
    return (inert ^ unattributed).sum(1).double().numpy()


def _first_layer(module: torch.nn.Module) -> tuple[str, torch.nn.Module]:
    for name, m in module.named_modules():
        if isinstance(m, torch.nn.Linear | torch.nn.Conv2d):
            return name, m
    raise ValueError("input_invariance needs a model whose first parameterized layer is a "
                     "torch.nn.Linear or torch.nn.Conv2d")


@metric("lower", "axiomatic", names=("input_invariance",))
def input_invariance(make_explainer: Callable[[torch.nn.Module], Any], module: torch.nn.Module,
                     x: Any, *, shift: float = -1.0, target: Any = None) -> np.ndarray:
    """Input invariance (Kindermans et al. 2019, "The (un)reliability of saliency methods",
    in *Explainable AI*, LNCS 11700): shift every input by a constant and give the first layer
    a bias that cancels the shift, so the shifted model computes exactly what the original
    did on the original input; an input-invariant explanation does not change.

    Parameters
    ----------
    make_explainer : callable module -> Explainer
    module : torch.nn.Module whose first parameterized layer is ``Linear`` or ``Conv2d``
        (for a convolution with zero padding the cancellation is exact only away from the
        border; the bias is set from the response to the constant shift at the centre).
    x : array of shape (n, *input_shape)
    shift : the constant added to the inputs.

    Returns
    -------
    ndarray of shape (n,) -- max |E(x) − E'(x + shift)| over elements; 0 for an invariant
    explainer (e.g. gradients); lower is better.
    """
    if isinstance(shift, bool) or not np.isfinite(shift):
        raise ValueError(f"shift must be a finite number, got {shift!r}")
    xt = as_tensor(x, name="x")
    name, layer = _first_layer(module)
    shifted = copy.deepcopy(module)
    first = shifted.get_submodule(name)
    with torch.no_grad():
        if first.bias is None:
            first.bias = torch.nn.Parameter(torch.zeros(first.weight.shape[0],
                                                        device=first.weight.device))
        delta = torch.full((1, *xt.shape[1:]), float(shift), device=first.weight.device)
        no_bias = copy.deepcopy(layer)
        no_bias.bias = None
        resp = no_bias(delta)[0]  # (out,) or (out, H', W')
        resp = resp if resp.ndim == 1 else resp[:, resp.shape[1] // 2, resp.shape[2] // 2]
        first.bias -= resp
    base = make_explainer(module).explain(xt, target=target)
    moved = make_explainer(shifted).explain(xt + float(shift), target=base.target)
    e0 = np.asarray(base.values, dtype=np.float64).reshape(len(xt), -1)
    e1 = np.asarray(moved.values, dtype=np.float64).reshape(len(xt), -1)
    return np.abs(e0 - e1).max(1)


#: name -> :class:`MetricInfo` of every number of the metrics above (read from the functions)
METRICS = metrics_of(completeness, non_sensitivity, input_invariance)
