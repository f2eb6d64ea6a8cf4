"""The ``calix`` command line."""

from __future__ import annotations

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
def train(model: str, data_name: str, dropout: float | None, seed: int, epochs: int | None,
          no_cache: bool) -> None:
    """Train zoo MODEL (cnn or mlp) on a dataset, cached by configuration."""
    from calix import zoo

    ds = _load_or_exit(data_name, 0)
    try:
        trained = zoo.train(model, ds, seed=seed, dropout=dropout, epochs=epochs,
                            cache=not no_cache, progress=sys.stderr.isatty())
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    metrics = ", ".join(f"{k} {v:.4f}" for k, v in trained.metrics.items())
    click.echo(f"{model} on {ds.name} (seed {seed}): test {metrics}")
    if trained.path is not None:
        click.echo(f"cached at {trained.path}")


# ---------------------------------------------------------------------- demo
@main.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              default=Path("results/demo"), show_default=True, help="Output folder.")
@click.option("--seed", type=int, default=0, show_default=True)
def demo(out: Path, seed: int) -> None:
    """Train the zoo, calibrate it, and show calibration error by perturbation level."""
    from calix.demo import run_demo

    run_demo(out, seed=seed, console=_console())
    click.echo(f"wrote {out / 'results.json'} and figures in {out}")


if __name__ == "__main__":  # pragma: no cover
    main()
