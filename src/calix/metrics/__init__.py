"""Metrics for calibration and for explanations.

Every metric declares its direction and category in ``METRICS`` (see :class:`MetricInfo`), so
reports can rank methods without special cases.
"""

from calix.metrics import (
    agreement,
    complexity,
    faithfulness,
    localization,
    randomization,
    removal,
    robustness,
    similarity,
    stability,
)
from calix.metrics._base import MetricInfo, procedures_getattr
from calix.metrics.agreement import (
    feature_agreement,
    prediction_gap_important,
    prediction_gap_unimportant,
    rank_agreement,
    rank_correlation,
    sign_agreement,
    signed_rank_agreement,
)
from calix.metrics.bootstrap import BootstrapInterval, bootstrap_interval
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
from calix.metrics.complexity import complexity as complexity_entropy
from calix.metrics.complexity import effective_complexity, sparseness
from calix.metrics.faithfulness import (
    Curve,
    Fidelity,
    better_than_random,
    deletion_curve,
    insertion_curve,
    mif_lif,
)
from calix.metrics.localization import (
    attribution_auc,
    pointing_game,
    relevance_mass_accuracy,
    relevance_rank_accuracy,
    top_k_intersection,
)
from calix.metrics.randomization import (
    Randomization,
    efficient_mprt,
    mprt,
    random_logit,
    randomized_layers,
    smooth_mprt,
)
from calix.metrics.removal import noisy_linear_imputation, road
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
           **stability.METRICS, **localization.METRICS, **agreement.METRICS,
           **complexity.METRICS, **randomization.METRICS, **removal.METRICS}

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
    "BootstrapInterval", "bootstrap_interval", "pointing_game", "relevance_mass_accuracy",
    "relevance_rank_accuracy", "top_k_intersection", "attribution_auc", "feature_agreement",
    "rank_agreement", "sign_agreement", "signed_rank_agreement", "rank_correlation",
    "prediction_gap_important", "prediction_gap_unimportant", "sparseness", "complexity_entropy",
    "effective_complexity", "Randomization", "randomized_layers", "mprt", "smooth_mprt",
    "efficient_mprt", "random_logit", "noisy_linear_imputation", "road",
]
