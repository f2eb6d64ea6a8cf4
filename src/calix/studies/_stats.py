"""Decision rules with uncertainty for the studies' comparison claims, and the detection of
degenerate explanations.

A comparison claim ("A beats B", "calibration lowers X") is decided on *paired* per-input
differences, never on a difference of two means alone:

- :func:`paired` -- one-sided paired t-test (and the Wilcoxon signed-rank test beside it) of
  the per-input differences, with the mean difference and its 95% interval;
- :func:`paired_binary` -- the exact one-sided McNemar test of a pass/fail outcome per input
  (a better-than-random indicator) under two conditions;
- :func:`bootstrap_mean_ci` -- a percentile bootstrap interval of a mean over inputs;
- :func:`brief` -- a paired test's summary for a claim's evidence; :func:`every` and
  :func:`nearest_rules` -- the verdict of a set of paired tests and its nearest alternatives;
- :func:`degenerate_maps` -- which explanations are constant, or hold NaN / infinite values
  (a failed optimisation, a dead gradient), so that studies exclude them from aggregates with
  a count instead of averaging them in.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from calix._stats import standard_error

__all__ = ["ALPHA", "paired", "paired_binary", "bootstrap_mean_ci", "degenerate_maps",
           "majority", "brief", "every", "nearest_rules"]

#: significance level of every one-sided comparison (the rule's text states it)
ALPHA = 0.05


def _pairs(a: Any, b: Any, alternative: str) -> tuple[np.ndarray, np.ndarray]:
    """``a`` and ``b`` as flat float64 arrays of one length, and ``alternative`` checked."""
    if alternative not in ("greater", "less"):
        raise ValueError(f"alternative must be 'greater' or 'less', got {alternative!r}")
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired values need the same length, got {len(a)} and {len(b)}")
    return a, b


def paired(a: Any, b: Any, *, alternative: str = "greater", alpha: float = ALPHA
           ) -> dict[str, Any]:
    """Paired comparison of ``a`` and ``b`` (one value per input, same order).

    ``alternative`` -- ``"greater"`` tests mean(a - b) > 0, ``"less"`` mean(a - b) < 0. Pairs
    with a non-finite member are dropped (counted in ``n_dropped``). Returns ``n``,
    ``mean_diff`` (a - b), ``se``, ``ci95`` (two-sided t interval of the mean difference),
    ``t``, ``p`` (one-sided t-test), ``p_wilcoxon`` (one-sided signed-rank test; 1 when every
    difference is 0), ``significant`` (p < alpha) and ``significant_wilcoxon``.
    With fewer than two pairs nothing is significant.
    """
    from scipy import stats

    a, b = _pairs(a, b, alternative)
    ok = np.isfinite(a) & np.isfinite(b)
    d = a[ok] - b[ok]
    n = len(d)
    out: dict[str, Any] = {"n": n, "n_dropped": int((~ok).sum()),
                           "mean_diff": float(d.mean()) if n else math.nan,
                           "se": math.nan, "ci95": [math.nan, math.nan], "t": math.nan,
                           "p": 1.0, "p_wilcoxon": 1.0, "significant": False,
                           "significant_wilcoxon": False, "alternative": alternative}
    if n < 2:
        return out
    se = standard_error(d)
    half = float(stats.t.ppf(0.975, n - 1)) * se
    out["se"], out["ci95"] = se, [float(d.mean() - half), float(d.mean() + half)]
    if se > 0:
        t = float(d.mean() / se)
        out["t"] = t
        out["p"] = float(stats.t.sf(t, n - 1) if alternative == "greater"
                         else stats.t.cdf(t, n - 1))
    elif d.mean() != 0:  # every difference equal and non-zero: as certain as it gets
        out["t"] = math.copysign(math.inf, d.mean())
        out["p"] = 0.0 if (d.mean() > 0) == (alternative == "greater") else 1.0
    if np.any(d != 0):
        out["p_wilcoxon"] = float(stats.wilcoxon(d, alternative=alternative,
                                                 zero_method="wilcox").pvalue)
    out["significant"] = bool(out["p"] < alpha)
    out["significant_wilcoxon"] = bool(out["p_wilcoxon"] < alpha)
    return out


def paired_binary(a: Any, b: Any, *, alternative: str = "greater", alpha: float = ALPHA
                  ) -> dict[str, Any]:
    """Exact one-sided McNemar test of paired pass/fail outcomes (1 = pass, one per input).

    Only the discordant inputs carry information: ``up`` passes under ``a`` and fails under
    ``b``, ``down`` the reverse. Under the null each discordant input is either with
    probability 1/2, so ``p`` is the binomial tail of ``up`` in ``up + down`` draws
    (``"greater"``: a passes more often than b; ``"less"``: less often). Returns ``n``,
    ``rate_a``, ``rate_b``, ``up``, ``down``, ``p`` and ``significant`` (p < alpha); with no
    discordant input p is 1. Values other than 0 and 1 are refused.
    """
    from scipy import stats

    a, b = _pairs(a, b, alternative)
    for name, v in (("a", a), ("b", b)):
        if not np.isin(v, (0.0, 1.0)).all():
            raise ValueError(f"paired_binary needs outcomes of 0 or 1; {name} holds "
                             f"{sorted(set(v[~np.isin(v, (0.0, 1.0))].tolist()))[:3]}")
    up, down = int(((a == 1) & (b == 0)).sum()), int(((a == 0) & (b == 1)).sum())
    p = 1.0
    if up + down:
        k = up if alternative == "greater" else down
        p = float(stats.binomtest(k, up + down, 0.5, alternative="greater").pvalue)
    n = len(a)
    return {"n": n, "rate_a": float(a.mean()) if n else math.nan,
            "rate_b": float(b.mean()) if n else math.nan, "up": up, "down": down, "p": p,
            "significant": bool(p < alpha), "alternative": alternative}


def bootstrap_mean_ci(values: Any, *, n_boot: int = 2000, level: float = 0.95,
                      seed: int = 0) -> list[float]:
    """Percentile bootstrap interval of the mean of ``values`` (non-finite values dropped)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return [math.nan, math.nan]
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), size=(n_boot, len(v)))].mean(1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return [float(lo), float(hi)]


def degenerate_maps(values: Any, *, rtol: float = 1e-6) -> np.ndarray:
    """Boolean per input: the map holds a NaN / infinite value or is constant.

    ``values`` has shape (n, ...). A map is constant when its range is at most ``rtol`` times
    its largest magnitude (or exactly 0 for an all-zero map). Such a map ranks no pixel above
    another: a deletion curve on it measures the tie-breaking order, not the explainer.
    """
    v = np.asarray(values, dtype=np.float64)
    flat = v.reshape(len(v), -1)
    bad = ~np.isfinite(flat).all(1)
    with np.errstate(invalid="ignore"):
        rng = np.nanmax(flat, 1) - np.nanmin(flat, 1) if flat.shape[1] else np.zeros(len(v))
        scale = np.nanmax(np.abs(flat), 1) if flat.shape[1] else np.zeros(len(v))
    const = rng <= rtol * scale
    return bad | const


def majority(flags: Any) -> bool:
    """A strict majority of ``flags`` is true."""
    f = [bool(x) for x in flags]
    return sum(f) > len(f) / 2


def brief(t: Mapping[str, Any], *, wilcoxon: bool = False) -> dict[str, Any]:
    """The summary of a :func:`paired` result in a claim's evidence: ``n``, ``mean_diff`` and
    ``ci95`` to 4 decimals, ``p`` to 3 significant digits (and ``p_wilcoxon`` with
    ``wilcoxon``)."""
    out = {"n": t["n"], "mean_diff": round(t["mean_diff"], 4),
           "ci95": [round(v, 4) for v in t["ci95"]], "p": float(f"{t['p']:.3g}")}
    if wilcoxon:
        out["p_wilcoxon"] = float(f"{t['p_wilcoxon']:.3g}")
    return out


def every(tests: Mapping[Any, Mapping[str, Any]], key: str = "significant") -> bool:
    """Whether ``key`` (``"significant"``, ``"significant_wilcoxon"``) is true for every
    :func:`paired` result in ``tests``."""
    return all(t[key] for t in tests.values())


def nearest_rules(tests: Mapping[Any, Mapping[str, Any]]) -> dict[str, bool]:
    """The two nearest alternatives to "every one-sided test of a lower mean is significant"
    (:func:`every`): every mean difference below 0 without a test, and the Wilcoxon
    signed-rank test in place of the t-test."""
    return {"lower mean only (no test)": all(t["mean_diff"] < 0 for t in tests.values()),
            "Wilcoxon signed-rank instead of t": every(tests, "significant_wilcoxon")}
