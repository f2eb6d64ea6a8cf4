"""Calibrators fitted per perturbation level: ReCalX (one temperature per level bin),
:class:`ByLevel` (any calibrator per level bin) and :class:`SmoothLevelTemperature` (a
temperature curve in the level), with :func:`perturbed_logits`, the perturbed validation
samples they are fitted on."""

from __future__ import annotations

import copy
import math
import warnings
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from calix._random import make_generator
from calix._validation import MAX_ELEMENTS, check_choice, check_count, label_tensor
from calix.calibrate.base import (
    T_MAX,
    T_MIN,
    Calibrator,
    _all_correct,
    _fit_temperatures,
    _lbfgs,
    check_logits_labels,
)
from calix.calibrate.binning import HistogramBinning, IsotonicCalibration, VennAbers
from calix.calibrate.dirichlet import Dirichlet
from calix.calibrate.scaling import (
    BetaCalibration,
    MatrixScaling,
    PlattScaling,
    StructuredMatrixScaling,
    VectorScaling,
)
from calix.models import Model, as_tensor
from calix.perturb import Perturbation, StratifiedLevels, level_bins


class _FitsPerturbed:
    """``fit_perturbed`` of the calibrators fitted per perturbation level (ReCalX, ByLevel,
    SmoothLevelTemperature): each has ``n_bins`` and ``_fit(logits, labels, levels, *,
    stacklevel)``."""

    n_bins: int

    def fit_perturbed(self, model: Model, X: Any, y: Any, perturbation: Perturbation, *,
                      n_samples: int = 200, n_per_bin: int = 10, seed: int = 0,
                      progress: bool = False) -> Any:
        """Fit on perturbed validation samples built by the perturbation engine; returns
        the calibrator.

        Parameters
        ----------
        model : Model -- the uncalibrated model.
        X : array of shape (n, *input_shape) -- validation inputs.
        y : array of shape (n,) -- their labels.
        perturbation : Perturbation -- features and fill (e.g. zero, blur, mean).
        n_samples : int -- validation inputs used (the first ``n_samples``; paper: 200).
        n_per_bin : int -- perturbations per input and bin (paper: 10).
        """
        logits, labels, levels = perturbed_logits(
            model, X, y, perturbation, n_samples=n_samples, n_per_bin=n_per_bin,
            n_bins=self.n_bins, seed=seed, progress=progress)
        return self._fit(logits, labels, levels, stacklevel=3)


