"""Dataset-scale explanations: chunked, resumable, and equal on the local and Dask executors."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from click.testing import CliRunner

from calix.cli import main
from calix.parallel import explain_dataset, load_chunks


@pytest.fixture
def cache(tmp_path, monkeypatch):
    # workers of a LocalCluster are child processes: they inherit this environment
    monkeypatch.setenv("CALIX_CACHE", str(tmp_path / "cache"))
    return tmp_path


def test_local_matches_one_batch_and_resumes(cache):
    from calix import data, zoo
    from calix.explain import Saliency

    out = cache / "sal"
    res = explain_dataset("digits", "cnn", "saliency", out=out, chunk_size=100)
    ds = data.load("digits")
    assert res.values.shape == (len(ds.X_test), 1, 8, 8)
    assert np.array_equal(res.indices, np.arange(len(ds.X_test)))
    assert len(res.computed) == 4 and len(list((out / "chunks").glob("*.npz"))) == 4
    # the chunks equal one explanation of the whole split (saliency is deterministic)
    whole = Saliency(zoo.train("cnn", ds).wrap()).explain(ds.X_test)
    np.testing.assert_allclose(res.values, whole.values, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(res.target, whole.target)
    # a rerun reads everything back; a lost chunk is the only one recomputed
    assert explain_dataset("digits", "cnn", "saliency", out=out, chunk_size=100).computed == []
    lost = sorted((out / "chunks").glob("*.npz"))[2]
    lost.unlink()
    again = explain_dataset("digits", "cnn", "saliency", out=out, chunk_size=100)
    assert again.computed == [(200, 300)]
    np.testing.assert_array_equal(again.values, res.values)


def test_dask_local_cluster_equals_local_executor(cache):
    kw = {"uncertainty": "mc_dropout", "n_samples": 4, "chunk_size": 40, "seed": 1,
          "method_kwargs": {"n_samples": 200}}
    local = explain_dataset("breast_cancer", "mlp", "lime", out=cache / "local", **kw)
    dask = explain_dataset("breast_cancer", "mlp", "lime", out=cache / "dask",
                           executor="dask", n_workers=2, **kw)
    assert len(dask.computed) == 3 and dask.std is not None
    np.testing.assert_array_equal(dask.indices, local.indices)
    np.testing.assert_array_equal(dask.target, local.target)
    # same chunks, same seeds: bit-for-bit up to float summation order across processes
    np.testing.assert_allclose(dask.values, local.values, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(dask.std, local.std, rtol=1e-6, atol=1e-9)
    assert np.abs(local.std).max() > 0


def test_bad_input(cache):
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        explain_dataset("digits", "cnn", "nope", out=cache / "x")
    with pytest.raises(ValueError, match="executor must be"):
        explain_dataset("digits", "cnn", "saliency", out=cache / "x", executor="spark")
    with pytest.raises(ValueError, match="uncertainty must be"):
        explain_dataset("digits", "cnn", "saliency", out=cache / "x", uncertainty="bayes")
    with pytest.raises(ValueError, match="chunk_size must be >= 1"):
        explain_dataset("digits", "cnn", "saliency", out=cache / "x", chunk_size=0)
    with pytest.raises(ValueError, match="needs executor='dask'"):
        explain_dataset("digits", "cnn", "saliency", out=cache / "x", scheduler="tcp://h:1")
    with pytest.raises(ValueError, match="n_workers must be >= 1"):
        explain_dataset("digits", "cnn", "saliency", out=cache / "x", executor="dask",
                        n_workers=0)
    # a model that does not fit the data fails before the run folder is claimed
    with pytest.raises(ValueError, match="needs image data"):
        explain_dataset("iris", "cnn", "saliency", out=cache / "iris-cnn")
    assert not (cache / "iris-cnn" / "manifest.json").exists()
    with pytest.raises(ValueError, match="JSON values"):
        explain_dataset("iris", "mlp", "lime", out=cache / "bad-kw",
                        method_kwargs={"n_samples": object()})
    with pytest.raises(FileNotFoundError, match="no finished chunks"):
        load_chunks(cache / "nothing")
    out = cache / "iris"
    explain_dataset("iris", "mlp", "saliency", out=out, chunk_size=50)
    with pytest.raises(ValueError, match="another configuration"):
        explain_dataset("iris", "mlp", "saliency", out=out, chunk_size=10)
    # tuples in method_kwargs compare equal to the JSON lists they are saved as
    kw = {"method_kwargs": {"n_samples": 50, "kernel_width": 0.75}}
    explain_dataset("iris", "mlp", "lime", out=cache / "kw", chunk_size=50, **kw)
    assert explain_dataset("iris", "mlp", "lime", out=cache / "kw", chunk_size=50,
                           **kw).computed == []


def test_cli_explain_dataset(cache):
    out = cache / "cli"
    args = ["explain-dataset", "--data", "iris", "--method", "occlusion", "--chunk-size", "16",
            "--out", str(out)]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert "30 inputs explained (2 chunks computed now" in r.output
    assert json.loads((out / "manifest.json").read_text())["method"] == "occlusion"
    r = CliRunner().invoke(main, args)
    assert "(0 chunks computed now" in r.output
    r = CliRunner().invoke(main, [*args[:-2], "--out", str(cache / "y"), "--executor",
                                  "local", "--scheduler", "tcp://h:1"])
    # the message names the executor a scheduler needs (as the CLI or the library words it)
    assert r.exit_code != 0 and re.search(r"needs (--executor |executor=')dask", r.output)
