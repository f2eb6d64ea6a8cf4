"""Surrogate explainers on the shared engine: LIME and KernelSHAP, batched over inputs.

Both sample coalitions of interpretable features, query the model on every perturbation of
every input in one chunked path, and solve all inputs' weighted least-squares problems at once
(batched ``torch.linalg.solve`` in float64).

Inputs with fewer features than the widest of the batch (:class:`~calix.perturb.Superpixels`)
have *padding* columns in their coalitions: those columns remove nothing, so every surrogate
here leaves them out of its fit -- they are zeroed in the design, their coefficients are
exactly 0, kernels and Shapley weights count the input's own features, and KernelSHAP's
efficiency constraint is imposed on the real features. Padding attributions are 0 (not NaN,
so maps and sums stay defined).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from calix.explain.base import Explanation
from calix.explain.perturbation import FeatureExplainer
from calix.perturb import ShapleyKernel, _subsets_of_size, all_coalitions, make_generator

__all__ = ["LIME", "KernelSHAP", "GLIME", "USLIME", "weighted_ridge", "shapley_kernel_weights",
           "lime_kernel", "efficiency_constrained_wls", "real_columns", "size_stratified_weights"]


def real_columns(n_features: Tensor, d: int, device: torch.device | str | None = None
                 ) -> Tensor | None:
    """Which of d mask columns are real features of each input, (n, d) bool; None when every
    input has all d (no padding columns).

    ``n_features`` (n,) is :attr:`calix.perturb.Segmentation.n_features`.
    """
    nf = torch.as_tensor(n_features).to(device)
    if bool((nf == d).all()):
        return None
    return torch.arange(d, device=device) < nf[:, None]


def weighted_ridge(z: Tensor, y: Tensor, w: Tensor, alpha: float, *,
                   valid: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Batched weighted ridge regression with an unpenalised intercept.

    Parameters
    ----------
    z : Tensor (n, m, d); y : Tensor (n, m); w : Tensor (n, m) or (m,) non-negative weights
    alpha : float -- L2 penalty on the coefficients (not the intercept), as scikit-learn's Ridge.

    valid : Tensor (n, d) bool or None -- real columns (:func:`real_columns`); the others are
        left out of the fit and get coefficient exactly 0.

    The fit runs in float64 on ``y``'s device (``z`` and ``w`` are moved there).

    Returns
    -------
    coef : Tensor (n, d); intercept : Tensor (n,)
    """
    y = y.double()
    z, w = z.to(y.device, torch.float64), w.to(y.device, torch.float64).expand_as(y)
    wsum = w.sum(1, keepdim=True)
    zm = (w[..., None] * z).sum(1) / wsum  # (n, d)
    ym = (w * y).sum(1) / wsum[:, 0]
    zc, yc = z - zm[:, None], y - ym[:, None]
    if valid is not None:
        zc = zc * valid.to(zc.device)[:, None, :]
    a = zc.transpose(1, 2) @ (w[..., None] * zc)
    a = a + alpha * torch.eye(z.shape[-1], dtype=a.dtype, device=a.device)
    if valid is not None:  # a padding column's row is e_j: its coefficient solves to 0
        a = a + torch.diag_embed((~valid.to(a.device)).to(a.dtype))
    b = zc.transpose(1, 2) @ (w * yc)[..., None]
    coef = torch.linalg.solve(a, b)[..., 0]
    return coef, ym - (zm * coef).sum(1)


