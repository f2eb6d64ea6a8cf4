"""Generated datasets whose correct explanation is known, for evaluating explainers.

Everything is generated from a seed (nothing is downloaded) at any size.

Tabular sets come with their generating function ``f`` and the true attribution of every row:

- :func:`make_linear` -- ``f(x) = w·x + b`` (a regression target, or with ``task=
  "classification"`` the log-odds of a logistic model, the synthetic sets of OpenXAI: Agarwal
  et al., "OpenXAI: Towards a transparent evaluation of model explanations", NeurIPS 2022
  Datasets and Benchmarks). :func:`make_logistic` is the classification form;
- :func:`make_additive` -- ``f(x) = Σ_i c_i g_i(x_i) + b`` with known shape functions ``g_i``
  (a generalised additive model);
- :func:`make_interaction` -- ``f(x) = w·x + Σ_(i,j) a_ij x_i x_j + b``: pairwise interactions
  and a *suppressor* feature, one with no statistical association with the label that the
  generating function still uses to cancel noise in another feature (Haufe et al., "On the
  interpretation of weight vectors of linear models in multivariate neuroimaging",
  NeuroImage 87, 2014; Clark et al., "XAI-TRIS: non-linear image benchmarks to quantify
  false positive post-hoc attribution of feature importance", Machine Learning 113, 2024).

**What "true attribution" means.** For tabular sets it is the Shapley value of the
*interventional* game of the generating function on the output scale (the log-odds for
classification), ``v(S) = E_z f(x_S, z_{S̄})`` with ``z`` drawn from the population the rows
come from (``attributions``), or for a fixed baseline ``b``, ``v(S) = f(x_S, b_{S̄})``
(:meth:`GeneratingFunction.shapley`). Each generating function gives it in closed form and
equals what enumeration of all 2^d coalitions gives (``tests/test_groundtruth_data.py``). It is
the truth about the *function*; which features carry *statistical* information about the label
is a second truth, ``TabularTruth.relevant``: the two differ for the suppressor.

Image sets (:class:`ObjectImages`) place one deciding object -- a shape, a texture patch or a
handwritten digit glyph from scikit-learn's digits -- at a random position on a textured,
noisy background with distractor objects of other kinds; the class is the object's kind and
the object's pixel mask is the ground truth. Variants: the class is the XOR or AND of two
objects' presence; or the class is the polarity of the object relative to a *suppressor
region* whose content is class-independent but carries the offset that must be subtracted.
:meth:`ObjectImages.batches` yields chunks, so large images never sit in memory all at once;
:meth:`ObjectImages.generate` materialises a small set.

Example
-------
>>> from calix.groundtruth import make_logistic, ObjectImages
>>> t = make_logistic(200, d=5, seed=0)
>>> t.X.shape, t.attributions.shape
((200, 5), (200, 5))
>>> batch = ObjectImages(kind="shape", size=64, seed=0).generate(8)
>>> tuple(batch.images.shape), tuple(batch.masks.shape)
((8, 1, 64, 64), (8, 64, 64))
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from calix._validation import check_choice, check_count

__all__ = [
    "GeneratingFunction", "LinearFunction", "AdditiveFunction", "InteractionFunction",
    "GeneratingModule", "StandardizedFunction", "TabularTruth", "make_linear", "make_logistic",
    "make_additive", "make_interaction", "SHAPES", "ObjectImages", "ImageBatch",
    "make_object_images", "OBJECT_KINDS", "GROUND_TRUTH_DATASETS",
]

Task = Literal["classification", "regression"]


# ====================================================================== generating functions
class GeneratingFunction:
    """A tabular generating function ``f: (m, d) -> (m,)`` with closed-form Shapley values.

    Call it on an array of shape (m, d) (numpy or torch; float64 arithmetic) to get the
    output (regression target without noise, or log-odds of class 1).
    """

    d: int

    def torch_value(self, x: Tensor) -> Tensor:
        """``f(x)`` for a tensor of shape (m, d), in x's dtype and device."""
        raise NotImplementedError

    def __call__(self, x: Any) -> np.ndarray:
        xt = torch.as_tensor(np.asarray(x, dtype=np.float64))
        if xt.ndim != 2 or xt.shape[1] != self.d:
            raise ValueError(f"x must have shape (m, {self.d}), got {tuple(xt.shape)}")
        return self.torch_value(xt).numpy()

    def shapley(self, x: Any, baseline: Any = None) -> np.ndarray:
        """Exact Shapley values of the interventional game of ``f`` at rows ``x``.

        Parameters
        ----------
        x : array-like of shape (m, d)
        baseline : None, array-like of shape (d,) or (k, d)
            One baseline ``b``: the game ``v(S) = f(x_S, b_S̄)``. Several rows (a background
            set): the game averaged over them. None: the population the generator draws
            from (the closed-form expectation over the feature distribution).

        Returns
        -------
        ndarray of shape (m, d), float64. Sums to ``f(x) − E_b f(b)`` (efficiency).
        """
        xa = np.asarray(x, dtype=np.float64)
        if xa.ndim != 2 or xa.shape[1] != self.d:
            raise ValueError(f"x must have shape (m, {self.d}), got {xa.shape}")
        if baseline is None:
            return self._population_shapley(xa)
        b = np.asarray(baseline, dtype=np.float64)
        b = b[None] if b.ndim == 1 else b
        if b.ndim != 2 or b.shape[1] != self.d or len(b) == 0:
            raise ValueError(f"baseline must have shape ({self.d},) or (k, {self.d}) with "
                             f"k >= 1, got {np.asarray(baseline).shape}")
        return self._background_shapley(xa, b)

    def _population_shapley(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _background_shapley(self, x: np.ndarray, b: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def module(self, task: Task = "classification") -> GeneratingModule:
        """The function as a torch module: logits ``(m, 2) = [0, f(x)]`` for classification
        (softmax gives ``sigmoid(f)`` for class 1), ``(m, 1) = f(x)`` for regression; ready
        for :func:`calix.wrap`."""
        return GeneratingModule(self, task)


class GeneratingModule(nn.Module):
    """A :class:`GeneratingFunction` as a torch module (float32 in, float32 out).

    Input ``(m, d)``; output logits ``(m, 2) = [0, f(x)]`` or regression values ``(m, 1)``.
    """

    def __init__(self, function: GeneratingFunction, task: Task = "classification"):
        super().__init__()
        check_choice(task, ("classification", "regression"), "task")
        self.function = function
        self.task = task
        # a parameter-free module still needs a device anchor for calix.wrap
        self.register_buffer("_anchor", torch.zeros(()))

    def forward(self, x: Tensor) -> Tensor:
        f = self.function.torch_value(x.to(torch.float64)).to(x.dtype)
        if self.task == "regression":
            return f[:, None]
        return torch.stack([torch.zeros_like(f), f], dim=1)


class LinearFunction(GeneratingFunction):
    """``f(x) = w·x + b``; the interventional Shapley value is ``w_i (x_i − b_i)``."""

    def __init__(self, weights: Any, intercept: float = 0.0, mean: Any = None):
        self.w = np.asarray(weights, dtype=np.float64)
        self.d = len(self.w)
        self.intercept = float(intercept)
        self.mean = np.zeros(self.d) if mean is None else np.asarray(mean, dtype=np.float64)

    def torch_value(self, x: Tensor) -> Tensor:
        return x @ torch.as_tensor(self.w, dtype=x.dtype, device=x.device) + self.intercept

    def _population_shapley(self, x: np.ndarray) -> np.ndarray:
        return self.w * (x - self.mean)

    def _background_shapley(self, x: np.ndarray, b: np.ndarray) -> np.ndarray:
        return self.w * (x - b.mean(axis=0))


def _phi(t: Tensor) -> Tensor:
    return torch.special.ndtr(t)


#: Shape functions of :func:`make_additive`: name -> (g, E g(Z) for Z ~ N(0, 1)).
SHAPES: dict[str, tuple[Callable[[Tensor], Tensor], float]] = {
    "linear": (lambda t: t, 0.0),
    "quadratic": (lambda t: t * t, 1.0),
    "sine": (lambda t: torch.sin(2.0 * t), 0.0),           # odd: mean 0
    "step": (lambda t: (t > 0).to(t.dtype), 0.5),
    "abs": (lambda t: t.abs(), math.sqrt(2.0 / math.pi)),
    "cosine": (lambda t: torch.cos(2.0 * t), math.exp(-2.0)),  # E cos(ωZ) = exp(−ω²/2)
    "tanh": (lambda t: torch.tanh(2.0 * t), 0.0),          # odd: mean 0
    "zero": (lambda t: torch.zeros_like(t), 0.0),
}


class AdditiveFunction(GeneratingFunction):
    """``f(x) = Σ_i c_i g_i(x_i) + b`` with shape functions ``g_i`` from :data:`SHAPES`.

    The interventional Shapley value for baseline ``b`` is ``c_i (g_i(x_i) − g_i(b_i))``; over
    the population (standard normal marginals) it is the centred shape value
    ``c_i (g_i(x_i) − E g_i(Z))``.
    """

    def __init__(self, shapes: list[str] | tuple[str, ...], coef: Any, intercept: float = 0.0):
        for s in shapes:
            check_choice(s, SHAPES, "shape", listed=sorted(SHAPES))
        self.shapes = tuple(shapes)
        self.coef = np.asarray(coef, dtype=np.float64)
        if len(self.coef) != len(self.shapes):
            raise ValueError(f"{len(self.coef)} coefficients for {len(self.shapes)} shapes")
        self.d = len(self.shapes)
        self.intercept = float(intercept)

    def terms(self, x: Tensor) -> Tensor:
        """``c_i g_i(x_i)`` of shape (m, d)."""
        cols = [SHAPES[s][0](x[:, i]) for i, s in enumerate(self.shapes)]
        return torch.stack(cols, 1) * torch.as_tensor(self.coef, dtype=x.dtype, device=x.device)

    def torch_value(self, x: Tensor) -> Tensor:
        return self.terms(x).sum(1) + self.intercept

    def _population_shapley(self, x: np.ndarray) -> np.ndarray:
        means = self.coef * np.array([SHAPES[s][1] for s in self.shapes])
        return self.terms(torch.as_tensor(x)).numpy() - means

    def _background_shapley(self, x: np.ndarray, b: np.ndarray) -> np.ndarray:
        ref = self.terms(torch.as_tensor(b)).numpy().mean(axis=0)
        return self.terms(torch.as_tensor(x)).numpy() - ref


class InteractionFunction(GeneratingFunction):
    """``f(x) = w·x + Σ_k a_k x_{i_k} x_{j_k} + b``: main effects and pairwise products.

    For one baseline ``b`` a product ``a x_i x_j`` gives ``φ_i = a/2 (x_i − b_i)(x_j + b_j)``
    (and symmetrically for j): its pure pairwise part ``a (x_i − b_i)(x_j − b_j)`` is split
    equally, its main parts ``a (x_i − b_i) b_j`` go to one feature each. Over a background or
    population the game is the average over baselines, so ``φ_i = a/2 (x_i x_j + x_i E z_j −
    x_j E z_i − E z_i z_j)``. :meth:`interaction_index` gives the Shapley interaction index
    of each pair, ``a (x_i − b_i)(x_j − b_j)`` for one baseline (every term has order ≤ 2).
    """

    def __init__(self, weights: Any, pairs: Any, pair_coef: Any, intercept: float = 0.0,
                 mean: Any = None, second_moment: Any = None):
        self.w = np.asarray(weights, dtype=np.float64)
        self.d = len(self.w)
        self.pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
        self.a = np.asarray(pair_coef, dtype=np.float64)
        if len(self.a) != len(self.pairs):
            raise ValueError(f"{len(self.a)} coefficients for {len(self.pairs)} pairs")
        if len(self.pairs) and (self.pairs.min() < 0 or self.pairs.max() >= self.d
                                or (self.pairs[:, 0] == self.pairs[:, 1]).any()):
            raise ValueError(f"pairs must hold two different feature indices in [0, {self.d}), "
                             f"got {self.pairs.tolist()}")
        self.intercept = float(intercept)
        self.mean = np.zeros(self.d) if mean is None else np.asarray(mean, dtype=np.float64)
        # E z z^T of the population (identity: independent standard normal features)
        self.second_moment = (np.eye(self.d) if second_moment is None
                              else np.asarray(second_moment, dtype=np.float64))

    def torch_value(self, x: Tensor) -> Tensor:
        out = x @ torch.as_tensor(self.w, dtype=x.dtype, device=x.device) + self.intercept
        if len(self.pairs):
            i, j = (torch.as_tensor(self.pairs[:, k], device=x.device) for k in (0, 1))
            a = torch.as_tensor(self.a, dtype=x.dtype, device=x.device)
            out = out + (x[:, i] * x[:, j] * a).sum(1)
        return out

    def _shapley(self, x: np.ndarray, m: np.ndarray, mm: np.ndarray) -> np.ndarray:
        """Shapley values for a baseline distribution of mean ``m`` and second moments
        ``mm`` (the game is linear in the baseline's law, and f has degree 2)."""
        phi = self.w * (x - m)
        for (i, j), a in zip(self.pairs, self.a, strict=True):
            phi[:, i] += a / 2 * (x[:, i] * x[:, j] + x[:, i] * m[j] - m[i] * x[:, j] - mm[i, j])
            phi[:, j] += a / 2 * (x[:, i] * x[:, j] + x[:, j] * m[i] - m[j] * x[:, i] - mm[i, j])
        return phi

    def _population_shapley(self, x: np.ndarray) -> np.ndarray:
        return self._shapley(x, self.mean, self.second_moment)

    def _background_shapley(self, x: np.ndarray, b: np.ndarray) -> np.ndarray:
        return self._shapley(x, b.mean(axis=0), b.T @ b / len(b))

    def interaction_index(self, x: Any, baseline: Any) -> np.ndarray:
        """Shapley interaction index of every pair in :attr:`pairs` for one baseline:
        ``a_k (x_i − b_i)(x_j − b_j)``, shape (m, n_pairs)."""
        xa = np.asarray(x, dtype=np.float64)
        b = np.asarray(baseline, dtype=np.float64).reshape(self.d)
        i, j = self.pairs[:, 0], self.pairs[:, 1]
        return self.a * (xa[:, i] - b[i]) * (xa[:, j] - b[j])


# ====================================================================== tabular generators
@dataclass
class TabularTruth:
    """A generated tabular set and its true attributions.

    Attributes
    ----------
    X : ndarray of shape (n, d), float32
    y : ndarray of shape (n,)
        int64 class indices (classification) or float32 targets (regression).
    attributions : ndarray of shape (n, d), float64
        The interventional Shapley values of ``function`` at every row over the population
        (see the module docstring); they sum to ``f(x) − E f(X)`` on every row.
    function : GeneratingFunction
        The generating function ``f`` (log-odds of class 1 for classification).
    task : {"classification", "regression"}
    relevant : ndarray of shape (d,), bool
        Features statistically associated with the label (False for noise features and
        for the suppressor, whose Shapley value is nonetheless nonzero).
    feature_names : list of str
    description : str
    """

    X: np.ndarray
    y: np.ndarray
    attributions: np.ndarray
    function: GeneratingFunction
    task: Task
    relevant: np.ndarray
    feature_names: list[str]
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def module(self) -> GeneratingModule:
        """The generating function as a torch module (see :meth:`GeneratingFunction.module`)."""
        return self.function.module(self.task)


def _check_common(n: Any, d: Any, task: Any, noise: float, *, min_d: int = 1) -> tuple[int, int]:
    n = check_count(n, "n")
    d = check_count(d, "d", minimum=min_d)
    check_count(n, "n", width=d)
    check_choice(task, ("classification", "regression"), "task")
    if not (np.isfinite(noise) and noise >= 0):
        raise ValueError(f"noise must be a finite number >= 0, got {noise}")
    return n, d


def _scale(task: Task, noise: float) -> float:
    """The factor folded into a classifier's generating function so that it *is* the log-odds
    of ``y ~ Bernoulli(sigmoid(f_0 / noise))``: ``1 / noise`` (1 for regression and for the
    deterministic labels of ``noise=0``)."""
    return 1.0 / noise if task == "classification" and noise > 0 else 1.0


def _labels(f: np.ndarray, task: Task, noise: float, rng: np.random.Generator) -> np.ndarray:
    """Regression: ``f + noise·N(0, 1)``. Classification: ``y ~ Bernoulli(sigmoid(f))`` (``f``
    already divided by ``noise``, see :func:`_scale`), or with ``noise=0`` the deterministic
    ``y = [f > 0]``."""
    if task == "regression":
        return (f + noise * rng.standard_normal(len(f))).astype(np.float32)
    if noise == 0:
        return (f > 0).astype(np.int64)
    return (rng.random(len(f)) < 1 / (1 + np.exp(-f))).astype(np.int64)


def _normal_features(rng: np.random.Generator, n: int, d: int, correlation: float) -> np.ndarray:
    """Standard normal features with equal pairwise correlation ``correlation``."""
    lo = -1 / (d - 1) if d > 1 else -np.inf
    if not (np.isfinite(correlation) and lo < correlation < 1):
        raise ValueError(f"correlation must lie in (-1/(d-1), 1) = ({lo:.3g}, 1) for d={d}, "
                         f"got {correlation}")
    z = rng.standard_normal((n, d))
    if correlation == 0:
        return z
    # unit variances, equal correlations: the Cholesky factor of (1 − ρ) I + ρ 11ᵀ
    cov = np.full((d, d), correlation) + (1 - correlation) * np.eye(d)
    return z @ np.linalg.cholesky(cov).T


def make_linear(
    n: int = 1000,
    d: int = 8,
    *,
    n_informative: int | None = None,
    task: Task = "regression",
    noise: float = 0.1,
    correlation: float = 0.0,
    seed: int = 0,
) -> TabularTruth:
    """Linear (or logistic) data with known attributions ``w ⊙ (x − E x)``.

    Features are standard normal with equal pairwise correlation ``correlation``; the first
    ``n_informative`` weights are drawn from ±U(0.5, 2) and the rest are 0; ``f(x) = w·x + b``.
    Regression: ``y = f(x) + noise·ε``. Classification (the synthetic setting of OpenXAI,
    Agarwal et al., NeurIPS 2022 Datasets and Benchmarks): ``y ~ Bernoulli(sigmoid(f(x)))``,
    ``f`` the log-odds, with the drawn weights divided by ``noise`` (a temperature: smaller is
    sharper); ``noise=0`` keeps them and labels deterministically, ``y = [f(x) > 0]``.

    True attribution: the Shapley value of the interventional game of ``f`` on the output
    (log-odds) scale, ``w_i (x_i − b_i)`` for a baseline ``b``, here the population mean 0.
    It holds whatever the correlation, because the interventional game breaks the dependence
    between features (observational / conditional Shapley values would differ); on the
    probability scale the attribution is *not* linear.

    Returns
    -------
    TabularTruth; ``function`` is a :class:`LinearFunction`.
    """
    n, d = _check_common(n, d, task, noise)
    k = d if n_informative is None else check_count(n_informative, "n_informative", minimum=0)
    if k > d:
        raise ValueError(f"n_informative must be <= d={d}, got {k}")
    rng = np.random.default_rng(seed)
    w = np.zeros(d)
    w[:k] = rng.choice([-1.0, 1.0], size=k) * rng.uniform(0.5, 2.0, size=k)
    fn = LinearFunction(w * _scale(task, noise), intercept=0.0)
    X = _normal_features(rng, n, d, correlation).astype(np.float32)  # the truth of these rows
    y = _labels(fn(X), task, noise, rng)
    kind = "logistic" if task == "classification" else "linear"
    return TabularTruth(
        X=X, y=y, attributions=fn.shapley(X), function=fn, task=task,
        relevant=w != 0, feature_names=[f"x{i}" for i in range(d)],
        description=f"{kind} model on {d} standard normal features ({k} informative, "
                    f"correlation {correlation}); truth w ⊙ (x − 0) on the "
                    f"{'log-odds' if task == 'classification' else 'output'} scale",
    )


def make_logistic(n: int = 1000, d: int = 8, *, n_informative: int | None = None,
                  noise: float = 1.0, correlation: float = 0.0, seed: int = 0) -> TabularTruth:
    """:func:`make_linear` with ``task="classification"``: a logistic model whose log-odds is
    ``w·x``; the true attribution is ``w ⊙ x`` on the log-odds scale."""
    return make_linear(n, d, n_informative=n_informative, task="classification", noise=noise,
                       correlation=correlation, seed=seed)


_DEFAULT_SHAPES = ("linear", "quadratic", "sine", "step", "abs", "cosine", "tanh", "zero")


def make_additive(
    n: int = 1000,
    d: int = 8,
    *,
    shapes: tuple[str, ...] | None = None,
    task: Task = "classification",
    noise: float = 0.25,
    seed: int = 0,
) -> TabularTruth:
    """Additive data ``f(x) = Σ_i c_i g_i(x_i) + b`` with known shape functions.

    Features are independent standard normal; ``shapes`` names one :data:`SHAPES` entry per
    feature (default: linear, quadratic, sine, step, abs, cosine, tanh, zero, repeated);
    coefficients ``c_i`` are drawn from ±U(0.75, 1.5) and the intercept centres ``f`` so that
    ``E f(X) = 0``. Labels as in :func:`make_linear` (for classification the coefficients and
    intercept are divided by ``noise``, so ``f`` is the log-odds).

    True attribution: the centred shape value ``c_i (g_i(x_i) − E g_i(Z))``, ``Z ~ N(0, 1)``
    (expectations in closed form), which is the interventional Shapley value of ``f`` over
    the feature distribution: an additive game gives each feature exactly its own term.
    For one baseline ``b`` it is ``c_i (g_i(x_i) − g_i(b_i))`` (:meth:`~GeneratingFunction.
    shapley`).

    Returns
    -------
    TabularTruth; ``function`` is an :class:`AdditiveFunction`.
    """
    n, d = _check_common(n, d, task, noise)
    if shapes is None:
        shapes = tuple(_DEFAULT_SHAPES[i % len(_DEFAULT_SHAPES)] for i in range(d))
    shapes = tuple(shapes)
    if len(shapes) != d:
        raise ValueError(f"shapes must name one shape per feature ({d}), got {len(shapes)}")
    rng = np.random.default_rng(seed)
    coef = rng.choice([-1.0, 1.0], size=d) * rng.uniform(0.75, 1.5, size=d)
    mean_f = float(sum(c * SHAPES[s][1] for c, s in zip(coef, shapes, strict=True)))
    k = _scale(task, noise)
    fn = AdditiveFunction(shapes, coef * k, intercept=-mean_f * k)
    X = rng.standard_normal((n, d)).astype(np.float32)
    y = _labels(fn(X), task, noise, rng)
    return TabularTruth(
        X=X, y=y, attributions=fn.shapley(X), function=fn, task=task,
        relevant=np.array([s != "zero" for s in shapes]),
        feature_names=[f"x{i}_{s}" for i, s in enumerate(shapes)],
        description=f"additive model with shapes {list(shapes)}; truth c_i (g_i(x_i) − E g_i)",
    )


def make_interaction(
    n: int = 1000,
    d: int = 8,
    *,
    task: Task = "classification",
    interaction: float = 1.5,
    suppressor_noise: float = 1.0,
    noise: float = 0.25,
    seed: int = 0,
) -> TabularTruth:
    """Data with two known pairwise interactions and a suppressor feature.

    Features (``d >= 6``; all means 0):

    - ``x0, x1``: a pure interaction, ``a x0 x1`` (``a = interaction``), no main effects;
    - ``x2, x3``: main effect on ``x2`` and an interaction ``−a x2 x3``;
    - ``x4 = s + η``: the signal ``s ~ N(0, 1)`` corrupted by ``η ~ N(0, suppressor_noise²)``;
    - ``x5 = η``: the suppressor, independent of the label, yet ``f`` uses it to cancel the
      noise in ``x4`` (Haufe et al. 2014, NeuroImage 87; Clark et al. 2024, Machine Learning
      113): ``f`` holds ``w4 (x4 − x5) = w4 s``;
    - ``x6, ...``: noise features with no effect.

    ``f(x) = (1.2 x2 + w4 (x4 − x5) + a x0 x1 − a x2 x3) / noise`` with ``w4 = 1.5`` for
    classification (the log-odds; without ``/ noise`` for regression and ``noise=0``); labels
    as in :func:`make_linear`.

    True attribution: the interventional Shapley value of ``f`` over the population,
    ``φ_i = w_i x_i + a_ij/2 (x_i x_j − E x_i x_j)`` per pair term (closed form of
    :class:`InteractionFunction`, here with independent features apart from ``x4, x5``). The
    suppressor gets ``φ_5 = −w4 x5 ≠ 0`` although ``relevant[5]`` is False: a correct
    explanation of the *function* credits it, an explanation of the *data* should not.
    ``extra["interactions"]`` holds the Shapley interaction index of the two pairs at the
    baseline 0, ``a x_i x_j``, shape (n, 2).

    Returns
    -------
    TabularTruth; ``function`` is an :class:`InteractionFunction`.
    """
    n, d = _check_common(n, d, task, noise, min_d=6)
    if not (np.isfinite(suppressor_noise) and suppressor_noise > 0):
        raise ValueError(f"suppressor_noise must be a finite number > 0, got {suppressor_noise}")
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, d))
    s, eta = z[:, 4].copy(), suppressor_noise * z[:, 5]
    X = z.copy()
    X[:, 4] = s + eta
    X[:, 5] = eta
    X = X.astype(np.float32)
    w = np.zeros(d)
    w[2], w[4], w[5] = 1.2, 1.5, -1.5
    a = float(interaction)
    second = np.eye(d)
    second[4, 4] = 1 + suppressor_noise**2
    second[5, 5] = second[4, 5] = second[5, 4] = suppressor_noise**2
    k = _scale(task, noise)
    fn = InteractionFunction(w * k, [(0, 1), (2, 3)], [a * k, -a * k], second_moment=second)
    y = _labels(fn(X), task, noise, rng)
    relevant = np.zeros(d, dtype=bool)
    relevant[[0, 1, 2, 3, 4]] = True
    return TabularTruth(
        X=X, y=y, attributions=fn.shapley(X), function=fn, task=task,
        relevant=relevant,
        feature_names=["x0_pair_a", "x1_pair_a", "x2_main_pair_b", "x3_pair_b", "x4_signal",
                       "x5_suppressor"] + [f"x{i}_noise" for i in range(6, d)],
        description=f"pairwise interactions (0,1), (2,3) (a={a}) and a suppressor x5 that "
                    f"cancels the noise (std {suppressor_noise}) in x4",
        extra={"interactions": fn.interaction_index(X, np.zeros(d))},
    )


