"""Robustness of explanations: max / average sensitivity (Yeh et al. 2019), the local
Lipschitz estimate (Alvarez-Melis & Jaakkola 2018), and the model-parameter randomisation
sanity check (Adebayo et al. 2018).

Neighbours of all inputs are explained in one call of the explainer, so batched explainers
stay batched.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

import numpy as np
import torch

from calix._stats import spearman
from calix.metrics._base import metric, metrics_of, neighbours
from calix.models import as_tensor

__all__ = ["sensitivity", "local_lipschitz", "parameter_randomization", "parameter_randomisation",
           "neighbors", "neighbours", "METRICS"]



def _explain_neighbours(explainer: Any, x: torch.Tensor, nb: torch.Tensor, target: Any):
    n, k = nb.shape[:2]
    base = explainer.explain(x, target=target)
    tgt = np.repeat(base.target, k)
    flat = nb.reshape(n * k, *nb.shape[2:])
    near = explainer.explain(flat, target=tgt)
    e0 = torch.as_tensor(base.values).reshape(n, 1, -1).double()
    e1 = torch.as_tensor(near.values).reshape(n, k, -1).double()
    return e0, e1


@metric("lower", "robustness", names=("max_sensitivity", "avg_sensitivity"))
def sensitivity(explainer: Any, x: Any, *, n_neighbours: int = 20, radius: float = 0.05,
                kind: Literal["max", "avg"] = "max", normalize: bool = True,
                ball: Literal["uniform", "linf", "gaussian"] = "linf", target: Any = None,
                seed: int | None = 0) -> np.ndarray:
    """Max- or average-sensitivity: max/mean over neighbours of ‖E(x) − E(x')‖ (/ ‖E(x)‖).

    Parameters
    ----------
    explainer : a calix Explainer (any object with ``explain(x, target)``)
    x : array of shape (n, *input_shape)
    radius, ball : neighbourhood (default: uniform in the L∞ ball of radius 0.05 -- the shape
        Yeh et al. and Quantus use; Quantus's own defaults are radius 0.2 and 200 samples).
    normalize : divide by ‖E(x)‖ (Quantus's default).
    target : explained class (default the prediction at x, kept for every neighbour).

    Returns
    -------
    ndarray of shape (n,)
        Lower is better.
    """
    xt = as_tensor(x, name="x")
    nb = neighbours(xt, n_neighbours, radius, ball=ball, seed=seed)
    e0, e1 = _explain_neighbours(explainer, xt, nb, target)
    diff = (e1 - e0).norm(dim=-1)  # (n, k)
    if normalize:
        diff = diff / e0.norm(dim=-1).clamp_min(1e-12)
    out = diff.max(dim=1).values if kind == "max" else diff.mean(dim=1)
    return out.numpy()


@metric("lower", "robustness")
def local_lipschitz(explainer: Any, x: Any, *, n_neighbours: int = 40, radius: float = 0.05,
                    ball: Literal["uniform", "linf", "gaussian"] = "uniform", target: Any = None,
                    seed: int | None = 0) -> np.ndarray:
    """Local Lipschitz estimate max_{x'} ‖E(x) − E(x')‖₂ / ‖x − x'‖₂ over neighbours in a ball
    (Calibrate-to-Interpret: 40 neighbours, radius 0.05; Quantus's LocalLipschitzEstimate
    draws Gaussian neighbours instead -- ``ball="gaussian"``). Returns (n,); lower is better."""
    xt = as_tensor(x, name="x")
    nb = neighbours(xt, n_neighbours, radius, ball=ball, seed=seed)
    e0, e1 = _explain_neighbours(explainer, xt, nb, target)
    dx = (nb - xt[:, None]).reshape(len(xt), n_neighbours, -1).double().norm(dim=-1).cpu()
    ratio = (e1 - e0).norm(dim=-1) / dx.clamp_min(1e-12)
    return ratio.max(dim=1).values.numpy()


@metric("lower", "randomisation", names=("randomisation_similarity",))
def parameter_randomization(make_explainer: Any, module: torch.nn.Module, x: Any, *,
                            target: Any = None, similarity: str = "spearman",
                            seed: int = 0) -> dict[str, Any]:
    """Cascading model-parameter randomisation (Adebayo et al. 2018).

    Re-initialises the parameterised layers of a copy of ``module`` from the output layer
    backwards, one more at each step, and compares the explanation of the randomised model with
    the original one (the original prediction is kept as target). A faithful explainer's
    similarity falls towards 0.

    Parameters
    ----------
    make_explainer : callable module -> Explainer (e.g. ``lambda m: Saliency(wrap(m, ...))``)
    similarity : "spearman" (rank correlation of |maps|) or "ssim" (of min-max maps).

    Returns
    -------
    dict with ``layers`` (names, top first) and ``similarity`` (n_layers, n).
    """
    from calix.metrics.similarity import ssim

    base_exp = make_explainer(module).explain(x, target=target)
    tgt = base_exp.target
    layers = [name for name, m in module.named_modules()
              if any(True for _ in m.parameters(recurse=False))][::-1]
    model = copy.deepcopy(module)
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    sims = []
    try:
        for name in layers:  # one more randomised layer per step (the cascade is the method)
            layer = model.get_submodule(name)
            if hasattr(layer, "reset_parameters"):
                layer.reset_parameters()
            else:
                for p in layer.parameters(recurse=False):
                    torch.nn.init.normal_(p)
            exp = make_explainer(model).explain(x, target=tgt)
            if similarity == "ssim":
                sims.append(ssim(base_exp.values, exp.values))
            else:
                sims.append(spearman(np.abs(base_exp.values), np.abs(exp.values), constant=0.0))
    finally:
        torch.random.set_rng_state(gen_state)
    return {"layers": layers, "similarity": np.array(sims)}


#: name -> :class:`MetricInfo` of every number of the metrics above (read from the functions)
#: the former (British) spellings, kept as aliases
parameter_randomisation = parameter_randomization
neighbors = neighbours

METRICS = metrics_of(sensitivity, local_lipschitz, parameter_randomization)
