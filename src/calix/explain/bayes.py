"""Explanations that know how sure they are: a Bayesian linear surrogate, BayesLIME /
BayesSHAP (Slack et al. 2021) and EAGLE-style active perturbation selection.

The surrogate is y = φᵀ[1, z] + ε with ε ~ N(0, σ²/π(z)) and prior φ | σ² ~ N(0, σ² I). Its
normal-inverse-gamma posterior is kept as sufficient statistics -- A = ZᵀΠZ + I, b = ZᵀΠy,
yᵀΠy and N -- for a batch of inputs at once, so adding queries is a rank-k update and never a
refit from scratch:

- V = A⁻¹, φ̂ = V b, s² = (yᵀΠy − bᵀφ̂) / N  (= [(y − Zφ̂)ᵀΠ(y − Zφ̂) + φ̂ᵀφ̂] / N);
- σ² | data ~ Scaled-Inv-χ²(N, s²); φ marginally Student-t with N degrees of freedom,
  location φ̂ and scale s² V; 95% credible intervals from that t;
- predictive variance at z: s² (1 + [1, z] V [1, z]ᵀ).

Inputs with fewer features than the batch's widest (superpixels) have padding columns: they
are set to False in every coalition (a zero design column keeps its prior and never gains
information, so it attracts no EIG), kernels count the input's own features, and the
padding attributions, standard deviations and intervals are 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from calix.explain.base import Stochastic, _Attribution
from calix.explain.perturbation import FeatureExplainer
from calix.explain.surrogate import LIME, lime_kernel, real_columns
from calix.perturb import Perturbation, ShapleyKernel

__all__ = ["BayesianLinear", "BayesLIME", "BayesSHAP", "EAGLE", "lime_kernel",
           "expected_information_gain"]


def shap_kernel(masks: Tensor, large: float = 1e6, n_features: Tensor | None = None
                ) -> Tensor:
    """Regression weights for coalitions *drawn from* the Shapley kernel: 1 for every proper
    coalition (the sampling already carries the kernel, as in KernelSHAP), ``large`` for the
    empty and full coalitions, which anchor φ₀ ≈ s(∅) and φ₀ + Σφ ≈ s(x) (efficiency).

    With ``n_features`` (n,) for masks (n, m, d) whose padding columns are False, "full"
    means all of input i's n_features[i] real features."""
    s = masks.sum(-1)
    d = masks.shape[-1] if n_features is None else \
        torch.as_tensor(n_features).to(masks.device)[:, None]
    w = torch.ones(masks.shape[:-1], dtype=torch.float64, device=masks.device)
    return torch.where((s == 0) | (s == d), torch.full_like(w, large), w)


def _anchors(n: int, d: int) -> Tensor:
    """The full and the empty coalition for each of n inputs, (n, 2, d)."""
    return torch.stack([torch.ones(d, dtype=torch.bool), torch.zeros(d, dtype=torch.bool)]
                       ).expand(n, 2, d)


