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

import functools
import math
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from calix._random import make_generator
from calix._random import std_normal as _std_normal
from calix._random import subsets_of_size as _subsets_of_size
from calix._validation import MAX_ELEMENTS, check_count
from calix.models import Model, as_tensor

__all__ = [
    "Segmentation", "Features", "Columns", "Pixels", "PatchGrid", "Superpixels",
    "Fill", "Constant", "Mean", "Blur", "Noise", "Marginal",
    "CoalitionSampler", "Uniform", "FixedSize", "ShapleyKernel", "Bernoulli", "StratifiedLevels",
    "Design", "CoalitionDesign", "KernelSHAPDesign", "LeverageDesign", "SurrogateDesign",
    "LimeDesign", "GlimeDesign",
    "all_coalitions", "levels_of", "level_bins", "make_generator", "check_count", "MAX_ELEMENTS",
    "Perturbation", "Perturbed", "QueryResult", "MaskBlocks",
]


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
    groups : mapping name -> columns, or sequence of column lists, or None
        Columns of one group are kept or removed together; a column is an index or, when the
        column names are known, a name. Columns in no group become features of their own,
        after the groups. A column may belong to at most one group.
    names : sequence of str or None
        Column names. None takes them from the data when known (a DataFrame's columns, a
        scikit-learn model's ``feature_names_in_``), else ``x0, x1, ...``.

    Attributes
    ----------
    feature_names_ : list of str
        Set by :meth:`segment`: group names, then the names of ungrouped columns.
    """

    sample_ndim = 1

    def __init__(self, groups: dict[str, Sequence[int | str]] | Sequence[Sequence[int | str]]
                 | None = None, *, names: Sequence[str] | None = None):
        if groups is None:
            self.groups: list[tuple[str, list[int | str]]] = []
        elif isinstance(groups, dict):
            self.groups = [(str(k), list(v)) for k, v in groups.items()]
        else:
            self.groups = [(f"group{i}", list(g)) for i, g in enumerate(groups)]
        seen: set[int | str] = set()
        for name, cols in self.groups:
            if not cols:
                raise ValueError(f"group {name!r} is empty")
            for c in cols:
                if not isinstance(c, str | int | np.integer) or isinstance(c, bool):
                    raise TypeError(f"group {name!r}: columns are indices or names, got {c!r}")
            keys = [c if isinstance(c, str) else int(c) for c in cols]
            dup = seen.intersection(keys)
            if dup or len(set(keys)) != len(keys):
                raise ValueError(f"column(s) {sorted(dup, key=str) or keys} appear in more than "
                                 "one group")
            seen.update(keys)
        self.names = None if names is None else [str(c) for c in names]
        #: names taken from the data being explained (used when ``names`` is None)
        self.data_names: list[str] | None = None

    def _resolve(self, n_columns: int) -> tuple[list[str], list[tuple[str, list[int]]]]:
        names = self.names or self.data_names
        if names is not None and len(names) != n_columns:
            if self.names is not None:
                raise ValueError(f"Columns has {len(names)} names for inputs with {n_columns} "
                                 "columns")
            names = None
        index = {c: j for j, c in enumerate(names)} if names is not None else {}
        groups, seen = [], set()
        for name, cols in self.groups:
            idx = []
            for c in cols:
                if isinstance(c, str):
                    if names is None:
                        raise ValueError(f"group {name!r} names column {c!r}, but the column "
                                         "names are unknown: explain a DataFrame or pass "
                                         "Columns(..., names=[...])")
                    if c not in index:
                        raise ValueError(f"group {name!r}: no column named {c!r} (columns: "
                                         f"{names[:8]}{' ...' if len(names) > 8 else ''})")
                    idx.append(index[c])
                elif not 0 <= int(c) < n_columns:
                    raise ValueError(f"group {name!r} has columns {[c]} outside "
                                     f"[0, {n_columns})")
                else:
                    idx.append(int(c))
            dup = seen.intersection(idx)
            if dup or len(set(idx)) != len(idx):
                raise ValueError(f"column(s) {sorted(dup) or idx} appear in more than one group")
            seen.update(idx)
            groups.append((name, idx))
        return names or [f"x{j}" for j in range(n_columns)], groups

    def column_labels(self, n_columns: int) -> tuple[Tensor, list[str]]:
        """Feature index of each column, shape ``(n_columns,)``, and the feature names."""
        col_names, groups = self._resolve(n_columns)
        labels = torch.full((n_columns,), -1, dtype=torch.long)
        names = []
        for f, (name, cols) in enumerate(groups):
            labels[cols] = f
            names.append(name)
        rest = (labels < 0).nonzero().flatten()
        labels[rest] = torch.arange(len(groups), len(groups) + len(rest))
        names += [col_names[int(c)] for c in rest]
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
    n_jobs : int or None
        Threads segmenting the images of a batch in parallel (scikit-image's SLIC releases the
        GIL for most of its work: two threads segment eight 224×224 photos in about half the
        time of one). None: as many as CPU cores (at most one per image); 1: serial; -1: all
        cores.
    cache : bool
        Reuse the labels of an image segmented before with the same parameters (a shared,
        bounded cache keyed by a hash of the image's bytes), so several explainers and
        metrics on the same inputs run SLIC once per image.

    Each image gets its own labels and its own feature count ``n_features[i]``; masks are
    as wide as the largest count and extra columns are ignored for images with fewer.
    Segmentation runs on the CPU; labels come back on the input's device.

    The cache holds at most :attr:`cache_max_bytes` of labels (64 MiB by default: about
    1300 images of 224×224), least recently used first out; :meth:`cache_info` reports its
    use and :meth:`clear_cache` empties it.
    """

    sample_ndim = 3

    class _Cache:
        """A thread-safe LRU map from (image hash, parameters) to labels, bounded in bytes."""

        def __init__(self, max_bytes: int):
            import threading

            self.max_bytes = int(max_bytes)
            self.lock = threading.Lock()
            self.data: dict[tuple, np.ndarray] = {}
            self.nbytes = self.hits = self.misses = 0

        def get(self, key: tuple) -> np.ndarray | None:
            with self.lock:
                value = self.data.pop(key, None)
                if value is None:
                    self.misses += 1
                    return None
                self.data[key] = value  # most recently used last
                self.hits += 1
                return value

        def put(self, key: tuple, value: np.ndarray) -> None:
            if value.nbytes > self.max_bytes:
                return
            with self.lock:
                old = self.data.pop(key, None)
                if old is not None:
                    self.nbytes -= old.nbytes
                while self.data and self.nbytes + value.nbytes > self.max_bytes:
                    self.nbytes -= self.data.pop(next(iter(self.data))).nbytes
                self.data[key] = value
                self.nbytes += value.nbytes

        def clear(self) -> None:
            with self.lock:
                self.data.clear()
                self.nbytes = self.hits = self.misses = 0

    _cache = _Cache(64 << 20)

    def __init__(self, n_segments: int = 100, *, compactness: float = 0.1, sigma: float = 0.0,
                 n_jobs: int | None = None, cache: bool = True):
        if not isinstance(n_segments, int | np.integer) or isinstance(n_segments, bool) \
                or n_segments < 1:
            raise ValueError(f"n_segments must be an integer >= 1, got {n_segments!r}")
        if n_jobs is not None and (not isinstance(n_jobs, int | np.integer)
                                   or n_jobs == 0 or n_jobs < -1):
            raise ValueError(f"n_jobs must be None, -1 or a positive integer, got {n_jobs!r}")
        self.n_segments = int(n_segments)
        self.compactness = float(compactness)
        self.sigma = float(sigma)
        self.n_jobs = n_jobs
        self.cache = bool(cache)

    @classmethod
    def cache_info(cls) -> dict[str, int]:
        """Use of the shared label cache: ``hits``, ``misses``, ``images``, ``bytes``,
        ``max_bytes``."""
        c = cls._cache
        with c.lock:
            return {"hits": c.hits, "misses": c.misses, "images": len(c.data),
                    "bytes": c.nbytes, "max_bytes": c.max_bytes}

    @classmethod
    def clear_cache(cls) -> None:
        """Empty the shared label cache (and reset its counters)."""
        cls._cache.clear()

    @classmethod
    def set_cache_size(cls, max_bytes: int) -> None:
        """Bound the shared label cache to ``max_bytes`` (0 turns caching off), emptying it."""
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        cls._cache.clear()
        cls._cache.max_bytes = int(max_bytes)

    def _slic(self, img: np.ndarray) -> np.ndarray:
        """Labels 0..k−1 of one (C, H, W) image, shape (H, W), the smallest integer dtype."""
        from skimage.segmentation import slic

        c = img.shape[0]
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
        return inv.astype(np.int16 if inv.max() < 2**15 else np.int32)

    def _key(self, img: np.ndarray) -> tuple:
        import hashlib

        digest = hashlib.blake2b(np.ascontiguousarray(img).data, digest_size=16).digest()
        return (digest, img.shape, img.dtype.str, self.n_segments, self.compactness, self.sigma)

    def _workers(self, n_images: int) -> int:
        import os

        try:  # the cores this process may run on (containers and taskset limit them)
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # macOS, Windows
            cores = os.cpu_count() or 1
        if self.n_jobs is None or self.n_jobs == -1:
            want = cores
        else:
            want = int(self.n_jobs)
        return max(1, min(want, n_images))

    def segment(self, x: Tensor) -> Segmentation:
        self._check(x)
        imgs = x.detach().cpu().numpy()
        n, c, h, w = imgs.shape
        found: list[np.ndarray | None] = [None] * n
        keys: list[tuple | None] = [None] * n
        if self.cache and self._cache.max_bytes > 0:
            for i, img in enumerate(imgs):
                keys[i] = self._key(img)
                found[i] = self._cache.get(keys[i])
        todo = [i for i in range(n) if found[i] is None]
        workers = self._workers(len(todo))
        if workers > 1:  # one segmentation per image, not per perturbation
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(workers) as pool:
                done = list(pool.map(self._slic, [imgs[i] for i in todo]))
        else:
            done = [self._slic(imgs[i]) for i in todo]
        for i, lab in zip(todo, done, strict=True):
            found[i] = lab
            if keys[i] is not None:
                self._cache.put(keys[i], lab)
        labels = torch.empty((n, h, w), dtype=torch.long)
        counts = torch.empty(n, dtype=torch.long)
        for i, lab in enumerate(found):
            labels[i] = torch.from_numpy(lab.astype(np.int64))
            counts[i] = int(lab.max()) + 1
        return Segmentation(
            labels=labels.to(x.device)[:, None].expand(n, c, h, w),
            n_features=counts,
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


class Marginal(Fill):
    """Removed features take the values of background rows: the interventional (marginal)
    game of SHAP, v(S) = E_b f(x_S, b_S̄) over the background rows b.

    Explainers (:class:`~calix.explain.FeatureExplainer` and its subclasses) evaluate every
    coalition with *every* background row and average the explained score, as shap's
    ``KernelExplainer`` does with the same background: queries cost ``len(background)`` model
    rows per coalition, so keep the background small (50--100 rows, e.g. a k-means summary
    or a random subset). The base value is then E_b f(b).

    Used directly through :meth:`Perturbation.apply` / :meth:`Perturbation.query` (and so in
    calibration on perturbed inputs), each perturbed row draws one random background row.

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

    def _checked_background(self, x: Tensor) -> Tensor:
        if self.background_ is None:
            raise RuntimeError("Marginal fill is not fitted: pass background=... or call fit()")
        if tuple(self.background_.shape[1:]) != tuple(x.shape[1:]):
            raise ValueError(
                f"background rows have shape {tuple(self.background_.shape[1:])}, "
                f"inputs have shape {tuple(x.shape[1:])}"
            )
        return self.background_

    def reference(self, x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        bg = self._checked_background(x)
        idx = torch.randint(len(bg), (len(x),), generator=generator)
        return bg[idx].to(x.device)


# ====================================================================== coalitions
class CoalitionSampler(ABC):
    """Draws coalitions as boolean masks of shape ``(m, d)``; True keeps a feature."""

    @abstractmethod
    def _sample(self, m: int, d: int, g: torch.Generator) -> Tensor:
        ...

    def sample(self, m: int, d: int, *, seed: int | torch.Generator | None = None) -> Tensor:
        """``m`` masks over ``d`` features, bool of shape ``(m, d)``, reproducible by ``seed``."""
        d = check_count(d, "d")
        m = check_count(m, "m", minimum=0, width=d)
        return self._sample(m, d, make_generator(seed))


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


# ====================================================================== coalition designs
def _kernel_mass(d: int) -> Tensor:
    """Shapley-kernel mass of every size 0..d (float64, 0 at the ends, sums to 1)."""
    mass = torch.zeros(d + 1, dtype=torch.float64)
    mass[1:d] = ShapleyKernel.size_weights(d)
    return mass


def _log_comb(d: int, s: Tensor) -> Tensor:
    s = s.double()
    return math.lgamma(d + 1) - torch.lgamma(s + 1) - torch.lgamma(d - s + 1)


@dataclass
class CoalitionDesign:
    """Coalitions an estimator queries and their regression weights.

    Attributes
    ----------
    masks : Tensor of shape (n, m, d), bool -- one row per coalition (ends not included).
    fixed_weights : Tensor of shape (n_fixed,), float64 -- weights of the first ``n_fixed``
        rows, which are enumerated (the same for every input and every seed).
    n_fixed : int
    paired : bool -- the rows after ``n_fixed`` come as (S, complement of S) pairs (an odd
        number leaves the last row unpaired).
    sizes, size_probs : Tensor or None -- the sizes the sampled rows were drawn from and their
        probabilities (used by :meth:`extend`).
    mass : Tensor of shape (d + 1,), float64 -- Shapley-kernel mass each size carries in the
        sampled rows (0 for enumerated sizes).
    row_ids : Tensor of shape (n_sampled,), long -- the position each sampled row had when it
        was drawn (a subset from :meth:`take` keeps them; pairs are ids 2k and 2k + 1).
    reweight : {"equal", "size", "none"} -- how the sampled rows share that mass: equally
        (each row mass / count: sizes drawn in proportion to their mass, KernelSHAP), by size
        (each size's mass split among that input's rows of that size: sizes drawn by any
        distribution, Leverage SHAP), or no weights (``weights`` is None: LIME's samplers, whose
        weights come from a kernel).
    """

    masks: Tensor
    fixed_weights: Tensor
    n_fixed: int = 0
    paired: bool = False
    sizes: Tensor | None = None
    size_probs: Tensor | None = None
    mass: Tensor | None = None
    reweight: str = "equal"
    row_ids: Tensor | None = None

    def __post_init__(self) -> None:
        if self.row_ids is None:  # which drawn row each sampled row is (kept by take())
            self.row_ids = torch.arange(self.masks.shape[1] - self.n_fixed)

    @property
    def n_sampled(self) -> int:
        return self.masks.shape[1] - self.n_fixed

    @property
    def weights(self) -> Tensor | None:
        """Regression weights, (m,) or (n, m) float64, summing to the kernel mass of the
        proper coalitions (1) -- or None for ``reweight="none"``."""
        if self.reweight == "none":
            return None
        m_s = self.n_sampled
        if m_s == 0 or self.mass is None:
            return self.fixed_weights
        sampled = self.masks[:, self.n_fixed:]
        if self.reweight == "equal":
            share = torch.full((m_s,), float(self.mass.sum()) / m_s, dtype=torch.float64)
            return torch.cat([self.fixed_weights, share])
        n, d = sampled.shape[0], sampled.shape[-1]
        size = sampled.sum(-1).cpu()  # (n, m_s)
        counts = torch.zeros(n, d + 1, dtype=torch.float64)
        counts.scatter_add_(1, size, torch.ones(size.shape, dtype=torch.float64))
        present = self.mass * (counts > 0)  # mass of sizes that have rows
        scale = self.mass.sum() / present.sum(1, keepdim=True).clamp_min(1e-300)
        w = (present * scale / counts.clamp_min(1)).gather(1, size)
        return torch.cat([self.fixed_weights.expand(n, -1), w], 1)

    def take(self, rows: Tensor) -> CoalitionDesign:
        """The design with the fixed rows and the sampled rows ``rows`` (indices into the
        sampled part) -- what a jackknife replicate refits."""
        keep = torch.cat([torch.arange(self.n_fixed), self.n_fixed + rows.cpu().long()])
        return CoalitionDesign(self.masks[:, keep.to(self.masks.device)], self.fixed_weights,
                               self.n_fixed, False, self.sizes, self.size_probs, self.mass,
                               self.reweight, self.row_ids[rows.cpu().long()])

    def extend(self, m: int, generator: torch.Generator) -> CoalitionDesign:
        """The design with ``m`` more sampled rows, drawn as the sampled part was (sizes from
        ``size_probs``, uniform subsets of a size, paired if the design is)."""
        if self.sizes is None or self.size_probs is None or m <= 0:
            raise ValueError("this design has no sampled part to extend")
        n, _, d = self.masks.shape
        more = _draw_pairs(n, m, d, self.sizes, self.size_probs, self.paired, generator)
        start = int(self.row_ids.max()) + 1 if len(self.row_ids) else 0
        start += start % 2  # new pairs start at an even id: a pair is ids (2k, 2k + 1)
        ids = torch.cat([self.row_ids, start + torch.arange(m)])
        return CoalitionDesign(torch.cat([self.masks, more.to(self.masks.device)], 1),
                               self.fixed_weights, self.n_fixed, self.paired, self.sizes,
                               self.size_probs, self.mass, self.reweight, ids)


def _draw_pairs(n: int, m: int, d: int, sizes: Tensor, probs: Tensor, paired: bool,
                g: torch.Generator) -> Tensor:
    """(n, m, d) masks: sizes drawn from ``probs`` over ``sizes``, uniform subsets of a size,
    each followed by its complement when ``paired``."""
    half = (m + 1) // 2 if paired else m
    pick = torch.multinomial(probs / probs.sum(), n * half, replacement=True, generator=g)
    drawn = _subsets_of_size(sizes[pick], d, g).reshape(n, half, d)
    if paired:
        drawn = torch.stack([drawn, ~drawn], 2).reshape(n, 2 * half, d)[:, :m]
    return drawn


class Design(ABC):
    """A coalition design: draws the coalitions (and regression weights) an estimator queries.

    ``draw(n, m, d, generator)`` returns a :class:`CoalitionDesign` of ``m`` coalitions per
    input (the empty and the full coalition are not among them: estimators query those
    themselves).
    """

    #: fewest coalitions a draw needs for ``d`` features
    def minimum(self, d: int) -> int:
        return 1

    @abstractmethod
    def _draw(self, n: int, m: int, d: int, g: torch.Generator) -> CoalitionDesign:
        ...

    def draw(self, n: int, m: int, d: int, generator: torch.Generator) -> CoalitionDesign:
        n, d = check_count(n, "n"), check_count(d, "d")
        m = check_count(m, "m", minimum=0, width=d)
        if m < self.minimum(d):
            raise ValueError(f"{type(self).__name__} needs at least {self.minimum(d)} "
                             f"coalitions for {d} features, got {m}")
        return self._draw(n, m, d, generator)


def _whole_stratum(d: int, s: int) -> tuple[Tensor, Tensor]:
    """Every coalition of size s, then (unless 2s = d) their complements, of size d − s, each
    with its exact Shapley-kernel weight: rows (count, d) bool and weights (count,) float64."""
    masses = _kernel_mass(d)
    small = _unrank(torch.arange(math.comb(d, s)), d, s)
    sizes = [s] if 2 * s == d else [s, d - s]
    rows = torch.cat([small if k == s else ~small for k in sizes])
    weights = torch.cat([torch.full((len(small),), float(masses[k]) / math.comb(d, k),
                                    dtype=torch.float64) for k in sizes])
    return rows, weights


class KernelSHAPDesign(Design):
    """KernelSHAP's design (Lundberg & Lee 2017, as shap's KernelExplainer).

    Coalition sizes are taken in pairs (s, d − s) from the heaviest Shapley-kernel mass inwards,
    and a pair is enumerated completely (each subset weighted by its exact kernel weight) while
    the budget left would otherwise sample it at least as often as it has subsets; the rest of
    the budget is drawn from the remaining sizes' kernel (paired with complements when
    ``paired``), with equal weights carrying the remaining kernel mass. Enumerated parts are the
    same for every seed, which is what makes the estimate reproducible.
    """

    def __init__(self, paired: bool = True):
        self.paired = bool(paired)

    def minimum(self, d: int) -> int:
        return 2 if d >= 2 else 1

    def _draw(self, n: int, m: int, d: int, g: torch.Generator) -> CoalitionDesign:
        if d < 2:
            raise ValueError("the Shapley kernel needs d >= 2 features")
        size_w = ShapleyKernel.size_weights(d)  # mass of each size 1..d-1, sums to 1
        left, mass_left = m, 1.0
        parts, weights = [], []
        remaining = list(range(1, d))
        for s in range(1, d // 2 + 1):
            sizes = [s] if s == d - s else [s, d - s]
            count = sum(math.comb(d, k) for k in sizes)
            mass = float(sum(size_w[k - 1] for k in sizes))
            if count > left or left * mass / mass_left < count:
                break
            rows, w = _whole_stratum(d, s)
            parts.append(rows)
            weights.append(w)
            for k in sizes:
                remaining.remove(k)
            left -= count
            mass_left -= mass
        fixed = torch.cat(parts) if parts else torch.zeros(0, d, dtype=torch.bool)
        fixed_w = torch.cat(weights) if weights else torch.zeros(0, dtype=torch.float64)
        masses = _kernel_mass(d)
        if left > 0 and remaining:
            sizes_t = torch.as_tensor(remaining)
            probs = size_w[sizes_t - 1]
            drawn = _draw_pairs(n, left, d, sizes_t, probs, self.paired, g)
            keep = torch.zeros(d + 1, dtype=torch.bool)
            keep[sizes_t] = True
            return CoalitionDesign(torch.cat([fixed[None].expand(n, -1, -1), drawn], 1),
                                   fixed_w, len(fixed), self.paired, sizes_t, probs / probs.sum(),
                                   masses * keep, "equal")
        return CoalitionDesign(fixed[None].expand(n, -1, -1), fixed_w, len(fixed), False)


class LeverageDesign(Design):
    """Leverage SHAP's design (Musco & Witter, ICLR 2025): coalitions drawn by their leverage
    scores in the Shapley regression -- every coalition size carries the same total leverage,
    so every size gets the same share of the budget -- without replacement, each coalition
    followed by its complement (a size pair (s, d − s) gets twice the pairs of the middle size
    d/2, whose complements have its own size).

    Sizes whose share covers all their subsets are enumerated (the paper's Bernoulli sampling
    includes them with probability 1) and their budget is shared out again among the others; a
    sampled size gets a fixed number of distinct coalitions (drawn by rank, without
    replacement), a stratified form of the paper's Bernoulli draw with the same inclusion
    probabilities. Regression weights are the kernel weight over the inclusion probability:
    each size's kernel mass shared equally among its rows (``reweight="size"``). Rows added
    later by :meth:`CoalitionDesign.extend` are drawn independently of these (a repeat has
    probability about m / C(d, s)).
    """

    def minimum(self, d: int) -> int:
        return 2 if d >= 2 else 1

    def _draw(self, n: int, m: int, d: int, g: torch.Generator) -> CoalitionDesign:
        if d < 2:
            raise ValueError("the Shapley kernel needs d >= 2 features")
        strata = list(range(1, d // 2 + 1))  # s: the sizes s and d - s
        width = {s: 1 if 2 * s == d else 2 for s in strata}  # sizes in the stratum
        count = {s: math.comb(d, s) * width[s] for s in strata}
        enumerated: list[int] = []
        left, open_ = m, list(strata)
        while open_:  # water-filling per size: enumerate every stratum its share covers
            share = left / sum(width[s] for s in open_)
            full = [s for s in open_ if count[s] <= share * width[s]]
            if not full:
                break
            for s in full:
                enumerated.append(s)
                open_.remove(s)
                left -= count[s]
        whole = [_whole_stratum(d, s) for s in sorted(enumerated)]
        fixed = torch.cat([r for r, _ in whole]) if whole else torch.zeros(0, d, dtype=torch.bool)
        fixed_w = (torch.cat([w for _, w in whole]) if whole
                   else torch.zeros(0, dtype=torch.float64))
        sampled_mass = _kernel_mass(d)
        for s in enumerated:
            sampled_mass[[s, d - s]] = 0.0
        if not open_ or left <= 0:
            return CoalitionDesign(fixed[None].expand(n, -1, -1), fixed_w, len(fixed), False)
        # pairs in proportion to the sizes of each stratum; leftover pairs to random strata
        n_pairs, odd = divmod(left, 2)
        w = torch.tensor([float(width[s]) for s in open_])
        exact = n_pairs * w / w.sum()
        per = exact.floor().long()
        rest = n_pairs - int(per.sum())
        if rest:
            per[torch.multinomial(exact - per, rest, generator=g)] += 1
        rows = [_distinct_subsets(n, int(k), s, d, g) for s, k in zip(open_, per.tolist(),
                                                                       strict=True) if k]
        drawn = torch.cat(rows, 1) if rows else torch.zeros(n, 0, d, dtype=torch.bool)
        drawn = torch.stack([drawn, ~drawn], 2).reshape(n, -1, d)
        sizes = torch.as_tensor(sorted({k for s in open_ for k in (s, d - s)}))
        probs = torch.full((len(sizes),), 1.0 / len(sizes), dtype=torch.float64)
        if odd:
            drawn = torch.cat([drawn, _draw_pairs(n, 1, d, sizes, probs, False, g)], 1)
        return CoalitionDesign(torch.cat([fixed[None].expand(n, -1, -1), drawn], 1), fixed_w,
                               len(fixed), True, sizes, probs, sampled_mass, "size")


@functools.lru_cache(maxsize=64)
def _binomials(d: int) -> Tensor:
    """C(a, b) for 0 <= a, b <= d, int64 (entries beyond 2^63 − 1 clipped: never used)."""
    top = 2**63 - 1
    return torch.tensor([[min(math.comb(a, b), top) for b in range(d + 1)]
                         for a in range(d + 1)], dtype=torch.long)


def _unrank(ranks: Tensor, d: int, s: int) -> Tensor:
    """The subsets of size s of range(d) with the given lexicographic ranks
    (the combinatorial number system): bool (len(ranks), d). Needs C(d, s) < 2^63."""
    binom = _binomials(d)
    r = ranks.long().clone()
    k = torch.full_like(r, s)
    out = torch.zeros(len(r), d, dtype=torch.bool)
    for j in range(d):
        c = torch.where(k > 0, binom[d - j - 1][(k - 1).clamp(min=0)], torch.zeros_like(r))
        take = (k > 0) & (r < c)
        out[:, j] = take
        r = torch.where(take | (k == 0), r, r - c)
        k = k - take.long()
    return out


def _distinct_ranks(total: int, k: int, g: torch.Generator) -> Tensor:
    """k distinct integers drawn uniformly from range(total) (k ≤ total)."""
    if total <= max(4 * k, 1 << 16):
        return torch.randperm(total, generator=g)[:k]
    ranks = torch.randint(total, (k,), generator=g)
    for _ in range(1000):  # a repeat has probability ~k²/total: rarely more than one pass
        uniq, first = torch.unique(ranks, return_inverse=True)
        if len(uniq) == k:
            return ranks
        seen = torch.zeros(len(uniq), dtype=torch.bool)
        dup = torch.zeros(k, dtype=torch.bool)
        for pos, u in enumerate(first.tolist()):
            dup[pos] = bool(seen[u])
            seen[u] = True
        ranks[dup] = torch.randint(total, (int(dup.sum()),), generator=g)
    raise RuntimeError("could not draw distinct coalitions")  # pragma: no cover


def _distinct_subsets(n: int, k: int, s: int, d: int, g: torch.Generator) -> Tensor:
    """(n, k, d): k distinct uniform subsets of size s per input (k ≤ C(d, s)), none the
    complement of another (so that pairs (S, complement) do not repeat): drawn by rank without
    replacement. For the middle size 2s = d the subsets that hold feature 0 stand for their
    pairs. Where C(d, s) ≥ 2^62, uniform subsets (a repeat has probability ~k²/C(d, s))."""
    middle = 2 * s == d
    total = math.comb(d - 1, s - 1) if middle else math.comb(d, s)
    if total >= 2**62:
        return _subsets_of_size(torch.full((n * k,), s), d, g).reshape(n, k, d)
    out = torch.empty(n, k, d, dtype=torch.bool)
    for i in range(n):
        ranks = _distinct_ranks(total, k, g)
        if middle:  # feature 0 and s − 1 of the others
            out[i, :, 0] = True
            out[i, :, 1:] = _unrank(ranks, d - 1, s - 1)
        else:
            out[i] = _unrank(ranks, d, s)
    return out


class SurrogateDesign(Design):
    """The design of :class:`~calix.explain.LogitSurrogateSHAP`: every coalition of size 1 and
    d − 1 (each singleton followed by its complement) when they take at most a quarter of the
    budget and d ≥ 5 -- the sizes the Shapley kernel weighs most, the same for every seed --,
    then pairs (S, complement of S) with |S| uniform on the sizes not enumerated, the
    leverage-score size distribution of the Shapley regression. The residual regression weighs
    the rows itself, so ``weights`` is None."""

    @staticmethod
    def n_fixed(m: int, d: int) -> int:
        """Enumerated rows for a budget of m coalitions (ends excluded)."""
        return 2 * d if d >= 5 and 8 * d <= m else 0

    def minimum(self, d: int) -> int:
        return d - 1

    def _draw(self, n: int, m: int, d: int, g: torch.Generator) -> CoalitionDesign:
        fixed = self.n_fixed(m, d)
        rest = m - fixed
        half = (rest + 1) // 2
        lo = 2 if fixed else 1
        sizes = torch.randint(lo, d - lo + 1, (n * half,), generator=g)
        drawn = _subsets_of_size(sizes, d, g).reshape(n, half, d)
        pairs = torch.stack([drawn, ~drawn], 2).reshape(n, 2 * half, d)[:, :rest]
        eye = torch.eye(d, dtype=torch.bool)
        single = torch.stack([eye, ~eye], 1).reshape(2 * d, d)[:fixed]
        sizes = torch.arange(lo, d - lo + 1)
        probs = torch.full((len(sizes),), 1.0 / len(sizes), dtype=torch.float64)
        return CoalitionDesign(torch.cat([single[None].expand(n, -1, -1), pairs], 1),
                               torch.zeros(fixed, dtype=torch.float64), fixed, True, sizes,
                               probs, reweight="none")


class LimeDesign(Design):
    """LIME's image sampler (Ribeiro et al. 2016): the unperturbed input, then coalitions that
    remove a uniformly drawn number 1..d − 1 of features. Weights come from LIME's kernel."""

    def _draw(self, n: int, m: int, d: int, g: torch.Generator) -> CoalitionDesign:
        n_off = torch.randint(1, max(d, 2), (n * (m - 1),), generator=g)
        masks = _subsets_of_size(d - n_off, d, g).reshape(n, m - 1, d)
        masks = torch.cat([torch.ones(n, 1, d, dtype=torch.bool), masks], dim=1)
        return CoalitionDesign(masks, torch.zeros(0, dtype=torch.float64), reweight="none")


