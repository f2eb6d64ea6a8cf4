"""Compare two folders of study runs number by number: the check that a change which should not
change results did not (same seeds, same code paths).

Usage::

    python tests/compare_runs.py RUNS_A RUNS_B [--rtol 1e-6] [--atol 1e-9]

Each folder holds ``<study>/results.json`` (``calix demo --out DIR`` writes one). For every
study in both, the claims' verdicts and every number of every table and every claim's evidence
are compared (relative tolerance ``rtol``, absolute ``atol``); wall-clock times (keys ending in
``_s`` or ``seconds``), the environment and file lists are ignored. Prints each difference
and exits 1 if there is any.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

IGNORED = {"wall_time_s", "environment", "figures", "arrays"}


def _timing(key: str) -> bool:
    """Keys holding wall-clock times (``explain_seconds``, ``time_s``, ``timings_s``, ...),
    which differ from run to run whatever the code."""
    return key.endswith("_s") or key.endswith("seconds")


def differences(a: Any, b: Any, path: str, rtol: float, atol: float) -> list[str]:
    """Where two JSON values differ, as ``path: a != b`` lines."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            if key in IGNORED or _timing(key):
                continue
            if key not in a or key not in b:
                out.append(f"{path}/{key}: only in {'B' if key not in a else 'A'}")
                continue
            out += differences(a[key], b[key], f"{path}/{key}", rtol, atol)
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} items != {len(b)} items"]
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True))
                for d in differences(x, y, f"{path}[{i}]", rtol, atol)]
    numbers = (int, float)
    if (isinstance(a, numbers) and isinstance(b, numbers)
            and not isinstance(a, bool) and not isinstance(b, bool)):
        if math.isclose(a, b, rel_tol=rtol, abs_tol=atol):
            return []
        return [f"{path}: {a!r} != {b!r}"]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def compare(runs_a: Path, runs_b: Path, rtol: float = 1e-6, atol: float = 1e-9
            ) -> dict[str, list[str]]:
    """Differences per study present in both folders (a study in one folder only is listed
    under its name with one line saying so)."""
    found_a = {p.parent.name: p for p in runs_a.glob("*/results.json")}
    found_b = {p.parent.name: p for p in runs_b.glob("*/results.json")}
    out: dict[str, list[str]] = {}
    for name in sorted(set(found_a) | set(found_b)):
        if name not in found_a or name not in found_b:
            out[name] = [f"only in {'B' if name not in found_a else 'A'}"]
            continue
        doc_a = json.loads(found_a[name].read_text())
        doc_b = json.loads(found_b[name].read_text())
        out[name] = differences(doc_a, doc_b, name, rtol, atol)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs_a", type=Path)
    parser.add_argument("runs_b", type=Path)
    parser.add_argument("--rtol", type=float, default=1e-6)
    parser.add_argument("--atol", type=float, default=1e-9)
    args = parser.parse_args(argv)
    result = compare(args.runs_a, args.runs_b, args.rtol, args.atol)
    for name, diffs in result.items():
        print(f"{name}: {'same' if not diffs else f'{len(diffs)} differences'}")
        for d in diffs[:20]:
            print(f"  {d}")
        if len(diffs) > 20:
            print(f"  ... and {len(diffs) - 20} more")
    return 1 if any(result.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
