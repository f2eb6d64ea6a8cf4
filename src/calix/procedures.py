"""Procedures that train or calibrate on the way to a number: the layer above the metrics.

:mod:`calix.metrics` only scores what it is given -- probabilities, maps, explainers. The
procedures here also query models on perturbed inputs and retrain models:

- :func:`calibration_by_level` -- calibration error per perturbation-level bin (ReCalX's
  evaluation), on the perturbed validation samples of :func:`calix.calibrate.perturbed_logits`;
- :func:`roar_tabular`, :func:`roar_images` -- remove-and-retrain: the zoo models retrained on
  data with the most important features removed.

They are importable from their old places too (``calix.metrics``,
``calix.metrics.calibration``, ``calix.metrics.faithfulness``).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch

from calix import zoo
from calix._registry import Registry
from calix._validation import check_choice
from calix.calibrate import perturbed_logits
from calix.data import Dataset
from calix.metrics.calibration import LevelCalibration, ce_kl, ce_kl_binned, ece
from calix.metrics.faithfulness import _flat_maps, _ranks
from calix.perturb import Constant, Fill, Perturbation, Pixels, level_bins

__all__ = ["calibration_by_level", "roar_tabular", "roar_images"]

#: name -> calibration metric of :func:`calibration_by_level` (``metric=``); the command
#: line offers the same names (calix._names.LEVEL_METRICS)
_LEVEL_METRICS: Registry = Registry("level metric")
for _fn in (ce_kl, ce_kl_binned, ece):
    _LEVEL_METRICS.register(_fn.__name__, _fn, direction=_fn.direction, category=_fn.category)
del _fn


def calibration_by_level(
    model: Any,
    X: Any,
    y: Any,
    perturbation: Any,
    *,
    n_bins: int = 10,
    n_samples: int = 500,
    n_per_bin: int = 10,
    metric: Literal["ce_kl", "ce_kl_binned", "ece"] = "ce_kl",
    min_samples: int = 20,
    seed: int = 0,
    progress: bool = False,
) -> LevelCalibration:
    """CE per perturbation-level bin, plus CE^AVG and CE^MAX (ReCalX's evaluation).

    Every one of the first ``n_samples`` inputs is perturbed ``n_per_bin`` times in each of
    ``n_bins`` level bins through the perturbation engine; the metric is computed on the
    (calibrated) probabilities of the samples whose realised level falls in each bin.

    Parameters
    ----------
    model : calix Model (possibly calibrated)
    X, y : evaluation inputs (n, *input_shape) and labels (n,)
    perturbation : calix Perturbation
    metric : {"ce_kl", "ce_kl_binned", "ece"}
    min_samples : int -- bins with fewer samples get NaN.
    """
    check_choice(metric, _LEVEL_METRICS, "metric", listed=sorted(_LEVEL_METRICS))
    logits, labels, levels = perturbed_logits(
        model, X, y, perturbation, n_samples=n_samples, n_per_bin=n_per_bin, n_bins=n_bins,
        seed=seed, progress=progress)
    probs = torch.softmax(logits.double(), -1).cpu().numpy()
    lab = labels.cpu().numpy()
    bins = level_bins(levels.cpu(), n_bins).cpu().numpy()
    fn = _LEVEL_METRICS[metric]
    errors = np.full(n_bins, np.nan)
    acc = np.full(n_bins, np.nan)
    conf = np.full(n_bins, np.nan)
    counts = np.bincount(bins, minlength=n_bins)
    for b in range(n_bins):  # one metric per bin; the model queries above are batched
        sel = bins == b
        if counts[b] >= max(min_samples, 3):
            errors[b] = fn(probs[sel], lab[sel])
            acc[b] = float(np.mean(probs[sel].argmax(1) == lab[sel]))
            conf[b] = float(probs[sel].max(1).mean())
    if np.all(np.isnan(errors)):
        raise ValueError(f"no level bin has at least {min_samples} samples")
    return LevelCalibration(metric, errors, counts, np.linspace(0, 1, n_bins + 1), acc, conf)


def roar_tabular(dataset: Any, importances: Any, *, fractions: Any = (0.0, 0.1, 0.2, 0.3, 0.5),
                 seeds: tuple[int, ...] = (0, 1, 2), epochs: int | None = None
                 ) -> dict[str, Any]:
    """Remove-and-retrain with global feature importances on tabular data.

    For each fraction k, the top-k share of features (by ``importances``) is replaced by its
    training mean (0 after standardisation) in every split, the zoo MLP is retrained with
    each seed, and test accuracy and NLL are recorded.

    Returns
    -------
    dict with ``fractions``, ``removed`` (feature indices per fraction), ``accuracy`` and
    ``nll`` arrays of shape (len(fractions), len(seeds)).
    """
    imp = np.asarray(importances, dtype=np.float64).reshape(-1)
    d = dataset.X_train.shape[1]
    if dataset.X_train.ndim != 2 or len(imp) != d:
        raise ValueError(f"importances must have one value per column ({d}), got {len(imp)}")
    order = np.argsort(-imp, kind="stable")
    acc = np.zeros((len(fractions), len(seeds)))
    nll = np.zeros_like(acc)
    removed = []
    for a, frac in enumerate(fractions):
        cols = order[: int(round(frac * d))]
        removed.append(cols.tolist())
        splits = {}
        for split in ("train", "val", "test"):
            X = getattr(dataset, f"X_{split}").copy()
            X[:, cols] = dataset.mean[cols]
            splits[split] = X
        ds = Dataset(**{**dataset.__dict__, "X_train": splits["train"], "X_val": splits["val"],
                        "X_test": splits["test"], "name": f"{dataset.name}-roar{frac:g}"})
        for b, seed in enumerate(seeds):  # retraining is the method: one model per (k, seed)
            m = zoo.train("mlp", ds, seed=seed, epochs=epochs, cache=False).metrics
            acc[a, b], nll[a, b] = m["accuracy"], m["nll"]
    return {"fractions": list(fractions), "removed": removed, "accuracy": acc, "nll": nll}


def roar_images(dataset: Any, maps_train: Any, maps_test: Any, *,
                fractions: Any = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9), fill: Fill | None = None,
                seeds: tuple[int, ...] = (0,), epochs: int | None = None) -> dict[str, Any]:
    """Remove-and-retrain with per-image maps: replace each image's top-k% pixels, retrain
    the zoo CNN, report test accuracy per fraction (and the map-free random baseline is the
    caller's choice of maps).

    Parameters
    ----------
    maps_train, maps_test : arrays (n_split, C, H, W) -- attributions of every training and
        test image.
    """
    fill = fill or Constant(0.0)
    out = {"fractions": list(fractions), "accuracy": np.zeros((len(fractions), len(seeds)))}
    for a, frac in enumerate(fractions):
        arrays = {}
        for split, maps in (("train", maps_train), ("test", maps_test)):
            X = torch.as_tensor(getattr(dataset, f"X_{split}"))
            flat = _flat_maps(maps, X)
            k = int(round(frac * flat.shape[1]))
            keep = ~(_ranks(flat, True) < k)  # (n, d) per-input mask
            pert = Perturbation(Pixels(), fill).apply(X, keep[:, None, :]).inputs[:, 0]
            arrays[split] = pert.numpy()
        ds = Dataset(**{**dataset.__dict__, "X_train": arrays["train"],
                        "X_test": arrays["test"], "name": f"{dataset.name}-roar{frac:g}"})
        for b, seed in enumerate(seeds):
            out["accuracy"][a, b] = zoo.train("cnn", ds, seed=seed, epochs=epochs,
                                              cache=False).metrics["accuracy"]
    return out
