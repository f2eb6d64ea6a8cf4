"""docs/studies/<study>.md are generated from the run each page names: a page whose numbers
differ from its run fails here, and the pages and the report are rebuilt from results.json
alone."""

from __future__ import annotations

import html
import json
import shutil
from pathlib import Path

import pytest

from calix.report import claim_counts_text, write_report
from calix.studies import STUDIES
from calix.studies.pages import check_page, main, page_source, render_page, write_page

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "studies"


@pytest.mark.parametrize("name", list(STUDIES))
def test_page_is_generated_from_the_run_it_names(name):
    page = DOCS / f"{name}.md"
    source = page_source(page)
    assert source == f"docs/studies/runs/{name}/results.json", source
    doc = json.loads((ROOT / source).read_text())
    assert doc["study"] == name
    assert check_page(page, ROOT), (
        f"{page} differs from {source}: run `python -m calix.studies.pages docs/studies/runs`")
    text = page.read_text()
    for c in doc["claims"]:  # every verdict on the page is the run's
        assert f"| **{'holds' if c['holds'] else 'does not hold'}** | " \
               f"{c['claim'].replace('|', chr(92) + '|')} |" in text
    assert (DOCS / f"{name}.discussion.md").read_text().strip() in text


@pytest.mark.parametrize("name", list(STUDIES))
def test_quick_config_is_the_one_the_committed_run_recorded(name):
    """A study's ``Config.quick(seed)`` is what its committed quick run recorded (the run adds
    only sizes it measures), and configurations are frozen."""
    import dataclasses
    import importlib

    from calix.studies._base import to_jsonable

    config = importlib.import_module(f"calix.studies.{STUDIES[name]}").Config
    doc = json.loads((DOCS / "runs" / name / "results.json").read_text())
    quick = config.quick(doc["seed"])
    fields = to_jsonable(dataclasses.asdict(quick))
    recorded = {k: v for k, v in doc["config"].items() if k != "quick"}
    assert fields == {k: recorded.get(k) for k in fields}
    assert set(recorded) - set(fields) <= {"n_images", "regression_n_inputs", "timings_s"}
    full = config.full(doc["seed"])
    assert full != quick and dataclasses.fields(full) == dataclasses.fields(quick)
    first = dataclasses.fields(quick)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(quick, first, None)


def _copy_run(tmp_path: Path, name: str) -> tuple[Path, Path]:
    """The run's results.json alone (no figures, no arrays) and the page's discussion."""
    runs, docs = tmp_path / "docs" / "studies" / "runs", tmp_path / "docs" / "studies"
    (runs / name).mkdir(parents=True)
    shutil.copy(DOCS / "runs" / name / "results.json", runs / name / "results.json")
    shutil.copy(DOCS / f"{name}.discussion.md", docs / f"{name}.discussion.md")
    return runs, docs


def test_pages_and_report_regenerate_from_results_json_alone(tmp_path, monkeypatch):
    for name in STUDIES:
        runs, docs = _copy_run(tmp_path, name)
    assert sorted(p.name for p in runs.rglob("*") if p.is_file()) == ["results.json"] * len(STUDIES)
    monkeypatch.chdir(tmp_path)
    assert main(["docs/studies/runs", "--docs", "docs/studies"]) == 0
    for name in STUDIES:
        # the same bytes as the committed page: nothing on it comes from anywhere else
        assert (docs / f"{name}.md").read_text() == (DOCS / f"{name}.md").read_text()
        assert check_page(docs / f"{name}.md", tmp_path)
    assert main(["docs/studies/runs", "--docs", "docs/studies", "--check"]) == 0
    page = write_report(runs).read_text()
    for name in STUDIES:
        doc = json.loads((runs / name / "results.json").read_text())
        for c in doc["claims"]:
            assert html.escape(c["claim"], quote=True) in page
        assert html.escape(claim_counts_text(doc)) in page  # "k of n findings hold · ..."
        n_find = [c for c in doc["claims"] if c["kind"] == "finding"]
        if n_find:  # calix's own study has extensions and checks only
            assert (f"{sum(c['holds'] for c in n_find)} of {len(n_find)} findings hold"
                    in page)


