"""Shapley-value estimators: a coalition design (:mod:`calix.perturb`), a fill, an estimator.

Every estimator here explains the game v(S) = s(π(x, S)) -- the explained score of the input
with the features outside S removed by the fill -- and shares one frame
(:class:`ShapleyEstimator`):

- ``n_samples`` is the number of model queries per input, the empty and the full coalition
  included; an estimator refuses a budget below its minimum and names it;
- when all 2^d coalitions fit in the budget (d ≤ 20) they are enumerated and the exact Shapley
  values returned (``extra["exact"]``, zero-width intervals);
- efficiency holds: Σφ = v(full) − v(∅);
- every estimate comes with a standard error (delete-a-group jackknife over the sampled
  coalitions, ``n_groups`` groups of pairs, no extra queries; never below the outputs' own
  rounding, :func:`rounding_floor`) and a ``level`` interval φ ± t_{G−1} · se;
- ``target_width`` switches on the adaptive mode: start with 10 d queries (or the minimum),
  double until every input's widest interval is at most ``target_width`` or the budget
  ``n_samples`` is spent, and report the queries used (``extra["n_used"]``); it stops early,
  with an :class:`~calix.exceptions.IntervalFloorWarning`, once the only inputs still wider
  than the target are those whose outputs' rounding alone is wider;
- an input with fewer features than the batch's widest (superpixels) is explained as its own
  game on its real features; its padding columns get φ = 0.

Estimators: :class:`KernelSHAP` (Lundberg & Lee 2017, paired, border enumeration),
:class:`LeverageSHAP` (Musco & Witter 2025), :class:`~calix.explain.polyshap.PolySHAP`
(Fumagalli, Witter & Musco 2026), :class:`RegressionAdjustedSHAP` (Witter, Liu & Musco 2025,
with a linear, quadratic or gradient-boosted-tree proxy), calix's
:class:`~calix.explain.logit_surrogate.LogitSurrogateSHAP` and
:class:`~calix.explain.stacked.StackedSHAP`, and :class:`Shapley`, calix's default (the stack
from its minimum budget).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch
from scipy import stats
from torch import Tensor

from calix.exceptions import IntervalFloorWarning
from calix.explain.base import Stochastic, _Attribution
from calix.explain.perturbation import FeatureExplainer
from calix.explain.solvers import efficiency_constrained_wls, weighted_ridge
from calix.perturb import (
    CoalitionDesign,
    Design,
    Features,
    KernelSHAPDesign,
    LeverageDesign,
    Perturbation,
    Segmentation,
    all_coalitions,
)

__all__ = ["ShapleyEstimator", "KernelSHAP", "LeverageSHAP", "RegressionAdjustedSHAP",
           "Shapley", "exact_shapley", "polynomial_terms", "tree_shapley",
           "stratified_shapley", "tree_params_with_defaults", "fit_trees", "rounding_floor"]


def exact_shapley(values: Tensor, coalitions: Tensor) -> Tensor:
    """Shapley values from the game's values on all 2^d coalitions.

    Parameters
    ----------
    values : Tensor of shape (n, 2**d) -- v(S) per input, columns ordered as the rows of
        ``coalitions``.
    coalitions : Tensor of shape (2**d, d), bool -- every coalition once (as
        :func:`calix.perturb.all_coalitions`).

    Returns
    -------
    Tensor of shape (n, d), float64: φ_i = Σ_S |S|!(d−|S|−1)!/d! (v(S ∪ i) − v(S)).
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


def polynomial_terms(d: int, order: int) -> list[Tensor]:
    """The interaction terms of a degree-``order`` polynomial in d binary variables: one long
    tensor of shape (count, k) of feature indices per degree k = 1..order (all k-subsets)."""
    return [torch.combinations(torch.arange(d), r=k) for k in range(1, order + 1)]


def _term_design(z: Tensor, terms: list[Tensor]) -> Tensor:
    """Products ∏_{i∈T} z_i of coalitions (..., d) for every term T: (..., n_terms) float64."""
    zf = z.double()
    cols = [zf[..., idx].prod(-1) if idx.shape[1] > 1 else zf[..., idx[:, 0]]
            for idx in (t.to(z.device) for t in terms)]
    return torch.cat(cols, -1)


def _term_shapley(coef: Tensor, terms: list[Tensor], d: int) -> Tensor:
    """Shapley values of Σ_T c_T ∏_{i∈T} z_i: φ_i = Σ_{T∋i} c_T / |T|. coef (n, n_terms)."""
    phi = torch.zeros(coef.shape[0], d, dtype=coef.dtype, device=coef.device)
    start = 0
    for idx in terms:
        k = idx.shape[1]
        c = coef[:, start:start + len(idx)] / k
        for j in range(k):
            phi.index_add_(1, idx[:, j].to(coef.device), c)
        start += len(idx)
    return phi


