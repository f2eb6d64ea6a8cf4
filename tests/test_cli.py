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


def test_calibrate(tmp_path, monkeypatch):
    monkeypatch.setenv("CALIX_CACHE", str(tmp_path / "cache"))
    args = ["calibrate", "--data", "breast_cancer", "--method", "temperature", "--metric",
            "ece", "--n-eval", "60", "--out", str(tmp_path / "cal")]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert "uncalibrated" in r.output and "temperature" in r.output
    res = json.loads((tmp_path / "cal" / "results.json").read_text())
    assert [row["method"] for row in res["rows"]] == ["none", "temperature"]
    assert (tmp_path / "cal" / "ce_by_level.png").exists()
    # what `calix report` shows: the rows, one table per level curve, the figure
    assert res["kind"] == "calibrate" and res["figures"] == [
        {"file": "ce_by_level.png", "caption": "ece by perturbation level (mean fill), "
                                               "uncalibrated and temperature"}]
    assert res["tables"]["calibration before and after"] == res["rows"]
    curve = res["tables"]["ece by perturbation level: temperature"]
    assert [row["ece"] for row in curve] == res["by_level"]["temperature"]["errors"]
    assert sum(row["inputs"] for row in curve) == sum(res["by_level"]["temperature"]["counts"])
    r = CliRunner().invoke(main, ["calibrate", "--data", "diabetes"])
    assert r.exit_code != 0 and "regression" in r.output
    r = CliRunner().invoke(main, ["calibrate", "--data", "wine", "--perturbation", "blur"])
    assert r.exit_code != 0 and "fill must be one of" in r.output


def test_explain(tmp_path, monkeypatch):
    from calix.explain import Explanation

    monkeypatch.setenv("CALIX_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "exp"
    r = CliRunner().invoke(main, ["explain", "--data", "digits", "--method", "occlusion",
                                  "--index", "3", "--index", "7", "--out", str(out)])
    assert r.exit_code == 0, r.output
    exp = Explanation.load(out / "explanation.npz")
    assert exp.values.shape == (2, 1, 8, 8) and exp.extra["indices"].tolist() == [3, 7]
    assert exp.method == "occlusion" and exp.data.shape == (2, 1, 8, 8)
    assert (out / "input_7.png").read_bytes()[:4] == b"\x89PNG"
    res = json.loads((out / "results.json").read_text())
    assert res["kind"] == "explain" and res["config"]["index_of"] == "test split"
    assert [row["index"] for row in res["tables"]["explained inputs"]] == [3, 7]
    r = CliRunner().invoke(main, ["explain", "--data", "wine", "--method", "kernel_shap",
                                  "--calibrate", "temperature", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert Explanation.load(out / "explanation.npz").feature_values.shape == (1, 13)
    r = CliRunner().invoke(main, ["explain", "--data", "wine", "--method", "rise"])
    assert r.exit_code != 0 and "RISE explains images" in r.output
    r = CliRunner().invoke(main, ["explain", "--data", "wine", "--index", "9999"])
    assert r.exit_code != 0 and "outside the test split" in r.output


def test_train_with_fpa(tmp_path, monkeypatch):
    monkeypatch.setenv("CALIX_CACHE", str(tmp_path))
    r = CliRunner().invoke(main, ["train", "cnn", "--data", "digits", "--fpa", "--epochs", "2"])
    assert r.exit_code == 0, r.output
    plain = CliRunner().invoke(main, ["train", "cnn", "--data", "digits", "--epochs", "2"])
    # FPA joins the cache key: two different cached models
    assert r.output.split("cached at ")[1] != plain.output.split("cached at ")[1]
    r = CliRunner().invoke(main, ["train", "mlp", "--data", "wine", "--fpa"])
    assert r.exit_code != 0 and "augments images" in r.output


def test_explain_tabular_states_its_fill(tmp_path, recwarn):
    # the CLI gives tabular perturbation explainers the training data for the mean fill, so
    # the user sees no advice to pass an argument the command line does not have
    import numpy as np

    out = tmp_path / "exp"
    r = CliRunner().invoke(main, ["explain", "--data", "wine", "--method", "occlusion",
                                  "--out", str(out)])
    assert r.exit_code == 0, r.output
    # the CLI shows warnings on stderr; outside the CLI's display they would be recorded
    assert "DefaultFillWarning" not in r.stderr and "background=" not in r.stderr
    assert not [w for w in recwarn if "background=" in str(w.message)]
    from calix.explain import Explanation

    values = Explanation.load(out / "explanation.npz").values
    assert values.shape == (1, 13) and np.isfinite(values).all() and np.abs(values).sum() > 0
