"""Claim kinds, the decision rules of comparison claims, the detection of degenerate maps,
and how the report shows them apart."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from calix.report import claim_counts, claim_counts_text, write_report
from calix.studies._base import KINDS, Claim, StudyContext, run_in_context
from calix.studies._stats import (
    bootstrap_mean_ci,
    degenerate_maps,
    majority,
    paired,
    paired_binary,
)


# ---------------------------------------------------------------------------- decision rules
def test_paired_matches_scipy_and_reads_the_direction():
    rng = np.random.default_rng(0)
    b = rng.normal(size=20)
    a = b + 0.5 + 0.3 * rng.normal(size=20)
    up = paired(a, b)
    ref = stats.ttest_rel(a, b, alternative="greater")
    assert up["p"] == pytest.approx(ref.pvalue) and up["t"] == pytest.approx(ref.statistic)
    assert up["significant"] and up["n"] == 20
    assert up["ci95"][0] < up["mean_diff"] < up["ci95"][1]
    assert up["p_wilcoxon"] == pytest.approx(
        stats.wilcoxon(a - b, alternative="greater").pvalue)
    down = paired(a, b, alternative="less")
    assert not down["significant"] and down["p"] == pytest.approx(1 - up["p"])


def test_paired_is_not_fooled_by_one_large_pair():
    """A mean difference carried by a single input is not significant."""
    b = np.zeros(12)
    a = np.zeros(12) - 0.01
    a[9] = 0.8  # one broken input
    t = paired(a, b)
    assert t["mean_diff"] > 0 and not t["significant"]
    assert not paired(a, b, alternative="less")["significant"]  # nor the other way


def test_paired_drops_non_finite_pairs_and_handles_ties():
    a = np.array([1.0, 2.0, np.nan, 4.0])
    b = np.array([0.0, 1.0, 0.0, 3.0])
    t = paired(a, b)
    assert t["n"] == 3 and t["n_dropped"] == 1
    assert t["mean_diff"] == 1.0 and t["significant"]  # every difference equal and positive
    same = paired(b, b)
    assert same["mean_diff"] == 0 and not same["significant"] and same["p_wilcoxon"] == 1.0
    assert not paired([1.0], [0.0])["significant"]  # one pair decides nothing
    with pytest.raises(ValueError, match="same length"):
        paired([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="alternative"):
        paired([1.0, 2.0], [1.0, 2.0], alternative="two-sided")


def test_paired_binary_is_the_exact_mcnemar_tail():
    """8 inputs pass only under a, 1 only under b, 11 under both or neither: the one-sided
    p is P(Binom(9, 1/2) >= 8) = (9 + 1) / 2**9."""
    a = np.array([1] * 8 + [0] + [1] * 6 + [0] * 5, dtype=float)
    b = np.array([0] * 8 + [1] + [1] * 6 + [0] * 5, dtype=float)
    t = paired_binary(a, b)
    assert (t["up"], t["down"], t["n"]) == (8, 1, 20)
    assert t["p"] == pytest.approx(10 / 512, rel=1e-12) and t["significant"]
    assert t["rate_a"] == 0.7 and t["rate_b"] == 0.35
    rev = paired_binary(a, b, alternative="less")
    assert rev["p"] == pytest.approx(1 - 1 / 512, rel=1e-12) and not rev["significant"]
    # a rate already at 1 leaves nothing to raise: no discordant input, p = 1
    ones = np.ones(30)
    assert paired_binary(ones, ones)["p"] == 1.0
    assert not paired_binary(ones, ones)["significant"]
    with pytest.raises(ValueError, match="0 or 1"):
        paired_binary([0.5, 1.0], [1.0, 1.0])
    with pytest.raises(ValueError, match="same length"):
        paired_binary([1.0, 0.0], [1.0])


def test_bootstrap_interval_covers_the_mean():
    v = np.random.default_rng(1).normal(3.0, 1.0, 200)
    lo, hi = bootstrap_mean_ci(v, seed=0)
    assert lo < v.mean() < hi and hi - lo < 0.5
    assert bootstrap_mean_ci(v, seed=0) == [lo, hi]  # seeded
    assert all(np.isnan(bootstrap_mean_ci([np.nan])))


def test_degenerate_maps():
    rng = np.random.default_rng(0)
    maps = rng.random((5, 1, 4, 4))
    maps[1] = 0.0  # an optimisation that deleted nothing
    maps[2] = 7.5  # constant, not zero
    maps[3, 0, 0, 0] = np.nan
    maps[4] = 1.0
    maps[4, 0, 1, 1] = 1.0 + 1e-3  # a tiny but real difference
    assert degenerate_maps(maps).tolist() == [False, True, True, True, False]


def test_majority():
    assert majority([True, True, False]) and not majority([True, False])


# ---------------------------------------------------------------------------- claim kinds
def test_claim_kind_quote_and_sensitivity_in_results(tmp_path):
    def study(ctx: StudyContext) -> None:
        ctx.claim("a beats b", True, {"d": 0.2}, quote="a beats b.", paper="Table 1",
                  sensitivity={"stricter": False, "looser": True})
        ctx.claim("argmax kept", True, {"n": 3}, kind="check")
        ctx.claim("c is new", False, {"x": 1.0}, kind="extension")

    doc = run_in_context("toy", study, StudyContext("toy", tmp_path / "toy"))
    claims = doc["claims"]
    assert [c["kind"] for c in claims] == ["finding", "check", "extension"]
    assert claims[0]["quote"] == "a beats b." and claims[0]["sensitivity"] == {
        "stricter": False, "looser": True}
    assert "quote" not in claims[1] and "sensitivity" not in claims[1]
    assert Claim.from_dict(claims[0]).flips == ["stricter"]
    assert claim_counts(doc) == {"finding": (1, 1), "check": (1, 1), "extension": (0, 1)}
    assert claim_counts_text(doc) == "1 of 1 finding holds · 1 of 1 check · 0 of 1 extension"
    with pytest.raises(ValueError, match="kind must be one of"):
        Claim("x", True, {}, kind="opinion")
    assert set(KINDS) == {"finding", "check", "extension"}


def test_old_results_without_kinds_still_render(tmp_path):
    """A results.json written before claims had kinds reads back and renders, its claims
    shown as of unrecorded kind."""
    old = {"study": "old", "config": {"quick": True}, "seed": 0, "tables": {},
           "claims": [{"claim": "x holds", "holds": True, "evidence": {"v": 1.0},
                       "paper": "p"},
                      {"claim": "y holds", "holds": False, "evidence": {"v": 0.0}}]}
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "results.json").write_text(json.dumps(old))
    c = Claim.from_dict(old["claims"][0])
    assert c.kind is None and c.quote == "" and c.sensitivity == {}
    assert claim_counts(old) == {None: (1, 2)}
    assert claim_counts_text(old) == "1 of 2 claims hold"
    assert claim_counts_text({"claims": []}) == "no claims"
    html = write_report(tmp_path).read_text()
    assert "1 of 2 claims hold" in html and "kind not recorded" in html
    assert "x holds" in html and "y holds" in html


def test_report_shows_kinds_apart(tmp_path):
    def study(ctx: StudyContext) -> None:
        ctx.claim("finding one", True, {"d": 0.2}, quote="The paper says so.",
                  sensitivity={"a stricter rule": False})
        ctx.claim("finding two", False, {"d": -0.1})
        ctx.claim("a check", True, {"n": 3}, kind="check")

    run_in_context("toy", study, StudyContext("toy", tmp_path / "toy"))
    html = write_report(tmp_path).read_text()
    assert "1 of 2 findings hold · 1 of 1 check" in html  # the contents table
    assert "Findings (the paper&#x27;s empirical statements): 1 of 2 hold" in html
    assert "Checks (hold by construction or test the implementation): 1 of 1 hold" in html
    assert "&ldquo;The paper says so.&rdquo;" in html
    assert "a stricter rule: does not hold <span class='flip'>(verdict flips)</span>" in html
    assert "1 of 1 flip the verdict" in html


@pytest.mark.parametrize("claim, expected", [
    ({"claim": "x", "holds": True, "evidence": {}, "kind": "opinion"},
     "claims[0].kind must be finding, check or extension"),
    ({"claim": "x", "holds": True, "evidence": {}, "sensitivity": [True]},
     "claims[0].sensitivity must be an object"),
])
def test_malformed_kind_or_sensitivity_named(tmp_path, claim, expected):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "results.json").write_text(json.dumps({"study": "s",
                                                             "claims": [claim]}))
    with pytest.raises(ValueError, match=expected.replace("[", r"\[").replace("]", r"\]")):
        write_report(tmp_path)
