"""Coalition samplers, exact enumeration and perturbation levels.

A :class:`CoalitionSampler` draws boolean masks of shape ``(m, d)`` (True keeps a feature):
:class:`Uniform`, :class:`Bernoulli`, :class:`FixedSize`, :class:`ShapleyKernel`,
:class:`StratifiedLevels`. :func:`all_coalitions` enumerates every coalition;
:func:`levels_of` gives a mask's level λ(S) = (d − |S|)/d and :func:`level_bins` its bin.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import torch
from torch import Tensor

from calix._random import make_generator
from calix._random import subsets_of_size as _subsets_of_size
from calix._validation import check_count

__all__ = [
    "CoalitionSampler", "Uniform", "FixedSize", "ShapleyKernel", "Bernoulli",
    "StratifiedLevels", "all_coalitions", "levels_of", "level_bins",
]


class CoalitionSampler(ABC):
    """Draws coalitions as boolean masks of shape ``(m, d)``; True keeps a feature."""

    @abstractmethod
    def _sample(self, m: int, d: int, g: torch.Generator) -> Tensor:
        ...

    def sample(self, m: int, d: int, *, seed: int | torch.Generator | None = None) -> Tensor:
        """``m`` masks over ``d`` features, bool of shape ``(m, d)``, reproducible by ``seed``."""
        d = check_count(d, "d")
        m = check_count(m, "m", minimum=0, width=d)
        return self._sample(m, d, make_generator(seed))


class Uniform(CoalitionSampler):
    """Every subset equally likely (each feature kept with probability 1/2)."""

    def _sample(self, m: int, d: int, g: torch.Generator) -> Tensor:
        return torch.rand(m, d, generator=g) < 0.5


class Bernoulli(CoalitionSampler):
    """Each feature kept independently with probability ``p`` (RISE's keep probability)."""

    def __init__(self, p: float = 0.5):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must lie in [0, 1], got {p}")
        self.p = float(p)

    def _sample(self, m: int, d: int, g: torch.Generator) -> Tensor:
        return torch.rand(m, d, generator=g) < self.p


class FixedSize(CoalitionSampler):
    """Uniform subsets of exactly ``size`` kept features."""

    def __init__(self, size: int):
        if size < 0:
            raise ValueError(f"size must be >= 0, got {size}")
        self.size = int(size)

    def _sample(self, m: int, d: int, g: torch.Generator) -> Tensor:
        if self.size > d:
            raise ValueError(f"size {self.size} exceeds the number of features {d}")
        return _subsets_of_size(torch.full((m,), self.size), d, g)


class ShapleyKernel(CoalitionSampler):
    """Coalitions drawn from the Shapley kernel: size s ∈ {1..d−1} with probability
    ∝ (d − 1) / (s (d − s)), then a uniform subset of that size.

    Parameters
    ----------
    paired : bool
        Paired (antithetic) sampling: every drawn mask is followed by its complement, which
        halves the variance of KernelSHAP for the same budget. ``m`` odd leaves the last
        mask unpaired.
    """

    def __init__(self, paired: bool = True):
        self.paired = bool(paired)

    @staticmethod
    def size_weights(d: int) -> Tensor:
        """Probability of each coalition size 1..d−1, shape ``(d − 1,)``."""
        s = torch.arange(1, d, dtype=torch.float64)
        w = (d - 1) / (s * (d - s))
        return w / w.sum()

    def _sample(self, m: int, d: int, g: torch.Generator) -> Tensor:
        if d < 2:
            raise ValueError("the Shapley kernel needs d >= 2 features")
        n_draw = (m + 1) // 2 if self.paired else m
        if n_draw == 0:
            return torch.zeros(0, d, dtype=torch.bool)
        sizes = torch.multinomial(self.size_weights(d), n_draw, replacement=True, generator=g) + 1
        masks = _subsets_of_size(sizes, d, g)
        if self.paired:
            masks = torch.stack([masks, ~masks], dim=1).reshape(-1, d)[:m]
        return masks


class StratifiedLevels(CoalitionSampler):
    """Equal numbers of coalitions per perturbation-level bin (ReCalX's sampling).

    For bin b = [b/B, (b+1)/B): draw λ uniformly in the bin, keep ``round((1 − λ) d)`` features
    chosen uniformly (calix's choice where the paper is silent). With small d the realised
    level is the nearest achievable one, which may fall in a neighbouring bin; use
    :func:`level_bins` on the realised levels. Masks come ordered by bin; ``m`` is split as
    evenly as possible.
    """

    def __init__(self, n_bins: int = 10):
        if n_bins < 1:
            raise ValueError(f"n_bins must be >= 1, got {n_bins}")
        self.n_bins = int(n_bins)

    def _sample(self, m: int, d: int, g: torch.Generator) -> Tensor:
        per_bin = torch.full((self.n_bins,), m // self.n_bins, dtype=torch.long)
        per_bin[: m % self.n_bins] += 1
        bins = torch.repeat_interleave(torch.arange(self.n_bins), per_bin)
        lam = (bins + torch.rand(m, generator=g, dtype=torch.float64)) / self.n_bins
        sizes = torch.round((1 - lam) * d).long()
        return _subsets_of_size(sizes, d, g)


def all_coalitions(d: int, *, max_d: int = 20) -> Tensor:
    """All ``2**d`` coalitions, bool of shape ``(2**d, d)``; row i is the binary expansion of i."""
    if not 1 <= d <= max_d:
        raise ValueError(f"exact enumeration needs 1 <= d <= {max_d}, got d={d}")
    idx = torch.arange(2**d)
    return ((idx[:, None] >> torch.arange(d)) & 1).bool()


def levels_of(masks: Tensor, n_features: Tensor | int | None = None) -> Tensor:
    """Perturbation level λ = (d − |S|)/d of each mask: the fraction of features removed.

    Parameters
    ----------
    masks : Tensor of shape (..., d), bool or float in [0, 1]
    n_features : int, Tensor broadcastable to masks.shape[:-1], or None
        Each mask's own number of features (columns beyond it are ignored); None uses d.
    """
    d = masks.shape[-1]
    keep = masks.to(torch.float32)
    if n_features is None:
        # (d - |S|) / d, not 1 - mean: the latter rounds k/d just below bin edges
        return (d - keep.sum(dim=-1)) / d
    nf = torch.as_tensor(n_features, device=masks.device)
    valid = torch.arange(d, device=masks.device) < nf[..., None]
    kept = (keep * valid).sum(dim=-1)
    return (nf - kept) / nf.to(torch.float32)


def level_bins(levels: Tensor | np.ndarray, n_bins: int = 10) -> Tensor:
    """Bin index of each level for ``n_bins`` equal-width bins of [0, 1]; λ = 1 goes to the
    last bin."""
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    lv = torch.as_tensor(levels)
    if not torch.isfinite(lv).all() or (lv < 0).any() or (lv > 1).any():
        raise ValueError("levels must lie in [0, 1]")
    return (lv * n_bins).floor().long().clamp(max=n_bins - 1)
