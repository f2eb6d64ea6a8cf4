import numpy as np
import pytest
import torch
from torch import nn

from calix.explain import KernelSHAP, LogitSurrogateSHAP, exact_shapley
from calix.explain.logit_surrogate import quadratic_shapley, sigmoid_quadratic_shapley
from calix.models import wrap
from calix.perturb import Constant, SurrogateDesign, all_coalitions


class _Quadratic(nn.Module):
    """q(x) = w·x + Σ_{i<j} C_ij x_i x_j: with a zero baseline the game is quadratic in z."""

    def __init__(self, d: int, seed: int, classifier: bool):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w = nn.Parameter(torch.randn(d, generator=g), requires_grad=False)
        c = torch.randn(d, d, generator=g).triu(1) * 0.5
        self.c = nn.Parameter(c, requires_grad=False)
        self.classifier = classifier

    def forward(self, x):
        q = x @ self.w + ((x @ self.c) * x).sum(-1)
        return torch.stack([torch.zeros_like(q), q], -1) if self.classifier else q[:, None]


@pytest.fixture(scope="module")
def breast_cancer_mlp():
    """The zoo MLP on breast_cancer and its first 10 test inputs (tables are z-scored, so the
    default zero fill is the training mean)."""
    from calix import zoo

    trained = zoo.train("mlp", "breast_cancer", seed=0)
    return trained.wrap(), torch.as_tensor(np.asarray(trained.dataset.X_test[:10]))


def _inputs(d, n=3, seed=1):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def _exact(model, x, target, d, **kw):
    """Exact Shapley values by full enumeration (KernelSHAP's exact path)."""
    return KernelSHAP(model, n_samples=2**d, fill=Constant(0.0), **kw).explain(
        x, target=target).feature_values


def test_exact_shapley_formula_equals_kernelshap_enumeration():
    d = 6
    model = wrap(_Quadratic(d, 0, classifier=True))
    x = _inputs(d)
    coal = all_coalitions(d)
    from calix.perturb import Columns, Perturbation

    out = Perturbation(Columns(), Constant(0.0)).query(model, x, coal).outputs
    values = torch.softmax(out.double(), -1)[..., 1]
    np.testing.assert_allclose(exact_shapley(values, coal).numpy(), _exact(model, x, 1, d),
                               atol=1e-6)


def test_budget_covering_all_coalitions_gives_the_exact_values():
    d = 6
    model = wrap(_Quadratic(d, 1, classifier=True))
    x = _inputs(d)
    e = LogitSurrogateSHAP(model, n_samples=2**d, fill=Constant(0.0)).explain(x, target=1)
    assert e.extra["exact"] and e.n_queries == len(x) * 2**d
    np.testing.assert_allclose(e.feature_values, _exact(model, x, 1, d), atol=1e-6)


def test_identity_link_recovers_a_quadratic_game_exactly():
    # the surrogate family contains the game: the fit and hence the Shapley values are exact
    # (up to the tiny ridge penalty), far below the budget of enumeration
    d = 10
    model = wrap(_Quadratic(d, 2, classifier=False), task="regression")
    x = _inputs(d)
    e = LogitSurrogateSHAP(model, n_samples=300, alpha=1e-9, fill=Constant(0.0)).explain(x)
    assert e.params["link"] == "identity" and not e.extra["exact"]
    np.testing.assert_allclose(e.feature_values, _exact(model, x, 0, d), atol=1e-5)
    np.testing.assert_allclose(e.extra["r2"], 1.0, atol=1e-9)


