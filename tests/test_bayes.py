import numpy as np
import pytest
import torch
from torch import nn

from calix.explain import EAGLE, BayesianLinear, BayesLIME, BayesSHAP, expected_information_gain
from calix.explain.bayes import lime_kernel
from calix.models import wrap
from calix.perturb import Constant


def _data(n_obs, d, seed, noise=0.3):
    g = np.random.default_rng(seed)
    z = (g.random((n_obs, d)) < 0.5).astype(float)
    w = g.uniform(0.2, 1.0, n_obs)  # kernel weights
    phi = np.array([0.5, 1.0, -2.0, 0.0, 0.7, 1.5][: d + 1])
    y = phi[0] + z @ phi[1:] + noise * g.normal(size=n_obs) / np.sqrt(w)
    return z, y, w, phi


def test_posterior_equals_a_direct_numpy_solve():
    z, y, w, _ = _data(300, 5, 0)
    post = BayesianLinear.empty(1, 5).update(torch.as_tensor(z)[None], torch.as_tensor(y)[None],
                                              torch.as_tensor(w)[None])
    x = np.c_[np.ones(300), z]
    a = x.T @ (w[:, None] * x) + np.eye(6)
    phi = np.linalg.solve(a, x.T @ (w * y))
    resid = y - x @ phi
    s2 = (resid @ (w * resid) + phi @ phi) / 300
    np.testing.assert_allclose(post.mean[0].numpy(), phi, atol=1e-10)
    np.testing.assert_allclose(float(post.s2[0]), s2, rtol=1e-9)
    np.testing.assert_allclose(post.covariance_factor[0].numpy(), np.linalg.inv(a), atol=1e-12)
    # incremental: two updates equal one
    half = BayesianLinear.empty(1, 5)
    for sl in (slice(0, 120), slice(120, 300)):
        half = half.update(torch.as_tensor(z[sl])[None], torch.as_tensor(y[sl])[None],
                           torch.as_tensor(w[sl])[None])
    np.testing.assert_allclose(half.mean.numpy(), post.mean.numpy(), atol=1e-10)


def test_credible_intervals_cover_at_the_nominal_rate():
    hits = []
    for seed in range(300):
        z, y, w, phi = _data(200, 5, seed)
        post = BayesianLinear.empty(1, 5).update(
            torch.as_tensor(z)[None], torch.as_tensor(y)[None], torch.as_tensor(w)[None])
        lo, hi = post.interval(0.95)
        hits.append((lo[0].numpy() <= phi) & (phi <= hi[0].numpy()))
    coverage = np.mean(hits)
    # 1800 intervals: the binomial s.d. is 0.005; the N(0, σ²I) prior adds a little shrinkage
    assert 0.93 <= coverage <= 0.975


def test_bayes_lime_converges_to_a_linear_black_box():
    d = 5
    w = torch.tensor([1.0, -2.0, 0.5, 0.0, 3.0])
    lin = nn.Linear(d, 1)
    with torch.no_grad():
        lin.weight.copy_(w[None])
        lin.bias.fill_(0.2)
    model = wrap(lin, task="regression", input_shape=(d,))
    x = torch.ones(2, d)
    for kernel in ("lime", "shap"):
        errs = []
        for budget in (100, 1000, 8000):
            exp = BayesLIME(model, kernel=kernel, fill=Constant(0.0), n_samples=budget).explain(x)
            errs.append(np.abs(exp.feature_values - w.numpy()).max())
            assert (exp.lower <= exp.feature_values).all()
            assert (exp.feature_values <= exp.upper).all() and exp.std.shape == (2, d)
        # the only error is the N(0, σ² I) prior's shrinkage, which fades as 1/(N π̄)
        assert errs[0] > errs[1] > errs[2] and errs[2] < 0.02  # SHAP weights are small: ~1e-2


def test_eagle_picks_more_informative_points_and_respects_the_bound():
    d = 8
    post = BayesianLinear.empty(1, d)
    g = torch.Generator().manual_seed(0)
    cand = (torch.rand(1, 400, d, generator=g) < 0.5)
    wts = lime_kernel(cand)
    idx = EAGLE.greedy_batch(post, cand, wts, 20)
    eagle = cand[0, idx[0]]
    rand = cand[0, torch.randperm(400, generator=g)[:20]]

    def gain(z):
        zz = z[None].double()
        return float(BayesianLinear.empty(1, d).update(zz, torch.zeros(1, len(z)),
                                                       lime_kernel(zz)).log_det_ratio()[0])

    assert gain(eagle) > gain(rand)
    eig = expected_information_gain(post, cand, wts)
    assert eig[0, idx[0, 0]] == eig.max()
    # the O(d log t) bound on cumulative information gain holds on every run
    net = nn.Sequential(nn.Linear(d, 8), nn.ReLU(), nn.Linear(8, 2))
    model = wrap(net, input_shape=(d,))
    for seed in range(4):
        exp = EAGLE(model, n_samples=120, seed=seed).explain(torch.randn(3, d))
        assert (exp.extra["info_gain"] <= exp.extra["info_bound"] + 1e-9).all()
        assert exp.extra["queries_per_input"] <= 120


