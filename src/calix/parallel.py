"""Dataset-scale explanations: every test input, in chunks, locally or on a Dask cluster.

The work is split into chunks of ``chunk_size`` test inputs. Each chunk is one task: load the
dataset and the (cached) zoo model, explain the chunk -- optionally under a stochastic sampler
for uncertainty -- and return the arrays. The caller's process writes every finished chunk
atomically as ``DIR/chunks/chunk_<start>_<stop>.npz`` (a per-process temporary file, fsynced,
then ``os.replace``), so an interrupted run keeps all finished chunks and a rerun computes only
the missing ones. Workers never write files themselves, so a remote cluster needs no shared
filesystem (it needs calix installed and the model cache reachable or trainable).

The run folder's state:

- ``DIR/.lock``: a run holds an exclusive ``flock`` on it from before it reads or writes the
  manifest until it returns; a second run on the same folder is refused at once with a
  ``ValueError`` naming the folder and the holder (it does not wait: a run can take hours).
  The lock dies with its process, so a killed run never leaves the folder locked.
- ``DIR/manifest.json``: the run's configuration, written only after every argument has been
  checked (the explainer and the sampler are built once), so a rejected call claims nothing.
- ``DIR/chunks/``: on a rerun every existing chunk is checked (it loads, holds the expected
  arrays and rows); a damaged one is removed with a warning and recomputed, and temporary
  files of killed runs are removed.

Executors:

- ``"local"``: chunks one after another in this process;
- ``"dask"``: chunks as Dask tasks on the cluster at ``scheduler`` (``"tcp://host:8786"``), or
  on a new ``distributed.LocalCluster`` when no address is given.

Example
-------
>>> from calix.parallel import explain_dataset
>>> res = explain_dataset("digits", "cnn", "saliency", out="results/saliency",
...                       executor="local")                               # doctest: +SKIP
>>> res.values.shape                                                       # doctest: +SKIP
(360, 1, 8, 8)
"""

from __future__ import annotations

import json
import os
import socket
import warnings
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from calix._progress import progress_bar

__all__ = ["explain_dataset", "DatasetExplanation", "UNCERTAINTY", "explain_chunk",
           "load_chunks"]

#: uncertainty samplers available for dataset-scale runs (no extra training needed)
UNCERTAINTY = ("mc_dropout", "mc_dropconnect")


