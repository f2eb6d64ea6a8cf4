"""Datasets: scikit-learn's shipped sets, a harder noisy digits variant, and a user's own files.

Every loader returns a :class:`Dataset` with deterministic train / validation / test splits
(60 / 20 / 20 %, stratified for classification) fixed by ``seed``. Nothing is downloaded.

- Tabular sets (``breast_cancer``, ``wine``, ``iris``, ``diabetes``) are standardised with the
  training split's mean and standard deviation, so 0 is the training mean of every feature.
- Image sets (``digits``, ``digits-noisy``) are channel-first ``(1, H, W)`` in [0, 1]-ish
  intensity units (0 is black background); their pixel means are stored for mean fills.

Example
-------
>>> from calix import data
>>> ds = data.load("digits", seed=0)
>>> ds.X_train.shape, ds.input_shape, ds.n_classes
((1078, 1, 8, 8), (1, 8, 8), 10)
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

__all__ = [
    "Dataset", "load", "list_datasets", "from_arrays", "load_csv", "load_npz",
    "load_image_folder", "make_digits_noisy", "DATASETS",
]

Task = Literal["classification", "regression"]


@dataclass
class Dataset:
    """A dataset with fixed splits.

    Attributes
    ----------
    name : str
    task : {"classification", "regression"}
    X_train, X_val, X_test : ndarray of shape (n_split, *input_shape), float32
    y_train, y_val, y_test : ndarray of shape (n_split,)
        int64 class indices, or float32 targets for regression.
    feature_names : list of str
        One name per element of a flattened input.
    class_names : list of str
        Empty for regression.
    mean, std : ndarray of shape input_shape
        Training-split statistics of the returned (possibly standardised) inputs.
    raw_mean, raw_std : ndarray of shape input_shape
        Training-split statistics before standardisation (identity for images).
    description : str
    """

    name: str
    task: Task
    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    feature_names: list[str]
    class_names: list[str]
    mean: np.ndarray
    std: np.ndarray
    raw_mean: np.ndarray
    raw_std: np.ndarray
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input."""
        return tuple(self.X_train.shape[1:])

    @property
    def n_classes(self) -> int | None:
        """Number of classes (None for regression)."""
        return len(self.class_names) if self.task == "classification" else None

    @property
    def is_image(self) -> bool:
        """True for channel-first image data."""
        return len(self.input_shape) == 3

    def split(self, which: str) -> tuple[np.ndarray, np.ndarray]:
        """``(X, y)`` of ``"train"``, ``"val"`` or ``"test"``."""
        if which not in ("train", "val", "test"):
            raise ValueError(f"split must be 'train', 'val' or 'test', got {which!r}")
        return getattr(self, f"X_{which}"), getattr(self, f"y_{which}")

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}, task={self.task!r}, input_shape={self.input_shape}, "
            f"n_train={len(self.X_train)}, n_val={len(self.X_val)}, n_test={len(self.X_test)}, "
            f"n_classes={self.n_classes})"
        )


