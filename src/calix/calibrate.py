"""Post-hoc calibrators: temperature scaling, Dirichlet calibration and ReCalX.

Each calibrator is a torch module that maps logits to calibrated logits (their softmax is the
calibrated probability), with the scikit-learn contract: ``fit`` returns ``self``, fitted state
ends in ``_``, and using an unfitted calibrator raises :class:`NotFittedError`. All are
differentiable, so gradient explainers see the calibration when a model is wrapped with
:func:`calibrated`.

- :class:`TemperatureScaling` -- one temperature T, ``z / T`` (Guo et al. 2017).
- :class:`Dirichlet` -- ``W ln softmax(z) + b`` with ODIR regularisation (Kull et al. 2019).
  It may change the argmax.
- :class:`ReCalX` -- one temperature per perturbation-level bin, ``z / T_{bin(λ)}``: the level
  λ of every query must be known (the perturbation engine passes it).

Example
-------
>>> import torch
>>> from calix.calibrate import TemperatureScaling
>>> logits, labels = 3 * torch.randn(500, 4), torch.randint(0, 4, (500,))
>>> ts = TemperatureScaling().fit(logits, labels)
>>> ts(logits).shape
torch.Size([500, 4])
"""

from __future__ import annotations

import math
import warnings
from abc import ABC, abstractmethod
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from calix._random import make_generator
from calix._registry import Registry
from calix._validation import (
    MAX_ELEMENTS,
    check_choice,
    check_count,
    check_index_range,
    is_simplex,
    label_tensor,
)
from calix.models import Model, as_tensor
from calix.perturb import Perturbation, StratifiedLevels, level_bins

__all__ = [
    "Calibrator", "TemperatureScaling", "Dirichlet", "ReCalX", "CalibratedModel", "calibrated",
    "NotFittedError", "check_logits_labels", "fit_calibrator", "perturbed_logits", "METHODS",
    "CALIBRATORS",
]

#: name -> calibrator class. Metadata: ``fit_on`` -- "clean" (fitted on clean validation
#: logits) or "perturbed" (on perturbed validation samples, :meth:`ReCalX.fit_perturbed`);
#: ``seeded`` -- whether the constructor takes ``seed``.
CALIBRATORS: Registry[type[Calibrator]] = Registry("calibrator")


class NotFittedError(ValueError):
    """A calibrator was used before ``fit``.

    (Not scikit-learn's class of the same name: that one is also an ``AttributeError``, which
    ``torch.nn.Module`` turns into a misleading "no attribute" error inside properties.)
    """


#: Rows within this distance of summing to 1 (and every entry in [0, 1]) look like
#: probabilities; see :func:`check_logits_labels`.
PROBABILITY_ATOL = 1e-2


def _looks_like_probabilities(z: Tensor, atol: float = PROBABILITY_ATOL) -> bool:
    """Whether every row of ``z`` lies in [0, 1] and sums to 1 within ``atol``."""
    return is_simplex(z, atol=atol, range_atol=0.0)


def check_logits_labels(logits: Any, labels: Any, *, name: str = "logits") -> tuple[Tensor, Tensor]:
    """Validate ``logits`` of shape (n, k) and integer ``labels`` of shape (n,) in [0, k).

    Returns both on the CPU (``logits`` as float64, ``labels`` as int64): fitting runs there,
    whatever device the inputs came from.

    Probabilities passed as logits are refused: when *every* row lies in [0, 1] and sums to 1
    within ``PROBABILITY_ATOL`` (0.01, loose enough for probabilities of up to 20 classes
    rounded to three decimals), the input is taken for probabilities. Genuine logits of
    k >= 2 classes do this only in degenerate cases (one-hot scores, say): a single row
    outside the simplex is enough to pass, and adding a constant to each row, which changes
    no softmax, gets such scores past the check.

    Raises
    ------
    ValueError
        For no samples, NaN/inf logits, logits that look like probabilities, a shape mismatch,
        fewer than two classes, labels outside ``[0, k)``, or labels of a single class
        (calibration needs labels of at least two classes).
    """
    z = as_tensor(logits, name=name).detach().cpu().double()  # fitting runs on CPU
    if z.ndim != 2:
        raise ValueError(f"{name} must have shape (n, n_classes), got {tuple(z.shape)}")
    if z.shape[1] < 2:
        raise ValueError(f"{name} must have at least two classes, got {z.shape[1]}")
    if len(z) == 0:
        raise ValueError(f"{name} has no rows: calibration needs validation samples")
    if _looks_like_probabilities(z):
        raise ValueError(
            f"{name} look like probabilities (rows in [0,1] summing to 1); pass "
            "log-probabilities (np.log(p)) or the model's logits (genuine logits of this form "
            "can be shifted by a constant per row, which changes no softmax)"
        )
    y = label_tensor(labels, "labels")
    if len(y) != len(z):
        raise ValueError(f"{name} has {len(z)} rows but labels has {len(y)}")
    k = z.shape[1]
    check_index_range(y, k, "labels", of=f" for {k} classes")
    if bool((y == y[0]).all()):
        raise ValueError(
            f"calibration needs labels of at least two classes; every label is {int(y[0])}. "
            "Use validation data that covers the classes"
        )
    return z, y


