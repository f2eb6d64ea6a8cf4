"""Split conformal prediction sets for classifiers, and how they hold up under perturbation.

Split conformal classification (Vovk, Gammerman & Shafer 2005, *Algorithmic Learning in a
Random World*; the tutorial of Angelopoulos & Bates 2021, arXiv:2107.07511): a conformity
score ``s(x, y)`` is computed on ``n`` held-out calibration samples, its
``⌈(n+1)(1−α)⌉``-th smallest value is the threshold ``q̂``, and the prediction set of a new
input holds the labels whose score is at most ``q̂``. For exchangeable data the set holds the
true label with probability at least ``1 − α`` -- and at most ``1 − α + 1/(n+1)`` when the
scores have no ties (continuous scores, or the randomised variants below).

Scores, one class each, all fitted with ``fit(values, labels)`` and used with
``predict_set(values)`` (a boolean matrix of shape (n, n_classes)):

- :class:`LAC` -- the threshold ("THR") score ``1 − p_y`` (Sadinle, Lei & Wasserman 2019,
  JASA, "least ambiguous set-valued classifiers");
- :class:`APS` -- adaptive prediction sets, the probability mass of the labels ranked above
  ``y`` plus (a uniform share of) ``p_y`` (Romano, Sesia & Candès, NeurIPS 2020);
- :class:`RAPS` -- APS plus ``λ (rank(y) − k_reg)⁺`` (Angelopoulos, Bates, Malik & Jordan,
  ICLR 2021).

:class:`LevelConformal` calibrates one threshold per perturbation-level bin: a Mondrian
conformal predictor (Vovk et al. 2005, ch. 4) whose taxonomy is the level bin, the conformal
analogue of ReCalX's one temperature per bin. :func:`conformal_by_level` measures coverage and
set size by perturbation level for sets calibrated on clean inputs and per level bin, with and
without a calibrator in front. :func:`coverage`, :func:`mean_set_size`,
:func:`size_stratified_coverage` and :func:`class_conditional_coverage` score sets.

Conventions beside MAPIE's (``SplitConformalClassifier``, mapie 1.6): the threshold is the
same order statistic, and given the same threshold (and uniform draws) the sets are the same,
but calix compares scores exactly where MAPIE allows a slack of 1e-8 (on the threshold, on
near-tied probabilities, and leaving out labels of probability <= 1e-8); MAPIE's APS/RAPS
always calibrate on randomised scores, also for its non-randomised sets; MAPIE's RAPS picks
``k_reg`` and ``λ`` on a split of its own, and its randomised RAPS divides by
``p_L − λ(L−k)⁺ + λ[L > k]`` where the paper divides by ``p_L`` (same sets when
``L <= k_reg + 1``).

Every class takes ``output=`` -- ``"logit"`` or ``"probability"``, what ``values`` hold -- and
refuses the other kind when it recognises it (logits whose every row lies on the simplex,
"probabilities" whose rows do not sum to 1). Work runs in float64 on the device of the
values; the uniform draws of the randomised scores come from a seeded CPU stream, so CPU and
CUDA give the same sets (up to float64 summation order, which can only matter for a score
within ~1e-15 of the threshold).

Example
-------
>>> import torch
>>> from calix.conformal import APS, coverage
>>> g = torch.Generator().manual_seed(0)
>>> logits = 2 * torch.randn(1000, 5, generator=g)
>>> labels = torch.distributions.Categorical(logits=logits).sample()
>>> aps = APS(output="logit", alpha=0.1, seed=0).fit(logits[:500], labels[:500])
>>> sets = aps.predict_set(logits[500:])
>>> sets.shape, sets.dtype
(torch.Size([500, 5]), torch.bool)
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from calix._random import make_generator
from calix._validation import (
    check_choice,
    check_class_scores,
    check_count,
    check_index_range,
    is_simplex,
    label_tensor,
)
from calix.calibrate import PROBABILITY_ATOL, ReCalX, TemperatureScaling, perturbed_logits
from calix.perturb import level_bins

__all__ = [
    "ConformalClassifier", "LAC", "APS", "RAPS", "LevelConformal", "SCORES",
    "conformal_quantile", "min_calibration_size", "coverage", "mean_set_size",
    "size_stratified_coverage", "class_conditional_coverage", "ConformalByLevel",
    "conformal_by_level",
]

OUTPUTS = ("logit", "probability")


# ============================================================================ helpers
def _check_alpha(alpha: Any) -> float:
    if isinstance(alpha, bool | str | bytes):
        raise TypeError(f"alpha must be a number in (0, 1), got {alpha!r}")
    a = float(alpha)
    if not (math.isfinite(a) and 0 < a < 1):
        raise ValueError(f"alpha must lie in (0, 1) (the miscoverage level, e.g. 0.1 for 90% "
                         f"sets), got {alpha}")
    return a


def _rank(n: int, alpha: float) -> int:
    """``⌈(n+1)(1−α)⌉`` with α read as the decimal it prints as (0.1 is 1/10), so no float
    rounding moves the rank: (n+1)·0.9 is exactly 9·(n+1)/10."""
    return math.ceil((n + 1) * (1 - Fraction(repr(float(alpha)))))


def min_calibration_size(alpha: float) -> int:
    """The fewest calibration samples for which a finite threshold exists at level ``alpha``:
    the smallest n with ``⌈(n+1)(1−α)⌉ <= n``, i.e. ``⌈(1−α)/α⌉`` (9 for α = 0.1, 19 for 0.05).

    >>> min_calibration_size(0.1), min_calibration_size(0.05)
    (9, 19)
    """
    a = Fraction(repr(_check_alpha(alpha)))
    return math.ceil((1 - a) / a)


def conformal_quantile(scores: Any, alpha: float) -> float:
    """The split-conformal threshold: the ``⌈(n+1)(1−α)⌉``-th smallest of the ``n`` scores.

    (The empirical quantile at level ``⌈(n+1)(1−α)⌉/n``, "lower" interpolation.)

    Raises
    ------
    ValueError
        For NaN or infinite scores, or fewer than :func:`min_calibration_size` scores (the rank
        would exceed n and the set would have to hold every label).

    >>> conformal_quantile([0.5, 0.1, 0.9, 0.3], alpha=0.4)  # rank ⌈5·0.6⌉ = 3
    0.5
    """
    a = _check_alpha(alpha)
    s = torch.as_tensor(scores, dtype=torch.float64).reshape(-1)
    if not bool(torch.isfinite(s).all()):
        raise ValueError(f"scores contain {int((~torch.isfinite(s)).sum())} NaN or infinite "
                         "value(s)")
    n = len(s)
    k = _rank(n, a)
    if k > n:
        raise ValueError(
            f"{n} calibration sample(s) are too few for alpha={a:g}: the threshold is the "
            f"⌈(n+1)(1−α)⌉-th smallest score, which needs n >= {min_calibration_size(a)}. Use "
            "more calibration samples or a larger alpha")
    return float(torch.kthvalue(s.cpu(), k).values)


def _as_float64(values: Any, name: str) -> Tensor:
    """``values`` as a float64 tensor on its own device (numpy and lists go to the CPU),
    without the float32 round trip of :func:`calix.models.as_tensor`."""
    if isinstance(values, Tensor):
        t = values.detach()
    else:
        try:
            arr = np.asarray(values)
        except ValueError as exc:
            raise TypeError(f"{name} could not be converted to an array: {exc}") from exc
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
        t = torch.from_numpy(np.array(arr, dtype=np.float64))
    if t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"{name} must be a real numeric tensor, got dtype {t.dtype}")
    return t.to(torch.float64)


def _probabilities(values: Any, output: str, name: str = "values") -> Tensor:
    """Class probabilities (n, k), float64, from ``values`` holding ``output``."""
    t = _as_float64(values, name)
    check_class_scores(t, name)
    finite = torch.isfinite(t)
    if not bool(finite.all()):
        raise ValueError(f"{name} contain {int((~finite).sum())} NaN or infinite value(s); "
                         "conformal sets need finite model outputs")
    if output == "logit":
        if is_simplex(t, atol=PROBABILITY_ATOL, range_atol=0.0):
            raise ValueError(
                f"{name} look like probabilities (every row in [0, 1] summing to 1) but "
                "output='logit'; pass output='probability' (genuine logits of this form can be "
                "shifted by a constant per row, which changes no softmax)")
        return torch.softmax(t, dim=1)
    if not is_simplex(t, atol=PROBABILITY_ATOL):
        bad = (t < -PROBABILITY_ATOL) | (t > 1 + PROBABILITY_ATOL)
        off = float((t.sum(1) - 1).abs().max())
        what = ("have entries outside [0, 1]" if bool(bad.any())
                else f"have rows that do not sum to 1 (the worst is off by {off:.3g})")
        raise ValueError(f"{name} {what} but output='probability'; pass output='logit' for "
                         "logits (or normalise the probabilities)")
    return t.clamp(0.0, 1.0)


def _labels(labels: Any, n: int, k: int, device: torch.device) -> Tensor:
    y = label_tensor(labels, "labels")
    if len(y) != n:
        raise ValueError(f"values has {n} rows but labels has {len(y)}")
    check_index_range(y, k, "labels", of=f" for {k} classes")
    return y.to(device)


def _uniform(n: int, seed: int | torch.Generator, device: torch.device) -> Tensor:
    """n uniform draws in [0, 1), float64, from a seeded CPU stream (the same on any device)."""
    return torch.rand(n, generator=make_generator(seed), dtype=torch.float64).to(device)


# ============================================================================ scores
class ConformalClassifier(ABC):
    """Base class of the split-conformal classifiers: ``fit`` then ``predict_set``.

    Subclasses give the conformity score of every label (:meth:`_label_scores`). The set of
    an input holds the labels whose score is at most the fitted threshold; scores that are
    monotone along the model's ranking (APS, RAPS) give a prefix of that ranking.

    Parameters
    ----------
    output : {"logit", "probability"}
        What the values passed to :meth:`fit`, :meth:`scores` and :meth:`predict_set` hold.
        Logits go through a softmax (float64). Required: the two are easy to mix up.
    alpha : float
        Miscoverage level in (0, 1): sets hold the true label with probability >= 1 − α.
    seed : int
        Seed of the uniform draws of randomised scores: ``fit`` draws from ``seed``,
        ``predict_set`` from ``seed + 1`` (unless given its own ``seed``), so repeated calls
        give the same sets.

    Attributes
    ----------
    threshold_ : float -- the fitted ``q̂``.
    n_calibration_ : int -- calibration samples ``fit`` saw.
    calibration_scores_ : Tensor of shape (n_calibration_,), float64, CPU.
    """

    #: the score's short name
    name: str = ""
    #: whether the score draws a uniform per input
    randomized: bool = False

    def __init__(self, *, output: Literal["logit", "probability"], alpha: float = 0.1,
                 seed: int = 0) -> None:
        check_choice(output, OUTPUTS, "output")
        self.output = output
        self.alpha = _check_alpha(alpha)
        self.seed = int(seed)
        self.threshold_: float | None = None
        self.n_calibration_: int | None = None
        self.calibration_scores_: Tensor | None = None

    # -- the score
    @abstractmethod
    def _label_scores(self, p: Tensor, u: Tensor | None) -> Tensor:
        """Conformity score of every label, (n, k), from probabilities ``p`` (n, k) and the
        uniform draws ``u`` (n,) (None for deterministic scores)."""

    def _included(self, p: Tensor, threshold: Tensor, u: Tensor | None) -> Tensor:
        """The sets (n, k) bool for a threshold of shape (n, 1) (broadcast)."""
        return self._label_scores(p, u) <= threshold

    def _draws(self, n: int, seed: int, device: torch.device) -> Tensor | None:
        return _uniform(n, seed, device) if self.randomized else None

    def params(self) -> dict[str, Any]:
        """The constructor arguments."""
        return {"output": self.output, "alpha": self.alpha, "seed": self.seed}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"

    # -- the estimator contract
    @property
    def is_fitted(self) -> bool:
        """Whether a threshold is set (:meth:`fit` or :meth:`from_threshold`)."""
        return self.threshold_ is not None

    def _check_fitted(self) -> float:
        if self.threshold_ is None:
            raise ValueError(f"this {type(self).__name__} is not fitted yet; call "
                             "fit(values, labels) on calibration data first")
        return self.threshold_

    def scores(self, values: Any, labels: Any = None, *, seed: int | None = None) -> Tensor:
        """Conformity scores: of the given ``labels`` (n,), or of every label (n, k).

        Randomised scores draw from ``seed`` (default: the constructor's seed, as in
        :meth:`fit`). Returned on the device of ``values``, float64.
        """
        p = _probabilities(values, self.output)
        u = self._draws(len(p), self.seed if seed is None else seed, p.device)
        s = self._label_scores(p, u)
        if labels is None:
            return s
        y = _labels(labels, len(p), p.shape[1], p.device)
        return s.gather(1, y[:, None]).squeeze(1)

    def fit(self, values: Any, labels: Any) -> ConformalClassifier:
        """Calibrate on held-out ``values`` (n, k) and ``labels`` (n,); returns self.

        Raises
        ------
        ValueError
            For NaN/inf values, the wrong ``output`` kind, labels outside ``[0, k)``, or fewer
            than :func:`min_calibration_size` samples.
        """
        s = self.scores(values, labels).cpu()
        self.threshold_ = conformal_quantile(s, self.alpha)
        self.n_calibration_ = len(s)
        self.calibration_scores_ = s
        return self

    @classmethod
    def from_threshold(cls, threshold: float, **params: Any) -> ConformalClassifier:
        """A fitted instance with a chosen threshold ``q̂`` (one computed elsewhere, or a
        sweep); ``params`` are the constructor's."""
        t = float(threshold)
        if not math.isfinite(t):
            raise ValueError(f"threshold must be finite, got {threshold}")
        obj = cls(**params)
        obj.threshold_ = t
        return obj

    def predict_set(self, values: Any, *, seed: int | None = None) -> Tensor:
        """Prediction sets: bool of shape (n, k) on the device of ``values``.

        Randomised scores draw from ``seed`` (default: the constructor's seed + 1).
        """
        q = self._check_fitted()
        p = _probabilities(values, self.output)
        u = self._draws(len(p), self.seed + 1 if seed is None else seed, p.device)
        return self._included(p, torch.tensor([[q]], dtype=p.dtype, device=p.device), u)


