import numpy as np
import pytest
import torch
from scipy.optimize import minimize
from scipy.special import log_softmax as np_log_softmax

from calix.calibrate import (
    CalibratedModel,
    Dirichlet,
    NotFittedError,
    ReCalX,
    TemperatureScaling,
    calibrated,
    fit_calibrator,
)
from calix.models import wrap
from calix.perturb import Columns, Constant, Perturbation, all_coalitions


def _calibrated_sample(n, k, scale, seed):
    """Logits z of a calibrated model: labels are drawn from softmax(z)."""
    g = torch.Generator().manual_seed(seed)
    z = scale * torch.randn(n, k, generator=g, dtype=torch.float64)
    y = torch.multinomial(torch.softmax(z, 1), 1, generator=g).flatten()
    return z, y


@pytest.mark.parametrize("c", [0.4, 2.0, 3.0])
def test_temperature_recovers_known_temperature(c):
    # Observed logits are a calibrated model's logits times c, so the calibrating T is c.
    z, y = _calibrated_sample(20_000, 5, 2.0, seed=1)
    t = TemperatureScaling().fit(z * c, y).temperature_
    assert abs(t / c - 1) < 0.03


def test_recalx_recovers_a_temperature_per_bin():
    z, y = _calibrated_sample(30_000, 4, 2.0, seed=2)
    levels = torch.rand(len(z), generator=torch.Generator().manual_seed(3))
    true_t = torch.linspace(0.7, 4.0, 10, dtype=torch.float64)
    bins = (levels * 10).long().clamp(max=9)
    rc = ReCalX(10).fit(z * true_t[bins, None], y, levels)
    np.testing.assert_allclose(rc.temperatures_.numpy(), true_t.numpy(), rtol=0.06)
    assert rc.counts_.sum() == len(z)


@pytest.mark.parametrize("seed", range(5))
def test_temperature_and_recalx_keep_the_argmax(seed):
    g = torch.Generator().manual_seed(seed)
    z = 4 * torch.randn(400, 6, generator=g)
    y = torch.randint(0, 6, (400,), generator=g)
    lv = torch.rand(400, generator=g)
    ts = TemperatureScaling().fit(z, y)
    rc = ReCalX(5, min_samples_per_bin=10).fit(z, y, lv)
    assert torch.equal(ts(z).argmax(1), z.argmax(1))
    assert torch.equal(rc(z, lv).argmax(1), z.argmax(1))


def _odir_reference(z, y, lam, mu):
    """A slow, independent fit of the ODIR objective with scipy's BFGS."""
    lq = np_log_softmax(z, axis=1)
    n, k = lq.shape
    onehot = np.eye(k)[y]

    def objective(theta):
        w, b = theta[: k * k].reshape(k, k), theta[k * k :]
        s = lq @ w.T + b
        ls = np_log_softmax(s, axis=1)
        off = w - np.diag(np.diag(w))
        loss = -np.mean((onehot * ls).sum(1)) + lam / (k * (k - 1)) * (off**2).sum()
        loss += mu / k * (b**2).sum()
        ds = (np.exp(ls) - onehot) / n
        gw = ds.T @ lq + 2 * lam / (k * (k - 1)) * off
        gb = ds.sum(0) + 2 * mu / k * b
        return loss, np.concatenate([gw.ravel(), gb])

    theta0 = np.concatenate([np.eye(k).ravel(), np.zeros(k)])
    res = minimize(objective, theta0, jac=True, method="BFGS", options={"gtol": 1e-10})
    return res.x[: k * k].reshape(k, k), res.x[k * k :]


def test_dirichlet_matches_a_slow_reference_fit():
    z, y = _calibrated_sample(1500, 3, 2.0, seed=4)
    # a miscalibration temperature scaling cannot fix: class-dependent distortion
    distorted = z * torch.tensor([2.0, 0.7, 1.3], dtype=torch.float64) + torch.tensor(
        [0.5, 0.0, -0.3], dtype=torch.float64)
    cal = Dirichlet(reg_lambda=1e-2, reg_mu=1e-2).fit(distorted, y)
    w_ref, b_ref = _odir_reference(distorted.numpy(), y.numpy(), 1e-2, 1e-2)
    # both minimise the same strictly convex objective; float32 storage bounds the agreement
    np.testing.assert_allclose(cal.weight_.numpy(), w_ref, atol=2e-3)
    np.testing.assert_allclose(cal.bias_.numpy(), b_ref, atol=2e-3)
    nll = torch.nn.functional.cross_entropy
    ts = TemperatureScaling().fit(distorted, y)
    assert nll(cal(distorted.float()), y) < nll(ts(distorted.float()), y)


