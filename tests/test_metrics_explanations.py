import numpy as np
import pytest
import torch
from torch import nn

from calix.explain import IntegratedGradients, Saliency
from calix.metrics import (
    METRICS,
    better_than_random,
    deletion_curve,
    insertion_curve,
    local_lipschitz,
    mif_lif,
    otsu_tv,
    parameter_randomisation,
    roar_tabular,
    sensitivity,
    ssim,
)
from calix.models import wrap
from calix.perturb import Blur


class _RegionSum(nn.Module):
    """Class 1's logit is the sum of the 4x4 block at rows 4-7, columns 4-7 (class 0: 0)."""

    def forward(self, x):
        s = x[:, 0, 4:8, 4:8].sum((1, 2))
        return torch.stack([torch.zeros_like(s), s - 4.0], 1)


def _region_setup(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 12, 12, generator=g)
    x[:, 0, 4:8, 4:8] += 1.0
    perfect = torch.zeros(n, 1, 12, 12)
    perfect[:, 0, 4:8, 4:8] = x[:, 0, 4:8, 4:8]
    return wrap(_RegionSum(), input_shape=(1, 12, 12)), x, perfect


def test_perfect_map_deletes_fastest_and_beats_random():
    model, x, perfect = _region_setup()
    rnd = torch.rand(x.shape, generator=torch.Generator().manual_seed(1))
    good = deletion_curve(model, x, perfect, steps=50, target=1, output="logit",
                          normalize=False)
    bad = deletion_curve(model, x, rnd, steps=50, target=1, output="logit", normalize=False)
    # after removing 16/144 pixels the perfect map has removed the whole region
    at = np.searchsorted(good.fractions, 16 / 144)
    assert np.allclose(good.scores[:, at + 1 :], -4.0)
    assert (good.auc < bad.auc).all()
    ins_good = insertion_curve(model, x, perfect, steps=50, target=1, output="logit",
                               normalize=False)
    ins_bad = insertion_curve(model, x, rnd, steps=50, target=1, output="logit",
                              normalize=False)
    assert (ins_good.auc > ins_bad.auc).all()
    assert good.n_queries == 6 * 51


def test_batched_curve_equals_step_by_step_reference():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(),
                        nn.Linear(3 * 36, 4))
    model = wrap(net, input_shape=(1, 6, 6), batch_size=7)
    x = torch.rand(3, 1, 6, 6)
    maps = torch.randn(3, 1, 6, 6)
    blur = Blur(3, 1.0)
    curve = deletion_curve(model, x, maps, fill=blur, steps=12)
    ref_fill = blur.reference(x)
    with torch.no_grad():
        p0 = torch.softmax(net(x), 1)
        t = p0.argmax(1)
        for i in range(3):  # the slow obvious version: one step at a time
            order = torch.argsort(maps[i].flatten(), descending=True, stable=True)
            for s, f in enumerate(curve.fractions):
                k = int(round(f * 36))
                xi = x[i].flatten().clone()
                xi[order[:k]] = ref_fill[i].flatten()[order[:k]]
                p = torch.softmax(net(xi.view(1, 1, 6, 6)), 1)[0, t[i]] / p0[i, t[i]]
                assert abs(float(p) - curve.scores[i, s]) < 1e-5


def test_random_map_has_fidelity_near_zero_and_good_map_positive():
    model, x, perfect = _region_setup(n=40, seed=2)
    rnd = torch.rand(x.shape, generator=torch.Generator().manual_seed(3))
    fr = mif_lif(model, x, rnd, target=1)
    # MIF and LIF of a random order estimate the same curve: A = 0 up to sampling noise
    assert abs(fr.mean) < max(2 * fr.ci95, 5.0)
    good = mif_lif(model, x, perfect, target=1)
    assert good.mean > 10 * max(abs(fr.mean), 1.0)
    assert good.mif.fractions[-1] == 0.95 and len(good.mif.fractions) == 20


def test_better_than_random_with_a_perfect_map():
    model, x, perfect = _region_setup(n=5)
    res = better_than_random(model, x, perfect, n_orders=3, n_segments=20, output="logit")
    assert res["btr"] == 1.0 and (res["auc"] < res["random_auc"]).all()


