"""Uncertainty on explanations (being split into one file per concern)."""

from calix.uncertainty.samplers import *  # noqa: F403
from calix.uncertainty.samplers import (  # noqa: F401
    __all__,
    __doc__,
    _FlipoutMixin,
    _module_of,
)
