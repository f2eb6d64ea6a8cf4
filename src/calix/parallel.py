"""Dataset-scale explanations: every input, in chunks, locally or on a Dask cluster.

Two kinds of run share the chunking, the run folder and the executors:

- **calix's own toys** (``data`` a shipped dataset name, ``model`` a zoo model name, as strings):
  each chunk is one task that loads the dataset and the (cached) zoo model itself, so a remote
  cluster needs calix installed, not the caller's files.
- **a user's model and data**: ``model`` a torch ``nn.Module``, a scikit-learn estimator, a
  calix :class:`~calix.models.Model` or a saved model file (:func:`calix.model_io.load_model`);
  ``data`` arrays, a tensor, a pandas DataFrame, a calix ``Dataset`` (its test split), or files
  read lazily: a CSV file (:class:`CsvFile`; the row offsets are computed once, each chunk
  reads only its rows) or an image folder (:class:`ImageFolder`; the sorted file list, each
  chunk reads only its images). The model is sent to every Dask worker once (in a worker
  plugin: the scheduler holds its pickled bytes until the run ends, failed or not, and
  removes it then) and built there once per worker thread, on the
  worker's GPU when it has one (``device="auto"``). Arrays travel chunk by chunk, as task
  arguments; files travel as paths and byte ranges, so workers must see the same files.

Each chunk of ``chunk_size`` inputs is explained -- optionally under a stochastic sampler for
uncertainty -- with an explainer seeded by ``seed``, so its result does not depend on where it
ran (on the same kind of device with the same torch thread count: bitwise). The caller's
process writes every finished chunk atomically as ``DIR/chunks/chunk_<start>_<stop>.npz`` (a
per-process temporary file, fsynced, then ``os.replace``), so an interrupted run keeps all
finished chunks and a rerun computes only the missing ones. Workers never write files
themselves, so a remote cluster needs no shared filesystem for the results.

The run folder's state:

- ``DIR/.lock``: a run holds an exclusive ``flock`` on it from before it reads or writes the
  manifest until it returns; a second run on the same folder is refused at once with a
  ``ValueError`` naming the folder and the holder (it does not wait: a run can take hours).
  The lock dies with its process, so a killed run never leaves the folder locked.
- ``DIR/manifest.json``: the run's configuration, written only after every argument has been
  checked (the explainer and the sampler are built once), so a rejected call claims nothing.
  For a user's model and data it records what identifies them: a SHA-256 of the model's
  weights (a torch ``state_dict``) or of its pickle (scikit-learn), and of the data (the
  array's bytes, the CSV file's bytes, every image file's name and bytes) and of the
  background data. A rerun with another model or data is refused, naming what differs,
  rather than mixing results.
- ``DIR/chunks/``: on a rerun every existing chunk is checked (it loads, holds the expected
  arrays and rows); a damaged one is removed with a warning and recomputed, and temporary
  files of killed runs are removed.

Executors:

- ``"local"``: chunks one after another in this process;
- ``"dask"``: chunks as Dask tasks on the cluster at ``scheduler`` (``"tcp://host:8786"`` or a
  ``distributed.Client``), or on a new ``distributed.LocalCluster`` when no scheduler is given.

Example
-------
>>> from calix.parallel import ImageFolder, explain_dataset
>>> res = explain_dataset("digits", "cnn", "saliency", out="results/saliency",
...                       executor="local")                               # doctest: +SKIP
>>> res.values.shape                                                       # doctest: +SKIP
(360, 1, 8, 8)
>>> res = explain_dataset(ImageFolder("photos", size=(224, 224)), my_net, "occlusion",
...                       out="results/photos", executor="dask",
...                       scheduler="tcp://10.0.0.5:8786")                  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import pickle
import socket
import threading
import uuid
import warnings
from collections.abc import Iterator
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from calix import _names
from calix._io import DataFileError, atomic_write, ensure_writable_dir
from calix._progress import progress_bar

__all__ = ["explain_dataset", "DatasetExplanation", "UNCERTAINTY", "explain_chunk",
           "explain_rows", "load_chunks", "CsvFile", "ImageFolder", "resolve_device"]

#: uncertainty samplers available for dataset-scale runs: those of
#: :data:`calix.uncertainty.SAMPLERS` that need no extra training
UNCERTAINTY = _names.UNTRAINED_SAMPLERS


@dataclass
class DatasetExplanation:
    """Explanations of a whole test split, assembled from the chunk files.

    Attributes
    ----------
    values : ndarray of shape (n, *input_shape) or (n, d)
        Attributions (the mean map under uncertainty).
    std : ndarray or None -- std of the attributions over stochastic samples.
    target : ndarray of shape (n,) -- explained class per input.
    indices : ndarray of shape (n,) -- test-split indices, in order.
    computed : list of (start, stop) chunks computed in this call (the others were on disk).
    out : folder of the run.
    """

    values: np.ndarray
    std: np.ndarray | None
    target: np.ndarray
    indices: np.ndarray
    computed: list[tuple[int, int]] = field(default_factory=list)
    out: Path | None = None


def _spec(data: str, model: str, method: str, uncertainty: str | None, n_samples: int,
          seed: int, method_kwargs: dict[str, Any]) -> dict[str, Any]:
    return {"data": data, "model": model, "method": method, "uncertainty": uncertainty,
            "n_samples": n_samples, "seed": seed, "method_kwargs": method_kwargs}


def explain_chunk(spec: dict[str, Any], start: int, stop: int) -> dict[str, np.ndarray]:
    """Explain test inputs ``start:stop`` as ``spec`` says (a shipped dataset and a zoo
    model); returns the chunk's arrays.

    A plain top-level function of plain arguments, so it can be shipped to Dask workers.
    """
    from calix import data as data_mod
    from calix import zoo

    ds = data_mod.load(spec["data"], seed=spec["seed"])
    trained = zoo.train(spec["model"], ds, seed=spec["seed"])
    return _explain_array(spec, trained.wrap(), ds.X_test[start:stop], None, start, stop)


def explain_rows(job: _Job, rows: Any, start: int, stop: int) -> dict[str, np.ndarray]:
    """Explain the inputs ``start:stop`` of a user's data: ``rows.read()`` gives them (an
    array slice, or a CSV byte range or image files read here), ``job`` holds the model --
    built once per worker thread, on ``job.spec["device"]`` -- the background and the
    explainer's configuration. Returns the chunk's arrays."""
    model = _worker_model(job.model, job.spec["device"])
    return _explain_array(job.spec, model, rows.read(), job.background, start, stop)


def _explain_array(spec: dict[str, Any], model: Any, x: np.ndarray, background: Any,
                   start: int, stop: int) -> dict[str, np.ndarray]:
    from calix.uncertainty import explanation_distribution

    if len(x) != stop - start:
        raise ValueError(f"chunk {start}:{stop} read {len(x)} inputs instead of "
                         f"{stop - start}; did the data change during the run?")
    make, sampler = _explainer(spec, model, background)
    out: dict[str, np.ndarray] = {"indices": np.arange(start, stop)}
    if sampler is None:
        exp = make(model).explain(x)
        out["values"] = np.asarray(exp.values)
    else:
        exp = explanation_distribution(make, sampler, x)
        out["values"] = np.asarray(exp.values)
        out["std"] = np.asarray(exp.std)
    out["target"] = np.asarray(exp.target)
    return out


def _explainer(spec: dict[str, Any], model: Any, background: Any = None
               ) -> tuple[Any, Any]:
    """``(make, sampler)``: ``make(model)`` builds the explainer (with ``background`` when it
    takes one and ``method_kwargs`` name no fill); ``sampler`` is the uncertainty sampler or
    None. Building them checks ``method_kwargs`` and ``n_samples``."""
    from calix.explain import METHODS
    from calix.uncertainty import SAMPLERS

    cls = METHODS[spec["method"]]
    kwargs = dict(spec["method_kwargs"])
    params = _init_params(cls)
    if "seed" in params and "seed" not in kwargs:
        kwargs["seed"] = spec["seed"]
    if (background is not None and "background" in params
            and not {"background", "fill", "perturbation"} & set(kwargs)):
        kwargs["background"] = background

    def make(m: Any) -> Any:
        return cls(m, **kwargs)

    make(model)  # fails here on bad method_kwargs, before any chunk is claimed
    if spec["uncertainty"] is None:
        return make, None
    sampler_cls = SAMPLERS[spec["uncertainty"]]
    return make, sampler_cls(model, n_samples=spec["n_samples"], seed=spec["seed"])


def _init_params(cls: type) -> set[str]:
    import inspect

    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is not None:
            names |= set(inspect.signature(init).parameters)
    return names


# ====================================================================== a user's data
def _sha256_array(x: np.ndarray) -> str:
    h = hashlib.sha256(f"{x.dtype.str}|{x.shape}|".encode())
    h.update(np.ascontiguousarray(x).reshape(-1).view(np.uint8).data)
    return h.hexdigest()


class _ArrayRows:
    """A chunk of an in-memory array (pickles as its own rows only)."""

    def __init__(self, x: np.ndarray):
        self.x = x

    def read(self) -> np.ndarray:
        return self.x


class _Arrays:
    """In-memory inputs of shape (n, *input_shape), float32 (from an array, a tensor, a
    DataFrame or a Dataset's test split alike: the values identify them)."""

    def __init__(self, x: np.ndarray):
        self.x = x
        self.n = len(x)

    def identity(self) -> dict[str, Any]:
        return {"kind": "array", "shape": list(self.x.shape), "sha256": _sha256_array(self.x)}

    def rows(self, start: int, stop: int) -> _ArrayRows:
        return _ArrayRows(self.x[start:stop])


class CsvFile:
    """A CSV file of inputs, one row per line, read lazily: the row offsets are computed once
    (while the file is hashed), and each chunk reads and parses only its own rows.

    Values are used as they are in the file (no standardisation): the model gets the units
    it was trained on.

    Parameters
    ----------
    path : a UTF-8 CSV file with a header row (line breaks inside quoted fields are not
        supported). Blank lines are skipped.
    columns : the feature columns, in the model's order. None: the model's
        ``feature_names_in_`` (a scikit-learn model fitted on a DataFrame) when it has them,
        else every column but ``target``.
    target : a label column to leave out (when ``columns`` is None).
    delimiter : one character; None sniffs it from the first KB among ``,`` ``;`` tab ``|``.

    Example
    -------
    >>> explain_dataset(CsvFile("patients.csv", target="outcome"), clf, "kernel_shap",
    ...                 background=X_train, out="runs/patients")          # doctest: +SKIP
    """

    def __init__(self, path: str | Path, *, columns: list[str] | None = None,
                 target: str | None = None, delimiter: str | None = None):
        if delimiter is not None and (len(delimiter) != 1 or delimiter in "\"\r\n"):
            raise ValueError(f"delimiter must be one character other than a quote or a line "
                             f"break, got {delimiter!r}")
        self.path = Path(path)
        self.columns = None if columns is None else [str(c) for c in columns]
        self.target, self.delimiter = target, delimiter
        self._index: tuple[Any, ...] | None = None

    def _scan(self) -> tuple[Any, ...]:
        """(sha256, header, delimiter, row starts (n + 1 offsets), line numbers of rows)."""
        if self._index is not None:
            return self._index
        from calix.data import _sniff_delimiter

        p = self.path
        if not p.exists():
            raise ValueError(f"CSV file not found: {p}")
        if p.is_dir():
            raise DataFileError(f"{p} is a folder, not a CSV file")
        h = hashlib.sha256()
        # per line break: its offset and the count of non-blank bytes before it, so that a
        # line holding only whitespace is found without a Python loop over lines
        breaks, marks, size, seen = [], [], 0, 0
        space = np.zeros(256, bool)
        space[list(b" \t\r\n\v\f")] = True
        try:
            with open(p, "rb") as f:
                head = f.read(4096)
                f.seek(0)
                while block := f.read(1 << 22):
                    h.update(block)
                    b = np.frombuffer(block, np.uint8)
                    ink = np.cumsum(~space[b], dtype=np.int64)
                    nl = np.flatnonzero(b == 10)
                    breaks.append(nl.astype(np.int64) + size)
                    marks.append(ink[nl] + seen)
                    size, seen = size + len(block), seen + int(ink[-1])
        except OSError as exc:
            raise DataFileError(f"{p} cannot be read: {exc.strerror or exc}") from exc
        if b"\x00" in head:
            raise DataFileError(f"{p} contains NUL bytes: it is a binary file (or not UTF-8 "
                                "text), not a CSV file; save it as UTF-8 text")
        nl = np.concatenate([np.zeros(0, np.int64), *breaks])
        ink = np.concatenate([np.zeros(0, np.int64), *marks])
        line_start = np.concatenate([[0], nl + 1])
        ink_end = np.concatenate([ink, [seen]])  # non-blank bytes up to each line's end
        if line_start[-1] >= size:  # a final line break starts no line
            line_start, ink_end = line_start[:-1], ink_end[:-1]
        bom = head.startswith(b"\xef\xbb\xbf")
        if bom:
            line_start[0] = 3
        line_end = np.append(line_start[1:], size)
        ink_per_line = np.diff(np.concatenate([[0], ink_end]))
        if bom:
            ink_per_line[0] -= 3  # the byte-order mark
        blank = ink_per_line == 0
        keep = np.flatnonzero(~blank)
        if len(keep) < 2:
            raise DataFileError(f"{p} needs a header row and at least one data row")
        # the delimiter is sniffed from the first KB (a cut character does not matter there)
        text = head.decode("utf-8-sig", errors="ignore")
        sep = self.delimiter if self.delimiter is not None else _sniff_delimiter(text)
        with open(p, "rb") as f:
            f.seek(int(line_start[keep[0]]))
            raw = f.read(int(line_end[keep[0]] - line_start[keep[0]]))
        try:
            line = raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as exc:
            raise DataFileError(f"{p}: the header row is not UTF-8 text (byte "
                                f"{raw[exc.start]:#04x}); save the CSV file as UTF-8") from exc
        header = [c.strip() for c in next(_csv_reader([line], sep))]
        rows = keep[1:]
        row_start = np.append(line_start[rows], size)
        self._index = (h.hexdigest(), header, sep, row_start, rows + 1)
        return self._index

    def feature_columns(self, feature_names: list[str] | None = None) -> list[str]:
        """The columns read as features (see ``columns``)."""
        _, header, sep, _, _ = self._scan()
        others = [d for d in ",;\t|" if d != sep and len(header) == 1 and d in header[0]]
        if others:
            raise DataFileError(f"{self.path} has a single column {header[0]!r} when split at "
                                f"{sep!r}; pass delimiter= (e.g. {others[0]!r})")
        dups = sorted({c for c in header if header.count(c) > 1})
        if dups:
            raise DataFileError(f"{self.path}: duplicate column name(s) {dups}")
        if self.target is not None and self.target not in header:
            raise DataFileError(f"{self.path}: no column named {self.target!r} (target); "
                                f"columns are {header}")
        cols = self.columns if self.columns is not None else feature_names
        if cols is None:
            cols = [c for c in header if c != self.target]
        missing = [c for c in cols if c not in header]
        if missing:
            why = "" if self.columns is not None else " (the model's feature_names_in_)"
            raise DataFileError(f"{self.path} has no column(s) {missing}{why}; columns are "
                                f"{header} (split at {sep!r}; pass delimiter= if that is wrong)")
        if not cols:
            raise DataFileError(f"{self.path}: no feature column besides {self.target!r}")
        return list(cols)

    @property
    def n(self) -> int:
        """Number of data rows."""
        return len(self._scan()[3]) - 1

    def _bind(self, feature_names: list[str] | None) -> _CsvSource:
        self._index = None  # every run scans (and hashes) the file as it is now
        sha, header, sep, row_start, lines = self._scan()
        cols = self.feature_columns(feature_names)
        return _CsvSource(self.path, sha, header, sep, row_start, lines,
                          [header.index(c) for c in cols], cols)


def _csv_reader(lines: list[str], sep: str) -> Any:
    import csv

    return csv.reader(lines, delimiter=sep)


class _CsvSource:
    def __init__(self, path: Path, sha: str, header: list[str], sep: str, row_start: np.ndarray,
                 lines: np.ndarray, cols: list[int], names: list[str]):
        self.path, self.sha, self.header, self.sep = path, sha, header, sep
        self.row_start, self.lines, self.cols, self.names = row_start, lines, cols, names
        self.n = len(row_start) - 1

    def identity(self) -> dict[str, Any]:
        return {"kind": "csv", "file": self.path.name, "sha256": self.sha, "n": self.n,
                "columns": self.names}

    def rows(self, start: int, stop: int) -> _CsvRows:
        return _CsvRows(str(self.path), int(self.row_start[start]), int(self.row_start[stop]),
                        self.lines[start:stop].tolist(), self.cols, len(self.header), self.sep,
                        self.header)


class _CsvRows:
    """Rows of a CSV file between two byte offsets, parsed where they are read."""

    def __init__(self, path: str, begin: int, end: int, lines: list[int], cols: list[int],
                 n_fields: int, sep: str, header: list[str]):
        self.path, self.begin, self.end, self.lines = path, begin, end, lines
        self.cols, self.n_fields, self.sep, self.header = cols, n_fields, sep, header

    def read(self) -> np.ndarray:
        p = self.path
        try:
            with open(p, "rb") as f:
                f.seek(self.begin)
                raw = f.read(self.end - self.begin)
            text = raw.decode("utf-8")
        except OSError as exc:
            raise DataFileError(f"{p} cannot be read: {exc.strerror or exc}") from exc
        except UnicodeDecodeError as exc:
            raise DataFileError(f"{p} is not UTF-8 text (byte {raw[exc.start]:#04x} at offset "
                                f"{self.begin + exc.start})") from exc
        body = [ln.rstrip("\r") for ln in text.split("\n")]
        body = [ln for ln in body if ln.strip()]
        if len(body) != len(self.lines):
            raise DataFileError(f"{p}: lines {self.lines[0]}..{self.lines[-1]} hold "
                                f"{len(body)} rows instead of {len(self.lines)}; did the file "
                                "change during the run?")
        out = np.empty((len(body), len(self.cols)), np.float32)
        for i, (line, row) in enumerate(zip(self.lines, _csv_reader(body, self.sep),
                                            strict=True)):
            if len(row) != self.n_fields:
                raise DataFileError(f"{p}: every row must have {self.n_fields} fields like the "
                                    f"header row, but line {line} has {len(row)}")
            try:
                out[i] = [float(row[j]) for j in self.cols]
            except ValueError:
                from calix.data import _parses_as

                j = next(j for j in self.cols if not _parses_as(row[j], float))
                what = "an empty field" if not row[j].strip() else repr(row[j])
                raise DataFileError(f"{p}: feature columns must be numeric, but column "
                                    f"{self.header[j]!r} holds {what} on line {line}") from None
        bad = ~np.isfinite(out)
        if bad.any():
            i, k = (int(v[0]) for v in np.nonzero(bad))
            raise DataFileError(f"{p}: column {self.header[self.cols[k]]!r} on line "
                                f"{self.lines[i]} is not a finite number (NaN, infinite or "
                                "beyond float32)")
        return out


class ImageFolder:
    """Image files under a folder, read lazily: the sorted list of files (by path relative to
    ``root``, sub-folders included, hidden names skipped) is made once, and each chunk reads
    only its own images, as channel-first float32 in [0, 1].

    Explanations are in these pixel units; put any normalisation the network expects inside
    the model (e.g. ``nn.Sequential(normalize, net)``).

    Parameters
    ----------
    root : a folder of image files (``.png``, ``.jpg``, ``.jpeg``, ``.bmp``, ``.tif``,
        ``.tiff``, ``.gif``), flat or with sub-folders (one per class, say).
    size : (height, width) to resize every image to; required when sizes differ.
    grayscale : one channel (True) or RGB (False, the default; alpha dropped).

    Example
    -------
    >>> folder = ImageFolder("photos", size=(224, 224))                   # doctest: +SKIP
    >>> folder.files[:2]                                                   # doctest: +SKIP
    [PosixPath('photos/cat/001.jpg'), PosixPath('photos/cat/002.jpg')]
    """

    def __init__(self, root: str | Path, *, size: tuple[int, int] | None = None,
                 grayscale: bool = False):
        if size is not None and (len(size) != 2 or min(int(s) for s in size) < 1):
            raise ValueError(f"size must be (height, width) of positive integers, got {size!r}")
        self.root = Path(root)
        self.size = None if size is None else (int(size[0]), int(size[1]))
        self.grayscale = bool(grayscale)
        self._files: list[Path] | None = None

    @property
    def files(self) -> list[Path]:
        """The image files, in the order of the explained inputs."""
        if self._files is None:
            from calix.data import _IMAGE_SUFFIXES

            r = self.root
            if not r.exists():
                raise ValueError(f"image folder not found: {r}")
            if not r.is_dir():
                raise DataFileError(f"{r} is a file, not an image folder")
            files = []
            for dirpath, dirnames, filenames in os.walk(r):
                dirnames[:] = [d for d in dirnames if not d.startswith(".")]
                files += [Path(dirpath) / f for f in filenames if not f.startswith(".")
                          and Path(f).suffix.lower() in _IMAGE_SUFFIXES]
            if not files:
                raise DataFileError(f"{r} holds no images ({sorted(_IMAGE_SUFFIXES)})")
            self._files = sorted(files, key=lambda f: f.relative_to(r).parts)
        return self._files

    @property
    def n(self) -> int:
        """Number of images."""
        return len(self.files)

    def _bind(self, feature_names: list[str] | None) -> _ImageSource:
        self._files = None  # every run lists (and hashes) the files as they are now
        files = self.files
        first = _ImageRows([str(files[0])], self.size, self.grayscale, None).read()
        h = hashlib.sha256()
        for f in files:
            rel = f.relative_to(self.root).as_posix()
            try:
                data = f.read_bytes()
            except OSError as exc:
                raise DataFileError(f"{f} cannot be read: {exc.strerror or exc}") from exc
            h.update(f"{rel}|{len(data)}|".encode())
            h.update(data)
        return _ImageSource(self, h.hexdigest(), tuple(first.shape[1:]))


class _ImageSource:
    def __init__(self, folder: ImageFolder, sha: str, shape: tuple[int, ...]):
        self.folder, self.sha, self.shape = folder, sha, shape
        self.n = folder.n

    def identity(self) -> dict[str, Any]:
        f = self.folder
        return {"kind": "image_folder", "sha256": self.sha, "n": self.n,
                "size": None if f.size is None else list(f.size), "grayscale": f.grayscale,
                "shape": list(self.shape)}

    def rows(self, start: int, stop: int) -> _ImageRows:
        f = self.folder
        return _ImageRows([str(p) for p in f.files[start:stop]], f.size, f.grayscale,
                          self.shape)


class _ImageRows:
    """Image files read where they are needed, as (n, C, H, W) float32 in [0, 1]."""

    def __init__(self, files: list[str], size: tuple[int, int] | None, grayscale: bool,
                 shape: tuple[int, ...] | None):
        self.files, self.size, self.grayscale, self.shape = files, size, grayscale, shape

    def read(self) -> np.ndarray:
        from skimage.color import gray2rgb, rgb2gray
        from skimage.transform import resize

        from calix.data import _read_image

        out = []
        for name in self.files:
            img = _read_image(Path(name))
            if self.grayscale:
                img = (rgb2gray(img) if img.ndim == 3 else img)[..., None]
            else:
                img = gray2rgb(img) if img.ndim == 2 else img
            if self.size is not None:
                img = resize(img, (*self.size, img.shape[-1]), anti_aliasing=True)
            img = np.moveaxis(img, -1, 0).astype(np.float32)
            if self.shape is not None and img.shape != self.shape:
                raise DataFileError(f"{name} has shape {img.shape} after reading, the first "
                                    f"image {self.shape}; pass size=(height, width) to resize "
                                    "every image")
            out.append(img)
        return np.stack(out)


def _as_rows(x: Any, feature_names: list[str] | None, name: str) -> np.ndarray:
    """In-memory inputs as float32 numpy (a DataFrame's columns in the model's order when it
    names them)."""
    import torch

    from calix.models import as_tensor

    if hasattr(x, "columns") and hasattr(x, "dtypes"):  # a DataFrame
        if feature_names is not None:
            cols = [str(c) for c in x.columns]
            missing = [c for c in feature_names if c not in cols]
            if missing:
                raise ValueError(f"{name} (a DataFrame) lacks the model's feature column(s) "
                                 f"{missing}")
            x = x[[x.columns[cols.index(c)] for c in feature_names]]
    elif isinstance(x, torch.Tensor):
        x = x.detach().cpu()
    t = as_tensor(x, name=name)
    if t.ndim < 2:
        raise ValueError(f"{name} must have shape (n, *input_shape), got {tuple(t.shape)}")
    return t.numpy()


def _source(data: Any, feature_names: list[str] | None, seed: int) -> tuple[Any, Any]:
    """``(source, default background)`` of a user's ``data``."""
    from calix import data as data_mod

    if isinstance(data, str | Path):
        path = Path(data)
        if isinstance(data, str) and data in data_mod.DATASETS:
            data = data_mod.load(data, seed=seed)
        elif path.suffix.lower() == ".csv":
            data = CsvFile(path)
        elif path.is_dir():
            data = ImageFolder(path)
        else:
            data = data_mod.load(str(data), seed=seed)  # .npz files; names the failure
    if isinstance(data, CsvFile | ImageFolder):
        return data._bind(feature_names), None
    if isinstance(data, data_mod.Dataset):
        x = np.ascontiguousarray(data.X_test, dtype=np.float32)
        # tables: the training split's mean fills removed features (as the CLI's explain)
        bg = data.X_train if x.ndim == 2 else None
        return _Arrays(x), bg
    return _Arrays(_as_rows(data, feature_names, "data")), None


# ====================================================================== a user's model
@dataclass
class _ShippedModel:
    """What a worker needs to build the model: sent once, built once per worker thread."""

    kind: str  # "torch", "torchscript", "sklearn" or "callable"
    obj: Any  # a CPU module, TorchScript bytes, an estimator, or a calix Model
    wrap_kwargs: dict[str, Any]
    identity: dict[str, Any]


def _ship(model: Any) -> _ShippedModel:
    """What identifies ``model`` (a calix Model) and what a worker builds it from."""
    import torch

    from calix.models import CallableModel, SklearnModel, TorchModel
    from calix.zoo import _digest

    if isinstance(model, TorchModel):
        module = model.module
        kw = {"task": model.task, "input_shape": model.input_shape,
              "batch_size": model.batch_size, "output": model.output,
              "autocast": model.autocast, "channels_last": model.channels_last}
        state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
        scripted = isinstance(module, torch.jit.ScriptModule)
        ident = {"kind": "torchscript" if scripted else "torch",
                 "type": getattr(module, "original_name", type(module).__qualname__),
                 "sha256": _digest(state), "task": model.task, "output": model.output,
                 "autocast": None if model.autocast is None else str(model.autocast),
                 "input_shape": None if model.input_shape is None else list(model.input_shape)}
        if scripted:
            buf = io.BytesIO()
            torch.jit.save(module, buf)
            code = getattr(module, "code", "")
            ident["code_sha256"] = hashlib.sha256(str(code).encode()).hexdigest()
            return _ShippedModel("torchscript", buf.getvalue(), kw, ident)
        first = next(iter(state.values()), None)
        on_cpu = all(t.device.type == "cpu" for t in module.state_dict().values())
        obj = module if on_cpu or first is None else copy.deepcopy(module).cpu()
        return _ShippedModel("torch", obj, kw, ident)
    if isinstance(model, SklearnModel):
        kw = {"task": model.task, "input_shape": model.input_shape,
              "batch_size": model.batch_size}
        digest = hashlib.sha256(pickle.dumps(model.estimator, protocol=4)).hexdigest()
        ident = {"kind": "sklearn", "type": type(model.estimator).__qualname__,
                 "sha256": digest, "task": model.task,
                 "input_shape": None if model.input_shape is None else list(model.input_shape)}
        return _ShippedModel("sklearn", model.estimator, kw, ident)
    if isinstance(model, CallableModel):
        import cloudpickle

        try:
            digest = hashlib.sha256(cloudpickle.dumps(model.fn)).hexdigest()
        except Exception as exc:  # cloudpickle raises many types for unpicklable objects
            raise ValueError(f"the model's function {model.fn!r} cannot be pickled, so it "
                             f"can neither be identified nor sent to workers ({exc})") from exc
        ident = {"kind": "callable", "type": type(model.fn).__qualname__, "sha256": digest,
                 "task": model.task}
        return _ShippedModel("callable", model, {}, ident)
    raise TypeError(f"cannot run a {type(model).__name__} at dataset scale; pass a torch "
                    "module, a scikit-learn estimator, a plain callable or a calix Model")


def resolve_device(device: Any) -> Any:
    """``device`` as a ``torch.device``: ``"auto"`` is ``cuda`` when this process sees a GPU,
    else ``cpu``.

    Raises
    ------
    ValueError
        An unknown device, or ``cuda`` where no GPU is visible.
    """
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = _parse_device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asks for a GPU, but torch sees none on "
                         f"{socket.gethostname()}; use device='auto' or 'cpu'")
    return dev