def test_ssim_and_otsu_tv():
    rng = np.random.default_rng(0)
    maps = rng.random((3, 1, 16, 16))
    np.testing.assert_allclose(ssim(maps, maps), 1.0)
    assert (ssim(maps, rng.random((3, 1, 16, 16))) < 0.5).all()
    blob = np.zeros((1, 16, 16))
    blob[0, 5:11, 5:11] = 1.0
    salt = (rng.random((1, 16, 16)) > 0.5).astype(float)
    assert otsu_tv(blob)[0] < otsu_tv(salt)[0]
    assert otsu_tv(np.zeros((1, 8, 8)))[0] == 0.0


def test_sensitivity_and_lipschitz_of_a_linear_model():
    lin = nn.Linear(5, 2)
    model = wrap(lin, input_shape=(5,))
    x = torch.randn(4, 5)
    sal = Saliency(model, output="logit")
    # the gradient of a linear logit is constant: explanations do not move at all
    np.testing.assert_allclose(sensitivity(sal, x, n_neighbours=5), 0.0, atol=1e-7)
    np.testing.assert_allclose(local_lipschitz(sal, x, n_neighbours=5), 0.0, atol=1e-6)
    # gradient × input moves exactly with x: Lipschitz constant ≤ max |w| and > 0
    gxi = Saliency(model, output="logit", multiply_by_input=True)
    lip = local_lipschitz(gxi, x, n_neighbours=30)
    assert (lip > 0).all() and (lip <= lin.weight.abs().max().item() + 1e-5).all()


def test_parameter_randomisation_lowers_similarity():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                        nn.Linear(4 * 64, 3))
    x = torch.rand(4, 1, 8, 8)

    def make(module):
        return IntegratedGradients(wrap(module, input_shape=(1, 8, 8)), n_steps=16)

    res = parameter_randomisation(make, net, x)
    assert res["layers"] == ["3", "0"]
    assert res["similarity"].shape == (2, 4)
    assert res["similarity"][-1].mean() < 0.5
    assert torch.equal(net[0].weight, net[0].weight)  # the original module is untouched


def test_roar_removes_the_only_informative_feature_first():
    from calix.data import from_arrays

    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, 5))
    y = (X[:, 0] > 0).astype(int)
    ds = from_arrays(X, y, name="only-x0", task="classification")
    res = roar_tabular(ds, [3.0, 0.1, 0.2, 0.3, 0.4], fractions=(0.0, 0.2), seeds=(0, 1),
                       epochs=30)
    assert res["removed"][1] == [0]
    assert res["accuracy"][0].mean() > 0.9 and res["accuracy"][1].mean() < 0.65


def test_metric_directions_and_bad_input():
    assert not METRICS["deletion_auc"].higher_is_better
    assert METRICS["insertion_auc"].higher_is_better and METRICS["ssim"].higher_is_better
    assert not METRICS["max_sensitivity"].higher_is_better
    model, x, perfect = _region_setup(n=2)
    with pytest.raises(ValueError, match=r"maps must have shape \(n, C, 12, 12\)"):
        deletion_curve(model, x, torch.zeros(2, 1, 10, 10))
    with pytest.raises(ValueError, match="maps has 3 rows for 2 inputs"):
        deletion_curve(model, x, torch.zeros(3, 1, 12, 12))
    with pytest.raises(ValueError, match="increasing values"):
        deletion_curve(model, x, perfect, steps=[0.5, 0.2])
    with pytest.raises(ValueError, match="differ in shape"):
        ssim(np.zeros((2, 4, 4)), np.zeros((2, 5, 5)))


def test_roar_images_accuracy_falls_when_the_bright_strokes_go():
    from calix.data import load
    from calix.metrics import roar_images

    ds = load("digits")
    # the image itself as the map: removing the brightest pixels removes the strokes
    res = roar_images(ds, ds.X_train, ds.X_test, fractions=(0.0, 0.5), epochs=8)
    acc = res["accuracy"][:, 0]
    assert acc[0] > 0.9 and acc[1] < 0.5
