"""Post-hoc calibrators: temperature scaling, Dirichlet, ReCalX and the calibrators beyond.

Each calibrator is a torch module that maps logits to calibrated logits (their softmax is the
calibrated probability), with the scikit-learn contract: ``fit`` returns ``self``, fitted state
ends in ``_``, and using an unfitted calibrator raises :class:`NotFittedError`. Those with
``differentiable = True`` let gradient explainers see the calibration when a model is wrapped
with :func:`calibrated`; gradient explainers refuse the others by name.

- :class:`TemperatureScaling` -- one temperature T, ``z / T`` (Guo et al. 2017).
- :class:`Dirichlet` -- ``W ln softmax(z) + b`` with ODIR regularisation (Kull et al. 2019).
  It may change the argmax.
- :class:`ReCalX` -- one temperature per perturbation-level bin, ``z / T_{bin(λ)}``: the level
  λ of every query must be known (the perturbation engine passes it).
- :class:`VectorScaling`, :class:`MatrixScaling` (ODIR), :class:`StructuredMatrixScaling`,
  :class:`PlattScaling`, :class:`BetaCalibration` -- differentiable;
  :class:`HistogramBinning`, :class:`IsotonicCalibration`, :class:`VennAbers` (with
  probability intervals) -- not differentiable. Binary methods run one-vs-rest for k > 2.
- :class:`ByLevel` -- any calibrator fitted per level bin (``by_level_<name>`` in
  :data:`CALIBRATORS`); :class:`SmoothLevelTemperature` -- ``z / T(λ)`` with ln T a line or
  a natural spline in λ.

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

import copy
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
    "CALIBRATORS", "VectorScaling", "MatrixScaling", "StructuredMatrixScaling", "PlattScaling",
    "BetaCalibration", "IsotonicCalibration", "HistogramBinning", "VennAbers", "ByLevel",
    "SmoothLevelTemperature", "ByLevelVectorScaling", "ByLevelMatrixScaling",
    "ByLevelStructuredMatrixScaling", "ByLevelDirichlet", "ByLevelPlattScaling",
    "ByLevelBetaCalibration", "ByLevelHistogramBinning", "ByLevelIsotonicCalibration",
    "ByLevelVennAbers", "NonDifferentiableCalibratorError", "check_differentiable",
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


class NonDifferentiableCalibratorError(TypeError):
    """A method that takes gradients was given a model calibrated by a calibrator that
    gradients cannot pass (histogram binning, isotonic regression, Venn-Abers)."""


def _registered_name(cal: Calibrator) -> str:
    for name, cls in CALIBRATORS.items():
        if type(cal) is cls:
            return name
    return type(cal).__name__


def check_differentiable(model: Any, who: str) -> None:
    """Raise :class:`NonDifferentiableCalibratorError` when ``model`` (or a model it wraps) is
    calibrated by a calibrator with ``differentiable = False``; ``who`` names the method that
    needs the gradients. Models without a calibrator pass."""
    seen = 0
    while model is not None and seen < 32:
        cal = getattr(model, "calibrator", None)
        if isinstance(cal, Calibrator) and not cal.differentiable:
            inner = (f"{type(cal).__name__} ({_registered_name(cal)})"
                     if not isinstance(cal, ByLevel) else
                     f"{type(cal).__name__} ({_registered_name(cal)}, per-level copies of "
                     f"{cal.calibrator_name})")
            usable = ", ".join(n for n, c in CALIBRATORS.items() if c.differentiable)
            raise NonDifferentiableCalibratorError(
                f"{who} takes gradients through the model, but the model is calibrated by "
                f"{inner}, which is not differentiable (a piecewise-constant map has no useful "
                f"gradient); calibrate with a differentiable calibrator ({usable}) or use a "
                "perturbation explainer (occlusion, LIME, KernelSHAP, RISE)")
        model = getattr(model, "base", None)
        seen += 1


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
    #: whether gradients pass through the calibrator (False for piecewise-constant maps:
    #: gradient explainers refuse a model calibrated by one, see :func:`check_differentiable`)
    differentiable: bool = True

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


class _FitsPerturbed:
    """``fit_perturbed`` of the calibrators fitted per perturbation level (ReCalX, ByLevel,
    SmoothLevelTemperature): each has ``n_bins`` and ``_fit(logits, labels, levels, *,
    stacklevel)``."""

    n_bins: int

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
    ) -> Any:
        """Fit on perturbed validation samples built by the perturbation engine; returns
        the calibrator.

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



