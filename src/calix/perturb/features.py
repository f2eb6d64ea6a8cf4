"""Interpretable features: how an input splits into d features that coalitions keep or
remove.

:class:`Features` is the base; :class:`Columns` (tabular columns and named column groups),
:class:`Pixels`, :class:`PatchGrid` and :class:`Superpixels` (SLIC, with a bounded cache of
segmentations) give each input a :class:`Segmentation`: one feature label per input element.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "Segmentation", "Features", "Columns", "Pixels", "PatchGrid", "Superpixels",
]


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
