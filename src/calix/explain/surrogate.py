"""Surrogate explainers on the shared engine: LIME and KernelSHAP, batched over inputs.

Both sample coalitions of interpretable features, query the model on every perturbation of
every input in one chunked path, and solve all inputs' weighted least-squares problems at once
(batched ``torch.linalg.solve`` in float64).
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
           "lime_kernel", "efficiency_constrained_wls"]


def weighted_ridge(z: Tensor, y: Tensor, w: Tensor, alpha: float) -> tuple[Tensor, Tensor]:
    """Batched weighted ridge regression with an unpenalised intercept.

    Parameters
    ----------
    z : Tensor (n, m, d); y : Tensor (n, m); w : Tensor (n, m) or (m,) non-negative weights
    alpha : float -- L2 penalty on the coefficients (not the intercept), as scikit-learn's Ridge.

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
    a = zc.transpose(1, 2) @ (w[..., None] * zc)
    a = a + alpha * torch.eye(z.shape[-1], dtype=a.dtype, device=a.device)
    b = zc.transpose(1, 2) @ (w * yc)[..., None]
    coef = torch.linalg.solve(a, b)[..., 0]
    return coef, ym - (zm * coef).sum(1)


def efficiency_constrained_wls(z: Tensor, y: Tensor, w: Tensor, total: Tensor, *,
                               solve: Any = torch.linalg.solve) -> Tensor:
    """KernelSHAP's estimator: argmin_φ Σ w (y − z·φ)² subject to Σφ = ``total``, batched.

    The constraint is eliminated (φ_d = total − Σ_{j<d} φ_j) and the remaining unconstrained
    weighted least squares, with a 1e-10 ridge, solved by ``solve(a, b)`` (default
    ``torch.linalg.solve``).

    Parameters
    ----------
    z : Tensor (n, m, d) -- coalitions (bool or float); y : Tensor (n, m) -- v(S) − v(∅)
    w : Tensor (n, m) or (m,) -- regression weights; total : Tensor (n,) -- v(full) − v(∅)
    (all moved to ``y``'s device)

    Returns
    -------
    φ : Tensor (n, d), float64.
    """
    y = y.double()
    z, total = z.to(y.device, torch.float64), total.to(y.device, torch.float64)
    zr = z[..., :-1] - z[..., -1:]
    yr = y - z[..., -1] * total[:, None]
    w = w.to(y.device, torch.float64).expand_as(yr)
    a = zr.transpose(1, 2) @ (w[..., None] * zr)
    a = a + 1e-10 * torch.eye(z.shape[-1] - 1, dtype=a.dtype, device=a.device)
    head = solve(a, zr.transpose(1, 2) @ (w * yr)[..., None])[..., 0]
    return torch.cat([head, (total - head.sum(1))[:, None]], dim=1)


def lime_kernel(masks: Tensor, width: float | None = None) -> Tensor:
    """LIME's kernel sqrt(exp(−D²/w²)) of masks (..., d) -> (...), float64: D is the L2
    distance of z from the all-ones vector, w = ``width`` (default 0.75·sqrt(d))."""
    d = masks.shape[-1]
    w = width or 0.75 * math.sqrt(d)
    return torch.sqrt(torch.exp(-(1 - masks.double()).sum(-1) / w**2))


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
        masks = self.sample(len(x), d, g)
        y, _ = self._scores(x, masks, targets, seed=g)
        zf = masks.double().to(y.device)
        w = lime_kernel(zf, self.kernel_width)
        coef, icpt = weighted_ridge(zf, y, w, self.alpha)
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
        ends = torch.stack([torch.ones(d, dtype=torch.bool), torch.zeros(d, dtype=torch.bool)])
        all_masks = torch.cat([ends[None].expand(n, -1, -1), masks], dim=1)
        s, _ = self._scores(x, all_masks, targets, seed=g)
        s = s.double()
        full, empty, y = s[:, 0], s[:, 1], s[:, 2:] - s[:, 1:2]
        delta = full - empty
        phi = efficiency_constrained_wls(masks.to(s.device), y, w.to(s.device), delta)
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
        masks = self.sample(len(x), d, g)
        y, _ = self._scores(x, masks, targets, seed=g)
        coef, icpt = weighted_ridge(masks.double().to(y.device), y,
                                    torch.ones(masks.shape[1], dtype=torch.float64,
                                               device=y.device), self.alpha)
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
        sampler = LIME(self.model, n_samples=self.n_samples)
        start = min(self.n_samples, self.n_start or max(d + 1, self.n_samples // 4))
        batch = self.batch or max(1, (self.n_samples - start) // 5)
        masks = LIME(self.model, n_samples=start).sample(n, d, g)
        y, _ = self._scores(x, masks, targets, seed=g)
        zs, ys = [masks], [y]
        used = start
        while used < self.n_samples:
            size = min(batch, self.n_samples - used)
            z_all, y_all = torch.cat(zs, 1), torch.cat(ys, 1)
            w = lime_kernel(z_all)
            coef, icpt = weighted_ridge(z_all.double().to(y.device), y_all, w.to(y.device),
                                        self.alpha)
            cand = sampler.sample(n, d, g)[:, 1:][:, : self.pool_factor * size]
            pred = (cand.double().to(y.device) @ coef[..., None])[..., 0] + icpt[:, None]
            removed = 1 - cand.double().mean(-1).to(y.device)
            score_ = (pred - 0.5).abs() + self.distance_weight * removed
            pick = score_.topk(size, dim=1, largest=False).indices.cpu()
            chosen = cand.gather(1, pick[..., None].expand(-1, -1, d))
            y2, _ = self._scores(x, chosen, targets, seed=g)
            zs.append(chosen)
            ys.append(y2)
            used += size
        z_all, y_all = torch.cat(zs, 1).double().to(y.device), torch.cat(ys, 1)
        w = lime_kernel(z_all)
        coef, icpt = weighted_ridge(z_all, y_all, w, self.alpha)
        return self._result(coef.float(), seg, intercept=icpt.cpu().numpy())
