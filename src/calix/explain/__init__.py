"""Explainers: ``Explainer(model, ...).explain(x, target=None) -> Explanation``.

Gradient family (needs a differentiable model): :class:`Saliency`, :class:`IntegratedGradients`,
:class:`SmoothGrad` (``squared=True`` for SmoothGrad²), :class:`GuidedBackprop`, and
:class:`CaptumExplainer` for any Captum attribution. Perturbation family (any model, on the
shared perturbation engine): :class:`Occlusion`, :class:`RISE`, :class:`LIME`,
:class:`KernelSHAP`, :class:`PolySHAP`, :class:`MeaningfulPerturbation`.

:class:`LIME` removes features to a fill (LIME's image sampler, on tables too); on tables,
:class:`LimeTabular` has the semantics of lime's ``LimeTabularExplainer`` instead (samples drawn
from training-data statistics, quartile-discretised, and a binary same-bin representation),
which is what users of the lime package compare against.
"""

from calix._registry import Registry
from calix.explain.base import Explainer, Explanation, Stochastic, reduce_channels, score
from calix.explain.gradient import (
    CaptumExplainer,
    GuidedBackprop,
    IntegratedGradients,
    Saliency,
    SmoothGrad,
    as_forward,
)
from calix.explain.logit_surrogate import LogitSurrogateSHAP
from calix.explain.oddshap import OddSHAP
from calix.explain.perturbation import RISE, FeatureExplainer, MeaningfulPerturbation, Occlusion
from calix.explain.polyshap import PolySHAP
from calix.explain.shapley import (
    LeverageSHAP,
    RegressionAdjustedSHAP,
    Shapley,
    ShapleyEstimator,
    exact_shapley,
)
from calix.explain.stacked import StackedSHAP
from calix.explain.surrogate import (
    GLIME,
    LIME,
    USLIME,
    KernelSHAP,
    shapley_kernel_weights,
    weighted_ridge,
)

#: name -> explainer class: every explainer the command line and calix.parallel offer, in one
#: registry (calix._names.EXPLAINERS lists the same names for the command line)
METHODS: Registry[type[Explainer]] = Registry("explainer")
for _name, _cls in (
    ("saliency", Saliency),
    ("integrated_gradients", IntegratedGradients),
    ("smoothgrad", SmoothGrad),
    ("guided_backprop", GuidedBackprop),
    ("occlusion", Occlusion),
    ("rise", RISE),
    ("lime", LIME),
    ("kernel_shap", KernelSHAP),
    ("poly_shap", PolySHAP),
    ("leverage_shap", LeverageSHAP),
    ("odd_shap", OddSHAP),
    ("regression_adjusted_shap", RegressionAdjustedSHAP),
    ("logit_surrogate_shap", LogitSurrogateSHAP),
    ("stacked_shap", StackedSHAP),
    ("shapley", Shapley),
    ("meaningful_perturbation", MeaningfulPerturbation),
):
    METHODS.register(_name, _cls)

__all__ = [
    "Explainer", "Explanation", "Stochastic", "reduce_channels", "score", "as_forward",
    "CaptumExplainer",
    "GuidedBackprop", "IntegratedGradients", "Saliency", "SmoothGrad", "FeatureExplainer",
    "MeaningfulPerturbation", "Occlusion", "RISE", "LIME", "KernelSHAP", "PolySHAP", "METHODS",
    "LeverageSHAP", "OddSHAP", "RegressionAdjustedSHAP", "LogitSurrogateSHAP", "StackedSHAP",
    "Shapley",
    "ShapleyEstimator", "exact_shapley",
    "shapley_kernel_weights", "weighted_ridge",
]

from calix.explain.bayes import (  # noqa: E402
    EAGLE,
    BayesianLinear,
    BayesLIME,
    BayesSHAP,
    expected_information_gain,
)
from calix.explain.lime_tabular import LimeTabular  # noqa: E402

for _name, _cls in (("bayes_lime", BayesLIME), ("bayes_shap", BayesSHAP), ("eagle", EAGLE),
                    ("glime", GLIME), ("us_lime", USLIME), ("lime_tabular", LimeTabular)):
    METHODS.register(_name, _cls)
del _name, _cls
__all__ += ["GLIME", "USLIME", "EAGLE", "BayesianLinear", "BayesLIME", "BayesSHAP",
            "expected_information_gain", "LimeTabular"]
