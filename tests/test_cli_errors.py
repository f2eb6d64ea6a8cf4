"""Hostile and careless input on the command line: one clear line, the right exit code, no
Python traceback, and no work done before the arguments are checked."""

import json
import os
import socket
import sys
import time
import warnings

import numpy as np
import pytest
from click.testing import CliRunner

from calix.cli import main

ROOT = os.geteuid() == 0 if hasattr(os, "geteuid") else False


@pytest.fixture
def no_work(monkeypatch, tmp_path):
    """Make every expensive entry point fail the test: the CLI must refuse bad input first."""
    import tempfile

    import calix.demo
    import calix.parallel
    import calix.studies
    import calix.zoo

    def forbidden(*args, **kwargs):
        raise AssertionError("work started before the arguments were checked")

    for mod, name in ((calix.zoo, "train"), (calix.studies, "run_study"),
                      (calix.demo, "run_demo"), (calix.parallel, "explain_dataset")):
        monkeypatch.setattr(mod, name, forbidden)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # traceback files stay here


def run(args, **env):
    result = CliRunner().invoke(main, [str(a) for a in args], env=env or None)
    assert "Traceback" not in result.output, result.output
    return result


def one_line(result):
    """The message after 'Error: ' with click's line wrapping undone."""
    return " ".join(result.output.split())


# ---------------------------------------------------------------- output folders, checked first
OUT_COMMANDS = {
    "calibrate": ["calibrate", "--data", "iris", "--n-eval", "5"],
    "explain": ["explain", "--data", "iris"],
    "reproduce": ["reproduce", "fpa", "--quick"],
    "explain-dataset": ["explain-dataset", "--data", "iris", "--method", "saliency"],
    "demo": ["demo"],
}


@pytest.mark.parametrize("command", sorted(OUT_COMMANDS))
def test_out_under_a_regular_file_is_refused_before_work(tmp_path, no_work, command):
    blocker = tmp_path / "a-file"
    blocker.write_text("I am a file")
    out = blocker / "sub"
    r = run([*OUT_COMMANDS[command], "--out", out])
    assert r.exit_code == 2, r.output
    msg = one_line(r)
    assert "Invalid value for --out" in msg
    assert f"output folder {out} cannot be created: {blocker} is a file, not a folder" in msg


@pytest.mark.parametrize("command", sorted(OUT_COMMANDS))
def test_empty_out_is_refused(tmp_path, no_work, monkeypatch, command):
    monkeypatch.chdir(tmp_path)  # an empty --out must not mean "write into the current folder"
    r = run([*OUT_COMMANDS[command], "--out", ""])
    assert r.exit_code == 2, r.output
    assert "Invalid value for '--out': is empty" in one_line(r)
    assert list(tmp_path.iterdir()) == []


def test_report_out_under_a_regular_file_is_refused(tmp_path, no_work, monkeypatch):
    import calix.report

    monkeypatch.setattr(calix.report, "write_report",
                        lambda *a, **k: pytest.fail("report written to a bad --out"))
    blocker = tmp_path / "a-file"
    blocker.write_text("I am a file")
    (tmp_path / "results").mkdir()
    r = run(["report", tmp_path / "results", "--out", blocker / "report.html"])
    assert r.exit_code == 2, r.output
    assert f"{blocker} cannot be created: it exists and is not a folder" in one_line(r)


@pytest.mark.skipif(ROOT, reason="root writes into read-only folders")
@pytest.mark.parametrize("command", ["calibrate", "explain", "explain-dataset"])
def test_read_only_out_is_refused_before_work(tmp_path, no_work, command):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        r = run([*OUT_COMMANDS[command], "--out", ro])
        assert r.exit_code == 2 and f"output folder {ro} is not writable" in one_line(r)
        r = run([*OUT_COMMANDS[command], "--out", ro / "sub"])
        assert r.exit_code == 2 and "cannot be created: Permission denied" in one_line(r)
    finally:
        ro.chmod(0o700)


@pytest.mark.parametrize("command", ["calibrate", "explain", "reproduce"])
def test_unwritable_out_is_refused_before_work(tmp_path, no_work, monkeypatch, command):
    # as a read-only folder does (for every user but root): the probe file cannot be written
    import pathlib

    real = pathlib.Path.write_bytes

    def deny(self, data):
        if self.name.startswith(".calix-write-probe"):
            raise PermissionError(13, "Permission denied", str(self))
        return real(self, data)

    monkeypatch.setattr(pathlib.Path, "write_bytes", deny)
    r = run([*OUT_COMMANDS[command], "--out", tmp_path / "o"])
    assert r.exit_code == 2, r.output
    assert f"output folder {tmp_path / 'o'} is not writable: Permission denied" in one_line(r)


