"""Datasets: scikit-learn's shipped sets, a harder noisy digits variant, and a user's own files.

Every loader returns a :class:`Dataset` with deterministic train / validation / test splits
(60 / 20 / 20 %, stratified for classification) fixed by ``seed``. Nothing is downloaded.

- Tabular sets (``breast_cancer``, ``wine``, ``iris``, ``diabetes``) are standardised with the
  training split's mean and standard deviation, so 0 is the training mean of every feature.
- Image sets (``digits``, ``digits-noisy``) are channel-first ``(1, H, W)`` in [0, 1]-ish
  intensity units (0 is black background); their pixel means are stored for mean fills.
- Generated sets with a known explanation (``gt-*``, from :mod:`calix.groundtruth`, whose
  generators ``make_linear``, ``make_logistic``, ``make_additive``, ``make_interaction`` and
  ``ObjectImages`` are also importable from here): the truth per split in ``extra``
  (``attributions``, unchanged by the standardisation of the tabular ones, or ``masks``).

Example
-------
>>> from calix import data
>>> ds = data.load("digits", seed=0)
>>> ds.X_train.shape, ds.input_shape, ds.n_classes
((1078, 1, 8, 8), (1, 8, 8), 10)
"""

from __future__ import annotations

import csv
import io
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from calix._io import DataFileError