class Calibrator(nn.Module, ABC):
    """Base class: ``fit(logits, labels)`` then ``forward(logits, levels=None)``.

    ``level_aware`` calibrators (ReCalX) need the perturbation level of each row.

    Fitted state lives in buffers (with a ``fitted_`` flag), so it moves with ``.to(device)``
    and survives ``state_dict``/``load_state_dict``: a fresh instance becomes fitted on load,
    and buffers whose size depends on the data (Dirichlet's weights, ReCalX's bins) take the
    loaded size.

    >>> import torch
    >>> ts = TemperatureScaling().fit(3 * torch.randn(200, 3), torch.randint(0, 3, (200,)))
    >>> ts2 = TemperatureScaling()
    >>> _ = ts2.load_state_dict(ts.state_dict())
    >>> ts2.is_fitted
    True
    """

    level_aware: bool = False

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("fitted_", torch.tensor(False))
        self._fitted = False

    @abstractmethod
    def fit(self, logits: Any, labels: Any, **kwargs: Any) -> Calibrator:
        """Fit on validation logits of shape (n, k) and labels of shape (n,); returns self."""

    @abstractmethod
    def _calibrate(self, logits: Tensor, levels: Tensor | None) -> Tensor:
        ...

    def _set_fitted(self) -> None:
        self.fitted_.fill_(True)
        self._fitted = True

    def _store(self, name: str, value: Tensor) -> None:
        """Replace buffer ``name`` by ``value`` on the device the buffer is on."""
        setattr(self, name, value.to(getattr(self, name).device))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        # buffers sized by the data they were fitted on take the loaded size
        for name, buf in self._buffers.items():
            new = state_dict.get(prefix + name)
            if buf is not None and isinstance(new, Tensor) and new.shape != buf.shape:
                self._buffers[name] = torch.empty(new.shape, dtype=buf.dtype, device=buf.device)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        self._fitted = bool(self.fitted_)
        self._after_load()

    def _after_load(self) -> None:
        """Restore plain attributes derived from the loaded buffers."""

    @property
    def is_fitted(self) -> bool:
        """Whether :meth:`fit` has been called."""
        return bool(self._fitted)

    def _check_fitted(self) -> None:
        if not self._fitted:
            raise NotFittedError(
                f"this {type(self).__name__} is not fitted yet; call fit(logits, labels) first"
            )

    def forward(self, logits: Tensor, levels: Tensor | None = None) -> Tensor:
        """Calibrated logits of shape (n, k); differentiable in ``logits``.

        Raises ValueError for NaN or infinite logits (tensor or not).
        """
        self._check_fitted()
        if not isinstance(logits, Tensor):
            logits = as_tensor(logits, name="logits")
        if logits.ndim != 2:
            raise ValueError(f"logits must have shape (n, n_classes), got {tuple(logits.shape)}")
        finite = torch.isfinite(logits.detach())
        if not bool(finite.all()):
            raise ValueError(
                f"logits contain {int((~finite).sum())} NaN or infinite value(s); calibrate "
                "only finite model outputs"
            )
        return self._calibrate(logits, levels)

    def predict_proba(self, logits: Any, levels: Any = None) -> np.ndarray:
        """Calibrated probabilities of shape (n, k) as numpy."""
        with torch.no_grad():
            z = as_tensor(logits, name="logits")
            if levels is not None and not isinstance(levels, Tensor):
                levels = as_tensor(levels, name="levels", device=z.device)
            z = self.forward(z, levels)
        return torch.softmax(z, dim=-1).cpu().numpy()


