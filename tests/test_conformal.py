"""Split conformal classification (calix.conformal): the finite-sample quantile, coverage
bounds on exchangeable data and on a zoo model, exact agreement with MAPIE, RAPS(λ=0) = APS,
the metrics against brute force, per-level-bin calibration, the by-level procedure, and the
errors for bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from calix.conformal import (
    APS,
    LAC,
    RAPS,
    SCORES,
    LevelConformal,
    _ranked,
    class_conditional_coverage,
    conformal_by_level,
    conformal_quantile,
    coverage,
    mean_set_size,
    min_calibration_size,
    size_stratified_coverage,
)

ALPHA = 0.1


def _synthetic(n: int, k: int = 5, scale: float = 2.0, seed: int = 0):
    """Logits and labels drawn from their own softmax: exchangeable rows, continuous scores."""
    g = torch.Generator().manual_seed(seed)
    z = scale * torch.randn(n, k, generator=g, dtype=torch.float64)
    y = torch.multinomial(torch.softmax(z, 1), 1, generator=g).squeeze(1)
    return z, y


#: (constructor, kwargs, whether theory bounds coverage above by 1 − α + 1/(n+1))
VARIANTS = [
    (LAC, {}, True),
    (APS, {"randomized": True}, True),
    (APS, {"randomized": False}, False),
    (RAPS, {"randomized": True, "k_reg": 1, "lam": 0.1}, True),
    (RAPS, {"randomized": False, "k_reg": 1, "lam": 0.1}, False),
]
IDS = ["lac", "aps-rand", "aps", "raps-rand", "raps"]


# ---------------------------------------------------------------------------- quantile
def test_quantile_is_the_order_statistic_of_rank_ceil_n_plus_1_times_1_minus_alpha():
    rng = np.random.default_rng(0)
    for n in (9, 10, 19, 99, 100, 1000):
        s = rng.random(n)
        for alpha in (0.05, 0.1, 0.2, 0.5):
            if n < min_calibration_size(alpha):
                continue
            # integer arithmetic on alpha as a decimal: 1 − α = (100 − 100α)/100
            k = -(-(n + 1) * round(100 * (1 - alpha)) // 100)
            assert conformal_quantile(s, alpha) == np.sort(s)[k - 1]


def test_quantile_rank_is_not_moved_by_float_rounding():
    # (n+1)(1−α) is an integer here; float arithmetic can land just above it (e.g.
    # 10 * (1 - 0.7) = 3.0000000000000004) and the ceiling would take one rank too many
    assert 10 * (1 - 0.7) > 3
    assert conformal_quantile(np.arange(9.0), 0.7) == 2.0  # the 3rd smallest


def test_min_calibration_size_is_the_smallest_n_with_a_finite_threshold():
    for alpha in (0.5, 0.2, 0.1, 0.05, 0.01, 0.3):
        n_min = min_calibration_size(alpha)
        conformal_quantile(np.ones(n_min), alpha)
        with pytest.raises(ValueError, match=rf"needs n >= {n_min}"):
            conformal_quantile(np.ones(n_min - 1), alpha)
    assert (min_calibration_size(0.1), min_calibration_size(0.05)) == (9, 19)


# ---------------------------------------------------------------------------- coverage theory
def _coverage_over_splits(z, y, cls, kw, *, n_cal, n_test, repeats, output="logit"):
    covs, empty = [], 0
    for r in range(repeats):
        perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(1000 + r))
        cal, test = perm[:n_cal], perm[n_cal:n_cal + n_test]
        c = cls(output=output, alpha=ALPHA, seed=r, **kw).fit(z[cal], y[cal])
        sets = c.predict_set(z[test])
        covs.append(coverage(sets, y[test]))
        empty += int((sets.sum(1) == 0).sum())
    return float(np.mean(covs)), empty


def _tolerance(n_cal: int, n_test: int, repeats: int) -> float:
    """3 standard errors of the mean coverage over the repeated splits: a split's coverage
    varies by the Beta spread of the conditional coverage, ≈ α(1−α)/(n_cal+2), plus the
    binomial spread of its n_test test rows, α(1−α)/n_test."""
    v = ALPHA * (1 - ALPHA) * (1 / (n_cal + 2) + 1 / n_test)
    return 3 * math.sqrt(v / repeats)


@pytest.mark.parametrize("cls,kw,upper", VARIANTS, ids=IDS)
def test_coverage_is_nominal_on_exchangeable_synthetic_data(cls, kw, upper):
    z, y = _synthetic(6000)
    n_cal, n_test, repeats = 200, 1000, 100
    mean, empty = _coverage_over_splits(z, y, cls, kw, n_cal=n_cal, n_test=n_test,
                                        repeats=repeats)
    tol = _tolerance(n_cal, n_test, repeats)
    assert mean >= 1 - ALPHA - tol
    if upper:
        assert mean <= 1 - ALPHA + 1 / (n_cal + 1) + tol
    if cls is not LAC and not kw["randomized"]:
        assert empty == 0  # the non-randomised sets always hold the top label


@pytest.fixture(scope="module")
def digits_logits(digits):
    """Logits of the zoo MLP on the digits validation and test splits (719 rows, pooled)."""
    from calix import zoo

    model = zoo.train("mlp", digits, seed=0).wrap()
    X = np.concatenate([digits.X_val, digits.X_test])
    y = torch.as_tensor(np.concatenate([digits.y_val, digits.y_test]))
    return model.forward(X, grad=False).double(), y


@pytest.mark.parametrize("cls,kw,upper", VARIANTS, ids=IDS)
def test_coverage_is_nominal_on_a_zoo_model(digits_logits, cls, kw, upper):
    z, y = digits_logits
    n_cal = len(y) // 2
    n_test, repeats = len(y) - n_cal, 200
    mean, _ = _coverage_over_splits(z, y, cls, kw, n_cal=n_cal, n_test=n_test,
                                    repeats=repeats)
    tol = _tolerance(n_cal, n_test, repeats)
    assert mean >= 1 - ALPHA - tol
    if upper:
        assert mean <= 1 - ALPHA + 1 / (n_cal + 1) + tol


def test_probabilities_and_logits_give_the_same_sets():
    z, y = _synthetic(600)
    p = torch.softmax(z, 1)
    for cls, kw, _ in VARIANTS:
        a = cls(output="logit", **kw).fit(z[:300], y[:300])
        b = cls(output="probability", **kw).fit(p[:300], y[:300])
        assert a.threshold_ == pytest.approx(b.threshold_, abs=1e-12)
        assert torch.equal(a.predict_set(z[300:]), b.predict_set(p[300:].numpy()))


# ---------------------------------------------------------------------------- MAPIE
@pytest.fixture(scope="module")
def mapie_case():
    pytest.importorskip("mapie")
    from sklearn.base import BaseEstimator, ClassifierMixin

    class Lookup(ClassifierMixin, BaseEstimator):
        """A fitted classifier whose "input" is a row index into precomputed probabilities,
        so MAPIE and calix see the very same probabilities."""

        def __init__(self, probs=None):
            self.probs = probs

        def fit(self, X, y):
            return self

        def predict_proba(self, X):
            return self.probs[np.asarray(X)[:, 0].astype(int)]

        def predict(self, X):
            return self.predict_proba(X).argmax(1)

    z, y = _synthetic(3000, k=6)
    p = torch.softmax(z, 1).numpy()
    est = Lookup(p)
    est.classes_, est.n_features_in_ = np.arange(6), 1
    X = np.arange(len(p))[:, None]
    return est, X, p, y.numpy()


def _mapie(case, score):
    from mapie.classification import SplitConformalClassifier

    est, X, p, y = case
    m = SplitConformalClassifier(est, confidence_level=1 - ALPHA, conformity_score=score,
                                 prefit=True, random_state=0)
    m.conformalize(X[:1000], y[:1000])
    sets = {ill: m.predict_set(X[1000:], conformity_score_params={"include_last_label": ill}
                               )[1][:, :, 0]
            for ill in ((True,) if score == "lac" else (True, "randomized"))}
    return m, m._mapie_classifier.conformity_score_function_, sets


# Tolerances against MAPIE: none. MAPIE compares with a slack of 1e-8 (its EPSILON) where
# calix compares exactly -- scores against the threshold, near-tied probabilities, labels of
# probability <= 1e-8 -- so a set could differ where a score or probability lies within 1e-8
# of such a boundary; with continuous scores of 6 classes and probabilities far above 1e-8
# that has probability ~1e-4 here, and this seed has no such cell, so the sets must be
# identical (benchmarks/conformal.py counts the rows that the slack changes on real logits).
# MAPIE draws its uniforms U from numpy's RandomState(random_state); calix's randomised
# score uses u = 1 − U for the same score (MAPIE: cumulative mass up to y minus U p_y;
# calix: mass above y plus u p_y), so feeding u = 1 − U reproduces MAPIE's draws exactly.
def test_lac_matches_mapie(mapie_case):
    _, _, p, y = mapie_case
    _, cs, sets = _mapie(mapie_case, "lac")
    lac = LAC(output="probability", alpha=ALPHA).fit(p[:1000], y[:1000])
    assert lac.threshold_ == cs.quantiles_[0]
    assert np.array_equal(lac.predict_set(p[1000:]).numpy(), sets[True])


def test_aps_matches_mapie(mapie_case):
    _, _, p, y = mapie_case
    m, cs, sets = _mapie(mapie_case, "aps")
    pt = torch.as_tensor(p)
    u_cal = torch.as_tensor(1 - np.random.RandomState(0).uniform(size=1000))
    ours = APS(output="probability")._label_scores(pt[:1000], u_cal)
    ours = ours.gather(1, torch.as_tensor(y[:1000])[:, None]).squeeze(1).numpy()
    np.testing.assert_allclose(ours, m.conformity_scores.ravel(), rtol=0, atol=1e-12)
    q = conformal_quantile(m.conformity_scores, ALPHA)
    assert q == cs.quantiles_[0]
    # non-randomised: MAPIE's include_last_label=True
    det = APS.from_threshold(q, output="probability", randomized=False)
    assert np.array_equal(det.predict_set(pt[1000:]).numpy(), sets[True])
    # randomised, with MAPIE's own draws for the test rows
    u_test = torch.as_tensor(1 - np.random.RandomState(0).uniform(size=2000))
    rand = APS(output="probability")._included(
        pt[1000:], torch.tensor([[q]], dtype=torch.float64), u_test)
    assert np.array_equal(rand.numpy(), sets["randomized"])


def test_raps_matches_mapie(mapie_case):
    _, _, p, _ = mapie_case
    m, cs, sets = _mapie(mapie_case, "raps")
    # MAPIE picks k_reg and λ on a split of its own; the threshold is the conformal quantile
    # of the regularised scores of the remaining rows (cutoff: each row's 1-based rank of y)
    k, lam = int(cs.k_star[0]), float(cs.lambda_star)
    reg = m.conformity_scores.ravel() + lam * np.maximum(cs.cutoff - k, 0)
    q = conformal_quantile(reg, ALPHA)
    assert q == cs.quantiles_[0]
    pt = torch.as_tensor(p)
    det = RAPS.from_threshold(q, output="probability", randomized=False, k_reg=k, lam=lam)
    assert np.array_equal(det.predict_set(pt[1000:]).numpy(), sets[True])
    # Randomised: MAPIE removes the last label L when U < V with
    # V = (S(L) − q)/(p_L − λ(L−k)⁺ + λ·[L > k]) (S the regularised cumulative score), where
    # the RAPS paper (Algorithm 2) divides by p_L alone; the two agree when L <= k + 1, so the
    # sets are compared on those rows (here: every row but a handful).
    u_test = torch.as_tensor(1 - np.random.RandomState(0).uniform(size=2000))
    ours = RAPS(output="probability", k_reg=k, lam=lam)._included(
        pt[1000:], torch.tensor([[q]], dtype=torch.float64), u_test).numpy()
    agree = sets[True].sum(1) <= k + 1
    assert agree.mean() > 0.9
    assert np.array_equal(ours[agree], sets["randomized"][agree])


# ---------------------------------------------------------------------------- RAPS, APS
@pytest.mark.parametrize("randomized", [True, False])
def test_raps_with_lambda_zero_is_aps(randomized):
    z, y = _synthetic(800, k=7)
    aps = APS(output="logit", randomized=randomized, seed=3).fit(z[:400], y[:400])
    for k_reg in (0, 1, 3):
        raps = RAPS(output="logit", randomized=randomized, k_reg=k_reg, lam=0.0,
                    seed=3).fit(z[:400], y[:400])
        assert raps.threshold_ == aps.threshold_
        assert torch.equal(raps.scores(z), aps.scores(z))
        assert torch.equal(raps.predict_set(z[400:]), aps.predict_set(z[400:]))


def test_aps_scores_against_a_per_row_loop():
    z, y = _synthetic(50, k=6, seed=4)
    p = torch.softmax(z, 1)
    u = torch.rand(50, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    s = RAPS(output="probability", k_reg=2, lam=0.3)._label_scores(p, u)
    for i in range(50):
        order = sorted(range(6), key=lambda j: -float(p[i, j]))
        for r, j in enumerate(order, start=1):
            above = sum(float(p[i, order[t]]) for t in range(r - 1))
            ref = above + float(u[i]) * float(p[i, j]) + 0.3 * max(r - 2, 0)
            assert float(s[i, j]) == pytest.approx(ref, abs=1e-12)


@pytest.mark.parametrize("cls,kw,upper", VARIANTS[1:], ids=IDS[1:])
def test_aps_and_raps_sets_are_prefixes_of_the_ranking(cls, kw, upper):
    z, y = _synthetic(1000, k=8, seed=5)
    sets = cls(output="logit", **kw).fit(z[:500], y[:500]).predict_set(z[500:])
    _, rank = _ranked(torch.softmax(z[500:], 1))
    size = sets.sum(1, keepdim=True)
    assert torch.equal(sets, rank <= size)


def test_randomized_sets_are_seeded():
    z, y = _synthetic(600)
    aps = APS(output="logit", seed=1).fit(z[:300], y[:300])
    assert torch.equal(aps.predict_set(z[300:]), aps.predict_set(z[300:]))
    assert torch.equal(aps.predict_set(z[300:], seed=9), aps.predict_set(z[300:], seed=9))
    assert not torch.equal(aps.predict_set(z[300:]), aps.predict_set(z[300:], seed=9))
    again = APS(output="logit", seed=1).fit(z[:300], y[:300])
    assert again.threshold_ == aps.threshold_


# ---------------------------------------------------------------------------- metrics
def test_metrics_against_brute_force():
    rng = np.random.default_rng(0)
    sets = rng.random((300, 4)) < 0.4
    y = rng.integers(0, 4, 300)
    hit = sets[np.arange(300), y]
    assert coverage(sets, y) == pytest.approx(hit.mean())
    assert mean_set_size(torch.as_tensor(sets)) == pytest.approx(sets.sum(1).mean())
    strat = size_stratified_coverage(sets, y)
    for size in range(5):
        sel = sets.sum(1) == size
        assert strat["count"][size] == sel.sum()
        if sel.any():
            assert strat["coverage"][size] == pytest.approx(hit[sel].mean())
        else:
            assert np.isnan(strat["coverage"][size])
    cc = class_conditional_coverage(sets, y)
    for c in range(4):
        assert cc[c] == pytest.approx(hit[y == c].mean())
    assert np.isnan(class_conditional_coverage(sets[y != 2], y[y != 2])[2])


# ---------------------------------------------------------------------------- per level bin
def test_level_conformal_is_one_fit_per_bin():
    z, y = _synthetic(3000, seed=6)
    levels = torch.rand(3000, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    z = z * (1 - levels[:, None])  # flatter logits at high levels, as under perturbation
    lc = LevelConformal(LAC(output="logit"), n_bins=4).fit(z[:2000], y[:2000], levels[:2000])
    bins = (levels * 4).floor().long().clamp(max=3)
    for b in range(4):
        sel = (bins[:2000] == b)
        ref = LAC(output="logit").fit(z[:2000][sel], y[:2000][sel])
        assert float(lc.thresholds_[b]) == ref.threshold_
        test = bins[2000:] == b
        assert torch.equal(lc.predict_set(z[2000:], levels[2000:])[test],
                           ref.predict_set(z[2000:][test]))
    assert int(lc.counts_.sum()) == 2000


def test_conformal_by_level_against_direct_computation(digits):
    from calix import zoo
    from calix.calibrate import perturbed_logits
    from calix.recipes import default_perturbation

    model = zoo.train("mlp", digits, seed=0).wrap()
    pert = default_perturbation(digits, "zero")
    kw = dict(n_bins=5, n_fit=100, n_eval=60, n_per_bin_eval=2, seed=0)
    res = conformal_by_level(model, digits.X_val[:220], digits.y_val[:220], digits.X_test,
                             digits.y_test, pert, scores=("lac", "raps"), **kw)
    assert len(res.coverage) == 3 * 2 * 2
    assert res.counts.sum() == 60 * 5 * 2
    assert res.n_fit == 100 and res.n_conformal == 120
    # (none, lac, clean): LAC fitted on the clean logits of calibration inputs 100..219 and
    # evaluated on the test inputs' perturbed logits (the same seed as the procedure's)
    lac = LAC(output="logit", alpha=ALPHA).fit(model.forward(digits.X_val[100:220]),
                                               digits.y_val[100:220])
    z, yt, lv = perturbed_logits(model, digits.X_test, digits.y_test, pert, n_samples=60,
                                 n_per_bin=2, n_bins=5, seed=1)
    hit = lac.predict_set(z).gather(1, yt[:, None]).squeeze(1).double()
    bins = (lv * 5).floor().long().clamp(max=4)
    ref = [float(hit[bins == b].mean()) for b in range(5)]
    np.testing.assert_allclose(res.coverage[("none", "lac", "clean")], ref)
    assert res.thresholds[("none", "lac", "clean")][0] == lac.threshold_
    # per-level thresholds: one per bin; clean-input coverage of the clean-fitted sets
    assert res.thresholds[("recalx", "raps", "level")].shape == (5,)
    assert all(0 <= v <= 1 for v in res.clean_coverage.values())
    rows = res.rows()
    assert {r["fitted_on"] for r in rows} == {"clean", "level"}
    assert all(len(r["coverage"]) == 5 for r in rows)


def test_shortfall_counts_test_and_calibration_spread():
    from calix.conformal import ConformalByLevel

    key = ("none", "lac", "clean")
    res = ConformalByLevel(alpha=0.1, edges=np.linspace(0, 1, 4), counts=np.array([900] * 3),
                           coverage={key: np.array([0.9, 0.87, 0.80])},
                           cal_counts={key: np.full(3, 98)})
    # s.e. = sqrt(0.09 (1/900 + 1/100)) = 0.0316: 3 s.e. below 0.9 is 0.805
    assert res.shortfall(key).tolist() == [False, False, True]
    assert res.first_short(key) == pytest.approx(2 / 3)
    assert res.shortfall(key, z=0.5).tolist() == [False, True, True]
    res.coverage[key] = np.array([0.9, 0.9, 0.9])
    assert np.isnan(res.first_short(key))


# ---------------------------------------------------------------------------- errors
def test_bad_input_errors():
    z, y = _synthetic(100)
    p = torch.softmax(z, 1)
    with pytest.raises(ValueError, match="output must be one of"):
        LAC(output="logits")
    with pytest.raises(TypeError):
        LAC()  # output is required
    for alpha in (0, 1, -0.1, float("nan")):
        with pytest.raises(ValueError, match="alpha must lie in"):
            APS(output="logit", alpha=alpha)
    with pytest.raises(ValueError, match="look like probabilities.*output='probability'"):
        LAC(output="logit").fit(p, y)
    with pytest.raises(ValueError, match="outside \\[0, 1\\].*output='logit'"):
        LAC(output="probability").fit(z, y)
    with pytest.raises(ValueError, match="do not sum to 1.*output='logit'"):
        LAC(output="probability").fit(torch.sigmoid(z), y)
    bad = z.clone()
    bad[3, 1] = float("nan")
    with pytest.raises(ValueError, match="1 NaN or infinite"):
        APS(output="logit").fit(bad, y)
    with pytest.raises(ValueError, match="1 NaN or infinite"):
        APS(output="logit").fit(z, y).predict_set(bad)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 5\).*\[7\]"):
        LAC(output="logit").fit(z, torch.where(y == 0, 7, y))
    with pytest.raises(ValueError, match="labels has 99"):
        LAC(output="logit").fit(z, y[:99])
    with pytest.raises(ValueError, match="8 calibration sample.*needs n >= 9"):
        LAC(output="logit", alpha=0.1).fit(z[:8], y[:8])
    with pytest.raises(ValueError, match="not fitted"):
        RAPS(output="logit").predict_set(z)
    with pytest.raises(ValueError, match="lam must be"):
        RAPS(output="logit", lam=-1)
    with pytest.raises(ValueError, match="k_reg must be >= 0"):
        RAPS(output="logit", k_reg=-1)
    with pytest.raises(TypeError, match="randomized"):
        APS(output="logit", randomized="yes")
    with pytest.raises(ValueError, match="shape"):
        LAC(output="logit").fit(z[:, 0], y)
    lc = LevelConformal(LAC(output="logit"), n_bins=10)
    with pytest.raises(ValueError, match="needs the perturbation level"):
        lc.fit(z, y, None)
    with pytest.raises(ValueError, match=r"each bin needs >= 9.*bin 1"):
        lc.fit(z, y, torch.zeros(100))
    with pytest.raises(TypeError, match="boolean"):
        coverage(torch.rand(5, 3), [0, 1, 2, 0, 1])
    assert set(SCORES) == {"lac", "thr", "aps", "raps"}


# ---------------------------------------------------------------------------- CUDA
def test_fake_cuda_gives_the_cpu_sets(digits):
    """On the emulated CUDA device of ``test_device`` (every torch call checked for device
    mixing), the classes, the metrics and the by-level procedure give the CPU results."""
    import copy
    import warnings

    from torch import nn

    from calix.models import wrap
    from calix.recipes import default_perturbation
    from tests.test_device import FakeCuda, tag_module

    z, y = _synthetic(1000, k=6, seed=7)
    lv = torch.rand(1000, generator=torch.Generator().manual_seed(2), dtype=torch.float64)

    def run(z, y, lv):
        out = []
        for cls, kw, _ in VARIANTS:
            c = cls(output="logit", **kw).fit(z[:500], y[:500])
            out.append(c.predict_set(z[500:]))
            lc = LevelConformal(cls(output="logit", **kw), n_bins=3).fit(z[:500], y[:500],
                                                                          lv[:500])
            out.append(lc.predict_set(z[500:], lv[500:]))
        return [o.cpu() for o in out], coverage(out[0], y[500:]), \
            class_conditional_coverage(out[2], y[500:])

    ref = run(z, y, lv)
    with FakeCuda() as mode:
        got = run(z.to("cuda"), y.to("cuda"), lv.to("cuda"))
    assert mode.on_device > 0
    assert all(torch.equal(a, b) for a, b in zip(ref[0], got[0], strict=True))
    assert ref[1] == got[1]
    np.testing.assert_array_equal(ref[2], got[2])

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        module = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()
    pert = default_perturbation(digits, "zero")
    kw = dict(n_bins=3, n_fit=60, n_eval=30, n_per_bin_eval=2, seed=0, scores=("aps",))

    def by_level(m):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # degenerate ReCalX bins of a random model
            return conformal_by_level(wrap(m, input_shape=(1, 8, 8)), digits.X_val[:120],
                                      digits.y_val[:120], digits.X_test, digits.y_test, pert,
                                      **kw)

    a = by_level(copy.deepcopy(module))
    with FakeCuda() as mode:
        b = by_level(tag_module(module))
    assert mode.on_device > 0
    for key in a.coverage:
        np.testing.assert_allclose(a.coverage[key], b.coverage[key], atol=1e-12)
        np.testing.assert_allclose(a.size[key], b.size[key], atol=1e-12)


@pytest.mark.parametrize("cls,kw,upper", VARIANTS, ids=IDS)
def test_cuda_matches_cpu(cls, kw, upper):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    z, y = _synthetic(4000, k=10)
    cpu = cls(output="logit", **kw).fit(z[:2000], y[:2000])
    gpu = cls(output="logit", **kw).fit(z[:2000].cuda(), y[:2000].cuda())
    # float64 cumulative sums may differ in the last bits between devices: thresholds to
    # 1e-12, and sets identical except a cell whose score lies within 1e-12 of it
    assert gpu.threshold_ == pytest.approx(cpu.threshold_, abs=1e-12)
    s_cpu, s_gpu = cpu.predict_set(z[2000:]), gpu.predict_set(z[2000:].cuda())
    assert s_gpu.device.type == "cuda"
    near = (cpu.scores(z[2000:], seed=cpu.seed + 1) - cpu.threshold_).abs() < 1e-12
    assert torch.equal(s_cpu[~near], s_gpu.cpu()[~near])
