"""Randomization sanity checks of explanations: the model-parameter randomization test
(MPRT, cascading or independent), its smooth and efficient variants, and the random-logit
test.

A faithful explanation depends on the model's parameters and on the explained class: when the
layers are re-initialized (top first) or another class is explained, it should change.
:func:`randomized_layers` yields the randomized copies; every layer's re-initialization draws
from torch's generator seeded with ``seed`` (and torch's global random state is restored
afterwards), so the copies are the same on every run and every device.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from calix._random import make_generator, std_normal
from calix._stats import pearson, spearman
from calix._validation import check_choice, check_count
from calix.metrics._base import metric, metrics_of
from calix.metrics._maps import flat_maps
from calix.models import as_tensor

__all__ = ["Randomization", "randomized_layers", "mprt", "smooth_mprt", "efficient_mprt",
           "random_logit", "histogram_entropy", "METRICS"]

_SIMILARITIES = ("spearman", "pearson", "ssim")


@dataclass
class Randomization:
    """Similarity (or complexity) of explanations along a layer-randomization cascade.

    Attributes
    ----------
    layers : list of str -- randomized layers, in the order they were randomized (top first).
    similarity : ndarray of shape (n_layers, n) -- similarity of the explanation of the model
        randomized up to (cascading) or at (independent) each layer with the original one.
    scores : ndarray of shape (n,) -- the per-input score (see each function).
    target : ndarray of shape (n,) -- the explained classes (the original predictions).
    extra : dict -- e.g. ``complexity`` for :func:`efficient_mprt`.
    """

    layers: list[str]
    similarity: np.ndarray
    scores: np.ndarray
    target: np.ndarray
    extra: dict[str, Any]


def _layer_names(module: torch.nn.Module) -> list[str]:
    """Modules with parameters of their own, output side first (reverse definition order)."""
    return [name for name, m in module.named_modules()
            if any(True for _ in m.parameters(recurse=False))][::-1]


def _reset(layer: torch.nn.Module, seed: int) -> None:
    torch.manual_seed(seed)
    if hasattr(layer, "reset_parameters"):
        layer.reset_parameters()
    else:
        with torch.no_grad():
            for p in layer.parameters(recurse=False):
                torch.nn.init.normal_(p)


def randomized_layers(module: torch.nn.Module, *,
                      order: Literal["cascading", "independent"] = "cascading",
                      seed: int = 0) -> Iterator[tuple[str, torch.nn.Module]]:
    """Yield ``(layer name, randomized copy)`` for every layer with parameters, output first.

    ``cascading`` (Adebayo et al. 2018) randomizes one more layer at each step (the same copy
    is updated in place: use it before the next step); ``independent`` randomizes only that
    layer of a fresh copy. Each layer is re-initialized by its ``reset_parameters`` (else
    N(0, 1)) with torch's generator seeded with ``seed``; the caller's random state is kept.
    ``module`` itself is never changed.
    """
    check_choice(order, ("cascading", "independent"), "order")
    names = _layer_names(module)
    if not names:
        raise ValueError("module has no layer with parameters to randomize")
    model = copy.deepcopy(module)
    for name in names:
        if order == "independent":
            model = copy.deepcopy(module)
        with torch.random.fork_rng(devices=[p.device for p in model.parameters()
                                            if p.device.type == "cuda"][:1]):
            _reset(model.get_submodule(name), seed)
        yield name, model


def _similarity(a: np.ndarray, b: np.ndarray, kind: str | Callable, absolute: bool
                ) -> np.ndarray:
    if callable(kind):
        return np.asarray(kind(a, b), dtype=np.float64)
    if absolute:
        a, b = np.abs(a), np.abs(b)
    if kind == "spearman":
        return spearman(a.reshape(len(a), -1), b.reshape(len(b), -1), constant=0.0)
    if kind == "pearson":
        return pearson(a.reshape(len(a), -1), b.reshape(len(b), -1), constant=0.0)
    from calix.metrics.similarity import ssim

    return ssim(a, b)


def _check_similarity(similarity: Any) -> None:
    if not callable(similarity):
        check_choice(similarity, _SIMILARITIES, "similarity")


def _values(exp: Any, name: str) -> np.ndarray:
    v = np.asarray(exp.values, dtype=np.float64)
    flat_maps(v, name)  # finite, one row per input
    return v


def _smoothed(explainer: Any, x: torch.Tensor, target: np.ndarray, n_samples: int,
              noise: float, seed: int | None) -> np.ndarray:
    """Mean explanation over ``n_samples`` copies of x, n_samples − 1 of them with Gaussian
    noise of std ``noise * (max − min)`` of each input, the last one clean. The copies are
    explained in calls of at most about one model batch of rows (the explainer's model's
    ``batch_size``), so memory stays bounded; the noise stream does not depend on that split
    (:func:`calix._random.std_normal`)."""
    if n_samples == 1:
        return _values(explainer.explain(x, target=target), "explanations")
    n = len(x)
    flat = x.reshape(n, -1)
    std = noise * (flat.max(1).values - flat.min(1).values)  # (n,)
    g = make_generator(seed)
    batch = int(getattr(getattr(explainer, "model", None), "batch_size", 1024) or 1024)
    rows = max(1, batch // n_samples)
    out = []
    for i0 in range(0, n, rows):
        i1 = min(i0 + rows, n)
        eps = std_normal(torch.Size((i1 - i0, n_samples - 1, flat.shape[1])), g)
        noisy = flat[i0:i1, None] + eps.to(x.device) * std[i0:i1, None, None]
        copies = torch.cat([noisy, flat[i0:i1, None]], 1).reshape(
            (i1 - i0) * n_samples, *x.shape[1:])
        e = _values(explainer.explain(copies, target=np.repeat(target[i0:i1], n_samples)),
                    "explanations")
        out.append(e.reshape(i1 - i0, n_samples, *e.shape[1:]).mean(1))
    return np.concatenate(out)


def _cascade(make_explainer: Callable[[torch.nn.Module], Any], module: torch.nn.Module, x: Any,
             *, target: Any, order: str, seed: int,
             explain: Callable[[Any, torch.Tensor, np.ndarray], np.ndarray],
             score: Callable[[np.ndarray, np.ndarray], np.ndarray]
             ) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Explain with the original and every randomized model; ``score(original, randomized)``
    per layer. Returns layer names, (n_layers, n) scores, the original explanation, targets."""
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    xt = as_tensor(x, name="x")
    if xt.ndim < 2 or len(xt) == 0:
        raise ValueError(f"x must be a non-empty batch of shape (n, ...), got {tuple(xt.shape)}")
    base_explainer = make_explainer(module)
    base = base_explainer.explain(xt, target=target)
    tgt = np.asarray(base.target)
    original = explain(base_explainer, xt, tgt)
    layers, rows = [], []
    for name, model in randomized_layers(module, order=order, seed=seed):
        rows.append(score(original, explain(make_explainer(model), xt, tgt)))
        layers.append(name)
    return layers, np.stack(rows), original, tgt


