"""Checks shared by the ground-truth, complexity and randomization metrics: attribution maps
and masks as float64 ``(n, d)`` rows, with errors that name the bad value."""

from __future__ import annotations

from typing import Any

import numpy as np

from calix.metrics._base import real_array

__all__ = ["flat_maps", "flat_pair"]


def _finite_rows(a: np.ndarray, name: str) -> np.ndarray:
    if a.ndim < 2:
        raise ValueError(f"{name} must be a batch of shape (n, ...), one row per input, got "
                         f"shape {a.shape}")
    if a.shape[0] == 0 or a[0].size == 0:
        raise ValueError(f"{name} is empty (shape {a.shape})")
    bad = ~np.isfinite(a.reshape(len(a), -1)).all(1)
    if bad.any():
        raise ValueError(f"{name} contain NaN or infinite values (input(s) "
                         f"{np.flatnonzero(bad)[:10].tolist()}); explain those inputs again or "
                         f"drop them")
    return a


def flat_maps(maps: Any, name: str = "maps") -> np.ndarray:
    """``maps`` of shape (n, ...) as finite float64 rows of shape (n, d)."""
    a = _finite_rows(real_array(maps, name), name)
    return a.reshape(len(a), -1)


def flat_pair(maps: Any, other: Any, other_name: str, *, boolean: bool = False,
              absolute: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``maps`` and a second array per input (a mask, a true attribution) as (n, d) rows.

    Both have the same shape, or ``maps`` is an image batch ``(n, C, H, W)`` and ``other`` has
    one channel (``(n, 1, H, W)`` or ``(n, H, W)``): then ``maps`` is summed over channels --
    of their absolute values with ``absolute=True`` (Σ_c |a_c|, so that opposite signs in two
    channels do not cancel). ``boolean`` turns ``other`` into a bool mask (it must hold 0/1
    or booleans).
    """
    a = _finite_rows(real_array(maps, "maps"), "maps")
    if absolute:
        a = np.abs(a)
    o = _finite_rows(real_array(other, other_name), other_name)
    if len(o) != len(a):
        raise ValueError(f"{other_name} has {len(o)} rows for {len(a)} maps: one per input")
    if o.shape != a.shape:
        if a.ndim == 4 and o.shape in ((a.shape[0], 1, *a.shape[2:]), (a.shape[0], *a.shape[2:])):
            a = a.sum(1)
        elif a.ndim == 4 and a.shape[1] == 1 and o.shape == (a.shape[0], *a.shape[2:]):
            pass
        else:
            raise ValueError(f"{other_name} must have the shape of the maps {a.shape} (or one "
                             f"channel, {(a.shape[0], 1, *a.shape[2:])}), got {o.shape}")
    a, o = a.reshape(len(a), -1), o.reshape(len(o), -1)
    if a.shape != o.shape:
        raise ValueError(f"{other_name} must have the shape of the maps, got {o.shape} "
                         f"for {a.shape}")
    if boolean:
        if not np.isin(o, (0.0, 1.0)).all():
            raise ValueError(f"{other_name} must be boolean (or 0/1) masks, got values such as "
                             f"{o[~np.isin(o, (0.0, 1.0))][:3].tolist()}")
        o = o.astype(bool)
    return a, o
