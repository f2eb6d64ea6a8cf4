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

__all__ = ["LIME", "KernelSHAP", "weighted_ridge", "shapley_kernel_weights"]


def weighted_ridge(z: Tensor, y: Tensor, w: Tensor, alpha: float) -> tuple[Tensor, Tensor]:
    """Batched weighted ridge regression with an unpenalised intercept.

    Parameters
    ----------
    z : Tensor (n, m, d); y : Tensor (n, m); w : Tensor (n, m) or (m,) non-negative weights
    alpha : float -- L2 penalty on the coefficients (not the intercept), as scikit-learn's Ridge.

    Returns
    -------
    coef : Tensor (n, d); intercept : Tensor (n,)
    """
    z, y = z.double(), y.double()
    w = w.double().expand_as(y)
    wsum = w.sum(1, keepdim=True)
    zm = (w[..., None] * z).sum(1) / wsum  # (n, d)
    ym = (w * y).sum(1) / wsum[:, 0]
    zc, yc = z - zm[:, None], y - ym[:, None]
    a = zc.transpose(1, 2) @ (w[..., None] * zc)
    a = a + alpha * torch.eye(z.shape[-1], dtype=a.dtype, device=a.device)
    b = zc.transpose(1, 2) @ (w * yc)[..., None]
    coef = torch.linalg.solve(a, b)[..., 0]
    return coef, ym - (zm * coef).sum(1)


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
        width = self.kernel_width or 0.75 * math.sqrt(d)
        dist2 = (1 - zf).sum(-1)  # squared L2 distance from the all-ones vector
        w = torch.sqrt(torch.exp(-dist2 / width**2))
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
    v(S) = s(π(x, S)); otherwise coalitions are drawn from the Shapley kernel (paired with
    their complements by default) and weighted equally. The constrained weighted least squares
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
            masks = ShapleyKernel(self.paired).sample(n * self.n_samples, d, seed=g)
            masks = masks.reshape(n, self.n_samples, d)
            w = torch.ones(self.n_samples, dtype=torch.float64)
        ends = torch.stack([torch.ones(d, dtype=torch.bool), torch.zeros(d, dtype=torch.bool)])
        all_masks = torch.cat([ends[None].expand(n, -1, -1), masks], dim=1)
        s, _ = self._scores(x, all_masks, targets, seed=g)
        s = s.double()
        full, empty, y = s[:, 0], s[:, 1], s[:, 2:] - s[:, 1:2]
        delta = full - empty
        z = masks.double().to(s.device)
        # eliminate φ_d = Δ − Σ_{j<d} φ_j, then unconstrained weighted least squares
        zr = z[..., :-1] - z[..., -1:]
        yr = y - z[..., -1] * delta[:, None]
        wd = w.to(s.device).expand_as(yr)
        a = zr.transpose(1, 2) @ (wd[..., None] * zr)
        a = a + 1e-10 * torch.eye(d - 1, dtype=a.dtype, device=a.device)
        b = zr.transpose(1, 2) @ (wd * yr)[..., None]
        head = torch.linalg.solve(a, b)[..., 0]
        phi = torch.cat([head, (delta - head.sum(1))[:, None]], dim=1)
        return self._result(phi.float(), seg, base_value=empty.cpu().numpy(),
                            full_value=full.cpu().numpy(), exact=exact)
