"""Dataset-scale explanations: every test input, in chunks, locally or on a Dask cluster.

The work is split into chunks of ``chunk_size`` test inputs. Each chunk is one task: load the
dataset and the (cached) zoo model, explain the chunk -- optionally under a stochastic sampler
for uncertainty -- and return the arrays. The caller's process writes every finished chunk
atomically as ``DIR/chunks/chunk_<start>_<stop>.npz`` (temporary file + ``os.replace``), so an
interrupted run keeps all finished chunks and a rerun computes only the missing ones. Workers
never write files themselves, so a remote cluster needs no shared filesystem (it needs calix
installed and the model cache reachable or trainable).

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
from collections.abc import Iterator
from contextlib import closing
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
    from calix.explain import METHODS
    from calix.uncertainty import MCDropConnect, MCDropout, explanation_distribution

    ds = data_mod.load(spec["data"], seed=spec["seed"])
    trained = zoo.train(spec["model"], ds, seed=spec["seed"])
    model = trained.wrap()
    cls = METHODS[spec["method"]]
    kwargs = dict(spec["method_kwargs"])
    if "seed" in _init_params(cls) and "seed" not in kwargs:
        kwargs["seed"] = spec["seed"]
    x = ds.X_test[start:stop]
    out: dict[str, np.ndarray] = {"indices": np.arange(start, stop)}
    if spec["uncertainty"] is None:
        exp = cls(model, **kwargs).explain(x)
        out["values"] = np.asarray(exp.values)
    else:
        sampler_cls = MCDropout if spec["uncertainty"] == "mc_dropout" else MCDropConnect
        sampler = sampler_cls(model, n_samples=spec["n_samples"], seed=spec["seed"])
        exp = explanation_distribution(lambda m: cls(m, **kwargs), sampler, x)
        out["values"] = np.asarray(exp.values)
        out["std"] = np.asarray(exp.std)
    out["target"] = np.asarray(exp.target)
    return out


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
    path = _chunk_path(out, start, stop)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def _check_manifest(out: Path, manifest: dict[str, Any]) -> None:
    path = out / "manifest.json"
    try:
        manifest = json.loads(json.dumps(manifest))  # compare as it reads back from disk
    except TypeError as exc:
        raise ValueError(f"method_kwargs must be JSON values (numbers, strings, lists): {exc}"
                         ) from exc
    if path.is_file():
        old = json.loads(path.read_text())
        if old != manifest:
            raise ValueError(
                f"{out} holds a run with another configuration ({old}); use another --out "
                f"folder or delete it")
    else:
        out.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name("manifest.json.tmp")
        tmp.write_text(json.dumps(manifest, indent=1))
        os.replace(tmp, path)


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
    out : run folder: ``manifest.json`` and ``chunks/*.npz``. Rerunning with the same
        configuration skips finished chunks; another configuration is refused.
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
    from calix import zoo

    ds = data_mod.load(data, seed=seed)  # fails early on an unknown dataset
    # the model is trained (and cached) once here rather than by every worker at once; a model
    # that does not fit the data fails before anything is written
    zoo.train(model, ds, seed=seed, progress=progress)
    spec = _spec(data, model, method, uncertainty, n_samples, seed, dict(method_kwargs or {}))
    out = Path(out)
    _check_manifest(out, {**spec, "chunk_size": chunk_size, "n": len(ds.X_test)})
    chunks = _chunks(len(ds.X_test), chunk_size)
    todo = [c for c in chunks if not _chunk_path(out, *c).is_file()]
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
    """Assemble the finished chunks in ``out`` into one :class:`DatasetExplanation`."""
    out = Path(out)
    files = sorted((out / "chunks").glob("chunk_*_*.npz"))
    files = [f for f in files if not f.name.endswith(".tmp.npz")]
    if not files:
        raise FileNotFoundError(f"no finished chunks in {out / 'chunks'}")
    parts = [dict(np.load(f, allow_pickle=False)) for f in files]
    cat = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return DatasetExplanation(values=cat["values"], std=cat.get("std"), target=cat["target"],
                              indices=cat["indices"], out=out)
