"""ImageNet-shaped networks (calix.nets): layouts, parameter counts, explainers on them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from calix.explain import RISE, IntegratedGradients, KernelSHAP, Occlusion, Saliency
from calix.models import wrap
from calix.nets import (
    BasicBlock,
    Bottleneck,
    ResNet,
    ViT,
    count_parameters,
    resnet18,
    resnet50,
    vit_tiny,
)
from calix.perturb import Constant, PatchGrid

# Published parameter counts of torchvision's resnet18 / resnet50 and timm's
# vit_tiny_patch16_224 (1000 classes, 224x224).
REFERENCE = {"resnet18": 11_689_512, "resnet50": 25_557_032, "vit_tiny": 5_717_416}


@pytest.mark.parametrize("build, name", [(resnet18, "resnet18"), (resnet50, "resnet50"),
                                         (vit_tiny, "vit_tiny")])
def test_full_width_parameter_counts_match_the_reference_models(build, name):
    net = build()  # built once per architecture, never run
    assert count_parameters(net) == REFERENCE[name]
    assert not net.training


def test_resnet_layouts():
    r18, r50 = resnet18(width=0.125), resnet50(width=0.125)
    # stride 2 on the first block of stages 2-4: on the first 3x3 convolution of a BasicBlock,
    # on the 3x3 (second) convolution of a Bottleneck (torchvision's "ResNet v1.5")
    for net, block, layers, strided in [(r18, BasicBlock, [2, 2, 2, 2], "conv1"),
                                        (r50, Bottleneck, [3, 4, 6, 3], "conv2")]:
        stages = [net.layer1, net.layer2, net.layer3, net.layer4]
        assert [len(s) for s in stages] == layers
        assert all(isinstance(b, block) for s in stages for b in s)
        strides = [getattr(s[0], strided).stride for s in stages]
        assert strides == [(1, 1), (2, 2), (2, 2), (2, 2)]
    assert r18.fc.in_features == 64 and r50.fc.in_features == 256  # 512 / 2048 at width 1
    assert r18.conv1.out_channels == 8


def test_parameter_count_grows_with_width():
    # convolutions scale as width², the head linearly
    small, half = resnet18(width=0.25), resnet18(width=0.5)
    assert 3.5 < count_parameters(half) / count_parameters(small) < 4.0


@pytest.mark.parametrize("size", [32, 64, 97])
def test_resnet_runs_at_any_resolution(size):
    net = resnet50(num_classes=7, width=0.0625, in_channels=1)
    with torch.no_grad():
        out = net(torch.rand(2, 1, size, size))
    assert out.shape == (2, 7) and torch.isfinite(out).all()


def test_vit_shapes_and_errors():
    net = vit_tiny(num_classes=4, image_size=32, patch_size=8, depth=2)
    assert net.pos_embed.shape == (1, 17, 192)  # 16 patches + the class token
    with torch.no_grad():
        assert net(torch.rand(3, 3, 32, 32)).shape == (3, 4)
    with pytest.raises(ValueError, match="takes 32x32 images, got \\(64, 64\\)"):
        net(torch.rand(1, 3, 64, 64))
    with pytest.raises(ValueError, match="multiple of patch_size"):
        ViT(image_size=30, patch_size=8)
    with pytest.raises(ValueError, match="multiple of heads"):
        ViT(dim=10, heads=3)


def test_invalid_resnet_arguments():
    with pytest.raises(ValueError, match="layers must be 4"):
        ResNet(BasicBlock, [2, 2, 2])
    with pytest.raises(ValueError, match="width must be > 0"):
        resnet18(width=0)


def test_seeded_builds_are_reproducible_and_leave_the_global_rng_alone():
    state = torch.random.get_rng_state()
    a, b = resnet18(width=0.125, seed=3), resnet18(width=0.125, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    c = resnet18(width=0.125, seed=4)
    assert not torch.equal(a.conv1.weight, c.conv1.weight)


@pytest.fixture(scope="module")
def small():
    """A width-1/8 ResNet-18 on 32x32 images, wrapped, with two inputs."""
    net = resnet18(num_classes=10, width=0.125, seed=0)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    return wrap(net, batch_size=256), x


def test_gradient_explainers_on_a_small_resnet(small):
    model, x = small
    sal = Saliency(model, output="logit").explain(x, target=2)
    assert sal.values.shape == x.shape and np.abs(sal.values).max() > 0
    ig = IntegratedGradients(model, output="logit", n_steps=32).explain(x, target=2)
    with torch.no_grad():
        gap = (model.forward(x)[:, 2] - model.forward(torch.zeros_like(x))[:, 2]).numpy()
    # completeness (Gauss-Legendre, 32 steps), float32
    np.testing.assert_allclose(ig.values.reshape(2, -1).sum(1), gap,
                               atol=0.02 * np.abs(gap).max() + 1e-4)


def test_perturbation_explainers_on_a_small_resnet(small):
    model, x = small
    feats, fill = PatchGrid(8), Constant(0.0)  # 16 patches
    occ = Occlusion(model, features=feats, fill=fill, output="logit").explain(x, target=0)
    assert occ.feature_values.shape == (2, 16)
    x_off = x.clone()
    x_off[:, :, 8:16, 0:8] = 0.0  # patch 4 (row 1, column 0) removed
    with torch.no_grad():
        ref = (model.forward(x)[:, 0] - model.forward(x_off)[:, 0]).numpy()
    np.testing.assert_allclose(occ.feature_values[:, 4], ref, rtol=1e-4, atol=1e-5)

    shap = KernelSHAP(model, features=feats, fill=fill, n_samples=256, seed=0,
                      output="logit").explain(x, target=0)
    with torch.no_grad():
        gap = (model.forward(x)[:, 0] - model.forward(torch.zeros_like(x))[:, 0]).numpy()
    # efficiency: the Shapley values add up to s(x) − s(everything removed)
    np.testing.assert_allclose(shap.feature_values.sum(1), gap, rtol=1e-3, atol=1e-4)

    rise = RISE(model, n_masks=64, grid=4, seed=0).explain(x, target=0)
    assert rise.values.shape == (2, 1, 32, 32) and np.isfinite(rise.values).all()


def test_explainers_on_a_small_vit():
    net = vit_tiny(num_classes=5, image_size=32, patch_size=8, depth=2, seed=0)
    model = wrap(net, autocast="bf16")
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    sal = Saliency(model).explain(x)
    assert sal.values.shape == x.shape and np.abs(sal.values).max() > 0
    # one feature per ViT patch
    shap = KernelSHAP(model, features=PatchGrid(8), fill=Constant(0.0), n_samples=128,
                      seed=0).explain(x, target=1)
    assert shap.feature_values.shape == (2, 16) and np.isfinite(shap.feature_values).all()