@CALIBRATORS.register("recalx", fit_on="perturbed", seeded=False)
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


# ====================================================================== more calibrators
#: Probabilities are clipped to [PROB_EPS, 1 - PROB_EPS] before taking logarithms, and the
#: calibrators that output probabilities return ``log(max(p, PROB_EPS))`` as logits.
PROB_EPS = 1e-12


def _lbfgs(params: list[Tensor], loss_fn: Any, *, max_iter: int = 500) -> None:
    """Minimise ``loss_fn()`` over ``params`` in place (L-BFGS with a strong-Wolfe line search,
    float64 tolerances, as :class:`Dirichlet`)."""
    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-9, tolerance_change=1e-12)

    def closure():
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        return loss

    opt.step(closure)


def _log_probs(z: Tensor) -> tuple[Tensor, Tensor]:
    """``ln p`` and ``ln(1 - p)`` of p = softmax(z), both of shape (n, k), clipped at
    ln PROB_EPS; ``ln(1 - p)`` is computed from ``ln p`` without cancellation."""
    lp = torch.log_softmax(z, dim=-1)
    floor = math.log(PROB_EPS)
    l1p = torch.log((-torch.expm1(lp)).clamp_min(PROB_EPS))
    return lp.clamp_min(floor), l1p.clamp_min(floor)


def _columns(k: int) -> list[int]:
    """The classes a one-vs-rest calibrator fits: class 1 alone when k = 2 (class 0 gets the
    complement), every class otherwise."""
    return [1] if k == 2 else list(range(k))


def _probabilities_to_logits(p: Tensor) -> Tensor:
    """Calibrated logits from per-class probabilities of shape (n, k) or, for a binary
    problem, the class-1 probability of shape (n, 1): ``ln max(p, PROB_EPS)``; softmax
    renormalises one-vs-rest rows (an all-zero row becomes uniform)."""
    if p.shape[1] == 1:
        p = torch.cat([1 - p, p], dim=1)
    return p.clamp_min(PROB_EPS).log()


def _check_multiclass(policy: str) -> str:
    return check_choice(policy, ("ovr", "raise"), "multiclass")


def _refuse_multiclass(cal: Calibrator, k: int) -> None:
    if k > 2 and cal.multiclass == "raise":
        raise ValueError(
            f"{type(cal).__name__} is a binary calibrator and multiclass='raise', but the "
            f"logits have {k} classes; pass multiclass='ovr' (one-vs-rest, renormalised) or "
            "use a multi-class calibrator (temperature, vector, matrix, dirichlet)")


def _check_classes(cal: Calibrator, logits: Tensor, k: int) -> None:
    if logits.shape[1] != k:
        raise ValueError(f"logits must have the {k} classes this {type(cal).__name__} was "
                         f"fitted on, got shape {tuple(logits.shape)}")