class LAC(ConformalClassifier):
    """The threshold score ("THR", least ambiguous set-valued classifier): ``s(x, y) = 1 − p_y``.

    Sadinle, Lei & Wasserman, "Least ambiguous set-valued classifiers with bounded error
    levels", JASA 114 (2019). The set ``{y : p_y >= 1 − q̂}`` is the smallest on average among
    sets with coverage ``1 − α`` when the probabilities are right; it may be empty (an input
    whose every probability is low), and its coverage is uneven across easy and hard inputs.

    >>> import torch
    >>> lac = LAC.from_threshold(0.7, output="probability")
    >>> lac.predict_set(torch.tensor([[0.5, 0.35, 0.15]])).tolist()
    [[True, True, False]]
    """

    name = "lac"

    def _label_scores(self, p: Tensor, u: Tensor | None) -> Tensor:
        return 1.0 - p


def _ranked(p: Tensor) -> tuple[Tensor, Tensor]:
    """Per label: the probability mass of the labels ranked above it, and its 1-based rank
    (descending probability, ties in label order), both (n, k)."""
    order = torch.sort(p, dim=1, descending=True, stable=True).indices
    p_sorted = p.gather(1, order)
    before_sorted = torch.cumsum(p_sorted, dim=1) - p_sorted
    before = torch.empty_like(p).scatter_(1, order, before_sorted)
    ranks = torch.arange(1, p.shape[1] + 1, device=p.device).expand_as(order)
    rank = torch.empty_like(order).scatter_(1, order, ranks)
    return before, rank


