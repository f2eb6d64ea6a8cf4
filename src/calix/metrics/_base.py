"""Metric metadata shared by every metric family."""

from __future__ import annotations

from dataclasses import dataclass


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
