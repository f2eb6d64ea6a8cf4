"""The games of benchmarks/shapley.py: exact values, efficiency, and the two forms agreeing."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import _games  # noqa: E402


@pytest.fixture(scope="module", params=_games.GAME_KEYS + _games.EXTRA_KEYS)
def game(request):
    n = 2 if request.param in ("e", "f") else 1  # synthetic: the all-ones input and another
    with torch.random.fork_rng(devices=[]):
        return _games.build_game(request.param, n_inputs=n)


def test_game_size(game):
    assert 8 <= game.d <= 20
    assert game.labels.shape == tuple(game.x.shape[1:])
    assert set(np.unique(game.labels)) == set(range(game.d))


def test_efficiency(game):
    phi = game.exact()
    v0, v1 = game.ends().T
    assert phi.shape == (game.n, game.d)
    np.testing.assert_allclose(phi.sum(1), v1 - v0, atol=1e-9)
    assert np.abs(v1 - v0).min() > 1e-3  # the explained change is not negligible


def test_pieces_equal_value_function(game):
    game.check_pieces(n_coalitions=24, seed=1)
    # and one coalition given as a 1-d array (as shapiq's permutation sampler passes it)
    z = np.zeros(game.d, dtype=bool)
    z[::2] = True
    np.testing.assert_allclose(game.value(0, z), game.pieces_value(0, z[None]), atol=1e-5)


def test_exact_matches_analytic(game):
    analytic = game.analytic()
    if analytic is None:
        pytest.skip("a model game: no closed form")
    np.testing.assert_allclose(game.exact(), analytic, atol=1e-5)


def test_synthetic_first_input_is_coalition_game():
    g = _games.build_game("f", n_inputs=1)
    assert torch.equal(g.x[0], torch.ones(g.d))
    rng = np.random.default_rng(0)
    z = rng.random((16, g.d)) < 0.5
    with torch.no_grad():
        direct = g.model.forward(torch.as_tensor(z, dtype=torch.float32))[:, 0].double().numpy()
    np.testing.assert_allclose(g.value(0, z), direct, atol=1e-6)


def test_high_order_game_is_not_additive():
    """Interactions of order >= 3 carry a large part of the high-order game's variance."""
    g = _games.build_game("f", n_inputs=1)
    from calix.perturb import all_coalitions

    z = all_coalitions(g.d).numpy().astype(np.float64)
    v = g.value(0, z)
    design = np.c_[np.ones(len(z)), z]
    iu, ju = np.triu_indices(g.d, 1)
    design2 = np.c_[design, z[:, iu] * z[:, ju]]
    resid = v - design2 @ np.linalg.lstsq(design2, v, rcond=None)[0]
    assert resid.var() > 0.05 * v.var()


def test_mlp_game_on_logits():
    """The logit form of an MLP game explains the logit: its two forms agree, its values are
    the log-odds-like scores (not in [0, 1]), and only the MLP games have it."""
    g = _games.build_game("a", n_inputs=1, output="logit")
    assert g.output == "logit" and g.name == "wine-mlp (logit)"
    g.check_pieces(n_coalitions=16, seed=2)
    z = np.random.default_rng(0).random((32, g.d)) < 0.5
    assert np.abs(g.value(0, z)).max() > 1.0
    with pytest.raises(ValueError, match="MLP games"):
        _games.build_game("c", n_inputs=1, output="logit")
