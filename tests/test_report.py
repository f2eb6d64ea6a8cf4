"""The HTML report: content from results.json, and a real browser loads it cleanly."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from calix.report import find_results, write_report
from calix.studies._base import StudyContext, run_in_context, to_jsonable, write_json_atomic
from tests._browser import load_page


def _toy_study(ctx: StudyContext) -> None:
    from calix.plot import _plt

    ctx.configure(n=3)
    ctx.table("scores", [{"method": "a", "score": 0.25}, {"method": "b<i>", "score": np.nan}])
    ctx.claim("a beats b", 0.25 > 0.1, {"a": 0.25, "b": 0.1}, paper="a > b")
    ctx.claim("b beats a", 0.1 > 0.25, {"a": 0.25, "b": 0.1})
    plt = _plt()
    for k in range(2):
        fig, ax = plt.subplots(figsize=(2, 2))
        ax.plot([0, 1], [k, 1 - k])
        ctx.figure(f"fig{k}", fig, caption=f"figure {k}")


@pytest.fixture
def study_dir(tmp_path):
    for name in ("toy-one", "toy-two"):
        run_in_context(name, _toy_study, StudyContext(name, tmp_path / name, seed=3))
    return tmp_path


def test_results_json_schema(study_dir):
    doc = json.loads((study_dir / "toy-one" / "results.json").read_text())
    assert doc["study"] == "toy-one" and doc["seed"] == 3
    assert doc["config"] == {"quick": True, "n": 3}
    assert [c["holds"] for c in doc["claims"]] == [True, False]
    assert doc["claims"][0]["evidence"] == {"a": 0.25, "b": 0.1}
    assert doc["tables"]["scores"][1]["score"] is None  # NaN is written as null, not NaN
    assert [f["file"] for f in doc["figures"]] == ["fig0.png", "fig1.png"]


def test_report_content(study_dir):
    path = write_report(study_dir)
    html = path.read_text()
    assert path == study_dir / "report.html"
    assert html.count("data:image/png;base64,") == 4  # self-contained: 2 figures x 2 studies
    assert "b&lt;i&gt;" in html and "b<i>" not in html  # table text is escaped
    assert html.count("b-holds'>holds") == 2 and html.count("does not hold") == 2
    assert "<script" not in html and "http" not in html.split("</style>")[1]
    assert [d["study"] for _, d in find_results(study_dir)] == ["toy-one", "toy-two"]


def test_report_loads_in_chromium(study_dir):
    page = load_page(write_report(study_dir))
    assert page["errors"] == []
    assert len(page["images"]) == 4
    assert all(i["decoded"] and i["complete"] and i["width"] > 0 for i in page["images"])
    assert "a beats b" in page["text"] and "does not hold" in page["text"]


def test_report_only_selected_folders(study_dir):
    html = write_report(study_dir, only=["toy-two"]).read_text()
    assert "toy-two" in html and "toy-one" not in html


def test_rerun_never_leaves_stale_results(tmp_path, monkeypatch):
    """A recomputation removes the old results.json first, so an interrupted rerun is not
    read back as finished."""
    import calix.studies as studies

    def boom(ctx):
        raise KeyboardInterrupt

    monkeypatch.setattr(studies, "_module", lambda name: type("M", (), {"run": boom}))
    out = tmp_path / "s"
    run_in_context("recalx", _toy_study, StudyContext("recalx", out))
    assert studies.is_finished("recalx", out, quick=True, seed=0)
    with pytest.raises(KeyboardInterrupt):
        studies.run_study("recalx", out, quick=True, seed=0, resume=False)
    assert not studies.is_finished("recalx", out, quick=True, seed=0)


def test_report_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="results folder not found"):
        write_report(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="no study results.json"):
        write_report(tmp_path)
    (tmp_path / "results.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        write_report(tmp_path)


def test_missing_figure_is_shown_not_hidden(study_dir):
    (study_dir / "toy-one" / "fig0.png").unlink()
    html = write_report(study_dir).read_text()
    assert "missing figure fig0.png" in html


def test_json_helpers(tmp_path, monkeypatch):
    import torch

    doc = to_jsonable({"a": np.float32(1.5), "b": np.arange(3), "c": torch.tensor([1.0]),
                       "d": float("inf"), "e": np.bool_(True), 1: (2, 3)})
    assert doc == {"a": 1.5, "b": [0, 1, 2], "c": [1.0], "d": None, "e": True, "1": [2, 3]}
    with pytest.raises(TypeError, match="cannot write object"):
        to_jsonable(object())
    write_json_atomic(tmp_path / "x.json", {"v": 1})
    assert json.loads((tmp_path / "x.json").read_text()) == {"v": 1}
    assert not list(tmp_path.glob("*.tmp"))
    # through calix._io.atomic_write: a temporary file of this process, fsynced and renamed
    seen = []
    real_replace = os.replace

    def replace(src, dst):
        seen.append(Path(src).name)
        real_replace(src, dst)

    import calix._io

    monkeypatch.setattr(calix._io.os, "replace", replace)
    write_json_atomic(tmp_path / "y.json", {"v": 2})
    ctx = StudyContext("toy", tmp_path / "toy")
    ctx.arrays("a", x=np.arange(3))
    assert np.load(tmp_path / "toy" / "a.npz")["x"].tolist() == [0, 1, 2]
    assert len(seen) == 2 and all(f"~{os.getpid()}~" in name for name in seen)
    assert not list(tmp_path.rglob("*.tmp"))


@pytest.mark.parametrize("doc, expected", [
    ({"kind": 3}, "'kind' must be a name (a string), got int 3"),
    ({"kind": "explain", "title": ["x"]}, "'title' must be a string"),
    ({"kind": "explain", "config": [1]}, "'config' must be an object, got list [1]"),
    ({"kind": "explain", "tables": {"t": [1]}}, "tables['t'] must be a list of objects"),
    ({"kind": "explain", "figures": [{"file": 2}]},
     "figures[0] must be an object with a 'file' name"),
    ({"kind": "explain", "figures": [{"file": "a.png", "caption": 1}]},
     "figures[0].caption must be a string"),
    ({"claims": []}, "'study' must be a name (a string), got nothing"),
    ({"study": "s"}, "'claims' must be a list of objects, got nothing"),
], ids=["kind-int", "title-list", "config-list", "table-row-int", "figure-file-int",
        "caption-int", "claims-without-study", "study-without-claims"])
def test_malformed_results_name_the_file_and_field(tmp_path, doc, expected):
    path = tmp_path / "run" / "results.json"
    path.parent.mkdir()
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError) as err:
        write_report(tmp_path)
    assert str(err.value).startswith(f"{path} is malformed: {expected}")
    assert not (tmp_path / "report.html").exists()


def test_other_json_is_skipped_and_said_when_nothing_is_left(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps({"accuracy": 0.9}))
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "results.json").write_text(json.dumps([1, 2]))
    assert find_results(tmp_path) == []
    with pytest.raises(FileNotFoundError, match="no study results.json .*calix explain"):
        write_report(tmp_path)


def test_command_output_section(tmp_path):
    from calix.plot import _plt

    fig, ax = _plt().subplots(figsize=(2, 2))
    ax.plot([0, 1], [1, 0])
    fig.savefig(tmp_path / "bars.png")
    (tmp_path / "secret.png").write_bytes(b"\x89PNG not for the page")
    run = tmp_path / "run"
    run.mkdir()
    (run / "bars.png").write_bytes((tmp_path / "bars.png").read_bytes())
    doc = {"kind": "explain", "title": "lime: m.pt on d.csv", "config": {"seed": 4},
           "n_queries": 120, "explanation": "explanation.npz",
           "tables": {"explained inputs": [{"index": 3, "predicted": "yes<b>"}]},
           "figures": [{"file": "bars.png", "caption": "row 3"},
                       {"file": "../secret.png"}]}
    (run / "results.json").write_text(json.dumps(doc))
    html = write_report(tmp_path, tmp_path / "new" / "folder" / "r.html").read_text()
    assert "lime: m.pt on d.csv" in html and "Table: explained inputs" in html
    assert "yes&lt;b&gt;" in html and "model queries: 120" in html
    assert html.count("data:image/png;base64,") == 1  # the file outside its folder is not read
    assert "figure ../secret.png lies outside its folder" in html
    assert "<td class='txt'>explain</td>" in html  # the contents table names the kind


def test_write_report_checks_its_output_first(tmp_path, study_dir):
    from calix._io import OutputPathError

    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(OutputPathError, match="it exists and is not a folder"):
        write_report(study_dir, blocker / "report.html")
    with pytest.raises(OutputPathError, match="is a folder; give a file name"):
        write_report(study_dir, study_dir)
