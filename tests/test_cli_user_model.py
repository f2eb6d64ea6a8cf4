"""``calix explain`` on a user's own saved model and data file, and ``calix report`` on it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from calix.cli import main
from calix.explain import METHODS, Explanation
from tests._browser import load_page


def run(args):
    r = CliRunner().invoke(main, [str(a) for a in args])
    assert "Traceback" not in r.output, r.output
    return r


def one_line(r) -> str:
    return " ".join(r.output.split())


# ---------------------------------------------------------------- a scikit-learn model on a CSV
@pytest.fixture
def sklearn_files(tmp_path):
    """A CSV with three features and a text label, and a logistic regression fitted on it
    (as a DataFrame, so the model knows the column names) saved with joblib."""
    import joblib
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3)).round(3) * [1.0, 2.0, 0.5] + [0.0, 1.0, -1.0]
    y = np.where(X[:, 0] - 0.5 * X[:, 1] > -0.5, "yes", "no")
    df = pd.DataFrame(X, columns=["age", "dose", "weight"])
    csv = tmp_path / "patients.csv"
    # the label column sits in the middle: the CSV's columns, not their positions, count
    df.assign(outcome=y)[["age", "outcome", "dose", "weight"]].to_csv(csv, index=False)
    clf = LogisticRegression().fit(df, y)
    model = tmp_path / "clf.joblib"
    joblib.dump(clf, model)
    return {"csv": csv, "model": model, "clf": clf, "X": df.to_numpy(np.float32), "y": y,
            "out": tmp_path / "exp"}


def _proba(clf, X):
    """The fitted model's own probabilities for rows ``X`` (named columns, as fitted)."""
    import pandas as pd

    return clf.predict_proba(pd.DataFrame(np.asarray(X, np.float64),
                                          columns=["age", "dose", "weight"]))


def test_joblib_model_needs_trust_model(sklearn_files, monkeypatch):
    import joblib

    monkeypatch.setattr(joblib, "load", lambda *a, **k: pytest.fail("unpickled untrusted file"))
    f = sklearn_files
    r = run(["explain", "--model", f["model"], "--data", f["csv"], "--label-column", "outcome",
             "--out", f["out"]])
    assert r.exit_code == 2, r.output
    msg = one_line(r)
    assert f"Invalid value for --model: {f['model']} is a joblib/pickle file" in msg
    assert "unpickling runs code" in msg and "Add --trust-model if the file is your own" in msg


def test_sklearn_model_on_the_users_csv(sklearn_files, recwarn):
    f = sklearn_files
    r = run(["explain", "--model", f["model"], "--trust-model", "--data", f["csv"],
             "--label-column", "outcome", "--method", "kernel_shap", "--index", "0",
             "--index", "17", "--out", f["out"]])
    assert r.exit_code == 0, r.output
    assert "DefaultFillWarning" not in r.stderr and "background=" not in r.stderr
    assert not [w for w in recwarn if "background=" in str(w.message)]
    exp = Explanation.load(f["out"] / "explanation.npz")
    # --index counts the CSV's data rows; the inputs are the file's raw values
    np.testing.assert_array_equal(exp.data, f["X"][[0, 17]])
    assert exp.feature_names == ["age", "dose", "weight"]
    assert exp.class_names == ["no", "yes"] and exp.values.shape == (2, 3)
    proba = _proba(f["clf"], f["X"][[0, 17]])
    np.testing.assert_array_equal(exp.target, proba.argmax(1))  # the predicted class
    # Shapley efficiency with the file's rows as background (mean fill): the attributions
    # add up to p(x) - p(column means of the file) for the explained class (3 features: all
    # 8 coalitions are enumerated, so the identity is exact up to float32)
    base = _proba(f["clf"], f["X"].mean(0, keepdims=True))[0]
    for j in range(2):
        t = exp.target[j]
        assert exp.values[j].sum() == pytest.approx(proba[j, t] - base[t], abs=1e-4)
    res = json.loads((f["out"] / "results.json").read_text())
    assert res["kind"] == "explain" and res["config"]["background"] == "the rows of the data file"
    rows = res["tables"]["explained inputs"]
    assert [r["index"] for r in rows] == [0, 17]
    assert [r["label"] for r in rows] == list(f["y"][[0, 17]])
    assert [r["predicted"] for r in rows] == list(f["clf"].classes_[proba.argmax(1)])
    assert [r["probability"] for r in rows] == pytest.approx(proba.max(1), abs=1e-6)
    top = [r for r in res["tables"]["top features"] if r["input"] == "row 17"]
    assert [r["rank"] for r in top] == [1, 2, 3]
    assert abs(top[0]["attribution"]) == pytest.approx(np.abs(exp.values[1]).max(), rel=1e-6)
    for fig in res["figures"]:
        assert (f["out"] / fig["file"]).read_bytes()[:4] == b"\x89PNG"
    assert {fig["file"] for fig in res["figures"]} == {"input_0.png", "input_17.png"}


