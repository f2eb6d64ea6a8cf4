"""StackedSHAP (calix.explain.stacked): the simplex-constrained stacking solve, a one-candidate
stack equal to the estimator it wraps, the weights it reports, the sparse odd game it must
recover, and bad arguments and budgets."""

import numpy as np
import pytest
import torch
from torch import nn

from calix.explain import LogitSurrogateSHAP, Shapley, StackedSHAP, exact_shapley
from calix.explain.stacked import simplex_least_absolute, simplex_least_squares
from calix.models import wrap
from calix.perturb import Columns, Constant, Perturbation, all_coalitions
from tests._explain_models import sparse_odd_game

ZERO = {"fill": Constant(0.0)}


def _mlp(d: int = 12) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(d, 16), nn.Tanh(), nn.Linear(16, 3)).eval()


@pytest.fixture(scope="module")
def game():
    """A tanh MLP on 12 columns, zero fill, three inputs, and the exact Shapley values of the
    probability of class 0."""
    d = 12
    model = wrap(_mlp(d))
    x = torch.randn(3, d, generator=torch.Generator().manual_seed(1))
    coal = all_coalitions(d)
    res = Perturbation(Columns(), Constant(0.0)).query(model, x, coal)
    values = torch.softmax(res.outputs.double(), -1)[..., 0]
    return model, x, exact_shapley(values, coal).numpy()


def test_simplex_least_squares_is_the_constrained_optimum():
    # random problems: the active-set solution against a fine search of the simplex (step
    # 0.01: the search can only be worse, by at most its grid's error)
    rng = np.random.default_rng(0)
    grid = np.array([(a, b, 100 - a - b) for a in range(101) for b in range(101 - a)]) / 100
    for _ in range(5):
        f = torch.as_tensor(rng.normal(size=(60, 3)))
        y = f @ torch.as_tensor(rng.normal(size=3)) + 0.3 * torch.as_tensor(rng.normal(size=60))
        w = torch.as_tensor(rng.uniform(0.1, 2.0, size=60))
        alpha = simplex_least_squares(f, y, w)
        assert float(alpha.min()) >= 0.0 and abs(float(alpha.sum()) - 1.0) < 1e-12
        err = float((w * (y - f @ alpha) ** 2).sum())
        searched = ((w.numpy()[:, None] * (y.numpy()[:, None] - f.numpy() @ grid.T) ** 2)
                    .sum(0).min())
        assert err <= searched + 1e-9


def test_simplex_least_squares_takes_an_exact_column_and_allows_copies():
    rng = np.random.default_rng(1)
    f = torch.as_tensor(rng.normal(size=(40, 3)))
    f = torch.cat([f, f[:, :1]], 1)  # column 3 repeats column 0
    alpha = simplex_least_squares(f, f[:, 1].clone(), torch.ones(40))
    np.testing.assert_allclose(alpha.numpy(), [0.0, 1.0, 0.0, 0.0], atol=1e-9)
    copies = simplex_least_squares(f, f[:, 0].clone(), torch.ones(40))
    assert abs(float(copies[0] + copies[3]) - 1.0) < 1e-9


def test_simplex_least_absolute_is_the_constrained_optimum():
    # the linear program's solution against the same search of the simplex, on problems with
    # heavy-tailed noise (Student t, 2 degrees of freedom: where the criterion matters)
    rng = np.random.default_rng(2)
    grid = np.array([(a, b, 100 - a - b) for a in range(101) for b in range(101 - a)]) / 100
    for _ in range(5):
        f = torch.as_tensor(rng.normal(size=(60, 3)))
        y = f @ torch.as_tensor(rng.dirichlet(np.ones(3))) + 0.3 * torch.as_tensor(
            rng.standard_t(2, size=60))
        w = torch.as_tensor(rng.uniform(0.1, 2.0, size=60))
        alpha = simplex_least_absolute(f, y, w)
        assert float(alpha.min()) >= 0.0 and abs(float(alpha.sum()) - 1.0) < 1e-12
        err = float((w * (y - f @ alpha).abs()).sum())
        searched = (w.numpy()[:, None] * np.abs(y.numpy()[:, None] - f.numpy() @ grid.T)).sum(0)
        assert err <= searched.min() + 1e-9


