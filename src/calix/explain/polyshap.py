"""PolySHAP: Shapley values from a fitted second-order surrogate of the coalition game.

KernelSHAP fits the game v(S) = s(π(x, S)) with a linear function of the coalition vector z and
reads the Shapley values off its coefficients. PolySHAP (Fumagalli, Witter & Musco 2026) fits a
polynomial with interaction terms instead and returns the Shapley values of that polynomial, which
are exact and closed-form; with paired sampling, second-order PolySHAP and paired KernelSHAP give
the same estimate. calix adds a *link*: for a classifier's probability the polynomial is fitted
to the logit of the probability, and the surrogate is g(z) = sigmoid(q(z)). A saturated
probability is far from any low-order polynomial of z, but its logit is close to one, so the
surrogate captures most of the game at a budget where KernelSHAP's estimate is still noisy. The
Shapley values of g have no closed form; they are computed by antithetic permutation sampling on
g itself, which costs no model queries.

The Shapley values of the surrogate alone have a bias where the game is not of the surrogate's
form, and that bias does not shrink with the budget. By default (``adjust=True``) the Shapley
values of the residual game v − g are added, estimated by the Shapley-kernel regression on the
same queries: regression-adjusted estimation (Witter, Liu, Musco et al. 2025), consistent as the
budget grows and with the surrogate's low variance wherever g fits well.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from calix.explain.base import Explanation
from calix.explain.perturbation import FeatureExplainer
from calix.explain.surrogate import (
    efficiency_constrained_wls,
    real_columns,
    size_stratified_weights,
)
from calix.perturb import _subsets_of_size, all_coalitions, make_generator

__all__ = ["PolySHAP", "exact_shapley", "quadratic_shapley", "sigmoid_quadratic_shapley",
           "residual_shapley"]

_LINKS = ("auto", "identity", "logit")
#: logits are clipped to ±this (sigmoid(36) = 1 − 2e-16) so p = 0 or 1 from sklearn stays finite
_LOGIT_CLIP = 36.0
#: most polynomial terms a fit may have (order 2 with 70 features has 2486)
_MAX_TERMS = 2500


def exact_shapley(values: Tensor, coalitions: Tensor) -> Tensor:
    """Shapley values from the game's values on all 2^d coalitions.

    Parameters
    ----------
    values : Tensor (n, 2**d) -- v(S) per input, columns ordered as the rows of
        ``coalitions``.
    coalitions : Tensor (2**d, d) bool -- every coalition once (as
        :func:`calix.perturb.all_coalitions`).

    Returns
    -------
    Tensor (n, d), float64: φ_i = Σ_S |S|!(d−|S|−1)!/d! (v(S ∪ i) − v(S)).
    """
    d = coalitions.shape[1]
    z = coalitions.double().to(values.device)
    s = z.sum(1)
    lw = torch.lgamma(torch.arange(1, d + 2, dtype=torch.float64, device=values.device))  # log k!
    fact = lambda k: torch.exp(lw[k.long()])  # noqa: E731
    # v(S) enters φ_i with +w(|S|−1) when i ∈ S and −w(|S|) when i ∉ S, w(k) = k!(d−k−1)!/d!
    w_in = torch.where(s > 0, fact((s - 1).clamp(min=0)) * fact(d - s) / math.factorial(d), 0.0)
    w_out = torch.where(s < d, fact(s) * fact((d - s - 1).clamp(min=0)) / math.factorial(d), 0.0)
    v = values.double()
    return (v * w_in) @ z - (v * w_out) @ (1 - z)


def _design(z: Tensor, order: int) -> Tensor:
    """Polynomial features of coalitions (..., d): [z, z_i z_j for i < j] (no intercept)."""
    z = z.double()
    if order == 1:
        return z
    i, j = torch.triu_indices(z.shape[-1], z.shape[-1], 1, device=z.device)
    return torch.cat([z, z[..., i] * z[..., j]], -1)


def _normal_quantile(p: float) -> float:
    """Standard normal quantile."""
    return float(torch.special.ndtri(torch.tensor(p, dtype=torch.float64)))


def _spd_solve(a: Tensor, b: Tensor, fix: str = "use a larger alpha") -> Tensor:
    """Solve batched symmetric positive-definite systems a x = b by Cholesky.

    (Batched LU through ``torch.linalg.solve`` failed inside MKL's DLASWP on some of these
    ridge systems with two threads; Cholesky is also the cheaper factorisation here.)
    """
    factor, info = torch.linalg.cholesky_ex(a)
    if bool((info != 0).any()):
        raise ValueError(f"normal equations that are not positive definite; {fix}")
    return torch.cholesky_solve(b, factor)


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
    f = _design(z, order)
    a = f.transpose(1, 2) @ f
    a.diagonal(dim1=1, dim2=2).add_(alpha)
    if valid is None:
        v = torch.ones_like(a[..., 0])
    else:
        v = _design(valid[:, None, :], order)[:, 0]  # (n, terms): 1 for real terms
    rhs = torch.cat([f.transpose(1, 2) @ (y - y0[:, None])[..., None], v[..., None]], -1)
    sol = _spd_solve(a, rhs)
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


def residual_shapley(z: Tensor, r: Tensor, n_fixed: int = 0,
                     n_features: Tensor | None = None) -> Tensor:
    """Shapley values of a residual game r with r(∅) = r(full) = 0, by the Shapley-kernel
    regression on :meth:`PolySHAP.sample`'s design.

    Minimises Σ_S μ(S) (r(S) − Σ_{i∈S} ψ_i)² subject to Σψ = 0, μ(S) = 1/(C(d,|S|) |S|(d−|S|))
    the Shapley kernel (KernelSHAP's estimator). The first ``n_fixed`` rows are the enumerated
    coalitions of size 1 and d − 1 (weight μ(S): their part of the sum is exact); the others
    were drawn with sizes uniform on the remaining K sizes, so their weight μ(S)/p(S)/m' =
    K/(|S|(d−|S|) m') makes their part an unbiased estimate of the rest of the sum.

    With ``n_features`` (n,), inputs with fewer than d features (padding columns) are weighted
    by :func:`~calix.explain.surrogate.size_stratified_weights` on their real features and
    get ψ = 0 on their padding columns.

    z (n, m, d) bool, r (n, m), n_fixed int -> ψ (n, d), float64.
    """
    d, m = z.shape[-1], z.shape[-2]
    valid = None if n_features is None else real_columns(n_features, d, z.device)
    if valid is not None:
        z = z & valid[:, None, :]
    zz = z.double()
    size = zz.sum(-1)
    spread = (size * (d - size)).clamp(min=1.0)
    n_sizes = d - 3 if n_fixed else d - 1
    w = n_sizes / (spread * max(1, m - n_fixed))
    if n_fixed:
        w[:, :n_fixed] = 1.0 / (d * (d - 1))  # μ(S) = 1/(C(d, 1)·1·(d − 1)) for |S| = 1, d − 1
    if valid is not None:
        padded = torch.as_tensor(n_features).to(z.device) < d
        w = torch.where(padded[:, None], size_stratified_weights(z, n_features), w)
    fix = "the residual regression needs more queries (or adjust=False)"
    return efficiency_constrained_wls(zz, r, w, torch.zeros_like(r[:, 0]),
                                      solve=lambda a, b: _spd_solve(a, b, fix), valid=valid)


def sigmoid_quadratic_shapley(a: Tensor, b: Tensor, c: Tensor, perms: Tensor,
                              chunk_elements: int = 2**24) -> Tensor:
    """Shapley values of g(z) = sigmoid(a + b·z + ½ zᵀCz) by permutation sampling on g.

    Each permutation π and its reverse are walked feature by feature; adding π_t raises q by
    b_{π_t} + Σ_{u<t} C_{π_t π_u}, so a walk costs O(d²) and no model query. Every walk's marginal
    contributions sum to g(1) − g(0), so the estimate keeps efficiency exactly.

    Parameters
    ----------
    a : (n,); b : (n, d); c : (n, d, d) -- the quadratic on the logit scale.
    perms : (P, d) long -- permutations of range(d); their reverses are added (2P walks).
    chunk_elements : int -- walks are processed in chunks of about this many C entries.

    Returns
    -------
    Tensor (n, d), float64.
    """
    n, d = b.shape
    perms = torch.cat([perms, perms.flip(-1)]).to(b.device)
    total = torch.zeros(n, d, dtype=torch.float64, device=b.device)
    # walks advance together, one feature per step: ``above`` accumulates C's columns of the
    # features already added (O(n k d) per step, no (n, k, d, d) gather of C in walk order)
    step = max(1, chunk_elements // max(1, n * d))
    ct = c.transpose(1, 2).contiguous()  # ct[:, j] = C[:, :, j]
    for start in range(0, len(perms), step):
        p = perms[start:start + step]  # (k, d)
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
        total.scatter_add_(1, p.reshape(1, -1).expand(n, -1), mc.reshape(n, -1))
    return total / len(perms)


class PolySHAP(FeatureExplainer):
    """Shapley values of a second-order surrogate of the game, fitted on a link scale.

    Queries the full and the empty coalition, every coalition of size 1 and d − 1 when they take
    at most a quarter of the budget (the sizes the Shapley kernel weighs most: enumerated, they
    are the same for every seed), and paired coalitions (a random subset and its complement)
    with sizes uniform on the other sizes, the leverage-score distribution of the Shapley
    regression (Musco & Witter 2025); ``n_samples`` queries per input in all. Fits
    q(z) = a + Σ b_i z_i + Σ_{i<j} C_ij z_i z_j to the link of the explained score by ridge
    regression (``alpha``) through the full and the empty coalition exactly, and takes the
    Shapley values of the surrogate g:

    - ``link="identity"``: g = q, φ_i = b_i + ½ Σ_j C_ij (closed form; PolySHAP);
    - ``link="logit"``: g = sigmoid(q), φ by ``n_permutations`` antithetic permutation walks on g
      (see :func:`sigmoid_quadratic_shapley`); no model queries.

    With ``adjust=True`` the Shapley values of the residual s − g are added, estimated from the
    same queries by :func:`residual_shapley` (regression adjustment: consistent). ``adjust=False``
    returns g's values alone: less variable across seeds, but biased where g misfits, at any
    budget. ``adjust=None`` (default) adjusts when ``n_samples >= 10 d``: against exact Shapley
    values of the zoo MLPs and CNN (wine, breast_cancer, digits), the residual regression's own
    noise outweighs the bias it removes below about 10 d queries, and above it the adjusted
    error is lower (see ``benchmarks/stability.py``). Either way Σφ = s(x) − s(∅)
    (KernelSHAP's efficiency constraint). An input with fewer features than the batch's widest
    (superpixels) is fitted on its own features: its padding columns get φ = 0 and
    efficiency holds on its real features.

    ``link="auto"`` is ``"logit"`` when a classifier's probability is explained and
    ``"identity"`` otherwise. When all 2^d coalitions fit in the budget they are enumerated and
    the exact Shapley values of the game are returned (``extra["exact"]``).

    ``n_resamples > 0`` repeats the estimate on that many random halves of the queried pairs
    (no new queries; the delete-half jackknife, see :meth:`_half_samples`) and fills ``std`` and
    the normal interval ``lower``/``upper`` = φ ∓ z·std at ``level``. The interval reflects the
    sampling of coalitions; without the adjustment it misses the surrogate's bias. On the exact
    path the interval has zero width.

    ``extra`` holds ``base_value`` s(∅) (n,) (also as ``intercept``, φ0 of SHAP's additive
    explanation model φ0 + Σ φ_i z_i), ``full_value`` s(x) (n,), ``r2`` (n,) -- R² of g
    against the queried scores, end coalitions excluded; NaN for constant scores and on the
    exact path --, ``efficiency_gap`` (n,) =
    Σφ − (s(x) − s(∅)), ``link``, ``adjusted`` and ``exact``.

    Parameters
    ----------
    n_samples : int -- model queries per input, the two end coalitions included (>= d + 1).
    order : {1, 2} -- degree of the surrogate polynomial.
    link : {"auto", "identity", "logit"}
    alpha : float -- ridge penalty on the coefficients (> 0).
    adjust : bool or None -- add the residual game's Shapley values (see above).
    n_permutations : int -- permutations (each also walked reversed) for ``link="logit"``.
    n_resamples : int; level : float -- jackknife intervals (see above).
    seed : int, Generator or None -- coalitions, permutations and half-samples.

    Raises
    ------
    ValueError
        For n_samples < d + 1, an unknown order or link, the logit link on anything but a
        classifier's probability, alpha <= 0, n_permutations < 1, n_resamples == 1, more than
        2500 surrogate terms, or intervals from fewer than 4 sampled pairs.
    """

    name = "poly_shap"

    def __init__(self, model: Any, *, n_samples: int = 1000, order: int = 2, link: str = "auto",
                 alpha: float = 0.3, adjust: bool | None = None, n_permutations: int = 4096,
                 n_resamples: int = 0, level: float = 0.95,
                 seed: int | torch.Generator | None = 0,
                 **kwargs: Any):
        super().__init__(model, **kwargs)
        if order not in (1, 2):
            raise ValueError(f"order must be 1 or 2, got {order}")
        if link not in _LINKS:
            raise ValueError(f"link must be one of {_LINKS}, got {link!r}")
        if link == "logit" and (self.output != "probability" or self.model.task == "regression"):
            raise ValueError("link='logit' needs a classifier explained by its probability "
                             f"(output='probability'); got output={self.output!r}, "
                             f"task={self.model.task!r}")
        if not alpha > 0:
            raise ValueError(f"alpha must be > 0 (a ridge penalty), got {alpha}")
        if n_permutations < 1 or n_resamples < 0 or n_resamples == 1 or not 0 < level < 1:
            raise ValueError("need n_permutations >= 1, n_resamples = 0 or >= 2 and "
                             "0 < level < 1")
        self.n_samples, self.order, self.alpha = int(n_samples), int(order), float(alpha)
        self.n_permutations = int(n_permutations)
        self.adjust = None if adjust is None else bool(adjust)
        self.n_resamples, self.level, self.seed = int(n_resamples), float(level), seed
        self.link = link

    @property
    def resolved_link(self) -> str:
        if self.link != "auto":
            return self.link
        logit = self.output == "probability" and self.model.task != "regression"
        return "logit" if logit else "identity"

    def params(self) -> dict[str, Any]:
        return {**super().params(), "n_samples": self.n_samples, "order": self.order,
                "link": self.resolved_link, "alpha": self.alpha, "adjust": self.adjust,
                "n_permutations": self.n_permutations, "n_resamples": self.n_resamples,
                "level": self.level, "seed": self.seed}

    def n_fixed(self, d: int) -> int:
        """How many coalitions :meth:`sample` enumerates: all 2 d of size 1 and d − 1 when
        they take at most a quarter of the budget, else none."""
        return 2 * d if d >= 5 and 8 * d <= self.n_samples - 2 else 0

    def sample(self, n: int, d: int, g: torch.Generator) -> Tensor:
        """Coalitions (n, n_samples, d): the full and the empty one; then, when
        :meth:`n_fixed` allows, every singleton {i} followed by its complement (the sizes the
        Shapley kernel weighs most, so the same for every seed); then pairs (S, complement of S)
        with |S| uniform on the sizes not enumerated (1..d−1 or 2..d−2)."""
        fixed = self.n_fixed(d)
        m = self.n_samples - 2 - fixed
        half = (m + 1) // 2
        lo = 2 if fixed else 1
        sizes = torch.randint(lo, d - lo + 1, (n * half,), generator=g)
        drawn = _subsets_of_size(sizes, d, g).reshape(n, half, d)
        pairs = torch.stack([drawn, ~drawn], 2).reshape(n, 2 * half, d)[:, :m]
        eye = torch.eye(d, dtype=torch.bool)
        single = torch.stack([eye, ~eye], 1).reshape(2 * d, d)[:fixed]
        ends = torch.stack([torch.ones(d, dtype=torch.bool), torch.zeros(d, dtype=torch.bool)])
        head = torch.cat([ends, single])
        return torch.cat([head[None].expand(n, -1, -1), pairs], 1)

    def _link_scores(self, outputs: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        """Explained scores (n, m) and their link (n, m), float64."""
        s = self._score(outputs, targets).double()
        if self.resolved_link == "identity":
            return s, s
        lp = torch.log_softmax(outputs.double(), -1)
        idx = targets.to(lp.device).view(-1, 1, 1).expand(*lp.shape[:-1], 1)
        own = lp.gather(-1, idx)[..., 0]
        rest = torch.logsumexp(lp.scatter(-1, idx, float("-inf")), -1)
        return s, (own - rest).clamp(-_LOGIT_CLIP, _LOGIT_CLIP)

    def _step(self, m: int, d: int) -> int:
        """Fits per batched solve for m coalitions: bounds the memory of the designs (about
        2^25 entries) and of the normal equations (2^24)."""
        terms = d + (d * (d - 1) // 2 if self.order == 2 else 0)
        return max(1, min(2**25 // (max(1, m) * terms), 2**24 // terms**2))

    def adjusts(self, d: int) -> bool:
        """Whether the residual correction is added for ``d`` features (``adjust=None``: when
        ``n_samples >= 10 d``)."""
        return self.n_samples >= 10 * d if self.adjust is None else self.adjust

    def _estimate(self, z: Tensor, y: Tensor, s: Tensor, y0: Tensor, y1: Tensor,
                  perms: Tensor | None, nf: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Fit on (N, m, d) coalitions with links y and scores s (N, m) and the ends' links y0,
        y1 (N,): Shapley values (N, d) and the surrogate's values g(z) (N, m). The first
        :meth:`n_fixed` rows of z are the enumerated ones. ``nf`` (N,): each input's number of
        real features when some have padding columns (None: all have d)."""
        d = z.shape[-1]
        valid = None if nf is None else real_columns(nf, d, z.device)
        if valid is not None:
            z = z & valid[:, None, :]
        a, b, c = _fit(z, y, y0, y1, self.alpha, self.order, valid)
        q = _quadratic(z, a, b, c)
        if perms is None:
            phi, fitted = quadratic_shapley(b, c), q
        else:
            phi, fitted = sigmoid_quadratic_shapley(a, b, c, perms), torch.sigmoid(q)
        if self.adjusts(d):
            phi = phi + residual_shapley(z, s - fitted, self.n_fixed(d),
                                         None if valid is None else nf)
        return phi, fitted

    def _explain(self, x: Tensor, targets: Tensor) -> Explanation:
        seg = self.engine(x).segment(x)
        d, n = seg.d, len(x)
        if d < 2:
            raise ValueError("PolySHAP needs at least 2 features")
        if self.n_samples < d + 1:
            raise ValueError(f"PolySHAP needs n_samples >= d + 1 = {d + 1} for {d} features, "
                             f"got {self.n_samples}")
        terms = d + (d * (d - 1) // 2 if self.order == 2 else 0)
        exact = d <= 20 and 2**d <= self.n_samples
        if not exact and terms > _MAX_TERMS:
            raise ValueError(f"an order-{self.order} surrogate of {d} features has {terms} "
                             f"terms (at most {_MAX_TERMS}); use order=1 or fewer features")
        g = make_generator(self.seed)
        masks = all_coalitions(d)[None].expand(n, -1, -1) if exact else self.sample(n, d, g)
        valid = real_columns(seg.n_features, d)
        nf = None if valid is None else seg.n_features.to(x.device)
        res = self._query(x, masks, seed=g)
        s, y = self._link_scores(res.outputs, targets)
        z = masks.to(s.device)
        std = None
        if exact:
            full, empty = s[:, -1], s[:, 0]
            phi = exact_shapley(s, z[0])
            if valid is not None:  # padding players are null players: 0 up to rounding
                phi = phi * valid.to(phi.device)
            r2 = torch.full((n,), float("nan"), dtype=torch.float64)  # no surrogate
            if self.n_resamples:
                std = torch.zeros_like(phi)  # nothing was sampled
        else:
            full, empty = s[:, 0], s[:, 1]
            logit = self.resolved_link == "logit"
            perms = (torch.argsort(torch.rand(self.n_permutations, d, generator=g), -1)
                     if logit else None)
            zs, ys, ss, y1, y0 = z[:, 2:], y[:, 2:], s[:, 2:], y[:, 0], y[:, 1]
            step = self._step(zs.shape[1], d)  # inputs per fit
            nfs = [None] * len(range(0, n, step)) if nf is None else nf.split(step)
            parts = [self._estimate(zc, yc, sc, y0c, y1c, perms, nfc)
                     for zc, yc, sc, y0c, y1c, nfc in zip(
                         zs.split(step), ys.split(step), ss.split(step), y0.split(step),
                         y1.split(step), nfs, strict=True)]
            phi = torch.cat([p[0] for p in parts])
            fitted = torch.cat([p[1] for p in parts])
            var = ss.var(1, unbiased=False)
            r2 = torch.where(var > 1e-12 * (1 + (ss**2).mean(1)),
                             1 - ((ss - fitted) ** 2).mean(1) / var.clamp(min=1e-300),
                             float("nan"))
            if self.n_resamples:
                std = self._half_samples(zs, ys, ss, y0, y1, perms, g, nf)
        lower = upper = None
        if std is not None:
            half_width = _normal_quantile((1 + self.level) / 2) * std
            lower, upper = phi - half_width, phi + half_width
        gap = phi.sum(1) - (full - empty)
        # intercept: φ0 of SHAP's additive explanation model φ0 + Σ φ_i z_i, i.e. s(∅)
        out = self._result(phi.float(), seg, base_value=empty.cpu().numpy(),
                           intercept=empty.cpu().numpy(),
                           full_value=full.cpu().numpy(), r2=r2.cpu().numpy(),
                           efficiency_gap=gap.cpu().numpy(), link=self.resolved_link,
                           adjusted=not exact and self.adjusts(d), exact=exact)
        if std is not None:
            out.std, out.lower, out.upper = (t.float().cpu().numpy() for t in (std, lower, upper))
        return out

    def _half_samples(self, z: Tensor, y: Tensor, s: Tensor, y0: Tensor, y1: Tensor,
                      perms: Tensor | None, g: torch.Generator, nf: Tensor | None = None
                      ) -> Tensor:
        """Standard errors (n, d) by the delete-half jackknife (Shao & Wu 1989).

        The estimate is repeated on ``n_resamples`` random halves of the sampled pairs
        (S, complement of S) -- the ends and the enumerated coalitions always kept --, and
        Var(φ) is estimated by the variance of those half-sample estimates (the delete-k
        jackknife's factor (m − k)/k is 1 for k = m/2). Unlike the bootstrap, no coalition is
        counted twice, which would let the surrogate fit the duplicates too closely: against
        exact Shapley values the bootstrap's 95% intervals covered only 54-87%.

        The refits share the first (at most) 1024 permutations: their quadrature error is
        nearly the same for every refit, so it barely adds to the spread, and it costs a
        quarter of the walks.
        """
        n, m, d = z.shape
        nr = self.n_resamples
        fixed = self.n_fixed(d)  # enumerated, not sampled: in every half
        n_pairs = (m - fixed) // 2
        if n_pairs < 4:
            raise ValueError(f"intervals need at least 4 sampled pairs of coalitions, got "
                             f"{n_pairs}; raise n_samples or set n_resamples=0")
        order = torch.argsort(torch.rand(n * nr, n_pairs, generator=g), -1)
        pairs = order[:, :n_pairs // 2]
        pick = torch.stack([fixed + 2 * pairs, fixed + 2 * pairs + 1], -1).reshape(n * nr, -1)
        pick = torch.cat([torch.arange(fixed).expand(n * nr, -1), pick], 1)
        if (m - fixed) % 2:  # the last coalition has no partner: kept in every half
            pick = torch.cat([pick, torch.full((n * nr, 1), m - 1)], 1)
        pick = pick.to(z.device)
        rows = torch.arange(n, device=z.device).repeat_interleave(nr)[:, None]
        step = self._step(pick.shape[1], d)
        walks = None if perms is None else perms[:1024]
        phis = torch.cat([
            self._estimate(z[r, p], y[r, p], s[r, p], y0[r[:, 0]], y1[r[:, 0]], walks,
                           None if nf is None else nf[r[:, 0]])[0]
            for r, p in zip(rows.split(step), pick.split(step), strict=True)
        ]).reshape(n, nr, d)
        return phis.std(1)
