"""The names of calix's registries, importable without torch (the command line's choices).

Each tuple equals the names of one registry, in its order; ``tests/test_registries.py`` checks
that they do. The registries themselves live where their objects are defined:

- :data:`EXPLAINERS` -- ``calix.explain.METHODS``;
- :data:`CALIBRATORS` -- ``calix.calibrate.CALIBRATORS``;
- :data:`SAMPLERS` -- ``calix.uncertainty.SAMPLERS``; :data:`UNTRAINED_SAMPLERS` those that
  need no extra training (``needs_training=False``), the dataset-scale ones;
- :data:`ARCHITECTURES` -- ``calix.nets.ARCHITECTURES``; :data:`ZOO_MODELS` those the zoo
  trains (``zoo=True``, ``calix.zoo.ZOO``);
- :data:`LEVEL_METRICS` -- ``calix.procedures.LEVEL_METRICS``;
- :data:`STUDIES` -- ``calix.studies.STUDIES``;
- :data:`GROUND_TRUTH_DATASETS` -- ``calix.groundtruth.GROUND_TRUTH_DATASETS``, the generated
  datasets with known explanations that ``calix.data.DATASETS`` registers.
"""

from __future__ import annotations

__all__ = ["EXPLAINERS", "CALIBRATORS", "SAMPLERS", "UNTRAINED_SAMPLERS", "ARCHITECTURES",
           "ZOO_MODELS", "LEVEL_METRICS", "STUDIES", "GROUND_TRUTH_DATASETS"]

EXPLAINERS = (
    "saliency", "integrated_gradients", "smoothgrad", "guided_backprop", "occlusion", "rise",
    "lime", "kernel_shap", "poly_shap", "leverage_shap", "odd_shap", "regression_adjusted_shap",
    "logit_surrogate_shap", "stacked_shap", "shapley", "meaningful_perturbation", "bayes_lime",
    "bayes_shap", "eagle", "glime", "us_lime", "lime_tabular",
)
CALIBRATORS = (
    "temperature", "dirichlet", "recalx", "vector", "matrix", "structured_matrix",
    "platt_scaling", "beta", "isotonic", "histogram", "venn_abers", "by_level_vector",
    "by_level_matrix", "by_level_structured_matrix", "by_level_dirichlet",
    "by_level_platt_scaling", "by_level_beta", "by_level_histogram", "by_level_isotonic",
    "by_level_venn_abers", "smooth_level_temperature",
)
SAMPLERS = ("mc_dropout", "mc_dropconnect", "deep_ensemble", "flipout")
UNTRAINED_SAMPLERS = ("mc_dropout", "mc_dropconnect")
ARCHITECTURES = ("resnet18", "resnet50", "vit_tiny", "cnn", "mlp")
ZOO_MODELS = ("cnn", "mlp")
LEVEL_METRICS = ("ce_kl", "ce_kl_binned", "ece")
STUDIES = ("recalx", "explanation-uncertainty", "eagle", "calibrate-to-interpret", "fpa",
           "ground-truth")
GROUND_TRUTH_DATASETS = ("gt-linear", "gt-logistic", "gt-additive", "gt-interaction", "gt-shapes",
                         "gt-textures", "gt-digits", "gt-xor", "gt-suppressor")