@dataclass
class DatasetExplanation:
    """Explanations of a whole test split, assembled from the chunk files.

    Attributes
    ----------
    values : ndarray (n, *input_shape or d) -- attributions (the mean map under uncertainty).
    std : ndarray or None -- std of the attributions over stochastic samples.
    target : ndarray (n,) -- explained class per input.
    indices : ndarray (n,) -- test-split indices, in order.
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
    """Explain test inputs ``start:stop`` as ``spec`` says; returns the chunk's arrays.

    A plain top-level function of plain arguments, so it can be shipped to Dask workers.
    """
    from calix import data as data_mod
    from calix import zoo
    from calix.uncertainty import explanation_distribution

    ds = data_mod.load(spec["data"], seed=spec["seed"])
    trained = zoo.train(spec["model"], ds, seed=spec["seed"])
    make, sampler = _explainer(spec, trained)
    x = ds.X_test[start:stop]
    out: dict[str, np.ndarray] = {"indices": np.arange(start, stop)}
    if sampler is None:
        exp = make(trained.wrap()).explain(x)
        out["values"] = np.asarray(exp.values)
    else:
        exp = explanation_distribution(make, sampler, x)
        out["values"] = np.asarray(exp.values)
        out["std"] = np.asarray(exp.std)
    out["target"] = np.asarray(exp.target)
    return out


def _explainer(spec: dict[str, Any], trained: Any) -> tuple[Any, Any]:
    """``(make, sampler)``: ``make(model)`` builds the explainer; ``sampler`` is the
    uncertainty sampler or None. Building them checks ``method_kwargs`` and ``n_samples``."""
    from calix.explain import METHODS
    from calix.uncertainty import MCDropConnect, MCDropout

    cls = METHODS[spec["method"]]
    kwargs = dict(spec["method_kwargs"])
    if "seed" in _init_params(cls) and "seed" not in kwargs:
        kwargs["seed"] = spec["seed"]

    def make(model: Any) -> Any:
        return cls(model, **kwargs)

    model = trained.wrap()
    make(model)  # fails here on bad method_kwargs, before any chunk is claimed
    if spec["uncertainty"] is None:
        return make, None
    sampler_cls = MCDropout if spec["uncertainty"] == "mc_dropout" else MCDropConnect
    return make, sampler_cls(model, n_samples=spec["n_samples"], seed=spec["seed"])


def _init_params(cls: type) -> set[str]:
    import inspect

    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is not None:
            names |= set(inspect.signature(init).parameters)
    return names


def _chunks(n: int, chunk_size: int) -> list[tuple[int, int]]:
    return [(s, min(s + chunk_size, n)) for s in range(0, n, chunk_size)]


def _chunk_path(out: Path, start: int, stop: int) -> Path:
    return out / "chunks" / f"chunk_{start:07d}_{stop:07d}.npz"


def _write_chunk(out: Path, start: int, stop: int, arrays: dict[str, np.ndarray]) -> None:
    from calix.zoo import _atomic_write

    _atomic_write(_chunk_path(out, start, stop), lambda f: np.savez(f, **arrays))


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
    from calix.zoo import _atomic_write

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
            raise ValueError(
                f"{out} holds a run with another configuration ({old}); use another --out "
                f"folder or delete it")
    else:
        text = json.dumps(manifest, indent=1).encode()
        _atomic_write(path, lambda f: f.write(text))


_LOCK_FILE = ".lock"


@contextmanager
def _exclusive(out: Path) -> Iterator[None]:
    """Hold an exclusive lock on the run folder ``out``; refuse at once if another run holds
    it. The lock is released when the block ends or the process dies."""
    from calix._io import ensure_writable_dir

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
    data: str,
    model: str,
    method: str,
    *,
    out: str | Path,
    uncertainty: str | None = None,
    n_samples: int = 30,
    executor: str = "local",
    scheduler: str | None = None,
    n_workers: int = 2,
    chunk_size: int = 64,
    seed: int = 0,
    method_kwargs: dict[str, Any] | None = None,
    progress: bool = False,
) -> DatasetExplanation:
    """Explain every test input of ``data`` with zoo model ``model`` and explainer ``method``.

    Parameters
    ----------
    data : shipped dataset name (``calix.data.DATASETS``); workers load it themselves, so a
        remote cluster needs calix installed, not the caller's files.
    model : zoo model name (``"cnn"``, ``"mlp"``), trained (and cached) with ``seed``.
    method : explainer name (``calix.explain.METHODS``).
    out : run folder: ``manifest.json``, ``chunks/*.npz`` and the lock file ``.lock``.
        Rerunning with the same configuration skips finished chunks (each one checked; a
        damaged one is recomputed with a warning); another configuration is refused, and so
        is a second run while one is using the folder.
    uncertainty : None, ``"mc_dropout"`` or ``"mc_dropconnect"``: explain under ``n_samples``
        stochastic passes and store the mean map as ``values`` and the std map as ``std``.
    executor : ``"local"`` or ``"dask"``.
    scheduler : Dask scheduler address; None starts a ``LocalCluster`` of ``n_workers``.
    chunk_size : test inputs per task (results do not depend on where a chunk runs, but
        stochastic explainers draw per chunk, so keep it fixed across reruns).
    method_kwargs : extra keyword arguments of the explainer.

    Returns
    -------
    DatasetExplanation

    Raises
    ------
    ValueError
        A bad argument (before anything is written), ``out`` in use by another run, or
        ``out`` holding another configuration or an unreadable ``manifest.json``.
    """
    from calix import data as data_mod
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
    from calix import zoo

    ds = data_mod.load(data, seed=seed)  # fails early on an unknown dataset
    # the model is trained (and cached) once here rather than by every worker at once; a model
    # that does not fit the data fails before anything is written
    trained = zoo.train(model, ds, seed=seed, progress=progress)
    spec = _spec(data, model, method, uncertainty, n_samples, seed, dict(method_kwargs or {}))
    manifest = _manifest(spec, chunk_size, len(ds.X_test))
    _explainer(spec, trained)  # bad method_kwargs or n_samples fail before the folder is claimed
    out = Path(out)
    with _exclusive(out):
        _check_manifest(out, manifest)
        _remove_partial(out)
        chunks = _chunks(len(ds.X_test), chunk_size)
        with_std = uncertainty is not None
        todo = [c for c in chunks if not _finished(out, *c, with_std)]
        results = (_run_local(spec, todo) if executor == "local"
                   else _run_dask(spec, todo, scheduler, n_workers))
        with closing(results):  # an error or Ctrl-C here still shuts a Dask cluster down
            for (start, stop), arrays in progress_bar(
                    results, total=len(todo), enabled=progress,
                    description=f"explain {data} ({executor})"):
                _write_chunk(out, start, stop, arrays)
        res = load_chunks(out)
    res.computed = todo
    return res


def _run_local(spec: dict[str, Any], todo: list[tuple[int, int]]
               ) -> Iterator[tuple[tuple[int, int], dict[str, np.ndarray]]]:
    for start, stop in todo:
        yield (start, stop), explain_chunk(spec, start, stop)


def _run_dask(spec: dict[str, Any], todo: list[tuple[int, int]], scheduler: str | None,
              n_workers: int) -> Iterator[tuple[tuple[int, int], dict[str, np.ndarray]]]:
    if not todo:
        return
    from distributed import Client, LocalCluster, as_completed

    cluster = client = None
    try:
        if scheduler is None:
            cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                                   dashboard_address=None)
            client = Client(cluster)
        else:
            client = Client(scheduler)
        futures = {client.submit(explain_chunk, spec, s, e, pure=False): (s, e)
                   for s, e in todo}
        for fut in as_completed(futures):
            yield futures[fut], fut.result()
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()


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
