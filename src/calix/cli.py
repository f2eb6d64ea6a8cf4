"""The ``calix`` command line.

Every command runs inside one error boundary (:class:`_CalixGroup`): a user error (a bad
value, a missing or unreadable file, an unwritable output folder, ...) is printed as one
``Error: ...`` line with exit code 1 (2 for a bad option), an unexpected error as one line
naming the file that holds its traceback, and Ctrl-C as ``Interrupted`` with exit code 130.
``CALIX_DEBUG=1`` re-raises instead, with the full Python traceback.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from calix import __version__, _names

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

_image_size_option = click.option(
    "--image-size", type=(click.IntRange(min=1), click.IntRange(min=1)), default=None,
    metavar="H W", help="Resize the images of an image folder.")


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
@click.argument("model", type=click.Choice(list(_names.ZOO_MODELS)))
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
@click.option("--model", "model_name", type=click.Choice(list(_names.ZOO_MODELS)), default=None,
              help="Zoo model (default: cnn for images, mlp for tabular data).")
@click.option("--method", type=click.Choice(list(_names.CALIBRATORS)),
              default="recalx", show_default=True)
@click.option("--perturbation", "fill", default=None,
              help="Fill for removed features: zero, blur or mean (images); mean or zero "
                   "(tabular). Default: zero for images, mean for tabular.")
@click.option("--metric", type=click.Choice(list(_names.LEVEL_METRICS)), default="ce_kl",
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
        from calix.studies._base import write_json_atomic

        out.mkdir(parents=True, exist_ok=True)
        calibration_by_level_plot(comp.by_level, path=out / "ce_by_level.png")
        by_level = {m: lc.as_dict() for m, lc in comp.by_level.items()}
        payload = {"kind": "calibrate",
                   "title": f"calibration: {method} for {model_name} on {ds.name}",
                   "config": {"data": ds.name, "model": model_name, "method": method,
                              "fill": fill, "metric": metric, "n_eval": n_eval, "seed": seed},
                   "data": ds.name, "model": model_name, "method": method, "fill": fill,
                   "seed": seed, "rows": comp.rows(), "by_level": by_level,
                   "tables": {"calibration before and after": comp.rows(),
                              **{f"{metric} by perturbation level: "
                                 f"{'uncalibrated' if m == 'none' else m}": _level_rows(d)
                                 for m, d in by_level.items()}},
                   "figures": [{"file": "ce_by_level.png",
                                "caption": f"{metric} by perturbation level ({fill} fill), "
                                           f"uncalibrated and {method}"}]}
        write_json_atomic(out / "results.json", payload)
        click.echo(f"wrote {out / 'results.json'} and {out / 'ce_by_level.png'}; "
                   f"`calix report {out}` shows them")


def _level_rows(curve: dict) -> list[dict]:
    """A level curve (``LevelCurve.as_dict()``) as one row per perturbation-level bin."""
    edges = curve["bin_edges"]
    return [{"level from": edges[i], "level to": edges[i + 1], curve["metric"]: err,
             "inputs": count, "accuracy": acc, "confidence": conf}
            for i, (err, count, acc, conf) in enumerate(zip(
                curve["errors"], curve["counts"], curve["accuracy"], curve["confidence"],
                strict=True))]


# ---------------------------------------------------------------------- explain
_ZOO_MODELS = _names.ZOO_MODELS


def _registered_methods() -> list[str]:
    """The explainer names of ``calix.explain.METHODS`` (without importing the explainers)."""
    return list(_names.EXPLAINERS)


def _explain_methods() -> list[str]:
    """``calix.explain.METHODS``, plus ``smoothgrad_squared`` (SmoothGrad with squared=True)."""
    return [*_registered_methods(), "smoothgrad_squared"]


def _architectures() -> list[str]:
    """The names of ``calix.nets.ARCHITECTURES`` (without importing torch)."""
    return list(_names.ARCHITECTURES)


def _init_params(cls: type) -> set[str]:
    """The keyword arguments ``cls(...)`` accepts, following ``**kwargs`` up its bases."""
    import inspect

    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters
        names |= set(params)
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            break
    return names - {"self", "kwargs"}


def _make_explainer(method: str, model, *, seed: int, n_samples: int | None, background):
    """The explainer ``method`` on ``model``: ``seed`` for stochastic explainers,
    ``n_samples`` where the explainer has a sample count, ``background`` (tables only) as
    the mean fill of perturbation explainers and as ``training_data`` where one is needed."""
    from calix.explain import METHODS

    cls = METHODS["smoothgrad" if method == "smoothgrad_squared" else method]
    params = _init_params(cls)
    kwargs: dict = {"squared": True} if method == "smoothgrad_squared" else {}
    if "seed" in params:
        kwargs["seed"] = seed
    if n_samples is not None:
        if "n_samples" not in params:
            raise click.BadParameter(f"{method} draws no samples, so it has no sample count; "
                                     "leave out --n-samples", param_hint="--n-samples")
        kwargs["n_samples"] = n_samples
    if background is not None and "background" in params:
        kwargs["background"] = background
    if "training_data" in params:  # samplers built from the training data (LimeTabular)
        if background is None:
            raise click.BadParameter(f"{method} explains tables (it samples from the "
                                     "training data's columns), and these inputs are images",
                                     param_hint="--method")
        kwargs["training_data"] = background
    return cls(model, **kwargs)


@dataclass
class _Rows:
    """A user's data file read in file order.

    ``X`` of shape (n, d) or (n, C, H, W), float32; ``names`` one per row ("row 3", or an
    image's path relative to its folder); ``labels`` the label column's values or the images'
    class sub-folders, if any; ``kind`` "table" or "images".
    """

    X: Any
    source: Path
    kind: str
    names: list[str]
    labels: list[str] | None = None
    feature_names: list[str] | None = None


def _read_csv_rows(path: Path, label_column: str | None, delimiter: str | None, *,
                   last_is_label: bool = False) -> _Rows:
    """The data rows of CSV file ``path`` in file order: every column but ``label_column``
    (or, with ``last_is_label`` and no ``label_column``, the last one, as
    :func:`calix.data.load_csv` reads it) is a numeric feature. Failures are DataFileErrors
    naming the file, column and line."""
    import numpy as np

    from calix.data import DataFileError, _csv_records

    p, _, rows = _csv_records(path, delimiter)
    if len(rows) < 2:
        raise DataFileError(f"{p} needs a header row naming the columns and at least one "
                            "data row")
    header = [h.strip() for h in rows[0][1]]
    body = rows[1:]
    dups = sorted({h for h in header if header.count(h) > 1})
    if dups or not all(header):
        raise DataFileError(f"{p}: every column of the header row needs a name of its own, "
                            f"got {header}")
    for line, r in body:
        if len(r) != len(header):
            raise DataFileError(f"{p}: every row must have {len(header)} fields like the "
                                f"header row, but line {line} has {len(r)}")
    if label_column is None and last_is_label:
        label_column = header[-1]
    if label_column is not None and label_column not in header:
        raise DataFileError(f"{p}: no column named {label_column!r} (--label-column); "
                            f"columns are {header}")
    feats = [j for j, h in enumerate(header) if h != label_column]
    if not feats:
        raise DataFileError(f"{p} has no feature column besides the label {label_column!r}")
    X = np.empty((len(body), len(feats)), dtype=np.float64)
    for i, (line, r) in enumerate(body):
        for k, j in enumerate(feats):
            try:
                X[i, k] = float(r[j])
            except ValueError:
                what = "an empty field" if not r[j].strip() else repr(r[j])
                hint = ("" if label_column is not None else
                        "; if it is the label column, name it with --label-column")
                raise DataFileError(f"{p}: feature columns must be numeric, but column "
                                    f"{header[j]!r} holds {what} on line {line}{hint}"
                                    ) from None
    X32 = X.astype(np.float32)
    bad = ~np.isfinite(X32)
    if bad.any():
        i, k = (int(v[0]) for v in np.nonzero(bad))
        raise DataFileError(f"{p}: column {header[feats[k]]!r} holds {body[i][1][feats[k]]!r} "
                            f"on line {body[i][0]}, not a finite number")
    labels = None
    if label_column is not None:
        t = header.index(label_column)
        labels = [r[t].strip() for _, r in body]
    return _Rows(X32, source=p, kind="table", names=[f"row {i}" for i in range(len(body))],
                 labels=labels, feature_names=[header[j] for j in feats])


def _read_image_rows(root: Path, size: tuple[int, int] | None, channels: int | None) -> _Rows:
    """The images under ``root`` and its sub-folders (hidden names skipped) sorted by their
    path relative to ``root`` (the order of :class:`calix.parallel.ImageFolder`), as float32
    (n, C, H, W) in [0, 1]. Labels are the images' folders when none lies in ``root`` itself
    (one sub-folder per class)."""
    import numpy as np
    from skimage.color import gray2rgb, rgb2gray
    from skimage.transform import resize

    from calix.data import _IMAGE_SUFFIXES, DataFileError, _read_image

    def visible(f: Path) -> bool:
        return not any(part.startswith(".") for part in f.relative_to(root).parts)

    files = sorted((f for f in root.rglob("*")
                    if f.is_file() and f.suffix.lower() in _IMAGE_SUFFIXES and visible(f)),
                   key=lambda f: f.relative_to(root).as_posix())
    if not files:
        raise DataFileError(f"{root} holds no images ({sorted(_IMAGE_SUFFIXES)}) directly or "
                            "in its sub-folders")
    images = [_read_image(f) for f in files]
    if channels is None:
        channels = 3 if any(im.ndim == 3 for im in images) else 1
    out, shapes = [], {}
    for f, im in zip(files, images, strict=True):
        if channels == 1:
            im = (rgb2gray(im) if im.ndim == 3 else im)[..., None]
        else:
            im = gray2rgb(im) if im.ndim == 2 else im
        if size is not None:
            im = resize(im, (*size, im.shape[-1]), anti_aliasing=True)
        shapes.setdefault(im.shape[:2], f)
        out.append(np.moveaxis(im, -1, 0).astype(np.float32))
    if len(shapes) > 1:
        seen = ", ".join(f"{h}x{w} (e.g. {f.relative_to(root)})" for (h, w), f in shapes.items())
        raise DataFileError(f"images under {root} differ in size: {seen}; pass --image-size "
                            "H W to resize them to the size the model takes")
    in_class_folders = all(f.parent != root for f in files)
    return _Rows(np.stack(out), source=root, kind="images",
                 names=[f.relative_to(root).as_posix() for f in files],
                 labels=[f.parent.name for f in files] if in_class_folders else None)


def _read_rows(data_path: str, label_column: str | None, delimiter: str | None,
               image_size: tuple[int, int] | None, channels: int | None) -> _Rows:
    """A user's ``--data``: a .csv file or an image folder, every row in file order."""
    p = Path(data_path)
    try:
        if p.is_dir():
            if label_column is not None:
                raise click.UsageError("--label-column names a CSV column; the labels of an "
                                       "image folder are its class sub-folders")
            return _read_image_rows(p, image_size, channels)
        if p.suffix.lower() == ".csv":
            return _read_csv_rows(p, label_column, delimiter)
        if not p.exists():
            raise FileNotFoundError(f"data file or folder not found: {p}")
    except (ValueError, OSError) as exc:
        raise click.BadParameter(_message(exc), param_hint="--data") from exc
    raise click.BadParameter(f"{p} is neither a .csv file nor an image folder; a model file "
                             "explains your own data in one of these", param_hint="--data")


def _user_model_kind(path: Path, *, trust: bool, architecture: str | None,
                     num_classes: int | None) -> str:
    """What model file ``path`` holds, checked against the options before any data is read:
    the CLI's messages for a pickle without ``--trust-model`` and for a state_dict without
    ``--architecture``."""
    from calix import model_io

    try:
        kind = model_io.model_file_kind(path)
    except model_io.ModelFileError as exc:
        raise click.BadParameter(f"{exc} (--model takes a zoo model, {' or '.join(_ZOO_MODELS)}"
                                 ", or a model file)", param_hint="--model") from exc
    if kind == "pickle" and not trust:
        raise click.BadParameter(
            f"{path} is a joblib/pickle file: loading it unpickles it, and unpickling runs "
            "code that the file names, so a file from someone else can do anything your "
            "account can. Add --trust-model if the file is your own or comes from someone you "
            "trust; to share scikit-learn models safely, save them with skops "
            "(skops.io.dump) and pass the .skops file", param_hint="--model")
    if kind == "state_dict" and architecture is None:
        raise click.BadParameter(
            f"{path} holds torch weights (a state_dict) but not the network they belong to; "
            f"name it with --architecture ({', '.join(_architectures())}) and --num-classes, "
            "or save the model as TorchScript (torch.jit.save)", param_hint="--model")
    if kind == "state_dict" and num_classes is None:
        raise click.UsageError("--architecture needs --num-classes: the number of classes "
                               "the weights were trained for")
    if kind != "state_dict" and (architecture is not None or num_classes is not None):
        raise click.UsageError(f"{path} holds a whole model, which needs no --architecture or "
                               "--num-classes; leave them out")
    return kind


def _load_user_model(path: Path, kind: str, rows: _Rows, *, trust: bool,
                     architecture: str | None, num_classes: int | None):
    """The model saved in ``path`` (of ``kind``) for inputs like ``rows``."""
    import inspect

    from calix import model_io

    wrap_kwargs: dict = {"input_shape": tuple(rows.X.shape[1:])}
    if kind in ("pickle", "skops"):
        wrap_kwargs = {}
    arch_kwargs = None
    if kind == "state_dict":
        shape = rows.X.shape[1:]
        offered = {"num_classes": num_classes, "n_classes": num_classes,
                   "n_outputs": num_classes, "in_channels": shape[0],
                   "n_features": shape[0] if len(shape) == 1 else None,
                   "image_size": shape[-1] if len(shape) == 3 and shape[1] == shape[2]
                   else None}
        factory = model_io._architectures()[architecture]
        accepted = set(inspect.signature(factory).parameters)
        arch_kwargs = {k: v for k, v in offered.items() if k in accepted and v is not None}
        if len(shape) != 3:
            arch_kwargs.pop("in_channels", None)
    try:
        return model_io.load_model(path, architecture=architecture,
                                   architecture_kwargs=arch_kwargs, trusted=trust,
                                   **wrap_kwargs)
    except model_io.ModelFileError as exc:
        hint = (" (on the command line, --trust-model trusts every type the file names)"
                if kind == "skops" and not trust else "")
        raise click.BadParameter(f"{exc}{hint}", param_hint="--model") from exc


def _check_columns(model, rows: _Rows):
    """The feature columns of ``rows`` in the order a scikit-learn model was fitted with."""
    names = getattr(model, "feature_names_in_", None)
    X, have = rows.X, rows.feature_names or []
    if rows.kind == "table" and names:
        missing = [c for c in names if c not in have]
        extra = [c for c in have if c not in names]
        if missing or extra:
            raise click.BadParameter(
                f"the model was fitted on columns {names}, but {rows.source} has feature "
                f"columns {have} (missing {missing}, not used by the model {extra}); pass "
                "--label-column for the label column", param_hint="--data")
        X = X[:, [have.index(c) for c in names]]
        rows.feature_names = list(names)
    want = getattr(model, "input_shape", None)
    if want is not None and tuple(want) != tuple(X.shape[1:]):
        what = (f"{X.shape[1]} feature columns {have}" if rows.kind == "table"
                else f"images of shape {tuple(X.shape[1:])} (channels, height, width)")
        fix = ("pass --label-column for the label column, or drop the columns the model was "
               "not fitted on" if rows.kind == "table"
               else "pass --image-size and --channels to match the model")
        raise click.BadParameter(f"the model takes inputs of shape {tuple(want)}, but "
                                 f"{rows.source} has {what}; {fix}", param_hint="--data")
    rows.X = X


def _model_file_only(given: dict[str, Any]) -> None:
    """Refuse, by name, the first of ``given`` (option -> value) that was set with a zoo
    model: these options describe a user's model file."""
    for flag, value in given.items():
        if value:
            raise click.UsageError(f"{flag} applies to a model file (--model FILE), not to a "
                                   "zoo model")


def _model_file_options(f):
    """The options of a user's --model file, shared by explain and explain-dataset."""
    f = click.option("--num-classes", type=click.IntRange(min=1), default=None,
                     help="Classes of a state_dict --model file's network.")(f)
    f = click.option("--architecture", type=click.Choice(_architectures()), default=None,
                     help="Network of a state_dict --model file.")(f)
    return click.option(
        "--trust-model", is_flag=True,
        help="Load a joblib/pickle --model file. Unpickling runs code the file names: give "
             "this only for your own files or files from someone you trust.")(f)


@main.command()
@click.option("--data", "data_name", default=None,
              help="Dataset name or path. With a zoo model: a shipped dataset (default digits) "
                   "or a file to train on. With --model FILE: your own .csv file (every column "
                   "a feature but --label-column) or image folder (images directly in it, or "
                   "one sub-folder per class; read as floats in [0, 1], channels first, "
                   "without normalisation).")
@click.option("--model", "model_name", default=None, metavar="cnn|mlp|FILE",
              help="Zoo model cnn or mlp (default: cnn for images, mlp for tabular data), "
                   "trained here and cached; or your own model file: TorchScript, a torch "
                   "state_dict (with --architecture and --num-classes), a .skops file, or a "
                   "scikit-learn model saved with joblib (with --trust-model).")
@_model_file_options
@click.option("--label-column", default=None,
              help="Label column of a .csv --data file: left out of the features and "
                   "recorded beside the prediction. Default with a model file: none (every "
                   "column is a feature, and the predicted class is explained); with a zoo "
                   "model, which trains on the file: the last column.")
@_image_size_option
@click.option("--channels", type=click.Choice(["1", "3"]), default=None,
              help="Grey (1) or RGB (3) images from an image folder (default: RGB if any "
                   "image has colour).")
@click.option("--method", type=click.Choice(_explain_methods()),
              default="integrated_gradients", show_default=True,
              help="Any explainer of calix.explain.METHODS (smoothgrad_squared: SmoothGrad²).")
@click.option("--index", "indices", type=click.IntRange(min=0), multiple=True, default=(0,),
              show_default=True,
              help="Input to explain (repeat for several). For your own --data file: the "
                   "0-based data row of the .csv file (the header row not counted) or of an "
                   ".npz file's X, or the position of the image among the folder's images "
                   "sorted by path (class sub-folder, then file name). For a shipped "
                   "dataset: the index into its test split.")
@click.option("--target", type=click.IntRange(min=0), default=None,
              help="Class to explain (default: predicted).")
@click.option("--calibrate", "cal_method", default="none", show_default=True,
              type=click.Choice(["none", *_names.CALIBRATORS]),
              help="Explain a zoo model through this calibrator (classification only).")
@click.option("--n-samples", type=click.IntRange(min=1), default=None,
              help="Sample count of explainers that take one (n_samples: LIME, KernelSHAP, "
                   "SmoothGrad, ...; default: the explainer's own).")
@_seed_option("Seed of the zoo model and of stochastic explainers.")
@_delimiter_option
@click.option("--out", type=_OutPath(file_okay=False, path_type=Path),
              default=Path("results/explain"), show_default=True,
              help="Output folder: explanation.npz (Explanation.save), results.json, figures; "
                   "`calix report OUT` shows it.")
def explain(data_name: str | None, model_name: str | None, trust_model: bool,
            architecture: str | None, num_classes: int | None, label_column: str | None,
            image_size: tuple[int, int] | None, channels: str | None, method: str,
            indices: tuple[int, ...], target: int | None, cal_method: str,
            n_samples: int | None, seed: int, delimiter: str | None, out: Path) -> None:
    """Explain inputs of a zoo model or of your own model file.

    Writes OUT/explanation.npz (the Explanation, read back with Explanation.load),
    OUT/results.json (what was explained, predictions, top features) and figures; render
    them with `calix report OUT`. Tabular perturbation explainers remove features by the
    mean of the background data: the training split for a zoo model, the rows of your own
    .csv file for a model file.
    """
    if model_name is None or model_name in _ZOO_MODELS:
        _model_file_only({"--trust-model": trust_model, "--architecture": architecture,
                          "--num-classes": num_classes, "--image-size": image_size,
                          "--channels": channels})
        run = _explain_zoo(data_name or "digits", model_name, label_column, method, indices,
                           target, cal_method, n_samples, seed, delimiter, out)
    else:
        if cal_method != "none":
            raise click.BadParameter("calibrating needs a validation split with labels; "
                                     "--calibrate applies to zoo models", param_hint="--calibrate")
        if data_name is None:
            raise click.UsageError("--model FILE explains your own data: give --data with a "
                                   ".csv file or an image folder")
        run = _explain_file(Path(model_name), data_name, trust_model, architecture,
                            num_classes, label_column, image_size,
                            int(channels) if channels else None, method, indices, target,
                            n_samples, seed, delimiter, out)
    _write_explanation(out, **run)


def _explain_zoo(data_name, model_name, label_column, method, indices, target, cal_method,
                 n_samples, seed, delimiter, out) -> dict:
    from calix import zoo
    from calix.calibrate import calibrated, fit_calibrator
    from calix.data import DATASETS
    from calix.recipes import default_perturbation

    shipped = data_name in DATASETS
    if label_column is not None and (shipped or Path(data_name).suffix.lower() != ".csv"):
        raise click.UsageError("--label-column names the label column of a .csv --data file")
    ds = _load_zoo_data(data_name, label_column, delimiter)
    model_name = model_name or ("cnn" if ds.is_image else "mlp")
    if shipped:
        bad = [i for i in indices if not 0 <= i < len(ds.X_test)]
        if bad:
            raise click.BadParameter(f"indices {bad} outside the test split [0, "
                                     f"{len(ds.X_test)})", param_hint="--index")
        x = ds.X_test[list(indices)]
        names = [f"test {i}" for i in indices]
        labels = [ds.class_names[int(v)] if ds.class_names else float(v)
                  for v in ds.y_test[list(indices)]]
        index_of = "test split"
    else:
        rows = _zoo_rows(ds, data_name, label_column, delimiter)
        _check_indices(indices, rows)
        x, names = rows.X[list(indices)], [rows.names[i] for i in indices]
        labels = None if rows.labels is None else [rows.labels[i] for i in indices]
        index_of = _index_of(rows)
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
        # removed columns take the training mean (what the calibration recipes use), said
        # explicitly rather than left to the tabular default
        explainer = _make_explainer(method, model, seed=seed, n_samples=n_samples,
                                    background=None if ds.is_image else ds.X_train)
    except (ValueError, TypeError) as exc:
        raise click.UsageError(str(exc)) from exc
    return dict(model=model, explainer=explainer, x=x, indices=indices, target=target,
                method=method, names=names, labels=labels,
                feature_names=None if ds.is_image else list(ds.feature_names),
                class_names=list(ds.class_names) or None,
                config={"model": model_name, "model_source": "zoo", "data": ds.name,
                        "index_of": index_of, "calibrate": cal_method,
                        "background": None if ds.is_image else "training split"},
                seed=seed, n_samples=n_samples, title=f"{method}: {model_name} on {ds.name}")


def _load_zoo_data(data_name: str, label_column: str | None, delimiter: str | None):
    """The dataset a zoo model trains on: shipped, or a user's file (``label_column`` of a
    .csv file: its label, by default the last column)."""
    if label_column is None:
        return _load_or_exit(data_name, 0, delimiter)
    from calix.data import load_csv

    try:
        return load_csv(data_name, target=label_column, delimiter=delimiter)
    except _USER_ERRORS as exc:
        raise click.BadParameter(_message(exc), param_hint="--data") from exc


def _zoo_rows(ds, data_name: str, label_column: str | None, delimiter: str | None) -> _Rows:
    """The rows of a user's file in file order, as the zoo model sees them: a .csv file's
    columns standardised with the training split's statistics (as :func:`calix.data.load`
    does), an image folder's images in grey, an .npz file's ``X``."""
    import numpy as np

    p = Path(data_name)
    try:
        if p.is_dir():
            rows = _read_image_rows(p, None, 1)
        elif p.suffix.lower() == ".csv":
            rows = _read_csv_rows(p, label_column, delimiter, last_is_label=True)
        else:
            with np.load(p, allow_pickle=False) as z:
                rows = _Rows(np.asarray(z["X"], dtype=np.float32), source=p,
                             kind="table" if z["X"].ndim == 2 else "images",
                             names=[f"row {i}" for i in range(len(z["X"]))])
    except (ValueError, OSError) as exc:
        raise click.BadParameter(_message(exc), param_hint="--data") from exc
    if rows.X.ndim == 2:  # tables are standardised like the training data
        scale = np.where(ds.raw_std > 0, ds.raw_std, 1.0).astype(np.float32)
        rows.X = (rows.X - ds.raw_mean) / scale
    return rows


def _check_indices(indices: tuple[int, ...], rows: _Rows) -> None:
    n = len(rows.X)
    bad = [i for i in indices if i >= n]
    if bad:
        what = "data rows (the header row not counted)" if rows.kind == "table" else "images"
        raise click.BadParameter(f"indices {bad} outside the {n} {what} of {rows.source}: "
                                 f"--index counts from 0 to {n - 1}", param_hint="--index")


def _index_of(rows: _Rows) -> str:
    return ("data rows of the file" if rows.kind == "table"
            else "images of the folder, sorted by path")


def _explain_file(model_path, data_name, trust, architecture, num_classes, label_column,
                  image_size, channels, method, indices, target, n_samples, seed, delimiter,
                  out) -> dict:
    kind = _user_model_kind(model_path, trust=trust, architecture=architecture,
                            num_classes=num_classes)
    rows = _read_rows(data_name, label_column, delimiter, image_size, channels)
    _check_indices(indices, rows)
    _out_dir(out)
    model = _load_user_model(model_path, kind, rows, trust=trust, architecture=architecture,
                             num_classes=num_classes)
    _check_columns(model, rows)
    classes = getattr(model, "classes_", None)
    class_names = [str(c) for c in classes] if classes is not None else None
    try:
        # the explainers' mean fill: the file's own rows stand for the training data
        explainer = _make_explainer(method, model, seed=seed, n_samples=n_samples,
                                    background=rows.X if rows.kind == "table" else None)
        if target is not None and model.task == "classification":
            k = model.predict_logits(rows.X[:1]).shape[-1]
            if target >= k:
                raise click.BadParameter(f"class {target} does not exist: the model has {k} "
                                         f"classes (0 to {k - 1})", param_hint="--target")
    except (ValueError, TypeError) as exc:
        raise click.UsageError(str(exc)) from exc
    sel = list(indices)
    return dict(model=model, explainer=explainer, x=rows.X[sel], indices=indices,
                target=target, method=method, names=[rows.names[i] for i in sel],
                labels=None if rows.labels is None else [rows.labels[i] for i in sel],
                feature_names=rows.feature_names, class_names=class_names,
                config={"model": str(model_path), "model_source": "file",
                        "model_class": type(model).__name__, "data": str(rows.source),
                        "index_of": _index_of(rows),
                        "label_column": label_column,
                        "background": "the rows of the data file" if rows.kind == "table"
                        else None},
                seed=seed, n_samples=n_samples,
                title=f"{method}: {model_path.name} on {rows.source.name}")


def _write_explanation(out: Path, *, model, explainer, x, indices, target, method, names,
                       labels, feature_names, class_names, config, seed, n_samples,
                       title) -> None:
    """Explain ``x``; write OUT/explanation.npz, OUT/results.json and the figures."""
    import numpy as np

    from calix.plot import attribution_bars, explanation_figure, overlay
    from calix.studies._base import write_json_atomic

    try:
        exp = explainer.explain(x, target=target)
    except (ValueError, TypeError) as exc:
        raise click.UsageError(str(exc)) from exc
    if exp.data is None:
        exp.data = np.asarray(x)
    if exp.feature_names is None and feature_names is not None:
        exp.feature_names = list(feature_names)
    if exp.class_names is None and class_names is not None:
        exp.class_names = list(class_names)
    exp.extra["indices"] = np.asarray(indices)
    image = x.ndim == 4
    out.mkdir(parents=True, exist_ok=True)
    exp.save(out / "explanation.npz")

    rows = _prediction_rows(model, x, exp, indices, names, labels, class_names)
    figures = []
    for j, i in enumerate(indices):  # one figure per input, titled with its row or file
        said = f"{names[j]}: attribution to class {rows[j]['explained class']}"
        if image:
            _close(explanation_figure(exp[j], title=names[j], path=out / f"input_{i}.png"))
            _close(overlay(None, exp, index=j, title=names[j], path=out / f"overlay_{i}.png"))
            figures += [{"file": f"input_{i}.png", "caption": f"{said}, beside the input"},
                        {"file": f"overlay_{i}.png", "caption": f"{said}, over the input"}]
        else:
            _close(attribution_bars(exp, index=j, title=names[j], path=out / f"input_{i}.png"))
            figures.append({"file": f"input_{i}.png", "caption": said})
    tables = {"explained inputs": rows}
    if not image:
        tables["top features"] = _top_features(exp, names, x)
    doc = {"kind": "explain", "title": title,
           "config": {**config, "method": method, "explainer": type(explainer).__name__,
                      "indices": list(indices), "target": target, "seed": seed,
                      "n_samples": n_samples},
           "n_queries": exp.n_queries, "explanation": "explanation.npz",
           "tables": tables, "figures": figures}
    write_json_atomic(out / "results.json", doc)
    click.echo(f"{method}: {len(indices)} input(s), {exp.n_queries} model queries; wrote "
               f"{out / 'explanation.npz'}, {out / 'results.json'} and "
               f"{len(figures)} figure(s); `calix report {out}` shows them")


def _close(fig) -> None:
    import matplotlib.pyplot as plt

    plt.close(fig)


def _prediction_rows(model, x, exp, indices, names, labels, class_names) -> list[dict]:
    import numpy as np

    def cls(k: int):
        return class_names[k] if class_names else k

    rows = []
    if model.task == "classification":
        proba = model.predict_proba(x)
        for j, i in enumerate(indices):
            pred, t = int(proba[j].argmax()), int(np.asarray(exp.target)[j])
            rows.append({"index": i, "input": names[j],
                         **({"label": labels[j]} if labels is not None else {}),
                         "predicted": cls(pred), "probability": float(proba[j, pred]),
                         "explained class": cls(t),
                         "probability of explained class": float(proba[j, t])})
    else:
        pred = model.predict(x).reshape(len(x), -1)
        for j, i in enumerate(indices):
            rows.append({"index": i, "input": names[j],
                         **({"label": labels[j]} if labels is not None else {}),
                         "prediction": float(pred[j, 0]),
                         "explained class": f"output {int(np.asarray(exp.target)[j])}"})
    return rows


def _top_features(exp, names, x, k: int = 10) -> list[dict]:
    """The ``k`` features of largest |attribution| of every input (with their values for
    tables), largest first."""
    import numpy as np

    table = exp.feature_table()
    fnames = exp.names(table.shape[1])
    std = exp.std if exp.std is not None and np.shape(exp.std) == table.shape else None
    rows = []
    for j in range(len(table)):
        for rank, f in enumerate(np.argsort(-np.abs(table[j]), kind="stable")[:k], 1):
            row = {"input": names[j], "rank": rank, "feature": fnames[f],
                   "attribution": float(table[j, f])}
            if x is not None:
                row["value"] = float(x[j, f])
            if std is not None:
                row["std"] = float(np.asarray(std)[j, f])
            rows.append(row)
    return rows


# ---------------------------------------------------------------------- studies
_STUDY_NAMES = list(_names.STUDIES)


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
    from calix.report import claim_counts_text, write_report
    from calix.studies import run_study

    out = _out_dir(out or Path("results") / study)
    console = _console()
    doc = run_study(study, out, quick=quick, seed=seed, progress=sys.stderr.isatty(),
                    console=console, resume=not force)
    click.echo(f"{study}: {claim_counts_text(doc)}; wrote {out / 'results.json'}")
    if not no_report:
        click.echo(f"report: {write_report(out, title=f'calix: {study}')}")


@main.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", type=_OutPath(dir_okay=False, path_type=Path), default=None,
              help="Report file (default: FOLDER/report.html).")