class APS(ConformalClassifier):
    """Adaptive prediction sets: ``s(x, y) = Σ_{p_j > p_y} p_j + u · p_y``.

    Romano, Sesia & Candès, "Classification with valid and adaptive coverage", NeurIPS 2020.
    Labels are ranked by probability (ties in label order); the score is the mass of the
    labels ranked above ``y`` plus a share of ``p_y``:

    - ``randomized=True`` (default, the paper's): ``u ~ U(0, 1)``, one draw per input shared by
      its labels. The set ``{y : s(x, y, u) <= q̂}`` is a prefix of the ranking; it may be
      empty, and its coverage lies in ``[1 − α, 1 − α + 1/(n+1)]``.
    - ``randomized=False``: ``u = 1`` (the cumulative mass up to and including ``y``), and the
      set takes the ranking up to and including the first label whose cumulative mass reaches
      ``q̂`` (Angelopoulos & Bates 2021, sec. 2.1; MAPIE's ``include_last_label=True``): never
      empty, coverage >= 1 − α, often well above (no upper bound).
    """

    name = "aps"

    def __init__(self, *, output: Literal["logit", "probability"], alpha: float = 0.1,
                 randomized: bool = True, seed: int = 0) -> None:
        super().__init__(output=output, alpha=alpha, seed=seed)
        if not isinstance(randomized, bool | np.bool_):
            raise TypeError(f"randomized must be True or False, got {randomized!r}")
        self.randomized = bool(randomized)

    def params(self) -> dict[str, Any]:
        return {**super().params(), "randomized": self.randomized}

    def _penalty(self, rank: Tensor) -> Tensor | float:
        """Added to the score of the label of each rank (none for APS)."""
        return 0.0

    def _label_scores(self, p: Tensor, u: Tensor | None) -> Tensor:
        before, rank = _ranked(p)
        share = p if u is None else u[:, None] * p
        return before + share + self._penalty(rank)

    def _included(self, p: Tensor, threshold: Tensor, u: Tensor | None) -> Tensor:
        if self.randomized:
            return self._label_scores(p, u) <= threshold
        before, rank = _ranked(p)
        upto = before + p + self._penalty(rank)  # cumulative score up to and including
        # the cumulative score of the label ranked just above (the top label: always in)
        above = before + self._penalty(rank - 1)
        return (rank == 1) | (above < threshold) | (upto <= threshold)