def efficiency_constrained_wls(z: Tensor, y: Tensor, w: Tensor, total: Tensor, *,
                               solve: Any = torch.linalg.solve,
                               valid: Tensor | None = None) -> Tensor:
    """KernelSHAP's estimator: argmin_φ Σ w (y − z·φ)² subject to Σφ = ``total``, batched.

    The constraint is eliminated (φ_d = total − Σ_{j<d} φ_j) and the remaining unconstrained
    weighted least squares, with a 1e-10 ridge, solved by ``solve(a, b)`` (default
    ``torch.linalg.solve``).

    Parameters
    ----------
    z : Tensor (n, m, d) -- coalitions (bool or float); y : Tensor (n, m) -- v(S) − v(∅)
    w : Tensor (n, m) or (m,) -- regression weights; total : Tensor (n,) -- v(full) − v(∅)
    (all moved to ``y``'s device)
    valid : Tensor (n, d) bool or None -- real columns (:func:`real_columns`): padding columns
        get φ = 0 exactly and the constraint holds on the real ones (the last real column is
        the eliminated one).

    Returns
    -------
    φ : Tensor (n, d), float64.
    """
    y = y.double()
    z, total = z.to(y.device, torch.float64), total.to(y.device, torch.float64)
    w = w.to(y.device, torch.float64).expand_as(y)
    if valid is not None:
        return _constrained_wls_padded(z, y, w, total, solve, valid.to(y.device))
    zr = z[..., :-1] - z[..., -1:]
    yr = y - z[..., -1] * total[:, None]
    a = zr.transpose(1, 2) @ (w[..., None] * zr)
    a = a + 1e-10 * torch.eye(z.shape[-1] - 1, dtype=a.dtype, device=a.device)
    head = solve(a, zr.transpose(1, 2) @ (w * yr)[..., None])[..., 0]
    return torch.cat([head, (total - head.sum(1))[:, None]], dim=1)


def _constrained_wls_padded(z: Tensor, y: Tensor, w: Tensor, total: Tensor, solve: Any,
                            valid: Tensor) -> Tensor:
    """:func:`efficiency_constrained_wls` with padding columns: each input eliminates its own
    last real column; the free columns are its other real ones."""
    n, _, d = z.shape
    last = valid.sum(1) - 1  # (n,)
    cols = torch.arange(d, device=z.device)
    free = valid & (cols != last[:, None])  # (n, d)
    z_last = z.gather(2, last.view(n, 1, 1).expand(n, z.shape[1], 1))  # (n, m, 1)
    zr = (z - z_last) * free[:, None, :].to(z.dtype)
    yr = y - z_last[..., 0] * total[:, None]
    a = zr.transpose(1, 2) @ (w[..., None] * zr)
    a = a + 1e-10 * torch.eye(d, dtype=a.dtype, device=a.device)
    a = a + torch.diag_embed((~free).to(a.dtype))  # e_j rows: φ_j = 0 for padding and `last`
    head = solve(a, zr.transpose(1, 2) @ (w * yr)[..., None])[..., 0]
    return head.scatter(1, last[:, None], (total - head.sum(1))[:, None])


def size_stratified_weights(masks: Tensor, n_features: Tensor) -> Tensor:
    """Shapley-kernel regression weights (n, m) for coalitions that are, given their number of
    real features s, uniform over the subsets of that size (every design here: enumerated
    sizes, kernel draws, their complements, restricted to an input's real features).

    A row with s real features of n_i gets the kernel mass of size s, (n_i − 1) / (s (n_i − s))
    (normalised to sum 1 over s), divided by the number of that input's rows of size s; rows
    with s = 0 or n_i get 0 (the efficiency constraint fixes them). The weighted sum over the
    rows then estimates Σ_S μ(S) f(S) of the input's own n_i-player Shapley kernel μ -- exactly
    when every subset of a size appears equally often.

    masks : (n, m, d) bool with padding columns False; n_features : (n,) -> (n, m) float64.
    """
    n, m, d = masks.shape
    nf = torch.as_tensor(n_features).to(masks.device, torch.float64)[:, None]  # (n, 1)
    s = masks.sum(-1)  # (n, m) long
    counts = torch.zeros(n, d + 1, dtype=torch.float64, device=masks.device)
    counts.scatter_add_(1, s, torch.ones(n, m, dtype=torch.float64, device=masks.device))
    sd = s.double()
    proper = (sd > 0) & (sd < nf)
    mass = torch.where(proper, (nf - 1) / (sd * (nf - sd)).clamp_min(1.0), 0.0)
    sizes = torch.arange(1, d, dtype=torch.float64, device=masks.device)
    total = torch.where(sizes < nf, (nf - 1) / (sizes * (nf - sizes)).clamp_min(1.0), 0.0)
    return mass / total.sum(1, keepdim=True).clamp_min(1e-300) / counts.gather(1, s)


