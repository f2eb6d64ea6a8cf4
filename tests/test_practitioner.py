"""A user's own models and data: the wrong numbers calix used to give without a word.

Each test fails on the code before its fix: interventional SHAP pinned to one background row,
a zero fill on raw units, probabilities read as logits, names lost on the way in and out,
perturbed rows built far beyond the model's batch.
"""

import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from calix import wrap
from calix.exceptions import DefaultFillWarning, ProbabilityOutputWarning
from calix.explain import (
    EAGLE,
    LIME,
    RISE,
    IntegratedGradients,
    KernelSHAP,
    LeverageSHAP,
    LogitSurrogateSHAP,
    Occlusion,
    Shapley,
)
from calix.models import Model, TorchModel
from calix.perturb import (
    Columns,
    Constant,
    Marginal,
    MaskBlocks,
    PatchGrid,
    Perturbation,
    Superpixels,
)


@pytest.fixture(scope="module")
def cancer():
    """breast_cancer in raw units (not standardised), a scaled logistic-regression pipeline."""
    d = load_breast_cancer(as_frame=True)
    X = d.data.astype(np.float32)
    y = d.target.map({0: "malignant", 1: "benign"})
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(X, y)
    return X, y, clf


class _Recorder(Model):
    """A linear model that records the largest set of rows it was handed at once (before
    its own batching), i.e. how many perturbed rows existed together."""

    def __init__(self, w: torch.Tensor, **kw):
        super().__init__(**kw)
        self.w, self.largest = w, 0

    def forward(self, x, **kw):
        self.largest = max(self.largest, len(x))
        return super().forward(x, **kw)

    def _forward(self, x):
        z = x.reshape(len(x), -1) @ self.w
        return torch.stack([-z, z], 1)


# ------------------------------------------------------------- interventional SHAP
def test_marginal_kernel_shap_equals_shap_kernel_explainer(cancer):
    """With a 50-row background, calix's interventional KernelSHAP is shap's: both enumerate
    all 2^8 coalitions of 8 features, so they compute the same exact Shapley values of
    v(S) = E_b p(x_S, b_S̄); the tolerance is float32 round-off of probabilities."""
    shap = pytest.importorskip("shap")
    X, _, _ = cancer
    X8 = X.iloc[:, :8].to_numpy()
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(
        X8, load_breast_cancer().target)
    bg, x = X8[:50], X8[100:104]
    exp = KernelSHAP(clf, fill=Marginal(bg), n_samples=300).explain(x, target=1)
    assert exp.extra["exact"]
    p = clf.predict_proba(x)[:, 1]
    e_bg = clf.predict_proba(bg)[:, 1].mean()
    # efficiency against the background average, base value E_b p(b) (not one random row)
    np.testing.assert_allclose(exp.extra["base_value"], e_bg, atol=1e-6)
    np.testing.assert_allclose(exp.feature_values.sum(1), p - e_bg, atol=1e-5)
    ref = shap.KernelExplainer(lambda a: clf.predict_proba(a)[:, 1], bg).shap_values(
        x, nsamples=2**8, l1_reg=False, silent=True)
    np.testing.assert_allclose(exp.feature_values, ref, atol=1e-5)


@pytest.mark.parametrize("cls", [KernelSHAP, LeverageSHAP, LogitSurrogateSHAP, Shapley])
def test_marginal_efficiency_with_sampled_coalitions(cancer, cls):
    """All 30 features (sampled coalitions): Σφ = p(x) − E_b p(b) still holds exactly (both
    estimators impose efficiency), and the base value is the background average."""
    X, _, clf = cancer
    bg, x = X.iloc[:20], X.iloc[200:202]
    exp = cls(clf, fill=Marginal(bg), n_samples=200, seed=1).explain(x, target="malignant")
    k = list(clf.classes_).index("malignant")
    p = clf.predict_proba(x)[:, k]
    e_bg = clf.predict_proba(bg)[:, k].mean()
    np.testing.assert_allclose(exp.extra["base_value"], e_bg, atol=1e-5)
    np.testing.assert_allclose(exp.feature_values.sum(1), p - e_bg, atol=1e-4)