__all__ = [
    "Dataset", "load", "list_datasets", "from_arrays", "load_csv", "load_npz",
    "load_image_folder", "make_digits_noisy", "DATASETS", "DataFileError",
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
        For mismatched lengths, NaN/inf features, missing (NaN, inf or None) class labels,
        too few samples, bad fractions or a seed outside [0, 2**32).
    """
    from sklearn.model_selection import train_test_split

    _check_seed(seed)
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
        missing = _missing_labels(y)
        if missing.any():
            raise ValueError(
                f"y contains {int(missing.sum())} missing (NaN, infinite or None) label(s), "
                f"the first at index {int(np.argmax(missing))}; drop those samples or give "
                "them a class")
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


def _missing_labels(y: np.ndarray) -> np.ndarray:
    """Boolean mask of NaN, infinite or None entries of a label array."""
    if y.dtype.kind in "fc":
        return ~np.isfinite(y)
    if y.dtype.kind == "O":
        return np.array([v is None or (isinstance(v, float) and not np.isfinite(v))
                         for v in y.ravel()], dtype=bool).reshape(y.shape)
    return np.zeros(y.shape, dtype=bool)


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


#: the shipped scikit-learn tables: name -> (loader, task, source, size)
_SKLEARN_TABLES: dict[str, tuple[str, Task, str, str]] = {
    "breast_cancer": ("load_breast_cancer", "classification", "Wisconsin breast cancer",
                      "569 samples, 30 features, 2 classes"),
    "wine": ("load_wine", "classification", "UCI wine", "178 samples, 13 features, 3 classes"),
    "iris": ("load_iris", "classification", "Fisher's iris",
             "150 samples, 4 features, 3 classes"),
    "diabetes": ("load_diabetes", "regression", "diabetes progression",
                 "442 samples, 10 features, regression target"),
}

DATASETS: dict[str, tuple[Callable[[int], Dataset], str]] = {
    "digits": (_digits, "1797 8x8 handwritten digits, 10 classes (images)"),
    "digits-noisy": (
        _digits_noisy,
        "digits at 16x16, shifted, noised, 10% label noise (images; harder, overconfident CNN)",
    ),
    **{name: (_sklearn_tabular(loader, name, task, f"{source}: {size}"), f"{size} (tabular)")
       for name, (loader, task, source, size) in _SKLEARN_TABLES.items()},
}


def _ground_truth(name: str) -> Callable[[int], Dataset]:
    def load_fn(seed: int) -> Dataset:
        from calix.groundtruth import GROUND_TRUTH_DATASETS

        return GROUND_TRUTH_DATASETS[name](seed)

    return load_fn


# generated sets with a known explanation (calix.groundtruth; imported on first load, so
# this module stays free of torch); the split seed is the loader's, the data use seed 0
DATASETS.update({name: (_ground_truth(name), desc) for name, desc in {
    "gt-linear": "2000 rows, 8 features, linear regression; true attribution w*x (generated)",
    "gt-logistic": "2000 rows, 8 features, logistic labels; true attribution w*x on the "
                   "log-odds (generated)",
    "gt-additive": "2000 rows, 8 features, additive log-odds; true attribution the centred "
                   "shape functions (generated)",
    "gt-interaction": "2000 rows, 8 features, pairwise interactions and a suppressor feature; "
                      "exact Shapley values (generated)",
    "gt-shapes": "3000 64x64 images: class = disk/square/triangle among distractor shapes; "
                 "object masks (generated)",
    "gt-textures": "3000 64x64 images: class = texture of one patch among distractor patches; "
                   "object masks (generated)",
    "gt-digits": "3000 64x64 images: class = digit glyph 0/1/2 among other digits; object masks "
                 "(generated)",
    "gt-xor": "3000 64x64 images: class = disk XOR square present; object masks (generated)",
    "gt-suppressor": "3000 64x64 images: class = object brighter than a suppressor band; "
                     "object and suppressor masks (generated)",
}.items()})

#: calix.groundtruth's public names, re-exported here on first use (they need torch)
_GROUND_TRUTH_EXPORTS = (
    "make_linear", "make_logistic", "make_additive", "make_interaction", "ObjectImages",
    "ImageBatch", "make_object_images", "TabularTruth",
)


def __getattr__(name: str) -> Any:
    if name in _GROUND_TRUTH_EXPORTS:
        from calix import groundtruth

        return getattr(groundtruth, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load(name: str, seed: int = 0, *, delimiter: str | None = None) -> Dataset:
    """Load a shipped dataset by name (see :data:`DATASETS` or ``calix data list``).

    Parameters
    ----------
    name : str
        One of ``digits``, ``digits-noisy``, ``breast_cancer``, ``wine``, ``iris``, ``diabetes``,
        or a path to a ``.csv`` / ``.npz`` file or an image folder.
    seed : int
        Fixes the train / validation / test split.
    delimiter : str or None
        For a ``.csv`` file: the field delimiter (default: sniffed, see :func:`load_csv`).

    Raises
    ------
    FileNotFoundError
        For a ``.csv`` / ``.npz`` path that does not exist.
    ValueError
        For an unknown name, or a file that is not a dataset (:class:`DataFileError`,
        naming the file and what is wrong with it).
    """
    _check_seed(seed)
    if not str(name).strip():
        raise ValueError(f"dataset name is empty: choose one of {sorted(DATASETS)} or give a "
                         "path to a .csv file, a .npz file or an image folder")
    path = Path(name)
    is_csv = name not in DATASETS and path.suffix.lower() == ".csv"
    if delimiter is not None and not is_csv:
        raise ValueError(f"delimiter {delimiter!r} applies to .csv files only, and {name!r} "
                         "is not one")
    if name in DATASETS:
        return DATASETS[name][0](seed)
    if is_csv:
        return load_csv(path, seed=seed, delimiter=delimiter)
    if path.suffix.lower() == ".npz":
        return load_npz(path, seed=seed)
    if path.is_dir():
        return load_image_folder(path, seed=seed)
    if path.exists():
        raise DataFileError(
            f"{path} is not a dataset calix can read: give a .csv file, a .npz file or an image "
            "folder (one sub-folder per class)")
    raise ValueError(
        f"unknown dataset {name!r}: choose one of {sorted(DATASETS)} or give a path to a "
        ".csv file, a .npz file or an image folder"
    )


def list_datasets() -> list[tuple[str, str]]:
    """``(name, description)`` of every shipped dataset."""
    return [(k, v[1]) for k, v in DATASETS.items()]


def _check_seed(seed: Any) -> None:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not (
            0 <= seed < 2**32):
        raise ValueError(f"seed must be an integer in [0, 2**32), got {seed!r}")


# ====================================================================== a user's own files
def _existing(path: str | Path, kind: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{kind} not found: {p}")
    return p


def _existing_file(path: str | Path, kind: str) -> Path:
    p = _existing(path, kind)
    if p.is_dir():
        article = "an" if kind[0] in "AEFHILMNORSX" else "a"  # "an NPZ file"
        raise DataFileError(f"{p} is a folder, not {article} {kind}")
    return p


def _read_bytes(p: Path) -> bytes:
    try:
        return p.read_bytes()
    except OSError as exc:
        raise DataFileError(f"{p} cannot be read: {exc.strerror or exc}") from exc


_DELIMITERS = ",;\t|"


def _sniff_delimiter(text: str) -> str:
    """The delimiter among ``, ; tab |`` that csv.Sniffer finds in the first KB (else ``,``)."""
    try:
        return csv.Sniffer().sniff(text[:1024], delimiters=_DELIMITERS).delimiter
    except csv.Error:
        return ","


def _parses_as(v: str, kind: Callable[[str], Any]) -> bool:
    """True when ``kind(v)`` (``float`` or ``int``) reads the text ``v`` without a ValueError."""
    try:
        kind(v)
    except ValueError:
        return False
    return True


def _is_missing_text(v: str) -> bool:
    """True for an empty field or one that parses as NaN or infinity."""
    if not v:
        return True
    try:
        return not np.isfinite(float(v))
    except ValueError:
        return False


def _csv_records(path: str | Path, delimiter: str | None
                 ) -> tuple[Path, str, list[tuple[int, list[str]]]]:
    """The path, the delimiter (sniffed when None) and the non-blank records
    ``(line number, fields)`` of a UTF-8 CSV file; every failure a DataFileError naming the
    file."""
    p = _existing_file(path, "CSV file")
    raw = _read_bytes(p)
    if b"\x00" in raw[:8192]:
        raise DataFileError(f"{p} contains NUL bytes: it is a binary file (or not UTF-8 "
                            "text), not a CSV file; save it as UTF-8 text")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataFileError(f"{p} is not UTF-8 text (byte {raw[exc.start]:#04x} at offset "
                            f"{exc.start}); save the CSV file as UTF-8") from exc
    sep = delimiter if delimiter is not None else _sniff_delimiter(text)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep)
    try:
        rows = [(reader.line_num, row) for row in reader]
    except csv.Error as exc:
        raise DataFileError(f"{p} is not a valid CSV file (line {reader.line_num}: {exc})"
                            ) from exc
    return p, sep, [(line, r) for line, r in rows if any(f.strip() for f in r)]


def load_csv(
    path: str | Path,
    *,
    target: str | None = None,
    task: Task | None = None,
    seed: int = 0,
    delimiter: str | None = None,
    standardize: bool = True,
) -> Dataset:
    """Load a UTF-8 CSV file with a header row; every column but ``target`` must be numeric.

    Parameters
    ----------
    target : str or None
        Name of the label column (default: the last column).
    delimiter : str or None
        The field delimiter; None sniffs it from the first KB among ``,`` ``;`` tab and ``|``
        (``,`` when nothing is found).

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist.
    DataFileError
        A :class:`ValueError` naming the file and what is wrong: not UTF-8 text, fewer than
        two columns (no feature besides the label), unnamed or duplicate column names, rows
        of another width than the header, a non-numeric or non-finite feature value (with
        its column and line), an empty or NaN label (with its line).

    Example
    -------
    >>> ds = load_csv("measurements.csv", target="species")  # doctest: +SKIP
    """
    _check_seed(seed)
    if delimiter is not None and (len(delimiter) != 1 or delimiter in "\"\r\n"):
        raise ValueError(f"delimiter must be one character other than a quote or a line "
                         f"break, got {delimiter!r}")
    p, sep, rows = _csv_records(path, delimiter)
    if len(rows) < 2:
        raise DataFileError(f"{p} needs a header row and at least one data row")
    header = [h.strip() for h in rows[0][1]]
    body = rows[1:]
    if len(header) < 2:
        raise DataFileError(
            f"{p} has a single column {header[0]!r} when split at {sep!r}: a dataset needs at "
            "least one feature column besides the label; if the file uses another delimiter, "
            "pass delimiter= (on the command line: --delimiter)")
    numeric = all(_parses_as(h, float) for h in header)
    if numeric and any(not _parses_as(h, int) for h in header):
        raise DataFileError(
            f"{p}: the first row {','.join(header)!r} looks like data, not a header row (all "
            "its fields are numbers); add a header row naming the columns")
    unnamed = [j + 1 for j, h in enumerate(header) if not h]
    if unnamed:
        raise DataFileError(f"{p}: column(s) {unnamed} of the header row have no name; "
                            "name every column")
    dups = sorted({h for h in header if header.count(h) > 1})
    if dups:
        raise DataFileError(f"{p}: duplicate column name(s) {dups}; every column needs a "
                            "name of its own")
    for line, r in body:
        if len(r) != len(header):
            raise DataFileError(f"{p}: every row must have {len(header)} fields like the "
                                f"header row, but line {line} has {len(r)}")
    t_col = len(header) - 1 if target is None else _column(header, target, p)
    feats = [j for j in range(len(header)) if j != t_col]
    label_hint = (f"the label column is {header[t_col]!r}"
                  + ("" if target is not None else " (the last column unless target= names "
                     "another)"))
    try:
        X = np.array([[float(r[j]) for j in feats] for _, r in body], dtype=np.float64)
    except ValueError:
        for line, r in body:
            for j in feats:
                try:
                    float(r[j])
                except ValueError:
                    what = "an empty field" if not r[j].strip() else repr(r[j])
                    raise DataFileError(
                        f"{p}: feature columns must be numeric, but column {header[j]!r} holds "
                        f"{what} on line {line}; {label_hint}") from None
        raise  # pragma: no cover - the loop above finds the bad value
    X = X.astype(np.float32)
    bad = ~np.isfinite(X)
    if bad.any():
        i, k = (int(v[0]) for v in np.nonzero(bad))
        line, r = body[i]
        raise DataFileError(
            f"{p}: column {header[feats[k]]!r} holds {r[feats[k]]!r} on line {line}, which is "
            f"not a finite number (NaN, infinite or beyond float32); {int(bad.sum())} such "
            "value(s) in all")
    y_raw = [r[t_col].strip() for _, r in body]
    missing = [line for (line, _), v in zip(body, y_raw, strict=True) if _is_missing_text(v)]
    if missing:
        raise DataFileError(
            f"{p}: the label column {header[t_col]!r} is empty or NaN on {len(missing)} "
            f"row(s), the first on line {missing[0]}; drop those rows or give them a label")
    try:
        y = np.array([float(v) for v in y_raw])
        if task != "regression" and np.all(y == np.round(y)):
            y = y.astype(np.int64)
    except ValueError:
        y = np.array(y_raw)
    try:
        return from_arrays(
            X, y, name=p.stem, task=task, seed=seed, standardize=standardize,
            feature_names=[header[j] for j in feats],
            description=f"CSV file {p} (delimiter {sep!r})",
        )
    except (ValueError, TypeError) as exc:
        raise DataFileError(f"{p}: {exc}") from exc


def _column(header: list[str], name: str, path: Path) -> int:
    if name not in header:
        raise DataFileError(f"{path}: no column named {name!r}; columns are {header}")
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
    """Load features ``x_key`` and labels ``y_key`` from an ``.npz`` archive (no pickles).

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist.
    DataFileError
        A :class:`ValueError` naming the file and what is wrong: not an ``.npz`` archive,
        corrupt or truncated, a missing array, an array of Python objects, or arrays that do
        not make a dataset.

    Example
    -------
    >>> np.savez("toy.npz", X=X, y=y)  # doctest: +SKIP
    >>> ds = load_npz("toy.npz")  # doctest: +SKIP
    """
    _check_seed(seed)
    p = _existing_file(path, "NPZ file")
    hint = "save one with numpy.savez(path, X=features, y=labels)"
    if p.stat().st_size == 0:
        raise DataFileError(f"{p} is empty (0 bytes), not an .npz archive; {hint}")
    try:
        z = np.load(p, allow_pickle=False)
    except OSError as exc:
        raise DataFileError(f"{p} cannot be read: {exc.strerror or exc}") from exc
    except (ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        # numpy reports any file that is neither .npy nor .zip as "pickled data"
        raise DataFileError(f"{p} is not a valid .npz archive (corrupt, truncated or another "
                            f"format); {hint}") from exc
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise DataFileError(f"{p} holds a single .npy array, not an .npz archive of "
                            f"{x_key!r} and {y_key!r}; {hint}")
    with z:
        missing = [k for k in (x_key, y_key) if k not in z.files]
        if missing:
            raise DataFileError(f"{p} has no array(s) {missing}; it has {z.files}")
        arrays = {}
        for key in (x_key, y_key):
            try:
                arrays[key] = z[key]
            except ValueError as exc:
                if "allow_pickle" in str(exc):
                    raise DataFileError(
                        f"{p}: array {key!r} holds Python objects, which calix does not load "
                        "(unpickling can run code); save numeric or string arrays") from exc
                raise DataFileError(f"{p}: array {key!r} is corrupt or truncated ({exc})"
                                    ) from exc
            except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
                raise DataFileError(f"{p}: array {key!r} is corrupt or truncated ({exc})"
                                    ) from exc
    try:
        return from_arrays(arrays[x_key], arrays[y_key], name=p.stem, task=task, seed=seed,
                           standardize=standardize, description=f"NPZ file {p}")
    except (ValueError, TypeError) as exc:
        raise DataFileError(f"{p}: {exc}") from exc


_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif"}


def _read_image(f: Path) -> np.ndarray:
    """Image file ``f`` as float32 of shape (H, W) or (H, W, 3), or a DataFileError."""
    from skimage import io
    from skimage.color import rgba2rgb
    from skimage.util import img_as_float32

    if f.stat().st_size == 0:
        raise DataFileError(f"{f} is empty (0 bytes), not an image; remove or replace it")
    try:
        img = io.imread(f)
    except Exception as exc:  # the image readers raise many types; none names the file
        raise DataFileError(f"{f} cannot be read as an image (the reader raised "
                            f"{type(exc).__name__}): it is corrupt or not a "
                            f"{f.suffix.lower()} file; remove or replace it") from exc
    img = np.asarray(img)
    if img.ndim == 3 and img.shape[-1] in (1, 2):  # grey, grey + alpha
        img = img[..., 0]
    if not (img.ndim == 2 or (img.ndim == 3 and img.shape[-1] in (3, 4))):
        raise DataFileError(f"{f} has array shape {img.shape}; calix reads single-frame grey, "
                            "RGB or RGBA images")
    try:
        img = img_as_float32(img)
    except ValueError as exc:
        raise DataFileError(f"{f}: {exc}") from exc
    return rgba2rgb(img) if img.ndim == 3 and img.shape[-1] == 4 else img


def load_image_folder(
    root: str | Path,
    *,
    size: tuple[int, int] | None = None,
    grayscale: bool = True,
    seed: int = 0,
) -> Dataset:
    """Load ``root/<class name>/<image>`` files as a channel-first image dataset in [0, 1].

    Hidden folders and files (names starting with ``.``) are skipped.

    Parameters
    ----------
    size : (height, width) or None
        Resize every image (required when sizes differ).
    grayscale : bool
        Convert to one channel; otherwise RGB (alpha dropped).

    Raises
    ------
    FileNotFoundError
        When ``root`` does not exist.
    DataFileError
        A :class:`ValueError` naming the folder or file and what is wrong: fewer than two
        class folders, a class folder without images, an unreadable image, shapes that differ.
    """
    from skimage.color import gray2rgb, rgb2gray
    from skimage.transform import resize

    _check_seed(seed)
    r = _existing(root, "image folder")
    if not r.is_dir():
        raise DataFileError(f"{r} is a file, not an image folder (one sub-folder per class)")
    classes = sorted(c.name for c in r.iterdir() if c.is_dir() and not c.name.startswith("."))
    if len(classes) < 2:
        raise DataFileError(f"{r} needs at least two class sub-folders, found {classes}")
    images, labels, files_of = [], [], []
    for k, cls in enumerate(classes):
        files = sorted(f for f in (r / cls).iterdir()
                       if f.suffix.lower() in _IMAGE_SUFFIXES and f.is_file()
                       and not f.name.startswith("."))
        if not files:
            raise DataFileError(f"class folder {r / cls} holds no images "
                                f"({sorted(_IMAGE_SUFFIXES)}); add some or remove the folder")
        for f in files:
            img = _read_image(f)
            if grayscale:
                img = rgb2gray(img) if img.ndim == 3 else img
                img = img[..., None]
            else:
                img = gray2rgb(img) if img.ndim == 2 else img
            if size is not None:
                img = resize(img, (*size, img.shape[-1]), anti_aliasing=True)
            images.append(np.moveaxis(img, -1, 0).astype(np.float32))
            labels.append(k)
            files_of.append(f)
    example: dict[tuple[int, ...], Path] = {}
    for im, f in zip(images, files_of, strict=True):
        example.setdefault(im.shape, f)
    if len(example) > 1:
        shapes = ", ".join(f"{s} (e.g. {f})" for s, f in sorted(example.items()))
        raise DataFileError(f"images under {r} differ in shape: {shapes}; pass size=(h, w)")
    try:
        return from_arrays(
            np.stack(images), np.array(labels), name=r.name, task="classification", seed=seed,
            standardize=False, class_names=classes, description=f"image folder {r}",
        )
    except (ValueError, TypeError) as exc:
        raise DataFileError(f"{r}: {exc}") from exc