def lime_kernel(masks: Tensor, width: float | None = None,
                n_features: Tensor | None = None) -> Tensor:
    """LIME's kernel sqrt(exp(−D²/w²)) of masks (..., d) -> (...), float64: D is the L2
    distance of z from the all-ones vector, w = ``width`` (default 0.75·sqrt(d)).

    With ``n_features`` (n,) for masks (n, ..., d), only input i's first n_features[i] columns
    count (D over its real features, default width 0.75·sqrt(n_features[i])).
    """
    d = masks.shape[-1]
    if n_features is None:
        w = width or 0.75 * math.sqrt(d)
        return torch.sqrt(torch.exp(-(1 - masks.double()).sum(-1) / w**2))
    nf = torch.as_tensor(n_features).to(masks.device, torch.float64)
    nf = nf.view(-1, *([1] * (masks.ndim - 1)))  # (n, 1, ..., 1)
    real = torch.arange(d, device=masks.device) < nf
    removed = ((1 - masks.double()) * real).sum(-1)
    w2 = width**2 if width else 0.5625 * nf[..., 0]
    return torch.sqrt(torch.exp(-removed / w2))


def shapley_kernel_weights(masks: Tensor) -> Tensor:
    """Shapley kernel weight (d − 1) / (C(d, s) s (d − s)) of each mask (s kept of d)."""
    d = masks.shape[-1]
    s = masks.sum(-1).double()
    log_comb = (math.lgamma(d + 1) - torch.lgamma(s + 1) - torch.lgamma(d - s + 1))
    return (d - 1) / (torch.exp(log_comb) * s * (d - s))


class LIME(FeatureExplainer):
    """LIME (Ribeiro et al. 2016): a kernel-weighted ridge surrogate on binary coalitions.

    Coalitions remove a uniformly drawn number 1..d−1 of features (LIME's image sampler); the
    first sample is the unperturbed input. Weights π(z) = sqrt(exp(−D²/w²)) with D the L2
    distance of z from the all-ones vector and w = ``kernel_width`` (default 0.75·sqrt(d), LIME's
    tabular default). Ridge with ``alpha`` (LIME: 1) and an unpenalised intercept.

    ``extra`` holds ``intercept`` (n,) and the weighted ``r2`` (n,) of each surrogate.
    """

    name = "lime"

    def __init__(self, model: Any, *, n_samples: int = 1000, kernel_width: float | None = None,
                 alpha: float = 1.0, seed: int | None = 0, **kwargs: Any):
        super().__init__(model, **kwargs)
        if alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {alpha}")
        self.n_samples, self.kernel_width, self.alpha, self.seed = (
            int(n_samples), kernel_width, float(alpha), seed)

    def params(self) -> dict[str, Any]:
        return {**super().params(), "n_samples": self.n_samples,
                "kernel_width": self.kernel_width, "alpha": self.alpha, "seed": self.seed}

    def sample(self, n: int, d: int, generator: torch.Generator) -> Tensor:
        """Masks (n, n_samples, d): the all-ones mask, then LIME's random removals."""
        m = self.n_samples - 1
        n_off = torch.randint(1, max(d, 2), (n * m,), generator=generator)
        masks = _subsets_of_size(d - n_off, d, generator).reshape(n, m, d)
        return torch.cat([torch.ones(n, 1, d, dtype=torch.bool), masks], dim=1)

    def _explain(self, x: Tensor, targets: Tensor) -> Explanation:
        seg = self.engine(x).segment(x)
        d = seg.d
        if self.n_samples < d + 1:
            raise ValueError(f"LIME needs n_samples >= d + 1 = {d + 1} for {d} features, "
                             f"got {self.n_samples}")
        g = make_generator(self.seed)
        valid = real_columns(seg.n_features, d)
        masks = self.sample(len(x), d, g)
        if valid is not None:  # padding columns stay out of the kernel and the fit
            masks = masks & valid[:, None, :]
        y, _ = self._scores(x, masks, targets, seed=g)
        zf = masks.double().to(y.device)
        w = lime_kernel(zf, self.kernel_width, None if valid is None else seg.n_features)
        coef, icpt = weighted_ridge(zf, y, w, self.alpha, valid=valid)
        pred = (zf @ coef[..., None])[..., 0] + icpt[:, None]
        yd = y.double()
        ym = (w * yd).sum(1, keepdim=True) / w.sum(1, keepdim=True)
        r2 = 1 - (w * (yd - pred) ** 2).sum(1) / (w * (yd - ym) ** 2).sum(1).clamp_min(1e-300)
        return self._result(coef.float(), seg, intercept=icpt.cpu().numpy(),
                            r2=r2.cpu().numpy())