#: Temperatures are searched in [T_MIN, T_MAX]. A minimiser below T_MIN is degenerate (next
#: to no wrong predictions); one above T_MAX means chance-level predictions (near-uniform).
T_MIN, T_MAX = 1e-2, 1e2
_MAX_NEWTON_STEPS = 100  # safeguarded Newton converges in ~5-10; bisection steps bound it


def _nll_derivatives(z: Tensor, y: Tensor, groups: Tensor, n_groups: int, beta: Tensor
                     ) -> tuple[Tensor, Tensor]:
    """First and second derivative in β of each group's summed NLL of softmax(β z), at the
    group's β: Σ (E_p[z] − z_y) and Σ Var_p[z] (>= 0), each of shape (n_groups,)."""
    p = torch.softmax(z * beta[groups][:, None], dim=1)
    mean = (p * z).sum(1)
    var = (p * z * z).sum(1) - mean**2
    first = mean - z.gather(1, y[:, None]).squeeze(1)
    zeros = torch.zeros(n_groups, dtype=z.dtype, device=z.device)
    return zeros.index_add(0, groups, first), zeros.index_add(0, groups, var.clamp_min(0))


def _fit_temperatures(z: Tensor, y: Tensor, groups: Tensor, n_groups: int
                      ) -> tuple[Tensor, Tensor]:
    """One temperature per group minimising the group's NLL, searched in [T_MIN, T_MAX].

    The NLL of softmax(β z) is convex in β = 1/T (its second derivative is the softmax
    variance of z), so its slope in β is monotone: the minimiser is found to ~1e-10 relative
    precision by Newton steps on the slope, each kept inside the bracket that the slope's
    sign narrows (a geometric bisection step where Newton would leave it), all groups at once.
    Groups without rows get T = 1.

    Returns
    -------
    temperatures : Tensor of shape (n_groups,), float64
    bound : Tensor of shape (n_groups,), int64 -- -1 where the minimiser lies at or below
        T_MIN (e.g. every prediction correct), +1 at or above T_MAX, 0 inside.
    """
    b_lo = torch.full((n_groups,), 1 / T_MAX, dtype=torch.float64, device=z.device)
    b_hi = torch.full_like(b_lo, 1 / T_MIN)
    bound = torch.zeros(n_groups, dtype=torch.long, device=z.device)
    # <= 0: when every prediction is correct the slope at 1/T_MIN can underflow to 0
    bound[_nll_derivatives(z, y, groups, n_groups, b_hi)[0] <= 0] = -1
    bound[_nll_derivatives(z, y, groups, n_groups, b_lo)[0] > 0] = 1
    empty = torch.bincount(groups, minlength=n_groups) == 0
    settled = empty | (bound != 0)
    beta = torch.ones_like(b_lo)
    for _ in range(_MAX_NEWTON_STEPS):
        slope, curv = _nll_derivatives(z, y, groups, n_groups, beta)
        past = slope > 0  # β beyond the minimiser
        b_hi = torch.where(past, beta, b_hi)
        b_lo = torch.where(past, b_lo, beta)
        newton = beta - slope / curv
        inside = torch.isfinite(newton) & (newton > b_lo) & (newton < b_hi)
        new = torch.where(inside, newton, (b_lo * b_hi).sqrt())
        done = settled | ((new - beta).abs() <= 1e-10 * beta) | (slope == 0)
        beta = torch.where(settled, beta, new)
        if bool(done.all()):
            break
    t = torch.where(bound < 0, T_MIN, torch.where(bound > 0, T_MAX, 1 / beta))
    return torch.where(empty, 1.0, t), torch.where(empty, 0, bound)


def _all_correct(z: Tensor, y: Tensor, groups: Tensor, n_groups: int) -> Tensor:
    """Per group (of at least one row): whether every argmax prediction is correct, shape
    (n_groups,). The NLL then keeps falling as T -> 0, so no temperature can be fitted."""
    wrong = torch.zeros(n_groups, dtype=torch.long, device=z.device).index_add_(
        0, groups, (z.argmax(1) != y).long())
    return (wrong == 0) & (torch.bincount(groups, minlength=n_groups) > 0)


