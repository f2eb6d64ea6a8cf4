"""The perturbation engine (being split into one file per concern)."""

from calix.perturb.engine import *  # noqa: F403
from calix.perturb.engine import (  # noqa: F401
    _APPLY_CHUNK,
    _AVERAGES,
    _VECTORISED_ELEMENTS,
    __all__,
    __doc__,
    _binomials,
    _distinct_ranks,
    _distinct_subsets,
    _draw_pairs,
    _kernel_mass,
    _log_comb,
    _std_normal,
    _subsets_of_size,
    _unrank,
    _whole_stratum,
)
