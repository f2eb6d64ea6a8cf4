"""Calibrators refuse degenerate input, guard degenerate level bins, keep their fitted state
through state_dict, and keep tensors on the device of the inputs."""

import io
import warnings

import numpy as np
import pytest
import torch
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax as np_log_softmax

from calix.calibrate import (
    T_MIN,
    Dirichlet,
    NotFittedError,
    ReCalX,
    TemperatureScaling,
    calibrated,
    check_logits_labels,
    perturbed_logits,
)
from calix.models import wrap
from calix.perturb import Columns, Mean, Perturbation

CALIBRATORS = [
    lambda: TemperatureScaling(),
    lambda: Dirichlet(reg_lambda=1e-2, reg_mu=1e-2),
    lambda: ReCalX(2, min_samples_per_bin=1),
]


def _data(n=300, k=3, scale=2.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = scale * torch.randn(n, k, generator=g, dtype=torch.float64)
    y = torch.multinomial(torch.softmax(z / 1.5, 1), 1, generator=g).flatten()
    lv = torch.rand(n, generator=g, dtype=torch.float64)
    return z, y, lv


def _fit(cal, z, y, lv):
    return cal.fit(z, y, levels=lv) if isinstance(cal, ReCalX) else cal.fit(z, y)


# ---------------------------------------------------------------------- probabilities
@pytest.mark.parametrize("make", CALIBRATORS)
def test_probabilities_passed_as_logits_are_refused(make):
    z, y, lv = _data()
    msg = r"logits look like probabilities \(rows in \[0,1\] summing to 1\); pass log-prob"
    for p in (torch.softmax(z, 1), torch.softmax(z, 1).numpy().round(3)):
        with pytest.raises(ValueError, match=msg):
            _fit(make(), p, y, lv)
    # log-probabilities are logits up to a per-row constant: accepted
    assert _fit(make(), torch.log_softmax(z, 1), y, lv).is_fitted


def test_probability_rule_edges():
    y = torch.tensor([0, 1, 1, 0])
    one_hot = torch.eye(2)[y]
    with pytest.raises(ValueError, match="look like probabilities"):
        check_logits_labels(one_hot, y)
    # the same scores shifted by a constant per row (softmax unchanged) pass
    z, _ = check_logits_labels(one_hot - 0.5, y)
    assert z.shape == (4, 2)
    # one row outside [0, 1] or off the simplex is enough to be logits
    near = torch.tensor([[0.2, 0.8], [0.6, 0.4], [0.5, 0.5], [0.3, 0.9]])
    check_logits_labels(near, y)
    check_logits_labels(torch.tensor([[0.2, 0.8], [0.6, 0.4], [0.5, 0.5], [1.2, -0.2]]), y)


# ---------------------------------------------------------------------- degenerate input
@pytest.mark.parametrize("make", CALIBRATORS)
def test_empty_single_class_and_mismatched_input_are_refused(make):
    with pytest.raises(ValueError, match="no rows"):
        _fit(make(), np.zeros((0, 3)), np.zeros(0, dtype=int), np.zeros(0))
    z, _, lv = _data()
    with pytest.raises(ValueError, match="calibration needs labels of at least two classes"):
        _fit(make(), z, torch.full((len(z),), 2), lv)
    with pytest.raises(ValueError, match="has 300 rows but labels has 299"):
        _fit(make(), z, torch.zeros(299, dtype=torch.long), lv)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\).*found \[7\]"):
        _fit(make(), z, torch.full((len(z),), 7), lv)
    with pytest.raises(NotFittedError, match="not fitted yet"):
        make().predict_proba(z, levels=lv)


@pytest.mark.parametrize("make", CALIBRATORS)
def test_fitted_calibrators_refuse_non_finite_logits(make):
    z, y, lv = _data()
    cal = _fit(make(), z, y, lv)
    bad = z[:4].clone().float()
    bad[1, 2] = float("nan")
    bad[3, 0] = float("inf")
    with pytest.raises(ValueError, match=r"logits contain 2 NaN or infinite value\(s\)"):
        cal(bad, lv[:4])
    with pytest.raises(ValueError, match="NaN or infinite"):
        cal.predict_proba(bad.numpy(), lv[:4])
    with pytest.raises(ValueError, match="NaN or infinite"):
        cal.predict_proba(bad, lv[:4])
    assert torch.isfinite(cal(z[:4].float(), lv[:4])).all()


# ---------------------------------------------------------------------- temperatures
def test_temperature_is_the_exact_nll_minimiser():
    z, y, _ = _data(n=400, k=4, seed=1)
    zn, yn = z.numpy(), y.numpy()

    def nll(log_t):
        return -np.mean(np_log_softmax(zn / np.exp(log_t), 1)[np.arange(len(yn)), yn])

    ref = np.exp(minimize_scalar(nll, bounds=(-4, 4), method="bounded",
                                 options={"xatol": 1e-10}).x)
    # both minimise the same smooth 1-d objective; float32 storage bounds the agreement
    assert TemperatureScaling().fit(z, y).temperature_ == pytest.approx(ref, rel=1e-6)