@CALIBRATORS.register("temperature", fit_on="clean", seeded=False)
class TemperatureScaling(Calibrator):
    """One temperature for all inputs: ``z / T``, T minimising the NLL in [T_MIN, T_MAX].

    When every validation prediction is correct the NLL has no minimiser (it keeps falling as
    T -> 0): T = 1 is kept, with a warning. A minimiser below T_MIN gives T = T_MIN, with a
    warning (the logits are over 100 times too small, or the validation data has almost no
    wrong predictions). Predictions no better than chance give T = T_MAX (near-uniform
    output, the NLL's limit as T grows). :meth:`from_temperature` gives a calibrator with a
    chosen T, nothing fitted.

    Attributes
    ----------
    temperature_ : float
        The fitted (or given) temperature (> 0). Monotone, so the argmax never changes.
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("log_temperature_", torch.zeros(()))
        #: the temperature of :meth:`from_temperature`, divided by as given (None when fitted)
        self._given: float | None = None

    @classmethod
    def from_temperature(cls, temperature: float) -> TemperatureScaling:
        """A fitted calibrator with a chosen temperature: ``z / temperature``.

        For a temperature fixed rather than fitted (a sweep over temperatures, one fitted
        elsewhere). The logits are divided by ``temperature`` as given; the state dict holds
        its logarithm as after :meth:`fit`, so a copy loaded from it divides by
        ``exp(log T)``, the same T to within float32 rounding.

        Raises
        ------
        ValueError
            ``temperature`` is not a finite number > 0.

        >>> ts = TemperatureScaling.from_temperature(2.0)
        >>> ts.is_fitted, ts.temperature_
        (True, 2.0)
        >>> ts(torch.tensor([[2.0, -4.0]])).tolist()
        [[1.0, -2.0]]
        """
        if isinstance(temperature, (str, bytes, bool)):
            raise TypeError(f"temperature must be a number, got {temperature!r}")
        t = float(temperature)
        if not math.isfinite(t) or t <= 0:
            raise ValueError(f"temperature must be a finite number > 0, got {temperature}")
        ts = cls()
        ts.log_temperature_.fill_(math.log(t))
        ts._given = t
        ts._set_fitted()
        return ts

    @property
    def temperature_(self) -> float:
        self._check_fitted()
        if self._given is not None:
            return self._given
        return float(self.log_temperature_.exp())

    def fit(self, logits: Any, labels: Any, **kwargs: Any) -> TemperatureScaling:
        z, y = check_logits_labels(logits, labels)
        one = torch.zeros(len(y), dtype=torch.long, device=z.device)
        t, bound = _fit_temperatures(z, y, one, 1)
        if bool(_all_correct(z, y, one, 1)[0]):
            t[0] = 1.0
            warnings.warn(
                "every validation prediction is correct: the NLL keeps falling as T -> 0, so "
                "no temperature can be fitted (any small T would make the model overconfident "
                "elsewhere); keeping T = 1, the logits unchanged. Use more (or harder) "
                "validation data", UserWarning, stacklevel=2)
        elif int(bound[0]) < 0:
            warnings.warn(
                f"the fitted temperature hit the lower search bound T = {T_MIN:g}: the "
                "validation data has almost no wrong predictions, so the temperature is not "
                "an estimate; use more (or harder) validation data", UserWarning, stacklevel=2)
        self.log_temperature_.fill_(math.log(float(t[0])))
        self._given = None
        self._set_fitted()
        return self

    def _after_load(self) -> None:
        self._given = None

    def _calibrate(self, logits: Tensor, levels: Tensor | None) -> Tensor:
        if self._given is not None:
            return logits / self._given
        return logits / self.log_temperature_.exp().to(logits)


@CALIBRATORS.register("dirichlet", fit_on="clean", seeded=True)
class Dirichlet(Calibrator):
    """Dirichlet calibration: ``W ln q + b`` with q = softmax(z), ODIR regularisation.

    Loss: mean NLL + λ/(k(k−1)) Σ_{i≠j} w_ij² + μ/k Σ_j b_j², identity initialisation,
    fitted with L-BFGS in float64. When ``reg_lambda``/``reg_mu`` are None they are chosen by
    stratified k-fold cross-validation (validation NLL) on the log grid ``grid``.
    Unlike temperature scaling it can change the argmax.

    Parameters
    ----------
    reg_lambda, reg_mu : float or None
        ODIR strengths for off-diagonal weights and biases.
    grid : sequence of float
        Candidate values for both λ and μ when cross-validating.
    cv : int
        Number of folds.
    seed : int
        Seeds the fold split.

    Attributes
    ----------
    weight_ : Tensor of shape (k, k)
    bias_ : Tensor of shape (k,)
    reg_lambda_, reg_mu_ : float -- the strengths used.
    """

    def __init__(
        self,
        *,
        reg_lambda: float | None = None,
        reg_mu: float | None = None,
        grid: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0),
        cv: int = 3,
        seed: int = 0,
        eps: float = 1e-12,
    ) -> None:
        super().__init__()
        for nm, v in (("reg_lambda", reg_lambda), ("reg_mu", reg_mu)):
            if v is not None and v < 0:
                raise ValueError(f"{nm} must be >= 0, got {v}")
        if cv < 2:
            raise ValueError(f"cv must be >= 2, got {cv}")
        self.reg_lambda, self.reg_mu, self.grid, self.cv, self.seed, self.eps = (
            reg_lambda, reg_mu, tuple(grid), int(cv), int(seed), float(eps))
        self.register_buffer("weight_", torch.zeros(0, 0))
        self.register_buffer("bias_", torch.zeros(0))
        self.register_buffer("reg_", torch.zeros(2, dtype=torch.float64))

    @property
    def reg_lambda_(self) -> float:
        self._check_fitted()
        return float(self.reg_[0])

    @property
    def reg_mu_(self) -> float:
        self._check_fitted()
        return float(self.reg_[1])

    def _log_q(self, z: Tensor) -> Tensor:
        return torch.log_softmax(z, dim=-1).clamp_min(math.log(self.eps))

    @staticmethod
    def _loss(w: Tensor, b: Tensor, lq: Tensor, y: Tensor, lam: float, mu: float) -> Tensor:
        k = w.shape[0]
        off = w - torch.diag(torch.diag(w))
        nll = nn.functional.cross_entropy(lq @ w.T + b, y)
        return nll + lam / (k * (k - 1)) * (off**2).sum() + mu / k * (b**2).sum()

    def _fit_params(self, lq: Tensor, y: Tensor, lam: float, mu: float) -> tuple[Tensor, Tensor]:
        k = lq.shape[1]
        w = torch.eye(k, dtype=torch.float64, device=lq.device, requires_grad=True)
        b = torch.zeros(k, dtype=torch.float64, device=lq.device, requires_grad=True)
        opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=500, line_search_fn="strong_wolfe",
                                tolerance_grad=1e-9, tolerance_change=1e-12)

        def closure():
            opt.zero_grad()
            loss = self._loss(w, b, lq, y, lam, mu)
            loss.backward()
            return loss

        opt.step(closure)
        return w.detach(), b.detach()

    def fit(self, logits: Any, labels: Any, **kwargs: Any) -> Dirichlet:
        z, y = check_logits_labels(logits, labels)
        lq = self._log_q(z)
        if self.reg_lambda is not None and self.reg_mu is not None:
            lam, mu = self.reg_lambda, self.reg_mu
        else:
            lam, mu = self._cross_validate(lq, y)
        w, b = self._fit_params(lq, y, lam, mu)
        self._store("weight_", w.float())
        self._store("bias_", b.float())
        self.reg_.copy_(torch.tensor([float(lam), float(mu)], dtype=torch.float64,
                                     device=self.reg_.device))
        self._set_fitted()
        return self

    def _cross_validate(self, lq: Tensor, y: Tensor) -> tuple[float, float]:
        from sklearn.model_selection import KFold, StratifiedKFold

        counts = torch.bincount(y)
        counts = counts[counts > 0]
        splitter = (StratifiedKFold(self.cv, shuffle=True, random_state=self.seed)
                    if int(counts.min()) >= self.cv
                    else KFold(self.cv, shuffle=True, random_state=self.seed))
        folds = list(splitter.split(np.zeros(len(y)), y.numpy()))
        lams = self.grid if self.reg_lambda is None else (self.reg_lambda,)
        mus = self.grid if self.reg_mu is None else (self.reg_mu,)
        best, best_score = (lams[0], mus[0]), float("inf")
        for lam in lams:
            for mu in mus:
                score = 0.0
                for tr, va in folds:
                    w, b = self._fit_params(lq[tr], y[tr], lam, mu)
                    score += float(nn.functional.cross_entropy(lq[va] @ w.T + b, y[va],
                                                               reduction="sum"))
                if score < best_score:
                    best, best_score = (lam, mu), score
        return best

    def _calibrate(self, logits: Tensor, levels: Tensor | None) -> Tensor:
        k = self.weight_.shape[0]
        if logits.shape[1] != k:
            raise ValueError(f"logits must have the {k} classes this Dirichlet calibrator was "
                             f"fitted on, got shape {tuple(logits.shape)}")
        lq = self._log_q(logits)
        return lq @ self.weight_.to(lq).T + self.bias_.to(lq)


@CALIBRATORS.register("recalx", fit_on="perturbed", seeded=False)
class ReCalX(Calibrator):
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
        """Fit from logits (n, k), labels (n,) and levels (n,) in [0, 1] (any device)."""
        return self._fit(logits, labels, levels, stacklevel=3)

    def _fit(self, logits: Any, labels: Any, levels: Any, *, stacklevel: int) -> ReCalX:
        z, y = check_logits_labels(logits, labels)
        if levels is None:
            raise ValueError("ReCalX.fit needs the perturbation level of every sample (levels=)")
        lv = (levels.detach() if isinstance(levels, Tensor)
              else as_tensor(levels, name="levels", device="cpu"))
        lv = lv.to("cpu", torch.float64).reshape(-1)  # fitting runs on CPU, like z and y
        if len(lv) != len(z):
            raise ValueError(f"levels has {len(lv)} values for {len(z)} rows of logits")
        nb = self.n_bins
        bins = level_bins(lv, nb).to(lv.device)
        counts = torch.bincount(bins, minlength=nb)
        short = (counts < self.min_samples_per_bin).nonzero().flatten().tolist()
        if short:
            detail = ", ".join(
                f"bin {b} [{b / nb:.1f}, {(b + 1) / nb:.1f}): {int(counts[b])}"
                for b in short[:5])
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
            notes.append(f"bin {b} [{b / nb:.1f}, {(b + 1) / nb:.1f}) ({why}) -> "
                         f"{src}, T = {float(t[b]):.3g}")
        if notes:
            warnings.warn(
                f"{len(notes)} degenerate level bin(s) take the temperature of their samples "
                "pooled with the nearest bins: " + "; ".join(notes) + ". See fallback_bins_ "
                "and sources_; more (or harder) validation data gives each bin its own",
                UserWarning, stacklevel=stacklevel)
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

    def fit_perturbed(
        self,
        model: Model,
        X: Any,
        y: Any,
        perturbation: Perturbation,
        *,
        n_samples: int = 200,
        n_per_bin: int = 10,
        seed: int = 0,
        progress: bool = False,
    ) -> ReCalX:
        """Fit on perturbed validation samples built by the perturbation engine.

        Parameters
        ----------
        model : Model -- the uncalibrated model.
        X : array-like of shape (n, *input_shape); y : labels of shape (n,)
        perturbation : Perturbation -- features and fill (e.g. zero, blur, mean).
        n_samples : int -- validation inputs used (the first ``n_samples``; paper: 200).
        n_per_bin : int -- perturbations per input and bin (paper: 10).
        """
        logits, labels, levels = perturbed_logits(
            model, X, y, perturbation, n_samples=n_samples, n_per_bin=n_per_bin,
            n_bins=self.n_bins, seed=seed, progress=progress)
        return self._fit(logits, labels, levels, stacklevel=3)

    def _calibrate(self, logits: Tensor, levels: Tensor | None) -> Tensor:
        if levels is None:
            raise ValueError(
                "ReCalX needs the perturbation level of every query; pass levels= (the "
                "perturbation engine does this) or wrap the model with calibrated(...), which "
                "treats queries without levels as clean inputs (λ = 0)"
            )
        lv = torch.as_tensor(levels, device=logits.device).reshape(-1)
        if len(lv) != len(logits):
            raise ValueError(f"levels has {len(lv)} values for {len(logits)} rows of logits")
        bins = level_bins(lv, self.n_bins).to(lv.device)
        return logits / self.log_temperatures_.exp().to(logits)[bins][:, None]


def perturbed_logits(
    model: Model,
    X: Any,
    y: Any,
    perturbation: Perturbation,
    *,
    n_samples: int = 200,
    n_per_bin: int = 10,
    n_bins: int = 10,
    seed: int = 0,
    progress: bool = False,
) -> tuple[Tensor, Tensor, Tensor]:
    """Logits of perturbed inputs stratified over level bins, with their labels and levels.

    Each of the first ``n_samples`` inputs gets its own ``n_per_bin * n_bins`` coalitions
    (:class:`~calix.perturb.StratifiedLevels`).

    Returns
    -------
    logits : Tensor (N, k); labels : Tensor (N,); levels : Tensor (N,), N = n·n_bins·n_per_bin,
    all three on the model's device.
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


