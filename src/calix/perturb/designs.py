"""Coalition designs: the explainers' coalitions together with their regression weights.

A :class:`Design` draws a :class:`CoalitionDesign` (masks, weights and how to reweight them)
for n inputs: :class:`KernelSHAPDesign` (Shapley-kernel sizes, heaviest strata enumerated),
:class:`LeverageDesign` (leverage-score sizes), :class:`SurrogateDesign`, :class:`LimeDesign`
and :class:`GlimeDesign`; the private helpers rank and draw distinct subsets of one size.
"""

from __future__ import annotations

import functools
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from calix._random import std_normal as _std_normal
from calix._random import subsets_of_size as _subsets_of_size
from calix._validation import check_count
from calix.perturb.samplers import ShapleyKernel

__all__ = [
    "Design", "CoalitionDesign", "KernelSHAPDesign", "LeverageDesign", "SurrogateDesign",
    "LimeDesign", "GlimeDesign",
]


def _kernel_mass(d: int) -> Tensor:
    """Shapley-kernel mass of every size 0..d (float64, 0 at the ends, sums to 1)."""
    mass = torch.zeros(d + 1, dtype=torch.float64)
    mass[1:d] = ShapleyKernel.size_weights(d)
    return mass


def _log_comb(d: int, s: Tensor) -> Tensor:
    s = s.double()
    return math.lgamma(d + 1) - torch.lgamma(s + 1) - torch.lgamma(d - s + 1)


@dataclass
class CoalitionDesign:
    """Coalitions an estimator queries and their regression weights.

    Attributes
    ----------
    masks : Tensor of shape (n, m, d), bool -- one row per coalition (ends not included).
    fixed_weights : Tensor of shape (n_fixed,), float64 -- weights of the first ``n_fixed``
        rows, which are enumerated (the same for every input and every seed).
    n_fixed : int
    paired : bool -- the rows after ``n_fixed`` come as (S, complement of S) pairs (an odd
        number leaves the last row unpaired).
    sizes, size_probs : Tensor or None -- the sizes the sampled rows were drawn from and their
        probabilities (used by :meth:`extend`).
    mass : Tensor of shape (d + 1,), float64 -- Shapley-kernel mass each size carries in the
        sampled rows (0 for enumerated sizes).
    row_ids : Tensor of shape (n_sampled,), long -- the position each sampled row had when it
        was drawn (a subset from :meth:`take` keeps them; pairs are ids 2k and 2k + 1).
    reweight : {"equal", "size", "none"} -- how the sampled rows share that mass: equally
        (each row mass / count: sizes drawn in proportion to their mass, KernelSHAP), by size
        (each size's mass split among that input's rows of that size: sizes drawn by any
        distribution, Leverage SHAP), or no weights (``weights`` is None: LIME's samplers, whose
        weights come from a kernel).
    """

    masks: Tensor
    fixed_weights: Tensor
    n_fixed: int = 0
    paired: bool = False
    sizes: Tensor | None = None
    size_probs: Tensor | None = None
    mass: Tensor | None = None
    reweight: str = "equal"
    row_ids: Tensor | None = None

    def __post_init__(self) -> None:
        if self.row_ids is None:  # which drawn row each sampled row is (kept by take())
            self.row_ids = torch.arange(self.masks.shape[1] - self.n_fixed)

    @property
    def n_sampled(self) -> int:
        return self.masks.shape[1] - self.n_fixed

    @property
    def weights(self) -> Tensor | None:
        """Regression weights, (m,) or (n, m) float64, summing to the kernel mass of the
        proper coalitions (1) -- or None for ``reweight="none"``."""
        if self.reweight == "none":
            return None
        m_s = self.n_sampled
        if m_s == 0 or self.mass is None:
            return self.fixed_weights
        sampled = self.masks[:, self.n_fixed:]
        if self.reweight == "equal":
            share = torch.full((m_s,), float(self.mass.sum()) / m_s, dtype=torch.float64)
            return torch.cat([self.fixed_weights, share])
        n, d = sampled.shape[0], sampled.shape[-1]
        size = sampled.sum(-1).cpu()  # (n, m_s)
        counts = torch.zeros(n, d + 1, dtype=torch.float64)
        counts.scatter_add_(1, size, torch.ones(size.shape, dtype=torch.float64))
        present = self.mass * (counts > 0)  # mass of sizes that have rows
        scale = self.mass.sum() / present.sum(1, keepdim=True).clamp_min(1e-300)
        w = (present * scale / counts.clamp_min(1)).gather(1, size)
        return torch.cat([self.fixed_weights.expand(n, -1), w], 1)

    def for_input(self, i: int) -> CoalitionDesign:
        """The design of input ``i`` alone: masks (1, m, d), everything else shared (its
        ``weights`` are row ``i`` of this design's)."""
        return replace(self, masks=self.masks[i:i + 1])

    def take(self, rows: Tensor) -> CoalitionDesign:
        """The design with the fixed rows and the sampled rows ``rows`` (indices into the
        sampled part) -- what a jackknife replicate refits."""
        keep = torch.cat([torch.arange(self.n_fixed), self.n_fixed + rows.cpu().long()])
        return CoalitionDesign(self.masks[:, keep.to(self.masks.device)], self.fixed_weights,
                               self.n_fixed, False, self.sizes, self.size_probs, self.mass,
                               self.reweight, self.row_ids[rows.cpu().long()])

    def extend(self, m: int, generator: torch.Generator) -> CoalitionDesign:
        """The design with ``m`` more sampled rows, drawn as the sampled part was (sizes from
        ``size_probs``, uniform subsets of a size, paired if the design is)."""
        if self.sizes is None or self.size_probs is None or m <= 0:
            raise ValueError("this design has no sampled part to extend")
        n, _, d = self.masks.shape
        more = _draw_pairs(n, m, d, self.sizes, self.size_probs, self.paired, generator)
        start = int(self.row_ids.max()) + 1 if len(self.row_ids) else 0
        start += start % 2  # new pairs start at an even id: a pair is ids (2k, 2k + 1)
        ids = torch.cat([self.row_ids, start + torch.arange(m)])
        return CoalitionDesign(torch.cat([self.masks, more.to(self.masks.device)], 1),
                               self.fixed_weights, self.n_fixed, self.paired, self.sizes,
                               self.size_probs, self.mass, self.reweight, ids)


