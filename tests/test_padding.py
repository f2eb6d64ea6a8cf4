"""Padding columns: with per-image features (superpixels) an image with fewer features than the
widest of the batch has mask columns that remove nothing. Every surrogate explainer leaves them
out: attribution exactly 0 there, and the Shapley estimators' efficiency on the real
features."""

from __future__ import annotations

from math import factorial

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from calix.explain import METHODS, KernelSHAP
from calix.explain.surrogate import (
    efficiency_constrained_wls,
    lime_kernel,
    real_columns,
    shapley_kernel_weights,
    size_stratified_weights,
    weighted_ridge,
)
from calix.models import wrap
from calix.perturb import (
    Constant,
    Features,
    Perturbation,
    Segmentation,
    Superpixels,
    all_coalitions,
)


class _Blocks(Features):
    """Image i split into ``counts[i]`` vertical bands (labels 0..counts[i] − 1): a
    deterministic stand-in for superpixels with a different count per image."""

    sample_ndim = 3

    def __init__(self, counts):
        self.counts = list(counts)

    def segment(self, x: Tensor) -> Segmentation:
        self._check(x)
        n, c, h, w = x.shape
        labels = torch.empty(n, c, h, w, dtype=torch.long)
        for i, k in enumerate(self.counts):
            labels[i] = (torch.arange(w) * k // w).expand(c, h, w)
        return Segmentation(labels=labels.to(x.device),
                            n_features=torch.tensor(self.counts[:n]), shared=False)


def _cnn() -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Tanh(), nn.Flatten(),
                             nn.Linear(4 * 64, 3)).eval()


def _images() -> Tensor:
    return torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2


COUNTS = (5, 3)  # image 1 has two padding columns


def _prob(model, x, target):
    with torch.no_grad():
        return torch.softmax(model.forward(x), -1)[torch.arange(len(x)), target].double()


@pytest.mark.parametrize("n_samples", [64, 24])  # 2^5 - 2 = 30: enumerated, then sampled
def test_kernel_shap_efficiency_per_image_and_zero_padding(n_samples):
    model = wrap(_cnn(), input_shape=(1, 8, 8))
    x = _images()
    exp = KernelSHAP(model, features=_Blocks(COUNTS), fill=Constant(0.0),
                     n_samples=n_samples).explain(x)
    fv = exp.feature_values.astype(np.float64)
    assert fv.shape == (2, 5)
    assert (fv[1, 3:] == 0).all()  # padding: exactly 0
    assert np.abs(fv[1, :3]).max() > 1e-4
    full = _prob(model, x, torch.as_tensor(exp.target))
    empty = _prob(model, torch.zeros_like(x), torch.as_tensor(exp.target))
    # efficiency of each image on its own features; float32 probabilities and float32 output
    np.testing.assert_allclose(fv.sum(1), (full - empty).numpy(), atol=2e-6)


def test_kernel_shap_exact_path_equals_the_image_alone():
    """Enumerating: the padded image gets the exact Shapley values of its own 3-player game,
    as when explained alone (checked against the Shapley formula on all 2^3 coalitions)."""
    model = wrap(_cnn(), input_shape=(1, 8, 8))
    x = _images()
    batch = KernelSHAP(model, features=_Blocks(COUNTS), n_samples=64).explain(x, target=2)
    alone = KernelSHAP(model, features=_Blocks(COUNTS[1:]), n_samples=64).explain(
        x[1:], target=2)
    assert np.all(batch.extra["exact"]) and alone.extra["exact"]  # per input with padding
    np.testing.assert_allclose(batch.feature_values[1, :3], alone.feature_values[0],
                               atol=1e-6)
    # the Shapley formula by hand
    eng = Perturbation(_Blocks(COUNTS[1:]), Constant(0.0))
    coal = all_coalitions(3)
    v = torch.softmax(eng.query(model, x[1:], coal).outputs[0], -1)[:, 2].double()
    phi = np.zeros(3)
    for i in range(3):
        for k, S in enumerate(coal):
            if S[i]:
                continue
            with_i = S.clone()
            with_i[i] = True
            j = int((with_i.long() * (2 ** torch.arange(3))).sum())
            s = int(S.sum())
            phi[i] += factorial(s) * factorial(3 - s - 1) / factorial(3) * float(v[j] - v[k])
    np.testing.assert_allclose(alone.feature_values[0], phi, atol=2e-6)