def test_near_separable_data_warns_at_the_lower_bound():
    # one wrong prediction by a hair, 100 right ones by small margins: the NLL minimiser
    # lies below T_MIN (logits more than 100 times too small)
    z = torch.tensor([[0.02, 0.0], [0.0, 0.02]] * 50 + [[1e-5, 0.0]])
    y = torch.tensor([0, 1] * 50 + [1])
    with pytest.warns(UserWarning, match="hit the lower search bound"):
        ts = TemperatureScaling().fit(z, y)
    assert ts.temperature_ == pytest.approx(T_MIN, rel=1e-5)
    # ReCalX treats such a bin as degenerate too
    z0, y0, _ = _data(n=300, k=2, seed=4)
    lv = torch.cat([torch.full((300,), 0.2), torch.full((101,), 0.7)])
    with pytest.warns(UserWarning, match=r"bin 1 \[0.5, 1.0\) \(T at the search bound 0.01\)"):
        rc = ReCalX(2).fit(torch.cat([z0.float(), z]), torch.cat([y0, y]), lv)
    assert rc.fallback_bins_ == [1] and rc.sources_[1].tolist() == [0, 1]


def test_all_correct_validation_data_keeps_t_1():
    z = torch.tensor([[5.0, 0.0], [0.0, 5.0]] * 10)
    with pytest.warns(UserWarning, match="every validation prediction is correct.*keeping T = 1"):
        ts = TemperatureScaling().fit(z, torch.tensor([0, 1] * 10))
    assert ts.temperature_ == 1.0  # no minimiser exists: the logits are left unchanged


def _recalx_data(seed=0):
    """Four level bins; bin 0 (clean-ish) has only correct predictions, bins 1-3 are
    overconfident by 2, 3 and 4."""
    g = torch.Generator().manual_seed(seed)
    n = 400
    z = 2 * torch.randn(4 * n, 3, generator=g, dtype=torch.float64)
    y = torch.multinomial(torch.softmax(z, 1), 1, generator=g).flatten()
    bins = torch.arange(4).repeat_interleave(n)
    lv = (bins + torch.rand(4 * n, generator=g, dtype=torch.float64)) / 4
    z = z * torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)[bins, None]
    y[:n] = z[:n].argmax(1)  # bin 0: every prediction correct
    return z, y, lv, bins


def test_recalx_pools_a_bin_where_every_prediction_is_correct():
    z, y, lv, bins = _recalx_data()
    with pytest.warns(UserWarning, match=r"1 degenerate level bin.*bin 0 \[0.0, 0.2\) \(every "
                                         r"prediction correct\) -> bins 0-1"):
        rc = ReCalX(4).fit(z, y, lv)
    assert rc.fallback_bins_ == [0]
    assert rc.sources_.tolist() == [[0, 1], [1, 1], [2, 2], [3, 3]]
    # bin 0 gets the temperature of bins 0 and 1 pooled, the others their own
    pooled = TemperatureScaling().fit(z[bins <= 1], y[bins <= 1]).temperature_
    own = [TemperatureScaling().fit(z[bins == b], y[bins == b]).temperature_ for b in (1, 2, 3)]
    np.testing.assert_allclose(rc.temperatures_.numpy(), [pooled, *own], rtol=1e-5)
    assert rc.temperatures_[0] > 0.5  # not a one-hot-making T near 0
    # queries without a level are clean (λ = 0): bin 0's (pooled) temperature
    lin = torch.nn.Linear(3, 3, dtype=torch.float32)
    model = calibrated(wrap(lin, input_shape=(3,)), rc)
    x = torch.randn(5, 3)
    torch.testing.assert_close(model.forward(x), lin(x).detach() / rc.temperatures_[0])


def test_recalx_widens_the_pool_until_healthy_and_falls_back_to_t_1():
    z, y, lv, bins = _recalx_data(seed=1)
    y[bins <= 1] = z[bins <= 1].argmax(1)  # bins 0 and 1 all correct: pool 0-1 is too
    with pytest.warns(UserWarning, match="2 degenerate level bin"):
        rc = ReCalX(4).fit(z, y, lv)
    assert rc.fallback_bins_ == [0, 1]
    assert rc.sources_[:2].tolist() == [[0, 2], [0, 2]]
    # nothing healthy anywhere: T = 1 (no calibration), recorded as source (-1, -1)
    z2 = torch.tensor([[3.0, 0.0], [0.0, 3.0]]).repeat(50, 1)
    with pytest.warns(UserWarning, match="no healthy window"):
        rc2 = ReCalX(2, min_samples_per_bin=1).fit(z2, torch.tensor([0, 1]).repeat(50),
                                                   torch.linspace(0, 1, 100))
    assert rc2.sources_.tolist() == [[-1, -1], [-1, -1]]
    torch.testing.assert_close(rc2.temperatures_, torch.ones(2))


