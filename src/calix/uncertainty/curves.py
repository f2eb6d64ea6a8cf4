"""Deletion and insertion curves of an explanation distribution.

:func:`distribution_curves` ranks features by the mean map E_μ and, separately, by the std map
E_σ, and follows the target probability as they are deleted or inserted
(:func:`calix.metrics.faithfulness.deletion_curve` / ``insertion_curve``, imported on use:
metrics sit above this package in the layer table).
"""

from __future__ import annotations

from typing import Any

from calix.explain.base import Explanation

__all__ = ["distribution_curves"]


def distribution_curves(model: Any, x: Any, dist: Explanation, *, fill: Any = None,
                        steps: int = 50, output: str = "probability") -> dict[str, Any]:
    """The paper's modified insertion/deletion: rank pixels by the mean map E_μ and,
    separately, by the std map E_σ; delete / insert in ``steps`` steps with ``fill`` (default
    zero), following the target probability.

    Returns
    -------
    dict
        ``deletion_mean``, ``insertion_mean``, ``deletion_std``, ``insertion_std``
        (:class:`~calix.metrics.faithfulness.Curve` each; ``.auc`` of shape (n,)).
    """
    from calix.metrics.faithfulness import deletion_curve, insertion_curve

    out = {}
    for name, maps in (("mean", dist.values), ("std", dist.std)):
        kw = dict(fill=fill, steps=steps, target=dist.target, output=output)
        out[f"deletion_{name}"] = deletion_curve(model, x, maps, **kw)
        out[f"insertion_{name}"] = insertion_curve(model, x, maps, **kw)
    return out
