import json

from click.testing import CliRunner

from calix.cli import main


def test_help_and_version():
    r = CliRunner().invoke(main, ["--help"])
    assert r.exit_code == 0 and "calibrated" in r.output
    for cmd in ("data", "train", "demo"):
        assert cmd in r.output
    assert CliRunner().invoke(main, ["--version"]).output.strip().endswith("0.1.0")


def test_data_list_and_show():
    r = CliRunner().invoke(main, ["data", "list"])
    assert r.exit_code == 0
    for name in ("digits", "digits-noisy", "breast_cancer", "wine", "iris", "diabetes"):
        assert name in r.output
    r = CliRunner().invoke(main, ["data", "show", "wine"])
    assert r.exit_code == 0 and "n_classes=3" in r.output
    r = CliRunner().invoke(main, ["data", "show", "nope"])
    assert r.exit_code != 0 and "unknown dataset" in r.output


def test_train(tmp_path, monkeypatch):
    monkeypatch.setenv("CALIX_CACHE", str(tmp_path))
    r = CliRunner().invoke(main, ["train", "mlp", "--data", "iris", "--seed", "1"])
    assert r.exit_code == 0, r.output
    assert "mlp on iris (seed 1): test accuracy" in r.output and "cached at" in r.output
    r = CliRunner().invoke(main, ["train", "cnn", "--data", "iris"])
    assert r.exit_code != 0 and "needs image data" in r.output


def test_demo(tmp_path, monkeypatch):
    monkeypatch.setenv("CALIX_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "demo"
    r = CliRunner().invoke(main, ["demo", "--out", str(out)])
    assert r.exit_code == 0, r.output
    res = json.loads((out / "results.json").read_text())
    rows = {(m["model"], m["data"], m["fill"]): m for m in res["models"]}
    noisy = rows[("cnn", "digits-noisy", "zero")]
    # The zoo CNN on digits-noisy is overconfident under zero-fill perturbation.
    assert 0.6 < noisy["test_accuracy"] < 0.9 and noisy["mean_gap"] > 0.1
    png = (out / "confidence_by_level.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
