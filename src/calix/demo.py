"""``calix demo``: the five studies in quick mode, then one HTML report.

The zoo models are trained (and cached) by the studies that use them; each study writes
``DIR/<study>/results.json`` when it finishes. Rerun after an interruption, the demo reads back
every finished study (same seed and size) and computes only the rest, so no finished work is
lost: cached models are not retrained and finished studies are not rerun.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from calix.report import claim_counts_text, write_report
from calix.studies import STUDIES, is_finished, run_study

__all__ = ["run_demo"]


def run_demo(
    out: str | Path,
    *,
    seed: int = 0,
    quick: bool = True,
    studies: Sequence[str] | None = None,
    console: Any = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Run ``studies`` (default: all five) into ``out/<study>`` and write ``out/report.html``.

    Returns ``{"report": path, "studies": {name: {"resumed": bool, "wall_time_s": float,
    "claims_holding": int, "claims": int, "counts": str}}}`` (``counts``: the claim
    counts by kind in words, :func:`calix.report.claim_counts_text`).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    names = list(studies) if studies else list(STUDIES)
    unknown = [n for n in names if n not in STUDIES]
    if unknown:
        raise ValueError(f"unknown studies {unknown}; choose from {sorted(STUDIES)}")
    summary: dict[str, Any] = {}
    for i, name in enumerate(names, 1):
        folder = out / name
        resumed = is_finished(name, folder, quick=quick, seed=seed)
        if console is not None:
            state = "finished earlier, read back" if resumed else "running"
            console.rule(f"[{i}/{len(names)}] {name}: {state}")
        t0 = time.perf_counter()
        doc = run_study(name, folder, quick=quick, seed=seed, progress=progress,
                        console=None if resumed else console)
        claims = doc["claims"]
        summary[name] = {"resumed": resumed, "wall_time_s": round(time.perf_counter() - t0, 1),
                         "claims_holding": sum(c["holds"] for c in claims),
                         "claims": len(claims), "counts": claim_counts_text(doc)}
        if console is not None:
            console.print(f"{name}: {claim_counts_text(doc)} ({doc['wall_time_s']:.0f} s)")
    size = "quick mode" if quick else "full size"
    report = write_report(out, title=f"calix demo: {len(names)} studies ({size}, seed {seed})",
                          only=names)
    return {"report": str(report), "studies": summary}