_SURROGATES = {
    "lime": {"n_samples": 60},
    "kernel_shap": {"n_samples": 24},
    "glime": {"n_samples": 60},
    "us_lime": {"n_samples": 60},
    "poly_shap": {"n_samples": 28},
    "leverage_shap": {"n_samples": 28},
    "regression_adjusted_shap": {"n_samples": 28},
    "logit_surrogate_shap": {"n_samples": 28, "adjust": True},
    "stacked_shap": {"n_samples": 28},
    "shapley": {"n_samples": 28},
    "bayes_lime": {"n_samples": 60, "focused": True, "n_start": 20, "n_candidates": 40,
                   "batch": 20},
    "bayes_shap": {"n_samples": 40, "target_width": 0.5, "max_samples": 40, "n_start": 20},
    "eagle": {"n_samples": 40, "batch": 8},
}


_SHAPLEY = ("kernel_shap", "poly_shap", "leverage_shap", "regression_adjusted_shap",
            "logit_surrogate_shap", "stacked_shap", "shapley")


@pytest.mark.parametrize("name", list(_SURROGATES))
def test_padding_columns_get_zero_attribution(name):
    model = wrap(_cnn(), input_shape=(1, 8, 8))
    exp = METHODS[name](model, features=_Blocks(COUNTS), fill=Constant(0.0),
                        **_SURROGATES[name]).explain(_images())
    fv = exp.feature_values
    assert (fv[1, 3:] == 0).all(), fv
    assert np.isfinite(fv).all() and np.abs(fv[1, :3]).max() > 0
    assert np.abs(fv[0]).max() > 0
    for field in ("std", "lower", "upper"):
        arr = getattr(exp, field)
        if arr is not None:
            assert (arr[1, 3:] == 0).all(), field
            assert np.isfinite(arr).all()
    if name in _SHAPLEY:  # efficiency on the real features (the logit link is computed
        # from the logits, the scores are float32 probabilities: rounding of 1e-7)
        np.testing.assert_allclose(exp.extra["efficiency_gap"], 0.0, atol=1e-6)


def test_poly_shap_exact_path_zero_padding_and_efficiency():
    model = wrap(_cnn(), input_shape=(1, 8, 8))
    exp = METHODS["poly_shap"](model, features=_Blocks(COUNTS), n_samples=40).explain(
        _images())
    assert np.all(exp.extra["exact"])  # per input: the widths differ
    assert (exp.feature_values[1, 3:] == 0).all()
    np.testing.assert_allclose(exp.extra["efficiency_gap"], 0.0, atol=1e-9)


def test_superpixels_batch_with_different_counts():
    """Real SLIC superpixels: two images that segment to different counts."""
    g = torch.Generator().manual_seed(0)
    busy = torch.rand(1, 1, 8, 8, generator=g)
    flat = torch.zeros(1, 1, 8, 8)
    flat[..., 4:] = 1.0
    x = torch.cat([busy, flat])
    feats = Superpixels(n_segments=8, compactness=0.1)
    seg = feats.segment(x)
    n0, n1 = (int(k) for k in seg.n_features)
    assert n0 != n1
    model = wrap(_cnn(), input_shape=(1, 8, 8))
    exp = KernelSHAP(model, features=feats, n_samples=2**seg.d).explain(x)
    small = int(np.argmin([n0, n1]))
    nf = min(n0, n1)
    assert (exp.feature_values[small, nf:] == 0).all()
    full = _prob(model, x, torch.as_tensor(exp.target))
    empty = _prob(model, torch.zeros_like(x), torch.as_tensor(exp.target))
    np.testing.assert_allclose(exp.feature_values.astype(np.float64).sum(1),
                               (full - empty).numpy(), atol=2e-6)


