"""Localization, agreement, complexity, randomization and ROAD metrics: exact hand-computed
cases, behaviour on models with known answers, determinism, and clear errors on bad input.
(Agreement with Quantus 0.6 is in ``test_quantus_crosscheck.py``.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from calix import wrap
from calix.explain import Saliency
from calix.metrics import METRICS
from calix.metrics.agreement import (
    feature_agreement,
    prediction_gap_important,
    prediction_gap_unimportant,
    rank_agreement,
    rank_correlation,
    sign_agreement,
    signed_rank_agreement,
)
from calix.metrics.axiomatic import completeness, input_invariance, non_sensitivity
from calix.metrics.bootstrap import bootstrap_interval
from calix.metrics.complexity import complexity, effective_complexity, sparseness
from calix.metrics.localization import (
    attribution_auc,
    pointing_game,
    relevance_mass_accuracy,
    relevance_rank_accuracy,
    top_k_intersection,
)
from calix.metrics.randomization import (
    efficient_mprt,
    histogram_entropy,
    mprt,
    random_logit,
    randomized_layers,
    smooth_mprt,
)
from calix.metrics.relative_stability import (
    relative_input_stability,
    relative_output_stability,
    relative_representation_stability,
)
from calix.metrics.removal import irof, noisy_linear_imputation, road, selectivity, sensitivity_n
from calix.perturb import Constant

LOCALIZATION = (pointing_game, relevance_mass_accuracy, relevance_rank_accuracy,
                attribution_auc)


# ---------------------------------------------------------------------- localization
def test_localization_by_hand():
    maps = np.array([[0.5, 0.1, 0.9, 0.0, 0.3, 0.2],
                     [0.9, 0.8, 0.0, 0.1, 0.2, 0.3]])
    masks = np.array([[0, 0, 1, 0, 1, 0],
                      [0, 0, 1, 1, 0, 0]])
    np.testing.assert_array_equal(pointing_game(maps, masks), [1.0, 0.0])
    # mass inside / total mass: (0.9 + 0.3) / 2.0 and (0.0 + 0.1) / 2.3
    np.testing.assert_allclose(relevance_mass_accuracy(maps, masks), [0.6, 0.1 / 2.3])
    # K = 2: top-2 are {2, 0} (one hit) and {0, 1} (none)
    np.testing.assert_array_equal(relevance_rank_accuracy(maps, masks), [0.5, 0.0])
    # top-3 are {2, 0, 4} and {0, 1, 5}
    np.testing.assert_allclose(top_k_intersection(maps, masks, k=3), [2 / 3, 0.0])
    # concept influence: times d / |mask| = 6 / 2
    np.testing.assert_allclose(top_k_intersection(maps, masks, k=3, concept_influence=True),
                               [2.0, 0.0])
    # AUC: the share of (inside, outside) pairs ranked correctly. Row 0: inside 0.9 beats
    # all 4 outside values, inside 0.3 beats 0.1, 0.0 and 0.2 -> 7 / 8. Row 1: inside 0.0
    # and 0.1 are below every outside value (0.9, 0.8, 0.2, 0.3) -> 0 / 8
    np.testing.assert_allclose(attribution_auc(maps, masks), [7 / 8, 0.0])


def test_localization_ties_empty_masks_and_channels():
    # tied maxima: a hit if any of them is inside
    assert pointing_game([[1.0, 1.0, 0.0]], [[0, 1, 0]]).tolist() == [1.0]
    # AUC counts ties as one half: one pair, tied
    assert attribution_auc([[0.5, 0.5]], [[1, 0]]).tolist() == [0.5]
    # empty (or, for AUC, full) masks give NaN, the other inputs their value
    maps = np.array([[1.0, 0.0], [1.0, 0.0]])
    for fn in LOCALIZATION:
        out = fn(maps, [[0, 0], [1, 0]])
        assert np.isnan(out[0]) and np.isfinite(out[1]), fn.__name__
    assert np.isnan(attribution_auc(maps, [[1, 1], [1, 0]])[0])
    # (n, C, H, W) maps against one-channel masks: channels summed first
    rng = np.random.default_rng(0)
    maps = rng.normal(size=(3, 3, 4, 4))
    masks = rng.random((3, 1, 4, 4)) < 0.4
    for fn in LOCALIZATION:
        np.testing.assert_array_equal(fn(maps, masks), fn(maps.sum(1, keepdims=True), masks))
        np.testing.assert_array_equal(fn(maps, masks[:, 0]), fn(maps, masks))
    # absolute: rank magnitudes
    assert pointing_game([[-5.0, 1.0]], [[1, 0]], absolute=True).tolist() == [1.0]
    assert pointing_game([[-5.0, 1.0]], [[1, 0]]).tolist() == [0.0]


def test_attribution_auc_equals_sklearn():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(1)
    maps = np.round(rng.normal(size=(5, 40)), 1)  # rounded: many ties
    masks = rng.random((5, 40)) < 0.3
    want = [roc_auc_score(s, a) for a, s in zip(maps, masks, strict=True)]
    np.testing.assert_allclose(attribution_auc(maps, masks), want, rtol=1e-12)


@pytest.mark.parametrize("fn", LOCALIZATION)
def test_localization_bad_input(fn):
    maps = np.zeros((2, 1, 4, 4))
    with pytest.raises(ValueError, match="masks must have the shape of the maps"):
        fn(maps, np.ones((2, 1, 4, 5)))
    with pytest.raises(ValueError, match="masks has 3 rows for 2 maps"):
        fn(maps, np.ones((3, 1, 4, 4)))
    bad = maps.copy()
    bad[1, 0, 2, 2] = np.nan
    with pytest.raises(ValueError, match=r"maps contain NaN .*input\(s\) \[1\]"):
        fn(bad, np.ones((2, 1, 4, 4)))
    with pytest.raises(ValueError, match="boolean"):
        fn(maps, np.full((2, 1, 4, 4), 0.5))
    with pytest.raises(TypeError, match="real numbers"):
        fn(maps.astype(str), np.ones((2, 1, 4, 4)))
    with pytest.raises(ValueError, match="one row per input"):
        fn(np.zeros(4), np.ones(4))


def test_top_k_bad_k():
    with pytest.raises(ValueError, match="k must be at most the number of features 3"):
        top_k_intersection([[1.0, 2.0, 3.0]], [[1, 0, 0]], k=4)
    with pytest.raises(ValueError, match="k must be >= 1"):
        top_k_intersection([[1.0, 2.0, 3.0]], [[1, 0, 0]], k=0)


# ---------------------------------------------------------------------- agreement
def test_agreement_by_hand():
    a = np.array([[0.9, -0.8, 0.1, 0.5, 0.0]])  # |a| order: 0, 1, 3, 2, 4
    t = np.array([[1.0, 0.2, 0.0, -0.7, 0.6]])  # |t| order: 0, 3, 4, 1, 2
    # top-3: {0, 1, 3} vs {0, 3, 4}: two shared
    assert feature_agreement(a, t, k=3).tolist() == [2 / 3]
    # ranks: (0, 1, 3) vs (0, 3, 4): only rank 0 agrees
    assert rank_agreement(a, t, k=3).tolist() == [1 / 3]
    # shared {0, 3}: feature 0 same sign, feature 3 opposite
    assert sign_agreement(a, t, k=3).tolist() == [1 / 3]
    assert signed_rank_agreement(a, t, k=3).tolist() == [1 / 3]
    assert signed_rank_agreement(-a, t, k=3).tolist() == [0.0]
    # Spearman of magnitudes: ranks (5, 4, 2, 3, 1) vs (5, 2, 1, 4, 3)
    ra, rt = np.array([5, 4, 2, 3, 1.0]), np.array([5, 2, 1, 4, 3.0])
    want = np.corrcoef(ra, rt)[0, 1]
    np.testing.assert_allclose(rank_correlation(a, t), [want], rtol=1e-12)
    assert rank_correlation(a, a).tolist() == [1.0]
    for fn in (feature_agreement, rank_agreement, sign_agreement, signed_rank_agreement):
        assert fn(t, t, k=5).tolist() == [1.0]
    with pytest.raises(ValueError, match="truth must have the shape of the maps"):
        feature_agreement(a, t[:, :4])
    with pytest.raises(ValueError, match="k must be at most"):
        rank_agreement(a, t, k=6)


def _linear_model(w: torch.Tensor) -> torch.nn.Module:
    lin = torch.nn.Linear(len(w), 2)
    with torch.no_grad():
        lin.weight.copy_(torch.stack([w, -w]))
        lin.bias.zero_()
    return lin


def test_pgi_pgu_on_a_model_with_known_attributions():
    """A linear logit w·x: the true attribution ranks |w|. Noise on the features with the
    largest |w| moves the prediction most (PGI high), noise on the rest moves it least (PGU
    low); a reversed ranking swaps them."""
    torch.manual_seed(0)
    w = torch.tensor([3.0, -2.0, 1.0, 0.1, 0.05, 0.01])
    model = wrap(_linear_model(w), input_shape=(6,))
    x = torch.randn(20, 6) * 0.1
    truth = w.expand(20, 6).numpy()
    reverse = 1.0 / truth
    kw = dict(k=2, n_samples=200, std=0.5, seed=0)
    pgi_t, pgi_r = (prediction_gap_important(model, x, m, **kw) for m in (truth, reverse))
    pgu_t, pgu_r = (prediction_gap_unimportant(model, x, m, **kw) for m in (truth, reverse))
    assert pgi_t.shape == (20,) and (pgi_t > pgi_r).all() and (pgu_t < pgu_r).all()
    # seeded: the same numbers again, other numbers with another seed
    np.testing.assert_array_equal(pgi_t, prediction_gap_important(model, x, truth, **kw))
    assert not np.array_equal(pgi_t, prediction_gap_important(model, x, truth,
                                                              **{**kw, "seed": 1}))
    # memory bounded by the batch: a batch of 7 rows gives the same numbers
    small = wrap(_linear_model(w), input_shape=(6,), batch_size=7)
    np.testing.assert_allclose(prediction_gap_important(small, x, truth, **kw), pgi_t,
                               rtol=1e-6)
    # k as a share of the features: 1/3 of 6 = 2
    np.testing.assert_array_equal(prediction_gap_important(model, x, truth, **{**kw, "k": 1 / 3}),
                                  pgi_t)


def test_pgi_exact_on_one_feature():
    """Noise on one feature of a linear logit: the probability gap is the mean of
    |σ(2z + 2wε) − σ(2z)| over the drawn ε (two classes, logits ±w·x)."""
    w = torch.tensor([2.0, 0.0, 0.0])
    model = wrap(_linear_model(w), input_shape=(3,))
    x = torch.tensor([[0.3, 1.0, -1.0]])
    out = prediction_gap_important(model, x, [[1.0, 0.0, 0.0]], k=1, n_samples=20000, std=0.2,
                                   seed=0)
    eps = np.random.default_rng(0).normal(size=200_000) * 0.2

    def p(z):
        return 1 / (1 + np.exp(-2 * z))

    want = np.abs(p(2 * (0.3 + eps)) - p(2 * 0.3)).mean()
    # |Δp| has sd ~ 0.08 around a mean of 0.11: with 20,000 draws the Monte-Carlo standard
    # error is ~ 0.5% of the mean (the reference's, from 200,000 draws, ~ 0.2%); 3% is > 5 SE
    np.testing.assert_allclose(out, [want], rtol=0.03)
    # noise on a feature with zero weight changes nothing
    assert prediction_gap_important(model, x, [[0.0, 1.0, 0.0]], k=1).tolist() == [0.0]


def test_pgi_bad_input():
    model = wrap(_linear_model(torch.ones(4)), input_shape=(4,))
    x = torch.zeros(2, 4)
    with pytest.raises(ValueError, match="maps must have the shape of the inputs"):
        prediction_gap_important(model, x, np.zeros((2, 3)))
    with pytest.raises(ValueError, match="maps contains? .*NaN"):
        prediction_gap_important(model, x, np.full((2, 4), np.nan))
    with pytest.raises(ValueError, match="std must be a finite number > 0"):
        prediction_gap_unimportant(model, x, np.zeros((2, 4)), std=0)
    with pytest.raises(ValueError, match="k must be at most the number of features 4"):
        prediction_gap_unimportant(model, x, np.zeros((2, 4)), k=5)


# ---------------------------------------------------------------------- complexity
def test_complexity_by_hand():
    maps = np.array([[0.0, 0.0, 0.0, -4.0], [1.0, -1.0, 1.0, 1.0], [1.0, 2.0, 3.0, 4.0]])
    # Gini of sorted (1, 2, 3, 4): sum((2i - 5) a_i) / (4 * 10) = (-3 - 2 + 3 + 12) / 40
    np.testing.assert_allclose(sparseness(maps), [0.75, 0.0, 0.25])
    p = np.arange(1, 5) / 10
    np.testing.assert_allclose(complexity(maps), [0.0, np.log(4), -(p * np.log(p)).sum()])
    assert np.isnan(complexity(np.zeros((1, 3))))[0]
    assert sparseness(np.zeros((1, 3))).tolist() == [0.0]
    # relative threshold: |a| / max |a| > 0.3 -> 0.5, 0.75, 1
    assert effective_complexity(maps[2:], eps=0.3).tolist() == [3.0]
    assert effective_complexity(maps[2:], eps=2.5, normalize=False).tolist() == [2.0]
    with pytest.raises(ValueError, match="eps must be a finite number >= 0"):
        effective_complexity(maps, eps=-1)
    with pytest.raises(ValueError, match="NaN"):
        sparseness([[1.0, np.inf]])


def test_bootstrap_interval():
    rng = np.random.default_rng(0)
    s = rng.normal(0.5, 0.1, size=400)
    ci = bootstrap_interval(s, seed=0)
    assert ci.lower < s.mean() < ci.upper and ci.n == 400 and ci.level == 0.95
    # the percentile interval of a mean is ~ mean ± 1.96 sd / sqrt(n)
    half = 1.96 * s.std(ddof=1) / np.sqrt(len(s))
    np.testing.assert_allclose([ci.lower, ci.upper], [s.mean() - half, s.mean() + half],
                               atol=0.15 * half)
    assert bootstrap_interval(s, seed=0) == ci  # seeded
    with_nan = bootstrap_interval(np.r_[s, np.nan], seed=0)
    assert with_nan.n == 400 and with_nan.mean == ci.mean
    with pytest.raises(ValueError, match="level must be in"):
        bootstrap_interval(s, level=95)
    with pytest.raises(ValueError, match="no finite value"):
        bootstrap_interval([np.nan])


def test_metrics_are_registered_with_direction():
    for name, (direction, category) in {
        "pointing_game": ("higher", "localization"), "attribution_auc": ("higher", "localization"),
        "feature_agreement": ("higher", "agreement"), "pgi": ("higher", "faithfulness"),
        "pgu": ("lower", "faithfulness"), "sparseness": ("higher", "complexity"),
        "complexity": ("lower", "complexity"), "mprt": ("lower", "randomization"),
        "efficient_mprt": ("higher", "randomization"), "road_morf": ("lower", "faithfulness"),
    }.items():
        assert METRICS[name].direction == direction and METRICS[name].category == category


# ---------------------------------------------------------------------- randomization
class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4 * 6 * 6, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return _Net(), torch.rand(5, 1, 6, 6)


def _saliency(m):
    return Saliency(wrap(m, input_shape=(1, 6, 6)))


def test_randomized_layers_cascade_and_leave_the_module_alone(net):
    module, _ = net
    before = {k: v.clone() for k, v in module.state_dict().items()}
    state = torch.random.get_rng_state()
    names = []
    for name, m in randomized_layers(module, seed=3):
        names.append(name)
        sd = m.state_dict()
        changed = {k.split(".")[0] for k in sd if not torch.equal(sd[k], before[k])}
        assert changed == set(names)  # cascading: this layer and every one above it
    assert names == ["fc", "conv"]
    assert all(torch.equal(v, before[k]) for k, v in module.state_dict().items())
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's stream is kept
    for name, m in randomized_layers(module, order="independent", seed=3):
        sd = m.state_dict()
        assert {k.split(".")[0] for k in sd if not torch.equal(sd[k], before[k])} == {name}
    with pytest.raises(ValueError, match="order must be one of"):
        next(randomized_layers(module, order="bottom_up"))
    with pytest.raises(ValueError, match="no layer with parameters"):
        next(randomized_layers(torch.nn.ReLU()))


def test_mprt_family(net):
    module, x = net
    r = mprt(_saliency, module, x, seed=0)
    assert r.layers == ["fc", "conv"] and r.similarity.shape == (2, 5)
    assert r.scores.shape == (5,) and (r.scores < 0.9).all()  # randomized maps differ
    np.testing.assert_array_equal(r.similarity, mprt(_saliency, module, x, seed=0).similarity)
    # an explainer blind to the parameters (the input itself) fails the test: similarity 1
    class Blind:
        def __init__(self, m):
            pass

        def explain(self, x, target=None):
            from types import SimpleNamespace

            return SimpleNamespace(values=np.asarray(x) + 1.0, target=np.zeros(len(x), int))

    np.testing.assert_allclose(mprt(Blind, module, x).scores, 1.0)
    # smooth MPRT with one sample is MPRT; with more, another (seeded) number
    np.testing.assert_allclose(smooth_mprt(_saliency, module, x, n_samples=1).similarity,
                               r.similarity)
    s = smooth_mprt(_saliency, module, x, n_samples=8, seed=0)
    np.testing.assert_array_equal(
        s.similarity, smooth_mprt(_saliency, module, x, n_samples=8, seed=0).similarity)

    def small_batches(m):  # 16 rows a batch: copies of 2 inputs per explainer call
        return Saliency(wrap(m, input_shape=(1, 6, 6), batch_size=16))

    np.testing.assert_allclose(
        smooth_mprt(small_batches, module, x, n_samples=8, seed=0).similarity, s.similarity,
        atol=1e-12)
    e = efficient_mprt(_saliency, module, x)
    h0 = histogram_entropy(_saliency(module).explain(x).values)
    np.testing.assert_allclose(e.extra["complexity"][0], h0)
    np.testing.assert_allclose(e.scores, (e.extra["complexity"][-1] - h0) / h0)
    with pytest.raises(ValueError, match="similarity must be one of"):
        mprt(_saliency, module, x, similarity="cosine")
    with pytest.raises(TypeError, match="torch.nn.Module"):
        mprt(_saliency, lambda z: z, x)


def test_histogram_entropy_by_hand():
    # 4 values, 2 bins over [0, 3]: [0, 1.5) holds 0, 1; [1.5, 3] holds 2, 3 -> log 2
    np.testing.assert_allclose(histogram_entropy([[0.0, 1.0, 2.0, 3.0]], n_bins=2), [np.log(2)])
    assert histogram_entropy([[1.0, 1.0]]).tolist() == [0.0]


def test_random_logit(net):
    module, x = net
    sal = _saliency(module)
    out = random_logit(sal, x, similarity="spearman", seed=0)
    assert out.shape == (5,) and (out < 1).all()
    np.testing.assert_array_equal(out, random_logit(sal, x, similarity="spearman", seed=0))
    exp = sal.explain(x)
    tgt = exp.target
    # given maps save the first explainer call and give the same numbers
    np.testing.assert_array_equal(
        random_logit(sal, x, maps=exp.values, similarity="spearman", seed=0), out)
    with pytest.raises(ValueError, match="maps has 2 rows for 5 inputs"):
        random_logit(sal, x, maps=exp.values[:2])
    with pytest.raises(ValueError, match="other_target must differ"):
        random_logit(sal, x, other_target=tgt)
    with pytest.raises(ValueError, match="one class per input"):
        random_logit(sal, x, other_target=[0])


# ---------------------------------------------------------------------- ROAD
def test_noisy_linear_imputation_by_hand():
    # one removed pixel in the middle of a 3x3 image: the weighted mean of its 8 neighbours
    img = np.arange(9.0).reshape(1, 3, 3)
    out = noisy_linear_imputation(img, [4], noise=0.0)
    side, diag = (1 + 3 + 5 + 7) / 6, (0 + 2 + 6 + 8) / 12
    assert out[0, 1, 1] == pytest.approx(side + diag)
    np.testing.assert_array_equal(np.delete(out.reshape(-1), 4), np.delete(img.reshape(-1), 4))
    # a linear ramp is imputed exactly (each removed pixel is the mean of symmetric neighbours)
    ramp = np.tile(np.arange(6.0), (6, 1))[None]
    hole = [14, 15, 20, 21]
    np.testing.assert_allclose(noisy_linear_imputation(ramp, hole, noise=0.0), ramp,
                               atol=1e-12)
    # the noise has the stated spread
    noisy = noisy_linear_imputation(np.zeros((1, 40, 40)), np.arange(0, 1600, 2), noise=0.1)
    assert noisy.reshape(-1)[::2].std() == pytest.approx(0.1, rel=0.1)
    with pytest.raises(ValueError, match="at least one kept pixel"):
        noisy_linear_imputation(img, np.arange(9))


def test_road_curves():
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))
    model = wrap(module, input_shape=(1, 4, 4))
    x = torch.rand(3, 1, 4, 4)
    grad = module[1].weight[0] - module[1].weight[1]  # the logit gap's exact gradient
    maps = (grad.detach() * x.reshape(3, -1)).reshape(3, 1, 4, 4).numpy()
    c = road(model, x, maps, fractions=[0.25, 0.5, 0.75], seed=0)
    assert c.scores.shape == c.extra["correct"].shape == (3, 3) and c.n_queries == 9
    np.testing.assert_array_equal(c.scores, road(model, x, maps, fractions=[0.25, 0.5, 0.75],
                                                 seed=0).scores)
    # a model that reads the top-left quadrant, an image whose only content is a blob there,
    # the blob as the map: MoRF imputes the blob away from its dark neighbours (the score
    # falls to chance), LeRF keeps it to the end
    class Quadrant(torch.nn.Module):
        def forward(self, z):
            m = 10 * z[:, 0, :4, :4].mean((1, 2))
            return torch.stack([m, -m], 1)

    quad = wrap(Quadrant(), input_shape=(1, 8, 8))
    blob = torch.zeros(2, 1, 8, 8)
    blob[:, :, 1:3, 1:3] = 1.0
    blob_map = blob.numpy() + np.linspace(0, 1e-3, 64).reshape(1, 1, 8, 8)  # no ties
    fr = [0.1, 0.25, 0.5, 0.75]
    morf = road(quad, blob, blob_map, fractions=fr, order="morf", noise=0.0)
    lerf = road(quad, blob, blob_map, fractions=fr, order="lerf", noise=0.0)
    np.testing.assert_allclose(morf.scores, 0.5, atol=1e-6)
    assert (lerf.scores > 0.8).all() and lerf.extra["order"] == "lerf"
    small = wrap(module, input_shape=(1, 4, 4), batch_size=2)
    np.testing.assert_allclose(road(small, x, maps, fractions=[0.25, 0.5, 0.75]).scores,
                               c.scores, rtol=1e-6)
    with pytest.raises(ValueError, match=r"fractions must be increasing values in \[0, 1\)"):
        road(model, x, maps, fractions=[0.5, 1.0])
    with pytest.raises(ValueError, match="maps must have shape"):
        road(model, x, maps[:, :, :3])
    with pytest.raises(ValueError, match="road needs a non-empty batch of images"):
        road(wrap(torch.nn.Linear(4, 2), input_shape=(4,)), torch.zeros(2, 4),
             np.zeros((2, 4)))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_metrics_on_cuda_match_cpu(net):
    module, x = net
    cpu = _Net()
    cpu.load_state_dict(module.state_dict())
    gpu = _Net().cuda()
    gpu.load_state_dict(module.state_dict())
    maps = _saliency(cpu).explain(x).values
    # float32 kernels differ between devices: 1e-4 on probabilities in [0, 1]
    kw = dict(k=10, n_samples=50, seed=0)
    np.testing.assert_allclose(
        prediction_gap_important(wrap(gpu, input_shape=(1, 6, 6)), x.cuda(), maps, **kw),
        prediction_gap_important(wrap(cpu, input_shape=(1, 6, 6)), x, maps, **kw), atol=1e-4)
    np.testing.assert_allclose(
        road(wrap(gpu, input_shape=(1, 6, 6)), x.cuda(), maps, fractions=[0.2, 0.6]).scores,
        road(wrap(cpu, input_shape=(1, 6, 6)), x, maps, fractions=[0.2, 0.6]).scores, atol=1e-4)

    def on_gpu(m):
        return Saliency(wrap(m, input_shape=(1, 6, 6), device="cuda"))

    # Spearman of gradient maps: ranks can swap where float32 gradients nearly tie
    np.testing.assert_allclose(mprt(on_gpu, gpu, x.cuda()).similarity,
                               mprt(_saliency, cpu, x).similarity, atol=1e-3)


# ---------------------------------------------------------------- IROF, selectivity, sensitivity-n
def test_sensitivity_n_is_one_for_exact_attributions():
    """Ancona et al.'s proposition: gradient x input of a linear logit from a zero baseline
    sums exactly to the drop of every subset, so the correlation is 1 at every n; a
    shuffled attribution is not."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(10, 3)
    model = wrap(lin, input_shape=(10,))
    x = torch.randn(4, 10)
    y = model.predict(x)
    att = (lin.weight.detach()[y] * x).numpy()
    r = sensitivity_n(model, x, att, n_subsets=50)
    np.testing.assert_allclose(r.scores, 1.0, atol=1e-6)
    assert r.scores.shape == (4, len(r.fractions)) and r.fractions[0] == 1
    shuffled = sensitivity_n(model, x, att[:, ::-1].copy(), n_subsets=50)
    assert (shuffled.auc < 0.9).all()
    with pytest.raises(ValueError, match=r"ns must be subset sizes in \[1, 9\]"):
        sensitivity_n(model, x, att, ns=[0, 3])


