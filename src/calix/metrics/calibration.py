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

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from scipy.special import gammaln

from calix._validation import check_count, check_index_range, check_simplex
from calix.metrics._base import as_array, metric, metrics_of, procedures_getattr, real_array

__all__ = [
    "ece", "kde_ece", "ce_kl", "ce_kl_binned", "nll", "brier", "accuracy",
    "calibration_by_level", "LevelCalibration", "reliability_curve", "check_probs_labels",  # noqa: F822
    "METRICS",
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
    check_simplex(p, atol=atol, name="probs", sums="rows must sum to 1")
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
) -> dict[str, np.ndarray]:
    """Per-bin mean confidence, accuracy and count of top-label predictions.

    Returns
    -------
    dict of arrays of shape (n_bins,): ``confidence``, ``accuracy`` (NaN for empty bins),
    ``count``, and ``edges`` of shape (n_bins + 1,).
    """
    p, y = check_probs_labels(probs, labels)
    n_bins = check_count(n_bins, "n_bins")
    conf, hit = p.max(1), (p.argmax(1) == y).astype(np.float64)
    edges = _bin_edges(conf, n_bins, strategy)
    b = _bin_index(conf, edges)
    count = np.bincount(b, minlength=n_bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "confidence": np.bincount(b, conf, minlength=n_bins) / count,
            "accuracy": np.bincount(b, hit, minlength=n_bins) / count,
            "count": count,
            "edges": edges,
        }


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
    probs : array-like of shape (n, k); labels : array-like of shape (n,)
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
METRICS = metrics_of(ece, kde_ece, ce_kl, ce_kl_binned, nll, brier, accuracy)
