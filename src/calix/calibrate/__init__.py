"""Post-hoc calibrators: temperature scaling, Dirichlet, ReCalX and the calibrators beyond.

Each calibrator is a torch module that maps logits to calibrated logits (their softmax is the
calibrated probability), with the scikit-learn contract: ``fit`` returns ``self``, fitted state
ends in ``_``, and using an unfitted calibrator raises :class:`NotFittedError`. Those with
``differentiable = True`` let gradient explainers see the calibration when a model is wrapped
with :func:`calibrated`; gradient explainers refuse the others by name.

- :class:`TemperatureScaling` -- one temperature T, ``z / T`` (Guo et al. 2017).
- :class:`Dirichlet` -- ``W ln softmax(z) + b`` with ODIR regularisation (Kull et al. 2019).
  It may change the argmax.
- :class:`ReCalX` -- one temperature per perturbation-level bin, ``z / T_{bin(λ)}``: the level
  λ of every query must be known (the perturbation engine passes it).
- :class:`VectorScaling`, :class:`MatrixScaling` (ODIR), :class:`StructuredMatrixScaling`,
  :class:`PlattScaling`, :class:`BetaCalibration` -- differentiable;
  :class:`HistogramBinning`, :class:`IsotonicCalibration`, :class:`VennAbers` (with
  probability intervals) -- not differentiable. Binary methods run one-vs-rest for k > 2.
- :class:`ByLevel` -- any calibrator fitted per level bin (``by_level_<name>`` in
  :data:`CALIBRATORS`); :class:`SmoothLevelTemperature` -- ``z / T(λ)`` with ln T a line or
  a natural spline in λ.

Example
-------
>>> import torch
>>> from calix.calibrate import TemperatureScaling
>>> logits, labels = 3 * torch.randn(500, 4), torch.randint(0, 4, (500,))
>>> ts = TemperatureScaling().fit(logits, labels)
>>> ts(logits).shape
torch.Size([500, 4])
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from calix._registry import Registry
from calix._validation import check_choice
from calix.calibrate.base import (  # noqa: F401  (constants keep their old path)
    PROB_EPS,
    PROBABILITY_ATOL,
    T_MAX,
    T_MIN,
    Calibrator,
    NonDifferentiableCalibratorError,
    NotFittedError,
    check_logits_labels,
)
from calix.calibrate.binning import (  # noqa: F401  (its chunk size, re-exported)
    _VENN_ABERS_CHUNK,
    HistogramBinning,
    IsotonicCalibration,
    VennAbers,
)
from calix.calibrate.dirichlet import Dirichlet
from calix.calibrate.levels import (  # noqa: F401  (level_bins keeps its old path)
    ByLevel,
    ByLevelBetaCalibration,
    ByLevelDirichlet,
    ByLevelHistogramBinning,
    ByLevelIsotonicCalibration,
    ByLevelMatrixScaling,
    ByLevelPlattScaling,
    ByLevelStructuredMatrixScaling,
    ByLevelVectorScaling,
    ByLevelVennAbers,
    ReCalX,
    SmoothLevelTemperature,
    level_bins,
    perturbed_logits,
)
from calix.calibrate.scaling import (
    BetaCalibration,
    MatrixScaling,
    PlattScaling,
    StructuredMatrixScaling,
    TemperatureScaling,
    VectorScaling,
)
from calix.models import Model
from calix.perturb import Perturbation

__all__ = [
    "Calibrator", "TemperatureScaling", "Dirichlet", "ReCalX", "CalibratedModel", "calibrated",
    "NotFittedError", "check_logits_labels", "fit_calibrator", "perturbed_logits", "METHODS",
    "CALIBRATORS", "VectorScaling", "MatrixScaling", "StructuredMatrixScaling", "PlattScaling",
    "BetaCalibration", "IsotonicCalibration", "HistogramBinning", "VennAbers", "ByLevel",
    "SmoothLevelTemperature", "ByLevelVectorScaling", "ByLevelMatrixScaling",
    "ByLevelStructuredMatrixScaling", "ByLevelDirichlet", "ByLevelPlattScaling",
    "ByLevelBetaCalibration", "ByLevelHistogramBinning", "ByLevelIsotonicCalibration",
    "ByLevelVennAbers", "NonDifferentiableCalibratorError", "check_differentiable",
]

#: name -> calibrator class. Metadata: ``fit_on`` -- "clean" (fitted on clean validation
#: logits) or "perturbed" (on perturbed validation samples, :meth:`ReCalX.fit_perturbed`);
#: ``seeded`` -- whether the constructor takes ``seed``.
CALIBRATORS: Registry[type[Calibrator]] = Registry("calibrator")
for _name, _cls, _fit_on, _seeded in (
    ("temperature", TemperatureScaling, "clean", False),
    ("dirichlet", Dirichlet, "clean", True),
    ("recalx", ReCalX, "perturbed", False),
    ("vector", VectorScaling, "clean", False),
    ("matrix", MatrixScaling, "clean", True),
    ("structured_matrix", StructuredMatrixScaling, "clean", False),
    ("platt_scaling", PlattScaling, "clean", False),
    ("beta", BetaCalibration, "clean", False),
    ("isotonic", IsotonicCalibration, "clean", False),
    ("histogram", HistogramBinning, "clean", False),
    ("venn_abers", VennAbers, "clean", False),
):
    CALIBRATORS.register(_name, _cls, fit_on=_fit_on, seeded=_seeded)
# each ByLevel class under ``by_level_<name>``, seeded when its template is
for _name, _cls in (
    ("vector", ByLevelVectorScaling),
    ("matrix", ByLevelMatrixScaling),
    ("structured_matrix", ByLevelStructuredMatrixScaling),
    ("dirichlet", ByLevelDirichlet),
    ("platt_scaling", ByLevelPlattScaling),
    ("beta", ByLevelBetaCalibration),
    ("histogram", ByLevelHistogramBinning),
    ("isotonic", ByLevelIsotonicCalibration),
    ("venn_abers", ByLevelVennAbers),
):
    CALIBRATORS.register(f"by_level_{_name}", _cls, fit_on="perturbed",
                         seeded=CALIBRATORS.meta(_name)["seeded"])
CALIBRATORS.register("smooth_level_temperature", SmoothLevelTemperature, fit_on="perturbed",
                     seeded=False)
del _name, _cls, _fit_on, _seeded

#: the calibrator names of :data:`CALIBRATORS`, in order
METHODS = CALIBRATORS.names()


def _registered_name(cal: Calibrator) -> str:
    for name, cls in CALIBRATORS.items():
        if type(cal) is cls:
            return name
    return type(cal).__name__


def check_differentiable(model: Any, who: str) -> None:
    """Raise :class:`NonDifferentiableCalibratorError` when ``model`` (or a model it wraps) is
    calibrated by a calibrator with ``differentiable = False``; ``who`` names the method that
    needs the gradients. Models without a calibrator pass."""
    seen = 0
    while model is not None and seen < 32:
        cal = getattr(model, "calibrator", None)
        if isinstance(cal, Calibrator) and not cal.differentiable:
            inner = (f"{type(cal).__name__} ({_registered_name(cal)})"
                     if not isinstance(cal, ByLevel) else
                     f"{type(cal).__name__} ({_registered_name(cal)}, per-level copies of "
                     f"{cal.calibrator_name})")
            usable = ", ".join(n for n, c in CALIBRATORS.items() if c.differentiable)
            raise NonDifferentiableCalibratorError(
                f"{who} takes gradients through the model, but the model is calibrated by "
                f"{inner}, which is not differentiable (a piecewise-constant map has no useful "
                f"gradient); calibrate with a differentiable calibrator ({usable}) or use a "
                "perturbation explainer (occlusion, LIME, KernelSHAP, RISE)")
        model = getattr(model, "base", None)
        seen += 1


class CalibratedModel(Model):
    """A model followed by a calibrator; outputs calibrated logits, differentiable.

    Level-aware calibrators get each query's level from the perturbation engine. A query
    without levels is taken as clean (λ = 0) when ``assume_clean`` is True (default);
    otherwise it raises.
    """

    def __init__(self, base: Model, calibrator: Calibrator, *, assume_clean: bool = True):
        if not isinstance(base, Model):
            raise TypeError("base must be a calix Model (use calix.wrap first)")
        if base.task != "classification":
            raise TypeError("calibration applies to classifiers, not regressors")
        if not isinstance(calibrator, Calibrator):
            raise TypeError(f"calibrator must be a calix Calibrator, got {type(calibrator)}")
        calibrator._check_fitted()
        super().__init__(task="classification", input_shape=base.input_shape,
                         batch_size=base.batch_size, device=base.device)
        self.base = base
        self.calibrator = calibrator.to(base.device)
        self.assume_clean = bool(assume_clean)
        self.differentiable = base.differentiable
        self.level_aware = calibrator.level_aware

    def forward(self, x: Any, *, levels: Tensor | None = None, grad: bool | None = None,
                progress: bool = False, validate: bool = True) -> Tensor:
        """As :meth:`Model.forward`; asking for gradients through a non-differentiable
        calibrator raises :class:`NonDifferentiableCalibratorError`."""
        wants = grad if grad is not None else bool(isinstance(x, Tensor) and x.requires_grad)
        if wants:
            check_differentiable(self, "a gradient computation")
        return super().forward(x, levels=levels, grad=grad, progress=progress,
                               validate=validate)

    def _forward(self, x: Tensor) -> Tensor:
        return self._forward_levels(x, None)

    def _forward_levels(self, chunk: Tensor, levels: Tensor | None) -> Tensor:
        z = self.base._checked_forward(chunk, None)
        if levels is None and self.calibrator.level_aware:
            if not self.assume_clean:
                raise ValueError("this calibrated model needs the perturbation level of "
                                 "every query (levels=)")
            levels = torch.zeros(len(chunk), device=z.device)
        return self.calibrator(z, levels)


def calibrated(model: Any, calibrator: Calibrator, *, assume_clean: bool = True) -> Model:
    """``model`` followed by a fitted ``calibrator``, as a :class:`~calix.models.Model`.

    Gradients flow through the calibrator, so gradient explainers explain the calibrated
    probabilities.
    """
    from calix.models import wrap

    return CalibratedModel(wrap(model), calibrator, assume_clean=assume_clean)


def fit_calibrator(method: str, model: Model, X_val: Any, y_val: Any, *,
                   perturbation: Perturbation | None = None, n_bins: int = 10,
                   n_samples: int = 200, n_per_bin: int = 10, seed: int = 0,
                   progress: bool = False) -> Calibrator:
    """Fit calibrator ``method`` (any name of :data:`CALIBRATORS`) for ``model`` on validation
    data.

    Those registered with ``fit_on="clean"`` (temperature, dirichlet, vector, ...) are fitted
    on clean validation logits; those with ``fit_on="perturbed"`` (recalx, by_level_*,
    smooth_level_temperature) on perturbed validation samples from ``perturbation``
    (required for them), ``n_bins`` level bins. ``seed`` reaches the calibrators that draw
    (cross-validation folds).
    """
    check_choice(method, METHODS, "method")
    cls, meta = CALIBRATORS[method], CALIBRATORS.meta(method)
    kwargs = {"seed": seed} if meta["seeded"] else {}
    if meta["fit_on"] == "perturbed":
        if perturbation is None:
            raise ValueError(f"{method} needs a perturbation to draw its validation samples")
        return cls(n_bins, **kwargs).fit_perturbed(model, X_val, y_val, perturbation,
                                                   n_samples=n_samples, n_per_bin=n_per_bin,
                                                   seed=seed, progress=progress)
    logits = model.forward(X_val, grad=False, progress=progress)
    return cls(**kwargs).fit(logits, y_val)