@metric("lower", "randomization", names=("mprt",))
def mprt(make_explainer: Callable[[torch.nn.Module], Any], module: torch.nn.Module, x: Any, *,
         target: Any = None, similarity: str | Callable = "spearman", absolute: bool = True,
         order: Literal["cascading", "independent"] = "cascading",
         seed: int = 0) -> Randomization:
    """Model-parameter randomization test (Adebayo et al. 2018, "Sanity checks for saliency
    maps", NeurIPS).

    Re-initializes the layers of a copy of ``module`` from the output backwards
    (:func:`randomized_layers`) and compares each randomized model's explanation with the
    original one, explaining the original prediction (or ``target``) throughout.

    Parameters
    ----------
    make_explainer : callable module -> Explainer, e.g. ``lambda m: Saliency(calix.wrap(m))``
    module : torch.nn.Module -- left unchanged.
    x : array of shape (n, *input_shape)
    similarity : "spearman" (default), "pearson", "ssim" (images), or a callable
        ``(a, b) -> (n,)`` on the (n, ...) explanations.
    absolute : compare ``|explanations|`` (Adebayo et al.'s default).
    order : "cascading" (default) or "independent".
    seed : int -- the re-initialization stream.

    Returns
    -------
    Randomization -- ``scores`` (n,) is the similarity after the last step (every layer
    randomized, for the cascade); lower is better (the explanation follows the parameters).
    """
    _check_similarity(similarity)
    layers, sims, _, tgt = _cascade(
        make_explainer, module, x, target=target, order=order, seed=seed,
        explain=lambda e, xt, t: _values(e.explain(xt, target=t), "explanations"),
        score=lambda a, b: _similarity(a, b, similarity, absolute))
    return Randomization(layers=layers, similarity=sims, scores=sims[-1], target=tgt,
                         extra={"mean_similarity": sims.mean(0)})


