"""Metrics for calibration (and, as calix grows, for explanations).

Every metric declares its direction and category in ``METRICS`` (see :class:`MetricInfo`).
"""

from calix.metrics._base import MetricInfo
from calix.metrics.calibration import (
    METRICS,
    LevelCalibration,
    accuracy,
    brier,
    calibration_by_level,
    ce_kl,
    ce_kl_binned,
    ece,
    kde_ece,
    nll,
    reliability_curve,
)

__all__ = [
    "METRICS", "MetricInfo", "LevelCalibration", "accuracy", "brier", "calibration_by_level",
    "ce_kl", "ce_kl_binned", "ece", "kde_ece", "nll", "reliability_curve",
]