def test_dirichlet_cross_validates_its_strengths():
    z, y = _calibrated_sample(600, 3, 2.0, seed=5)
    cal = Dirichlet(grid=(1e-3, 1.0), cv=2).fit(z * 2, y)
    assert cal.reg_lambda_ in (1e-3, 1.0) and cal.reg_mu_ in (1e-3, 1.0)


def test_calibrated_model_is_differentiable_and_scales_gradients():
    lin = torch.nn.Linear(4, 3)
    z, y = _calibrated_sample(500, 3, 1.0, seed=6)
    ts = TemperatureScaling().fit(z * 2.0, y)
    model = calibrated(wrap(lin, input_shape=(4,)), ts)
    x = torch.randn(2, 4, requires_grad=True)
    model(x)[:, 1].sum().backward()
    expect = lin.weight[1].detach() / ts.temperature_
    torch.testing.assert_close(x.grad, expect.expand(2, 4))


def test_level_aware_model_gets_levels_from_the_engine():
    lin = torch.nn.Linear(3, 2)
    base = wrap(lin, input_shape=(3,))
    rc = ReCalX(2, min_samples_per_bin=1).fit(
        torch.randn(40, 2), torch.randint(0, 2, (40,)), torch.rand(40))
    rc.log_temperatures_.copy_(torch.log(torch.tensor([1.0, 4.0])))
    model = calibrated(base, rc)
    assert model.level_aware
    x = torch.randn(1, 3)
    masks = all_coalitions(3)
    res = Perturbation(Columns(), Constant(0.0)).query(model, x, masks)
    raw = Perturbation(Columns(), Constant(0.0)).query(base, x, masks)
    t = torch.where(res.levels >= 0.5, 4.0, 1.0)
    torch.testing.assert_close(res.outputs, raw.outputs / t[..., None])
    # clean inputs (no levels) use λ = 0 ...
    torch.testing.assert_close(model.forward(x), base.forward(x))
    # ... unless the model is told to insist on levels
    strict = calibrated(base, rc, assume_clean=False)
    with pytest.raises(ValueError, match="needs the perturbation level"):
        strict.forward(x)
    with pytest.raises(ValueError, match="ReCalX needs the perturbation level"):
        rc(torch.randn(2, 2))


def test_fit_perturbed_improves_calibration_by_level():
    from calix import zoo
    from calix.metrics import calibration_by_level
    from calix.recipes import default_perturbation

    trained = zoo.train("cnn", "digits-noisy", seed=0)
    ds, model = trained.dataset, trained.wrap()
    engine = default_perturbation(ds, "zero")
    rc = fit_calibrator("recalx", model, ds.X_val, ds.y_val, perturbation=engine, n_samples=100)
    temps = rc.temperatures_.numpy()
    assert temps[-1] > temps[0]  # more removed -> the model needs cooling more
    before = calibration_by_level(model, ds.X_test, ds.y_test, engine, n_samples=100,
                                  metric="ece", seed=1)
    after = calibration_by_level(calibrated(model, rc), ds.X_test, ds.y_test, engine,
                                 n_samples=100, metric="ece", seed=1)
    assert after.max < 0.5 * before.max and after.avg < 0.5 * before.avg


# ---------------------------------------------------------------------- bad input
def test_labels_outside_class_range():
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        TemperatureScaling().fit(torch.randn(5, 3), torch.tensor([0, 1, 2, 3, 0]))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        Dirichlet(reg_lambda=0.0, reg_mu=0.0).fit(torch.randn(3, 3), [0, -1, 2])