def test_logit_link_recovers_a_logistic_quadratic_game():
    # p = sigmoid(q(x)) with q quadratic: the logit fit is exact, so the only error left is the
    # permutation quadrature on the surrogate: 20000 antithetic pairs of walks, each pair's
    # mean contribution in [-1, 1], so the standard error is below 1/sqrt(20000) = 0.007.
    d = 8
    model = wrap(_Quadratic(d, 3, classifier=True))
    x = _inputs(d) * 0.7
    e = LogitSurrogateSHAP(model, n_samples=200, alpha=1e-9, n_permutations=20000,
                 fill=Constant(0.0)).explain(x, target=1)
    assert e.params["link"] == "logit"
    exact = _exact(model, x, 1, d)
    np.testing.assert_allclose(e.feature_values, exact, atol=0.01)
    # efficiency holds exactly: every walk's contributions telescope to g(full) − g(empty)
    np.testing.assert_allclose(e.feature_values.sum(1),
                               e.extra["full_value"] - e.extra["base_value"], atol=1e-5)


def test_sigmoid_quadratic_shapley_against_enumeration():
    d = 5
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, generator=g).double(), torch.randn(2, d, generator=g).double()
    c = torch.randn(2, d, d, generator=g).double().triu(1)
    c = c + c.transpose(1, 2)
    coal = all_coalitions(d)
    z = coal.double()
    q = a[:, None] + b @ z.T + 0.5 * torch.einsum("md,ndk,mk->nm", z, c, z)
    exact = exact_shapley(torch.sigmoid(q), coal)
    # all 120 permutations of 5 features (and their reverses) are the exact average
    from itertools import permutations

    perms = torch.tensor(list(permutations(range(d))))
    np.testing.assert_allclose(sigmoid_quadratic_shapley(a, b, c, perms, chunk_elements=500),
                               exact, atol=1e-12)
    # and the identity-link closed form equals enumeration of q itself
    np.testing.assert_allclose(quadratic_shapley(b, c), exact_shapley(q, coal), atol=1e-12)


def test_efficiency_seeds_and_fit_on_the_zoo_mlp(breast_cancer_mlp):
    model, x = breast_cancer_mlp
    e = LogitSurrogateSHAP(model, n_samples=300, seed=0).explain(x)
    assert e.n_queries == 300 * len(x)
    np.testing.assert_allclose(e.feature_values.sum(1),
                               e.extra["full_value"] - e.extra["base_value"], atol=1e-5)
    assert np.all(e.extra["r2"] > 0.8)
    again = LogitSurrogateSHAP(model, n_samples=300, seed=0).explain(x).feature_values
    other = LogitSurrogateSHAP(model, n_samples=300, seed=1).explain(x).feature_values
    np.testing.assert_array_equal(e.feature_values, again)
    assert not np.allclose(e.feature_values, other)


def test_reproducibility_target_on_the_breast_cancer_mlp(breast_cancer_mlp):
    # the project's target (issue: >= 0.95 mean pairwise Spearman of |attributions| across 5
    # seeds at <= 1000 queries, 10 inputs); benchmarks/stability.py measures 0.976 here, and
    # KernelSHAP's paired regression about 0.75
    from calix.metrics.stability import reproducibility

    model, x = breast_cancer_mlp
    rep = reproducibility(lambda s: LogitSurrogateSHAP(model, n_samples=1000, seed=s), x)
    assert rep["spearman"].mean() >= 0.95


def test_intervals_shrink_with_budget(breast_cancer_mlp):
    model, x = breast_cancer_mlp
    small = LogitSurrogateSHAP(model, n_samples=300, n_permutations=1024, seed=0).explain(x[:3])
    large = LogitSurrogateSHAP(model, n_samples=2000, n_permutations=1024, seed=0).explain(x[:3])
    t = 2.262157  # Student's t, 9 degrees of freedom (10 jackknife groups), 97.5%
    for e in (small, large):
        assert e.std.shape == e.feature_values.shape and np.all(e.std > 0)
        np.testing.assert_allclose(e.upper - e.feature_values, t * e.std, rtol=1e-5,
                                   atol=1e-7)
        np.testing.assert_allclose(e.feature_values - e.lower, t * e.std, rtol=1e-5,
                                   atol=1e-7)
    assert np.median(large.std) < 0.7 * np.median(small.std)