def test_ensure_writable_dir_leaves_nothing_behind(tmp_path):
    from calix._io import OutputPathError, ensure_writable_dir, ensure_writable_file

    out = ensure_writable_dir(tmp_path / "a" / "b")
    assert out.is_dir() and list(out.iterdir()) == []
    assert ensure_writable_dir(out) == out  # existing folders are fine
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputPathError, match="it exists and is not a folder"):
        ensure_writable_dir(tmp_path / "f")
    with pytest.raises(OutputPathError, match="is a folder; give a file name"):
        ensure_writable_file(out)
    assert ensure_writable_file(tmp_path / "new" / "r.html").parent.is_dir()


# ---------------------------------------------------------------- data files on the CLI
def _csv(path, header, rows):
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    rows = [(f"{a:.3f}", f"{b:.3f}", str(i % 2)) for i, (a, b) in
            enumerate(rng.normal(size=(40, 2)))]
    (tmp_path / "folder.csv").mkdir()
    (tmp_path / "bad.npz").write_text("garbage")
    return {
        "folder": tmp_path / "folder.csv",
        "npz": tmp_path / "bad.npz",
        "semi": _csv(tmp_path / "semi.csv", "a;b;y", [";".join(r) for r in rows]),
        "labels": _csv(tmp_path / "labels.csv", "y", [r[2] for r in rows]),
        "nan": _csv(tmp_path / "nan.csv", "a,b,y",
                    [",".join(r if i != 3 else (*r[:2], "nan")) for i, r in enumerate(rows)]),
    }


@pytest.mark.parametrize("args, expected", [
    (["data", "show", "{folder}"], "Invalid value for NAME: {folder} is a folder, not a CSV file"),
    (["data", "show", "{npz}"], "{npz} is not a valid .npz archive"),
    (["train", "mlp", "--data", "{labels}"],
     "Invalid value for --data: {labels} has a single column 'y'"),
    (["calibrate", "--data", "{semi}", "--delimiter", ","],
     "{semi} has a single column 'a;b;y' when split at ','"),
    (["explain", "--data", "{nan}"],
     "the label column 'y' is empty or NaN on 1 row(s), the first on line 5"),
    (["data", "show", "iris", "--delimiter", ";;"],
     "Invalid value for '--delimiter': must be one character"),
    (["data", "show", "wine", "--delimiter", ";"], "applies to .csv files only"),
    (["data", "show", ""], "Invalid value for NAME: dataset name is empty"),
], ids=["csv-folder", "corrupt-npz", "label-only-csv", "wrong-delimiter", "nan-label",
        "long-delimiter", "delimiter-for-shipped", "empty-name"])
def test_bad_data_is_a_usage_error(files, no_work, args, expected):
    r = run([a.format(**files) for a in args])
    assert r.exit_code == 2, r.output
    assert expected.format(**files) in one_line(r)


def test_delimiter_sniffed_or_stated_on_the_cli(files):
    for extra in ([], ["--delimiter", ";"]):
        r = run(["data", "show", files["semi"], *extra])
        assert r.exit_code == 0, r.output
        assert "input_shape=(2,)" in r.output and "n_classes=2" in r.output
    r = run(["data", "show", files["semi"].with_name("tab.csv")])
    assert r.exit_code == 2 and "CSV file not found" in one_line(r)


# ---------------------------------------------------------------- options name themselves
@pytest.mark.parametrize("args, option", [
    (["data", "show", "iris", "--seed", "-1"], "--seed"),
    (["train", "mlp", "--data", "iris", "--seed", "-1"], "--seed"),
    (["calibrate", "--data", "iris", "--seed", "-1"], "--seed"),
    (["explain", "--data", "iris", "--seed", "-1"], "--seed"),
    (["reproduce", "fpa", "--seed", "-1"], "--seed"),
    (["explain-dataset", "--data", "iris", "--method", "saliency", "--out", "x", "--seed", "-1"],
     "--seed"),
    (["demo", "--seed", "-1"], "--seed"),
    (["calibrate", "--data", "iris", "--n-eval", "0"], "--n-eval"),
    (["train", "mlp", "--epochs", "0"], "--epochs"),
    (["train", "mlp", "--dropout", "1.5"], "--dropout"),
    (["explain", "--data", "iris", "--target", "-2"], "--target"),
    (["explain-dataset", "--data", "iris", "--method", "saliency", "--out", "x",
      "--chunk-size", "0"], "--chunk-size"),
    (["explain-dataset", "--data", "iris", "--method", "saliency", "--out", "x",
      "--workers", "0"], "--workers"),
    (["explain-dataset", "--data", "iris", "--method", "saliency", "--out", "x",
      "--n-samples", "0"], "--n-samples"),
    (["explain-dataset", "--data", "iris", "--method", "saliency", "--out", "x",
      "--connect-timeout", "0"], "--connect-timeout"),
])
def test_out_of_range_option_is_named(tmp_path, no_work, monkeypatch, args, option):
    monkeypatch.chdir(tmp_path)
    r = run(args)
    assert r.exit_code == 2, r.output
    assert f"Invalid value for '{option}'" in one_line(r)
    assert "--data" not in one_line(r).split("Error:")[1]