def _draw_pairs(n: int, m: int, d: int, sizes: Tensor, probs: Tensor, paired: bool,
                g: torch.Generator) -> Tensor:
    """(n, m, d) masks: sizes drawn from ``probs`` over ``sizes``, uniform subsets of a size,
    each followed by its complement when ``paired``."""
    half = (m + 1) // 2 if paired else m
    pick = torch.multinomial(probs / probs.sum(), n * half, replacement=True, generator=g)
    drawn = _subsets_of_size(sizes[pick], d, g).reshape(n, half, d)
    if paired:
        drawn = torch.stack([drawn, ~drawn], 2).reshape(n, 2 * half, d)[:, :m]
    return drawn


class Design(ABC):
    """A coalition design: draws the coalitions (and regression weights) an estimator queries.

    ``draw(n, m, d, generator)`` returns a :class:`CoalitionDesign` of ``m`` coalitions per
    input (the empty and the full coalition are not among them: estimators query those
    themselves).
    """

    #: fewest coalitions a draw needs for ``d`` features
    def minimum(self, d: int) -> int:
        return 1

    @abstractmethod
    def _draw(self, n: int, m: int, d: int, g: torch.Generator) -> CoalitionDesign:
        ...

    def draw(self, n: int, m: int, d: int, generator: torch.Generator) -> CoalitionDesign:
        n, d = check_count(n, "n"), check_count(d, "d")
        m = check_count(m, "m", minimum=0, width=d)
        if m < self.minimum(d):
            raise ValueError(f"{type(self).__name__} needs at least {self.minimum(d)} "
                             f"coalitions for {d} features, got {m}")
        return self._draw(n, m, d, generator)


def _whole_stratum(d: int, s: int) -> tuple[Tensor, Tensor]:
    """Every coalition of size s, then (unless 2s = d) their complements, of size d − s, each
    with its exact Shapley-kernel weight: rows (count, d) bool and weights (count,) float64."""
    masses = _kernel_mass(d)
    small = _unrank(torch.arange(math.comb(d, s)), d, s)
    sizes = [s] if 2 * s == d else [s, d - s]
    rows = torch.cat([small if k == s else ~small for k in sizes])
    weights = torch.cat([torch.full((len(small),), float(masses[k]) / math.comb(d, k),
                                    dtype=torch.float64) for k in sizes])
    return rows, weights


