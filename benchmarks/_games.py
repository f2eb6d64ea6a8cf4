"""Cooperative games with exact Shapley values, for scoring Shapley estimators.

Every game is given twice, and both forms evaluate the same thing:

- as calix pieces -- a wrapped ``model``, inputs ``x``, ``features``, ``fill``, ``output`` and
  ``target`` -- so any calix explainer runs on it unchanged
  (``Cls(game.model, **game.explainer_kwargs()).explain(game.x, target=game.target)``);
- as a plain value function ``v(coalitions) -> values`` on boolean arrays ``(k, d)`` (or one
  coalition ``(d,)``), one per explained input, for estimators from other packages. It builds
  the perturbed inputs itself (``where(keep[feature of each element], x, fill)``) and calls the
  torch module or scikit-learn estimator directly, not through calix's perturbation engine.

:meth:`Game.check_pieces` asserts that the two agree on random coalitions. Exact Shapley
values enumerate all 2^d coalitions (:meth:`Game.exact`); the two synthetic games also know
theirs in closed form (:meth:`Game.analytic`).

Games (``build_games``):

a. ``wine-mlp`` -- the zoo MLP on wine, 13 columns, training-mean fill, probability of the
   predicted class.
b. ``breast-mlp-groups`` -- the zoo MLP on breast_cancer, its 30 columns in 15 groups (each
   measure's mean and worst value together; the 10 standard errors in 5 pairs).
c. ``breast-gbt`` -- a scikit-learn GradientBoostingClassifier on 14 breast_cancer columns.
d. ``digits-cnn-patches`` -- the zoo CNN on digits, 2x2 patches of the 8x8 image (16 players),
   fill 0 (black).
e. ``near-additive`` -- 16 players: additive terms plus 16 small pairwise and 8 small triple
   products.
f. ``high-order`` -- 14 players: triple products, minima over 4 players and thresholded counts
   over 6 players (interactions of order 3 to 6), and a weak additive part.

Outside the six (``EXTRA_KEYS``): g. ``diabetes-gbr`` -- a boosted-tree regressor on the
diabetes table, mean baseline, raw prediction: the setting of Leverage SHAP's experiments.

Inputs of the model games are the first test rows whose predicted class differs from the
class predicted at the fill (so v(full) − v(∅) is not small). The synthetic games are torch
modules on ``(n, d)`` inputs with fill 0, so the model sees the coalition vector scaled by the
input: input 0 is all ones (v(S) = f(1_S)); the others have entries drawn from [0.5, 1.5].
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

GAME_KEYS = ("a", "b", "c", "d", "e", "f")
TABULAR = ("a", "b", "c")
#: games outside the main six: the setting of Leverage SHAP's paper (``g``)
EXTRA_KEYS = ("g",)
#: coalitions evaluated at once when enumerating all 2^d of them
_CHUNK = 8192


@dataclass
class Game:
    """One game: calix pieces, a plain value function per input, exact Shapley values.

    Attributes
    ----------
    key, name, description : str
    kind : {"tabular", "image", "synthetic"}
    model : calix Model -- the wrapped model (calix explainers query it).
    x : Tensor (n, *input_shape) -- the explained inputs.
    features, fill : calix Features and Fill (copied afresh for every explainer).
    output : str -- the ``output`` calix explainers are given.
    target : ndarray (n,) int -- the explained class (0 for the synthetic regressors).
    labels : ndarray of input_shape, int -- the feature (player) of every input element.
    score : callable (inputs ndarray (k, *input_shape) float32, target int) -> (k,) float64 --
        the explained score of raw model calls (no calix code on this path).
    fill_row : ndarray of input_shape -- what removed elements become.
    analytic_fn : callable (x ndarray (n, d)) -> (n, d), or None
    """

    key: str
    name: str
    description: str
    kind: str
    model: Any
    x: Tensor
    features: Any
    fill: Any
    output: str
    target: np.ndarray
    labels: np.ndarray
    score: Callable[[np.ndarray, int], np.ndarray]
    fill_row: np.ndarray
    analytic_fn: Callable[[np.ndarray], np.ndarray] | None = None
    _exact: np.ndarray | None = field(default=None, repr=False)
    _ends: np.ndarray | None = field(default=None, repr=False)

    @property
    def d(self) -> int:
        return int(self.labels.max()) + 1

    @property
    def n(self) -> int:
        return len(self.x)

    def explainer_kwargs(self) -> dict[str, Any]:
        """``features``, ``fill`` and ``output`` for a calix explainer (fresh copies)."""
        return {"features": copy.deepcopy(self.features), "fill": copy.deepcopy(self.fill),
                "output": self.output}

    # ------------------------------------------------------------ plain value function
    def value(self, i: int, coalitions: Any) -> np.ndarray:
        """v_i(S) for boolean coalitions ``(k, d)`` (or one ``(d,)``): shape ``(k,)``."""
        z = np.atleast_2d(np.asarray(coalitions)).astype(bool)
        if z.shape[1] != self.d:
            raise ValueError(f"coalitions must have {self.d} columns, got {z.shape}")
        xi = self.x[i].detach().cpu().numpy()
        out = np.empty(len(z))
        for start in range(0, len(z), _CHUNK):
            keep = z[start:start + _CHUNK][:, self.labels]  # (k, *input_shape)
            inputs = np.where(keep, xi, self.fill_row).astype(np.float32)
            out[start:start + _CHUNK] = self.score(inputs, int(self.target[i]))
        return out

    def value_function(self, i: int) -> Callable[[Any], np.ndarray]:
        """The plain value function of input ``i``: ``v(coalitions (k, d) bool) -> (k,)``."""
        return lambda coalitions: self.value(i, coalitions)

    # ------------------------------------------------------------ calix pieces
    def pieces_value(self, i: int, coalitions: Any) -> np.ndarray:
        """v_i(S) through calix's perturbation engine and score (what calix explainers see)."""
        from calix.explain.base import score
        from calix.perturb import Perturbation

        kw = self.explainer_kwargs()
        engine = Perturbation(kw["features"], kw["fill"])
        z = torch.as_tensor(np.atleast_2d(np.asarray(coalitions)).astype(bool))
        res = engine.query(self.model, self.x[i:i + 1], z[None])
        target = torch.as_tensor(self.target[i:i + 1], dtype=torch.long)
        return score(res.outputs, target, self.output, self.model.task)[0].double().numpy()

    def check_pieces(self, n_coalitions: int = 32, seed: int = 0, atol: float = 1e-5) -> float:
        """Assert that the calix pieces and the plain value function agree on the empty, the
        full and ``n_coalitions`` random coalitions of every input; returns the largest gap."""
        rng = np.random.default_rng(seed)
        z = rng.random((n_coalitions, self.d)) < rng.random((n_coalitions, 1))
        z = np.concatenate([np.zeros((1, self.d), bool), np.ones((1, self.d), bool), z])
        worst = 0.0
        for i in range(self.n):
            a, b = self.value(i, z), self.pieces_value(i, z)
            gap = float(np.abs(a - b).max())
            scale = 1.0 + float(np.abs(a).max())
            assert gap <= atol * scale, (
                f"game {self.key} input {i}: calix pieces and value function differ by {gap:.3g}")
            worst = max(worst, gap)
        return worst

    # ------------------------------------------------------------ exact values
    def exact(self) -> np.ndarray:
        """Exact Shapley values (n, d), float64, by enumerating all 2^d coalitions."""
        if self._exact is None:
            from calix.perturb import all_coalitions

            coal = all_coalitions(self.d)
            z = coal.numpy()
            values = np.stack([self.value(i, z) for i in range(self.n)])
            self._exact = exact_shapley()(torch.as_tensor(values), coal).numpy()
            self._ends = values[:, [0, -1]]  # row 0 is ∅, the last row the full coalition
        return self._exact

    def ends(self) -> np.ndarray:
        """(n, 2): v(∅) and v(full) of every input."""
        self.exact()
        return self._ends

    def analytic(self) -> np.ndarray | None:
        """Closed-form Shapley values (n, d) of the synthetic games, else None."""
        if self.analytic_fn is None:
            return None
        return self.analytic_fn(self.x.detach().cpu().numpy().astype(np.float64))