class RAPS(APS):
    """Regularised adaptive prediction sets: the APS score plus ``λ (rank(y) − k_reg)⁺``.

    Angelopoulos, Bates, Malik & Jordan, "Uncertainty sets for image classifiers using
    conformal prediction", ICLR 2021. The penalty on labels ranked below ``k_reg`` (1-based
    rank, as in the paper) keeps the sets small when many labels have tiny probabilities.
    ``lam = 0`` gives APS exactly. The paper picks ``k_reg`` and ``λ`` on a separate split; the
    defaults here (``k_reg = 1``, ``λ = 0.01``) are a fixed choice for ten-odd classes [I].
    Randomisation as in :class:`APS`.

    Parameters
    ----------
    k_reg : int -- ranks up to ``k_reg`` carry no penalty (>= 0).
    lam : float -- penalty per rank beyond ``k_reg`` (>= 0).
    """

    name = "raps"

    def __init__(self, *, output: Literal["logit", "probability"], alpha: float = 0.1,
                 k_reg: int = 1, lam: float = 0.01, randomized: bool = True,
                 seed: int = 0) -> None:
        super().__init__(output=output, alpha=alpha, randomized=randomized, seed=seed)
        self.k_reg = check_count(k_reg, "k_reg", minimum=0)
        if isinstance(lam, bool | str | bytes) or not (math.isfinite(float(lam))
                                                       and float(lam) >= 0):
            raise ValueError(f"lam must be a finite number >= 0, got {lam!r}")
        self.lam = float(lam)

    def params(self) -> dict[str, Any]:
        return {**super().params(), "k_reg": self.k_reg, "lam": self.lam}

    def _penalty(self, rank: Tensor) -> Tensor:
        return self.lam * (rank - self.k_reg).clamp_min(0).to(torch.float64)