class CalibratedModel(Model):
    """A model followed by a calibrator; outputs calibrated logits, differentiable.

    Level-aware calibrators get each query's level from the perturbation engine. A query
    without levels is taken as clean (λ = 0) when ``assume_clean`` is True (default);
    otherwise it raises.
    """

    def __init__(self, base: Model, calibrator: Calibrator, *, assume_clean: bool = True):
        if not isinstance(base, Model):
            raise TypeError("base must be a calix Model (use calix.wrap first)")
        if base.task != "classification":
            raise TypeError("calibration applies to classifiers, not regressors")
        if not isinstance(calibrator, Calibrator):
            raise TypeError(f"calibrator must be a calix Calibrator, got {type(calibrator)}")
        calibrator._check_fitted()
        super().__init__(task="classification", input_shape=base.input_shape,
                         batch_size=base.batch_size, device=base.device)
        self.base = base
        self.calibrator = calibrator.to(base.device)
        self.assume_clean = bool(assume_clean)
        self.differentiable = base.differentiable
        self.level_aware = calibrator.level_aware

    def _forward(self, x: Tensor) -> Tensor:
        return self._forward_levels(x, None)

    def _forward_levels(self, chunk: Tensor, levels: Tensor | None) -> Tensor:
        z = self.base._checked_forward(chunk, None)
        if levels is None and self.calibrator.level_aware:
            if not self.assume_clean:
                raise ValueError("this calibrated model needs the perturbation level of "
                                 "every query (levels=)")
            levels = torch.zeros(len(chunk), device=z.device)
        return self.calibrator(z, levels)