def exact_shapley() -> Callable[[Tensor, Tensor], Tensor]:
    """calix's ``exact_shapley(values (n, 2^d), coalitions (2^d, d)) -> (n, d)``."""
    import importlib

    for name in ("calix.explain.shapley", "calix.explain.polyshap"):
        try:
            return importlib.import_module(name).exact_shapley
        except (ModuleNotFoundError, AttributeError):
            continue
    raise ImportError("calix.explain has no exact_shapley")


# ====================================================================== model games
def _torch_score(module: nn.Module, output: str) -> Callable[[np.ndarray, int], np.ndarray]:
    """Score of raw calls of a torch classifier: softmax probability (or logit) of a class."""

    def score(inputs: np.ndarray, target: int) -> np.ndarray:
        with torch.no_grad():
            logits = module(torch.as_tensor(inputs)).double()
        z = torch.softmax(logits, -1) if output == "probability" else logits
        return z[:, target].numpy()

    return score


def _pick_inputs(X: np.ndarray, predict: Callable[[np.ndarray], np.ndarray],
                 fill_row: np.ndarray, n: int) -> np.ndarray:
    """Indices of the first ``n`` rows whose predicted class differs from the fill's."""
    pred = predict(X)
    at_fill = int(predict(fill_row[None].astype(np.float32))[0])
    idx = np.flatnonzero(pred != at_fill)
    if len(idx) < n:
        idx = np.concatenate([idx, np.flatnonzero(pred == at_fill)])
    return idx[:n]