def tree_shapley(trees: list[Any], scale: float, d: int) -> np.ndarray:
    """Exact Shapley values, on binary coalition vectors z ∈ {0, 1}^d, of a sum of
    scikit-learn regression trees times ``scale`` (a gradient-boosted model's trees and
    learning rate).

    Each leaf is the game u(S) = [R ⊆ S][F ∩ S = ∅] for the features R its path requires
    present (z > threshold) and F absent; with r = |R| and f = |F|, a random order makes
    i ∈ R pivotal when it follows the rest of R and precedes all of F (probability
    (r − 1)! f! / (r + f)!) and j ∈ F pivotal (with sign −1) when it follows all of R and
    precedes the rest of F (r! (f − 1)! / (r + f)!). Returns (d,) float64.
    """
    phi = np.zeros(d)
    fact = [math.factorial(k) for k in range(2 * d + 2)]
    for tree in trees:
        t = tree.tree_
        stack: list[tuple[int, frozenset[int], frozenset[int]]] = [(0, frozenset(),
                                                                     frozenset())]
        while stack:
            node, req, absent = stack.pop()
            left, right = t.children_left[node], t.children_right[node]
            if left == -1:  # a leaf
                val = scale * float(t.value[node].ravel()[0])
                r, f = len(req), len(absent)
                if val and r + f:
                    for i in req:
                        phi[i] += val * fact[r - 1] * fact[f] / fact[r + f]
                    for j in absent:
                        phi[j] -= val * fact[r] * fact[f - 1] / fact[r + f]
                continue
            feat = int(t.feature[node])
            if feat not in req:  # z_feat = 0 is consistent with the path
                stack.append((left, req, absent | {feat}))
            if feat not in absent:
                stack.append((right, req | {feat}, absent))
    return phi


def stratified_shapley(z: Tensor, v: Tensor, v_full: Tensor, v_empty: Tensor) -> Tensor:
    """Shapley values from coalitions that are, within each size, uniform (or all of that
    size): the stratified sample-reuse estimator.

    φ_i = (1/d) Σ_{k=0}^{d−1} (E[v(T ∪ i)] − E[v(T)]) over T ⊆ N∖i with |T| = k; the first
    expectation is the mean of v over the rows of size k + 1 that hold i, the second over the
    rows of size k that do not (the ends are exact: v(∅), v(full)). Each cell mean is
    unbiased, so the estimate is; it is not exact on linear games, which is what makes a
    proxy pay off. A cell without rows counts as 0 (for a residual game: where the proxy is
    taken as exact). The estimate is then shifted equally on every feature so that
    Σφ = v(full) − v(∅).

    Parameters
    ----------
    z : bool Tensor of shape (n, m, d)
        The coalitions.
    v : Tensor of shape (n, m)
        The game's value on each coalition.
    v_full, v_empty : Tensor of shape (n,)
        The values of the full and the empty coalition.

    Returns
    -------
    float64 Tensor of shape (n, d)
    """
    n, m, d = z.shape
    zf = z.to(v.device, torch.float64)
    size = z.sum(-1).to(v.device)
    onehot = torch.nn.functional.one_hot(size, d + 1).to(torch.float64)  # (n, m, d + 1)
    vv = v.double()
    sum_in = (zf * vv[..., None]).transpose(1, 2) @ onehot  # (n, d, d + 1): Σ over S ∋ i, |S|
    cnt_in = zf.transpose(1, 2) @ onehot
    sum_out = ((1 - zf) * vv[..., None]).transpose(1, 2) @ onehot
    cnt_out = (1 - zf).transpose(1, 2) @ onehot
    mean_in = torch.where(cnt_in > 0, sum_in / cnt_in.clamp_min(1), 0.0)
    mean_out = torch.where(cnt_out > 0, sum_out / cnt_out.clamp_min(1), 0.0)
    mean_in[..., d] = v_full.double()[:, None]  # |S| = d holds every i
    mean_out[..., 0] = v_empty.double()[:, None]
    phi = (mean_in[..., 1:] - mean_out[..., :d]).sum(-1) / d
    gap = v_full.double() - v_empty.double() - phi.sum(1)
    return phi + gap[:, None] / d


def tree_params_with_defaults(given: dict[str, Any] | None, max_depth: int
                              ) -> dict[str, Any]:
    """scikit-learn ``GradientBoostingRegressor`` arguments of a tree proxy: 50 trees of depth
    ``max_depth``, learning rate 0.1, updated by ``given``; refused (ValueError) when they are
    not that class's arguments."""
    from sklearn.ensemble import GradientBoostingRegressor

    params = {"n_estimators": 50, "max_depth": max_depth, "learning_rate": 0.1,
              **(given or {})}
    try:
        GradientBoostingRegressor(**params)
    except TypeError as err:
        raise ValueError(f"tree_params are not GradientBoostingRegressor's: {err}") from None
    return params


