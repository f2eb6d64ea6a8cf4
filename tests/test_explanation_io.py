"""Explanation interop: indexing, repr, pandas and shap conversion, save/load without pickle."""

import numpy as np
import pytest
import torch
from torch import nn

from calix.explain import LIME, Explanation, KernelSHAP, LogitSurrogateSHAP, Occlusion, Saliency
from calix.models import wrap
from calix.perturb import Constant, PatchGrid
from calix.uncertainty import MCDropout, explanation_distribution

D, K = 6, 3
NAMES = [f"f_{j}" for j in range(D)]
CLASSES = ["ant", "bee", "cat"]


def _mlp(dropout=0.0):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(D, 16), nn.ReLU(), nn.Dropout(dropout), nn.Linear(16, K))


@pytest.fixture(scope="module")
def tab():
    """KernelSHAP of 5 tabular inputs (exact: 2^6 coalitions fit in the budget), with names."""
    x = torch.randn(5, D, generator=torch.Generator().manual_seed(1))
    exp = KernelSHAP(wrap(_mlp(), input_shape=(D,)), n_samples=128, fill=Constant(0.0)).explain(x)
    exp.feature_names, exp.class_names, exp.data = list(NAMES), list(CLASSES), x.numpy()
    return exp


@pytest.fixture(scope="module")
def dist():
    """An explanation distribution (MC-Dropout, T=4 samples of 3 inputs)."""
    model = wrap(_mlp(dropout=0.3), input_shape=(D,))
    x = torch.randn(3, D, generator=torch.Generator().manual_seed(2))
    return explanation_distribution(Saliency(model), MCDropout(model, n_samples=4, seed=0), x)


# ---------------------------------------------------------------------- indexing
@pytest.mark.parametrize("index", [slice(1, 3), [0, 2], np.array([4, 0]), -1, 2,
                                   np.array([True, False, True, True, False])])
def test_indexing_slices_every_per_input_array(tab, index):
    sub = tab[index]
    rows = np.atleast_1d(np.arange(5)[index])
    assert isinstance(sub, Explanation) and len(sub) == len(rows)
    for f in ("values", "feature_values", "labels", "target", "data"):
        np.testing.assert_array_equal(getattr(sub, f), getattr(tab, f)[rows])
    np.testing.assert_array_equal(sub.extra["base_value"], tab.extra["base_value"][rows])
    np.testing.assert_array_equal(sub.extra["full_value"], tab.extra["full_value"][rows])
    assert sub.extra["exact"] is tab.extra["exact"]  # scalars kept
    assert sub.n_queries == tab.n_queries and sub.params == tab.params
    assert sub.feature_names == NAMES and sub.class_names == CLASSES
    assert sub.method == tab.method


def test_indexing_copies_and_rejects_bad_indices(tab):
    sub = tab[[0, 1]]
    sub.values[:] = 99.0
    sub.feature_names.append("extra")
    assert not (tab.values == 99.0).any() and tab.feature_names == NAMES
    with pytest.raises(IndexError, match="5 inputs"):
        tab[5]
    with pytest.raises(IndexError, match="5 inputs"):
        tab[np.array([True, False])]
    with pytest.raises(TypeError, match="index an Explanation by input"):
        tab[0, 1]
    with pytest.raises(TypeError, match="index an Explanation by input"):
        tab[True]
    assert [len(e) for e in tab] == [1] * 5  # iteration stops at the end


def test_indexing_slices_distribution_samples_on_their_input_axis(dist):
    assert dist.extra["samples"].shape[:2] == (4, 3)
    sub = dist[[2, 0]]
    np.testing.assert_array_equal(sub.extra["samples"], dist.extra["samples"][:, [2, 0]])
    for key in ("cv", "cv_masked"):
        np.testing.assert_array_equal(sub.extra[key], dist.extra[key][[2, 0]])
    np.testing.assert_array_equal(sub.std, dist.std[[2, 0]])
    # the slice is still a distribution: its mean and std are those of its samples
    np.testing.assert_allclose(sub.values, sub.extra["samples"].mean(0))
    np.testing.assert_allclose(sub.std, sub.extra["samples"].std(0))


