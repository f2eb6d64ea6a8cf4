"""OddSHAP (Fumagalli, Butler, Kang, Ramchandran & Witter, "An Odd Estimator for Shapley
Values", ICML 2026, arXiv 2602.01399).

Write the game in the Fourier (parity) basis of coalitions, χ_T(S) = ∏_{i∈T} (2[i∈S] − 1):
v = Σ_T f(T) χ_T. A player i ∈ T of a parity χ_T is pivotal with sign (−1)^{(number of T's
other members after it)}, so φ_i(χ_T) = 2/|T| for odd |T| and 0 for even |T|: the Shapley
values depend only on the odd part of the game, φ_i = Σ_{T∋i, |T| odd} 2 f(T)/|T|, and
Σφ = v(full) − v(∅) = 2 Σ_{|T| odd} f(T). Paired sampling (each coalition with its complement)
makes every even parity, the constant included, orthogonal to every odd one, so a regression
on odd parities (with a free intercept) is untouched by the even part of the game.

OddSHAP fits v on the intercept, the d singletons and a sparse set of higher-order odd
parities by Shapley-kernel-weighted least squares under the efficiency constraint, and returns
the Shapley values of the fit. The higher-order support comes from a proxy: gradient-boosted
trees fitted to the queried coalitions, whose Fourier coefficients are exact and finite (a
leaf on a path requiring features R present and F absent is ∏_{i∈R} (1 + χ_i)/2
∏_{j∈F} (1 − χ_j)/2); the odd interactions of three or more features with the largest
coefficients are kept, ``n_samples // interaction_factor − d`` of them (none below
``interaction_factor · (d + 1)`` queries, where the estimate is the odd linear regression). The
paper's proxy is LightGBM with depth-10 trees; calix uses scikit-learn's gradient boosting
(``tree_params``), which is installed with calix.

The jackknife refits keep the support chosen on all rows, so the intervals leave out the
variance of the support selection.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from calix.explain.shapley import (
    ShapleyEstimator,
    _rows_per_fit,
    fit_trees,
    tree_params_with_defaults,
)
from calix.explain.solvers import efficiency_constrained_wls
from calix.perturb import CoalitionDesign, Design, KernelSHAPDesign, LeverageDesign

__all__ = ["OddSHAP", "tree_fourier", "odd_parity_shapley", "odd_support"]

#: the most path features whose subsets a leaf expands (2^12 terms)
_MAX_PATH = 12


def tree_fourier(trees: list[Any], scale: float, *, min_order: int = 3,
                 odd: bool = True) -> dict[tuple[int, ...], float]:
    """Fourier coefficients, in the parity basis χ_T(z) = ∏_{i∈T} (2 z_i − 1) of binary
    coalition vectors z, of a sum of scikit-learn regression trees times ``scale``.

    Only interactions T with ``|T| >= min_order`` (and odd ``|T|`` when ``odd``) are returned,
    as a dict from sorted feature tuples to coefficients. A leaf of value c whose path
    requires the features R present (z > threshold) and F absent contributes
    c ∏_{i∈R} (1 + χ_i)/2 ∏_{j∈F} (1 − χ_j)/2, i.e. c (−1)^{|T∩F|} / 2^{|R|+|F|} to every
    T ⊆ R ∪ F.
    """
    out: dict[tuple[int, ...], float] = {}
    for tree in trees:
        t = tree.tree_
        stack: list[tuple[int, tuple[int, ...], tuple[int, ...]]] = [(0, (), ())]
        while stack:
            node, req, absent = stack.pop()
            left, right = t.children_left[node], t.children_right[node]
            if left != -1:
                feat = int(t.feature[node])
                if feat not in req:
                    stack.append((left, req, absent if feat in absent else absent + (feat,)))
                if feat not in absent:
                    stack.append((right, req if feat in req else req + (feat,), absent))
                continue
            path = req + absent
            k = len(path)
            if k < min_order:
                continue
            val = scale * float(t.value[node].ravel()[0])
            if not val:
                continue
            if k > _MAX_PATH:
                raise ValueError(f"a tree path with {k} features (at most {_MAX_PATH}); "
                                 "lower tree_params['max_depth']")
            base = val / 2**k
            sign = np.array([1.0] * len(req) + [-1.0] * len(absent))
            for mask in range(1, 2**k):
                bits = [b for b in range(k) if mask >> b & 1]
                size = len(bits)
                if size < min_order or (odd and size % 2 == 0):
                    continue
                key = tuple(sorted(path[b] for b in bits))
                out[key] = out.get(key, 0.0) + base * float(np.prod(sign[bits]))
    return out


def odd_parity_shapley(coef: Tensor, terms: list[tuple[int, ...]], d: int) -> Tensor:
    """Shapley values of Σ_T c_T χ_T over odd interactions T: φ_i = Σ_{T∋i} 2 c_T / |T|.

    coef : Tensor of shape (n, len(terms)) -> Tensor of shape (n, d).
    """
    phi = torch.zeros(coef.shape[0], d, dtype=coef.dtype, device=coef.device)
    for j, t in enumerate(terms):
        for i in t:
            phi[:, i] += 2 * coef[:, j] / len(t)
    return phi


class OddSHAP(ShapleyEstimator):
    """OddSHAP (Fumagalli et al. 2026; see the module docstring): efficiency-constrained,
    Shapley-kernel-weighted regression of the game on odd parities -- the d singletons and the
    higher-order odd interactions a gradient-boosted tree proxy finds largest -- on paired
    coalitions.

    Parameters
    ----------
    interaction_factor : int -- queries per regression term: ``n_samples //
        interaction_factor`` terms in all (the paper's η = 10), the singletons first.
    design : {"kernel", "leverage"} -- paired coalitions drawn from the Shapley kernel with its
        heaviest sizes enumerated (:class:`~calix.perturb.KernelSHAPDesign`, the paper's
        sampling) or by leverage scores (:class:`~calix.perturb.LeverageDesign`).
    proxy_target : {"game", "residual"} -- what the tree proxy is fitted to: the game's
        values (the paper) or, a calix option, their residual after the singletons-only odd
        fit, so that the trees spend their splits on interactions rather than on the additive
        part (on a nearly additive game, 24× lower error at 50 d in ``benchmarks/shapley.py``).
    tree_params : dict -- keyword arguments of scikit-learn's ``GradientBoostingRegressor``
        (the proxy); depth at most 12.

    ``extra["n_interactions"]`` is the number of higher-order terms fitted. See
    :class:`~calix.explain.shapley.ShapleyEstimator` for the budget, the exact path, intervals
    and the adaptive mode.
    """

    name = "odd_shap"
    title = "OddSHAP"

    def __init__(self, model: Any, *, n_samples: int | None = None, interaction_factor: int = 10,
                 design: str = "kernel", proxy_target: str = "game",
                 tree_params: dict[str, Any] | None = None, **kwargs: Any):
        super().__init__(model, n_samples=n_samples, **kwargs)
        if isinstance(interaction_factor, bool) or int(interaction_factor) != \
                interaction_factor or interaction_factor < 1:
            raise ValueError(f"interaction_factor must be an integer >= 1 (queries per "
                             f"regression term), got {interaction_factor!r}")
        if design not in ("kernel", "leverage"):
            raise ValueError(f"design must be 'kernel' or 'leverage', got {design!r}")
        if proxy_target not in ("game", "residual"):
            raise ValueError(f"proxy_target must be 'game' or 'residual', got {proxy_target!r}")
        self.interaction_factor, self.design_name = int(interaction_factor), design
        self.proxy_target = proxy_target
        self.tree_params = tree_params_with_defaults(tree_params, 5)
        if int(self.tree_params.get("max_depth") or _MAX_PATH + 1) > _MAX_PATH:
            raise ValueError(f"tree_params['max_depth'] must be at most {_MAX_PATH} (each leaf "
                             f"expands into 2^depth Fourier terms), got "
                             f"{self.tree_params.get('max_depth')!r}")
        self._support: list[list[tuple[int, ...]]] | None = None

    def params(self) -> dict[str, Any]:
        return {**super().params(), "interaction_factor": self.interaction_factor,
                "design": self.design_name, "proxy_target": self.proxy_target,
                "tree_params": dict(self.tree_params)}

    def design(self, d: int) -> Design:
        return KernelSHAPDesign() if self.design_name == "kernel" else LeverageDesign()

    def minimum(self, d: int) -> int:
        return d + 2

    def n_interactions(self, d: int, n_samples: int | None = None) -> int:
        """Higher-order odd terms fitted with a budget of ``n_samples`` queries."""
        n = self.n_samples if n_samples is None else n_samples
        return max(0, n // self.interaction_factor - d)

    def _prepare(self, d: int, g: torch.Generator) -> None:
        self._tree_seed = int(torch.randint(2**31, (1,), generator=g))
        self._support = None

    def fit(self, design: CoalitionDesign, s: Tensor, y: Tensor, full: Tensor,
            empty: Tensor, info: dict[str, Any] | None = None) -> Tensor:
        return self.fit_odd(design.masks, s, design.weights, full - empty, info)

    def fit_odd(self, z: Tensor, s: Tensor, w: Tensor, total: Tensor,
                info: dict[str, Any] | None = None) -> Tensor:
        """Shapley values (n, d) of the game with values ``s`` (n, m) on paired coalitions
        ``z`` (n, m, d), regression weights ``w`` (m,) or (n, m) and v(full) − v(∅) =
        ``total`` (n,). A call with ``info`` (the main fit) chooses each input's support; calls
        without (jackknife refits) keep it."""
        n, m, d = z.shape
        k = self.n_interactions(d, m + 2)
        if info is not None or self._support is None:  # the jackknife keeps the support
            self._support = [self._select(z[i], s[i], w, i, k, total[i]) for i in range(n)]
        if info is not None:
            info["n_interactions"] = np.array([len(t) for t in self._support])
        w = w.to(s.device)
        chi = 2 * z.to(s.device, torch.float64) - 1  # (n, m, d) singleton parities
        if not any(self._support):
            return self._solve(chi, s, w, total, list(range(n)), d)
        phis = []
        for i in range(n):  # each input its own support
            terms = self._support[i]
            if terms:
                cols = torch.stack([chi[i][:, list(t)].prod(-1) for t in terms], -1)
                f = torch.cat([chi[i], cols], -1)[None]
            else:
                f = chi[i][None]
            wi = w if w.ndim == 1 else w[i:i + 1]
            coef = self._constrained(f, s[i:i + 1], wi, total[i:i + 1])
            phi = 2 * coef[:, :d] + odd_parity_shapley(coef[:, d:], terms, d)
            phis.append(phi)
        return torch.cat(phis)

    def _solve(self, chi: Tensor, s: Tensor, w: Tensor, total: Tensor, rows: list[int],
               d: int) -> Tensor:
        """The singletons-only fit, batched over inputs: φ = 2 c."""
        step = _rows_per_fit(len(rows), chi.shape[1], d)
        return torch.cat([2 * self._constrained(
            chi[i:i + step], s[i:i + step], w if w.ndim == 1 else w[i:i + step],
            total[i:i + step]) for i in range(0, len(rows), step)])

    @staticmethod
    def _constrained(f: Tensor, s: Tensor, w: Tensor, total: Tensor) -> Tensor:
        """argmin Σ w (s − c0 − f·c)² subject to Σc = total/2, with a free intercept c0
        (centring on the weighted means eliminates it). f (n, m, p) -> c (n, p)."""
        w = w.to(s.device, torch.float64).expand_as(s)
        wsum = w.sum(1, keepdim=True)
        fm = (w[..., None] * f).sum(1, keepdim=True) / wsum[..., None]
        sm = (w * s).sum(1, keepdim=True) / wsum
        return efficiency_constrained_wls(f - fm, s - sm, w, total / 2)

    def _select(self, z: Tensor, s: Tensor, w: Tensor, i: int, k: int, total: Tensor
                ) -> list[tuple[int, ...]]:
        """The support of input i (z (m, d), scores s (m,), weights w (m,) or (n, m))."""
        return odd_support(z, s, w if w.ndim == 1 else w[i], k, total,
                           proxy_target=self.proxy_target, tree_params=self.tree_params,
                           seed=self._tree_seed)


def odd_support(z: Tensor, s: Tensor, w: Tensor, k: int, total: Tensor, *,
                proxy_target: str = "game", tree_params: dict[str, Any] | None = None,
                seed: int = 0) -> list[tuple[int, ...]]:
    """OddSHAP's support: the k odd interactions (|T| >= 3) with the largest Fourier
    coefficients of a gradient-boosted tree proxy fitted to one input's coalitions z (m, d),
    scores s (m,) and regression weights w (m,), v(full) − v(∅) = ``total``.
    ``proxy_target="residual"`` fits the trees to what the singletons-only odd fit leaves."""
    if k <= 0:
        return []
    params = tree_params_with_defaults(tree_params, 5)
    target = s
    if proxy_target == "residual":  # the trees fit what the singletons leave
        chi = (2 * z.to(s.device, torch.float64) - 1)[None]
        wt = w.to(s.device, torch.float64).expand(1, len(s))
        c = OddSHAP._constrained(chi, s[None], wt, total[None])
        fm = (wt[..., None] * chi).sum(1) / wt.sum()
        c0 = (wt * s[None]).sum() / wt.sum() - (fm * c).sum()
        target = s - (chi[0] @ c[0] + c0)
    gbm = fit_trees(z, target, w, params, seed)
    coef = tree_fourier(list(gbm.estimators_[:, 0]), gbm.learning_rate)
    ranked = sorted(coef, key=lambda t: (-abs(coef[t]), t))
    return ranked[:k]