def test_logits_with_nan():
    z = torch.randn(6, 3)
    z[2, 1] = float("nan")
    for cal in (TemperatureScaling(), Dirichlet(), ReCalX(2)):
        with pytest.raises(ValueError, match="NaN or infinite"):
            cal.fit(z, torch.zeros(6, dtype=torch.long), levels=torch.zeros(6))


def test_too_few_samples_in_a_level_bin():
    z, y = torch.randn(300, 3), torch.randint(0, 3, (300,))
    levels = torch.cat([torch.arange(9).repeat_interleave(32) / 10 + 0.05,
                        torch.full((12,), 0.95)])
    msg = r"too few validation samples per level bin.*bin 9 \[0.9, 1.0\): 12"
    with pytest.raises(ValueError, match=msg):
        ReCalX(10, min_samples_per_bin=20).fit(z, y, levels)


def test_levels_outside_unit_interval():
    z, y = torch.randn(100, 3), torch.randint(0, 3, (100,))
    with pytest.raises(ValueError, match=r"levels must lie in \[0, 1\]"):
        ReCalX(2, min_samples_per_bin=1).fit(z, y, torch.full((100,), 1.5))
    rc = ReCalX(2, min_samples_per_bin=1).fit(z, y, torch.rand(100))
    with pytest.raises(ValueError, match=r"levels must lie in \[0, 1\]"):
        rc(z, torch.full((100,), -0.1))
    with pytest.raises(ValueError, match="needs the perturbation level of every sample"):
        ReCalX(2).fit(z, y)


def test_unfitted_calibrator():
    for cal in (TemperatureScaling(), Dirichlet(), ReCalX()):
        with pytest.raises(NotFittedError, match="not fitted yet"):
            cal(torch.randn(2, 3), torch.zeros(2))
        with pytest.raises(NotFittedError):
            calibrated(wrap(torch.nn.Linear(2, 3)), cal)
    with pytest.raises(NotFittedError):
        _ = TemperatureScaling().temperature_


def test_separable_validation_data_warns():
    z = torch.tensor([[5.0, 0.0], [0.0, 5.0]] * 10)
    with pytest.warns(UserWarning, match="every validation prediction is correct"):
        TemperatureScaling().fit(z, torch.tensor([0, 1] * 10))


def test_calibrating_a_regressor_is_refused():
    ts = TemperatureScaling().fit(torch.randn(30, 2), torch.randint(0, 2, (30,)))
    with pytest.raises(TypeError, match="not regressors"):
        CalibratedModel(wrap(torch.nn.Linear(2, 1), task="regression"), ts)
    with pytest.raises(ValueError, match="method must be one of"):
        fit_calibrator("platt", wrap(torch.nn.Linear(2, 2)), torch.randn(4, 2), [0, 1, 0, 1])


def test_from_temperature_divides_by_the_given_temperature():
    z = torch.randn(50, 4)
    for t in (0.25, 1.0, 2.52, 7.3):
        ts = TemperatureScaling.from_temperature(t)
        assert ts.is_fitted and ts.temperature_ == t
        assert torch.equal(ts(z), z / t)  # exactly z / T, as a hand-written z / T
    # the state dict holds log T, as after fit: a reloaded copy has the same temperature
    fresh = TemperatureScaling()
    fresh.load_state_dict(TemperatureScaling.from_temperature(2.52).state_dict())
    assert fresh.is_fitted and fresh.temperature_ == pytest.approx(2.52, rel=1e-6)
    # refitting forgets the given temperature
    ts = TemperatureScaling.from_temperature(3.0).fit(z * 2, torch.randint(0, 4, (50,)))
    assert torch.allclose(ts(z), z / ts.temperature_)
    model = calibrated(wrap(torch.nn.Linear(4, 4)), TemperatureScaling.from_temperature(2.0))
    assert model.predict_proba(z).shape == (50, 4)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf"), -float("inf")])
def test_from_temperature_refuses_a_bad_temperature(bad):
    with pytest.raises(ValueError, match="finite number > 0"):
        TemperatureScaling.from_temperature(bad)


@pytest.mark.parametrize("bad", ["2", True, None])
def test_from_temperature_refuses_a_non_number(bad):
    with pytest.raises(TypeError):
        TemperatureScaling.from_temperature(bad)
