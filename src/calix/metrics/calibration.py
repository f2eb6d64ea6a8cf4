"""Calibration metrics: binned ECE, KDE-ECE, CE_KL, NLL, Brier, accuracy, and CE by level.

All functions take probabilities of shape ``(n, k)`` (rows summing to 1) and integer labels of
shape ``(n,)``; they return floats (or a :class:`LevelCalibration`). Lower is better for every
calibration error here (see :data:`METRICS`).

Example
-------
>>> import numpy as np
>>> from calix.metrics import ece
>>> p = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]); y = np.array([0, 1, 1])
>>> round(ece(p, y, n_bins=10), 4)
0.3
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from scipy import fft as scipy_fft
from scipy.special import gammaln

from calix._random import make_generator
from calix._validation import check_count, check_index_range, check_simplex
from calix.metrics._base import as_array, metric, metrics_of, procedures_getattr, real_array

__all__ = [
    "ece", "kde_ece", "ce_kl", "ce_kl_binned", "nll", "brier", "accuracy",
    "calibration_by_level", "LevelCalibration", "reliability_curve", "check_probs_labels",  # noqa: F822
    "ace", "mce", "classwise_ece", "smooth_ece", "smooth_reliability_curve",
    "calibration_interval", "CalibrationInterval", "METRICS",
]



def check_probs_labels(probs: Any, labels: Any, *, atol: float = 1e-4) -> tuple[np.ndarray,
                                                                                  np.ndarray]:
    """Validate probabilities (n, k) and labels (n,) and return them as float64 / int64 numpy.

    Raises
    ------
    ValueError
        NaN/inf, values outside [0, 1], rows not summing to 1, mismatched lengths, labels
        outside ``[0, k)``, or no samples.
    """
    p = real_array(probs, "probs")
    y = as_array(labels, "labels")
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"probs must have shape (n, n_classes >= 2), got {p.shape}")
    if len(p) == 0:
        raise ValueError("probs has no samples (0 rows)")
    if not np.isfinite(p).all():
        raise ValueError("probs contain NaN or infinite values")
    try:
        check_simplex(p, atol=atol, name="probs", sums="rows must sum to 1")
    except ValueError as exc:
        if (p < -atol).any() or (p > 1 + atol).any():
            hint = "; these look like logits: pass softmax(logits, axis=1) instead"
        else:
            hint = "; pass probabilities (softmax of logits), not scores"
        raise ValueError(f"{exc}{hint}") from None
    if y.ndim != 1 or len(y) != len(p):
        raise ValueError(f"labels must have shape ({len(p)},), got {y.shape}")
    if y.dtype.kind == "f":
        if not np.isfinite(y).all() or (y != np.round(y)).any():
            raise ValueError("labels must be integer class indices")
    elif y.dtype.kind not in "iub":
        raise ValueError(f"labels must be integer class indices, got dtype {y.dtype}")
    y = y.astype(np.int64)
    check_index_range(y, p.shape[1], "labels")
    return np.clip(p, 0.0, 1.0), y


def _bin_edges(values: np.ndarray, n_bins: int, strategy: str) -> np.ndarray:
    n_bins = check_count(n_bins, "n_bins")
    if strategy == "uniform":
        return np.linspace(0.0, 1.0, n_bins + 1)
    if strategy == "quantile":
        edges = np.quantile(values, np.linspace(0.0, 1.0, n_bins + 1))
        edges[0], edges[-1] = 0.0, 1.0
        return edges
    raise ValueError(f"strategy must be 'uniform' or 'quantile', got {strategy!r}")


def _bin_index(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bins [e_i, e_{i+1}) with the last bin closed (numpy.histogram's convention)."""
    idx = np.searchsorted(edges, values, side="right") - 1
    return np.clip(idx, 0, len(edges) - 2)


def _binned_gap(conf: np.ndarray, hit: np.ndarray, n_bins: int, strategy: str) -> float:
    edges = _bin_edges(conf, n_bins, strategy)
    b = _bin_index(conf, edges)
    count = np.bincount(b, minlength=n_bins)
    s_conf = np.bincount(b, conf, minlength=n_bins)
    s_hit = np.bincount(b, hit, minlength=n_bins)
    return float(np.abs(s_hit - s_conf).sum() / len(conf)) if count.sum() else 0.0


@metric("lower", "calibration")
def ece(
    probs: Any,
    labels: Any,
    *,
    n_bins: int = 15,
    strategy: Literal["uniform", "quantile"] = "uniform",
    mode: Literal["top", "classwise"] = "top",
) -> float:
    """Binned expected calibration error.

    ``top``: Σ_b (n_b / n) |acc_b − conf_b| on top-label confidence (Guo et al. 2017;
    netcal's ECE for k > 2). ``classwise``: the mean over classes of the same quantity on
    each class's probability against its one-vs-rest indicator (Kull et al. 2019).

    Parameters
    ----------
    probs : array-like of shape (n, k)
    labels : array-like of shape (n,)
    n_bins : int
    strategy : {"uniform", "quantile"} -- equal-width or equal-mass bins.
    mode : {"top", "classwise"}
    """
    p, y = check_probs_labels(probs, labels)
    n_bins = check_count(n_bins, "n_bins")
    if mode == "top":
        conf = p.max(1)
        hit = (p.argmax(1) == y).astype(np.float64)
        return _binned_gap(conf, hit, n_bins, strategy)
    if mode == "classwise":
        onehot = np.eye(p.shape[1])[y]
        return float(np.mean([_binned_gap(p[:, c], onehot[:, c], n_bins, strategy)
                              for c in range(p.shape[1])]))
    raise ValueError(f"mode must be 'top' or 'classwise', got {mode!r}")


