"""The five studies calix reproduces, one module per paper, and calix's own ground-truth study,
built only from calix's public parts.

=========================  ==================================================================
``recalx``                 ReCalX: per-level temperatures vs temperature scaling (CE_KL by
                           level), explanation sensitivity and remove-and-retrain with ReCalX
``explanation-uncertainty``  MC-Dropout, MC-DropConnect, ensembles, Flipout x Guided Backprop,
                           IG, LIME: mean / std / CV maps, insertion-deletion, per-class CV
``eagle``                  EAGLE vs LIME, GLIME, US-LIME, BayesLIME at several query budgets
``calibrate-to-interpret``  none / temperature / Dirichlet x Sensitivity, IG, RISE, MP
``fpa``                    Feature Perturbation Augmentation: MIF/LIF fidelity of gradient maps
``ground-truth``           calix's own: explainers, calibration and FPA against known right
                           explanations on generated tables and images (:mod:`calix.groundtruth`)
=========================  ==================================================================

Each study module holds a ``run(ctx)`` and a frozen ``Config`` dataclass (its sizes and
settings, ``Config.quick(seed)`` and ``Config.full(seed)``), recorded as ``config``. Each study
writes ``DIR/results.json`` (``study``, ``config``, ``seed``, ``tables``, ``claims``,
``figures``, ``arrays``, ``wall_time_s``) and its figures and arrays beside it. Every claim has a
``kind`` -- ``finding`` (the paper's empirical statement, with its ``quote``), ``check`` (holds
by construction or tests the implementation) or ``extension`` (calix's own) -- and records in
``sensitivity`` the verdicts of the nearest alternative rules. :mod:`calix.studies.pages`
writes the study pages of ``docs/studies`` from these files.

Example
-------
>>> from calix.studies import run_study
>>> doc = run_study("recalx", "results/recalx", quick=True, seed=0)   # doctest: +SKIP
>>> [(c["claim"], c["holds"]) for c in doc["claims"]]                  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

from calix._registry import Registry
from calix.studies._base import RESULTS_FILE, Claim, StudyContext, run_in_context

__all__ = ["STUDIES", "run_study", "load_results", "is_finished", "StudyContext", "Claim"]

#: study name -> its module under ``calix.studies`` (the module is imported only when the
#: study runs; ``calix._names.STUDIES`` lists the same names for the command line)
STUDIES: Registry[str] = Registry("study")
for _name, _module_name in (
    ("recalx", "recalx"),
    ("explanation-uncertainty", "explanation_uncertainty"),
    ("eagle", "eagle"),
    ("calibrate-to-interpret", "calibrate_to_interpret"),
    ("fpa", "fpa"),
    ("ground-truth", "ground_truth"),
):
    STUDIES.register(_name, _module_name)
del _name, _module_name


def _module(name: str) -> Any:
    """The module of study ``name``; an unknown name raises a ``ValueError`` (and
    ``KeyError``) naming the known studies and the closest one."""
    return importlib.import_module(f"calix.studies.{STUDIES.get(name)}")


def load_results(out: str | Path) -> dict[str, Any]:
    """Read ``out/results.json``; raises FileNotFoundError with the path when it is missing."""
    path = Path(out) / RESULTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no {RESULTS_FILE} in {Path(out)} (run the study first)")
    return json.loads(path.read_text())


def is_finished(name: str, out: str | Path, *, quick: bool, seed: int) -> bool:
    """Whether ``out`` holds a finished run of ``name`` with the same size and seed."""
    try:
        doc = load_results(out)
    except (FileNotFoundError, json.JSONDecodeError):
        return False
    return (doc.get("study") == name and doc.get("seed") == seed
            and doc.get("config", {}).get("quick") == quick)


def run_study(
    name: str,
    out: str | Path,
    *,
    quick: bool = False,
    seed: int = 0,
    progress: bool = False,
    console: Any = None,
    resume: bool = True,
) -> dict[str, Any]:
    """Run study ``name`` and write ``out/results.json``; returns the results document.

    With ``resume`` (default) a finished run of the same study, size and seed in ``out`` is
    read back instead of recomputed. Trained models are cached by :mod:`calix.zoo` either way,
    so an interrupted study restarts without retraining.
    """
    module = _module(name)
    if resume and is_finished(name, out, quick=quick, seed=seed):
        return load_results(out)
    # a stale results.json must not outlive an interrupted rerun and be read back as finished
    (Path(out) / RESULTS_FILE).unlink(missing_ok=True)
    ctx = StudyContext(name, Path(out), quick=quick, seed=seed, progress=progress,
                       console=console)
    return run_in_context(name, module.run, ctx)