def _parse_device(device: Any) -> Any:
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:<i>', got {device!r}"
                         ) from exc
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:<i>', got {device!r}")
    return dev


def _build_model(shipped: _ShippedModel, device: Any) -> Any:
    """The calix Model of ``shipped`` on ``device`` ("auto": this process's GPU if any); the
    shipped object itself is never moved or changed."""
    import torch

    from calix.models import wrap

    if shipped.kind == "sklearn":
        return wrap(shipped.obj, **shipped.wrap_kwargs)
    if shipped.kind == "callable":
        model = copy.copy(shipped.obj)
        model.reset_queries()
        return model
    dev = resolve_device(device)
    if shipped.kind == "torchscript":
        module = torch.jit.load(io.BytesIO(shipped.obj), map_location=dev)
    else:
        module = copy.deepcopy(shipped.obj)
    return wrap(module.to(dev), device=dev, **shipped.wrap_kwargs)


_WORKER = threading.local()


def _worker_model(shipped: _ShippedModel, device: Any) -> Any:
    """The model built from ``shipped``, once per thread (explainers and uncertainty samplers
    change a model's state while they run, so threads do not share one)."""
    key = (json.dumps(shipped.identity, sort_keys=True), str(device))
    cached = getattr(_WORKER, "model", None)
    if cached is None or cached[0] != key:
        _WORKER.model = None  # free the previous run's model (and GPU memory) first
        _WORKER.model = (key, _build_model(shipped, device))
    return _WORKER.model[1]