def test_explain_calibrate_on_regression(no_work, tmp_path):
    r = run(["explain", "--data", "diabetes", "--calibrate", "temperature",
             "--out", tmp_path / "o"])
    assert r.exit_code == 2, r.output
    msg = one_line(r)
    assert "Invalid value for --calibrate: a regression model cannot be calibrated" in msg
    assert "logits" not in msg


def test_explain_target_beyond_the_classes(no_work, tmp_path):
    r = run(["explain", "--data", "iris", "--target", "3", "--out", tmp_path / "o"])
    assert r.exit_code == 2 and "class 3 does not exist: iris has 3 classes" in one_line(r)


# ---------------------------------------------------------------- report on malformed results
@pytest.mark.parametrize("doc, expected", [
    ({"study": "s", "claims": [1, 2]}, "claims[0] must be an object, got int 1"),
    ({"study": "s", "claims": "all hold"}, "'claims' must be a list of objects, got str"),
    ({"study": "s", "claims": [{"holds": True, "evidence": [1]}]},
     "claims[0].evidence must be an object"),
    ({"study": 5, "claims": []}, "'study' must be a name (a string), got int 5"),
    ({"study": "s", "claims": [], "tables": {"t": 5}}, "tables['t'] must be a list of objects"),
    ({"study": "s", "claims": [], "figures": ["a.png"]},
     "figures[0] must be an object with a 'file' name"),
], ids=["claim-int", "claims-str", "evidence-list", "study-int", "table-int", "figure-str"])
def test_report_names_the_malformed_results_file(tmp_path, doc, expected):
    (tmp_path / "s").mkdir()
    path = tmp_path / "s" / "results.json"
    path.write_text(json.dumps(doc))
    r = run(["report", tmp_path])
    assert r.exit_code == 1, r.output
    assert f"Error: {path} is malformed: {expected}" in one_line(r)
    assert not (tmp_path / "report.html").exists()


def test_report_render_failure_names_the_file(tmp_path, monkeypatch):
    import calix.report

    def broken(*args, **kwargs):
        raise KeyError("caption")

    monkeypatch.setattr(calix.report, "render", broken)
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"study": "s", "claims": []}))
    r = run(["report", tmp_path])
    assert r.exit_code == 1, r.output
    assert f"Error: {path} is malformed and cannot be rendered (KeyError: 'caption')" in (
        one_line(r))


def test_report_invalid_json_and_missing_folder(tmp_path):
    path = tmp_path / "results.json"
    path.write_text('{"study": "s", ')
    r = run(["report", tmp_path])
    assert r.exit_code == 1 and f"Error: {path} is not valid JSON" in one_line(r)
    r = run(["report", tmp_path / "nope"])
    assert r.exit_code == 2 and "does not exist" in one_line(r)


# ---------------------------------------------------------------- Dask scheduler
def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_scheduler_is_named_at_once(tmp_path, no_work):
    address = f"tcp://127.0.0.1:{_free_port()}"
    t0 = time.perf_counter()
    r = run(["explain-dataset", "--data", "iris", "--method", "saliency", "--executor", "dask",
             "--scheduler", address, "--out", tmp_path / "o"])
    assert time.perf_counter() - t0 < 10
    assert r.exit_code == 1, r.output
    assert f"Error: cannot reach the Dask scheduler at {address} (Connection refused)" in (
        one_line(r))


@pytest.mark.parametrize("args, expected", [
    (["--scheduler", "tcp://:x"], "Invalid value for --scheduler: 'tcp://:x' is not a scheduler"),
    (["--executor", "local", "--scheduler", "tcp://127.0.0.1:8786"],
     "--scheduler needs --executor dask"),
])
def test_bad_scheduler_options(tmp_path, no_work, args, expected):
    r = run(["explain-dataset", "--data", "iris", "--method", "saliency", "--executor", "dask",
             "--out", tmp_path / "o", *args])
    assert r.exit_code == 2 and expected in one_line(r), r.output


# ---------------------------------------------------------------- the error boundary
def _raise(exc):
    def f(*args, **kwargs):
        raise exc
    return f


def _not_fitted():
    from calix.calibrate import NotFittedError

    return NotFittedError("TemperatureScaling is not fitted; call fit first")