def _zoo_mlp_game(key: str, name: str, dataset: str, n: int, groups: list[list[int]] | None,
                  output: str = "probability") -> Game:
    from calix import zoo
    from calix.perturb import Columns, Mean

    trained = zoo.train("mlp", dataset, seed=0)
    ds, module = trained.dataset, trained.module.eval()
    X_test = np.asarray(ds.X_test, dtype=np.float32)
    fill = Mean().fit(ds.X_train)
    fill_row = fill.mean_.numpy()
    score = _torch_score(module, output)

    def predict(a: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.as_tensor(a, dtype=torch.float32)).argmax(1).numpy()

    rows = _pick_inputs(X_test, predict, fill_row, n)
    x = torch.as_tensor(X_test[rows])
    n_cols = X_test.shape[1]
    labels = np.full(n_cols, -1)
    for g, cols in enumerate(groups or []):
        labels[cols] = g
    rest = np.flatnonzero(labels < 0)
    labels[rest] = np.arange(len(groups or []), len(groups or []) + len(rest))
    features = Columns(groups) if groups else Columns()
    acc = trained.metrics["accuracy"]
    what = "p(predicted class)" if output == "probability" else "logit of the predicted class"
    if groups:
        desc = (f"zoo MLP on {dataset} (test accuracy {acc:.3f}), {n_cols} columns in "
                f"{labels.max() + 1} groups, training-mean fill, {what}")
    else:
        desc = (f"zoo MLP on {dataset} (test accuracy {acc:.3f}), {n_cols} columns, "
                f"training-mean fill, {what}")
    if output != "probability":
        name += f" ({output})"
    return Game(key, name, desc, "tabular", trained.wrap(), x, features, fill, output,
                predict(X_test[rows]), labels, score, fill_row)


def breast_cancer_groups() -> list[list[int]]:
    """15 groups of the 30 breast_cancer columns: each measure's mean and worst value (columns
    j and 20 + j, j < 10), and the 10 standard errors (columns 10..19) in 5 adjacent pairs."""
    return [[j, 20 + j] for j in range(10)] + [[10 + 2 * k, 11 + 2 * k] for k in range(5)]


#: the breast_cancer columns of the gradient-boosting game: the 10 means and 4 worst values
GBT_COLUMNS = list(range(10)) + [20, 21, 22, 23]