def test_irof_and_selectivity_by_hand():
    """A model that is the mean of the top-left 2x2 patch: removing that patch (to 0) first
    drops the score to 0 at step 1, whatever comes next."""
    class TopLeft(torch.nn.Module):
        def forward(self, x):
            m = x[:, 0, :2, :2].mean((1, 2))
            return torch.stack([m, -m], 1)

    model = wrap(TopLeft(), input_shape=(1, 4, 4))
    x = torch.ones(2, 1, 4, 4)
    maps = np.zeros((2, 1, 4, 4))
    maps[:, :, :2, :2] = 1.0
    sel = selectivity(model, x, maps, patch_size=2, output="logit")
    np.testing.assert_allclose(sel.scores, 0.0, atol=1e-7)  # 4 patches, the first is the one
    segs = np.zeros((2, 4, 4), int)
    segs[:, 2:] = 1  # the top half first (it holds the relevant patch)
    c = irof(model, x, maps, segments=segs, fill=Constant(0.0), output="logit")
    np.testing.assert_allclose(c.scores, 0.0, atol=1e-7)
    # curve 1, 0, 0 at x = 0, 1/2, 1: area under 1/4 (one trapezoid), over 3/4
    np.testing.assert_allclose(c.auc, 0.75)
    segs[:, 2:] = 0
    segs[:, :2] = 1  # labels swapped: same order by relevance, same result
    np.testing.assert_allclose(irof(model, x, maps, segments=segs, fill=Constant(0.0),
                                    output="logit").auc, 0.75)
    with pytest.raises(ValueError, match="must be labelled 0, 1, ..., k - 1"):
        irof(model, x, maps, segments=segs + 1)
    with pytest.raises(ValueError, match=r"segments must have shape \(2, 4, 4\)"):
        irof(model, x, maps, segments=segs[:, :3])