def report(folder: Path, out: Path | None) -> None:
    """Write one self-contained report.html for the calix outputs in FOLDER.

    FOLDER (or its direct sub-folders) holds the results.json of `calix reproduce`,
    `calix explain` or `calix calibrate --out`; every one found is shown.
    """
    from calix._io import OutputPathError, ensure_writable_file
    from calix.report import find_results, write_report

    try:
        ensure_writable_file(out if out is not None else folder / "report.html",
                             what="report file")
    except OutputPathError as exc:
        raise click.BadParameter(str(exc), param_hint="--out") from exc
    # a malformed results.json: a ValueError naming the file and the field
    files = [str(where / "results.json") for where, _ in find_results(folder)]
    try:
        path = write_report(folder, out)
    except FileNotFoundError as exc:  # no results in FOLDER
        raise click.UsageError(str(exc)) from exc
    except (AttributeError, KeyError, TypeError, IndexError) as exc:
        which = files[0] if len(files) == 1 else f"one of {', '.join(files)}"
        raise click.ClickException(
            f"{which} is malformed and cannot be rendered ({type(exc).__name__}: {exc}); "
            "rerun the calix command that wrote it") from exc
    click.echo(f"report: {path}")


# ---------------------------------------------------------------------- dataset scale

@main.command("explain-dataset")
@click.option("--data", "data_name", required=True,
              help="A shipped dataset name (its test split), or with --model FILE your own "
                   ".csv file or image folder, read lazily: each chunk reads only its rows.")
