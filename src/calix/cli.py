"""The ``calix`` command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from calix import __version__


def _console():
    from rich.console import Console

    return Console()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="calix")
def main() -> None:
    """calix: calibrated, uncertainty-aware explanations for classifiers."""


# ---------------------------------------------------------------------- data
@main.group()
def data() -> None:
    """Shipped datasets and a user's own files."""


@data.command("list")
def data_list() -> None:
    """List the shipped datasets."""
    from rich.table import Table

    from calix.data import list_datasets

    table = Table(title="calix datasets (shipped with scikit-learn; nothing is downloaded)")
    table.add_column("name", style="bold")
    table.add_column("description")
    for name, desc in list_datasets():
        table.add_row(name, desc)
    _console().print(table)
    _console().print("Your own data: a .csv file, a .npz file (X, y) or an image folder "
                     "(one sub-folder per class) wherever --data is asked for.")


@data.command("show")
@click.argument("name")
@click.option("--seed", default=0, show_default=True, help="Split seed.")
def data_show(name: str, seed: int) -> None:
    """Describe dataset NAME and its splits."""
    ds = _load_or_exit(name, seed)
    click.echo(repr(ds))
    click.echo(ds.description)


def _load_or_exit(name: str, seed: int):
    from calix.data import load

    try:
        return load(name, seed=seed)
    except (ValueError, FileNotFoundError, TypeError) as exc:
        raise click.BadParameter(str(exc), param_hint="--data") from exc


# ---------------------------------------------------------------------- train
@main.command()
@click.argument("model", type=click.Choice(["cnn", "mlp"]))
@click.option("--data", "data_name", default="digits", show_default=True,
              help="Dataset name or path (see `calix data list`).")
@click.option("--dropout", type=float, default=None, help="Dropout probability.")
@click.option("--seed", type=int, default=0, show_default=True, help="Training seed.")
@click.option("--epochs", type=int, default=None, help="Training epochs.")
@click.option("--no-cache", is_flag=True, help="Retrain even if a cached model exists.")
@click.option("--fpa", is_flag=True,
              help="Train with Feature Perturbation Augmentation (images; p=0.5, p1_max=0.25, "
                   "p2=0.1, s_max=3).")
def train(model: str, data_name: str, dropout: float | None, seed: int, epochs: int | None,
          no_cache: bool, fpa: bool) -> None:
    """Train zoo MODEL (cnn or mlp) on a dataset, cached by configuration."""
    from calix import zoo
    from calix.train import FPA

    ds = _load_or_exit(data_name, 0)
    if fpa and not ds.is_image:
        raise click.UsageError("--fpa augments images; the dataset is tabular")
    aug = FPA(seed=seed) if fpa else None
    try:
        trained = zoo.train(model, ds, seed=seed, dropout=dropout, epochs=epochs,
                            augment=aug, augment_config=aug.config() if aug else None,
                            cache=not no_cache, progress=sys.stderr.isatty())
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    metrics = ", ".join(f"{k} {v:.4f}" for k, v in trained.metrics.items())
    click.echo(f"{model} on {ds.name} (seed {seed}): test {metrics}")
    if trained.path is not None:
        click.echo(f"cached at {trained.path}")


# ---------------------------------------------------------------------- calibrate
@main.command()
@click.option("--data", "data_name", default="digits-noisy", show_default=True,
              help="Dataset name or path.")
@click.option("--model", "model_name", type=click.Choice(["cnn", "mlp"]), default=None,
              help="Zoo model (default: cnn for images, mlp for tabular data).")
@click.option("--method", type=click.Choice(["temperature", "dirichlet", "recalx"]),
              default="recalx", show_default=True)
@click.option("--perturbation", "fill", default=None,
              help="Fill for removed features: zero, blur or mean (images); mean or zero "
                   "(tabular). Default: zero for images, mean for tabular.")
@click.option("--metric", type=click.Choice(["ce_kl", "ce_kl_binned", "ece"]), default="ce_kl",
              show_default=True, help="Calibration error computed per level bin.")
@click.option("--n-eval", type=int, default=500, show_default=True,
              help="Test inputs perturbed for the evaluation.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Also write results.json and figures here.")