def test_simplex_least_absolute_ignores_a_few_wild_rows():
    # column 1 is exact on 55 of 60 rows and wrong by 100 on 5: absolute error keeps it alone,
    # squared error is pulled to the other columns by the five rows
    rng = np.random.default_rng(3)
    f = torch.as_tensor(rng.normal(size=(60, 3)))
    y = f[:, 1].clone()
    y[:5] += 100.0
    np.testing.assert_allclose(simplex_least_absolute(f, y, torch.ones(60)).numpy(),
                               [0.0, 1.0, 0.0], atol=1e-9)
    assert float(simplex_least_squares(f, y, torch.ones(60))[1]) < 1.0 - 1e-3


def test_simplex_solves_refuse_bad_input():
    f, y, w = torch.ones(4, 2), torch.ones(4), torch.ones(4)
    for solve in (simplex_least_absolute, simplex_least_squares):
        with pytest.raises(ValueError, match="finite"):
            solve(f, torch.tensor([1.0, float("nan"), 1.0, 1.0]), w)
    with pytest.raises(ValueError, match="non-negative"):
        simplex_least_absolute(f, y, torch.tensor([1.0, -1.0, 1.0, 1.0]))


def test_pairs_are_found_by_their_drawn_ids():
    # rows of drawn ids 0 1 2 4 3 5 6 (the adaptive mode's extend can interleave a lone row):
    # pairs are the units id // 2 that hold two rows, wherever the rows sit; id 6 is alone
    unit = torch.tensor([0, 1, 2, 4, 3, 5, 6]) // 2
    first, second, lone = StackedSHAP._pair_rows(unit)
    assert first.tolist() == [0, 2, 3] and second.tolist() == [1, 4, 5]
    assert lone.tolist() == [6]


def test_one_candidate_stack_is_the_logit_surrogate(game):
    # the "surrogate" candidate alone is LogitSurrogateSHAP with its residual regression, on
    # the same coalitions (SurrogateDesign, same seed): equal to float64 rounding
    model, x, _ = game
    for budget in (80, 240):
        stack = StackedSHAP(model, n_samples=budget, candidates=["surrogate"], seed=5,
                            design="surrogate", **ZERO).explain(x, target=0)
        ls = LogitSurrogateSHAP(model, n_samples=budget, adjust=True, seed=5,
                                **ZERO).explain(x, target=0)
        np.testing.assert_allclose(stack.feature_values, ls.feature_values, atol=1e-9)
        np.testing.assert_array_equal(stack.extra["stack_weights"], 1.0)


def test_stack_weights_are_convex_and_reported(game):
    model, x, exact = game
    exp = StackedSHAP(model, n_samples=240, seed=0, **ZERO).explain(x, target=0)
    a = exp.extra["stack_weights"]
    assert a.shape == (3, 4) and exp.extra["candidates"] == ["surrogate", "odd",
                                                              "odd_residual", "tree"]
    assert (a >= 0).all()
    np.testing.assert_allclose(a.sum(1), 1.0, atol=1e-12)
    np.testing.assert_allclose(exp.extra["efficiency_gap"], 0.0, atol=1e-6)
    assert np.isfinite(exp.std).all() and (exp.lower <= exp.upper).all()


@pytest.mark.parametrize("criterion", ["absolute", "squared"])
def test_criterion_chooses_the_stacking_solve(game, criterion):
    # each input's reported weights are the chosen solve of its held-out predictions
    model, x, _ = game
    est = StackedSHAP(model, n_samples=240, seed=0, criterion=criterion, **ZERO)
    exp = est.explain(x, target=0)
    solves = {"absolute": simplex_least_absolute, "squared": simplex_least_squares}
    solve = solves.pop(criterion)
    (other,) = solves.values()
    assert est.params()["criterion"] == criterion
    differs = []
    for i, (_, f, y, w) in enumerate(est._held_out):
        mine = solve(f, y, w)
        np.testing.assert_allclose(exp.extra["stack_weights"][i], mine.numpy(), atol=1e-12)
        differs.append(float((other(f, y, w) - mine).abs().max()) > 1e-3)
    assert any(differs)  # the two solves disagree here (by 0.02-0.05), so the test can tell