@pytest.fixture(scope="module")
def wine_exact():
    """The zoo wine MLP (13 columns), 10 test inputs and their exact Shapley values (all 8192
    coalitions)."""
    from calix import zoo
    from calix.perturb import Mean

    trained = zoo.train("mlp", "wine", seed=0)
    model, fill = trained.wrap(), Mean().fit(trained.dataset.X_train)
    x = torch.as_tensor(np.asarray(trained.dataset.X_test[:10]))
    exact = LogitSurrogateSHAP(model, n_samples=2**13, fill=fill).explain(x)
    assert exact.extra["exact"]
    return model, fill, x, exact.feature_values.astype(np.float64)


def test_more_accurate_than_kernelshap_against_exact_values(wine_exact):
    # mean |phi - exact| over 10 inputs x 13 features and seeds 0-4 at 1000 queries; measured
    # KernelSHAP 0.0034, LogitSurrogateSHAP 0.0015, and 0.0036 for the surrogate's values alone
    # (adjust=False: its bias does not shrink with the budget). The adjusted estimate must beat
    # both by a clear margin: 1.5x here, for measured ratios of 2.3 and 2.4.
    model, fill, x, exact = wine_exact

    def err(make):
        return np.mean([np.abs(make(s).explain(x).feature_values - exact).mean()
                        for s in range(5)])

    kernel = err(lambda s: KernelSHAP(model, n_samples=1000, seed=s, fill=fill))
    plain = err(lambda s: LogitSurrogateSHAP(model, n_samples=1000, adjust=False, seed=s,
                                             fill=fill))
    adjusted = err(lambda s: LogitSurrogateSHAP(model, n_samples=1000, seed=s, fill=fill))
    assert 1.5 * adjusted < kernel and 1.5 * adjusted < plain


def test_more_accurate_than_shap_kernel_explainer(wine_exact):
    # the peer at the same budget and on the same game (background = the fill's mean row):
    # measured mean |phi - exact| 0.0034 for shap's KernelExplainer at nsamples=1000 without
    # its l1 feature selection (seeds 0-2) against LogitSurrogateSHAP's 0.0015; the test asks
    # for 1.5x
    import shap

    model, fill, x, exact = wine_exact
    background = fill.mean_.numpy()[None]
    targets = model.predict_proba(x.numpy()).argmax(1)
    errs = []
    for seed in range(3):
        np.random.seed(seed)  # noqa: NPY002 -- shap draws from numpy's global RNG
        phi = np.stack([
            np.asarray(shap.KernelExplainer(lambda a, t=int(t): model.predict_proba(a)[:, t],
                                            background)
                       .shap_values(xi[None], nsamples=1000, l1_reg=False, silent=True))
            .reshape(-1)
            for xi, t in zip(x.numpy(), targets, strict=True)])
        errs.append(np.abs(phi - exact).mean())
    ours = np.mean([np.abs(LogitSurrogateSHAP(model, n_samples=1000, seed=s, fill=fill).explain(x)
                           .feature_values - exact).mean() for s in range(3)])
    assert 1.5 * ours < np.mean(errs)


def test_interval_coverage_against_exact_values(wine_exact):
    # 95% delete-half-jackknife intervals at 1000 queries (adjusted, > 10 d): measured coverage
    # of the exact values 0.882 over 3 seeds x 10 inputs x 13 features (0.93 at 300 queries);
    # 0.85 leaves room for the seeds without accepting the bootstrap's 0.83 or the unadjusted
    # estimate's 0.58
    from calix.metrics.stability import interval_coverage

    model, fill, x, exact = wine_exact
    cov = np.mean([interval_coverage(LogitSurrogateSHAP(model, n_samples=1000, seed=s,
                                                        fill=fill).explain(x), exact)
                   for s in range(3)])
    assert cov >= 0.85