def test_a_stale_page_fails(tmp_path, monkeypatch):
    name = "calibrate-to-interpret"
    runs, docs = _copy_run(tmp_path, name)
    monkeypatch.chdir(tmp_path)
    rel = Path(f"docs/studies/runs/{name}/results.json")
    path, same = write_page(rel, Path("docs/studies"))
    assert not same and check_page(path, tmp_path)
    # a number on the page edited by hand
    text = path.read_text()
    row = next(line for line in text.splitlines() if line.startswith("| none | "))
    path.write_text(text.replace(row, row.replace("| none | ", "| none | 9", 1)))
    assert not check_page(path, tmp_path)
    assert main(["docs/studies/runs", "--docs", "docs/studies", "--check"]) == 1
    # the run recomputed with another number, the page left as it was
    write_page(rel, Path("docs/studies"))
    assert check_page(path, tmp_path)
    doc = json.loads((runs / name / "results.json").read_text())
    doc["tables"]["calibration"][0]["ece"] += 0.01
    (runs / name / "results.json").write_text(json.dumps(doc, indent=2))
    assert not check_page(path, tmp_path)
    # a flipped verdict too
    write_page(rel, Path("docs/studies"))
    doc["claims"][0]["holds"] = not doc["claims"][0]["holds"]
    (runs / name / "results.json").write_text(json.dumps(doc, indent=2))
    assert not check_page(path, tmp_path)


def test_page_of_an_old_run_without_kinds(tmp_path):
    doc = {"study": "old", "config": {"quick": True}, "seed": 0, "wall_time_s": 1.0,
           "tables": {"t": [{"a": 1.5, "b": "x|y"}]},
           "claims": [{"claim": "x holds", "holds": True, "evidence": {"v": 0.25}}]}
    text = json.dumps(doc)
    page = render_page(doc, source="r/results.json", results_text=text)
    assert "### Claims (kind not recorded): 1 of 1 hold" in page
    assert "**Verdicts:** 1 of 1 claim holds." in page
    assert "| 1.5 | x\\|y |" in page  # table cells escaped for Markdown
    assert page_source_of(page, tmp_path) == "r/results.json"


def page_source_of(page: str, tmp_path: Path) -> str | None:
    p = tmp_path / "p.md"
    p.write_text(page)
    return page_source(p)


def test_hand_written_page_names_no_run(tmp_path):
    p = tmp_path / "x.md"
    p.write_text("# hand written\n")
    assert page_source(p) is None and not check_page(p, tmp_path)


@pytest.mark.parametrize("page", sorted(p.name for p in DOCS.glob("seeds-*.md")))
def test_seed_comparison_is_generated_from_the_runs_it_names(page, monkeypatch):
    """docs/studies/seeds-*.md: which verdicts change between two seeds, generated from the
    two folders of runs the page names."""
    from calix.studies.pages import verdict_changes

    first = (DOCS / page).read_text().split("\n", 1)[0]
    runs_a, runs_b = first.split(" from ", 1)[1].removesuffix(" -->").split(" and ")
    monkeypatch.chdir(ROOT)
    assert verdict_changes(runs_a, runs_b) == (DOCS / page).read_text()


def test_verdict_changes_lists_flips(tmp_path):
    from calix.studies.pages import verdict_changes

    for run, verdicts in (("a", [True, False, True]), ("b", [True, True, True])):
        (tmp_path / run / "s").mkdir(parents=True)
        doc = {"study": "s", "seed": 0 if run == "a" else 1, "config": {"quick": True},
               "claims": [{"claim": f"c{i}", "holds": v, "evidence": {}, "kind": k}
                          for i, (v, k) in enumerate(zip(verdicts, ["finding", "finding",
                                                                    "check"], strict=True))]}
        (tmp_path / run / "s" / "results.json").write_text(json.dumps(doc))
    page = verdict_changes(tmp_path / "a", tmp_path / "b")
    assert "| s | finding | 2 | 1 | 2 | 1 |" in page and "| s | check | 1 | 1 | 1 | 0 |" in page
    assert "| s | 2 | finding | c1 | does not hold | holds |" in page


def test_compare_runs_finds_a_changed_number(tmp_path):
    # tests/compare_runs.py: the same run twice is the same; one changed number is found
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "compare_runs", Path(__file__).parent / "compare_runs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    name = "recalx"
    for side in ("a", "b"):
        (tmp_path / side / name).mkdir(parents=True)
        shutil.copy(DOCS / "runs" / name / "results.json", tmp_path / side / name)
    assert mod.compare(tmp_path / "a", tmp_path / "b") == {name: []}
    doc = json.loads((tmp_path / "b" / name / "results.json").read_text())
    table = next(iter(doc["tables"]))
    row = doc["tables"][table][0]
    key = next(k for k, v in row.items() if isinstance(v, float))
    row[key] = row[key] * 1.01 + 1e-3
    doc["wall_time_s"] += 5  # ignored
    (tmp_path / "b" / name / "results.json").write_text(json.dumps(doc))
    diffs = mod.compare(tmp_path / "a", tmp_path / "b")[name]
    assert len(diffs) == 1 and f"/tables/{table}[0]/{key}" in diffs[0]
    assert mod.main([str(tmp_path / "a"), str(tmp_path / "b")]) == 1
