"""The explainer contract: one meaning of ``budget`` (model queries per input) for every
registered explainer, and defaults (features, fill) resolved per call, so that explaining does
not change an explainer."""

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from calix.explain import (
    LIME,
    METHODS,
    BayesLIME,
    IntegratedGradients,
    KernelSHAP,
    LimeTabular,
    MeaningfulPerturbation,
    Occlusion,
)
from calix.explain.base import Stochastic
from calix.perturb import Blur, Columns, Constant

D, N_TAB, N_IMG = 6, 3, 2
BUDGET = 40
#: methods whose cost is fixed by the method and lies below the budget (a cap for them):
#: gradients take one query per input, occlusion d + 1; EAGLE stops early once its posterior
#: no longer improves (``patience``), so it may spend less than its budget
AT_MOST = {"saliency", "guided_backprop", "occlusion", "eagle"}
IMAGES_ONLY = {"rise", "meaningful_perturbation"}


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(D, 16), nn.ReLU(), nn.Linear(16, 3)).eval()


def _cnn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                         nn.Flatten(), nn.Linear(16, 3)).eval()


class _TablesAndImages(nn.Module):
    """A classifier of 6-column rows and of 1×8×8 images (one linear map for each)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.table, self.image = nn.Linear(D, 3), nn.Linear(64, 3)

    def forward(self, x):
        flat = x.flatten(1)
        return self.table(flat) if flat.shape[1] == D else self.image(flat)


def _table(n=N_TAB, seed=1):
    return torch.randn(n, D, generator=torch.Generator().manual_seed(seed))


def _images(n=N_IMG, side=8, seed=2):
    return torch.rand(n, 1, side, side, generator=torch.Generator().manual_seed(seed))


def _case(name, **kwargs):
    """(explainer, inputs) for a registered method with ``kwargs``."""
    cls = METHODS[name]
    if name in IMAGES_ONLY:
        return cls(_cnn(), **kwargs), _images()
    if name == "lime_tabular":
        return cls(_mlp(), _table(50, seed=3).numpy(), **kwargs), _table()
    extra = {} if name in ("saliency", "integrated_gradients", "smoothgrad",
                           "guided_backprop") else {"fill": Constant(0.0)}
    return cls(_mlp(), **extra, **kwargs), _table()


# ---------------------------------------------------------------------------- budget
@pytest.mark.parametrize("name", METHODS.names())
def test_budget_bounds_the_model_queries(name):
    budget = 6 if name == "meaningful_perturbation" else BUDGET  # 600 steps by default
    explainer, x = _case(name, budget=budget)
    exp = explainer.explain(x)
    assert exp.params["budget"] == budget == explainer.budget
    assert exp.n_queries <= len(x) * budget
    if name not in AT_MOST:  # sampling methods spend the budget exactly
        assert exp.n_queries == len(x) * budget


@pytest.mark.parametrize("name", [n for n in METHODS.names()
                                  if METHODS[n]._budget_knob is not None])
def test_budget_and_the_methods_own_knob_together_are_refused(name):
    knob = METHODS[name]._budget_knob
    with pytest.raises(ValueError, match=rf"budget=.*{knob}="):
        _case(name, budget=BUDGET, **{knob: 50})


@pytest.mark.parametrize("name", METHODS.names())
def test_budget_and_the_knob_give_the_same_explanation(name):
    """``budget=B`` is the knob that spends B queries: the same numbers."""
    knob = METHODS[name]._budget_knob
    if knob is None:
        return
    budget = 6 if name == "meaningful_perturbation" else BUDGET
    by_budget, x = _case(name, budget=budget)
    by_knob, _ = _case(name, **{knob: getattr(by_budget, knob)})
    a, b = by_budget.explain(x), by_knob.explain(x)
    np.testing.assert_array_equal(a.values, b.values)
    assert a.n_queries == b.n_queries and by_knob.budget == budget


def test_a_budget_that_cannot_be_honoured_is_refused():
    with pytest.raises(ValueError, match=r"Occlusion needs 7 model queries .*budget=5"):
        Occlusion(_mlp(), fill=Constant(0.0), budget=5).explain(_table())
    with pytest.raises(ValueError, match=r"budget=5 is too small .* 2 baseline"):
        IntegratedGradients(_mlp(), baselines=["zero", "black"], budget=5)
    with pytest.raises(ValueError, match=r"budget=1 is too small for Meaningful Perturbation"):
        MeaningfulPerturbation(_cnn(), budget=1)
    with pytest.raises(ValueError, match=r"budget must be"):
        LIME(_mlp(), budget=0)
    with pytest.raises(ValueError, match=r"LIME needs n_samples >= d \+ 1 = 7 .*budget=5"):
        LIME(_mlp(), fill=Constant(0.0), budget=5).explain(_table())
    with pytest.raises(ValueError, match=r"budget=50 leaves fewer queries than n_start=100"):
        BayesLIME(_mlp(), focused=True, budget=50)


def test_integrated_gradients_spends_steps_plus_two_per_baseline():
    ig = IntegratedGradients(_mlp(), baselines=["zero", "black"], budget=41)
    assert ig.n_steps == 18 and ig.budget == 41  # 2 × (18 + 2) = 40 <= 41 queries
    assert ig.explain(_table()).n_queries == N_TAB * 40


@pytest.mark.parametrize("name", METHODS.names())
def test_every_explainer_that_draws_at_random_holds_its_seed_in_one_base(name):
    draws = name not in {"saliency", "integrated_gradients", "guided_backprop", "occlusion",
                         "meaningful_perturbation"}
    assert issubclass(METHODS[name], Stochastic) == draws
    if draws:
        explainer, x = _case(name, seed=np.random.default_rng(5))
        assert np.isfinite(explainer.explain(x).values).all()


# ---------------------------------------------------------------------------- per call
def _snapshot(explainer):
    """The explainer's attributes (by identity) and its features' and fill's state."""
    return dict(vars(explainer)), {k: dict(vars(v)) for k, v in
                                   (("features", explainer._features),
                                    ("fill", explainer._fill)) if v is not None}