# ====================================================================== building from arrays
def from_arrays(
    X: Any,
    y: Any,
    *,
    name: str = "arrays",
    task: Task | None = None,
    seed: int = 0,
    standardize: bool | None = None,
    feature_names: list[str] | None = None,
    class_names: list[str] | None = None,
    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
    standardize_target: bool = True,
    description: str = "",
) -> Dataset:
    """Split arrays into a :class:`Dataset`.

    Parameters
    ----------
    X : array-like of shape (n_samples, *input_shape)
    y : array-like of shape (n_samples,)
        Class labels (any hashable values; mapped to 0..k-1 in sorted order) or regression
        targets.
    task : {"classification", "regression"} or None
        None: regression for numeric targets with more than 20 distinct values, else
        classification (pass ``task`` to override).
    seed : int
        Fixes the split.
    standardize : bool or None
        z-score with training statistics; None means "yes for tabular (2-D) X, no for images".
    fractions : (train, val, test)
        Split fractions, summing to 1.
    standardize_target : bool
        For regression: z-score the target with training statistics (kept in
        ``extra["y_mean"]``, ``extra["y_std"]``).

    Raises
    ------
    ValueError
        For mismatched lengths, NaN/inf features, too few samples or bad fractions.
    """
    from sklearn.model_selection import train_test_split

    X = np.asarray(X)
    y = np.asarray(y)
    if X.dtype.kind not in "biuf":
        raise TypeError(f"features must be numeric, got dtype {X.dtype}")
    X = X.astype(np.float32)
    if X.ndim < 2:
        raise ValueError(f"X must have shape (n_samples, ...), got {X.shape}")
    if y.ndim != 1 or len(y) != len(X):
        raise ValueError(f"y must have shape ({len(X)},), got {y.shape}")
    if not np.isfinite(X).all():
        raise ValueError(f"X contains {int((~np.isfinite(X)).sum())} NaN or infinite value(s)")
    if len(fractions) != 3 or abs(sum(fractions) - 1) > 1e-9 or min(fractions) <= 0:
        raise ValueError(f"fractions must be three positive numbers summing to 1, got {fractions}")
    if task is None:
        numeric = y.dtype.kind in "iuf"
        task = "regression" if numeric and len(np.unique(y)) > 20 else "classification"
    if task not in ("classification", "regression"):
        raise ValueError(f"task must be 'classification' or 'regression', got {task!r}")
    if task == "classification":
        labels, y_idx = np.unique(y, return_inverse=True)
        y_out = y_idx.astype(np.int64)
        if class_names is None:
            class_names = [str(v) for v in labels]
        if len(class_names) != len(labels):
            raise ValueError(f"{len(class_names)} class names for {len(labels)} classes")
        if len(labels) < 2:
            raise ValueError("classification needs at least two classes")
        counts = np.bincount(y_out)
        stratify = y_out if counts.min() >= 5 else None
    else:
        if y.dtype.kind not in "biuf":
            raise TypeError(f"regression targets must be numeric, got dtype {y.dtype}")
        y_out = y.astype(np.float32)
        if not np.isfinite(y_out).all():
            raise ValueError("regression targets contain NaN or infinite values")

        class_names = []
        stratify = None
    n = len(X)
    if n < 10:
        raise ValueError(f"need at least 10 samples to split, got {n}")
    idx = np.arange(n)
    f_train, f_val, f_test = fractions
    idx_train, idx_rest = train_test_split(
        idx, train_size=f_train, random_state=seed, stratify=stratify
    )
    strat_rest = stratify[idx_rest] if stratify is not None else None
    if strat_rest is not None and np.bincount(strat_rest).min() < 2:
        strat_rest = None
    idx_val, idx_test = train_test_split(
        idx_rest, test_size=f_test / (f_val + f_test), random_state=seed, stratify=strat_rest
    )
    raw_mean = X[idx_train].mean(axis=0)
    raw_std = X[idx_train].std(axis=0)
    if standardize is None:
        standardize = X.ndim == 2
    if standardize:
        scale = np.where(raw_std > 0, raw_std, 1.0).astype(np.float32)
        X = (X - raw_mean) / scale
    if feature_names is None:
        feature_names = [f"x{i}" for i in range(int(np.prod(X.shape[1:])))]
    extra: dict[str, Any] = {}
    if task == "regression" and standardize_target:
        y_mean, y_std = float(y_out[idx_train].mean()), float(y_out[idx_train].std())
        y_out = ((y_out - y_mean) / (y_std if y_std > 0 else 1.0)).astype(np.float32)
        extra = {"y_mean": y_mean, "y_std": y_std}
    return Dataset(
        name=name,
        task=task,
        X_train=X[idx_train], y_train=y_out[idx_train],
        X_val=X[idx_val], y_val=y_out[idx_val],
        X_test=X[idx_test], y_test=y_out[idx_test],
        feature_names=list(feature_names),
        class_names=list(class_names),
        mean=X[idx_train].mean(axis=0), std=X[idx_train].std(axis=0),
        raw_mean=raw_mean, raw_std=raw_std,
        description=description,
        extra=extra,
    )


# ====================================================================== shipped datasets
def _digits(seed: int) -> Dataset:
    from sklearn.datasets import load_digits

    d = load_digits()
    X = (d.images / 16.0).astype(np.float32)[:, None]
    return from_arrays(
        X, d.target, name="digits", task="classification", seed=seed, standardize=False,
        class_names=[str(c) for c in d.target_names],
        description="scikit-learn digits: 1797 8x8 grey images of handwritten digits, "
        "scaled to [0, 1]",
    )