# ---------------------------------------------------------------------- the building blocks
def test_real_columns():
    assert real_columns(torch.tensor([3, 3]), 3) is None
    np.testing.assert_array_equal(real_columns(torch.tensor([3, 1]), 3).numpy(),
                                  [[True, True, True], [True, False, False]])


def test_weighted_ridge_padding_equals_the_narrow_fit():
    g = torch.Generator().manual_seed(0)
    z = (torch.rand(2, 40, 4, generator=g) < 0.5).double()
    y = torch.randn(2, 40, generator=g, dtype=torch.float64)
    w = torch.rand(2, 40, generator=g, dtype=torch.float64)
    valid = real_columns(torch.tensor([4, 2]), 4)
    coef, icpt = weighted_ridge(z * valid[:, None], y, w, 0.0, valid=valid)
    narrow, narrow_icpt = weighted_ridge(z[1:, :, :2], y[1:], w[1:], 0.0)
    full, full_icpt = weighted_ridge(z[:1], y[:1], w[:1], 0.0)
    assert (coef[1, 2:] == 0).all()
    np.testing.assert_allclose(coef[1, :2], narrow[0], atol=1e-10)
    np.testing.assert_allclose(icpt[1], narrow_icpt[0], atol=1e-10)
    np.testing.assert_allclose(coef[0], full[0], atol=1e-10)


def test_constrained_wls_padding_equals_the_narrow_fit():
    g = torch.Generator().manual_seed(1)
    z = torch.rand(2, 50, 5, generator=g) < 0.5
    y = torch.randn(2, 50, generator=g, dtype=torch.float64)
    w = torch.rand(2, 50, generator=g, dtype=torch.float64)
    total = torch.tensor([0.7, -0.3], dtype=torch.float64)
    valid = real_columns(torch.tensor([5, 3]), 5)
    phi = efficiency_constrained_wls(z & valid[:, None], y, w, total, valid=valid)
    narrow = efficiency_constrained_wls(z[1:, :, :3], y[1:], w[1:], total[1:])
    wide = efficiency_constrained_wls(z[:1], y[:1], w[:1], total[:1])
    assert (phi[1, 3:] == 0).all()
    np.testing.assert_allclose(phi[1, :3], narrow[0], atol=1e-8)
    np.testing.assert_allclose(phi[0], wide[0], atol=1e-8)
    np.testing.assert_allclose(phi.sum(1), total, atol=1e-12)


def test_size_stratified_weights_reproduce_the_kernel_on_enumerated_coalitions():
    """All 2^5 coalitions restricted to 3 real features: each 3-player coalition appears 4
    times, and the weights sum to its Shapley-kernel weight (normalised)."""
    coal = all_coalitions(5)[None] & real_columns(torch.tensor([3]), 5)[:, None]
    w = size_stratified_weights(coal, torch.tensor([3]))[0]
    exact = shapley_kernel_weights(all_coalitions(3)[1:-1])
    exact = exact / exact.sum()  # normalised as the stratified weights
    sizes = coal[0].sum(-1)
    for s in (1, 2):
        np.testing.assert_allclose(float(w[sizes == s].sum()), float(exact[
            all_coalitions(3)[1:-1].sum(-1) == s].sum()), rtol=1e-12)
    assert (w[(sizes == 0) | (sizes == 3)] == 0).all()


def test_lime_kernel_counts_only_real_features():
    masks = torch.tensor([[[True, False, True, True]], [[True, False, False, False]]])
    got = lime_kernel(masks, None, torch.tensor([4, 2]))
    np.testing.assert_allclose(got[0], lime_kernel(masks[0]), rtol=1e-12)
    np.testing.assert_allclose(got[1], lime_kernel(masks[1, :, :2]), rtol=1e-12)


