"""Metric metadata shared by every metric family."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


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
