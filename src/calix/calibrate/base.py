"""The calibrator base class, its argument checks and the fitting pieces the calibrators share.

- :class:`Calibrator` -- the base class: ``fit`` then ``forward``, fitted state in buffers;
- :func:`check_logits_labels` and the errors :class:`NotFittedError`,
  :class:`NonDifferentiableCalibratorError`;
- the temperature search of temperature scaling and ReCalX (``_fit_temperatures``), the
  L-BFGS fit (``_lbfgs``) and the one-vs-rest pieces of the binary calibrators.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from calix._validation import (
    check_choice,
    check_class_scores,
    check_index_range,
    is_simplex,
    label_tensor,
)
from calix.models import as_tensor


class NotFittedError(ValueError):
    """A calibrator was used before ``fit``.

    (Not scikit-learn's class of the same name: that one is also an ``AttributeError``, which
    ``torch.nn.Module`` turns into a misleading "no attribute" error inside properties.)
    """


class NonDifferentiableCalibratorError(TypeError):
    """A method that takes gradients was given a model calibrated by a calibrator that
    gradients cannot pass (histogram binning, isotonic regression, Venn-Abers)."""


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
    check_class_scores(z, name, no_rows=": calibration needs validation samples")
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
    >>> from calix.calibrate import TemperatureScaling
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
    """Per group (of at least one row): whether every argmax prediction is correct, of shape
    (n_groups,). The NLL then keeps falling as T -> 0, so no temperature can be fitted."""
    wrong = torch.zeros(n_groups, dtype=torch.long, device=z.device).index_add_(
        0, groups, (z.argmax(1) != y).long())
    return (wrong == 0) & (torch.bincount(groups, minlength=n_groups) > 0)


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


