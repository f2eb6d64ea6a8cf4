"""calix: calibrated, uncertainty-aware explanations for machine-learning classifiers.

The pieces, in the order data flows through them:

- :mod:`calix.data` -- shipped datasets and loaders for a user's own files;
- :mod:`calix.zoo` / :mod:`calix.train` -- small seeded models, cached on disk;
- :mod:`calix.models` -- :func:`wrap` any model into one batched, validated, counted path;
- :mod:`calix.perturb` -- the perturbation engine every perturbation method shares.
"""

from calix.models import Model, wrap
from calix.perturb import Perturbation

__version__ = "0.1.0"

__all__ = ["Model", "Perturbation", "wrap", "__version__"]