def reliability_curve(
    probs: Any, labels: Any, *, n_bins: int = 15,
    strategy: Literal["uniform", "quantile"] = "uniform",
    n_boot: int = 0, level: float = 0.95, seed: int | None = 0,
) -> dict[str, np.ndarray]:
    """Per-bin mean confidence, accuracy and count of top-label predictions, optionally with
    a bootstrap band on each bin's accuracy.

    Parameters
    ----------
    probs : array-like of shape (n, k)
    labels : array-like of shape (n,)
    n_bins : int
    strategy : {"uniform", "quantile"}
    n_boot : int -- bootstrap resamples of the examples for the band (0: no band). The bins
        stay those of the full sample; a bin a resample leaves empty does not count there.
    level : float -- the band's nominal level (percentile bootstrap, per bin).
    seed : int or None

    Returns
    -------
    dict of arrays of shape (n_bins,): ``confidence``, ``accuracy`` (NaN for empty bins),
    ``count``, and ``edges`` of shape (n_bins + 1,); with ``n_boot`` > 0 also ``lower`` and
    ``upper`` (NaN for empty bins).
    """
    p, y = check_probs_labels(probs, labels)
    n_bins = check_count(n_bins, "n_bins")
    n_boot = check_count(n_boot, "n_boot", minimum=0)
    level = _check_level(level)
    conf, hit = p.max(1), (p.argmax(1) == y).astype(np.float64)
    edges = _bin_edges(conf, n_bins, strategy)
    b = _bin_index(conf, edges)
    count = np.bincount(b, minlength=n_bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = {
            "confidence": np.bincount(b, conf, minlength=n_bins) / count,
            "accuracy": np.bincount(b, hit, minlength=n_bins) / count,
            "count": count,
            "edges": edges,
        }
    if n_boot:
        rows = []
        for idx in _resamples(len(p), n_boot, max(1, _BOOT_ELEMENTS // len(p)), seed):
            flat = (b[idx] + n_bins * np.arange(len(idx))[:, None]).ravel()
            c = np.bincount(flat, minlength=len(idx) * n_bins).reshape(-1, n_bins)
            h = np.bincount(flat, hit[idx].ravel(), minlength=len(idx) * n_bins)
            with np.errstate(invalid="ignore", divide="ignore"):
                rows.append(np.where(c > 0, h.reshape(-1, n_bins) / c, np.nan))
        lo, hi = _percentiles(np.concatenate(rows), level, axis=0)
        out["lower"], out["upper"] = np.where(count > 0, lo, np.nan), np.where(count > 0, hi,
                                                                               np.nan)
    return out


@metric("lower", "calibration")
def nll(probs: Any, labels: Any, *, eps: float = 1e-12) -> float:
    """Mean negative log-likelihood of the true class (probabilities clipped at ``eps``)."""
    p, y = check_probs_labels(probs, labels)
    return float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], eps, 1.0))))


@metric("lower", "calibration")
def brier(probs: Any, labels: Any) -> float:
    """Multiclass Brier score: mean over samples of Σ_k (p_k − 1[y = k])²."""
    p, y = check_probs_labels(probs, labels)
    return float(np.mean(((p - np.eye(p.shape[1])[y]) ** 2).sum(1)))


@metric("higher", "performance")
def accuracy(probs: Any, labels: Any) -> float:
    """Share of samples whose argmax is the label."""
    p, y = check_probs_labels(probs, labels)
    return float(np.mean(p.argmax(1) == y))


# ---------------------------------------------------------------------- KDE-ECE
def _triweight(u: np.ndarray) -> np.ndarray:
    return np.where(np.abs(u) <= 1, 35.0 / 32.0 * (1 - u**2) ** 3, 0.0)


def _silverman(x: np.ndarray) -> float:
    iqr = np.subtract(*np.percentile(x, [75, 25]))
    spread = min(np.std(x), iqr / 1.349) if iqr > 0 else np.std(x)
    h = spread * (3 * len(x) / 4) ** (-1 / 5)
    return float(h) if h > 0 else 0.05


def _reflected_kde(data: np.ndarray, grid: np.ndarray, h: float, lo: float, hi: float):
    """Triweight KDE on ``grid`` with the data reflected at ``lo`` and ``hi``."""
    if len(data) == 0:
        return np.zeros_like(grid)
    pts = np.concatenate([data, 2 * lo - data, 2 * hi - data])
    u = (grid[:, None] - pts[None, :]) / h
    return _triweight(u).sum(1) / (len(data) * h)


#: The KDE bandwidth is at least this many grid spacings (see :func:`kde_ece`).
KDE_MIN_GRID_SPACINGS = 4


@metric("lower", "calibration")
def kde_ece(
    probs: Any, labels: Any, *, bandwidth: float | Literal["silverman"] = "silverman",
    n_grid: int = 512,
) -> float:
    """KDE-based ECE of the top-label confidence (Posocco & Bonnefoy 2021).

    Densities p̂(s) and p̂(s | correct) by triweight KDE, data reflected at 1/k and 1;
    P(correct | s) = p̂(s|correct)·acc / max(p̂(s), 1e-8); ECE = Σ |P(correct|s) − s| p̂(s) /
    Σ p̂(s) over a grid on [1/k, 1].

    Parameters
    ----------
    bandwidth : float or "silverman"
        Silverman: h = min(std, IQR/1.349)·(3n/4)^(−1/5) on all confidences, raised to the
        floor of ``KDE_MIN_GRID_SPACINGS`` (4) grid spacings, 4·(1 − 1/k)/(n_grid − 1)
        (0.0035 for k = 2 and the default grid). Concentrated confidences (all equal, or all
        within 1e-6 of 1) give a Silverman h far below the grid spacing, where the kernels
        miss the grid (ECE 0) or weigh a handful of samples (ECE off by up to 0.3); with the
        floor every kernel spans at least 8 grid points and the estimate moves by at most
        about h from the binned ECE. A float bandwidth below the floor is refused.
    n_grid : int
        Grid points on [1/k, 1] (>= 2).
    """
    p, y = check_probs_labels(probs, labels)
    if n_grid < 2:
        raise ValueError(f"n_grid must be >= 2, got {n_grid}")
    k = p.shape[1]
    s = p.max(1)
    correct = p.argmax(1) == y
    lo, hi = 1.0 / k, 1.0
    floor = KDE_MIN_GRID_SPACINGS * (hi - lo) / (n_grid - 1)
    if bandwidth == "silverman":
        h = max(_silverman(s), floor)
    else:
        h = float(bandwidth)
        if not h > 0:
            raise ValueError(f"bandwidth must be > 0, got {h}")
        if h < floor:
            raise ValueError(
                f"bandwidth {h:g} is below {KDE_MIN_GRID_SPACINGS} grid spacings ({floor:.3g}) "
                f"of the {n_grid}-point grid, so the kernels miss the grid; use a bandwidth "
                f">= {floor:.3g}, a larger n_grid, or bandwidth='silverman'"
            )
    grid = np.linspace(lo, hi, n_grid)
    dens = _reflected_kde(s, grid, h, lo, hi)
    dens_c = _reflected_kde(s[correct], grid, h, lo, hi)
    acc = correct.mean()
    p_correct = dens_c * acc / np.maximum(dens, 1e-8)
    total = dens.sum()
    return float(np.sum(np.abs(p_correct - grid) * dens) / total) if total > 0 else 0.0


