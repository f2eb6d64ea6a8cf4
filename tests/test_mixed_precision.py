"""Mixed precision and memory-format knobs of wrapped torch modules: wrap(autocast=...,
channels_last=...), and the device checks of TorchModel."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from calix.explain import IntegratedGradients, KernelSHAP, Saliency
from calix.models import TorchModel, wrap
from calix.nets import resnet18
from calix.perturb import Constant, PatchGrid


@pytest.fixture(scope="module")
def net():
    return resnet18(num_classes=10, width=0.125, seed=0)


@pytest.fixture(scope="module")
def x():
    return torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(a))


@pytest.mark.parametrize("autocast, dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16),
                                             (torch.bfloat16, torch.bfloat16)])
def test_autocast_outputs_are_float32_and_close(net, x, autocast, dtype):
    m32, m16 = wrap(net), wrap(net, autocast=autocast)
    assert m16.autocast == dtype
    a, b = m32.forward(x), m16.forward(x)
    assert b.dtype == torch.float32
    # 16-bit matmuls: bf16 keeps 8 mantissa bits (relative error ~2^-8 per op), fp16 11
    tol = 0.05 if dtype == torch.bfloat16 else 0.01
    assert (a - b).abs().max() <= tol * a.abs().max()
    assert not torch.equal(a, b)  # the 16-bit path really ran
    np.testing.assert_allclose(m16.predict_proba(x).sum(1), 1.0, atol=1e-5)


def test_autocast_really_computes_in_16_bits(net, x):
    seen = []
    handle = net.fc.register_forward_hook(lambda mod, inp, out: seen.append(out.dtype))
    try:
        wrap(net, autocast="bf16").forward(x)
        wrap(net).forward(x)
    finally:
        handle.remove()
    assert seen == [torch.bfloat16, torch.float32]


@pytest.mark.parametrize("explainer, kwargs", [(Saliency, {}),
                                               (IntegratedGradients, {"n_steps": 16})])
@pytest.mark.parametrize("autocast, min_r, max_rel", [("bf16", 0.95, 0.35),
                                                      ("fp16", 0.99, 0.15)])
def test_gradients_flow_through_autocast(net, x, explainer, kwargs, autocast, min_r, max_rel):
    # Measured on this network (torch 2.13, CPU): bf16 r >= 0.96, relative L2 error 0.10-0.28
    # (gradients of a random network through 11 layers of 8-bit mantissas); fp16 r > 0.997,
    # relative error < 0.07. The bounds leave room for other CPUs' kernels.
    e32 = explainer(wrap(net), output="logit", **kwargs).explain(x, target=0).values
    e16 = explainer(wrap(net, autocast=autocast), output="logit", **kwargs).explain(
        x, target=0).values
    assert e16.dtype == np.float32
    assert np.isfinite(e16).all() and np.abs(e16).max() > 0
    assert np.corrcoef(e32.ravel(), e16.ravel())[0, 1] >= min_r
    assert _rel(e32, e16) <= max_rel


def test_integrated_gradients_completeness_in_bf16(net, x):
    # completeness Σ attributions = s(x) − s(0) holds up to bf16 rounding of the two scores
    model = wrap(net, autocast="bf16")
    exp = IntegratedGradients(model, output="logit", n_steps=32).explain(x, target=0)
    with torch.no_grad():
        gap = (model.forward(x)[:, 0] - model.forward(torch.zeros_like(x))[:, 0]).numpy()
    sums = exp.values.reshape(len(x), -1).sum(1)
    np.testing.assert_allclose(sums, gap, atol=0.05 * np.abs(gap).max() + 2e-3)


def test_perturbation_explainer_under_autocast(net, x):
    kw = dict(features=PatchGrid(8), fill=Constant(0.0), n_samples=128, seed=0, output="logit")
    a = KernelSHAP(wrap(net), **kw).explain(x, target=0).feature_values
    b = KernelSHAP(wrap(net, autocast="bf16"), **kw).explain(x, target=0).feature_values
    assert b.dtype == np.float32
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.9


def test_channels_last_gives_the_same_outputs(x):
    net = resnet18(num_classes=10, width=0.125, seed=1)
    plain = wrap(net).forward(x)
    model = wrap(net, channels_last=True)
    assert net.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(model.forward(x), plain, rtol=1e-4, atol=1e-5)
    grads = Saliency(model).explain(x, target=1).values
    assert grads.shape == x.shape and np.isfinite(grads).all()
    assert "channels_last=True" in repr(model)


def test_channels_last_and_autocast_together(net, x):
    out = wrap(resnet18(num_classes=10, width=0.125, seed=0), autocast="bf16",
               channels_last=True).forward(x)
    torch.testing.assert_close(out, wrap(net, autocast="bf16").forward(x), rtol=0.02,
                               atol=0.02)


@pytest.mark.parametrize("bad", ["fp8", "float32", torch.float32, torch.float64, 16])
def test_unknown_autocast_values_are_rejected(bad):
    with pytest.raises(ValueError, match="autocast must be None, 'bf16', 'fp16'"):
        wrap(torch.nn.Linear(3, 2), autocast=bad)


def test_autocast_on_a_device_without_autocast():
    with pytest.raises(ValueError, match="no autocast for device type 'meta'"):
        wrap(torch.nn.Linear(3, 2), device="meta", autocast="bf16")


def test_unsupported_autocast_dtype_is_reported(monkeypatch):
    # torch warns and silently disables autocast for a dtype a device does not support;
    # calix turns that into an error that names the alternative
    monkeypatch.setattr(torch, "is_autocast_enabled", lambda *a: False)
    with pytest.raises(ValueError, match="does not support torch.float16 autocast on cpu; "
                                         "try autocast='bf16'"):
        wrap(torch.nn.Linear(3, 2), autocast="fp16")


def test_autocast_only_for_torch_modules():
    clf = LogisticRegression().fit(np.random.default_rng(0).normal(size=(20, 3)),
                                   np.arange(20) % 2)
    with pytest.raises(TypeError, match="torch modules only"):
        wrap(clf, autocast="bf16")
    with pytest.raises(TypeError, match="torch modules only"):
        wrap(lambda a: a, channels_last=True)


def test_repr_names_the_autocast_dtype():
    assert "autocast='bfloat16'" in repr(wrap(torch.nn.Linear(3, 2), autocast="bf16"))


def test_module_moved_after_wrap_is_reported():
    module = torch.nn.Linear(3, 2)
    model = TorchModel(module, input_shape=(3,))
    module.to("meta")
    with pytest.raises(RuntimeError, match=r"parameters are on meta but this model evaluates "
                                           r"on cpu.*wrap\(module, device='meta'\)"):
        model.forward(torch.zeros(1, 3))


def test_parameterless_module_takes_its_buffers_device():
    module = torch.nn.Module()
    module.register_buffer("scale", torch.ones(1))
    module.forward = lambda t: torch.cat([t, -t], 1) * module.scale
    model = wrap(module)
    assert model.device == torch.device("cpu")
    assert model.forward(torch.ones(2, 1)).shape == (2, 2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_inputs_and_autocast():
    net = resnet18(num_classes=10, width=0.125, seed=0)
    model = wrap(net, device="cuda", autocast="bf16" if torch.cuda.is_bf16_supported()
                 else "fp16", channels_last=True)
    x = torch.rand(2, 3, 32, 32)
    out_cpu_in = model.forward(x)  # CPU inputs are moved to the model's device
    assert out_cpu_in.device.type == "cuda" and out_cpu_in.dtype == torch.float32
    out = model.forward(x.cuda(), validate=False)
    torch.testing.assert_close(out, out_cpu_in)
    grads = Saliency(model).explain(x, target=0).values
    assert np.isfinite(grads).all() and np.abs(grads).max() > 0
    net.cpu()
    with pytest.raises(RuntimeError, match="wrap it again"):
        model.forward(x)
