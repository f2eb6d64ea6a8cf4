"""The six studies (five reproduced, calix's ground truth) in quick mode through ``calix
reproduce``, the report over all of them in a real browser, and ``calix demo`` killed midway and
resumed without redoing finished work.

The quick runs are computed once per test session (a few minutes each on 2 cores) and shared.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from calix.cli import main
from calix.report import claim_counts_text, write_report
from calix.studies import STUDIES, is_finished, run_study
from calix.studies._base import KINDS
from tests._browser import load_page

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("study-cache")


@pytest.fixture(scope="session")
def quick_runs(tmp_path_factory, cache_dir):
    root = tmp_path_factory.mktemp("studies")
    old = os.environ.get("CALIX_CACHE")
    os.environ["CALIX_CACHE"] = str(cache_dir)
    outputs = {}
    try:
        for name in STUDIES:
            t0 = time.perf_counter()
            r = CliRunner().invoke(main, ["reproduce", name, "--quick", "--out",
                                          str(root / name)])
            assert r.exit_code == 0, (name, r.output, r.exception)
            outputs[name] = (r.output, time.perf_counter() - t0)
    finally:
        if old is None:
            os.environ.pop("CALIX_CACHE", None)
        else:
            os.environ["CALIX_CACHE"] = old
    return root, outputs


@pytest.mark.parametrize("name", list(STUDIES))
def test_quick_study_results(quick_runs, name):
    root, outputs = quick_runs
    out = root / name
    doc = json.loads((out / "results.json").read_text())
    assert doc["study"] == name and doc["seed"] == 0 and doc["config"]["quick"] is True
    assert set(doc) >= {"study", "config", "seed", "tables", "claims", "figures", "arrays"}
    assert doc["tables"] and all(rows for rows in doc["tables"].values())
    assert len(doc["claims"]) >= 3
    for c in doc["claims"]:
        assert isinstance(c["holds"], bool) and c["claim"]
        # every claim carries numbers computed from the run
        assert c["evidence"] and _has_number(c["evidence"]), c
        # and says what it is: a finding quotes the paper, the others say why they are not one
        assert c["kind"] in KINDS, c
        assert c.get("quote") if c["kind"] == "finding" else c.get("paper"), c
        assert all(isinstance(v, bool) for v in c.get("sensitivity", {}).values()), c
    if name != "ground-truth":  # calix's own study has extensions and checks only
        assert any(c["kind"] == "finding" for c in doc["claims"])
    assert doc["figures"]
    for fig in doc["figures"]:
        assert (out / fig["file"]).read_bytes()[:8] == PNG
    for arr in doc["arrays"]:
        assert (out / arr).is_file()
    assert (out / "report.html").is_file()
    assert f"{name}: {claim_counts_text(doc)}; wrote" in outputs[name][0]


def _has_number(v) -> bool:
    if isinstance(v, bool):
        return False
    if isinstance(v, (int, float)):
        return True
    if isinstance(v, dict):
        return any(_has_number(x) for x in v.values())
    if isinstance(v, list):
        return any(_has_number(x) for x in v)
    return False


def test_report_of_all_studies_in_chromium(quick_runs):
    root, _ = quick_runs
    path = write_report(root, title="all studies")
    page = load_page(path)
    assert page["errors"] == []
    n_figures = sum(len(json.loads((root / s / "results.json").read_text())["figures"])
                    for s in STUDIES)
    assert len(page["images"]) == n_figures
    assert all(i["decoded"] and i["complete"] and i["width"] > 0 for i in page["images"])
    for name in STUDIES:
        assert name in page["text"]
        doc = json.loads((root / name / "results.json").read_text())
        findings = [c for c in doc["claims"] if c["kind"] == "finding"]
        assert claim_counts_text(doc) in page["text"]
        if findings:
            assert f"{sum(c['holds'] for c in findings)} of {len(findings)} findings hold" \
                in page["text"]


def test_degenerate_maps_are_counted_not_averaged(quick_runs):
    """calibrate-to-interpret lists every constant / NaN map and leaves its image out of the
    explainer's means (the mean over all images is kept beside it)."""
    root, _ = quick_runs
    doc = json.loads((root / "calibrate-to-interpret" / "results.json").read_text())
    rows = doc["tables"]["explanations"]
    listed = [r for r in doc["tables"]["degenerate_maps"] if r["image"] is not None]
    n = doc["config"]["n_images"]
    for r in rows:
        mine = {d["image"] for d in listed if d["explainer"] == r["explainer"]}
        assert r["n_images_used"] == n - len(mine)
        assert r["degenerate_maps"] == sum(d["calibrator"] == r["calibrator"]
                                           and d["explainer"] == r["explainer"]
                                           for d in listed)
    for c in doc["claims"]:
        if "images_excluded_degenerate" in c["evidence"]:
            assert _has_number(c["evidence"]["images_excluded_degenerate"])