_SHAPLEY = ("kernel_shap", "poly_shap", "leverage_shap", "regression_adjusted_shap",
            "logit_surrogate_shap", "stacked_shap", "shapley")


@pytest.mark.parametrize("name", list(_SURROGATES))
def test_padding_on_the_model_device(name):
    """The padding code paths on the fake CUDA device of tests/test_device.py."""
    from tests.test_device import FakeCuda, _fake

    x = _images()
    ref = METHODS[name](wrap(_cnn(), input_shape=(1, 8, 8)), features=_Blocks(COUNTS),
                        fill=Constant(0.0), **_SURROGATES[name]).explain(x)
    with FakeCuda() as mode:
        out = METHODS[name](wrap(_fake(_cnn()), input_shape=(1, 8, 8)),
                            features=_Blocks(COUNTS), fill=Constant(0.0),
                            **_SURROGATES[name]).explain(x.to("cuda"))
    assert mode.on_device > 0
    np.testing.assert_allclose(out.feature_values, ref.feature_values, rtol=1e-6, atol=1e-8)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", list(_SURROGATES))
def test_cuda_padding_matches_cpu(name):
    """On a GPU (TF32 off): the same attributions as on the CPU, zero padding, within the
    tolerances of tests/test_device.py."""
    from tests.test_device import _near

    x = _images()
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        exps = [METHODS[name](wrap(_cnn().to(dev), input_shape=(1, 8, 8)),
                              features=_Blocks(COUNTS), fill=Constant(0.0),
                              **_SURROGATES[name]).explain(x.to(dev))
                for dev in ("cpu", "cuda")]
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
    assert (exps[1].feature_values[1, 3:] == 0).all()
    _near(exps[0].feature_values, exps[1].feature_values, name)


def test_surrogate_r2_ignores_padding_columns():
    """surrogate_r2 scores the padded image on its own features: what its padding columns
    hold does not matter."""
    from calix.metrics.stability import surrogate_r2

    model = wrap(_cnn(), input_shape=(1, 8, 8))
    x = _images()
    lime = METHODS["lime"](model, features=_Blocks(COUNTS), fill=Constant(0.0), n_samples=60)
    exp = lime.explain(x)
    r2 = surrogate_r2(lime, exp, x, n_holdout=40)
    exp.feature_values = exp.feature_values.copy()
    exp.feature_values[1, 3:] = 5.0  # nonsense on the padding columns
    np.testing.assert_allclose(surrogate_r2(lime, exp, x, n_holdout=40), r2, rtol=1e-12)
    assert np.isfinite(r2).all() and (r2 <= 1).all()


def test_superpixels_on_the_model_device():
    from tests.test_device import FakeCuda, _fake

    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    x[1] = (torch.arange(8) >= 4).float()

    def run(module, xs):
        return KernelSHAP(wrap(module, input_shape=(1, 8, 8)), n_samples=40,
                          features=Superpixels(n_segments=8)).explain(xs)

    ref = run(_cnn(), x)
    with FakeCuda() as mode:
        out = run(_fake(_cnn()), x.to("cuda"))
    assert mode.on_device > 0
    np.testing.assert_allclose(out.feature_values, ref.feature_values, rtol=1e-6, atol=1e-8)


def test_stack_weights_are_per_input_when_widths_differ():
    # image 0 (5 bands, 28 queries: sampled) gets its stacking weights, image 1 (3 bands: all
    # 8 coalitions, exact) NaN; neither row is padded to the batch's 5 features
    model = wrap(_cnn(), input_shape=(1, 8, 8))
    exp = METHODS["stacked_shap"](model, features=_Blocks(COUNTS), fill=Constant(0.0),
                                  n_samples=28, seed=0).explain(_images())
    a = exp.extra["stack_weights"]
    assert a.shape == (2, 4)
    np.testing.assert_allclose(a[0].sum(), 1.0, atol=1e-12)
    assert np.isnan(a[1]).all()
    assert list(exp.extra["exact"]) == [False, True]
