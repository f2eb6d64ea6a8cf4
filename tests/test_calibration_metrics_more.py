"""Smooth ECE, ACE, MCE, classwise ECE, SKCE and its test, the calibration / refinement
decomposition, bootstrap intervals and the reliability diagrams with bands: against netcal,
relplot and probmetrics, against slow references, and on synthetic data with known values."""

import numpy as np
import pytest
import torch
from scipy.integrate import quad
from scipy.stats import norm

from calix import plot
from calix.metrics import (
    METRICS,
    CalibrationInterval,
    ace,
    brier,
    calibration_interval,
    calibration_loss,
    classwise_ece,
    ece,
    loss_decomposition,
    mce,
    refinement_loss,
    reliability_curve,
    skce,
    skce_test,
    smooth_ece,
    smooth_reliability_curve,
)
from calix.metrics import calibration as mcal
from calix.metrics import calibration_tests as mtests
from tests._calibration_samples import _sample

GAP = 0.15


def _gap_sample(n, rng):
    """Binary predictions (c, 1 − c), c ~ U(0.5, 1), whose top class is right with probability
    c − GAP: every confidence bin has accuracy exactly GAP below its confidence, so the
    population ECE (binned with any bins, or not) is GAP."""
    conf = rng.uniform(0.5, 1.0, n)
    return np.stack([conf, 1 - conf], 1), (rng.random(n) >= conf - GAP).astype(int)


# ---------------------------------------------------------------------- netcal
@pytest.mark.parametrize("n_bins", [5, 10, 15])
def test_ace_mce_classwise_match_netcal(n_bins):
    from netcal.metrics import ACE, ECE, MCE

    # k = 10 with all labels present: netcal scores the top-label confidence (for <= 2
    # distinct labels it would score the positive class instead). netcal bins [e_i, e_{i+1})
    # with the last bin closed over [0, 1] (equal_intervals=True) or at the quantiles with
    # the ends set to 0 and 1 (equal_intervals=False), as calix; it clips scores to
    # [eps, 1 − eps], which moves no score here. Same bins, same float64 sums: 1e-12.
    p, y = _sample(3000, 10, 3.0, n_bins, temperature=0.6)
    tol = 1e-12
    assert abs(ace(p, y, n_bins=n_bins) - ACE(bins=n_bins, equal_intervals=False).measure(p, y)
               ) < tol
    assert abs(mce(p, y, n_bins=n_bins) - MCE(bins=n_bins).measure(p, y)) < tol
    assert abs(mce(p, y, n_bins=n_bins, strategy="quantile")
               - MCE(bins=n_bins, equal_intervals=False).measure(p, y)) < tol
    # classwise: netcal on one class's probability against its indicator is its binary mode
    for ours, theirs, kw in [(classwise_ece, ECE, {}),
                             (classwise_ece, ECE, {"strategy": "quantile"}),
                             (ace, ACE, {"mode": "classwise"}), (mce, MCE, {"mode": "classwise"})]:
        eq = kw.get("strategy") == "quantile" or theirs is ACE
        ref = np.mean([theirs(bins=n_bins, equal_intervals=not eq).measure(
            p[:, c], (y == c).astype(int)) for c in range(10)])
        assert abs(ours(p, y, n_bins=n_bins, **kw) - ref) < tol, (ours.__name__, kw)
    assert abs(classwise_ece(p, y, n_bins=n_bins) - ece(p, y, n_bins=n_bins, mode="classwise")
               ) < tol


def test_ace_equals_its_definition_and_nears_equal_mass_ece():
    p, y = _sample(1000, 4, 2.0, 3, temperature=0.5)
    conf, hit = p.max(1), (p.argmax(1) == y)
    edges = np.quantile(conf, np.linspace(0, 1, 11))
    edges[0], edges[-1] = 0, 1
    gaps = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        m = (conf >= lo) & ((conf < hi) | (hi == 1))
        if m.any():
            gaps.append(abs(hit[m].mean() - conf[m].mean()))
    assert abs(ace(p, y, n_bins=10) - np.mean(gaps)) < 1e-12
    # no ties: the bins hold 100 samples each, so the two weightings coincide
    assert abs(ace(p, y, n_bins=10) - ece(p, y, n_bins=10, strategy="quantile")) < 1e-12