class GlimeDesign(Design):
    """GLIME's samplers (Tan et al. 2023), drawn from the local distribution itself (unit
    weights): ``"binomial"`` keeps each feature with probability 1 / (1 + exp(−1/σ²));
    ``"gauss"`` draws continuous masks z = clip(1 + σ ε, 0, 1), ε ~ N(0, 1), which blend input
    and fill per feature."""

    def __init__(self, variant: str = "binomial", sigma: float = 1.0):
        if variant not in ("binomial", "gauss"):
            raise ValueError(f"variant must be 'binomial' or 'gauss', got {variant!r}")
        if not sigma > 0:
            raise ValueError(f"sigma must be > 0, got {sigma}")
        self.variant, self.sigma = variant, float(sigma)

    def _draw(self, n: int, m: int, d: int, g: torch.Generator) -> CoalitionDesign:
        if self.variant == "binomial":
            keep = 1.0 / (1.0 + math.exp(-1.0 / self.sigma**2))
            masks = torch.rand(n, m, d, generator=g) < keep
        else:
            masks = (1.0 + self.sigma * _std_normal(torch.Size((n, m, d)), g)).clamp(0.0, 1.0)
        return CoalitionDesign(masks, torch.zeros(0, dtype=torch.float64), reweight="none")


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
        Logits (classifiers) or outputs (regressors). With ``average`` (see
        :meth:`Perturbation.query`), the outputs of the background-averaged model.
    levels : Tensor of shape (n, m), or (m,)
    n_queries : int
        Model evaluations spent.
    """

    outputs: Tensor
    levels: Tensor
    n_queries: int


class MaskBlocks:
    """Masks built block by block on demand, so that a large set (RISE's thousands of
    pixel masks) never exists at once.

    Parameters
    ----------
    m, d : int
        Number of masks and their width.
    make : callable ``make(b) -> Tensor`` of shape ``(rows, d)``
        Block ``b`` (masks ``b * block_size`` to ``(b + 1) * block_size``, the last block may
        be shorter); must be deterministic (e.g. seeded by ``b``), as blocks are rebuilt for
        every input and by every pass.
    block_size : int
    """

    def __init__(self, m: int, d: int, make: Any, *, block_size: int = 256):
        if m < 1 or d < 1 or block_size < 1:
            raise ValueError(f"m, d and block_size must be >= 1, got {m}, {d}, {block_size}")
        self.m, self.d, self.block_size = int(m), int(d), int(block_size)
        self._make = make
        self._cache: tuple[int, Tensor] | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return (self.m, self.d)

    def block(self, b: int) -> Tensor:
        """Masks of block ``b``, shape ``(rows, d)`` (the last block built is kept)."""
        if self._cache is None or self._cache[0] != b:
            blk = self._make(b)
            rows = min(self.block_size, self.m - b * self.block_size)
            if tuple(blk.shape) != (rows, self.d):
                raise ValueError(f"mask block {b} has shape {tuple(blk.shape)}, "
                                 f"expected {(rows, self.d)}")
            self._cache = (b, blk)
        return self._cache[1]

    def rows(self, j0: int, j1: int, device: torch.device) -> Tensor:
        """Masks ``j0`` to ``j1`` (exclusive), on ``device``."""
        bs = self.block_size
        parts = [self.block(b)[max(j0 - b * bs, 0):j1 - b * bs]
                 for b in range(j0 // bs, (j1 - 1) // bs + 1)]
        out = parts[0] if len(parts) == 1 else torch.cat(parts)
        return out.to(device)

    def blocks(self, device: torch.device | None = None) -> Iterator[tuple[slice, Tensor]]:
        """``(columns, masks)`` for every block in order."""
        for b in range(math.ceil(self.m / self.block_size)):
            start = b * self.block_size
            blk = self.block(b)
            yield slice(start, start + len(blk)), blk if device is None else blk.to(device)


_VECTORISED_ELEMENTS = 1 << 22  # chunks of at most this many elements build in one gather
_APPLY_CHUNK = 8192
_AVERAGES = ("probability", "output")


class Perturbation:
    """Features + fill: builds perturbed inputs and queries a model on them in batches.

    Parameters
    ----------
    features : Features
    fill : Fill
    chunk_size : int or None
        Perturbed rows built at once. None (the default) builds exactly one model batch
        at a time (the model's ``batch_size``) in :meth:`query`, so the memory of perturbed
        rows is bounded by the batch, whatever the number of masks or inputs; ``batch_size``
        given to :func:`calix.wrap` is the one knob that bounds it.

    Notes
    -----
    ``x`` may be one input ``(*input_shape)`` or a batch ``(n, *input_shape)``. Results for a
    single input drop the leading ``n`` axis.
    """

    def __init__(self, features: Features, fill: Fill, *, chunk_size: int | None = None):
        if not isinstance(features, Features):
            raise TypeError(f"features must be a calix Features, got {type(features).__name__}")
        if not isinstance(fill, Fill):
            raise TypeError(f"fill must be a calix Fill, got {type(fill).__name__}")
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.features = features
        self.fill = fill
        self.chunk_size = None if chunk_size is None else int(chunk_size)

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
               ) -> Tensor | MaskBlocks:
        if isinstance(masks, MaskBlocks):
            if masks.d != d:
                raise ValueError(f"masks must have width {d} (the features of x), got {masks.d}")
            return masks
        try:
            mk = torch.as_tensor(masks, device=device)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise TypeError(f"masks must be a boolean or numeric array: {exc}") from exc
        if mk.ndim == 2:
            mk = mk[None]
        if mk.ndim != 3 or mk.shape[0] not in (1, n) or mk.shape[-1] != d:
            raise ValueError(
                f"masks must have shape (m, {d}) or ({n}, m, {d}) for x of {n} input(s) with "
                f"{d} features, got {tuple(torch.as_tensor(masks).shape)}"
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

    @staticmethod
    def _mask_count(masks: Any) -> int:
        if isinstance(masks, MaskBlocks):
            return masks.m
        shape = np.shape(masks) if not isinstance(masks, Tensor) else tuple(masks.shape)
        return int(shape[-2]) if len(shape) >= 2 else 0

    def _background(self, xb: Tensor) -> Tensor | None:
        """Background rows (B, numel) on x's device when the fill averages over them."""
        if not isinstance(self.fill, Marginal):
            return None
        return self.fill._checked_background(xb).to(xb.device).reshape(
            len(self.fill.background_), -1)

    # -------------------------------------------------------------- core
    def iter_chunks(
        self,
        x: Any,
        masks: Any,
        *,
        seed: int | torch.Generator | None = None,
        device: torch.device | str | None = None,
        chunk_size: int | None = None,
        expand_background: bool = False,
        reuse: bool = False,
    ) -> Iterator[tuple[slice, Tensor, Tensor]]:
        """Yield ``(rows, inputs, levels)`` chunks of the flattened ``n * m`` perturbations.

        ``rows`` is a slice into the row index ``i * m + j`` (input i, mask j); ``inputs`` has
        shape ``(c, *input_shape)`` and ``levels`` ``(c,)``, with c <= the chunk size. Each
        chunk is built on x's device from the input, its reference and one gather of the
        masks to elements; nothing of size n × m × input exists at once.

        With ``expand_background`` (a :class:`Marginal` fill) every perturbation is built
        once per background row: row index ``(i * m + j) * B + k`` takes background row k.
        With ``reuse``, every chunk is written into one buffer (a chunk is valid until the
        next is drawn: for consumers that use each chunk at once, such as :meth:`query`).
        """
        dev = torch.device(device) if device is not None else None
        xb, _ = self._batch(x, dev)
        dev = xb.device
        n = len(xb)
        seg = self.features.segment(xb)
        mk = self._masks(masks, n, seg.d, dev, xb.dtype)
        lazy = isinstance(mk, MaskBlocks)
        m = mk.m if lazy else mk.shape[1]
        size = int(chunk_size or self.chunk_size or _APPLY_CHUNK)
        g = make_generator(seed)
        bg = self._background(xb) if expand_background else None
        n_bg = 1 if bg is None else len(bg)
        stochastic = self.fill.stochastic and bg is None
        ref_flat = None if stochastic or bg is not None else (
            self.fill.reference(xb, generator=g).reshape(n, -1))
        flat = xb.reshape(n, -1)
        numel = flat.shape[1]
        lab_flat = seg.labels.reshape(n, -1)
        nf = seg.n_features.to(dev)
        shape = xb.shape[1:]
        total = n * m * n_bg

        def mask_rows(i: int, j0: int, j1: int) -> Tensor:
            if lazy:
                return mk.rows(j0, j1, dev)
            return mk[i if mk.shape[0] > 1 else 0, j0:j1]

        mk_flat, buffer = None, None
        # lerp(ref, x, 0/1) is exact unless x - ref overflows float32: with values that
        # large, the slower where() path is taken instead
        big = 1e37
        lerp_safe = bool(flat.abs().max() < big) and (
            ref_flat is None or bool(ref_flat.abs().max() < big)) and (
            bg is None or bool(bg.abs().max() < big)) and not (
            stochastic and isinstance(self.fill, Noise)
            and abs(self.fill.mean) + 40 * self.fill.std >= big)
        for start in range(0, total, size):
            stop = min(start + size, total)
            c = stop - start
            if (not lazy and seg.shared and bg is None and not stochastic
                    and c * max(numel, seg.d) <= _VECTORISED_ELEMENTS
                    and not mk.requires_grad):
                # small rows (tables, tiny images): one gather over the whole chunk
                # (index_select and gather, not advanced indexing: the latter is far slower
                # on CPU when its thread pool competes for cores)
                r = torch.arange(start, stop, device=dev)
                i = r // m
                if mk.shape[0] > 1:
                    if mk_flat is None:  # once: a copy only if the masks are an expanded view
                        mk_flat = mk.reshape(n * m, -1)
                    rows_mask = mk_flat[start:stop]
                else:
                    rows_mask = mk[0].index_select(0, r % m)
                keep = torch.gather(rows_mask, 1, lab_flat[0].expand(c, numel))
                xi, refi = flat.index_select(0, i), ref_flat.index_select(0, i)
                if keep.dtype == torch.bool:
                    out = torch.where(keep, xi, refi)
                else:  # the same blend as the block path, to the last bit
                    out = torch.lerp(refi, xi, keep)
                yield (slice(start, stop), out.reshape(c, *shape),
                       levels_of(rows_mask.detach(), nf[i]))
                continue
            grad = (not lazy and mk.requires_grad) or xb.requires_grad
            if grad or not lerp_safe:
                out = None
            elif reuse:  # one buffer for every batch: no fresh pages to fault in each time
                if buffer is None:
                    buffer = torch.empty((min(size, total), numel), dtype=xb.dtype, device=dev)
                out = buffer[:c]
            else:
                out = torch.empty((c, numel), dtype=xb.dtype, device=dev)
            pieces, lvls = [], []
            q0, q1 = start // n_bg, (stop - 1) // n_bg  # perturbation indices i * m + j
            for i in range(q0 // m, q1 // m + 1):
                # rows of input i inside this chunk, in the (expanded) row index
                a, b = max(start, i * m * n_bg), min(stop, (i + 1) * m * n_bg)
                j0, j1 = (a // n_bg) - i * m, ((b - 1) // n_bg) - i * m + 1
                rows_mask = mask_rows(i, j0, j1)  # (j1 - j0, d)
                lv = levels_of(rows_mask.detach(), nf[i])
                if bg is not None:
                    k = torch.arange(a, b, device=dev)
                    sel = (k // n_bg) - (i * m + j0)
                    rows_mask, lv = rows_mask.index_select(0, sel), lv.index_select(0, sel)
                    ref = bg.index_select(0, k % n_bg)
                elif stochastic:
                    ref = self.fill.reference(xb[i].expand(b - a, *shape),
                                              generator=g).reshape(b - a, -1)
                else:
                    ref = ref_flat[i][None]
                # one gather from features to elements (an expanded view of the labels: no
                # index tensor the size of the batch), then one lerp between the reference and
                # the input, in place: exact for 0/1 masks, the blend for float masks
                lab = lab_flat[0 if seg.shared else i]
                r = b - a
                xi = flat[i][None]
                if out is None:
                    keep = torch.gather(rows_mask, 1, lab.expand(r, numel))
                    if keep.dtype == torch.bool:
                        pieces.append(torch.where(keep, xi, ref))
                    else:
                        pieces.append(torch.lerp(ref.expand(r, numel), xi.expand(r, numel),
                                                 keep))
                else:
                    dst = out[a - start:b - start]
                    torch.gather(rows_mask.to(dst.dtype), 1, lab.expand(r, numel), out=dst)
                    torch.lerp(ref.expand(r, numel), xi.expand(r, numel), dst, out=dst)
                lvls.append(lv)
            if out is None:
                out = pieces[0] if len(pieces) == 1 else torch.cat(pieces)
            levels = lvls[0] if len(lvls) == 1 else torch.cat(lvls)
            yield slice(start, stop), out.reshape(c, *shape), levels

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
        average: str | None = None,
    ) -> QueryResult:
        """Model outputs on every perturbation, one model batch at a time, levels passed along.

        Parameters
        ----------
        model : Model
            A wrapped model (see :func:`calix.models.wrap`).
        x : array-like of shape (*input_shape) or (n, *input_shape)
        masks : array of shape (m, d) or (n, m, d), or :class:`MaskBlocks`
        seed : int or Generator, used by stochastic fills
        grad : bool
            Keep the autograd graph (e.g. to optimise float masks).
        progress : bool
            Show a progress bar over batches.
        average : {None, "probability", "output"}
            With a :class:`Marginal` fill, evaluate every perturbation with every background
            row and return the outputs of the background-averaged model -- the interventional
            game: ``"probability"`` averages a classifier's probabilities (outputs are the log
            of the averages, so their softmax is E_b p), ``"output"`` averages raw outputs
            (logits, regression values). Ignored for other fills; None draws one background
            row per perturbation.

        Returns
        -------
        QueryResult with outputs of shape (n, m, n_outputs) (or (m, n_outputs)).
        """
        from calix._progress import progress_bar

        if not isinstance(model, Model):
            raise TypeError("model must be a calix Model; wrap it with calix.wrap(model) first")
        if average is not None and average not in _AVERAGES:
            raise ValueError(f"average must be None or one of {_AVERAGES}, got {average!r}")
        if average == "probability" and model.task != "classification":
            average = "output"
        xb, single = self._batch(x, model.device)
        model.check_input(xb[:0])  # x's shape against the model's (rows skip the check)
        before = model.n_queries
        n = len(xb)
        m_total = self._mask_count(masks)
        expand = average is not None and isinstance(self.fill, Marginal)
        n_bg = len(self.fill.background_) if expand and self.fill.background_ is not None else 1
        size = self.chunk_size or model.batch_size
        chunks = self.iter_chunks(xb, masks, seed=seed, chunk_size=size,
                                  expand_background=expand, reuse=not grad)
        total = math.ceil(n * m_total * n_bg / size)
        outs, lvls = [], []
        acc: Tensor | None = None
        for rows, inputs, levels in progress_bar(chunks, total=total, enabled=progress,
                                                 description="perturbations"):
            # inputs are built from the validated x and the fill: no second finiteness pass
            out = model.forward(inputs, levels=levels, grad=grad, validate=False)
            if not expand:
                outs.append(out)
                lvls.append(levels)
                continue
            if average == "probability":
                out = torch.softmax(out.double(), dim=-1)
            if acc is None:
                acc = out.new_zeros(n * m_total, out.shape[1], dtype=torch.float64)
                lvl_all = levels.new_zeros(n * m_total)
            q = torch.arange(rows.start, rows.stop, device=out.device) // n_bg
            # in place unless a graph must flow through the average
            acc = acc.index_add(0, q, out.double()) if grad else acc.index_add_(0, q, out.double())
            lvl_all.index_copy_(0, q, levels)
        if expand:
            if acc is None:
                raise ValueError("no perturbations to query (masks are empty)")
            mean = acc / n_bg
            if average == "probability":
                mean = torch.log(mean.clamp_min(1e-300))
            outputs, levels = mean.float(), lvl_all
        else:
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