class KernelSHAP(FeatureExplainer):
    """KernelSHAP (Lundberg & Lee 2017) with the efficiency constraint Σφ = s(x) − s(∅).

    When all 2^d − 2 proper coalitions fit in ``n_samples`` they are enumerated with their
    exact Shapley-kernel weights, which gives the exact Shapley values of the game
    v(S) = s(π(x, S)); otherwise the heaviest coalition sizes are enumerated and the rest
    sampled from the Shapley kernel (see :meth:`design`). The constrained weighted least squares
    is solved for all inputs at once.

    An input with fewer features than the batch's widest (superpixels) is explained as its own
    n_i-player game: padding columns get φ = 0, Σφ = s(x) − s(∅) over its real features, and
    its coalitions, restricted to the real features, are weighted by
    :func:`size_stratified_weights` (exact Shapley values on the enumerating path).

    ``extra`` holds ``base_value`` s(∅) (n,), ``full_value`` s(x) (n,) and ``exact`` (bool).
    """

    name = "kernel_shap"

    def __init__(self, model: Any, *, n_samples: int = 2048, paired: bool = True,
                 seed: int | None = 0, **kwargs: Any):
        super().__init__(model, **kwargs)
        self.n_samples, self.paired, self.seed = int(n_samples), bool(paired), seed

    def params(self) -> dict[str, Any]:
        return {**super().params(), "n_samples": self.n_samples, "paired": self.paired,
                "seed": self.seed}

    def design(self, n: int, d: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
        """Coalitions (n, n_samples, d) and their regression weights (n_samples,) or (n, m).

        As shap's KernelExplainer: coalition sizes are taken in pairs (s, d − s) from the
        heaviest kernel mass inwards, and a pair is enumerated completely (each subset weighted
        by its exact kernel weight) while the budget left would otherwise sample it at least
        as often as it has subsets; the rest of the budget is drawn from the remaining sizes'
        kernel (paired with complements when ``paired``) with equal weights carrying the
        remaining kernel mass. Enumerated parts are the same for every seed, which is what
        makes the estimate reproducible.
        """
        size_w = ShapleyKernel.size_weights(d)  # mass of each size 1..d-1, sums to 1
        left, mass_left = self.n_samples, 1.0
        parts, weights = [], []
        remaining = list(range(1, d))
        for s in range(1, d // 2 + 1):
            sizes = [s] if s == d - s else [s, d - s]
            count = sum(math.comb(d, k) for k in sizes)
            mass = float(sum(size_w[k - 1] for k in sizes))
            if count > left or left * mass / mass_left < count:
                break
            idx = torch.combinations(torch.arange(d), r=s)  # size s; size d - s = complements
            small = torch.zeros(len(idx), d, dtype=torch.bool)
            small[torch.arange(len(idx))[:, None], idx] = True
            for k in sizes:
                parts.append(small if k == s else ~small)
                weights.append(torch.full((len(idx),), float(size_w[k - 1]) / math.comb(d, k),
                                          dtype=torch.float64))
                remaining.remove(k)
            left -= count
            mass_left -= mass
        fixed = torch.cat(parts) if parts else torch.zeros(0, d, dtype=torch.bool)
        fixed_w = torch.cat(weights) if weights else torch.zeros(0, dtype=torch.float64)
        if left > 0 and remaining:
            probs = size_w[[k - 1 for k in remaining]]
            half = (left + 1) // 2 if self.paired else left
            pick = torch.multinomial(probs / probs.sum(), n * half, replacement=True,
                                     generator=g)
            sizes = torch.as_tensor(remaining)[pick]
            drawn = _subsets_of_size(sizes, d, g).reshape(n, half, d)
            if self.paired:
                drawn = torch.stack([drawn, ~drawn], 2).reshape(n, 2 * half, d)[:, :left]
            masks = torch.cat([fixed[None].expand(n, -1, -1), drawn], 1)
            w = torch.cat([fixed_w, torch.full((drawn.shape[1],), mass_left / drawn.shape[1],
                                               dtype=torch.float64)])
        else:
            masks, w = fixed[None].expand(n, -1, -1), fixed_w
        return masks, w

    def _explain(self, x: Tensor, targets: Tensor) -> Explanation:
        seg = self.engine(x).segment(x)
        d = seg.d
        n = len(x)
        if d < 2:
            raise ValueError("KernelSHAP needs at least 2 features")
        if self.n_samples < d:
            raise ValueError(f"KernelSHAP needs n_samples >= d = {d} for {d} features, "
                             f"got {self.n_samples}")
        exact = d <= 20 and 2**d - 2 <= self.n_samples
        g = make_generator(self.seed)
        if exact:
            coal = all_coalitions(d)[1:-1]  # drop the empty and the full coalition
            masks = coal[None].expand(n, -1, -1)
            w = shapley_kernel_weights(coal)
        else:
            masks, w = self.design(n, d, g)
        valid = real_columns(seg.n_features, d)
        if valid is not None:  # inputs with padding: their own n_i-player kernel, by size
            masks = masks & valid[:, None, :]
            padded = seg.n_features.cpu() < d
            w = torch.where(padded[:, None], size_stratified_weights(masks, seg.n_features),
                            w.expand(n, masks.shape[1]))
        ends = torch.stack([torch.ones(d, dtype=torch.bool), torch.zeros(d, dtype=torch.bool)])
        all_masks = torch.cat([ends[None].expand(n, -1, -1), masks], dim=1)
        s, _ = self._scores(x, all_masks, targets, seed=g)
        s = s.double()
        full, empty, y = s[:, 0], s[:, 1], s[:, 2:] - s[:, 1:2]
        delta = full - empty
        phi = efficiency_constrained_wls(masks.to(s.device), y, w.to(s.device), delta,
                                         valid=valid)
        return self._result(phi.float(), seg, base_value=empty.cpu().numpy(),
                            full_value=full.cpu().numpy(), exact=exact)


class GLIME(FeatureExplainer):
    """GLIME baselines (Tan et al. 2023): samples drawn from the local distribution itself,
    unit weights, ridge surrogate.

    ``variant="binomial"``: keep each feature with probability 1 / (1 + exp(−1/σ²)).
    ``variant="gauss"``: [I] continuous masks z = clip(1 + σ ε, 0, 1), ε ~ N(0, 1), which blend
    input and fill per feature (the engine's float masks); the surrogate regresses on z.
    """

    name = "glime"

    def __init__(self, model: Any, *, variant: str = "binomial", sigma: float = 1.0,
                 n_samples: int = 1000, alpha: float = 1.0, seed: int | None = 0,
                 **kwargs: Any):
        super().__init__(model, **kwargs)
        if variant not in ("binomial", "gauss"):
            raise ValueError(f"variant must be 'binomial' or 'gauss', got {variant!r}")
        if sigma <= 0:
            raise ValueError(f"sigma must be > 0, got {sigma}")
        self.variant, self.sigma, self.n_samples = variant, float(sigma), int(n_samples)
        self.alpha, self.seed = float(alpha), seed
        self.name = f"glime_{variant}"

    def params(self) -> dict[str, Any]:
        return {**super().params(), "variant": self.variant, "sigma": self.sigma,
                "n_samples": self.n_samples, "alpha": self.alpha, "seed": self.seed}

    def sample(self, n: int, d: int, g: torch.Generator) -> Tensor:
        """Masks (n, n_samples, d): bool (binomial) or float in [0, 1] (gauss)."""
        if self.variant == "binomial":
            keep = 1.0 / (1.0 + math.exp(-1.0 / self.sigma**2))
            return torch.rand(n, self.n_samples, d, generator=g) < keep
        from calix.perturb import _std_normal

        eps = _std_normal(torch.Size((n, self.n_samples, d)), g)
        return (1.0 + self.sigma * eps).clamp(0.0, 1.0)

    def _explain(self, x: Tensor, targets: Tensor) -> Explanation:
        seg = self.engine(x).segment(x)
        d = seg.d
        if self.n_samples < d + 1:
            raise ValueError(f"GLIME needs n_samples >= d + 1 = {d + 1}, got {self.n_samples}")
        g = make_generator(self.seed)
        valid = real_columns(seg.n_features, d)
        masks = self.sample(len(x), d, g)
        if valid is not None:
            masks = masks * valid[:, None, :] if masks.is_floating_point() else \
                masks & valid[:, None, :]
        y, _ = self._scores(x, masks, targets, seed=g)
        coef, icpt = weighted_ridge(masks.double().to(y.device), y,
                                    torch.ones(masks.shape[1], dtype=torch.float64,
                                               device=y.device), self.alpha, valid=valid)
        return self._result(coef.float(), seg, intercept=icpt.cpu().numpy())


class USLIME(FeatureExplainer):
    """US-LIME (Saadatfar et al. 2024) [I]: uncertainty sampling near the decision boundary
    and near x, then LIME's kernel-weighted ridge surrogate.

    Starts with ``n_start`` LIME samples; each round fits the surrogate, draws
    ``pool_factor`` × batch candidates, scores them by |surrogate(z) − 0.5| (closeness to the
    boundary of the explained probability) plus ``distance_weight`` × fraction of removed
    features (closeness to x), and queries the lowest-scoring batch.
    """

    name = "us_lime"

    def __init__(self, model: Any, *, n_samples: int = 1000, n_start: int | None = None,
                 batch: int | None = None, pool_factor: int = 5, distance_weight: float = 0.5,
                 alpha: float = 1.0, seed: int | None = 0, **kwargs: Any):
        super().__init__(model, **kwargs)
        self.n_samples, self.n_start, self.batch = int(n_samples), n_start, batch
        self.pool_factor, self.distance_weight = int(pool_factor), float(distance_weight)
        self.alpha, self.seed = float(alpha), seed

    def params(self) -> dict[str, Any]:
        return {**super().params(), "n_samples": self.n_samples, "seed": self.seed,
                "distance_weight": self.distance_weight}

    def _explain(self, x: Tensor, targets: Tensor) -> Explanation:
        seg = self.engine(x).segment(x)
        n, d = len(x), seg.d
        if self.n_samples < d + 1:
            raise ValueError(f"US-LIME needs n_samples >= d + 1 = {d + 1}, got {self.n_samples}")
        g = make_generator(self.seed)
        valid = real_columns(seg.n_features, d)
        nf = None if valid is None else seg.n_features
        keep = (lambda z: z) if valid is None else (lambda z: z & valid[:, None, :])
        sampler = LIME(self.model, n_samples=self.n_samples)
        start = min(self.n_samples, self.n_start or max(d + 1, self.n_samples // 4))
        batch = self.batch or max(1, (self.n_samples - start) // 5)
        masks = keep(LIME(self.model, n_samples=start).sample(n, d, g))
        y, _ = self._scores(x, masks, targets, seed=g)
        zs, ys = [masks], [y]
        used = start
        while used < self.n_samples:
            size = min(batch, self.n_samples - used)
            z_all, y_all = torch.cat(zs, 1), torch.cat(ys, 1)
            w = lime_kernel(z_all, None, nf)
            coef, icpt = weighted_ridge(z_all.double().to(y.device), y_all, w.to(y.device),
                                        self.alpha, valid=valid)
            cand = keep(sampler.sample(n, d, g)[:, 1:][:, : self.pool_factor * size])
            pred = (cand.double().to(y.device) @ coef[..., None])[..., 0] + icpt[:, None]
            if valid is None:
                removed = 1 - cand.double().mean(-1).to(y.device)
            else:  # share of the input's real features removed
                removed = (valid[:, None, :] & ~cand).sum(-1).double() / seg.n_features[:, None]
                removed = removed.to(y.device)
            score_ = (pred - 0.5).abs() + self.distance_weight * removed
            pick = score_.topk(size, dim=1, largest=False).indices.cpu()
            chosen = cand.gather(1, pick[..., None].expand(-1, -1, d))
            y2, _ = self._scores(x, chosen, targets, seed=g)
            zs.append(chosen)
            ys.append(y2)
            used += size
        z_all, y_all = torch.cat(zs, 1).double().to(y.device), torch.cat(ys, 1)
        w = lime_kernel(z_all, None, nf)
        coef, icpt = weighted_ridge(z_all, y_all, w, self.alpha, valid=valid)
        return self._result(coef.float(), seg, intercept=icpt.cpu().numpy())
