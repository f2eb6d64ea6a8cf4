"""Faithfulness of explanations: deletion / insertion, MIF / LIF fidelity, better-than-random,
and remove-and-retrain.

Every curve is computed for all steps and all inputs through the perturbation engine in
chunked, batched model passes: the masks of step s for input i keep the pixels whose rank in
input i's map is past the step's cut. No Python loop runs per step or per pixel.

Maps are ``(n, C, H, W)`` or ``(n, 1, H, W)`` (channels are summed to rank pixels), or
``(n, d)`` for tabular inputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from calix._stats import standard_error
from calix._validation import check_choice, check_count, check_index_range, one_per_input
from calix.explain.base import _OUTPUTS, MAX_QUERIES, score
from calix.metrics._base import MetricInfo, metric, metrics_of, procedures_getattr
from calix.models import Model, as_tensor, wrap
from calix.perturb import Columns, Constant, Fill, Perturbation, Pixels, Superpixels

__all__ = [
    "Curve", "deletion_curve", "insertion_curve", "mif_lif", "Fidelity", "better_than_random",
    "roar_tabular", "roar_images", "METRICS",  # noqa: F822 (found by __getattr__ below)
]

_trapz = getattr(np, "trapezoid", None) or np.trapz  # noqa: NPY201 (numpy < 2)



@dataclass
class Curve:
    """Scores along a deletion / insertion path.

    Attributes
    ----------
    fractions : ndarray of shape (S,) -- fraction of features removed (deletion) or inserted.
    scores : ndarray of shape (n, S) -- the explained score at each step (normalised if asked).
    auc : ndarray of shape (n,) -- trapezoidal area under each curve over ``fractions``.
    target : ndarray of shape (n,)
    n_queries : int
    """

    fractions: np.ndarray
    scores: np.ndarray
    auc: np.ndarray
    target: np.ndarray
    n_queries: int
    extra: dict[str, Any] = field(default_factory=dict)


def _flat_maps(maps: Any, x: Tensor) -> Tensor:
    m = as_tensor(maps, name="maps", device=x.device)
    if m.ndim == 0:
        raise ValueError(f"maps must have one map per input ({x.shape[0]}), got a scalar")
    if m.shape[0] != x.shape[0]:
        raise ValueError(f"maps has {m.shape[0]} rows for {x.shape[0]} inputs")
    if x.ndim == 4:
        if m.ndim != 4 or m.shape[-2:] != x.shape[-2:]:
            raise ValueError(f"maps must have shape (n, C, {x.shape[-2]}, {x.shape[-1]}), "
                             f"got {tuple(m.shape)}")
        m = m.sum(1)
    elif m.shape != x.shape:
        raise ValueError(f"maps must have the shape of the inputs {tuple(x.shape)}, "
                         f"got {tuple(m.shape)}")
    return m.reshape(len(m), -1)


def _ranks(flat_maps: Tensor, most_first: bool) -> Tensor:
    """Rank of every feature, 0 = first to be removed / inserted; ties keep index order."""
    order = torch.argsort(flat_maps, dim=1, descending=most_first, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
    return ranks


def _targets(target: Any, n: int, k: int) -> Tensor:
    """``target`` (one index or one per input) as a long tensor (n,) of indices in [0, k)."""
    t = target.detach().cpu().numpy() if isinstance(target, Tensor) else np.asarray(target)
    if t.dtype.kind not in "biuf":
        raise TypeError(f"target must be integer class indices, got {target!r}")
    if t.dtype.kind == "f" and (not np.isfinite(t).all() or (t != np.round(t)).any()):
        raise ValueError(f"target must be integer class indices, got {target!r}")
    t = one_per_input(torch.from_numpy(t.astype(np.int64).reshape(-1)), n, "target")
    check_index_range(t, k, "target", of=f" for a model with {k} outputs", found="got")
    return t


def _fractions(steps: int | Any) -> np.ndarray:
    if isinstance(steps, int | np.integer) and not isinstance(steps, bool):
        return np.linspace(0.0, 1.0, check_count(steps, "steps") + 1)
    f = np.asarray(steps, dtype=np.float64)
    if f.ndim != 1 or len(f) < 2 or not np.isfinite(f).all() or (f < 0).any() or (f > 1).any() \
            or (np.diff(f) <= 0).any():
        raise ValueError("fractions must be increasing values in [0, 1]")
    return f


def _curve(model: Model, x: Any, maps: Any, *, mode: Literal["deletion", "insertion"],
           fill: Fill, steps: int | Any, target: Any, output: str, normalize: bool,
           most_first: bool = True, seed: int | None = 0) -> Curve:
    check_choice(output, _OUTPUTS, "output")
    model = wrap(model)
    xb = model.check_input(x)
    if len(xb) == 0:
        raise ValueError(f"x has no inputs (shape {tuple(xb.shape)})")
    flat = _flat_maps(maps, xb)
    n, d = flat.shape
    fr = _fractions(steps)
    check_count(len(fr), "steps", width=n * d)  # the (n, steps, d) masks built at once
    counts = torch.as_tensor(np.round(fr * d).astype(np.int64), device=xb.device)
    ranks = _ranks(flat, most_first)  # (n, d)
    removed = ranks[:, None, :] < counts[None, :, None]  # (n, S, d)
    keep = ~removed if mode == "deletion" else removed
    engine = Perturbation(Pixels() if xb.ndim == 4 else Columns(), fill)
    with torch.no_grad():
        clean = model.forward(xb)
        if target is None:
            tgt = clean.argmax(1) if model.task == "classification" else torch.zeros(n).long()
        else:
            tgt = _targets(target, n, clean.shape[1]).to(clean.device)
        before = model.n_queries
        res = engine.query(model, xb, keep, seed=seed)
    s = score(res.outputs, tgt, output, model.task)  # (n, S)
    if normalize:
        ref = score(clean[:, None], tgt, output, model.task)  # (n, 1)
        s = s / torch.where(ref.abs() > 1e-12, ref, torch.ones_like(ref))
    s_np = s.double().cpu().numpy()
    return Curve(fractions=fr, scores=s_np, auc=_trapz(s_np, fr, axis=1),
                 target=tgt.cpu().numpy(), n_queries=model.n_queries - before)


@metric("lower", "faithfulness", names=("deletion_auc",))
def deletion_curve(model: Any, x: Any, maps: Any, *, fill: Fill | None = None,
                   steps: int | Any = 100, target: Any = None, output: str = "probability",
                   normalize: bool = True, seed: int | None = 0) -> Curve:
    """Remove the most important features first and follow the target score.

    Parameters
    ----------
    model : Model (or anything :func:`calix.wrap` takes)
    x : array of shape (n, *input_shape)
    maps : array of shape (n, C, H, W), (n, 1, H, W) or (n, d)
    fill : what removed pixels become (default black, ``Constant(0)``; Calibrate-to-Interpret
        uses ``Blur(11, σ)``).
    steps : int (S steps from 0 to 100% removed, S + 1 points) or an array of fractions.
    target : None (the clean prediction) or class indices.
    output : "probability" (default), "logit" or "log_probability".
    normalize : divide by the clean input's score (1 at fraction 0).

    Returns
    -------
    Curve -- lower ``auc`` is better (the score drops fast when the important pixels go).
    """
    return _curve(model, x, maps, mode="deletion", fill=fill or Constant(0.0), steps=steps,
                  target=target, output=output, normalize=normalize, seed=seed)


@metric("higher", "faithfulness", names=("insertion_auc",))
def insertion_curve(model: Any, x: Any, maps: Any, *, fill: Fill | None = None,
                    steps: int | Any = 100, target: Any = None, output: str = "probability",
                    normalize: bool = True, seed: int | None = 0) -> Curve:
    """Start from the fill and insert the most important features first; higher AUC is
    better. Parameters as :func:`deletion_curve`."""
    return _curve(model, x, maps, mode="insertion", fill=fill or Constant(0.0), steps=steps,
                  target=target, output=output, normalize=normalize, seed=seed)


@dataclass
class Fidelity:
    """MIF / LIF curves and the fidelity area A = ∫LIF − ∫MIF (FPA paper).

    Attributes
    ----------
    mif, lif : Curve -- logits / clean logit after zeroing the most / least important top-n.
    area : ndarray of shape (n,) -- A per input.
    mean : float -- mean A.
    ci95 : float -- the half-width of the 95% normal interval of the mean.
    """

    mif: Curve
    lif: Curve
    area: np.ndarray
    mean: float
    ci95: float


@metric("higher", "faithfulness", names=("fidelity",))
def mif_lif(model: Any, x: Any, maps: Any, *, fill: Fill | None = None,
            fractions: Any = None, target: Any = None) -> Fidelity:
    """MIF and LIF curves on the pre-softmax logit of the predicted class, n = 0, 5, …, 95%.

    MIF zeroes (``fill``) the most important pixels first, LIF the least important first;
    both are normalised by the clean logit and integrated over 0–95% (in percent, so A is on
    the scale of the paper's "LIF 87.9, MIF 28.5").
    """
    fr = np.arange(0, 100, 5) / 100 if fractions is None else _fractions(fractions)
    kw = dict(fill=fill or Constant(0.0), steps=fr, target=target, output="logit",
              normalize=True)
    model = wrap(model)
    mif = _curve(model, x, maps, mode="deletion", most_first=True, **kw)
    lif = _curve(model, x, maps, mode="deletion", most_first=False, **kw)
    pct = 100 * fr
    a_mif = _trapz(mif.scores, pct, axis=1)
    a_lif = _trapz(lif.scores, pct, axis=1)
    mif.auc, lif.auc = a_mif, a_lif
    area = a_lif - a_mif
    sem = standard_error(area)
    return Fidelity(mif=mif, lif=lif, area=area, mean=float(area.mean()), ci95=float(1.96 * sem))


@metric("higher", "faithfulness", names=("btr",))
def better_than_random(model: Any, x: Any, maps: Any, *, fill: Fill | None = None,
                       steps: int = 100, n_orders: int = 5, n_segments: int = 100,
                       seed: int = 0, output: str = "probability") -> dict[str, Any]:
    """Better-than-random (BTR): share of inputs whose deletion AUC beats a random baseline.

    The baseline removes SLIC superpixels (``n_segments``) in random order, averaged over
    ``n_orders`` orders with different seeds. Images only.

    Returns
    -------
    dict
        ``btr`` (float), ``auc`` of shape (n,) of the maps, ``random_auc`` of shape (n,),
        and ``better``, booleans of shape (n,).
    """
    n_orders = check_count(n_orders, "n_orders")
    n_segments = check_count(n_segments, "n_segments")
    model = wrap(model)
    xb = model.check_input(x)
    if xb.ndim != 4:
        raise ValueError(f"better_than_random needs images x of shape (n, C, H, W), got "
                         f"{tuple(xb.shape)}")
    queries = n_orders * len(xb) * len(_fractions(steps))
    if queries > MAX_QUERIES:
        raise ValueError(f"n_orders={n_orders} random deletion curves of {len(xb)} input(s) "
                         f"with {len(_fractions(steps))} steps need {queries:.3g} model "
                         f"evaluations, more than {MAX_QUERIES:.3g}: lower n_orders or steps")
    ours = deletion_curve(model, xb, maps, fill=fill, steps=steps, output=output)
    seg = Superpixels(n_segments).segment(xb)
    lab = seg.labels[:, 0].reshape(len(xb), -1)  # (n, H*W)
    g = torch.Generator().manual_seed(seed)
    rand_auc = np.zeros(len(xb))
    for _ in range(n_orders):  # a few random orders; each is one batched deletion curve
        seg_score = torch.rand(len(xb), seg.d, generator=g).to(lab.device)
        rmap = seg_score.gather(1, lab).reshape(len(xb), 1, *xb.shape[-2:])
        rand_auc += deletion_curve(model, xb, rmap, fill=fill, steps=steps,
                                   target=ours.target, output=output).auc
    rand_auc /= n_orders
    better = ours.auc < rand_auc
    return {"btr": float(better.mean()), "auc": ours.auc, "random_auc": rand_auc,
            "better": better}


# moved to calix.procedures (a procedure, not a metric); the old import path still works
__getattr__ = procedures_getattr(__name__, ("roar_tabular", "roar_images"))


#: name -> :class:`MetricInfo` of every number of the metrics above (read from the functions)
#: and of remove-and-retrain (:func:`calix.procedures.roar_tabular` / ``roar_images``)
METRICS = {**metrics_of(deletion_curve, insertion_curve, mif_lif, better_than_random),
           "roar_drop": MetricInfo("roar_drop", higher_is_better=True, category="faithfulness")}
