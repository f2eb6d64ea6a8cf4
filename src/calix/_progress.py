"""Progress bars for long work (rich), silent when disabled or when nothing is long, and
:func:`torch_threads`, the torch thread count for a block of work."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

T = TypeVar("T")


def progress_bar(
    items: Iterable[T], *, total: int | None = None, enabled: bool = True, description: str = ""
) -> Iterator[T]:
    """Iterate over ``items``, showing a rich progress bar on stderr when ``enabled``.

    A bar over fewer than two steps is never shown.
    """
    if not enabled or (total is not None and total < 2):
        return iter(items)
    return _bar(items, total, description)


def _bar(items: Iterable[T], total: int | None, description: str) -> Iterator[T]:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(description, total=total)
        for item in items:
            yield item
            bar.advance(task)


@contextmanager
def model_rows(model: Any, *, enabled: bool = True, description: str = "") -> Iterator[None]:
    """Count the rows ``model`` evaluates inside the block on a live line on stderr
    (``description: 12,016 model rows · elapsed``): for long work whose number of queries is
    not known in advance (gradient steps, sequential designs). Nothing is shown when
    disabled."""
    if not enabled:
        yield
        return
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    columns = (SpinnerColumn(), TextColumn("[progress.description]{task.description}"),
               TextColumn("{task.completed:,} model rows"), TimeElapsedColumn())
    previous = getattr(model, "on_rows", None)
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(description, total=None)

        def advance(n: int) -> None:
            bar.advance(task, n)
            if previous is not None:
                previous(n)

        model.on_rows = advance
        try:
            yield
        finally:
            model.on_rows = previous


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run with ``n`` torch intra-op threads, then restore the previous count.

    Studies whose model passes are small (8x8 / 16x16 images, small tables) run on one thread:
    it loses little on an idle machine and avoids the order-of-magnitude slow-down of
    oversubscribed intra-op threads when other jobs share the cores.
    """
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
