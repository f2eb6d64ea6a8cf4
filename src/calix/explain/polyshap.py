"""PolySHAP (Fumagalli, Witter & Musco, "PolySHAP: Extending KernelSHAP with
Interaction-Informed Polynomial Regression", ICLR 2026, arXiv 2601.18608).

KernelSHAP fits the coalition game with a linear function of the coalition vector z. PolySHAP
fits a polynomial Σ_T c_T ∏_{i∈T} z_i over an *interaction frontier* -- here every interaction
T of at most ``order`` features -- by the same Shapley-kernel-weighted least squares, with
v(∅) as the intercept and the coefficients constrained so that the polynomial passes through
v(full); the Shapley values of the polynomial are exact and closed-form,
φ_i = Σ_{T∋i} c_T / |T|. Order 1 is KernelSHAP; with paired sampling, order 2 returns the
same estimate as paired KernelSHAP (the paper's theorem, tested in calix's suite).

calix's estimator that this module used to be named after is
:class:`~calix.explain.logit_surrogate.LogitSurrogateSHAP`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from calix.explain.shapley import (
    ShapleyEstimator,
    _term_design,
    _term_shapley,
    exact_shapley,
    polynomial_terms,
)
from calix.explain.solvers import efficiency_constrained_wls
from calix.perturb import CoalitionDesign, Design, KernelSHAPDesign, LeverageDesign

__all__ = ["PolySHAP", "exact_shapley"]

#: most polynomial terms a fit may have
_MAX_TERMS = 5000
_OLD = ("link", "adjust", "alpha", "n_permutations", "n_resamples")


class PolySHAP(ShapleyEstimator):
    """PolySHAP (Fumagalli, Witter & Musco 2026): Shapley values of a degree-``order``
    polynomial fitted to the game by Shapley-kernel-weighted least squares.

    Parameters
    ----------
    order : int -- the interaction frontier: every interaction of 1..order features
        (C(d, 1) + ... + C(d, order) terms; at least that many queries plus 2 are needed).
    design : {"leverage", "kernel"} -- coalitions drawn by leverage scores
        (:class:`~calix.perturb.LeverageDesign`, as the paper) or as KernelSHAP
        (:class:`~calix.perturb.KernelSHAPDesign`); both paired.

    See :class:`~calix.explain.shapley.ShapleyEstimator` for the budget, the exact path,
    intervals and the adaptive mode.
    """

    name = "poly_shap"
    title = "PolySHAP"

    def __init__(self, model: Any, *, n_samples: int | None = None, order: int = 2,
                 design: str = "leverage", **kwargs: Any):
        old = sorted(set(kwargs) & set(_OLD))
        if old:
            raise TypeError(
                f"PolySHAP got {', '.join(old)}: PolySHAP is now the published estimator of "
                "Fumagalli, Witter & Musco (2026); calix's logit-scale surrogate estimator "
                "that took these arguments is LogitSurrogateSHAP")
        super().__init__(model, n_samples=n_samples, **kwargs)
        if isinstance(order, bool) or int(order) != order or order < 1:
            raise ValueError(f"order must be an integer >= 1, got {order!r}")
        if design not in ("leverage", "kernel"):
            raise ValueError(f"design must be 'leverage' or 'kernel', got {design!r}")
        self.order, self.design_name = int(order), design

    def params(self) -> dict[str, Any]:
        return {**super().params(), "order": self.order, "design": self.design_name}

    def design(self, d: int) -> Design:
        return LeverageDesign() if self.design_name == "leverage" else KernelSHAPDesign()

    def n_terms(self, d: int) -> int:
        return sum(math.comb(d, k) for k in range(1, min(self.order, d) + 1))

    def minimum(self, d: int) -> int:
        return self.n_terms(d) + 2

    def _validate(self, d: int) -> None:
        if self.n_terms(d) > _MAX_TERMS:
            raise ValueError(f"an order-{self.order} polynomial of {d} features has "
                             f"{self.n_terms(d)} terms (at most {_MAX_TERMS}); lower order")

    def fit(self, design: CoalitionDesign, s: Tensor, y: Tensor, full: Tensor,
            empty: Tensor, info: dict[str, Any] | None = None) -> Tensor:
        z = design.masks
        n, m, d = z.shape
        terms = polynomial_terms(d, min(self.order, d))
        w = design.weights.to(s.device)
        step = max(1, 2**25 // max(1, m * self.n_terms(d)))
        out = []
        for i in range(0, n, step):
            f = _term_design(z[i:i + step].to(s.device), terms)
            wi = w if w.ndim == 1 else w[i:i + step]
            coef = efficiency_constrained_wls(f, s[i:i + step] - empty[i:i + step, None], wi,
                                              full[i:i + step] - empty[i:i + step])
            out.append(_term_shapley(coef, terms, d))
        return torch.cat(out)


def __getattr__(name: str) -> Any:  # the old home of calix's estimator's helpers
    if name in ("quadratic_shapley", "sigmoid_quadratic_shapley", "residual_shapley"):
        from calix.explain import logit_surrogate

        return getattr(logit_surrogate, name)
    raise AttributeError(name)

