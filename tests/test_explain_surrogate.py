"""Surrogate explainers (calix.explain.surrogate, calix.explain.solvers): LIME recovers a
linear model, the weighted ridge solve equals numpy's, and too small budgets are refused."""

import numpy as np
import pytest
import torch
from torch import nn

from calix.explain import LIME, KernelSHAP, weighted_ridge
from calix.models import wrap
from calix.perturb import Mean
from tests._explain_models import _mlp


def test_lime_recovers_a_linear_model():
    d = 6
    w = torch.randn(d)
    lin = nn.Linear(d, 1)
    with torch.no_grad():
        lin.weight.copy_(w[None])
        lin.bias.fill_(0.3)
    model = wrap(lin, task="regression", input_shape=(d,))
    x, mu = torch.randn(4, d), torch.randn(d)
    exp = LIME(model, fill=Mean(mu), n_samples=300, alpha=1e-8).explain(x)
    # f(π(x, z)) = Σ z_j w_j (x_j − μ_j) + const: the surrogate is exact
    np.testing.assert_allclose(exp.feature_values, (w * (x - mu)).numpy(), atol=1e-4)
    np.testing.assert_allclose(exp.extra["r2"], 1.0, atol=1e-6)


def test_weighted_ridge_equals_numpy_solve():
    rng = np.random.default_rng(0)
    z, y, w = rng.random((2, 50, 4)), rng.random((2, 50)), rng.random(50)
    coef, icpt = weighted_ridge(torch.as_tensor(z), torch.as_tensor(y), torch.as_tensor(w), 0.5)
    for i in range(2):
        a = np.c_[np.ones(50), z[i]]
        pen = np.diag([0.0, 0.5, 0.5, 0.5, 0.5])
        beta = np.linalg.solve(a.T @ (w[:, None] * a) + pen, a.T @ (w * y[i]))
        np.testing.assert_allclose(coef[i].numpy(), beta[1:], atol=1e-10)
        np.testing.assert_allclose(float(icpt[i]), beta[0], atol=1e-10)


def test_budget_too_small():
    model = wrap(_mlp(d=10), input_shape=(10,))
    with pytest.raises(ValueError, match=r"LIME needs n_samples >= d \+ 1 = 11"):
        LIME(model, n_samples=10).explain(torch.randn(1, 10))
    with pytest.raises(ValueError, match="KernelSHAP needs n_samples >= 12 model queries per input "
                                         "for 10 features"):
        KernelSHAP(model, n_samples=5).explain(torch.randn(1, 10))