# ====================================================================== image generators
_SHAPE_KINDS = ("disk", "square", "triangle", "cross", "ring", "diamond")
_TEXTURE_KINDS = ("hstripes", "vstripes", "checker", "dots", "diagonal")
_DIGIT_KINDS = tuple(str(k) for k in range(10))

#: Object kinds per family, and the default deciding objects and distractors.
OBJECT_KINDS: dict[str, dict[str, tuple[str, ...]]] = {
    "shape": {"kinds": _SHAPE_KINDS, "objects": ("disk", "square", "triangle"),
              "distractors": ("cross", "ring", "diamond")},
    "texture": {"kinds": _TEXTURE_KINDS, "objects": ("hstripes", "vstripes", "checker"),
                "distractors": ("dots", "diagonal")},
    "digit": {"kinds": _DIGIT_KINDS, "objects": ("0", "1", "2"),
              "distractors": ("3", "4", "5", "6", "7", "8", "9")},
}
_ALL_KINDS = {k: fam for fam, v in OBJECT_KINDS.items() for k in v["kinds"]}


@dataclass
class ImageBatch:
    """A batch of generated images with their ground truth.

    Attributes
    ----------
    images : Tensor of shape (b, c, h, w), float32
    labels : Tensor of shape (b,), int64
    masks : Tensor of shape (b, h, w), bool -- the pixels of the deciding object(s): all the
        class evidence lies here (empty for an image whose class is an absence, in the XOR
        and AND variants).
    suppressor_masks : Tensor of shape (b, h, w), bool, or None -- the suppressor region
        (``task="suppressor"`` only).
    null_images : Tensor of shape (b, c, h, w) or None -- with ``with_null=True``: the same
        image without its deciding object(s) and with fresh pixel noise everywhere, so
        ``torch.where(region, null_images, images)`` removes the content of any region and
        replaces it by a draw from the class-independent background (the suppressor's offset
        kept).
    index : Tensor of shape (b,), int64 -- each image's position in the generator's stream.
    """

    images: Tensor
    labels: Tensor
    masks: Tensor
    suppressor_masks: Tensor | None = None
    null_images: Tensor | None = None
    index: Tensor | None = None

    def __len__(self) -> int:
        return len(self.labels)