def test_csv_without_labels_explains_the_predicted_class(sklearn_files, tmp_path):
    import pandas as pd

    f = sklearn_files
    csv = tmp_path / "new_patients.csv"
    df = pd.DataFrame(f["X"][:5], columns=["age", "dose", "weight"])
    df[["weight", "age", "dose"]].to_csv(csv, index=False)  # columns in another order
    out = tmp_path / "o"
    r = run(["explain", "--model", f["model"], "--trust-model", "--data", csv, "--method",
             "occlusion", "--index", "4", "--out", out])
    assert r.exit_code == 0, r.output
    exp = Explanation.load(out / "explanation.npz")
    # the columns reach the model in the order it was fitted with
    np.testing.assert_array_equal(exp.data, f["X"][[4]])
    assert exp.target.tolist() == [int(_proba(f["clf"], f["X"][[4]]).argmax())]
    rows = json.loads((out / "results.json").read_text())["tables"]["explained inputs"]
    assert "label" not in rows[0] and rows[0]["input"] == "row 4"


@pytest.mark.parametrize("extra, expected", [
    ([], "column 'outcome' holds {y0!r} on line 2; if it is the label column, name it with "
         "--label-column"),
    (["--label-column", "result"], "no column named 'result' (--label-column); columns are "
                                   "['age', 'outcome', 'dose', 'weight']"),
    (["--label-column", "outcome", "--index", "40"],
     "indices [40] outside the 40 data rows (the header row not counted) of"),
    (["--label-column", "outcome", "--architecture", "mlp", "--num-classes", "2"],
     "holds a whole model, which needs no --architecture"),
    (["--label-column", "outcome", "--calibrate", "temperature"],
     "--calibrate applies to zoo models"),
], ids=["label-not-named", "unknown-label", "row-beyond-file", "architecture", "calibrate"])
def test_user_model_mistakes_are_named(sklearn_files, extra, expected):
    f = sklearn_files
    r = run(["explain", "--model", f["model"], "--trust-model", "--data", f["csv"], *extra,
             "--out", f["out"]])
    assert r.exit_code == 2, r.output
    assert expected.format(y0=str(f["y"][0])) in one_line(r)


def test_columns_the_model_was_not_fitted_on(sklearn_files, tmp_path):
    f = sklearn_files
    csv = tmp_path / "other.csv"
    csv.write_text("age,dose,height\n1,2,3\n4,5,6\n")
    r = run(["explain", "--model", f["model"], "--trust-model", "--data", csv,
             "--out", tmp_path / "o"])
    assert r.exit_code == 2, r.output
    assert "(missing ['weight'], not used by the model ['height'])" in one_line(r)


def test_missing_model_file_and_data_for_a_model_file(tmp_path):
    r = run(["explain", "--model", tmp_path / "nope.pt", "--data", tmp_path,
             "--out", tmp_path / "o"])
    assert r.exit_code == 2 and "model file not found" in one_line(r)
    assert "--model takes a zoo model, cnn or mlp, or a model file" in one_line(r)
    r = run(["explain", "--model", tmp_path / "nope.pt", "--out", tmp_path / "o"])
    assert r.exit_code == 2 and "--model FILE explains your own data" in one_line(r)
    r = run(["explain", "--model", "mlp", "--trust-model", "--out", tmp_path / "o"])
    assert r.exit_code == 2 and "--trust-model applies to a model file" in one_line(r)


# ---------------------------------------------------------------- a torch model on image folders
class _TinyNet(nn.Module):
    def __init__(self, n_classes: int = 2) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.head = nn.Linear(4, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).mean(dim=(2, 3)))


