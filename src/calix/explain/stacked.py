"""StackedSHAP: calix's stacked Shapley estimator.

Every regression-type Shapley estimator fits a surrogate f̂ of the game to the queried
coalitions and returns the Shapley values of f̂ (plus, for a regression adjustment, a
regression of the residual: itself part of the surrogate). Which surrogate is closest depends
on the game: a logit-quadratic for a smooth classifier, sparse odd interactions for a game
with a few strong interactions, trees for thresholds. StackedSHAP fits several to the same
paired coalitions and returns the convex combination
of their Shapley values whose surrogates predict held-out coalitions best -- stacked
regression (Wolpert 1992, "Stacked generalization"; Breiman 1996, "Stacked regressions", with
non-negative weights), scored where Shapley values live:

- Shapley values depend only on the game's odd part (v(S) − v(S̄))/2 (Fumagalli et al. 2026,
  arXiv 2602.01399), so a surrogate is scored on the paired differences of held-out pairs,
  v(S) − v(S̄) against f̂(S) − f̂(S̄), weighted by the Shapley kernel (the weights of the
  Shapley regression, :func:`~calix.explain.logit_surrogate.surrogate_design_weights`);
- the sampled pairs are split into ``n_folds`` folds; every candidate, its own choices (odd
  support, trees) included, is refitted without each fold and predicts it;
- the stacking weights α minimise the weighted absolute held-out error over the simplex
  (α ≥ 0, Σα = 1; a linear program). Absolute rather than squared error: a few held-out
  pairs that a surrogate misses badly (an interaction it lacks) otherwise buy weight for
  candidates whose Shapley values are far off -- in ``benchmarks/shapley.py`` squared error
  lost up to 8% to the best single candidate at 10 d, absolute error at most 2%
  (``criterion="squared"`` keeps squares, every active set solved exactly). Since every
  candidate satisfies efficiency, so does Σ α_c φ_c.

The candidates (``candidates``):

- ``"surrogate"``: :class:`~calix.explain.logit_surrogate.LogitSurrogateSHAP`'s estimate with
  its residual regression (logit link for a classifier's probability, identity otherwise --
  where it is the paired Shapley-kernel regression);
- ``"odd"``: :class:`~calix.explain.oddshap.OddSHAP` as published (tree proxy fitted to the
  game, one term per 10 queries);
- ``"odd_residual"``: OddSHAP with calix's settings (proxy fitted to what the singletons
  leave, one term per 5 queries);
- ``"tree"``: gradient-boosted trees (depth 3) as the surrogate, their Shapley values exact
  (:func:`~calix.explain.shapley.tree_shapley`), plus the Shapley-kernel regression of their
  residual.

Intervals: the jackknife of :class:`~calix.explain.shapley.ShapleyEstimator`. Its refits fit
the tree candidate's trees again and solve for the stacking weights again on the held-out
predictions of the pairs they keep; they keep the main fit's odd supports (refitting their
coefficients: for OddSHAP alone, selecting them again gave intervals far too wide at ten
times the cost), so the intervals leave out the variance of the supports and of the folds'
fits.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from calix.explain.logit_surrogate import (
    _MAX_TERMS,
    _fit,
    _quadratic,
    quadratic_shapley,
    sigmoid_quadratic_shapley,
    sigmoid_quadratic_shapley_exact,
    surrogate_design_weights,
    target_logit,
)
from calix.explain.oddshap import OddSHAP, odd_parity_shapley, odd_support
from calix.explain.shapley import (
    ShapleyEstimator,
    fit_trees,
    tree_params_with_defaults,
    tree_shapley,
)
from calix.explain.solvers import efficiency_constrained_wls
from calix.perturb import CoalitionDesign, Design, LeverageDesign, SurrogateDesign

__all__ = ["StackedSHAP", "simplex_least_absolute", "simplex_least_squares"]

CANDIDATES = ("surrogate", "odd", "odd_residual", "tree")
#: permutation walks of the logit surrogate's Shapley values (exact by enumeration for d <= 16)
_N_PERMUTATIONS = 4096


def _stacking_inputs(f: Tensor, y: Tensor, w: Tensor, name: str
                     ) -> tuple[Tensor, Tensor, Tensor]:
    """f, y, w of a stacking solve as float64 on the CPU; ValueError naming ``name`` for
    non-finite entries."""
    f, y, w = (v.detach().to("cpu", torch.float64) for v in (f, y, w))
    if not (torch.isfinite(f).all() and torch.isfinite(y).all() and torch.isfinite(w).all()):
        raise ValueError(f"{name} needs finite predictions, targets and weights")
    return f, y, w


def simplex_least_squares(f: Tensor, y: Tensor, w: Tensor) -> Tensor:
    """argmin_α Σ_r w_r (y_r − f_r·α)² subject to α ≥ 0 and Σα = 1, exactly.

    Every non-empty active set is solved with the equality constraint only (its KKT system,
    by least squares, so that identical columns are allowed) and the feasible solution with the
    lowest error kept (ties: the first in order of fewer columns, then column order). For the
    handful of columns a stack has.

    f (r, c), y (r,), w (r,) float64 -> α (c,) float64.
    """
    f, y, w = _stacking_inputs(f, y, w, "simplex_least_squares")
    c = f.shape[1]
    if c > 10:
        raise ValueError(f"simplex_least_squares enumerates active sets: at most 10 columns, "
                         f"got {c}")
    best, best_err = None, math.inf
    fw = f * w[:, None]
    gram, rhs = f.T @ fw, fw.T @ y
    scale = float(gram.diagonal().abs().max()) or 1.0
    for k in range(1, c + 1):
        for cols in itertools.combinations(range(c), k):
            idx = list(cols)
            kkt = torch.zeros(k + 1, k + 1, dtype=f.dtype)
            kkt[:k, :k] = gram[idx][:, idx] / scale
            kkt[:k, k] = kkt[k, :k] = 1.0
            b = torch.cat([rhs[idx] / scale, torch.ones(1, dtype=f.dtype)])
            sol = torch.linalg.lstsq(kkt, b[:, None], driver="gelsd").solution[:k, 0]
            if bool((sol < -1e-9).any()):
                continue
            alpha = torch.zeros(c, dtype=f.dtype)
            alpha[idx] = sol.clamp_min(0.0)
            alpha = alpha / alpha.sum()
            err = float((w * (y - f @ alpha) ** 2).sum())
            if err < best_err * (1 - 1e-12):
                best, best_err = alpha, err
    if best is None:  # a single column is always feasible: only NaN from the solver
        raise ValueError("simplex_least_squares found no feasible weights")
    return best


def simplex_least_absolute(f: Tensor, y: Tensor, w: Tensor) -> Tensor:
    """argmin_α Σ_r w_r |y_r − f_r·α| subject to α ≥ 0 and Σα = 1: least absolute deviations
    on the simplex, solved exactly as a linear program (scipy's HiGHS, sparse: rows of
    y − fα = u − v with u, v ≥ 0 and cost Σ w (u + v)).

    A few held-out pairs with large errors (a surrogate that misses a strong interaction on
    them) move squared-error weights far more than absolute-error ones; in
    ``benchmarks/shapley.py`` the absolute criterion gave the stack the lower error in most
    games and budgets (see :class:`StackedSHAP`).

    f (r, c), y (r,), w (r,) float64 with w >= 0 -> α (c,) float64.
    """
    from scipy import sparse
    from scipy.optimize import linprog

    f, y, w = _stacking_inputs(f, y, w, "simplex_least_absolute")
    if bool((w < 0).any()):
        raise ValueError("simplex_least_absolute needs non-negative weights")
    r, c = f.shape
    scale = float(torch.cat([f.reshape(-1), y]).abs().max()) or 1.0
    total = float(w.sum()) or 1.0
    eye = sparse.identity(r, format="csr")
    a_eq = sparse.vstack([
        sparse.hstack([sparse.csr_matrix(f.numpy() / scale), eye, -eye]),
        sparse.hstack([sparse.csr_matrix(np.ones((1, c))), sparse.csr_matrix((1, 2 * r))]),
    ], format="csr")
    b_eq = np.concatenate([y.numpy() / scale, [1.0]])
    cost = np.concatenate([np.zeros(c), np.tile(w.numpy() / total, 2)])
    out = linprog(cost, A_eq=a_eq, b_eq=b_eq, bounds=(0, None), method="highs")
    if out.status != 0:
        raise ValueError(f"simplex_least_absolute: the linear program failed ({out.message})")
    alpha = torch.as_tensor(out.x[:c], dtype=torch.float64).clamp_min(0.0)
    return alpha / alpha.sum()


#: the stacking criteria: weighted absolute or squared held-out error
_CRITERIA = {"absolute": simplex_least_absolute, "squared": simplex_least_squares}


class _Fit:
    """One candidate fitted on one input's rows: its Shapley values (or None when not asked)
    and a predictor of the surrogate's values on coalitions (m, d) -> (m,)."""

    def __init__(self, phi: Tensor | None, predict: Any, variance: Tensor | None = None):
        self.phi, self.predict, self.variance = phi, predict, variance


