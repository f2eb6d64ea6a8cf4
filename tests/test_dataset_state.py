"""explain_dataset's on-disk state: arguments checked before the folder is claimed, one run per
folder, damaged chunks and manifests detected, fsynced per-process temporary files, and runs
killed midway resume to the bitwise result of an uninterrupted run."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from calix.cli import main
from calix.parallel import explain_dataset, load_chunks

# a small stochastic run: 30 iris test inputs in 3 chunks, LIME under MC-Dropout
KW = {"data": "iris", "model": "mlp", "method": "lime", "uncertainty": "mc_dropout",
      "n_samples": 2, "chunk_size": 10, "seed": 0, "method_kwargs": {"n_samples": 40}}

# explain_dataset in another process, each chunk slowed down so that the test can act midway
SCRIPT = """
import json, signal, sys, time
import torch
from calix import parallel
# Ctrl-C as in a terminal, even under a runner started in the background (which ignores SIGINT
# and passes that on)
signal.signal(signal.SIGINT, signal.default_int_handler)
out, delay, threads, kw = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
torch.set_num_threads(threads)
real = parallel.explain_chunk
def slow(spec, start, stop):
    arrays = real(spec, start, stop)
    time.sleep(delay)
    return arrays
parallel.explain_chunk = slow
parallel.explain_dataset(**json.loads(kw), out=out)
"""


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CALIX_CACHE", str(tmp_path / "cache"))
    return tmp_path


@pytest.fixture
def reference(cache):
    """An uninterrupted run (it also fills the model cache for the other processes)."""
    return explain_dataset(**KW, out=cache / "reference")


def _assert_same(a, b):
    for name in ("values", "std", "target", "indices"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def _start(cache, out, delay):
    script = cache / "slow_run.py"
    script.write_text(SCRIPT)
    cmd = [sys.executable, str(script), str(out), str(delay), str(torch.get_num_threads()),
           json.dumps(KW)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)


def _wait_for(proc, condition, timeout=120):
    deadline = time.time() + timeout
    while not condition() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert condition(), (proc.poll(), proc.stdout.read().decode()[-2000:]
                         if proc.poll() is not None else "timed out")


def test_bad_arguments_claim_nothing(cache):
    out = cache / "run"
    with pytest.raises(ValueError, match="n_samples must be >= 1, got 0"):
        explain_dataset(**{**KW, "n_samples": 0}, out=out)
    with pytest.raises(ValueError, match="n_samples must be >= 1, got 0"):
        explain_dataset(**{**KW, "uncertainty": "mc_dropconnect", "n_samples": 0}, out=out)
    with pytest.raises(TypeError, match="bogus"):
        explain_dataset(**{**KW, "method_kwargs": {"bogus": 1}}, out=out)
    assert not (out / "manifest.json").exists()
    # the corrected call is not refused as "another configuration"
    assert len(explain_dataset(**KW, out=out).computed) == 3


def test_cli_rerun_after_a_rejected_n_samples(cache):
    out = cache / "cli"
    args = ["explain-dataset", "--data", "iris", "--method", "saliency", "--uncertainty",
            "mc_dropout", "--chunk-size", "16", "--out", str(out)]
    r = CliRunner().invoke(main, [*args, "--n-samples", "0"])
    # rejected naming the option (by the library or already by the CLI's parser)
    assert r.exit_code != 0 and re.search(r"n.samples.*\b0\b", r.output), r.output
    assert not (out / "manifest.json").exists()
    r = CliRunner().invoke(main, [*args, "--n-samples", "3"])
    assert r.exit_code == 0, r.output
    assert "(2 chunks computed now" in r.output


def _empty(path):
    path.write_bytes(b"")


def _garbage(path):
    path.write_bytes(b"not a zip file at all")


def _flip_byte(path):
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))


def _short(path):
    arrays = dict(np.load(path))
    np.savez(path, **{k: v[:3] for k, v in arrays.items()})


def _no_std(path):
    arrays = dict(np.load(path))
    del arrays["std"]
    np.savez(path, **arrays)


def _wrong_indices(path):
    arrays = dict(np.load(path))
    arrays["indices"] = arrays["indices"] + 1
    np.savez(path, **arrays)


@pytest.mark.parametrize("damage", [_empty, _garbage, _flip_byte, _short, _no_std,
                                    _wrong_indices])
def test_damaged_chunk_is_recomputed(cache, reference, damage):
    out = cache / "run"
    explain_dataset(**KW, out=out)
    last = sorted((out / "chunks").glob("chunk_*.npz"))[-1]
    damage(last)
    with pytest.warns(RuntimeWarning, match=f"chunk file {last} is damaged"):
        res = explain_dataset(**KW, out=out)
    assert res.computed == [(20, 30)]
    _assert_same(res, reference)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        assert explain_dataset(**KW, out=out).computed == []


def test_cli_zero_byte_chunk_is_recomputed_not_aborted(cache):
    out = cache / "cli"
    args = ["explain-dataset", "--data", "iris", "--method", "occlusion", "--chunk-size", "16",
            "--out", str(out)]
    assert CliRunner().invoke(main, args).exit_code == 0
    sorted((out / "chunks").glob("chunk_*.npz"))[-1].write_bytes(b"")
    with pytest.warns(RuntimeWarning, match="is damaged"):
        r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert "Aborted" not in r.output and "(1 chunks computed now" in r.output


def test_load_chunks_names_an_unreadable_file(cache):
    out = cache / "run"
    explain_dataset(**KW, out=out)
    bad = sorted((out / "chunks").glob("chunk_*.npz"))[1]
    bad.write_bytes(b"")
    with pytest.raises(ValueError, match=f"chunk file {bad} is unreadable.*rerun"):
        load_chunks(out)


@pytest.mark.parametrize("text", ["{\"data\": \"iris\", ", "", "[1, 2]", "\xff\xfe"])
def test_corrupt_manifest_names_the_file_and_the_fix(cache, text):
    out = cache / "run"
    out.mkdir()
    (out / "manifest.json").write_bytes(text.encode("latin-1"))
    with pytest.raises(ValueError, match=f"{out / 'manifest.json'} is not a readable manifest"
                       ) as info:
        explain_dataset(**KW, out=out)
    assert "delete the folder" in str(info.value) and "--out" in str(info.value)


def test_temporary_files_are_per_process_fsynced_and_cleaned(cache, monkeypatch):
    out = cache / "run"
    chunks = out / "chunks"
    chunks.mkdir(parents=True)
    # left by killed runs: the old shared name and a per-process one
    old_style = chunks / "chunk_0000000_0000010.tmp.npz"
    killed = chunks / "chunk_0000000_0000010.npz~host~1~0a1b2c3d.tmp"
    for f in (old_style, killed):
        f.write_bytes(b"partial")
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", str(src), str(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    explain_dataset(**KW, out=out)
    monkeypatch.undo()
    assert not old_style.exists() and not killed.exists()
    assert sorted(f.name for f in chunks.iterdir()) == [
        "chunk_0000000_0000010.npz", "chunk_0000010_0000020.npz", "chunk_0000020_0000030.npz"]
    replaced = [i for i, e in enumerate(events) if e[0] == "replace" and str(out) in e[2]]
    assert len(replaced) == 4  # the manifest and three chunks
    for i in replaced:
        _, src, dst = events[i]
        # a name of this process; the file fsynced before the rename, its folder after
        assert f"~{os.getpid()}~" in src and src.startswith(dst + "~") and src.endswith(".tmp")
        assert events[i - 1] == ("fsync", src)
        assert events[i + 1] == ("fsync", os.path.dirname(dst))


def test_second_run_on_a_busy_folder_is_refused(cache, reference):
    out = cache / "shared"
    proc = _start(cache, out, delay=2.0)
    try:
        _wait_for(proc, (out / "manifest.json").is_file)
        assert proc.poll() is None
        with pytest.raises(ValueError, match=rf"{out} is in use by another explain-dataset run "
                                             rf"\(process {proc.pid} on "):
            explain_dataset(**KW, out=out)
        r = CliRunner().invoke(main, ["explain-dataset", "--data", "iris", "--method", "lime",
                                      "--out", str(out)])
        assert r.exit_code != 0 and f"{out} is in use" in r.output
        assert proc.poll() is None  # the first run was not disturbed
        assert proc.wait(timeout=300) == 0, proc.stdout.read().decode()[-2000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    _assert_same(load_chunks(out), reference)
    # the folder is free again once the first run has finished
    assert explain_dataset(**KW, out=out).computed == []


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_killed_run_resumes_to_the_uninterrupted_result(cache, reference, sig):
    out = cache / "killed"
    proc = _start(cache, out, delay=2.0)
    try:
        _wait_for(proc, lambda: len(list((out / "chunks").glob("chunk_*.npz"))) >= 1)
        os.killpg(proc.pid, sig)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode != 0, "the run finished before it was killed; nothing was tested"
    res = explain_dataset(**KW, out=out)  # the dead run's lock is gone with it
    assert 1 <= len(res.computed) <= 2 and (0, 10) not in res.computed
    _assert_same(res, reference)
    assert not [f for f in (out / "chunks").iterdir() if not f.name.endswith(".npz")]


def test_out_that_is_a_file(cache):
    out = cache / "file"
    out.write_text("x")
    with pytest.raises(ValueError, match=f"run folder {out} cannot be created: it exists and "
                                         "is not a folder"):
        explain_dataset(**KW, out=out)


def test_lock_is_released_after_an_error(cache):
    out = cache / "run"
    explain_dataset(**KW, out=out)
    with pytest.raises(ValueError, match="another configuration"):
        explain_dataset(**{**KW, "chunk_size": 5}, out=out)
    assert explain_dataset(**KW, out=out).computed == []
    assert (out / ".lock").is_file()


def test_folder_that_cannot_be_locked_runs_with_a_warning(cache, monkeypatch):
    import fcntl

    def no_locks(fd, op):
        raise OSError(37, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    out = cache / "nfs"
    with pytest.warns(RuntimeWarning, match=r"cannot lock .*\.lock \(No locks available\)"):
        res = explain_dataset(**{**KW, "uncertainty": None}, out=out)
    assert len(res.computed) == 3


# a user's model (a TorchScript file) on a user's CSV file, each chunk slowed down
SCRIPT_USER = """
import sys, time, warnings
import torch
from calix import parallel
out, delay, threads, csv_path, model_path = sys.argv[1:6]
torch.set_num_threads(int(threads))
warnings.simplefilter("ignore")
real = parallel._explain_array
def slow(*args, **kwargs):
    arrays = real(*args, **kwargs)
    time.sleep(float(delay))
    return arrays
