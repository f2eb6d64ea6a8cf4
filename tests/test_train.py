"""FPA (Feature Perturbation Augmentation), the batch transform of :mod:`calix.train`."""

import torch

from calix.train import FPA


def test_fpa_masks_have_the_configured_density_and_squares():
    fpa = FPA(p=1.0, p1_max=0.25, p2=0.0, s_max=3, seed=0)
    m = fpa.masks((400, 1, 16, 16), density=0.2)
    assert abs(m.float().mean().item() - 0.2) < 0.005  # single pixels only: density ρ
    # only squares (p2 = 1): side s ~ randint(0, 3) ∈ {0, 1, 2}; s = 2 grows a 2x2 square when
    # the corner is not on the last row/column (225 of 256 places), everything else is 1 pixel
    sq = FPA(p=1.0, p2=1.0, s_max=3, seed=1).masks((2000, 1, 16, 16), density=0.002)
    grow = (1 / 3) * (225 / 256)
    expected = 0.002 * (4 * grow + (1 - grow))
    assert abs(sq.float().mean().item() / expected - 1) < 0.1  # ~1000 corners: ±3% s.d.
    blocks = sq[:, :-1, :-1] & sq[:, 1:, :-1] & sq[:, :-1, 1:] & sq[:, 1:, 1:]
    assert blocks.sum() > 100  # 2x2 squares are there ...
    runs = sq[:, :, :-2] & sq[:, :, 1:-1] & sq[:, :, 2:]
    assert runs.float().mean() < 1e-4  # ... and nothing wider than s_max - 1 = 2
    x = torch.ones(8, 3, 16, 16)
    out = FPA(p=1.0, seed=0)(x)
    zeroed = out == 0
    assert (zeroed.all(1) | ~zeroed.any(1)).all()  # all channels together
    assert torch.equal(FPA(p=0.0, seed=0)(x), x)
    assert torch.equal(FPA(p=1.0, seed=5)(x), FPA(p=1.0, seed=5)(x))


def test_fpa_density_is_uniform_up_to_p1_max():
    fpa = FPA(p=1.0, p1_max=0.25, p2=0.0, seed=3)
    dens = torch.stack([fpa.masks((4, 1, 32, 32)).float().mean() for _ in range(300)])
    assert dens.max() <= 0.27 and abs(dens.mean().item() - 0.125) < 0.015