@dataclass
class _Job:
    """Everything every chunk of a user's run needs: sent to each worker once."""

    model: _ShippedModel
    background: np.ndarray | None
    spec: dict[str, Any]


def _chunks(n: int, chunk_size: int) -> list[tuple[int, int]]:
    return [(s, min(s + chunk_size, n)) for s in range(0, n, chunk_size)]


def _chunk_path(out: Path, start: int, stop: int) -> Path:
    return out / "chunks" / f"chunk_{start:07d}_{stop:07d}.npz"


def _write_chunk(out: Path, start: int, stop: int, arrays: dict[str, np.ndarray]) -> None:
    atomic_write(_chunk_path(out, start, stop), lambda f: np.savez(f, **arrays))


def _chunk_problem(path: Path, start: int, stop: int, with_std: bool) -> str | None:
    """Why the chunk file ``path`` is not a finished chunk ``start:stop``; None if it is."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as exc:  # numpy and zipfile raise many types for a damaged file
        return f"unreadable ({type(exc).__name__}: {exc})"
    need = ["indices", "values", "target"] + (["std"] if with_std else [])
    missing = [k for k in need if k not in arrays]
    if missing:
        return f"missing the arrays {missing}"
    for k in need:
        rows = len(arrays[k]) if arrays[k].ndim else 0
        if rows != stop - start:
            return f"{k!r} has {rows} rows instead of {stop - start}"
    if not np.array_equal(arrays["indices"], np.arange(start, stop)):
        return f"its indices are not {start}..{stop - 1}"
    if with_std and arrays["std"].shape != arrays["values"].shape:
        return f"'std' has shape {arrays['std'].shape}, 'values' {arrays['values'].shape}"
    return None


def _finished(out: Path, start: int, stop: int, with_std: bool) -> bool:
    """Whether chunk ``start:stop`` is on disk and sound; a damaged file is removed (with a
    warning) so that it is recomputed."""
    path = _chunk_path(out, start, stop)
    if not path.exists():
        return False
    problem = _chunk_problem(path, start, stop, with_std)
    if problem is None:
        return True
    warnings.warn(f"chunk file {path} is damaged ({problem}); recomputing it",
                  RuntimeWarning, stacklevel=3)
    path.unlink()
    return False


def _manifest(spec: dict[str, Any], chunk_size: int, n: int) -> dict[str, Any]:
    """The manifest as it reads back from disk (tuples become lists)."""
    try:
        return json.loads(json.dumps({**spec, "chunk_size": chunk_size, "n": n}))
    except TypeError as exc:
        raise ValueError(f"method_kwargs must be JSON values (numbers, strings, lists): {exc}"
                         ) from exc


def _check_manifest(out: Path, manifest: dict[str, Any]) -> None:
    path = out / "manifest.json"
    fix = f"delete the folder {out} or pass another --out"
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
            raise ValueError(f"{path} is not a readable manifest ({exc}); {fix}") from exc
        if not isinstance(old, dict):
            raise ValueError(f"{path} is not a readable manifest (not a JSON object); {fix}")
        if old != manifest:
            keys = sorted(set(old) | set(manifest), key=str)
            diff = "; ".join(f"{k}: the folder's {old.get(k)!r}, this run's {manifest.get(k)!r}"
                             for k in keys if old.get(k) != manifest.get(k))
            raise ValueError(
                f"{out} holds a run with another configuration ({diff}); use another --out "
                f"folder or delete it")
    else:
        text = json.dumps(manifest, indent=1).encode()
        atomic_write(path, lambda f: f.write(text))


_LOCK_FILE = ".lock"


@contextmanager
def _exclusive(out: Path) -> Iterator[None]:
    """Hold an exclusive lock on the run folder ``out``; refuse at once if another run holds
    it. The lock is released when the block ends or the process dies."""
    ensure_writable_dir(out, what="run folder")  # a ValueError naming out and the reason
    lock = out / _LOCK_FILE
    f = open(lock, "a+b")  # held open for the whole block: closing it releases the lock
    try:
        if not _try_lock(f):
            f.seek(0)
            holder = f.read(200).decode(errors="replace").strip()
            by = f" (process {holder})" if holder else ""
            raise ValueError(
                f"{out} is in use by another explain-dataset run{by}, which holds {lock}; "
                f"wait for it to finish, or pass another --out")
        if os.name == "posix":  # name the holder for a refused run (flock locks no bytes)
            f.seek(0)
            f.truncate()
            f.write(f"{os.getpid()} on {socket.gethostname()}\n".encode())
            f.flush()
        yield
    finally:
        f.close()  # releases the lock


def _try_lock(f: Any) -> bool:
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            f.seek(0)  # every run locks the same byte
            msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as exc:  # a filesystem without locks (some network mounts)
        warnings.warn(f"cannot lock {f.name} ({exc.strerror or exc}); make sure no other "
                      f"explain-dataset run uses this folder", RuntimeWarning, stacklevel=4)
    return True


def _remove_partial(out: Path) -> None:
    """Remove temporary chunk files (the caller holds the folder's lock, so they belong to
    killed runs)."""
    for f in [*(out / "chunks").glob("*.tmp"), *(out / "chunks").glob("*.tmp.npz")]:
        try:
            f.unlink()
        except FileNotFoundError:
            pass


def explain_dataset(
    data: Any,
    model: Any,
    method: str,
    *,
    out: str | Path,
    background: Any = None,
    device: str = "auto",
    uncertainty: str | None = None,
    n_samples: int = 30,
    executor: str = "local",
    scheduler: Any = None,
    n_workers: int = 2,
    chunk_size: int = 64,
    seed: int = 0,
    method_kwargs: dict[str, Any] | None = None,
    progress: bool = False,
) -> DatasetExplanation:
    """Explain every input of ``data`` with ``model`` and explainer ``method``, in chunks.

    Parameters
    ----------
    data : one of
        - a shipped dataset name (``calix.data.DATASETS``): its test split; with a zoo model
          name, workers load the dataset themselves (a remote cluster needs calix installed,
          not the caller's files);
        - arrays of shape (n, *input_shape), a tensor, or a pandas DataFrame (its columns in
          the order of a scikit-learn model's ``feature_names_in_`` when it has them);
        - a calix ``Dataset``: its test split (for tables, its training split is the default
          ``background``);
        - a CSV file (a path ending in ``.csv``, or :class:`CsvFile` for options) or an image
          folder (a folder path, or :class:`ImageFolder`), read lazily by each chunk.
    model : a zoo model name (``"cnn"``, ``"mlp"``; trained and cached with ``seed`` on a
        shipped dataset name or a ``Dataset``), a torch ``nn.Module``, a scikit-learn
        estimator, a calix :class:`~calix.models.Model` (``calix.wrap(...)``, e.g. for
        ``task="regression"``), or the path of a saved model that
        :func:`calix.model_io.load_model` reads without options (TorchScript, a skops file;
        call ``load_model`` yourself for a state_dict or a trusted joblib file).
    method : explainer name (``calix.explain.METHODS``).
    out : run folder: ``manifest.json``, ``chunks/*.npz`` and the lock file ``.lock``.
        Rerunning with the same configuration skips finished chunks (each one checked; a
        damaged one is recomputed with a warning); another configuration -- including
        another model or other data, told apart by their SHA-256 -- is refused, and so is a
        second run while one is using the folder.
    background : training or reference inputs (array-like of shape (n_bg, *input_shape), a
        DataFrame, a Dataset's ``X_train``) given to explainers that take one (removed
        features take its mean) unless ``method_kwargs`` name a fill. Tables explained
        without one get a :class:`~calix.exceptions.DefaultFillWarning`.
    device : where a user's torch model runs: ``"auto"`` (a GPU where the chunk runs when
        torch sees one there, else the CPU), ``"cpu"`` or ``"cuda"``. A zoo model named with
        a shipped dataset name runs on the CPU, as before; scikit-learn models always do.
        Results of a chunk on a GPU equal those on a CPU up to float rounding only.
    uncertainty : None, ``"mc_dropout"`` or ``"mc_dropconnect"``: explain under ``n_samples``
        stochastic passes and store the mean map as ``values`` and the std map as ``std``.
    executor : ``"local"`` or ``"dask"``.
    scheduler : a Dask scheduler address or a ``distributed.Client`` (left open); None starts
        a ``LocalCluster`` of ``n_workers`` single-threaded worker processes.
    chunk_size : inputs per task (results do not depend on where a chunk runs, but
        stochastic explainers draw per chunk, so keep it fixed across reruns).
    method_kwargs : extra keyword arguments of the explainer.

    Returns
    -------
    DatasetExplanation
        ``indices`` are positions in ``data`` (the test split, the CSV's data rows, or
        :attr:`ImageFolder.files`).

    Raises
    ------
    ValueError
        A bad argument, a model that does not take the data, unreadable data (before
        anything is written), ``out`` in use by another run, or ``out`` holding another
        configuration or an unreadable ``manifest.json``.
    """
    from calix import data as data_mod
    from calix import zoo
    from calix.explain import METHODS

    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {sorted(METHODS)}")
    if uncertainty is not None and uncertainty not in UNCERTAINTY:
        raise ValueError(f"uncertainty must be None or one of {UNCERTAINTY}, got {uncertainty!r}")
    if executor not in ("local", "dask"):
        raise ValueError(f"executor must be 'local' or 'dask', got {executor!r}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if scheduler is not None and executor != "dask":
        raise ValueError("a scheduler address needs executor='dask'")
    if n_workers < 1:
        raise ValueError(f"n_workers must be >= 1, got {n_workers}")
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    if executor == "local":
        resolve_device(device)  # an unknown device, or a GPU this process lacks
    elif device != "auto":
        _parse_device(device)  # whether the workers have a GPU is known only there
    zoo_name = isinstance(model, str) and model in zoo.ZOO
    if zoo_name and isinstance(data, str | Path):
        if background is not None:
            raise ValueError("background applies to a user's model; with a zoo model name "
                             "the explainer's defaults are used")
        return _explain_zoo(str(data), model, method, out=out, uncertainty=uncertainty,
                            n_samples=n_samples, executor=executor, scheduler=scheduler,
                            n_workers=n_workers, chunk_size=chunk_size, seed=seed,
                            method_kwargs=method_kwargs, progress=progress)
    if zoo_name:
        if not isinstance(data, data_mod.Dataset):
            raise ValueError(f"the zoo model {model!r} is trained on the data it explains: "
                             "give a shipped dataset name or a calix Dataset, or pass your own "
                             f"trained model for {type(data).__name__} data")
        model = zoo.train(model, data, seed=seed, progress=progress).wrap()
    elif isinstance(model, str | Path):
        from calix.model_io import load_model

        if not Path(model).exists():
            raise ValueError(f"model {str(model)!r} is neither a zoo model "
                             f"({sorted(zoo.ZOO)}) nor an existing model file")
        model = load_model(model)
    from calix.models import Model, wrap

    if not isinstance(model, Model):
        model = wrap(model)  # a TypeError names an object of no supported kind
    shipped = _ship(model)
    names = getattr(model, "feature_names_in_", None)  # a scikit-learn model's columns
    source, default_bg = _source(data, names, seed)
    if source.n == 0:
        raise ValueError("data holds no inputs")
    if background is None:
        background = default_bg
    if background is not None:
        bg = _as_rows(background, names, "background")
        bg_id: dict[str, Any] | None = {"shape": list(bg.shape), "sha256": _sha256_array(bg)}
    else:
        bg, bg_id = None, None
    spec = {"data": source.identity(), "model": shipped.identity, "method": method,
            "uncertainty": uncertainty, "n_samples": n_samples, "seed": seed,
            "method_kwargs": dict(method_kwargs or {}), "background": bg_id, "device": device}
    job = _Job(shipped, bg, spec)
    manifest = _manifest(spec, chunk_size, source.n)
    # checked before the folder is claimed: the model takes the data, and the explainer and
    # the sampler can be built (bad method_kwargs or n_samples)
    # (for Dask on the CPU: the caller need not have the workers' GPU)
    local = _build_model(shipped, device if executor == "local" else "cpu")
    first = source.rows(0, 1).read()
    if bg is not None and bg.shape[1:] != first.shape[1:]:
        raise ValueError(f"background inputs have shape {bg.shape[1:]}, the data's "
                         f"{first.shape[1:]}")
    try:
        local.forward(first, grad=False)
    except (ValueError, RuntimeError, TypeError) as exc:
        raise ValueError(f"the model does not take the data's inputs of shape "
                         f"{first.shape[1:]}: {str(exc).splitlines()[0][:300]}") from exc
    _explainer(spec, local, bg)
    if executor == "dask" and first.ndim == 2 and bg is None and not (
            {"fill", "perturbation"} & set(spec["method_kwargs"])):
        from calix.exceptions import DefaultFillWarning
        from calix.explain.perturbation import FeatureExplainer

        if issubclass(METHODS[method], FeatureExplainer):  # the workers' warning stays there
            warnings.warn("no background given: removed columns are set to 0 on the workers; "
                          "pass background=X_train (mean fill) or method_kwargs with a fill",
                          DefaultFillWarning, stacklevel=2)

    def run(todo: list[tuple[int, int]]) -> Any:
        if executor == "local":
            return _run_local_rows(job, source, todo, local)
        return _run_dask_rows(job, source, todo, scheduler, n_workers)

    return _run(out, manifest, source.n, chunk_size, uncertainty is not None, run, progress,
                f"explain {spec['data']['kind']} ({executor})")


def _explain_zoo(data: str, model: str, method: str, *, out: str | Path,
                 uncertainty: str | None, n_samples: int, executor: str, scheduler: Any,
                 n_workers: int, chunk_size: int, seed: int,
                 method_kwargs: dict[str, Any] | None, progress: bool) -> DatasetExplanation:
    """A shipped dataset (or a file calix reads as a Dataset) and a zoo model, by name."""
    from calix import data as data_mod
    from calix import zoo

    ds = data_mod.load(data, seed=seed)  # fails early on an unknown dataset
    # the model is trained (and cached) once here rather than by every worker at once; a model
    # that does not fit the data fails before anything is written
    trained = zoo.train(model, ds, seed=seed, progress=progress)
    spec = _spec(data, model, method, uncertainty, n_samples, seed, dict(method_kwargs or {}))
    manifest = _manifest(spec, chunk_size, len(ds.X_test))
    # bad method_kwargs or n_samples fail before the folder is claimed
    _explainer(spec, trained.wrap())

    def run(todo: list[tuple[int, int]]) -> Any:
        return (_run_local(spec, todo) if executor == "local"
                else _run_dask(spec, todo, scheduler, n_workers))

    return _run(out, manifest, len(ds.X_test), chunk_size, uncertainty is not None, run,
                progress, f"explain {data} ({executor})")


def _run(out: str | Path, manifest: dict[str, Any], n: int, chunk_size: int, with_std: bool,
         run: Any, progress: bool, description: str) -> DatasetExplanation:
    """Claim the folder, check the manifest, compute the missing chunks, read them back."""
    out = Path(out)
    with _exclusive(out):
        _check_manifest(out, manifest)
        _remove_partial(out)
        chunks = _chunks(n, chunk_size)
        todo = [c for c in chunks if not _finished(out, *c, with_std)]
        results = run(todo)
        with closing(results):  # an error or Ctrl-C here still shuts a Dask cluster down
            for (start, stop), arrays in progress_bar(
                    results, total=len(todo), enabled=progress, description=description):
                _write_chunk(out, start, stop, arrays)
        res = load_chunks(out)
    res.computed = todo
    return res


def _run_local(spec: dict[str, Any], todo: list[tuple[int, int]]
               ) -> Iterator[tuple[tuple[int, int], dict[str, np.ndarray]]]:
    for start, stop in todo:
        yield (start, stop), explain_chunk(spec, start, stop)


def _run_local_rows(job: _Job, source: Any, todo: list[tuple[int, int]], model: Any
                    ) -> Iterator[tuple[tuple[int, int], dict[str, np.ndarray]]]:
    for start, stop in todo:
        x = source.rows(start, stop).read()
        yield (start, stop), _explain_array(job.spec, model, x, job.background, start, stop)


@contextmanager
def _dask_client(scheduler: Any, n_workers: int) -> Iterator[Any]:
    """A client of ``scheduler`` (an address, or a Client left open), or of a new
    LocalCluster of ``n_workers`` single-threaded processes shut down afterwards."""
    from distributed import Client

    if scheduler is not None and not isinstance(scheduler, str):
        if not isinstance(scheduler, Client):
            raise ValueError(f"scheduler must be an address or a distributed.Client, got "
                             f"{type(scheduler).__name__}")
        yield scheduler
        return
    cluster = client = None
    try:
        if scheduler is None:
            cluster = _local_cluster(n_workers)
            client = Client(cluster)
        else:
            client = Client(scheduler)
        yield client
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()


def _local_cluster(n_workers: int) -> Any:
    """A LocalCluster of ``n_workers`` single-threaded worker processes whose allocator keeps
    glibc's adaptive mmap threshold.

    Dask's nanny sets ``MALLOC_TRIM_THRESHOLD_`` in every worker, which turns the adaptive
    threshold off: every large tensor (a batch of perturbed images) is then mapped and
    unmapped afresh, and a CNN's forward passes ran 1.6-1.8x slower in the workers than in
    this process (batches of 1024 64x64 images, one thread, 3 runs each in fresh processes).
    Only the variable's default is dropped: one set in this process's environment (by the
    user, or by a Dask nanny started here before) is inherited as usual.
    """
    import dask
    from distributed import LocalCluster

    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
        return LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                            dashboard_address=None)


def _run_dask(spec: dict[str, Any], todo: list[tuple[int, int]], scheduler: Any,
              n_workers: int) -> Iterator[tuple[tuple[int, int], dict[str, np.ndarray]]]:
    if not todo:
        return
    from distributed import as_completed

    with _dask_client(scheduler, n_workers) as client:
        futures = {client.submit(explain_chunk, spec, s, e, pure=False): (s, e)
                   for s, e in todo}
        try:
            for fut in as_completed(futures):
                yield futures[fut], fut.result()
        finally:
            client.cancel(list(futures))


def _run_dask_rows(job: _Job, source: Any, todo: list[tuple[int, int]], scheduler: Any,
                   n_workers: int) -> Iterator[tuple[tuple[int, int], dict[str, np.ndarray]]]:
    if not todo:
        return
    from distributed import as_completed

    with _dask_client(scheduler, n_workers) as client:
        # The model (and background) travel to every worker once, as a worker plugin: the
        # scheduler keeps the pickled bytes and hands them to each worker when it registers,
        # workers joining later included. Scattered data would not do: Dask's active memory
        # manager drops replicas that no task waits on yet, and a worker that later needs the
        # job fetches and unpickles it again.
        from calix._dask_plugin import JobPlugin

        name = f"calix-job-{uuid.uuid4().hex}"
        futures = {}
        try:
            # inside the try: the scheduler stores the plugin before the workers load it, so
            # a worker that cannot unpickle the job (calix or a module missing there) must not
            # leave it behind for every worker that joins later
            try:
                client.register_plugin(JobPlugin(job), name=name)
            except Exception as exc:  # Dask re-raises a worker's failure as a bare Exception
                raise RuntimeError(
                    f"the Dask workers could not load this run's model and background "
                    f"({exc}); install calix and every module the model needs, at the same "
                    f"versions, on each worker") from exc
            futures = {client.submit(_explain_rows_on_worker, name, source.rows(s, e), s, e,
                                     pure=False): (s, e) for s, e in todo}
            for fut in as_completed(futures):
                yield futures[fut], fut.result()
        finally:
            client.cancel(list(futures))
            with suppress(Exception):  # a cluster already gone needs no clean-up
                client.unregister_worker_plugin(name)


def _explain_rows_on_worker(name: str, rows: Any, start: int, stop: int
                            ) -> dict[str, np.ndarray]:
    from distributed import get_worker

    plugin = get_worker().plugins.get(name)
    if plugin is None or plugin.job is None:
        raise RuntimeError(f"this Dask worker has no job {name!r}: the run that sent it has "
                           f"ended; rerun explain_dataset to resume")
    return explain_rows(plugin.job, rows, start, stop)


def load_chunks(out: str | Path) -> DatasetExplanation:
    """Assemble the finished chunks in ``out`` into one :class:`DatasetExplanation`.

    Raises
    ------
    FileNotFoundError
        ``out`` holds no finished chunk.
    ValueError
        A chunk file cannot be read (a rerun of the same ``explain_dataset`` call recomputes
        it).
    """
    out = Path(out)
    files = sorted((out / "chunks").glob("chunk_*_*.npz"))
    files = [f for f in files if not f.name.endswith(".tmp.npz")]
    if not files:
        raise FileNotFoundError(f"no finished chunks in {out / 'chunks'}")
    parts = []
    for f in files:
        try:
            with np.load(f, allow_pickle=False) as z:
                parts.append({k: z[k] for k in z.files})
        except Exception as exc:  # numpy and zipfile raise many types for a damaged file
            raise ValueError(f"chunk file {f} is unreadable ({type(exc).__name__}: {exc}); "
                             f"rerun the same explain-dataset command to recompute it") from exc
    keys = set(parts[0])
    for f, p in zip(files, parts, strict=True):
        if set(p) != keys or not {"values", "target", "indices"} <= keys:
            raise ValueError(f"chunk file {f} holds the arrays {sorted(p)}, unlike "
                             f"{files[0].name} ({sorted(keys)}); rerun the same explain-dataset "
                             f"command to recompute it")
    cat = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return DatasetExplanation(values=cat["values"], std=cat.get("std"), target=cat["target"],
                              indices=cat["indices"], out=out)