# ---------------------------------------------------------------------- axiomatic
def _mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))


def test_completeness_and_non_sensitivity_by_hand():
    torch.manual_seed(0)
    lin = torch.nn.Linear(4, 2)
    model = wrap(lin, input_shape=(4,))
    x = torch.randn(3, 4)
    y = model.predict(x)
    exact = (lin.weight.detach()[y] * x).numpy()  # gradient x input of the logit, baseline 0
    np.testing.assert_allclose(completeness(model, x, exact), 0.0, atol=1e-5)
    np.testing.assert_allclose(completeness(model, x, exact * 2),
                               np.abs(exact.sum(1)), rtol=1e-5)
    # non-sensitivity: feature 3 has weight 0 in both classes
    with torch.no_grad():
        lin.weight[:, 3] = 0.0
    exact = (lin.weight.detach()[y] * x).numpy()
    assert non_sensitivity(model, x, exact, eps=1e-6).tolist() == [0.0] * 3
    wrong = exact.copy()
    wrong[:, 3] = 1.0  # attributes the inert feature
    wrong[:, 0] = 0.0  # and nothing to an active one
    assert non_sensitivity(model, x, wrong, eps=1e-6).tolist() == [2.0] * 3
    with pytest.raises(ValueError, match="maps contains? .*NaN"):
        completeness(model, x, np.full((3, 4), np.nan))
    with pytest.raises(ValueError, match="maps has 2 rows for 3 inputs"):
        completeness(model, x, exact[:2])


