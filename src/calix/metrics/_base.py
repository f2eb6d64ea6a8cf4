"""What every metric family shares: :class:`MetricInfo`, array conversion, and
:func:`neighbours` (the points near each input that robustness and stability explain)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import numpy as np
import torch

from calix._random import make_generator, std_normal
from calix._validation import check_count
from calix.models import as_tensor


@dataclass(frozen=True)
class MetricInfo:
    """What a metric's number means, so reports can rank methods without special cases.

    Attributes
    ----------
    name : str
    higher_is_better : bool
    category : str -- e.g. "calibration", "performance", "faithfulness", "robustness".
    """

    name: str
    higher_is_better: bool
    category: str

    def better(self, a: float, b: float) -> bool:
        """Whether value ``a`` is strictly better than ``b``."""
        return a > b if self.higher_is_better else a < b

    @property
    def direction(self) -> str:
        """``"higher"`` or ``"lower"``: which values are better."""
        return "higher" if self.higher_is_better else "lower"


_F = TypeVar("_F", bound=Callable[..., Any])


def metric(direction: Literal["higher", "lower"], category: str, *,
           names: tuple[str, ...] | None = None) -> Callable[[_F], _F]:
    """Declare what the numbers of a metric function mean, on the function itself.

    Sets ``fn.direction`` (``"higher"`` or ``"lower"`` is better), ``fn.category`` and
    ``fn.metric_names`` -- the names of the numbers it gives (default: the function's own
    name; e.g. ``sensitivity`` gives ``max_sensitivity`` and ``avg_sensitivity``).
    :func:`metrics_of` turns decorated functions into a ``METRICS`` dict.
    """
    if direction not in ("higher", "lower"):
        raise ValueError(f"direction must be 'higher' or 'lower', got {direction!r}")

    def decorate(fn: _F) -> _F:
        fn.direction = direction  # type: ignore[attr-defined]
        fn.category = category  # type: ignore[attr-defined]
        fn.metric_names = tuple(names) if names else (fn.__name__,)  # type: ignore[attr-defined]
        return fn

    return decorate


def metric_info(fn: Callable[..., Any]) -> tuple[MetricInfo, ...]:
    """The :class:`MetricInfo` of every number of a :func:`metric`-decorated function."""
    return tuple(MetricInfo(name, fn.direction == "higher", fn.category)  # type: ignore[attr-defined]
                 for name in fn.metric_names)  # type: ignore[attr-defined]


def metrics_of(*fns: Callable[..., Any]) -> dict[str, MetricInfo]:
    """``{name: MetricInfo}`` of the numbers of :func:`metric`-decorated functions, in order."""
    return {info.name: info for fn in fns for info in metric_info(fn)}


def as_array(value: Any, name: str) -> np.ndarray:
    """``value`` (a tensor on any device, an array or nested lists) as a numpy array; a
    TypeError naming ``name`` for ragged input."""
    try:
        return np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value)
    except ValueError as exc:  # ragged lists
        raise TypeError(f"{name} could not be converted to an array: {exc}") from exc


def real_array(value: Any, name: str) -> np.ndarray:
    """:func:`as_array` as float64, refusing non-numeric dtypes by ``name``."""
    a = as_array(value, name)
    if a.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be real numbers, got dtype {a.dtype}")
    return a.astype(np.float64)


def procedures_getattr(module: str, names: tuple[str, ...]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that finds ``names`` in :mod:`calix.procedures`, where these
    procedures (they train or calibrate) live now, so their old import paths keep working."""

    def __getattr__(name: str) -> Any:
        if name in names:
            from calix import procedures

            return getattr(procedures, name)
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__


def neighbours(x: Any, n_neighbours: int, radius: float, *,
               ball: Literal["uniform", "linf", "gaussian"] = "uniform",
               seed: int | None = 0) -> torch.Tensor:
    """Points near each input, shape (n, n_neighbours, *input_shape), on the device of ``x``
    (drawn on the CPU from the seed, so every device gets the same points).

    ``uniform``: uniform in the L2 ball of ``radius``; ``linf``: uniform in [−r, r] per element
    (Yeh et al.'s and Quantus's sampler); ``gaussian``: N(0, r²) per element.
    """
    xt = as_tensor(x, name="x")
    if xt.ndim < 2 or xt.numel() == 0:
        raise ValueError(f"x must be a non-empty batch of shape (n, *input_shape), got shape "
                         f"{tuple(xt.shape)}")
    n_neighbours = check_count(n_neighbours, "n_neighbours", width=xt.numel())
    if isinstance(radius, bool) or not isinstance(radius, int | float | np.number) \
            or not 0 < radius < float("inf"):
        raise ValueError(f"radius must be a finite number > 0, got {radius!r}")
    g = make_generator(seed)
    shape = (len(xt), n_neighbours, *xt.shape[1:])
    if ball == "linf":
        delta = (torch.rand(shape, generator=g) * 2 - 1) * radius
    elif ball == "gaussian":
        delta = std_normal(torch.Size(shape), g) * radius
    elif ball == "uniform":
        direction = std_normal(torch.Size(shape), g).reshape(len(xt), n_neighbours, -1)
        direction = direction / direction.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        dim = direction.shape[-1]
        r = radius * torch.rand(len(xt), n_neighbours, 1, generator=g) ** (1.0 / dim)
        delta = (direction * r).reshape(shape)
    else:
        raise ValueError(f"ball must be 'uniform', 'linf' or 'gaussian', got {ball!r}")
    return xt[:, None] + delta.to(xt.device)
