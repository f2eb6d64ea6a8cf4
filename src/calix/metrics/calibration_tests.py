"""A calibration hypothesis test (kernel calibration error, SKCE) and the calibration /
refinement decomposition of log-loss and Brier score.

Like :mod:`calix.metrics.calibration`, every function takes probabilities of shape ``(n, k)``
and integer labels of shape ``(n,)`` (checked by :func:`check_probs_labels`).

Example
-------
>>> import numpy as np
>>> from calix.metrics.calibration_tests import skce_test
>>> rng = np.random.default_rng(0)
>>> p = rng.dirichlet(np.ones(3), size=300)
>>> y = (p.cumsum(1) > rng.random((300, 1))).argmax(1)   # labels drawn from p: calibrated
>>> skce_test(p, y, n_resamples=200).p_value > 0.05
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from calix._random import make_generator
from calix._validation import check_choice, check_count
from calix.metrics._base import metric, metrics_of
from calix.metrics.calibration import check_probs_labels

__all__ = [
    "skce", "skce_test", "CalibrationTest", "calibration_loss", "refinement_loss",
    "loss_decomposition", "LossDecomposition", "METRICS",
]

#: Elements of one block of kernel rows or resampled residuals held at once.
_BLOCK_ELEMENTS = 1 << 22


# ---------------------------------------------------------------------- SKCE
def _median_bandwidth(p: np.ndarray, max_samples: int = 2000) -> float:
    """Median of the pairwise Euclidean distances between rows of ``p`` (on a fixed, seeded
    subset of ``max_samples`` rows when there are more); 1.0 when all rows are equal."""
    sub = p
    if len(p) > max_samples:
        sub = p[np.sort(np.random.default_rng(0).choice(len(p), max_samples, replace=False))]
    t = torch.from_numpy(sub)
    d = torch.cdist(t, t, compute_mode="donot_use_mm_for_euclid_dist")
    iu = torch.triu_indices(len(sub), len(sub), offset=1)
    med = float(np.median(d[iu[0], iu[1]].numpy())) if len(sub) > 1 else 0.0
    return med if med > 0 else 1.0


def _check_bandwidth(bandwidth: Any, p: np.ndarray) -> float:
    if bandwidth is None:
        return _median_bandwidth(p)
    if isinstance(bandwidth, bool) or not isinstance(bandwidth, int | float | np.number) \
            or not 0 < float(bandwidth) < float("inf"):
        raise ValueError(f"bandwidth must be a finite number > 0 or None (median heuristic), "
                         f"got {bandwidth!r}")
    return float(bandwidth)


class _Kernel:
    """Blocks of rows of the Laplacian kernel matrix κ_ij = exp(−‖p_i − p_j‖ / ν) with its
    diagonal set to 0 (the U-statistic leaves i = j out); kept in memory when small."""

    def __init__(self, p: np.ndarray, nu: float, chunk: int) -> None:
        self.p, self.nu = torch.from_numpy(p), nu
        self.chunk = max(1, min(chunk, _BLOCK_ELEMENTS // len(p)))
        self.cache = None
        if len(p) * len(p) <= _BLOCK_ELEMENTS:
            self.cache = list(self._compute())

    def _compute(self):
        n = len(self.p)
        for s in range(0, n, self.chunk):
            d = torch.cdist(self.p[s:s + self.chunk], self.p,
                            compute_mode="donot_use_mm_for_euclid_dist")
            k = torch.exp(-d / self.nu)
            rows = torch.arange(len(k))
            k[rows, rows + s] = 0.0
            yield s, k

    def blocks(self):
        return iter(self.cache) if self.cache is not None else self._compute()

    def quadratic(self, r: torch.Tensor) -> torch.Tensor:
        """Σ_{i≠j} κ_ij r_i,c r_j,c for every column c of ``r`` (n, m): shape (m,)."""
        total = torch.zeros(r.shape[1], dtype=torch.float64)
        for s, k in self.blocks():
            total += (r[s:s + len(k)] * (k @ r)).sum(0)
        return total


def _skce_value(p: np.ndarray, y: np.ndarray, kernel: _Kernel) -> float:
    n = len(p)
    r = torch.from_numpy(np.eye(p.shape[1])[y] - p)
    return float(kernel.quadratic(r).sum()) / (n * (n - 1))


@metric("lower", "calibration")
def skce(probs: Any, labels: Any, *, bandwidth: float | None = None, chunk: int = 1024
         ) -> float:
    """Squared kernel calibration error, the unbiased estimator SKCE_uq of Widmann, Lindsten &
    Zachariah 2019, "Calibration tests in multi-class classification: A unifying framework"
    (NeurIPS).

    SKCE_uq = (n(n − 1))⁻¹ Σ_{i≠j} κ(p_i, p_j) ⟨e_{y_i} − p_i, e_{y_j} − p_j⟩ with the
    matrix-valued kernel κ(p, p')·I_k and κ(p, p') = exp(−‖p − p'‖₂ / ν), the bandwidth ν by
    the median heuristic on the pairwise distances of the predictions (the kernel and
    bandwidth choice of the paper's experiments; on a fixed subset of 2000 rows when there
    are more). It is 0 in expectation for a calibrated model and can be negative; its
    population value is 0 exactly when the model is calibrated (κ is characteristic).
    O(n²) time, memory bounded by ``chunk`` kernel rows.

    Parameters
    ----------
    probs : array-like of shape (n, k)
    labels : array-like of shape (n,)
    bandwidth : float or None -- ν; None for the median heuristic.
    chunk : int -- kernel rows computed at once.
    """
    p, y = check_probs_labels(probs, labels)
    if len(p) < 2:
        raise ValueError(f"skce needs at least 2 samples, got {len(p)}")
    chunk = check_count(chunk, "chunk")
    return _skce_value(p, y, _Kernel(p, _check_bandwidth(bandwidth, p), chunk))


@dataclass(frozen=True)
class CalibrationTest:
    """Result of a calibration test (H0: the model is calibrated).

    Attributes
    ----------
    statistic : float -- the test statistic on the data (here SKCE_uq).
    p_value : float -- Monte Carlo p-value, (1 + #{T* >= T}) / (1 + n_resamples).
    n_resamples : int
    bandwidth : float -- the kernel bandwidth used.
    """

    statistic: float
    p_value: float
    n_resamples: int
    bandwidth: float

    def rejects(self, alpha: float = 0.05) -> bool:
        """Whether H0 (calibrated) is rejected at level ``alpha``."""
        return self.p_value <= alpha


def skce_test(
    probs: Any, labels: Any, *, bandwidth: float | None = None, n_resamples: int = 1000,
    seed: int | None = 0, chunk: int = 1024,
) -> CalibrationTest:
    """Test H0 "the model is calibrated" with SKCE_uq and consistency resampling.

    The statistic is :func:`skce` (Widmann et al. 2019, NeurIPS). Its null distribution is
    drawn by consistency resampling (Bröcker & Smith 2007, "Increasing the reliability of
    reliability diagrams", Weather and Forecasting; Vaicenavicius et al. 2019, "Evaluating
    model calibration in classification", AISTATS) holding the predictions fixed: each
    resample draws new labels y*_i ~ Categorical(p_i), which is exactly what calibration
    means for the labels given the predictions, and recomputes the statistic with the same
    kernel (the bandwidth depends on the predictions only). The p-value (1 + #{T* >= T}) /
    (1 + n_resamples) (Phipson & Smyth 2010) is then valid at every sample size, with no
    asymptotic approximation.

    The resamples are computed together: one pass over the kernel rows per block of
    resamples, each block at most 2^22 elements of residuals; O(n² k) time per resample.

    Parameters
    ----------
    probs : array-like of shape (n, k)
    labels : array-like of shape (n,)
    bandwidth : float or None -- ν; None for the median heuristic.
    n_resamples : int
    seed : int or None
    chunk : int -- kernel rows computed at once.

    Returns
    -------
    CalibrationTest
    """
    p, y = check_probs_labels(probs, labels)
    if len(p) < 2:
        raise ValueError(f"skce_test needs at least 2 samples, got {len(p)}")
    n_resamples = check_count(n_resamples, "n_resamples")
    chunk = check_count(chunk, "chunk")
    n, k = p.shape
    nu = _check_bandwidth(bandwidth, p)
    kernel = _Kernel(p, nu, chunk)
    stat = _skce_value(p, y, kernel)
    g = make_generator(seed)
    cum = torch.from_numpy(np.cumsum(p, 1))
    cum[:, -1] = np.inf  # rounding never pushes a draw past the last class
    pt = torch.from_numpy(p)
    per_block = max(1, _BLOCK_ELEMENTS // (n * k))
    null = []
    for start in range(0, n_resamples, per_block):
        b = min(per_block, n_resamples - start)
        u = torch.rand(b, n, generator=g, dtype=torch.float64)
        ys = torch.searchsorted(cum, u.T.contiguous(), right=True)  # (n, b)
        r = torch.nn.functional.one_hot(ys, k).to(torch.float64) - pt[:, None, :]  # (n, b, k)
        q = kernel.quadratic(r.reshape(n, b * k)).reshape(b, k).sum(1)
        null.append(q / (n * (n - 1)))
    null_t = torch.cat(null).numpy()
    p_value = (1 + int((null_t >= stat).sum())) / (1 + n_resamples)
    return CalibrationTest(float(stat), float(p_value), n_resamples, nu)


# ---------------------------------------------------------------------- decomposition
_TINY = float(np.finfo(np.float32).tiny)  # log-probabilities are clipped at log(tiny)


def _log_probs(p: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(p, _TINY))


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _fit_inverse_temperature(logp: np.ndarray, y: np.ndarray, steps: int = 60) -> float:
    """β > 0 minimising the mean NLL of softmax(β log p): bisection on log β in [−16, 16] on
    the derivative, mean_i Σ_c log p_ic softmax(β log p_i)_c − log p_{i,y_i}, which increases
    with β (the NLL is convex in β)."""
    target = logp[np.arange(len(y)), y].mean()
    lo, hi = -16.0, 16.0
    for _ in range(steps):
        mid = (lo + hi) / 2
        grad = (logp * _softmax(np.exp(mid) * logp)).sum(1).mean() - target
        lo, hi = (lo, mid) if grad > 0 else (mid, hi)
    return float(np.exp((lo + hi) / 2))


def _recalibrated(logp_fit: np.ndarray, y_fit: np.ndarray, logp_eval: np.ndarray
                  ) -> tuple[np.ndarray, float]:
    """Temperature scaling fitted on one part and applied to another, mixed with the uniform
    distribution at weight 1/(n_fit + 1): (probabilities (m, k), temperature)."""
    beta = _fit_inverse_temperature(logp_fit, y_fit)
    w = 1.0 / (len(y_fit) + 1)
    q = (1 - w) * _softmax(beta * logp_eval) + w / logp_eval.shape[1]
    return q, 1.0 / beta


def _losses(q: np.ndarray, y: np.ndarray, loss: str) -> np.ndarray:
    if loss == "log":
        return -_log_probs(q[np.arange(len(y)), y])
    return ((q - np.eye(q.shape[1])[y]) ** 2).sum(1)


@dataclass(frozen=True)
class LossDecomposition:
    """A proper loss split into calibration and refinement: total = calibration + refinement.

    Attributes
    ----------
    loss : str -- ``"log"`` or ``"brier"``.
    total : float -- mean loss of the given probabilities.
    calibration : float -- what the recalibration removes, total − refinement.
    refinement : float -- mean loss after the recalibration.
    temperatures : tuple of float -- the fitted temperature of each fit (one, or one per fold).
    folds : int or None -- None: fitted and scored on all samples; else cross-fitted.
    """

    loss: str
    total: float
    calibration: float
    refinement: float
    temperatures: tuple[float, ...]
    folds: int | None


def loss_decomposition(
    probs: Any, labels: Any, *, loss: Literal["log", "brier"] = "log", folds: int | None = None,
    seed: int | None = 0,
) -> LossDecomposition:
    """Calibration and refinement parts of the log-loss or Brier score, "refine, then
    calibrate" style (Berta, Holzmüller, Jordan & Bach 2025, "Rethinking Early Stopping:
    Refine, Then Calibrate", arXiv:2501.19195).

    Refinement error is the loss that remains after the best post-hoc recalibration,
    calibration error the loss that recalibration removes. As the paper's estimator
    (probmetrics's ``ts-mix``): temperature scaling on log p (log-probabilities clipped at
    the float32 ``tiny``), its inverse temperature minimising the mean NLL, the output
    mixed with the uniform distribution at weight 1/(n_fit + 1) so no probability is 0. The
    same NLL-fitted recalibration serves both losses. The Brier score is the multiclass sum
    Σ_k (q_k − 1[y = k])².

    ``folds=None`` fits and scores on all samples (probmetrics's ``_all``); an int
    cross-fits: stratified folds (shuffled, ``seed``), each scored by the recalibration fitted
    on the other folds (probmetrics's ``_cv-<folds>``). The calibration part can be slightly
    negative: the mixture costs about 1/n, and a cross-fitted map can lose on held-out
    folds.

    Parameters
    ----------
    probs : array-like of shape (n, k)
    labels : array-like of shape (n,)
    loss : {"log", "brier"}
    folds : int >= 2 or None
    seed : int or None -- the fold shuffle.

    Returns
    -------
    LossDecomposition

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> z = 2 * rng.normal(size=(2000, 4)); p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    >>> y = (p.cumsum(1) > rng.random((2000, 1))).argmax(1)
    >>> sharp = np.exp(3 * z) / np.exp(3 * z).sum(1, keepdims=True)   # overconfident
    >>> d = loss_decomposition(sharp, y)
    >>> d.calibration > 0.1 and abs(d.total - d.calibration - d.refinement) < 1e-12
    True
    """
    p, y = check_probs_labels(probs, labels)
    check_choice(loss, ("log", "brier"), "loss")
    logp = _log_probs(p)
    total = float(_losses(_softmax(logp), y, loss).mean())
    if folds is None:
        q, temp = _recalibrated(logp, y, logp)
        refined, temps = _losses(q, y, loss), (temp,)
    else:
        folds = check_count(folds, "folds", minimum=2)
        if folds > len(p):
            raise ValueError(f"folds={folds} is more than the {len(p)} samples")
        from sklearn.model_selection import StratifiedKFold

        refined, temps = np.empty(len(p)), []
        splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        for fit, held in splitter.split(np.zeros(len(y)), y):
            q, temp = _recalibrated(logp[fit], y[fit], logp[held])
            refined[held] = _losses(q, y[held], loss)
            temps.append(temp)
        temps = tuple(temps)
    ref = float(refined.mean())
    return LossDecomposition(loss, total, total - ref, ref, temps, folds)


@metric("lower", "calibration")
def calibration_loss(
    probs: Any, labels: Any, *, loss: Literal["log", "brier"] = "log", folds: int | None = None,
    seed: int | None = 0,
) -> float:
    """The calibration part of the log-loss or Brier score: the loss removed by the best
    temperature recalibration (see :func:`loss_decomposition`)."""
    return loss_decomposition(probs, labels, loss=loss, folds=folds, seed=seed).calibration


@metric("lower", "performance")
def refinement_loss(
    probs: Any, labels: Any, *, loss: Literal["log", "brier"] = "log", folds: int | None = None,
    seed: int | None = 0,
) -> float:
    """The refinement part of the log-loss or Brier score: the loss left after the best
    temperature recalibration (see :func:`loss_decomposition`)."""
    return loss_decomposition(probs, labels, loss=loss, folds=folds, seed=seed).refinement


#: name -> :class:`MetricInfo` of the metrics above
METRICS = metrics_of(skce, calibration_loss, refinement_loss)
