import numpy as np
import pytest
import torch
from torch import nn

from calix.explain import GLIME, LIME, USLIME, BayesLIME, KernelSHAP
from calix.metrics import (
    interval_coverage,
    neighbourhood_stability,
    queries_to_stability,
    reproducibility,
    surrogate_r2,
)
from calix.metrics.stability import spearman, topk_jaccard
from calix.models import wrap
from calix.perturb import Constant


def _linear(d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(d, generator=g)
    lin = nn.Linear(d, 1)
    with torch.no_grad():
        lin.weight.copy_(w[None])
        lin.bias.zero_()
    return wrap(lin, task="regression", input_shape=(d,)), w


def test_rank_helpers():
    a = np.array([[1.0, 2.0, 3.0, 4.0]])
    assert spearman(a, a)[0] == pytest.approx(1.0)
    assert spearman(a, -a)[0] == pytest.approx(-1.0)
    assert topk_jaccard(a, a, 2)[0] == 1.0
    assert topk_jaccard(a, np.array([[4.0, 3.0, 2.0, 1.0]]), 2)[0] == 0.0
    assert topk_jaccard(a, np.array([[1.0, 5.0, 3.0, 0.0]]), 2)[0] == pytest.approx(1 / 3)


def test_reproducibility_is_perfect_for_deterministic_and_grows_with_budget():
    model, _ = _linear()
    x = torch.ones(3, 6)
    exact = reproducibility(lambda s: KernelSHAP(model, n_samples=64, seed=s), x)
    np.testing.assert_allclose(exact["spearman"], 1.0)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(12, 16), nn.Tanh(), nn.Linear(16, 2))
    m2 = wrap(net, input_shape=(12,))
    x2 = torch.randn(4, 12)
    small = reproducibility(lambda s: LIME(m2, n_samples=30, seed=s), x2)["spearman"].mean()
    big = reproducibility(lambda s: LIME(m2, n_samples=3000, seed=s), x2)["spearman"].mean()
    assert big > small and big > 0.8
    qts = queries_to_stability(lambda b, s: LIME(m2, n_samples=b, seed=s), x2,
                               budgets=(30, 3000), threshold=(small + big) / 2)
    assert qts["budget"] == 3000 and set(qts["curve"]) == {30, 3000}


def test_surrogate_r2_and_coverage_on_a_linear_black_box():
    model, w = _linear()
    x = torch.ones(2, 6)
    lime = LIME(model, fill=Constant(0.0), n_samples=200, alpha=1e-6)
    exp = lime.explain(x)
    np.testing.assert_allclose(surrogate_r2(lime, exp, x), 1.0, atol=1e-6)
    bayes = BayesLIME(model, fill=Constant(0.0), n_samples=2000)
    bexp = bayes.explain(x)
    # the truth is w ⊙ (x − 0); the prior shrinks slightly, intervals still contain it
    assert interval_coverage(bexp, w.expand(2, 6).numpy()) == 1.0
    with pytest.raises(ValueError, match="reports no intervals"):
        interval_coverage(exp, w.expand(2, 6).numpy())


def test_neighbourhood_stability_of_a_linear_model_is_one():
    model, _ = _linear()
    x = torch.randn(3, 6)
    occl = KernelSHAP(model, n_samples=64)
    # attributions w ⊙ (x − 0) move with x, but their ranking barely changes for tiny noise
    assert (neighbourhood_stability(occl, x, radius=1e-4) > 0.99).all()


def test_glime_and_us_lime_recover_a_linear_model():
    model, w = _linear()
    x = torch.ones(2, 6)
    for exp in (GLIME(model, fill=Constant(0.0), n_samples=500, alpha=1e-6).explain(x),
                GLIME(model, variant="gauss", sigma=0.5, fill=Constant(0.0), n_samples=500,
                      alpha=1e-6).explain(x),
                USLIME(model, fill=Constant(0.0), n_samples=300, alpha=1e-6).explain(x)):
        # f(π(x, z)) = Σ z_j w_j: every surrogate is exact on a linear black box
        np.testing.assert_allclose(exp.feature_values, w.expand(2, 6).numpy(), atol=1e-4)
    keep = GLIME(model, sigma=1.0, n_samples=20_000).sample(1, 6, torch.Generator())
    assert abs(keep.float().mean().item() - 1 / (1 + np.exp(-1.0))) < 0.01
    with pytest.raises(ValueError, match="variant must be"):
        GLIME(model, variant="laplace")
    with pytest.raises(ValueError, match=r"n_samples >= d \+ 1"):
        USLIME(model, n_samples=3).explain(x)
