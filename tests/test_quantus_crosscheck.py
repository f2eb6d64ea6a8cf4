"""Cross-checks of calix's faithfulness and robustness metrics against Quantus (and, further
down, of localization, complexity, randomization and ROAD, each with its definitions).

Every test feeds calix and Quantus the same model (the zoo CNN on digits, 3 epochs: it trains
in about a second), the same images and the same explanations (calix ``Saliency``; Quantus gets
an ``explain_func`` that calls that very explainer), then asserts that the numbers agree.

Definitions, as read in Quantus 0.6's source:

- ``PixelFlipping`` (``metrics/faithfulness/pixel_flipping.py``): attributions are flattened
  (``abs=False``; ``normalise=True`` divides the whole batch by one positive number, which
  leaves the order alone), ordered by ``np.argsort(-a)`` (descending, *unstable* for ties),
  and ``features_in_step`` more pixels are set to ``perturb_baseline`` at each of
  ``ceil(d / features_in_step)`` steps, cumulatively. "black" is the minimum of the current
  (perturbed) input, 0 for digits, whose every image has a 0 pixel. After each step it records
  the target's *softmax probability* (``softmax=True`` is the default of ``__call__``). The
  curve has no point for the clean input: its first point already has one step removed, its
  last has every pixel removed. The AUC (``return_auc_per_sample``) is ``np.trapz`` with
  ``dx=1``.
- calix ``deletion_curve`` ranks pixels by the channel-summed map (stable descending sort:
  ties keep index order), and at fraction f removes the top ``round(f * d)`` pixels; with
  ``steps`` = the fractions ``k * step / d`` (k = 1..K) and ``normalize=False``,
  ``output="probability"`` it computes Quantus's curve point for point, and its AUC
  (trapezoid over the fractions) is Quantus's times ``step / d``.
- ``MaxSensitivity`` (``metrics/robustness/max_sensitivity.py``): max over ``nr_samples``
  neighbours x + U[-lower_bound, lower_bound]^d of ||E(x) - E(x')||_F / ||E(x)||_F, explaining
  ``y_batch`` at every neighbour; no attribution normalisation by default. calix
  ``sensitivity(kind="max", normalize=True, ball="linf", radius=lower_bound)`` is the same
  quantity, explaining the prediction at x at every neighbour.
- ``LocalLipschitzEstimate``: max over neighbours x + N(0, perturb_std^2) of
  ||E(x) - E(x')||_2 / (||x - x'||_2 + 1e-10). Its default ``normalise=True`` divides each
  batch of attributions by its batch-wide max |a| (so one input's score depends on the others
  in the batch); calix ``local_lipschitz`` never normalises, hence ``normalise=False`` here.
  calix defaults to a uniform L2 ball; ``ball="gaussian", radius=perturb_std`` matches Quantus.
- ``AvgSensitivity``: the mean instead of the max over neighbours (calix ``kind="avg"``).

Both samplers are Monte Carlo with different generators (numpy's global state vs a seeded torch
generator), so the max-sensitivity and Lipschitz tests replay calix's neighbours
(``calix.metrics.robustness.neighbours``, same seed as the metric uses) into Quantus through
a custom ``perturb_func``; a separate test checks that the two samplers draw from the same
distribution, and one compares the average sensitivity with independent samplers, within
the Monte-Carlo error.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

quantus = pytest.importorskip("quantus")

from calix import zoo  # noqa: E402
from calix.explain import Saliency  # noqa: E402
from calix.metrics.faithfulness import deletion_curve  # noqa: E402
from calix.metrics.robustness import local_lipschitz, neighbours, sensitivity  # noqa: E402

N = 8  # images
RADIUS = 0.05  # neighbourhood half-width (L-inf) / standard deviation (gaussian)


@pytest.fixture(scope="module")
def setup():
    trained = zoo.train("cnn", "digits", seed=0, epochs=3)
    model = trained.wrap()
    x = torch.as_tensor(trained.dataset.X_test[:N])
    sal = Saliency(model)  # gradient of the softmax probability of the target
    exp = sal.explain(x)
    return {"module": trained.module, "model": model, "x": x, "sal": sal,
            "maps": exp.values, "y": exp.target}


@pytest.fixture
def np_seed():
    """Quantus draws from numpy's global generator: seed it, and restore it afterwards."""
    state = np.random.get_state()  # noqa: NPY002
    np.random.seed(0)  # noqa: NPY002
    yield
    np.random.set_state(state)  # noqa: NPY002


def _explain_func(sal):
    """A Quantus ``explain_func`` that runs the calix explainer (identical explanations)."""

    def explain(model, inputs, targets, **kwargs):
        return sal.explain(inputs, target=targets).values

    return explain


