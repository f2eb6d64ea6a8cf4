"""Small seeded networks the explainer tests share."""

import torch
from torch import nn


def _mlp(d=8, k=3, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, 16), nn.ReLU(), nn.Linear(16, k))


def _cnn(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 8 * 8, 3))


class _SparseOdd(nn.Module):
    """Additive terms plus four products of three inputs: with the zero fill, a game whose odd
    part has four third-order terms."""

    def __init__(self, d: int = 12):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.a = torch.randn(d, generator=g)
        self.triples = [(0, 1, 2), (3, 5, 7), (2, 8, 11), (4, 9, 10)]

    def forward(self, u):
        out = u @ self.a
        for i, j, k in self.triples:
            out = out + 0.8 * u[:, i] * u[:, j] * u[:, k]
        return out[:, None]


def sparse_odd_game(d: int = 12):
    """:class:`_SparseOdd` as a regressor, two inputs around 1, zero fill: (model, x, exact
    Shapley values (2, d) by enumeration)."""
    from calix.explain import exact_shapley
    from calix.models import wrap
    from calix.perturb import Columns, Constant, Perturbation, all_coalitions

    model = wrap(_SparseOdd(d), task="regression")
    x = torch.randn(2, d, generator=torch.Generator().manual_seed(2)) + 1.0
    coal = all_coalitions(d)
    values = Perturbation(Columns(), Constant(0.0)).query(model, x, coal).outputs[..., 0]
    return model, x, exact_shapley(values.double(), coal).numpy()