@dataclass
class BayesianLinear:
    """The NIG posterior of a kernel-weighted Bayesian linear surrogate, for n inputs at once.

    Build with :meth:`empty` and add data with :meth:`update`. Shapes: d features plus an
    intercept (column 0), so matrices are (n, d + 1, d + 1).
    """

    precision: Tensor  # A = ZᵀΠZ + I, (n, p, p)
    b: Tensor  # ZᵀΠy, (n, p)
    yy: Tensor  # yᵀΠy, (n,)
    count: Tensor  # N, (n,)

    @classmethod
    def empty(cls, n: int, d: int, *, device: torch.device | str | None = None
              ) -> BayesianLinear:
        """The prior: A = I, b = 0, no data."""
        p = d + 1
        eye = torch.eye(p, dtype=torch.float64, device=device).expand(n, p, p).clone()
        zeros = torch.zeros(n, dtype=torch.float64, device=device)
        return cls(eye, torch.zeros(n, p, dtype=torch.float64, device=device), zeros,
                   zeros.clone())

    @staticmethod
    def design(z: Tensor) -> Tensor:
        """[1, z] of shape (..., d + 1) in float64."""
        z = z.double()
        return torch.cat([torch.ones(*z.shape[:-1], 1, dtype=z.dtype, device=z.device), z], -1)

    def update(self, z: Tensor, y: Tensor, weights: Tensor) -> BayesianLinear:
        """Add observations: z (n, m, d), y (n, m), kernel weights (n, m) (or (m,)).

        Returns a new posterior (the old one is unchanged).
        """
        dev = self.precision.device
        x = self.design(z.to(dev))
        w = weights.to(dev, torch.float64).expand(y.shape)
        yd = y.to(dev, torch.float64)
        a = self.precision + x.transpose(1, 2) @ (w[..., None] * x)
        b = self.b + (x.transpose(1, 2) @ (w * yd)[..., None])[..., 0]
        return BayesianLinear(a, b, self.yy + (w * yd**2).sum(1), self.count + y.shape[1])

    @property
    def covariance_factor(self) -> Tensor:
        """V = A⁻¹, (n, p, p)."""
        return torch.cholesky_inverse(torch.linalg.cholesky(self.precision))

    @property
    def mean(self) -> Tensor:
        """φ̂ (n, p), intercept first."""
        return torch.cholesky_solve(self.b[..., None], torch.linalg.cholesky(self.precision))[
            ..., 0]

    @property
    def s2(self) -> Tensor:
        """s² (n,), the scale of σ²'s scaled-inverse-χ² posterior."""
        if (self.count < 1).any():
            raise ValueError("the posterior has no data yet")
        return ((self.yy - (self.b * self.mean).sum(-1)) / self.count).clamp_min(1e-300)

    @property
    def std(self) -> Tensor:
        """Marginal posterior standard deviation of φ (n, p): Student-t scale × sqrt(ν/(ν−2))
        for ν > 2, the t scale itself otherwise."""
        scale = torch.sqrt(self.s2[:, None] * torch.diagonal(self.covariance_factor, 0, 1, 2))
        nu = self.count[:, None]
        return torch.where(nu > 2, scale * torch.sqrt(nu / (nu - 2).clamp_min(1e-12)), scale)

    def interval(self, level: float = 0.95) -> tuple[Tensor, Tensor]:
        """Equal-tailed credible interval of every φ_j from the Student-t marginal."""
        from scipy.stats import t as student_t

        q = torch.as_tensor(student_t.ppf(0.5 + level / 2, self.count.cpu().numpy()),
                            dtype=torch.float64, device=self.b.device)[:, None]
        scale = torch.sqrt(self.s2[:, None] * torch.diagonal(self.covariance_factor, 0, 1, 2))
        return self.mean - q * scale, self.mean + q * scale

    def predictive_variance(self, z: Tensor) -> Tensor:
        """s² (1 + [1, z] V [1, z]ᵀ) for candidates z (n, c, d) -> (n, c), on the posterior's
        device."""
        x = self.design(z.to(self.precision.device))
        quad = ((x @ self.covariance_factor) * x).sum(-1)
        return self.s2[:, None] * (1 + quad)

    def log_det_ratio(self) -> Tensor:
        """log det(A) − log det(I) = the information gained so far (n,), in nats ×2."""
        return 2 * torch.log(torch.diagonal(torch.linalg.cholesky(self.precision), 0, 1, 2)).sum(-1)


def expected_information_gain(post: BayesianLinear, z: Tensor, weights: Tensor) -> Tensor:
    """EIG of querying each candidate: ½ log(1 + π(z) [1,z] V [1,z]ᵀ), shape (n, c).

    (With Σ = σ² V the σ² cancels: the gain about φ does not depend on the noise scale.)
    """
    x = post.design(z.to(post.precision.device))
    quad = ((x @ post.covariance_factor) * x).sum(-1)
    return 0.5 * torch.log1p(weights.double().to(quad.device) * quad)