def test_recalx_without_degenerate_bins_does_not_warn():
    z, y, lv, bins = _recalx_data(seed=2)
    y[: (bins == 0).sum()] = torch.multinomial(torch.softmax(z[bins == 0], 1), 1).flatten()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rc = ReCalX(4).fit(z, y, lv)
    assert rc.fallback_bins_ == []
    np.testing.assert_allclose(rc.temperatures_.numpy(), [1, 2, 3, 4], rtol=0.25)


# ---------------------------------------------------------------------- state_dict
@pytest.mark.parametrize("make", [*CALIBRATORS, lambda: ReCalX(5, min_samples_per_bin=1)])
def test_fitted_state_survives_save_and_load(make):
    z, y, lv = _data(n=200, k=4, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cal = _fit(make(), z, y, lv)
    buf = io.BytesIO()
    torch.save(cal.state_dict(), buf)
    buf.seek(0)
    fresh = type(cal)()  # default hyperparameters: ReCalX() has 10 bins, Dirichlet 0x0 weights
    assert not fresh.is_fitted
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    assert fresh.is_fitted
    zf, lf = z.float(), lv.float()
    torch.testing.assert_close(fresh(zf, lf), cal(zf, lf), rtol=0, atol=0)
    if isinstance(cal, ReCalX):
        assert fresh.n_bins == cal.n_bins
        assert torch.equal(fresh.counts_, cal.counts_)
        assert fresh.fallback_bins_ == cal.fallback_bins_
    if isinstance(cal, Dirichlet):
        assert (fresh.reg_lambda_, fresh.reg_mu_) == (cal.reg_lambda_, cal.reg_mu_)
    # an unfitted calibrator's state loads as unfitted
    other = type(cal)()
    other.load_state_dict(type(cal)().state_dict())
    with pytest.raises(NotFittedError):
        other(zf, lf)


# ---------------------------------------------------------------------- devices
def test_perturbed_logits_keeps_everything_on_the_model_device():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20, 4)).astype(np.float32)
    model = wrap(torch.nn.Linear(4, 3), input_shape=(4,))
    logits, labels, levels = perturbed_logits(
        model, X, torch.as_tensor(rng.integers(0, 3, 20)), Perturbation(Columns(), Mean().fit(X)),
        n_samples=20, n_per_bin=2, n_bins=4)
    assert logits.device == labels.device == levels.device == model.device
    assert labels.shape == levels.shape == (20 * 8,)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_recalx_fit_perturbed_and_calibrated_model_on_cuda():
    from calix.metrics import calibration_by_level

    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 6)).astype(np.float32)
    w = rng.normal(size=(6, 3)).astype(np.float32)
    y = (X @ w + rng.normal(size=(200, 3))).argmax(1)
    lin = torch.nn.Linear(6, 3)
    with torch.no_grad():
        lin.weight.copy_(torch.as_tensor(w.T * 3))
    engine = Perturbation(Columns(), Mean().fit(X))
    cpu = ReCalX(3, min_samples_per_bin=1).fit_perturbed(
        wrap(lin, input_shape=(6,)), X, y, engine, n_samples=100, n_per_bin=5)
    model = wrap(lin.cuda(), input_shape=(6,), device="cuda")
    rc = ReCalX(3, min_samples_per_bin=1).fit_perturbed(model, X, torch.as_tensor(y).cuda(),
                                                        engine, n_samples=100, n_per_bin=5)
    torch.testing.assert_close(rc.temperatures_, cpu.temperatures_, rtol=1e-4, atol=0)
    cal = calibrated(model, rc)
    assert cal.forward(X[:5]).device.type == "cuda"
    lc = calibration_by_level(cal, X, y, engine, n_bins=3, n_samples=100, n_per_bin=5,
                              metric="ece", min_samples=5)
    assert np.isfinite(lc.avg)
    for c in (TemperatureScaling(), Dirichlet(reg_lambda=1e-2, reg_mu=1e-2)):
        z = model.forward(X)
        c.cuda().fit(z, torch.as_tensor(y).cuda())
        assert c(z).device.type == "cuda" and all(b.is_cuda for b in c.buffers())


@pytest.mark.parametrize("make", CALIBRATORS)
def test_calibrators_create_every_tensor_on_the_inputs_device(make, monkeypatch):
    # With the default device set to "meta", a tensor created without an explicit device
    # lands on meta and fails as soon as it meets the CPU data (copying, indexing, reading a
    # value): a CPU-only check for tensors that would stay on the CPU beside CUDA inputs.
    import calix.calibrate.levels as cal_mod

    # perturb.level_bins converts with torch.as_tensor (default device); replace it by the
    # same arithmetic so that only calibrate.py is under test
    monkeypatch.setattr(cal_mod, "level_bins",
                        lambda lv, nb: (lv * nb).floor().long().clamp(max=nb - 1))
    z, y, lv = _data(n=200, k=3, seed=5)
    cal = make()
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")
        _fit(cal, z, y, lv)
        out = cal(z.float(), lv.float())
        probs = cal.predict_proba(z.numpy(), lv.numpy())
    assert out.device.type == "cpu" and all(b.device.type == "cpu" for b in cal.buffers())
    np.testing.assert_allclose(probs, torch.softmax(cal(z.float(), lv.float()), 1).detach(),
                               atol=1e-6)