def test_rerun_reads_back(quick_runs, monkeypatch, cache_dir):
    root, _ = quick_runs
    monkeypatch.setenv("CALIX_CACHE", str(cache_dir))
    name = "recalx"
    stamp = (root / name / "results.json").stat().st_mtime_ns
    t0 = time.perf_counter()
    run_study(name, root / name, quick=True, seed=0)
    assert time.perf_counter() - t0 < 5
    assert (root / name / "results.json").stat().st_mtime_ns == stamp
    # another seed or size is not a finished run of this one
    assert is_finished(name, root / name, quick=True, seed=0)
    assert not is_finished(name, root / name, quick=True, seed=1)
    assert not is_finished(name, root / name, quick=False, seed=0)
    assert not is_finished("fpa", root / name, quick=True, seed=0)


def test_unknown_study():
    with pytest.raises(ValueError, match="unknown study 'nope'"):
        run_study("nope", "x")
    r = CliRunner().invoke(main, ["reproduce", "nope", "--quick"])
    assert r.exit_code != 0


def test_demo_killed_midway_resumes(tmp_path, cache_dir, quick_runs):
    """Kill ``calix demo`` after its first study finished; the rerun keeps that study."""
    out = tmp_path / "demo"
    env = {**os.environ, "CALIX_CACHE": str(cache_dir)}
    first, second = "recalx", "eagle"
    cmd = [sys.executable, "-m", "calix.cli", "demo", "--out", str(out), "--study", first,
           "--study", second]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    done = out / first / "results.json"
    try:
        deadline = time.time() + 900
        while not done.is_file() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.5)
        assert done.is_file(), "the first study did not finish"
        time.sleep(2)  # well into the second study
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode != 0, "the demo finished before it was killed; nothing was tested"
    assert not (out / second / "results.json").is_file()
    stamp = done.stat().st_mtime_ns
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "recalx: finished earlier, read back" in r.stdout
    assert done.stat().st_mtime_ns == stamp  # not recomputed
    assert (out / second / "results.json").is_file()
    assert (out / "report.html").is_file()
    assert f"report: {out / 'report.html'}" in r.stdout


def test_demo_rejects_unknown_study(tmp_path):
    from calix.demo import run_demo

    with pytest.raises(ValueError, match="unknown studies"):
        run_demo(tmp_path, studies=["nope"])