parallel._explain_array = slow
parallel.explain_dataset(parallel.CsvFile(csv_path, target="label"), model_path, "kernel_shap",
                         out=out, chunk_size=10, method_kwargs={"n_samples": 30})
"""


@pytest.fixture
def user_files(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 4)).round(4)
    path = tmp_path / "rows.csv"
    lines = ["a,b,c,d,label"] + [",".join(map(str, r)) + f",{int(r[0] > 0)}" for r in X]
    path.write_text("\n".join(lines) + "\n")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    model = tmp_path / "net.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(net), model)
    return path, model


def _user_run(path, model, out):
    from calix.parallel import CsvFile

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return explain_dataset(CsvFile(path, target="label"), str(model), "kernel_shap",
                               out=out, chunk_size=10, method_kwargs={"n_samples": 30})


def test_killed_user_run_resumes_to_the_uninterrupted_result(cache, user_files):
    path, model = user_files
    reference = _user_run(path, model, cache / "reference")
    out = cache / "killed"
    script = cache / "slow_user_run.py"
    script.write_text(SCRIPT_USER)
    proc = subprocess.Popen([sys.executable, str(script), str(out), "2.0",
                             str(torch.get_num_threads()), str(path), str(model)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        _wait_for(proc, lambda: len(list((out / "chunks").glob("chunk_*.npz"))) >= 1)
        # the folder is the running user run's: a second one is refused
        with pytest.raises(ValueError, match=f"{out} is in use by another explain-dataset run"):
            _user_run(path, model, out)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode != 0, "the run finished before it was killed; nothing was tested"
    res = _user_run(path, model, out)
    assert 1 <= len(res.computed) <= 2 and (0, 10) not in res.computed
    _assert_same(res, reference)


def test_damaged_chunk_of_a_user_run_is_recomputed(cache, user_files):
    path, model = user_files
    out = cache / "run"
    first = _user_run(path, model, out)
    last = sorted((out / "chunks").glob("chunk_*.npz"))[-1]
    _flip_byte(last)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        from calix.parallel import CsvFile

        res = explain_dataset(CsvFile(path, target="label"), str(model), "kernel_shap",
                              out=out, chunk_size=10, method_kwargs={"n_samples": 30})
    assert any(f"chunk file {last} is damaged" in str(w.message) for w in caught)
    assert res.computed == [(20, 30)]
    _assert_same(res, first)
