"""``calix demo``: train the zoo, then calibrate it for the perturbations explainers use.

For each zoo model and fill, the demo fits temperature scaling (clean validation data) and
ReCalX (perturbed validation data), then measures the KL calibration error per perturbation
level on test inputs: the uncalibrated error grows with the level, one temperature helps only
part of the way, and one temperature per level bin flattens the curve.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from calix import zoo
from calix.plot import calibration_by_level_plot, reliability_diagram
from calix.recipes import FILLS, compare_calibration, default_perturbation

__all__ = ["run_demo", "DEMO_MODELS"]

DEMO_MODELS = [("cnn", "digits-noisy"), ("cnn", "digits"), ("mlp", "breast_cancer"),
               ("mlp", "wine")]


def run_demo(
    out: str | Path,
    *,
    seed: int = 0,
    n_eval: int = 200,
    console: Any = None,
    models: list[tuple[str, str]] | None = None,
) -> dict[str, Any]:
    """Train, calibrate and evaluate the zoo models; write results and figures to ``out``.

    Writes ``results.json``, one ``ce_by_level_<model>_<data>_<fill>.png`` per case and one
    ``reliability_<model>_<data>.png`` per model; returns the results.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"seed": seed, "cases": []}
    progress = console is not None and sys.stderr.isatty()
    for name, data_name in models or DEMO_MODELS:
        trained = zoo.train(name, data_name, seed=seed, progress=progress)
        ds = trained.dataset
        model = trained.wrap()
        fills = FILLS["image"][:2] if ds.is_image else FILLS["tabular"][:1]
        for fill in fills:
            engine = default_perturbation(ds, fill)
            comp = compare_calibration(model, ds, engine, n_eval=n_eval, seed=seed,
                                       progress=progress)
            stem = f"{name}_{data_name}_{fill}"
            calibration_by_level_plot(
                comp.by_level, path=out / f"ce_by_level_{stem}.png",
                title=f"{name} on {data_name}, {fill} fill")
            results["cases"].append({
                "model": name, "data": data_name, "fill": fill,
                "test_accuracy": trained.metrics["accuracy"],
                "rows": comp.rows(),
                "by_level": {m: lc.as_dict() for m, lc in comp.by_level.items()},
                "recalx_temperatures": comp.calibrators["recalx"].temperatures_.tolist(),
                "temperature": comp.calibrators["temperature"].temperature_,
            })
            if console is not None:
                _print_case(results["cases"][-1], console)
        ts = comp.calibrators["temperature"]
        logits = model.forward(ds.X_test).cpu()
        reliability_diagram(
            {"uncalibrated": (logits.softmax(-1).numpy(), ds.y_test),
             "temperature": (ts.predict_proba(logits), ds.y_test)},
            path=out / f"reliability_{name}_{data_name}.png",
            title=f"{name} on {data_name} (clean test inputs)")
    (out / "results.json").write_text(json.dumps(results, indent=2))
    _close_figures()
    return results


def _print_case(case: dict[str, Any], console: Any) -> None:
    from rich.table import Table

    table = Table(title=f"{case['model']} on {case['data']}, {case['fill']} fill "
                        f"(test accuracy {case['test_accuracy']:.3f})")
    for col in ("calibrator", "clean ECE", "CE_KL avg over levels", "CE_KL max over levels"):
        table.add_column(col)
    for r in case["rows"]:
        table.add_row(r["method"], f"{r['clean_ece']:.3f}", f"{r['ce_avg']:.3f}",
                      f"{r['ce_max']:.3f}")
    console.print(table)


def _close_figures() -> None:
    import matplotlib.pyplot as plt

    plt.close("all")