def calibrate(data_name: str, model_name: str | None, method: str, fill: str | None,
              metric: str, n_eval: int, seed: int, out: Path | None) -> None:
    """Calibrate a zoo model and compare calibration by perturbation level before/after."""
    from rich.table import Table

    from calix import zoo
    from calix.plot import calibration_by_level_plot
    from calix.recipes import compare_calibration, default_perturbation

    ds = _load_or_exit(data_name, 0)
    if ds.task != "classification":
        raise click.UsageError(f"{ds.name} is a regression dataset; calibration needs classes")
    model_name = model_name or ("cnn" if ds.is_image else "mlp")
    fill = fill or ("zero" if ds.is_image else "mean")
    progress = sys.stderr.isatty()
    try:
        trained = zoo.train(model_name, ds, seed=seed, progress=progress)
        engine = default_perturbation(ds, fill)
        comp = compare_calibration(trained.wrap(), ds, engine, methods=("none", method),
                                   metric=metric, n_eval=n_eval, seed=seed, progress=progress)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    table = Table(title=f"{model_name} on {ds.name}, {fill} fill: calibration before / after "
                        f"{method}")
    for col in ("model", "accuracy", "ECE (clean)", f"{metric} avg over levels",
                f"{metric} max over levels"):
        table.add_column(col)
    for row in comp.rows():
        name = "uncalibrated" if row["method"] == "none" else row["method"]
        table.add_row(name, f"{row['clean_accuracy']:.3f}", f"{row['clean_ece']:.4f}",
                      f"{row['ce_avg']:.4f}", f"{row['ce_max']:.4f}")
    _console().print(table)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        payload = {"data": ds.name, "model": model_name, "method": method, "fill": fill,
                   "seed": seed, "rows": comp.rows(),
                   "by_level": {m: lc.as_dict() for m, lc in comp.by_level.items()}}
        (out / "results.json").write_text(json.dumps(payload, indent=2))
        calibration_by_level_plot(comp.by_level, path=out / "ce_by_level.png")
        click.echo(f"wrote {out / 'results.json'} and {out / 'ce_by_level.png'}")


# ---------------------------------------------------------------------- explain
_EXPLAIN_METHODS = ["saliency", "integrated_gradients", "smoothgrad", "smoothgrad_squared",
                    "guided_backprop", "occlusion", "rise", "lime", "kernel_shap",
                    "poly_shap", "meaningful_perturbation"]


@main.command()
@click.option("--data", "data_name", default="digits", show_default=True,
              help="Dataset name or path.")
@click.option("--model", "model_name", type=click.Choice(["cnn", "mlp"]), default=None,
              help="Zoo model (default: cnn for images, mlp for tabular data).")
@click.option("--method", type=click.Choice(_EXPLAIN_METHODS), default="integrated_gradients",
              show_default=True)
@click.option("--index", "indices", type=int, multiple=True, default=(0,), show_default=True,
              help="Test-split index to explain (repeat for several).")
