"""The perturbation engine: one vectorised path from coalitions to perturbed model queries.

A perturbation π(x, S) keeps the interpretable features in the coalition S and replaces the
others with a *fill*. Three small parts configure it:

- :class:`Features` -- how an input splits into d features: :class:`Columns` (tabular columns
  and named column groups), :class:`Pixels`, :class:`PatchGrid`, :class:`Superpixels` (SLIC);
- :class:`Fill` -- what replaces a removed feature: :class:`Constant`, :class:`Mean`,
  :class:`Blur`, :class:`Noise`, :class:`Marginal`;
- :class:`CoalitionSampler` -- which coalitions to try: :class:`Uniform`, :class:`FixedSize`,
  :class:`ShapleyKernel`, :class:`Bernoulli`, :class:`StratifiedLevels`
  (and :func:`all_coalitions` for exact enumeration).

:class:`Perturbation` puts features and fill together. Its :meth:`~Perturbation.apply` builds
perturbed inputs with their levels λ(S) = (d − |S|)/d, and :meth:`~Perturbation.query` sends
them through a :class:`calix.models.Model` in bounded-memory chunks, passing each row's level to
level-aware (ReCalX) models. Nothing loops in Python over perturbations or pixels.

Masks have shape ``(m, d)`` (one set of coalitions for every input) or ``(n, m, d)`` (one per
input); ``True``/1 keeps a feature. Float masks in [0, 1] blend input and fill
(``fill + mask * (x - fill)``), differentiably -- the form Meaningful Perturbation optimises.

Image inputs are channel-first ``(C, H, W)``; tabular inputs are ``(n_features,)``.

Example
-------
>>> import torch
>>> from calix.perturb import Perturbation, PatchGrid, Constant, Uniform
>>> engine = Perturbation(PatchGrid(4), Constant(0.0))
>>> x = torch.rand(2, 1, 16, 16)
>>> masks = Uniform().sample(100, engine.n_features(x), seed=0)
>>> out = engine.apply(x, masks)
>>> out.inputs.shape, out.levels.shape
(torch.Size([2, 100, 1, 16, 16]), torch.Size([2, 100]))

Files
-----
- ``features.py`` -- :class:`Segmentation` and the features;
- ``fills.py`` -- the fills;
- ``samplers.py`` -- coalition samplers, :func:`all_coalitions`, :func:`levels_of` and
  :func:`level_bins`;
- ``designs.py`` -- the explainers' coalition designs (:class:`Design`,
  :class:`CoalitionDesign`, :class:`KernelSHAPDesign`, :class:`LeverageDesign`,
  :class:`SurrogateDesign`, :class:`LimeDesign`, :class:`GlimeDesign`);
- ``engine.py`` -- :class:`Perturbation`, :class:`Perturbed`, :class:`QueryResult`,
  :class:`MaskBlocks`.

Every public name is importable from ``calix.perturb``.
"""

from __future__ import annotations

from calix._random import make_generator
from calix._random import std_normal as _std_normal  # noqa: F401  (imported from here)
from calix._random import subsets_of_size as _subsets_of_size  # noqa: F401
from calix._validation import MAX_ELEMENTS, check_count
from calix.perturb.designs import (  # noqa: F401  (private helpers keep their old path)
    CoalitionDesign,
    Design,
    GlimeDesign,
    KernelSHAPDesign,
    LeverageDesign,
    LimeDesign,
    SurrogateDesign,
    _binomials,
    _distinct_ranks,
    _distinct_subsets,
    _draw_pairs,
    _kernel_mass,
    _log_comb,
    _unrank,
    _whole_stratum,
)
from calix.perturb.engine import (  # noqa: F401
    _APPLY_CHUNK,
    _AVERAGES,
    _VECTORISED_ELEMENTS,
    MaskBlocks,
    Perturbation,
    Perturbed,
    QueryResult,
)
from calix.perturb.features import (
    Columns,
    Features,
    PatchGrid,
    Pixels,
    Segmentation,
    Superpixels,
)
from calix.perturb.fills import Blur, Constant, Fill, Marginal, Mean, Noise
from calix.perturb.samplers import (
    Bernoulli,
    CoalitionSampler,
    FixedSize,
    ShapleyKernel,
    StratifiedLevels,
    Uniform,
    all_coalitions,
    level_bins,
    levels_of,
)

__all__ = [
    "Segmentation", "Features", "Columns", "Pixels", "PatchGrid", "Superpixels",
    "Fill", "Constant", "Mean", "Blur", "Noise", "Marginal",
    "CoalitionSampler", "Uniform", "FixedSize", "ShapleyKernel", "Bernoulli", "StratifiedLevels",
    "Design", "CoalitionDesign", "KernelSHAPDesign", "LeverageDesign", "SurrogateDesign",
    "LimeDesign", "GlimeDesign",
    "all_coalitions", "levels_of", "level_bins", "make_generator", "check_count", "MAX_ELEMENTS",
    "Perturbation", "Perturbed", "QueryResult", "MaskBlocks",
]