# ---------------------------------------------------------------------- repr
def test_repr_is_short_and_summarises(tab, dist):
    r = repr(tab)
    assert r.startswith("Explanation(method='kernel_shap', n=5, shape=(6,), features=6")
    counts = {c: int((tab.target == i).sum()) for i, c in enumerate(CLASSES)}
    for c, k in counts.items():
        assert (f"'{c}': {k}" in r) == (k > 0)
    assert "intervals=True" in r and f"n_queries={tab.n_queries}" in r  # KernelSHAP: jackknife
    assert len(r) < 250 and "array" not in r
    rd = repr(dist)
    assert "std=True" in rd and "n=3" in rd and len(rd) < 250


# ---------------------------------------------------------------------- pandas
def test_to_pandas_one_row_per_input_named_columns(tab):
    df = tab.to_pandas()
    assert list(df.columns) == NAMES + ["target"]
    np.testing.assert_array_equal(df[NAMES].to_numpy(), tab.feature_values)
    assert df["target"].tolist() == [CLASSES[t] for t in tab.target]
    plain = Explanation(values=tab.values, method="m", target=tab.target)
    df2 = plain.to_pandas()
    assert list(df2.columns) == [f"x{j}" for j in range(D)] + ["target"]
    assert df2["target"].tolist() == tab.target.tolist()


def test_to_pandas_images_need_per_feature_values():
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(),
                        nn.Linear(2 * 8 * 8, K))
    model = wrap(net, input_shape=(1, 8, 8))
    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    occ = Occlusion(model, features=PatchGrid(4)).explain(x)
    df = occ.to_pandas()
    assert df.shape == (2, 4 + 1)
    np.testing.assert_array_equal(df[[f"x{j}" for j in range(4)]].to_numpy(),
                                  occ.feature_values)
    sal = Saliency(model).explain(x)
    with pytest.raises(ValueError, match="no per-feature values"):
        sal.to_pandas()


def test_to_pandas_checks_names_and_picks_intervals():
    x = torch.randn(3, D, generator=torch.Generator().manual_seed(3))
    exp = LogitSurrogateSHAP(wrap(_mlp(), input_shape=(D,)), n_samples=40,
                   fill=Constant(0.0)).explain(x)
    np.testing.assert_array_equal(exp.to_pandas("lower").drop(columns="target").to_numpy(),
                                  exp.lower)
    np.testing.assert_array_equal(exp.to_pandas("std").drop(columns="target").to_numpy(),
                                  exp.std)
    with pytest.raises(ValueError, match="which must be"):
        exp.to_pandas("mean")
    exp.feature_names = NAMES[:3]
    with pytest.raises(ValueError, match="3 names for 6 features"):
        exp.to_pandas()
    exp.feature_names = ["target"] + NAMES[1:]
    with pytest.raises(ValueError, match="named 'target'"):
        exp.to_pandas()
    exp.feature_names, exp.class_names, exp.target = None, ["only"], np.array([0, 1, 0])
    with pytest.raises(ValueError, match=r"target \[1\] lies outside class_names"):
        exp.to_pandas()


