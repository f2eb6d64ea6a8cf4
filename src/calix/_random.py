"""Random streams shared by the perturbation engine, the explainers and the metrics.

Every seeded draw in calix goes through a CPU ``torch.Generator`` made by
:func:`make_generator`; the draws below are built on ``torch.rand`` so a stream gives the same
numbers however a draw is split into calls (and so does not depend on chunk sizes).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["make_generator", "std_normal", "subsets_of_size"]


def make_generator(seed: int | torch.Generator | None) -> torch.Generator:
    """A CPU ``torch.Generator`` from a seed (None draws a fresh random seed)."""
    if isinstance(seed, torch.Generator):
        return seed
    g = torch.Generator()
    if seed is None:
        g.seed()
    else:
        g.manual_seed(int(seed))
    return g


def std_normal(shape: torch.Size, generator: torch.Generator | None) -> Tensor:
    """Standard normal draws by Box–Muller on ``torch.rand``.

    Unlike ``torch.randn``, ``torch.rand`` gives the same stream however a draw is split into
    calls, so seeded stochastic fills do not depend on ``chunk_size``.
    """
    u = torch.rand(*shape, 2, generator=generator, dtype=torch.float64)  # two per element
    r = torch.sqrt(-2.0 * torch.log1p(-u[..., 0]))  # 1 - u in (0, 1]
    return (r * torch.cos(2 * math.pi * u[..., 1])).to(torch.float32)


def subsets_of_size(sizes: Tensor, d: int, g: torch.Generator) -> Tensor:
    """Uniform random subsets with ``sizes[i]`` members each: bool of shape (len(sizes), d).

    Keeps the ``sizes[i]`` smallest of d uniform draws (float64, so ties have probability
    ~d²/2⁵³): one sort and a threshold.
    """
    u = torch.rand(len(sizes), d, generator=g, dtype=torch.float64)
    srt = u.sort(dim=1).values
    kth = srt.gather(1, (sizes.long().clamp(1, d) - 1)[:, None])
    return (u <= kth) & (sizes[:, None] > 0)
