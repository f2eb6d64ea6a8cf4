"""The ``calix`` command line.

Every command runs inside one error boundary (:class:`_CalixGroup`): a user error (a bad
value, a missing or unreadable file, an unwritable output folder, ...) is printed as one
``Error: ...`` line with exit code 1 (2 for a bad option), an unexpected error as one line
naming the file that holds its traceback, and Ctrl-C as ``Interrupted`` with exit code 130.
``CALIX_DEBUG=1`` re-raises instead, with the full Python traceback.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from calix import __version__

DEBUG_ENV = "CALIX_DEBUG"

# Failures of user input or of the environment: one line, no traceback. (The calibrators'
# NotFittedError and the loaders' DataFileError are ValueErrors; file and network failures,
# Dask's connect timeout included, are OSErrors.)
_USER_ERRORS = (ValueError, TypeError, OSError)


def _debug() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def _message(exc: BaseException) -> str:
    """One line for ``exc``: its message, or for an OSError its path and reason."""
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        where = f"{exc.filename}" + (f" -> {exc.filename2}" if exc.filename2 else "")
        return f"{where}: {exc.strerror}"
    text = str(exc).strip()
    return text or type(exc).__name__


def _traceback_file(exc: BaseException) -> str | None:
    """Write the traceback of ``exc`` to a new file in the temp folder; its path, or None."""
    import tempfile
    import traceback

    try:
        with tempfile.NamedTemporaryFile("w", prefix="calix-traceback-", suffix=".txt",
                                         delete=False, encoding="utf-8") as fh:
            fh.write(f"calix {__version__}, argv {sys.argv}\n")
            fh.write("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
            return fh.name
    except OSError:
        return None


def _unexpected(exc: Exception) -> click.ClickException:
    path = _traceback_file(exc)
    where = (f"the full traceback is in {path}" if path is not None
             else "the traceback could not be written to the temp folder")
    first = _message(exc).splitlines()[0]
    first = first if len(first) <= 300 else first[:300] + "..."
    return click.ClickException(
        f"unexpected {type(exc).__name__}: {first}\n"
        f"This is a bug in calix: {where} (set {DEBUG_ENV}=1 to print it here); "
        "please report it with that file.")


def _format_warning(message, category, filename, lineno, line=None) -> str:
    """Warnings as one ``Warning (Category): message`` line, without calix's source lines."""
    return f"Warning ({category.__name__}): {message}\n"


class _CalixGroup(click.Group):
    """A click group whose ``invoke`` is the CLI's one error boundary."""

    def invoke(self, ctx: click.Context):
        import warnings

        formatwarning = warnings.formatwarning
        try:
            if not _debug():  # the display only: recorded warnings (catch_warnings) stay so
                warnings.formatwarning = _format_warning
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit,
                click.exceptions.Abort):
            raise
        except KeyboardInterrupt:
            if _debug():
                raise
            click.echo("Interrupted", err=True)
            raise click.exceptions.Exit(130) from None
        except _USER_ERRORS as exc:
            if _debug():
                raise
            raise click.ClickException(_message(exc)) from exc
        except Exception as exc:
            if _debug():
                raise
            raise _unexpected(exc) from exc
        finally:
            warnings.formatwarning = formatwarning


def _console():
    from rich.console import Console

    return Console()


_EPILOG = (f"Errors are reported in one line, without a Python traceback; set {DEBUG_ENV}=1 "
           "to see the full traceback (unexpected errors also write it to a file in the temp "
           "folder). Exit codes: 0 success, 1 error, 2 bad option, 130 interrupted.")


@click.group(cls=_CalixGroup, context_settings={"help_option_names": ["-h", "--help"]},
             epilog=_EPILOG)
@click.version_option(__version__, prog_name="calix")
def main() -> None:
    """calix: calibrated, uncertainty-aware explanations for classifiers."""


# ---------------------------------------------------------------------- shared options
def _seed_option(help: str | None = None):
    return click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0,
                        show_default=True, help=help)