#: per-game working state of the Shapley estimators, rewritten at the start of every game
_SCRATCH = {"_ends", "_perms", "_enumerate", "_tree_seed", "_folds_seed", "_fold_of_unit",
            "_trees"}


def _assert_unchanged(explainer, before):
    attrs, parts = before
    now = vars(explainer)
    assert {k for k in now if k not in attrs} <= _SCRATCH
    for key, value in attrs.items():
        if key not in _SCRATCH:
            assert now[key] is value, key
    assert _snapshot(explainer)[1].keys() == parts.keys()
    for key, state in parts.items():
        assert vars(getattr(explainer, f"_{key}")) == state, key


def _same(a, b):
    np.testing.assert_array_equal(a.values, b.values)
    np.testing.assert_array_equal(a.feature_values, b.feature_values)
    assert a.params == b.params and a.n_queries == b.n_queries
    assert a.feature_names == b.feature_names


@pytest.mark.parametrize("make", [
    lambda m: Occlusion(m),
    lambda m: LIME(m, n_samples=100),
    lambda m: KernelSHAP(m, n_samples=100),
    lambda m: BayesLIME(m, n_samples=100),
], ids=["occlusion", "lime", "kernel_shap", "bayes_lime"])
def test_a_table_then_an_image_explain_as_with_fresh_explainers(make):
    x, xi = _table(), _images()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tables explained with the default fill
        used = make(_TablesAndImages())
        before = _snapshot(used)
        tab = used.explain(x)
        # the model learns its input shape on first use; forget it to take images next
        used.model.input_shape = None
        img = used.explain(xi)
        fresh_tab = make(_TablesAndImages()).explain(x)
        fresh_img = make(_TablesAndImages()).explain(xi)
    _same(tab, fresh_tab)
    _same(img, fresh_img)
    assert tab.params["features"] == "Columns" and img.params["features"] == "PatchGrid"
    assert "features" not in used.params()  # the defaults stay unresolved on the explainer
    _assert_unchanged(used, before)


def test_meaningful_perturbation_picks_its_blur_for_each_call():
    """The default blur depends on the image side (11×11 from side 12, else 5×5); without
    penalties the mask deletes what lowers the score, so the fill shows in the result."""
    large, small = _images(side=16), _images(side=8)
    used = MeaningfulPerturbation(_cnn(), steps=10, l1=0.0, tv=0.0)
    before = _snapshot(used)
    a = used.explain(large)
    used.model.input_shape = None  # the pooled network takes any side
    b = used.explain(small)
    fresh = MeaningfulPerturbation(_cnn(), steps=10, l1=0.0, tv=0.0).explain(small)
    np.testing.assert_array_equal(b.values, fresh.values)
    np.testing.assert_array_equal(b.extra["deleted_score"], fresh.extra["deleted_score"])
    big_blur = MeaningfulPerturbation(_cnn(), steps=10, l1=0.0, tv=0.0,
                                      fill=Blur(11, 5.0)).explain(small)
    assert not np.allclose(b.extra["deleted_score"], big_blur.extra["deleted_score"])
    again = MeaningfulPerturbation(_cnn(), steps=10, l1=0.0, tv=0.0).explain(large)
    np.testing.assert_array_equal(a.values, again.values)
    np.testing.assert_array_equal(a.extra["deleted_score"], again.extra["deleted_score"])
    _assert_unchanged(used, before)


@pytest.mark.parametrize("cls", [Occlusion, KernelSHAP, METHODS["shapley"]])
def test_column_names_of_one_call_do_not_reach_the_next(cls):
    """Named groups resolve against each DataFrame's own columns, on the explainer's
    features left as they were."""
    pd = pytest.importorskip("pandas")
    x = _table().numpy()
    first = pd.DataFrame(x, columns=list("abcdef"))
    second = pd.DataFrame(x[:, ::-1].copy(), columns=list("fedcba"))
    kw = {"n_samples": 64} if cls is not Occlusion else {}

    def make():
        model = _mlp()
        return cls(lambda t: model(torch.as_tensor(t, dtype=torch.float32)),
                   features=Columns(groups={"ab": ["a", "b"]}), fill=Constant(0.0), **kw)

    used = make()
    before = _snapshot(used)
    used.explain(first)
    again = used.explain(second)
    _same(again, make().explain(second))
    assert again.feature_names == ["ab", "f", "e", "d", "c"]
    assert used._features.data_names is None and not hasattr(used._features,
                                                             "feature_names_")
    _assert_unchanged(used, before)


def test_lime_tabular_is_unchanged_by_explaining():
    explainer = LimeTabular(_mlp(), _table(50, seed=3).numpy(), n_samples=50)
    attrs = dict(vars(explainer))
    explainer.explain(_table())
    assert dict(vars(explainer)).keys() == attrs.keys()
    assert all(vars(explainer)[k] is v for k, v in attrs.items())