#: name -> score class (``"thr"`` is LAC's other name)
SCORES: dict[str, type[ConformalClassifier]] = {"lac": LAC, "thr": LAC, "aps": APS,
                                                "raps": RAPS}


# ============================================================================ per level bin
class LevelConformal:
    """One conformal threshold per perturbation-level bin (level-conditional conformal sets).

    A Mondrian conformal predictor (Vovk, Gammerman & Shafer 2005, ch. 4) whose taxonomy is
    the level bin of :func:`calix.perturb.level_bins`: ``n_bins`` equal-width bins of [0, 1],
    each calibrated on its own samples, so that coverage holds within every bin -- the
    conformal counterpart of ReCalX's one temperature per bin. The score (and its ``output``,
    ``alpha``, randomisation and seed) is that of ``base``; ``base`` itself is left unfitted.

    Validity per bin needs the calibration samples of a bin to be exchangeable with the test
    samples of that bin: with several perturbations of one input in a bin they are grouped,
    and the guarantee becomes approximate (see :func:`conformal_by_level`).

    Attributes
    ----------
    thresholds_ : Tensor of shape (n_bins,), float64 -- ``q̂`` of each bin.
    counts_ : Tensor of shape (n_bins,), int64 -- calibration samples per bin.
    """

    def __init__(self, base: ConformalClassifier, n_bins: int = 10) -> None:
        if not isinstance(base, ConformalClassifier):
            raise TypeError(f"base must be a ConformalClassifier (LAC, APS, RAPS), got "
                            f"{type(base).__name__}")
        self.base = base
        self.n_bins = check_count(n_bins, "n_bins")
        self.thresholds_: Tensor | None = None
        self.counts_: Tensor | None = None

    def __repr__(self) -> str:
        return f"LevelConformal({self.base!r}, n_bins={self.n_bins})"

    def _bins(self, levels: Any, n: int) -> Tensor:
        if levels is None:
            raise ValueError("LevelConformal needs the perturbation level of every row "
                             "(levels=); clean inputs have level 0")
        lv = _as_float64(levels, "levels").reshape(-1)
        if len(lv) != n:
            raise ValueError(f"levels has {len(lv)} values for {n} rows of values")
        return level_bins(lv.cpu(), self.n_bins)

    def fit(self, values: Any, labels: Any, levels: Any) -> LevelConformal:
        """Calibrate each bin on its rows of ``values`` (n, k), ``labels`` (n,) and ``levels``
        (n,) in [0, 1]; returns self.

        Raises
        ------
        ValueError
            As :meth:`ConformalClassifier.fit`, and for a bin with fewer than
            :func:`min_calibration_size` samples (naming the bins).
        """
        s = self.base.scores(values, labels).cpu()
        bins = self._bins(levels, len(s))
        counts = torch.bincount(bins, minlength=self.n_bins)
        need = min_calibration_size(self.base.alpha)
        short = (counts < need).nonzero().flatten().tolist()
        if short:
            nb = self.n_bins
            detail = ", ".join(f"bin {b} [{b / nb:.2g}, {(b + 1) / nb:.2g}): {int(counts[b])}"
                               for b in short[:5])
            raise ValueError(f"too few calibration samples per level bin for alpha="
                             f"{self.base.alpha:g} (each bin needs >= {need}): {detail}. Use "
                             "more samples per bin or fewer bins")
        order = torch.argsort(bins, stable=True)
        groups = torch.split(s[order], counts.tolist())
        self.thresholds_ = torch.tensor([conformal_quantile(g, self.base.alpha)
                                         for g in groups], dtype=torch.float64)
        self.counts_ = counts
        return self

    def predict_set(self, values: Any, levels: Any, *, seed: int | None = None) -> Tensor:
        """Prediction sets (n, k) bool, each row with the threshold of its level's bin."""
        if self.thresholds_ is None:
            raise ValueError("this LevelConformal is not fitted yet; call fit(values, labels, "
                             "levels) first")
        b = self.base
        p = _probabilities(values, b.output)
        bins = self._bins(levels, len(p))
        q = self.thresholds_[bins].to(p.device)[:, None]
        u = b._draws(len(p), b.seed + 1 if seed is None else seed, p.device)
        return b._included(p, q, u)