@metric("lower", "randomization", names=("smooth_mprt",))
def smooth_mprt(make_explainer: Callable[[torch.nn.Module], Any], module: torch.nn.Module,
                x: Any, *, n_samples: int = 50, noise: float = 0.1, target: Any = None,
                similarity: str | Callable = "spearman", absolute: bool = True,
                order: Literal["cascading", "independent"] = "cascading",
                seed: int = 0) -> Randomization:
    """Smooth MPRT (Hedström et al. 2023, "Sanity checks revisited: an exploration to repair
    the model parameter randomisation test", XAI in Action workshop at NeurIPS;
    arXiv:2401.06465): :func:`mprt` on explanations averaged over ``n_samples`` noisy copies of
    each input (noise std ``noise`` times the input's value range; the last copy is the clean
    input, so ``n_samples=1`` is :func:`mprt`), which removes the shattering noise of gradients.

    The copies are explained in calls of about one model batch of rows per model. The noise is
    drawn from ``seed`` (the same copies for the original and every randomized model).
    Returns a :class:`Randomization` as :func:`mprt`; lower is better.
    """
    _check_similarity(similarity)
    n_samples = check_count(n_samples, "n_samples")
    if isinstance(noise, bool) or not np.isfinite(noise) or noise < 0:
        raise ValueError(f"noise must be a finite number >= 0, got {noise!r}")
    layers, sims, _, tgt = _cascade(
        make_explainer, module, x, target=target, order=order, seed=seed,
        explain=lambda e, xt, t: _smoothed(e, xt, t, n_samples, noise, seed),
        score=lambda a, b: _similarity(a, b, similarity, absolute))
    return Randomization(layers=layers, similarity=sims, scores=sims[-1], target=tgt,
                         extra={"mean_similarity": sims.mean(0)})


def histogram_entropy(maps: Any, *, n_bins: int = 100) -> np.ndarray:
    """Shannon entropy (nats) of the histogram of each map's values over ``n_bins`` equal bins
    spanning that map's [min, max]; (n,). Constant maps give 0."""
    a = flat_maps(maps)
    n_bins = check_count(n_bins, "n_bins")
    lo = a.min(1, keepdims=True)
    span = a.max(1, keepdims=True) - lo
    pos = (a - lo) * (n_bins / np.where(span > 0, span, 1.0))
    b = np.clip(np.floor(pos), 0, n_bins - 1).astype(np.int64)
    counts = np.zeros((len(a), n_bins))
    np.add.at(counts, (np.arange(len(a))[:, None], b), 1.0)
    p = counts / a.shape[1]
    return np.where(p > 0, -p * np.log(np.where(p > 0, p, 1.0)), 0.0).sum(1) + 0.0


