"""Perturbation explainers on the shared engine: occlusion, RISE, Meaningful Perturbation.

All of them build their queries as masks for :class:`calix.perturb.Perturbation` and send the
queries of every input through one batched, chunked path, with each query's perturbation
level (so a ReCalX-calibrated model calibrates every query at its own level).
"""

from __future__ import annotations

import copy
import math
import warnings
from typing import Any

import torch
from torch import Tensor

from calix._validation import check_count
from calix.calibrate import check_differentiable
from calix.exceptions import DefaultFillWarning
from calix.explain.base import Explainer, Stochastic, _Attribution
from calix.perturb import (
    Blur,
    Columns,
    Constant,
    Features,
    Fill,
    MaskBlocks,
    Mean,
    PatchGrid,
    Perturbation,
    Pixels,
    QueryResult,
    Segmentation,
)

__all__ = ["FeatureExplainer", "Occlusion", "RISE", "MeaningfulPerturbation"]


class FeatureExplainer(Explainer):
    """Base for explainers that attribute interpretable features through the engine.

    Parameters
    ----------
    model : see :class:`~calix.explain.base.Explainer`
    features : Features or None
        Default: one feature per column for tabular inputs, a patch grid with patches of side
        H // 8 (at least 1) for images.
    fill : Fill or None
        What removed features become. Default: the mean of ``background`` when it is given;
        otherwise ``Constant(0.0)`` -- black for images, and for tables the mean only of
        *standardised* data, so a table explained without ``fill`` or ``background`` gets a
        :class:`~calix.exceptions.DefaultFillWarning`. With a
        :class:`~calix.perturb.Marginal` fill, every coalition is evaluated with every
        background row and the explained score averaged (interventional SHAP, as shap's
        ``KernelExplainer``): probabilities are averaged for ``output="probability"`` and
        ``"log_probability"`` (the latter explains the log of the averaged probability), raw
        outputs for ``output="logit"`` and regressors.
    background : array-like of shape (n_background, *input_shape) or None
        Training (or reference) data; with no ``fill``, removed features take its mean.
    perturbation : Perturbation or None
        Features and fill together (overrides ``features`` and ``fill``).
    """

    def __init__(self, model: Any, *, features: Features | None = None, fill: Fill | None = None,
                 background: Any = None, perturbation: Perturbation | None = None,
                 **kwargs: Any):
        super().__init__(model, **kwargs)
        if perturbation is not None and (features is not None or fill is not None):
            raise ValueError("give either perturbation or features/fill, not both")
        if background is not None and (fill is not None or perturbation is not None):
            raise ValueError("give either background (for the default mean fill) or fill, not "
                             "both; to use background rows as the fill, pass "
                             "fill=Marginal(background)")
        if background is not None:
            fill = Mean().fit(background)
        self._features, self._fill = features, fill
        self.perturbation = perturbation

    def engine(self, x: Tensor) -> Perturbation:
        """The perturbation engine for inputs like ``x``, resolved for this call: the given
        ``perturbation``, or the given features and fill with the defaults for ``x`` (see the
        class docstring). The explainer itself is not changed, so that one explainer explains
        tables and images, or data with other column names, as fresh explainers would."""
        if self.perturbation is not None:
            engine = self.perturbation
        else:
            if x.ndim == 2:
                feats: Features = self._features or Columns()
            elif x.ndim == 4:
                feats = self._features or PatchGrid(max(1, x.shape[-1] // 8))
            else:
                raise ValueError(
                    f"inputs must be tabular (n, d) or images (n, C, H, W), got {tuple(x.shape)}")
            engine = Perturbation(feats, self._fill or self._default_fill(x))
        if isinstance(engine.features, Columns):  # this call's column names, on a copy
            engine = copy.copy(engine)
            engine.features = copy.copy(engine.features)
            engine.features.data_names = self._column_names
        return engine

    def _default_fill(self, x: Tensor) -> Fill:
        """The fill when none is given: ``Constant(0.0)`` (with a warning for tables)."""
        if x.ndim == 2:
            warnings.warn(
                "no fill or background given: removed columns are set to 0, which is "
                "the mean only of standardised data; pass background=X_train (mean "
                "fill), fill=Mean(...)/Marginal(...), or fill=Constant(0.0) to say 0 is "
                "meant", DefaultFillWarning, stacklevel=5)
        return Constant(0.0)

    def params(self) -> dict[str, Any]:
        """The features and fill given (those resolved per call are recorded in every
        Explanation's ``params``)."""
        if self.perturbation is not None:
            feats, fill = self.perturbation.features, self.perturbation.fill
        else:
            feats, fill = self._features, self._fill
        return {**super().params(), **{k: type(v).__name__ for k, v in
                                       (("features", feats), ("fill", fill)) if v is not None}}

    @property
    def average(self) -> str:
        """How a :class:`~calix.perturb.Marginal` fill's background rows are averaged:
        ``"output"`` for logits and regressors, else ``"probability"``."""
        return "output" if self.output == "logit" or self.model.task == "regression" \
            else "probability"

    def _query(self, x: Tensor, masks: Any, *, seed: int | torch.Generator | None = None,
               progress: bool = False, engine: Perturbation | None = None) -> QueryResult:
        """Model outputs on all perturbations of ``x`` (averaged over a Marginal fill's
        background), one model batch at a time, through ``engine`` (default: resolved for
        ``x`` by :meth:`engine`)."""
        engine = self.engine(x) if engine is None else engine
        return engine.query(self.model, x, masks, seed=seed, average=self.average,
                            progress=progress)

    def _scores(self, x: Tensor, masks: Any, targets: Tensor, *,
                seed: int | torch.Generator | None = None,
                engine: Perturbation | None = None) -> tuple[Tensor, Tensor]:
        """Target scores (n, m) and levels (n, m) of all perturbations, one batched path."""
        res = self._query(x, masks, seed=seed, engine=engine)
        return self._score(res.outputs, targets), res.levels

    @staticmethod
    def to_map(feature_values: Tensor, seg: Segmentation) -> Tensor:
        """Per-feature values (n, d) painted onto the input: (n, 1, H, W) or (n, n_columns)."""
        lab = seg.labels[:, :1] if seg.labels.ndim == 4 else seg.labels
        flat = lab.reshape(len(lab), -1)
        return feature_values.gather(1, flat).reshape(lab.shape)

    def _result(self, fv: Tensor, seg: Segmentation, engine: Perturbation, *,
                std: Tensor | None = None, lower: Tensor | None = None,
                upper: Tensor | None = None, **extra: Any) -> _Attribution:
        """The attribution record of per-feature values ``fv`` (n, d) (and their ``std``,
        ``lower``, ``upper``) on the segmentation ``seg`` made by ``engine``."""
        fv = fv.detach()
        if seg.n_features.numel() and bool((seg.n_features < seg.d).any()):
            # padding columns of inputs with fewer features than the widest: no attribution
            pad = torch.arange(seg.d, device=fv.device) >= seg.n_features.to(fv.device)[:, None]
            fv = fv.masked_fill(pad, 0.0)
        feats = engine.features
        names = getattr(feats, "feature_names_", None) if isinstance(feats, Columns) else None
        return _Attribution(
            values=self.to_map(fv, seg), feature_values=fv.cpu().numpy(),
            labels=seg.labels.cpu().numpy(), extra=extra,
            std=None if std is None else std.cpu().numpy(),
            lower=None if lower is None else lower.cpu().numpy(),
            upper=None if upper is None else upper.cpu().numpy(),
            params={"features": type(feats).__name__, "fill": type(engine.fill).__name__},
            feature_names=None if names is None else list(names))


class Occlusion(FeatureExplainer):
    """Feature ablation / occlusion: s(x) − s(x with feature j removed), for every j.

    With a :class:`~calix.perturb.PatchGrid` this is occlusion with non-overlapping patches
    (Captum's ``FeatureAblation`` with the same feature mask and baseline). d + 1 queries per
    input: ``budget=`` is a cap, and inputs with more than ``budget − 1`` features are refused.
    """

    name = "occlusion"

    def _explain(self, x: Tensor, targets: Tensor) -> _Attribution:
        engine = self.engine(x)
        seg = engine.segment(x)
        d = seg.d
        self._check_cost(d + 1, f"d + 1 for {d} features")
        masks = torch.cat([torch.ones(1, d, dtype=torch.bool), ~torch.eye(d, dtype=torch.bool)])
        s, _ = self._scores(x, masks, targets, engine=engine)
        return self._result(s[:, :1] - s[:, 1:], seg, engine)


class RISE(FeatureExplainer, Stochastic):
    """RISE (Petsiuk et al. 2018): saliency = Σ_i s(x ⊙ M_i) M_i / (N p).

    Masks: ``grid``×``grid`` Bernoulli(``p``) cells, upsampled (bilinear or bicubic) to
    (grid + 1) cells and cropped at a random shift of up to one cell, so mask edges fall
    anywhere. Removed pixels take the ``fill`` (default black). Images only.

    Parameters
    ----------
    n_masks : int or None -- masks per input, one query each (default and
        Calibrate-to-Interpret: 4000); ``budget=`` sets it instead.
    grid : int (8)
    p : float -- keep probability of a cell (0.6)
    interpolation : {"bilinear", "bicubic"}
    seed : see :class:`~calix.explain.base.Stochastic`
    block_size : int
        Masks drawn at once (each block from its own seed): the memory of the masks is
        ``block_size × H × W`` floats however large ``n_masks`` is.
    """

    name = "rise"
    _budget_knob = "n_masks"

    def __init__(self, model: Any, *, n_masks: int | None = None, grid: int = 8,
                 p: float = 0.6, interpolation: str = "bilinear", fill: Fill | None = None,
                 block_size: int = 256, **kwargs: Any):
        super().__init__(model, features=Pixels(), fill=fill, **kwargs)
        self._apply_budget(n_masks, 4000)
        n_masks = check_count(self.n_masks, "n_masks")
        if grid < 1:
            raise ValueError(f"grid must be >= 1, got {grid}")
        if not 0.0 < p <= 1.0:
            raise ValueError(f"p must lie in (0, 1], got {p}")
        if interpolation not in ("bilinear", "bicubic"):
            raise ValueError(
                f"interpolation must be 'bilinear' or 'bicubic', got {interpolation!r}")
        self.n_masks, self.grid, self.p = int(n_masks), int(grid), float(p)
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        self.interpolation = interpolation
        self.block_size = int(block_size)

    def params(self) -> dict[str, Any]:
        return {**super().params(), "n_masks": self.n_masks, "grid": self.grid, "p": self.p,
                "interpolation": self.interpolation, "seed": self.seed}

    def masks(self, h: int, w: int, generator: torch.Generator) -> Tensor:
        """RISE masks of shape (n_masks, h, w), values in [0, 1]."""
        return self._draw(self.n_masks, h, w, generator)

    def _draw(self, count: int, h: int, w: int, generator: torch.Generator) -> Tensor:
        """``count`` RISE masks of shape (count, h, w)."""
        cell_h, cell_w = math.ceil(h / self.grid), math.ceil(w / self.grid)
        cells = (torch.rand(count, 1, self.grid, self.grid, generator=generator)
                 < self.p).float()
        big = torch.nn.functional.interpolate(
            cells, size=((self.grid + 1) * cell_h, (self.grid + 1) * cell_w),
            mode=self.interpolation, align_corners=False)[:, 0].clamp(0.0, 1.0)
        dy = torch.randint(0, cell_h, (count,), generator=generator)
        dx = torch.randint(0, cell_w, (count,), generator=generator)
        rows = (dy[:, None] + torch.arange(h))[:, :, None]  # (N, h, 1)
        cols = (dx[:, None] + torch.arange(w))[:, None, :]  # (N, 1, w)
        return big[torch.arange(count)[:, None, None], rows, cols]

    def mask_blocks(self, h: int, w: int, generator: torch.Generator) -> MaskBlocks:
        """The ``n_masks`` masks as :class:`~calix.perturb.MaskBlocks` of ``block_size``
        masks, each block drawn from its own seed (taken from ``generator``), so that no more
        than one block of (block_size, h * w) floats exists at once."""
        base = int(torch.randint(0, 2**62, (1,), generator=generator))
        bs = self.block_size

        def make(b: int) -> Tensor:
            count = min(bs, self.n_masks - b * bs)
            gb = torch.Generator().manual_seed((base + b) % 2**63)
            return self._draw(count, h, w, gb).reshape(count, h * w)

        return MaskBlocks(self.n_masks, h * w, make, block_size=bs)

    def _explain(self, x: Tensor, targets: Tensor) -> _Attribution:
        if x.ndim != 4:
            raise ValueError(f"RISE explains images (n, C, H, W), got {tuple(x.shape)}")
        g = self._generator()
        h, w = x.shape[-2:]
        blocks = self.mask_blocks(h, w, g)
        engine = self.engine(x)
        s, _ = self._scores(x, blocks, targets, seed=g, engine=engine)  # (n, N)
        sal = s.new_zeros(len(x), h * w)
        for cols, m in blocks.blocks(device=s.device):  # Σ_i s_i M_i, one block at a time
            sal += s[:, cols] @ m.to(s)
        sal /= self.n_masks * self.p
        return self._result(sal, engine.segment(x), engine)


class MeaningfulPerturbation(FeatureExplainer):
    """Meaningful Perturbation (Fong & Vedaldi 2017), the deletion game, batched over inputs.

    Finds a pixel mask m ∈ [0, 1] (1 keeps) minimising
    s(x ⊙ m + fill ⊙ (1 − m)) + l1 · mean(1 − m) + tv · (mean|∂_h m|^β + mean|∂_w m|^β)
    with Adam, clamping m to [0, 1] after each step; the map is 1 − m (what had to be deleted).
    Every step evaluates all inputs in one batched pass. Images only.

    Parameters
    ----------
    fill : Fill -- default a Gaussian blur (11×11 on images of side ≥ 12, else 5×5).
    steps, lr : Adam settings (Calibrate-to-Interpret: 600, 0.1); ``steps + 1`` queries per
        input (one per step and the final score), ``budget=`` sets ``steps = budget − 1``.
    l1, tv : penalty weights (0.1, 0.4); tv_power : β (3, as in Fong & Vedaldi)
    """

    name = "meaningful_perturbation"
    _budget_knob = "steps"

    def __init__(self, model: Any, *, fill: Fill | None = None, steps: int | None = None,
                 lr: float = 0.1, l1: float = 0.1, tv: float = 0.4, tv_power: float = 3.0,
                 **kwargs: Any):
        super().__init__(model, features=Pixels(), fill=fill, **kwargs)
        check_differentiable(self.model, "MeaningfulPerturbation")  # optimises by gradients
        self._apply_budget(steps, 600)
        steps = check_count(self.steps, "steps")
        self.steps, self.lr, self.l1, self.tv, self.tv_power = (
            int(steps), float(lr), float(l1), float(tv), float(tv_power))

    def params(self) -> dict[str, Any]:
        return {**super().params(), "steps": self.steps, "lr": self.lr, "l1": self.l1,
                "tv": self.tv, "tv_power": self.tv_power}

    def _queries(self, knob: int) -> int:
        return knob + 1

    def _set_budget(self, budget: int) -> None:
        if budget < 2:
            raise ValueError(f"budget={budget} is too small for Meaningful Perturbation: it "
                             "spends steps + 1 queries per input; give budget >= 2")
        self.steps = budget - 1

    def _default_fill(self, x: Tensor) -> Fill:
        return Blur(11, 5.0) if x.shape[-1] >= 12 else Blur(5, 2.0)

    def _explain(self, x: Tensor, targets: Tensor) -> _Attribution:
        if x.ndim != 4:
            raise ValueError(f"Meaningful Perturbation explains images, got {tuple(x.shape)}")
        n, h, w = len(x), x.shape[-2], x.shape[-1]
        engine = self.engine(x)
        mask = torch.ones(n, 1, h * w, device=x.device, requires_grad=True)
        opt = torch.optim.Adam([mask], lr=self.lr)
        for _ in range(self.steps):  # optimisation steps; every step is one batched pass
            opt.zero_grad()
            res = engine.query(self.model, x, mask, grad=True)
            s = self._score(res.outputs, targets)[:, 0]  # (n,)
            m2 = mask.view(n, h, w)
            tv = ((m2[:, 1:] - m2[:, :-1]).abs() ** self.tv_power).mean((1, 2)) + (
                (m2[:, :, 1:] - m2[:, :, :-1]).abs() ** self.tv_power).mean((1, 2))
            loss = (s + self.l1 * (1 - mask).mean((1, 2)) + self.tv * tv).sum()
            loss.backward()
            opt.step()
            with torch.no_grad():
                mask.clamp_(0.0, 1.0)
        with torch.no_grad():
            final = self._score(engine.query(self.model, x, mask).outputs, targets)[:, 0]
        seg = engine.segment(x)
        return self._result(1 - mask.detach()[:, 0], seg, engine,
                            deleted_score=final.cpu().numpy())
