"""LogitSurrogateSHAP: calix's Shapley estimator -- a second-order surrogate of the game fitted
on the logit scale, plus a regression adjustment on the residual.

KernelSHAP fits the game v(S) = s(π(x, S)) with a linear function of the coalition vector z and
reads the Shapley values off its coefficients. This estimator fits a quadratic q(z) with all
pairwise interaction terms instead, and for a classifier's probability it fits it to the *logit*
of the probability: the surrogate is g(z) = sigmoid(q(z)). A saturated probability is far from
any low-order polynomial of z, but its logit is close to one, so the surrogate captures most of
the game at a budget where KernelSHAP's estimate is still noisy. The Shapley values of g have no
closed form; they are computed by antithetic permutation sampling on g itself, which costs no
model queries.

The Shapley values of the surrogate alone have a bias where the game is not of the surrogate's
form, and that bias does not shrink with the budget. By default the Shapley values of the
residual game v − g are added when the budget is at least 10 d, estimated by the Shapley-kernel
regression on the same queries: regression-adjusted Monte Carlo with a quadratic proxy on the
logit scale (Witter, Liu & Musco 2025, arXiv 2506.11849), consistent as the budget grows. On the
identity link with the adjustment, the surrogate cancels: the paired Shapley-kernel regression
of the residual is exact on quadratic games, so the estimate is that regression's alone.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from calix.explain.shapley import (
    ShapleyEstimator,
    _term_design,
    exact_shapley,
    polynomial_terms,
)
from calix.explain.solvers import efficiency_constrained_wls, real_columns, spd_solve
from calix.explain.surrogate import size_stratified_weights
from calix.perturb import CoalitionDesign, Design, Perturbation, SurrogateDesign, all_coalitions

__all__ = ["LogitSurrogateSHAP", "quadratic_shapley", "sigmoid_quadratic_shapley",
           "sigmoid_quadratic_shapley_exact", "residual_shapley", "surrogate_design_weights",
           "target_logit"]

_LINKS = ("auto", "identity", "logit")
#: logits are clipped to ±this (sigmoid(36) = 1 − 2e-16) so p = 0 or 1 from sklearn stays finite
_LOGIT_CLIP = 36.0
#: most polynomial terms a fit may have (order 2 with 70 features has 2486)
_MAX_TERMS = 2500


def _fit(z: Tensor, y: Tensor, y0: Tensor, y1: Tensor, alpha: float, order: int,
         valid: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Ridge fit of y ≈ q(z) = a + b·z + Σ_{i<j} C_ij z_i z_j through both end coalitions.

    q(∅) = a = y0 and q(full) = a + Σb + ΣC = y1 hold exactly, as KernelSHAP enforces
    efficiency: the intercept is fixed, and the coefficients c = (b, C) minimise
    ‖F c − (y − y0)‖² + alpha ‖c‖² subject to 1ᵀc = y1 − y0 (a Lagrange multiplier:
    c = c0 + A⁻¹1 (δ − 1ᵀc0) / (1ᵀA⁻¹1), with A = FᵀF + alpha I and c0 = A⁻¹Fᵀ(y − y0);
    every coefficient gets the same penalty).

    z (n, m, d) bool (no end coalitions), y (n, m), y0 and y1 (n,) -> a (n,), b (n, d),
    C (n, d, d) symmetric with a zero diagonal (zeros for order 1).

    ``valid`` (n, d) bool marks real columns (None: all): the terms of padding columns are
    zero columns of the design and stay out of the constraint (1 becomes the indicator v of
    the real terms), so their coefficients are exactly 0.
    """
    n, _, d = z.shape
    if valid is not None:
        z = z & valid[:, None, :]
    f = _term_design(z, polynomial_terms(d, order))
    a = f.transpose(1, 2) @ f
    a.diagonal(dim1=1, dim2=2).add_(alpha)
    if valid is None:
        v = torch.ones_like(a[..., 0])
    else:
        v = _term_design(valid[:, None, :], polynomial_terms(d, order))[:, 0]  # 1: real
    rhs = torch.cat([f.transpose(1, 2) @ (y - y0[:, None])[..., None], v[..., None]], -1)
    sol = spd_solve(a, rhs, "use a larger alpha")
    c0, u = sol[..., 0], sol[..., 1]
    coef = c0 + u * ((y1 - y0 - (v * c0).sum(1)) / (v * u).sum(1))[:, None]
    c = torch.zeros(n, d, d, dtype=coef.dtype, device=coef.device)
    if order == 2:
        i, j = torch.triu_indices(d, d, 1, device=z.device)
        c[:, i, j] = coef[:, d:]
        c = c + c.transpose(1, 2)
    return y0.clone(), coef[:, :d], c


