import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from calix.explain import IntegratedGradients, Occlusion, Saliency
from calix.models import wrap
from calix.uncertainty import (
    DeepEnsemble,
    MCDropConnect,
    MCDropout,
    coefficient_of_variation,
    cv_by_class,
    explanation_distribution,
    mean_cv,
    predictive_uncertainty,
)


def _net(seed=0, p=0.3):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(p), nn.Linear(16, 16),
                         nn.ReLU(), nn.Dropout(p), nn.Linear(16, 3)).eval()


def test_deterministic_model_has_zero_std_and_mean_equals_single():
    net = _net()
    model = wrap(net, input_shape=(6,))
    x = torch.randn(4, 6)
    single = IntegratedGradients(model, n_steps=16).explain(x, target=1).values
    ens = DeepEnsemble([model, model, model])
    dist = explanation_distribution(lambda m: IntegratedGradients(m, n_steps=16), ens, x,
                                    target=1)
    np.testing.assert_allclose(dist.values, single, atol=1e-7)
    np.testing.assert_allclose(dist.std, 0.0, atol=1e-7)
    assert np.isfinite(dist.extra["cv"]).all() and (mean_cv(dist) < 1e-6).all()


def test_mc_dropout_with_p_zero_is_the_deterministic_model():
    model = wrap(_net(), input_shape=(6,))
    x = torch.randn(5, 6)
    sal = Saliency(model).explain(x, target=2).values
    dist = explanation_distribution(Saliency(model), MCDropout(model, p=0.0, n_samples=4), x,
                                    target=2)
    np.testing.assert_allclose(dist.values, sal, atol=1e-7)
    np.testing.assert_allclose(dist.std, 0.0, atol=1e-7)


def test_batched_masks_equal_sequential_passes():
    model = wrap(_net(), input_shape=(6,))
    x = torch.randn(3, 6)
    T = 7
    with torch.no_grad():
        with MCDropout(model, n_samples=T, seed=4).active() as m:
            batched = m.forward(x.repeat(T, 1)).reshape(T, 3, -1)
        with MCDropout(model, n_samples=T, seed=4).active() as m:
            sequential = torch.stack([m.forward(x) for _ in range(T)])
    torch.testing.assert_close(batched, sequential)
    assert not torch.allclose(batched[0], batched[1])  # the samples do differ


def test_models_are_whole_sub_networks_so_ig_stays_complete():
    model = wrap(_net(), input_shape=(6,))
    x = torch.randn(4, 6)
    outs = []
    for m in MCDropout(model, n_samples=3, seed=1).models():
        with torch.no_grad():
            a, b = m.forward(x), m.forward(x.flip(0)).flip(0)
        torch.testing.assert_close(a, b)  # one mask for every row of a sample
        exp = IntegratedGradients(m, n_steps=64).explain(x, target=0)
        # completeness holds for the sampled network (the path never changes network)
        assert np.abs(exp.extra["delta"]).max() < 2e-3
        outs.append(a)
    assert not torch.allclose(outs[0], outs[1])


def test_samplers_leave_the_model_exactly_as_it_was():
    net = _net()
    net.train(False)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    model = wrap(net, input_shape=(6,))
    x = torch.randn(2, 6)
    for sampler in (MCDropout(model, n_samples=3), MCDropConnect(model, n_samples=3, p=0.5)):
        explanation_distribution(Saliency(model), sampler, x)
        predictive_uncertainty(sampler, x)
    with pytest.raises(RuntimeError):  # an error inside a sample still restores the weights
        with MCDropConnect(model, p=0.5).masked(torch.Generator()):
            raise RuntimeError("boom")
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert not net.training
    assert all(not m._forward_hooks for m in net.modules())


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-5, 5, allow_nan=False), min_size=4, max_size=4),
       st.lists(st.floats(0, 5, allow_nan=False), min_size=4, max_size=4))
def test_cv_guard_never_returns_inf_or_nan(mean, std):
    m = np.array(mean)[None]
    m[0, 0] = 0.0  # always one exact zero
    cv = coefficient_of_variation(m, np.array(std)[None])
    assert np.isfinite(cv).all() and cv[0, 0] == 0.0


def test_dropconnect_and_uncertainty_summaries():
    model = wrap(_net(p=0.0), input_shape=(6,))
    x = torch.randn(8, 6)
    dc = MCDropConnect(model, n_samples=20, p=0.2, seed=1)
    dist = explanation_distribution(Occlusion(model), dc, x)
    assert dist.extra["samples"].shape == (20, 8, 6) and (dist.std > 0).any()
    assert dist.n_queries == 20 * 8 * 7
    pu = predictive_uncertainty(dc, x)
    assert pu.mean_probs.shape == (8, 3)
    assert (pu.mutual_information >= -1e-12).all() and (pu.mutual_information <= pu.entropy).all()
    per_class = cv_by_class(dist)
    assert set(per_class) <= {0, 1, 2} and all(np.isfinite(v) for v in per_class.values())