@pytest.fixture
def image_folder(tmp_path):
    """``imgs/<class>/<file>.png``: 6 grey 32x32 PNGs, bright squares and dark stripes."""
    import imageio.v3 as iio

    rng = np.random.default_rng(1)
    root = tmp_path / "imgs"
    for cls in ("square", "stripes"):
        (root / cls).mkdir(parents=True)
        for k in range(3):
            img = (rng.random((32, 32)) * 60).astype(np.uint8)
            if cls == "square":
                img[8:24, 8:24] = 230
            else:
                img[:, ::4] = 200
            iio.imwrite(root / cls / f"img{k}.png", img)
    return root


def _png(path) -> np.ndarray:
    import imageio.v3 as iio

    return iio.imread(path).astype(np.float32) / 255.0


def test_torchscript_model_on_an_image_folder(tmp_path, image_folder):
    net = _TinyNet().eval()
    model = tmp_path / "net.pt"
    torch.jit.save(torch.jit.script(net), model)
    out = tmp_path / "exp"
    r = run(["explain", "--model", model, "--data", image_folder, "--method", "saliency",
             "--index", "1", "--index", "4", "--out", out])
    assert r.exit_code == 0, r.output
    exp = Explanation.load(out / "explanation.npz")
    # --index counts the images sorted by path: square/img0..2, stripes/img0..2
    want = np.stack([_png(image_folder / "square" / "img1.png"),
                     _png(image_folder / "stripes" / "img1.png")])[:, None]
    np.testing.assert_allclose(exp.data, want, atol=1e-6)
    assert exp.values.shape == (2, 1, 32, 32) and np.abs(exp.values).sum() > 0
    with torch.no_grad():
        proba = torch.softmax(net(torch.from_numpy(want)), -1).numpy()
    np.testing.assert_array_equal(exp.target, proba.argmax(1))
    res = json.loads((out / "results.json").read_text())
    rows = res["tables"]["explained inputs"]
    assert [r["input"] for r in rows] == ["square/img1.png", "stripes/img1.png"]
    assert [r["label"] for r in rows] == ["square", "stripes"]  # the class sub-folders
    assert [r["probability"] for r in rows] == pytest.approx(proba.max(1), abs=1e-5)
    assert res["config"]["index_of"] == "images of the folder, sorted by path"
    for name in ("input_4.png", "overlay_4.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    assert "top features" not in res["tables"]  # image features have no names to list


def test_state_dict_with_an_architecture(tmp_path, image_folder):
    from calix.zoo import CNN

    net = CNN(in_channels=1, n_classes=2, image_size=32).eval()
    weights = tmp_path / "cnn_weights.pt"
    torch.save(net.state_dict(), weights)
    out = tmp_path / "exp"
    r = run(["explain", "--model", weights, "--data", image_folder, "--out", out])
    assert r.exit_code == 2 and "name it with --architecture" in one_line(r)
    r = run(["explain", "--model", weights, "--architecture", "cnn", "--data", image_folder,
             "--out", out])
    assert r.exit_code == 2 and "--architecture needs --num-classes" in one_line(r)
    r = run(["explain", "--model", weights, "--architecture", "cnn", "--num-classes", "2",
             "--data", image_folder, "--method", "integrated_gradients", "--index", "5",
             "--out", out])
    assert r.exit_code == 0, r.output
    exp = Explanation.load(out / "explanation.npz")
    x = _png(image_folder / "stripes" / "img2.png")[None, None]
    with torch.no_grad():
        proba = torch.softmax(net(torch.from_numpy(x)), -1).numpy()[0]
    row = json.loads((out / "results.json").read_text())["tables"]["explained inputs"][0]
    assert row["probability"] == pytest.approx(proba.max(), abs=1e-5)
    assert exp.target.tolist() == [int(proba.argmax())]


def test_image_folder_of_mixed_sizes_names_the_fix(tmp_path, image_folder):
    import imageio.v3 as iio

    iio.imwrite(image_folder / "square" / "big.png", np.zeros((40, 40), np.uint8))
    model = tmp_path / "net.pt"
    torch.jit.save(torch.jit.script(_TinyNet().eval()), model)
    r = run(["explain", "--model", model, "--data", image_folder, "--out", tmp_path / "o"])
    assert r.exit_code == 2 and "differ in size" in one_line(r)
    assert "pass --image-size H W" in one_line(r)
    r = run(["explain", "--model", model, "--data", image_folder, "--image-size", "32", "32",
             "--index", "0", "--method", "occlusion", "--out", tmp_path / "o"])
    assert r.exit_code == 0, r.output
    assert Explanation.load(tmp_path / "o" / "explanation.npz").data.shape == (1, 1, 32, 32)


# ---------------------------------------------------------------- every registered explainer
def test_method_choices_are_the_registry():
    from calix.cli import explain, explain_dataset_cmd

    def choices(cmd):
        (opt,) = [p for p in cmd.params if p.name == "method"]
        return list(opt.type.choices)

    assert choices(explain) == [*METHODS, "smoothgrad_squared"]
    assert choices(explain_dataset_cmd) == list(METHODS)
    for name in ("bayes_shap", "eagle", "glime"):
        assert name in one_line(run(["explain", "--help"]))


@pytest.mark.parametrize("method", ["bayes_shap", "eagle", "glime", "lime", "lime_tabular"])
def test_stochastic_explainers_follow_seed(sklearn_files, method):
    f = sklearn_files

    def values(seed, out):
        r = run(["explain", "--model", f["model"], "--trust-model", "--data", f["csv"],
                 "--label-column", "outcome", "--method", method, "--n-samples", "40",
                 "--seed", seed, "--out", f["out"].parent / out])
        assert r.exit_code == 0, r.output
        exp = Explanation.load(f["out"].parent / out / "explanation.npz")
        return exp

    a, b, c = values(1, "a"), values(1, "b"), values(2, "c")
    np.testing.assert_array_equal(a.values, b.values)
    assert not np.array_equal(a.values, c.values)
    assert a.params.get("seed", 1) == 1


def test_tabular_only_explainer_on_images_is_named(tmp_path, image_folder):
    model = tmp_path / "net.pt"
    torch.jit.save(torch.jit.script(_TinyNet().eval()), model)
    r = run(["explain", "--model", model, "--data", image_folder, "--method", "lime_tabular",
             "--out", tmp_path / "o"])
    assert r.exit_code == 2, r.output
    assert "Invalid value for --method: lime_tabular explains tables" in one_line(r)


def test_n_samples_refused_where_the_explainer_draws_none(sklearn_files):
    f = sklearn_files
    r = run(["explain", "--model", f["model"], "--trust-model", "--data", f["csv"],
             "--label-column", "outcome", "--method", "occlusion", "--n-samples", "10",
             "--out", f["out"]])
    assert r.exit_code == 2 and "occlusion draws no samples" in one_line(r)


# ---------------------------------------------------------------- calix report on these outputs
def _explain_and_calibrate(tmp_path, sklearn_files, image_folder, monkeypatch):
    monkeypatch.setenv("CALIX_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "runs"
    f = sklearn_files
    r = run(["explain", "--model", f["model"], "--trust-model", "--data", f["csv"],
             "--label-column", "outcome", "--method", "kernel_shap", "--index", "2",
             "--out", root / "tabular"])
    assert r.exit_code == 0, r.output
    model = tmp_path / "net.pt"
    torch.jit.save(torch.jit.script(_TinyNet().eval()), model)
    r = run(["explain", "--model", model, "--data", image_folder, "--method", "occlusion",
             "--index", "0", "--index", "3", "--out", root / "images"])
    assert r.exit_code == 0, r.output
    r = run(["calibrate", "--data", "iris", "--method", "temperature", "--metric", "ece",
             "--n-eval", "20", "--out", root / "calibration"])
    assert r.exit_code == 0, r.output
    return root


def test_report_renders_explain_and_calibrate_outputs(tmp_path, sklearn_files, image_folder,
                                                      monkeypatch):
    root = _explain_and_calibrate(tmp_path, sklearn_files, image_folder, monkeypatch)
    r = run(["report", root])
    assert r.exit_code == 0, r.output
    html = (root / "report.html").read_text()
    n_figures = sum(len(json.loads((root / d / "results.json").read_text())["figures"])
                    for d in ("tabular", "images", "calibration"))
    # a bar chart per table row, a map beside and over each image, the calibration curve
    assert n_figures == 1 + 2 * 2 + 1
    assert html.count("data:image/png;base64,") == n_figures
    for text in ("kernel_shap: clf.joblib on patients.csv", "occlusion: net.pt on imgs",
                 "calibration: temperature for mlp on iris", "Table: explained inputs",
                 "Table: top features", "Table: calibration before and after",
                 "square/img0.png", "stripes/img0.png", "explanation.npz"):
        assert text in html, text
    assert "<script" not in html and "http" not in html.split("</style>")[1]
    # one explain output folder on its own renders as well
    r = run(["report", root / "images", "--out", tmp_path / "one" / "r.html"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "one" / "r.html").read_text().count("data:image/png;base64,") == 4


def test_report_of_user_model_outputs_loads_in_chromium(tmp_path, sklearn_files, image_folder,
                                                        monkeypatch):
    from tests._browser import chromium_path

    chromium_path()  # skips (or fails with CALIX_REQUIRE_BROWSER=1) before any work
    root = _explain_and_calibrate(tmp_path, sklearn_files, image_folder, monkeypatch)
    assert run(["report", root]).exit_code == 0
    page = load_page(root / "report.html")
    assert page["errors"] == []
    assert len(page["images"]) == 6
    assert all(i["decoded"] and i["complete"] and i["width"] > 0 for i in page["images"])
    for text in ("explained inputs", "square/img0.png", "calibration before and after"):
        assert text in page["text"]


# ---------------------------------------------------------------- a zoo model on a user's file
@pytest.mark.parametrize("label_first", [False, True], ids=["label-last", "label-column"])
def test_zoo_model_on_a_users_csv_indexes_the_files_rows(tmp_path, monkeypatch, label_first):
    from calix.data import load_csv

    monkeypatch.setenv("CALIX_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(2)
    X = rng.normal(size=(50, 3)).round(4) * [1.0, 3.0, 0.2] + [5.0, -2.0, 0.0]
    y = np.where(X[:, 0] > 5.0, "high", "low")
    cols = ["a", "b", "c"]
    body = [[*map(str, row), label] for row, label in zip(X, y, strict=True)]
    header = ["a", "b", "c", "level"]
    if label_first:  # the label column first, named on the command line
        body = [[r[-1], *r[:-1]] for r in body]
        header = ["level", *cols]
    csv = tmp_path / "measurements.csv"
    csv.write_text("\n".join(",".join(r) for r in [header, *body]) + "\n")
    extra = ["--label-column", "level"] if label_first else []
    out = tmp_path / "o"
    r = run(["explain", "--model", "mlp", "--data", csv, *extra, "--method", "occlusion",
             "--index", "7", "--index", "0", "--out", out])
    assert r.exit_code == 0, r.output
    exp = Explanation.load(out / "explanation.npz")
    # the inputs are rows 7 and 0 of the file, as the model saw them in training
    # (standardised): each matches exactly one row of the dataset calix trained on
    ds = load_csv(csv, target="level")
    every = np.concatenate([ds.X_train, ds.X_val, ds.X_test])
    labels = np.concatenate([ds.y_train, ds.y_val, ds.y_test])
    for j, i in enumerate([7, 0]):
        match = np.flatnonzero((every == exp.data[j]).all(1))
        assert len(match) == 1 and ds.class_names[labels[match[0]]] == y[i]
    rows = json.loads((out / "results.json").read_text())["tables"]["explained inputs"]
    assert [(r["input"], r["label"]) for r in rows] == [("row 7", y[7]), ("row 0", y[0])]
    r = run(["explain", "--model", "mlp", "--data", csv, *extra, "--index", "50",
             "--out", out])
    assert r.exit_code == 2 and "indices [50] outside the 50 data rows" in one_line(r)


@pytest.mark.parametrize("method", [*METHODS, "smoothgrad_squared"])
def test_every_registered_explainer_runs_on_a_users_torch_model(tmp_path, image_folder,
                                                                sklearn_files, method):
    """Every name of calix.explain.METHODS explains a user's torch model (state_dicts of the
    zoo's networks): on the CSV's rows, or (for explainers of images only, which say so for a
    table) on the images."""
    from calix.zoo import CNN, MLP

    torch.manual_seed(0)
    table, image = tmp_path / "tab.pt", tmp_path / "img.pt"
    torch.save(MLP(n_features=3, n_outputs=2).state_dict(), table)
    torch.save(CNN(in_channels=1, n_classes=2, image_size=32).state_dict(), image)
    out = tmp_path / "o"
    r = run(["explain", "--model", table, "--architecture", "mlp", "--num-classes", "2",
             "--data", sklearn_files["csv"], "--label-column", "outcome", "--method", method,
             "--index", "3", "--out", out])
    if r.exit_code == 0:
        shape = (1, 3)
    else:
        assert r.exit_code == 2 and "explains images" in one_line(r), r.output
        r = run(["explain", "--model", image, "--architecture", "cnn", "--num-classes", "2",
                 "--data", image_folder, "--method", method, "--index", "3", "--out", out])
        assert r.exit_code == 0, r.output
        shape = (1, 1, 32, 32)
    exp = Explanation.load(out / "explanation.npz")
    assert exp.values.shape == shape and np.isfinite(exp.values).all()
    assert np.abs(exp.values).sum() > 0 and exp.n_queries > 0


def test_flat_image_folder_has_no_labels(tmp_path, image_folder):
    import shutil

    flat = tmp_path / "flat"
    flat.mkdir()
    for f in sorted(image_folder.rglob("*.png")):
        shutil.copy(f, flat / f"{f.parent.name}_{f.name}")
    (flat / ".hidden.png").write_bytes(b"not read")
    model = tmp_path / "net.pt"
    torch.jit.save(torch.jit.script(_TinyNet().eval()), model)
    r = run(["explain", "--model", model, "--data", flat, "--method", "occlusion",
             "--index", "5", "--out", tmp_path / "o"])
    assert r.exit_code == 0, r.output
    (row,) = json.loads((tmp_path / "o" / "results.json").read_text()
                        )["tables"]["explained inputs"]
    assert row["input"] == "stripes_img2.png" and "label" not in row
    np.testing.assert_allclose(Explanation.load(tmp_path / "o" / "explanation.npz").data[0, 0],
                               _png(image_folder / "stripes" / "img2.png"), atol=1e-6)


def test_weights_that_do_not_fit_the_architecture(tmp_path, image_folder):
    from calix.zoo import CNN

    weights = tmp_path / "w.pt"
    torch.save(CNN(in_channels=1, n_classes=3, image_size=32).state_dict(), weights)
    r = run(["explain", "--model", weights, "--architecture", "cnn", "--num-classes", "2",
             "--data", image_folder, "--out", tmp_path / "o"])
    assert r.exit_code == 2, r.output
    assert f"Invalid value for --model: the weights in {weights} do not fit" in one_line(r)


# ---------------------------------------------------------------- explain-dataset on user files
def test_explain_dataset_on_a_users_joblib_model_and_csv(sklearn_files, tmp_path):
    """Every row of the user's CSV, read lazily by chunks, equals the library call on the same
    file (and the explained rows are the file's, in file order)."""
    import joblib

    from calix.parallel import CsvFile, explain_dataset, load_chunks

    out = tmp_path / "run"
    r = run(["explain-dataset", "--model", sklearn_files["model"], "--trust-model",
             "--data", sklearn_files["csv"], "--label-column", "outcome",
             "--background", sklearn_files["csv"], "--method", "kernel_shap",
             "--chunk-size", "16", "--out", out])
    assert r.exit_code == 0, r.output
    got = load_chunks(out)
    assert got.values.shape == (40, 3)
    ref = explain_dataset(CsvFile(sklearn_files["csv"], target="outcome"),
                          joblib.load(sklearn_files["model"]), "kernel_shap",
                          background=sklearn_files["X"], chunk_size=16, out=tmp_path / "ref")
    np.testing.assert_array_equal(got.values, ref.values)
    no_trust = run(["explain-dataset", "--model", sklearn_files["model"], "--data",
                    sklearn_files["csv"], "--method", "occlusion", "--out", tmp_path / "x"])
    assert no_trust.exit_code == 2 and "--trust-model" in one_line(no_trust)


def test_explain_dataset_on_a_users_torchscript_model_and_image_folder(tmp_path, image_folder):
    from calix.parallel import load_chunks

    net = _TinyNet().eval()
    model = tmp_path / "net.pt"
    torch.jit.save(torch.jit.script(net), model)
    out = tmp_path / "run"
    r = run(["explain-dataset", "--model", model, "--data", image_folder, "--channels", "1",
             "--method", "saliency", "--chunk-size", "4", "--out", out])
    assert r.exit_code == 0, r.output
    got = load_chunks(out)
    files = sorted(image_folder.rglob("*.png"))
    x = torch.from_numpy(np.stack([_png(f) for f in files])[:, None])
    with torch.no_grad():
        pred = net(x).argmax(1).numpy()
    np.testing.assert_array_equal(got.target, pred)  # the folder's images, sorted by path
    assert got.values.shape == (6, 1, 32, 32)
    zoo_only = run(["explain-dataset", "--data", "iris", "--label-column", "x",
                    "--method", "saliency", "--out", tmp_path / "y"])
    assert zoo_only.exit_code == 2 and "--label-column applies to a model file" in one_line(
        zoo_only)
