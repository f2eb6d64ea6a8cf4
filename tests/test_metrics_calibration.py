import numpy as np
import pytest
from netcal.metrics import ECE
from sklearn.metrics import log_loss

from calix.metrics import (
    METRICS,
    accuracy,
    brier,
    calibration_by_level,
    ce_kl,
    ce_kl_binned,
    ece,
    kde_ece,
    nll,
    reliability_curve,
)
from tests._calibration_samples import _sample


@pytest.mark.parametrize("n_bins", [5, 10, 15])
@pytest.mark.parametrize("seed", [0, 1])
def test_ece_equals_netcal(n_bins, seed):
    p, y = _sample(3000, 10, 3.0, seed, temperature=0.6)
    # same inputs, same binning: agreement to 1e-6 (both sum the same float64 terms)
    assert abs(ece(p, y, n_bins=n_bins) - ECE(bins=n_bins).measure(p, y)) < 1e-6
    eq = ECE(bins=n_bins, equal_intervals=False).measure(p, y)
    assert abs(ece(p, y, n_bins=n_bins, strategy="quantile") - eq) < 1e-6


def test_binary_classwise_ece_equals_netcal_binary():
    p, y = _sample(2000, 2, 2.0, 3, temperature=0.5)
    # netcal scores the positive class for binary problems; classwise averages both, which
    # mirror each other
    assert abs(ece(p, y, n_bins=10, mode="classwise") - ECE(bins=10).measure(p, y)) < 1e-6


def test_nll_brier_accuracy_against_references():
    p, y = _sample(500, 4, 2.0, 4)
    assert abs(nll(p, y) - log_loss(y, p, labels=range(4))) < 1e-9
    assert abs(brier(p, y) - np.mean(((p - np.eye(4)[y]) ** 2).sum(1))) < 1e-12
    assert accuracy(p, y) == np.mean(p.argmax(1) == y)


@pytest.mark.parametrize("k", [3, 10])
def test_ce_kl_near_zero_when_calibrated_and_grows_with_miscalibration(k):
    errs = [ce_kl(*_sample(1500, k, 2.0, 5, temperature=t)) for t in (1.0, 0.7, 0.5, 0.3)]
    # calibrated: kernel-estimator bias only (measured ≈ 0.003 for k = 10 top-label, 0.01 k = 3)
    assert errs[0] < 0.03
    assert all(a < b for a, b in zip(errs, errs[1:], strict=False))
    under = ce_kl(*_sample(1500, k, 2.0, 5, temperature=2.0))
    assert under > errs[0] + 0.02  # underconfidence counts too


def test_ce_kl_reductions_and_binned_variant():
    p, y = _sample(800, 3, 2.0, 6, temperature=0.4)
    canon = ce_kl(p, y, reduction="canonical")
    top = ce_kl(p, y, reduction="top_label")
    assert canon > 0.05 and top > 0.05
    cal = ce_kl_binned(*_sample(3000, 10, 2.0, 7))
    mis = ce_kl_binned(*_sample(3000, 10, 2.0, 7, temperature=0.4))
    assert cal < 0.02 < mis


def test_kde_ece_small_when_calibrated():
    cal = kde_ece(*_sample(3000, 10, 2.0, 8))
    mis = kde_ece(*_sample(3000, 10, 2.0, 8, temperature=0.4))
    binned = ece(*_sample(3000, 10, 2.0, 8, temperature=0.4))
    assert cal < 0.03 and mis > 0.1
    assert abs(mis - binned) < 0.05  # both estimate the same top-label gap


def test_reliability_curve_counts():
    p, y = _sample(1000, 5, 2.0, 9)
    rc = reliability_curve(p, y, n_bins=10)
    assert rc["count"].sum() == 1000 and len(rc["edges"]) == 11
    ok = rc["count"] > 0
    assert np.all(rc["confidence"][ok] >= rc["edges"][:-1][ok] - 1e-12)


def test_metric_metadata():
    assert not METRICS["ece"].higher_is_better and METRICS["accuracy"].higher_is_better
    assert METRICS["ce_kl"].better(0.1, 0.2) and METRICS["accuracy"].better(0.9, 0.8)