def test_constant_game_gives_zero_attributions():
    model = wrap(lambda a: np.tile([0.3, 0.7], (len(a), 1)), output="probabilities")
    e = LogitSurrogateSHAP(model, n_samples=100, fill=Constant(0.0)).explain(np.ones((2, 12)))
    assert np.all(np.isfinite(e.feature_values))
    np.testing.assert_allclose(e.feature_values, 0.0, atol=1e-9)


def test_saturated_sklearn_probabilities_stay_finite():
    # p = 0 or 1 exactly: the logit is clipped, never inf or NaN
    model = wrap(lambda a: np.where(a[:, :1] > 0, [[0.0, 1.0]], [[1.0, 0.0]]),
                 output="probabilities")
    x = np.ones((2, 10))
    e = LogitSurrogateSHAP(model, n_samples=100, fill=Constant(-1.0)).explain(x, target=1)
    # only feature 0 matters: φ = (1, 0, ..., 0) exactly
    np.testing.assert_allclose(e.feature_values, np.eye(10)[[0, 0]], atol=1e-3)


def test_bad_input():
    d = 12
    model = wrap(_Quadratic(d, 0, classifier=True))
    x = _inputs(d)
    with pytest.raises(ValueError, match="n_samples >= 13 model queries"):
        LogitSurrogateSHAP(model, n_samples=d).explain(x)
    with pytest.raises(ValueError, match="order must be 1 or 2"):
        LogitSurrogateSHAP(model, order=3)
    with pytest.raises(ValueError, match="link must be one of"):
        LogitSurrogateSHAP(model, link="probit")
    with pytest.raises(ValueError, match="link='logit' needs a classifier"):
        LogitSurrogateSHAP(model, link="logit", output="logit")
    with pytest.raises(ValueError, match="alpha"):
        LogitSurrogateSHAP(model, alpha=0.0)
    with pytest.raises(ValueError, match="n_permutations"):
        LogitSurrogateSHAP(model, n_permutations=0)
    wide = wrap(_Quadratic(80, 0, classifier=True))
    with pytest.raises(ValueError, match="terms"):
        LogitSurrogateSHAP(wide, n_samples=500).explain(_inputs(80))
    # order 1 has few enough terms for the same input
    narrow = LogitSurrogateSHAP(wide, n_samples=500, order=1).explain(_inputs(80))
    assert narrow.feature_values.shape == (3, 80)


def test_residual_shapley_against_enumeration():
    # a random game with zero ends on the explainer's own design (enumerated sizes 1 and d - 1,
    # then pairs with sizes uniform on 2..d-2): the weighted regression converges to the exact
    # values; with the enumerated rows weighted like the sampled ones it is off by ~0.4
    from calix.explain.logit_surrogate import residual_shapley

    d = 8
    coal = all_coalitions(d)
    g = torch.Generator().manual_seed(0)
    table = torch.randn(1, 2**d, generator=g, dtype=torch.float64)
    table[:, 0] = table[:, -1] = 0.0
    exact = exact_shapley(table, coal)
    assert SurrogateDesign.n_fixed(200_000, d) == 2 * d
    z = SurrogateDesign().draw(1, 200_000, d, g).masks
    index = (z.long() << torch.arange(d)).sum(-1)  # row of all_coalitions
    r = table.gather(1, index)
    np.testing.assert_allclose(residual_shapley(z, r, 2 * d), exact, atol=0.03)
    assert np.abs(residual_shapley(z, r, 0) - exact.numpy()).max() > 0.1