# ---------------------------------------------------------------------- smooth ECE
def _smece_reference(f, r, sigma, n_t=10001):
    """∫|Σ K̃(t, f_i) r_i| / ∫Σ K̃(t, f_i) with the folded Gaussian summed directly at 10001
    points: no binning of the samples. Images m = −1..1: the next ones lie at distance >= 3
    from [0, 1], below φ(6) relative for σ <= 0.5."""
    t = np.linspace(0, 1, n_t)
    k = sum(norm.pdf(t[None] - f[:, None] + 2 * m, scale=sigma)
            + norm.pdf(t[None] + f[:, None] + 2 * m, scale=sigma) for m in range(-1, 2))
    return np.trapezoid(np.abs(r @ k), t) / np.trapezoid(k.sum(0), t)


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_smooth_ece_against_direct_kernel_sums(temperature):
    p, y = _sample(200, 5, 2.5, 4, temperature=temperature)
    conf, hit = p.max(1), (p.argmax(1) == y).astype(float)
    for sigma in (0.02, 0.1, 0.5):
        ref = _smece_reference(conf, hit - conf, sigma)
        # linear binning onto the 2049-node grid: error of order (spacing / σ)², measured
        # 1e-6 relative at σ = 0.02; 1e-4 relative leaves room
        assert abs(smooth_ece(p, y, bandwidth=sigma) - ref) < 1e-4 * ref, sigma


@pytest.mark.parametrize("temperature", [1.0, 0.6, 2.0])
def test_smooth_ece_matches_relplot(temperature):
    relplot = pytest.importorskip("relplot")
    p, y = _sample(3000, 10, 3.0, 5, temperature=temperature)
    conf, hit = relplot.multiclass_logits_to_confidences(p, y, probs=True)
    # relplot evaluates on 200+ interpolated points, keeps the reflection images at −f and
    # 2 − f only, counts mass at the grid's end nodes once (calix twice: those nodes are their
    # own mirror images) and stops its bisection at a 1/1024-wide bracket; measured
    # differences were up to 1.5e-3, so 3e-3 absolute
    for sigma in (0.02, 0.1):
        assert abs(smooth_ece(p, y, bandwidth=sigma) - relplot.smECE_sigma(conf, hit, sigma)
                   ) < 3e-3
    assert abs(smooth_ece(p, y) - relplot.smECE(conf, hit)) < 3e-3


def test_smooth_ece_is_the_fixed_point_and_decreases_with_bandwidth():
    p, y = _sample(2000, 10, 3.0, 6, temperature=0.7)
    curve = smooth_reliability_curve(p, y)
    sigma = curve["bandwidth"]
    assert abs(smooth_ece(p, y) - sigma) < 1e-9  # the fixed point smECE_σ = σ
    assert smooth_ece(p, y) == curve["smooth_ece"]
    assert abs(smooth_ece(p, y, bandwidth=sigma) - sigma) < 1e-9
    # folding a Gaussian is a Markov semigroup: more smoothing never raises ∫|r̂| (the paper's
    # monotonicity), up to float rounding
    vals = [smooth_ece(p, y, bandwidth=s) for s in np.geomspace(0.002, 1.0, 15)]
    assert all(b <= a + 1e-12 for a, b in zip(vals, vals[1:], strict=False))
    cal = smooth_ece(*_sample(4000, 10, 3.0, 6))
    assert cal < 0.03 < smooth_ece(p, y)


# ---------------------------------------------------------------------- SKCE
def test_skce_equals_the_double_sum():
    p, y = _sample(40, 3, 1.5, 7, temperature=0.5)
    nu = 0.4
    r = np.eye(3)[y] - p
    ref = sum(np.exp(-np.linalg.norm(p[i] - p[j]) / nu) * (r[i] @ r[j])
              for i in range(40) for j in range(40) if i != j) / (40 * 39)
    assert abs(skce(p, y, bandwidth=nu) - ref) < 1e-12
    assert abs(skce(p, y, bandwidth=nu, chunk=7) - ref) < 1e-12
    d = [np.linalg.norm(p[i] - p[j]) for i in range(40) for j in range(i + 1, 40)]
    assert abs(mtests._median_bandwidth(p) - np.median(d)) < 1e-12


