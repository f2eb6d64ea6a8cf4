"""KernelSHAP (calix.explain.shapley) on whole explanations: exact Shapley values at full
budget, sampled estimates close to them and seeded, agreement with shap's KernelExplainer."""

import itertools
import math

import numpy as np
import pytest
import torch

from calix.explain import KernelSHAP
from calix.models import wrap
from calix.perturb import Mean
from tests._explain_models import _mlp


def _exact_shapley(value, d):
    """Brute force: φ_j = Σ_S |S|!(d−|S|−1)!/d! (v(S ∪ j) − v(S))."""
    phi = np.zeros(d)
    for j in range(d):
        others = [i for i in range(d) if i != j]
        for r in range(d):
            for s in itertools.combinations(others, r):
                wgt = math.factorial(r) * math.factorial(d - r - 1) / math.factorial(d)
                phi[j] += wgt * (value(set(s) | {j}) - value(set(s)))
    return phi


@pytest.mark.parametrize("d", [3, 6, 9])
def test_kernel_shap_equals_exact_shapley_values(d):
    net = _mlp(d=d)
    model = wrap(net, input_shape=(d,))
    x = torch.randn(2, d)
    mean = torch.randn(d)
    exp = KernelSHAP(model, fill=Mean(mean), n_samples=2**d).explain(x, target=[0, 2])
    assert exp.extra["exact"]
    for i, t in enumerate([0, 2]):
        def value(s, i=i, t=t):
            z = mean.clone()
            idx = sorted(s)
            z[idx] = x[i, idx]
            with torch.no_grad():
                return float(torch.softmax(net(z[None]).double(), 1)[0, t])

        # exact enumeration solves the same linear system in float64; float32 model outputs
        np.testing.assert_allclose(exp.feature_values[i], _exact_shapley(value, d), atol=1e-6)
        # efficiency: Σφ = v(N) − v(∅)
        assert abs(exp.feature_values[i].sum() - (value(set(range(d))) - value(set()))) < 1e-6


def test_kernel_shap_sampled_is_close_to_exact_and_seeded():
    d = 12
    model = wrap(_mlp(d=d), input_shape=(d,))
    x = torch.randn(1, d)
    exact = KernelSHAP(model, n_samples=2**d).explain(x).feature_values[0]
    a = KernelSHAP(model, n_samples=2000, seed=1).explain(x).feature_values[0]
    b = KernelSHAP(model, n_samples=2000, seed=1).explain(x).feature_values[0]
    np.testing.assert_array_equal(a, b)
    # sampling error of 2000 paired kernel draws: within 10% of the largest attribution
    assert np.abs(a - exact).max() < 0.1 * np.abs(exact).max()
    assert abs(a.sum() - exact.sum()) < 1e-6  # efficiency holds exactly either way


def test_kernel_shap_matches_shap_kernel_explainer():
    shap = pytest.importorskip("shap")
    d = 7
    net = _mlp(d=d, seed=3)
    model = wrap(net, input_shape=(d,))
    x = torch.randn(3, d)
    bg = torch.randn(1, d)

    def f(a):
        with torch.no_grad():
            return torch.softmax(net(torch.as_tensor(a, dtype=torch.float32)), 1)[:, 1].numpy()

    ref = shap.KernelExplainer(f, bg.numpy()).shap_values(x.numpy(), nsamples=2**d, silent=True)
    ours = KernelSHAP(model, fill=Mean(bg[0]), n_samples=2**d).explain(x, target=1)
    # both enumerate every coalition with the Shapley kernel: agreement to float32 round-off
    np.testing.assert_allclose(ours.feature_values, np.asarray(ref), atol=1e-5)
