"""Metrics for calibration and for explanations.

Every metric declares its direction and category in ``METRICS`` (see :class:`MetricInfo`), so
reports can rank methods without special cases.
"""

from calix.metrics import (
    agreement,
    axiomatic,
    complexity,
    faithfulness,
    localization,
    randomization,
    relative_stability,
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
from calix.metrics.axiomatic import completeness, input_invariance, non_sensitivity
from calix.metrics.bootstrap import BootstrapInterval, bootstrap_interval
from calix.metrics.calibration import METRICS as _CAL_METRICS
from calix.metrics.calibration import (
    CalibrationInterval,
    LevelCalibration,
    accuracy,
    ace,
    brier,
    calibration_interval,
    ce_kl,
    ce_kl_binned,
    classwise_ece,
    ece,
    kde_ece,
    mce,
    nll,
    reliability_curve,
    smooth_ece,
    smooth_reliability_curve,
)
from calix.metrics.calibration_tests import METRICS as _CAL_TEST_METRICS
from calix.metrics.calibration_tests import (
    CalibrationTest,
    LossDecomposition,
    calibration_loss,
    loss_decomposition,
    refinement_loss,
    skce,
    skce_test,
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
from calix.metrics.relative_stability import (
    relative_input_stability,
    relative_output_stability,
    relative_representation_stability,
)
from calix.metrics.removal import (
    irof,
    noisy_linear_imputation,
    road,
    selectivity,
    sensitivity_n,
)
from calix.metrics.robustness import (
    local_lipschitz,
    parameter_randomisation,
    parameter_randomization,
    sensitivity,
)
from calix.metrics.similarity import minmax, otsu_tv, ssim
from calix.metrics.stability import (
    interval_coverage,
    neighborhood_stability,
    neighbourhood_stability,
    queries_to_stability,
    reproducibility,
    surrogate_r2,
)

METRICS = {**_CAL_METRICS, **_CAL_TEST_METRICS, **faithfulness.METRICS, **robustness.METRICS,
           **similarity.METRICS, **stability.METRICS, **localization.METRICS, **agreement.METRICS,
           **complexity.METRICS, **randomization.METRICS, **removal.METRICS,
           **axiomatic.METRICS, **relative_stability.METRICS}

# calibration_by_level, roar_images and roar_tabular live in calix.procedures (they calibrate
# or retrain); __getattr__ keeps them importable from here.
__getattr__ = procedures_getattr(
    __name__, ("calibration_by_level", "roar_images", "roar_tabular"))

__all__ = [  # noqa: F822 (three of them found by __getattr__)
    "METRICS", "MetricInfo", "LevelCalibration", "accuracy", "brier", "calibration_by_level",
    "ce_kl", "ce_kl_binned", "ece", "kde_ece", "nll", "reliability_curve", "Curve", "Fidelity",
    "better_than_random", "deletion_curve", "insertion_curve", "mif_lif", "roar_images",
    "roar_tabular", "local_lipschitz", "parameter_randomisation", "parameter_randomization",
    "neighborhood_stability", "sensitivity", "minmax",
    "otsu_tv", "ssim", "interval_coverage", "neighbourhood_stability", "queries_to_stability",
    "reproducibility", "surrogate_r2",
    "BootstrapInterval", "bootstrap_interval", "pointing_game", "relevance_mass_accuracy",
    "relevance_rank_accuracy", "top_k_intersection", "attribution_auc", "feature_agreement",
    "rank_agreement", "sign_agreement", "signed_rank_agreement", "rank_correlation",
    "prediction_gap_important", "prediction_gap_unimportant", "sparseness", "complexity_entropy",
    "effective_complexity", "Randomization", "randomized_layers", "mprt", "smooth_mprt",
    "efficient_mprt", "random_logit", "noisy_linear_imputation", "road", "irof", "selectivity",
    "sensitivity_n", "completeness", "non_sensitivity", "input_invariance",
    "relative_input_stability", "relative_output_stability", "relative_representation_stability",
    "ace", "mce", "classwise_ece", "smooth_ece", "smooth_reliability_curve",
    "calibration_interval", "CalibrationInterval", "skce", "skce_test", "CalibrationTest",
    "loss_decomposition", "LossDecomposition", "calibration_loss", "refinement_loss",
]
