"""The explainer interface: ``Explainer(model, ...).explain(x, target=None) -> Explanation``."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from calix.models import Model, as_tensor, wrap

__all__ = ["Explanation", "Explainer", "Output", "Reduce", "reduce_channels", "score"]

Output = Literal["probability", "logit", "log_probability"]
Reduce = Literal["none", "sum", "abs_sum", "square_sum"]
_REDUCE = ("none", "sum", "abs_sum", "square_sum")
_OUTPUTS = ("probability", "logit", "log_probability")


@dataclass
class Explanation:
    """Attributions for a batch of inputs.

    Attributes
    ----------
    values : ndarray of shape (n, *input_shape), or (n, 1, H, W) for maps reduced over
        channels and for spatial-feature methods on images
        Attribution of every input element (features mapped back to the input's shape).
    method : str
    target : ndarray of shape (n,) -- the explained class (or output index).
    n_queries : int or None -- model evaluations spent (None when unknown).
    params : dict -- the method's parameters.
    feature_values : ndarray of shape (n, d) or None -- per-feature attributions (feature
        methods only).
    labels : ndarray of shape (n, *input_shape) or None -- feature index of every element.
    std, lower, upper : ndarray like ``feature_values`` (or ``values``) or None -- uncertainty.
    extra : dict -- method-specific results (e.g. a surrogate's intercept and R²).
    """

    values: np.ndarray
    method: str
    target: np.ndarray
    n_queries: int | None = None
    params: dict[str, Any] = field(default_factory=dict)
    feature_values: np.ndarray | None = None
    labels: np.ndarray | None = None
    std: np.ndarray | None = None
    lower: np.ndarray | None = None
    upper: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.values)

    def normalized(self) -> np.ndarray:
        """``values`` min-max normalised to [0, 1] per input (constant maps become 0)."""
        v = self.values.reshape(len(self.values), -1)
        lo, hi = v.min(1, keepdims=True), v.max(1, keepdims=True)
        span = np.where(hi > lo, hi - lo, 1.0)
        return ((v - lo) / span).reshape(self.values.shape)


def reduce_channels(values: Tensor, how: str, *, image: bool) -> Tensor:
    """Reduce attributions over channels: ``sum`` (signed), ``abs_sum``, ``square_sum``.

    For images ``(n, C, H, W)`` the result keeps a channel axis of size 1; for other inputs
    ``abs_sum`` and ``square_sum`` act element-wise and ``sum`` is the identity.
    """
    if how not in _REDUCE:
        raise ValueError(f"reduce must be one of {_REDUCE}, got {how!r}")
    if how == "none":
        return values
    v = values.abs() if how == "abs_sum" else values**2 if how == "square_sum" else values
    return v.sum(dim=1, keepdim=True) if image else v


def score(outputs: Tensor, targets: Tensor, output: str, task: str) -> Tensor:
    """The explained scalar per row: probability / logit / log-probability of the target.

    Parameters
    ----------
    outputs : Tensor of shape (n, ..., k) -- logits (calibrated logits for calibrated models).
    targets : Tensor of shape (n,) -- class (or output) index per input.
    """
    if task == "regression":
        z = outputs
    elif output == "probability":
        z = torch.softmax(outputs, dim=-1)
    elif output == "log_probability":
        z = torch.log_softmax(outputs, dim=-1)
    else:
        z = outputs
    idx = targets.to(z.device).view(-1, *([1] * (z.ndim - 1))).expand(*z.shape[:-1], 1)
    return z.gather(-1, idx).squeeze(-1)


class Explainer(ABC):
    """Base class of every calix explainer.

    Parameters
    ----------
    model : calix Model, torch module, scikit-learn estimator or callable (wrapped with
        :func:`calix.wrap`). A calibrated model (:func:`calix.calibrate.calibrated`) is explained
        through its calibration.
    output : {"probability", "logit", "log_probability"}
        The explained scalar for classifiers (regressors explain their raw output).
    reduce : {"none", "sum", "abs_sum", "square_sum"}
        Reduction over channels (signed sum, or unsigned absolute / squared sums).
    """

    name: str = "explainer"
    #: True when an explanation evaluates exactly one model row per input (no steps, noisy
    #: copies or perturbations); such explainers can share a batch with per-row model samples.
    single_pass: bool = False

    def __init__(self, model: Any, *, output: Output = "probability", reduce: Reduce = "none"):
        if output not in _OUTPUTS:
            raise ValueError(f"output must be one of {_OUTPUTS}, got {output!r}")
        if reduce not in _REDUCE:
            raise ValueError(f"reduce must be one of {_REDUCE}, got {reduce!r}")
        self.model: Model = wrap(model)
        self.output = output
        self.reduce = reduce

    # ---------------------------------------------------------------- public
    def explain(self, x: Any, target: Any = None) -> Explanation:
        """Explain one input ``(*input_shape)`` or a batch ``(n, *input_shape)``.

        Parameters
        ----------
        target : None, int or array-like of shape (n,)
            None explains the predicted class; an int explains that class for every input;
            an array gives one class per input.
        """
        xb = self._batch(x)
        targets = self.targets(xb, target)
        before = self.model.n_queries
        exp = self._explain(xb, targets)
        used = self.model.n_queries - before
        image = xb.ndim == 4
        values = reduce_channels(torch.as_tensor(exp.values), self.reduce, image=image)
        exp.values = values.detach().cpu().numpy()
        exp.target = targets.cpu().numpy()
        exp.method = self.name
        if exp.n_queries is None:
            exp.n_queries = used
        exp.params = {"output": self.output, "reduce": self.reduce, **self.params(), **exp.params}
        return exp

    def params(self) -> dict[str, Any]:
        """The method's parameters (recorded in every Explanation)."""
        return {}

    # ---------------------------------------------------------------- helpers
    @abstractmethod
    def _explain(self, x: Tensor, targets: Tensor) -> Explanation:
        """Explain a validated batch ``x`` (n, *input_shape) for ``targets`` (n,)."""

    def _batch(self, x: Any) -> Tensor:
        t = as_tensor(x, name="x", device=self.model.device)
        shape = self.model.input_shape
        if shape is not None and tuple(t.shape) == shape:
            t = t[None]
        t = self.model.check_input(t)
        if len(t) == 0:
            raise ValueError("x has no inputs")
        return t

    def targets(self, x: Tensor, target: Any) -> Tensor:
        """Resolve ``target`` to a long tensor of shape (n,), checking the class range."""
        n = len(x)
        k = self.model.n_outputs
        if target is None:
            with torch.no_grad():
                out = self.model.forward(x)
            k = out.shape[1]
            if self.model.task == "regression":
                return torch.zeros(n, dtype=torch.long)
            return out.argmax(1).cpu()
        t = torch.as_tensor(np.asarray(target) if not isinstance(target, Tensor) else target)
        if t.is_floating_point() and (t != t.round()).any():
            raise ValueError(f"target must be integer class indices, got {t}")
        t = t.long().cpu().reshape(-1)
        if t.numel() == 1:
            t = t.expand(n).clone()
        if t.numel() != n:
            raise ValueError(f"target must be one index or one per input ({n}), got {t.numel()}")
        if k is None:
            with torch.no_grad():
                k = self.model.forward(x[:1]).shape[1]
        bad = (t < 0) | (t >= k)
        if bad.any():
            raise ValueError(
                f"target must lie in [0, {k}) for a model with {k} outputs; "
                f"got {sorted(set(t[bad].tolist()))[:5]}"
            )
        return t

    def _score(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return score(outputs, targets, self.output, self.model.task)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"
