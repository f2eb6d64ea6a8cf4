"""Figures: compute elsewhere, draw here. matplotlib is imported lazily (Agg backend)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["reliability_diagram", "calibration_by_level_plot", "explanation_figure", "save"]


def _plt():
    import matplotlib

    if matplotlib.get_backend().lower() not in ("agg", "module://matplotlib_inline.backend_inline"):
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig: Any, path: str | Path | None, *, dpi: int = 110) -> None:
    """Save ``fig`` as PNG when ``path`` is given (parent folders are created)."""
    if path is not None:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(p, dpi=dpi, bbox_inches="tight")


def reliability_diagram(
    curves: Mapping[str, tuple[Any, Any]] | tuple[Any, Any],
    *,
    n_bins: int = 15,
    path: str | Path | None = None,
    title: str = "Reliability diagram",
) -> Any:
    """Binned reliability diagram(s): accuracy vs confidence, with ECE in the legend.

    Parameters
    ----------
    curves : (probs, labels) or mapping name -> (probs, labels)
        probs of shape (n, k), labels of shape (n,).
    path : optional PNG path.

    Returns
    -------
    matplotlib Figure
    """
    from calix.metrics.calibration import ece, reliability_curve

    if isinstance(curves, tuple):
        curves = {"model": curves}
    plt = _plt()
    fig, axes = plt.subplots(1, len(curves), figsize=(3.4 * len(curves), 3.6), squeeze=False)
    for ax, (name, (probs, labels)) in zip(axes[0], curves.items(), strict=True):
        rc = reliability_curve(probs, labels, n_bins=n_bins)
        centres = (rc["edges"][:-1] + rc["edges"][1:]) / 2
        width = np.diff(rc["edges"])
        ok = rc["count"] > 0
        ax.bar(centres[ok], rc["accuracy"][ok], width=width[ok], edgecolor="k", alpha=0.75,
               label="accuracy")
        lo = np.minimum(rc["confidence"][ok], rc["accuracy"][ok])
        gap = np.abs(rc["confidence"][ok] - rc["accuracy"][ok])
        ax.bar(centres[ok], gap, bottom=lo, width=width[ok], color="tab:red", alpha=0.3,
               hatch="//", label="|confidence − accuracy|")
        ax.plot([0, 1], [0, 1], "k--", lw=1)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence")
        ax.set_title(f"{name}\nECE {ece(probs, labels, n_bins=n_bins):.3f}", fontsize=9)
    axes[0, 0].set_ylabel("accuracy")
    axes[0, 0].legend(loc="upper left", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save(fig, path)
    return fig


def calibration_by_level_plot(
    results: Mapping[str, Any],
    *,
    path: str | Path | None = None,
    title: str = "Calibration error by perturbation level",
) -> Any:
    """CE per level bin for several models (e.g. uncalibrated / temperature / ReCalX).

    Parameters
    ----------
    results : mapping name -> :class:`~calix.metrics.LevelCalibration`
    path : optional PNG path.
    """
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    for name, lc in results.items():
        centres = (lc.bin_edges[:-1] + lc.bin_edges[1:]) / 2
        ax.plot(centres, lc.errors, "o-", label=f"{name} (avg {lc.avg:.3f}, max {lc.max:.3f})")
    ax.set_xlabel("perturbation level λ (fraction of features removed)")
    first = next(iter(results.values()))
    ax.set_ylabel(first.metric.upper().replace("_", " "))
    ax.set_xlim(0, 1)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    save(fig, path)
    return fig


def explanation_figure(
    x: Any,
    values: Any,
    *,
    feature_names: list[str] | None = None,
    title: str = "",
    path: str | Path | None = None,
    max_features: int = 20,
) -> Any:
    """An input beside its attribution map (images) or a bar chart of attributions (tabular).

    Parameters
    ----------
    x : array of shape (C, H, W) or (d,) -- one input.
    values : array of shape (C', H, W) or (d,) -- its attributions (channels are summed).
    feature_names : names for tabular bars.
    """
    plt = _plt()
    x, v = np.asarray(x), np.asarray(values)
    if x.ndim == 3:
        fig, (a0, a1) = plt.subplots(1, 2, figsize=(6.4, 3.2))
        img = x[0] if x.shape[0] == 1 else np.moveaxis(x, 0, -1)
        a0.imshow(img, cmap="gray" if x.shape[0] == 1 else None)
        a0.set_title("input", fontsize=9)
        m = v.sum(0) if v.ndim == 3 else v
        lim = float(np.abs(m).max()) or 1.0
        im = a1.imshow(m, cmap="RdBu_r", vmin=-lim, vmax=lim)
        a1.set_title("attribution", fontsize=9)
        fig.colorbar(im, ax=a1, fraction=0.046)
        for a in (a0, a1):
            a.set_xticks([])
            a.set_yticks([])
    else:
        order = np.argsort(-np.abs(v))[:max_features][::-1]
        names = feature_names or [f"x{i}" for i in range(len(v))]
        fig, ax = plt.subplots(figsize=(5.5, 0.28 * len(order) + 1.2))
        ax.barh([names[i] for i in order], v[order],
                color=["tab:red" if v[i] > 0 else "tab:blue" for i in order])
        ax.axvline(0, color="k", lw=0.8)
        ax.set_xlabel("attribution")
        ax.tick_params(axis="y", labelsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save(fig, path)
    return fig
