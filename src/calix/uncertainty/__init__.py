"""Uncertainty on explanations: stochastic model samplers and explanation distributions.

A sampler stands for T stochastic versions of one model. Running any calix explainer on
every version gives T maps per input; :func:`explanation_distribution` returns their mean E_μ,
standard deviation E_σ and coefficient of variation E_σ / E_μ.

- :class:`MCDropout` -- dropout kept on at inference, masks drawn per row from seeded
  generators, so one pass over T·n rows equals T passes (see :mod:`calix.uncertainty.samplers`
  for when one explainer call suffices);
- :class:`MCDropConnect` -- Bernoulli masks on the weights of chosen layers;
- :class:`DeepEnsemble` -- M separately trained models (:func:`train_ensemble`);
- :class:`Flipout` -- Bayesian layers (:class:`FlipoutLinear`, :class:`FlipoutConv2d`) trained
  by ELBO with the Flipout estimator (:func:`train_flipout`); like MC-Dropout every row draws
  its own weights, so sampling is batched.

Samplers are context managers over their side effects: hooks are removed and weights restored
on exit, even after an error.

Files
-----
- ``samplers.py`` -- :class:`Sampler`, :data:`SAMPLERS`, :class:`MCDropout`,
  :class:`MCDropConnect`, :class:`DeepEnsemble` and :func:`train_ensemble`;
- ``distributions.py`` -- :func:`explanation_distribution`, :func:`coefficient_of_variation`,
  :func:`mean_cv`, :func:`cv_by_class`, :func:`predictive_uncertainty`;
- ``flipout.py`` -- the Flipout layers, their training and the :class:`Flipout` sampler;
- ``curves.py`` -- :func:`distribution_curves`.

Every public name is importable from ``calix.uncertainty``.
"""

from __future__ import annotations

from calix.uncertainty.curves import distribution_curves
from calix.uncertainty.distributions import (
    PredictiveUncertainty,
    coefficient_of_variation,
    cv_by_class,
    explanation_distribution,
    mean_cv,
    predictive_uncertainty,
)
from calix.uncertainty.flipout import (  # noqa: F401  (private helpers keep their old path)
    Flipout,
    FlipoutConv2d,
    FlipoutLinear,
    _FlipoutMixin,
    elbo_regularizer,
    flipout_layers,
    to_flipout,
    train_flipout,
)
from calix.uncertainty.samplers import (  # noqa: F401
    SAMPLERS,
    DeepEnsemble,
    MCDropConnect,
    MCDropout,
    Sampler,
    _module_of,
    train_ensemble,
)

__all__ = [
    "Sampler", "MCDropout", "MCDropConnect", "DeepEnsemble", "train_ensemble",
    "explanation_distribution", "coefficient_of_variation", "predictive_uncertainty",
    "PredictiveUncertainty", "mean_cv", "cv_by_class", "Flipout", "FlipoutLinear",
    "FlipoutConv2d", "to_flipout", "train_flipout", "elbo_regularizer", "flipout_layers",
    "distribution_curves", "SAMPLERS",
]
