"""Perturbation explainers (calix.explain.perturbation): Occlusion equals Captum's
FeatureAblation, RISE and Meaningful Perturbation find a known region, and wrong input shapes
are refused."""

import numpy as np
import pytest
import torch
from torch import nn

from calix.explain import RISE, MeaningfulPerturbation, Occlusion
from calix.models import wrap
from calix.perturb import Constant, PatchGrid
from tests._explain_models import _cnn, _mlp


def test_occlusion_equals_captum_feature_ablation():
    from captum.attr import FeatureAblation

    net = _cnn()
    model = wrap(net, input_shape=(1, 8, 8))
    x = torch.rand(3, 1, 8, 8)
    exp = Occlusion(model, features=PatchGrid(2), fill=Constant(0.0)).explain(x, target=1)
    mask = PatchGrid(2).segment(x).labels[:1]
    ref = FeatureAblation(lambda t: torch.softmax(net(t), 1)).attribute(
        x, baselines=0.0, target=1, feature_mask=mask)
    np.testing.assert_allclose(exp.values, ref.detach().numpy(), atol=1e-6)
    assert exp.n_queries == 3 * 17


class _RegionModel(nn.Module):
    """Class 1's logit is the mean brightness of the 4×4 block at rows 2–5, columns 9–12."""

    def forward(self, x):
        s = x[:, 0, 2:6, 9:13].mean((1, 2))
        return torch.stack([torch.zeros_like(s), 8 * (s - 0.5)], 1)


def _region_input():
    x = torch.full((1, 1, 16, 16), 0.3)
    x[0, 0, 2:6, 9:13] = 1.0
    return x


def _region_mass(values):
    v = np.abs(values[0, 0])
    inside = v[2:6, 9:13].mean()
    outside = (v.sum() - v[2:6, 9:13].sum()) / (256 - 16)
    return inside, outside


def test_rise_puts_its_mass_on_the_region():
    model = wrap(_RegionModel(), input_shape=(1, 16, 16))
    exp = RISE(model, n_masks=2000, grid=4, p=0.5, seed=0).explain(_region_input(), target=1)
    inside, outside = _region_mass(exp.values - exp.values.min())
    assert inside > 2 * outside
    assert exp.n_queries == 2000


def test_meaningful_perturbation_deletes_the_region():
    model = wrap(_RegionModel(), input_shape=(1, 16, 16))
    mp = MeaningfulPerturbation(model, fill=Constant(0.0), steps=150, lr=0.1)
    exp = mp.explain(_region_input(), target=1)
    inside, outside = _region_mass(exp.values)
    assert inside > 0.5 and inside > 5 * outside
    assert exp.extra["deleted_score"][0] < 0.1  # deleting the region kills the class


def test_wrong_input_shape_for_explainer():
    model = wrap(_mlp(), input_shape=(8,))
    with pytest.raises(ValueError, match=r"must have shape \(n, 8\)"):
        Occlusion(model).explain(torch.randn(2, 9))
    with pytest.raises(ValueError, match="RISE explains images"):
        RISE(model, n_masks=4).explain(torch.randn(2, 8))