@pytest.mark.parametrize("exc, message", [
    (ValueError("n_bins must be >= 1, got 0"), "Error: n_bins must be >= 1, got 0"),
    (TypeError("fill must be a Fill, got 3"), "Error: fill must be a Fill, got 3"),
    (PermissionError(13, "Permission denied", "/data/x.csv"),
     "Error: /data/x.csv: Permission denied"),
    (IsADirectoryError(21, "Is a directory", "x.csv"), "Error: x.csv: Is a directory"),
    (NotADirectoryError(20, "Not a directory", "f/out"), "Error: f/out: Not a directory"),
    (FileNotFoundError(2, "No such file or directory", "m.pt"),
     "Error: m.pt: No such file or directory"),
    (OSError("Timed out trying to connect to tcp://h:8786 after 30 s"),
     "Error: Timed out trying to connect to tcp://h:8786 after 30 s"),
    (_not_fitted(), "Error: TemperatureScaling is not fitted; call fit first"),
], ids=["value", "type", "permission", "isdir", "notdir", "notfound", "oserror", "notfitted"])
def test_known_errors_are_one_line(monkeypatch, no_work, exc, message):
    import calix.data

    monkeypatch.setattr(calix.data, "list_datasets", _raise(exc))
    r = run(["data", "list"])
    assert r.exit_code == 1, r.output
    assert r.stderr.strip() == message


def test_unexpected_error_writes_its_traceback_to_a_file(monkeypatch, no_work, tmp_path):
    import calix.data

    monkeypatch.setattr(calix.data, "list_datasets", _raise(RuntimeError("boom")))
    r = run(["data", "list"])
    assert r.exit_code == 1, r.output
    msg = one_line(r)
    assert msg.startswith("Error: unexpected RuntimeError: boom")
    assert "CALIX_DEBUG=1" in msg
    written = list(tmp_path.glob("calix-traceback-*.txt"))
    assert len(written) == 1 and str(written[0]) in msg
    text = written[0].read_text()
    assert "Traceback (most recent call last)" in text and "RuntimeError: boom" in text


def test_unexpected_error_message_is_short(monkeypatch, no_work, tmp_path):
    import calix.data

    long = "x" * 5000 + "\nsecond line\nthird line"
    monkeypatch.setattr(calix.data, "list_datasets", _raise(IndexError(long)))
    r = run(["data", "list"])
    assert r.exit_code == 1 and "second line" not in r.output
    first = r.stderr.splitlines()[0]
    assert first.startswith("Error: unexpected IndexError: xxx") and len(first) < 400
    (written,) = tmp_path.glob("calix-traceback-*.txt")
    assert "third line" in written.read_text()


def test_warnings_are_one_line(monkeypatch, no_work):
    import calix.data

    def warn():
        warnings.warn("the model was trained but not cached", RuntimeWarning, stacklevel=2)
        return [("toy", "a toy set")]

    monkeypatch.setattr(calix.data, "list_datasets", warn)
    # pytest records warnings; shown as Python shows them (formatwarning to stderr):
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        monkeypatch.setattr(warnings, "showwarning",
                            lambda m, c, f, n, file=None, line=None: sys.stderr.write(
                                warnings.formatwarning(m, c, f, n, line)))
        r = run(["data", "list"])
    assert r.exit_code == 0 and "toy" in r.stdout
    assert r.stderr == "Warning (RuntimeWarning): the model was trained but not cached\n"
    # recording them still works, and the display is restored after the command
    with pytest.warns(RuntimeWarning, match="not cached"):
        assert run(["data", "list"]).exit_code == 0
    assert "test_cli_errors.py" in warnings.formatwarning("m", UserWarning, __file__, 1)


def test_interrupt_exits_130(monkeypatch, no_work):
    import calix.data

    monkeypatch.setattr(calix.data, "list_datasets", _raise(KeyboardInterrupt()))
    r = run(["data", "list"])
    assert r.exit_code == 130 and r.stderr.strip() == "Interrupted"


@pytest.mark.parametrize("exc", [RuntimeError("boom"), ValueError("bad")])
def test_calix_debug_reraises(monkeypatch, no_work, exc):
    import calix.data

    monkeypatch.setattr(calix.data, "list_datasets", _raise(exc))
    r = CliRunner().invoke(main, ["data", "list"], env={"CALIX_DEBUG": "1"})
    assert r.exception is exc and "Error:" not in r.output


def test_help_documents_calix_debug():
    r = run(["--help"])
    assert r.exit_code == 0 and "CALIX_DEBUG=1" in one_line(r)


def test_bad_perturbation_is_refused_before_training(no_work):
    r = run(["calibrate", "--data", "wine", "--perturbation", "blur"])
    assert r.exit_code == 2 and "fill must be one of" in one_line(r)