# ---------------------------------------------------------------------- CE_KL
_BANDWIDTHS = tuple(np.logspace(-5, -1, 9)) + (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def _dirichlet_log_kernel(f_eval: np.ndarray, f_centre: np.ndarray, h: float) -> np.ndarray:
    """log Dir(f_eval[a]; α = f_centre[b]/h + 1) for all pairs, shape (len(f_eval),
    len(f_centre))."""
    alpha = f_centre / h + 1.0  # (m, k)
    log_norm = gammaln(alpha.sum(1)) - gammaln(alpha).sum(1)  # (m,)
    return np.log(f_eval) @ (alpha - 1.0).T + log_norm[None, :]


def _clip_simplex(p: np.ndarray, eps: float = 1e-10) -> np.ndarray:
    q = np.clip(p, eps, 1.0)
    return q / q.sum(1, keepdims=True)


def _select_bandwidth(f: np.ndarray, grid: tuple[float, ...], chunk: int) -> float:
    """Leave-one-out maximum likelihood of the Dirichlet KDE of f over ``grid``.

    The n × n log-kernel and its log-sum-exp run in torch (float64, multi-threaded); the result
    equals the numpy computation of :func:`_dirichlet_log_kernel` row for row.
    """
    n = len(f)
    logf = torch.from_numpy(np.log(f))
    ft = torch.from_numpy(f)
    best, best_ll = grid[0], -np.inf
    for h in grid:
        alpha = ft / h + 1.0
        log_norm = torch.lgamma(alpha.sum(1)) - torch.lgamma(alpha).sum(1)
        ll = 0.0
        for s in range(0, n, chunk):
            lk = logf[s : s + chunk] @ (alpha - 1.0).T + log_norm[None, :]
            rows = torch.arange(s, min(s + chunk, n), device=lk.device)
            lk[rows - s, rows] = -torch.inf
            ll += float(torch.logsumexp(lk, dim=1).sum()) - len(rows) * np.log(n - 1)
        if ll > best_ll:
            best, best_ll = h, ll
    return float(best)


@metric("lower", "calibration")
def ce_kl(
    probs: Any,
    labels: Any,
    *,
    bandwidth: float | None = None,
    reduction: Literal["auto", "canonical", "top_label"] = "auto",
    max_classes: int = 5,
    chunk: int = 1024,
    bandwidth_samples: int = 2000,
) -> float:
    """KL calibration error CE_KL = E[Σ_k r_k log(r_k / f_k)] (Popordanoska et al.).

    r̂_i = E[Y | f(X) = f_i] is estimated by leave-one-out kernel regression with the Dirichlet
    kernel K(f_j; f_i) = Dir(f_j; α = f_i/h + 1), in log space. The bandwidth h is chosen by
    leave-one-out maximum likelihood over a log grid 1e-5…1e-1 ∪ {0.2…1} unless given.

    ``reduction``: ``"canonical"`` estimates r on the full simplex; ``"top_label"`` applies the
    same estimator to f = (conf, 1 − conf) and y = (correct, wrong); ``"auto"`` (default) is
    canonical up to ``max_classes`` classes and top-label above. The canonical kernel
    estimator's upward bias grows fast with k at the sample sizes of a level bin -- on a
    perfectly calibrated synthetic model with n = 2000 it measured 0.001 (k = 2), 0.011
    (k = 3) and 0.37 (k = 10) -- so for many classes the top-label reduction is the usable one.

    Parameters
    ----------
    probs : array-like of shape (n, k)
    labels : array-like of shape (n,)
    bandwidth : float or None
    reduction : {"auto", "canonical", "top_label"}
    max_classes : int -- the ``"auto"`` threshold.
    bandwidth_samples : int
        The bandwidth is selected on at most this many samples (a fixed, seeded subset when
        there are more): the leave-one-out likelihood costs O(n²) per grid point, and the
        selected h is stable well before n = 2000. The estimate itself uses every sample.
    """
    p, y = check_probs_labels(probs, labels)
    if len(p) < 3:
        raise ValueError(f"ce_kl needs at least 3 samples, got {len(p)}")
    if reduction not in ("auto", "canonical", "top_label"):
        raise ValueError(f"reduction must be 'auto', 'canonical' or 'top_label', got {reduction!r}")
    k = p.shape[1]
    if reduction == "top_label" or (reduction == "auto" and k > max_classes):
        conf = p.max(1)
        hit = (p.argmax(1) == y).astype(np.float64)
        f = np.stack([conf, 1 - conf], 1)
        onehot = np.stack([hit, 1 - hit], 1)
    else:
        f = p
        onehot = np.eye(k)[y]
    f = _clip_simplex(f)
    if bandwidth_samples < 3:
        raise ValueError(f"bandwidth_samples must be >= 3, got {bandwidth_samples}")
    if bandwidth is None:
        sub = f
        if len(f) > bandwidth_samples:
            idx = np.random.default_rng(0).choice(len(f), bandwidth_samples, replace=False)
            sub = f[np.sort(idx)]
        h = _select_bandwidth(sub, _BANDWIDTHS, chunk)
    else:
        h = float(bandwidth)
    if h <= 0:
        raise ValueError(f"bandwidth must be > 0, got {h}")
    n = len(f)
    r = np.empty_like(f)
    for s in range(0, n, chunk):
        # K(f_j; f_i): density with centre f_i (rows) evaluated at f_j (columns)
        lk = _dirichlet_log_kernel(f, f[s : s + chunk], h).T  # (c, n)
        rows = np.arange(s, min(s + chunk, n))
        lk[rows - s, rows] = -np.inf
        w = np.exp(lk - lk.max(1, keepdims=True))
        r[s : s + len(rows)] = (w @ onehot) / w.sum(1, keepdims=True)
    r = np.clip(r, 0.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(r > 0, r * (np.log(np.maximum(r, 1e-300)) - np.log(f)), 0.0)
    return float(max(terms.sum(1).mean(), 0.0))


@metric("lower", "calibration")
def ce_kl_binned(probs: Any, labels: Any, *, n_bins: int = 15) -> float:
    """Fast top-label CE_KL: per equal-width confidence bin, mean KL(Bern(acc_b) ‖ Bern(conf_i))."""
    p, y = check_probs_labels(probs, labels)
    n_bins = check_count(n_bins, "n_bins")
    conf = np.clip(p.max(1), 1e-10, 1 - 1e-10)
    hit = (p.argmax(1) == y).astype(np.float64)
    b = _bin_index(conf, _bin_edges(conf, n_bins, "uniform"))
    count = np.bincount(b, minlength=n_bins)
    acc = np.bincount(b, hit, minlength=n_bins) / np.maximum(count, 1)
    r = acc[b]

    def xlogy(a, c):
        return np.where(a > 0, a * np.log(np.maximum(a, 1e-300) / c), 0.0)

    return float(np.mean(xlogy(r, conf) + xlogy(1 - r, 1 - conf)))


# ---------------------------------------------------------------------- binned family, by rows
# Every binned metric below is computed by one code path on a (b, n) matrix of sample indices:
# row r is one (re)sample of the data. The metric itself is row 0 of the identity, and
# :func:`calibration_interval` feeds the bootstrap resamples through the same path in chunks.


def _top_label(p: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Top-label confidence and correctness (float 0/1), each of shape (n,)."""
    return p.max(1), (p.argmax(1) == y).astype(np.float64)


def _check_enough(n: int, n_bins: int) -> None:
    if n < n_bins:
        raise ValueError(f"{n} samples are fewer than n_bins={n_bins}, so bins stay empty; "
                         f"pass n_bins <= {n} or more samples")


def _bin_sums(conf: np.ndarray, hit: np.ndarray, n_bins: int, strategy: str
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-bin count, sum of confidences and sum of hits for each row of ``conf`` and ``hit``
    (b, n): three arrays of shape (b, n_bins).

    ``uniform``: equal-width bins on [0, 1]; ``quantile``: equal-mass bins, the edges the
    quantiles of each row (as :func:`ece`, first and last edge 0 and 1). Bins are
    [e_i, e_{i+1}) with the last closed, as :func:`numpy.histogram` and netcal.
    """
    b, n = conf.shape
    if strategy == "uniform":
        edges = torch.from_numpy(np.linspace(0.0, 1.0, n_bins + 1))
    elif strategy == "quantile":
        e = np.quantile(conf, np.linspace(0.0, 1.0, n_bins + 1), axis=1).T.copy()
        e[:, 0], e[:, -1] = 0.0, 1.0
        edges = torch.from_numpy(e)
    else:
        raise ValueError(f"strategy must be 'uniform' or 'quantile', got {strategy!r}")
    idx = torch.searchsorted(edges, torch.from_numpy(np.ascontiguousarray(conf)), right=True)
    idx = np.clip(idx.numpy() - 1, 0, n_bins - 1)
    flat = (idx + n_bins * np.arange(b)[:, None]).ravel()
    size = b * n_bins
    count = np.bincount(flat, minlength=size).reshape(b, n_bins)
    s_conf = np.bincount(flat, conf.ravel(), minlength=size).reshape(b, n_bins)
    s_hit = np.bincount(flat, hit.ravel(), minlength=size).reshape(b, n_bins)
    return count, s_conf, s_hit


def _reduce_gaps(count: np.ndarray, s_conf: np.ndarray, s_hit: np.ndarray, n: int,
                 how: str) -> np.ndarray:
    """ECE (mass-weighted mean gap), ACE (mean gap over non-empty bins) or MCE (largest gap
    over non-empty bins) of each row, shape (b,)."""
    if how == "ece":
        return np.abs(s_hit - s_conf).sum(1) / n
    full = count > 0
    gap = np.abs(s_hit - s_conf) / np.maximum(count, 1)
    if how == "ace":
        return gap.sum(1) / np.maximum(full.sum(1), 1)
    return gap.max(1)  # mce: empty bins have gap 0 and gaps are >= 0


def _binned_rows(p: np.ndarray, y: np.ndarray, idx: np.ndarray, *, n_bins: int, strategy: str,
                 mode: str, how: str) -> np.ndarray:
    """A binned calibration error of every row of sample indices ``idx`` (b, n): shape (b,)."""
    n = idx.shape[1]
    if mode == "top":
        conf, hit = _top_label(p, y)
        return _reduce_gaps(*_bin_sums(conf[idx], hit[idx], n_bins, strategy), n, how)
    if mode == "classwise":
        out = np.zeros(len(idx))
        for c in range(p.shape[1]):
            conf, hit = p[:, c], (y == c).astype(np.float64)
            out += _reduce_gaps(*_bin_sums(conf[idx], hit[idx], n_bins, strategy), n, how)
        return out / p.shape[1]
    raise ValueError(f"mode must be 'top' or 'classwise', got {mode!r}")


def _whole(n: int) -> np.ndarray:
    """The identity resample: one row of all sample indices, shape (1, n)."""
    return np.arange(n)[None, :]


def _binned_error(probs: Any, labels: Any, *, n_bins: int, strategy: str, mode: str,
                  how: str) -> float:
    """The binned error ``how`` of the whole sample (:func:`_binned_rows`), after checking
    ``probs``, ``labels`` and ``n_bins`` (at most n)."""
    p, y = check_probs_labels(probs, labels)
    n_bins = check_count(n_bins, "n_bins")
    _check_enough(len(p), n_bins)
    return float(_binned_rows(p, y, _whole(len(p)), n_bins=n_bins, strategy=strategy,
                              mode=mode, how=how)[0])

@metric("lower", "calibration")
def ace(
    probs: Any, labels: Any, *, n_bins: int = 15, mode: Literal["top", "classwise"] = "top",
) -> float:
    """Adaptive calibration error: the mean gap |acc_b − conf_b| over equal-mass bins.

    Nixon et al. 2019, "Measuring Calibration in Deep Learning" (CVPR Workshops): the bins
    hold equal numbers of samples (edges at the quantiles of the scores, as
    :func:`ece` with ``strategy="quantile"``), and every non-empty bin counts equally.
    ``top`` bins the top-label confidence against correctness (netcal's ``ACE`` with
    ``equal_intervals=False`` for k > 2); ``classwise`` bins each class's probability against
    its one-vs-rest indicator and averages over classes, Nixon et al.'s ACE over all classes.
    With no ties the bins differ in size by at most one sample, so the value is within
    a fraction 1/(n/n_bins) of ``ece(..., strategy="quantile")``.

    Parameters
    ----------
    probs : array-like of shape (n, k)
    labels : array-like of shape (n,)
    n_bins : int -- at most n.
    mode : {"top", "classwise"}

    Examples
    --------
    >>> import numpy as np
    >>> p = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]]); y = np.array([0, 1, 1, 1])
    >>> round(ace(p, y, n_bins=2), 4)   # bins {0.6, 0.7} and {0.8, 0.9}: gaps 0.15, 0.15
    0.15
    """
    return _binned_error(probs, labels, n_bins=n_bins, strategy="quantile", mode=mode,
                         how="ace")


@metric("lower", "calibration")
def mce(
    probs: Any, labels: Any, *, n_bins: int = 15,
    strategy: Literal["uniform", "quantile"] = "uniform",
    mode: Literal["top", "classwise"] = "top",
) -> float:
    """Maximum calibration error: the largest gap |acc_b − conf_b| over non-empty bins.

    Naeini, Cooper & Hauskrecht 2015, "Obtaining Well Calibrated Probabilities Using Bayesian
    Binning" (AAAI). ``top`` on the top-label confidence (netcal's ``MCE`` for k > 2),
    ``classwise`` the mean over classes of each class's one-vs-rest MCE. A single sample
    decides a bin's gap, so the value is noisy for small bins; see
    :func:`calibration_interval`.

    Parameters
    ----------
    probs : array-like of shape (n, k)
    labels : array-like of shape (n,)
    n_bins : int -- at most n.
    strategy : {"uniform", "quantile"} -- equal-width or equal-mass bins.
    mode : {"top", "classwise"}
    """
    return _binned_error(probs, labels, n_bins=n_bins, strategy=strategy, mode=mode,
                         how="mce")


@metric("lower", "calibration")
def classwise_ece(
    probs: Any, labels: Any, *, n_bins: int = 15,
    strategy: Literal["uniform", "quantile"] = "uniform",
) -> float:
    """Classwise ECE: the mean over classes c of the binned ECE of p_c against 1[y = c].

    Kull et al. 2019, "Beyond temperature scaling: Obtaining well-calibrated multi-class
    probabilities with Dirichlet calibration" (NeurIPS). The same number as
    ``ece(..., mode="classwise")``, under its own name so that it can be ranked and
    bootstrapped as a metric; it refuses fewer samples than bins.

    Parameters
    ----------
    probs : array-like of shape (n, k)
    labels : array-like of shape (n,)
    n_bins : int -- at most n.
    strategy : {"uniform", "quantile"}
    """
    return _binned_error(probs, labels, n_bins=n_bins, strategy=strategy, mode="classwise",
                         how="ece")


# ---------------------------------------------------------------------- smooth ECE
#: Grid nodes on [0, 1] of :func:`smooth_ece` (spacing 1/2048).
SMOOTH_GRID = 2049
#: The smallest bandwidth :func:`smooth_ece` uses is this many grid spacings.
SMOOTH_MIN_SPACINGS = 4


def _linear_binning(x: np.ndarray, w: np.ndarray, n_grid: int) -> np.ndarray:
    """Weights ``w`` at points ``x`` in [0, 1] (b, n) shared linearly between the two nearest
    of ``n_grid`` equally spaced nodes: shape (b, n_grid)."""
    b = len(x)
    pos = x * (n_grid - 1)
    lo = np.clip(np.floor(pos).astype(np.int64), 0, n_grid - 2)
    frac = pos - lo
    flat = lo + n_grid * np.arange(b)[:, None]
    size = b * n_grid
    out = np.bincount(flat.ravel(), (w * (1 - frac)).ravel(), minlength=size)
    out += np.bincount((flat + 1).ravel(), (w * frac).ravel(), minlength=size)
    return out.reshape(b, n_grid)


class _Smoother:
    """Reflected-Gaussian kernel sums of binned residuals and counts, for several rows at once.

    For every row, the residuals y_i − f_i and unit weights are binned linearly onto the grid
    t_j = j/(G − 1) and extended evenly to period 2 (the grid mirrored at 0 and 1; a node at
    0 or 1 is its own image and counts twice). A circular convolution with a Gaussian of each
    row's own σ, by FFT with the Gaussian's spectrum exp(−2π²σ²ν²) (aliasing below e^-79
    for σ >= 4 grid spacings), then gives Σ_i K̃_σ(t_j, f_i) with K̃_σ(t, s) = Σ_m φ_σ(t − s
    + 2m) + φ_σ(t + s + 2m): the density at t of f + η folded onto [0, 1], Błasiok &
    Nakkiran's reflected kernel with every image.
    """

    def __init__(self, f: np.ndarray, resid: np.ndarray, n_grid: int) -> None:
        g = n_grid
        self.g, self.h = g, 1.0 / (g - 1)
        v = np.concatenate([_linear_binning(f, resid, g), _linear_binning(f, np.ones_like(f), g)])
        mid = v.copy()
        mid[:, [0, -1]] *= 2  # a node at 0 or 1 is its own mirror image: both terms land there
        ext = np.concatenate([mid, v[:, -2:0:-1]], axis=1)  # (2b, 2g - 2): one period
        self.length = ext.shape[1]
        self.spectrum = scipy_fft.rfft(ext, axis=1).reshape(2, len(f), -1)
        freq = np.arange(self.spectrum.shape[2]) / (self.length * self.h)
        self.freq2 = -2.0 * np.pi**2 * freq**2
        self.weights = np.ones(g)
        self.weights[[0, -1]] = 0.5  # trapezoid rule

    def sums(self, sigma: np.ndarray, rows: np.ndarray | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
        """Σ_i K̃(t_j, f_i)(y_i − f_i) and Σ_i K̃(t_j, f_i) at the grid nodes, each (b, G),
        for one σ per row (of ``rows``, default all), up to a common factor per row."""
        sigma = np.asarray(sigma, dtype=np.float64)
        # the kernel's spectrum is below e^-44 past frequency 1.5/σ: those terms are left out
        top = min(self.spectrum.shape[2], int(np.ceil(1.5 * self.length * self.h
                                                       / sigma.min())) + 1)
        spec = self.spectrum[:, :, :top]
        spec = spec if rows is None else spec[:, rows]
        ker = np.exp(self.freq2[None, :top] * sigma[:, None] ** 2)  # (b, top), real
        out = scipy_fft.irfft(spec * ker[None], n=self.length, axis=-1)[..., :self.g]
        return out[0], out[1]

    def smece(self, sigma: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """smECE_σ of every row: ∫|Σ_i K̃(t, f_i) r_i| dt / ∫Σ_i K̃(t, f_i) dt, shape (b,)."""
        s_r, s_d = self.sums(sigma, rows)
        return (np.abs(s_r) @ self.weights) / (s_d @ self.weights)

    def fixed_point(self, sigma_min: float) -> tuple[np.ndarray, np.ndarray]:
        """(σ*, smECE_σ*) of every row, σ* the fixed point smECE_σ* = σ* in [``sigma_min``, 1]
        (1 when smECE_1 >= 1; ``sigma_min`` when smECE there is below it).

        Illinois regula falsi on log σ (g(x) = smECE_{e^x} − e^x decreases), each step on the
        rows not yet converged: |g| <= 1e-10 or a bracket narrower than 1e-12.
        """
        b = self.spectrum.shape[1]
        a, c = np.full(b, np.log(sigma_min)), np.zeros(b)
        ga = self.smece(np.exp(a)) - np.exp(a)
        gc = self.smece(np.ones(b)) - 1.0
        x = np.where(gc >= 0, c, a)
        value = np.where(gc >= 0, gc + 1.0, ga + np.exp(a))
        active = np.flatnonzero((ga > 0) & (gc < 0))
        side = np.zeros(b)
        for _ in range(100):
            if not len(active):
                break
            i = active
            xm = (a[i] * gc[i] - c[i] * ga[i]) / (gc[i] - ga[i])
            gm = self.smece(np.exp(xm), i) - np.exp(xm)
            x[i], value[i] = xm, gm + np.exp(xm)
            pos = gm > 0
            # g(xm) > 0: xm replaces a; else it replaces c; an end kept twice has its g halved
            keep_c, keep_a = i[pos], i[~pos]
            gc[keep_c] = np.where(side[keep_c] == 1, gc[keep_c] / 2, gc[keep_c])
            ga[keep_a] = np.where(side[keep_a] == -1, ga[keep_a] / 2, ga[keep_a])
            a[keep_c], ga[keep_c], side[keep_c] = xm[pos], gm[pos], 1
            c[keep_a], gc[keep_a], side[keep_a] = xm[~pos], gm[~pos], -1
            done = (np.abs(gm) <= 1e-10) | (c[i] - a[i] <= 1e-12)
            active = i[~done]
        return np.exp(x), value


def _smooth_bandwidth(bandwidth: float | None, n_grid: int) -> tuple[float | None, float]:
    """(the fixed bandwidth or None, the smallest usable bandwidth) for ``n_grid`` nodes."""
    n_grid = check_count(n_grid, "n_grid", minimum=17)
    sigma_min = SMOOTH_MIN_SPACINGS / (n_grid - 1)
    if bandwidth is None:
        return None, sigma_min
    if isinstance(bandwidth, bool) or not isinstance(bandwidth, int | float | np.number):
        raise TypeError(f"bandwidth must be a number or None, got {bandwidth!r}")
    h = float(bandwidth)
    if not sigma_min <= h <= 1.0:
        raise ValueError(
            f"bandwidth must lie in [{sigma_min:.3g}, 1] ({SMOOTH_MIN_SPACINGS} grid spacings "
            f"of the {n_grid}-node grid up to 1), got {bandwidth!r}; use a larger n_grid for a "
            f"smaller bandwidth, or bandwidth=None for the fixed point")
    return h, sigma_min


def _smooth_rows(p: np.ndarray, y: np.ndarray, idx: np.ndarray, *, bandwidth: float | None,
                 n_grid: int) -> tuple[np.ndarray, np.ndarray]:
    """smECE and its bandwidth of every row of sample indices ``idx`` (b, n): two (b,)."""
    conf, hit = _top_label(p, y)
    sm = _Smoother(conf[idx], (hit - conf)[idx], n_grid)
    fixed, sigma_min = _smooth_bandwidth(bandwidth, n_grid)
    if fixed is not None:
        sigma = np.full(len(idx), fixed)
        return sm.smece(sigma), sigma
    sigma, value = sm.fixed_point(sigma_min)
    return value, sigma


@metric("lower", "calibration")
def smooth_ece(
    probs: Any, labels: Any, *, bandwidth: float | None = None, n_grid: int = SMOOTH_GRID,
) -> float:
    """Smooth ECE of the top-label confidence (Błasiok & Nakkiran, "Smooth ECE: Principled
    Reliability Diagrams via Kernel Smoothing", ICLR 2024).

    With f_i the top-label confidence, r_i = 1[correct] − f_i and K̃_σ the Gaussian kernel
    reflected at 0 and 1, smECE_σ = ∫ |Σ_i K̃_σ(t, f_i) r_i| dt / ∫ Σ_i K̃_σ(t, f_i) dt: the
    kernel-smoothed residual r̂_σ(t) integrated against the smoothed density of f. Without a
    ``bandwidth`` σ is the paper's principled choice, the fixed point smECE_σ* = σ*
    (smECE_σ does not increase with σ), found by Illinois regula falsi on log σ to
    |smECE_σ − σ| <= 1e-10.

    K̃_σ(t, s) = Σ_m φ_σ(t − s + 2m) + φ_σ(t + s + 2m) is the density at t of s + N(0, σ²)
    folded onto [0, 1] (the paper's reflection, every image kept; relplot keeps the images at
    −s and 2 − s only, which differs by less than φ(1/σ) relative, below 1e-20 for
    σ <= 0.1). The sums are computed on a grid of ``n_grid`` nodes: each f_i is shared
    linearly between its two nearest nodes (an error of order (grid spacing / σ)², measured
    below 3e-3 relative at the smallest σ and below 1e-6 from σ = 0.02) and the kernel is
    applied by FFT over the grid extended evenly to period 2. Bandwidths below
    ``SMOOTH_MIN_SPACINGS`` (4) grid spacings are not used: a fixed point below it (only for
    very large, nearly calibrated samples) is reported as smECE at that floor, 0.002 by
    default; raise ``n_grid`` to resolve it.

    Parameters
    ----------
    probs : array-like of shape (n, k)
    labels : array-like of shape (n,)
    bandwidth : float in [floor, 1] or None -- a fixed σ (relplot's ``smECE_sigma``), or
        None for the fixed point.
    n_grid : int -- grid nodes (>= 17).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> conf = rng.uniform(0.5, 1.0, 4000)
    >>> p = np.stack([conf, 1 - conf], 1); y = (rng.random(4000) > conf).astype(int)
    >>> 0 < smooth_ece(p, y) < 0.03     # calibrated: small
    True
    """
    p, y = check_probs_labels(probs, labels)
    value, _ = _smooth_rows(p, y, _whole(len(p)), bandwidth=_smooth_bandwidth(
        bandwidth, n_grid)[0], n_grid=n_grid)
    return float(value[0])


def smooth_reliability_curve(
    probs: Any, labels: Any, *, bandwidth: float | None = None, n_grid: int = SMOOTH_GRID,
    n_boot: int = 0, level: float = 0.95, seed: int | None = 0,
) -> dict[str, Any]:
    """The smoothed reliability curve of the top-label confidence and, optionally, its
    bootstrap band (Błasiok & Nakkiran, ICLR 2024).

    At each grid node t, accuracy(t) = t + r̂_σ(t) with r̂_σ the kernel-smoothed residual of
    :func:`smooth_ece` and σ its fixed point (or ``bandwidth``); density(t) the reflected
    kernel density of the confidences (integrating to 1 on [0, 1]).

    Parameters
    ----------
    probs, labels, bandwidth, n_grid : as :func:`smooth_ece`.
    n_boot : int -- bootstrap resamples of the examples for the band (0: no band). The band
        keeps σ of the full sample, so it shows the sampling spread of the curve at the
        smoothing the plot uses.
    level : float -- the band's nominal level (percentile bootstrap, pointwise).
    seed : int or None

    Returns
    -------
    dict with ``t``, ``accuracy``, ``density`` (arrays of shape (n_grid,); accuracy NaN where
    the density underflows), ``bandwidth`` and ``smooth_ece`` (floats), and with ``n_boot``
    > 0 also ``lower`` and ``upper`` of shape (n_grid,).
    """
    p, y = check_probs_labels(probs, labels)
    fixed, sigma_min = _smooth_bandwidth(bandwidth, n_grid)
    n_boot = check_count(n_boot, "n_boot", minimum=0)
    level = _check_level(level)
    conf, hit = _top_label(p, y)
    sm = _Smoother(conf[None], (hit - conf)[None], n_grid)
    sigma = np.array([fixed]) if fixed is not None else sm.fixed_point(sigma_min)[0]
    t = np.linspace(0.0, 1.0, n_grid)

    def curve(s_r: np.ndarray, s_d: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(s_d > 0, t + s_r / s_d, np.nan)

    s_r, s_d = sm.sums(sigma)
    out: dict[str, Any] = {
        "t": t, "accuracy": curve(s_r, s_d)[0],
        "density": s_d[0] / (s_d[0] @ sm.weights / (n_grid - 1)),
        "bandwidth": float(sigma[0]), "smooth_ece": float(sm.smece(sigma)[0]),
    }
    if n_boot:
        rows = []
        chunk = max(1, _BOOT_ELEMENTS // max(len(p), 8 * n_grid))
        for idx in _resamples(len(p), n_boot, chunk, seed):
            smb = _Smoother(conf[idx], (hit - conf)[idx], n_grid)
            rows.append(curve(*smb.sums(np.full(len(idx), sigma[0]))))
        lo, hi = _percentiles(np.concatenate(rows), level, axis=0)
        out["lower"], out["upper"] = lo, hi
    return out


# ---------------------------------------------------------------------- bootstrap intervals
#: Elements of one (resamples, n) index block. The binned metrics hold about a dozen arrays of
#: this size at once (4 MiB each in float64), so a bootstrap peaks near 50 MiB whatever n is.
_BOOT_ELEMENTS = 1 << 19


def _check_level(level: Any) -> float:
    if isinstance(level, bool) or not isinstance(level, int | float | np.number) \
            or not 0 < float(level) < 1:
        raise ValueError(f"level must be a number in (0, 1), e.g. 0.95, got {level!r}")
    return float(level)


def _percentiles(values: np.ndarray, level: float, axis: int | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The (1 − level)/2 and (1 + level)/2 quantiles (linear interpolation), NaN ignored."""
    with np.errstate(invalid="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices stay NaN
            lo, hi = np.nanquantile(values, [(1 - level) / 2, (1 + level) / 2], axis=axis)
    return lo, hi


def _resamples(n: int, n_boot: int, chunk: int, seed: int | None) -> Iterator[np.ndarray]:
    """Bootstrap resamples of n examples, ``chunk`` at a time: int arrays (b, n).

    Drawn from :func:`calix._random.make_generator` through ``torch.rand``, so the resamples
    are the same whatever ``chunk`` is.
    """
    g = make_generator(seed)
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        u = torch.rand(b, n, generator=g, dtype=torch.float64)
        yield (u * n).long().clamp_max(n - 1).numpy()


def _kw(kwargs: dict[str, Any], name: str, default: Any) -> Any:
    return kwargs.get(name, default)


def _rows_ece(p, y, idx, **kw):
    return _binned_rows(p, y, idx, n_bins=_kw(kw, "n_bins", 15),
                        strategy=_kw(kw, "strategy", "uniform"), mode=_kw(kw, "mode", "top"),
                        how="ece")


def _rows_ace(p, y, idx, **kw):
    return _binned_rows(p, y, idx, n_bins=_kw(kw, "n_bins", 15), strategy="quantile",
                        mode=_kw(kw, "mode", "top"), how="ace")


def _rows_mce(p, y, idx, **kw):
    return _binned_rows(p, y, idx, n_bins=_kw(kw, "n_bins", 15),
                        strategy=_kw(kw, "strategy", "uniform"), mode=_kw(kw, "mode", "top"),
                        how="mce")


def _rows_classwise(p, y, idx, **kw):
    return _binned_rows(p, y, idx, n_bins=_kw(kw, "n_bins", 15),
                        strategy=_kw(kw, "strategy", "uniform"), mode="classwise", how="ece")


def _rows_mean(per_sample: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    def rows(p, y, idx, **kw):
        return per_sample(p, y, **kw)[idx].mean(1)
    return rows


def _rows_ce_kl_binned(p, y, idx, **kw):
    n_bins = _kw(kw, "n_bins", 15)
    conf = np.clip(p.max(1), 1e-10, 1 - 1e-10)
    hit = (p.argmax(1) == y).astype(np.float64)
    bins = _bin_index(conf, _bin_edges(conf, n_bins, "uniform"))
    b = len(idx)
    flat = bins[idx] + n_bins * np.arange(b)[:, None]
    count = np.bincount(flat.ravel(), minlength=b * n_bins)
    acc = np.bincount(flat.ravel(), hit[idx].ravel(), minlength=b * n_bins) / np.maximum(count, 1)
    r, c = acc[flat], conf[idx]
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = np.where(r > 0, r * np.log(np.maximum(r, 1e-300) / c), 0.0)
        t2 = np.where(r < 1, (1 - r) * np.log(np.maximum(1 - r, 1e-300) / (1 - c)), 0.0)
    return (t1 + t2).mean(1)


def _rows_smooth(p, y, idx, **kw):
    n_grid = _kw(kw, "n_grid", SMOOTH_GRID)
    return _smooth_rows(p, y, idx, bandwidth=_smooth_bandwidth(kw.get("bandwidth"), n_grid)[0],
                        n_grid=n_grid)[0]


def _nll_terms(p, y, eps=1e-12):
    return -np.log(np.clip(p[np.arange(len(y)), y], eps, 1.0))


def _brier_terms(p, y):
    return ((p - np.eye(p.shape[1])[y]) ** 2).sum(1)


def _accuracy_terms(p, y):
    return (p.argmax(1) == y).astype(np.float64)


#: metric -> (its value on every row of a (b, n) index matrix, bytes per (row, example)).
#: Metrics not listed are bootstrapped by calling them on each resample.
_BATCHED: dict[Callable[..., float], tuple[Callable[..., np.ndarray], int]] = {
    ece: (_rows_ece, 1), ace: (_rows_ace, 1), mce: (_rows_mce, 1),
    classwise_ece: (_rows_classwise, 1), ce_kl_binned: (_rows_ce_kl_binned, 1),
    nll: (_rows_mean(_nll_terms), 1), brier: (_rows_mean(_brier_terms), 1),
    accuracy: (_rows_mean(_accuracy_terms), 1), smooth_ece: (_rows_smooth, 0),
}


@dataclass(frozen=True)
class CalibrationInterval:
    """A metric's value on the sample and its percentile-bootstrap interval.

    Attributes
    ----------
    value : float -- the metric on all examples.
    lower, upper : float -- the (1 − level)/2 and (1 + level)/2 quantiles of the bootstrap
        distribution.
    level : float
    n_boot : int -- bootstrap resamples.
    metric : str
    """

    value: float
    lower: float
    upper: float
    level: float
    n_boot: int
    metric: str

    def as_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "value": self.value, "lower": self.lower,
                "upper": self.upper, "level": self.level, "n_boot": self.n_boot}


def calibration_interval(
    metric: Callable[..., float],
    probs: Any,
    labels: Any,
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int | None = 0,
    chunk: int | None = None,
    metric_kwargs: dict[str, Any] | None = None,
) -> CalibrationInterval:
    """Percentile-bootstrap interval of a calibration metric over examples (Efron &
    Tibshirani 1993, *An Introduction to the Bootstrap*, ch. 13).

    Each resample draws n examples with replacement; the metric is recomputed on it and the
    interval is the (1 ± level)/2 quantiles of the ``n_boot`` values. The binned metrics
    (:func:`ece`, :func:`ace`, :func:`mce`, :func:`classwise_ece`, :func:`ce_kl_binned`),
    :func:`smooth_ece` (its fixed-point bandwidth found again on every resample),
    :func:`nll`, :func:`brier` and :func:`accuracy` are computed for a chunk of resamples at
    once by one vectorised path, equal to calling the metric on each resample; any other
    metric (e.g. :func:`kde_ece`, :func:`ce_kl`, the ones of
    :mod:`calix.metrics.calibration_tests`) is called on each resample. Memory is bounded by
    the chunk: about ``chunk × n`` elements per array, a dozen such arrays. The resamples
    depend on ``seed`` only, not on ``chunk``.

    A percentile interval covers the population value at about its nominal rate when the
    estimator is nearly unbiased (e.g. a clearly miscalibrated model and bins with many
    samples); binned ECEs are biased upwards near perfect calibration (|·| of noise), and
    there the interval sits above the population value.

    Parameters
    ----------
    metric : callable -- ``metric(probs, labels, **metric_kwargs) -> float``.
    probs : array-like of shape (n, k)
    labels : array-like of shape (n,)
    n_boot : int -- resamples (>= 1).
    level : float in (0, 1)
    seed : int or None
    chunk : int or None -- resamples per batch (default: 2^19 / n, at least 1; for
        :func:`smooth_ece` 2^19 / max(n, 8 n_grid)).
    metric_kwargs : dict or None -- keyword arguments of the metric (e.g. ``n_bins``).

    Returns
    -------
    CalibrationInterval

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> conf = rng.uniform(0.5, 1.0, 2000)
    >>> p = np.stack([conf, 1 - conf], 1); y = (rng.random(2000) > conf - 0.15).astype(int)
    >>> ci = calibration_interval(ece, p, y, n_boot=200, metric_kwargs={"n_bins": 10})
    >>> ci.lower < 0.15 < ci.upper
    True
    """
    if not callable(metric):
        raise TypeError(f"metric must be a calibration metric function such as ece, got "
                        f"{metric!r}")
    kwargs = dict(metric_kwargs or {})
    p, y = check_probs_labels(probs, labels)
    n_boot = check_count(n_boot, "n_boot")
    level = _check_level(level)
    n = len(p)
    value = float(metric(p, y, **kwargs))  # validates the metric's own arguments too
    rows, _ = _BATCHED.get(metric, (None, 0))
    if chunk is None:
        width = max(n, 8 * kwargs.get("n_grid", SMOOTH_GRID)) if metric is smooth_ece else n
        chunk = max(1, _BOOT_ELEMENTS // width)
    chunk = check_count(chunk, "chunk", width=n)
    boot = np.empty(n_boot)
    start = 0
    for idx in _resamples(n, n_boot, chunk, seed):
        if rows is not None:
            boot[start:start + len(idx)] = rows(p, y, idx, **kwargs)
        else:
            boot[start:start + len(idx)] = [metric(p[i], y[i], **kwargs) for i in idx]
        start += len(idx)
    if not np.isfinite(boot).all():
        raise ValueError(f"{getattr(metric, '__name__', 'metric')} was not finite on "
                         f"{int((~np.isfinite(boot)).sum())} of {n_boot} resamples")
    lo, hi = _percentiles(boot, level)
    return CalibrationInterval(value, float(lo), float(hi), level, n_boot,
                               getattr(metric, "__name__", str(metric)))


# ---------------------------------------------------------------------- by level
@dataclass
class LevelCalibration:
    """Calibration error per perturbation-level bin.

    Attributes
    ----------
    metric : str
    errors : ndarray of shape (n_bins,) -- NaN where a bin has too few samples.
    counts : ndarray of shape (n_bins,)
    bin_edges : ndarray of shape (n_bins + 1,)
    avg, max : float -- CE^AVG and CE^MAX over bins with enough samples.
    accuracy, confidence : ndarray of shape (n_bins,)
    """

    metric: str
    errors: np.ndarray
    counts: np.ndarray
    bin_edges: np.ndarray
    accuracy: np.ndarray
    confidence: np.ndarray
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def avg(self) -> float:
        return float(np.nanmean(self.errors))

    @property
    def max(self) -> float:
        return float(np.nanmax(self.errors))

    def as_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric, "errors": self.errors.tolist(), "counts": self.counts.tolist(),
            "bin_edges": self.bin_edges.tolist(), "accuracy": self.accuracy.tolist(),
            "confidence": self.confidence.tolist(), "avg": self.avg, "max": self.max,
        }


# moved to calix.procedures (a procedure, not a metric); the old import path still works
__getattr__ = procedures_getattr(__name__, ("calibration_by_level",))


#: name -> :class:`MetricInfo` of every number of the metrics above (read from the functions)
METRICS = metrics_of(ece, kde_ece, ce_kl, ce_kl_binned, nll, brier, accuracy, ace, mce,
                     classwise_ece, smooth_ece)
