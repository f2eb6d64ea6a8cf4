"""What every study shares: a run context that collects tables, claims, figures and arrays,
and writes them atomically to ``DIR/results.json``.

A study is a function ``run(ctx: StudyContext) -> None`` that computes from calix's public
pieces and records through the context. Its sizes and settings are a frozen dataclass with
``quick(seed)`` and ``full(seed)`` constructors, chosen and recorded by
``cfg = ctx.use_config(Config)``. It records:

- ``ctx.table(name, rows)`` -- rows are flat dicts of numbers and strings;
- ``ctx.claim(text, holds, evidence, paper=..., kind=..., quote=..., sensitivity=...)`` --
  ``holds`` is computed from the run, never written by hand; ``evidence`` holds the numbers it
  was computed from; ``kind`` says what the claim is (see :data:`KINDS`); ``quote`` is the
  paper's sentence a finding tests; ``sensitivity`` maps the nearest reasonable alternative
  rules to the verdicts they give, so a reader sees whether the verdict rests on calix's
  choice of threshold;
- ``ctx.figure(name, fig)`` -- a matplotlib figure saved as ``DIR/name.png``;
- ``ctx.arrays(name, **arrays)`` -- numpy arrays saved as ``DIR/name.npz``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from calix._io import atomic_write
from calix._progress import torch_threads

__all__ = ["StudyContext", "Claim", "write_json_atomic", "to_jsonable", "torch_threads",
           "RESULTS_FILE", "KINDS"]

RESULTS_FILE = "results.json"

#: what a claim is: the paper's empirical statement, a property that holds by construction
#: or tests the implementation, or a statement calix adds that the paper does not make
KINDS: dict[str, str] = {
    "finding": "the paper's empirical statement",
    "check": "holds by construction or tests the implementation",
    "extension": "calix's own statement, not made by the paper",
}


C = TypeVar("C")


@dataclass
class Claim:
    """One testable claim of a paper and whether this run supports it.

    ``kind`` is one of :data:`KINDS`; ``quote`` the paper's sentence (findings);
    ``sensitivity`` maps an alternative rule (in words) to the verdict it gives on the same
    run. ``results.json`` files written before these fields existed read back with
    :meth:`from_dict` (no kind: ``None``).
    """

    claim: str
    holds: bool
    evidence: dict[str, Any]
    paper: str = ""
    kind: str | None = "finding"
    quote: str = ""
    sensitivity: dict[str, bool] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind is not None and self.kind not in KINDS:
            raise ValueError(f"claim kind must be one of {sorted(KINDS)}, got {self.kind!r}")

    @property
    def flips(self) -> list[str]:
        """The alternative rules under which the verdict would differ."""
        return [rule for rule, v in self.sensitivity.items() if bool(v) != bool(self.holds)]

    def as_dict(self) -> dict[str, Any]:
        out = {"claim": self.claim, "holds": bool(self.holds), "kind": self.kind,
               "evidence": to_jsonable(self.evidence), "paper": self.paper}
        if self.quote:
            out["quote"] = self.quote
        if self.sensitivity:
            out["sensitivity"] = {k: bool(v) for k, v in self.sensitivity.items()}
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Claim:
        """A claim of a ``results.json`` (older files have no kind, quote or sensitivity)."""
        return cls(str(d.get("claim", "")), bool(d.get("holds")), dict(d.get("evidence", {})),
                   str(d.get("paper", "") or ""), d.get("kind"), str(d.get("quote", "") or ""),
                   {str(k): bool(v) for k, v in (d.get("sensitivity") or {}).items()})


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

    def use_config(self, config_type: type[C]) -> C:
        """The study's configuration for this run: ``config_type`` is a frozen dataclass with
        ``quick(seed)`` and ``full(seed)`` constructors; the one of this run's size is built
        with its seed and its fields are recorded (``dataclasses.asdict``) as by
        :meth:`configure`."""
        make = config_type.quick if self.quick else config_type.full  # type: ignore[attr-defined]
        config = make(self.seed)
        self.configure(**dataclasses.asdict(config))
        return config

    def size(self, quick: Any, full: Any) -> Any:
        """``quick`` in quick mode, else ``full`` (for a study script without a
        :meth:`use_config` dataclass)."""
        return quick if self.quick else full

    def configure(self, **config: Any) -> dict[str, Any]:
        """Record the study's configuration (returned for convenience)."""
        self.config.update(config)
        return self.config

    def table(self, name: str, rows: list[Mapping[str, Any]]) -> None:
        """Record a table as a list of flat rows (dicts of numbers and strings)."""
        self.tables[name] = [dict(to_jsonable(dict(r))) for r in rows]

    def claim(self, text: str, holds: Any, evidence: Mapping[str, Any], *,
              paper: str = "", kind: str = "finding", quote: str = "",
              sensitivity: Mapping[str, Any] | None = None) -> Claim:
        """Record whether the run supports a claim, with the numbers it rests on.

        ``paper`` states what the paper reports for comparison (free text); ``kind`` is one of
        :data:`KINDS`; ``quote`` the paper's sentence a finding tests; ``sensitivity`` the
        verdicts of the nearest alternative rules (``{rule in words: holds}``).
        """
        c = Claim(text, bool(holds), dict(evidence), paper, kind, quote,
                  {str(k): bool(v) for k, v in (sensitivity or {}).items()})
        self.claims.append(c)
        if self.console is not None:
            from rich.markup import escape

            mark = "holds" if c.holds else "does not hold"
            self.console.print(f"  [{'green' if c.holds else 'red'}]{mark}[/] ({kind}): "
                               f"{escape(text)}")
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
        arrays = {k: np.asarray(v) for k, v in arrays.items()}
        atomic_write(path, lambda f: np.savez_compressed(f, **arrays))
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


def write_json_atomic(path: str | Path, doc: Any) -> None:
    """Write JSON to ``path`` all at once (:func:`calix._io.atomic_write`: a per-process
    temporary file, fsynced and renamed), so it is never half-written."""
    text = json.dumps(to_jsonable(doc), indent=2, allow_nan=False)
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


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
