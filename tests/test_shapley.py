"""Shapley estimators (calix.explain.shapley, polyshap, logit_surrogate) and their coalition
designs (calix.perturb): exact at full budget, designs that draw what they claim, the published
PolySHAP theorem, unchanged explanations where the algorithm did not move, intervals, the
adaptive mode and bad budgets."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from calix.explain import (
    GLIME,
    LIME,
    KernelSHAP,
    LeverageSHAP,
    LogitSurrogateSHAP,
    OddSHAP,
    PolySHAP,
    RegressionAdjustedSHAP,
    Shapley,
    StackedSHAP,
    exact_shapley,
)
from calix.explain.shapley import tree_shapley
from calix.models import wrap
from calix.perturb import (
    Columns,
    Constant,
    KernelSHAPDesign,
    LeverageDesign,
    Perturbation,
    ShapleyKernel,
    all_coalitions,
)
from tests._explain_models import sparse_odd_game

ZERO = {"fill": Constant(0.0)}

ESTIMATORS = {
    "kernel": lambda m, **kw: KernelSHAP(m, **kw),
    "kernel_unpaired": lambda m, **kw: KernelSHAP(m, paired=False, **kw),
    "leverage": lambda m, **kw: LeverageSHAP(m, **kw),
    "poly2": lambda m, **kw: PolySHAP(m, **kw),
    "poly3": lambda m, **kw: PolySHAP(m, order=3, **kw),
    "ra_linear": lambda m, **kw: RegressionAdjustedSHAP(m, proxy="linear", **kw),
    "ra_quadratic": lambda m, **kw: RegressionAdjustedSHAP(m, proxy="quadratic", **kw),
    "ra_cubic": lambda m, **kw: RegressionAdjustedSHAP(m, proxy="cubic", **kw),
    "ra_tree": lambda m, **kw: RegressionAdjustedSHAP(m, proxy="tree", **kw),
    "logit_surrogate": lambda m, **kw: LogitSurrogateSHAP(m, **kw),
    "odd": lambda m, **kw: OddSHAP(m, **kw),
    "odd_residual": lambda m, **kw: OddSHAP(m, proxy_target="residual", **kw),
    "stacked": lambda m, **kw: StackedSHAP(m, **kw),
    "shapley": lambda m, **kw: Shapley(m, **kw),
}


def _mlp(d: int = 12) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(d, 16), nn.Tanh(), nn.Linear(16, 3)).eval()


@pytest.fixture(scope="module")
def game():
    """A tanh MLP on 12 columns, zero fill, three inputs, and the exact Shapley values of the
    probability of class 0 (all 4096 coalitions)."""
    d = 12
    model = wrap(_mlp(d))
    x = torch.randn(3, d, generator=torch.Generator().manual_seed(1))
    coal = all_coalitions(d)
    res = Perturbation(Columns(), Constant(0.0)).query(model, x, coal)
    values = torch.softmax(res.outputs.double(), -1)[..., 0]
    return model, x, exact_shapley(values, coal).numpy()


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_full_budget_gives_the_exact_values(game, name):
    # 2^d queries: every estimator enumerates and returns the exact values (float32 scores)
    model, x, exact = game
    exp = ESTIMATORS[name](model, n_samples=2**12, **ZERO).explain(x, target=0)
    assert exp.extra["exact"] and exp.n_queries == 3 * 2**12
    np.testing.assert_allclose(exp.feature_values, exact, atol=1e-6)
    np.testing.assert_array_equal(exp.std, 0.0)


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_sampled_estimates_are_efficient_and_close(game, name):
    # 1200 queries (100 d) of 4096: efficiency to rounding, and the normalised squared error
    # below 2e-3 (the worst measured, the tree proxy, is 1e-4 at 600 queries)
    model, x, exact = game
    exp = ESTIMATORS[name](model, n_samples=1200, seed=0, **ZERO).explain(x, target=0)
    assert not exp.extra["exact"]
    np.testing.assert_allclose(exp.extra["efficiency_gap"], 0.0, atol=1e-6)
    err = ((exp.feature_values - exact) ** 2).sum(1) / (exact**2).sum(1)
    assert err.max() < 2e-3, err
    assert exp.std.shape == exact.shape and np.all(exp.lower <= exp.upper)


def test_moved_designs_give_the_same_explanations_as_before():
    # tests/data/shapley_designs_reference.npz: the explanations of commit ed67e73, before the
    # designs moved into calix.perturb (KernelSHAP's n_samples then excluded the two ends, so
    # 100 then is 102 now; LogitSurrogateSHAP was named PolySHAP). Same seed, same numbers.
    ref = np.load("tests/data/shapley_designs_reference.npz")
    model, x = wrap(_mlp()), torch.as_tensor(ref["x"])
    cases = {"kernel_shap_100": KernelSHAP(model, n_samples=102, seed=3, **ZERO),
             "kernel_shap_1000": KernelSHAP(model, n_samples=1002, seed=3, **ZERO),
             "kernel_shap_unpaired": KernelSHAP(model, n_samples=302, paired=False, seed=3,
                                                **ZERO),
             "lime": LIME(model, n_samples=200, seed=3, **ZERO),
             "glime": GLIME(model, n_samples=200, seed=3, **ZERO),
             "poly_shap_60": LogitSurrogateSHAP(model, n_samples=60, seed=3, **ZERO),
             "poly_shap_240": LogitSurrogateSHAP(model, n_samples=240, seed=3, **ZERO)}
    for key, explainer in cases.items():
        # the solver moved from LU to Cholesky: agreement to float32 rounding; LogitSurrogateSHAP
        # now takes its surrogate's Shapley values exactly (2^12 <= 16 x 4096 permutations)
        # where it walked 8192 permutations: their quadrature error, measured 6e-6, remains
        tol = 2e-5 if key.startswith("poly_shap") else 1e-6
        np.testing.assert_allclose(explainer.explain(x).feature_values, ref[key], atol=tol,
                                   err_msg=key)


def test_second_order_polyshap_equals_paired_kernelshap(game):
    # Fumagalli, Witter & Musco (2026): with paired sampling KernelSHAP returns exactly the
    # second-order PolySHAP estimate -- on the same coalitions (same design, same seed)
    model, x, _ = game
    for design in ("kernel", "leverage"):
        poly = PolySHAP(model, n_samples=300, design=design, seed=4, **ZERO).explain(x)
        linear = PolySHAP(model, n_samples=300, order=1, design=design, seed=4,
                          **ZERO).explain(x)
        np.testing.assert_allclose(poly.feature_values, linear.feature_values, atol=1e-9)
    kernel = KernelSHAP(model, n_samples=300, seed=4, **ZERO).explain(x)
    poly = PolySHAP(model, n_samples=300, design="kernel", seed=4, **ZERO).explain(x)
    np.testing.assert_allclose(poly.feature_values, kernel.feature_values, atol=1e-9)


def _size_counts(masks: torch.Tensor, d: int) -> np.ndarray:
    return np.bincount(masks.sum(-1).reshape(-1).numpy(), minlength=d + 1)


def test_kernel_design_draws_the_shapley_kernel():
    # d = 16, 20 000 coalitions: the heaviest sizes are enumerated and the sampled rows' sizes
    # follow the kernel (d − 1) / (s (d − s)) on the other sizes; chi-square at the 0.1% level
    from scipy import stats

    d, g = 16, torch.Generator().manual_seed(0)
    design = KernelSHAPDesign(paired=False).draw(1, 20_000, d, g)
    assert design.n_fixed > 0
    counts = _size_counts(design.masks[0, design.n_fixed:], d)
    sizes = design.sizes.numpy()
    assert counts.sum() == counts[sizes].sum()  # nothing drawn from the enumerated sizes
    kernel = ShapleyKernel.size_weights(d).numpy()[sizes - 1]
    expected = kernel / kernel.sum() * counts.sum()
    assert stats.chisquare(counts[sizes], expected).pvalue > 1e-3


def test_kernel_design_enumerates_the_heaviest_sizes():
    d = 10
    design = KernelSHAPDesign().draw(1, 400, d, torch.Generator().manual_seed(0))
    fixed = design.masks[0, :design.n_fixed]
    # sizes 1, 9 (10 each) and 2, 8 (45 each) fit: 110 enumerated rows, all distinct
    assert design.n_fixed == 110
    assert len({tuple(r) for r in fixed.tolist()}) == 110
    np.testing.assert_allclose(float(design.weights.sum()), 1.0, rtol=1e-12)


def test_leverage_design_gives_each_size_an_equal_share():
    # d = 16, 1000 coalitions: sizes 1/15 (32 subsets) are enumerated; every other size gets
    # the same number of rows (±2), the middle size 8 as many as each of the others (so half
    # the pairs of a stratum {s, 16 − s}); each coalition is followed by its complement
    d = 16
    design = LeverageDesign().draw(2, 1000, d, torch.Generator().manual_seed(0))
    assert design.n_fixed == 32 and design.paired
    sampled = design.masks[:, design.n_fixed:]
    counts = _size_counts(sampled[0], d)[2:15]
    assert counts.max() - counts.min() <= 2, counts
    pairs = sampled[:, : 2 * (sampled.shape[1] // 2)].reshape(2, -1, 2, d)
    assert (pairs[:, :, 0] == ~pairs[:, :, 1]).all()
    for i in range(2):  # without replacement: no coalition twice
        rows = [tuple(r) for r in sampled[i].tolist()]
        assert len(set(rows)) == len(rows)
    # weights: each size's kernel mass over its rows; the sum is the kernel's total mass 1
    np.testing.assert_allclose(design.weights.sum(1).numpy(), 1.0, rtol=1e-12)


def test_leverage_design_size_distribution_is_uniform():
    # d = 40 (nothing enumerated at 600 coalitions): every size equally often (±2)
    d = 40
    design = LeverageDesign().draw(1, 600, d, torch.Generator().manual_seed(1))
    assert design.n_fixed == 0
    counts = _size_counts(design.masks[0], d)[1:d]
    assert counts.max() - counts.min() <= 2, counts


def test_leverage_design_is_without_replacement_near_exhaustion():
    # d = 10, 370 coalitions: sizes 1-2 and 8-9 enumerated (110), and the 260 others from
    # sizes 3-7 (C(10, 3) = 120 per size): no coalition drawn twice, per input
    design = LeverageDesign().draw(3, 370, 10, torch.Generator().manual_seed(2))
    for i in range(3):
        rows = [tuple(r) for r in design.masks[i].tolist()]
        assert len(set(rows)) == len(rows)


def test_design_of_one_input_keeps_its_rows_and_weights():
    # Leverage SHAP's weights differ per input (each size's mass over that input's rows of
    # the size); one input's design has its masks, its weights and the shared bookkeeping
    design = LeverageDesign().draw(3, 60, 10, torch.Generator().manual_seed(4))
    assert design.weights.shape == (3, 60) and design.n_fixed == 0  # every row sampled
    for i in range(3):
        one = design.for_input(i)
        assert torch.equal(one.masks, design.masks[i:i + 1])
        torch.testing.assert_close(one.weights, design.weights[i:i + 1], rtol=0, atol=0)
        assert one.n_fixed == design.n_fixed and torch.equal(one.row_ids, design.row_ids)
        assert torch.equal(one.take(torch.arange(10)).masks, design.masks[i:i + 1, :10])


def test_unrank_enumerates_every_subset_once():
    from calix.perturb import _unrank

    subsets = _unrank(torch.arange(math.comb(9, 4)), 9, 4)
    assert (subsets.sum(1) == 4).all()
    assert len({tuple(r) for r in subsets.tolist()}) == math.comb(9, 4)


def test_tree_shapley_is_exact():
    # a gradient-boosted model on binary inputs: the leaf formula against enumeration
    from sklearn.ensemble import GradientBoostingRegressor

    d = 7
    g = np.random.default_rng(0)
    z = g.integers(0, 2, (300, d)).astype(np.float32)
    y = z[:, 0] * z[:, 1] - z[:, 2] + 0.5 * z[:, 3] * (1 - z[:, 4]) + 0.1 * g.normal(size=300)
    gbm = GradientBoostingRegressor(n_estimators=30, max_depth=3, random_state=0).fit(z, y)
    coal = all_coalitions(d)
    values = torch.as_tensor(gbm.predict(coal.numpy().astype(np.float32)))[None]
    exact = exact_shapley(values, coal)[0].numpy()
    phi = tree_shapley(list(gbm.estimators_[:, 0]), gbm.learning_rate, d)
    np.testing.assert_allclose(phi, exact, atol=1e-10)


def test_intervals_cover_and_shrink(game):
    # 5 seeds x 3 inputs x 12 features: jackknife t-intervals of Leverage SHAP at 240
    # queries (20 d) cover the exact values at about the nominal rate (measured 0.94-0.97 on
    # this game); the widths shrink with the budget
    model, x, exact = game
    covered, widths = [], {}
    for budget in (240, 960):
        for seed in range(5):
            e = LeverageSHAP(model, n_samples=budget, seed=seed, **ZERO).explain(x, target=0)
            if budget == 240:
                covered.append((e.lower <= exact) & (exact <= e.upper))
            widths.setdefault(budget, []).append(np.median(e.upper - e.lower))
    assert 0.85 <= np.mean(covered) <= 1.0
    assert np.mean(widths[960]) < 0.7 * np.mean(widths[240])


def test_intervals_are_never_narrower_than_the_outputs_rounding():
    # a float32 linear model: the paired kernel regressions are exact on it, so the jackknife
    # sees only rounding (widths ~7e-9, covering 58-73% of the float64 exact values before
    # the floor); floored at eps32 · max|v(S)| every interval covers, and where the floor
    # binds the standard error is the floor itself
    from calix.explain.shapley import rounding_floor

    d = 12
    torch.manual_seed(0)
    lin = nn.Linear(d, 1).eval()
    model = wrap(lin, task="regression", input_shape=(d,))
    x = 3 * torch.randn(4, d, generator=torch.Generator().manual_seed(3))
    exact = lin.weight.detach().double().numpy()[0] * x.double().numpy()
    for cls in (KernelSHAP, LeverageSHAP, Shapley):
        e = cls(model, n_samples=10 * d, seed=0, fill=Constant(0.0), output="logit"
                ).explain(x)
        assert np.all((e.lower <= exact) & (exact <= e.upper)), cls.__name__
        assert np.abs(e.feature_values - exact).max() < 1e-6
        # the floor binds everywhere: eps32 · max_S |v(S)|, which lies between
        # max(|v(∅)|, |v(full)|) (both queried) and |v(∅)| + Σ|φ_i| (the game is linear)
        eps = torch.finfo(torch.float32).eps
        ends = np.abs(np.stack([e.extra["base_value"], e.extra["full_value"]]))
        assert np.all(e.std >= eps * ends.max(0)[:, None] * (1 - 1e-6))
        top = ends[0] + np.abs(exact).sum(1)
        assert np.all(e.std <= eps * top[:, None] * (1 + 1e-4))
    floor = rounding_floor(torch.tensor([[1.0, -3.0], [0.5, 0.25]], dtype=torch.float64), 1e-7)
    np.testing.assert_allclose(floor.numpy(), [3e-7, 5e-8])


def test_adaptive_mode_stops_where_rounding_is_wider_than_the_target():
    # a float32 model cannot resolve intervals of 1e-9: the adaptive mode says so and stops at
    # its first round (10 d) instead of spending its 4000 queries
    from calix.exceptions import IntervalFloorWarning

    d = 12
    torch.manual_seed(0)
    model = wrap(nn.Linear(d, 1).eval(), task="regression", input_shape=(d,))
    x = torch.randn(2, d, generator=torch.Generator().manual_seed(3))
    with pytest.warns(IntervalFloorWarning, match=r"target_width=1e-09 .* 2 input\(s\)"):
        e = LeverageSHAP(model, n_samples=4000, target_width=1e-9, seed=0, fill=Constant(0.0),
                         output="logit").explain(x)
    assert e.extra["n_used"] == 10 * d and e.n_queries == 2 * 10 * d


class _LinearPlusMLP(nn.Module):
    """f(u) = u · w + mlp(u): outputs as large as the input makes the linear part."""

    def __init__(self, d: int):
        super().__init__()
        torch.manual_seed(0)
        self.w = nn.Parameter(torch.ones(d))
        self.mlp = nn.Sequential(nn.Linear(d, 8), nn.Tanh(), nn.Linear(8, 1))

    def forward(self, u):
        return (u @ self.w)[:, None] + self.mlp(u)


def test_adaptive_mode_warns_once_and_goes_on_for_the_inputs_it_can_narrow():
    # input 0's outputs are ~1e4 (a float32 interval floor of ~2e-3), input 1's ~1: at a
    # target of 1e-3 input 0 is rounding-bound from the start and input 1 is not, so the
    # estimate doubles its budget for input 1 and says once that input 0 cannot get there
    from calix.exceptions import IntervalFloorWarning

    d = 12  # 2^12 > 2000: sampled, not enumerated
    model = wrap(_LinearPlusMLP(d).eval(), task="regression", input_shape=(d,))
    x = torch.stack([torch.full((d,), 1e4 / d), 0.5 * torch.ones(d)])
    with pytest.warns(IntervalFloorWarning, match="for 1 input") as caught:
        e = LeverageSHAP(model, n_samples=2000, target_width=1e-3, seed=0, fill=Constant(0.0),
                         output="logit").explain(x)
    assert sum(w.category is IntervalFloorWarning for w in caught) == 1
    assert e.extra["n_used"] > 10 * d
    width = e.upper - e.lower
    assert width[0].min() > 1e-3  # input 0: at its floor, wider than the target
    if e.extra["n_used"] < 2000:
        assert width[1].max() <= 1e-3


def test_adaptive_mode_stops_at_the_target_width(game):
    model, x, _ = game
    wide = LeverageSHAP(model, n_samples=4000, target_width=10.0, seed=0,
                        **ZERO).explain(x, target=0)
    assert wide.extra["n_used"] == 120  # 10 d: already narrower than 10
    tight = LeverageSHAP(model, n_samples=4000, target_width=0.004, seed=0,
                         **ZERO).explain(x, target=0)
    assert 120 < tight.extra["n_used"] <= 4000
    assert tight.n_queries == 3 * tight.extra["n_used"]
    if tight.extra["n_used"] < 4000:
        assert (tight.upper - tight.lower).max() <= 0.004
    np.testing.assert_allclose(tight.extra["efficiency_gap"], 0.0, atol=1e-6)


def test_default_estimator_says_what_it_chose(game):
    # StackedSHAP from its minimum (d + 12 = 24 queries here); below it LogitSurrogateSHAP for
    # a probability and Leverage SHAP for anything else
    model, x, _ = game
    for budget in (24, 60, 240):
        for output in ("probability", "logit"):
            exp = Shapley(model, n_samples=budget, output=output, **ZERO).explain(x)
            assert exp.extra["estimator"] == "stacked_shap"
    assert Shapley(model, n_samples=23, **ZERO).explain(x).extra["estimator"] == \
        "logit_surrogate_shap"
    few = Shapley(model, n_samples=23, output="logit", **ZERO).explain(x)
    assert few.extra["estimator"] == "leverage_shap"


def test_budgets_below_the_minimum_name_it(game):
    model, x, _ = game
    cases = [(KernelSHAP(model, n_samples=10, **ZERO), "KernelSHAP needs n_samples >= 14"),
             (LeverageSHAP(model, n_samples=10, **ZERO), "Leverage SHAP needs n_samples >= 14"),
             (PolySHAP(model, n_samples=60, **ZERO), "PolySHAP needs n_samples >= 80"),
             (PolySHAP(model, n_samples=200, order=3, **ZERO),
              f"PolySHAP needs n_samples >= {12 + 66 + 220 + 2}"),
             (RegressionAdjustedSHAP(model, n_samples=20, **ZERO),
              "Regression-adjusted Shapley estimation needs n_samples >= 26"),
             (LogitSurrogateSHAP(model, n_samples=12, **ZERO),
              "LogitSurrogateSHAP needs n_samples >= 13")]
    for explainer, message in cases:
        with pytest.raises(ValueError, match=message):
            explainer.explain(x)


def test_bad_arguments():
    model = wrap(_mlp())
    with pytest.raises(ValueError, match="n_samples must be an integer >= 2"):
        KernelSHAP(model, n_samples=1.5)
    with pytest.raises(ValueError, match="proxy must be one of"):
        RegressionAdjustedSHAP(model, proxy="spline")
    with pytest.raises(ValueError, match="tree_params are not"):
        RegressionAdjustedSHAP(model, proxy="tree", tree_params={"depth": 3})
    with pytest.raises(ValueError, match="order must be an integer >= 1"):
        PolySHAP(model, order=0)
    with pytest.raises(TypeError, match="LogitSurrogateSHAP"):
        PolySHAP(model, link="logit")  # the old PolySHAP's arguments: says where it went
    with pytest.raises(ValueError, match="level"):
        LeverageSHAP(model, level=1.0)
    with pytest.raises(ValueError, match="target_width"):
        LeverageSHAP(model, target_width=0.0)
    with pytest.raises(ValueError, match="interaction_factor must be an integer >= 1"):
        OddSHAP(model, interaction_factor=0)
    with pytest.raises(ValueError, match="proxy_target must be"):
        OddSHAP(model, proxy_target="values")
    with pytest.raises(ValueError, match="max_depth'] must be at most 12"):
        OddSHAP(model, tree_params={"max_depth": 20})
    with pytest.raises(ValueError, match="tree_params are not"):
        OddSHAP(model, tree_params={"depth": 3})


def test_a_proxy_that_cannot_be_fitted_says_so(game):
    model, x, _ = game
    odd = OddSHAP(model, n_samples=400, tree_params={"min_samples_leaf": -1}, **ZERO)
    with pytest.raises(ValueError, match="the tree proxy could not be fitted"):
        odd.explain(x)
    bad = RegressionAdjustedSHAP(model, proxy="tree", n_samples=200,
                                 tree_params={"max_depth": -1}, **ZERO)
    with pytest.raises(ValueError, match="the tree proxy could not be fitted"):
        bad.explain(x)


def test_exact_shapley_weights_sum_to_one():
    # the permutation weights of every player's marginal contributions sum to 1: a game
    # v(S) = [i ∈ S] gives φ = e_i
    d = 6
    coal = all_coalitions(d)
    phi = exact_shapley(coal[:, 2].double()[None], coal)
    np.testing.assert_allclose(phi[0].numpy(), np.eye(d)[2], atol=1e-12)
    assert math.isclose(float(phi.sum()), 1.0)


def test_lime_and_glime_designs_draw_what_they_claim():
    # LIME: the unperturbed input first, then the number removed uniform on 1..d−1;
    # GLIME binomial: each feature kept with probability 1 / (1 + exp(−1/σ²)); chi-square
    # and a 5-sigma binomial bound
    from scipy import stats

    from calix.perturb import GlimeDesign, LimeDesign

    d, m, g = 10, 20_001, torch.Generator().manual_seed(0)
    lime = LimeDesign().draw(1, m, d, g)
    assert lime.weights is None and bool(lime.masks[0, 0].all())
    removed = d - lime.masks[0, 1:].sum(-1)
    counts = np.bincount(removed.numpy(), minlength=d)[1:d]
    assert np.bincount(removed.numpy(), minlength=d)[0] == 0
    assert stats.chisquare(counts).pvalue > 1e-3
    keep = 1 / (1 + math.exp(-1 / 0.8**2))
    glime = GlimeDesign("binomial", 0.8).draw(2, 5000, d, g).masks
    sd = math.sqrt(keep * (1 - keep) / glime.numel())
    assert abs(float(glime.float().mean()) - keep) < 5 * sd
    gauss = GlimeDesign("gauss", 0.5).draw(1, 1000, d, g).masks
    assert gauss.is_floating_point() and float(gauss.min()) >= 0 and float(gauss.max()) <= 1


def test_adaptive_mode_reaches_calixs_estimator(game):
    # the default is StackedSHAP: its design (SurrogateDesign from 10 d) extends too, and the
    # stacking weights are chosen again on every round's coalitions
    model, x, _ = game
    exp = Shapley(model, n_samples=4000, target_width=0.001, seed=0, **ZERO).explain(x)
    assert exp.extra["estimator"] == "stacked_shap"
    assert 120 < exp.extra["n_used"] < 4000  # measured 480
    assert (exp.upper - exp.lower).max() <= 0.001


def test_stratified_shapley_is_exact_on_all_coalitions_and_unbiased():
    from calix.explain.shapley import stratified_shapley

    d = 7
    coal = all_coalitions(d)
    g = torch.Generator().manual_seed(0)
    table = torch.randn(2, 2**d, generator=g, dtype=torch.float64)
    exact = exact_shapley(table, coal)
    inner = coal[1:-1][None].expand(2, -1, -1)
    full = stratified_shapley(inner, table[:, 1:-1], table[:, -1], table[:, 0])
    np.testing.assert_allclose(full, exact, atol=1e-12)
    # sampled: 400 leverage designs of 40 coalitions average to the exact values
    est = []
    for seed in range(400):
        design = LeverageDesign().draw(2, 40, d, torch.Generator().manual_seed(seed))
        idx = (design.masks.long() << torch.arange(d)).sum(-1)
        est.append(stratified_shapley(design.masks, table.gather(1, idx), table[:, -1],
                                      table[:, 0]))
    est = torch.stack(est)
    se = est.std(0) / math.sqrt(len(est))
    assert ((est.mean(0) - exact).abs() / se).max() < 4.5


def test_regression_adjustment_uses_its_proxy(game):
    # with a Monte Carlo residual the proxy matters: linear and quadratic proxies differ
    model, x, _ = game
    lin = RegressionAdjustedSHAP(model, proxy="linear", n_samples=300, **ZERO).explain(x)
    quad = RegressionAdjustedSHAP(model, proxy="quadratic", n_samples=300, **ZERO).explain(x)
    assert np.abs(lin.feature_values - quad.feature_values).max() > 1e-6


def test_shapley_passes_estimator_arguments_and_limits_come_before_queries(game):
    model, x, _ = game
    exp = Shapley(model, n_samples=300, candidates=["surrogate", "tree"], **ZERO).explain(x)
    assert exp.extra["estimator"] == "stacked_shap"
    assert exp.extra["candidates"] == ["surrogate", "tree"]
    few = Shapley(model, n_samples=20, n_permutations=64, **ZERO)
    assert few.chosen(12).n_permutations == 64  # below the stack's minimum: LogitSurrogateSHAP
    with pytest.raises(TypeError, match="Shapley chose StackedSHAP for 12 features"):
        Shapley(model, n_samples=300, n_permutations=64, **ZERO).explain(x)
    with pytest.raises(ValueError, match="always pairs"):
        LeverageSHAP(model, paired=False)
    wide = wrap(_mlp(72))
    before = wide.n_queries
    with pytest.raises(ValueError, match="terms"):
        LogitSurrogateSHAP(wide, n_samples=1000, **ZERO).explain(torch.ones(1, 72), target=0)
    assert wide.n_queries - before <= 1  # refused before the 1000 coalitions were queried


def test_default_keeps_dataframe_column_names_for_named_groups():
    # the chosen estimator sees the column names the explained DataFrame brought: groups of
    # columns by name resolve, and the exact path equals KernelSHAP's
    pd = pytest.importorskip("pandas")
    from sklearn.linear_model import LogisticRegression

    g = np.random.default_rng(0)
    X = pd.DataFrame(g.normal(size=(80, 6)), columns=[f"c{i}" for i in range(6)])
    clf = LogisticRegression().fit(X, (X["c0"] + X["c3"] > 0).astype(int))
    groups = {"a": ["c0", "c1"], "b": ["c2", "c3"], "c": ["c4", "c5"]}
    kw = {"background": X.iloc[:20], "features": Columns(groups=groups), "n_samples": 8}
    ref = KernelSHAP(clf, **kw).explain(X.iloc[:3])
    exp = Shapley(clf, **{**kw, "features": Columns(groups=groups)}).explain(X.iloc[:3])
    assert exp.feature_names == ["a", "b", "c"]
    np.testing.assert_allclose(exp.feature_values, ref.feature_values, atol=1e-7)


def test_odd_parities_carry_the_shapley_values():
    # φ_i(χ_T) = 2/|T| for i in an odd T and 0 for an even T, against enumeration
    from calix.explain.oddshap import odd_parity_shapley

    d = 6
    coal = all_coalitions(d)
    chi = (2 * coal.double() - 1)
    for t in [(0,), (1, 4), (0, 2, 5), (1, 2, 3, 4), (0, 1, 2, 3, 5)]:
        exact = exact_shapley(chi[:, list(t)].prod(-1)[None], coal)
        want = odd_parity_shapley(torch.ones(1, 1, dtype=torch.float64), [t], d)
        if len(t) % 2 == 0:
            want = torch.zeros_like(want)
        torch.testing.assert_close(exact, want, atol=1e-12, rtol=0)


def test_tree_fourier_reconstructs_the_trees():
    # every Fourier coefficient of a boosted model (all orders) rebuilds its predictions on
    # all coalitions, to rounding
    from sklearn.ensemble import GradientBoostingRegressor

    from calix.explain.oddshap import tree_fourier

    d = 7
    g = np.random.default_rng(0)
    z = g.integers(0, 2, (300, d)).astype(np.float32)
    y = z[:, 0] * z[:, 1] * z[:, 2] - z[:, 3] + 0.5 * z[:, 4] * (1 - z[:, 5])
    gbm = GradientBoostingRegressor(n_estimators=20, max_depth=4, random_state=0).fit(z, y)
    coef = tree_fourier(list(gbm.estimators_[:, 0]), gbm.learning_rate, min_order=1, odd=False)
    coal = all_coalitions(d).numpy().astype(np.float32)
    chi = 2 * coal.astype(np.float64) - 1
    rebuilt = np.full(len(coal), float(gbm.init_.constant_.ravel()[0]))
    for t, c in coef.items():
        rebuilt += c * chi[:, list(t)].prod(1)
    # the constant of each tree's expansion (T = ∅) is left out: compare centred
    pred = gbm.predict(coal)
    np.testing.assert_allclose(rebuilt - rebuilt.mean(), pred - pred.mean(), atol=1e-9)
    assert all(len(t) % 2 == 1 and len(t) >= 3
               for t in tree_fourier(list(gbm.estimators_[:, 0]), gbm.learning_rate))


def test_oddshap_without_interactions_is_paired_kernelshap(game):
    # below interaction_factor (d + 1) queries the support is the singletons: the odd regression
    # with a free intercept returns paired KernelSHAP's estimate on the same coalitions
    model, x, _ = game
    odd = OddSHAP(model, n_samples=100, seed=3, **ZERO).explain(x, target=0)
    ks = KernelSHAP(model, n_samples=100, seed=3, **ZERO).explain(x, target=0)
    assert (odd.extra["n_interactions"] == 0).all()
    np.testing.assert_allclose(odd.feature_values, ks.feature_values, atol=1e-5)


def test_oddshap_finds_the_odd_interactions():
    # 800 of 4096 coalitions: the tree proxy fitted to the singletons' residual finds the four
    # triples, and the fit is then exact to float32 rounding (normalised squared error < 1e-12,
    # measured 8e-16; Leverage SHAP's on the same budget: 3e-6 and 1e-4)
    model, x, exact = sparse_odd_game()
    kw = {"n_samples": 800, "seed": 0, "fill": Constant(0.0)}
    odd = OddSHAP(model, proxy_target="residual", **kw).explain(x)
    lev = LeverageSHAP(model, **kw).explain(x)

    def err(e):
        return (((e.feature_values - exact) ** 2).sum(1) / (exact**2).sum(1)).max()

    assert err(odd) < 1e-12, err(odd)
    assert err(lev) > 1e-6, err(lev)