def test_duplicate_candidates_score_lower_after_a_pick():
    d = 4
    post = BayesianLinear.empty(1, d)
    z = torch.tensor([[[1, 0, 1, 0], [1, 0, 1, 0], [0, 1, 1, 1]]], dtype=torch.bool)
    w = torch.ones(1, 3, dtype=torch.float64)
    before = expected_information_gain(post, z, w)[0, 1]
    post = post.update(z[:, :1], torch.zeros(1, 1), w[:, :1])
    after = expected_information_gain(post, z, w)[0, 1]
    assert after < before  # documented behaviour: duplicates are allowed but worth less
    assert EAGLE.greedy_batch(BayesianLinear.empty(1, d), z, w, 2)[0].tolist() != [0, 1]


def test_focused_sampling_and_perturbations_to_go():
    d = 6
    net = nn.Sequential(nn.Linear(d, 16), nn.ReLU(), nn.Linear(16, 2))
    model = wrap(net, input_shape=(d,))
    x = torch.randn(2, d)
    foc = BayesLIME(model, focused=True, n_samples=400, n_start=100, batch=100,
                    n_candidates=1000, temperature=1e-3).explain(x)
    assert foc.extra["queries_per_input"] == 400 and foc.n_queries == 800
    # focused batches come from high predictive variance
    post = BayesianLinear.empty(1, d)
    g = torch.Generator().manual_seed(0)
    z0 = (torch.rand(1, 30, d, generator=g) < 0.5)
    post = post.update(z0, torch.randn(1, 30, generator=g).double(), lime_kernel(z0))
    cand = (torch.rand(1, 2000, d, generator=g) < 0.5)
    var = post.predictive_variance(cand)[0]
    probs = torch.softmax(var / (0.2 * var.std()), 0)
    pick = torch.multinomial(probs.float(), 200, generator=g)
    assert var[pick].mean() > var.mean()
    # perturbations-to-go follows G = 4 s² 1.96² / (π̄ W²)
    b = BayesLIME(model, n_samples=200)
    w = lime_kernel(z0)
    go = b.perturbations_to_go(post, w, 0.1)
    expect = np.ceil(4 * float(post.s2[0]) * 1.96**2 / (float(w.mean()) * 0.01))
    assert float(go[0]) == expect
    wide = BayesLIME(model, target_width=0.05).explain(x)
    assert (wide.extra["perturbations_to_go"] > 0).all()
    narrow = BayesLIME(model, n_samples=200).explain(x)
    assert (wide.upper - wide.lower).mean() < (narrow.upper - narrow.lower).mean()


def test_bad_input():
    d = 10
    model = wrap(nn.Linear(d, 2), input_shape=(d,))
    with pytest.raises(ValueError, match=r"budget of at least d \+ 1 = 11"):
        BayesLIME(model, n_samples=10).explain(torch.randn(1, d))
    with pytest.raises(ValueError, match=r"budget of at least d \+ 1 = 11"):
        EAGLE(model, n_samples=8).explain(torch.randn(1, d))
    const = wrap(lambda a: np.tile([0.3, 0.7], (len(a), 1)), output="probabilities",
                 input_shape=(d,))
    with pytest.raises(ValueError, match="zero-variance black box"):
        BayesSHAP(const, n_samples=50).explain(np.zeros((1, d)))
    with pytest.raises(ValueError, match="kernel must be"):
        BayesLIME(model, kernel="gauss")


def test_bayes_shap_estimates_shapley_values_with_covering_intervals():
    torch.manual_seed(0)
    d = 8
    net = nn.Sequential(nn.Linear(d, 16), nn.Tanh(), nn.Linear(16, 2))
    model = wrap(net, input_shape=(d,))
    x = torch.randn(6, d)
    from calix.explain import KernelSHAP

    truth = KernelSHAP(model, n_samples=2**d).explain(x, target=1)
    exp = BayesSHAP(model, n_samples=1500, seed=1).explain(x, target=1)
    scale = np.abs(truth.feature_values).max()
    assert np.abs(exp.feature_values - truth.feature_values).max() < 0.1 * scale
    # the anchored empty/full coalitions make the attributions (nearly) efficient
    gap = exp.feature_values.sum(1) - (truth.extra["full_value"] - truth.extra["base_value"])
    assert np.abs(gap).max() < 1e-3 * max(scale, 1e-3) + 1e-5
    cover = (exp.lower <= truth.feature_values) & (truth.feature_values <= exp.upper)
    assert cover.mean() >= 0.85
    assert exp.n_queries == 6 * (1500 + 2)
