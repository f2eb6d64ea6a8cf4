"""Removal without retraining: ROAD (remove and debias), with its noisy linear imputation.

ROAD replaces the removed pixels by the solution of a sparse linear system -- each removed
pixel the weighted mean of its 8 neighbours (weights 1/6 on the sides, 1/12 on the
diagonals) -- plus a little Gaussian noise, so that the shape of the removed region leaks
less class information than a constant fill does.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch

from calix._random import make_generator, std_normal
from calix._validation import check_choice
from calix.explain.base import _OUTPUTS, score
from calix.metrics._base import metric, metrics_of
from calix.metrics.faithfulness import Curve, _flat_maps, _targets, _trapz
from calix.models import wrap

__all__ = ["noisy_linear_imputation", "road", "METRICS"]

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
    maps : (n, C, H, W) or (n, 1, H, W) -- channels are summed to rank pixels.
    fractions : increasing fractions of pixels removed, in [0, 1) (default 1%, 3%, ..., 99%,
        as Rong et al.); the top ``int(f * H * W)`` pixels go at fraction f.
    order : "morf" (most relevant first: a steep fall is better) or "lerf".
    noise : std of the imputation noise (Rong et al.: 0.01).
    output : the followed score, "probability" (default), "logit" or "log_probability".
    seed : the noise stream; one stream per input, drawn on the CPU (same on every device).

    Returns
    -------
    Curve -- ``scores`` (n, S) the target's score, ``auc`` their trapezoidal area over the
    fractions, ``extra["correct"]`` (n, S) whether the prediction is still the target (the
    accuracy curve of the paper is its mean over inputs). MoRF: lower is better; LeRF: higher.

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


#: name -> :class:`MetricInfo` of every number of the metrics above (read from the functions)
METRICS = metrics_of(road)
