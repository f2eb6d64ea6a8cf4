"""Gradient explainers (calix.explain.gradient): Integrated Gradients, Saliency,
SmoothGrad, Guided Backprop and Captum attributions -- against Captum, through a calibrator,
seeded, with channel reductions and their errors."""

import numpy as np
import pytest
import torch
from torch import nn

from calix.calibrate import TemperatureScaling, calibrated
from calix.explain import (
    CaptumExplainer,
    GuidedBackprop,
    IntegratedGradients,
    Saliency,
    SmoothGrad,
    as_forward,
)
from calix.models import wrap
from tests._explain_models import _cnn, _mlp


def test_integrated_gradients_equals_captum_and_is_complete():
    from captum.attr import IntegratedGradients as CaptumIG

    net = _cnn()
    model = wrap(net, input_shape=(1, 8, 8), batch_size=37)
    x = torch.rand(5, 1, 8, 8)
    base = torch.rand(1, 8, 8)
    exp = IntegratedGradients(model, baselines=base, n_steps=64).explain(x, target=[0, 1, 2, 0, 1])
    ref = CaptumIG(lambda t: torch.softmax(net(t), 1)).attribute(
        x, baselines=base.expand_as(x), target=[0, 1, 2, 0, 1], n_steps=64)
    # same integration rule and steps; only chunking differs: float32 round-off
    np.testing.assert_allclose(exp.values, ref.numpy(), atol=1e-6)
    # completeness: Σ attributions = p(x) − p(baseline) up to the integration error
    p = torch.softmax(net(x), 1)[torch.arange(5), torch.tensor([0, 1, 2, 0, 1])]
    p0 = torch.softmax(net(base.expand_as(x)), 1)[torch.arange(5), torch.tensor([0, 1, 2, 0, 1])]
    np.testing.assert_allclose(exp.values.reshape(5, -1).sum(1), (p - p0).detach().numpy(),
                               atol=2e-3)
    assert np.abs(exp.extra["delta"]).max() < 2e-3


def test_ig_averages_several_baselines():
    model = wrap(_mlp(), input_shape=(8,))
    x = torch.randn(3, 8)
    a = IntegratedGradients(model, baselines="zero").explain(x, target=1).values
    b = IntegratedGradients(model, baselines=torch.ones(8)).explain(x, target=1).values
    both = IntegratedGradients(model, baselines=["zero", torch.ones(8)]).explain(x, target=1)
    np.testing.assert_allclose(both.values, (a + b) / 2, atol=1e-6)


def test_gradients_flow_through_the_calibration():
    net = _mlp()
    model = wrap(net, input_shape=(8,))
    g = torch.Generator().manual_seed(0)
    ts = TemperatureScaling().fit(torch.randn(200, 3, generator=g) * 4,
                                  torch.randint(0, 3, (200,), generator=g))
    x = torch.randn(4, 8)
    sal = Saliency(calibrated(model, ts), output="probability").explain(x, target=0).values
    xr = x.clone().requires_grad_(True)
    torch.softmax(net(xr) / ts.temperature_, 1)[:, 0].sum().backward()
    np.testing.assert_allclose(sal, xr.grad.numpy(), atol=1e-6)
    logit = Saliency(calibrated(model, ts), output="logit").explain(x, target=0).values
    raw = Saliency(model, output="logit").explain(x, target=0).values
    np.testing.assert_allclose(logit, raw / ts.temperature_, rtol=1e-5, atol=1e-7)


def test_smoothgrad_is_seeded_and_reduces_to_saliency_without_noise():
    model = wrap(_cnn(), input_shape=(1, 8, 8), batch_size=50)
    x = torch.rand(3, 1, 8, 8)
    sal = Saliency(model).explain(x).values
    np.testing.assert_allclose(SmoothGrad(model, noise=0.0, n_samples=4).explain(x).values, sal,
                               atol=1e-7)
    a = SmoothGrad(model, n_samples=20, seed=3).explain(x).values
    b = SmoothGrad(model, n_samples=20, seed=3).explain(x).values
    np.testing.assert_array_equal(a, b)
    sq = SmoothGrad(model, n_samples=20, seed=3, squared=True).explain(x).values
    assert (sq >= 0).all() and (sq >= a**2 - 1e-9).all()  # E[g²] ≥ E[g]²


def test_guided_backprop_matches_captum_and_needs_relu_modules():
    from captum.attr import GuidedBackprop as CaptumGBP

    net = _cnn()
    x = torch.rand(2, 1, 8, 8)
    exp = GuidedBackprop(wrap(net, input_shape=(1, 8, 8))).explain(x, target=2)

    class _Probs(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, t):
            return torch.softmax(self.net(t), 1)

    ref = CaptumGBP(_Probs()).attribute(x.clone().requires_grad_(True), target=2)
    np.testing.assert_allclose(exp.values, ref.detach().numpy(), atol=1e-7)
    with pytest.raises(TypeError, match="nn.ReLU modules"):
        GuidedBackprop(wrap(nn.Sequential(nn.Flatten(), nn.Linear(64, 3)), input_shape=(1, 8, 8)))


def test_captum_attribution_as_explainer():
    from captum.attr import InputXGradient

    model = wrap(_mlp(), input_shape=(8,))
    x = torch.randn(3, 8)
    exp = CaptumExplainer(InputXGradient(as_forward(model)), model).explain(x, target=1)
    ref = Saliency(model, multiply_by_input=True).explain(x, target=1)
    np.testing.assert_allclose(exp.values, ref.values, atol=1e-7)
    assert exp.method == "captum.InputXGradient"


def test_channel_reductions():
    model = wrap(nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten(), nn.Linear(2 * 4 * 4, 2)),
                 input_shape=(3, 6, 6))
    x = torch.rand(2, 3, 6, 6)
    full = Saliency(model).explain(x, target=0).values
    for how, fn in (("sum", lambda v: v), ("abs_sum", np.abs), ("square_sum", np.square)):
        red = Saliency(model, reduce=how).explain(x, target=0).values
        assert red.shape == (2, 1, 6, 6)
        np.testing.assert_allclose(red[:, 0], fn(full).sum(1), atol=1e-7)


def test_baseline_of_wrong_shape():
    model = wrap(_mlp(), input_shape=(8,))
    with pytest.raises(ValueError, match=r"baseline must have shape \(8,\)"):
        IntegratedGradients(model, baselines=torch.zeros(7)).explain(torch.randn(2, 8))
    with pytest.raises(ValueError, match="unknown baseline"):
        IntegratedGradients(model, baselines="grey").explain(torch.randn(2, 8))


def test_non_differentiable_model_for_gradient_methods():
    m = wrap(lambda a: np.tile([0.2, 0.8], (len(a), 1)), output="probabilities",
             input_shape=(3,))
    for cls in (Saliency, IntegratedGradients, SmoothGrad, GuidedBackprop):
        with pytest.raises(TypeError, match="differentiable"):
            cls(m)