def test_bad_probabilities_and_labels():
    p, y = _sample(20, 3, 1.0, 10)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        ece(p, np.where(y == 0, 3, y))
    bad = p.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        ece(bad, y)
    with pytest.raises(ValueError, match="must sum to 1"):
        nll(p * 0.5, y)
    with pytest.raises(ValueError, match="labels must have shape"):
        brier(p, y[:-1])
    with pytest.raises(ValueError, match="n_bins must be >= 1"):
        ece(p, y, n_bins=0)
    with pytest.raises(ValueError, match="integer class indices"):
        ece(p, y + 0.5)


def test_calibration_by_level_shapes():
    import torch

    from calix.models import wrap
    from calix.perturb import Columns, Mean, Perturbation

    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 6)).astype(np.float32)
    w = rng.normal(size=(6, 3)).astype(np.float32)
    y = (X @ w).argmax(1)
    lin = torch.nn.Linear(6, 3)
    with torch.no_grad():
        lin.weight.copy_(torch.as_tensor(w.T * 3))
        lin.bias.zero_()
    engine = Perturbation(Columns(), Mean().fit(X))
    lc = calibration_by_level(wrap(lin, input_shape=(6,)), X, y, engine, n_samples=100,
                              n_per_bin=10, metric="ece", min_samples=20)
    assert lc.errors.shape == (10,) and lc.counts.sum() == 100 * 100
    # with 6 features only the levels k/6 occur: bins without samples are NaN, not 0
    assert np.isnan(lc.errors).sum() == (lc.counts < 20).sum() > 0
    assert lc.max >= lc.avg >= 0
    assert set(lc.as_dict()) >= {"errors", "avg", "max", "counts"}
    with pytest.raises(ValueError, match="metric must be one of"):
        calibration_by_level(wrap(lin), X, y, engine, metric="mce")


def _concentrated(n, k, conf, acc, seed):
    """Top-label confidences ``conf`` (array of n) with correct predictions at rate ``acc``."""
    rng = np.random.default_rng(seed)
    p = np.repeat(((1 - conf) / (k - 1))[:, None], k, 1)
    p[:, 0] = conf
    y = np.where(rng.random(n) < acc, 0, 1)
    return p, y


@pytest.mark.parametrize(("k", "spread", "acc"), [
    (2, 0.0, 1.0),     # every confidence 0.7, all correct: binned ECE 0.30 (was KDE 0.0)
    (10, 1e-9, 0.6),   # all within 1e-9 of 0.9
    (2, 1e-8, 0.78),   # near-saturated confidences
    (3, 1e-4, 0.78),
    (10, 1e-12, 0.78),
])
def test_kde_ece_matches_binned_ece_on_concentrated_confidences(k, spread, acc):
    rng = np.random.default_rng(11)
    centre = 0.7 if acc == 1.0 else (0.9 if acc == 0.6 else 1.0)
    conf = centre - spread * rng.random(2000)
    p, y = _concentrated(2000, k, conf, acc, seed=12)
    binned = ece(p, y, n_bins=15)
    assert binned > 0.2  # a real gap the KDE must see
    # All confidences sit in one bin, so the binned ECE is |acc - mean conf| exactly. The
    # floored kernel (at most 4 grid spacings, <= 0.008) shifts the KDE's weighted mean
    # confidence by less than its width: tolerance 0.01 (measured differences <= 0.0015).
    assert abs(kde_ece(p, y) - binned) < 0.01


def test_kde_ece_refuses_a_bandwidth_below_the_grid_resolution():
    p, y = _sample(200, 3, 2.0, 13)
    with pytest.raises(ValueError, match=r"bandwidth 1e-06 is below 4 grid spacings"):
        kde_ece(p, y, bandwidth=1e-6)
    with pytest.raises(ValueError, match="bandwidth must be > 0"):
        kde_ece(p, y, bandwidth=0.0)
    with pytest.raises(ValueError, match="n_grid must be >= 2"):
        kde_ece(p, y, n_grid=1)