def _quadratic(z: Tensor, a: Tensor, b: Tensor, c: Tensor) -> Tensor:
    """q(z) = a + b·z + ½ zᵀCz for coalitions z (n, m, d) -> (n, m)."""
    z = z.double()
    return a[:, None] + (z * b[:, None]).sum(-1) + 0.5 * ((z @ c) * z).sum(-1)


def quadratic_shapley(b: Tensor, c: Tensor) -> Tensor:
    """Shapley values of q(z) = a + b·z + ½ zᵀCz (C symmetric, zero diagonal): b_i + ½ Σ_j C_ij."""
    return b + 0.5 * c.sum(-1)


def surrogate_design_weights(z: Tensor, n_fixed: int = 0) -> Tensor:
    """Shapley-kernel regression weights of :class:`~calix.perturb.SurrogateDesign`'s rows.

    The first ``n_fixed`` rows are the enumerated coalitions of size 1 and d − 1: weight
    μ(S) = 1/(C(d,|S|) |S|(d−|S|)), the Shapley kernel (their part of the sum is exact). The
    others were drawn with sizes uniform on the remaining K sizes: weight μ(S)/p(S)/m' =
    K/(|S|(d−|S|) m'), which makes their part an unbiased estimate of the rest of the sum.

    z (n, m, d) bool -> (n, m) float64.
    """
    d, m = z.shape[-1], z.shape[-2]
    size = z.double().sum(-1)
    spread = (size * (d - size)).clamp(min=1.0)
    n_sizes = d - 3 if n_fixed else d - 1
    w = n_sizes / (spread * max(1, m - n_fixed))
    if n_fixed:
        w[:, :n_fixed] = 1.0 / (d * (d - 1))  # μ(S) = 1/(C(d, 1)·1·(d − 1)) for |S| = 1, d − 1
    return w


def target_logit(outputs: Tensor, targets: Tensor) -> Tensor:
    """log p_t − log(1 − p_t) of the target class from a classifier's outputs (..., k), computed
    from log-softmax (no 0/1 rounding), clipped to ±36: float64 of shape outputs.shape[:-1]."""
    lp = torch.log_softmax(outputs.double(), -1)
    idx = targets.to(lp.device).view(-1, *([1] * (lp.ndim - 1))).expand(*lp.shape[:-1], 1)
    own = lp.gather(-1, idx)[..., 0]
    rest = torch.logsumexp(lp.scatter(-1, idx, float("-inf")), -1)
    return (own - rest).clamp(-_LOGIT_CLIP, _LOGIT_CLIP)


def residual_shapley(z: Tensor, r: Tensor, n_fixed: int = 0,
                     n_features: Tensor | None = None) -> Tensor:
    """Shapley values of a residual game r with r(∅) = r(full) = 0, by the Shapley-kernel
    regression on :class:`~calix.perturb.SurrogateDesign`'s coalitions.

    Minimises Σ_S μ(S) (r(S) − Σ_{i∈S} ψ_i)² subject to Σψ = 0, μ(S) = 1/(C(d,|S|) |S|(d−|S|))
    the Shapley kernel (KernelSHAP's estimator), with the rows weighted by
    :func:`surrogate_design_weights` (the first ``n_fixed`` are the enumerated sizes 1 and
    d − 1).

    With ``n_features`` (n,), inputs with fewer than d features (padding columns) are weighted
    by :func:`~calix.explain.surrogate.size_stratified_weights` on their real features and
    get ψ = 0 on their padding columns.

    z (n, m, d) bool, r (n, m), n_fixed int -> ψ (n, d), float64.
    """
    d = z.shape[-1]
    valid = None if n_features is None else real_columns(n_features, d, z.device)
    if valid is not None:
        z = z & valid[:, None, :]
    zz = z.double()
    w = surrogate_design_weights(z, n_fixed)
    if valid is not None:
        padded = torch.as_tensor(n_features).to(z.device) < d
        w = torch.where(padded[:, None], size_stratified_weights(z, n_features), w)
    fix = "the residual regression needs more queries (or adjust=False)"
    return efficiency_constrained_wls(zz, r, w, torch.zeros_like(r[:, 0]), fix=fix,
                                      valid=valid)