class _BayesSurrogate(FeatureExplainer, Stochastic):
    """Shared machinery: sample, query, update, report mean / std / intervals.

    ``n_samples`` (default 1000) counts the drawn coalitions; the Shapley kernel queries the
    empty and the full coalition in addition, so ``budget=`` sets ``n_samples = budget − 2``
    there (``budget`` with the LIME kernel).
    """

    kernel_name = "lime"
    _budget_knob = "n_samples"

    def __init__(self, model: Any, *, n_samples: int | None = None, level: float = 0.95,
                 **kwargs: Any):
        super().__init__(model, **kwargs)
        self._apply_budget(n_samples, 1000)
        self.n_samples, self.level = int(self.n_samples), float(level)

    @property
    def _anchors(self) -> int:
        """Queries per input beyond the drawn coalitions: the SHAP kernel's two anchors."""
        return 2 if self.kernel_name == "shap" else 0

    def _queries(self, knob: int) -> int:
        return knob + self._anchors

    def _set_budget(self, budget: int) -> None:
        if budget - self._anchors < 1:
            raise ValueError(f"budget={budget} is too small for {type(self).__name__}: the "
                             f"{self.kernel_name} kernel takes {self._anchors} anchor queries "
                             f"per input and at least one drawn coalition")
        self.n_samples = budget - self._anchors

    def params(self) -> dict[str, Any]:
        return {**super().params(), "n_samples": self.n_samples, "seed": self.seed,
                "level": self.level}

    def _kernel(self, masks: Tensor, nf: Tensor | None = None) -> Tensor:
        """Kernel weights of masks (n, m, d); ``nf`` (n,) real features per input (None: d)."""
        if self.kernel_name == "lime":
            return lime_kernel(masks, None, nf)
        return shap_kernel(masks, n_features=nf)

    def _draw(self, n: int, m: int, d: int, g: torch.Generator,
              valid: Tensor | None = None) -> Tensor:
        """Coalitions (n, m, d); padding columns (``valid`` False) are set to False."""
        if self.kernel_name == "lime":
            masks = LIME(self.model, n_samples=m + 1).sample(n, d, g)[:, 1:]
        else:
            masks = ShapleyKernel(paired=True).sample(n * m, d, seed=g).reshape(n, m, d)
        return masks if valid is None else masks & valid[:, None, :]

    def _check(self, d: int, budget: int) -> None:
        if budget < d + 1:
            raise ValueError(f"{type(self).__name__} needs a budget of at least d + 1 = {d + 1} "
                             f"queries for {d} features, got {budget} (n_samples="
                             f"{self._knob_given()}, n_start={getattr(self, 'n_start', None)})")

    def _begin(self, x: Tensor, budget: int
               ) -> tuple[Perturbation, Any, Tensor | None, Tensor | None, torch.Generator]:
        """The call's set-up for the batch ``x``: its engine and segmentation, the real-column
        mask (n, d) and real feature counts (n,) (both None without padding), and, once
        ``budget`` is checked against d, the call's generator."""
        engine = self.engine(x)
        seg = engine.segment(x)
        valid = real_columns(seg.n_features, seg.d)
        self._check(seg.d, budget)
        return engine, seg, valid, None if valid is None else seg.n_features, self._generator()

    def _start(self, x: Tensor, masks: Tensor, targets: Tensor, g: torch.Generator,
               valid: Tensor | None = None, engine: Perturbation | None = None
               ) -> tuple[BayesianLinear, list[Tensor]]:
        """Posterior after the first batch (with the SHAP kernel's two anchor coalitions)."""
        n, _, d = masks.shape
        if self.kernel_name == "shap":
            anchors = _anchors(n, d)
            if valid is not None:
                anchors = anchors & valid[:, None, :]
            masks = torch.cat([anchors, masks], 1)
        y = self._query_scores(x, masks, targets, g, engine)
        post = BayesianLinear.empty(n, d, device=y.device)
        nf = None if valid is None else valid.sum(1)
        return post.update(masks, y, self._kernel(masks, nf).to(y.device)), [y]

    def _query_scores(self, x: Tensor, masks: Tensor, targets: Tensor, g: torch.Generator,
                      engine: Perturbation | None = None) -> Tensor:
        y, _ = self._scores(x, masks, targets, seed=g, engine=engine)
        return y.double()

    def _finish(self, post: BayesianLinear, seg: Any, y_all: Tensor, engine: Perturbation,
                valid: Tensor | None = None, **extra: Any) -> _Attribution:
        flat = y_all.reshape(len(y_all), -1)
        const = (flat.max(1).values - flat.min(1).values) <= 1e-12
        if const.any():
            raise ValueError(
                f"the explained score is constant over all {flat.shape[1]} queries for inputs "
                f"{const.nonzero().flatten().tolist()[:5]}: there is nothing to attribute (a "
                "zero-variance black box); check the target and the fill")
        mean, std = post.mean[:, 1:], post.std[:, 1:]
        lo, hi = post.interval(self.level)
        lo, hi = lo[:, 1:], hi[:, 1:]
        if valid is not None:  # padding columns: no feature, no attribution, no uncertainty
            real = valid.to(mean.device)
            mean, std, lo, hi = (t * real for t in (mean, std, lo, hi))
        return self._result(mean.float(), seg, engine, std=std, lower=lo, upper=hi,
                            intercept=post.mean[:, 0].cpu().numpy(), s2=post.s2.cpu().numpy(),
                            **extra)