def test_skce_test_is_valid_when_calibrated_and_rejects_miscalibration():
    # the labels drawn from p are calibrated by construction, so P(p-value <= 0.1) <= 0.1
    # exactly; over 100 data sets the rejections are Binomial(100, <= 0.1): mean <= 10, sd 3,
    # and 19 = mean + 3 sd bounds them
    rejections = sum(skce_test(*_sample(100, 3, 1.5, 100 + s), n_resamples=99, seed=s)
                     .rejects(0.1) for s in range(100))
    assert rejections <= 19
    res = skce_test(*_sample(300, 3, 1.5, 8, temperature=0.4), n_resamples=199)
    assert res.p_value == 1 / 200 and res.statistic > 0 and res.rejects()
    again = skce_test(*_sample(300, 3, 1.5, 8, temperature=0.4), n_resamples=199)
    assert again == res  # seeded


# ---------------------------------------------------------------------- decomposition
@pytest.mark.parametrize("temperature", [1.0, 0.4, 3.0])
def test_decomposition_matches_probmetrics(temperature):
    pm = pytest.importorskip("probmetrics.metrics")
    p, y = _sample(1500, 4, 2.0, 9, temperature=temperature)
    names = [f"{part}_{loss}_ts-mix_{split}" for part in ("calib-err", "refinement")
             for loss in ("logloss", "brier") for split in ("all", "cv-5")]
    theirs = {k: float(v) for k, v in pm.Metrics.from_names(names).compute_all_from_labels_probs(
        torch.as_tensor(y), torch.as_tensor(p)).items()}
    # same estimator (temperature scaling on log p by NLL, mixed with the uniform at 1/(n+1);
    # cv-5: the same StratifiedKFold(shuffle, random_state=0) folds). probmetrics computes in
    # float32 and bisects 30 times: differences measured ~1e-6, so 2e-5
    for loss, name in (("log", "logloss"), ("brier", "brier")):
        for folds, split in ((None, "all"), (5, "cv-5")):
            d = loss_decomposition(p, y, loss=loss, folds=folds, seed=0)
            assert abs(d.calibration - theirs[f"calib-err_{name}_ts-mix_{split}"]) < 2e-5
            assert abs(d.refinement - theirs[f"refinement_{name}_ts-mix_{split}"]) < 2e-5
            assert abs(d.total - d.calibration - d.refinement) < 1e-12


def test_decomposition_parts():
    p, y = _sample(2000, 4, 2.0, 10)
    cal = loss_decomposition(p, y)
    assert abs(cal.temperatures[0] - 1) < 0.1 and abs(cal.calibration) < 2e-3
    hot = loss_decomposition(*_sample(2000, 4, 2.0, 10, temperature=0.3))
    assert hot.temperatures[0] > 2 and hot.calibration > 0.3
    # a temperature keeps the argmax and the ranking: the refinement part is the same
    assert abs(hot.refinement - cal.refinement) < 1e-6
    assert calibration_loss(p, y, loss="brier") == loss_decomposition(p, y, loss="brier"
                                                                      ).calibration
    assert refinement_loss(p, y) == cal.refinement
    assert len(loss_decomposition(p, y, folds=3).temperatures) == 3


# ---------------------------------------------------------------------- bootstrap
BATCHED_CASES = [
    (ece, {}), (ece, {"strategy": "quantile", "n_bins": 7}), (ece, {"mode": "classwise"}),
    (ace, {}), (ace, {"mode": "classwise", "n_bins": 5}), (mce, {}),
    (mce, {"strategy": "quantile"}), (classwise_ece, {"n_bins": 10}),
    (mcal.ce_kl_binned, {"n_bins": 8}), (mcal.nll, {}), (brier, {}), (mcal.accuracy, {}),
    (smooth_ece, {}), (smooth_ece, {"bandwidth": 0.05}),
]