def test_marginal_averages_logits_for_logit_output():
    """output='logit' averages raw outputs over the background: for a linear model the game
    is linear, so φ_j = w_j (x_j − mean_b b_j) exactly."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(5, generator=g)
    model = _Recorder(w, input_shape=(5,), batch_size=64)
    bg, x = torch.randn(7, 5, generator=g), torch.randn(2, 5, generator=g)
    exp = KernelSHAP(model, fill=Marginal(bg), output="logit", n_samples=64).explain(x, target=1)
    np.testing.assert_allclose(exp.feature_values, (w * (x - bg.mean(0))).numpy(), atol=1e-5)
    assert model.largest <= 64  # coalitions × background rows still go one batch at a time


# ------------------------------------------------------------- default fill
def test_tabular_default_fill_warns_and_background_gives_the_mean(cancer):
    X, _, clf = cancer
    x = X.iloc[:2]
    with pytest.warns(DefaultFillWarning, match="background="):
        zero = KernelSHAP(clf, n_samples=128).explain(x)
    # the old silent default: a patient with every feature at 0
    zeros = pd.DataFrame(np.zeros((1, 30)), columns=X.columns)
    assert zero.extra["base_value"][0] == pytest.approx(
        clf.predict_proba(zeros)[0, zero.target[0]], abs=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        exp = KernelSHAP(clf, background=X, n_samples=128).explain(x)
    mean_row = X.mean().to_frame().T
    np.testing.assert_allclose(exp.extra["base_value"],
                               clf.predict_proba(mean_row)[0, exp.target], atol=1e-5)
    with pytest.raises(ValueError, match="either background"):
        LIME(clf, background=X, fill=Constant(0.0))


# ------------------------------------------------------------- probabilities vs logits
def test_predict_proba_callable_is_read_as_probabilities(cancer):
    X, _, _ = cancer
    Xn = X.to_numpy()
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(
        Xn, load_breast_cancer().target)
    with pytest.warns(ProbabilityOutputWarning, match="output='probabilities'"):
        model = wrap(clf.predict_proba)
        got = model.predict_proba(Xn[:5])
    # before: softmax(probabilities), e.g. P = 0.992 became 0.728
    np.testing.assert_allclose(got, clf.predict_proba(Xn[:5]), atol=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # declared: no warning, same numbers
        declared = wrap(clf.predict_proba, output="probabilities").predict_proba(Xn[:5])
    np.testing.assert_allclose(declared, got, atol=1e-6)
    logits = wrap(lambda a: np.stack([a[:, 0], -a[:, 0]], 1))  # genuine logits stay logits
    z = logits.predict_logits(np.ones((3, 2)))
    np.testing.assert_allclose(z, [[1, -1]] * 3)
    with pytest.raises(TypeError, match="output applies"):
        wrap(clf, output="logits")


def test_softmax_module_warns():
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Softmax(-1))
    with pytest.warns(ProbabilityOutputWarning, match="softmax"):
        wrap(net).predict_logits(torch.randn(2, 4))
    model = wrap(net, output="probabilities")
    assert isinstance(model, TorchModel)
    x = torch.randn(3, 4)
    np.testing.assert_allclose(model.predict_proba(x), net(x).detach().numpy(), atol=1e-6)


# ------------------------------------------------------------- names in and out
def test_dataframe_names_class_names_and_named_groups(cancer):
    X, _, _ = cancer
    y = load_breast_cancer().target
    ct = ColumnTransformer([("s", StandardScaler(), ["mean radius", "worst area"])])
    clf = make_pipeline(ct, LogisticRegression()).fit(X, np.where(y == 0, "malignant", "benign"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no torch non-writable or sklearn feature-name warnings
        exp = KernelSHAP(clf, background=X.iloc[:50], n_samples=256).explain(
            X.iloc[:3], target="malignant")
    assert exp.feature_names == list(X.columns)
    assert exp.class_names == ["benign", "malignant"] and list(exp.target) == [1, 1, 1]
    assert exp.data.shape == (3, 30)
    grouped = Occlusion(clf, features=Columns({"size": ["mean radius", "worst area"]}),
                        background=X.iloc[:50]).explain(X.iloc[:2])
    assert grouped.feature_names[0] == "size" and len(grouped.feature_names) == 29
    # the pipeline sees only its two columns: every other feature gets exactly 0
    assert np.all(grouped.feature_values[:, 1:] == 0) and np.all(grouped.feature_values[:, 0])
    with pytest.raises(ValueError, match="unknown class"):
        KernelSHAP(clf, background=X, n_samples=64).explain(X.iloc[:1], target="cat")
    with pytest.raises(ValueError, match="no column named 'radius'"):
        Occlusion(clf, features=Columns({"g": ["radius"]}), background=X).explain(X.iloc[:1])
    dup = pd.DataFrame(X.iloc[:2, :2].to_numpy(), columns=["a", "a"])
    with pytest.raises(ValueError, match="duplicate column names"):
        Occlusion(lambda a: np.c_[a[:, :1], -a[:, :1]], fill=Constant(0.0)).explain(dup)


def test_class_name_target_without_known_classes_is_refused():
    net = torch.nn.Linear(3, 2)
    with pytest.raises(ValueError, match="class names are unknown"):
        Occlusion(net, fill=Constant(0.0)).explain(torch.randn(1, 3), target="cat")


def test_non_numeric_dataframe_names_its_columns():
    df = pd.DataFrame({"a": [1.0, 2.0], "colour": ["red", "blue"]})
    with pytest.raises(TypeError, match=r"non-numeric columns: \['colour'\]"):
        Occlusion(lambda a: np.c_[a[:, :1], -a[:, :1]], fill=Constant(0.0)).explain(df)


# ------------------------------------------------------------- bounded batches
def test_queries_never_exceed_the_model_batch():
    """Perturbed rows are built one model batch at a time, however many masks and inputs."""
    g = torch.Generator().manual_seed(0)
    model = _Recorder(torch.randn(3 * 16 * 16, generator=g), input_shape=(3, 16, 16),
                      batch_size=32)
    x = torch.rand(3, 3, 16, 16, generator=g)
    engine = Perturbation(Superpixels(6, compactness=10.0), Constant(0.0))
    masks = torch.rand(3, 100, engine.n_features(x), generator=g) < 0.5
    res = engine.query(model, x, masks)
    assert res.outputs.shape == (3, 100, 2) and model.largest == 32
    # the same numbers as building everything at once
    full = engine.apply(x, masks).inputs.reshape(300, -1) @ model.w
    np.testing.assert_allclose(res.outputs[..., 1].reshape(-1), full, rtol=1e-5, atol=1e-5)


def test_rise_masks_are_built_block_by_block():
    g = torch.Generator().manual_seed(0)
    model = _Recorder(torch.randn(1 * 12 * 12, generator=g), input_shape=(1, 12, 12),
                      batch_size=50)
    rise = RISE(model, n_masks=300, grid=3, block_size=64, seed=0)
    built = []
    orig = MaskBlocks.block

    def spy(self, b):
        blk = orig(self, b)
        built.append(len(blk))
        return blk

    MaskBlocks.block = spy
    try:
        rise.explain(torch.rand(2, 1, 12, 12, generator=g), target=1)
    finally:
        MaskBlocks.block = orig
    assert max(built) <= 64 and model.largest <= 50
    # the blockwise Σ_i s(x ⊙ M_i) M_i / (N p) equals the definition on all masks at once
    x = torch.rand(2, 1, 12, 12, generator=torch.Generator().manual_seed(5))
    exp = RISE(model, n_masks=300, grid=3, block_size=64, seed=0).explain(x, target=1)
    blocks = RISE(model, n_masks=300, grid=3, block_size=64, seed=0).mask_blocks(
        12, 12, torch.Generator().manual_seed(0))
    masks = torch.cat([m for _, m in blocks.blocks()])  # (300, 144)
    s = torch.sigmoid(2 * ((x.reshape(2, 1, -1) * masks) @ model.w))  # P(class 1)
    expect = (s @ masks / (300 * 0.6)).reshape(2, 1, 12, 12)
    np.testing.assert_allclose(exp.values, expect.numpy(), rtol=1e-4, atol=1e-6)


def test_a_batch_that_does_not_fit_names_batch_size():
    class Hungry(torch.nn.Module):
        def forward(self, x):
            if len(x) > 8:  # what an allocator says when a batch does not fit
                raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")
            return torch.stack([x.sum(1), -x.sum(1)], 1)

    model = wrap(Hungry(), batch_size=16, input_shape=(3,))
    with pytest.raises(MemoryError, match=r"smaller batch_size .*now 16"):
        model.predict_logits(torch.ones(20, 3))
    assert wrap(Hungry(), batch_size=8).predict_logits(torch.ones(20, 3)).shape == (20, 2)


def test_explain_classes_gives_one_explanation_per_class(cancer):
    X, _, clf = cancer
    ks = KernelSHAP(clf, fill=Marginal(X.iloc[:20]), n_samples=200, seed=0)
    out = ks.explain_classes(X.iloc[:3])
    assert list(out) == ["benign", "malignant"]
    phi = np.stack([e.feature_values for e in out.values()], -1)  # shap's (n, d, k)
    assert phi.shape == (3, 30, 2)
    # the classes' probabilities sum to 1, so their attributions cancel
    np.testing.assert_allclose(phi.sum(-1), 0.0, atol=1e-4)
    np.testing.assert_allclose(out["malignant"].feature_values,
                               ks.explain(X.iloc[:3], target="malignant").feature_values)
    with pytest.raises(ValueError, match="classes is empty"):
        ks.explain_classes(X.iloc[:3], classes=[])


def test_outputs_that_view_their_inputs_survive_the_reused_batch_buffer():
    """A model returning a view of its input (here: two pixels as scores) must not see its
    earlier outputs overwritten by the next perturbed batch (images large enough for the
    engine's reused batch buffer; Model.forward hands back a new tensor)."""
    side = 1500
    model = wrap(lambda x: x.reshape(len(x), -1)[:, :2], backend="torch",
                 input_shape=(1, side, side), batch_size=3)
    x = torch.arange(float(side * side)).reshape(1, 1, side, side)
    engine = Perturbation(PatchGrid(side // 2), Constant(-1.0))
    masks = torch.tensor([[1, 0, 0, 0], [0, 1, 1, 1], [1, 1, 0, 0], [0, 0, 1, 1],
                          [1, 0, 1, 0]], dtype=torch.bool)
    res = engine.query(model, x, masks)
    want = [[0.0, 1.0], [-1, -1], [0, 1], [-1, -1], [0, 1]]
    np.testing.assert_array_equal(res.outputs[0], want)


@pytest.mark.parametrize("make", [
    lambda m: KernelSHAP(m, fill=Constant(0.0), n_samples=64),
    lambda m: IntegratedGradients(m, n_steps=8),
    lambda m: EAGLE(m, fill=Constant(0.0), n_samples=40, batch=10),
], ids=["kernel_shap", "integrated_gradients", "eagle"])
def test_progress_counts_every_model_row_and_restores_the_hook(make):
    net = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    model = wrap(net, input_shape=(5,), batch_size=16)
    seen = []
    model.on_rows = seen.append  # an outer hook (e.g. a caller's own display) keeps working
    exp = make(model).explain(torch.randn(3, 5), progress=True)
    assert model.on_rows == seen.append
    assert sum(seen) == model.n_queries and exp.n_queries <= model.n_queries


def test_explain_classes_keys_integer_labels_that_are_not_indices():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(90, 3))
    y = np.where(X[:, 0] + X[:, 1] > 0, 2, 1)
    y[:30] = 5  # classes_ = [1, 2, 5]
    clf = LogisticRegression().fit(X, y)
    out = Occlusion(clf, fill=Constant(0.0)).explain_classes(X[:3])
    assert list(out) == [1, 2, 5]
    assert [list(e.target) for e in out.values()] == [[0] * 3, [1] * 3, [2] * 3]


def test_engine_paths_agree_and_survive_huge_values():
    """Small rows (one gather for the whole chunk) and image blocks (a lerp into a buffer)
    give the same bits; values whose difference overflows float32 stay exact."""
    import calix.perturb.engine as pt

    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 1, 6, 6, generator=g)
    masks = torch.rand(2, 9, 9, generator=g)  # float masks: blends
    engine = Perturbation(PatchGrid(2), Constant(-0.5), chunk_size=4)
    small = engine.apply(x, masks).inputs
    old = pt._VECTORISED_ELEMENTS
    pt._VECTORISED_ELEMENTS = 0
    try:
        block = engine.apply(x, masks).inputs
        huge = torch.tensor([[3e38, 1.0]])
        out = Perturbation(Columns(), Constant(-3e38)).apply(
            huge, torch.tensor([[False, True]])).inputs
    finally:
        pt._VECTORISED_ELEMENTS = old
    assert torch.equal(small, block)
    assert torch.equal(out, torch.tensor([[[-3e38, 1.0]]]))


def test_auto_output_misread_on_a_first_batch_says_so():
    fn = lambda a: np.c_[a[:, :1], 1 - a[:, :1]]  # noqa: E731 - probabilities only for a in [0, 1]
    model = wrap(fn)
    with pytest.warns(ProbabilityOutputWarning):
        model.predict_logits(np.array([[0.6, 0.0]]))
    with pytest.raises(ValueError, match="output='logits'"):
        model.predict_logits(np.array([[3.0, 0.0]]))