@click.option("--model", "model_name", default=None, metavar="cnn|mlp|FILE",
              help="Zoo model cnn or mlp (default: cnn for images, mlp for tabular data), or "
                   "your own model file: TorchScript, a .skops file, a torch state_dict (with "
                   "--architecture and --num-classes) or a joblib file (with --trust-model). "
                   "A model file is sent to every worker once.")
@_model_file_options
@click.option("--label-column", default=None,
              help="Label column of a .csv --data file, left out of the features.")
@_image_size_option
@click.option("--channels", type=click.Choice(["1", "3"]), default="3", show_default=True,
              help="Grey (1) or RGB (3) images from an image folder.")
@click.option("--background", "background_path", default=None,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A .csv file of background rows (e.g. training data, same columns) for "
                   "tabular perturbation explainers: removed features take its mean.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
              show_default=True,
              help="Where a torch model runs on each worker (auto: the worker's GPU if it has "
                   "one).")
@click.option("--method", required=True, type=click.Choice(_registered_methods()),
              help="Any explainer of calix.explain.METHODS.")
@click.option("--uncertainty", type=click.Choice(list(_names.UNTRAINED_SAMPLERS)),
              default=None, help="Stochastic sampler: mean and std maps over --n-samples.")
@click.option("--n-samples", type=click.IntRange(min=1), default=30, show_default=True,
              help="Stochastic samples with --uncertainty.")