def test_regression_on_diabetes():
    from calix import zoo

    trained = zoo.train("mlp", "diabetes", seed=0, dropout=0.2, epochs=20)
    model = trained.wrap()
    x = trained.dataset.X_test[:5]
    dist = explanation_distribution(lambda m: IntegratedGradients(m, n_steps=20),
                                    MCDropout(model, n_samples=10), x, target=0)
    assert dist.values.shape == (5, 10) and (dist.std > 0).any()
    assert np.isfinite(dist.extra["cv"]).all()


def test_bad_input():
    lin = wrap(nn.Linear(3, 2), input_shape=(3,))
    with pytest.raises(ValueError, match="nn.Dropout layers"):
        MCDropout(lin)
    with pytest.raises(ValueError, match="at least two models"):
        DeepEnsemble([lin])
    with pytest.raises(ValueError, match="pass a factory"):
        explanation_distribution(Saliency(lin), DeepEnsemble([lin, lin]), torch.zeros(1, 3))
    with pytest.raises(TypeError, match="needs a torch model"):
        MCDropConnect(wrap(lambda a: np.zeros((len(a), 2)), input_shape=(3,)))


def test_flipout_layers_and_sampler():
    from calix.uncertainty import Flipout, flipout_layers, to_flipout

    net = _net(p=0.0)
    bayes = to_flipout(net).eval()
    x = torch.randn(4, 6)
    # mean weights reproduce the original network; sampling is off outside the sampler
    torch.testing.assert_close(bayes(x), net(x))
    model = wrap(bayes, input_shape=(6,))
    T = 5
    with torch.no_grad():
        with Flipout(model, n_samples=T, seed=2).active() as m:
            batched = m.forward(x.repeat(T, 1)).reshape(T, 4, -1)
        with Flipout(model, n_samples=T, seed=2).active() as m:
            again = m.forward(x.repeat(T, 1)).reshape(T, 4, -1)
    # Flipout shares one ΔW per pass and decorrelates rows by random signs (Wen et al.), so
    # a batched pass is not T sequential passes -- but it is seeded and rows differ
    torch.testing.assert_close(batched, again)
    assert not torch.allclose(batched[0], batched[1])
    assert all(not layer.sample and layer.generator is None for layer in flipout_layers(bayes))
    torch.testing.assert_close(bayes(x), net(x))
    with pytest.raises(ValueError, match="Flipout layers"):
        Flipout(wrap(net, input_shape=(6,)))


def test_flipout_epistemic_uncertainty_shrinks_with_more_data():
    from dataclasses import replace

    from calix import data
    from calix.uncertainty import Flipout, train_flipout

    ds = data.load("digits")
    x = ds.X_test[:200]
    mi = {}
    for n, epochs in ((100, 300), (len(ds.X_train), 30)):  # about the same number of steps
        sub = replace(ds, X_train=ds.X_train[:n], y_train=ds.y_train[:n])
        model = train_flipout("mlp", sub, seed=0, epochs=epochs)
        mi[n] = predictive_uncertainty(Flipout(model, n_samples=30), x).mutual_information.mean()
    # the KL term weighs 1/n: with ~10x the data the posterior, and so the epistemic part of
    # the predictive uncertainty (mutual information), narrows
    assert mi[len(ds.X_train)] < 0.5 * mi[100]


def test_distribution_curves_on_mean_and_std_maps():
    from calix.uncertainty import distribution_curves

    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Dropout(0.3),
                        nn.Flatten(), nn.Linear(4 * 64, 3)).eval()
    model = wrap(net, input_shape=(1, 8, 8))
    x = torch.rand(3, 1, 8, 8)
    dist = explanation_distribution(Saliency(model), MCDropout(model, n_samples=6), x)
    curves = distribution_curves(model, x, dist, steps=16)
    assert set(curves) == {"deletion_mean", "insertion_mean", "deletion_std", "insertion_std"}
    for c in curves.values():
        assert c.auc.shape == (3,) and len(c.fractions) == 17
        np.testing.assert_array_equal(c.target, dist.target)


def test_ensemble_mean_model_averages_the_members():
    models = [wrap(_net(seed), input_shape=(6,)) for seed in range(3)]
    ens = DeepEnsemble(models)
    mean = ens.mean_model()
    x = torch.randn(5, 6)
    expected = np.mean([m.predict_proba(x) for m in models], 0)
    np.testing.assert_allclose(mean.predict_proba(x), expected, rtol=1e-5, atol=1e-7)
    assert mean.task == "classification" and mean.input_shape == (6,)
    # differentiable: a gradient explainer runs on it
    assert np.isfinite(Saliency(mean).explain(x, target=0).values).all()
    reg = DeepEnsemble([wrap(nn.Linear(6, 1), task="regression") for _ in range(2)])
    out = reg.mean_model().predict(x)
    np.testing.assert_allclose(out, np.mean([m.predict(x) for m in reg.members], 0),
                               rtol=1e-6)