def test_input_invariance():
    module = _mlp()
    x = torch.rand(4, 5)

    def saliency(m):
        return Saliency(wrap(m, input_shape=(5,)), output="logit")

    class TimesInput:  # gradient x input: not invariant to a shift of the input
        def __init__(self, m):
            self.inner = saliency(m)

        def explain(self, x, target=None):
            exp = self.inner.explain(x, target=target)
            exp.values = exp.values * np.asarray(x)
            return exp

    np.testing.assert_allclose(input_invariance(saliency, module, x, shift=-1.0), 0.0,
                               atol=1e-5)
    assert (input_invariance(TimesInput, module, x, shift=-1.0) > 1e-2).all()
    with pytest.raises(ValueError, match="Linear or torch.nn.Conv2d"):
        input_invariance(saliency, torch.nn.Sequential(torch.nn.Tanh()), x)


# ---------------------------------------------------------------------- relative stability
def test_relative_stability_by_hand():
    """A linear model explained by its (constant) gradient: the explanation never changes,
    so RIS = ROS = RRS = 0; gradient x input changes exactly as the input, relative to it:
    RIS = 1 wherever no input element is 0."""
    torch.manual_seed(0)
    lin = torch.nn.Sequential(torch.nn.Linear(6, 3))
    sal = Saliency(wrap(lin, input_shape=(6,)), output="logit")
    x = torch.rand(5, 6) + 0.5
    kw = dict(n_neighbours=8, radius=0.01, seed=0)
    for fn in (relative_input_stability, relative_output_stability):
        np.testing.assert_allclose(fn(sal, x, **kw), 0.0, atol=1e-9)
    np.testing.assert_allclose(relative_representation_stability(sal, x, layer="0", **kw), 0.0,
                               atol=1e-9)

    class TimesInput:
        model = sal.model

        def explain(self, x, target=None):
            exp = sal.explain(x, target=target)
            exp.values = exp.values * np.asarray(x)
            return exp

    np.testing.assert_allclose(relative_input_stability(TimesInput(), x, **kw), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="layer must name a submodule"):
        relative_representation_stability(sal, x, layer="nope")
    with pytest.raises(ValueError, match="eps_min must be"):
        relative_input_stability(sal, x, eps_min=0)


def test_absolute_maps_sum_channel_magnitudes():
    # with absolute=True, opposite signs in two channels add up (Σ_c |a_c|) instead of
    # cancelling: 1 + 1 of 2.5 of mass on the masked pixel
    from calix.metrics.agreement import rank_correlation
    from calix.metrics.localization import relevance_mass_accuracy

    maps = np.zeros((1, 2, 2, 2))
    maps[0, 0, 0, 0], maps[0, 1, 0, 0], maps[0, 0, 1, 1] = 1.0, -1.0, 0.5
    mask = np.zeros((1, 2, 2), dtype=bool)
    mask[0, 0, 0] = True
    np.testing.assert_allclose(relevance_mass_accuracy(maps, mask, absolute=True), [0.8])
    truth = np.array([[[3.0, 0.0], [0.0, 1.0]]])
    np.testing.assert_allclose(rank_correlation(maps, truth, absolute=True),
                               rank_correlation(np.abs(maps).sum(1), truth, absolute=True))
