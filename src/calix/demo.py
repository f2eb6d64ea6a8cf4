"""``calix demo``: train the zoo and measure how confidence drifts under perturbation.

For each zoo model the demo perturbs test inputs at every perturbation level (the coalitions
explainers query), and compares the mean confidence with the accuracy per level bin. The gap
between the two is the miscalibration that calibrating by perturbation level removes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from calix import zoo
from calix.perturb import (
    Blur,
    Columns,
    Constant,
    Mean,
    PatchGrid,
    Perturbation,
    StratifiedLevels,
    level_bins,
)

__all__ = ["run_demo", "confidence_by_level"]

DEMO_MODELS = [("cnn", "digits"), ("cnn", "digits-noisy"), ("mlp", "breast_cancer"),
               ("mlp", "wine")]


def confidence_by_level(
    trained: zoo.ZooModel,
    engine: Perturbation,
    *,
    n_inputs: int = 200,
    masks_per_input: int = 50,
    n_bins: int = 10,
    seed: int = 0,
) -> dict[str, list[float]]:
    """Mean confidence, accuracy and their gap per perturbation-level bin on test inputs.

    Returns
    -------
    dict with lists of length ``n_bins``: ``level`` (bin centre), ``confidence``, ``accuracy``,
    ``gap`` (confidence − accuracy), ``count``.
    """
    ds = trained.dataset
    model = trained.wrap()
    x = torch.as_tensor(ds.X_test[:n_inputs])
    y = torch.as_tensor(ds.y_test[:n_inputs])
    d = engine.n_features(x)
    masks = StratifiedLevels(n_bins).sample(masks_per_input, d, seed=seed)
    res = engine.query(model, x, masks, seed=seed)
    probs = torch.softmax(res.outputs, dim=-1)  # (n, m, k)
    conf, pred = probs.max(dim=-1)
    correct = (pred == y[:, None]).float()
    bins = level_bins(res.levels, n_bins).flatten()
    count = torch.bincount(bins, minlength=n_bins).float()
    safe = count.clamp_min(1)
    mean_conf = torch.bincount(bins, conf.flatten(), minlength=n_bins) / safe
    acc = torch.bincount(bins, correct.flatten(), minlength=n_bins) / safe
    empty = count == 0
    mean_conf[empty] = float("nan")
    acc[empty] = float("nan")
    return {
        "level": ((torch.arange(n_bins) + 0.5) / n_bins).tolist(),
        "confidence": mean_conf.tolist(),
        "accuracy": acc.tolist(),
        "gap": (mean_conf - acc).tolist(),
        "count": count.tolist(),
    }


def _engine_for(trained: zoo.ZooModel, fill: str) -> Perturbation:
    ds = trained.dataset
    if ds.is_image:
        patch = max(1, ds.input_shape[-1] // 4)
        fills = {"zero": Constant(0.0), "blur": Blur(kernel_size=5 if ds.input_shape[-1] <= 8
                                                     else 11, sigma=2.0)}
        return Perturbation(PatchGrid(patch), fills[fill])
    return Perturbation(Columns(), Mean().fit(ds.X_train))


def run_demo(out: str | Path, *, seed: int = 0, console: Any = None) -> dict[str, Any]:
    """Train the zoo models, measure confidence vs accuracy by level, write results and a plot.

    Writes ``out/results.json`` and ``out/confidence_by_level.png``; returns the results.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"seed": seed, "models": []}
    for name, data_name in DEMO_MODELS:
        trained = zoo.train(name, data_name, seed=seed, progress=console is not None)
        fills = ["zero", "blur"] if trained.dataset.is_image else ["mean"]
        for fill in fills:
            curve = confidence_by_level(trained, _engine_for(trained, fill), seed=seed)
            gaps = np.array(curve["gap"], dtype=float)
            row = {
                "model": name, "data": data_name, "fill": fill,
                "test_accuracy": trained.metrics["accuracy"],
                "max_gap": float(np.nanmax(np.abs(gaps))),
                "mean_gap": float(np.nanmean(np.abs(gaps))),
                "curve": curve,
            }
            results["models"].append(row)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    _plot(results, out / "confidence_by_level.png")
    if console is not None:
        _print_table(results, console)
    return results


def _print_table(results: dict[str, Any], console: Any) -> None:
    from rich.table import Table

    table = Table(title="Confidence vs accuracy under perturbation (test inputs, 10 level bins)")
    for col in ("model", "data", "fill", "test acc", "mean |conf-acc|", "max |conf-acc|"):
        table.add_column(col)
    for r in results["models"]:
        table.add_row(r["model"], r["data"], r["fill"], f"{r['test_accuracy']:.3f}",
                      f"{r['mean_gap']:.3f}", f"{r['max_gap']:.3f}")
    console.print(table)


def _plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["models"]
    fig, axes = plt.subplots(1, len(rows), figsize=(3.2 * len(rows), 3.2), sharey=True)
    for ax, r in zip(np.atleast_1d(axes), rows, strict=True):
        c = r["curve"]
        ax.plot(c["level"], c["confidence"], "o-", label="mean confidence")
        ax.plot(c["level"], c["accuracy"], "s--", label="accuracy")
        ax.set_title(f"{r['model']} / {r['data']}\n{r['fill']} fill", fontsize=9)
        ax.set_xlabel("perturbation level λ")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].set_ylabel("probability")
    np.atleast_1d(axes)[0].legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
