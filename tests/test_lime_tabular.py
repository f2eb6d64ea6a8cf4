"""LimeTabular: lime's tabular semantics, checked against the lime package and against a
slow reference (scikit-learn's Ridge on the same samples)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from calix.explain.base import Explanation
from calix.explain.lime_tabular import LimeTabular
from calix.models import wrap
from calix.perturb import make_generator

lime_tabular = pytest.importorskip("lime.lime_tabular")


# ---------------------------------------------------------------- fixtures
def _raw_logistic(x: np.ndarray, y: np.ndarray):
    """A LogisticRegression on raw units (fitted on standardised data, scaling folded in)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    sc = StandardScaler().fit(x)
    lr = LogisticRegression(max_iter=5000, C=0.1).fit(sc.transform(x), y)
    lr.coef_ = lr.coef_ / sc.scale_
    lr.intercept_ = lr.intercept_ - lr.coef_ @ sc.mean_
    return lr


@pytest.fixture(scope="module")
def cancer():
    from sklearn.datasets import load_breast_cancer

    x, y = load_breast_cancer(return_X_y=True)
    return x, _raw_logistic(x, y)


@pytest.fixture(scope="module")
def wine():
    from sklearn.datasets import load_wine

    x, y = load_wine(return_X_y=True)
    return x, _raw_logistic(x, y)


def _mixed_data(n: int = 600, seed: int = 0):
    """Three continuous columns in different units and two categorical code columns."""
    rng = np.random.default_rng(seed)
    cont = rng.normal(size=(n, 3)) * [1.0, 5.0, 10.0] + [0.0, 50.0, -3.0]
    c0 = rng.choice(3, size=n, p=[0.5, 0.3, 0.2])
    c1 = rng.choice(5, size=n)
    return np.column_stack([cont, c0, c1]).astype(np.float64)


def _mixed_proba(x: np.ndarray) -> np.ndarray:
    logit = (0.8 * x[:, 0] - 0.1 * (x[:, 1] - 50) + 1.5 * (x[:, 3] == 1)
             - 1.0 * (x[:, 3] == 2) + 0.7 * (x[:, 4] == 3))
    p = 1 / (1 + np.exp(-logit))
    return np.column_stack([1 - p, p])


def _lime_values(train, predict, rows, targets, n_samples, seed, **kw) -> np.ndarray:
    """lime's attributions (as_map, all d features, no feature selection), shape (n, d)."""
    d = train.shape[1]
    ex = lime_tabular.LimeTabularExplainer(train, random_state=seed, feature_selection="none",
                                           **kw)
    out = np.zeros((len(rows), d))
    for i, (row, t) in enumerate(zip(rows, targets, strict=True)):
        e = ex.explain_instance(row, predict, labels=(int(t),), num_features=d,
                                num_samples=n_samples)
        label = 1 if kw.get("mode") == "regression" else int(t)  # lime's regression label
        for j, v in e.as_map()[label]:
            out[i, j] = v
    return out