class StackedSHAP(ShapleyEstimator):
    """calix's stacked Shapley estimator (see the module docstring): several surrogates of the
    game fitted to the same paired coalitions, combined with the convex weights that predict
    held-out pairs best.

    ``n_samples`` queries per input, on paired coalitions: ``design="auto"`` takes
    :class:`~calix.perturb.LeverageDesign`'s (sizes uniform, drawn without replacement) until
    the budget has room for :class:`~calix.perturb.SurrogateDesign`'s enumerated sizes 1 and
    d − 1 (8 d coalitions besides the ends), and SurrogateDesign's from there -- in
    ``benchmarks/shapley.py`` the first had the lower error below 10 d on all six games, the
    second at 10 d on the classifier games.

    Cost: every candidate is fitted ``n_folds + 1`` times per input (three of them fit 50
    gradient-boosted trees each time), and its coefficients (the tree candidate: its trees
    too) once more per jackknife group: in ``benchmarks/shapley.py`` (d = 13-16, one core)
    0.2-0.4 s per input at 5 d queries and 1.6-2.1 s at 50 d, 40-200 times
    :class:`~calix.explain.logit_surrogate.LogitSurrogateSHAP`'s time (the stacking weights:
    one small linear program per input and jackknife group).

    ``extra`` adds ``stack_weights`` (n, len(candidates)) -- each input's α; NaN for inputs
    explained exactly -- and ``candidates``.

    Parameters
    ----------
    candidates : sequence of {"surrogate", "odd", "odd_residual", "tree"} -- at least one.
    n_folds : int -- cross-validation folds of the sampled pairs (>= 2).
    alpha : float -- ridge penalty of the surrogate candidate's quadratic (> 0).
    tree_params : dict -- ``GradientBoostingRegressor`` arguments of the ``"tree"`` candidate
        (default 50 trees of depth 3).
    design : {"auto", "surrogate", "leverage"} -- the coalitions (see above).
    criterion : {"absolute", "squared"} -- the held-out error the stacking weights minimise
        (see the module docstring).

    Raises
    ------
    ValueError
        For an unknown or repeated candidate, n_folds < 2, alpha <= 0, tree_params that are not
        GradientBoostingRegressor's, an unknown design or criterion, n_samples below
        ``d + 2 + 2 n_folds``, or a budget whose design leaves fewer than ``n_folds`` sampled
        pairs (every fold needs a held-out pair); both before any query.
    """

    name = "stacked_shap"
    title = "StackedSHAP"

    def __init__(self, model: Any, *, n_samples: int | None = None,
                 candidates: tuple[str, ...] | list[str] = CANDIDATES, n_folds: int = 5,
                 alpha: float = 0.3, tree_params: dict[str, Any] | None = None,
                 design: str = "auto", criterion: str = "absolute", **kwargs: Any):
        super().__init__(model, n_samples=n_samples, **kwargs)
        if criterion not in _CRITERIA:
            raise ValueError(f"criterion must be one of {tuple(_CRITERIA)}, got {criterion!r}")
        self.criterion = criterion
        if design not in ("auto", "surrogate", "leverage"):
            raise ValueError(f"design must be 'auto', 'surrogate' or 'leverage', got "
                             f"{design!r}")
        self.design_name = design
        cands = tuple(candidates)
        unknown = [c for c in cands if c not in CANDIDATES]
        if not cands or unknown or len(set(cands)) != len(cands):
            raise ValueError(f"candidates must be distinct names from {CANDIDATES}, got "
                             f"{list(cands)}")
        if isinstance(n_folds, bool) or int(n_folds) != n_folds or n_folds < 2:
            raise ValueError(f"n_folds must be an integer >= 2, got {n_folds!r}")
        if not alpha > 0:
            raise ValueError(f"alpha must be > 0 (a ridge penalty), got {alpha}")
        self.candidates, self.n_folds, self.alpha = cands, int(n_folds), float(alpha)
        self.tree_params = tree_params_with_defaults(tree_params, 3)
        # the odd candidates: OddSHAP's proxy target and queries per regression term
        self._odd = {"odd": ("game", 10), "odd_residual": ("residual", 5)}
        self._state: list[dict[str, Any]] = []
        self._alpha: Tensor | None = None

    def params(self) -> dict[str, Any]:
        return {**super().params(), "candidates": list(self.candidates),
                "n_folds": self.n_folds, "alpha": self.alpha,
                "tree_params": dict(self.tree_params), "design": self.design_name,
                "criterion": self.criterion}

    def _solve(self, f: Tensor, y: Tensor, w: Tensor) -> Tensor:
        """The stacking weights for held-out predictions f (r, C) of paired differences y (r,)
        with row weights w (r,), by ``criterion``."""
        return _CRITERIA[self.criterion](f, y, w)

    def design(self, d: int) -> Design:
        name = self.design_name
        if name == "auto":  # SurrogateDesign's enumerated sizes, once the budget has them
            border = SurrogateDesign.n_fixed(self.n_samples - 2, d) > 0
            name = "surrogate" if border else "leverage"
        return SurrogateDesign() if name == "surrogate" else LeverageDesign()

    @staticmethod
    def _row_weights(design: CoalitionDesign) -> Tensor:
        """Shapley-kernel regression weights of every input's rows, (n, m) float64."""
        w = design.weights
        if w is None:
            return surrogate_design_weights(design.masks, design.n_fixed)
        return w.expand(design.masks.shape[0], -1)

    @staticmethod
    def smallest_budget(d: int, n_folds: int = 5) -> int:
        """Fewest queries per input for d features with ``n_folds`` folds."""
        return d + 2 + 2 * int(n_folds)

    def minimum(self, d: int) -> int:
        return self.smallest_budget(d, self.n_folds)

    def _link(self, outputs: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        s = self._score(outputs, targets).double()
        return s, (target_logit(outputs, targets) if self.explains_probability else s)

    def _validate(self, d: int) -> None:
        self._order = 2 if d + d * (d - 1) // 2 <= _MAX_TERMS else 1
        if self.n_samples - 2 >= self.design(d).minimum(d) and self.target_width is None:
            # the enumerated part of a design depends on the budget only: a dry draw counts
            # the sampled pairs before any query is made
            dry = self.design(d).draw(1, self.n_samples - 2, d, torch.Generator())
            if dry.n_sampled // 2 < self.n_folds:
                raise ValueError(f"{self.title} needs at least {self.n_folds} sampled pairs "
                                 f"(one per fold); {self.n_samples} queries for {d} features "
                                 f"leave {dry.n_sampled // 2} besides the enumerated "
                                 f"coalitions: raise n_samples or lower n_folds")

    def _prepare(self, d: int, g: torch.Generator) -> None:
        seed = int(torch.randint(2**31, (1,), generator=g))
        self._tree_seed = seed
        self._folds = torch.Generator().manual_seed(seed + 1)
        self._perms = (torch.argsort(torch.rand(_N_PERMUTATIONS, d, generator=g), -1)
                       if self.explains_probability and 2**d > 16 * _N_PERMUTATIONS else None)

    def _game(self, x: Tensor, targets: Tensor, d: int, g: torch.Generator,
              engine: Any) -> dict[str, Any]:
        out = super()._game(x, targets, d, g, engine)
        if out["exact"]:  # no stack: NaN weights, for a batch whose widths differ
            out.update(stack_weights=torch.full((len(x), len(self.candidates)), float("nan"),
                                                dtype=torch.float64),
                       candidates=list(self.candidates))
        return out

    # ------------------------------------------------------------------ the candidates
    def _candidate(self, name: str, z: Tensor, s: Tensor, y: Tensor, ends: tuple[Tensor, ...],
                   w: Tensor, state: dict[str, Any], values: bool, refit: bool) -> _Fit:
        """Candidate ``name`` fitted to one input's rows z (m, d), scores s and links y (m,),
        the ends (s(full), s(∅), y(full), y(∅)) and weights w (m,). ``state`` holds its
        choices: made here unless ``refit`` (then kept). ``values``: compute the Shapley
        values too."""
        s1, s0, y1, y0 = ends
        d = z.shape[-1]
        if name == "surrogate":
            a, b, c = _fit(z[None], y[None], y0[None], y1[None], self.alpha, self._order)
            q = lambda zz: _quadratic(zz[None], a, b, c)[0]  # noqa: E731
            g_ = (lambda zz: torch.sigmoid(q(zz))) if self.explains_probability else q
            psi = efficiency_constrained_wls(z[None].double(), (s - g_(z))[None], w,
                                             torch.zeros(1, dtype=s.dtype, device=s.device))[0]
            phi, var = None, None
            if values:
                if not self.explains_probability:
                    phi = quadratic_shapley(b, c)[0]
                elif self._perms is None:
                    phi = sigmoid_quadratic_shapley_exact(a, b, c)[0]
                else:
                    perms = self._perms[:1024] if refit else self._perms
                    phi, var = sigmoid_quadratic_shapley(a, b, c, perms, variance=True)
                    phi, var = phi[0], var[0]
                phi = phi + psi
            return _Fit(phi, lambda zz: g_(zz) + zz.double() @ psi, var)
        if name in self._odd:
            target, factor = self._odd[name]
            if not refit:
                k = max(0, self._budget // factor - d)
                state[name] = odd_support(z, s, w, k, s1 - s0, proxy_target=target,
                                          seed=self._tree_seed)
            terms = state[name]
            chi = 2 * z.double() - 1

            def feats(ch: Tensor) -> Tensor:
                if not terms:
                    return ch
                return torch.cat([ch, torch.stack([ch[:, list(t)].prod(-1) for t in terms],
                                                  -1)], -1)

            coef = OddSHAP._constrained(feats(chi)[None], s[None], w, (s1 - s0)[None])[0]
            phi = None
            if values:
                phi = 2 * coef[:d] + odd_parity_shapley(coef[None, d:], terms, d)[0]
            return _Fit(phi, lambda zz: feats(2 * zz.double() - 1) @ coef)
        # the tree candidate: its trees are refitted in jackknife refits too (50 shallow trees:
        # cheap), so that their variance joins the intervals
        gbm = fit_trees(z, s, w, self.tree_params, self._tree_seed, "the tree candidate")

        def trees(zz: Tensor) -> Tensor:
            out = gbm.predict(zz.cpu().numpy().astype(np.float32))
            return torch.as_tensor(out, dtype=torch.float64, device=s.device)

        ends_t = trees(torch.stack([torch.ones(d, dtype=torch.bool),
                                    torch.zeros(d, dtype=torch.bool)]))
        r1, r0 = s1 - ends_t[0], s0 - ends_t[1]
        psi = efficiency_constrained_wls(z[None].double(), (s - trees(z) - r0)[None], w,
                                         (r1 - r0)[None])[0]
        phi = None
        if values:
            phi = torch.as_tensor(tree_shapley(list(gbm.estimators_[:, 0]), gbm.learning_rate,
                                               d), device=s.device) + psi
        return _Fit(phi, lambda zz: trees(zz) + zz.double() @ psi)

    # ------------------------------------------------------------------ the stack
    def _weights(self, design: CoalitionDesign, pairs: tuple[Tensor, ...], i: int, s: Tensor,
                 y: Tensor, ends: tuple[Tensor, ...], w: Tensor) -> Tensor:
        """Stacking weights α (C,) of input i: the candidates refitted without each fold of
        pairs predict its paired differences (``pairs``: :meth:`_pair_rows`; s, y (m,): its
        scores and links; w (m,): its row weights)."""
        z = design.masks[i].to(s.device)
        n_fixed = design.n_fixed
        if len(self.candidates) == 1:
            return torch.ones(1, dtype=torch.float64)
        first, second, lone = pairs
        n_pairs = len(first)
        ids = design.row_ids[first] // 2  # each pair's drawn position
        fold = torch.randperm(n_pairs, generator=self._folds) % self.n_folds
        one = design.for_input(i)
        diffs, preds, wts, held = [], [], [], []
        for k in range(self.n_folds):
            test = (fold == k).nonzero()[:, 0]
            train = (fold != k).nonzero()[:, 0]
            keep = torch.cat([torch.stack([first[train], second[train]], 1).reshape(-1),
                              lone])
            rows = torch.cat([torch.arange(n_fixed), n_fixed + keep]).to(z.device)
            wt = self._row_weights(one.take(keep))[0].to(s.device)
            a = (n_fixed + first[test]).to(z.device)
            b = (n_fixed + second[test]).to(z.device)
            cols = []
            for name in self.candidates:
                fit = self._candidate(name, z[rows], s[rows], y[rows], ends, wt, {}, False,
                                      False)
                cols.append(fit.predict(z[a]) - fit.predict(z[b]))
            preds.append(torch.stack(cols, 1))
            diffs.append(s[a] - s[b])
            wts.append(w[a])
            held.append(ids[test])
        cv = (torch.cat(held), torch.cat(preds).cpu(), torch.cat(diffs).cpu(),
              torch.cat(wts).cpu())
        self._held_out.append(cv)
        return self._solve(*cv[1:])

    @staticmethod
    def _pair_rows(unit: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Positions (into the sampled rows) of the first and second row of every pair (S,
        complement) -- the units (drawn id // 2) that hold two rows, in the order of their
        first row: positions can shift after the adaptive mode's extend -- and of the rows
        without their partner (always fitted)."""
        order = torch.argsort(unit, stable=True)
        u = unit[order]
        both = (u[1:] == u[:-1]).nonzero()[:, 0]  # u sorted: a unit's two rows are adjacent
        first, second = order[both], order[both + 1]
        keep = torch.argsort(first)
        paired = torch.zeros(len(unit), dtype=torch.bool)
        paired[first] = paired[second] = True
        return first[keep], second[keep], (~paired).nonzero()[:, 0]

    def _refit_weights(self, design: CoalitionDesign, i: int) -> Tensor:
        """Input i's stacking weights from the held-out predictions of the pairs a jackknife
        refit keeps: the weights' own variability joins the intervals (the folds' fits are
        not redone)."""
        if len(self.candidates) == 1:
            return self._alpha[i]
        pairs, f, dv, w = self._held_out[i]
        kept = torch.isin(pairs, design.row_ids // 2)
        if int(kept.sum()) < 2:
            return self._alpha[i]
        return self._solve(f[kept], dv[kept], w[kept])

    def fit(self, design: CoalitionDesign, s: Tensor, y: Tensor, full: Tensor,
            empty: Tensor, info: dict[str, Any] | None = None) -> Tensor:
        z = design.masks.to(s.device)
        n, m, d = z.shape
        y1, y0 = self._ends
        if info is not None and (m - design.n_fixed) // 2 < self.n_folds:
            raise ValueError(f"{self.title} needs at least {self.n_folds} sampled pairs (one "
                             f"per fold); raise n_samples")
        w = self._row_weights(design).to(s.device)
        main = info is not None
        if main:
            self._budget = m + 2  # the odd candidates' term counts follow the queries made
            self._state = [{} for _ in range(n)]
            self._held_out: list[tuple[Tensor, ...]] = []
            pairs = self._pair_rows(design.row_ids // 2)  # the same for every input
            alphas = [self._weights(design, pairs, i, s[i], y[i],
                                    (full[i], empty[i], y1[i], y0[i]), w[i])
                      for i in range(n)]
            self._alpha = torch.stack(alphas)
        if self._alpha is None:
            raise RuntimeError("StackedSHAP.fit: a jackknife refit before the main fit")
        phis, variances = [], []
        for i in range(n):
            ends = (full[i], empty[i], y1[i], y0[i])
            alpha = self._alpha[i] if main else self._refit_weights(design, i)
            phi = torch.zeros(d, dtype=torch.float64, device=s.device)
            var = torch.zeros(d, dtype=torch.float64, device=s.device)
            for j, name in enumerate(self.candidates):
                a = float(alpha[j])
                if a == 0.0 and not main:  # the main fit makes every candidate's choices
                    continue
                fit = self._candidate(name, z[i], s[i], y[i], ends, w[i], self._state[i],
                                      True, not main)
                phi = phi + a * fit.phi
                if fit.variance is not None:
                    var = var + a**2 * fit.variance
            phis.append(phi)
            variances.append(var)
        if main:
            info["stack_weights"] = self._alpha.to(s.device)
            info["candidates"] = list(self.candidates)
            if self._perms is not None:  # the walks' quadrature error joins the jackknife's
                info["variance"] = torch.stack(variances)
        return torch.stack(phis)
