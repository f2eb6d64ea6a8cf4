"""Argument checks shared across calix: counts, choices, class indices and probabilities.

Each check raises a ``TypeError``/``ValueError`` whose message names the argument, so a
caller (and the CLI) can report it as it is.
"""

from __future__ import annotations

from collections.abc import Container
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "MAX_ELEMENTS", "check_count", "check_choice", "label_tensor", "check_index_range",
    "one_per_input", "is_simplex", "check_simplex", "check_class_scores",
]

#: Most elements one dense tensor of masks or samples may hold (rows x width): a budget
#: past it is refused up front instead of being allocated.
MAX_ELEMENTS = 1 << 28


def check_count(value: Any, name: str, *, minimum: int = 1, width: int = 1) -> int:
    """``value`` as an int >= ``minimum``, refusing booleans, fractions, strings and counts whose
    ``value * width`` elements exceed :data:`MAX_ELEMENTS`.

    Raises
    ------
    TypeError
        For a value that is not an integer (integral floats are accepted).
    ValueError
        For a value below ``minimum`` or too large to allocate.
    """
    if isinstance(value, float | np.floating) and np.isfinite(value) and float(value).is_integer():
        value = int(value)
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if value * max(int(width), 1) > MAX_ELEMENTS:
        raise ValueError(
            f"{name}={value} is too large: it needs {value * max(int(width), 1):.3g} elements "
            f"at once, more than the {MAX_ELEMENTS:.3g} calix allocates in one tensor")
    return value


def check_choice(value: Any, choices: Container, name: str, *, listed: Any = None) -> Any:
    """``value`` if it is in ``choices``; else a ValueError "``name`` must be one of ...".

    ``listed`` is what the message shows (default ``choices`` itself), e.g. the sorted keys of
    a dict while membership is still tested on the dict.
    """
    if value not in choices:
        shown = choices if listed is None else listed
        raise ValueError(f"{name} must be one of {shown}, got {value!r}")
    return value


def label_tensor(labels: Any, name: str) -> Tensor:
    """Class indices ``labels`` as a flat int64 CPU tensor; names ``name`` when they are not
    integers (class names, fractions, NaN, complex or ragged input)."""
    if isinstance(labels, Tensor):
        y = labels.detach().cpu()
    else:
        try:
            arr = np.asarray(labels)
        except ValueError as exc:  # ragged lists
            raise TypeError(f"{name} could not be converted to an array: {exc}") from exc
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"{name} must be integer class indices, got dtype {arr.dtype}; "
                            "map class names to indices 0 .. n_classes - 1 first")
        y = torch.as_tensor(arr, device="cpu")
    if y.is_complex():
        raise TypeError(f"{name} must be integer class indices, got dtype {y.dtype}")
    if y.is_floating_point():
        if not torch.isfinite(y).all() or (y != y.round()).any():
            raise ValueError(f"{name} must be integer class indices")
    return y.long().reshape(-1)


def check_index_range(index: Any, k: int, name: str, *, of: str = "", found: str = "found"
                      ) -> None:
    """Refuse class indices (a numpy array or tensor) outside ``[0, k)``, naming up to five.

    The message reads "``name`` must lie in [0, k)``of``; ``found`` [...]".
    """
    bad = (index < 0) | (index >= k)
    if bad.any():
        raise ValueError(f"{name} must lie in [0, {k}){of}; {found} "
                         f"{sorted(set(index[bad].tolist()))[:5]}")


def one_per_input(t: Tensor, n: int, name: str = "target") -> Tensor:
    """A flat tensor of one index, or of one index per input, as ``n`` indices."""
    if t.numel() == 1:
        t = t.expand(n).clone()
    if t.numel() != n:
        raise ValueError(f"{name} must be one index or one per input ({n}), got {t.numel()}")
    return t


def is_simplex(p: Tensor, *, atol: float, range_atol: float | None = None) -> bool:
    """Whether every entry of ``p`` (n, k) lies in [0, 1] (within ``range_atol``, default
    ``atol``) and every row sums to 1 within ``atol``."""
    r = atol if range_atol is None else range_atol
    in_unit = bool(((p >= -r) & (p <= 1 + r)).all())
    return in_unit and bool(((p.sum(1) - 1).abs() <= atol).all())


def check_simplex(p: Any, *, atol: float, name: str, sums: str) -> None:
    """Refuse rows of ``p`` (a numpy array or tensor, (n, k)) with an entry outside [0, 1] or
    a sum off 1 by more than ``atol``: "``name`` must lie in [0, 1]", "``name`` ``sums``; the
    worst row is off by ..."."""
    if (p < -atol).any() or (p > 1 + atol).any():
        raise ValueError(f"{name} must lie in [0, 1]")
    off = abs(p.sum(1) - 1)
    worst = float(off.max()) if len(off) else 0.0
    if worst > atol:
        raise ValueError(f"{name} {sums}; the worst row is off by {worst:.3g}")


def check_class_scores(t: Any, name: str, *, no_rows: str = "") -> None:
    """Refuse class scores ``t`` (logits or probabilities, a tensor or numpy array) that are not
    of shape (n, k) with n >= 1 rows and k >= 2 classes; ``no_rows`` ends the message for
    n = 0 ("``name`` has no rows``no_rows``")."""
    if t.ndim != 2:
        raise ValueError(f"{name} must have shape (n, n_classes), got {tuple(t.shape)}")
    if t.shape[1] < 2:
        raise ValueError(f"{name} must have at least two classes, got {t.shape[1]}")
    if len(t) == 0:
        raise ValueError(f"{name} has no rows{no_rows}")
