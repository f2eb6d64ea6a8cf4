"""The calibrators beyond temperature: each against a peer library or a slow reference on the
same logits (with the tolerance and its reason stated), their guards on bad input, the
refusal of gradient explainers through a non-differentiable calibrator, state_dict round
trips, and CPU / CUDA agreement."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import torch
from scipy.special import expit, logit

from calix.calibrate import (
    CALIBRATORS,
    BetaCalibration,
    HistogramBinning,
    IsotonicCalibration,
    MatrixScaling,
    NonDifferentiableCalibratorError,
    NotFittedError,
    PlattScaling,
    StructuredMatrixScaling,
    VectorScaling,
    VennAbers,
    calibrated,
)
from calix.models import wrap

CLEAN = [n for n in CALIBRATORS if CALIBRATORS.meta(n)["fit_on"] == "clean"
         and n not in ("temperature", "dirichlet")]
NON_DIFFERENTIABLE = ("histogram", "isotonic", "venn_abers")


def _make(name):
    cls = CALIBRATORS[name]
    if name == "matrix":
        return cls(reg_lambda=1e-3, reg_mu=1e-3)
    return cls()


def _data(n=600, k=3, scale=3.0, temp=2.0, seed=0):
    """Overconfident logits: labels drawn from softmax(z / temp). The logits are float32 values
    (held in float64): calibrators read logits as float32, as a model gives them."""
    g = torch.Generator().manual_seed(seed)
    z = (scale * torch.randn(n, k, generator=g)).double()
    y = torch.multinomial(torch.softmax(z / temp, 1), 1, generator=g).flatten()
    return z, y


def _nll(p, y):
    p = np.asarray(p, dtype=np.float64)
    return float(-np.mean(np.log(np.clip(p[np.arange(len(y)), np.asarray(y)], 1e-12, 1))))


def _binary(n=800, seed=0):
    """Binary logits with continuous (tie-free) scores, p1 = σ(z1 − z0)."""
    z, y = _data(n=n, k=2, seed=seed)
    return z, y, torch.sigmoid(z[:, 1] - z[:, 0]).numpy(), y.numpy()


# ---------------------------------------------------------------------- every calibrator
@pytest.mark.parametrize("name", CLEAN)
@pytest.mark.parametrize("k", [2, 4])
def test_each_calibrator_improves_the_validation_nll(name, k):
    z, y = _data(k=k)
    cal = _make(name).fit(z, y)
    p = cal.predict_proba(z)
    assert p.shape == (len(z), k) and np.allclose(p.sum(1), 1, atol=1e-6)
    assert _nll(p, y) < _nll(torch.softmax(z, 1).numpy(), y) - 0.02


@pytest.mark.parametrize("name", CLEAN)
def test_state_dict_round_trip(name):
    z, y = _data(k=3, seed=1)
    cal = _make(name).fit(z, y)
    buf = io.BytesIO()
    torch.save(cal.state_dict(), buf)
    buf.seek(0)
    fresh = _make(name)
    fresh.load_state_dict(torch.load(buf))
    assert fresh.is_fitted
    np.testing.assert_allclose(fresh.predict_proba(z), cal.predict_proba(z), atol=1e-7)


@pytest.mark.parametrize("name", CLEAN)
def test_differentiable_flag_matches_the_gradient(name):
    z, y = _data(k=3, seed=2)
    cal = _make(name).fit(z, y)
    assert cal.differentiable == (name not in NON_DIFFERENTIABLE)
    x = z[:5].float().clone().requires_grad_(True)
    out = torch.softmax(cal(x), 1)[:, 0].sum()
    if cal.differentiable:
        (g,) = torch.autograd.grad(out, x)
        assert torch.isfinite(g).all() and g.abs().sum() > 0
    else:
        assert not out.requires_grad  # nothing for a gradient to flow through


# ---------------------------------------------------------------------- references
def test_isotonic_equals_sklearn_on_binary_data():
    from sklearn.isotonic import IsotonicRegression as SkIso

    z, y, p1, yn = _binary()
    # ties in the scores exercise the averaging of equal x values
    z[::7] = z[3]
    p1 = torch.sigmoid(z[:, 1] - z[:, 0]).numpy()
    ours = IsotonicCalibration().fit(z, y)
    ref = SkIso(out_of_bounds="clip").fit(torch.softmax(z, 1)[:, 1].numpy(), yn)
    zt, _, pt, _ = _binary(n=300, seed=5)
    # exact up to float64 rounding of the interpolation (1e-12); the tensor path keeps float64
    # (predict_proba converts to float32 first)
    np.testing.assert_allclose(torch.softmax(ours(zt), 1)[:, 1].numpy(),
                               np.clip(ref.predict(torch.softmax(zt, 1)[:, 1].numpy()),
                                       1e-12, None), atol=1e-12)
    del p1, pt


def test_isotonic_one_vs_rest_equals_sklearn_per_class():
    from sklearn.isotonic import IsotonicRegression as SkIso

    z, y = _data(k=4, seed=3)
    ours = IsotonicCalibration().fit(z, y)
    p = torch.softmax(z, 1).numpy()
    per_class = np.stack([SkIso(out_of_bounds="clip").fit(p[:, j], y.numpy() == j).predict(p[:, j])
                          for j in range(4)], 1)
    per_class = np.clip(per_class, 1e-12, None)
    # renormalised one-vs-rest: equal up to the PROB_EPS floor and float64 rounding
    np.testing.assert_allclose(torch.softmax(ours(z), 1).numpy(),
                               per_class / per_class.sum(1, keepdims=True), atol=1e-9)


def test_isotonic_matches_netcal():
    netcal = pytest.importorskip("netcal.binning")
    z, y, p1, yn = _binary(seed=4)
    ref = netcal.IsotonicRegression().fit(p1, yn).transform(p1)
    ours = IsotonicCalibration().fit(z, y).predict_proba(z)[:, 1]
    # netcal wraps scikit-learn's isotonic regression: same fit up to float rounding
    np.testing.assert_allclose(ours, np.clip(ref, 1e-12, 1), atol=1e-7)


def test_histogram_binning_matches_netcal_and_a_direct_count():
    netcal = pytest.importorskip("netcal.binning")
    z, y, p1, yn = _binary(n=2000, seed=6)
    ours = HistogramBinning(10).fit(z, y)
    assert (ours.counts_ > 0).all()  # every bin filled: empty-bin conventions do not enter
    b = np.minimum((p1 * 10).astype(int), 9)
    direct = np.array([yn[b == i].mean() for i in range(10)])[b]
    p = ours.predict_proba(z)[:, 1]
    np.testing.assert_allclose(p, np.clip(direct, 1e-12, 1), atol=1e-9)
    ref = netcal.HistogramBinning(bins=10).fit(p1, yn).transform(p1)
    # netcal's bin edges (np.linspace) and ours (floor(10 p)) differ only for scores within
    # float rounding of an edge: compare the log-loss, within 1e-3
    assert abs(_nll(np.stack([1 - p, p], 1), yn) - _nll(np.stack([1 - ref, ref], 1), yn)) < 1e-3


def test_platt_matches_netcal_logistic_calibration_and_sklearn():
    netcal = pytest.importorskip("netcal.scaling")
    from sklearn.linear_model import LogisticRegression

    z, y, p1, yn = _binary(seed=7)
    ours = PlattScaling(smooth_targets=False).fit(z, y)
    s = logit(np.clip(p1, 1e-12, 1 - 1e-12))
    sk = LogisticRegression(C=1e12, tol=1e-10, max_iter=10_000).fit(s[:, None], yn)
    # unpenalised logistic regression on the score: the same convex problem, solver tolerance
    np.testing.assert_allclose(ours.predict_proba(z)[:, 1], sk.predict_proba(s[:, None])[:, 1],
                               atol=1e-5)
    ref = netcal.LogisticCalibration(method="mle").fit(p1, yn).transform(p1)
    # netcal fits the same model by its own optimiser: log-loss within 1e-4
    p = ours.predict_proba(z)
    assert abs(_nll(p, yn) - _nll(np.stack([1 - ref, ref], 1), yn)) < 1e-4


def test_platt_targets_are_platts():
    """With Platt's targets the fit equals a logistic regression on the smoothed targets,
    here solved independently by scipy."""
    from scipy.optimize import minimize

    z, y, p1, yn = _binary(n=300, seed=8)
    s = logit(np.clip(p1, 1e-12, 1 - 1e-12))
    n_pos, n_neg = yn.sum(), len(yn) - yn.sum()
    t = np.where(yn == 1, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))

    def loss(ab):
        u = ab[0] * s + ab[1]
        return np.mean(np.logaddexp(0, u) - t * u)

    ab = minimize(loss, [1.0, 0.0], method="BFGS", options={"gtol": 1e-10}).x
    ours = PlattScaling().fit(z, y)
    np.testing.assert_allclose([float(ours.slope_[0]), float(ours.intercept_[0])], ab,
                               atol=1e-4)  # float32 storage of A, B; BFGS tolerance


def test_beta_calibration_matches_netcal():
    netcal = pytest.importorskip("netcal.scaling")
    z, y, p1, yn = _binary(seed=9)
    ours = BetaCalibration().fit(z, y)
    a, b, c = ours.coef_[0].tolist()
    assert a >= 0 and b >= 0
    ref = netcal.BetaCalibration(method="mle").fit(p1, yn).transform(p1)
    # the same three-parameter family by maximum likelihood (netcal's optimiser, no a, b >= 0
    # constraint, which is inactive here): log-loss within 1e-4
    p = ours.predict_proba(z)
    assert abs(_nll(p, yn) - _nll(np.stack([1 - ref, ref], 1), yn)) < 1e-4
    # and the map is the paper's formula
    manual = expit(a * np.log(p1) - b * np.log1p(-p1) + c)
    np.testing.assert_allclose(p[:, 1], manual, atol=1e-5)


def _venn_abers_brute(s_cal, y_cal, s, label):
    from sklearn.isotonic import IsotonicRegression as SkIso

    x = np.append(s_cal, s)
    t = np.append(y_cal, label).astype(float)
    return SkIso().fit(x, t).predict([s])[0]


def test_venn_abers_equals_brute_force_isotonic_fits_including_ties():
    z, y, p1, yn = _binary(n=120, seed=10)
    cal = VennAbers().fit(z, y)
    s_cal = torch.softmax(z, 1)[:, 1].numpy()
    zt = torch.cat([z[:6], _binary(n=6, seed=11)[0]])  # 6 tied with calibration points
    st = torch.softmax(zt, 1)[:, 1].numpy()
    p0, p1_, p = cal.predict_interval(zt)
    for i, s in enumerate(st):
        # each interval end is the isotonic fit with the test point added, exactly
        assert p0[i, 1] == pytest.approx(_venn_abers_brute(s_cal, yn, s, 0), abs=1e-12)
        assert p1_[i, 1] == pytest.approx(_venn_abers_brute(s_cal, yn, s, 1), abs=1e-12)
    assert np.all(p0 <= p1_ + 1e-12)
    np.testing.assert_allclose(p[:, 1], p1_[:, 1] / (1 - p0[:, 1] + p1_[:, 1]), atol=1e-12)
    np.testing.assert_allclose(p, cal.predict_proba(zt), atol=1e-6)


def test_venn_abers_tables_do_not_depend_on_the_chunk_size(monkeypatch):
    import calix.calibrate.binning as cal_mod

    z, y = _data(n=400, k=3, seed=20)
    whole = VennAbers().fit(z, y).predict_interval(z)
    monkeypatch.setattr(cal_mod, "_VENN_ABERS_CHUNK", 50)  # a few rows of a per chunk
    chunked = VennAbers().fit(z, y).predict_interval(z)
    for a, b in zip(whole, chunked, strict=True):
        np.testing.assert_array_equal(a, b)


def test_venn_abers_matches_the_venn_abers_package():
    va = pytest.importorskip("venn_abers")
    z, y, p1, yn = _binary(n=500, seed=12)
    zt, _, pt, _ = _binary(n=200, seed=13)  # continuous scores: no test score ties
    ours = VennAbers().fit(z, y)
    p_cal, p_test = torch.softmax(z, 1).numpy(), torch.softmax(zt, 1).numpy()
    p_prime, p0p1 = va.VennAbers().fit(p_cal, yn).predict_proba(p_test)
    q0, q1, q = ours.predict_interval(zt)
    # both compute the same two isotonic fits exactly: equal to float64 rounding
    np.testing.assert_allclose(q0[:, 1], p0p1[:, 0], atol=1e-9)
    np.testing.assert_allclose(q1[:, 1], p0p1[:, 1], atol=1e-9)
    np.testing.assert_allclose(q[:, 1], p_prime[:, 1], atol=1e-9)


def test_venn_abers_one_vs_rest_renormalises_the_merged_probabilities():
    z, y = _data(k=4, seed=14)
    cal = VennAbers().fit(z, y)
    p0, p1, p = cal.predict_interval(z[:50])
    merged = p1 / (1 - p0 + p1)
    np.testing.assert_allclose(p, merged / merged.sum(1, keepdims=True), atol=1e-9)


def test_vector_and_matrix_scaling_match_probmetrics():
    pm = pytest.importorskip("probmetrics.calibrators")
    z, y = _data(n=1500, k=3, seed=15)
    lp = torch.log_softmax(z, 1)  # probmetrics works on log-probabilities
    probs = torch.softmax(z, 1).numpy()
    yn = y.numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        vs = pm.VectorScalingCalibrator().fit(probs, yn).predict_proba(probs)
        ms = pm.MatrixScalingCalibrator().fit(probs, yn).predict_proba(probs)
    ours_vs = VectorScaling().fit(lp, y).predict_proba(lp)
    ours_ms = MatrixScaling(reg_lambda=0.0, reg_mu=0.0).fit(lp, y).predict_proba(lp)
    # the same unregularised maximum-likelihood problems (probmetrics parametrises vector
    # scaling by 1/w; same optimum), fitted by different optimisers: log-loss within 1e-4
    assert abs(_nll(ours_vs, yn) - _nll(vs, yn)) < 1e-4
    assert abs(_nll(ours_ms, yn) - _nll(ms, yn)) < 1e-4


def test_structured_matrix_scaling_matches_probmetrics():
    pm = pytest.importorskip("probmetrics.calibrators")
    pytest.importorskip("torchmin")
    z, y = _data(n=1500, k=4, seed=16)
    probs = torch.softmax(z, 1).numpy()
    yn = y.numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = pm.SMSCalibrator(opt="bfgs").fit(probs, yn).predict_proba(probs)
    ours = StructuredMatrixScaling().fit(torch.log_softmax(z, 1), y).predict_proba(z)
    # same penalties and defaults; probmetrics' first stage mixes the temperature-scaled
    # probabilities with a little uniform mass, ours is plain temperature scaling: log-loss
    # within 2e-3 and probabilities within 0.02
    assert abs(_nll(ours, yn) - _nll(ref, yn)) < 2e-3
    np.testing.assert_allclose(ours, ref, atol=0.02)


def test_structured_matrix_scaling_reduces_to_temperature_scaling_when_penalised_hard():
    from calix.calibrate import TemperatureScaling

    z, y = _data(k=4, seed=17)
    sms = StructuredMatrixScaling(lambda_intercept=1e8, lambda_diagonal=1e8,
                                  lambda_off_diagonal=1e8).fit(z, y)
    ts = TemperatureScaling().fit(z, y)
    np.testing.assert_allclose(sms.predict_proba(z), ts.predict_proba(z), atol=1e-5)


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize("name", CLEAN)
def test_bad_input_is_refused_clearly(name):
    z, y = _data(k=3, seed=18)
    with pytest.raises(NotFittedError, match="not fitted yet"):
        _make(name)(z)
    with pytest.raises(ValueError, match="look like probabilities"):
        _make(name).fit(torch.softmax(z, 1), y)
    with pytest.raises(ValueError, match="at least two classes; every label is 1"):
        _make(name).fit(z, torch.ones_like(y))
    bad = z.clone()
    bad[3, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        _make(name).fit(bad, y)
    cal = _make(name).fit(z, y)
    with pytest.raises(ValueError, match="NaN or infinite"):
        cal(bad)
    with pytest.raises(ValueError, match="3 classes"):
        cal(z[:, :2])


@pytest.mark.parametrize("cls", [PlattScaling, BetaCalibration])
def test_binary_calibrators_refuse_multiclass_when_asked(cls):
    z, y = _data(k=3)
    with pytest.raises(ValueError, match="binary calibrator.*3 classes.*multiclass='ovr'"):
        cls(multiclass="raise").fit(z, y)
    with pytest.raises(ValueError, match="multiclass must be one of"):
        cls(multiclass="ovo")
    zb, yb = _data(k=2)
    assert cls(multiclass="raise").fit(zb, yb).is_fitted


@pytest.mark.parametrize("name", NON_DIFFERENTIABLE)
def test_gradient_explainers_refuse_a_non_differentiable_calibrator(name):
    from captum.attr import Saliency as CaptumSaliency

    from calix.explain import CaptumExplainer, IntegratedGradients, Saliency, SmoothGrad

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3))
    x = torch.randn(200, 4)
    y = net(x).argmax(1)
    y[::5] = (y[::5] + 1) % 3
    model = wrap(net, input_shape=(4,))
    cal = CALIBRATORS[name]().fit(model.forward(x, grad=False), y)
    cm = calibrated(model, cal)
    for explainer in (Saliency, IntegratedGradients, SmoothGrad):
        with pytest.raises(NonDifferentiableCalibratorError,
                           match=rf"{explainer.__name__} takes gradients.*{type(cal).__name__} "
                                 rf"\({name}\).*not differentiable.*temperature"):
            explainer(cm)
    with pytest.raises(NonDifferentiableCalibratorError, match="CaptumExplainer"):
        CaptumExplainer(CaptumSaliency, cm)
    with pytest.raises(NonDifferentiableCalibratorError, match="gradient computation"):
        cm.forward(x[:3].clone().requires_grad_(True))
    # perturbation explainers and plain queries still work
    assert cm.predict_proba(x[:3]).shape == (3, 3)
    # a differentiable calibrator passes
    Saliency(calibrated(model, VectorScaling().fit(model.forward(x, grad=False), y)))


# ---------------------------------------------------------------------- devices
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", CLEAN)
def test_cpu_and_cuda_give_the_same_probabilities(name):
    z, y = _data(k=4, seed=19)
    cpu = _make(name).fit(z, y)
    cuda = _make(name).cuda().fit(z.cuda(), y.cuda())
    assert all(b.is_cuda for b in cuda.buffers())
    zt = z[:100].float()
    out = cuda(zt.cuda())
    assert out.is_cuda
    # fits run on the CPU in float64 on both; the maps are applied in float32 on each
    # device: probabilities within 1e-5
    np.testing.assert_allclose(cuda.predict_proba(zt.cuda()), cpu.predict_proba(zt), atol=1e-5)


@pytest.mark.parametrize("name", [n for n in CALIBRATORS if n not in ("temperature", "dirichlet",
                                                                      "recalx")])
def test_calibrators_create_every_tensor_on_the_inputs_device(name, monkeypatch):
    # As in test_calibration_guards.py: with the default device set to "meta", a tensor
    # created without an explicit device lands on meta and fails as soon as it meets the CPU
    # data -- a CPU-only check for tensors that would stay behind beside CUDA inputs.
    import calix.calibrate.levels as cal_mod

    monkeypatch.setattr(cal_mod, "level_bins",
                        lambda lv, nb: (lv * nb).floor().long().clamp(max=nb - 1))
    z, y = _data(n=400, k=3, seed=21)
    lv = torch.rand(400, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    cls = CALIBRATORS[name]
    level_aware = CALIBRATORS.meta(name)["fit_on"] == "perturbed"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cal = cls(2, reg_lambda=1e-2, reg_mu=1e-2) if name == "by_level_matrix" or \
            name == "by_level_dirichlet" else (cls(2) if level_aware else _make(name))
        with torch.device("meta"):
            cal.fit(z, y, lv) if level_aware else cal.fit(z, y)
            out = cal(z.float(), lv.float()) if level_aware else cal(z.float())
    assert out.device.type == "cpu" and all(b.device.type == "cpu" for b in cal.buffers())