def fit_trees(z: Tensor, target: Tensor, w: Tensor, params: dict[str, Any], seed: int,
              what: str = "the tree proxy") -> Any:
    """Gradient-boosted trees fitted to one input's coalitions z (m, d) and ``target`` (m,)
    with the regression weights w (m,) (scaled to mean 1); a fit that fails names ``what``."""
    from sklearn.ensemble import GradientBoostingRegressor

    gbm = GradientBoostingRegressor(random_state=seed, **params)
    ww = w.cpu().numpy()
    try:
        gbm.fit(z.cpu().numpy().astype(np.float32), target.cpu().numpy(),
                sample_weight=ww / ww.sum() * len(ww))
    except ValueError as err:
        raise ValueError(f"{what} could not be fitted ({err}); check tree_params={params}"
                         ) from None
    return gbm


#: ``extra`` entries of shape (n, something other than the features): never padded
_PER_INPUT = frozenset({"stack_weights"})


def _rows_per_fit(n: int, m: int, d: int) -> int:
    """Inputs per batched least-squares solve: the float64 designs of a solve stay near 2^24
    entries (128 MiB), whatever the number of inputs."""
    return max(1, min(n, 2**24 // max(1, m * d)))


class _Segmented(Features):
    """A fixed segmentation (a group of a batch's inputs), standing in for ``features``."""

    def __init__(self, seg: Segmentation, features: Features):
        self.seg, self.features = seg, features
        self.sample_ndim = features.sample_ndim

    def segment(self, x: Tensor) -> Segmentation:
        return self.seg


def _output_eps(outputs: Tensor) -> float:
    """The machine epsilon of the model's outputs' dtype (float32 for every wrapped model:
    :class:`~calix.models.Model` returns float32 outputs)."""
    return float(torch.finfo(outputs.dtype).eps) if outputs.is_floating_point() else 0.0


def rounding_floor(s: Tensor, eps: float) -> Tensor:
    """The smallest standard error an estimate from the scores ``s`` (n, m) can honestly
    claim: eps · max_k |s_k| per input (n,), with ``eps`` the machine epsilon of the model
    outputs' dtype (2^-23 ≈ 1.2e-7 for float32, which every wrapped model returns).

    Every Shapley value is a combination of the scores with weights of total size about 2, so
    rounding the outputs to their dtype moves it by up to about eps · max|v(S)|. A jackknife
    sees sampling error only: where a surrogate is exact on the queried coalitions (an additive
    game) it returns widths far below what the outputs can resolve, and the intervals miss the
    exact values. As a standard error this is a bound rather than an estimate, so intervals at
    the floor cover more than their level.
    """
    return eps * s.abs().amax(1)


class ShapleyEstimator(FeatureExplainer, Stochastic):
    """The frame every Shapley estimator shares (see the module docstring): budget checks,
    the exact path, the query of the design, efficiency, jackknife intervals, the adaptive
    mode and inputs of different widths. A subclass gives :meth:`design` and :meth:`fit`.

    Parameters
    ----------
    n_samples : int or None -- model queries per input, the empty and the full coalition
        included; the cap of the adaptive mode (default 2048; ``budget=`` is the same count).
    seed : int, Generator or None -- the coalitions, the jackknife groups and any randomness
        of the estimator (see :class:`~calix.explain.base.Stochastic`).
    level : float -- coverage of the interval ``lower``/``upper``.
    n_groups : int -- jackknife groups (>= 2).
    target_width : float or None -- adaptive mode: stop when every interval of an input is at
        most this wide (in the explained score's units).

    ``extra`` holds ``base_value`` v(∅) (n,), ``full_value`` v(full) (n,), ``exact`` (bool),
    ``n_used`` (queries per input) and ``efficiency_gap`` (n,) = Σφ − (v(full) − v(∅)).
    """

    name = "shapley_estimator"
    #: the estimator's name in messages
    title = "this estimator"
    _budget_knob = "n_samples"
    #: ``n_samples`` when neither it nor ``budget`` is given
    default_n_samples = 2048

    def __init__(self, model: Any, *, n_samples: int | None = None, level: float = 0.95,
                 n_groups: int = 10, target_width: float | None = None, **kwargs: Any):
        super().__init__(model, **kwargs)
        self._apply_budget(n_samples, self.default_n_samples)
        n_samples = self.n_samples
        if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)) \
                or n_samples < 2:
            raise ValueError(f"n_samples must be an integer >= 2 (model queries per input), "
                             f"got {n_samples!r}")
        if not 0 < level < 1:
            raise ValueError(f"level must lie in (0, 1), got {level}")
        if int(n_groups) < 2:
            raise ValueError(f"n_groups must be >= 2 (jackknife groups), got {n_groups}")
        if target_width is not None and not target_width > 0:
            raise ValueError(f"target_width must be > 0 or None, got {target_width}")
        self.n_samples, self.level = int(n_samples), float(level)
        self.n_groups = int(n_groups)
        self.target_width = None if target_width is None else float(target_width)

    @property
    def explains_probability(self) -> bool:
        """Whether a classifier's probability is explained (the logit scale applies)."""
        return self.output == "probability" and self.model.task != "regression"

    def params(self) -> dict[str, Any]:
        return {**super().params(), "n_samples": self.n_samples, "seed": self.seed,
                "level": self.level, "n_groups": self.n_groups,
                "target_width": self.target_width}

    def _set_budget(self, budget: int) -> None:
        if budget < 2:
            raise ValueError(f"budget={budget} is too small for {self.title}: the empty and "
                             "the full coalition alone take 2 queries per input")
        self.n_samples = budget

    # ------------------------------------------------------------------ to override
    def design(self, d: int) -> Design:
        """The coalition design for d features."""
        raise NotImplementedError

    def minimum(self, d: int) -> int:
        """Fewest queries per input for d features (ends included)."""
        return 2 + self.design(d).minimum(d)

    def fit(self, design: CoalitionDesign, s: Tensor, y: Tensor, full: Tensor,
            empty: Tensor, info: dict[str, Any] | None = None) -> Tensor:
        """Shapley values (n, d) float64 from the design's scores ``s`` (n, m) (``y``: the
        same on the estimator's link scale) and the ends' scores ``full``, ``empty`` (n,).
        ``info`` (None for jackknife refits) collects ``extra`` entries; its entry
        ``"variance"`` (n, d), if set, is added to the jackknife's variance."""
        raise NotImplementedError

    def _link(self, outputs: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        """Explained scores (n, m) and their values on the estimator's link scale, float64."""
        s = self._score(outputs, targets).double()
        return s, s

    def _prepare(self, d: int, g: torch.Generator) -> None:
        """Draws the estimator's own randomness after the queries (before :meth:`fit`)."""

    def _validate(self, d: int) -> None:
        """Refuses d features before any query is made (e.g. too many surrogate terms)."""

    # ------------------------------------------------------------------ the frame
    def _explain(self, x: Tensor, targets: Tensor) -> _Attribution:
        engine = self.engine(x)
        seg = engine.segment(x)
        d, n = seg.d, len(x)
        g = self._generator()
        nf = seg.n_features.cpu()
        if bool((nf == d).all()):
            out = self._game(x, targets, d, g, engine)
        else:  # each width its own game; padding columns get 0
            out = {}
            for k in torch.unique(nf).tolist():
                idx = (nf == k).nonzero()[:, 0]
                # the group's own rows of the batch's segmentation (features may depend on the
                # position in the batch), on an engine that shares the fill and batch size
                sub = Segmentation(seg.labels[idx.to(seg.labels.device)], seg.n_features[idx],
                                   seg.shared)
                part_engine = Perturbation(_Segmented(sub, engine.features), engine.fill,
                                           chunk_size=engine.chunk_size)
                part = self._game(x[idx.to(x.device)], targets[idx.to(targets.device)],
                                  int(k), g, part_engine)
                for key, val in part.items():
                    if isinstance(val, Tensor) and val.ndim == 2 and key not in _PER_INPUT:
                        val = torch.nn.functional.pad(val, (0, d - int(k)))
                    if isinstance(val, Tensor):
                        if key not in out:
                            out[key] = torch.zeros((n, *val.shape[1:]), dtype=val.dtype,
                                                   device=val.device)
                        out[key][idx.to(out[key].device)] = val.to(out[key].device)
                    elif key in ("exact", "n_used"):  # per input: the widths differ
                        if key not in out:
                            out[key] = torch.zeros(n, dtype=torch.bool if key == "exact"
                                                   else torch.long)
                        out[key][idx] = val
                    else:
                        out.setdefault(key, []).append(val)
            for key, vals in list(out.items()):
                if isinstance(vals, list):  # one value per width: collapse when they agree
                    out[key] = vals[0] if len(set(map(repr, vals))) == 1 else vals
        phi, std, half = out.pop("phi"), out.pop("std"), out.pop("half")
        full, empty = out.pop("full"), out.pop("empty")
        extra = {key: (val.cpu().numpy() if isinstance(val, Tensor) else val)
                 for key, val in out.items()}
        gap = (phi.sum(1) - (full - empty)).cpu().numpy()
        return self._result(phi.float(), seg, engine, std=std.float(),
                            lower=(phi - half).float(), upper=(phi + half).float(),
                            base_value=empty.cpu().numpy(), full_value=full.cpu().numpy(),
                            efficiency_gap=gap, **extra)

    def _game(self, x: Tensor, targets: Tensor, d: int, g: torch.Generator,
              engine: Perturbation) -> dict[str, Any]:
        """Explain inputs that all have d features, perturbed by ``engine``."""
        n = len(x)
        ones, zeros = torch.ones(d, dtype=torch.bool), torch.zeros(d, dtype=torch.bool)
        if d < 2:  # one player: φ = v(full) − v(∅)
            res = self._query(x, torch.stack([ones, zeros])[None].expand(n, -1, -1), seed=g,
                              engine=engine)
            s, _ = self._link(res.outputs, targets)
            phi = (s[:, :1] - s[:, 1:]).reshape(n, d)
            return {"phi": phi, "std": torch.zeros_like(phi), "half": torch.zeros_like(phi),
                    "full": s[:, 0],
                    "empty": s[:, 1], "exact": True, "n_used": 2}
        if d <= 20 and 2**d <= self.n_samples:
            coal = all_coalitions(d)
            res = self._query(x, coal[None].expand(n, -1, -1), seed=g, engine=engine)
            s, _ = self._link(res.outputs, targets)
            phi = exact_shapley(s, coal.to(s.device))
            return {"phi": phi, "std": torch.zeros_like(phi), "half": torch.zeros_like(phi),
                    "full": s[:, -1],
                    "empty": s[:, 0], "exact": True, "n_used": 2**d}
        self._validate(d)
        low = self.minimum(d)
        if self.n_samples < low:
            raise ValueError(f"{self.title} needs n_samples >= {low} model queries per input "
                             f"for {d} features, got {self._knob_given()}")
        budget = self.n_samples
        if self.target_width is not None:
            budget = min(self.n_samples, max(low, 10 * d))
        design = self.design(d).draw(n, budget - 2, d, g)
        ends = torch.stack([ones, zeros])[None].expand(n, -1, -1)
        res = self._query(x, torch.cat([ends, design.masks], 1), seed=g, engine=engine)
        s, y = self._link(res.outputs, targets)
        eps = _output_eps(res.outputs)
        self._prepare(d, g)
        groups = torch.Generator().manual_seed(int(torch.randint(2**62, (1,), generator=g)))
        warned = False
        while True:
            info: dict[str, Any] = {}
            full, empty = s[:, 0], s[:, 1]
            self._ends = (y[:, 0], y[:, 1])  # the ends on the link scale, for fit()
            phi = self.fit(design, s[:, 2:], y[:, 2:], full, empty, info)
            std, dof = self._jackknife(design, s[:, 2:], y[:, 2:], full, empty,
                                       torch.Generator().manual_seed(groups.initial_seed()))
            extra_var = info.pop("variance", None)  # an estimator's own, e.g. quadrature
            if extra_var is not None:
                std = (std**2 + extra_var.to(std.device)).sqrt()
            floor = rounding_floor(s, eps)
            std = torch.maximum(std, floor[:, None])
            t = float(stats.t.ppf((1 + self.level) / 2, dof)) if dof else float("nan")
            used = design.masks.shape[1] + 2
            if self.target_width is None:
                break
            width = 2 * t * std.max(1).values
            wide = ~torch.isfinite(width) | (width > self.target_width)
            floor_width = 2 * t * floor  # the narrowest interval each input's rounding allows
            stuck = floor_width > self.target_width
            bound = wide & stuck
            if bool(bound.any()) and not warned:
                warned = True
                warnings.warn(
                    f"target_width={self.target_width:g} is narrower than the model's outputs "
                    f"resolve for {int(bound.sum())} input(s): a standard error of at least "
                    f"{eps:.2g} (the outputs' machine epsilon) times the largest |v(S)| makes "
                    f"their intervals at least {float(floor_width[bound].min()):.3g} wide, "
                    f"and more queries cannot narrow them; raise target_width",
                    IntervalFloorWarning, stacklevel=4)
            if not bool((wide & ~stuck).any()) or used >= self.n_samples \
                    or design.sizes is None:
                break
            more = min(used, self.n_samples - used)
            design = design.extend(more, g)
            new = self._query(x, design.masks[:, -more:], seed=g, engine=engine)
            s2, y2 = self._link(new.outputs, targets)
            s, y = torch.cat([s, s2], 1), torch.cat([y, y2], 1)
        return {"phi": phi, "std": std, "half": t * std, "full": full, "empty": empty,
                "exact": False, "n_used": used, **info}

    def _jackknife(self, design: CoalitionDesign, s: Tensor, y: Tensor, full: Tensor,
                   empty: Tensor, g: torch.Generator) -> tuple[Tensor, int]:
        """Delete-a-group jackknife standard errors (n, d) and their degrees of freedom.

        The sampled rows (pairs kept together) are split at random into G groups; the
        estimate is refitted without each group, and se² = (G − 1)/G Σ_g (φ_(g) − φ̄)².
        Enumerated rows are in every refit (they carry no sampling error). Fewer than two
        sampled units: NaN (no interval can be formed)."""
        n, d = s.shape[0], design.masks.shape[-1]
        unit = 2 if design.paired else 1
        # units by drawn position, so that pairs stay whole after extend(); a lone last row
        # joins the unit before it
        _, row_unit = torch.unique(design.row_ids // unit, return_inverse=True)
        n_units = int(row_unit.max()) + 1 if len(row_unit) else 0
        if n_units > 1 and int((row_unit == n_units - 1).sum()) < unit:
            row_unit = row_unit.clamp(max=n_units - 2)
            n_units -= 1
        groups = min(self.n_groups, n_units)
        if groups < 2:
            return torch.full((n, d), float("nan"), dtype=torch.float64, device=s.device), 0
        of_unit = torch.randperm(n_units, generator=g) % groups
        of_row = of_unit[row_unit]
        reps = []
        for k in range(groups):
            keep = (of_row != k).nonzero()[:, 0]
            cols = torch.cat([torch.arange(design.n_fixed), design.n_fixed + keep]).to(s.device)
            reps.append(self.fit(design.take(keep), s[:, cols], y[:, cols], full, empty, None))
        rep = torch.stack(reps)
        var = (groups - 1) / groups * ((rep - rep.mean(0)) ** 2).sum(0)
        return var.sqrt(), groups - 1


class KernelSHAP(ShapleyEstimator):
    """KernelSHAP (Lundberg & Lee 2017) with the efficiency constraint Σφ = v(full) − v(∅).

    The heaviest coalition sizes are enumerated and the rest sampled from the Shapley kernel,
    paired with complements (:class:`~calix.perturb.KernelSHAPDesign`, as shap's
    KernelExplainer); the constrained weighted least squares is solved for all inputs at once
    (:func:`~calix.explain.solvers.efficiency_constrained_wls`). See :class:`ShapleyEstimator`
    for the budget, the exact path, intervals and the adaptive mode.

    Parameters
    ----------
    paired : bool -- draw each sampled coalition with its complement (Covert & Lee 2021).
    """

    name = "kernel_shap"
    title = "KernelSHAP"

    def __init__(self, model: Any, *, n_samples: int | None = None, paired: bool = True,
                 **kwargs: Any):
        super().__init__(model, n_samples=n_samples, **kwargs)
        self.paired = bool(paired)

    def params(self) -> dict[str, Any]:
        return {**super().params(), "paired": self.paired}

    def design(self, d: int) -> Design:
        return KernelSHAPDesign(paired=self.paired)

    def minimum(self, d: int) -> int:
        return d + 2

    def fit(self, design: CoalitionDesign, s: Tensor, y: Tensor, full: Tensor,
            empty: Tensor, info: dict[str, Any] | None = None) -> Tensor:
        w = design.weights.to(s.device)
        z = design.masks
        step = _rows_per_fit(*z.shape)
        return torch.cat([efficiency_constrained_wls(
            z[i:i + step].to(s.device), s[i:i + step] - empty[i:i + step, None],
            w if w.ndim == 1 else w[i:i + step], full[i:i + step] - empty[i:i + step])
            for i in range(0, len(z), step)])


class LeverageSHAP(KernelSHAP):
    """Leverage SHAP (Musco & Witter, "Provably accurate Shapley value estimation via
    leverage score sampling", ICLR 2025).

    KernelSHAP's constrained regression on coalitions drawn by their leverage scores: every
    coalition size gets the same share of the budget, without replacement, paired with
    complements (:class:`~calix.perturb.LeverageDesign`), each row weighted by its Shapley
    kernel weight over its inclusion probability. The constrained solve is the paper's
    projected least squares.
    """

    name = "leverage_shap"
    title = "Leverage SHAP"

    def __init__(self, model: Any, *, n_samples: int | None = None, **kwargs: Any):
        if not kwargs.pop("paired", True):
            raise ValueError("Leverage SHAP always pairs each coalition with its complement "
                             "(paired=False is KernelSHAP(paired=False))")
        super().__init__(model, n_samples=n_samples, paired=True, **kwargs)

    def design(self, d: int) -> Design:
        return LeverageDesign()


_PROXIES = ("linear", "quadratic", "cubic", "tree")


class RegressionAdjustedSHAP(ShapleyEstimator):
    """Regression-adjusted Monte Carlo (Witter, Liu & Musco, "Regression-adjusted Monte Carlo
    estimators for Shapley values and probabilistic values", 2025).

    A proxy game g is fitted to the queried coalitions, its Shapley values computed exactly,
    and the Shapley values of the residual game v − g estimated from the queries by Monte
    Carlo: φ = φ(g) + φ̂(v − g). The residual's estimate is the stratified sample-reuse
    estimator on Leverage SHAP's coalitions (:func:`stratified_shapley`: unbiased, so the
    estimator is whatever the proxy; the closer g is to v, the smaller its variance). A
    regression estimate of the residual would defeat the purpose: the paired Shapley-kernel
    regression is exact on linear and quadratic games, so with it a linear or quadratic proxy
    would change nothing. The proxy and the residual are cross-fitted: the sampled pairs are
    split in two halves, the proxy fitted on one half (and the enumerated rows) corrects the
    residual estimated on the other half (and the enumerated rows, whose cell means are exact
    whatever the proxy), and the two estimates are averaged.

    Proxies (``proxy``): ``"linear"`` (weighted ridge on z; φ(g) = its coefficients),
    ``"quadratic"`` / ``"cubic"`` (weighted ridge on all interactions of at most 2 / 3
    features; φ(g)_i = Σ_{T∋i} c_T / |T|) and
    ``"tree"`` (scikit-learn's gradient boosting, ``tree_params``; φ(g) exact by
    :func:`tree_shapley`). Jackknife refits keep the tree proxies of the main fit (refitting
    100 trees per group would dominate the cost), so the tree proxy's intervals leave out the
    proxy's own variance.

    Parameters
    ----------
    proxy : {"linear", "quadratic", "cubic", "tree"}
    alpha : float -- ridge penalty of the linear and quadratic proxies (> 0).
    tree_params : dict -- keyword arguments of ``GradientBoostingRegressor``.
    """

    name = "regression_adjusted_shap"
    title = "Regression-adjusted Shapley estimation"

    def __init__(self, model: Any, *, n_samples: int | None = None, proxy: str = "quadratic",
                 alpha: float = 1e-3, tree_params: dict[str, Any] | None = None,
                 **kwargs: Any):
        super().__init__(model, n_samples=n_samples, **kwargs)
        if proxy not in _PROXIES:
            raise ValueError(f"proxy must be one of {_PROXIES}, got {proxy!r}")
        if not alpha > 0:
            raise ValueError(f"alpha must be > 0 (a ridge penalty), got {alpha}")
        self.proxy, self.alpha = proxy, float(alpha)
        self.tree_params = tree_params_with_defaults(tree_params, 3)
        self._trees: dict[tuple[int, int], Any] = {}

    def params(self) -> dict[str, Any]:
        return {**super().params(), "proxy": self.proxy, "alpha": self.alpha,
                "tree_params": dict(self.tree_params)}

    def design(self, d: int) -> Design:
        return LeverageDesign()

    def minimum(self, d: int) -> int:
        return 2 + 2 * d  # each half: a ridge proxy, and the residual's sizes

    def _prepare(self, d: int, g: torch.Generator) -> None:
        self._folds_seed = int(torch.randint(2**31, (1,), generator=g))
        self._fold_of_unit = torch.randperm(2**20, generator=g) % 2  # a half for every pair
        self._trees = {}

    def fit(self, design: CoalitionDesign, s: Tensor, y: Tensor, full: Tensor,
            empty: Tensor, info: dict[str, Any] | None = None) -> Tensor:
        n, _, d = design.masks.shape
        # each pair's half is fixed by its drawn position, so jackknife subsets keep it
        fold = self._fold_of_unit[(design.row_ids // 2).long() % 2**20]
        z = design.masks.to(s.device)
        phis = []
        for k in (0, 1):
            fit_rows = (fold == k).nonzero()[:, 0]
            est_rows = (fold != k).nonzero()[:, 0]
            if len(est_rows) == 0 or len(fit_rows) == 0:
                continue
            fit_d = design.take(fit_rows)
            fcols = torch.cat([torch.arange(design.n_fixed), design.n_fixed + fit_rows])
            ecols = torch.cat([torch.arange(design.n_fixed), design.n_fixed + est_rows])
            phi_g, predict = self._proxy(fit_d, s[:, fcols.to(s.device)], full, empty, k,
                                         refit=info is not None)
            ze = z[:, ecols.to(z.device)]
            r = s[:, ecols.to(s.device)] - predict(ze)
            ends = predict(torch.stack([torch.ones(d, dtype=torch.bool),
                                        torch.zeros(d, dtype=torch.bool)])[None]
                           .expand(n, -1, -1).to(z.device))
            r_full, r_empty = full - ends[:, 0], empty - ends[:, 1]
            phis.append(phi_g + stratified_shapley(ze, r, r_full, r_empty))
        if not phis:
            raise ValueError(f"{self.title} needs sampled coalitions in both halves; raise "
                             f"n_samples")
        return torch.stack(phis).mean(0)

    def _proxy(self, design: CoalitionDesign, s: Tensor, full: Tensor, empty: Tensor,
               fold: int, refit: bool) -> tuple[Tensor, Any]:
        """Fit the proxy on the design's rows: its exact Shapley values (n, d) and its
        prediction function on coalitions (n, k, d) -> (n, k)."""
        z = design.masks.to(s.device)
        n, _, d = z.shape
        w = design.weights.to(s.device)
        if self.proxy != "tree":
            terms = polynomial_terms(d, _PROXIES.index(self.proxy) + 1)
            feats = _term_design(z, terms)
            coef, icpt = weighted_ridge(feats, s, w, self.alpha)
            phi = _term_shapley(coef, terms, d)

            def predict(zz: Tensor) -> Tensor:
                return (_term_design(zz, terms) @ coef[..., None])[..., 0] + icpt[:, None]

            return phi, predict
        models = []
        for i in range(n):
            key = (fold, i)
            if refit or key not in self._trees:
                self._trees[key] = fit_trees(z[i], s[i], w if w.ndim == 1 else w[i],
                                             self.tree_params, self._folds_seed)
            models.append(self._trees[key])
        phi = torch.as_tensor(np.stack([
            tree_shapley(list(m.estimators_[:, 0]), m.learning_rate, d) for m in models]),
            device=s.device)

        def predict(zz: Tensor) -> Tensor:
            out = [torch.as_tensor(m.predict(zz[i].cpu().numpy().astype(np.float32)))
                   for i, m in enumerate(models)]
            return torch.stack(out).to(s.device, torch.float64)

        return phi, predict


class Shapley(ShapleyEstimator):
    """calix's default Shapley estimator: :class:`~calix.explain.stacked.StackedSHAP`.

    The choice follows ``benchmarks/shapley.py`` (exact Shapley values of six games, budgets
    5 d to 50 d, five seeds; the README's table): the stack of a logit-scale surrogate,
    OddSHAP (published and with calix's settings) and a tree surrogate, weighted by how well
    each predicts held-out coalition pairs, had the lowest error or was within 1.1x of it in
    every cell. Below the stack's minimum (d + 2 + 2 ``n_folds`` queries):
    :class:`~calix.explain.logit_surrogate.LogitSurrogateSHAP` for a classifier's probability
    (``output="probability"``), :class:`LeverageSHAP` for anything else.

    Either way, the exact values when all 2^d coalitions fit in the budget. ``chosen(d)``
    returns the estimator that explains d features, and ``extra["estimator"]`` names it.
    Every keyword argument goes to the chosen estimator.
    """

    name = "shapley"
    title = "Shapley"

    def __init__(self, model: Any, *, n_samples: int | None = None, **kwargs: Any):
        import inspect

        self._kwargs = dict(kwargs)
        frame = {"seed", "level", "n_groups", "target_width", "budget"}
        for cls in FeatureExplainer.__mro__:  # the arguments every explainer takes
            if "__init__" in vars(cls):
                frame |= set(inspect.signature(cls.__init__).parameters) - {"self", "model"}
        own = {k: v for k, v in kwargs.items() if k in frame}
        super().__init__(model, n_samples=n_samples, **own)
        # the arguments are checked now: the stack or the fallback must take them (a call
        # whose budget chooses the other one refuses them then, naming it)
        errors = []
        for cls in self._classes():
            try:
                cls(model, **self._estimator_kwargs(None))
                break
            except TypeError as err:
                errors.append(f"{cls.__name__}: {err}")
        else:
            raise TypeError("Shapley's estimators take none of these arguments ("
                            + "; ".join(errors) + ")")

    def _classes(self) -> tuple[type[ShapleyEstimator], type[ShapleyEstimator]]:
        """StackedSHAP and the estimator below its minimum."""
        from calix.explain.logit_surrogate import LogitSurrogateSHAP
        from calix.explain.stacked import StackedSHAP

        return StackedSHAP, (LogitSurrogateSHAP if self.explains_probability else LeverageSHAP)

    def _estimator_kwargs(self, engine: Perturbation | None) -> dict[str, Any]:
        kw = {**self._kwargs, "n_samples": self.n_samples}
        kw.pop("budget", None)  # spent as n_samples
        if engine is not None or self.perturbation is not None:
            for key in ("features", "fill", "background"):
                kw.pop(key, None)
        if engine is not None:
            kw["perturbation"] = engine
        return kw

    def chosen(self, d: int, *, engine: Perturbation | None = None) -> ShapleyEstimator:
        """The estimator that explains inputs with d features (on ``engine`` when given:
        the engine of a call, which then replaces the features, fill and background)."""
        kw = self._estimator_kwargs(engine)
        stack, fallback = self._classes()
        cls = stack
        if self.n_samples < stack.smallest_budget(d, kw.get("n_folds", 5)):
            cls = fallback
        try:
            est = cls(self.model, **kw)
        except TypeError as err:
            raise TypeError(f"Shapley chose {cls.__name__} for {d} features and n_samples="
                            f"{self.n_samples}: {err}. Pass the arguments of the estimator "
                            f"it chooses, or use that estimator directly") from None
        if engine is None and self.perturbation is not None:
            est.perturbation = self.perturbation
        # what explain() set on this explainer for the current call (column names, progress)
        est._column_names = getattr(self, "_column_names", None)
        est.progress = getattr(self, "progress", False)
        return est

    def minimum(self, d: int) -> int:
        return self.chosen(d).minimum(d)

    def _game(self, x: Tensor, targets: Tensor, d: int, g: torch.Generator,
              engine: Perturbation) -> dict[str, Any]:
        est = self.chosen(d, engine=engine)
        out = est._game(x, targets, d, g, engine)
        out["estimator"] = est.name
        return out
