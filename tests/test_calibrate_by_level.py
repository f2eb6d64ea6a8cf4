"""Perturbation-aware calibrators: ByLevel (any calibrator per level bin, thin and degenerate
bins pooled) and SmoothLevelTemperature (a temperature curve in the level), and
fit_calibrator / the command line for every registered calibrator."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import torch

from calix import _names
from calix.calibrate import (
    CALIBRATORS,
    ByLevel,
    ByLevelIsotonicCalibration,
    IsotonicCalibration,
    NonDifferentiableCalibratorError,
    ReCalX,
    SmoothLevelTemperature,
    TemperatureScaling,
    VectorScaling,
    calibrated,
    fit_calibrator,
)
from calix.models import wrap


def _leveled(n=3000, k=3, seed=0, log_t=lambda lv: 0.2 + 1.5 * lv):
    """Logits whose labels follow softmax(z / T(λ)), T(λ) = exp(log_t(λ)); levels uniform.
    Logits are float32 values (as a model gives them)."""
    g = torch.Generator().manual_seed(seed)
    lv = torch.rand(n, generator=g, dtype=torch.float64)
    z = (4 * torch.randn(n, k, generator=g)).double()
    t = torch.exp(log_t(lv))
    y = torch.multinomial(torch.softmax(z / t[:, None], 1), 1, generator=g).flatten()
    return z, y, lv


def _nll(cal, z, y, lv):
    return float(torch.nn.functional.cross_entropy(cal(z, lv).double(), y))


# ---------------------------------------------------------------------- ByLevel
def test_by_level_temperature_is_recalx():
    z, y, lv = _leveled(seed=1)
    ours = ByLevel(TemperatureScaling(), n_bins=5).fit(z, y, lv)
    ref = ReCalX(5).fit(z, y, lv)
    temps = torch.stack([c.log_temperature_.exp() for c in ours.calibrators_])
    # the same per-bin NLL minimisers (same solver): equal to float32 storage
    torch.testing.assert_close(temps, ref.temperatures_, rtol=1e-6, atol=0)
    np.testing.assert_allclose(ours.predict_proba(z, lv), ref.predict_proba(z, lv), atol=1e-6)
    assert ours.fallback_bins_ == [] and ours.counts_.tolist() == ref.counts_.tolist()


def test_by_level_beats_one_calibrator_when_miscalibration_depends_on_the_level():
    z, y, lv = _leveled(seed=2)
    zt, yt, lvt = _leveled(seed=3)
    one = VectorScaling().fit(z, y)
    per = ByLevel(VectorScaling(), n_bins=5).fit(z, y, lv)
    assert _nll(per, zt, yt, lvt) < float(torch.nn.functional.cross_entropy(
        one(zt).double(), yt)) - 0.01


def test_thin_single_class_and_separable_bins_are_pooled():
    z, y, lv = _leveled(n=2000, seed=4)
    lv = lv.clone()
    # bin 1 of 4: only 10 samples; bin 3: a single class; bin 0: every prediction correct
    in1 = (lv >= 0.25) & (lv < 0.5)
    keep = ~in1 | (torch.cumsum(in1.long(), 0) <= 10)
    z, y, lv = z[keep], y[keep].clone(), lv[keep]
    y[lv >= 0.75] = 2
    in0 = lv < 0.25
    y[in0] = z[in0].argmax(1)
    with pytest.warns(UserWarning, match=r"bin 0 .*every prediction correct.*bin 1 .*10 "
                                         r"samples < min_samples_per_bin=50.*bin 3 .*class 2 only"):
        cal = ByLevel(VectorScaling(), n_bins=4).fit(z, y, lv)
    assert cal.fallback_bins_ == [0, 1, 3]
    assert cal.sources_[2].tolist() == [2, 2]
    assert cal.sources_[1].tolist() == [0, 2] and cal.sources_[3].tolist() == [2, 3]
    assert cal.sources_[0].tolist() == [0, 1]  # bin 0 + the thin bin 1 are healthy together
    assert all(c.is_fitted for c in cal.calibrators_)
    # pooled bins share the pooled fit
    torch.testing.assert_close(cal.calibrators_[0].weight_,
                               VectorScaling().fit(z[lv < 0.5], y[lv < 0.5]).weight_)


def test_by_level_guards():
    z, y, lv = _leveled(n=400, seed=5)
    with pytest.raises(ValueError, match="too few validation samples: 40 in all"):
        ByLevel(VectorScaling(), 4).fit(z[:40], y[:40], lv[:40])
    with pytest.raises(ValueError, match="needs the perturbation level"):
        ByLevel(VectorScaling(), 4).fit(z, y)
    with pytest.raises(ValueError, match=r"levels must lie in \[0, 1\]"):
        ByLevel(VectorScaling(), 4).fit(z, y, lv + 1)
    with pytest.raises(ValueError, match="look like probabilities"):
        ByLevel(VectorScaling(), 4).fit(torch.softmax(z, 1), y, lv)
    with pytest.raises(TypeError, match="already level-aware"):
        ByLevel(ReCalX(4))
    with pytest.raises(TypeError, match="must be a calix Calibrator"):
        ByLevel(VectorScaling)
    with pytest.raises(ValueError, match="n_bins must be an integer >= 1"):
        ByLevel(VectorScaling(), 0)
    cal = ByLevel(VectorScaling(), 4)
    with pytest.raises(Exception, match="not fitted yet"):
        cal(z, lv)
    cal.fit(z, y, lv)
    with pytest.raises(ValueError, match="needs the perturbation level of every query"):
        cal(z)
    bad = z.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        cal(bad, lv)


def test_by_level_state_dict_and_calibrated_model():
    z, y, lv = _leveled(n=1500, seed=6)
    cal = ByLevel(VectorScaling(), 3).fit(z, y, lv)
    buf = io.BytesIO()
    torch.save(cal.state_dict(), buf)
    buf.seek(0)
    fresh = ByLevel(VectorScaling(), 3)
    fresh.load_state_dict(torch.load(buf))
    np.testing.assert_allclose(fresh.predict_proba(z, lv), cal.predict_proba(z, lv), atol=1e-7)
    # a calibrated model treats queries without levels as clean (λ = 0: bin 0), and gradients
    # flow through a differentiable inner calibrator
    lin = torch.nn.Linear(3, 3)
    with torch.no_grad():
        lin.weight.copy_(torch.eye(3))
        lin.bias.zero_()
    model = calibrated(wrap(lin, input_shape=(3,)), cal)
    x = z[:4].float().clone().requires_grad_(True)
    out = model.forward(x)
    torch.testing.assert_close(out, cal.calibrators_[0](x))
    (g,) = torch.autograd.grad(torch.softmax(out, 1)[:, 0].sum(), x)
    assert g.abs().sum() > 0


def test_by_level_of_a_non_differentiable_calibrator_refuses_gradient_explainers():
    from calix.explain import Saliency

    z, y, lv = _leveled(n=1500, seed=7)
    cal = ByLevelIsotonicCalibration(3).fit(z, y, lv)
    assert not cal.differentiable and not ByLevel(IsotonicCalibration()).differentiable
    # the registered classes say so too (the explainers' message lists the usable ones)
    assert [n for n, c in CALIBRATORS.items() if not c.differentiable] == [
        "isotonic", "histogram", "venn_abers", "by_level_histogram", "by_level_isotonic",
        "by_level_venn_abers"]
    model = calibrated(wrap(torch.nn.Linear(3, 3), input_shape=(3,)), cal)
    with pytest.raises(NonDifferentiableCalibratorError,
                       match=r"ByLevelIsotonicCalibration \(by_level_isotonic, per-level "
                             r"copies of IsotonicCalibration\)"):
        Saliency(model)


# ---------------------------------------------------------------------- SmoothLevelTemperature
def test_smooth_temperature_recovers_a_log_linear_curve():
    from scipy.optimize import minimize
    from scipy.special import log_softmax

    z, y, lv = _leveled(n=6000, seed=8)
    cal = SmoothLevelTemperature(basis="linear").fit(z, y, lv)
    zn, yn, ln = z.numpy(), y.numpy(), lv.numpy()

    def nll(ab):
        lp = log_softmax(zn * np.exp(-(ab[0] + ab[1] * ln))[:, None], axis=1)
        return -lp[np.arange(len(yn)), yn].mean()

    ref = minimize(nll, [0.0, 0.0], method="Nelder-Mead",
                   options={"xatol": 1e-7, "fatol": 1e-12, "maxiter": 4000}).x
    # the same NLL minimised by scipy: equal within the simplex tolerance (1e-3)
    np.testing.assert_allclose(cal.coef_.numpy(), ref, atol=1e-3)
    # true ln T = 0.2 + 1.5 λ: 6000 samples recover it within sampling error (0.25)
    np.testing.assert_allclose(cal.coef_.numpy(), [0.2, 1.5], atol=0.25)
    spline = SmoothLevelTemperature().fit(z, y, lv)
    t = spline.temperature(torch.linspace(0, 1, 5))
    np.testing.assert_allclose(t.log().numpy(), 0.2 + 1.5 * np.linspace(0, 1, 5), atol=0.25)


def test_smooth_temperature_needs_fewer_samples_than_recalx():
    z, y, lv = _leveled(n=300, seed=9)  # 30 samples per bin
    zt, yt, lvt = _leveled(n=20000, seed=10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        recalx = ReCalX(10, min_samples_per_bin=10).fit(z, y, lv)
    smooth = SmoothLevelTemperature().fit(z, y, lv)
    assert _nll(smooth, zt, yt, lvt) < _nll(recalx, zt, yt, lvt)


def test_smooth_temperature_keeps_the_argmax_and_is_differentiable():
    z, y, lv = _leveled(n=1000, seed=11)
    cal = SmoothLevelTemperature().fit(z, y, lv)
    x = z[:20].float().clone().requires_grad_(True)
    out = cal(x, lv[:20])
    assert torch.equal(out.argmax(1), x.argmax(1))
    (g,) = torch.autograd.grad(out.sum(), x)
    assert torch.isfinite(g).all()


def test_smooth_temperature_guards():
    z, y, lv = _leveled(n=500, seed=12)
    with pytest.raises(ValueError, match="too few validation samples: 20 < min_samples=50"):
        SmoothLevelTemperature().fit(z[:20], y[:20], lv[:20])
    with pytest.raises(ValueError, match="needs the perturbation level"):
        SmoothLevelTemperature().fit(z, y)
    with pytest.raises(ValueError, match="every validation prediction is correct"):
        SmoothLevelTemperature().fit(z, z.argmax(1), lv)
    with pytest.raises(ValueError, match="basis must be one of"):
        SmoothLevelTemperature(basis="cubic")
    with pytest.raises(ValueError, match="n_knots must be an integer >= 3"):
        SmoothLevelTemperature(n_knots=2)
    cal = SmoothLevelTemperature()
    with pytest.raises(Exception, match="not fitted yet"):
        cal(z, lv)
    cal.fit(z, y, lv)
    with pytest.raises(ValueError, match="needs the perturbation level of every query"):
        cal(z)
    with pytest.raises(ValueError, match=r"levels must lie in \[0, 1\]"):
        cal(z, lv - 2)
    buf = io.BytesIO()
    torch.save(cal.state_dict(), buf)
    buf.seek(0)
    fresh = SmoothLevelTemperature()
    fresh.load_state_dict(torch.load(buf))
    np.testing.assert_allclose(fresh.predict_proba(z, lv), cal.predict_proba(z, lv), atol=1e-7)


# ---------------------------------------------------------------------- every registered name
X = np.random.default_rng(0).normal(size=(60, 4)).astype(np.float32)
Y = np.arange(60) % 3


@pytest.mark.parametrize("name", CALIBRATORS.names())
def test_fit_calibrator_fits_every_registered_name(name, monkeypatch):
    from calix.calibrate import Dirichlet
    from calix.perturb import Columns, Constant, Perturbation

    # Dirichlet and matrix scaling cross-validate their strengths (25 x 3 fits per bin; that
    # search is tested in test_calibrate.py): fixed here to keep this test fast
    monkeypatch.setattr(Dirichlet, "_cross_validate", lambda self, lq, y: (1e-2, 1e-2))
    torch.manual_seed(0)
    model = wrap(torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(),
                                     torch.nn.Linear(8, 3)), input_shape=(4,))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cal = fit_calibrator(name, model, X, Y, perturbation=Perturbation(Columns(),
                             Constant(0.0)), n_bins=2, n_samples=30, n_per_bin=6, seed=0)
    assert isinstance(cal, CALIBRATORS[name]) and cal.is_fitted
    p = calibrated(model, cal).predict_proba(X)
    assert p.shape == (60, 3) and np.allclose(p.sum(1), 1, atol=1e-5)
    if CALIBRATORS.meta(name)["fit_on"] == "perturbed":
        with pytest.raises(ValueError, match="needs a perturbation"):
            fit_calibrator(name, model, X, Y)


def test_the_command_line_offers_every_calibrator():
    from calix.cli import main

    opt = next(p for p in main.commands["calibrate"].params if p.name == "method")
    assert tuple(opt.type.choices) == _names.CALIBRATORS == CALIBRATORS.names()


def test_calix_calibrate_runs_a_new_calibrator(tmp_path):
    from click.testing import CliRunner

    from calix.cli import main

    res = CliRunner().invoke(main, ["calibrate", "--data", "breast_cancer", "--method",
                                    "smooth_level_temperature", "--n-eval", "20"])
    assert res.exit_code == 0, res.output
    assert "smooth_level_temperature" in res.output


# ---------------------------------------------------------------------- devices
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("make", [lambda: ByLevel(VectorScaling(), 4),
                                  lambda: ByLevel(IsotonicCalibration(), 4),
                                  lambda: SmoothLevelTemperature()])
def test_level_aware_calibrators_on_cuda(make):
    z, y, lv = _leveled(n=2000, seed=13)
    cpu = make().fit(z, y, lv)
    cuda = make().cuda().fit(z.cuda(), y.cuda(), lv.cuda())
    assert all(b.is_cuda for b in cuda.buffers())
    zt, lvt = z[:200].float(), lv[:200].float()
    # fits on the CPU in float64 either way; float32 maps on each device: within 1e-5
    np.testing.assert_allclose(cuda.predict_proba(zt.cuda(), lvt.cuda()),
                               cpu.predict_proba(zt, lvt), atol=1e-5)


def test_by_level_venn_abers_gives_intervals_per_level():
    from calix.calibrate import ByLevelVennAbers

    z, y, lv = _leveled(n=1500, seed=14)
    cal = ByLevelVennAbers(3).fit(z, y, lv)
    p0, p1, p = cal.predict_interval(z[:60], lv[:60])
    assert p0.shape == p1.shape == p.shape == (60, 3) and np.all(p0 <= p1 + 1e-12)
    np.testing.assert_allclose(p, cal.predict_proba(z[:60], lv[:60]), atol=1e-6)
    first = (lv[:60] < 1 / 3).numpy()
    ref = cal.calibrators_[0].predict_interval(z[:60][first])
    np.testing.assert_allclose(p0[first], ref[0])
    with pytest.raises(TypeError, match="needs per-level VennAbers copies"):
        ByLevel(VectorScaling(), 3).fit(z, y, lv).predict_interval(z, lv)
