import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

from calix.calibrate import TemperatureScaling, calibrated
from calix.explain import (
    LIME,
    RISE,
    CaptumExplainer,
    GuidedBackprop,
    IntegratedGradients,
    KernelSHAP,
    MeaningfulPerturbation,
    Occlusion,
    Saliency,
    SmoothGrad,
    as_forward,
    weighted_ridge,
)
from calix.models import wrap
from calix.perturb import Columns, Constant, Mean, PatchGrid, Perturbation


def _mlp(d=8, k=3, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, 16), nn.ReLU(), nn.Linear(16, k))


def _cnn(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 8 * 8, 3))


# ---------------------------------------------------------------------- gradient family
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


# ---------------------------------------------------------------------- perturbation family
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


def test_occlusion_equals_captum_feature_ablation():
    from captum.attr import FeatureAblation

    net = _cnn()
    model = wrap(net, input_shape=(1, 8, 8))
    x = torch.rand(3, 1, 8, 8)
    exp = Occlusion(model, features=PatchGrid(2), fill=Constant(0.0)).explain(x, target=1)
    mask = PatchGrid(2).segment(x).labels[:1]
    ref = FeatureAblation(lambda t: torch.softmax(net(t), 1)).attribute(
        x, baselines=0.0, target=1, feature_mask=mask)
    np.testing.assert_allclose(exp.values, ref.detach().numpy(), atol=1e-6)
    assert exp.n_queries == 3 * 17


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


class _RegionModel(nn.Module):
    """Class 1's logit is the mean brightness of the 4×4 block at rows 2–5, columns 9–12."""

    def forward(self, x):
        s = x[:, 0, 2:6, 9:13].mean((1, 2))
        return torch.stack([torch.zeros_like(s), 8 * (s - 0.5)], 1)


def _region_input():
    x = torch.full((1, 1, 16, 16), 0.3)
    x[0, 0, 2:6, 9:13] = 1.0
    return x


def _region_mass(values):
    v = np.abs(values[0, 0])
    inside = v[2:6, 9:13].mean()
    outside = (v.sum() - v[2:6, 9:13].sum()) / (256 - 16)
    return inside, outside


def test_rise_puts_its_mass_on_the_region():
    model = wrap(_RegionModel(), input_shape=(1, 16, 16))
    exp = RISE(model, n_masks=2000, grid=4, p=0.5, seed=0).explain(_region_input(), target=1)
    inside, outside = _region_mass(exp.values - exp.values.min())
    assert inside > 2 * outside
    assert exp.n_queries == 2000


def test_meaningful_perturbation_deletes_the_region():
    model = wrap(_RegionModel(), input_shape=(1, 16, 16))
    mp = MeaningfulPerturbation(model, fill=Constant(0.0), steps=150, lr=0.1)
    exp = mp.explain(_region_input(), target=1)
    inside, outside = _region_mass(exp.values)
    assert inside > 0.5 and inside > 5 * outside
    assert exp.extra["deleted_score"][0] < 0.1  # deleting the region kills the class


def test_batch_equals_one_by_one():
    model = wrap(_mlp(d=5), input_shape=(5,))
    x = torch.randn(4, 5)
    for make in (lambda: Occlusion(model), lambda: KernelSHAP(model, n_samples=64)):
        batch = make().explain(x).feature_values
        single = np.stack([make().explain(x[i]).feature_values[0] for i in range(4)])
        np.testing.assert_allclose(batch, single, atol=1e-6)


def test_perturbation_explainers_work_on_sklearn_models():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 5))
    y = (X[:, 0] > 0).astype(int)
    clf = LogisticRegression().fit(X, y)
    exp = KernelSHAP(clf, n_samples=32).explain(X[:3], target=1)
    assert np.argmax(np.abs(exp.feature_values), 1).tolist() == [0, 0, 0]
    with pytest.raises(TypeError, match="not differentiable"):
        Saliency(clf)


def test_explanations_pass_levels_to_a_recalx_model():
    from calix.calibrate import ReCalX

    net = _mlp(d=4)
    model = wrap(net, input_shape=(4,))
    rc = ReCalX(2, min_samples_per_bin=1).fit(torch.randn(50, 3), torch.randint(0, 3, (50,)),
                                              torch.rand(50))
    rc.log_temperatures_.copy_(torch.log(torch.tensor([1.0, 5.0])))
    x = torch.randn(1, 4)
    occ = Occlusion(calibrated(model, rc), output="logit").explain(x, target=0)
    # removing one of four features is level 0.25 -> bin 0 (T = 1): plain logits
    ref = Occlusion(model, output="logit").explain(x, target=0)
    np.testing.assert_allclose(occ.feature_values, ref.feature_values, atol=1e-6)
    ks = KernelSHAP(calibrated(model, rc), output="logit", n_samples=14).explain(x, target=0)
    base = Perturbation(Columns(), Constant(0.0)).query(model, x, torch.zeros(1, 4)).outputs
    # the empty coalition (level 1, T = 5) is cooled by its bin's temperature
    np.testing.assert_allclose(ks.extra["base_value"], base[0, 0, 0].item() / 5, rtol=1e-5)


# ---------------------------------------------------------------------- bad input
def test_target_out_of_range():
    model = wrap(_mlp(), input_shape=(8,))
    with pytest.raises(ValueError, match=r"target must lie in \[0, 3\)"):
        Saliency(model).explain(torch.randn(2, 8), target=3)
    with pytest.raises(ValueError, match="one index or one per input"):
        Occlusion(model).explain(torch.randn(2, 8), target=[0, 1, 2])


def test_baseline_of_wrong_shape():
    model = wrap(_mlp(), input_shape=(8,))
    with pytest.raises(ValueError, match=r"baseline must have shape \(8,\)"):
        IntegratedGradients(model, baselines=torch.zeros(7)).explain(torch.randn(2, 8))
    with pytest.raises(ValueError, match="unknown baseline"):
        IntegratedGradients(model, baselines="grey").explain(torch.randn(2, 8))


def test_budget_too_small():
    model = wrap(_mlp(d=10), input_shape=(10,))
    with pytest.raises(ValueError, match=r"LIME needs n_samples >= d \+ 1 = 11"):
        LIME(model, n_samples=10).explain(torch.randn(1, 10))
    with pytest.raises(ValueError, match="KernelSHAP needs n_samples >= 12 model queries per input "
                                         "for 10 features"):
        KernelSHAP(model, n_samples=5).explain(torch.randn(1, 10))


def test_non_differentiable_model_for_gradient_methods():
    m = wrap(lambda a: np.tile([0.2, 0.8], (len(a), 1)), output="probabilities",
             input_shape=(3,))
    for cls in (Saliency, IntegratedGradients, SmoothGrad, GuidedBackprop):
        with pytest.raises(TypeError, match="differentiable"):
            cls(m)


def test_wrong_input_shape_for_explainer():
    model = wrap(_mlp(), input_shape=(8,))
    with pytest.raises(ValueError, match=r"must have shape \(n, 8\)"):
        Occlusion(model).explain(torch.randn(2, 9))
    with pytest.raises(ValueError, match="RISE explains images"):
        RISE(model, n_masks=4).explain(torch.randn(2, 8))
