"""Cross-checks of calix's faithfulness and robustness metrics against Quantus.

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
