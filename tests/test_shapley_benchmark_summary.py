"""The summaries of benchmarks/shapley.py, on a hand-made report whose answers are known."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import shapley as bench  # noqa: E402


def _report():
    """Two games, two budgets each; 'B' cannot run at g1's first budget."""
    games = {"g1": {"name": "one", "d": 4, "budgets": [20, 40]},
             "g2": {"name": "two", "d": 5, "budgets": [25, 50]}}
    results = {
        "g1": {"A": {"20": {"nse": 1.0}, "40": {"nse": 0.5}},
               "B": {"20": {"error": "budget too small"}, "40": {"nse": 2.0}}},
        "g2": {"A": {"25": {"nse": 3.0}, "50": {"nse": 0.1}},
               "B": {"25": {"nse": 1.0}, "50": {"nse": 0.1}}},
    }
    return {"games": games, "results": results}


def test_worst_ratios_names_each_estimators_worst_cell(capsys):
    worst = bench.worst_ratios(_report())
    # A: 1 (g1 5d), 1 (g1 10d), 3 (g2 5d), 1 (g2 10d); B: 4 (g1 10d), 1, 1; error cell skipped
    assert list(worst) == ["A", "B"]  # lowest first
    assert worst["A"] == {"ratio": pytest.approx(3.0), "game": "two", "budget": "5d"}
    assert worst["B"] == {"ratio": pytest.approx(4.0), "game": "one", "budget": "10d"}
    out = capsys.readouterr().out
    assert "(two 5d)" in out and "(one 10d)" in out


def test_worst_ratios_floors_zero_errors():
    report = _report()
    report["results"]["g2"]["A"]["50"]["nse"] = 0.0  # exact: ratios against the floor
    worst = bench.worst_ratios(report)
    assert worst["B"]["ratio"] == pytest.approx(0.1 / bench.FLOOR)
    assert worst["B"]["budget"] == "10d" and worst["B"]["game"] == "two"
