"""Non-parametric calibrators, one-vs-rest on each class's probability: isotonic regression,
histogram binning and Venn-Abers predictors. Not differentiable."""

from __future__ import annotations

import math
from abc import abstractmethod
from typing import Any

import numpy as np
import torch
from torch import Tensor

from calix._validation import check_count
from calix.calibrate.base import (
    Calibrator,
    _check_classes,
    _columns,
    _probabilities_to_logits,
    check_logits_labels,
)
from calix.models import as_tensor


class _OneVsRestNonParametric(Calibrator):
    """Shared parts of the calibrators that map each class's probability p_j through a fitted
    step or piecewise-linear function (k = 2: class 1 only), then renormalise. Not
    differentiable (the maps are piecewise constant, or fitted by pooling)."""

    differentiable = False

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("n_classes_", torch.zeros((), dtype=torch.long))

    def fit(self, logits: Any, labels: Any, **kwargs: Any) -> _OneVsRestNonParametric:
        z, y = check_logits_labels(logits, labels)
        k = z.shape[1]
        p = torch.softmax(z, dim=1)
        self._fit_columns([(p[:, j], (y == j).double()) for j in _columns(k)])
        self.n_classes_.fill_(k)
        self._set_fitted()
        return self

    @abstractmethod
    def _fit_columns(self, columns: list[tuple[Tensor, Tensor]]) -> None:
        """Fit one map per pair of scores of shape (n,) and 0/1 targets of shape (n,)."""

    @abstractmethod
    def _map(self, j: int, s: Tensor) -> Tensor:
        """The j-th fitted map at scores ``s`` of shape (n,)."""

    def calibrated_probabilities(self, logits: Tensor) -> Tensor:
        """Per-class calibrated probabilities before renormalisation, of shape (n, k)
        (k = 2: class 0 is the complement of class 1)."""
        k = int(self.n_classes_)
        _check_classes(self, logits, k)
        p = torch.softmax(logits.detach().double(), dim=-1)
        cols = _columns(k)
        out = torch.stack([self._map(i, p[:, j]) for i, j in enumerate(cols)], 1)
        return torch.cat([1 - out, out], 1) if k == 2 else out

    def _calibrate(self, logits: Tensor, levels: Tensor | None) -> Tensor:
        return _probabilities_to_logits(self.calibrated_probabilities(logits)).to(logits.dtype)


def _interp(x: Tensor, xp: Tensor, fp: Tensor) -> Tensor:
    """``np.interp``: piecewise-linear through (xp, fp) (xp increasing), constant beyond."""
    if len(xp) == 1:
        return fp.expand_as(x).clone()
    i = torch.searchsorted(xp, x.contiguous()).clamp(1, len(xp) - 1)
    x0, x1, f0, f1 = xp[i - 1], xp[i], fp[i - 1], fp[i]
    w = ((x - x0) / (x1 - x0)).clamp(0, 1)
    return f0 + w * (f1 - f0)


