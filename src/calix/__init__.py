"""calix: calibrated, uncertainty-aware explanations for machine-learning classifiers.

The pieces, in the order data flows through them:

- :mod:`calix.data` -- shipped datasets and loaders for a user's own files;
- :mod:`calix.zoo` / :mod:`calix.train` -- small seeded models, cached on disk;
- :mod:`calix.models` -- :func:`wrap` any model into one batched, validated, counted path;
- :mod:`calix.perturb` -- the perturbation engine every perturbation method shares.

``Model``, ``wrap`` and ``Perturbation`` (and the submodules, as attributes) are loaded on
first use, so that ``import calix`` -- and ``calix --help`` -- does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from calix.models import Model, wrap
    from calix.perturb import Perturbation

__version__ = "0.1.0"

__all__ = ["Model", "Perturbation", "wrap", "__version__"]

_LAZY = {"Model": "calix.models", "wrap": "calix.models", "Perturbation": "calix.perturb"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    if not name.startswith("_"):
        try:  # calix.zoo etc. after a bare ``import calix``
            return importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