def _gbt_game(key: str, n: int) -> Game:
    from sklearn.ensemble import GradientBoostingClassifier

    from calix import data as data_mod
    from calix.models import wrap
    from calix.perturb import Columns, Mean

    ds = data_mod.load("breast_cancer", seed=0)
    cols = GBT_COLUMNS
    X_train = np.asarray(ds.X_train, dtype=np.float32)[:, cols]
    X_test = np.asarray(ds.X_test, dtype=np.float32)[:, cols]
    gbt = GradientBoostingClassifier(n_estimators=100, max_depth=3, random_state=0)
    gbt.fit(X_train, np.asarray(ds.y_train))
    acc = float((gbt.predict(X_test) == np.asarray(ds.y_test)).mean())
    fill = Mean().fit(X_train)
    fill_row = fill.mean_.numpy()

    def score(inputs: np.ndarray, target: int) -> np.ndarray:
        return np.asarray(gbt.predict_proba(inputs), dtype=np.float64)[:, target]

    def predict(a: np.ndarray) -> np.ndarray:
        return gbt.predict_proba(a).argmax(1)

    rows = _pick_inputs(X_test, predict, fill_row, n)
    d = len(cols)
    desc = (f"scikit-learn GradientBoostingClassifier (100 trees of depth 3, test accuracy "
            f"{acc:.3f}) on {d} breast_cancer columns, training-mean fill, p(predicted class)")
    return Game(key, "breast-gbt", desc, "tabular", wrap(gbt), torch.as_tensor(X_test[rows]),
                Columns(), fill, "probability", predict(X_test[rows]), np.arange(d), score,
                fill_row)


def _diabetes_game(key: str, n: int) -> Game:
    """Leverage SHAP's own setting (Musco & Witter 2025, their "Diabetes"): a boosted-tree
    regressor on scikit-learn's diabetes table (10 columns), the training mean as the baseline,
    the raw prediction explained. Inputs: the first test rows (a regressor has no class to
    differ from the fill's)."""
    from sklearn.datasets import load_diabetes
    from sklearn.ensemble import GradientBoostingRegressor
    from sklearn.model_selection import train_test_split

    from calix.models import wrap
    from calix.perturb import Columns, Mean

    X, y = load_diabetes(return_X_y=True)
    X = X.astype(np.float32)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0)
    gbr = GradientBoostingRegressor(n_estimators=100, max_depth=4, random_state=0)
    gbr.fit(X_train, y_train)
    r2 = float(gbr.score(X_test, y_test))
    fill = Mean().fit(X_train)
    fill_row = fill.mean_.numpy()

    def score(inputs: np.ndarray, target: int) -> np.ndarray:
        return np.asarray(gbr.predict(inputs), dtype=np.float64)

    d = X.shape[1]
    desc = (f"scikit-learn GradientBoostingRegressor (100 trees of depth 4, test R² {r2:.2f}) "
            f"on diabetes ({d} columns), training-mean fill, raw prediction")
    return Game(key, "diabetes-gbr", desc, "tabular", wrap(gbr, task="regression"),
                torch.as_tensor(X_test[:n]), Columns(), fill, "logit", np.zeros(n, dtype=int),
                np.arange(d), score, fill_row)