@pytest.mark.parametrize("fn, kw", BATCHED_CASES, ids=lambda v: getattr(v, "__name__", str(v)))
def test_batched_resamples_equal_the_metric_on_each_resample(fn, kw):
    p, y = _sample(300, 4, 2.0, 11, temperature=0.6)
    rows, _ = mcal._BATCHED[fn]
    (idx,) = mcal._resamples(300, 6, 6, seed=1)
    batched = rows(p, y, idx, **kw)
    one_by_one = [fn(p[i], y[i], **kw) for i in idx]
    # same bins and sums; only the order of float additions can differ
    np.testing.assert_allclose(batched, one_by_one, rtol=0, atol=1e-12)


def test_interval_for_every_calibration_metric_is_seeded_and_chunk_free():
    p, y = _sample(120, 3, 2.0, 12, temperature=0.6)
    funcs = {**{n: getattr(mcal, n) for n in mcal.METRICS},
             **{n: getattr(mtests, n) for n in mtests.METRICS}}
    assert {"ece", "kde_ece", "ce_kl", "smooth_ece", "skce", "calibration_loss"} <= set(funcs)
    for name, fn in funcs.items():
        kw = {"n_bins": 10} if name in ("ace", "mce", "classwise_ece") else {}
        ci = calibration_interval(fn, p, y, n_boot=4, seed=3, metric_kwargs=kw)
        assert isinstance(ci, CalibrationInterval) and ci.metric == name and ci.n_boot == 4
        assert np.isfinite([ci.value, ci.lower, ci.upper]).all() and ci.lower <= ci.upper
    a = calibration_interval(ece, p, y, n_boot=50, seed=5)
    assert a == calibration_interval(ece, p, y, n_boot=50, seed=5, chunk=7)
    assert a != calibration_interval(ece, p, y, n_boot=50, seed=6)
    # the looped path (kde_ece) and the batched path see the same resamples
    one = calibration_interval(lambda q, z: ece(q, z), p, y, n_boot=50, seed=5)
    assert (one.lower, one.upper) == (a.lower, a.upper)


def test_interval_covers_the_population_value_at_its_nominal_rate():
    # 200 data sets of n = 1000 from _gap_sample, 400 resamples each: the 95% intervals of
    # ECE (population GAP) and Brier (population by quadrature) should cover at 0.95; the
    # binomial standard error of 200 coverages is sqrt(0.95 · 0.05 / 200) = 0.0154, and the
    # test allows 3 of them, [0.904, 0.996]
    pop_brier = quad(lambda c: 2 * ((c - GAP) * 2 * (1 - c) ** 2
                                    + (1 - c + GAP) * 2 * c ** 2), 0.5, 1)[0]
    rng = np.random.default_rng(0)
    hits = {"ece": 0, "brier": 0}
    for r in range(200):
        p, y = _gap_sample(1000, rng)
        e = calibration_interval(ece, p, y, n_boot=400, seed=r, metric_kwargs={"n_bins": 10})
        b = calibration_interval(brier, p, y, n_boot=400, seed=r)
        hits["ece"] += e.lower <= GAP <= e.upper
        hits["brier"] += b.lower <= pop_brier <= b.upper
    for name, count in hits.items():
        assert 0.904 <= count / 200 <= 0.996, (name, count)


def test_bands_of_the_reliability_curves():
    p, y = _sample(1500, 5, 2.0, 13, temperature=0.6)
    rc = reliability_curve(p, y, n_bins=10, n_boot=200)
    big = rc["count"] >= 20
    assert np.all(rc["lower"][big] <= rc["accuracy"][big])
    assert np.all(rc["accuracy"][big] <= rc["upper"][big])
    assert np.isnan(rc["lower"][rc["count"] == 0]).all()
    assert "lower" not in reliability_curve(p, y, n_bins=10)
    sc = smooth_reliability_curve(p, y, n_boot=100)
    assert sc["t"].shape == sc["accuracy"].shape == sc["lower"].shape == (mcal.SMOOTH_GRID,)
    assert abs(np.trapezoid(sc["density"], sc["t"]) - 1) < 1e-9
    inside = (sc["lower"] <= sc["accuracy"] + 1e-12) & (sc["accuracy"] <= sc["upper"] + 1e-12)
    assert inside[sc["density"] > 0.05].mean() > 0.95


