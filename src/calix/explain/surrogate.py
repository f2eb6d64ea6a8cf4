"""Surrogate explainers on the shared engine: LIME, GLIME and US-LIME, batched over inputs.

Each draws coalitions of interpretable features from its design in :mod:`calix.perturb`,
queries the model on every perturbation of every input in one chunked path, and solves all
inputs' weighted least-squares problems at once (:mod:`calix.explain.solvers`). KernelSHAP
lives with the other Shapley estimators in :mod:`calix.explain.shapley` and is importable from
here too.

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

from calix.explain.base import Stochastic, _Attribution
from calix.explain.perturbation import FeatureExplainer
from calix.explain.shapley import KernelSHAP
from calix.explain.solvers import efficiency_constrained_wls, real_columns, weighted_ridge
from calix.perturb import GlimeDesign, LimeDesign

__all__ = ["LIME", "KernelSHAP", "GLIME", "USLIME", "weighted_ridge", "shapley_kernel_weights",
           "lime_kernel", "efficiency_constrained_wls", "real_columns", "size_stratified_weights"]


def size_stratified_weights(masks: Tensor, n_features: Tensor) -> Tensor:
    """Shapley-kernel regression weights (n, m) for coalitions that are, given their number of
    real features s, uniform over the subsets of that size (every design here: enumerated
    sizes, kernel draws, their complements, restricted to an input's real features).

    A row with s real features of n_i gets the kernel mass of size s, (n_i − 1) / (s (n_i − s))
    (normalised to sum 1 over s), divided by the number of that input's rows of size s; rows
    with s = 0 or n_i get 0 (the efficiency constraint fixes them). The weighted sum over the
    rows then estimates Σ_S μ(S) f(S) of the input's own n_i-player Shapley kernel μ -- exactly
    when every subset of a size appears equally often.

    Parameters
    ----------
    masks : bool Tensor of shape (n, m, d)
        Coalitions, padding columns False.
    n_features : Tensor of shape (n,)
        Real features per input.

    Returns
    -------
    float64 Tensor of shape (n, m)
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


def _begin(explainer: Any, x: Tensor, method: str
           ) -> tuple[Any, Any, torch.Generator, Tensor | None]:
    """A surrogate explainer's set-up for the batch ``x``: its engine, the segmentation of
    ``x``, the call's generator and the real-column mask ``(n, d)`` (None without padding),
    after checking that ``n_samples`` leaves at least d + 1 coalitions for a fit of d
    features and an intercept."""
    engine = explainer.engine(x)
    seg = engine.segment(x)
    d = seg.d
    if explainer.n_samples < d + 1:
        raise ValueError(f"{method} needs n_samples >= d + 1 = {d + 1} for {d} features, "
                         f"got {explainer._knob_given()}")
    return engine, seg, explainer._generator(), real_columns(seg.n_features, d)


def _real_only(masks: Tensor, valid: Tensor | None) -> Tensor:
    """Masks (n, m, d), bool or float, with padding columns (``valid`` False) set to 0, so
    that they stay out of the kernel and the fit."""
    if valid is None:
        return masks
    return masks * valid[:, None, :] if masks.is_floating_point() else masks & valid[:, None, :]


class LIME(FeatureExplainer, Stochastic):
    """LIME (Ribeiro et al. 2016): a kernel-weighted ridge surrogate on binary coalitions.

    Coalitions remove a uniformly drawn number 1..d−1 of features (LIME's image sampler); the
    first sample is the unperturbed input. Weights π(z) = sqrt(exp(−D²/w²)) with D the L2
    distance of z from the all-ones vector and w = ``kernel_width`` (default 0.75·sqrt(d), LIME's
    tabular default). Ridge with ``alpha`` (LIME: 1) and an unpenalised intercept.

    ``extra`` holds ``intercept`` (n,) and the weighted ``r2`` (n,) of each surrogate.
    """

    name = "lime"
    _budget_knob = "n_samples"

    def __init__(self, model: Any, *, n_samples: int | None = None,
                 kernel_width: float | None = None, alpha: float = 1.0, **kwargs: Any):
        super().__init__(model, **kwargs)
        if alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {alpha}")
        self._apply_budget(n_samples, 1000)
        self.n_samples, self.kernel_width, self.alpha = (
            int(self.n_samples), kernel_width, float(alpha))

    def params(self) -> dict[str, Any]:
        return {**super().params(), "n_samples": self.n_samples,
                "kernel_width": self.kernel_width, "alpha": self.alpha, "seed": self.seed}

    def sample(self, n: int, d: int, generator: torch.Generator) -> Tensor:
        """Masks (n, n_samples, d): the all-ones mask, then LIME's random removals
        (:class:`~calix.perturb.LimeDesign`)."""
        return LimeDesign().draw(n, self.n_samples, d, generator).masks

    def _explain(self, x: Tensor, targets: Tensor) -> _Attribution:
        engine, seg, g, valid = _begin(self, x, "LIME")
        d = seg.d
        masks = _real_only(self.sample(len(x), d, g), valid)
        y, _ = self._scores(x, masks, targets, seed=g, engine=engine)
        zf = masks.double().to(y.device)
        w = lime_kernel(zf, self.kernel_width, None if valid is None else seg.n_features)
        coef, icpt = weighted_ridge(zf, y, w, self.alpha, valid=valid)
        pred = (zf @ coef[..., None])[..., 0] + icpt[:, None]
        yd = y.double()
        ym = (w * yd).sum(1, keepdim=True) / w.sum(1, keepdim=True)
        r2 = 1 - (w * (yd - pred) ** 2).sum(1) / (w * (yd - ym) ** 2).sum(1).clamp_min(1e-300)
        return self._result(coef.float(), seg, engine, intercept=icpt.cpu().numpy(),
                            r2=r2.cpu().numpy())


class GLIME(FeatureExplainer, Stochastic):
    """GLIME baselines (Tan et al. 2023): samples drawn from the local distribution itself,
    unit weights, ridge surrogate.

    ``variant="binomial"``: keep each feature with probability 1 / (1 + exp(−1/σ²)).
    ``variant="gauss"``: continuous masks z = clip(1 + σ ε, 0, 1), ε ~ N(0, 1), which blend
    input and fill per feature (the engine's float masks); the surrogate regresses on z. (How
    the Gaussian samples become masks, clipped to [0, 1], is calix's choice.)
    """

    name = "glime"
    _budget_knob = "n_samples"

    def __init__(self, model: Any, *, variant: str = "binomial", sigma: float = 1.0,
                 n_samples: int | None = None, alpha: float = 1.0, **kwargs: Any):
        super().__init__(model, **kwargs)
        self._design = GlimeDesign(variant, sigma)  # checks variant and sigma
        self._apply_budget(n_samples, 1000)
        self.variant, self.sigma, self.n_samples = variant, float(sigma), int(self.n_samples)
        self.alpha = float(alpha)
        self.name = f"glime_{variant}"

    def params(self) -> dict[str, Any]:
        return {**super().params(), "variant": self.variant, "sigma": self.sigma,
                "n_samples": self.n_samples, "alpha": self.alpha, "seed": self.seed}

    def sample(self, n: int, d: int, g: torch.Generator) -> Tensor:
        """Masks (n, n_samples, d): bool (binomial) or float in [0, 1] (gauss)
        (:class:`~calix.perturb.GlimeDesign`)."""
        return self._design.draw(n, self.n_samples, d, g).masks

    def _explain(self, x: Tensor, targets: Tensor) -> _Attribution:
        engine, seg, g, valid = _begin(self, x, "GLIME")
        d = seg.d
        masks = _real_only(self.sample(len(x), d, g), valid)
        y, _ = self._scores(x, masks, targets, seed=g, engine=engine)
        coef, icpt = weighted_ridge(masks.double().to(y.device), y,
                                    torch.ones(masks.shape[1], dtype=torch.float64,
                                               device=y.device), self.alpha, valid=valid)
        return self._result(coef.float(), seg, engine, intercept=icpt.cpu().numpy())


class USLIME(FeatureExplainer, Stochastic):
    """US-LIME (Saadatfar et al. 2024): uncertainty sampling near the decision boundary and
    near x, then LIME's kernel-weighted ridge surrogate. The details below (start size, batch
    and pool sizes, the candidates' score) are calix's choices.

    Starts with ``n_start`` LIME samples; each round fits the surrogate, draws
    ``pool_factor`` × batch candidates, scores them by |surrogate(z) − 0.5| (closeness to the
    boundary of the explained probability) plus ``distance_weight`` × fraction of removed
    features (closeness to x), and queries the lowest-scoring batch.
    """

    name = "us_lime"
    _budget_knob = "n_samples"

    def __init__(self, model: Any, *, n_samples: int | None = None, n_start: int | None = None,
                 batch: int | None = None, pool_factor: int = 5, distance_weight: float = 0.5,
                 alpha: float = 1.0, **kwargs: Any):
        super().__init__(model, **kwargs)
        self._apply_budget(n_samples, 1000)
        self.n_samples, self.n_start, self.batch = int(self.n_samples), n_start, batch
        self.pool_factor, self.distance_weight = int(pool_factor), float(distance_weight)
        self.alpha = float(alpha)

    def params(self) -> dict[str, Any]:
        return {**super().params(), "n_samples": self.n_samples, "seed": self.seed,
                "distance_weight": self.distance_weight}

    def _explain(self, x: Tensor, targets: Tensor) -> _Attribution:
        engine, seg, g, valid = _begin(self, x, "US-LIME")
        n, d = len(x), seg.d
        nf = None if valid is None else seg.n_features

        def keep(z: Tensor) -> Tensor:
            return _real_only(z, valid)

        sampler = LIME(self.model, n_samples=self.n_samples)
        start = min(self.n_samples, self.n_start or max(d + 1, self.n_samples // 4))
        batch = self.batch or max(1, (self.n_samples - start) // 5)
        masks = keep(LIME(self.model, n_samples=start).sample(n, d, g))
        y, _ = self._scores(x, masks, targets, seed=g, engine=engine)
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
            y2, _ = self._scores(x, chosen, targets, seed=g, engine=engine)
            zs.append(chosen)
            ys.append(y2)
            used += size
        z_all, y_all = torch.cat(zs, 1).double().to(y.device), torch.cat(ys, 1)
        w = lime_kernel(z_all, None, nf)
        coef, icpt = weighted_ridge(z_all, y_all, w, self.alpha, valid=valid)
        return self._result(coef.float(), seg, engine, intercept=icpt.cpu().numpy())
