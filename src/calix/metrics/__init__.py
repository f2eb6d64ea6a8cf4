"""Metrics for calibration and for explanations.

Every metric declares its direction and category in ``METRICS`` (see :class:`MetricInfo`), so
reports can rank methods without special cases.
"""

from calix.metrics import faithfulness, robustness, similarity, stability
from calix.metrics._base import MetricInfo, procedures_getattr
from calix.metrics.calibration import METRICS as _CAL_METRICS
from calix.metrics.calibration import (
    LevelCalibration,
    accuracy,
    brier,
    ce_kl,
    ce_kl_binned,
    ece,
    kde_ece,
    nll,
    reliability_curve,
)
from calix.metrics.faithfulness import (
    Curve,
    Fidelity,
    better_than_random,
    deletion_curve,
    insertion_curve,
    mif_lif,
)
from calix.metrics.robustness import local_lipschitz, parameter_randomisation, sensitivity
from calix.metrics.similarity import minmax, otsu_tv, ssim
from calix.metrics.stability import (
    interval_coverage,
    neighbourhood_stability,
    queries_to_stability,
    reproducibility,
    surrogate_r2,
)

METRICS = {**_CAL_METRICS, **faithfulness.METRICS, **robustness.METRICS, **similarity.METRICS,
           **stability.METRICS}

# calibration_by_level, roar_images and roar_tabular live in calix.procedures (they calibrate
# or retrain); __getattr__ keeps them importable from here.
__getattr__ = procedures_getattr(
    __name__, ("calibration_by_level", "roar_images", "roar_tabular"))

__all__ = [  # noqa: F822 (three of them found by __getattr__)
    "METRICS", "MetricInfo", "LevelCalibration", "accuracy", "brier", "calibration_by_level",
    "ce_kl", "ce_kl_binned", "ece", "kde_ece", "nll", "reliability_curve", "Curve", "Fidelity",
    "better_than_random", "deletion_curve", "insertion_curve", "mif_lif", "roar_images",
    "roar_tabular", "local_lipschitz", "parameter_randomisation", "sensitivity", "minmax",
    "otsu_tv", "ssim", "interval_coverage", "neighbourhood_stability", "queries_to_stability",
    "reproducibility", "surrogate_r2",
]