def _digits_game(key: str, n: int, patch: int = 2) -> Game:
    from calix import zoo
    from calix.perturb import Constant, PatchGrid

    trained = zoo.train("cnn", "digits", seed=0)
    ds, module = trained.dataset, trained.module.eval()
    X_test = np.asarray(ds.X_test, dtype=np.float32)
    c, h, w = X_test.shape[1:]
    fill_row = np.zeros((c, h, w), dtype=np.float32)
    score = _torch_score(module, "probability")

    def predict(a: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.as_tensor(a, dtype=torch.float32)).argmax(1).numpy()

    rows = _pick_inputs(X_test, predict, fill_row, n)
    per_row = -(-w // patch)
    grid = (np.arange(h)[:, None] // patch) * per_row + np.arange(w)[None, :] // patch
    labels = np.broadcast_to(grid, (c, h, w)).copy()
    acc = trained.metrics["accuracy"]
    d = int(labels.max()) + 1
    desc = (f"zoo CNN on digits (test accuracy {acc:.3f}), {patch}x{patch} patches of the "
            f"{h}x{w} image ({d} players), fill 0, p(predicted class)")
    return Game(key, "digits-cnn-patches", desc, "image", trained.wrap(),
                torch.as_tensor(X_test[rows]), PatchGrid(patch), Constant(0.0), "probability",
                predict(X_test[rows]), labels, score, fill_row)


# ====================================================================== synthetic games
class NearlyAdditive(nn.Module):
    """f(u) = Σ_i a_i u_i + Σ_{(i, j)} b_ij u_i u_j + Σ_t c_t Π_{i∈T_t} u_i over a few pairs
    and triples with small weights; output (n, 1).

    (Without the triples the game would have order 2, which paired kernel regressions and
    antithetic permutations recover exactly.)
    """

    def __init__(self, a: np.ndarray, pairs: np.ndarray, b: np.ndarray, triples: np.ndarray,
                 c: np.ndarray):
        super().__init__()
        self.register_buffer("a", torch.as_tensor(a, dtype=torch.float32))
        self.register_buffer("pairs", torch.as_tensor(pairs, dtype=torch.long))
        self.register_buffer("b", torch.as_tensor(b, dtype=torch.float32))
        self.register_buffer("triples", torch.as_tensor(triples, dtype=torch.long))
        self.register_buffer("c", torch.as_tensor(c, dtype=torch.float32))

    def forward(self, u: Tensor) -> Tensor:
        pair = u[:, self.pairs[:, 0]] * u[:, self.pairs[:, 1]]
        triple = u[:, self.triples].prod(-1)
        return (u @ self.a + pair @ self.b + triple @ self.c)[:, None]

    def shapley(self, x: np.ndarray) -> np.ndarray:
        """Closed form for fill 0: φ_i = a_i x_i + Σ_{pairs ∋ i} b_ij x_i x_j / 2
        + Σ_{triples ∋ i} c_t Π_{T_t} x / 3."""
        phi = self.a.double().numpy() * x
        for sup, w in ((self.pairs, self.b), (self.triples, self.c)):
            sup, w = sup.numpy(), w.double().numpy()
            for t in range(len(sup)):
                phi[:, sup[t]] += (w[t] * x[:, sup[t]].prod(1) / sup.shape[1])[:, None]
        return phi


class HighOrder(nn.Module):
    """f(u) = Σ a_i u_i + Σ_t c_t Π_{i∈T_t} u_i + Σ_t e_t min_{i∈M_t} u_i
    + Σ_t g_t 1[#{i ∈ G_t : u_i ≠ 0} ≥ k_t]; output (n, 1).

    For positive inputs and fill 0 each product and minimum is a unanimity game on its support
    and each thresholded count a symmetric game on its group, so the Shapley values are
    closed-form: every member of a support gets an equal share of the term's value at x.
    """

    def __init__(self, a: np.ndarray, prods: np.ndarray, c: np.ndarray, mins: np.ndarray,
                 e: np.ndarray, counts: np.ndarray, g: np.ndarray, k: np.ndarray):
        super().__init__()
        f32 = torch.float32
        self.register_buffer("a", torch.as_tensor(a, dtype=f32))
        self.register_buffer("prods", torch.as_tensor(prods, dtype=torch.long))
        self.register_buffer("c", torch.as_tensor(c, dtype=f32))
        self.register_buffer("mins", torch.as_tensor(mins, dtype=torch.long))
        self.register_buffer("e", torch.as_tensor(e, dtype=f32))
        self.register_buffer("counts", torch.as_tensor(counts, dtype=torch.long))
        self.register_buffer("g", torch.as_tensor(g, dtype=f32))
        self.register_buffer("k", torch.as_tensor(k, dtype=f32))

    def forward(self, u: Tensor) -> Tensor:
        prod = u[:, self.prods].prod(-1)  # (n, terms)
        low = u[:, self.mins].amin(-1)
        present = (u[:, self.counts] != 0).sum(-1).to(u.dtype)
        step = (present >= self.k).to(u.dtype)
        return (u @ self.a + prod @ self.c + low @ self.e + step @ self.g)[:, None]

    def shapley(self, x: np.ndarray) -> np.ndarray:
        """Closed form for positive x and fill 0 (see the class docstring)."""
        phi = self.a.double().numpy() * x
        for sup, w, kind in ((self.prods, self.c, "prod"), (self.mins, self.e, "min"),
                             (self.counts, self.g, "count")):
            sup, w = sup.numpy(), w.double().numpy()
            for t in range(len(sup)):
                xs = x[:, sup[t]]
                total = (xs.prod(1) if kind == "prod" else xs.min(1) if kind == "min"
                         else np.ones(len(x)))
                phi[:, sup[t]] += (w[t] * total / sup.shape[1])[:, None]
        return phi


def _synthetic_inputs(d: int, n: int, seed: int) -> np.ndarray:
    """Row 0 all ones; the others uniform on [0.5, 1.5]."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.5, 1.5, size=(n, d))
    x[0] = 1.0
    return x.astype(np.float32)


def _synthetic_game(key: str, name: str, desc: str, module: nn.Module, d: int, n: int,
                    seed: int) -> Game:
    from calix.models import wrap
    from calix.perturb import Columns, Constant

    module.eval()

    def score(inputs: np.ndarray, target: int) -> np.ndarray:
        with torch.no_grad():
            return module(torch.as_tensor(inputs))[:, target].double().numpy()

    x = torch.as_tensor(_synthetic_inputs(d, n, seed))
    model = wrap(module, task="regression", input_shape=(d,))
    return Game(key, name, desc, "synthetic", model, x, Columns(), Constant(0.0), "logit",
                np.zeros(n, dtype=int), np.arange(d), score, np.zeros(d, np.float32),
                module.shapley)


def near_additive_module(d: int = 16, n_pairs: int = 16, n_triples: int = 8, seed: int = 5
                         ) -> NearlyAdditive:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=d)
    pairs = np.stack([rng.choice(d, 2, replace=False) for _ in range(n_pairs)])
    triples = np.stack([rng.choice(d, 3, replace=False) for _ in range(n_triples)])
    b = 0.15 * rng.normal(size=n_pairs)
    c = 0.1 * rng.normal(size=n_triples)
    return NearlyAdditive(a, pairs, b, triples, c)


def high_order_module(d: int = 14, seed: int = 7) -> HighOrder:
    rng = np.random.default_rng(seed)

    def supports(count: int, size: int) -> np.ndarray:
        return np.stack([rng.choice(d, size, replace=False) for _ in range(count)])

    def signed(count: int, lo: float, hi: float) -> np.ndarray:
        return rng.choice([-1.0, 1.0], count) * rng.uniform(lo, hi, count)

    a = 0.1 * rng.normal(size=d)
    prods, c = supports(6, 3), signed(6, 1.0, 2.0)
    mins, e = supports(3, 4), signed(3, 1.0, 2.0)
    counts, g = supports(3, 6), signed(3, 1.5, 2.5)
    k = np.array([3.0, 4.0, 5.0])
    return HighOrder(a, prods, c, mins, e, counts, g, k)


# ====================================================================== all games
def build_game(key: str, n_inputs: int = 3, output: str = "probability") -> Game:
    """Game ``key`` (a-g) with ``n_inputs`` explained inputs; ``output="logit"`` explains the
    MLP games' (a, b) logit instead of their probability."""
    if output != "probability" and key not in ("a", "b"):
        raise ValueError(f"output={output!r} is for the MLP games a and b, not {key!r}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if key == "a":
            return _zoo_mlp_game("a", "wine-mlp", "wine", n_inputs, None, output)
        if key == "b":
            return _zoo_mlp_game("b", "breast-mlp-groups", "breast_cancer", n_inputs,
                                 breast_cancer_groups(), output)
        if key == "c":
            return _gbt_game("c", n_inputs)
        if key == "d":
            return _digits_game("d", n_inputs)
        if key == "g":
            return _diabetes_game("g", n_inputs)
        if key == "e":
            mod = near_additive_module()
            return _synthetic_game(
                "e", "near-additive", "nearly additive: 16 players, additive terms plus 16 "
                "small pairwise and 8 small triple products (|b| ~ 0.15, |c| ~ 0.1, |a| ~ 1), "
                "fill 0, raw output", mod, 16,
                n_inputs, seed=11)
        if key == "f":
            mod = high_order_module()
            return _synthetic_game(
                "f", "high-order", "strong high-order interactions: 14 players, 6 triple "
                "products, 3 minima over 4 players, 3 thresholded counts over 6 players "
                "(k = 3, 4, 5), weak additive part, fill 0, raw output", mod, 14, n_inputs,
                seed=13)
    raise ValueError(f"unknown game {key!r}; choose from {', '.join(GAME_KEYS + EXTRA_KEYS)}")


def build_games(keys: tuple[str, ...] | list[str] = GAME_KEYS, n_inputs: int = 3
                ) -> dict[str, Game]:
    return {k: build_game(k, n_inputs) for k in keys}
