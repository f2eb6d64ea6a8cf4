"""Removal without retraining: ROAD (remove and debias) with its noisy linear imputation,
IROF (iterative removal of features), sensitivity-n and selectivity.

Every curve is computed through the perturbation engine in batched model passes (memory
bounded by the model's batch), except ROAD's imputation, which solves one sparse system per
input and step. ROAD replaces the removed pixels by the solution of a sparse linear
system -- each removed pixel the weighted mean of its 8 neighbours (weights 1/6 on the
sides, 1/12 on the diagonals) -- plus a little Gaussian noise, so that the shape of the
removed region leaks less class information than a constant fill does.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from calix._random import make_generator, std_normal, subsets_of_size
from calix._stats import pearson
from calix._validation import check_choice, check_count
from calix.explain.base import _OUTPUTS, score
from calix.metrics._base import metric, metrics_of
from calix.metrics.faithfulness import Curve, _flat_maps, _targets, _trapz
from calix.models import Model, wrap
from calix.perturb import (
    Columns,
    Constant,
    Features,
    Fill,
    PatchGrid,
    Perturbation,
    Pixels,
    Segmentation,
    Superpixels,
)

__all__ = ["noisy_linear_imputation", "road", "irof", "selectivity", "sensitivity_n",
           "ImageMean", "METRICS"]

_OFFSETS = ((1, 1, 1 / 12), (0, 1, 1 / 6), (-1, 1, 1 / 12), (1, -1, 1 / 12),
            (0, -1, 1 / 6), (-1, -1, 1 / 12), (1, 0, 1 / 6), (-1, 0, 1 / 6))


def noisy_linear_imputation(image: Any, removed: Any, *, noise: float = 0.01,
                            seed: int | torch.Generator | None = 0) -> np.ndarray:
    """Impute the ``removed`` pixels of one image (Rong et al. 2022, ROAD).

    Parameters
    ----------
    image : array of shape (C, H, W)
    removed : int array of flat pixel indices in [0, H*W) (or a bool array of shape (H, W))
    noise : float -- std of the Gaussian noise added to the imputed values.
    seed : int or Generator -- the noise stream.

    Returns
    -------
    ndarray of shape (C, H, W), float64: the image with the removed pixels imputed.
    """
    from scipy.sparse import csc_matrix
    from scipy.sparse.linalg import spsolve

    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 3:
        raise ValueError(f"image must have shape (C, H, W), got {img.shape}")
    c, h, w = img.shape
    idx = np.asarray(removed)
    idx = np.flatnonzero(idx) if idx.dtype == bool else idx.astype(np.int64).reshape(-1)
    out = img.reshape(c, -1).copy()
    m = len(idx)
    if m == 0:
        return out.reshape(img.shape)
    if m >= h * w:
        raise ValueError("noisy linear imputation needs at least one kept pixel")
    var = np.full(h * w, -1, dtype=np.int64)
    var[idx] = np.arange(m)
    rows, cols = idx // w, idx % w
    diag = np.zeros(m)
    b = np.zeros((m, c))
    ai, aj, av = [], [], []
    for dr, dc, wt in _OFFSETS:  # 8 offsets, each vectorised over the removed pixels
        r, q = rows + dr, cols + dc
        ok = (r >= 0) & (r < h) & (q >= 0) & (q < w)
        nb = r[ok] * w + q[ok]
        me = np.flatnonzero(ok)
        diag[me] += wt
        unknown = var[nb] >= 0
        ai.append(me[unknown])
        aj.append(var[nb[unknown]])
        av.append(np.full(int(unknown.sum()), wt))
        np.subtract.at(b, me[~unknown], wt * out[:, nb[~unknown]].T)
    ai.append(np.arange(m))
    aj.append(np.arange(m))
    av.append(-diag)
    a = csc_matrix((np.concatenate(av), (np.concatenate(ai), np.concatenate(aj))), shape=(m, m))
    sol = spsolve(a, b).reshape(m, c)
    eps = std_normal(torch.Size((m, c)), make_generator(seed)).double().numpy()
    out[:, idx] = (sol + noise * eps).T
    return out.reshape(img.shape)


@metric("lower", "faithfulness", names=("road_morf",))
def road(model: Any, x: Any, maps: Any, *, fractions: Any = None,
         order: Literal["morf", "lerf"] = "morf", noise: float = 0.01, target: Any = None,
         output: str = "probability", seed: int | None = 0) -> Curve:
    """ROAD: remove and debias (Rong et al. 2022, "A consistent and efficient evaluation
    strategy for attribution methods", ICML). Removes the most (MoRF) or least (LeRF)
    important pixels, imputes them with :func:`noisy_linear_imputation`, and follows the
    model's prediction; no retraining.

    Parameters
    ----------
    model : anything :func:`calix.wrap` takes
    x : images of shape (n, C, H, W)
    maps : array of shape (n, C, H, W) or (n, 1, H, W)
        Channels are summed to rank pixels.
    fractions : increasing fractions of pixels removed, in [0, 1) (default 1%, 3%, ..., 99%,
        as Rong et al.); the top ``int(f * H * W)`` pixels go at fraction f.
    order : "morf" (most relevant first: a steep fall is better) or "lerf".
    noise : std of the imputation noise (Rong et al.: 0.01).
    output : the followed score, "probability" (default), "logit" or "log_probability".
    seed : the noise stream; one stream per input, drawn on the CPU (same on every device).

    Returns
    -------
    Curve
        ``scores`` of shape (n, S) the target's score, ``auc`` their trapezoidal area over
        the fractions, ``extra["correct"]`` of shape (n, S) whether the prediction is still
        the target (the accuracy curve of the paper is its mean over inputs). MoRF: lower is
        better; LeRF: higher.

    Notes
    -----
    One sparse solve per input and fraction (scipy); the imputed images are sent to the
    model one model batch at a time, so memory is bounded by the batch.
    """
    check_choice(output, _OUTPUTS, "output")
    check_choice(order, ("morf", "lerf"), "order")
    if isinstance(noise, bool) or not np.isfinite(noise) or noise < 0:
        raise ValueError(f"noise must be a finite number >= 0, got {noise!r}")
    model = wrap(model)
    xb = model.check_input(x)
    if xb.ndim != 4 or len(xb) == 0:
        raise ValueError(f"road needs a non-empty batch of images (n, C, H, W), got "
                         f"{tuple(xb.shape)}")
    flat = _flat_maps(maps, xb)
    if not torch.isfinite(flat).all():
        raise ValueError("maps contain NaN or infinite values")
    n, d = flat.shape
    fr = np.arange(1, 100, 2) / 100 if fractions is None else np.asarray(fractions, float)
    if fr.ndim != 1 or len(fr) == 0 or not np.isfinite(fr).all() or (fr < 0).any() \
            or (fr >= 1).any() or (np.diff(fr) <= 0).any():
        raise ValueError(f"fractions must be increasing values in [0, 1), got {fractions!r}")
    counts = (fr * d).astype(np.int64)  # int(), as Rong et al. and Quantus
    order_idx = torch.argsort(flat, dim=1, descending=order == "morf", stable=True).cpu().numpy()
    x_np = xb.detach().cpu().double().numpy()
    g = make_generator(seed)
    with torch.no_grad():
        clean = model.forward(xb)
        tgt = (clean.argmax(1) if target is None
               else _targets(target, n, clean.shape[1]).to(clean.device))
        before = model.n_queries
        outs, pending = [], []

        def flush() -> None:
            batch = torch.as_tensor(np.stack(pending), dtype=xb.dtype, device=xb.device)
            outs.append(model.forward(batch, validate=False))
            pending.clear()

        for i in range(n):  # one sparse solve per (input, fraction)
            for c in counts:
                pending.append(noisy_linear_imputation(x_np[i], order_idx[i, :c], noise=noise,
                                                       seed=g))
                if len(pending) == model.batch_size:
                    flush()
        if pending:
            flush()
        out = torch.cat(outs).reshape(n, len(fr), -1)
    s = score(out, tgt, output, model.task).double().cpu().numpy()
    correct = (out.argmax(-1) == tgt[:, None]).cpu().numpy()
    return Curve(fractions=fr, scores=s, auc=_trapz(s, fr, axis=1), target=tgt.cpu().numpy(),
                 n_queries=model.n_queries - before, extra={"correct": correct, "order": order})


class ImageMean(Fill):
    """Removed features take the mean of all of the input's own elements (one value per
    input; IROF's default)."""

    def reference(self, x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        return x.reshape(len(x), -1).mean(1).view(-1, *([1] * (x.ndim - 1))).expand_as(x)


class _Labels(Features):
    """Given segment labels (n, H, W) for a batch of images (e.g. SLIC segments computed
    elsewhere); labels must be 0, 1, ..., k_i - 1 for input i."""

    sample_ndim = 3

    def __init__(self, labels: Tensor):
        self.labels = labels

    def segment(self, x: Tensor) -> Segmentation:
        self._check(x)
        if self.labels.shape != (len(x), *x.shape[2:]):
            raise ValueError(f"segments must have shape {(len(x), *x.shape[2:])} (one label "
                             f"map per image), got {tuple(self.labels.shape)}")
        lab = self.labels.to(x.device)
        return Segmentation(labels=lab[:, None].expand(x.shape), shared=False,
                            n_features=lab.reshape(len(x), -1).max(1).values.cpu() + 1)


def _segments(segments: Any, xb: Tensor) -> Tensor:
    lab = torch.as_tensor(np.asarray(segments)).long()
    if lab.shape != (len(xb), *xb.shape[2:]):
        raise ValueError(f"segments must have shape {(len(xb), *xb.shape[2:])} (one label map "
                         f"per image), got {tuple(lab.shape)}")
    for i, row in enumerate(lab.reshape(len(lab), -1)):
        if row.min() != 0 or len(torch.unique(row)) != int(row.max()) + 1:
            raise ValueError(f"segments of image {i} must be labelled 0, 1, ..., k - 1")
    return lab


def _prepare(model: Any, x: Any, target: Any, output: str) -> tuple[Model, Tensor, Tensor,
                                                                     Tensor]:
    check_choice(output, _OUTPUTS, "output")
    model = wrap(model)
    xb = model.check_input(x)
    if len(xb) == 0:
        raise ValueError(f"x has no inputs (shape {tuple(xb.shape)})")
    with torch.no_grad():
        clean = model.forward(xb)
    n = len(xb)
    if target is None:
        tgt = clean.argmax(1) if model.task == "classification" else torch.zeros(n).long()
    else:
        tgt = _targets(target, n, clean.shape[1])
    return model, xb, clean, tgt.to(clean.device)


def _segment_curve(model: Model, xb: Tensor, clean: Tensor, tgt: Tensor, maps: Any,
                   features: Features, fill: Fill, reduce: str, output: str,
                   seed: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Remove segments one more at a time, most relevant first (relevance = the mean or sum
    of the channel-summed map over the segment). Returns scores (n, d) after 1..d removals,
    the clean scores (n,), the number of segments of every input, and the queries spent."""
    flat = _flat_maps(maps, xb)  # (n, H*W) (channels summed for images)
    if not torch.isfinite(flat).all():
        raise ValueError("maps contain NaN or infinite values")
    seg = features.segment(xb)
    n, d = len(xb), seg.d
    lab = seg.labels[:, 0].reshape(n, -1) if xb.ndim == 4 else seg.labels.reshape(n, -1)
    rel = torch.zeros(n, d, dtype=torch.float64, device=flat.device)
    rel.scatter_add_(1, lab.to(flat.device), flat.double())
    if reduce == "mean":
        size = torch.zeros_like(rel).scatter_add_(1, lab.to(flat.device),
                                                  torch.ones_like(flat, dtype=torch.float64))
        rel = rel / size.clamp_min(1)
    counts = seg.n_features.to(flat.device)
    rel = torch.where(torch.arange(d, device=flat.device)[None] < counts[:, None], rel,
                      torch.full_like(rel, -torch.inf))  # padding segments go last
    order = torch.argsort(rel, dim=1, descending=True, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(d, device=order.device).expand_as(order))
    keep = ranks[:, None, :] > torch.arange(d, device=order.device)[None, :, None]  # (n, d, d)
    check_count(d, "segments", width=n * d)
    before = model.n_queries
    with torch.no_grad():
        res = Perturbation(features, fill).query(model, xb, keep.to(xb.device), seed=seed)
    s = score(res.outputs, tgt, output, model.task).double().cpu().numpy()
    s0 = score(clean[:, None], tgt, output, model.task)[:, 0].double().cpu().numpy()
    return s, s0, counts.cpu().numpy(), model.n_queries - before


@metric("higher", "faithfulness", names=("irof",))
def irof(model: Any, x: Any, maps: Any, *, segments: Any = None, n_segments: int = 100,
         fill: Fill | None = None, target: Any = None, output: str = "probability",
         seed: int | None = 0) -> Curve:
    """IROF, iterative removal of features (Rieger & Hansen 2020, "IROF: a low resource
    evaluation metric for explanation methods", ICLR workshop on AI for affordable
    healthcare; arXiv:2003.08747): remove superpixels one more at a time, highest mean
    relevance first, and measure the area *over* the normalised score curve.

    Parameters
    ----------
    x : array of shape (n, C, H, W)
        Images.
    maps : array of shape (n, C, H, W) or (n, 1, H, W)
        Channels are summed to rank the segments.
    segments : int array of shape (n, H, W), or None
        Labels 0..k_i − 1 per image; None for SLIC superpixels
        (:class:`calix.perturb.Superpixels` with ``n_segments``).
    fill : what removed segments become (default :class:`ImageMean`, the image's mean).
    output : the followed score (default the target's probability).

    Returns
    -------
    Curve
        ``scores`` of shape (n, k) the score after removing 1..k segments divided by the
        clean score (inputs with fewer segments are padded with their last value), ``auc``
        of shape (n,) the area over the curve from the clean input (1) to all k_i segments
        removed, by trapezoids on a [0, 1] axis (so in [0, 1] for probabilities that only
        fall); ``fractions`` the step counts 1..k. Higher is better.
    """
    model, xb, clean, tgt = _prepare(model, x, target, output)
    if xb.ndim != 4:
        raise ValueError(f"irof needs images (n, C, H, W), got {tuple(xb.shape)}")
    features = (_Labels(_segments(segments, xb)) if segments is not None
                else Superpixels(check_count(n_segments, "n_segments")))
    s, s0, k, used = _segment_curve(model, xb, clean, tgt, maps, features, fill or ImageMean(),
                                    "mean", output, seed)
    s = s / np.where(np.abs(s0) > 1e-12, s0, 1.0)[:, None]
    steps = np.arange(1, s.shape[1] + 1)
    valid = steps[None] <= k[:, None]
    last = s[np.arange(len(s)), k - 1][:, None]
    s = np.where(valid, s, last)
    # trapezoids over the input's own k_i + 1 points (clean = 1, then 1..k_i removed), x in
    # [0, 1]: the area over the curve is 1 minus their area
    full = np.concatenate([np.ones((len(s), 1)), s], axis=1)
    inner = np.where(valid, (full[:, :-1] + full[:, 1:]) / 2, 0.0).sum(1)
    aoc = 1.0 - inner / k
    return Curve(fractions=steps.astype(np.float64), scores=s, auc=aoc, target=tgt.cpu().numpy(),
                 n_queries=used, extra={"n_segments": k})


@metric("lower", "faithfulness", names=("selectivity",))
def selectivity(model: Any, x: Any, maps: Any, *, patch_size: int = 8, fill: Fill | None = None,
                target: Any = None, output: str = "probability",
                seed: int | None = 0) -> Curve:
    """Selectivity (Montavon et al. 2018, "Methods for interpreting and understanding deep
    neural networks", Digital Signal Processing 73): remove square patches one more at a time,
    highest summed relevance first, and follow the score; a quick fall is better.

    Parameters
    ----------
    x : array of shape (n, C, H, W) -- images.
    maps : array of shape (n, C, H, W) or (n, 1, H, W) -- channels are summed to rank patches.
    patch_size : patch side in pixels (edge patches may be smaller).
    fill : default ``Constant(0)``.

    Returns
    -------
    Curve
        ``scores`` of shape (n, P) the score after removing 1..P patches, ``auc`` of shape
        (n,) their trapezoidal area with unit steps divided by P − 1 (the mean height). Lower
        is better.
    """
    model, xb, clean, tgt = _prepare(model, x, target, output)
    if xb.ndim != 4:
        raise ValueError(f"selectivity needs images (n, C, H, W), got {tuple(xb.shape)}")
    patch_size = check_count(patch_size, "patch_size")
    s, _, _, used = _segment_curve(model, xb, clean, tgt, maps, PatchGrid(patch_size),
                                   fill or Constant(0.0), "sum", output, seed)
    steps = np.arange(1, s.shape[1] + 1)
    auc = _trapz(s, steps, axis=1) / max(len(steps) - 1, 1)
    return Curve(fractions=steps / len(steps), scores=s, auc=auc, target=tgt.cpu().numpy(),
                 n_queries=used)


@metric("higher", "faithfulness", names=("sensitivity_n",))
def sensitivity_n(model: Any, x: Any, maps: Any, *, ns: Any = None, n_subsets: int = 100,
                  fill: Fill | None = None, target: Any = None, output: str = "logit",
                  seed: int | None = 0) -> Curve:
    """Sensitivity-n (Ancona et al. 2018, "Towards better understanding of gradient-based
    attribution methods for deep neural networks", ICLR): for subsets S of n features drawn
    at random, the Pearson correlation over subsets between Σ_{i∈S} a_i and the drop
    f(x) − f(x with S removed). An attribution with completeness on every subset (a linear
    model with gradient × input from a zero baseline) scores 1 for every n.

    Parameters
    ----------
    x : array of shape (n, d) or (n, C, H, W)
        Tables, or images (pixels are the features).
    maps : array of the shape of ``x``, or of shape (n, 1, H, W) for images
    ns : subset sizes (default 10 sizes log-spaced from 1 to 80% of the features).
    n_subsets : random subsets per input and size, evaluated in model batches.
    fill : default ``Constant(0)``.
    output : the explained score (default "logit", the scale gradient × input explains).

    Returns
    -------
    Curve
        ``fractions`` the sizes n (as numbers of features), ``scores`` of shape
        (n_inputs, len(ns)) the correlations (0 where either side is constant), ``auc``
        their mean over sizes. Higher is better.
    """
    model, xb, clean, tgt = _prepare(model, x, target, output)
    flat = _flat_maps(maps, xb)
    if not torch.isfinite(flat).all():
        raise ValueError("maps contain NaN or infinite values")
    n, d = flat.shape
    if ns is None:
        ns = np.unique(np.round(np.geomspace(1, max(1, int(0.8 * d)), 10)).astype(int))
    ns = np.asarray(ns)
    if ns.ndim != 1 or len(ns) == 0 or ns.dtype.kind not in "iu" or (ns < 1).any() \
            or (ns >= d).any():
        raise ValueError(f"ns must be subset sizes in [1, {d - 1}], got {ns!r}")
    n_subsets = check_count(n_subsets, "n_subsets", minimum=2, width=n * d * len(ns))
    g = torch.Generator().manual_seed(0 if seed is None else int(seed))
    sizes = torch.as_tensor(np.repeat(ns, n_subsets))
    removed = subsets_of_size(sizes.repeat(n), d, g).reshape(n, len(sizes), d)
    engine = Perturbation(Pixels() if xb.ndim == 4 else Columns(), fill or Constant(0.0))
    before = model.n_queries
    with torch.no_grad():
        res = engine.query(model, xb, ~removed.to(xb.device), seed=seed)
    s = score(res.outputs, tgt, output, model.task).double().cpu().numpy()  # (n, m)
    s0 = score(clean[:, None], tgt, output, model.task).double().cpu().numpy()
    drop = (s0 - s).reshape(n, len(ns), n_subsets)
    att = (removed.double() @ flat.double().cpu()[:, :, None])[..., 0].numpy()
    att = att.reshape(n, len(ns), n_subsets)
    corr = pearson(att.reshape(-1, n_subsets), drop.reshape(-1, n_subsets), constant=0.0)
    corr = corr.reshape(n, len(ns))
    return Curve(fractions=ns.astype(np.float64), scores=corr, auc=corr.mean(1),
                 target=tgt.cpu().numpy(), n_queries=model.n_queries - before)


#: name -> :class:`MetricInfo` of every number of the metrics above (read from the functions)
METRICS = metrics_of(road, irof, selectivity, sensitivity_n)