def test_stack_recovers_a_sparse_odd_game():
    # 800 of 4096 coalitions: the odd candidate with calix's settings is exact on this game
    # (tests/test_shapley.py), so the held-out pairs give it (and only exact candidates) the
    # weight, and the stack is exact to float32 rounding (measured 1e-15)
    model, x, exact = sparse_odd_game()
    exp = StackedSHAP(model, n_samples=800, seed=0, **ZERO).explain(x)
    err = ((exp.feature_values - exact) ** 2).sum(1) / (exact**2).sum(1)
    assert err.max() < 1e-12, err
    odd = exp.extra["candidates"].index("odd_residual")
    assert (exp.extra["stack_weights"][:, odd] > 0.5).all(), exp.extra["stack_weights"]


def test_stack_is_no_worse_than_its_best_candidate_on_average(game):
    # 20 d queries, 3 seeds x 3 inputs: the stack's mean normalised error is at most 1.2x
    # that of the best single candidate on the same coalitions (measured 0.6-1.0x on the
    # benchmark games; held-out weights can lose a little to a candidate chosen in hindsight)
    model, x, exact = game

    def err(**kw):
        out = []
        for seed in range(3):
            e = StackedSHAP(model, n_samples=240, seed=seed, **ZERO, **kw).explain(x, target=0)
            out.append(((e.feature_values - exact) ** 2).sum(1) / (exact**2).sum(1))
        return float(np.mean(out))

    single = {c: err(candidates=[c]) for c in ("surrogate", "odd", "odd_residual", "tree")}
    assert err() <= 1.2 * min(single.values()), (err(), single)


def test_bad_arguments_and_budgets(game):
    model, x, _ = game
    with pytest.raises(ValueError, match="candidates must be distinct names"):
        StackedSHAP(model, candidates=["surrogate", "spline"])
    with pytest.raises(ValueError, match="candidates must be distinct names"):
        StackedSHAP(model, candidates=["odd", "odd"])
    with pytest.raises(ValueError, match="candidates must be distinct names"):
        StackedSHAP(model, candidates=[])
    with pytest.raises(ValueError, match="n_folds must be an integer >= 2"):
        StackedSHAP(model, n_folds=1)
    with pytest.raises(ValueError, match="alpha must be > 0"):
        StackedSHAP(model, alpha=0.0)
    with pytest.raises(ValueError, match="design must be 'auto', 'surrogate' or 'leverage'"):
        StackedSHAP(model, design="kernel")
    with pytest.raises(ValueError, match="criterion must be one of"):
        StackedSHAP(model, criterion="huber")
    with pytest.raises(ValueError, match="tree_params are not"):
        StackedSHAP(model, tree_params={"depth": 3})
    with pytest.raises(ValueError, match="StackedSHAP needs n_samples >= 24"):
        StackedSHAP(model, n_samples=20, **ZERO).explain(x)
    # d = 6, 12 folds, 32 queries: Leverage SHAP's design enumerates sizes 1 and 5 and leaves
    # 9 sampled pairs for 12 folds -- refused before any query
    six = wrap(_mlp(6))
    with pytest.raises(ValueError, match="needs at least 12 sampled pairs"):
        StackedSHAP(six, n_samples=32, n_folds=12, **ZERO).explain(torch.ones(2, 6), target=0)
    assert six.n_queries <= 1  # refused before the 2 x 32 coalitions were queried
    bad = StackedSHAP(model, n_samples=200, candidates=["tree"],
                      tree_params={"max_depth": -1}, **ZERO)
    with pytest.raises(ValueError, match="the tree candidate could not be fitted"):
        bad.explain(x)


def test_design_follows_the_budget(game):
    # "auto": Leverage SHAP's coalitions until SurrogateDesign enumerates sizes 1 and d − 1
    # (8 d coalitions besides the ends)
    model, _, _ = game
    assert type(StackedSHAP(model, n_samples=97).design(12)).__name__ == "LeverageDesign"
    assert type(StackedSHAP(model, n_samples=98).design(12)).__name__ == "SurrogateDesign"
    assert type(StackedSHAP(model, n_samples=98, design="leverage").design(12)).__name__ == \
        "LeverageDesign"


def test_default_estimator_is_the_stack_above_its_minimum(game):
    model, x, _ = game
    exp = Shapley(model, n_samples=240, **ZERO).explain(x)
    assert exp.extra["estimator"] == "stacked_shap"
    assert exp.extra["stack_weights"].shape == (3, 4)