def _pav(y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted isotonic (non-decreasing) least-squares fit of ``y`` by pool adjacent
    violators: one pass with a stack of blocks."""
    means, weights, sizes = [], [], []
    for yi, wi in zip(y.tolist(), w.tolist(), strict=True):
        m, ww, sz = yi, wi, 1
        while means and means[-1] >= m:
            pm, pw, ps = means.pop(), weights.pop(), sizes.pop()
            m, ww, sz = (pm * pw + m * ww) / (pw + ww), pw + ww, ps + sz
        means.append(m)
        weights.append(ww)
        sizes.append(sz)
    return np.repeat(np.asarray(means), sizes)


def _unique_groups(s: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Distinct scores (sorted), the number of samples and of positives at each."""
    xs, inv = torch.unique(s, sorted=True, return_inverse=True)
    cnt = torch.zeros(len(xs), dtype=torch.float64, device=s.device).index_add_(
        0, inv, torch.ones_like(t))
    pos = torch.zeros(len(xs), dtype=torch.float64, device=s.device).index_add_(0, inv, t)
    return xs, cnt, pos


class IsotonicCalibration(_OneVsRestNonParametric):
    """Isotonic regression of the label on the probability, one-vs-rest, renormalised
    (Zadrozny & Elkan 2002, "Transforming classifier scores into accurate multiclass
    probability estimates", KDD).

    For each class j (class 1 alone when k = 2, class 0 then taking the complement), the
    non-decreasing least-squares fit of 1[y = j] on p_j: samples with equal p_j are averaged
    first, the fit is found by pool adjacent violators, and between the fitted points the map
    is linear, constant beyond them -- scikit-learn's ``IsotonicRegression(out_of_bounds=
    "clip")``. Rows whose one-vs-rest probabilities are all 0 become uniform. Not
    differentiable (piecewise constant almost everywhere).

    Attributes
    ----------
    thresholds_ : list of (x, f) Tensor pairs -- the fitted points of each class's map.
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("x_", torch.zeros(0, 0, dtype=torch.float64))
        self.register_buffer("f_", torch.zeros(0, 0, dtype=torch.float64))
        self.register_buffer("size_", torch.zeros(0, dtype=torch.long))

    def _fit_columns(self, columns: list[tuple[Tensor, Tensor]]) -> None:
        xs, fs = [], []
        for s, t in columns:
            x, cnt, pos = _unique_groups(s, t)
            f = _pav((pos / cnt).numpy(), cnt.numpy())
            xs.append(x)
            fs.append(torch.as_tensor(f, device=x.device))
        size = torch.tensor([len(x) for x in xs], device=xs[0].device)
        m = int(size.max())
        pad = [(torch.cat([x, x[-1:].expand(m - len(x))]), torch.cat([f, f[-1:].expand(
            m - len(f))])) for x, f in zip(xs, fs, strict=True)]
        self._store("x_", torch.stack([a for a, _ in pad]))
        self._store("f_", torch.stack([b for _, b in pad]))
        self._store("size_", size)

    @property
    def thresholds_(self) -> list[tuple[Tensor, Tensor]]:
        self._check_fitted()
        return [(self.x_[i, :n], self.f_[i, :n]) for i, n in enumerate(self.size_.tolist())]

    def _map(self, j: int, s: Tensor) -> Tensor:
        n = int(self.size_[j])
        return _interp(s, self.x_[j, :n].to(s), self.f_[j, :n].to(s))


class HistogramBinning(_OneVsRestNonParametric):
    """Histogram binning, one-vs-rest, renormalised (Zadrozny & Elkan 2001, "Obtaining
    calibrated probability estimates from decision trees and naive Bayesian classifiers",
    ICML).

    For each class j (class 1 alone when k = 2), [0, 1] is cut into ``n_bins`` equal-width
    bins of p_j and each bin maps to the fraction of its validation samples of class j. An
    empty bin maps to its midpoint [I]. Rows whose one-vs-rest probabilities are all 0 become
    uniform. Not differentiable (piecewise constant).

    Parameters
    ----------
    n_bins : int -- bins per class (default 10).

    Attributes
    ----------
    values_ : Tensor of shape (n_fitted, n_bins) -- each bin's calibrated probability.
    counts_ : Tensor of shape (n_fitted, n_bins) -- validation samples in each bin.
    """

    def __init__(self, n_bins: int = 10) -> None:
        super().__init__()
        self.n_bins = check_count(n_bins, "n_bins")
        self.register_buffer("values_", torch.zeros(0, self.n_bins, dtype=torch.float64))
        self.register_buffer("counts_", torch.zeros(0, self.n_bins, dtype=torch.long))

    def _after_load(self) -> None:
        self.n_bins = self.values_.shape[1]

    def _bins(self, s: Tensor) -> Tensor:
        return (s * self.n_bins).floor().long().clamp(0, self.n_bins - 1)

    def _fit_columns(self, columns: list[tuple[Tensor, Tensor]]) -> None:
        nb = self.n_bins
        dev = columns[0][0].device
        mid = (torch.arange(nb, dtype=torch.float64, device=dev) + 0.5) / nb
        vals, cnts = [], []
        for s, t in columns:
            b = self._bins(s)
            cnt = torch.bincount(b, minlength=nb)
            pos = torch.zeros(nb, dtype=torch.float64, device=dev).index_add_(0, b, t)
            vals.append(torch.where(cnt > 0, pos / cnt.clamp_min(1), mid))
            cnts.append(cnt)
        self._store("values_", torch.stack(vals))
        self._store("counts_", torch.stack(cnts))

    def _map(self, j: int, s: Tensor) -> Tensor:
        return self.values_[j].to(s)[self._bins(s)]


#: entries of one (rows of a) x (m + 1) chunk in :func:`_venn_abers_table`
_VENN_ABERS_CHUNK = 1 << 22


def _venn_abers_table(cum_w: Tensor, cum_y: Tensor, label: int) -> tuple[Tensor, Tensor]:
    """Isotonic-fit value at a test point added with ``label`` to grouped calibration data.

    ``cum_w``, ``cum_y`` of shape (m + 1,) are the cumulative weights and positives of the m
    groups of equal score (sorted), starting at 0. By the min-max formula of isotonic
    regression, a test point between groups i and i + 1 gets
    ``max_{a <= i} min_{b >= i} (Y_b − Y_a + label) / (W_b − W_a + 1)``, and one tied with
    group g (1-based) gets the same with ``a <= g − 1, b >= g``. All positions at once, rows
    of a in chunks of at most _VENN_ABERS_CHUNK entries (32 MiB per float64 array).

    Returns
    -------
    between : Tensor of shape (m + 1,) -- position i = after the first i groups.
    tied : Tensor of shape (m,) -- position g − 1 = tied with group g.
    """
    m1 = len(cum_w)
    dev = cum_w.device
    b_idx = torch.arange(m1, device=dev)
    between = torch.full((m1,), -math.inf, dtype=torch.float64, device=dev)
    tied = torch.full((m1,), -math.inf, dtype=torch.float64, device=dev)
    rows = max(1, _VENN_ABERS_CHUNK // m1)
    for lo in range(0, m1, rows):
        a = torch.arange(lo, min(m1, lo + rows), device=dev)
        s = (cum_y[None, :] - cum_y[a, None] + label) / (cum_w[None, :] - cum_w[a, None] + 1)
        s = torch.where(b_idx[None, :] >= a[:, None], s, math.inf)
        # r[a, c] = min over b >= c of s[a, b]
        r = s.flip(1).cummin(1).values.flip(1)
        valid_b = b_idx[None, :] >= a[:, None]  # between: a <= c
        between = torch.maximum(between, torch.where(valid_b, r, -math.inf).amax(0))
        valid_t = b_idx[None, :] > a[:, None]  # tied with group c: a <= c - 1
        tied = torch.maximum(tied, torch.where(valid_t, r, -math.inf).amax(0))
    return between, tied[1:]


class VennAbers(_OneVsRestNonParametric):
    """Inductive Venn-Abers predictor (IVAP; Vovk & Petej 2014, "Venn-Abers predictors", UAI;
    the merged probability of Vovk, Petej & Fedorova 2015, "Large-scale probabilistic
    predictors with and without guarantees of validity", NeurIPS).

    Binary: for a test score s (the probability p₁), isotonic regression is fitted twice on
    the calibration scores with (s, 0) added and with (s, 1) added; its values at s are
    p0 <= p1, a probability interval that is valid in Venn's sense whatever the data's
    distribution. The point prediction merges them as ``p1 / (1 − p0 + p1)`` (the minimax
    choice for log-loss). Here both fits are computed exactly for every position a test score
    can take among the calibration scores (between two, or tied with one) at fit time, from
    the min-max formula of isotonic regression -- O(m²) arithmetic in m distinct scores,
    vectorised and chunked -- so prediction is a lookup.

    Multi-class (k > 2): one-vs-rest, each class's p_j against the rest, the merged
    probabilities renormalised; k = 2 fits class 1 only. Not differentiable.
    :meth:`predict_interval` returns the intervals.

    Attributes
    ----------
    scores_ : Tensor of shape (n_fitted, m_max) -- distinct calibration scores per fitted class
        (padded with +inf).
    p0_between_, p1_between_ : Tensor of shape (n_fitted, m_max + 1)
    p0_tied_, p1_tied_ : Tensor of shape (n_fitted, m_max)
    """

    def __init__(self) -> None:
        super().__init__()
        for nm in ("scores_", "p0_between_", "p1_between_", "p0_tied_", "p1_tied_"):
            self.register_buffer(nm, torch.zeros(0, 0, dtype=torch.float64))
        self.register_buffer("size_", torch.zeros(0, dtype=torch.long))

    def _fit_columns(self, columns: list[tuple[Tensor, Tensor]]) -> None:
        fitted = []
        for s, t in columns:
            x, cnt, pos = _unique_groups(s, t)
            zero = torch.zeros(1, dtype=torch.float64, device=s.device)
            cw, cy = torch.cat([zero, cnt.cumsum(0)]), torch.cat([zero, pos.cumsum(0)])
            b0, t0 = _venn_abers_table(cw, cy, 0)
            b1, t1 = _venn_abers_table(cw, cy, 1)
            fitted.append((x, b0, b1, t0, t1))
        size = torch.tensor([len(f[0]) for f in fitted], device=fitted[0][0].device)
        m = int(size.max())

        def pad(v: Tensor, n: int, fill: float) -> Tensor:
            return torch.cat([v, torch.full((n - len(v),), fill, dtype=torch.float64,
                                            device=v.device)])

        self._store("scores_", torch.stack([pad(f[0], m, math.inf) for f in fitted]))
        for i, nm in enumerate(("p0_between_", "p1_between_", "p0_tied_", "p1_tied_")):
            n = m + 1 if "between" in nm else m
            self._store(nm, torch.stack([pad(f[i + 1], n, 0.0) for f in fitted]))
        self._store("size_", size)

    def _interval(self, j: int, s: Tensor) -> tuple[Tensor, Tensor]:
        m = int(self.size_[j])
        xs = self.scores_[j, :m].to(s)
        i = torch.searchsorted(xs, s.contiguous())  # scores below s
        tie = (i < m) & (xs[i.clamp(max=m - 1)] == s)
        it = i.clamp(max=m - 1)

        def pick(between: Tensor, tied: Tensor) -> Tensor:
            return torch.where(tie, tied[j].to(s)[it], between[j].to(s)[i])

        return pick(self.p0_between_, self.p0_tied_), pick(self.p1_between_, self.p1_tied_)

    def _map(self, j: int, s: Tensor) -> Tensor:
        p0, p1 = self._interval(j, s)
        return p1 / (1 - p0 + p1)

    def predict_interval(self, logits: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Venn-Abers intervals and merged probabilities.

        Returns
        -------
        p0, p1 : ndarray of shape (n, k) -- the interval [p0, p1] of each class's probability
            (one-vs-rest; for k = 2 class 0's interval is [1 − p1, 1 − p0] of class 1's).
        p : ndarray of shape (n, k) -- the calibrated probabilities (merged, renormalised;
            equal to :meth:`predict_proba`).
        """
        self._check_fitted()
        z = as_tensor(logits, name="logits")
        self.forward(z)  # the checks of a query (finite, classes)
        k = int(self.n_classes_)
        probs = torch.softmax(z.detach().double(), dim=-1)
        pairs = [self._interval(i, probs[:, j]) for i, j in enumerate(_columns(k))]
        p0 = torch.stack([a for a, _ in pairs], 1)
        p1 = torch.stack([b for _, b in pairs], 1)
        if k == 2:
            p0, p1 = torch.cat([1 - p1, p0], 1), torch.cat([1 - p0, p1], 1)
        p = torch.softmax(_probabilities_to_logits(self.calibrated_probabilities(z)), dim=-1)
        return p0.cpu().numpy(), p1.cpu().numpy(), p.cpu().numpy()