# ---------------------------------------------------------------------- bad input
def test_bad_inputs_are_refused_with_the_fix():
    p, y = _sample(50, 3, 1.0, 14)
    nan = p.copy()
    nan[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        ace(nan, y)
    logits = np.log(p) * 3
    for fn in (ece, ace, mce, classwise_ece, smooth_ece, skce, loss_decomposition):
        with pytest.raises(ValueError, match="look like logits: pass softmax"):
            fn(logits, y)
    with pytest.raises(ValueError, match="rows must sum to 1.*probabilities"):
        smooth_ece(p * 0.5, y)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        mce(p, np.where(y == 0, 5, y))
    for fn in (ace, mce, classwise_ece):
        with pytest.raises(ValueError, match="fewer than n_bins=15.*n_bins <= 10"):
            fn(p[:10], y[:10])
    with pytest.raises(ValueError, match="n_boot must be >= 1"):
        calibration_interval(ece, p, y, n_boot=0)
    with pytest.raises(ValueError, match="level must be a number in"):
        calibration_interval(ece, p, y, level=95)
    with pytest.raises(TypeError, match="metric must be"):
        calibration_interval("ece", p, y)
    with pytest.raises(ValueError, match="bandwidth must lie in"):
        smooth_ece(p, y, bandwidth=1e-4)
    with pytest.raises(TypeError, match="bandwidth must be a number"):
        smooth_ece(p, y, bandwidth=True)
    with pytest.raises(ValueError, match="at least 2 samples"):
        skce(p[:1], y[:1])
    with pytest.raises(ValueError, match="bandwidth must be a finite number"):
        skce_test(p, y, bandwidth=-1.0)
    with pytest.raises(ValueError, match="loss must be one of"):
        loss_decomposition(p, y, loss="kl")
    with pytest.raises(ValueError, match="folds must be >= 2"):
        loss_decomposition(p, y, folds=1)


def test_metadata_of_the_new_metrics():
    for name in ("ace", "mce", "classwise_ece", "smooth_ece", "skce", "calibration_loss"):
        assert METRICS[name].category == "calibration" and not METRICS[name].higher_is_better
    assert METRICS["refinement_loss"].category == "performance"


# ---------------------------------------------------------------------- devices
def test_tensors_give_the_numbers_of_arrays():
    p, y = _sample(500, 4, 2.0, 15, temperature=0.6)
    for fn in (ace, mce, classwise_ece, smooth_ece, skce):
        assert fn(torch.from_numpy(p), torch.from_numpy(y)) == fn(p, y)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_tensors_give_the_numbers_of_arrays():
    # the metrics compute on the CPU in float64 from the tensors' values: identical numbers
    p, y = _sample(500, 4, 2.0, 16, temperature=0.6)
    pc, yc = torch.from_numpy(p).cuda(), torch.from_numpy(y).cuda()
    for fn in (ace, mce, classwise_ece, smooth_ece, skce):
        assert fn(pc, yc) == fn(p, y)
    assert calibration_interval(ece, pc, yc, n_boot=20) == calibration_interval(ece, p, y,
                                                                                n_boot=20)


# ---------------------------------------------------------------------- plots
def test_reliability_diagrams_with_bands(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    p, y = _sample(800, 4, 2.0, 17, temperature=0.6)
    fig = plot.reliability_diagram({"a": (p, y)}, n_boot=100, path=tmp_path / "rel.png")
    assert "ECE" in fig.axes[0].get_title() and "[" in fig.axes[0].get_title()
    assert (tmp_path / "rel.png").read_bytes()[:4] == b"\x89PNG"
    fig = plot.smooth_reliability_diagram({"a": (p, y), "b": (p, y)}, n_boot=50,
                                          path=tmp_path / "smooth.png")
    assert len(fig.axes) == 2 and "smECE" in fig.axes[1].get_title()
    assert (tmp_path / "smooth.png").read_bytes()[:4] == b"\x89PNG"
    own, ax = plot.subplots()
    assert plot.smooth_reliability_diagram((p, y), n_boot=0, ax=ax) is own
    assert len(ax.lines) == 2 and len(ax.collections) == 1  # curve + diagonal; density only