def test_calibrate_to_interpret_pools_the_images_of_several_models(tmp_path):
    """A full run shares the images out among its models: the pooled set puts every model's
    Lipschitz images first (the claims read the Lipschitz constants of the first ``n_lip``
    pooled images) and keeps each image's maps, curves and scores together."""
    import numpy as np
    import torch

    from calix.metrics.faithfulness import Curve
    from calix.studies import calibrate_to_interpret as c2i
    from calix.studies._base import StudyContext

    assert c2i._split(12, [34, 33, 33]) == [4, 4, 4]
    assert c2i._split(5, [2, 9, 9]) == [2, 2, 1]  # none above its size
    assert c2i._split(4, [12]) == [4]
    jobs = [(c, e) for c in c2i.CALIBRATORS for e in c2i.EXPLAINERS]

    def part(first: int, n: int, n_lip: int) -> c2i._ModelMaps:
        ids = np.arange(first, first + n)  # each image carries its own id in every array
        maps = {k: np.broadcast_to(ids[:, None, None, None] / 100.0, (n, 1, 4, 4)).copy()
                for k in jobs}
        curves = {k: Curve(fractions=np.linspace(0, 1, 3), scores=np.stack([ids] * 3, 1) / 100,
                           auc=ids / 100.0, target=ids % 3, n_queries=n) for k in jobs}
        return c2i._ModelMaps(
            torch.as_tensor(ids, dtype=torch.float32)[:, None], ids, maps, curves,
            {c: ids % 3 for c in c2i.CALIBRATORS}, {c: ids / 50.0 for c in c2i.CALIBRATORS},
            {k: ids[:n_lip] / 10.0 for k in jobs}, {k: 1.0 for k in jobs},
            {k: np.zeros(n, bool) for k in jobs}, {"none": ids / 100.0}, n_lip)

    ctx = StudyContext("calibrate-to-interpret", tmp_path, quick=True, seed=0)
    ev = c2i._pool_maps(ctx, [part(0, 5, 2), part(100, 4, 2)])
    order = [0, 1, 100, 101, 2, 3, 4, 102, 103]  # the Lipschitz images of both models first
    assert ev.idx.tolist() == order and ev.n_lip == 4
    assert ev.x[:, 0].tolist() == order
    for k in jobs:
        assert np.allclose(ev.maps[k][:, 0, 0, 0] * 100, order)
        assert np.allclose(ev.curves[k].auc * 100, order)
        assert np.allclose(ev.lips[k] * 10, order[:4])
        assert ev.curves[k].n_queries == 9
    assert ev.row[("none", "MP")]["n_images_used"] == 9
    assert ev.row[("none", "MP")]["explain_seconds"] == 2.0


def test_recalx_calibration_claims_pool_the_models_of_a_case(tmp_path):
    """With several models per case the calibration claims read the models' mean CE^MAX (and
    mean CE per level bin); the evidence says for how many models ReCalX was lower."""
    import numpy as np

    from calix.studies import recalx
    from calix.studies._base import StudyContext

    ce = {0: {"none": 0.40, "temperature": 0.10, "recalx": 0.05},    # ReCalX lower
          1000: {"none": 0.30, "temperature": 0.08, "recalx": 0.09}}  # ReCalX higher
    rows = [{"case": "cnn/d/zero", "model_seed": s, "method": m, "ce_max": v,
             "clean_accuracy": 0.9} for s, ms in ce.items() for m, v in ms.items()]
    level_rows = [{"case": "cnn/d/zero", "model_seed": s, "ce_none": v}
                  for s, vs in ((0, [0.1, 0.4, np.nan]), (1000, [0.1, 0.3, 0.2]))
                  for v in vs]
    ctx = StudyContext("recalx", tmp_path, quick=False, seed=0)
    recalx._calibration_claims(ctx, rows, level_rows, 2)
    cut, vs_ts, spread, acc = ctx.claims
    assert "2 models' mean" in vs_ts.claim
    assert vs_ts.evidence["recalx_vs_temperature_ce_max"]["cnn/d/zero"] == pytest.approx(
        (0.07, 0.09))
    assert vs_ts.holds and vs_ts.evidence["models_where_recalx_lower"]["cnn/d/zero"] == "1/2"
    assert vs_ts.sensitivity["for every model in every case"] is False
    assert cut.evidence["relative_reduction"]["cnn/d/zero"] == pytest.approx(1 - 0.07 / 0.35)
    # per bin: mean over the models with a value (the NaN bin keeps model 1000's 0.2)
    got = spread.evidence["uncalibrated_ce_by_level"]["cnn/d/zero"]
    assert (got["min_over_levels"], got["max_over_levels"]) == pytest.approx((0.1, 0.35))
    assert acc.holds and acc.kind == "check"