@CALIBRATORS.register("vector", fit_on="clean", seeded=False)
class VectorScaling(Calibrator):
    """Vector scaling: ``w ⊙ z + b``, one scale and one bias per class (Guo et al. 2017,
    "On calibration of modern neural networks", ICML).

    Fitted by minimising the mean NLL with L-BFGS in float64 from ``w = 1, b = 0``, no
    regularisation. Differentiable. It may change the argmax (a per-class scale does).

    Attributes
    ----------
    weight_ : Tensor of shape (k,)
    bias_ : Tensor of shape (k,)

    >>> import torch
    >>> z, y = 3 * torch.randn(300, 4), torch.randint(0, 4, (300,))
    >>> VectorScaling().fit(z, y).weight_.shape
    torch.Size([4])
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("weight_", torch.zeros(0))
        self.register_buffer("bias_", torch.zeros(0))

    def fit(self, logits: Any, labels: Any, **kwargs: Any) -> VectorScaling:
        z, y = check_logits_labels(logits, labels)
        k = z.shape[1]
        w = torch.ones(k, dtype=torch.float64, device=z.device, requires_grad=True)
        b = torch.zeros(k, dtype=torch.float64, device=z.device, requires_grad=True)
        _lbfgs([w, b], lambda: nn.functional.cross_entropy(z * w + b, y))
        self._store("weight_", w.detach().float())
        self._store("bias_", b.detach().float())
        self._set_fitted()
        return self

    def _calibrate(self, logits: Tensor, levels: Tensor | None) -> Tensor:
        _check_classes(self, logits, len(self.weight_))
        return logits * self.weight_.to(logits) + self.bias_.to(logits)


@CALIBRATORS.register("matrix", fit_on="clean", seeded=True)
class MatrixScaling(Dirichlet):
    """Matrix scaling: ``W z + b`` on the logits (Guo et al. 2017, ICML), with the ODIR
    regularisation of Kull et al. 2019 ("Beyond temperature scaling: obtaining well-calibrated
    multi-class probabilities with Dirichlet calibration", NeurIPS).

    The model, loss and fitting of :class:`Dirichlet` applied to the logits instead of the
    log-probabilities: mean NLL + λ/(k(k−1)) Σ_{i≠j} w_ij² + μ/k Σ_j b_j² (off-diagonal
    weights and intercepts penalised, the diagonal free), identity initialisation, L-BFGS in
    float64; λ and μ by stratified k-fold cross-validation on ``grid`` when not given
    (``reg_lambda=0, reg_mu=0`` is plain matrix scaling). Differentiable; it may change the
    argmax.

    Parameters and attributes: as :class:`Dirichlet` (``eps`` is unused).
    """

    def _log_q(self, z: Tensor) -> Tensor:
        return z  # the features are the logits themselves


@CALIBRATORS.register("structured_matrix", fit_on="clean", seeded=False)
class StructuredMatrixScaling(Calibrator):
    """Structured matrix scaling (SMS; Berta, Holzmüller, Jordan & Bach, "Structured matrix
    scaling for multi-class calibration", AISTATS 2026, arXiv:2511.03685).

    Temperature scaling first (unregularised, :class:`TemperatureScaling`), then
    ``(I + diag(v) + M) x + b`` on the temperature-scaled log-probabilities
    ``x = ln softmax(z / T)``, with ``M`` zero on its diagonal, fitted by mean NLL plus ridge
    penalties of separate strengths on the intercept, the diagonal and the off-diagonal part:

        λ_b k^ρ / n^τ ‖b‖² + λ_d k^ρ / n^τ ‖v‖² + λ_o (k(k−1))^ρ / n^τ ‖M‖²,

    so the penalty fades as the validation set grows (τ = 1) and grows with the number of
    parameters of each kind (ρ = 1); all three λ default to 1, the setting the paper
    recommends. Starts at ``v = 0, M = 0, b = 0`` (pure temperature scaling), L-BFGS in
    float64. Differentiable; it may change the argmax.

    Attributes
    ----------
    temperature_ : float -- the first stage's temperature.
    weight_ : Tensor of shape (k, k) -- ``I + diag(v) + M``.
    bias_ : Tensor of shape (k,)
    """

    def __init__(self, *, lambda_intercept: float = 1.0, lambda_diagonal: float = 1.0,
                 lambda_off_diagonal: float = 1.0, rho: float = 1.0, tau: float = 1.0) -> None:
        super().__init__()
        for nm, v in (("lambda_intercept", lambda_intercept), ("lambda_diagonal",
                      lambda_diagonal), ("lambda_off_diagonal", lambda_off_diagonal)):
            if not v >= 0:
                raise ValueError(f"{nm} must be >= 0, got {v}")
        self.lambda_intercept, self.lambda_diagonal = float(lambda_intercept), float(
            lambda_diagonal)
        self.lambda_off_diagonal, self.rho, self.tau = float(lambda_off_diagonal), float(
            rho), float(tau)
        self.register_buffer("log_temperature_", torch.zeros(()))
        self.register_buffer("weight_", torch.zeros(0, 0))
        self.register_buffer("bias_", torch.zeros(0))

    @property
    def temperature_(self) -> float:
        self._check_fitted()
        return float(self.log_temperature_.exp())

    def fit(self, logits: Any, labels: Any, **kwargs: Any) -> StructuredMatrixScaling:
        z, y = check_logits_labels(logits, labels)
        n, k = z.shape
        one = torch.zeros(len(y), dtype=torch.long, device=z.device)
        t = _fit_temperatures(z, y, one, 1)[0][0]
        if bool(_all_correct(z, y, one, 1)[0]):
            t = torch.ones_like(t)  # no temperature to fit: T = 1, as TemperatureScaling
        t = t.log().float().double().exp()  # the temperature the float32 buffer will hold
        x = torch.log_softmax(z / t, dim=1)
        rb = self.lambda_intercept * k**self.rho / n**self.tau
        rd = self.lambda_diagonal * k**self.rho / n**self.tau
        ro = self.lambda_off_diagonal * (k * (k - 1)) ** self.rho / n**self.tau
        delta = torch.zeros(k, k, dtype=torch.float64, device=z.device, requires_grad=True)
        b = torch.zeros(k, dtype=torch.float64, device=z.device, requires_grad=True)
        eye = torch.eye(k, dtype=torch.float64, device=z.device)

        def loss() -> Tensor:
            diag = delta.diagonal()
            nll = nn.functional.cross_entropy(x @ (eye + delta).T + b, y)
            return (nll + rb * (b**2).sum() + rd * (diag**2).sum()
                    + ro * ((delta**2).sum() - (diag**2).sum()))

        _lbfgs([delta, b], loss)
        self.log_temperature_.fill_(float(t.log()))
        self._store("weight_", (eye + delta.detach()).float())
        self._store("bias_", b.detach().float())
        self._set_fitted()
        return self

    def _calibrate(self, logits: Tensor, levels: Tensor | None) -> Tensor:
        _check_classes(self, logits, len(self.bias_))
        x = torch.log_softmax(logits / self.log_temperature_.exp().to(logits), dim=-1)
        return x @ self.weight_.to(x).T + self.bias_.to(x)


@CALIBRATORS.register("platt_scaling", fit_on="clean", seeded=False)
class PlattScaling(Calibrator):
    """Platt scaling: ``P(y = 1 | s) = σ(A s + B)`` on the score ``s = ln p₁ − ln(1 − p₁)``
    (Platt 1999, "Probabilistic outputs for support vector machines and comparisons to
    regularized likelihood methods", Advances in Large Margin Classifiers).

    Binary by definition. With ``multiclass="ovr"`` (default) k > 2 classes are calibrated
    one-vs-rest (each class's score ``ln p_j − ln(1 − p_j)`` gets its own A, B) and the
    probabilities renormalised, as Zadrozny & Elkan (2002, KDD) and scikit-learn's
    ``CalibratedClassifierCV`` do; ``multiclass="raise"`` refuses k > 2. For k = 2 only class 1
    is fitted and class 0 gets the complement (for logits this is ``σ(A (z₁ − z₀) + B)``).

    Fitted by cross-entropy with L-BFGS in float64. ``smooth_targets=True`` (default) uses
    Platt's targets ``(N₊ + 1)/(N₊ + 2)`` and ``1/(N₋ + 2)`` instead of 1 and 0, which keeps a
    separable validation set from driving A to infinity. Differentiable; monotone in each
    score (increasing when the fitted slope A > 0, decreasing when scores and labels are
    anti-correlated and A < 0).

    Attributes
    ----------
    slope_, intercept_ : Tensor of shape (n_fitted,) -- A and B for each fitted class
        (one for a binary problem, k otherwise).
    """

    def __init__(self, *, smooth_targets: bool = True, multiclass: str = "ovr") -> None:
        super().__init__()
        self.smooth_targets = bool(smooth_targets)
        self.multiclass = _check_multiclass(multiclass)
        self.register_buffer("slope_", torch.zeros(0))
        self.register_buffer("intercept_", torch.zeros(0))
        self.register_buffer("n_classes_", torch.zeros((), dtype=torch.long))

    @staticmethod
    def _scores(z: Tensor) -> Tensor:
        lp, l1p = _log_probs(z)
        return lp - l1p

    def fit(self, logits: Any, labels: Any, **kwargs: Any) -> PlattScaling:
        z, y = check_logits_labels(logits, labels)
        k = z.shape[1]
        _refuse_multiclass(self, k)
        cols = _columns(k)
        s = self._scores(z)[:, cols]
        pos = (y[:, None] == torch.tensor(cols, device=z.device)).double()
        t = pos
        if self.smooth_targets:
            n_pos = pos.sum(0)
            n_neg = len(y) - n_pos
            t = torch.where(pos > 0, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
        a = torch.ones(len(cols), dtype=torch.float64, device=z.device, requires_grad=True)
        b = torch.zeros(len(cols), dtype=torch.float64, device=z.device, requires_grad=True)
        _lbfgs([a, b], lambda: nn.functional.binary_cross_entropy_with_logits(a * s + b, t))
        self._store("slope_", a.detach().float())
        self._store("intercept_", b.detach().float())
        self.n_classes_.fill_(k)
        self._set_fitted()
        return self

    def _calibrate(self, logits: Tensor, levels: Tensor | None) -> Tensor:
        k = int(self.n_classes_)
        _check_classes(self, logits, k)
        u = self._scores(logits)[:, _columns(k)] * self.slope_.to(logits) + self.intercept_.to(
            logits)
        if k == 2:
            return torch.cat([torch.zeros_like(u), u], dim=1)
        return nn.functional.logsigmoid(u)  # softmax renormalises the one-vs-rest σ(u_j)


@CALIBRATORS.register("beta", fit_on="clean", seeded=False)
class BetaCalibration(Calibrator):
    """Beta calibration: ``logit P(y = 1 | s) = a ln s − b ln(1 − s) + c`` on the probability
    s = p₁ (Kull, Silva Filho & Flach 2017, "Beta calibration: a well-founded and easily
    implemented improvement on logistic calibration for binary classifiers", AISTATS).

    The paper's three-parameter family, fitted as a logistic regression on the features
    ``ln s`` and ``−ln(1 − s)`` (L-BFGS, float64); a, b >= 0 as the paper requires: when the
    unconstrained fit gives a < 0 (or b < 0) that feature is dropped and the fit repeated,
    which keeps the map monotone. Binary by definition; ``multiclass="ovr"`` (default)
    calibrates each class one-vs-rest (s = p_j) and renormalises, ``multiclass="raise"``
    refuses k > 2. For k = 2 only class 1 is fitted. Differentiable.

    Attributes
    ----------
    coef_ : Tensor of shape (n_fitted, 3) -- (a, b, c) of each fitted class.
    """

    def __init__(self, *, multiclass: str = "ovr") -> None:
        super().__init__()
        self.multiclass = _check_multiclass(multiclass)
        self.register_buffer("coef_", torch.zeros(0, 3))
        self.register_buffer("n_classes_", torch.zeros((), dtype=torch.long))

    @staticmethod
    def _fit_one(f: Tensor, t: Tensor) -> Tensor:
        """(a, b, c) for features f = (ln s, −ln(1 − s)) of shape (n, 2) and 0/1 targets."""

        def fit(mask: Tensor) -> tuple[Tensor, Tensor]:
            w = torch.zeros(2, dtype=torch.float64, device=f.device, requires_grad=True)
            c = torch.zeros((), dtype=torch.float64, device=f.device, requires_grad=True)
            _lbfgs([w, c], lambda: nn.functional.binary_cross_entropy_with_logits(
                f @ (w * mask) + c, t))
            return (w * mask).detach(), c.detach()

        def mask(*m: float) -> Tensor:
            return torch.tensor(m, dtype=torch.float64, device=f.device)

        w, c = fit(mask(1.0, 1.0))
        if w[0] < 0:  # the paper's rule: drop ln s and refit
            w, c = fit(mask(0.0, 1.0))
        elif w[1] < 0:  # drop −ln(1 − s) and refit
            w, c = fit(mask(1.0, 0.0))
        # a coefficient still negative (scores anti-correlated with the labels) is set to 0
        return torch.cat([w.clamp_min(0), c.reshape(1)])

    def fit(self, logits: Any, labels: Any, **kwargs: Any) -> BetaCalibration:
        z, y = check_logits_labels(logits, labels)
        k = z.shape[1]
        _refuse_multiclass(self, k)
        lp, l1p = _log_probs(z)
        coef = torch.stack([  # one small logistic regression per class
            self._fit_one(torch.stack([lp[:, j], -l1p[:, j]], 1), (y == j).double())
            for j in _columns(k)])
        self._store("coef_", coef.float())
        self.n_classes_.fill_(k)
        self._set_fitted()
        return self

    def _calibrate(self, logits: Tensor, levels: Tensor | None) -> Tensor:
        k = int(self.n_classes_)
        _check_classes(self, logits, k)
        lp, l1p = _log_probs(logits)
        cols = _columns(k)
        a, b, c = self.coef_.to(logits).unbind(1)
        u = a * lp[:, cols] - b * l1p[:, cols] + c
        if k == 2:
            return torch.cat([torch.zeros_like(u), u], dim=1)
        return nn.functional.logsigmoid(u)


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
        """Fit one map per (scores (n,), 0/1 targets (n,)) pair."""

    @abstractmethod
    def _map(self, j: int, s: Tensor) -> Tensor:
        """The j-th fitted map at scores ``s`` of shape (n,)."""

    def calibrated_probabilities(self, logits: Tensor) -> Tensor:
        """Per-class calibrated probabilities before renormalisation, shape (n, k)
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


@CALIBRATORS.register("isotonic", fit_on="clean", seeded=False)
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


@CALIBRATORS.register("histogram", fit_on="clean", seeded=False)
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


@CALIBRATORS.register("venn_abers", fit_on="clean", seeded=False)
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


# ====================================================================== by perturbation level
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
        """Fit from logits (n, k), labels (n,) and levels (n,) in [0, 1] (any device)."""
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
                notes.append(f"bin {b} [{b / nb:.1f}, {(b + 1) / nb:.1f}) ({why}) -> bins "
                             f"{lo}-{hi}")
            if (lo, hi) not in fitted:
                sel = (bins >= lo) & (bins <= hi)
                fitted[(lo, hi)] = copy.deepcopy(self.calibrators_[b]).fit(z[sel], y[sel])
            self.calibrators_[b] = copy.deepcopy(fitted[(lo, hi)])
            sources.append((lo, hi))
        if notes:
            warnings.warn(
                f"{len(notes)} thin or degenerate level bin(s) are fitted on their samples "
                "pooled with the nearest bins: " + "; ".join(notes) + ". See fallback_bins_ "
                "and sources_; more validation data gives each bin its own",
                UserWarning, stacklevel=stacklevel)
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
    """A registered ByLevel class of ``inner`` (``by_level_<name>``)."""
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
    CALIBRATORS.register(f"by_level_{name}", cls, fit_on="perturbed",
                         seeded=CALIBRATORS.meta(name)["seeded"])
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
    """Natural cubic spline basis at ``x`` (n,) for K knots: 1, x and K − 2 truncated-power
    terms, linear beyond the boundary knots (Hastie, Tibshirani & Friedman 2009, The Elements
    of Statistical Learning, eq. 5.4-5.5). Shape (n, K)."""
    k = len(knots)
    cols = [torch.ones_like(x), x]

    def d(j: int) -> Tensor:
        return ((x - knots[j]).clamp_min(0) ** 3 - (x - knots[-1]).clamp_min(0) ** 3) / (
            knots[-1] - knots[j])

    last = d(k - 2)
    cols += [d(j) - last for j in range(k - 2)]
    return torch.stack(cols, 1)


@CALIBRATORS.register("smooth_level_temperature", fit_on="perturbed", seeded=False)
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
        """Fit from logits (n, k), labels (n,) and levels (n,) in [0, 1] (any device)."""
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

    def forward(self, x: Any, *, levels: Tensor | None = None, grad: bool | None = None,
                progress: bool = False, validate: bool = True) -> Tensor:
        """As :meth:`Model.forward`; asking for gradients through a non-differentiable
        calibrator raises :class:`NonDifferentiableCalibratorError`."""
        wants = grad if grad is not None else bool(isinstance(x, Tensor) and x.requires_grad)
        if wants:
            check_differentiable(self, "a gradient computation")
        return super().forward(x, levels=levels, grad=grad, progress=progress,
                               validate=validate)

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
    """Fit calibrator ``method`` (any name of :data:`CALIBRATORS`) for ``model`` on validation
    data.

    Those registered with ``fit_on="clean"`` (temperature, dirichlet, vector, ...) are fitted
    on clean validation logits; those with ``fit_on="perturbed"`` (recalx, by_level_*,
    smooth_level_temperature) on perturbed validation samples from ``perturbation``
    (required for them), ``n_bins`` level bins. ``seed`` reaches the calibrators that draw
    (cross-validation folds).
    """
    check_choice(method, METHODS, "method")
    cls, meta = CALIBRATORS[method], CALIBRATORS.meta(method)
    kwargs = {"seed": seed} if meta["seeded"] else {}
    if meta["fit_on"] == "perturbed":
        if perturbation is None:
            raise ValueError(f"{method} needs a perturbation to draw its validation samples")
        return cls(n_bins, **kwargs).fit_perturbed(model, X_val, y_val, perturbation,
                                                   n_samples=n_samples, n_per_bin=n_per_bin,
                                                   seed=seed, progress=progress)
    logits = model.forward(X_val, grad=False, progress=progress)
    return cls(**kwargs).fit(logits, y_val)