class KernelSHAPDesign(Design):
    """KernelSHAP's design (Lundberg & Lee 2017, as shap's KernelExplainer).

    Coalition sizes are taken in pairs (s, d − s) from the heaviest Shapley-kernel mass inwards,
    and a pair is enumerated completely (each subset weighted by its exact kernel weight) while
    the budget left would otherwise sample it at least as often as it has subsets; the rest of
    the budget is drawn from the remaining sizes' kernel (paired with complements when
    ``paired``), with equal weights carrying the remaining kernel mass. Enumerated parts are the
    same for every seed, which is what makes the estimate reproducible.
    """

    def __init__(self, paired: bool = True):
        self.paired = bool(paired)

    def minimum(self, d: int) -> int:
        return 2 if d >= 2 else 1

    def _draw(self, n: int, m: int, d: int, g: torch.Generator) -> CoalitionDesign:
        if d < 2:
            raise ValueError("the Shapley kernel needs d >= 2 features")
        size_w = ShapleyKernel.size_weights(d)  # mass of each size 1..d-1, sums to 1
        left, mass_left = m, 1.0
        parts, weights = [], []
        remaining = list(range(1, d))
        for s in range(1, d // 2 + 1):
            sizes = [s] if s == d - s else [s, d - s]
            count = sum(math.comb(d, k) for k in sizes)
            mass = float(sum(size_w[k - 1] for k in sizes))
            if count > left or left * mass / mass_left < count:
                break
            rows, w = _whole_stratum(d, s)
            parts.append(rows)
            weights.append(w)
            for k in sizes:
                remaining.remove(k)
            left -= count
            mass_left -= mass
        fixed = torch.cat(parts) if parts else torch.zeros(0, d, dtype=torch.bool)
        fixed_w = torch.cat(weights) if weights else torch.zeros(0, dtype=torch.float64)
        masses = _kernel_mass(d)
        if left > 0 and remaining:
            sizes_t = torch.as_tensor(remaining)
            probs = size_w[sizes_t - 1]
            drawn = _draw_pairs(n, left, d, sizes_t, probs, self.paired, g)
            keep = torch.zeros(d + 1, dtype=torch.bool)
            keep[sizes_t] = True
            return CoalitionDesign(torch.cat([fixed[None].expand(n, -1, -1), drawn], 1),
                                   fixed_w, len(fixed), self.paired, sizes_t, probs / probs.sum(),
                                   masses * keep, "equal")
        return CoalitionDesign(fixed[None].expand(n, -1, -1), fixed_w, len(fixed), False)


class LeverageDesign(Design):
    """Leverage SHAP's design (Musco & Witter, ICLR 2025): coalitions drawn by their leverage
    scores in the Shapley regression -- every coalition size carries the same total leverage,
    so every size gets the same share of the budget -- without replacement, each coalition
    followed by its complement (a size pair (s, d − s) gets twice the pairs of the middle size
    d/2, whose complements have its own size).

    Sizes whose share covers all their subsets are enumerated (the paper's Bernoulli sampling
    includes them with probability 1) and their budget is shared out again among the others; a
    sampled size gets a fixed number of distinct coalitions (drawn by rank, without
    replacement), a stratified form of the paper's Bernoulli draw with the same inclusion
    probabilities. Regression weights are the kernel weight over the inclusion probability:
    each size's kernel mass shared equally among its rows (``reweight="size"``). Rows added
    later by :meth:`CoalitionDesign.extend` are drawn independently of these (a repeat has
    probability about m / C(d, s)).
    """

    def minimum(self, d: int) -> int:
        return 2 if d >= 2 else 1

    def _draw(self, n: int, m: int, d: int, g: torch.Generator) -> CoalitionDesign:
        if d < 2:
            raise ValueError("the Shapley kernel needs d >= 2 features")
        strata = list(range(1, d // 2 + 1))  # s: the sizes s and d - s
        width = {s: 1 if 2 * s == d else 2 for s in strata}  # sizes in the stratum
        count = {s: math.comb(d, s) * width[s] for s in strata}
        enumerated: list[int] = []
        left, open_ = m, list(strata)
        while open_:  # water-filling per size: enumerate every stratum its share covers
            share = left / sum(width[s] for s in open_)
            full = [s for s in open_ if count[s] <= share * width[s]]
            if not full:
                break
            for s in full:
                enumerated.append(s)
                open_.remove(s)
                left -= count[s]
        whole = [_whole_stratum(d, s) for s in sorted(enumerated)]
        fixed = torch.cat([r for r, _ in whole]) if whole else torch.zeros(0, d, dtype=torch.bool)
        fixed_w = (torch.cat([w for _, w in whole]) if whole
                   else torch.zeros(0, dtype=torch.float64))
        sampled_mass = _kernel_mass(d)
        for s in enumerated:
            sampled_mass[[s, d - s]] = 0.0
        if not open_ or left <= 0:
            return CoalitionDesign(fixed[None].expand(n, -1, -1), fixed_w, len(fixed), False)
        # pairs in proportion to the sizes of each stratum; leftover pairs to random strata
        n_pairs, odd = divmod(left, 2)
        w = torch.tensor([float(width[s]) for s in open_])
        exact = n_pairs * w / w.sum()
        per = exact.floor().long()
        rest = n_pairs - int(per.sum())
        if rest:
            per[torch.multinomial(exact - per, rest, generator=g)] += 1
        rows = [_distinct_subsets(n, int(k), s, d, g) for s, k in zip(open_, per.tolist(),
                                                                       strict=True) if k]
        drawn = torch.cat(rows, 1) if rows else torch.zeros(n, 0, d, dtype=torch.bool)
        drawn = torch.stack([drawn, ~drawn], 2).reshape(n, -1, d)
        sizes = torch.as_tensor(sorted({k for s in open_ for k in (s, d - s)}))
        probs = torch.full((len(sizes),), 1.0 / len(sizes), dtype=torch.float64)
        if odd:
            drawn = torch.cat([drawn, _draw_pairs(n, 1, d, sizes, probs, False, g)], 1)
        return CoalitionDesign(torch.cat([fixed[None].expand(n, -1, -1), drawn], 1), fixed_w,
                               len(fixed), True, sizes, probs, sampled_mass, "size")


@functools.lru_cache(maxsize=64)
def _binomials(d: int) -> Tensor:
    """C(a, b) for 0 <= a, b <= d, int64 (entries beyond 2^63 − 1 clipped: never used)."""
    top = 2**63 - 1
    return torch.tensor([[min(math.comb(a, b), top) for b in range(d + 1)]
                         for a in range(d + 1)], dtype=torch.long)


def _unrank(ranks: Tensor, d: int, s: int) -> Tensor:
    """The subsets of size s of range(d) with the given lexicographic ranks
    (the combinatorial number system): bool (len(ranks), d). Needs C(d, s) < 2^63."""
    binom = _binomials(d)
    r = ranks.long().clone()
    k = torch.full_like(r, s)
    out = torch.zeros(len(r), d, dtype=torch.bool)
    for j in range(d):
        c = torch.where(k > 0, binom[d - j - 1][(k - 1).clamp(min=0)], torch.zeros_like(r))
        take = (k > 0) & (r < c)
        out[:, j] = take
        r = torch.where(take | (k == 0), r, r - c)
        k = k - take.long()
    return out


def _distinct_ranks(total: int, k: int, g: torch.Generator) -> Tensor:
    """k distinct integers drawn uniformly from range(total) (k ≤ total)."""
    if total <= max(4 * k, 1 << 16):
        return torch.randperm(total, generator=g)[:k]
    ranks = torch.randint(total, (k,), generator=g)
    for _ in range(1000):  # a repeat has probability ~k²/total: rarely more than one pass
        uniq, first = torch.unique(ranks, return_inverse=True)
        if len(uniq) == k:
            return ranks
        seen = torch.zeros(len(uniq), dtype=torch.bool)
        dup = torch.zeros(k, dtype=torch.bool)
        for pos, u in enumerate(first.tolist()):
            dup[pos] = bool(seen[u])
            seen[u] = True
        ranks[dup] = torch.randint(total, (int(dup.sum()),), generator=g)
    raise RuntimeError("could not draw distinct coalitions")  # pragma: no cover


def _distinct_subsets(n: int, k: int, s: int, d: int, g: torch.Generator) -> Tensor:
    """(n, k, d): k distinct uniform subsets of size s per input (k ≤ C(d, s)), none the
    complement of another (so that pairs (S, complement) do not repeat): drawn by rank without
    replacement. For the middle size 2s = d the subsets that hold feature 0 stand for their
    pairs. Where C(d, s) ≥ 2^62, uniform subsets (a repeat has probability ~k²/C(d, s))."""
    middle = 2 * s == d
    total = math.comb(d - 1, s - 1) if middle else math.comb(d, s)
    if total >= 2**62:
        return _subsets_of_size(torch.full((n * k,), s), d, g).reshape(n, k, d)
    out = torch.empty(n, k, d, dtype=torch.bool)
    for i in range(n):
        ranks = _distinct_ranks(total, k, g)
        if middle:  # feature 0 and s − 1 of the others
            out[i, :, 0] = True
            out[i, :, 1:] = _unrank(ranks, d - 1, s - 1)
        else:
            out[i] = _unrank(ranks, d, s)
    return out


class SurrogateDesign(Design):
    """The design of :class:`~calix.explain.LogitSurrogateSHAP`: every coalition of size 1 and
    d − 1 (each singleton followed by its complement) when they take at most a quarter of the
    budget and d ≥ 5 -- the sizes the Shapley kernel weighs most, the same for every seed --,
    then pairs (S, complement of S) with |S| uniform on the sizes not enumerated, the
    leverage-score size distribution of the Shapley regression. The residual regression weighs
    the rows itself, so ``weights`` is None."""

    @staticmethod
    def n_fixed(m: int, d: int) -> int:
        """Enumerated rows for a budget of m coalitions (ends excluded)."""
        return 2 * d if d >= 5 and 8 * d <= m else 0

    def minimum(self, d: int) -> int:
        return d - 1

    def _draw(self, n: int, m: int, d: int, g: torch.Generator) -> CoalitionDesign:
        fixed = self.n_fixed(m, d)
        rest = m - fixed
        half = (rest + 1) // 2
        lo = 2 if fixed else 1
        sizes = torch.randint(lo, d - lo + 1, (n * half,), generator=g)
        drawn = _subsets_of_size(sizes, d, g).reshape(n, half, d)
        pairs = torch.stack([drawn, ~drawn], 2).reshape(n, 2 * half, d)[:, :rest]
        eye = torch.eye(d, dtype=torch.bool)
        single = torch.stack([eye, ~eye], 1).reshape(2 * d, d)[:fixed]
        sizes = torch.arange(lo, d - lo + 1)
        probs = torch.full((len(sizes),), 1.0 / len(sizes), dtype=torch.float64)
        return CoalitionDesign(torch.cat([single[None].expand(n, -1, -1), pairs], 1),
                               torch.zeros(fixed, dtype=torch.float64), fixed, True, sizes,
                               probs, reweight="none")


class LimeDesign(Design):
    """LIME's image sampler (Ribeiro et al. 2016): the unperturbed input, then coalitions that
    remove a uniformly drawn number 1..d − 1 of features. Weights come from LIME's kernel."""

    def _draw(self, n: int, m: int, d: int, g: torch.Generator) -> CoalitionDesign:
        n_off = torch.randint(1, max(d, 2), (n * (m - 1),), generator=g)
        masks = _subsets_of_size(d - n_off, d, g).reshape(n, m - 1, d)
        masks = torch.cat([torch.ones(n, 1, d, dtype=torch.bool), masks], dim=1)
        return CoalitionDesign(masks, torch.zeros(0, dtype=torch.float64), reweight="none")


class GlimeDesign(Design):
    """GLIME's samplers (Tan et al. 2023), drawn from the local distribution itself (unit
    weights): ``"binomial"`` keeps each feature with probability 1 / (1 + exp(−1/σ²));
    ``"gauss"`` draws continuous masks z = clip(1 + σ ε, 0, 1), ε ~ N(0, 1), which blend input
    and fill per feature."""

    def __init__(self, variant: str = "binomial", sigma: float = 1.0):
        if variant not in ("binomial", "gauss"):
            raise ValueError(f"variant must be 'binomial' or 'gauss', got {variant!r}")
        if not sigma > 0:
            raise ValueError(f"sigma must be > 0, got {sigma}")
        self.variant, self.sigma = variant, float(sigma)

    def _draw(self, n: int, m: int, d: int, g: torch.Generator) -> CoalitionDesign:
        if self.variant == "binomial":
            keep = 1.0 / (1.0 + math.exp(-1.0 / self.sigma**2))
            masks = torch.rand(n, m, d, generator=g) < keep
        else:
            masks = (1.0 + self.sigma * _std_normal(torch.Size((n, m, d)), g)).clamp(0.0, 1.0)
        return CoalitionDesign(masks, torch.zeros(0, dtype=torch.float64), reweight="none")