@metric("higher", "randomization", names=("efficient_mprt",))
def efficient_mprt(make_explainer: Callable[[torch.nn.Module], Any], module: torch.nn.Module,
                   x: Any, *, n_bins: int = 100, target: Any = None, absolute: bool = False,
                   seed: int = 0) -> Randomization:
    """Efficient MPRT, eMPRT (Hedström et al. 2023, arXiv:2401.06465): the relative rise in
    explanation complexity once every layer is randomized, (H(e_rand) − H(e)) / H(e), with H
    the :func:`histogram_entropy` of the explanation (signed, as Quantus's default;
    ``absolute=True`` takes magnitudes). No similarity measure is needed, and only the fully
    randomized model counts.

    Returns
    -------
    Randomization -- ``similarity`` holds the relative rise after each layer of the cascade,
    ``scores`` (n,) the one after the last; ``extra["complexity"]`` (n_layers + 1, n) the
    entropies (original first). Higher is better.
    """
    n_bins = check_count(n_bins, "n_bins")

    def entropy(e: np.ndarray) -> np.ndarray:
        return histogram_entropy(np.abs(e) if absolute else e, n_bins=n_bins)

    layers, rel, original, tgt = _cascade(
        make_explainer, module, x, target=target, order="cascading", seed=seed,
        explain=lambda e, xt, t: _values(e.explain(xt, target=t), "explanations"),
        score=lambda a, b: (entropy(b) - entropy(a)) / entropy(a))
    h0 = entropy(original)
    return Randomization(layers=layers, similarity=rel, scores=rel[-1], target=tgt,
                         extra={"complexity": np.vstack([h0, h0 * (1 + rel)])})


@metric("lower", "randomization", names=("random_logit",))
def random_logit(explainer: Any, x: Any, *, maps: Any = None, n_classes: int | None = None,
                 target: Any = None, other_target: Any = None,
                 similarity: str | Callable = "ssim", absolute: bool = False,
                 seed: int | None = 0) -> np.ndarray:
    """Random logit test (Sixt et al. 2020, "When explanations lie: why many modified BP
    attributions fail", ICML): similarity between the explanation of the explained class and
    that of another class drawn uniformly from the rest.

    Parameters
    ----------
    explainer : a calix Explainer
    x : array of shape (n, *input_shape)
    maps : the explanations of ``target`` if already computed (saves one explainer call;
        ``target`` then defaults to the explainer's model's predictions).
    n_classes : int -- classes to draw from (default: the explainer's model's classes).
    target : explained classes (default: the predictions).
    other_target : the other classes, one per input (default: drawn from ``seed``).
    similarity : "ssim" (default, images), "spearman", "pearson" or a callable.

    Returns
    -------
    ndarray of shape (n,); lower is better (the explanation depends on the class).
    """
    _check_similarity(similarity)
    xt = as_tensor(x, name="x")
    if maps is None:
        base = explainer.explain(xt, target=target)
        tgt = np.asarray(base.target, dtype=np.int64)
        a = _values(base, "explanations")
    else:
        a = np.asarray(maps, dtype=np.float64)
        if len(a) != len(xt):
            raise ValueError(f"maps has {len(a)} rows for {len(xt)} inputs")
        flat_maps(a, "maps")
        if target is None:
            model = getattr(explainer, "model", None)
            if model is None:
                raise ValueError("give target with maps (the explainer has no .model)")
            with torch.no_grad():
                tgt = model.forward(xt).argmax(1).cpu().numpy()
        else:
            tgt = np.broadcast_to(np.asarray(target, dtype=np.int64).reshape(-1), (len(xt),))
    n = len(tgt)
    if other_target is None:
        k = n_classes if n_classes is not None else getattr(
            getattr(explainer, "model", None), "n_classes", None)
        if k is None:
            raise ValueError("n_classes is unknown: pass n_classes (or other_target)")
        k = check_count(k, "n_classes", minimum=2)
        if tgt.max() >= k:
            raise ValueError(f"target {int(tgt.max())} is out of range for n_classes={k}")
        draw = torch.randint(0, k - 1, (n,), generator=make_generator(seed)).numpy()
        other = draw + (draw >= tgt)  # uniform over the k - 1 other classes
    else:
        other = np.asarray(other_target, dtype=np.int64).reshape(-1)
        if other.shape != (n,):
            raise ValueError(f"other_target must have one class per input ({n}), got "
                             f"shape {other.shape}")
        if (other == tgt).any():
            raise ValueError("other_target must differ from the explained class of every input")
    b = _values(explainer.explain(xt, target=other), "explanations")
    return _similarity(a, b, similarity, absolute)


#: name -> :class:`MetricInfo` of every number of the metrics above (read from the functions)
METRICS = metrics_of(mprt, smooth_mprt, efficient_mprt, random_logit)