@click.option("--executor", type=click.Choice(["local", "dask"]), default="local",
              show_default=True)
@click.option("--scheduler", default=None,
              help="Dask scheduler address (tcp://host:8786); default: a LocalCluster.")
@click.option("--connect-timeout", type=click.FloatRange(min=0, min_open=True), default=10.0,
              show_default=True, help="Seconds to wait for the Dask scheduler to answer.")
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True,
              help="Workers of the LocalCluster started without --scheduler.")
@click.option("--chunk-size", type=click.IntRange(min=1), default=64, show_default=True)
@_seed_option()
@_delimiter_option
@click.option("--out", type=_OutPath(file_okay=False, path_type=Path), required=True)
def explain_dataset_cmd(data_name: str, model_name: str | None, trust_model: bool,
                        architecture: str | None, num_classes: int | None,
                        label_column: str | None, image_size: tuple[int, int] | None,
                        channels: str, background_path: Path | None, device: str, method: str,
                        uncertainty: str | None, n_samples: int, executor: str,
                        scheduler: str | None, connect_timeout: float, workers: int,
                        chunk_size: int, seed: int, delimiter: str | None, out: Path) -> None:
    """Explain every test input (or every row / image of your own file) in chunks; finished
    chunks survive interruption, and a rerun computes only the missing ones."""
    import contextlib

    from calix.parallel import explain_dataset

    if scheduler is not None and executor != "dask":
        raise click.UsageError("--scheduler needs --executor dask")
    background = None
    if model_name is None or model_name in _ZOO_MODELS:
        _model_file_only({"--trust-model": trust_model, "--architecture": architecture,
                          "--num-classes": num_classes, "--image-size": image_size,
                          "--label-column": label_column, "--background": background_path})
        ds = _load_or_exit(data_name, seed)
        model: Any = model_name or ("cnn" if ds.is_image else "mlp")
        data: Any = data_name
        _out_dir(out)
    else:
        data, model = _user_dataset(data_name, Path(model_name), trust=trust_model,
                                    architecture=architecture, num_classes=num_classes,
                                    label_column=label_column, image_size=image_size,
                                    grayscale=channels == "1", delimiter=delimiter)
        if background_path is not None:
            background = _read_csv_rows(background_path, label_column, delimiter).X
        _out_dir(out)
    timeouts = contextlib.nullcontext()
    if scheduler is not None:
        _check_scheduler(scheduler, connect_timeout)
        import dask

        timeouts = dask.config.set({"distributed.comm.timeouts.connect": f"{connect_timeout}s"})
    try:
        with timeouts:
            res = explain_dataset(data, model, method, out=out, background=background,
                                  device=device, uncertainty=uncertainty, n_samples=n_samples,
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


def _user_dataset(data_path: str, model_path: Path, *, trust: bool, architecture: str | None,
                  num_classes: int | None, label_column: str | None,
                  image_size: tuple[int, int] | None, grayscale: bool,
                  delimiter: str | None) -> tuple[Any, Any]:
    """A lazily read data file and the model file for ``explain-dataset``: only the first
    row is read here (a state_dict's network is sized by it)."""
    from calix.parallel import CsvFile, ImageFolder

    kind = _user_model_kind(model_path, trust=trust, architecture=architecture,
                            num_classes=num_classes)
    p = Path(data_path)
    if p.is_dir():
        if label_column is not None:
            raise click.UsageError("--label-column applies to a .csv file, not to an image "
                                   "folder (its class sub-folders are the labels)")
        source: Any = ImageFolder(p, size=image_size, grayscale=grayscale)
    elif p.is_file() and p.suffix.lower() == ".csv":
        source = CsvFile(p, target=label_column, delimiter=delimiter)
    else:
        raise click.BadParameter(f"{p} is neither a .csv file nor an image folder; a model "
                                 "file explains your own data in one of these",
                                 param_hint="--data")
    try:
        first = source._bind(None).rows(0, 1).read()
    except (ValueError, OSError) as exc:
        raise click.BadParameter(_message(exc), param_hint="--data") from exc
    rows = _Rows(X=first, source=p, kind="images" if p.is_dir() else "table", names=["0"])
    return source, _load_user_model(model_path, kind, rows, trust=trust,
                                    architecture=architecture, num_classes=num_classes)


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