# ---------------------------------------------------------------------- shap
def test_to_shap_is_additive_and_draws(tab, tmp_path):
    shap = pytest.importorskip("shap")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sx = tab.to_shap()
    assert isinstance(sx, shap.Explanation) and sx.shape == (5, D)
    np.testing.assert_array_equal(sx.values, tab.feature_values)
    np.testing.assert_array_equal(sx.data, tab.data)
    assert list(sx.feature_names) == NAMES
    # KernelSHAP's efficiency: base value + Σφ = the explained score s(x)
    np.testing.assert_allclose(sx.base_values + sx.values.sum(1), tab.extra["full_value"],
                               atol=1e-5)
    shap.plots.beeswarm(sx, show=False)
    plt.gcf().savefig(tmp_path / "bee.png")
    plt.close("all")
    shap.plots.waterfall(sx[0], show=False)
    plt.gcf().savefig(tmp_path / "water.png")
    plt.close("all")
    for name in ("bee.png", "water.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"


def test_to_shap_uses_the_surrogate_intercept_and_intervals():
    pytest.importorskip("shap")
    x = torch.randn(2, D, generator=torch.Generator().manual_seed(4))
    model = wrap(_mlp(), input_shape=(D,))
    lime = LIME(model, n_samples=200, fill=Constant(0.0)).explain(x)
    np.testing.assert_allclose(lime.to_shap().base_values, lime.extra["intercept"])
    np.testing.assert_array_equal(lime.to_shap().data, x.numpy())  # explained rows
    lime.data = np.zeros((2, 1, 2, 3))  # not one value per feature: left out
    assert lime.to_shap().data is None
    poly = LogitSurrogateSHAP(model, n_samples=40, fill=Constant(0.0)).explain(x)
    sx = poly.to_shap()
    np.testing.assert_array_equal(sx.lower_bounds, poly.lower)
    np.testing.assert_array_equal(sx.upper_bounds, poly.upper)


# ---------------------------------------------------------------------- save / load
def _assert_same(a, b):
    for f in Explanation._ARRAYS:
        va, vb = getattr(a, f), getattr(b, f)
        if va is None:
            assert vb is None
        else:
            assert vb.dtype == np.asarray(va).dtype and vb.shape == np.shape(va)
            np.testing.assert_array_equal(vb, va)
    assert (a.method, a.n_queries, a.feature_names, a.class_names) == (
        b.method, b.n_queries, b.feature_names, b.class_names)


def test_save_load_round_trip_is_exact(tab, dist, tmp_path):
    for exp, name in ((tab, "tab.npz"), (dist, "dist.explanation")):
        path = exp.save(tmp_path / name)
        assert path == tmp_path / name and path.exists()  # no suffix added
        back = Explanation.load(path)
        _assert_same(exp, back)
        assert back.params == exp.params
        assert set(back.extra) == set(exp.extra)
        for k, v in exp.extra.items():
            if isinstance(v, np.ndarray):
                assert back.extra[k].dtype == v.dtype
                np.testing.assert_array_equal(back.extra[k], v)
            else:
                assert back.extra[k] == v
        # the archive loads without pickle
        with np.load(path, allow_pickle=False) as z:
            assert all(z[k].dtype.kind != "O" for k in z.files)
    # a loaded explanation still indexes and converts
    assert Explanation.load(tmp_path / "tab.npz")[1:3].to_pandas().shape == (2, D + 1)


def test_save_converts_numpy_scalars_and_refuses_objects(tmp_path):
    exp = Explanation(values=np.arange(6.0).reshape(2, 3), method="m", target=np.array([0, 1]),
                      params={"alpha": np.float32(0.5), "size": (2, 3), "seed": np.int64(3),
                              "nested": {"w": np.array([1.5, 2.0])}, "name": None},
                      extra={"level": np.array(0.95), "flag": np.bool_(True),
                             "nan": float("nan")})
    back = Explanation.load(exp.save(tmp_path / "e.npz"))
    assert back.params == {"alpha": 0.5, "size": [2, 3], "seed": 3,
                           "nested": {"w": [1.5, 2.0]}, "name": None}
    assert back.extra["level"].shape == () and back.extra["level"] == 0.95
    assert back.extra["flag"] is True and np.isnan(back.extra["nan"])
    assert back.target.dtype == exp.target.dtype and back.n_queries is None
    bad = Explanation(values=np.zeros((1, 2)), method="m", target=np.zeros(1, int),
                      params={"fill": object()})
    with pytest.raises(TypeError, match=r"params\['fill'\]: a object"):
        bad.save(tmp_path / "bad.npz")
    bad = Explanation(values=np.zeros((1, 2)), method="m", target=np.zeros(1, int),
                      extra={"ragged": np.array([[1], [1, 2]], dtype=object)})
    with pytest.raises(TypeError, match=r"extra\['ragged'\].*pickle"):
        bad.save(tmp_path / "bad.npz")
    np.savez(tmp_path / "other.npz", values=np.zeros(3))
    with pytest.raises(ValueError, match="not a saved Explanation"):
        Explanation.load(tmp_path / "other.npz")


def test_repr_never_raises_on_inconsistent_names(tab):
    odd = tab[:2]
    odd.class_names = ["only"]
    odd.target = np.array([0, 2])
    assert "target={0: 1, 2: 1}" in repr(odd)
