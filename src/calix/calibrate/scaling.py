"""Parametric calibrators of the logits: temperature, vector, matrix and structured matrix
scaling, and the binary Platt scaling and beta calibration (one-vs-rest for k > 2)."""

from __future__ import annotations

import math
import warnings
from abc import abstractmethod
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from calix.calibrate.base import (
    T_MIN,
    Calibrator,
    _all_correct,
    _check_classes,
    _check_multiclass,
    _columns,
    _fit_temperatures,
    _lbfgs,
    _log_probs,
    _refuse_multiclass,
    check_logits_labels,
)
from calix.calibrate.dirichlet import Dirichlet


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


_B = TypeVar("_B", bound="_OneVsRestBinary")


class _OneVsRestBinary(Calibrator):
    """Shared parts of the binary calibrators of one score per class (Platt scaling, beta
    calibration), one-vs-rest for k > 2: the classes of :func:`_columns` are fitted, each
    gets a calibrated logit u, and the output is ``(0, u)`` for k = 2 (σ(u) is class 1's
    probability) and ``ln σ(u_j)`` for k > 2, which softmax renormalises. Subclasses set
    ``multiclass`` and register the ``n_classes_`` buffer."""

    multiclass: str
    n_classes_: Tensor

    def fit(self: _B, logits: Any, labels: Any, **kwargs: Any) -> _B:
        z, y = check_logits_labels(logits, labels)
        k = z.shape[1]
        _refuse_multiclass(self, k)
        self._fit_columns(z, y, _columns(k))
        self.n_classes_.fill_(k)
        self._set_fitted()
        return self

    @abstractmethod
    def _fit_columns(self, z: Tensor, y: Tensor, cols: list[int]) -> None:
        """Fit classes ``cols`` on logits ``z`` of shape (n, k) and labels ``y`` of shape
        (n,), and store the parameters."""

    @abstractmethod
    def _column_logits(self, logits: Tensor, cols: list[int]) -> Tensor:
        """The calibrated logit u of each fitted class, of shape (n, len(cols))."""

    def _calibrate(self, logits: Tensor, levels: Tensor | None) -> Tensor:
        k = int(self.n_classes_)
        _check_classes(self, logits, k)
        u = self._column_logits(logits, _columns(k))
        if k == 2:
            return torch.cat([torch.zeros_like(u), u], dim=1)
        return nn.functional.logsigmoid(u)  # softmax renormalises the one-vs-rest σ(u_j)


class PlattScaling(_OneVsRestBinary):
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

    def _fit_columns(self, z: Tensor, y: Tensor, cols: list[int]) -> None:
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

    def _column_logits(self, logits: Tensor, cols: list[int]) -> Tensor:
        return self._scores(logits)[:, cols] * self.slope_.to(logits) + self.intercept_.to(
            logits)


class BetaCalibration(_OneVsRestBinary):
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

    def _fit_columns(self, z: Tensor, y: Tensor, cols: list[int]) -> None:
        lp, l1p = _log_probs(z)
        coef = torch.stack([  # one small logistic regression per class
            self._fit_one(torch.stack([lp[:, j], -l1p[:, j]], 1), (y == j).double())
            for j in cols])
        self._store("coef_", coef.float())

    def _column_logits(self, logits: Tensor, cols: list[int]) -> Tensor:
        lp, l1p = _log_probs(logits)
        a, b, c = self.coef_.to(logits).unbind(1)
        return a * lp[:, cols] - b * l1p[:, cols] + c