def calibrated(model: Any, calibrator: Calibrator, *, assume_clean: bool = True) -> Model:
    """``model`` followed by a fitted ``calibrator``, as a :class:`~calix.models.Model`.

    Gradients flow through the calibrator, so gradient explainers explain the calibrated
    probabilities.
    """
    from calix.models import wrap

    return CalibratedModel(wrap(model), calibrator, assume_clean=assume_clean)


#: the calibrator names of :data:`CALIBRATORS`, in order
METHODS = CALIBRATORS.names()


def fit_calibrator(
    method: str,
    model: Model,
    X_val: Any,
    y_val: Any,
    *,
    perturbation: Perturbation | None = None,
    n_bins: int = 10,
    n_samples: int = 200,
    n_per_bin: int = 10,
    seed: int = 0,
    progress: bool = False,
) -> Calibrator:
    """Fit calibrator ``method`` for ``model`` on validation data.

    ``temperature`` and ``dirichlet`` are fitted on clean validation logits; ``recalx`` on
    perturbed validation samples from ``perturbation`` (required for it).
    """
    check_choice(method, METHODS, "method")
    cls, meta = CALIBRATORS[method], CALIBRATORS.meta(method)
    if meta["fit_on"] == "perturbed":
        if perturbation is None:
            raise ValueError(f"{method} needs a perturbation to draw its validation samples")
        return cls(n_bins).fit_perturbed(model, X_val, y_val, perturbation,
                                         n_samples=n_samples, n_per_bin=n_per_bin,
                                         seed=seed, progress=progress)
    logits = model.forward(X_val, grad=False, progress=progress)
    cal = cls(seed=seed) if meta["seeded"] else cls()
    return cal.fit(logits, y_val)