def _delimiter(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    value = {"tab": "\t", "\\t": "\t"}.get(value.lower(), value)
    if len(value) != 1 or value in "\"\r\n":
        raise click.BadParameter(f"must be one character such as , ; | or 'tab', got {value!r}")
    return value


_delimiter_option = click.option(
    "--delimiter", default=None, callback=_delimiter,
    help="Field delimiter of a .csv --data file: one character, or 'tab' (default: sniffed "
         "among , ; tab |).")


class _OutPath(click.Path):
    """``click.Path`` that refuses an empty value (click would read it as the current folder)."""

    def convert(self, value, param, ctx):
        if isinstance(value, str) and not value.strip():
            self.fail("is empty; give a path (use . for the current folder)", param, ctx)
        return super().convert(value, param, ctx)


def _out_dir(path: Path, option: str = "--out") -> Path:
    """Create output folder ``path`` and check it is writable, before any work is done."""
    from calix._io import OutputPathError, ensure_writable_dir

    try:
        return ensure_writable_dir(path)
    except OutputPathError as exc:
        raise click.BadParameter(str(exc), param_hint=option) from exc


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
@_seed_option("Split seed.")
@_delimiter_option
def data_show(name: str, seed: int, delimiter: str | None) -> None:
    """Describe dataset NAME and its splits."""
    ds = _load_or_exit(name, seed, delimiter, param_hint="NAME")
    click.echo(repr(ds))
    click.echo(ds.description)


def _load_or_exit(name: str, seed: int, delimiter: str | None = None, *,
                  param_hint: str = "--data"):
    from calix.data import load

    try:
        return load(name, seed=seed, delimiter=delimiter)
    except _USER_ERRORS as exc:
        raise click.BadParameter(_message(exc), param_hint=param_hint) from exc


# ---------------------------------------------------------------------- train
@main.command()
@click.argument("model", type=click.Choice(["cnn", "mlp"]))
@click.option("--data", "data_name", default="digits", show_default=True,
              help="Dataset name or path (see `calix data list`).")
@_delimiter_option
@click.option("--dropout", type=click.FloatRange(0, 1, max_open=True), default=None,
              help="Dropout probability.")
@_seed_option("Training seed.")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Training epochs.")
@click.option("--no-cache", is_flag=True, help="Retrain even if a cached model exists.")
@click.option("--fpa", is_flag=True,
              help="Train with Feature Perturbation Augmentation (images; p=0.5, p1_max=0.25, "
                   "p2=0.1, s_max=3).")
def train(model: str, data_name: str, delimiter: str | None, dropout: float | None, seed: int,
          epochs: int | None, no_cache: bool, fpa: bool) -> None:
    """Train zoo MODEL (cnn or mlp) on a dataset, cached by configuration."""
    from calix import zoo
    from calix.train import FPA

    ds = _load_or_exit(data_name, 0, delimiter)
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
@click.option("--n-eval", type=click.IntRange(min=1), default=500, show_default=True,
              help="Test inputs perturbed for the evaluation.")
@_seed_option()
@_delimiter_option
@click.option("--out", type=_OutPath(file_okay=False, path_type=Path), default=None,
              help="Also write results.json and figures here.")
def calibrate(data_name: str, model_name: str | None, method: str, fill: str | None,
              metric: str, n_eval: int, seed: int, delimiter: str | None,
              out: Path | None) -> None:
    """Calibrate a zoo model and compare calibration by perturbation level before/after."""
    from rich.table import Table

    from calix import zoo
    from calix.plot import calibration_by_level_plot
    from calix.recipes import compare_calibration, default_perturbation

    ds = _load_or_exit(data_name, 0, delimiter)
    if ds.task != "classification":
        raise click.UsageError(f"{ds.name} is a regression dataset; calibration needs classes")
    if out is not None:
        _out_dir(out)
    model_name = model_name or ("cnn" if ds.is_image else "mlp")
    fill = fill or ("zero" if ds.is_image else "mean")
    progress = sys.stderr.isatty()
    try:
        engine = default_perturbation(ds, fill)  # a bad --perturbation fails before training
        trained = zoo.train(model_name, ds, seed=seed, progress=progress)
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
@click.option("--target", type=click.IntRange(min=0), default=None,
              help="Class to explain (default: predicted).")
@click.option("--calibrate", "cal_method", default="none", show_default=True,
              type=click.Choice(["none", "temperature", "dirichlet", "recalx"]),
              help="Explain the model through this calibrator (classification only).")
@_seed_option()
@_delimiter_option
@click.option("--out", type=_OutPath(file_okay=False, path_type=Path),
              default=Path("results/explain"), show_default=True)
def explain(data_name: str, model_name: str | None, method: str, indices: tuple[int, ...],
            target: int | None, cal_method: str, seed: int, delimiter: str | None,
            out: Path) -> None:
    """Explain test inputs; write attributions (NPZ) and input-beside-map PNGs."""
    import numpy as np

    from calix import zoo
    from calix.calibrate import calibrated, fit_calibrator
    from calix.explain import METHODS, SmoothGrad
    from calix.explain.perturbation import FeatureExplainer
    from calix.plot import explanation_figure
    from calix.recipes import default_perturbation

    ds = _load_or_exit(data_name, 0, delimiter)
    model_name = model_name or ("cnn" if ds.is_image else "mlp")
    bad = [i for i in indices if not 0 <= i < len(ds.X_test)]
    if bad:
        raise click.BadParameter(f"indices {bad} outside the test split [0, {len(ds.X_test)})",
                                 param_hint="--index")
    if cal_method != "none" and ds.task != "classification":
        raise click.BadParameter(
            f"a regression model cannot be calibrated: {ds.name} has a regression target, "
            "and calibration maps class probabilities; leave out --calibrate",
            param_hint="--calibrate")
    if target is not None and ds.task == "classification" and target >= ds.n_classes:
        raise click.BadParameter(
            f"class {target} does not exist: {ds.name} has {ds.n_classes} classes "
            f"(0 to {ds.n_classes - 1})", param_hint="--target")
    _out_dir(out)
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
        elif not ds.is_image and issubclass(METHODS[method], FeatureExplainer):
            # removed columns take the training mean (what the calibration recipes use), said
            # explicitly rather than left to the tabular default
            explainer = METHODS[method](model, background=ds.X_train)
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
@_seed_option()
@click.option("--out", type=_OutPath(file_okay=False, path_type=Path), default=None,
              help="Output folder (default: results/<study>).")
@click.option("--force", is_flag=True, help="Recompute even if OUT holds a finished run.")
@click.option("--no-report", is_flag=True, help="Do not write report.html.")
def reproduce(study: str, quick: bool, seed: int, out: Path | None, force: bool,
              no_report: bool) -> None:
    """Reproduce one paper's study: results.json (tables, claims), figures, report.html."""
    from calix.report import write_report
    from calix.studies import run_study

    out = _out_dir(out or Path("results") / study)
    console = _console()
    doc = run_study(study, out, quick=quick, seed=seed, progress=sys.stderr.isatty(),
                    console=console, resume=not force)
    n_hold = sum(c["holds"] for c in doc["claims"])
    click.echo(f"{study}: {n_hold}/{len(doc['claims'])} claims hold; "
               f"wrote {out / 'results.json'}")
    if not no_report:
        click.echo(f"report: {write_report(out, title=f'calix: {study}')}")


@main.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", type=_OutPath(dir_okay=False, path_type=Path), default=None,
              help="Report file (default: FOLDER/report.html).")