def _shape_template(kind: str, s: int) -> np.ndarray:
    c = (np.arange(s) + 0.5) / s * 2 - 1  # pixel centres in (−1, 1)
    v, u = np.meshgrid(c, c, indexing="ij")  # v down, u right
    r = np.hypot(u, v)
    if kind == "disk":
        m = r <= 0.9
    elif kind == "square":
        m = (np.abs(u) <= 0.72) & (np.abs(v) <= 0.72)
    elif kind == "triangle":
        m = (v >= -0.85) & (v <= 0.85) & (np.abs(u) <= (v + 0.85) / 1.7 * 0.95)
    elif kind == "cross":
        m = ((np.abs(u) <= 0.3) & (np.abs(v) <= 0.92)) | ((np.abs(v) <= 0.3) & (np.abs(u) <= 0.92))
    elif kind == "ring":
        m = (r <= 0.95) & (r >= 0.55)
    else:  # diamond
        m = np.abs(u) + np.abs(v) <= 0.95
    return m.astype(np.float32)


def _texture_template(kind: str, s: int) -> np.ndarray:
    period = max(2, s // 4)
    half = max(1, period // 2)
    i, j = np.meshgrid(np.arange(s), np.arange(s), indexing="ij")
    if kind == "hstripes":
        on = (i % period) < half
    elif kind == "vstripes":
        on = (j % period) < half
    elif kind == "checker":
        on = ((i // half) + (j // half)) % 2 == 0
    elif kind == "dots":
        ci, cj = i % period - (period - 1) / 2, j % period - (period - 1) / 2
        on = np.hypot(ci, cj) <= max(0.6, period / 4)
    else:  # diagonal
        on = ((i + j) % period) < half
    # the patch is opaque: the whole square is the object, its pattern at two levels
    return np.where(on, 1.0, 0.3).astype(np.float32)


def _interp_matrix(n_out: int, n_in: int) -> np.ndarray:
    """Bilinear interpolation weights (n_out, n_in), align-corners style."""
    pos = np.linspace(0, n_in - 1, n_out)
    lo = np.clip(np.floor(pos).astype(int), 0, n_in - 2)
    frac = pos - lo
    m = np.zeros((n_out, n_in))
    m[np.arange(n_out), lo] = 1 - frac
    m[np.arange(n_out), lo + 1] = frac
    return m


class ObjectImages:
    """Images whose class is decided by objects at known pixels (a seeded stream).

    Image ``i`` of the stream depends only on ``(seed, i)``: the same however the stream is
    cut into batches. Each image is a smooth random texture (amplitude ``texture_std``) with
    distractor objects of non-deciding kinds, the deciding object(s), and i.i.d. pixel noise
    (``noise_std``). Objects are ``object_size`` px squares holding a shape, a texture patch
    or a digit glyph (scikit-learn's 8×8 digits rescaled bilinearly and thresholded), each
    with its own random intensity per channel (``polarity``), so colour says nothing about
    class.
    Distractors never overlap a deciding object's square (nor the suppressor region).

    Parameters
    ----------
    kind : {"shape", "texture", "digit"}
        The object family (:data:`OBJECT_KINDS`).
    task : {"object", "xor", "and", "suppressor"}
        ``"object"``: one deciding object per image, class = its kind (one class per entry of
        ``objects``). ``"xor"`` / ``"and"``: ``objects`` names two kinds A and B, each present
        or not (probability 1/2 for XOR, √½ for AND, so both classes are equally likely);
        class 1 = XOR / AND of the two presences. ``"suppressor"``: one deciding object of a
        random kind from ``objects`` (independent of the class), with a one-pixel rim at a
        fixed intensity that marks it; class 1 ("light") when its interior is brighter than
        the suppressor region, a band of ``object_size // 2`` rows along the top edge. Both
        carry the same random offset ``η ~ N(0, 0.6²)``: the interior is ``η ± 0.5``, the band
        ``η`` plus pixel noise, so the band is independent of the class but must be subtracted
        (interior alone: about 80 % accuracy at best; with the band: near 100 %).
    objects : tuple of str or None
        Deciding kinds (default: the family's ``objects`` in :data:`OBJECT_KINDS`; for XOR /
        AND its first two).
    distractors : tuple of str or None
        Kinds of the distractor objects (default: the family's ``distractors``); none may be
        a deciding kind.
    size : int
        Image height and width (square images).
    channels : int
        1 (grey) or 3 (colour).
    object_size : int or None
        Side of an object's square (default ``max(8, size // 4)``); at least 5 (8 for
        digits), and ``size`` must be at least twice it (three times for XOR / AND).
    n_distractors : int
        Distractors per image (fewer when they do not fit).
    texture_std, noise_std : float
        Amplitude of the smooth background texture and of the i.i.d. pixel noise.
    polarity : {"bright", "both"}
        Object intensities U(0.6, 1) per channel, or ±U(0.6, 1) with a random sign (harder to
        learn; either way independent of the class).
    seed : int

    Example
    -------
    >>> gen = ObjectImages(kind="digit", size=224, seed=0)
    >>> for batch in gen.batches(1000, batch_size=64):   # doctest: +SKIP
    ...     train_step(batch.images, batch.labels)
    """

    def __init__(
        self,
        *,
        kind: str = "shape",
        task: str = "object",
        objects: tuple[str, ...] | None = None,
        distractors: tuple[str, ...] | None = None,
        size: int = 64,
        channels: int = 1,
        object_size: int | None = None,
        n_distractors: int = 3,
        texture_std: float = 0.25,
        noise_std: float = 0.1,
        polarity: str = "bright",
        seed: int = 0,
    ):
        check_choice(kind, OBJECT_KINDS, "kind", listed=sorted(OBJECT_KINDS))
        check_choice(task, ("object", "xor", "and", "suppressor"), "task")
        fam = OBJECT_KINDS[kind]
        if objects is None:
            objects = fam["objects"][:2] if task in ("xor", "and") else fam["objects"]
        if distractors is None:
            distractors = tuple(k for k in fam["distractors"] if k not in objects)
        objects, distractors = tuple(objects), tuple(distractors)
        for k in objects + distractors:
            if k not in _ALL_KINDS:
                raise ValueError(f"unknown object kind {k!r}; known kinds: shapes "
                                 f"{list(_SHAPE_KINDS)}, textures {list(_TEXTURE_KINDS)}, "
                                 f"digits {list(_DIGIT_KINDS)}")
        if len(set(objects)) != len(objects):
            raise ValueError(f"objects must be distinct, got {objects}")
        if task in ("xor", "and") and len(objects) != 2:
            raise ValueError(f"task={task!r} needs exactly two objects, got {objects}")
        if task == "object" and len(objects) < 2:
            raise ValueError(f"task='object' needs at least two objects (one per class), "
                             f"got {objects}")
        both = sorted(set(objects) & set(distractors))
        if both:
            raise ValueError(f"distractors must not be deciding objects, but {both} are both; "
                             "drop them from distractors")
        self.kind, self.task = kind, task
        self.objects, self.distractors = objects, distractors
        self.size = check_count(size, "size")
        self.channels = check_choice(channels, (1, 3), "channels")
        s = max(8, self.size // 4) if object_size is None else check_count(
            object_size, "object_size")
        min_obj = 8 if any(_ALL_KINDS[k] == "digit" for k in objects + distractors) else 5
        if s < min_obj:
            raise ValueError(f"object_size must be >= {min_obj} px for these kinds, got {s}")
        factor = 3 if task in ("xor", "and") else 2
        if self.size < factor * s:
            raise ValueError(
                f"size={self.size} is too small for {s}-px objects: task={task!r} needs "
                f"size >= {factor * s}; use a larger size or a smaller object_size")
        self.object_size = s
        self.n_distractors = check_count(n_distractors, "n_distractors", minimum=0)
        if self.n_distractors and not distractors:
            raise ValueError("n_distractors > 0 but no distractor kinds are left; pass "
                             "distractors=... or n_distractors=0")
        for name, v in (("texture_std", texture_std), ("noise_std", noise_std)):
            if not (np.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {v}")
        self.texture_std, self.noise_std = float(texture_std), float(noise_std)
        self.polarity = check_choice(polarity, ("bright", "both"), "polarity")
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
        self.seed = int(seed)
        self._grid = 6
        self._interp = _interp_matrix(self.size, self._grid)
        self._templates: dict[str, np.ndarray] = {}
        self._glyphs: dict[str, np.ndarray] | None = None

    # -------------------------------------------------------------- names
    @property
    def class_names(self) -> list[str]:
        """One name per class."""
        if self.task == "object":
            return list(self.objects)
        if self.task == "suppressor":
            return ["dark", "light"]
        return ["false", "true"]

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.size, self.size)

    def __repr__(self) -> str:
        return (f"ObjectImages(kind={self.kind!r}, task={self.task!r}, objects={self.objects}, "
                f"size={self.size}, channels={self.channels}, object_size={self.object_size}, "
                f"seed={self.seed})")

    # -------------------------------------------------------------- templates
    def _template(self, kind: str, rng: np.random.Generator) -> np.ndarray:
        """An (s, s) float template in [0, 1] (0 = not part of the object)."""
        fam = _ALL_KINDS[kind]
        if fam == "digit":
            glyphs = self._digit_glyphs()[kind]
            return glyphs[rng.integers(len(glyphs))]
        if kind not in self._templates:
            s = self.object_size
            self._templates[kind] = (_shape_template(kind, s) if fam == "shape"
                                     else _texture_template(kind, s))
        return self._templates[kind]

    def _digit_glyphs(self) -> dict[str, np.ndarray]:
        if self._glyphs is None:
            from sklearn.datasets import load_digits

            d = load_digits()
            s = self.object_size
            img = torch.as_tensor(d.images / 16.0, dtype=torch.float32)[:, None]
            big = nn.functional.interpolate(img, size=(s, s), mode="bilinear",
                                            align_corners=False)[:, 0]
            glyphs = (big > 0.5).numpy().astype(np.float32)
            self._glyphs = {str(k): glyphs[d.target == k] for k in range(10)}
        return self._glyphs

    # -------------------------------------------------------------- one image
    def _colour(self, rng: np.random.Generator) -> np.ndarray:
        """One object's intensity per channel."""
        mag = rng.uniform(0.6, 1.0, size=self.channels)
        return mag if self.polarity == "bright" else rng.choice([-1.0, 1.0], size=mag.shape) * mag

    def _render(self, i: int, with_null: bool) -> tuple[np.ndarray, int, np.ndarray,
                                                        np.ndarray | None, np.ndarray | None]:
        rng = np.random.default_rng([self.seed, i])
        c, h, s = self.channels, self.size, self.object_size
        g = rng.standard_normal((c, self._grid, self._grid))
        base = self.texture_std * np.einsum("hg,cgk,wk->chw", self._interp, g, self._interp)
        taken: list[tuple[int, int]] = []  # top-left corners of deciding squares
        top = 0
        supp = None
        label: int
        deciding: list[tuple[str, np.ndarray | None]] = []  # (kind, colour or None)
        if self.task == "object":
            label = int(rng.integers(len(self.objects)))
            deciding.append((self.objects[label], None))
        elif self.task in ("xor", "and"):
            p = 0.5 if self.task == "xor" else math.sqrt(0.5)
            present = rng.random(2) < p
            label = int(present[0] ^ present[1]) if self.task == "xor" else int(present.all())
            deciding += [(k, None) for k, on in zip(self.objects, present, strict=True) if on]
        else:  # suppressor
            label = int(rng.integers(2))
            eta = 0.6 * rng.standard_normal()
            top = max(1, s // 2)
            supp = np.zeros((h, h), dtype=bool)
            supp[:top] = True
            base[:, :top] = eta
            interior = eta + (0.5 if label else -0.5)
            deciding.append((self.objects[int(rng.integers(len(self.objects)))],
                             np.full(c, interior)))
        # place deciding objects on non-overlapping squares below the suppressor band
        for _ in deciding:
            for _attempt in range(1000):
                y0, x0 = int(rng.integers(top, h - s + 1)), int(rng.integers(0, h - s + 1))
                if all(abs(y0 - a) >= s or abs(x0 - b) >= s for a, b in taken):
                    break
            else:  # pragma: no cover - size >= 3 s always leaves room for two squares
                raise RuntimeError("could not place the deciding objects")
            taken.append((y0, x0))
        img = base.copy()
        # distractors first (deciding objects never overlap them, so order does not matter)
        for _ in range(self.n_distractors):
            kind = self.distractors[int(rng.integers(len(self.distractors)))]
            tpl = self._template(kind, rng)
            col = self._colour(rng)
            for _attempt in range(20):
                y0, x0 = int(rng.integers(top, h - s + 1)), int(rng.integers(0, h - s + 1))
                if all(abs(y0 - a) >= s or abs(x0 - b) >= s for a, b in taken):
                    _paste(img, tpl, col, y0, x0)
                    break
        null = img.copy() if with_null else None
        mask = np.zeros((h, h), dtype=bool)
        for (kind, col), (y0, x0) in zip(deciding, taken, strict=True):
            tpl = self._template(kind, rng)
            if col is None:
                _paste(img, tpl, self._colour(rng), y0, x0)
            else:  # suppressor: interior at η ± 0.5, a rim at a fixed intensity marks it
                on = tpl > 0
                rim = on & ~_erode(on)
                vals = np.where(rim, 1.5, col[:, None, None]) * on
                _paste(img, on.astype(np.float32), np.ones(c), y0, x0, values=vals)
            mask[y0:y0 + s, x0:x0 + s] |= tpl > 0
        img += self.noise_std * rng.standard_normal(img.shape)
        if null is not None:
            null += self.noise_std * rng.standard_normal(null.shape)
        return img.astype(np.float32), label, mask, supp, (
            None if null is None else null.astype(np.float32))

    # -------------------------------------------------------------- streams
    def batches(self, n: int, *, batch_size: int = 256, start: int = 0,
                with_null: bool = False) -> Iterator[ImageBatch]:
        """Yield images ``start, ..., start + n − 1`` of the stream in batches.

        Memory holds one batch at a time (``batch_size`` images), whatever ``n``.

        Parameters
        ----------
        n : int -- images in all (>= 1).
        batch_size : int -- images per batch (the last may be smaller).
        start : int -- index of the first image (to continue a stream or split it).
        with_null : bool -- also return :attr:`ImageBatch.null_images`.
        """
        n = check_count(n, "n")
        batch_size = check_count(batch_size, "batch_size", width=self.channels * self.size**2)
        start = check_count(start, "start", minimum=0)
        for b0 in range(start, start + n, batch_size):
            idx = range(b0, min(b0 + batch_size, start + n))
            parts = [self._render(i, with_null) for i in idx]
            yield ImageBatch(
                images=torch.from_numpy(np.stack([p[0] for p in parts])),
                labels=torch.tensor([p[1] for p in parts], dtype=torch.int64),
                masks=torch.from_numpy(np.stack([p[2] for p in parts])),
                suppressor_masks=(torch.from_numpy(np.stack([p[3] for p in parts]))
                                  if self.task == "suppressor" else None),
                null_images=(torch.from_numpy(np.stack([p[4] for p in parts]))
                             if with_null else None),
                index=torch.arange(idx.start, idx.stop, dtype=torch.int64),
            )

    def generate(self, n: int, *, start: int = 0, with_null: bool = False) -> ImageBatch:
        """Images ``start, ..., start + n − 1`` in one :class:`ImageBatch` (for small n; use
        :meth:`batches` for large sets). Equal to the concatenated batches."""
        n = check_count(n, "n", width=self.channels * self.size**2 * (2 if with_null else 1))
        parts = list(self.batches(n, batch_size=min(n, 256), start=start, with_null=with_null))
        if len(parts) == 1:
            return parts[0]

        def cat(name: str) -> Tensor | None:
            vals = [getattr(p, name) for p in parts]
            return None if vals[0] is None else torch.cat(vals)

        return ImageBatch(**{k: cat(k) for k in ("images", "labels", "masks",
                                                  "suppressor_masks", "null_images", "index")})


def _erode(m: np.ndarray) -> np.ndarray:
    """4-neighbour binary erosion (outside counts as off)."""
    p = np.pad(m, 1)
    return m & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]


def _paste(img: np.ndarray, tpl: np.ndarray, colour: np.ndarray, y0: int, x0: int,
           values: np.ndarray | None = None) -> None:
    """Draw template ``tpl`` (s, s) at (y0, x0): pixels with tpl > 0 become ``colour·tpl``
    (or ``values`` (c, s, s))."""
    s = tpl.shape[0]
    on = tpl > 0
    region = img[:, y0:y0 + s, x0:x0 + s]
    new = colour[:, None, None] * tpl[None] if values is None else values
    region[:, on] = new[:, on]


def make_object_images(n: int, *, seed: int = 0, with_null: bool = False,
                       **kwargs: Any) -> ImageBatch:
    """``ObjectImages(seed=seed, **kwargs).generate(n)``: a small set in one batch."""
    return ObjectImages(seed=seed, **kwargs).generate(n, with_null=with_null)


# ====================================================================== registered datasets
def _split(y: np.ndarray, task: Task, seed: int) -> dict[str, np.ndarray]:
    """60/20/20 split indices, stratified for classification (as :func:`calix.data.
    from_arrays` splits)."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    strat = y if task == "classification" else None
    tr, rest = train_test_split(idx, train_size=0.6, random_state=seed, stratify=strat)
    va, te = train_test_split(rest, test_size=0.5, random_state=seed,
                              stratify=None if strat is None else y[rest])
    return {"train": tr, "val": va, "test": te}


def _dataset(name: str, task: Task, X: np.ndarray, y: np.ndarray, seed: int,
             truth: dict[str, np.ndarray], *, feature_names: list[str], class_names: list[str],
             description: str, extra: dict[str, Any], standardize: bool) -> Any:
    """A calix Dataset with 60/20/20 splits fixed by ``seed``; ``extra[key]`` holds each
    per-row truth array split alike, as ``{"train": ..., "val": ..., "test": ...}``."""
    from calix.data import Dataset

    sp = _split(y, task, seed)
    raw_mean, raw_std = X[sp["train"]].mean(axis=0), X[sp["train"]].std(axis=0)
    if standardize:
        X = ((X - raw_mean) / np.where(raw_std > 0, raw_std, 1.0)).astype(np.float32)
    tr = X[sp["train"]]
    for key, arr in truth.items():
        extra[key] = {k: arr[v] for k, v in sp.items()}
    return Dataset(
        name=name, task=task,
        X_train=tr, y_train=y[sp["train"]], X_val=X[sp["val"]], y_val=y[sp["val"]],
        X_test=X[sp["test"]], y_test=y[sp["test"]],
        feature_names=feature_names, class_names=class_names,
        mean=tr.mean(axis=0), std=tr.std(axis=0), raw_mean=raw_mean, raw_std=raw_std,
        description=description, extra=extra,
    )


class StandardizedFunction(GeneratingFunction):
    """A generating function on standardised inputs ``x' = (x − μ) / σ``:
    ``f'(x') = f(σ x' + μ)``.

    Shapley values of the interventional game do not change under a per-feature invertible
    map of the inputs (every coalition's value is the same number), so
    ``f'.shapley(x', b') = f.shapley(σ x' + μ, σ b' + μ)``.
    """

    def __init__(self, function: GeneratingFunction, mean: Any, scale: Any):
        self.function = function
        self.d = function.d
        self.mean = np.asarray(mean, dtype=np.float64)
        self.scale = np.asarray(scale, dtype=np.float64)

    def raw(self, x: np.ndarray) -> np.ndarray:
        """Standardised rows back in the generating function's units."""
        return x * self.scale + self.mean

    def torch_value(self, x: Tensor) -> Tensor:
        m, s = (torch.as_tensor(a, dtype=x.dtype, device=x.device)
                for a in (self.mean, self.scale))
        return self.function.torch_value(x * s + m)

    def _population_shapley(self, x: np.ndarray) -> np.ndarray:
        return self.function.shapley(self.raw(x))

    def _background_shapley(self, x: np.ndarray, b: np.ndarray) -> np.ndarray:
        return self.function.shapley(self.raw(x), self.raw(b))


def _tabular_loader(name: str, make: Callable[[], TabularTruth]) -> Callable[[int], Any]:
    def load(seed: int) -> Any:
        t = make()
        ds = _dataset(
            name, t.task, t.X, t.y, seed, {"attributions": t.attributions},
            feature_names=t.feature_names,
            class_names=["0", "1"] if t.task == "classification" else [],
            description=t.description + "; standardised with training statistics (Shapley "
                        "values do not change), extra['function'] takes standardised rows",
            extra={"relevant": t.relevant}, standardize=True,
        )
        scale = np.where(ds.raw_std > 0, ds.raw_std, 1.0)
        ds.extra["function"] = StandardizedFunction(t.function, ds.raw_mean, scale)
        return ds

    return load


def _image_loader(name: str, n: int, **kwargs: Any) -> Callable[[int], Any]:
    def load(seed: int) -> Any:
        gen = ObjectImages(seed=0, **kwargs)
        b = gen.generate(n)
        truth = {"masks": b.masks.numpy()}
        if b.suppressor_masks is not None:
            truth["suppressor_masks"] = b.suppressor_masks.numpy()
        return _dataset(
            name, "classification", b.images.numpy(), b.labels.numpy(), seed, truth,
            feature_names=[f"c{c}_y{i}_x{j}" for c in range(gen.channels)
                           for i in range(gen.size) for j in range(gen.size)],
            class_names=gen.class_names,
            description=f"{n} generated {gen.size}x{gen.size} images, {gen!r}; "
                        "extra['masks'] holds the deciding object's pixels per split",
            extra={"generator": gen}, standardize=False,
        )

    return load


#: name -> loader(seed) -> Dataset: the ground-truth sets, registered (with their
#: descriptions) in :data:`calix.data.DATASETS`. Data are generated with seed 0; ``seed``
#: fixes the 60/20/20 split. Tabular sets are not standardised (the truth refers to these
#: units); ``extra["attributions"]`` / ``extra["masks"]`` hold the truth per split.
GROUND_TRUTH_DATASETS: dict[str, Callable[[int], Any]] = {
    "gt-linear": _tabular_loader("gt-linear",
                                 lambda: make_linear(2000, 8, n_informative=5, seed=0)),
    "gt-logistic": _tabular_loader("gt-logistic",
                                   lambda: make_logistic(2000, 8, n_informative=5, seed=0)),
    "gt-additive": _tabular_loader("gt-additive", lambda: make_additive(2000, 8, seed=0)),
    "gt-interaction": _tabular_loader("gt-interaction",
                                      lambda: make_interaction(2000, 8, seed=0)),
    "gt-shapes": _image_loader("gt-shapes", 3000, kind="shape", size=64),
    "gt-textures": _image_loader("gt-textures", 3000, kind="texture", size=64),
    "gt-digits": _image_loader("gt-digits", 3000, kind="digit", size=64),
    "gt-xor": _image_loader("gt-xor", 3000, kind="shape", task="xor", size=64),
    "gt-suppressor": _image_loader("gt-suppressor", 3000, kind="shape", task="suppressor",
                                   size=64),
}