def _replay(x: torch.Tensor, nb: torch.Tensor):
    """A Quantus ``perturb_func`` returning calix's neighbours, sample j at Quantus step j."""
    state = {"step": 0}
    x_flat = x.reshape(len(x), -1).numpy()

    def perturb(arr, indices, **kwargs):
        assert np.array_equal(arr, x_flat)  # Quantus perturbs the clean batch, in order
        j = state["step"]
        state["step"] += 1
        return nb[:, j].reshape(len(arr), -1).numpy()

    return perturb


# ---------------------------------------------------------------------- faithfulness
@pytest.mark.parametrize("step, quantus_kwargs", [
    (1, {}),  # Quantus's defaults: 1 pixel per step, normalise=True, black baseline
    (4, {"normalise": False, "perturb_baseline": "black"}),
])
def test_deletion_curve_equals_pixel_flipping(setup, monkeypatch, step, quantus_kwargs):
    x, maps, y = setup["x"], setup["maps"], setup["y"]
    d = x[0, 0].numel()
    # "black" is the image minimum: 0 for every digit, i.e. calix's default Constant(0) fill
    assert (x.reshape(N, -1).min(1).values == 0).all()
    # Quantus's argsort is unstable, calix's is stable: the orders agree only without ties
    flat = maps.reshape(N, -1)
    assert all(len(np.unique(row)) == d for row in flat), "tied attributions"

    pf = quantus.PixelFlipping(features_in_step=step, disable_warnings=True, **quantus_kwargs)
    q = np.asarray(pf(model=setup["module"], x_batch=x.numpy(), y_batch=y, a_batch=maps,
                      channel_first=True, softmax=True))
    n_steps = d // step
    fractions = np.arange(1, n_steps + 1) * step / d  # no clean point, as Quantus
    c = deletion_curve(setup["model"], x, maps, steps=fractions, normalize=False,
                       output="probability")
    assert q.shape == c.scores.shape == (N, n_steps)
    # Same inputs through the same float32 module; only the batch composition differs
    # (calix: N * K rows in one pass, Quantus: N rows per step), so kernels may round
    # differently: 1e-6 on probabilities in [0, 1] is a few float32 ulps. (Observed: 0.)
    np.testing.assert_allclose(c.scores, q, rtol=0, atol=1e-6)
    # the curves are not trivial: every one falls by more than 0.02 from its first point
    assert (c.scores[:, 0] - c.scores.min(1) > 0.02).all()
    # AUC: Quantus integrates with dx = 1, calix over the fractions (dx = step / d).
    # Quantus 0.6 calls np.trapz, which NumPy 2.4 removed: lend it np.trapezoid (same rule).
    if not hasattr(np, "trapz"):
        monkeypatch.setattr(np, "trapz", np.trapezoid, raising=False)
    pf_auc = quantus.PixelFlipping(features_in_step=step, disable_warnings=True,
                                   return_auc_per_sample=True, **quantus_kwargs)
    q_auc = np.asarray(pf_auc(model=setup["module"], x_batch=x.numpy(), y_batch=y,
                              a_batch=maps, channel_first=True, softmax=True))
    np.testing.assert_allclose(c.auc, q_auc * step / d, rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------------- robustness
def test_max_sensitivity_equals_quantus_on_same_neighbours(setup):
    x, sal, k = setup["x"], setup["sal"], 20
    c = sensitivity(sal, x, n_neighbours=k, radius=RADIUS, kind="max", normalize=True,
                    ball="linf", seed=0)
    nb = neighbours(x, k, RADIUS, ball="linf", seed=0)  # what sensitivity drew
    ms = quantus.MaxSensitivity(nr_samples=k, lower_bound=RADIUS, perturb_func=_replay(x, nb),
                                disable_warnings=True)
    q = np.asarray(ms(model=setup["module"], x_batch=x.numpy(), y_batch=setup["y"],
                      explain_func=_explain_func(sal), channel_first=True))
    # Identical explanations (float32 gradients, batch of N*k vs N rows: kernels may round
    # differently) and norms taken in float64 (calix) vs float32 (Quantus): relative 1e-5.
    # Observed: ~1e-7.
    np.testing.assert_allclose(c, q, rtol=1e-5)
    assert (c > 0.01).all()  # an actual sensitivity, not 0 / 0


def test_local_lipschitz_equals_quantus_on_same_neighbours(setup):
    x, sal, k = setup["x"], setup["sal"], 20
    c = local_lipschitz(sal, x, n_neighbours=k, radius=RADIUS, ball="gaussian", seed=0)
    nb = neighbours(x, k, RADIUS, ball="gaussian", seed=0)
    ll = quantus.LocalLipschitzEstimate(nr_samples=k, perturb_std=RADIUS, normalise=False,
                                        perturb_func=_replay(x, nb), disable_warnings=True)
    q = np.asarray(ll(model=setup["module"], x_batch=x.numpy(), y_batch=setup["y"],
                      explain_func=_explain_func(sal), channel_first=True))
    # As above, plus ||x - x'|| from float32 differences in both (and eps 1e-10 vs a 1e-12
    # clamp, both negligible against ||x - x'|| ~ RADIUS * 8): relative 1e-5.
    np.testing.assert_allclose(c, q, rtol=1e-5)
    assert (c > 0.01).all()


@pytest.mark.parametrize("ball, quantus_func, kwargs", [
    ("linf", "batch_uniform_noise", {"lower_bound": RADIUS}),
    ("gaussian", "batch_gaussian_noise", {"perturb_mean": 0.0, "perturb_std": RADIUS}),
])
def test_neighbour_samplers_match_quantus(setup, np_seed, ball, quantus_func, kwargs):
    """calix's ``linf`` / ``gaussian`` balls draw what Quantus's default perturb functions of
    MaxSensitivity / LocalLipschitzEstimate draw (with other random streams)."""
    from quantus.functions import perturb_func
    from scipy.stats import ks_2samp

    x, k = setup["x"], 20
    flat = x.reshape(N, -1).numpy()
    idx = np.tile(np.arange(flat.shape[1]), (N, 1))
    fn = getattr(perturb_func, quantus_func)
    dq = np.concatenate([fn(arr=flat, indices=idx, **kwargs) - flat for _ in range(k)])
    dc = (neighbours(x, k, RADIUS, ball=ball, seed=0) - x[:, None]).reshape(-1).numpy()
    dq = dq.reshape(-1)
    assert dc.size == dq.size == N * k * 64
    # 10,240 draws each. Two samples of one distribution give a KS p-value below 1e-3 with
    # probability 1e-3 (observed: D ~ 0.011, p ~ 0.5); calix's L2 ball ("uniform") instead
    # gives D ~ 0.37, p ~ 0, and a radius 10% off gives p ~ 1e-12 (L-inf) / 1e-3 (gaussian).
    res = ks_2samp(dc, dq)
    assert res.pvalue > 1e-3, res
    # the spread is the distribution's, r / sqrt(3) or r: the standard error of an sd from
    # 10,240 draws is < 1%, so 3% passes both and fails a radius 10% off
    sd = RADIUS / np.sqrt(3) if ball == "linf" else RADIUS
    np.testing.assert_allclose([dc.std(), dq.std()], sd, rtol=0.03)
    if ball == "linf":  # float32 rounding of x + delta may spill by an ulp
        assert np.abs(dc).max() <= RADIUS + 1e-6 and np.abs(dq).max() <= RADIUS + 1e-6


def test_avg_sensitivity_agrees_with_quantus_within_monte_carlo_error(setup, np_seed):
    """Independent samplers (Quantus's own ``batch_uniform_noise``): the mean over k
    neighbours of ||E(x) - E(x')|| / ||E(x)|| agrees within the Monte-Carlo error."""
    x, sal, k = setup["x"], setup["sal"], 100
    c = sensitivity(sal, x, n_neighbours=k, radius=RADIUS, kind="avg", ball="linf", seed=0)
    av = quantus.AvgSensitivity(nr_samples=k, lower_bound=RADIUS, disable_warnings=True)
    q = np.asarray(av(model=setup["module"], x_batch=x.numpy(), y_batch=setup["y"],
                      explain_func=_explain_func(sal), channel_first=True))
    # per-neighbour values from calix's draws, for the standard error of each mean
    nb = neighbours(x, k, RADIUS, ball="linf", seed=0)
    e0 = torch.as_tensor(sal.explain(x).values).reshape(N, 1, -1).double()
    e1 = torch.as_tensor(sal.explain(nb.reshape(N * k, *x.shape[1:]),
                                     target=np.repeat(setup["y"], k)).values)
    per = ((e1.reshape(N, k, -1).double() - e0).norm(dim=-1)
           / e0.norm(dim=-1)).numpy()  # (N, k)
    np.testing.assert_allclose(per.mean(1), c, rtol=1e-6)  # calix's own mean
    # difference of two independent means with the same spread: SE = sqrt(2) * sd / sqrt(k);
    # 4 SE bounds a correct pair with probability > 0.9999 per input (the seeds are fixed,
    # so the test is deterministic; observed |c - q| <= 1.2 SE). 4 SE is 11-18% of the value
    # here; calix at half or twice the radius is 30-70% off Quantus.
    se = np.sqrt(2) * per.std(1, ddof=1) / np.sqrt(k)
    assert (np.abs(c - q) <= 4 * se).all(), (c, q, se)
    assert (4 * se < 0.3 * c).all()  # the tolerance is informative


# ---------------------------------------------------------------------- localization
# Quantus 0.6 (metrics/localisation/*.py): attributions and masks flattened per input;
# PointingGame hits when any maximal element lies in the mask; RelevanceMassAccuracy is
# sum(a * s) / sum(a); RelevanceRankAccuracy the share of the top-|s| elements (argsort of
# -a) in s; TopKIntersection the share of the top-k in s; AUC sklearn's roc_curve + auc.
# Their default normalise=True divides the whole batch by one positive number, which changes
# neither an order nor a ratio.
@pytest.fixture(scope="module")
def masks(setup):
    rng = np.random.default_rng(0)
    return (rng.random((N, 1, 8, 8)) < 0.3).astype(np.float32)


@pytest.mark.parametrize("absolute", [False, True])
@pytest.mark.parametrize("name, calix_name, kwargs", [
    ("PointingGame", "pointing_game", {}),
    ("RelevanceMassAccuracy", "relevance_mass_accuracy", {}),
    ("RelevanceRankAccuracy", "relevance_rank_accuracy", {}),
    ("TopKIntersection", "top_k_intersection", {"k": 10}),
    ("AUC", "attribution_auc", {}),
])
def test_localization_equals_quantus(setup, masks, absolute, name, calix_name, kwargs):
    from calix.metrics import localization

    maps = setup["maps"]
    # rankings: Quantus's argsort is unstable, calix's stable; equal only without ties
    assert all(len(np.unique(np.abs(r))) == r.size for r in maps.reshape(N, -1))
    q = np.asarray(getattr(quantus, name)(abs=absolute, disable_warnings=True, **kwargs)(
        model=setup["module"], x_batch=setup["x"].numpy(), y_batch=setup["y"], a_batch=maps,
        s_batch=masks, channel_first=True), dtype=np.float64)
    c = getattr(localization, calix_name)(maps, masks, absolute=absolute, **kwargs)
    # Ranks and hits are exact; the mass ratio is summed in float32 by Quantus (after its
    # batch-wide division) and in float64 by calix: relative 1e-5. Observed: <= 3e-8.
    np.testing.assert_allclose(c, q, rtol=1e-5, atol=1e-12)
    assert len(np.unique(c)) > 1 or name == "PointingGame"  # not a constant answer


# ---------------------------------------------------------------------- complexity
def test_complexity_equals_quantus(setup):
    """Quantus 0.6 (metrics/complexity/*.py) with abs=True: Sparseness is the Gini index of
    a + 1e-7, Complexity the entropy -sum p log(p + 1e-12) of p = |a| / sum |a|,
    EffectiveComplexity the count of |a| > eps. Its normalise=True divides the batch by its
    largest |a|; calix's effective_complexity(normalize=True) divides each map by its own, so
    that one is compared on maps the batch maximum already divided."""
    from calix.metrics.complexity import complexity, effective_complexity, sparseness

    maps = setup["maps"]
    kw = dict(model=setup["module"], x_batch=setup["x"].numpy(), y_batch=setup["y"],
              channel_first=True)
    scaled = maps / np.abs(maps).max()  # what Quantus's normalise=True makes of the batch
    q_sp = np.asarray(quantus.Sparseness(disable_warnings=True)(a_batch=maps, **kw))
    q_cx = np.asarray(quantus.Complexity(disable_warnings=True)(a_batch=maps, **kw))
    # Quantus's + 1e-7 on 64 values of at most 1 (sum ~ 10): ~ 1e-6 absolute on the Gini
    # index; float32 vs float64 sums: 1e-6. Observed 4e-6 / 3e-7.
    np.testing.assert_allclose(sparseness(maps), q_sp, atol=1e-5)
    np.testing.assert_allclose(complexity(maps), q_cx, atol=1e-5)
    for eps in (1e-5, 0.05, 0.3):
        q = np.asarray(quantus.EffectiveComplexity(eps=eps, disable_warnings=True)(
            a_batch=maps, **kw))
        np.testing.assert_array_equal(effective_complexity(scaled, eps=eps, normalize=False), q)
    assert len(np.unique(effective_complexity(scaled, eps=0.05, normalize=False))) > 1


# ---------------------------------------------------------------------- randomization
def _calix_saliency(module):
    from calix import wrap

    return Saliency(wrap(module))


def _module_explain_func(model, inputs, targets, **kwargs):
    """A Quantus ``explain_func`` running calix Saliency on whatever module Quantus passes
    (the original or a randomized copy)."""
    return _calix_saliency(model).explain(inputs, target=targets).values


def test_mprt_equals_quantus(setup):
    """Quantus 0.6 MPRT (metrics/randomisation/mprt.py, helpers/model/pytorch_model.py):
    top-down cascade over the modules with ``reset_parameters``, each reset after
    ``torch.manual_seed(seed + 1)``; Spearman of |explanations| per layer. calix seeds every
    reset with ``seed``: calix seed s is Quantus seed s - 1, and the randomized models are
    the same."""
    from calix.metrics.randomization import mprt

    c = mprt(_calix_saliency, setup["module"], setup["x"], seed=1)
    q = quantus.MPRT(seed=0, disable_warnings=True)(
        model=setup["module"], x_batch=setup["x"].numpy(), y_batch=setup["y"], a_batch=None,
        explain_func=_module_explain_func, channel_first=True)
    assert c.layers == [k for k in q if k != "original"]
    # identical maps, and Spearman of average ranks on both sides: float64 round-off only
    np.testing.assert_allclose(c.similarity, np.array([q[k] for k in c.layers]), atol=1e-12)
    # the cascade decorrelates the maps (means over images: ~0.36 after one layer, ~0.13
    # after all)
    assert c.scores.mean() < c.similarity[0].mean() - 0.1


def test_efficient_mprt_equals_quantus(setup):
    """Quantus 0.6 EfficientMPRT: (H(e_last) - H(e_orig)) / H(e_orig), H the entropy of a
    100-bin histogram of the (signed: abs=False is its default) explanation; its default
    order is bottom-up, but the fully randomized model is the same in every order because
    every layer is reset from the same seed."""
    from calix.metrics.randomization import efficient_mprt

    c = efficient_mprt(_calix_saliency, setup["module"], setup["x"], seed=1)
    q = quantus.EfficientMPRT(seed=0, disable_warnings=True)(
        model=setup["module"], x_batch=setup["x"].numpy(), y_batch=setup["y"], a_batch=None,
        explain_func=_module_explain_func, channel_first=True)
    # same histograms (bin edges from the same min / max): float64 round-off only
    np.testing.assert_allclose(c.scores, q, atol=1e-12)
    assert np.abs(c.scores).max() > 0.01


class _AbsSaliency:
    """calix Saliency of the logit, in absolute value: what ``quantus.explain(method=
    "Saliency")`` returns, which Quantus's SmoothMPRT calls instead of ``explain_func``."""

    def __init__(self, module):
        from calix import wrap

        self.inner = Saliency(wrap(module), output="logit")

    def explain(self, x, target=None):
        exp = self.inner.explain(x, target=target)
        exp.values = np.abs(exp.values)
        return exp


@pytest.mark.parametrize("n_samples", [1, 20])
def test_smooth_mprt_agrees_with_quantus(setup, np_seed, n_samples):
    """Quantus 0.6 SmoothMPRT averages ``quantus.explain`` over nr_samples copies (the last
    one clean) with N(0, (0.1 * (max - min))^2) noise from numpy's global stream, drawn anew
    for every model; calix draws its copies once from its seed. One sample has no noise: the
    numbers are equal. With 20 the noise differs: per layer, the mean over images of the
    calix - Quantus difference agrees with 0 within 4 standard errors of the paired
    differences (the seeds are fixed, so the test is deterministic)."""
    from calix.metrics.randomization import smooth_mprt

    x = setup["x"] if n_samples == 1 else torch.as_tensor(
        zoo.train("cnn", "digits", seed=0, epochs=3).dataset.X_test[:48])
    y = setup["sal"].explain(x).target
    c = smooth_mprt(_AbsSaliency, setup["module"], x, n_samples=n_samples, seed=1)
    q = quantus.SmoothMPRT(seed=0, nr_samples=n_samples, layer_order="top_down",
                           disable_warnings=True)(
        model=setup["module"], x_batch=x.numpy(), y_batch=y, a_batch=None,
        explain_func=_module_explain_func, explain_func_kwargs={"method": "Saliency"},
        channel_first=True)
    qs = np.array([q[k] for k in c.layers])
    if n_samples == 1:  # float32 gradients from calix and Captum: ranks equal
        np.testing.assert_allclose(c.similarity, qs, atol=1e-12)
        return
    diff = c.similarity - qs
    se = diff.std(1, ddof=1) / np.sqrt(diff.shape[1])
    assert (np.abs(diff.mean(1)) <= 4 * se).all(), (diff.mean(1), se)
    assert (c.similarity.mean(1)[0] - c.similarity.mean(1)[-1]) > 10 * se.max()


def test_random_logit_equals_quantus(setup):
    """Quantus 0.6 RandomLogit seeds numpy with ``seed`` and draws the other class as
    ``randint(0, num_classes - 1)``-th of the classes left; calix takes those classes as
    ``other_target`` (its own draw uses a torch generator). Spearman similarity on both
    sides (Quantus's default SSIM runs on flattened 1-D maps, calix's on 2-D images)."""
    from quantus.functions.similarity_func import correlation_spearman

    from calix.metrics.randomization import random_logit

    x, y, k = setup["x"], setup["y"], 10
    q = quantus.RandomLogit(num_classes=k, seed=7, similarity_func=correlation_spearman,
                            abs=True, disable_warnings=True)(
        model=setup["module"], x_batch=x.numpy(), y_batch=y, a_batch=setup["maps"],
        explain_func=_explain_func(setup["sal"]), channel_first=True)
    state = np.random.get_state()  # noqa: NPY002
    np.random.seed(7)  # noqa: NPY002
    pick = np.random.randint(0, k - 1, N)  # noqa: NPY002
    np.random.set_state(state)  # noqa: NPY002
    others = np.array([[c for c in range(k) if c != t][j] for t, j in zip(y, pick, strict=True)])
    c = random_logit(setup["sal"], x, other_target=others, similarity="spearman", absolute=True)
    np.testing.assert_allclose(c, q, atol=1e-12)
    assert (c < 0.99).all()


# ---------------------------------------------------------------------- ROAD
def test_road_equals_quantus(setup):
    """Quantus 0.6 ROAD (metrics/faithfulness/road.py): for p = 1, 3, ..., 99 %, the top
    int(p * H * W / 100) pixels of argsort(-a) imputed by noisy linear imputation, then
    whether the prediction still equals y; its result is the mean over inputs per p.
    noise=0 makes both deterministic (the noise is N(0, noise^2) from numpy's stream in
    Quantus, from calix's seed in calix); ties would order differently, so maps without
    ties."""
    from quantus.functions.perturb_func import noisy_linear_imputation as q_impute

    from calix.metrics.removal import noisy_linear_imputation, road

    x, maps = setup["x"], setup["maps"]
    assert all(len(np.unique(r)) == r.size for r in maps.reshape(N, -1))
    c = road(setup["model"], x, maps, noise=0.0)
    q = quantus.ROAD(noise=0.0, disable_warnings=True)(
        model=setup["module"], x_batch=x.numpy(), y_batch=setup["y"], a_batch=maps,
        channel_first=True)
    np.testing.assert_array_equal(np.array(list(q)), np.round(c.fractions * 100).astype(int))
    # predictions on the same imputed images (up to float32 rounding of Quantus's solve)
    np.testing.assert_array_equal(c.extra["correct"].mean(0), np.array(list(q.values())))
    assert c.extra["correct"][:, -1].mean() < 1  # removing pixels does change predictions
    # the imputation itself: Quantus solves in the input's float32, calix in float64
    order = np.argsort(-maps[0].reshape(-1))
    for k in (5, 20, 50):
        np.testing.assert_allclose(
            noisy_linear_imputation(x[0].numpy(), order[:k], noise=0.0),
            q_impute(x[0].numpy(), order[:k], noise=0.0), atol=1e-5)


# ---------------------------------------------------------------------- IROF, selectivity
def test_selectivity_equals_quantus(setup):
    """Quantus 0.6 Selectivity: patches of ``patch_size`` (no padding on 8 x 8 with 2),
    ordered by summed attribution (argsort of -sum), set to "black" (the image minimum, 0 on
    digits) one more at a time; the softmax probability after each step."""
    from calix.metrics.removal import selectivity

    x, maps = setup["x"], setup["maps"]
    c = selectivity(setup["model"], x, maps, patch_size=2)
    q = np.asarray(quantus.Selectivity(patch_size=2, disable_warnings=True)(
        model=setup["module"], x_batch=x.numpy(), y_batch=setup["y"], a_batch=maps,
        channel_first=True, softmax=True))
    # same images through the same float32 module, other batch compositions: 1e-6
    np.testing.assert_allclose(c.scores, q, atol=1e-6)
    assert c.scores.shape == (N, 16) and (c.scores[:, 0] - c.scores[:, -1] > 0.01).any()


def test_irof_equals_quantus(setup, monkeypatch):
    """Quantus 0.6 IROF: SLIC segments (``utils.get_superpixel_segments``), ordered by mean
    attribution, replaced one more at a time; the curve is p_j / p_0 and its score
    K - trapz(curve, dx=1). Its default "mean" fill takes the mean of the whole (already
    perturbed) batch; calix's is each clean image's mean, lent to Quantus as ``perturb_func``
    here, and calix is given Quantus's segments."""
    from quantus.helpers import utils

    from calix.metrics.removal import irof

    if not hasattr(np, "trapz"):  # Quantus 0.6 calls np.trapz, gone in NumPy 2.4
        monkeypatch.setattr(np, "trapz", np.trapezoid, raising=False)
    x, maps = setup["x"], setup["maps"]
    segs = np.stack([utils.get_superpixel_segments(img=np.moveaxis(xi, 0, -1).astype("double"),
                                                   segmentation_method="slic")
                     for xi in x.numpy()])
    means = x.numpy().reshape(N, -1).mean(1)

    def image_mean(arr, mask, **kwargs):
        return np.where(mask, means[:, None, None, None], arr)

    q = np.asarray(quantus.IROF(perturb_func=image_mean, return_aggregate=False,
                                disable_warnings=True)(
        model=setup["module"], x_batch=x.numpy(), y_batch=setup["y"], a_batch=maps,
        channel_first=True, softmax=True))
    c = irof(setup["model"], x, maps, segments=segs)
    k = c.extra["n_segments"]
    assert (k == k[0]).all()  # Quantus's trapz runs over every input's own K steps
    # ratios of float32 probabilities (~1e-7 each) summed over K steps: 1e-5
    np.testing.assert_allclose(q, k - np.trapezoid(c.scores, dx=1, axis=1), atol=1e-5)
    assert ((c.auc > 0) & (c.auc < 1)).all()


# ---------------------------------------------------------------------- axiomatic
def test_completeness_equals_quantus(setup):
    """Quantus 0.6 Completeness returns ``sum(a) == output_func(f(x) - f(baseline))``, an
    exact float equality that is False for any real explainer; its ``output_func`` is lent a
    function that records f(x) - f(baseline) (logits, "black" = the image minimum, 0 on
    digits), from which calix's gap |sum(a) - (f(x) - f(x_bar))| follows."""
    from calix.metrics.axiomatic import completeness

    x, maps = setup["x"], setup["maps"]
    seen = []

    def record(delta):
        seen.append(np.asarray(delta, dtype=np.float64))
        return delta

    quantus.Completeness(output_func=record, normalise=False, disable_warnings=True)(
        model=setup["module"], x_batch=x.numpy(), y_batch=setup["y"], a_batch=maps,
        channel_first=True)
    c = completeness(setup["model"], x, maps)
    # float32 logits (differences of ~1-10): 1e-5 absolute
    np.testing.assert_allclose(c, np.abs(maps.reshape(N, -1).sum(1) - seen[0]), atol=1e-5)
    assert (c > 0.1).all()  # saliency of a probability does not complete the logit


def test_non_sensitivity_equals_quantus(setup):
    """Quantus 0.6 NonSensitivity (features_in_step=1): every element alone set to "black"
    (0 on digits), |Δ softmax probability| < eps XOR |a| < eps, counted. normalise=False on
    both sides (Quantus's divides the batch by its largest |a|)."""
    from calix.metrics.axiomatic import non_sensitivity

    x, maps = setup["x"], setup["maps"]
    for eps in (1e-4, 1e-3):
        q = np.asarray(quantus.NonSensitivity(eps=eps, normalise=False, disable_warnings=True)(
            model=setup["module"], x_batch=x.numpy(), y_batch=setup["y"], a_batch=maps,
            channel_first=True))
        # counts of threshold tests on float32 probabilities: exact unless a difference
        # lies within float32 rounding of eps (none does here)
        np.testing.assert_array_equal(non_sensitivity(setup["model"], x, maps, eps=eps), q)


# ---------------------------------------------------------------------- relative stability
@pytest.mark.parametrize("name, kind", [("RelativeInputStability", "input"),
                                        ("RelativeOutputStability", "output"),
                                        ("RelativeRepresentationStability", "representation")])
def test_relative_stability_equals_quantus_on_same_neighbours(setup, name, kind):
    """Quantus 0.6 RIS / ROS / RRS (metrics/robustness/relative_*_stability.py): max over
    neighbours of ||(e - e')/e|| over ||(x - x')/x|| (RIS), ||h(x) - h(x')|| on the logits
    (ROS) or ||(L(x) - L(x'))/L(x)|| for a layer (RRS), zeros replaced by eps_min = 1e-6;
    a neighbour that changes the prediction makes Quantus's maximum NaN, while calix leaves
    that neighbour out. Quantus replays calix's neighbours."""
    from calix.metrics import relative_stability as rs

    x, sal, k = setup["x"], setup["sal"], 10
    nb = neighbours(x, k, RADIUS, ball="linf", seed=0)
    extra = {"layer_names": ["features.3"]} if kind == "representation" else {}
    q = np.asarray(getattr(quantus, name)(nr_samples=k, perturb_func=_replay(x, nb),
                                          disable_warnings=True, **extra)(
        model=setup["module"], x_batch=x.numpy(), y_batch=setup["y"], a_batch=setup["maps"],
        explain_func=_explain_func(sal), channel_first=True))
    fn = {"input": rs.relative_input_stability, "output": rs.relative_output_stability,
          "representation": rs.relative_representation_stability}[kind]
    kw = {"layer": "features.3"} if kind == "representation" else {}
    c = fn(sal, x, n_neighbours=k, radius=RADIUS, ball="linf", seed=0, **kw)
    ok = np.isfinite(q)
    assert ok.sum() >= N // 2 and np.isfinite(c).all()
    # float32 explanations and inputs in Quantus, float64 norms in calix: relative 1e-5
    # (observed ~1e-7)
    np.testing.assert_allclose(c[ok], q[ok], rtol=1e-5)
    # where Quantus gave NaN, some neighbour did change the prediction
    pred = setup["model"].predict(nb.reshape(N * k, *x.shape[1:])).reshape(N, k)
    assert ((pred != setup["y"][:, None]).any(1) | ok).all()


# ---------------------------------------------------------------------- interoperability
def test_calix_explainer_serves_as_quantus_explain_func(setup):
    """``as_explain_func``: a calix explainer (or a factory, for metrics that explain
    randomized copies) drives Quantus metrics, with the numbers of calix's own metric."""
    from calix import wrap
    from calix.metrics.randomization import mprt
    from calix.quantus_compat import as_explain_func

    x, sal, k = setup["x"], setup["sal"], 20
    nb = neighbours(x, k, RADIUS, ball="linf", seed=0)
    q = np.asarray(quantus.MaxSensitivity(nr_samples=k, lower_bound=RADIUS,
                                          perturb_func=_replay(x, nb), disable_warnings=True)(
        model=setup["module"], x_batch=x.numpy(), y_batch=setup["y"],
        explain_func=as_explain_func(sal), channel_first=True))
    c = sensitivity(sal, x, n_neighbours=k, radius=RADIUS, kind="max", ball="linf", seed=0)
    np.testing.assert_allclose(c, q, rtol=1e-5)  # as the max-sensitivity test above

    def factory(m):
        return Saliency(wrap(m))

    qm = quantus.MPRT(seed=0, disable_warnings=True)(
        model=setup["module"], x_batch=x.numpy(), y_batch=setup["y"], a_batch=None,
        explain_func=as_explain_func(factory), channel_first=True)
    cm = mprt(factory, setup["module"], x, seed=1)
    np.testing.assert_allclose(cm.similarity, [qm[n] for n in cm.layers], atol=1e-12)


def test_quantus_style_adapter(setup, masks):
    """``quantus_style``: calix metrics called the Quantus way (channel-last arrays too, and
    attributions computed from an ``explain_func``) give calix's numbers -- which equal
    Quantus's own where the definitions agree."""
    from calix.metrics import (
        completeness,
        complexity_entropy,
        mprt,
        pointing_game,
        random_logit,
        relevance_mass_accuracy,
    )
    from calix.quantus_compat import quantus_style

    x, maps, y, module = setup["x"], setup["maps"], setup["y"], setup["module"]
    kw = dict(model=module, x_batch=x.numpy(), y_batch=y, a_batch=maps, s_batch=masks)
    q = np.asarray(quantus.RelevanceMassAccuracy(disable_warnings=True)(channel_first=True,
                                                                        **kw))
    np.testing.assert_allclose(quantus_style(relevance_mass_accuracy)(**kw), q, rtol=1e-5)
    last = {k: np.moveaxis(v, 1, -1) if k != "y_batch" and k != "model" else v
            for k, v in kw.items()}
    np.testing.assert_array_equal(quantus_style(pointing_game)(channel_first=False, **last),
                                  pointing_game(maps, masks))
    np.testing.assert_array_equal(quantus_style(complexity_entropy)(**kw),
                                  complexity_entropy(maps))
    # a model-based metric: a_batch from the explain_func, target y_batch
    ef = _explain_func(setup["sal"])
    out = quantus_style(completeness)(module, x.numpy(), y, explain_func=ef)
    np.testing.assert_allclose(out, completeness(setup["model"], x, maps, target=y), rtol=1e-6)
    # explainer-based metrics run the explain_func through ExplainFuncExplainer
    other = (y + 1) % 10
    np.testing.assert_allclose(
        quantus_style(random_logit, other_target=other, similarity="spearman")(
            module, x.numpy(), y, explain_func=ef),
        random_logit(setup["sal"], x, other_target=other, similarity="spearman"), atol=1e-12)
    np.testing.assert_allclose(
        quantus_style(mprt, seed=1)(module, x.numpy(), y, explain_func=_module_explain_func),
        mprt(_calix_saliency, module, x, seed=1, target=y).scores, atol=1e-12)
    with pytest.raises(ValueError, match="needs s_batch"):
        quantus_style(pointing_game)(module, x.numpy(), y, a_batch=maps)
    with pytest.raises(ValueError, match="a_batch or an explain_func"):
        quantus_style(completeness)(module, x.numpy(), y)
    with pytest.raises(ValueError, match=r"channel_first=False needs x_batch of shape"):
        quantus_style(completeness)(module, x.numpy()[:, 0], y, a_batch=maps,
                                    channel_first=False)