# ============================================================================ metrics
def _sets_labels(sets: Any, labels: Any) -> tuple[Tensor, Tensor]:
    s = torch.as_tensor(sets)
    if s.dtype != torch.bool:
        if s.is_floating_point() or s.is_complex() or not bool(((s == 0) | (s == 1)).all()):
            raise TypeError("sets must be a boolean (n, n_classes) matrix, as predict_set "
                            "returns")
        s = s.bool()
    if s.ndim != 2:
        raise ValueError(f"sets must have shape (n, n_classes), got {tuple(s.shape)}")
    if labels is None:
        return s, torch.empty(0, dtype=torch.long)
    y = _labels(labels, len(s), s.shape[1], s.device)
    return s, y


def coverage(sets: Any, labels: Any) -> float:
    """Empirical coverage: the share of rows whose set holds the label.

    >>> coverage(torch.tensor([[True, False], [False, True]]), [0, 0])
    0.5
    """
    s, y = _sets_labels(sets, labels)
    if len(s) == 0:
        return float("nan")
    return float(s.gather(1, y[:, None]).double().mean())


def mean_set_size(sets: Any) -> float:
    """Mean number of labels per set."""
    s, _ = _sets_labels(sets, None)
    return float(s.sum(1).double().mean()) if len(s) else float("nan")


def size_stratified_coverage(sets: Any, labels: Any) -> dict[str, np.ndarray]:
    """Coverage among the sets of each size (Angelopoulos et al. 2021, sec. 4: a set method
    with adaptive coverage covers evenly across sizes).

    Returns
    -------
    dict with ``size`` (0 .. n_classes), ``coverage`` (NaN where no set has that size) and
    ``count``, each of shape (n_classes + 1,).
    """
    s, y = _sets_labels(sets, labels)
    k = s.shape[1]
    size = s.sum(1).cpu()
    hit = s.gather(1, y[:, None]).squeeze(1).cpu().double()
    count = torch.bincount(size, minlength=k + 1)
    hits = torch.zeros(k + 1, dtype=torch.float64).index_add_(0, size, hit)
    cov = torch.where(count > 0, hits / count.clamp_min(1), torch.nan)
    return {"size": np.arange(k + 1), "coverage": cov.numpy(), "count": count.numpy()}


def class_conditional_coverage(sets: Any, labels: Any) -> np.ndarray:
    """Coverage among the rows of each true class, shape (n_classes,), NaN for a class with no
    rows. Its minimum is the worst-class coverage, which split conformal does not control
    (Angelopoulos & Bates 2021, sec. 4.1)."""
    s, y = _sets_labels(sets, labels)
    k = s.shape[1]
    yc = y.cpu()
    hit = s.gather(1, y[:, None]).squeeze(1).cpu().double()
    count = torch.bincount(yc, minlength=k)
    hits = torch.zeros(k, dtype=torch.float64).index_add_(0, yc, hit)
    return torch.where(count > 0, hits / count.clamp_min(1), torch.nan).numpy()