class BayesLIME(_BayesSurrogate):
    """BayesLIME (or BayesSHAP with ``kernel="shap"``) with optional focused sampling and
    perturbations-to-go.

    Parameters
    ----------
    n_samples : int -- query budget per input (ignored when ``target_width`` is set).
    kernel : {"lime", "shap"}
    focused : bool -- focused sampling: start with ``n_start`` queries, then each round draw
        ``n_candidates`` candidates and sample a batch of ``batch`` from softmax(predictive
        variance / ``temperature``) (T = 5e-4 for LIME, 1e-2 for SHAP by default).
        With the SHAP kernel, coalitions are drawn from the Shapley kernel with unit weights
        and the empty and full coalitions are queried in addition (two queries) with a large
        weight, so that the attributions nearly satisfy efficiency.
    target_width : float or None -- perturbations-to-go: fit on ``n_start`` (default 200)
        points, compute G = 4 s² 1.96² / (π̄ W²) more queries for a 95% interval of width W,
        sample them, refit (``max_samples`` caps G).
    """

    name = "bayes_lime"

    def __init__(self, model: Any, *, kernel: str = "lime", focused: bool = False,
                 n_start: int | None = None, n_candidates: int = 10_000, batch: int = 2500,
                 temperature: float | None = None, target_width: float | None = None,
                 max_samples: int | None = None, **kwargs: Any):
        if kernel not in ("lime", "shap"):
            raise ValueError(f"kernel must be 'lime' or 'shap', got {kernel!r}")
        self.kernel_name = kernel  # before the budget is spent: the SHAP kernel's anchors
        super().__init__(model, **kwargs)
        self.name = "bayes_lime" if kernel == "lime" else "bayes_shap"
        self.focused, self.n_candidates, self.batch = bool(focused), int(n_candidates), int(batch)
        self.temperature = temperature or (5e-4 if kernel == "lime" else 1e-2)
        self.target_width = target_width
        self.n_start = n_start or (200 if target_width is not None else 100)
        if self._budget is not None and target_width is not None:
            if max_samples is not None:  # perturbations-to-go: the budget caps max_samples
                raise ValueError(f"give either budget={self._budget} (model queries per "
                                 f"input) or max_samples={max_samples!r}, not both")
            max_samples = self.n_samples
        self.max_samples = int(20_000 if max_samples is None else max_samples)
        if self._budget is not None and (focused or target_width is not None) \
                and self.n_start > self._budget - self._anchors:
            raise ValueError(f"budget={self._budget} leaves fewer queries than n_start="
                             f"{self.n_start}; raise budget or lower n_start")

    def _queries(self, knob: int) -> int:
        if self.target_width is not None:  # n_start, then at most max_samples in all
            return self.max_samples + self._anchors
        return (max(knob, self.n_start) if self.focused else knob) + self._anchors

    def params(self) -> dict[str, Any]:
        return {**super().params(), "kernel": self.kernel_name, "focused": self.focused,
                "target_width": self.target_width}

    def perturbations_to_go(self, post: BayesianLinear, weights: Tensor, width: float) -> Tensor:
        """G = 4 s² 1.96² / (π̄ W²) per input, π̄ the mean kernel weight so far."""
        pbar = weights.to(post.s2.device, torch.float64).mean(-1).expand(post.s2.shape)
        return torch.ceil(4 * post.s2 * 1.96**2 / (pbar * width**2))

    def _explain(self, x: Tensor, targets: Tensor) -> _Attribution:
        first = self.n_start if (self.focused or self.target_width) else self.n_samples
        engine, seg, valid, nf, g = self._begin(x, first)
        n, d = len(x), seg.d
        masks = self._draw(n, first, d, g, valid)
        w = self._kernel(masks, nf)
        post, ys = self._start(x, masks, targets, g, valid, engine)
        used = first
        extra: dict[str, Any] = {}
        if self.target_width is not None:
            go = self.perturbations_to_go(post, w, self.target_width)
            extra["perturbations_to_go"] = go.cpu().numpy()
            more = int(min(go.max().item(), self.max_samples - first))
            if more > 0:  # one batch of G more queries for every input (the largest G)
                m2 = self._draw(n, more, d, g, valid)
                y2 = self._query_scores(x, m2, targets, g, engine)
                post = post.update(m2, y2, self._kernel(m2, nf).to(y2.device))
                ys.append(y2)
                used += more
        elif self.focused:
            while used < self.n_samples:
                size = min(self.batch, self.n_samples - used)
                cand = self._draw(n, self.n_candidates, d, g, valid)
                var = post.predictive_variance(cand)  # (n, c)
                probs = torch.softmax(var / self.temperature, 1)
                pick = torch.multinomial(probs.float().cpu(), size, replacement=False,
                                         generator=g)
                chosen = cand.gather(1, pick[..., None].expand(-1, -1, d))
                y2 = self._query_scores(x, chosen, targets, g, engine)
                post = post.update(chosen, y2, self._kernel(chosen, nf).to(y2.device))
                ys.append(y2)
                used += size
        extra["queries_per_input"] = used
        return self._finish(post, seg, torch.cat(ys, 1), engine, valid, **extra)


