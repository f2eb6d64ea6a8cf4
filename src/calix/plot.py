"""Figures: compute elsewhere, draw here. matplotlib is imported lazily (Agg backend)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "reliability_diagram", "smooth_reliability_diagram", "calibration_by_level_plot",
    "explanation_figure", "attribution_bars", "overlay", "feature_boundaries",
    "distribution_figure", "summary_bar", "beeswarm", "save", "subplots",
]


def _plt():
    import matplotlib

    if matplotlib.get_backend().lower() not in ("agg", "module://matplotlib_inline.backend_inline"):
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def subplots(*args: Any, **kwargs: Any) -> tuple[Any, Any]:
    """``matplotlib.pyplot.subplots(*args, **kwargs)`` on the backend calix draws with (Agg,
    or the notebook's inline backend): a new figure and its axes, for figures of one's own
    beside calix's.

    >>> fig, ax = subplots(figsize=(2, 2))
    >>> fig is ax.figure
    True
    """
    return _plt().subplots(*args, **kwargs)


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
    n_boot: int = 0,
    level: float = 0.95,
    seed: int | None = 0,
    path: str | Path | None = None,
    title: str = "Reliability diagram",
    ax: Any = None,
) -> Any:
    """Binned reliability diagram(s): accuracy vs confidence, with ECE in the title.

    With ``n_boot`` > 0 each bin's accuracy gets its percentile-bootstrap interval (a black
    bar, :func:`calix.metrics.reliability_curve`) and the ECE its interval
    (:func:`calix.metrics.calibration_interval`), both from ``n_boot`` resamples of the
    examples.

    Parameters
    ----------
    curves : (probs, labels) or mapping name -> (probs, labels)
        probs of shape (n, k), labels of shape (n,).
    n_bins : int -- equal-width bins.
    n_boot : int -- bootstrap resamples for the intervals (0: none).
    level : float -- the intervals' nominal level.
    seed : int or None -- the resamples.
    path : optional PNG path.
    title : the figure's title (on a new figure only).
    ax : optional matplotlib axes, one per curve (a sequence for several), to draw into;
        by default a new figure with one panel per curve.

    Returns
    -------
    matplotlib Figure
        The new figure, or the figure of ``ax``.
    """
    from calix.metrics.calibration import calibration_interval, ece, reliability_curve

    curves, fig, axes, owned = _curve_panels(curves, ax)
    for a, (name, (probs, labels)) in zip(axes, curves.items(), strict=True):
        rc = reliability_curve(probs, labels, n_bins=n_bins, n_boot=n_boot, level=level,
                               seed=seed)
        centres = (rc["edges"][:-1] + rc["edges"][1:]) / 2
        width = np.diff(rc["edges"])
        ok = rc["count"] > 0
        a.bar(centres[ok], rc["accuracy"][ok], width=width[ok], edgecolor="k", alpha=0.75,
              label="accuracy")
        lo = np.minimum(rc["confidence"][ok], rc["accuracy"][ok])
        gap = np.abs(rc["confidence"][ok] - rc["accuracy"][ok])
        a.bar(centres[ok], gap, bottom=lo, width=width[ok], color="tab:red", alpha=0.3,
              hatch="//", label="|confidence − accuracy|")
        _unit_square(a)
        if n_boot:
            acc = rc["accuracy"][ok]
            a.errorbar(centres[ok], acc, yerr=[acc - rc["lower"][ok], rc["upper"][ok] - acc],
                       fmt="none", ecolor="k", elinewidth=1.2, capsize=2,
                       label=f"{level:.0%} bootstrap interval")
            ci = calibration_interval(ece, probs, labels, n_boot=n_boot, level=level,
                                      seed=seed, metric_kwargs={"n_bins": n_bins})
            a.set_title(f"{name}\nECE {ci.value:.3f} [{ci.lower:.3f}, {ci.upper:.3f}]",
                        fontsize=9)
        else:
            a.set_title(f"{name}\nECE {ece(probs, labels, n_bins=n_bins):.3f}", fontsize=9)
    return _finish_curves(fig, axes, owned, title, path, legend_size=8)


#: :func:`smooth_reliability_diagram` draws its curve where the confidences' density is at least
#: this share of its peak.
MIN_RELATIVE_DENSITY = 0.01


def smooth_reliability_diagram(
    curves: Mapping[str, tuple[Any, Any]] | tuple[Any, Any],
    *,
    bandwidth: float | None = None,
    n_boot: int = 200,
    level: float = 0.95,
    seed: int | None = 0,
    path: str | Path | None = None,
    title: str = "Smooth reliability diagram",
    ax: Any = None,
) -> Any:
    """Smooth reliability diagram(s) of the top-label confidence (Błasiok & Nakkiran, ICLR
    2024): the kernel-smoothed accuracy t + r̂_σ(t) with its bootstrap band, the density of
    the confidences below it, and smooth ECE with its interval in the title.

    The curve, band and density come from :func:`calix.metrics.smooth_reliability_curve`
    (σ the smooth-ECE fixed point unless ``bandwidth`` is given; the band keeps that σ), the
    interval of smooth ECE from :func:`calix.metrics.calibration_interval`. Curve and band
    are drawn where the density is at least ``MIN_RELATIVE_DENSITY`` (1%) of its peak:
    elsewhere too few confidences lie within a bandwidth for the ratio to mean anything. Near
    perfect calibration the bootstrap interval can sit above the sample value (the
    estimator's upward bias, see :func:`calix.metrics.calibration_interval`).

    Parameters
    ----------
    curves, seed, path, title, ax
        As in :func:`reliability_diagram`.
    bandwidth : float or None -- a fixed kernel bandwidth σ; None for the fixed point.
    n_boot : int -- bootstrap resamples for the band and the interval (0: none).
    level : float -- the band's and interval's nominal level.

    Returns
    -------
    matplotlib Figure
        The new figure, or the figure of ``ax``.
    """
    from calix.metrics.calibration import (
        calibration_interval,
        smooth_ece,
        smooth_reliability_curve,
    )

    curves, fig, axes, owned = _curve_panels(curves, ax)
    for a, (name, (probs, labels)) in zip(axes, curves.items(), strict=True):
        sc = smooth_reliability_curve(probs, labels, bandwidth=bandwidth, n_boot=n_boot,
                                      level=level, seed=seed)
        t = sc["t"]
        dens = sc["density"] / max(float(np.max(sc["density"])), 1e-300)
        hide = dens < MIN_RELATIVE_DENSITY  # too few confidences within a bandwidth
        a.fill_between(t, 0, 0.2 * dens, color="tab:gray", alpha=0.35, lw=0,
                       label="density of confidence")
        if n_boot:
            a.fill_between(t, np.where(hide, np.nan, sc["lower"]),
                           np.where(hide, np.nan, sc["upper"]), color="tab:blue", alpha=0.25,
                           lw=0, label=f"{level:.0%} bootstrap band")
        a.plot(t, np.where(hide, np.nan, sc["accuracy"]), color="tab:blue", lw=1.8,
               label="smoothed accuracy")
        _unit_square(a)
        head = f"{name}\nsmECE {sc['smooth_ece']:.3f} (σ = {sc['bandwidth']:.3f})"
        if n_boot:
            ci = calibration_interval(smooth_ece, probs, labels, n_boot=n_boot, level=level,
                                      seed=seed, metric_kwargs={"bandwidth": bandwidth})
            head += f" [{ci.lower:.3f}, {ci.upper:.3f}]"
        a.set_title(head, fontsize=9)
    return _finish_curves(fig, axes, owned, title, path, legend_size=7)


def calibration_by_level_plot(
    results: Mapping[str, Any],
    *,
    path: str | Path | None = None,
    title: str = "Calibration error by perturbation level",
    ax: Any = None,
) -> Any:
    """CE per level bin for several models (e.g. uncalibrated / temperature / ReCalX).

    Parameters
    ----------
    results : mapping name -> :class:`~calix.metrics.LevelCalibration`
    path : optional PNG path.
    title : the axes' title.
    ax : optional matplotlib axes to draw into; by default a new figure.

    Returns
    -------
    matplotlib Figure
        The new figure, or the figure of ``ax``.
    """
    fig, (ax,), owned = _axes(ax, 1, (5.2, 3.6))
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
    return _finish(fig, owned, None, path)


# ---------------------------------------------------------------------- explanations
def _axes(ax: Any, n: int, figsize: tuple[float, float], ncols: int | None = None
          ) -> tuple[Any, list[Any], bool]:
    """(figure, n axes, owned): new axes in a grid, or the ``n`` axes the caller passed."""
    if ax is None:
        ncols = ncols or n
        nrows = -(-n // ncols)
        fig, grid = _plt().subplots(nrows, ncols, figsize=figsize, squeeze=False)
        axes = list(grid.ravel())
        for a in axes[n:]:
            a.set_visible(False)
        return fig, axes[:n], True
    axes = list(np.ravel(np.asarray(ax, dtype=object)))
    if len(axes) != n:
        raise ValueError(f"this figure needs {n} axes, got {len(axes)}")
    return axes[0].figure, axes, False


def _finish(fig: Any, owned: bool, title: str | None, path: str | Path | None) -> Any:
    if owned:
        if title:
            fig.suptitle(title, fontsize=10)
        fig.tight_layout()
    save(fig, path)
    return fig


def _curve_panels(curves: Mapping[str, tuple[Any, Any]] | tuple[Any, Any], ax: Any
                  ) -> tuple[Mapping[str, tuple[Any, Any]], Any, list[Any], bool]:
    """``curves`` as a mapping name -> (probs, labels), and (figure, axes, owned) with one
    panel per curve (:func:`_axes`)."""
    if isinstance(curves, tuple):
        curves = {"model": curves}
    return (curves, *_axes(ax, len(curves), (3.4 * len(curves), 3.6)))


def _unit_square(a: Any) -> None:
    """A reliability panel's frame: the diagonal of perfect calibration on [0, 1]²."""
    a.plot([0, 1], [0, 1], "k--", lw=1)
    a.set_xlim(0, 1)
    a.set_ylim(0, 1)
    a.set_xlabel("confidence")


def _finish_curves(fig: Any, axes: list[Any], owned: bool, title: str | None,
                   path: str | Path | None, *, legend_size: float) -> Any:
    axes[0].set_ylabel("accuracy")
    axes[0].legend(loc="upper left", fontsize=legend_size)
    return _finish(fig, owned, title, path)


def _explanation(obj: Any) -> Any:
    from calix.explain.base import Explanation

    return obj if isinstance(obj, Explanation) else None


def _image(x: Any) -> tuple[np.ndarray, str | None]:
    """An input (C, H, W), (H, W) or (H, W, 3) as an imshow array in [0, 1] and a colormap."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 3 and a.shape[0] in (1, 3, 4) and a.shape[-1] not in (3, 4):
        a = a[0] if a.shape[0] == 1 else np.moveaxis(a[:3], 0, -1)
    elif a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3):
        raise ValueError(f"an image must be (C, H, W), (H, W) or (H, W, 3), got {np.shape(x)}")
    lo, hi = float(a.min()), float(a.max())
    a = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
    return a, ("gray" if a.ndim == 2 else None)


def _map(v: Any) -> np.ndarray:
    """An attribution map (C, H, W) or (H, W) as (H, W) (channels summed)."""
    m = np.asarray(v, dtype=np.float64)
    if m.ndim == 3:
        m = m.sum(0)
    if m.ndim != 2:
        raise ValueError(f"an attribution map must be (C, H, W) or (H, W), got {np.shape(v)}")
    return m


def _clean(ax: Any) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def _class_label(exp: Any, i: int) -> str:
    if exp is None or exp.target is None:
        return ""
    t = int(np.asarray(exp.target)[i])
    return str(exp.class_names[t]) if exp.class_names else str(t)


def _scalar(lim: float, cmap: str = "RdBu_r") -> Any:
    """A colorbar source for a symmetric scale [-lim, lim] (for maps drawn with varying alpha)."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    return ScalarMappable(Normalize(-lim, lim), cmap=cmap)


def _signed(ax: Any, m: np.ndarray, *, alpha: Any = None, cmap: str = "RdBu_r") -> Any:
    lim = float(np.abs(m).max()) or 1.0
    return ax.imshow(m, cmap=cmap, vmin=-lim, vmax=lim, alpha=alpha)


def explanation_figure(
    x: Any,
    values: Any = None,
    *,
    feature_names: list[str] | None = None,
    title: str = "",
    path: str | Path | None = None,
    max_features: int = 20,
    max_inputs: int = 16,
    axes: Any = None,
) -> Any:
    """Inputs beside their attribution maps (images) or bar charts of attributions (tables).

    Parameters
    ----------
    x : array of shape (C, H, W) or (d,) -- one input; (n, C, H, W) or (n, d) -- a batch;
        or an :class:`~calix.explain.Explanation` (its ``data`` are the inputs, if stored).
    values : array of shape (C', H, W) or (d,), or (n, ...) for a batch, or an Explanation
        (then ``x`` holds the inputs, or is None). Channels of maps are summed.
    feature_names : names for tabular bars (default: the Explanation's, else ``x0 ..``).
    max_inputs : at most this many inputs of a batch are drawn.
    axes : optional axes to draw into: 2 per image input (1 without inputs), 1 per table.

    A single image gives ``input | attribution``; a batch of images a grid with a row of
    inputs above a row of maps (colour scale symmetric per input, red positive); a table one
    bar panel per input with intervals when the Explanation has them.

    >>> explanation_figure(exp[:8])                  # doctest: +SKIP
    """
    exp = _explanation(x) or _explanation(values)
    if exp is not None:
        inputs = exp.data if _explanation(x) is not None or x is None else x
        if inputs is not None and len(np.shape(inputs)) == np.ndim(exp.values) - 1:
            inputs = np.asarray(inputs)[None]
        vals = exp.values
        image = np.ndim(exp.values) == 4
    else:
        if values is None:
            raise ValueError("explanation_figure needs values (or an Explanation)")
        inputs, vals = np.asarray(x), np.asarray(values)
        image = inputs.ndim in (3, 4)
        if inputs.ndim in (1, 3):  # one input
            inputs, vals = inputs[None], vals[None]
    vals = np.asarray(vals)[:max_inputs]
    inputs = None if inputs is None else np.asarray(inputs)[:max_inputs]
    if inputs is not None and len(inputs) != len(vals):
        raise ValueError(f"{len(inputs)} inputs for {len(vals)} explanations")
    n = len(vals)
    if not image:
        return _tabular_figure(exp, vals, n, feature_names, max_features, title, path, axes)
    rows = 1 if inputs is None else 2
    ncols = min(n, 8)
    blocks = -(-n // ncols)
    if n == 1 and inputs is not None:
        fig, ax_list, owned = _axes(axes, 2, (6.4, 3.2))
        pairs = [(ax_list[0], ax_list[1])]
    else:
        size = (1.7 * ncols + 0.4, 1.8 * rows * blocks + 0.5)
        if axes is None:
            fig, grid = _plt().subplots(rows * blocks, ncols, figsize=size, squeeze=False)
            owned = True
            for a in grid.ravel():
                a.set_visible(False)
            pairs = [(grid[rows * (i // ncols), i % ncols] if rows == 2 else None,
                      grid[rows * (i // ncols) + rows - 1, i % ncols]) for i in range(n)]
        else:
            fig, ax_list, owned = _axes(axes, rows * n, size)
            pairs = [(ax_list[2 * i], ax_list[2 * i + 1]) if rows == 2 else (None, ax_list[i])
                     for i in range(n)]
    for i, (a_in, a_map) in enumerate(pairs):
        label = _class_label(exp, i)
        if a_in is not None:
            img, cmap = _image(inputs[i])
            a_in.set_visible(True)
            a_in.imshow(img, cmap=cmap)
            a_in.set_title("input" if n == 1 else f"input {i}", fontsize=8)
            _clean(a_in)
        a_map.set_visible(True)
        im = _signed(a_map, _map(vals[i]))
        a_map.set_title(f"target: {label}" if label else "attribution", fontsize=8)
        _clean(a_map)
        if n == 1:
            fig.colorbar(im, ax=a_map, fraction=0.046, label="attribution")
    return _finish(fig, owned, title, path)


def _tabular_figure(exp: Any, vals: np.ndarray, n: int, feature_names: Any, max_features: int,
                    title: str, path: Any, axes: Any) -> Any:
    k = min(max_features, vals.shape[-1])
    ncols = min(n, 3)
    fig, ax_list, owned = _axes(axes, n, (5.0 * ncols, (0.26 * k + 1.3) * -(-n // ncols)),
                                ncols=ncols)
    for i, ax in enumerate(ax_list):
        source = exp[i] if exp is not None else vals[i]
        label = _class_label(exp, i)
        attribution_bars(source, feature_names=feature_names, max_features=max_features, ax=ax,
                         title=", ".join(t for t in (f"input {i}" if n > 1 else "",
                                                     f"target: {label}" if label else "") if t))
        ax.locator_params(axis="x", nbins=5)
    return _finish(fig, owned, title, path)


def attribution_bars(
    explanation: Any,
    *,
    index: int = 0,
    feature_names: list[str] | None = None,
    lower: Any = None,
    upper: Any = None,
    std: Any = None,
    max_features: int = 20,
    ax: Any = None,
    title: str | None = None,
    path: str | Path | None = None,
) -> Any:
    """Horizontal bars of one input's per-feature attributions, with their intervals.

    Parameters
    ----------
    explanation : Explanation (input ``index`` of its feature table) or array of shape (d,).
    lower, upper : arrays of shape (d,) -- an interval (default: the Explanation's, when it
        has one per feature); drawn as error bars.
    std : array of shape (d,) -- drawn as ±1 std when there is no interval (default: the
        Explanation's).
    max_features : the largest |attributions| shown, the largest on top.

    >>> attribution_bars(exp, index=3, max_features=10)  # doctest: +SKIP
    """
    exp = _explanation(explanation)
    note = ""
    if exp is not None:
        table = exp.feature_table()
        v = table[index]
        names = feature_names or exp.names(table.shape[1])
        have = {w: np.asarray(getattr(exp, w)) for w in ("lower", "upper", "std")
                if getattr(exp, w) is not None and np.shape(getattr(exp, w)) == table.shape}
        lower = have["lower"][index] if lower is None and "lower" in have else lower
        upper = have["upper"][index] if upper is None and "upper" in have else upper
        std = have["std"][index] if std is None and "std" in have else std
        level = exp.params.get("level")
    else:
        v = np.asarray(explanation, dtype=np.float64)
        if v.ndim != 1:
            raise ValueError(f"attribution_bars draws one input's values (d,), got {v.shape}")
        names = feature_names or [f"x{j}" for j in range(len(v))]
        level = None
    if len(names) != len(v):
        raise ValueError(f"feature_names has {len(names)} names for {len(v)} features")
    order = np.argsort(-np.abs(v), kind="stable")[:max_features][::-1]
    xerr = None
    if lower is not None and upper is not None:
        lo, hi = np.asarray(lower, dtype=np.float64), np.asarray(upper, dtype=np.float64)
        xerr = np.vstack([v[order] - lo[order], hi[order] - v[order]]).clip(min=0)
        note = f"{level:.0%} interval" if level is not None else "interval"
    elif std is not None:
        xerr = np.asarray(std, dtype=np.float64)[order]
        note = "±1 std"
    fig, (ax,), owned = _axes(ax, 1, (5.5, 0.28 * len(order) + 1.2))
    ax.barh(np.arange(len(order)), v[order], xerr=xerr, capsize=2 if xerr is not None else 0,
            error_kw={"elinewidth": 0.9, "ecolor": "0.25"},
            color=["tab:red" if v[i] > 0 else "tab:blue" for i in order])
    ax.set_yticks(np.arange(len(order)), [names[i] for i in order])
    ax.axvline(0, color="k", lw=0.8)
    ax.set_xlabel("attribution" + (f" ({note})" if note else ""))
    ax.tick_params(axis="y", labelsize=7)
    if title:
        ax.set_title(title, fontsize=9)
    return _finish(fig, owned, None, path)


def overlay(
    image: Any,
    explanation: Any,
    *,
    index: int = 0,
    ax: Any = None,
    alpha: float = 0.7,
    cmap: str = "RdBu_r",
    colorbar: bool = True,
    title: str | None = None,
    path: str | Path | None = None,
) -> Any:
    """An attribution map over its image (in grey), opaque where |attribution| is large.

    Parameters
    ----------
    image : array of shape (C, H, W) or (H, W), or None (the Explanation's ``data[index]``).
    explanation : Explanation (map ``values[index]``) or array of shape (C, H, W) or (H, W).
    alpha : the opacity of the largest |attribution|; smaller ones fade in proportion.
    cmap : a diverging colormap, centred at 0.

    >>> overlay(x[0], exp, alpha=0.6)                # doctest: +SKIP
    """
    exp = _explanation(explanation)
    m = _map(exp.values[index] if exp is not None else explanation)
    if image is None:
        if exp is None or exp.data is None:
            raise ValueError("overlay needs the image: pass it, or store it in exp.data")
        image = exp.data[index]
    img, _ = _image(image)
    grey = img if img.ndim == 2 else img.mean(-1)
    if grey.shape != m.shape:
        raise ValueError(f"image {grey.shape} and attribution map {m.shape} differ in size")
    fig, (ax,), owned = _axes(ax, 1, (3.8, 3.4))
    ax.imshow(grey, cmap="gray", vmin=0, vmax=1)
    lim = float(np.abs(m).max()) or 1.0
    _signed(ax, m, alpha=np.clip(alpha * np.abs(m) / lim, 0, 1), cmap=cmap)
    _clean(ax)
    ax.set_title(title if title is not None else _class_label(exp, index) or "overlay",
                 fontsize=9)
    if colorbar:
        fig.colorbar(_scalar(lim, cmap), ax=ax, fraction=0.046, label="attribution")
    return _finish(fig, owned, None, path)


def _edges(lab: np.ndarray, *, color: Any, lw: float = 1.2) -> Any:
    """Line segments along the pixel edges where neighbouring labels differ (imshow coords)."""
    from matplotlib.collections import LineCollection

    r, c = np.nonzero(lab[:, 1:] != lab[:, :-1])  # between columns c and c + 1
    vertical = np.stack([np.stack([c + 0.5, r - 0.5], -1), np.stack([c + 0.5, r + 0.5], -1)], 1)
    r, c = np.nonzero(lab[1:] != lab[:-1])  # between rows r and r + 1
    horizontal = np.stack([np.stack([c - 0.5, r + 0.5], -1), np.stack([c + 0.5, r + 0.5], -1)],
                          1)
    return LineCollection(np.concatenate([vertical, horizontal]), colors=[color],
                          linewidths=lw, label="feature boundaries")


def feature_boundaries(
    image: Any,
    explanation: Any,
    *,
    index: int = 0,
    ax: Any = None,
    show_values: bool = True,
    alpha: float = 0.7,
    color: tuple[float, float, float] = (1.0, 0.85, 0.0),
    title: str | None = None,
    path: str | Path | None = None,
) -> Any:
    """The image with the outlines of its features (superpixels, patches) from ``labels``.

    Boundaries are drawn as lines along the pixel edges between different labels, so they
    stay exact on small images (8 x 8 digits) where outlining whole pixels would hide them.

    Parameters
    ----------
    image : array of shape (C, H, W) or (H, W), or None (the Explanation's ``data[index]``).
    explanation : Explanation with ``labels`` (its ``values[index]`` are overlaid when
        ``show_values``), or an integer label array of shape (H, W) or (C, H, W).
    color : RGB of the boundaries.

    >>> exp = Occlusion(model, features=Superpixels(50)).explain(x)  # doctest: +SKIP
    >>> feature_boundaries(x[0], exp)                # doctest: +SKIP
    """
    exp = _explanation(explanation)
    if exp is not None:
        if exp.labels is None:
            raise ValueError(f"the {exp.method!r} explanation has no feature labels "
                             "(only feature methods record them)")
        lab = np.asarray(exp.labels[index])
        if image is None:
            if exp.data is None:
                raise ValueError("feature_boundaries needs the image: pass it, or store it in "
                                 "exp.data")
            image = exp.data[index]
    else:
        lab = np.asarray(explanation)
    lab = lab[0] if lab.ndim == 3 else lab
    img, _ = _image(image)
    rgb = np.repeat(img[..., None], 3, -1) if img.ndim == 2 else img
    if rgb.shape[:2] != lab.shape:
        raise ValueError(f"image {rgb.shape[:2]} and labels {lab.shape} differ in size")
    fig, (ax,), owned = _axes(ax, 1, (3.8, 3.4))
    if exp is not None and show_values:
        ax.imshow(rgb.mean(-1), cmap="gray", vmin=0, vmax=1)
        m = _map(exp.values[index])
        lim = float(np.abs(m).max()) or 1.0
        _signed(ax, m, alpha=np.clip(alpha * np.abs(m) / lim, 0, 1))
        fig.colorbar(_scalar(lim), ax=ax, fraction=0.046, label="attribution")
    else:
        ax.imshow(rgb)
    ax.add_collection(_edges(lab, color=color))
    _clean(ax)
    n_feat = len(np.unique(lab))
    ax.set_title(title if title is not None else f"{n_feat} features", fontsize=9)
    return _finish(fig, owned, None, path)


def distribution_figure(
    explanation: Any,
    x: Any = None,
    *,
    index: int = 0,
    max_features: int = 20,
    cv_quantile: float = 0.98,
    axes: Any = None,
    title: str | None = None,
    path: str | Path | None = None,
) -> Any:
    """Mean, std and CV of one input's explanation distribution, side by side.

    Parameters
    ----------
    explanation : Explanation from :func:`calix.uncertainty.explanation_distribution`
        (``values`` the mean E_μ, ``std`` E_σ, ``extra["cv"]`` / ``extra["cv_masked"]``).
    x : array of shape (C, H, W), optional
        The input, drawn first for images (default: the Explanation's ``data``).
    cv_quantile : the CV colour scale ends at this quantile of the defined CVs (a few
        near-zero means make huge CVs).
    axes : 3 axes (4 for images with an input).

    Images: the mean uses a diverging colormap centred at 0; std (viridis) and CV (magma)
    are sequential, and the CV is grey where it is undefined (|mean| below the guard of
    :func:`calix.uncertainty.coefficient_of_variation`). Maps of several channels are summed
    per sample before the statistics (this needs ``extra["samples"]``). Tables: bars of the
    mean ± std, the std and the CV of the ``max_features`` largest |means|.
    """
    from calix.uncertainty import coefficient_of_variation

    exp = _explanation(explanation)
    if exp is None or exp.std is None or np.shape(exp.std) != np.shape(exp.values):
        raise ValueError("distribution_figure needs an explanation distribution with a std "
                         "per value (calix.uncertainty.explanation_distribution)")
    mean = np.asarray(exp.values[index], dtype=np.float64)
    std = np.asarray(exp.std[index], dtype=np.float64)
    cv = masked = None
    if "cv" in exp.extra and "cv_masked" in exp.extra:
        cv = np.asarray(exp.extra["cv"][index], dtype=np.float64)
        masked = np.asarray(exp.extra["cv_masked"][index], dtype=bool)
    if mean.ndim == 3 and mean.shape[0] > 1:
        if "samples" not in exp.extra:
            raise ValueError(f"maps with {mean.shape[0]} channels need extra['samples'] to "
                             "sum the channels before taking std and CV")
        s = np.asarray(exp.extra["samples"], dtype=np.float64)[:, index].sum(1)
        mean, std, cv = s.mean(0), s.std(0), None
    elif mean.ndim == 3:
        mean, std = mean[0], std[0]
        cv, masked = (None, None) if cv is None else (cv[0], masked[0])
    if cv is None:
        cv = coefficient_of_variation(mean[None], std[None])[0]
        masked = (cv == 0) & (std > 0)
    undefined = masked | (std == 0)
    label = _class_label(exp, index)
    if mean.ndim == 1:
        return _distribution_bars(exp, mean, std, cv, undefined, max_features, axes,
                                  title or label, path)
    if x is None and exp.data is not None:
        x = exp.data[index]
    n_ax = 3 + (x is not None)
    fig, ax_list, owned = _axes(axes, n_ax, (3.0 * n_ax, 3.0))
    if x is not None:
        img, cmap = _image(x)
        ax_list[0].imshow(img, cmap=cmap)
        ax_list[0].set_title("input" + (f" ({label})" if label else ""), fontsize=9)
    a_mean, a_std, a_cv = ax_list[-3:]
    im = _signed(a_mean, mean)
    fig.colorbar(im, ax=a_mean, fraction=0.046, label="mean attribution")
    a_mean.set_title("mean", fontsize=9)
    im = a_std.imshow(std, cmap="viridis", vmin=0)
    fig.colorbar(im, ax=a_std, fraction=0.046, label="std")
    a_std.set_title("std", fontsize=9)
    shown = np.where(undefined, np.nan, cv)
    valid = shown[np.isfinite(shown)]
    hi = float(np.quantile(valid, cv_quantile)) if valid.size else 1.0
    import matplotlib

    cmap_cv = matplotlib.colormaps["magma"].with_extremes(bad="0.75")
    im = a_cv.imshow(shown, cmap=cmap_cv, vmin=0, vmax=hi or 1.0)
    fig.colorbar(im, ax=a_cv, fraction=0.046, label="CV", extend="max")
    a_cv.set_title("CV (grey: undefined)", fontsize=9)
    for a in ax_list:
        _clean(a)
    return _finish(fig, owned, title, path)


def _distribution_bars(exp: Any, mean: np.ndarray, std: np.ndarray, cv: np.ndarray,
                       undefined: np.ndarray, max_features: int, axes: Any, title: Any,
                       path: Any) -> Any:
    names = exp.names(len(mean))
    order = np.argsort(-np.abs(mean), kind="stable")[:max_features][::-1]
    y = np.arange(len(order))
    fig, (a_mean, a_std, a_cv), owned = _axes(axes, 3, (10.0, 0.28 * len(order) + 1.4))
    a_mean.barh(y, mean[order], xerr=std[order], capsize=2,
                color=["tab:red" if mean[i] > 0 else "tab:blue" for i in order])
    a_mean.axvline(0, color="k", lw=0.8)
    a_mean.set_xlabel("mean attribution (±1 std)")
    a_mean.set_yticks(y, [names[i] for i in order])
    a_mean.tick_params(axis="y", labelsize=7)
    a_std.barh(y, std[order], color="#3b528b")
    a_std.set_xlabel("std")
    cvs = np.where(undefined[order], 0.0, cv[order])
    a_cv.barh(y, cvs, color="#b73779")
    a_cv.set_xlabel("CV")
    for a in (a_std, a_cv):
        a.set_yticks(y, [""] * len(y))
        a.set_xlim(left=0)
    for j in np.flatnonzero(undefined[order]):
        a_cv.text(0, y[j], " undefined", va="center", fontsize=6, color="0.4")
    return _finish(fig, owned, title, path)


def _table(explanation: Any, feature_names: Any) -> tuple[np.ndarray, list[str], Any]:
    exp = _explanation(explanation)
    if exp is not None:
        table = exp.feature_table()
        return table, list(feature_names or exp.names(table.shape[1])), exp
    table = np.asarray(explanation, dtype=np.float64)
    if table.ndim != 2:
        raise ValueError(f"expected attributions of shape (n, d), got {table.shape}")
    names = list(feature_names or [f"x{j}" for j in range(table.shape[1])])
    if len(names) != table.shape[1]:
        raise ValueError(f"feature_names has {len(names)} names for {table.shape[1]} features")
    return table, names, None


def summary_bar(
    explanation: Any,
    *,
    max_features: int = 10,
    feature_names: list[str] | None = None,
    ax: Any = None,
    title: str | None = None,
    path: str | Path | None = None,
) -> Any:
    """Mean |attribution| per feature over many inputs, the ``max_features`` largest, sorted.

    Parameters
    ----------
    explanation : Explanation (its feature table) or array of shape (n, d).
    """
    table, names, _ = _table(explanation, feature_names)
    imp = np.abs(table).mean(0)
    order = np.argsort(-imp, kind="stable")[:max_features][::-1]
    fig, (ax,), owned = _axes(ax, 1, (5.5, 0.28 * len(order) + 1.2))
    ax.barh(np.arange(len(order)), imp[order], color="tab:purple")
    ax.set_yticks(np.arange(len(order)), [names[i] for i in order])
    ax.tick_params(axis="y", labelsize=7)
    ax.set_xlabel(f"mean |attribution| over {len(table)} inputs")
    ax.set_title(title if title is not None else
                 f"top {len(order)} of {table.shape[1]} features", fontsize=9)
    return _finish(fig, owned, None, path)


def beeswarm(
    explanation: Any,
    *,
    data: Any = None,
    max_features: int = 10,
    feature_names: list[str] | None = None,
    cmap: str = "coolwarm",
    ax: Any = None,
    title: str | None = None,
    path: str | Path | None = None,
) -> Any:
    """Every input's attribution (x) per feature (rows, largest mean |φ| on top).

    Points of one feature are stacked where they crowd; they are coloured by the feature's
    value (low to high, 5th-95th percentile of the inputs) when ``data`` is given (default:
    the Explanation's ``data`` when it has one value per feature), grey otherwise.

    Parameters
    ----------
    explanation : Explanation (its feature table) or array of shape (n, d).
    data : array of shape (n, d) -- the explained inputs' feature values.
    """
    table, names, exp = _table(explanation, feature_names)
    if data is None and exp is not None and exp.data is not None \
            and np.shape(exp.data) == table.shape:
        data = exp.data
    if data is not None:
        data = np.asarray(data, dtype=np.float64)
        if data.shape != table.shape:
            raise ValueError(f"data must have the attributions' shape {table.shape}, "
                             f"got {data.shape}")
    n = len(table)
    order = np.argsort(-np.abs(table).mean(0), kind="stable")[:max_features][::-1]
    fig, (ax,), owned = _axes(ax, 1, (6.0, 0.4 * len(order) + 1.3))
    for row, j in enumerate(order):
        phi = table[:, j]
        span = float(np.ptp(phi)) or 1.0
        bins = np.floor((phi - phi.min()) / span * 59).astype(int)
        idx = np.argsort(bins, kind="stable")
        sb = bins[idx]
        rank = np.arange(n) - np.searchsorted(sb, sb, side="left")
        off = (rank + 1) // 2 * np.where(rank % 2 == 0, 1.0, -1.0)
        y = np.empty(n)
        y[idx] = row + off * (0.4 / max(1.0, float(np.abs(off).max())))
        if data is None:
            ax.scatter(phi, y, s=10, color="0.35", linewidths=0)
        else:
            lo, hi = np.nanpercentile(data[:, j], [5, 95])
            c = np.clip((data[:, j] - lo) / (hi - lo), 0, 1) if hi > lo \
                else np.full(n, 0.5)
            ax.scatter(phi, y, s=10, c=c, cmap=cmap, vmin=0, vmax=1, linewidths=0)
    ax.axvline(0, color="0.5", lw=0.8)
    ax.set_yticks(np.arange(len(order)), [names[j] for j in order])
    ax.tick_params(axis="y", labelsize=7)
    ax.set_ylim(-0.6, len(order) - 0.4)
    ax.set_xlabel("attribution (φ)")
    if data is not None:
        from matplotlib.cm import ScalarMappable
        from matplotlib.colors import Normalize

        bar = fig.colorbar(ScalarMappable(Normalize(0, 1), cmap=cmap), ax=ax, fraction=0.04,
                           ticks=[0, 1])
        bar.ax.set_yticklabels(["low", "high"])
        bar.set_label("feature value")
    ax.set_title(title if title is not None else f"{n} inputs", fontsize=9)
    return _finish(fig, owned, None, path)