def sigmoid_quadratic_shapley(a: Tensor, b: Tensor, c: Tensor, perms: Tensor,
                              chunk_elements: int = 2**24, *, variance: bool = False
                              ) -> Tensor | tuple[Tensor, Tensor]:
    """Shapley values of g(z) = sigmoid(a + b·z + ½ zᵀCz) by permutation sampling on g.

    Each permutation π and its reverse are walked feature by feature; adding π_t raises q by
    b_{π_t} + Σ_{u<t} C_{π_t π_u}, so a walk costs O(d²) and no model query. Every walk's marginal
    contributions sum to g(1) − g(0), so the estimate keeps efficiency exactly.

    Parameters
    ----------
    a : Tensor of shape (n,)
        The quadratic's constant on the logit scale.
    b : Tensor of shape (n, d)
        Its linear coefficients.
    c : Tensor of shape (n, d, d)
        Its quadratic coefficients.
    perms : Tensor of shape (P, d), long -- permutations of range(d); their reverses are added
        (2P walks).
    chunk_elements : int -- walks are processed in chunks of about this many C entries.
    variance : bool -- also return the variance of the estimate over the permutations (the
        variance of the P antithetic pairs' means, over P): the quadrature error.

    Returns
    -------
    Tensor of shape (n, d), float64 (and its variance, same shape, with ``variance=True``).
    """
    n, d = b.shape
    walks = torch.stack([perms, perms.flip(-1)], 1).reshape(-1, d).to(b.device)  # pairs
    total = torch.zeros(n, d, dtype=torch.float64, device=b.device)
    squares = torch.zeros_like(total)
    # walks advance together, one feature per step: ``above`` accumulates C's columns of the
    # features already added (O(n k d) per step, no (n, k, d, d) gather of C in walk order)
    step = 2 * max(1, chunk_elements // max(1, 2 * n * d))  # whole antithetic pairs
    ct = c.transpose(1, 2).contiguous()  # ct[:, j] = C[:, :, j]
    for start in range(0, len(walks), step):
        p = walks[start:start + step]  # (k, d)
        k = len(p)
        above = torch.zeros(n, k, d, dtype=c.dtype, device=c.device)  # Σ_{u<t} C[:, :, p_u]
        q = a[:, None].expand(n, k).clone()
        prev = torch.sigmoid(q)
        mc = torch.empty(n, k, d, dtype=torch.float64, device=b.device)
        for t in range(d):
            j = p[:, t]  # (k,) the feature each walk adds now
            inc = b.index_select(1, j) + above.gather(2, j.view(1, k, 1).expand(n, k, 1))[..., 0]
            q = q + inc
            cur = torch.sigmoid(q)
            mc[:, :, t] = cur - prev  # marginal contribution of p[:, t]
            prev = cur
            above += ct.index_select(1, j)  # add column j of each input's C
        per_walk = torch.zeros_like(mc).scatter_(2, p[None].expand(n, k, d), mc)  # (n, k, d)
        pair = per_walk.view(n, k // 2, 2, d).mean(2)
        total += pair.sum(1)
        squares += (pair**2).sum(1)
    n_pairs = len(perms)
    mean = total / n_pairs
    if not variance:
        return mean
    var = (squares / n_pairs - mean**2).clamp_min(0.0) / max(1, n_pairs - 1)
    return mean, var


def sigmoid_quadratic_shapley_exact(a: Tensor, b: Tensor, c: Tensor,
                                    chunk_elements: int = 2**24) -> Tensor:
    """Exact Shapley values of g(z) = sigmoid(a + b·z + ½ zᵀCz), by evaluating g on all 2^d
    coalitions (no model queries; O(2^d d²) per input): for small d, instead of
    :func:`sigmoid_quadratic_shapley`'s permutation walks. Shapes as there; (n, d) float64."""
    n, d = b.shape
    coal = all_coalitions(d).to(b.device)
    z = coal.double()
    step = max(1, chunk_elements // max(1, len(z) * d))
    out = []
    for i in range(0, n, step):
        q = _quadratic(z[None].expand(len(b[i:i + step]), -1, -1), a[i:i + step],
                       b[i:i + step], c[i:i + step])
        out.append(exact_shapley(torch.sigmoid(q), coal))
    return torch.cat(out)


class LogitSurrogateSHAP(ShapleyEstimator):
    """calix's Shapley estimator: a second-order surrogate of the game fitted on a link scale,
    with a regression adjustment on the residual (see the module docstring).

    Queries the full and the empty coalition, every coalition of size 1 and d − 1 when they take
    at most a quarter of the budget, and paired coalitions with sizes uniform on the other sizes
    (:class:`~calix.perturb.SurrogateDesign`); ``n_samples`` queries per input in all. Fits
    q(z) = a + Σ b_i z_i + Σ_{i<j} C_ij z_i z_j to the link of the explained score by ridge
    regression (``alpha``) through the full and the empty coalition exactly, and takes the
    Shapley values of the surrogate g:

    - ``link="identity"``: g = q, φ_i = b_i + ½ Σ_j C_ij (closed form);
    - ``link="logit"``: g = sigmoid(q), φ by ``n_permutations`` antithetic permutation walks on g
      (see :func:`sigmoid_quadratic_shapley`), or exactly by enumerating g when
      2^d <= 16 ``n_permutations`` (:func:`sigmoid_quadratic_shapley_exact`); no model queries.

    With ``adjust=True`` the Shapley values of the residual s − g are added, estimated from the
    same queries by :func:`residual_shapley` (regression adjustment: consistent). ``adjust=False``
    returns g's values alone: less variable across seeds, but biased where g misfits, at any
    budget. ``adjust=None`` (default) adjusts when ``n_samples >= 10 d``. Either way
    Σφ = s(x) − s(∅).

    ``link="auto"`` is ``"logit"`` when a classifier's probability is explained and
    ``"identity"`` otherwise. Intervals: the jackknife of :class:`ShapleyEstimator` (its refits
    walk the first 1024 permutations where the main fit walks), plus the walks' own variance.
    Without the adjustment the interval misses the surrogate's bias.

    ``extra`` adds ``r2`` (n,) -- R² of g against the queried scores, end coalitions excluded;
    NaN for constant scores and on the exact path --, ``link`` and ``adjusted``.

    Parameters
    ----------
    order : {1, 2} -- degree of the surrogate polynomial.
    link : {"auto", "identity", "logit"}
    alpha : float -- ridge penalty on the coefficients (> 0).
    adjust : bool or None -- add the residual game's Shapley values (see above).
    n_permutations : int -- permutations (each also walked reversed) for ``link="logit"``.

    Raises
    ------
    ValueError
        For n_samples < d + 1, an unknown order or link, the logit link on anything but a
        classifier's probability, alpha <= 0, n_permutations < 1, or more than 2500 surrogate
        terms.
    """

    name = "logit_surrogate_shap"
    title = "LogitSurrogateSHAP"
    default_n_samples = 1000

    def __init__(self, model: Any, *, n_samples: int | None = None, order: int = 2,
                 link: str = "auto", alpha: float = 0.3, adjust: bool | None = None,
                 n_permutations: int = 4096, **kwargs: Any):
        super().__init__(model, n_samples=n_samples, **kwargs)
        if order not in (1, 2):
            raise ValueError(f"order must be 1 or 2, got {order}")
        if link not in _LINKS:
            raise ValueError(f"link must be one of {_LINKS}, got {link!r}")
        if link == "logit" and not self.explains_probability:
            raise ValueError("link='logit' needs a classifier explained by its probability "
                             f"(output='probability'); got output={self.output!r}, "
                             f"task={self.model.task!r}")
        if not alpha > 0:
            raise ValueError(f"alpha must be > 0 (a ridge penalty), got {alpha}")
        if n_permutations < 1:
            raise ValueError(f"n_permutations must be >= 1, got {n_permutations}")
        self.order, self.alpha = int(order), float(alpha)
        self.n_permutations = int(n_permutations)
        self.adjust = None if adjust is None else bool(adjust)
        self.link = link
        self._perms: Tensor | None = None

    @property
    def resolved_link(self) -> str:
        if self.link != "auto":
            return self.link
        return "logit" if self.explains_probability else "identity"

    def params(self) -> dict[str, Any]:
        return {**super().params(), "order": self.order, "link": self.resolved_link,
                "alpha": self.alpha, "adjust": self.adjust,
                "n_permutations": self.n_permutations}

    def design(self, d: int) -> Design:
        return SurrogateDesign()

    def minimum(self, d: int) -> int:
        return d + 1

    def adjusts(self, d: int) -> bool:
        """Whether the residual correction is added for ``d`` features (``adjust=None``: when
        ``n_samples >= 10 d``)."""
        return self.n_samples >= 10 * d if self.adjust is None else self.adjust

    def _link(self, outputs: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        s = self._score(outputs, targets).double()
        if self.resolved_link == "identity":
            return s, s
        return s, target_logit(outputs, targets)

    def _validate(self, d: int) -> None:
        terms = d + (d * (d - 1) // 2 if self.order == 2 else 0)
        if terms > _MAX_TERMS:
            raise ValueError(f"an order-{self.order} surrogate of {d} features has {terms} "
                             f"terms (at most {_MAX_TERMS}); use order=1 or fewer features")

    def _prepare(self, d: int, g: torch.Generator) -> None:
        self._perms = (torch.argsort(torch.rand(self.n_permutations, d, generator=g), -1)
                       if self.resolved_link == "logit" else None)
        # few features: the surrogate's values exactly, by enumeration (no quadrature error;
        # at most ~8x the walks' cost)
        self._enumerate = self._perms is not None and 2**d <= 16 * self.n_permutations

    def _step(self, m: int, d: int) -> int:
        """Fits per batched solve for m coalitions: bounds the memory of the designs (about
        2^25 entries) and of the normal equations (2^24)."""
        terms = d + (d * (d - 1) // 2 if self.order == 2 else 0)
        return max(1, min(2**25 // (max(1, m) * terms), 2**24 // terms**2))

    def fit(self, design: CoalitionDesign, s: Tensor, y: Tensor, full: Tensor,
            empty: Tensor, info: dict[str, Any] | None = None) -> Tensor:
        z = design.masks.to(s.device)
        n, m, d = z.shape
        y1, y0 = self._ends
        perms = self._perms if info is not None or self._perms is None else self._perms[:1024]
        # the main fit enumerates up to 2^d <= 16 P; jackknife refits up to d = 12 and walk
        # the first 1024 permutations beyond (their shared quadrature error barely adds to
        # the refits' spread)
        enum = self._enumerate and (info is not None or d <= 12)
        step = self._step(m, d)
        parts = [self._estimate(zc, yc, sc, y0c, y1c, perms, design.n_fixed, enum)
                 for zc, yc, sc, y0c, y1c in zip(z.split(step), y.split(step), s.split(step),
                                                 y0.split(step), y1.split(step), strict=True)]
        phi = torch.cat([p[0] for p in parts])
        if info is not None:
            fitted = torch.cat([p[1] for p in parts])
            if parts[0][2] is not None:  # the walks' quadrature error joins the jackknife's
                info["variance"] = torch.cat([p[2] for p in parts])
            var = s.var(1, unbiased=False)
            info["r2"] = torch.where(var > 1e-12 * (1 + (s**2).mean(1)),
                                     1 - ((s - fitted) ** 2).mean(1) / var.clamp(min=1e-300),
                                     float("nan"))
            info["link"] = self.resolved_link
            info["adjusted"] = self.adjusts(d)
        return phi

    def _game(self, x: Tensor, targets: Tensor, d: int, g: torch.Generator,
              engine: Perturbation) -> dict[str, Any]:
        out = super()._game(x, targets, d, g, engine)
        if out["exact"]:
            out.update(r2=torch.full((len(x),), float("nan"), dtype=torch.float64),
                       link=self.resolved_link, adjusted=False)
        return out

    def _estimate(self, z: Tensor, y: Tensor, s: Tensor, y0: Tensor, y1: Tensor,
                  perms: Tensor | None, n_fixed: int, enumerate_: bool = False
                  ) -> tuple[Tensor, Tensor, Tensor | None]:
        """Fit on (N, m, d) coalitions with links y and scores s (N, m) and the ends' links y0,
        y1 (N,): Shapley values (N, d), the surrogate's values g(z) (N, m) and the variance of
        the permutation walks (N, d) (None when there were none)."""
        d = z.shape[-1]
        a, b, c = _fit(z, y, y0, y1, self.alpha, self.order)
        q = _quadratic(z, a, b, c)
        var = None
        if perms is None:
            phi, fitted = quadratic_shapley(b, c), q
        elif enumerate_:
            phi, fitted = sigmoid_quadratic_shapley_exact(a, b, c), torch.sigmoid(q)
        else:
            phi, var = sigmoid_quadratic_shapley(a, b, c, perms, variance=True)
            fitted = torch.sigmoid(q)
        if self.adjusts(d):
            phi = phi + residual_shapley(z, s - fitted, n_fixed)
        return phi, fitted, var