# ============================================================================ under perturbation
@dataclass
class ConformalByLevel:
    """Coverage and set size by perturbation-level bin (:func:`conformal_by_level`).

    Keys of ``coverage``, ``size`` and ``thresholds`` are ``(calibrator, score, fitted_on)``:
    calibrator "none", "temperature" or "recalx"; score a :data:`SCORES` name; fitted_on
    "clean" (one threshold from clean calibration inputs) or "level" (one per level bin,
    :class:`LevelConformal`).

    Attributes
    ----------
    alpha : float
    edges : ndarray of shape (n_bins + 1,) -- level-bin edges.
    counts : ndarray of shape (n_bins,) -- test samples per bin.
    coverage, size : dict key -> ndarray of shape (n_bins,)
    thresholds : dict key -> ndarray of shape (1,) (clean) or (n_bins,) (level)
    clean_coverage, clean_size : dict key -> float, on the clean (unperturbed) test inputs
    cal_counts : dict key -> ndarray of shape (n_bins,) -- calibration samples behind each
        bin's threshold (the same clean count in every bin for "clean").
    n_fit, n_conformal : int -- calibration inputs fitting the calibrators / the sets.
    """

    alpha: float
    edges: np.ndarray
    counts: np.ndarray
    coverage: dict[tuple[str, str, str], np.ndarray] = field(default_factory=dict)
    size: dict[tuple[str, str, str], np.ndarray] = field(default_factory=dict)
    thresholds: dict[tuple[str, str, str], np.ndarray] = field(default_factory=dict)
    clean_coverage: dict[tuple[str, str, str], float] = field(default_factory=dict)
    clean_size: dict[tuple[str, str, str], float] = field(default_factory=dict)
    cal_counts: dict[tuple[str, str, str], np.ndarray] = field(default_factory=dict)
    n_fit: int = 0
    n_conformal: int = 0

    def shortfall(self, key: tuple[str, str, str], *, z: float = 3.0) -> np.ndarray:
        """Per bin: whether coverage falls short of ``1 − α`` by more than ``z`` standard
        errors, bool (n_bins,).

        The standard error adds the two sources of spread of a bin's coverage: the test
        samples of the bin (binomial, ``α(1−α)/count``) and the calibration draw the threshold
        came from (the coverage conditional on the calibration set is Beta-distributed with
        variance ≈ ``α(1−α)/(n_cal + 2)``, ``n_cal`` the calibration samples behind the
        threshold: :attr:`cal_counts`). Test samples that share an input are correlated, so
        this is a lower bound on the spread.
        """
        a = self.alpha
        var = a * (1 - a) * (1 / np.maximum(self.counts, 1)
                             + 1 / (np.asarray(self.cal_counts[key], dtype=float) + 2))
        return self.coverage[key] < 1 - a - z * np.sqrt(var)

    def first_short(self, key: tuple[str, str, str], *, z: float = 3.0) -> float:
        """The lower edge of the first level bin whose coverage falls short (see
        :meth:`shortfall`); NaN when every bin reaches nominal."""
        short = np.flatnonzero(self.shortfall(key, z=z))
        return float(self.edges[short[0]]) if len(short) else float("nan")

    def rows(self) -> list[dict[str, Any]]:
        """One row per key: coverage and size per bin, their minimum / mean, and
        ``first_short``."""
        return [{"calibrator": c, "score": s, "fitted_on": f,
                 "coverage": self.coverage[(c, s, f)].tolist(),
                 "size": self.size[(c, s, f)].tolist(),
                 "min_coverage": float(np.nanmin(self.coverage[(c, s, f)])),
                 "mean_size": float(np.nanmean(self.size[(c, s, f)])),
                 "clean_coverage": self.clean_coverage[(c, s, f)],
                 "first_short": self.first_short((c, s, f))}
                for (c, s, f) in self.coverage]


def _per_bin(values: Tensor, bins: Tensor, n_bins: int) -> np.ndarray:
    """Mean of ``values`` (n,) within each bin, NaN for an empty bin."""
    v = values.detach().cpu().double()
    b = bins.cpu()
    count = torch.bincount(b, minlength=n_bins)
    tot = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, b, v)
    return torch.where(count > 0, tot / count.clamp_min(1), torch.nan).numpy()