def perturbed_logits(model: Model, X: Any, y: Any, perturbation: Perturbation, *,
                     n_samples: int = 200, n_per_bin: int = 10, n_bins: int = 10,
                     seed: int = 0, progress: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """Logits of perturbed inputs stratified over level bins, with their labels and levels.

    Each of the first ``n_samples`` inputs gets its own ``n_per_bin * n_bins`` coalitions
    (:class:`~calix.perturb.StratifiedLevels`).

    Returns
    -------
    logits : Tensor of shape (m, k)
        On the model's device, as the other two; m = n · n_bins · n_per_bin for the n inputs.
    labels : Tensor of shape (m,)
    levels : Tensor of shape (m,)
    """
    n_samples = check_count(n_samples, "n_samples")
    n_per_bin = check_count(n_per_bin, "n_per_bin")
    n_bins = check_count(n_bins, "n_bins")
    Xt = as_tensor(X, name="X")
    if Xt.ndim < 2 or len(Xt) == 0:
        raise ValueError(f"X must be a non-empty batch (n, *input_shape), got shape "
                         f"{tuple(Xt.shape)}")
    Xt = Xt[:n_samples]
    yt = label_tensor(y, "y")[:n_samples]
    if len(yt) != len(Xt):
        raise ValueError(f"X has {len(Xt)} rows but y has {len(yt)}")
    n = len(Xt)
    d = perturbation.n_features(Xt)
    m = n_per_bin * n_bins
    if n * m * d > MAX_ELEMENTS:
        raise ValueError(f"n_samples={n} inputs x n_per_bin={n_per_bin} x n_bins={n_bins} "
                         f"coalitions of {d} features are {n * m * d:.3g} mask elements, more "
                         f"than {MAX_ELEMENTS:.3g}: lower n_samples, n_per_bin or n_bins")
    g = make_generator(seed)
    masks = StratifiedLevels(n_bins).sample(n * m, d, seed=g).reshape(n, m, d)
    # each input gets masks from every bin (the sampler orders by bin, so interleave)
    masks = masks.reshape(n_bins, n, n_per_bin, d).permute(1, 0, 2, 3).reshape(n, m, d)
    res = perturbation.query(model, Xt, masks, seed=g, progress=progress)
    out = res.outputs.reshape(n * m, -1).detach()
    return out, yt.to(out.device).repeat_interleave(m), res.levels.reshape(-1).to(out.device)


def _levels_for(levels: Any, n: int, who: str) -> Tensor:
    """Fitting levels as a float64 CPU vector of length ``n``."""
    if levels is None:
        raise ValueError(f"{who}.fit needs the perturbation level of every sample (levels=)")
    lv = (levels.detach() if isinstance(levels, Tensor)
          else as_tensor(levels, name="levels", device="cpu"))
    lv = lv.to("cpu", torch.float64).reshape(-1)
    if len(lv) != n:
        raise ValueError(f"levels has {len(lv)} values for {n} rows of logits")
    return lv


def _query_levels(levels: Tensor | None, logits: Tensor, who: str) -> Tensor:
    if levels is None:
        raise ValueError(
            f"{who} needs the perturbation level of every query; pass levels= (the "
            "perturbation engine does this) or wrap the model with calibrated(...), which "
            "treats queries without levels as clean inputs (λ = 0)")
    lv = torch.as_tensor(levels, device=logits.device).reshape(-1)
    if len(lv) != len(logits):
        raise ValueError(f"levels has {len(lv)} values for {len(logits)} rows of logits")
    return lv


def _bin_label(b: int, nb: int) -> str:
    """Level bin ``b`` of ``nb`` and its interval, as warnings and errors name it."""
    return f"bin {b} [{b / nb:.1f}, {(b + 1) / nb:.1f})"


def _warn_pooled_bins(notes: list[str], what: str, more: str, *, stacklevel: int) -> None:
    """Warn, when ``notes`` name any, that these level bins were fitted on their samples pooled
    with the nearest bins; ``stacklevel`` as for a warning raised by the caller."""
    if notes:
        warnings.warn(
            f"{len(notes)} {what} pooled with the nearest bins: " + "; ".join(notes) + ". See "
            f"fallback_bins_ and sources_; {more} gives each bin its own",
            UserWarning, stacklevel=stacklevel + 1)


class ReCalX(_FitsPerturbed, Calibrator):
    """Perturbation-aware temperature scaling: one temperature per level bin.

    ``p = softmax(z / T_b)`` with ``b = bin(λ)`` for ``n_bins`` equal-width bins of [0, 1]. Fit
    either directly from ``(logits, labels, levels)`` with :meth:`fit`, or from a model and
    validation data with :meth:`fit_perturbed`, which draws ``n_per_bin`` coalitions per
    sample and bin with :class:`~calix.perturb.StratifiedLevels` and queries the model through
    the perturbation engine.

    Degenerate bins: a bin where every validation prediction is correct has no temperature
    (the NLL keeps falling as T -> 0), and one whose fitted temperature lands on the lower
    search bound T_MIN = 0.01 has no useful one. Such a bin takes the temperature
    fitted on its samples pooled with the nearest bins: the window ``[b - w, b + w]`` (clipped
    to the bins) for the smallest ``w`` whose pooled samples are not degenerate -- at most all
    bins, i.e. the global temperature. If even that is degenerate the bin keeps T = 1 (no
    calibration). A warning names the bins, and :attr:`fallback_bins_` and :attr:`sources_`
    record them. A bin at the upper bound T_MAX = 100 is not degenerate: its predictions are
    no better than chance, the NLL falls towards the uniform distribution as T grows, and
    T_MAX gives a near-uniform output, the honest answer there (heavily perturbed inputs).

    Queries without a level (a :func:`calibrated` model with ``assume_clean=True``) are clean
    inputs, λ = 0, and get bin 0's temperature. Bin 0 is the nearest measurement of clean
    inputs (its validation samples are the least perturbed); a temperature fitted on all bins
    would mostly reflect heavily perturbed inputs, and since degenerate bins are pooled as
    above, bin 0's temperature is always a healthy fit.

    Parameters
    ----------
    n_bins : int
        Number of level bins (paper default 10).
    min_samples_per_bin : int
        Fitting raises if any bin has fewer perturbed samples than this.

    Attributes
    ----------
    temperatures_ : Tensor of shape (n_bins,)
    counts_ : Tensor of shape (n_bins,) -- samples of each bin.
    sources_ : Tensor of shape (n_bins, 2), int64
        The (first, last) bin whose pooled samples gave each temperature: ``(b, b)`` for a
        bin fitted on its own samples, a wider window for a degenerate bin, ``(-1, -1)`` for
        T = 1 when no window was healthy.
    fallback_bins_ : list of int -- the degenerate bins (those whose source is not ``(b, b)``).
    """

    level_aware = True

    def __init__(self, n_bins: int = 10, *, min_samples_per_bin: int = 50) -> None:
        super().__init__()
        if n_bins < 1:
            raise ValueError(f"n_bins must be >= 1, got {n_bins}")
        if min_samples_per_bin < 1:
            raise ValueError(f"min_samples_per_bin must be >= 1, got {min_samples_per_bin}")
        self.n_bins = int(n_bins)
        self.min_samples_per_bin = int(min_samples_per_bin)
        self.register_buffer("log_temperatures_", torch.zeros(self.n_bins))
        self.register_buffer("counts_", torch.zeros(self.n_bins, dtype=torch.long))
        self.register_buffer("sources_", torch.zeros(self.n_bins, 2, dtype=torch.long))

    def _after_load(self) -> None:
        self.n_bins = len(self.log_temperatures_)

    @property
    def temperatures_(self) -> Tensor:
        self._check_fitted()
        return self.log_temperatures_.exp()

    @property
    def fallback_bins_(self) -> list[int]:
        self._check_fitted()
        own = torch.arange(self.n_bins, device=self.sources_.device)
        return (self.sources_ != own[:, None]).any(1).nonzero().flatten().tolist()

    def fit(self, logits: Any, labels: Any, levels: Any = None, **kwargs: Any) -> ReCalX:
        """Fit from logits of shape (n, k), labels of shape (n,) and levels of shape (n,) in
        [0, 1] (any device)."""
        return self._fit(logits, labels, levels, stacklevel=3)

    def _fit(self, logits: Any, labels: Any, levels: Any, *, stacklevel: int) -> ReCalX:
        z, y = check_logits_labels(logits, labels)
        lv = _levels_for(levels, len(z), type(self).__name__)  # on the CPU, like z and y
        nb = self.n_bins
        bins = level_bins(lv, nb).to(lv.device)
        counts = torch.bincount(bins, minlength=nb)
        short = (counts < self.min_samples_per_bin).nonzero().flatten().tolist()
        if short:
            detail = ", ".join(f"{_bin_label(b, nb)}: {int(counts[b])}" for b in short[:5])
            raise ValueError(
                f"too few validation samples per level bin (min_samples_per_bin="
                f"{self.min_samples_per_bin}): {detail}. Use more samples or fewer bins; with d "
                "features only the levels k/d occur"
            )
        t, bound = _fit_temperatures(z, y, bins, nb)
        separable = _all_correct(z, y, bins, nb)
        sources = torch.arange(nb, device=z.device).repeat(2, 1).T.clone()
        notes = []
        for b in (separable | (bound < 0)).nonzero().flatten().tolist():
            why = ("every prediction correct" if separable[b]
                   else f"T at the search bound {float(t[b]):g}")
            t[b], sources[b] = self._pooled_temperature(z, y, bins, b)
            lo, hi = sources[b].tolist()
            src = f"bins {lo}-{hi}" if lo >= 0 else "no healthy window"
            notes.append(f"{_bin_label(b, nb)} ({why}) -> {src}, T = {float(t[b]):.3g}")
        _warn_pooled_bins(notes, "degenerate level bin(s) take the temperature of their samples",
                          "more (or harder) validation data", stacklevel=stacklevel)
        self.log_temperatures_.copy_(t.log().float())
        self.counts_.copy_(counts)
        self.sources_.copy_(sources)
        self._set_fitted()
        return self

    def _pooled_temperature(self, z: Tensor, y: Tensor, bins: Tensor, b: int
                            ) -> tuple[float, Tensor]:
        """The temperature of the smallest healthy window of bins around ``b``, and the window
        ((-1, -1) and T = 1 when none is healthy)."""
        nb = self.n_bins
        for w in range(1, nb):
            lo, hi = max(0, b - w), min(nb - 1, b + w)
            sel = (bins >= lo) & (bins <= hi)
            one = torch.zeros(int(sel.sum()), dtype=torch.long, device=z.device)
            t, bound = _fit_temperatures(z[sel], y[sel], one, 1)
            if int(bound[0]) >= 0 and not bool(_all_correct(z[sel], y[sel], one, 1)[0]):
                return float(t[0]), torch.tensor([lo, hi], device=z.device)
            if lo == 0 and hi == nb - 1:
                break
        return 1.0, torch.tensor([-1, -1], device=z.device)

    def _calibrate(self, logits: Tensor, levels: Tensor | None) -> Tensor:
        lv = _query_levels(levels, logits, type(self).__name__)
        bins = level_bins(lv, self.n_bins).to(lv.device)
        return logits / self.log_temperatures_.exp().to(logits)[bins][:, None]


class ByLevel(_FitsPerturbed, Calibrator):
    """Any calibrator, fitted once per perturbation-level bin: ReCalX's scheme for every
    calibrator (a calix extension of Decker et al.'s ReCalX, which does this for temperature
    scaling).

    ``n_bins`` equal-width bins of λ ∈ [0, 1]; bin b gets its own fitted copy of
    ``calibrator`` and calibrates the queries whose level falls in b. Fit from
    ``(logits, labels, levels)`` with :meth:`fit` or from a model with :meth:`fit_perturbed`
    (as :meth:`ReCalX.fit_perturbed`).

    Thin or degenerate bins: a bin with fewer than ``min_samples_per_bin`` samples, labels of
    a single class, or every prediction correct (nothing to calibrate against) is fitted on
    its samples pooled with the nearest bins, the window ``[b − w, b + w]`` (clipped) for the
    smallest ``w`` whose pooled samples are none of these -- at most all bins. A warning names
    the pooled bins; :attr:`sources_` records each bin's window. Queries without a level are
    clean (λ = 0, bin 0) when the model is wrapped with :func:`calibrated`.

    Differentiable when ``calibrator`` is.

    Parameters
    ----------
    calibrator : Calibrator -- the template (unfitted, not level-aware); copied per bin.
    n_bins : int -- level bins (default 10, as ReCalX).
    min_samples_per_bin : int -- bins with fewer samples are pooled; fitting raises if all
        samples together are fewer.

    Attributes
    ----------
    calibrators_ : nn.ModuleList of n_bins fitted copies.
    counts_ : Tensor of shape (n_bins,) -- samples of each bin.
    sources_ : Tensor of shape (n_bins, 2) -- (first, last) bin whose samples fitted each copy.
    fallback_bins_ : list of int -- the pooled bins.

    >>> import torch
    >>> z, y, lv = 3 * torch.randn(600, 3), torch.randint(0, 3, (600,)), torch.rand(600)
    >>> cal = ByLevel(VectorScaling(), n_bins=3).fit(z, y, lv)
    >>> cal(z, lv).shape
    torch.Size([600, 3])
    """

    level_aware = True

    def __init__(self, calibrator: Calibrator, n_bins: int = 10, *,
                 min_samples_per_bin: int = 50) -> None:
        super().__init__()
        if not isinstance(calibrator, Calibrator):
            raise TypeError(f"calibrator must be a calix Calibrator, got "
                            f"{type(calibrator).__name__}")
        if calibrator.level_aware:
            raise TypeError(f"{type(calibrator).__name__} is already level-aware; ByLevel "
                            "takes a calibrator of clean logits (temperature, vector, ...)")
        if not isinstance(n_bins, int | np.integer) or n_bins < 1:
            raise ValueError(f"n_bins must be an integer >= 1, got {n_bins!r}")
        if not isinstance(min_samples_per_bin, int | np.integer) or min_samples_per_bin < 1:
            raise ValueError(f"min_samples_per_bin must be an integer >= 1, got "
                             f"{min_samples_per_bin!r}")
        self.n_bins = int(n_bins)
        self.min_samples_per_bin = int(min_samples_per_bin)
        self.differentiable = calibrator.differentiable
        self.calibrators_ = nn.ModuleList(copy.deepcopy(calibrator) for _ in range(self.n_bins))
        self.register_buffer("counts_", torch.zeros(self.n_bins, dtype=torch.long))
        self.register_buffer("sources_", torch.zeros(self.n_bins, 2, dtype=torch.long))

    @property
    def calibrator_name(self) -> str:
        return type(self.calibrators_[0]).__name__

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.calibrator_name}, n_bins={self.n_bins})"

    @property
    def fallback_bins_(self) -> list[int]:
        self._check_fitted()
        own = torch.arange(self.n_bins, device=self.sources_.device)
        return (self.sources_ != own[:, None]).any(1).nonzero().flatten().tolist()

    def _problem(self, z: Tensor, y: Tensor) -> str | None:
        """Why these pooled samples cannot fit a calibrator (None: they can)."""
        if len(y) < self.min_samples_per_bin:
            return f"{len(y)} samples < min_samples_per_bin={self.min_samples_per_bin}"
        if bool((y == y[0]).all()):
            return f"labels of class {int(y[0])} only"
        if bool((z.argmax(1) == y).all()):
            return "every prediction correct"
        return None

    def fit(self, logits: Any, labels: Any, levels: Any = None, **kwargs: Any) -> ByLevel:
        """Fit from logits of shape (n, k), labels of shape (n,) and levels of shape (n,) in
        [0, 1] (any device)."""
        return self._fit(logits, labels, levels, stacklevel=3)

    def _fit(self, logits: Any, labels: Any, levels: Any, *, stacklevel: int) -> ByLevel:
        z, y = check_logits_labels(logits, labels)
        lv = _levels_for(levels, len(z), type(self).__name__)
        if len(z) < self.min_samples_per_bin:
            raise ValueError(
                f"too few validation samples: {len(z)} in all, fewer than "
                f"min_samples_per_bin={self.min_samples_per_bin}; use more samples or a "
                "smaller min_samples_per_bin")
        nb = self.n_bins
        bins = level_bins(lv, nb).to(lv.device)
        counts = torch.bincount(bins, minlength=nb)
        fitted: dict[tuple[int, int], Calibrator] = {}
        sources, notes = [], []
        for b in range(nb):
            why = self._problem(z[bins == b], y[bins == b]) if counts[b] else "no samples"
            lo, hi = b, b
            if why is not None:
                for w in range(1, nb + 1):
                    lo, hi = max(0, b - w), min(nb - 1, b + w)
                    sel = (bins >= lo) & (bins <= hi)
                    if self._problem(z[sel], y[sel]) is None or (lo == 0 and hi == nb - 1):
                        break
                notes.append(f"{_bin_label(b, nb)} ({why}) -> bins {lo}-{hi}")
            if (lo, hi) not in fitted:
                sel = (bins >= lo) & (bins <= hi)
                fitted[(lo, hi)] = copy.deepcopy(self.calibrators_[b]).fit(z[sel], y[sel])
            self.calibrators_[b] = copy.deepcopy(fitted[(lo, hi)])
            sources.append((lo, hi))
        _warn_pooled_bins(notes, "thin or degenerate level bin(s) are fitted on their samples",
                          "more validation data", stacklevel=stacklevel)
        self.counts_.copy_(counts)
        self.sources_.copy_(torch.tensor(sources, dtype=torch.long, device=self.sources_.device))
        self.to(self.counts_.device)
        self._set_fitted()
        return self

    def predict_interval(self, logits: Any, levels: Any
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each query's :meth:`VennAbers.predict_interval` from its level bin's copy (for a
        :class:`VennAbers` template): ``p0, p1, p`` of shape (n, k)."""
        self._check_fitted()
        if not isinstance(self.calibrators_[0], VennAbers):
            raise TypeError(f"predict_interval needs per-level VennAbers copies, not "
                            f"{self.calibrator_name}")
        z = as_tensor(logits, name="logits")
        lv = levels if isinstance(levels, Tensor) else as_tensor(levels, name="levels",
                                                                 device=z.device)
        lv = _query_levels(lv, z, type(self).__name__)
        bins = level_bins(lv.cpu(), self.n_bins).numpy()
        out = [np.zeros((len(z), z.shape[1])) for _ in range(3)]
        for b in np.unique(bins).tolist():  # one batched call per occupied bin
            idx = np.flatnonzero(bins == b)
            for o, part in zip(out, self.calibrators_[b].predict_interval(z[idx]), strict=True):
                o[idx] = part
        return out[0], out[1], out[2]

    def _calibrate(self, logits: Tensor, levels: Tensor | None) -> Tensor:
        lv = _query_levels(levels, logits, type(self).__name__)
        bins = level_bins(lv, self.n_bins).to(lv.device)
        out = None
        for b in torch.unique(bins).tolist():  # one batched call per occupied bin
            idx = (bins == b).nonzero().flatten()
            part = self.calibrators_[b](logits[idx])
            if out is None:
                out = logits.new_zeros((len(logits), part.shape[1]), dtype=part.dtype)
            out = out.index_put((idx,), part)
        if out is None:  # no rows
            return self.calibrators_[0](logits)
        return out


def _by_level(name: str, inner: type[Calibrator]) -> type[ByLevel]:
    """The ByLevel class of ``inner``, registered as ``by_level_<name>`` by the package."""
    cls_name = f"ByLevel{inner.__name__}"

    def __init__(self, n_bins: int = 10, *, min_samples_per_bin: int = 50,
                 **kwargs: Any) -> None:
        ByLevel.__init__(self, inner(**kwargs), n_bins, min_samples_per_bin=min_samples_per_bin)

    __init__.__doc__ = (f"``ByLevel({inner.__name__}(**kwargs), n_bins, "
                        "min_samples_per_bin=...)``.")
    doc = (f"{inner.__name__} fitted per perturbation-level bin: :class:`ByLevel` with a "
           f":class:`{inner.__name__}` template (``{name}``), keyword arguments passed on to "
           f"it. Differentiable: {inner.differentiable}.")
    cls = type(cls_name, (ByLevel,), {"__init__": __init__, "__doc__": doc,
                                      "__module__": __name__, "__qualname__": cls_name,
                                      "differentiable": inner.differentiable})
    return cls


ByLevelVectorScaling = _by_level("vector", VectorScaling)
ByLevelMatrixScaling = _by_level("matrix", MatrixScaling)
ByLevelStructuredMatrixScaling = _by_level("structured_matrix", StructuredMatrixScaling)
ByLevelDirichlet = _by_level("dirichlet", Dirichlet)
ByLevelPlattScaling = _by_level("platt_scaling", PlattScaling)
ByLevelBetaCalibration = _by_level("beta", BetaCalibration)
ByLevelHistogramBinning = _by_level("histogram", HistogramBinning)
ByLevelIsotonicCalibration = _by_level("isotonic", IsotonicCalibration)
ByLevelVennAbers = _by_level("venn_abers", VennAbers)


def _natural_spline_basis(x: Tensor, knots: Tensor) -> Tensor:
    """Natural cubic spline basis at ``x`` of shape (n,) for K knots, of shape (n, K): 1, x and
    K − 2 truncated-power terms, linear beyond the boundary knots (Hastie, Tibshirani &
    Friedman 2009, The Elements of Statistical Learning, eq. 5.4-5.5)."""
    k = len(knots)
    cols = [torch.ones_like(x), x]

    def d(j: int) -> Tensor:
        return ((x - knots[j]).clamp_min(0) ** 3 - (x - knots[-1]).clamp_min(0) ** 3) / (
            knots[-1] - knots[j])

    last = d(k - 2)
    cols += [d(j) - last for j in range(k - 2)]
    return torch.stack(cols, 1)


class SmoothLevelTemperature(_FitsPerturbed, Calibrator):
    """A temperature that varies smoothly with the perturbation level: ``z / T(λ)`` with
    ``ln T(λ) = Σ_j θ_j B_j(λ)`` (a calix method; ReCalX's per-bin temperatures, Decker et al.,
    replaced by one curve).

    ``basis="linear"``: B = (1, λ), two parameters; ``basis="spline"`` (default): a natural
    cubic spline in λ with ``n_knots`` knots equally spaced over [0, 1] (``n_knots``
    parameters, linear beyond the knots). θ is fitted jointly on all perturbed validation
    samples by mean NLL (L-BFGS, float64), from the global temperature: every sample informs
    the neighbouring levels, so far fewer samples per level are needed than for ReCalX's
    independent bins. ln T is clipped to [ln T_MIN, ln T_MAX]. Monotone in the logits at
    every λ, so the argmax never changes; differentiable. Queries without a level are clean
    (λ = 0) under :func:`calibrated`.

    Parameters
    ----------
    n_bins : int -- level bins :meth:`fit_perturbed` stratifies its samples over (and the
        default of :func:`fit_calibrator`); the curve itself has no bins.
    basis : {"spline", "linear"}
    n_knots : int -- spline knots (>= 3; default 4).
    min_samples : int -- fitting raises with fewer samples in all.

    Attributes
    ----------
    coef_ : Tensor of shape (n_basis,) -- θ.
    knots_ : Tensor of shape (n_knots,) (empty for the linear basis).

    >>> import torch
    >>> lv = torch.rand(2000)
    >>> z = 4 * torch.randn(2000, 3)
    >>> y = torch.multinomial(torch.softmax(z / (1 + 4 * lv[:, None]), 1), 1).flatten()
    >>> cal = SmoothLevelTemperature(basis="linear").fit(z, y, lv)
    >>> [round(t, 1) for t in cal.temperature([0.0, 1.0]).tolist()]  # doctest: +SKIP
    [1.0, 5.0]
    """

    level_aware = True

    def __init__(self, n_bins: int = 10, *, basis: str = "spline", n_knots: int = 4,
                 min_samples: int = 50) -> None:
        super().__init__()
        self.n_bins = check_count(n_bins, "n_bins")
        self.basis = check_choice(basis, ("spline", "linear"), "basis")
        if not isinstance(n_knots, int | np.integer) or n_knots < 3:
            raise ValueError(f"n_knots must be an integer >= 3, got {n_knots!r}")
        self.n_knots = int(n_knots)
        self.min_samples = check_count(min_samples, "min_samples")
        n_basis = self.n_knots if self.basis == "spline" else 2
        knots = torch.linspace(0, 1, self.n_knots) if self.basis == "spline" else torch.zeros(0)
        self.register_buffer("coef_", torch.zeros(n_basis, dtype=torch.float64))
        self.register_buffer("knots_", knots.double())

    def _design(self, lv: Tensor) -> Tensor:
        if self.basis == "linear":
            return torch.stack([torch.ones_like(lv), lv], 1)
        return _natural_spline_basis(lv, self.knots_.to(lv))

    def _log_t(self, lv: Tensor, coef: Tensor) -> Tensor:
        return (self._design(lv) @ coef.to(lv)).clamp(math.log(T_MIN), math.log(T_MAX))

    def temperature(self, levels: Any) -> Tensor:
        """The fitted temperature T(λ) at ``levels`` (any shape, values in [0, 1])."""
        self._check_fitted()
        lv = torch.as_tensor(levels, dtype=torch.float64, device=self.coef_.device)
        level_bins(lv.reshape(-1).cpu(), 1)  # checks [0, 1]
        return self._log_t(lv.reshape(-1), self.coef_).exp().reshape(lv.shape)

    def fit(self, logits: Any, labels: Any, levels: Any = None,
            **kwargs: Any) -> SmoothLevelTemperature:
        """Fit from logits of shape (n, k), labels of shape (n,) and levels of shape (n,) in
        [0, 1] (any device)."""
        return self._fit(logits, labels, levels, stacklevel=3)

    def _fit(self, logits: Any, labels: Any, levels: Any, *,
             stacklevel: int) -> SmoothLevelTemperature:
        z, y = check_logits_labels(logits, labels)
        lv = _levels_for(levels, len(z), type(self).__name__)
        level_bins(lv, 1)  # levels in [0, 1]
        if len(z) < self.min_samples:
            raise ValueError(f"too few validation samples: {len(z)} < min_samples="
                             f"{self.min_samples}; use more samples")
        if bool((z.argmax(1) == y).all()):
            raise ValueError("every validation prediction is correct: the NLL keeps falling "
                             "as T -> 0, so no temperature curve can be fitted; use more (or "
                             "harder) validation data")
        one = torch.zeros(len(y), dtype=torch.long, device=z.device)
        t0, _ = _fit_temperatures(z, y, one, 1)
        design = self._design(lv)
        coef = torch.zeros(design.shape[1], dtype=torch.float64, device=z.device)
        coef[0] = math.log(float(t0[0]))
        coef.requires_grad_(True)
        lo, hi = math.log(T_MIN), math.log(T_MAX)

        def loss() -> Tensor:
            log_t = (design @ coef).clamp(lo, hi)
            return nn.functional.cross_entropy(z * torch.exp(-log_t)[:, None], y)

        _lbfgs([coef], loss)
        log_t = design.detach() @ coef.detach()
        if bool(((log_t <= lo) | (log_t >= hi)).any()):
            warnings.warn(
                "the fitted temperature curve reaches the search bounds "
                f"[{T_MIN:g}, {T_MAX:g}] at some levels and is clipped there",
                UserWarning, stacklevel=stacklevel)
        self.coef_.copy_(coef.detach())
        self._set_fitted()
        return self

    def _calibrate(self, logits: Tensor, levels: Tensor | None) -> Tensor:
        lv = _query_levels(levels, logits, type(self).__name__)
        level_bins(lv, 1)  # levels in [0, 1]
        t = self._log_t(lv.double(), self.coef_).exp().to(logits.dtype)
        return logits / t[:, None]