def test_design_layout():
    d = 10
    g = torch.Generator().manual_seed(0)
    for m, fixed in ((79, 0), (80, 20), (299, 20)):
        assert SurrogateDesign.n_fixed(m, d) == fixed
        design = SurrogateDesign().draw(2, m, d, g)
        z = design.masks
        assert z.shape == (2, m, d) and design.n_fixed == fixed and design.weights is None
        head = z[:, :fixed]
        assert (head.sum(-1) == torch.tensor([1, d - 1] * (fixed // 2))).all()
        rest = z[:, fixed:]
        size = rest.sum(-1)
        low = 2 if fixed else 1
        assert size.min() >= low and size.max() <= d - low
        pairs = rest[:, : 2 * (rest.shape[1] // 2)].reshape(2, -1, 2, d)
        assert (pairs[:, :, 0] == ~pairs[:, :, 1]).all()  # (S, complement of S)


def test_symmetric_game_gets_symmetric_values():
    # v(S) = 0.2 |S| for 40 exchangeable features, below 10 d queries (surrogate alone): every
    # feature's value, averaged over 30 inputs, equals 0.2 -- the constraint does not load the
    # ridge shrinkage onto one coefficient
    d = 40
    model = wrap(lambda a: 0.2 * a.sum(1, keepdims=True), task="regression")
    e = LogitSurrogateSHAP(model, n_samples=150, fill=Constant(0.0)).explain(np.ones((30, d)))
    mean = e.feature_values.mean(0)
    np.testing.assert_allclose(e.feature_values.sum(1), 0.2 * d, atol=1e-4)
    assert np.abs(mean - 0.2).max() < 1.5e-3  # measured 4e-4; 3.1e-3 with b_d unpenalised


def test_intervals_edge_cases():
    d = 6
    model = wrap(_Quadratic(d, 0, classifier=True))
    x = _inputs(d)
    exact = LogitSurrogateSHAP(model, n_samples=64).explain(x)  # 2^6 = 64: enumerated
    np.testing.assert_array_equal(exact.std, 0.0)
    np.testing.assert_array_equal(exact.lower, exact.upper)
    assert np.isnan(exact.extra["r2"]).all()
    few = LogitSurrogateSHAP(model, n_samples=9).explain(x)  # 7 sampled: 3 pairs, 3 groups
    assert np.all(np.isfinite(few.std)) and np.all(few.upper >= few.lower)
    odd = LogitSurrogateSHAP(model, n_samples=33).explain(x)  # 31 sampled: one unpaired
    assert np.all(odd.std > 0) and np.all(np.isfinite(odd.std))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    d = 8
    x = _inputs(d)
    for n_samples in (2**d, 200):  # exact and sampled paths
        cpu = LogitSurrogateSHAP(wrap(_Quadratic(d, 0, classifier=True)), n_samples=n_samples,
                       n_resamples=4).explain(x)
        gpu = LogitSurrogateSHAP(wrap(_Quadratic(d, 0, classifier=True), device="cuda"),
                       n_samples=n_samples).explain(x)
        np.testing.assert_allclose(gpu.feature_values, cpu.feature_values, atol=1e-4)


def test_walks_agree_with_the_enumerated_surrogate_within_their_variance():
    # the permutation walks' estimate of sigmoid(q)'s Shapley values against enumeration: the
    # errors divided by the returned standard errors look standard normal (the antithetic
    # pairs make the variance conservative: |z| stays well inside 4)
    from calix.explain.logit_surrogate import sigmoid_quadratic_shapley_exact

    d, n = 10, 4
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, generator=g, dtype=torch.float64)
    b = torch.randn(n, d, generator=g, dtype=torch.float64)
    c = torch.randn(n, d, d, generator=g, dtype=torch.float64)
    c = (c + c.transpose(1, 2)) / 2
    c.diagonal(dim1=1, dim2=2).zero_()
    exact = sigmoid_quadratic_shapley_exact(a, b, c)
    perms = torch.argsort(torch.rand(2000, d, generator=g), -1)
    walked, var = sigmoid_quadratic_shapley(a, b, c, perms, variance=True)
    z = (walked - exact) / var.sqrt()
    assert z.abs().max() < 4.5 and 0.2 < z.std() < 1.5
    np.testing.assert_allclose(exact.sum(1), torch.sigmoid(a + b.sum(1) + c.sum((1, 2)) / 2)
                               - torch.sigmoid(a), atol=1e-12)