def report(folder: Path, out: Path | None) -> None:
    """Write a self-contained report.html for the study results in FOLDER."""
    from calix._io import OutputPathError, ensure_writable_file
    from calix.report import find_results, write_report

    try:
        ensure_writable_file(out if out is not None else folder / "report.html",
                             what="report file")
    except OutputPathError as exc:
        raise click.BadParameter(str(exc), param_hint="--out") from exc
    files = []
    for where, doc in find_results(folder):  # invalid JSON: a ValueError naming the file
        files.append(str(where / "results.json"))
        _check_results(where / "results.json", doc)
    try:
        path = write_report(folder, out)
    except FileNotFoundError as exc:  # no results in FOLDER
        raise click.UsageError(str(exc)) from exc
    except (AttributeError, KeyError, TypeError, IndexError) as exc:
        which = files[0] if len(files) == 1 else f"one of {', '.join(files)}"
        raise click.ClickException(
            f"{which} is malformed and cannot be rendered ({type(exc).__name__}: {exc}); "
            "rerun `calix reproduce` to rewrite it") from exc
    click.echo(f"report: {path}")


def _check_results(path: Path, doc: dict) -> None:
    """Fail, naming ``path``, when results ``doc`` is not shaped as a study's."""
    def bad(field: str, expected: str, value: object) -> click.ClickException:
        return click.ClickException(f"{path} is malformed: {field} must be {expected}, got "
                          f"{type(value).__name__} {json.dumps(value)[:80]}; rerun "
                          "`calix reproduce` to rewrite it")

    if not isinstance(doc["study"], str):
        raise bad("'study'", "a name (a string)", doc["study"])
    claims = doc["claims"]
    if not isinstance(claims, list):
        raise bad("'claims'", "a list of objects", claims)
    for i, c in enumerate(claims):
        if not isinstance(c, dict):
            raise bad(f"claims[{i}]", "an object", c)
        if not isinstance(c.get("evidence", {}), dict):
            raise bad(f"claims[{i}].evidence", "an object", c["evidence"])
    for key, expected, kind in (("config", "an object", dict), ("tables", "an object", dict),
                                ("figures", "a list of objects", list)):
        if not isinstance(doc.get(key, kind()), kind):
            raise bad(f"'{key}'", expected, doc[key])
    for i, fig in enumerate(doc.get("figures", [])):
        if not isinstance(fig, dict) or not isinstance(fig.get("file"), str):
            raise bad(f"figures[{i}]", "an object with a 'file' name", fig)
    for name, rows in doc.get("tables", {}).items():
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise bad(f"tables[{name!r}]", "a list of objects", rows)


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
@click.option("--n-samples", type=click.IntRange(min=1), default=30, show_default=True,
              help="Stochastic passes with --uncertainty.")