@click.option("--target", type=int, default=None, help="Class to explain (default: predicted).")
@click.option("--calibrate", "cal_method", default="none", show_default=True,
              type=click.Choice(["none", "temperature", "dirichlet", "recalx"]),
              help="Explain the model through this calibrator.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              default=Path("results/explain"), show_default=True)
def explain(data_name: str, model_name: str | None, method: str, indices: tuple[int, ...],
            target: int | None, cal_method: str, seed: int, out: Path) -> None:
    """Explain test inputs; write attributions (NPZ) and input-beside-map PNGs."""
    import numpy as np

    from calix import zoo
    from calix.calibrate import calibrated, fit_calibrator
    from calix.explain import METHODS, SmoothGrad
    from calix.plot import explanation_figure
    from calix.recipes import default_perturbation

    ds = _load_or_exit(data_name, 0)
    model_name = model_name or ("cnn" if ds.is_image else "mlp")
    bad = [i for i in indices if not 0 <= i < len(ds.X_test)]
    if bad:
        raise click.BadParameter(f"indices {bad} outside the test split [0, {len(ds.X_test)})",
                                 param_hint="--index")
    try:
        trained = zoo.train(model_name, ds, seed=seed, progress=sys.stderr.isatty())
        model = trained.wrap()
        if cal_method != "none":
            fill = "zero" if ds.is_image else "mean"
            cal = fit_calibrator(cal_method, model, ds.X_val, ds.y_val,
                                 perturbation=default_perturbation(ds, fill), seed=seed)
            model = calibrated(model, cal)
        if method == "smoothgrad_squared":
            explainer = SmoothGrad(model, squared=True, seed=seed)
        else:
            explainer = METHODS[method](model)
        x = ds.X_test[list(indices)]
        exp = explainer.explain(x, target=target)
    except (ValueError, TypeError) as exc:
        raise click.UsageError(str(exc)) from exc
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{method}_{model_name}_{ds.name}"
    arrays = {"values": exp.values, "target": exp.target, "indices": np.array(indices),
              "inputs": x}
    if exp.feature_values is not None:
        arrays["feature_values"] = exp.feature_values
    np.savez(out / f"{stem}.npz", **arrays)
    for j, i in enumerate(indices):
        label = ds.class_names[exp.target[j]] if ds.class_names else "output"
        explanation_figure(x[j], exp.values[j], feature_names=ds.feature_names,
                           title=f"{method} on {ds.name}[{i}], class {label}",
                           path=out / f"{stem}_{i}.png")
    click.echo(f"{method}: {len(indices)} input(s), {exp.n_queries} model queries; "
               f"wrote {out / (stem + '.npz')} and {len(indices)} PNG(s)")


# ---------------------------------------------------------------------- studies
_STUDY_NAMES = ["recalx", "explanation-uncertainty", "eagle", "calibrate-to-interpret", "fpa"]


@main.command()
@click.argument("study", type=click.Choice(_STUDY_NAMES))
@click.option("--quick", is_flag=True, help="The small configuration (minutes on 2 cores).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output folder (default: results/<study>).")
@click.option("--force", is_flag=True, help="Recompute even if OUT holds a finished run.")
@click.option("--no-report", is_flag=True, help="Do not write report.html.")
def reproduce(study: str, quick: bool, seed: int, out: Path | None, force: bool,
              no_report: bool) -> None:
    """Reproduce one paper's study: results.json (tables, claims), figures, report.html."""
    from calix.report import write_report
    from calix.studies import run_study

    out = out or Path("results") / study
    console = _console()
    doc = run_study(study, out, quick=quick, seed=seed, progress=sys.stderr.isatty(),
                    console=console, resume=not force)
    n_hold = sum(c["holds"] for c in doc["claims"])
    click.echo(f"{study}: {n_hold}/{len(doc['claims'])} claims hold; "
               f"wrote {out / 'results.json'}")
    if not no_report:
        click.echo(f"report: {write_report(out, title=f'calix: {study}')}")


@main.command()
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Report file (default: FOLDER/report.html).")
def report(folder: Path, out: Path | None) -> None:
    """Write a self-contained report.html for the study results in FOLDER."""
    from calix.report import write_report

    try:
        path = write_report(folder, out)
    except (FileNotFoundError, ValueError) as exc:
        raise click.UsageError(str(exc)) from exc
    click.echo(f"report: {path}")


# ---------------------------------------------------------------------- dataset scale
_DATASET_METHODS = ["saliency", "integrated_gradients", "smoothgrad", "guided_backprop",
                    "occlusion", "rise", "lime", "kernel_shap", "poly_shap",
                    "meaningful_perturbation",
                    "bayes_lime", "bayes_shap", "eagle", "glime", "us_lime"]

@main.command("explain-dataset")
@click.option("--data", "data_name", required=True, help="Shipped dataset name.")
@click.option("--model", "model_name", type=click.Choice(["cnn", "mlp"]), default=None,
              help="Zoo model (default: cnn for images, mlp for tabular data).")
@click.option("--method", required=True, type=click.Choice(_DATASET_METHODS))
@click.option("--uncertainty", type=click.Choice(["mc_dropout", "mc_dropconnect"]),
              default=None, help="Explain under stochastic passes (mean and std maps).")
@click.option("--n-samples", type=int, default=30, show_default=True,
              help="Stochastic passes with --uncertainty.")
@click.option("--executor", type=click.Choice(["local", "dask"]), default="local",
              show_default=True)
@click.option("--scheduler", default=None,
              help="Dask scheduler address (default: a new LocalCluster).")
@click.option("--workers", type=int, default=2, show_default=True,
              help="LocalCluster workers when no scheduler is given.")
@click.option("--chunk-size", type=int, default=64, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
def explain_dataset_cmd(data_name: str, model_name: str | None, method: str,
                        uncertainty: str | None, n_samples: int, executor: str,
                        scheduler: str | None, workers: int, chunk_size: int, seed: int,
                        out: Path) -> None:
    """Explain every test input in chunks; finished chunks survive interruption."""
    from calix.parallel import explain_dataset

    ds = _load_or_exit(data_name, seed)
    model_name = model_name or ("cnn" if ds.is_image else "mlp")
    try:
        res = explain_dataset(data_name, model_name, method, out=out, uncertainty=uncertainty,
                              n_samples=n_samples, executor=executor, scheduler=scheduler,
                              n_workers=workers, chunk_size=chunk_size, seed=seed,
                              progress=sys.stderr.isatty())
    except (ValueError, TypeError) as exc:
        raise click.UsageError(str(exc)) from exc
    click.echo(f"{len(res.indices)} inputs explained ({len(res.computed)} chunks computed now, "
               f"the rest read back); chunks in {out / 'chunks'}")


# ---------------------------------------------------------------------- demo
@main.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              default=Path("results/demo"), show_default=True, help="Output folder.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--full", is_flag=True, help="Full-size studies instead of quick mode (hours).")
@click.option("--study", "studies", type=click.Choice(_STUDY_NAMES), multiple=True,
              help="Run only these studies (repeat; default: all five).")
def demo(out: Path, seed: int, full: bool, studies: tuple[str, ...]) -> None:
    """Train the zoo, run the five studies (quick mode) and write report.html.

    Interrupted and rerun, it reads back finished studies and cached models.
    """
    from calix.demo import run_demo

    res = run_demo(out, seed=seed, quick=not full, studies=studies or None,
                   console=_console(), progress=sys.stderr.isatty())
    click.echo(f"report: {res['report']}")


if __name__ == "__main__":  # pragma: no cover
    main()
