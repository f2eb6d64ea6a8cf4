"""What every study shares: a run context that collects tables, claims, figures and arrays,
and writes them atomically to ``DIR/results.json``.

A study is a function ``run(ctx: StudyContext) -> None`` that computes from calix's public
pieces and records through the context:

- ``ctx.table(name, rows)`` -- rows are flat dicts of numbers and strings;
- ``ctx.claim(text, holds, evidence, paper=...)`` -- ``holds`` is computed from the run, never
  written by hand; ``evidence`` holds the numbers it was computed from;
- ``ctx.figure(name, fig)`` -- a matplotlib figure saved as ``DIR/name.png``;
- ``ctx.arrays(name, **arrays)`` -- numpy arrays saved as ``DIR/name.npz``.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["StudyContext", "Claim", "write_json_atomic", "to_jsonable", "torch_threads",
           "RESULTS_FILE"]

RESULTS_FILE = "results.json"


@dataclass
class Claim:
    """One testable claim of a paper and whether this run supports it."""

    claim: str
    holds: bool
    evidence: dict[str, Any]
    paper: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"claim": self.claim, "holds": bool(self.holds),
                "evidence": to_jsonable(self.evidence), "paper": self.paper}


@dataclass
class StudyContext:
    """The run of one study: where it writes, how big it is, and what it has recorded.

    Parameters
    ----------
    study : the study's name (``calix.studies.STUDIES`` key).
    out : folder the study writes into (created).
    quick : the small configuration (minutes on 2 CPU cores) instead of the full one.
    seed : seeds every stochastic component of the run (models, samplers, splits).
    progress : show progress bars.
    console : optional rich console for short tables while the study runs.
    """

    study: str
    out: Path
    quick: bool = True
    seed: int = 0
    progress: bool = False
    console: Any = None
    config: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    claims: list[Claim] = field(default_factory=list)
    figures: list[dict[str, str]] = field(default_factory=list)
    array_files: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        self.out.mkdir(parents=True, exist_ok=True)

    def size(self, quick: Any, full: Any) -> Any:
        """``quick`` in quick mode, else ``full``."""
        return quick if self.quick else full

    def configure(self, **config: Any) -> dict[str, Any]:
        """Record the study's configuration (returned for convenience)."""
        self.config.update(config)
        return self.config

    def table(self, name: str, rows: list[Mapping[str, Any]]) -> None:
        """Record a table as a list of flat rows (dicts of numbers and strings)."""
        self.tables[name] = [dict(to_jsonable(dict(r))) for r in rows]

    def claim(self, text: str, holds: Any, evidence: Mapping[str, Any], *,
              paper: str = "") -> Claim:
        """Record whether the run supports a claim, with the numbers it rests on.

        ``paper`` states what the paper reports for comparison (free text).
        """
        c = Claim(text, bool(holds), dict(evidence), paper)
        self.claims.append(c)
        if self.console is not None:
            from rich.markup import escape

            mark = "holds" if c.holds else "does not hold"
            self.console.print(f"  [{'green' if c.holds else 'red'}]{mark}[/]: {escape(text)}")
        return c

    def figure(self, name: str, fig: Any, *, caption: str = "") -> Path:
        """Save a matplotlib figure as ``out/name.png`` and close it."""
        import matplotlib.pyplot as plt

        path = self.out / f"{name}.png"
        fig.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(fig)
        self.figures.append({"file": path.name, "caption": caption or name})
        return path

    def arrays(self, name: str, **arrays: Any) -> Path:
        """Save arrays to ``out/name.npz`` (written atomically)."""
        path = self.out / f"{name}.npz"
        tmp = path.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, **{k: np.asarray(v) for k, v in arrays.items()})
        os.replace(tmp, path)
        self.array_files.append(path.name)
        return path

    def results(self, wall_time_s: float) -> dict[str, Any]:
        """The ``results.json`` document."""
        return to_jsonable({
            "study": self.study,
            "config": {"quick": self.quick, **self.config},
            "seed": self.seed,
            "tables": self.tables,
            "claims": [c.as_dict() for c in self.claims],
            "figures": self.figures,
            "arrays": self.array_files,
            "wall_time_s": round(wall_time_s, 1),
            "environment": _environment(),
        })


def run_in_context(study: str, fn: Callable[[StudyContext], None], ctx: StudyContext
                   ) -> dict[str, Any]:
    """Run ``fn(ctx)`` and write ``results.json`` atomically; returns the document."""
    t0 = time.perf_counter()
    fn(ctx)
    doc = ctx.results(time.perf_counter() - t0)
    write_json_atomic(ctx.out / RESULTS_FILE, doc)
    return doc


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


def write_json_atomic(path: str | Path, doc: Any) -> None:
    """Write JSON to ``path`` through a temporary file and ``os.replace`` (never half-written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(to_jsonable(doc), indent=2, allow_nan=False))
    os.replace(tmp, path)


def to_jsonable(obj: Any) -> Any:
    """Numpy / torch scalars and arrays to plain JSON values; NaN and inf to ``None``."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if hasattr(obj, "detach"):  # torch tensor
        obj = obj.detach().cpu().numpy()
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer, int)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to results.json")


def _environment() -> dict[str, Any]:
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "cpu_count": os.cpu_count()}