def conformal_by_level(
    model: Any,
    X_cal: Any,
    y_cal: Any,
    X_test: Any,
    y_test: Any,
    perturbation: Any,
    *,
    alpha: float = 0.1,
    scores: tuple[str, ...] = ("lac", "aps", "raps"),
    calibrators: tuple[str, ...] = ("none", "temperature", "recalx"),
    n_bins: int = 10,
    n_fit: int | None = None,
    n_per_bin_fit: int = 10,
    n_per_bin_cal: int = 1,
    n_eval: int = 500,
    n_per_bin_eval: int = 10,
    randomized: bool = True,
    k_reg: int = 1,
    lam: float = 0.01,
    seed: int = 0,
    progress: bool = False,
) -> ConformalByLevel:
    """Coverage and mean set size by perturbation level, for conformal sets calibrated on
    clean inputs and per level bin, before and after a calibrator.

    The calibration split is divided: its first ``n_fit`` inputs (default: half) fit the
    calibrators -- temperature scaling on their clean logits, ReCalX on ``n_per_bin_fit``
    perturbations per input and level bin -- and the rest calibrate the sets, so that the
    conformal calibration data is not the data the calibrator was fitted on. Per score and
    calibrator, the sets are calibrated

    - on clean inputs (``fitted_on="clean"``): one threshold from the clean calibration
      logits, as a deployed conformal classifier would be, then used at every level;
    - per level bin (``fitted_on="level"``): :class:`LevelConformal` on ``n_per_bin_cal``
      perturbations per calibration input and bin (default 1, so each bin's calibration
      samples are independent draws, exchangeable with a test draw of that bin).

    The test split's first ``n_eval`` inputs are perturbed ``n_per_bin_eval`` times per bin
    (:func:`calix.calibrate.perturbed_logits`, a seed apart from calibration); coverage and
    set size are averaged per bin of the realised level. All model queries go through the
    perturbation engine's batched path; each input's logits are computed once and every
    calibrator is applied to them (ReCalX with each row's level, clean rows at level 0).

    Parameters
    ----------
    model : calix Model (uncalibrated)
    X_cal, y_cal : calibration inputs (n, *input_shape) and labels (n,)
    X_test, y_test : test inputs and labels
    perturbation : calix Perturbation (features and fill)
    scores : names in :data:`SCORES`
    calibrators : subset of ("none", "temperature", "recalx")
    randomized, k_reg, lam : passed to APS / RAPS.

    Returns
    -------
    ConformalByLevel
    """
    a = _check_alpha(alpha)
    for s in scores:
        check_choice(s, SCORES, "score", listed=sorted(SCORES))
    for c in calibrators:
        check_choice(c, ("none", "temperature", "recalx"), "calibrator")
    n_bins = check_count(n_bins, "n_bins")
    y_all = label_tensor(y_cal, "y_cal")
    n_cal = len(y_all)
    n_fit = n_cal // 2 if n_fit is None else check_count(n_fit, "n_fit", minimum=0)
    if "recalx" in calibrators or "temperature" in calibrators:
        if n_fit < 1:
            raise ValueError("n_fit must be >= 1 to fit a calibrator")
    n_conf = n_cal - n_fit
    if n_conf < min_calibration_size(a):
        raise ValueError(f"n_fit={n_fit} leaves {n_conf} of the {n_cal} calibration inputs for "
                         f"the conformal sets; alpha={a:g} needs >= {min_calibration_size(a)}")
    X_fit, y_fit = X_cal[:n_fit], y_all[:n_fit]
    X_conf, y_conf = X_cal[n_fit:], y_all[n_fit:]

    # model queries: clean calibration logits, perturbed calibration and test logits
    z_clean = model.forward(X_conf, grad=False, progress=progress).detach()
    yc = y_conf.to(z_clean.device)
    z_pert, y_pert, lv_pert = perturbed_logits(
        model, X_conf, y_conf, perturbation, n_samples=n_conf, n_per_bin=n_per_bin_cal,
        n_bins=n_bins, seed=seed, progress=progress)
    z_test, y_test_t, lv_test = perturbed_logits(
        model, X_test, y_test, perturbation, n_samples=n_eval, n_per_bin=n_per_bin_eval,
        n_bins=n_bins, seed=seed + 1, progress=progress)
    n_test_inputs = len(y_test_t) // (n_bins * n_per_bin_eval)
    z_test_clean = model.forward(X_test[:n_test_inputs], grad=False, progress=progress).detach()
    y_test_clean = y_test_t[:: n_bins * n_per_bin_eval]
    test_bins = level_bins(lv_test.cpu(), n_bins)

    fitted: dict[str, Any] = {}
    if "temperature" in calibrators:
        fitted["temperature"] = TemperatureScaling().fit(
            model.forward(X_fit, grad=False, progress=progress), y_fit)
    if "recalx" in calibrators:
        fitted["recalx"] = ReCalX(n_bins).fit_perturbed(
            model, X_fit, y_fit, perturbation, n_samples=n_fit, n_per_bin=n_per_bin_fit,
            seed=seed + 2, progress=progress)

    def apply(name: str, z: Tensor, levels: Tensor | None) -> Tensor:
        if name == "none":
            return z
        cal = fitted[name].to(z.device)
        lv = torch.zeros(len(z), device=z.device) if levels is None else levels
        with torch.no_grad():
            return cal(z, lv.to(z.device))

    out = ConformalByLevel(alpha=a, edges=np.linspace(0, 1, n_bins + 1),
                           counts=torch.bincount(test_bins, minlength=n_bins).numpy(),
                           n_fit=n_fit, n_conformal=n_conf)
    for c in calibrators:
        zc, zp = apply(c, z_clean, None), apply(c, z_pert, lv_pert)
        zt, ztc = apply(c, z_test, lv_test), apply(c, z_test_clean, None)
        for sname in scores:
            cls = SCORES[sname]
            kw: dict[str, Any] = {"output": "logit", "alpha": a, "seed": seed}
            if cls is not LAC:
                kw["randomized"] = randomized
            if cls is RAPS:
                kw.update(k_reg=k_reg, lam=lam)
            clean = cls(**kw).fit(zc, yc)
            level = LevelConformal(cls(**kw), n_bins).fit(zp, y_pert, lv_pert)
            for fitted_on, sets, clean_sets, q in (
                    ("clean", clean.predict_set(zt), clean.predict_set(ztc),
                     np.array([clean.threshold_])),
                    ("level", level.predict_set(zt, lv_test),
                     level.predict_set(ztc, torch.zeros(len(ztc))),
                     level.thresholds_.numpy())):
                key = (c, sname, fitted_on)
                hit = sets.gather(1, y_test_t.to(sets.device)[:, None]).squeeze(1)
                out.coverage[key] = _per_bin(hit, test_bins, n_bins)
                out.size[key] = _per_bin(sets.sum(1), test_bins, n_bins)
                out.thresholds[key] = q
                out.cal_counts[key] = (np.full(n_bins, n_conf) if fitted_on == "clean"
                                       else level.counts_.numpy())
                out.clean_coverage[key] = coverage(clean_sets, y_test_clean)
                out.clean_size[key] = mean_set_size(clean_sets)
    return out