def _disagreement(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: Pearson r of a and b, and max |a − b| relative to max |b|."""
    r = np.array([stats.pearsonr(u, v)[0] for u, v in zip(a, b, strict=True)])
    rel = np.abs(a - b).max(1) / np.abs(b).max(1)
    return r, rel


def _check_like_lime(ours, lime1, lime2, min_r, max_rel):
    """calix vs lime within the stated tolerances, and about as close as lime to itself."""
    r_ll, rel_ll = _disagreement(lime2, lime1)
    r_cl, rel_cl = _disagreement(ours, lime1)
    assert (r_ll >= min_r).all(), f"lime vs lime below the tolerance itself: {r_ll}"
    assert (r_cl >= min_r).all(), f"Pearson r calix vs lime {r_cl} (lime vs lime {r_ll})"
    assert (rel_cl <= max_rel).all(), f"max rel. diff calix vs lime {rel_cl} (lime: {rel_ll})"
    assert rel_cl.mean() <= 2 * rel_ll.mean(), (rel_cl, rel_ll)


# ---------------------------------------------------------------- against lime
def test_matches_lime_quartile_breast_cancer(cancer):
    """Discretized (quartile) sampling on breast_cancer in raw units, 10 000 samples each.

    Tolerance from lime's disagreement with itself (seed 1 vs seed 2, same settings),
    measured on 20 rows: Pearson r >= 0.957 (mean 0.986), max |Δ| / max |φ| <= 0.374 (mean
    0.138); calix vs lime on the same rows: r >= 0.958 (mean 0.985), max |Δ| / max |φ|
    <= 0.366 (mean 0.143). On the four rows below over six more seed pairs: lime vs lime
    r >= 0.978, max |Δ| / max |φ| <= 0.244; calix vs lime r >= 0.978, <= 0.223. Asserted per
    row: r >= 0.93 and max |Δ| <= 0.45 max |φ|; and calix's mean relative difference at most
    twice lime's with itself.
    """
    x, clf = cancer
    rows = x[[0, 150, 300, 450]]
    t = clf.predict_proba(rows).argmax(1)
    l1 = _lime_values(x, clf.predict_proba, rows, t, 10_000, seed=1)
    l2 = _lime_values(x, clf.predict_proba, rows, t, 10_000, seed=2)
    exp = LimeTabular(clf, x, n_samples=10_000, seed=1).explain(rows, target=t)
    _check_like_lime(exp.feature_values, l1, l2, min_r=0.93, max_rel=0.45)


def test_matches_lime_on_a_non_predicted_class_of_wine(wine):
    """Three classes; the class after the predicted one is explained (lime's ``labels``).

    lime vs lime on 20 rows at 10 000 samples: r >= 0.973, max |Δ| / max |φ| <= 0.218;
    calix vs lime: r >= 0.986, <= 0.211 (six more seed pairs on these rows: lime r >= 0.981,
    <= 0.222; calix r >= 0.990, <= 0.136). Asserted: r >= 0.93, max |Δ| <= 0.35 max |φ|.
    """
    x, clf = wine
    rows = x[[5, 70, 140]]
    t = (clf.predict_proba(rows).argmax(1) + 1) % 3
    l1 = _lime_values(x, clf.predict_proba, rows, t, 10_000, seed=1)
    l2 = _lime_values(x, clf.predict_proba, rows, t, 10_000, seed=2)
    exp = LimeTabular(clf, x, n_samples=10_000, seed=1).explain(rows, target=t)
    assert (exp.target == t).all()
    _check_like_lime(exp.feature_values, l1, l2, min_r=0.93, max_rel=0.35)


@pytest.mark.parametrize("around", [False, True])
def test_matches_lime_gaussian_sampling(cancer, around):
    """``discretize_continuous=False``: Gaussian samples around the training mean (or the
    input). lime vs lime on 20 rows at 5 000 samples: r >= 0.998 / max |Δ| / max |φ| <= 0.093
    around the mean, r >= 0.962 / <= 0.35 around the input; calix vs lime: r >= 0.998 /
    <= 0.075 and r >= 0.924 / <= 0.575 (six more seed pairs on these rows, around the input:
    lime r >= 0.951 / <= 0.484, calix r >= 0.963 / <= 0.526). Asserted: r >= 0.99 / <= 0.15
    (mean), r >= 0.9 / <= 0.6 (input)."""
    x, clf = cancer
    rows = x[[10, 200, 400]]
    t = clf.predict_proba(rows).argmax(1)
    kw = dict(discretize_continuous=False, sample_around_instance=around)
    l1 = _lime_values(x, clf.predict_proba, rows, t, 5000, seed=1, **kw)
    l2 = _lime_values(x, clf.predict_proba, rows, t, 5000, seed=2, **kw)
    exp = LimeTabular(clf, x, n_samples=5000, seed=1, **kw).explain(rows, target=t)
    min_r, max_rel = (0.9, 0.6) if around else (0.99, 0.15)
    _check_like_lime(exp.feature_values, l1, l2, min_r=min_r, max_rel=max_rel)


@pytest.mark.parametrize("discretize", [True, False])
def test_matches_lime_with_categorical_features(discretize):
    """Two categorical code columns sampled from training frequencies, three continuous ones;
    a numpy callable model, 10 000 samples. Over seven seed pairs on these rows, lime vs lime:
    r >= 0.982, max |Δ| / max |φ| <= 0.238; calix vs lime: r >= 0.989, <= 0.265. Asserted per
    row: r >= 0.95 and max |Δ| <= 0.35 max |φ|."""
    x = _mixed_data()
    rows = x[[0, 1, 2]]
    t = np.ones(3, dtype=int)
    kw = dict(categorical_features=[3, 4], discretize_continuous=discretize)
    l1 = _lime_values(x, _mixed_proba, rows, t, 10_000, seed=1, **kw)
    l2 = _lime_values(x, _mixed_proba, rows, t, 10_000, seed=2, **kw)
    model = wrap(_mixed_proba, output="probabilities")
    exp = LimeTabular(model, x, n_samples=10_000, seed=1, **kw).explain(rows, target=t)
    _check_like_lime(exp.feature_values, l1, l2, min_r=0.95, max_rel=0.35)


def test_matches_lime_for_a_regressor():
    """A random-forest regressor on diabetes (lime's ``mode="regression"`` explains the
    prediction); its two-valued ``sex`` column makes a one-value bin. 10 000 samples, over
    three seed pairs on these rows: lime vs lime r >= 0.994, max |Δ| / max |φ| <= 0.069;
    calix vs lime r >= 0.994, <= 0.085. Asserted per row: r >= 0.97, <= 0.2."""
    from sklearn.datasets import load_diabetes
    from sklearn.ensemble import RandomForestRegressor

    x, y = load_diabetes(return_X_y=True)
    reg = RandomForestRegressor(30, max_depth=5, random_state=0).fit(x, y)
    rows = x[[0, 100, 200]]
    t = np.zeros(3, dtype=int)
    lime1 = _lime_values(x, reg.predict, rows, t, 10_000, seed=1, mode="regression")
    lime2 = _lime_values(x, reg.predict, rows, t, 10_000, seed=2, mode="regression")
    exp = LimeTabular(reg, x, n_samples=10_000, seed=1).explain(rows)
    _check_like_lime(exp.feature_values, lime1, lime2, min_r=0.97, max_rel=0.2)


def test_decile_bins_are_lime_s(cancer):
    """Bin edges, means and standard deviations as lime's DecileDiscretizer computes them."""
    from lime.discretize import DecileDiscretizer

    x, clf = cancer
    d = x.shape[1]
    ours = LimeTabular(clf, x, discretizer="decile", n_samples=50)
    theirs = DecileDiscretizer(x, [], [str(j) for j in range(d)])
    mean, std = (ours._bin_table[:, i].reshape(d, -1).numpy() for i in (0, 1))
    for j in range(d):
        k = len(ours.bin_edges_[j]) + 1
        np.testing.assert_allclose(ours.bin_edges_[j], theirs.mins[j][1:], rtol=1e-12)
        np.testing.assert_allclose(mean[j, :k], theirs.means[j], rtol=1e-12)
        np.testing.assert_allclose(std[j, :k], theirs.stds[j], rtol=1e-9)


# ---------------------------------------------------------------- against a reference
def test_surrogate_is_sklearn_ridge_on_the_same_samples(cancer):
    """The attributions, intercept, score and local prediction are those of scikit-learn's
    Ridge(alpha=1) fitted with the kernel weights on the explainer's own samples (lime's
    surrogate); the weights are sqrt(exp(−D²/w²)) of euclidean distances, w = 0.75 sqrt(d)."""
    from sklearn.linear_model import Ridge
    from sklearn.metrics import pairwise_distances

    x, clf = cancer
    rows = x[[3, 33]]
    e = LimeTabular(clf, x, n_samples=800, seed=7)
    exp = e.explain(rows, target=[0, 1])
    inverse, z = e.sample(torch.as_tensor(rows, dtype=torch.float32).double(),
                          make_generator(7))
    inv, z = inverse.float().double().numpy(), z.numpy()
    w_ours = e.kernel(torch.as_tensor(z)).numpy()
    width = 0.75 * np.sqrt(x.shape[1])
    for i, t in enumerate([0, 1]):
        dist = pairwise_distances(z[i], z[i][:1]).ravel()
        w = np.sqrt(np.exp(-(dist**2) / width**2))
        np.testing.assert_allclose(w_ours[i], w, rtol=1e-12)
        y = clf.predict_proba(inv[i])[:, t]
        ridge = Ridge(alpha=1.0).fit(z[i], y, sample_weight=w)
        np.testing.assert_allclose(exp.feature_values[i], ridge.coef_, atol=2e-5)
        np.testing.assert_allclose(exp.extra["intercept"][i], ridge.intercept_, atol=2e-5)
        np.testing.assert_allclose(exp.extra["score"][i], ridge.score(z[i], y, sample_weight=w),
                                   atol=1e-4)
        np.testing.assert_allclose(exp.extra["local_pred"][i], ridge.predict(z[i][:1])[0],
                                   atol=2e-5)
        np.testing.assert_allclose(exp.extra["prediction"][i],
                                   clf.predict_proba(rows[i : i + 1])[0, t], atol=1e-6)
    np.testing.assert_array_equal(exp.values, exp.feature_values)


def test_samples_follow_lime_s_discretized_neighbourhood(cancer):
    """First sample is the input; every other value lies in its drawn bin (the indicator says
    whether that is the input's bin); bins are drawn with the training frequencies; values
    within a bin follow the truncated normal of the bin's mean and std."""
    x, clf = cancer
    e = LimeTabular(clf, x, n_samples=20_000, seed=0)
    row = torch.as_tensor(x[:1], dtype=torch.float32).double()
    inverse, z = e.sample(row, make_generator(0))
    np.testing.assert_array_equal(inverse[0, 0].numpy(), row[0].numpy())
    assert (z[0, 0] == 1).all()
    for j in (0, 7, 21):
        edges = e.bin_edges_[j]
        vals = inverse[0, 1:, j].numpy()
        bins = np.searchsorted(edges, vals, side="left")
        own = np.searchsorted(edges, row[0, j].item(), side="left")
        np.testing.assert_array_equal(z[0, 1:, j].numpy() == 1, bins == own)
        train_bins = np.searchsorted(edges, x[:, j], side="left")
        expected = np.bincount(train_bins, minlength=len(edges) + 1) / len(x)
        got = np.bincount(bins, minlength=len(edges) + 1) / len(vals)
        se = np.sqrt(expected * (1 - expected) / len(vals))
        assert (np.abs(got - expected) <= 5 * se + 1e-12).all(), (j, got, expected)
        k = 1  # a middle bin: truncated normal between two edges
        col = x[train_bins == k, j]
        mu, sd = col.mean(), col.std() + 1e-11
        lo, hi = edges[k - 1], edges[k]
        ref = stats.truncnorm((lo - mu) / sd, (hi - mu) / sd, loc=mu, scale=sd)
        drawn = vals[bins == k]
        assert abs(drawn.mean() - ref.mean()) <= 5 * ref.std() / np.sqrt(len(drawn))
        assert stats.kstest(drawn, ref.cdf).pvalue > 1e-4


def test_gaussian_samples_are_scaled_by_training_std(cancer):
    x, clf = cancer
    e = LimeTabular(clf, x, n_samples=20_000, seed=0, discretize_continuous=False)
    row = torch.as_tensor(x[:1], dtype=torch.float32).double()
    inverse, z = e.sample(row, make_generator(0))
    v = inverse[0, 1:].numpy()
    err = np.abs(v.mean(0) - x.mean(0)) / (x.std(0) / np.sqrt(len(v)))
    assert err.max() < 5, err
    np.testing.assert_allclose(v.std(0), x.std(0), rtol=0.03)
    np.testing.assert_allclose(z[0].numpy(), (inverse[0].numpy() - x.mean(0)) / x.std(0),
                               rtol=1e-9, atol=1e-9)


def test_one_value_bins_give_the_value():
    """A first quartile equal to the minimum makes a bin holding one value: samples in it
    take that value (lime returns a z-score there)."""
    rng = np.random.default_rng(0)
    x = np.column_stack([np.where(rng.random(400) < 0.4, 5.0, 5 + rng.random(400)),
                         rng.normal(size=400)])
    model = wrap(lambda a: np.tile([0.3, 0.7], (len(a), 1)), output="probabilities")
    e = LimeTabular(model, x, n_samples=2000, seed=0)
    assert e.bin_edges_[0][0] == 5.0
    inverse, _ = e.sample(torch.tensor([[5.5, 0.0]], dtype=torch.float64), make_generator(1))
    first = inverse[0, 1:, 0].numpy()
    first = first[first <= 5.0]
    assert len(first) > 500 and (first == 5.0).all()


# ---------------------------------------------------------------- seeds, batching, names
def test_seeds(cancer):
    x, clf = cancer
    rows = x[:3]

    def run(seed):
        return LimeTabular(clf, x, n_samples=600, seed=seed).explain(rows).feature_values

    np.testing.assert_array_equal(run(3), run(3))
    assert not np.allclose(run(3), run(4))
    np.testing.assert_array_equal(run(np.random.default_rng(5)), run(np.random.default_rng(5)))
    np.testing.assert_array_equal(run(torch.Generator().manual_seed(5)),
                                  run(torch.Generator().manual_seed(5)))
    gen = np.random.default_rng(5)
    e = LimeTabular(clf, x, n_samples=600, seed=gen)
    assert not np.allclose(e.explain(rows).feature_values, e.explain(rows).feature_values)


def test_one_batched_forward_with_at_most_batch_size_rows():
    x = _mixed_data(200)
    sizes = []

    def proba(a):
        sizes.append(len(a))
        return _mixed_proba(a)

    model = wrap(proba, output="probabilities", batch_size=128)
    e = LimeTabular(model, x, n_samples=300, categorical_features=[3, 4], seed=0)
    calls = []
    forward = model.forward
    model.forward = lambda *a, **k: calls.append(len(a[0])) or forward(*a, **k)
    exp = e.explain(x[:5], target=1)
    # every input's samples in one call (besides one row that resolves the class count)
    assert calls[-1] == 5 * 300 and sum(calls[:-1]) <= 1
    assert max(sizes) <= 128 and sum(sizes) == sum(calls)
    assert exp.n_queries == 5 * 300  # the explanation counts its samples
    assert exp.values.shape == exp.feature_values.shape == (5, 5)


def test_names_from_dataframe_and_defaults(cancer):
    pd = pytest.importorskip("pandas")
    x, clf = cancer
    cols = [f"f{j}" for j in range(x.shape[1])]
    frame = pd.DataFrame(x, columns=cols)
    e = LimeTabular(clf, frame, n_samples=200)
    exp = e.explain(x[:2])
    assert exp.feature_names == cols
    assert list(exp.to_pandas().columns[:-1]) == cols
    assert exp.params["discretizer"] == "quartile" and exp.method == "lime_tabular"
    assert LimeTabular(clf, x, n_samples=200).explain(x[:1]).feature_names[:2] == ["x0", "x1"]
    with pytest.raises(ValueError, match="differ from training_data.s"):
        e.explain(frame.iloc[:2, ::-1])
    e2 = LimeTabular(wrap(_mixed_proba, output="probabilities"),
                     pd.DataFrame(_mixed_data(100), columns=list("abcde")),
                     categorical_features=["d", "e"], n_samples=100)
    assert e2.categorical_features_ == (3, 4)


def test_explanation_round_trips(tmp_path, cancer):
    x, clf = cancer
    exp = LimeTabular(clf, x, n_samples=200).explain(x[:2])
    back = Explanation.load(exp.save(tmp_path / "e.npz"))
    np.testing.assert_array_equal(back.feature_values, exp.feature_values)
    np.testing.assert_array_equal(back.extra["score"], exp.extra["score"])


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize("training, match", [
    (np.zeros(5), "shape \\(n_train, n_features\\)"),
    (np.zeros((0, 3)), "at least one row"),
    (np.array([[1.0, np.nan], [2.0, 3.0]]), "NaN or infinite value\\(s\\), the first at row 0, "
                                            "column 1"),
    (np.array([["a", "b"]]), "must be numeric"),
])
def test_bad_training_data(training, match):
    with pytest.raises((ValueError, TypeError), match=match):
        LimeTabular(_mixed_proba, training)


@pytest.mark.parametrize("kw, match", [
    ({"n_samples": 1}, "n_samples must be an integer >= 2"),
    ({"discretizer": "entropy"}, "discretizer must be one of"),
    ({"categorical_features": [7]}, "column indices in \\[0, 5\\)"),
    ({"categorical_features": ["z"]}, "not a column name"),
    ({"categorical_features": [1, 1]}, "twice"),
    ({"kernel_width": 0.0}, "kernel_width must be"),
    ({"alpha": -1.0}, "alpha must be"),
    ({"feature_names": ["a"]}, "1 names for the 5 columns"),
])
def test_bad_parameters(kw, match):
    with pytest.raises(ValueError, match=match):
        LimeTabular(wrap(_mixed_proba, output="probabilities"), _mixed_data(50), **kw)


def test_instance_width_mismatch():
    e = LimeTabular(wrap(_mixed_proba, output="probabilities"), _mixed_data(50), n_samples=20)
    with pytest.raises(ValueError, match="x must have shape \\(n, 5\\) like training_data"):
        e.explain(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="x has no inputs"):
        e.explain(np.zeros((0, 5)))
    assert e.explain(_mixed_data(3)[0], target=1).feature_values.shape == (1, 5)  # one row
    wide = wrap(lambda a: _mixed_proba(a[:, :5]), output="probabilities", input_shape=(6,))
    with pytest.raises(ValueError, match="inputs of shape \\(6,\\), but training_data has 5"):
        LimeTabular(wide, _mixed_data(50), n_samples=20)


def test_keeps_tensors_on_the_model_device():
    """On the emulated CUDA device of ``test_device`` (every torch call checked for device
    mixing), a torch model gives the CPU result."""
    import copy

    from torch import nn

    from tests.test_device import FakeCuda, tag_module

    x = _mixed_data(200)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        module = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3)).eval()

    def run(m, rows):
        return LimeTabular(wrap(m, input_shape=(5,)), x, categorical_features=[3], n_samples=300,
                           seed=0).explain(rows)

    ref = run(copy.deepcopy(module), torch.as_tensor(x[:3], dtype=torch.float32))
    with FakeCuda() as mode:
        out = run(tag_module(module), torch.as_tensor(x[:3], dtype=torch.float32).to("cuda"))
    assert mode.on_device > 0
    np.testing.assert_allclose(out.feature_values, ref.feature_values, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(out.target, ref.target)