@click.option("--executor", type=click.Choice(["local", "dask"]), default="local",
              show_default=True)
@click.option("--scheduler", default=None,
              help="Dask scheduler address, e.g. tcp://host:8786 (default: a new LocalCluster).")
@click.option("--connect-timeout", type=click.FloatRange(min=0, min_open=True), default=10.0,
              show_default=True, help="Seconds to wait for the Dask scheduler to answer.")
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True,
              help="LocalCluster workers when no scheduler is given.")
@click.option("--chunk-size", type=click.IntRange(min=1), default=64, show_default=True)
@_seed_option()
@click.option("--out", type=_OutPath(file_okay=False, path_type=Path), required=True)
def explain_dataset_cmd(data_name: str, model_name: str | None, method: str,
                        uncertainty: str | None, n_samples: int, executor: str,
                        scheduler: str | None, connect_timeout: float, workers: int,
                        chunk_size: int, seed: int, out: Path) -> None:
    """Explain every test input in chunks; finished chunks survive interruption."""
    import contextlib

    from calix.parallel import explain_dataset

    if scheduler is not None and executor != "dask":
        raise click.UsageError("--scheduler needs --executor dask")
    ds = _load_or_exit(data_name, seed)
    model_name = model_name or ("cnn" if ds.is_image else "mlp")
    _out_dir(out)
    timeouts = contextlib.nullcontext()
    if scheduler is not None:
        _check_scheduler(scheduler, connect_timeout)
        import dask

        timeouts = dask.config.set({"distributed.comm.timeouts.connect": f"{connect_timeout}s"})
    try:
        with timeouts:
            res = explain_dataset(data_name, model_name, method, out=out,
                                  uncertainty=uncertainty, n_samples=n_samples,
                                  executor=executor, scheduler=scheduler, n_workers=workers,
                                  chunk_size=chunk_size, seed=seed,
                                  progress=sys.stderr.isatty())
    except (ValueError, TypeError) as exc:
        raise click.UsageError(str(exc)) from exc
    except OSError as exc:
        if scheduler is None:
            raise
        raise click.ClickException(f"Dask scheduler {scheduler}: {_message(exc)}") from exc
    click.echo(f"{len(res.indices)} inputs explained ({len(res.computed)} chunks computed now, "
               f"the rest read back); chunks in {out / 'chunks'}")


def _check_scheduler(address: str, timeout: float) -> None:
    """Fail fast, naming ``address``, when no Dask scheduler answers there."""
    import asyncio
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    if parts.scheme not in ("tcp", "tls"):
        return  # other transports (inproc, ucx, ws) are left to Dask
    try:
        host, port = parts.hostname, parts.port or 8786
    except ValueError:
        host = None
    if not host:
        raise click.BadParameter(f"{address!r} is not a scheduler address like "
                                 "tcp://host:8786", param_hint="--scheduler")
    fix = ("start one (`dask scheduler`), check the address, or leave out --scheduler to "
           "start a local cluster")
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        reason = (f"no answer within {timeout:g} s" if isinstance(exc, TimeoutError)
                  else exc.strerror or type(exc).__name__)
        raise click.ClickException(
            f"cannot reach the Dask scheduler at {address} ({reason}); {fix}") from exc

    async def handshake() -> None:  # what distributed.Client does first, without its threads
        from distributed.comm import connect

        comm = await connect(address, timeout=timeout)
        await comm.close()

    try:
        asyncio.run(asyncio.wait_for(handshake(), 2 * timeout))
    except Exception as exc:  # a server that is not a scheduler can make Dask raise anything
        raise click.ClickException(
            f"no Dask scheduler answers at {address}: something listens there but the "
            f"handshake failed ({type(exc).__name__}: {_message(exc)[:200]}); {fix}") from exc


# ---------------------------------------------------------------------- demo
@main.command()
@click.option("--out", type=_OutPath(file_okay=False, path_type=Path),
              default=Path("results/demo"), show_default=True, help="Output folder.")
@_seed_option()
@click.option("--full", is_flag=True, help="Full-size studies instead of quick mode (hours).")
@click.option("--study", "studies", type=click.Choice(_STUDY_NAMES), multiple=True,
              help="Run only these studies (repeat; default: all five).")
def demo(out: Path, seed: int, full: bool, studies: tuple[str, ...]) -> None:
    """Train the zoo, run the five studies (quick mode) and write report.html.

    Interrupted and rerun, it reads back finished studies and cached models.
    """
    from calix.demo import run_demo

    _out_dir(out)
    res = run_demo(out, seed=seed, quick=not full, studies=studies or None,
                   console=_console(), progress=sys.stderr.isatty())
    click.echo(f"report: {res['report']}")


if __name__ == "__main__":  # pragma: no cover
    main()
