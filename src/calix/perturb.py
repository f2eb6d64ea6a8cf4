"""The perturbation engine: one vectorised path from coalitions to perturbed model queries.

A perturbation π(x, S) keeps the interpretable features in the coalition S and replaces the
others with a *fill*. Three small parts configure it:

- :class:`Features` -- how an input splits into d features: :class:`Columns` (tabular columns
  and named column groups), :class:`Pixels`, :class:`PatchGrid`, :class:`Superpixels` (SLIC);
- :class:`Fill` -- what replaces a removed feature: :class:`Constant`, :class:`Mean`,
  :class:`Blur`, :class:`Noise`, :class:`Marginal`;
- :class:`CoalitionSampler` -- which coalitions to try: :class:`Uniform`, :class:`FixedSize`,
  :class:`ShapleyKernel`, :class:`Bernoulli`, :class:`StratifiedLevels`
  (and :func:`all_coalitions` for exact enumeration).

:class:`Perturbation` puts features and fill together. Its :meth:`~Perturbation.apply` builds
perturbed inputs with their levels λ(S) = (d − |S|)/d, and :meth:`~Perturbation.query` sends
them through a :class:`calix.models.Model` in bounded-memory chunks, passing each row's level to
level-aware (ReCalX) models. Nothing loops in Python over perturbations or pixels.

Masks have shape ``(m, d)`` (one set of coalitions for every input) or ``(n, m, d)`` (one per
input); ``True``/1 keeps a feature. Float masks in [0, 1] blend input and fill
(``fill + mask * (x - fill)``), differentiably -- the form Meaningful Perturbation optimises.

Image inputs are channel-first ``(C, H, W)``; tabular inputs are ``(n_features,)``.

Example
-------
>>> import torch
>>> from calix.perturb import Perturbation, PatchGrid, Constant, Uniform
>>> engine = Perturbation(PatchGrid(4), Constant(0.0))
>>> x = torch.rand(2, 1, 16, 16)
>>> masks = Uniform().sample(100, engine.n_features(x), seed=0)
>>> out = engine.apply(x, masks)
>>> out.inputs.shape, out.levels.shape
(torch.Size([2, 100, 1, 16, 16]), torch.Size([2, 100]))
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from calix.models import Model, as_tensor

__all__ = [
    "Segmentation", "Features", "Columns", "Pixels", "PatchGrid", "Superpixels",
    "Fill", "Constant", "Mean", "Blur", "Noise", "Marginal",
    "CoalitionSampler", "Uniform", "FixedSize", "ShapleyKernel", "Bernoulli", "StratifiedLevels",
    "all_coalitions", "levels_of", "level_bins", "make_generator",
    "Perturbation", "Perturbed", "QueryResult",
]


def make_generator(seed: int | torch.Generator | None) -> torch.Generator:
    """A CPU ``torch.Generator`` from a seed (None draws a fresh random seed)."""
    if isinstance(seed, torch.Generator):
        return seed
    g = torch.Generator()
    if seed is None:
        g.seed()
    else:
        g.manual_seed(int(seed))
    return g


# ====================================================================== features
@dataclass(frozen=True)
class Segmentation:
    """Feature labels of a batch.

    Attributes
    ----------
    labels : Tensor of shape (n, *input_shape), int64
        Feature index of every input element, in ``[0, n_features[i])``.
    n_features : Tensor of shape (n,), int64
        Number of features of each input (equal for all but superpixels).
    shared : bool
        True when every input has the same labels (``labels`` is then an expanded view).
    """

    labels: Tensor
    n_features: Tensor
    shared: bool

    @property
    def d(self) -> int:
        """Largest number of features over the batch: the width masks must have."""
        return int(self.n_features.max()) if len(self.n_features) else 0


class Features(ABC):
    """How an input splits into interpretable features.

    ``sample_ndim`` is the number of dimensions of one input (1 tabular, 3 images).
    """

    sample_ndim: int = 1

    @abstractmethod
    def segment(self, x: Tensor) -> Segmentation:
        """Labels for a batch ``x`` of shape ``(n, *input_shape)``."""

    def _check(self, x: Tensor) -> None:
        if x.ndim != self.sample_ndim + 1:
            kind = "(n, n_features)" if self.sample_ndim == 1 else "(n, channels, height, width)"
            raise ValueError(
                f"{type(self).__name__} expects a batch of shape {kind}, got {tuple(x.shape)}"
            )

    @staticmethod
    def _shared(labels: Tensor, n: int, d: int) -> Segmentation:
        return Segmentation(
            labels=labels.expand(n, *labels.shape),
            n_features=torch.full((n,), d, dtype=torch.long),
            shared=True,
        )


class Columns(Features):
    """Tabular columns, optionally merged into named groups.

    Parameters
    ----------
    groups : mapping name -> column indices, or sequence of index lists, or None
        Columns of one group are kept or removed together. Columns in no group become
        features of their own, after the groups. A column may belong to at most one group.

    Attributes
    ----------
    feature_names_ : list of str
        Set by :meth:`segment`: group names, then ``"x{j}"`` for ungrouped columns.
    """

    sample_ndim = 1

    def __init__(self, groups: dict[str, Sequence[int]] | Sequence[Sequence[int]] | None = None):
        if groups is None:
            self.groups: list[tuple[str, list[int]]] = []
        elif isinstance(groups, dict):
            self.groups = [(str(k), [int(c) for c in v]) for k, v in groups.items()]
        else:
            self.groups = [(f"group{i}", [int(c) for c in g]) for i, g in enumerate(groups)]
        seen: set[int] = set()
        for name, cols in self.groups:
            if not cols:
                raise ValueError(f"group {name!r} is empty")
            dup = seen.intersection(cols)
            if dup or len(set(cols)) != len(cols):
                raise ValueError(f"column(s) {sorted(dup) or cols} appear in more than one group")
            seen.update(cols)

    def column_labels(self, n_columns: int) -> tuple[Tensor, list[str]]:
        """Feature index of each column, shape ``(n_columns,)``, and the feature names."""
        labels = torch.full((n_columns,), -1, dtype=torch.long)
        names = []
        for f, (name, cols) in enumerate(self.groups):
            bad = [c for c in cols if not 0 <= c < n_columns]
            if bad:
                raise ValueError(f"group {name!r} has columns {bad} outside [0, {n_columns})")
            labels[cols] = f
            names.append(name)
        rest = (labels < 0).nonzero().flatten()
        labels[rest] = torch.arange(len(self.groups), len(self.groups) + len(rest))
        names += [f"x{int(c)}" for c in rest]
        return labels, names

    def segment(self, x: Tensor) -> Segmentation:
        self._check(x)
        labels, names = self.column_labels(x.shape[1])
        self.feature_names_ = names
        return self._shared(labels.to(x.device), len(x), len(names))


class Pixels(Features):
    """One feature per spatial location (all channels together) of ``(C, H, W)`` images."""

    sample_ndim = 3

    def segment(self, x: Tensor) -> Segmentation:
        self._check(x)
        c, h, w = x.shape[1:]
        lab = torch.arange(h * w, device=x.device).view(1, h, w).expand(c, h, w)
        return self._shared(lab, len(x), h * w)


class PatchGrid(Features):
    """Square (or rectangular) patches on a grid; edge patches may be smaller.

    Parameters
    ----------
    patch_size : int or (int, int)
        Patch height and width in pixels.
    """

    sample_ndim = 3

    def __init__(self, patch_size: int | tuple[int, int] = 4):
        ph, pw = (patch_size, patch_size) if isinstance(patch_size, int) else patch_size
        if ph < 1 or pw < 1:
            raise ValueError(f"patch_size must be positive, got {patch_size!r}")
        self.patch_size = (int(ph), int(pw))

    def segment(self, x: Tensor) -> Segmentation:
        self._check(x)
        c, h, w = x.shape[1:]
        ph, pw = self.patch_size
        cols = math.ceil(w / pw)
        rows_idx = torch.arange(h, device=x.device) // ph
        cols_idx = torch.arange(w, device=x.device) // pw
        lab = (rows_idx[:, None] * cols + cols_idx[None, :]).expand(c, h, w)
        return self._shared(lab, len(x), math.ceil(h / ph) * cols)


class Superpixels(Features):
    """SLIC superpixels (scikit-image), computed per image.

    Parameters
    ----------
    n_segments : int
        Approximate number of superpixels.
    compactness : float
        SLIC's balance of colour and space (higher: squarer segments).
    sigma : float
        Gaussian smoothing before segmentation.

    Each image gets its own labels and its own feature count ``n_features[i]``; masks are
    as wide as the largest count and extra columns are ignored for images with fewer.
    """

    sample_ndim = 3

    def __init__(self, n_segments: int = 100, *, compactness: float = 0.1, sigma: float = 0.0):
        if n_segments < 1:
            raise ValueError(f"n_segments must be >= 1, got {n_segments}")
        self.n_segments = int(n_segments)
        self.compactness = float(compactness)
        self.sigma = float(sigma)

    def segment(self, x: Tensor) -> Segmentation:
        from skimage.segmentation import slic

        self._check(x)
        imgs = x.detach().cpu().numpy()
        c = imgs.shape[1]
        labels = np.empty(imgs.shape, dtype=np.int64)
        counts = np.empty(len(imgs), dtype=np.int64)
        for i, img in enumerate(imgs):  # one segmentation per image, not per perturbation
            hwc = np.moveaxis(img, 0, -1)
            seg = slic(
                hwc if c > 1 else hwc[..., 0],
                n_segments=self.n_segments,
                compactness=self.compactness,
                sigma=self.sigma,
                channel_axis=-1 if c > 1 else None,
                start_label=0,
                enforce_connectivity=True,
            )
            _, inv = np.unique(seg, return_inverse=True)
            inv = inv.reshape(seg.shape)
            labels[i] = inv[None]
            counts[i] = inv.max() + 1
        return Segmentation(
            labels=torch.from_numpy(labels).to(x.device),
            n_features=torch.from_numpy(counts),
            shared=False,
        )


# ====================================================================== fills
class Fill(ABC):
    """What replaces removed features.

    Deterministic fills return one reference per input; stochastic fills (``stochastic =
    True``) draw a fresh reference for every perturbed row.
    """

    stochastic: bool = False

    def fit(self, background: Any) -> Fill:
        """Learn from background data of shape ``(n_background, *input_shape)``; returns self."""
        return self

    @abstractmethod
    def reference(self, x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """Replacement values for a batch ``x`` of shape ``(n, *input_shape)``, same shape."""


class Constant(Fill):
    """Replace removed features by a constant (default 0, e.g. black or the standardised mean)."""

    def __init__(self, value: float = 0.0):
        self.value = float(value)

    def reference(self, x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        return torch.full_like(x, self.value)


class Mean(Fill):
    """Replace removed features by their mean over background (training) data.

    Parameters
    ----------
    mean : array-like of shape input_shape, or None
        Given means; otherwise call :meth:`fit` with background data.
    """

    def __init__(self, mean: Any = None):
        self.mean_ = None if mean is None else as_tensor(mean, name="mean")

    def fit(self, background: Any) -> Mean:
        bg = as_tensor(background, name="background")
        if len(bg) == 0:
            raise ValueError("background data is empty")
        self.mean_ = bg.mean(dim=0)
        return self

    def reference(self, x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        if self.mean_ is None:
            raise RuntimeError("Mean fill is not fitted: pass mean=... or call fit(background)")
        if tuple(self.mean_.shape) != tuple(x.shape[1:]):
            raise ValueError(
                f"Mean fill was fitted on inputs of shape {tuple(self.mean_.shape)}, "
                f"got inputs of shape {tuple(x.shape[1:])}"
            )
        return self.mean_.to(x.device).expand_as(x)


class Blur(Fill):
    """Gaussian-blurred copy of the image: depthwise, separable, reflection padding.

    Parameters
    ----------
    kernel_size : int
        Odd kernel width (11 in Calibrate-to-Interpret). Must be smaller than twice the image
        side for reflection padding.
    sigma : float
        Standard deviation of the Gaussian in pixels (the paper says 10; large σ approaches a
        box blur).
    """

    def __init__(self, kernel_size: int = 11, sigma: float = 5.0):
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size}")
        if sigma <= 0:
            raise ValueError(f"sigma must be > 0, got {sigma}")
        self.kernel_size = int(kernel_size)
        self.sigma = float(sigma)

    def kernel(self, device: torch.device | None = None) -> Tensor:
        """The normalised 1-D Gaussian of shape ``(kernel_size,)``."""
        r = torch.arange(self.kernel_size, dtype=torch.float32, device=device)
        r = r - (self.kernel_size - 1) / 2
        k = torch.exp(-0.5 * (r / self.sigma) ** 2)
        return k / k.sum()

    def reference(self, x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        if x.ndim != 4:
            raise ValueError(f"Blur expects images of shape (n, C, H, W), got {tuple(x.shape)}")
        c, h, w = x.shape[1:]
        pad = self.kernel_size // 2
        if pad >= h or pad >= w:
            raise ValueError(
                f"kernel_size {self.kernel_size} is too large for {h}x{w} images with "
                "reflection padding (need kernel_size // 2 < side)"
            )
        k = self.kernel(x.device)
        kh = k.view(1, 1, -1, 1).expand(c, 1, -1, 1)
        kw = k.view(1, 1, 1, -1).expand(c, 1, 1, -1)
        y = torch.nn.functional.pad(x, (pad, pad, pad, pad), mode="reflect")
        y = torch.nn.functional.conv2d(y, kh, groups=c)
        return torch.nn.functional.conv2d(y, kw, groups=c)


class Noise(Fill):
    """Gaussian noise ``mean + std * ε`` drawn afresh for every perturbed row.

    Parameters
    ----------
    std, mean : float
        Noise parameters (in the input's units).
    around_input : bool
        If True the noise is added to the input (``x + std * ε``) instead of replacing it.
    """

    stochastic = True

    def __init__(self, std: float = 1.0, mean: float = 0.0, *, around_input: bool = False):
        if std < 0:
            raise ValueError(f"std must be >= 0, got {std}")
        self.std, self.mean, self.around_input = float(std), float(mean), bool(around_input)

    def reference(self, x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        eps = _std_normal(x.shape, generator).to(x.device)
        base = x if self.around_input else self.mean
        return base + self.std * eps


def _std_normal(shape: torch.Size, generator: torch.Generator | None) -> Tensor:
    """Standard normal draws by Box–Muller on ``torch.rand``.

    Unlike ``torch.randn``, ``torch.rand`` gives the same stream however a draw is split into
    calls, so seeded stochastic fills do not depend on ``chunk_size``.
    """
    u = torch.rand(*shape, 2, generator=generator, dtype=torch.float64)  # two per element
    r = torch.sqrt(-2.0 * torch.log1p(-u[..., 0]))  # 1 - u in (0, 1]
    return (r * torch.cos(2 * math.pi * u[..., 1])).to(torch.float32)


class Marginal(Fill):
    """Replace removed features by those of a random background row (interventional SHAP).

    Parameters
    ----------
    background : array-like of shape (n_background, *input_shape) or None
        Or call :meth:`fit`.
    """

    stochastic = True

    def __init__(self, background: Any = None):
        self.background_ = None
        if background is not None:
            self.fit(background)

    def fit(self, background: Any) -> Marginal:
        bg = as_tensor(background, name="background")
        if bg.ndim < 2 or len(bg) == 0:
            raise ValueError(
                f"background must have shape (n_background, *input_shape), got {tuple(bg.shape)}"
            )
        self.background_ = bg
        return self

    def reference(self, x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        if self.background_ is None:
            raise RuntimeError("Marginal fill is not fitted: pass background=... or call fit()")
        if tuple(self.background_.shape[1:]) != tuple(x.shape[1:]):
            raise ValueError(
                f"background rows have shape {tuple(self.background_.shape[1:])}, "
                f"inputs have shape {tuple(x.shape[1:])}"
            )
        idx = torch.randint(len(self.background_), (len(x),), generator=generator)
        return self.background_[idx].to(x.device)


# ====================================================================== coalitions
class CoalitionSampler(ABC):
    """Draws coalitions as boolean masks of shape ``(m, d)``; True keeps a feature."""

    @abstractmethod
    def _sample(self, m: int, d: int, g: torch.Generator) -> Tensor:
        ...

    def sample(self, m: int, d: int, *, seed: int | torch.Generator | None = None) -> Tensor:
        """``m`` masks over ``d`` features, bool of shape ``(m, d)``, reproducible by ``seed``."""
        if m < 0:
            raise ValueError(f"m must be >= 0, got {m}")
        if d < 1:
            raise ValueError(f"d must be >= 1, got {d}")
        return self._sample(int(m), int(d), make_generator(seed))


def _subsets_of_size(sizes: Tensor, d: int, g: torch.Generator) -> Tensor:
    """Uniform random subsets with ``sizes[i]`` members each: bool of shape (len(sizes), d).

    Keeps the ``sizes[i]`` smallest of d uniform draws (float64, so ties have probability
    ~d²/2⁵³): one sort and a threshold.
    """
    u = torch.rand(len(sizes), d, generator=g, dtype=torch.float64)
    srt = u.sort(dim=1).values
    kth = srt.gather(1, (sizes.long().clamp(1, d) - 1)[:, None])
    return (u <= kth) & (sizes[:, None] > 0)


class Uniform(CoalitionSampler):
    """Every subset equally likely (each feature kept with probability 1/2)."""

    def _sample(self, m: int, d: int, g: torch.Generator) -> Tensor:
        return torch.rand(m, d, generator=g) < 0.5


class Bernoulli(CoalitionSampler):
    """Each feature kept independently with probability ``p`` (RISE's keep probability)."""

    def __init__(self, p: float = 0.5):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must lie in [0, 1], got {p}")
        self.p = float(p)

    def _sample(self, m: int, d: int, g: torch.Generator) -> Tensor:
        return torch.rand(m, d, generator=g) < self.p


class FixedSize(CoalitionSampler):
    """Uniform subsets of exactly ``size`` kept features."""

    def __init__(self, size: int):
        if size < 0:
            raise ValueError(f"size must be >= 0, got {size}")
        self.size = int(size)

    def _sample(self, m: int, d: int, g: torch.Generator) -> Tensor:
        if self.size > d:
            raise ValueError(f"size {self.size} exceeds the number of features {d}")
        return _subsets_of_size(torch.full((m,), self.size), d, g)


class ShapleyKernel(CoalitionSampler):
    """Coalitions drawn from the Shapley kernel: size s ∈ {1..d−1} with probability
    ∝ (d − 1) / (s (d − s)), then a uniform subset of that size.

    Parameters
    ----------
    paired : bool
        Paired (antithetic) sampling: every drawn mask is followed by its complement, which
        halves the variance of KernelSHAP for the same budget. ``m`` odd leaves the last
        mask unpaired.
    """

    def __init__(self, paired: bool = True):
        self.paired = bool(paired)

    @staticmethod
    def size_weights(d: int) -> Tensor:
        """Probability of each coalition size 1..d−1, shape ``(d − 1,)``."""
        s = torch.arange(1, d, dtype=torch.float64)
        w = (d - 1) / (s * (d - s))
        return w / w.sum()

    def _sample(self, m: int, d: int, g: torch.Generator) -> Tensor:
        if d < 2:
            raise ValueError("the Shapley kernel needs d >= 2 features")
        n_draw = (m + 1) // 2 if self.paired else m
        if n_draw == 0:
            return torch.zeros(0, d, dtype=torch.bool)
        sizes = torch.multinomial(self.size_weights(d), n_draw, replacement=True, generator=g) + 1
        masks = _subsets_of_size(sizes, d, g)
        if self.paired:
            masks = torch.stack([masks, ~masks], dim=1).reshape(-1, d)[:m]
        return masks


class StratifiedLevels(CoalitionSampler):
    """Equal numbers of coalitions per perturbation-level bin (ReCalX's sampling).

    For bin b = [b/B, (b+1)/B): draw λ uniformly in the bin, keep ``round((1 − λ) d)`` features
    chosen uniformly (an [I] choice of the spec). With small d the realised level is the
    nearest achievable one, which may fall in a neighbouring bin; use :func:`level_bins`
    on the realised levels. Masks come ordered by bin; ``m`` is split as evenly as possible.
    """

    def __init__(self, n_bins: int = 10):
        if n_bins < 1:
            raise ValueError(f"n_bins must be >= 1, got {n_bins}")
        self.n_bins = int(n_bins)

    def _sample(self, m: int, d: int, g: torch.Generator) -> Tensor:
        per_bin = torch.full((self.n_bins,), m // self.n_bins, dtype=torch.long)
        per_bin[: m % self.n_bins] += 1
        bins = torch.repeat_interleave(torch.arange(self.n_bins), per_bin)
        lam = (bins + torch.rand(m, generator=g, dtype=torch.float64)) / self.n_bins
        sizes = torch.round((1 - lam) * d).long()
        return _subsets_of_size(sizes, d, g)


def all_coalitions(d: int, *, max_d: int = 20) -> Tensor:
    """All ``2**d`` coalitions, bool of shape ``(2**d, d)``; row i is the binary expansion of i."""
    if not 1 <= d <= max_d:
        raise ValueError(f"exact enumeration needs 1 <= d <= {max_d}, got d={d}")
    idx = torch.arange(2**d)
    return ((idx[:, None] >> torch.arange(d)) & 1).bool()


def levels_of(masks: Tensor, n_features: Tensor | int | None = None) -> Tensor:
    """Perturbation level λ = (d − |S|)/d of each mask: the fraction of features removed.

    Parameters
    ----------
    masks : Tensor of shape (..., d), bool or float in [0, 1]
    n_features : int, Tensor broadcastable to masks.shape[:-1], or None
        Each mask's own number of features (columns beyond it are ignored); None uses d.
    """
    d = masks.shape[-1]
    keep = masks.to(torch.float32)
    if n_features is None:
        # (d - |S|) / d, not 1 - mean: the latter rounds k/d just below bin edges
        return (d - keep.sum(dim=-1)) / d
    nf = torch.as_tensor(n_features, device=masks.device)
    valid = torch.arange(d, device=masks.device) < nf[..., None]
    kept = (keep * valid).sum(dim=-1)
    return (nf - kept) / nf.to(torch.float32)


def level_bins(levels: Tensor | np.ndarray, n_bins: int = 10) -> Tensor:
    """Bin index of each level for ``n_bins`` equal-width bins of [0, 1]; λ = 1 goes to the
    last bin."""
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    lv = torch.as_tensor(levels)
    if not torch.isfinite(lv).all() or (lv < 0).any() or (lv > 1).any():
        raise ValueError("levels must lie in [0, 1]")
    return (lv * n_bins).floor().long().clamp(max=n_bins - 1)


# ====================================================================== engine
@dataclass(frozen=True)
class Perturbed:
    """Perturbed inputs and their levels.

    Attributes
    ----------
    inputs : Tensor of shape (n, m, *input_shape), or (m, *input_shape) for a single input
    levels : Tensor of shape (n, m), or (m,)
    """

    inputs: Tensor
    levels: Tensor


@dataclass(frozen=True)
class QueryResult:
    """Model outputs on perturbed inputs.

    Attributes
    ----------
    outputs : Tensor of shape (n, m, n_outputs), or (m, n_outputs) for a single input
        Logits (classifiers) or outputs (regressors).
    levels : Tensor of shape (n, m), or (m,)
    n_queries : int
        Model evaluations spent.
    """

    outputs: Tensor
    levels: Tensor
    n_queries: int


class Perturbation:
    """Features + fill: builds perturbed inputs and queries a model on them in chunks.

    Parameters
    ----------
    features : Features
    fill : Fill
    chunk_size : int
        Perturbed rows built at once; bounds memory for any number of masks.

    Notes
    -----
    ``x`` may be one input ``(*input_shape)`` or a batch ``(n, *input_shape)``. Results for a
    single input drop the leading ``n`` axis.
    """

    def __init__(self, features: Features, fill: Fill, *, chunk_size: int = 8192):
        if not isinstance(features, Features):
            raise TypeError(f"features must be a calix Features, got {type(features).__name__}")
        if not isinstance(fill, Fill):
            raise TypeError(f"fill must be a calix Fill, got {type(fill).__name__}")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.features = features
        self.fill = fill
        self.chunk_size = int(chunk_size)

    # -------------------------------------------------------------- helpers
    def _batch(self, x: Any, device: torch.device | None = None) -> tuple[Tensor, bool]:
        t = as_tensor(x, name="x", device=device)
        nd = self.features.sample_ndim
        if t.ndim == nd:
            return t[None], True
        if t.ndim != nd + 1:
            raise ValueError(
                f"x must be one input with {nd} dimension(s) or a batch with {nd + 1}, "
                f"got shape {tuple(t.shape)}"
            )
        if len(t) == 0 or t[0].numel() == 0:
            raise ValueError(f"x is empty (shape {tuple(t.shape)})")
        return t, False

    def segment(self, x: Any) -> Segmentation:
        """Feature labels of ``x`` (one input or a batch)."""
        return self.features.segment(self._batch(x)[0])

    def n_features(self, x: Any) -> int:
        """Number of features d (the largest over a batch for superpixels)."""
        return self.segment(x).d

    def _masks(self, masks: Any, n: int, d: int, device: torch.device, dtype: torch.dtype
               ) -> Tensor:
        try:
            mk = torch.as_tensor(masks, device=device)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise TypeError(f"masks must be a boolean or numeric array: {exc}") from exc
        if mk.ndim == 2:
            mk = mk[None]
        if mk.ndim != 3 or mk.shape[0] not in (1, n) or mk.shape[-1] != d:
            raise ValueError(
                f"masks must have shape (m, {d}) or ({n}, m, {d}), "
                f"got {tuple(torch.as_tensor(masks).shape)}"
            )
        if mk.dtype != torch.bool:
            if mk.is_complex():
                raise TypeError("masks must be boolean or real numbers in [0, 1]")
            mk = mk.to(dtype)
            if not torch.isfinite(mk).all() or (mk < 0).any() or (mk > 1).any():
                raise ValueError("masks must be boolean or numbers in [0, 1] (1 keeps a feature)")
            if ((mk == 0) | (mk == 1)).all() and not mk.requires_grad:
                mk = mk.bool()
        return mk

    # -------------------------------------------------------------- core
    def iter_chunks(
        self,
        x: Any,
        masks: Any,
        *,
        seed: int | torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> Iterator[tuple[slice, Tensor, Tensor]]:
        """Yield ``(rows, inputs, levels)`` chunks of the flattened ``n * m`` perturbations.

        ``rows`` is a slice into the row index ``i * m + j`` (input i, mask j); ``inputs`` has
        shape ``(c, *input_shape)`` and ``levels`` ``(c,)``, with c <= ``chunk_size``.
        """
        dev = torch.device(device) if device is not None else None
        xb, _ = self._batch(x, dev)
        dev = xb.device
        n = len(xb)
        seg = self.features.segment(xb)
        mk = self._masks(masks, n, seg.d, dev, xb.dtype)
        m = mk.shape[1]
        g = make_generator(seed)
        levels = levels_of(mk.detach(), seg.n_features.to(dev)[:, None])  # (n or 1.., m)
        levels = levels.expand(n, m)
        ref = None if self.fill.stochastic else self.fill.reference(xb, generator=g)
        flat = xb.reshape(n, -1)
        ref_flat = None if ref is None else ref.reshape(n, -1)
        lab_flat = seg.labels.reshape(n, -1)
        shape = xb.shape[1:]
        total = n * m
        for start in range(0, total, self.chunk_size):
            stop = min(start + self.chunk_size, total)
            r = torch.arange(start, stop, device=dev)
            i, j = r // m, r % m
            rows_mask = mk[i if mk.shape[0] > 1 else torch.zeros_like(i), j]  # (c, d)
            if seg.shared:
                keep = rows_mask[:, lab_flat[0]]  # (c, numel)
            else:
                keep = torch.gather(rows_mask, 1, lab_flat[i])
            xi = flat[i]
            if ref_flat is None:
                refi = self.fill.reference(xb[i], generator=g).reshape(len(r), -1)
            else:
                refi = ref_flat[i]
            if keep.dtype == torch.bool:
                out = torch.where(keep, xi, refi)
            else:
                out = refi + keep * (xi - refi)
            yield slice(start, stop), out.reshape(len(r), *shape), levels[i, j]

    def apply(
        self,
        x: Any,
        masks: Any,
        *,
        seed: int | torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> Perturbed:
        """All perturbed inputs at once (for modest ``n * m``; use :meth:`query` for more).

        Parameters
        ----------
        x : array-like of shape (*input_shape) or (n, *input_shape)
        masks : bool or float array of shape (m, d) or (n, m, d)
        seed : int or Generator, used by stochastic fills
        """
        xb, single = self._batch(x, torch.device(device) if device else None)
        chunks = list(self.iter_chunks(xb, masks, seed=seed))
        n = len(xb)
        inputs = torch.cat([c[1] for c in chunks]) if chunks else xb[:0]
        levels = torch.cat([c[2] for c in chunks]) if chunks else xb.new_zeros(0)
        m = len(levels) // n
        inputs = inputs.reshape(n, m, *xb.shape[1:])
        levels = levels.reshape(n, m)
        return Perturbed(inputs[0], levels[0]) if single else Perturbed(inputs, levels)

    def query(
        self,
        model: Model,
        x: Any,
        masks: Any,
        *,
        seed: int | torch.Generator | None = None,
        grad: bool = False,
        progress: bool = False,
    ) -> QueryResult:
        """Model outputs on every perturbation, chunk by chunk, levels passed along.

        Parameters
        ----------
        model : Model
            A wrapped model (see :func:`calix.models.wrap`).
        x : array-like of shape (*input_shape) or (n, *input_shape)
        masks : array of shape (m, d) or (n, m, d)
        seed : int or Generator, used by stochastic fills
        grad : bool
            Keep the autograd graph (e.g. to optimise float masks).
        progress : bool
            Show a progress bar over chunks.

        Returns
        -------
        QueryResult with outputs of shape (n, m, n_outputs) (or (m, n_outputs)).
        """
        from calix._progress import progress_bar

        if not isinstance(model, Model):
            raise TypeError("model must be a calix Model; wrap it with calix.wrap(model) first")
        xb, single = self._batch(x, model.device)
        before = model.n_queries
        n = len(xb)
        outs, lvls = [], []
        chunks = self.iter_chunks(xb, masks, seed=seed)
        mshape = np.shape(masks)
        m_total = mshape[-2] if len(mshape) >= 2 else 0
        total = math.ceil(n * m_total / self.chunk_size)
        for _, inputs, levels in progress_bar(chunks, total=total, enabled=progress,
                                              description="perturbations"):
            # inputs are built from the validated x and the fill: no second finiteness pass
            outs.append(model.forward(inputs, levels=levels, grad=grad, validate=False))
            lvls.append(levels)
        if not outs:
            raise ValueError("no perturbations to query (masks are empty)")
        outputs = torch.cat(outs)
        levels = torch.cat(lvls)
        m = len(levels) // n
        outputs = outputs.reshape(n, m, -1)
        levels = levels.reshape(n, m)
        used = model.n_queries - before
        if single:
            return QueryResult(outputs[0], levels[0], used)
        return QueryResult(outputs, levels, used)