class BayesSHAP(BayesLIME):
    """BayesSHAP: :class:`BayesLIME` with the Shapley kernel (temperature 1e-2)."""

    def __init__(self, model: Any, **kwargs: Any):
        kwargs.setdefault("kernel", "shap")
        super().__init__(model, **kwargs)


class EAGLE(_BayesSurrogate):
    """Active perturbation selection by expected information gain (EAGLE, "Informative
    Perturbation Selection for Uncertainty-Aware Post-hoc Explanations", 2026). Only the
    paper's abstract is public: the algorithm below is calix's reconstruction of it.

    Starts with d + 1 random coalitions; then, round by round, scores a pool of unqueried
    candidates (``pool_factor`` × batch) by EIG = ½ log(1 + π(z) [1,z] V [1,z]ᵀ), picks a batch
    greedily -- after each pick V is updated (Sherman–Morrison) so a batch does not repeat
    itself, and a duplicate of a picked candidate scores lower than before; duplicates are
    allowed, not an error) -- queries the batch for all inputs at once and updates the
    posterior. Stops at the
    budget, when every feature's posterior std ≤ ``tol``, or after ``patience`` rounds without
    improvement of the largest std.

    ``extra["info_gain"]`` is the cumulative information gain ½ log det(A_t) per input and
    ``extra["info_bound"]`` the O(d log t) bound ((d + 1)/2) log(1 + t c / (d + 1)) with
    c = max π(z) ‖[1, z]‖².
    """

    name = "eagle"

    def __init__(self, model: Any, *, n_samples: int | None = None, batch: int | None = None,
                 pool_factor: int = 4, tol: float = 0.0, patience: int = 3,
                 kernel: str = "lime", **kwargs: Any):
        if kernel not in ("lime", "shap"):
            raise ValueError(f"kernel must be 'lime' or 'shap', got {kernel!r}")
        self.kernel_name = kernel  # before the budget is spent: the SHAP kernel's anchors
        super().__init__(model, n_samples=n_samples, **kwargs)
        self.batch = batch
        self.pool_factor, self.tol, self.patience = int(pool_factor), float(tol), int(patience)
        if self.pool_factor < 3:
            raise ValueError(f"pool_factor must be >= 3, got {pool_factor}")

    def params(self) -> dict[str, Any]:
        return {**super().params(), "batch": self.batch, "pool_factor": self.pool_factor,
                "tol": self.tol, "kernel": self.kernel_name}

    @staticmethod
    def greedy_batch(post: BayesianLinear, cand: Tensor, weights: Tensor, size: int
                     ) -> Tensor:
        """Indices (n, size) of a greedy EIG batch from candidates (n, c, d), on the
        candidates' device (computed on the posterior's)."""
        x = post.design(cand.to(post.precision.device))  # (n, c, p)
        v = post.covariance_factor.clone()
        w = weights.double().to(x.device).expand(x.shape[:2])
        chosen = torch.zeros(x.shape[:2], dtype=torch.bool, device=x.device)
        picks = []
        rows = torch.arange(len(x), device=x.device)
        quad = ((x @ v) * x).sum(-1)  # [1,z] V [1,z]ᵀ for every candidate, (n, c)
        for _ in range(size):  # greedy picks; each is O(c·p) by rank-one updates
            eig = torch.log1p(w * quad).masked_fill(chosen, -torch.inf)
            j = eig.argmax(1)
            picks.append(j)
            chosen[rows, j] = True
            xj = x[rows, j]  # (n, p)
            vx = (v @ xj[..., None])[..., 0]
            wj = w[rows, j]
            denom = 1 + wj * (xj * vx).sum(-1)
            proj = (x @ vx[..., None])[..., 0]  # [1,z] V [1,z_j]ᵀ, (n, c)
            quad = quad - wj[:, None] * proj**2 / denom[:, None]  # Sherman–Morrison
            v = v - wj[:, None, None] * vx[:, :, None] * vx[:, None, :] / denom[:, None, None]
        return torch.stack(picks, 1).to(cand.device)

    def _explain(self, x: Tensor, targets: Tensor) -> _Attribution:
        engine, seg, valid, nf, g = self._begin(x, self.n_samples)
        n, d = len(x), seg.d
        batch = self.batch or max(1, self.n_samples // 10)
        masks = self._draw(n, d + 1, d, g, valid)
        w = self._kernel(masks, nf)
        post, ys = self._start(x, masks, targets, g, valid, engine)
        used, rounds_flat, best = d + 1, 0, torch.inf
        c_max = (w * (1 + masks.double().sum(-1))).max().item()
        while used < self.n_samples:
            size = min(batch, self.n_samples - used)
            cand = self._draw(n, self.pool_factor * size, d, g, valid)
            wc = self._kernel(cand, nf)
            idx = self.greedy_batch(post, cand, wc, size)
            chosen = cand.gather(1, idx[..., None].expand(-1, -1, d))
            wch = wc.expand(n, -1).gather(1, idx)
            c_max = max(c_max, (wch * (1 + chosen.double().sum(-1))).max().item())
            y2 = self._query_scores(x, chosen, targets, g, engine)
            post = post.update(chosen, y2, wch.to(y2.device))
            ys.append(y2)
            used += size
            worst = post.std[:, 1:].max().item()
            if worst <= self.tol:
                break
            rounds_flat = rounds_flat + 1 if worst >= best - 1e-12 else 0
            best = min(best, worst)
            if rounds_flat >= self.patience:
                break
        gain = 0.5 * post.log_det_ratio()
        p = d + 1
        t = used
        if self.kernel_name == "shap":  # the two anchors count, with their large weight
            t += 2
            c_max = max(c_max, float(shap_kernel(_anchors(1, d)).max()) * (1 + d))
        bound = 0.5 * p * math.log1p(t * c_max / p)
        return self._finish(post, seg, torch.cat(ys, 1), engine, valid,
                            info_gain=gain.cpu().numpy(),
                            info_bound=bound, queries_per_input=used)
