"""Relative stability of explanations (Agarwal et al. 2022, "Rethinking stability for
attribution-based explanations", arXiv:2203.06877): how much an explanation changes,
relative to how much the input (RIS), the model's logits (ROS) or an internal representation
(RRS) change, over neighbours that keep the prediction.

For neighbours x' of x (:func:`calix.metrics.robustness.neighbours`), with ε_min guarding
divisions by 0 (elements equal to 0 are replaced by ε_min, as the paper's code does)::

    RIS = max_x' ‖(e − e')/e‖ / max(‖(x − x')/x‖, ε_min)
    ROS = max_x' ‖(e − e')/e‖ / max(‖h(x) − h(x')‖, ε_min)        (h: logits)
    RRS = max_x' ‖(e − e')/e‖ / max(‖(L(x) − L(x'))/L(x)‖, ε_min)  (L: a layer's output)

Neighbours whose prediction differs from x's are left out (NaN when all are); all neighbours
of all inputs are explained in one explainer call and evaluated in model batches.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch

from calix.metrics._base import metric, metrics_of, neighbours
from calix.metrics.robustness import _explain_neighbours
from calix.models import as_tensor

__all__ = ["relative_input_stability", "relative_output_stability",
           "relative_representation_stability", "METRICS"]


def _rel(a: torch.Tensor, b: torch.Tensor, eps: float) -> torch.Tensor:
    """‖(a − b) / a‖ over the last axis, zero elements of a replaced by eps."""
    return ((a - b) / torch.where(a == 0, torch.full_like(a, eps), a)).norm(dim=-1)


def _stability(explainer: Any, x: Any, kind: str, *, layer: str | None, n_neighbours: int,
               radius: float, ball: str, eps_min: float, target: Any,
               seed: int | None) -> np.ndarray:
    if isinstance(eps_min, bool) or not np.isfinite(eps_min) or eps_min <= 0:
        raise ValueError(f"eps_min must be a finite number > 0, got {eps_min!r}")
    model = getattr(explainer, "model", None)
    if model is None or not hasattr(model, "forward"):
        raise TypeError("explainer must have a calix Model as .model (any calix Explainer has)")
    xt = as_tensor(x, name="x")
    nb = neighbours(xt, n_neighbours, radius, ball=ball, seed=seed)  # (n, k, ...)
    n, k = nb.shape[:2]
    e0, e1 = _explain_neighbours(explainer, xt, nb, target)  # (n, 1, D), (n, k, D)
    num = _rel(e0, e1, eps_min)  # (n, k)
    flat_nb = nb.reshape(n * k, *nb.shape[2:])
    at_x: list[torch.Tensor] = []
    at_nb: list[torch.Tensor] = []
    store = {"to": at_x}  # the hook fires once per model batch
    handle = None
    if kind == "representation":
        module = getattr(model, "module", None)
        if module is None:
            raise TypeError("relative_representation_stability needs a torch model")
        names = dict(module.named_modules())
        if layer not in names or layer == "":
            raise ValueError(f"layer must name a submodule of the model, one of "
                             f"{[m for m in names if m][:20]}, got {layer!r}")
        handle = names[layer].register_forward_hook(
            lambda mod, inp, out: store["to"].append(out.detach().reshape(len(out), -1)))
    try:
        with torch.no_grad():
            h0 = model.forward(xt)
            store["to"] = at_nb
            h1 = model.forward(flat_nb)
    finally:
        if handle is not None:
            handle.remove()
    same = (h1.argmax(1).reshape(n, k) == h0.argmax(1)[:, None]).cpu()
    if kind == "input":
        a = xt.reshape(n, 1, -1).double().cpu()
        den = _rel(a, nb.reshape(n, k, -1).double().cpu(), eps_min)
    elif kind == "output":
        den = (h0[:, None].double() - h1.reshape(n, k, -1).double()).norm(dim=-1).cpu()
    else:
        r0, r1 = torch.cat(at_x), torch.cat(at_nb)
        den = _rel(r0[:, None].double().cpu(), r1.reshape(n, k, -1).double().cpu(), eps_min)
    ratio = num / den.clamp_min(eps_min)
    ratio = torch.where(same, ratio, torch.full_like(ratio, float("nan")))
    out = ratio.numpy()
    with np.errstate(all="ignore"):
        return np.where(same.any(1).numpy(), np.nanmax(np.where(same.numpy(), out, -np.inf), 1),
                        np.nan)


_DOC = """
    Parameters
    ----------
    explainer : a calix Explainer (its ``.model`` gives the predictions and logits)
    x : array of shape (n, *input_shape)
    n_neighbours, radius, ball : the neighbourhood (:func:`calix.metrics.robustness.neighbours`;
        default uniform in the L2 ball of radius 0.05).
    eps_min : the guard against division by 0 (Agarwal et al.'s code: 1e-6).
    target : explained class (default the prediction at x, kept for every neighbour).
    seed : the neighbours' stream.

    Returns
    -------
    ndarray of shape (n,); lower is better (NaN where every neighbour changes the prediction).
"""


@metric("lower", "robustness", names=("ris",))
def relative_input_stability(explainer: Any, x: Any, *, n_neighbours: int = 20,
                             radius: float = 0.05,
                             ball: Literal["uniform", "linf", "gaussian"] = "uniform",
                             eps_min: float = 1e-6, target: Any = None,
                             seed: int | None = 0) -> np.ndarray:
    return _stability(explainer, x, "input", layer=None, n_neighbours=n_neighbours,
                      radius=radius, ball=ball, eps_min=eps_min, target=target, seed=seed)


@metric("lower", "robustness", names=("ros",))
def relative_output_stability(explainer: Any, x: Any, *, n_neighbours: int = 20,
                              radius: float = 0.05,
                              ball: Literal["uniform", "linf", "gaussian"] = "uniform",
                              eps_min: float = 1e-6, target: Any = None,
                              seed: int | None = 0) -> np.ndarray:
    return _stability(explainer, x, "output", layer=None, n_neighbours=n_neighbours,
                      radius=radius, ball=ball, eps_min=eps_min, target=target, seed=seed)


@metric("lower", "robustness", names=("rrs",))
def relative_representation_stability(explainer: Any, x: Any, *, layer: str,
                                      n_neighbours: int = 20, radius: float = 0.05,
                                      ball: Literal["uniform", "linf", "gaussian"] = "uniform",
                                      eps_min: float = 1e-6, target: Any = None,
                                      seed: int | None = 0) -> np.ndarray:
    return _stability(explainer, x, "representation", layer=layer, n_neighbours=n_neighbours,
                      radius=radius, ball=ball, eps_min=eps_min, target=target, seed=seed)


relative_input_stability.__doc__ = (
    "Relative input stability, RIS (Agarwal et al. 2022, arXiv:2203.06877): the largest\n"
    "    ‖(e − e')/e‖ / ‖(x − x')/x‖ over neighbours with x's prediction.\n" + _DOC)
relative_output_stability.__doc__ = (
    "Relative output stability, ROS (Agarwal et al. 2022, arXiv:2203.06877): the largest\n"
    "    ‖(e − e')/e‖ / ‖h(x) − h(x')‖ over neighbours with x's prediction (h: the logits).\n"
    + _DOC)
relative_representation_stability.__doc__ = (
    "Relative representation stability, RRS (Agarwal et al. 2022, arXiv:2203.06877): the\n"
    "    largest ‖(e − e')/e‖ / ‖(L(x) − L(x'))/L(x)‖ over neighbours with x's prediction,\n"
    "    L the output of the submodule named ``layer`` (e.g. ``\"features.3\"``).\n" + _DOC)


#: name -> :class:`MetricInfo` of every number of the metrics above (read from the functions)
METRICS = metrics_of(relative_input_stability, relative_output_stability,
                     relative_representation_stability)
