"""Recipes: the standard ways calix's pieces are put together, shared by the CLI and demo.

- :func:`default_perturbation` -- the features and fill calix uses for a dataset by default;
- :func:`compare_calibration` -- fit calibrators, then measure calibration by perturbation
  level for each (ReCalX's evaluation protocol).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from calix.calibrate import calibrated, fit_calibrator
from calix.data import Dataset
from calix.metrics.calibration import LevelCalibration, ece
from calix.models import Model
from calix.perturb import Blur, Columns, Constant, Mean, PatchGrid, Perturbation
from calix.procedures import calibration_by_level

__all__ = ["FILLS", "default_perturbation", "compare_calibration", "CalibrationComparison"]

FILLS = {"image": ("zero", "blur", "mean"), "tabular": ("mean", "zero")}


def default_perturbation(dataset: Dataset, fill: str) -> Perturbation:
    """Features and fill for ``dataset``.

    Images: a 4×4 grid of patches (patch side = image side / 4), filled with ``zero``
    (black), ``blur`` (Gaussian, 11×11 and σ = 5 for 16×16 images, 5×5 and σ = 2 for 8×8) or
    ``mean`` (training-pixel means). Tabular: one feature per column, filled with ``mean``
    (training means, i.e. 0 after standardisation) or ``zero``.
    """
    kind = "image" if dataset.is_image else "tabular"
    if fill not in FILLS[kind]:
        raise ValueError(f"fill must be one of {FILLS[kind]} for {kind} data, got {fill!r}")
    if fill == "mean":
        filler = Mean().fit(dataset.X_train)
    elif fill == "zero":
        filler = Constant(0.0)
    else:
        side = dataset.input_shape[-1]
        filler = Blur(11, 5.0) if side >= 12 else Blur(5, 2.0)
    if kind == "image":
        return Perturbation(PatchGrid(max(1, dataset.input_shape[-1] // 4)), filler)
    return Perturbation(Columns(), filler)


@dataclass
class CalibrationComparison:
    """Calibration of one model under several calibrators.

    Attributes
    ----------
    by_level : dict method -> LevelCalibration (CE per perturbation level)
    clean_ece : dict method -> ECE on clean test inputs
    clean_accuracy : dict method -> accuracy on clean test inputs
    calibrators : dict method -> fitted calibrator (absent for "none")
    """

    by_level: dict[str, LevelCalibration] = field(default_factory=dict)
    clean_ece: dict[str, float] = field(default_factory=dict)
    clean_accuracy: dict[str, float] = field(default_factory=dict)
    calibrators: dict[str, Any] = field(default_factory=dict)

    def rows(self) -> list[dict[str, Any]]:
        """One row per method: ECE (clean), CE avg and max over levels."""
        return [
            {"method": m, "clean_accuracy": self.clean_accuracy[m], "clean_ece": self.clean_ece[m],
             "metric": lc.metric, "ce_avg": lc.avg, "ce_max": lc.max}
            for m, lc in self.by_level.items()
        ]


def compare_calibration(
    model: Model,
    dataset: Dataset,
    perturbation: Perturbation,
    *,
    methods: tuple[str, ...] = ("none", "temperature", "recalx"),
    metric: str = "ce_kl",
    n_bins: int = 10,
    n_fit: int = 200,
    n_eval: int = 500,
    n_per_bin: int = 10,
    seed: int = 0,
    progress: bool = False,
) -> CalibrationComparison:
    """Fit each calibrator on the validation split and evaluate on the test split.

    ``none`` is the uncalibrated model. Evaluation perturbs the first ``n_eval`` test inputs
    ``n_per_bin`` times per level bin (a different seed from fitting).
    """
    out = CalibrationComparison()
    for method in methods:
        if method == "none":
            m = model
        else:
            cal = fit_calibrator(method, model, dataset.X_val, dataset.y_val,
                                 perturbation=perturbation, n_bins=n_bins, n_samples=n_fit,
                                 n_per_bin=n_per_bin, seed=seed, progress=progress)
            out.calibrators[method] = cal
            m = calibrated(model, cal)
        probs = m.predict_proba(dataset.X_test)
        out.clean_ece[method] = ece(probs, dataset.y_test)
        out.clean_accuracy[method] = float(np.mean(probs.argmax(1) == dataset.y_test))
        out.by_level[method] = calibration_by_level(
            m, dataset.X_test, dataset.y_test, perturbation, n_bins=n_bins, n_samples=n_eval,
            n_per_bin=n_per_bin, metric=metric, seed=seed + 1, progress=progress)
    return out