def make_digits_noisy(
    seed: int = 0,
    *,
    size: int = 16,
    max_shift: int = 2,
    noise_std: float = 0.25,
    label_noise: float = 0.1,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``digits-noisy`` images and labels.

    Each 8×8 digit is upsampled bilinearly to ``size``×``size``, shifted by a random integer
    offset in [−max_shift, max_shift] along each axis (zeros shifted in), and corrupted by
    additive Gaussian noise of standard deviation ``noise_std``; then a fraction
    ``label_noise`` of all labels (in every split) is replaced by a different random class.
    The generator is seeded by ``seed`` only, so the set is the same on every machine.

    Returns
    -------
    X : ndarray of shape (1797, 1, size, size), float32
    y : ndarray of shape (1797,), int64
    """
    from scipy.ndimage import shift as nd_shift
    from scipy.ndimage import zoom
    from sklearn.datasets import load_digits

    d = load_digits()
    rng = np.random.default_rng(seed)
    imgs = zoom(d.images / 16.0, (1, size / 8, size / 8), order=1)
    shifts = rng.integers(-max_shift, max_shift + 1, size=(len(imgs), 2))
    out = np.empty_like(imgs)
    for i, (img, s) in enumerate(zip(imgs, shifts, strict=True)):  # 1797 images, once
        out[i] = nd_shift(img, s, order=0, mode="constant", cval=0.0)
    out = out + rng.normal(0.0, noise_std, size=out.shape)
    y = d.target.astype(np.int64).copy()
    flip = rng.random(len(y)) < label_noise
    y[flip] = (y[flip] + rng.integers(1, 10, size=int(flip.sum()))) % 10
    return out.astype(np.float32)[:, None], y


def _digits_noisy(seed: int) -> Dataset:
    X, y = make_digits_noisy(seed=0)
    return from_arrays(
        X, y, name="digits-noisy", task="classification", seed=seed, standardize=False,
        class_names=[str(c) for c in range(10)],
        description="digits upsampled to 16x16, shifted by up to 2 px, Gaussian noise "
        "(std 0.25), 10% of labels flipped: a harder set on which the zoo CNN reaches about "
        "75% test accuracy and is clearly overconfident",
    )


def _sklearn_tabular(loader_name: str, name: str, task: Task, description: str):
    def load_fn(seed: int) -> Dataset:
        import sklearn.datasets as skd

        b = getattr(skd, loader_name)()
        class_names = [str(c) for c in getattr(b, "target_names", [])] or None
        return from_arrays(
            b.data, b.target, name=name, task=task, seed=seed, standardize=True,
            feature_names=[str(f) for f in b.feature_names],
            class_names=class_names if task == "classification" else None,
            description=description,
        )

    return load_fn


DATASETS: dict[str, tuple[Callable[[int], Dataset], str]] = {
    "digits": (_digits, "1797 8x8 handwritten digits, 10 classes (images)"),
    "digits-noisy": (
        _digits_noisy,
        "digits at 16x16, shifted, noised, 10% label noise (images; harder, overconfident CNN)",
    ),
    "breast_cancer": (
        _sklearn_tabular("load_breast_cancer", "breast_cancer", "classification",
                         "Wisconsin breast cancer: 569 samples, 30 features, 2 classes"),
        "569 samples, 30 features, 2 classes (tabular)",
    ),
    "wine": (
        _sklearn_tabular("load_wine", "wine", "classification",
                         "UCI wine: 178 samples, 13 features, 3 classes"),
        "178 samples, 13 features, 3 classes (tabular)",
    ),
    "iris": (
        _sklearn_tabular("load_iris", "iris", "classification",
                         "Fisher's iris: 150 samples, 4 features, 3 classes"),
        "150 samples, 4 features, 3 classes (tabular)",
    ),
    "diabetes": (
        _sklearn_tabular("load_diabetes", "diabetes", "regression",
                         "diabetes progression: 442 samples, 10 features, regression"),
        "442 samples, 10 features, regression target (tabular)",
    ),
}


def load(name: str, seed: int = 0) -> Dataset:
    """Load a shipped dataset by name (see :data:`DATASETS` or ``calix data list``).

    Parameters
    ----------
    name : str
        One of ``digits``, ``digits-noisy``, ``breast_cancer``, ``wine``, ``iris``, ``diabetes``,
        or a path to a ``.csv`` / ``.npz`` file or an image folder.
    seed : int
        Fixes the train / validation / test split.
    """
    if name in DATASETS:
        return DATASETS[name][0](seed)
    path = Path(name)
    if path.suffix.lower() == ".csv":
        return load_csv(path, seed=seed)
    if path.suffix.lower() == ".npz":
        return load_npz(path, seed=seed)
    if path.is_dir():
        return load_image_folder(path, seed=seed)
    raise ValueError(
        f"unknown dataset {name!r}: choose one of {sorted(DATASETS)} or give a path to a "
        ".csv file, a .npz file or an image folder"
    )


def list_datasets() -> list[tuple[str, str]]:
    """``(name, description)`` of every shipped dataset."""
    return [(k, v[1]) for k, v in DATASETS.items()]


# ====================================================================== a user's own files
def _existing(path: str | Path, kind: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{kind} not found: {p}")
    return p


def load_csv(
    path: str | Path,
    *,
    target: str | None = None,
    task: Task | None = None,
    seed: int = 0,
    delimiter: str = ",",
    standardize: bool = True,
) -> Dataset:
    """Load a CSV file with a header row; every column but ``target`` must be numeric.

    Parameters
    ----------
    target : str or None
        Name of the label column (default: the last column).
    """
    p = _existing(path, "CSV file")
    with p.open(newline="") as fh:
        rows = list(csv.reader(fh, delimiter=delimiter))
    if len(rows) < 2:
        raise ValueError(f"{p} needs a header row and at least one data row")
    header, body = rows[0], [r for r in rows[1:] if r]
    widths = {len(r) for r in body}
    if widths != {len(header)}:
        raise ValueError(f"{p}: every row must have {len(header)} fields, found widths {widths}")
    t_col = len(header) - 1 if target is None else _column(header, target, p)
    feats = [j for j in range(len(header)) if j != t_col]
    try:
        X = np.array([[float(r[j]) for j in feats] for r in body], dtype=np.float32)
    except ValueError as exc:
        raise ValueError(f"{p}: feature columns must be numeric ({exc})") from exc
    y_raw = [r[t_col] for r in body]
    try:
        y = np.array([float(v) for v in y_raw])
        if task != "regression" and np.all(y == np.round(y)):
            y = y.astype(np.int64)
    except ValueError:
        y = np.array(y_raw)
    return from_arrays(
        X, y, name=p.stem, task=task, seed=seed, standardize=standardize,
        feature_names=[header[j] for j in feats], description=f"CSV file {p}",
    )


def _column(header: list[str], name: str, path: Path) -> int:
    if name not in header:
        raise ValueError(f"{path}: no column named {name!r}; columns are {header}")
    return header.index(name)


def load_npz(
    path: str | Path,
    *,
    x_key: str = "X",
    y_key: str = "y",
    task: Task | None = None,
    seed: int = 0,
    standardize: bool | None = None,
) -> Dataset:
    """Load features ``x_key`` and labels ``y_key`` from an ``.npz`` archive (no pickles)."""
    p = _existing(path, "NPZ file")
    with np.load(p, allow_pickle=False) as z:
        missing = [k for k in (x_key, y_key) if k not in z.files]
        if missing:
            raise ValueError(f"{p} has no array(s) {missing}; it has {z.files}")
        X, y = z[x_key], z[y_key]
    return from_arrays(X, y, name=p.stem, task=task, seed=seed, standardize=standardize,
                       description=f"NPZ file {p}")


_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif"}


def load_image_folder(
    root: str | Path,
    *,
    size: tuple[int, int] | None = None,
    grayscale: bool = True,
    seed: int = 0,
) -> Dataset:
    """Load ``root/<class name>/<image>`` files as a channel-first image dataset in [0, 1].

    Parameters
    ----------
    size : (height, width) or None
        Resize every image (required when sizes differ).
    grayscale : bool
        Convert to one channel; otherwise RGB (alpha dropped).
    """
    from skimage import io
    from skimage.color import gray2rgb, rgb2gray, rgba2rgb
    from skimage.transform import resize
    from skimage.util import img_as_float32

    r = _existing(root, "image folder")
    if not r.is_dir():
        raise NotADirectoryError(f"{r} is not a folder")
    classes = sorted(c.name for c in r.iterdir() if c.is_dir())
    if len(classes) < 2:
        raise ValueError(f"{r} needs at least two class sub-folders, found {classes}")
    images, labels = [], []
    for k, cls in enumerate(classes):
        files = sorted(f for f in (r / cls).iterdir() if f.suffix.lower() in _IMAGE_SUFFIXES)
        for f in files:
            img = img_as_float32(io.imread(f))
            if img.ndim == 3 and img.shape[-1] == 4:
                img = rgba2rgb(img)
            if grayscale:
                img = rgb2gray(img) if img.ndim == 3 else img
                img = img[..., None]
            else:
                img = gray2rgb(img) if img.ndim == 2 else img
            if size is not None:
                img = resize(img, (*size, img.shape[-1]), anti_aliasing=True)
            images.append(np.moveaxis(img, -1, 0).astype(np.float32))
            labels.append(k)
    if not images:
        raise ValueError(f"no images ({sorted(_IMAGE_SUFFIXES)}) found under {r}")
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        raise ValueError(f"images under {r} differ in shape {sorted(shapes)}; pass size=(h, w)")
    return from_arrays(
        np.stack(images), np.array(labels), name=r.name, task="classification", seed=seed,
        standardize=False, class_names=classes, description=f"image folder {r}",
    )
