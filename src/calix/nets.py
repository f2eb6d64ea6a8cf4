"""ImageNet-shaped networks in plain torch: ResNet-18, ResNet-50 and a small ViT.

Randomly initialised stand-ins for the models calix's users explain, with the layer layout,
parameter counts and compute of the real ones, for benchmarks and tests at realistic scale
(no weights are downloaded; torchvision is not needed).

- :func:`resnet18` -- BasicBlocks in stages [2, 2, 2, 2]; 11,689,512 parameters at full width
  with 1000 classes (torchvision's ``resnet18``: the same count);
- :func:`resnet50` -- Bottlenecks in stages [3, 4, 6, 3]; 25,557,032 parameters (torchvision's
  ``resnet50``: the same count);
- :func:`vit_tiny` -- a ViT-Ti/16: 16×16 patches, width 192, 12 pre-norm blocks of 3 heads;
  5,717,416 parameters (timm's ``vit_tiny_patch16_224``: the same count).

``width`` scales every channel count (0.25 gives a ResNet-18 of about 0.7 M parameters, quick on
a CPU) and the networks accept any resolution: ResNets pool adaptively, the ViT takes an
``image_size`` (its position embedding has one entry per patch). All modules are returned in
eval mode, ready for :func:`calix.wrap`.

Example
-------
>>> import torch
>>> from calix.nets import resnet18
>>> net = resnet18(num_classes=10, width=0.25)
>>> net(torch.zeros(2, 3, 64, 64)).shape
torch.Size([2, 10])
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from calix._registry import Registry

__all__ = [
    "BasicBlock", "Bottleneck", "ResNet", "resnet18", "resnet50",
    "ViT", "vit_tiny", "count_parameters", "ARCHITECTURES",
]

#: name -> network class or factory, called with keyword arguments (what
#: :func:`calix.model_io.load_model` builds a state_dict's module from): the networks here and
#: the zoo's ``cnn`` and ``mlp`` (registered by :mod:`calix.zoo`, metadata ``zoo=True``).
ARCHITECTURES: Registry = Registry("architecture")


def count_parameters(module: nn.Module) -> int:
    """Number of parameters of ``module`` (trainable or not)."""
    return sum(p.numel() for p in module.parameters())


def _channels(base: int, width: float) -> int:
    return max(1, int(round(base * width)))


class BasicBlock(nn.Module):
    """Two 3×3 convolutions with a residual connection (ResNet-18/34)."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_planes, planes * self.expansion, stride)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1×1 → 3×3 (strided) → 1×1 convolutions, 4× expansion (ResNet-50/101, torchvision's
    "ResNet v1.5": the stride sits on the 3×3 convolution)."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_planes, planes * self.expansion, stride)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def _shortcut(in_planes: int, out_planes: int, stride: int) -> nn.Module | None:
    if stride == 1 and in_planes == out_planes:
        return None
    return nn.Sequential(
        nn.Conv2d(in_planes, out_planes, 1, stride, bias=False), nn.BatchNorm2d(out_planes))


class ResNet(nn.Module):
    """A ResNet with torchvision's layout: 7×7/2 stem, 3×3/2 max-pool, four stages (strides
    1, 2, 2, 2), adaptive average pool, linear head.

    Parameters
    ----------
    block : BasicBlock or Bottleneck
    layers : sequence of 4 int -- blocks per stage ([2, 2, 2, 2] for ResNet-18).
    num_classes : int
    width : float -- multiplier of every channel count (1.0: 64, 128, 256, 512 base planes).
    in_channels : int

    Input of shape (n, in_channels, H, W) with H, W ≥ 32 for a spatial map at every stage
    (smaller images still run; the last stages then see 1×1 maps); output (n, num_classes).
    """

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], layers: list[int] | tuple,
                 *, num_classes: int = 1000, width: float = 1.0, in_channels: int = 3):
        super().__init__()
        if len(layers) != 4 or any(int(n) < 1 for n in layers):
            raise ValueError(f"layers must be 4 positive block counts, got {list(layers)}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if not width > 0:
            raise ValueError(f"width must be > 0, got {width}")
        planes = [_channels(p, width) for p in (64, 128, 256, 512)]
        self.in_planes = planes[0]
        self.conv1 = nn.Conv2d(in_channels, planes[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(planes[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        stages = []
        for i, (p, n) in enumerate(zip(planes, layers, strict=True)):
            blocks = []
            for j in range(int(n)):
                blocks.append(block(self.in_planes, p, 2 if (i > 0 and j == 0) else 1))
                self.in_planes = p * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(self.in_planes, num_classes)
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


@ARCHITECTURES.register("resnet18", zoo=False)
def resnet18(*, num_classes: int = 1000, width: float = 1.0, in_channels: int = 3,
             seed: int | None = 0) -> ResNet:
    """ResNet-18 (BasicBlock, [2, 2, 2, 2]); 11,689,512 parameters at width 1 with 1000
    classes. Random weights drawn from ``seed`` (None: the global generator), eval mode."""
    return _build(lambda: ResNet(BasicBlock, [2, 2, 2, 2], num_classes=num_classes,
                                 width=width, in_channels=in_channels), seed)


@ARCHITECTURES.register("resnet50", zoo=False)
def resnet50(*, num_classes: int = 1000, width: float = 1.0, in_channels: int = 3,
             seed: int | None = 0) -> ResNet:
    """ResNet-50 (Bottleneck, [3, 4, 6, 3]); 25,557,032 parameters at width 1 with 1000
    classes. Random weights drawn from ``seed`` (None: the global generator), eval mode."""
    return _build(lambda: ResNet(Bottleneck, [3, 4, 6, 3], num_classes=num_classes,
                                 width=width, in_channels=in_channels), seed)


class _Block(nn.Module):
    """Pre-norm transformer block: x + MHA(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """A Vision Transformer: patch-embedding convolution, class token, learned position
    embedding, ``depth`` pre-norm blocks, final LayerNorm, linear head on the class token.

    Parameters
    ----------
    image_size : int -- side of the (square) input; a multiple of ``patch_size``.
    patch_size : int
    dim : int -- token width; a multiple of ``heads``.
    depth : int -- number of transformer blocks.
    heads : int
    mlp_ratio : float -- hidden width of the MLP over ``dim``.
    num_classes : int
    in_channels : int

    Input of shape (n, in_channels, image_size, image_size); output (n, num_classes).
    """

    def __init__(self, *, image_size: int = 224, patch_size: int = 16, dim: int = 192,
                 depth: int = 12, heads: int = 3, mlp_ratio: float = 4.0,
                 num_classes: int = 1000, in_channels: int = 3):
        super().__init__()
        if patch_size < 1 or image_size % patch_size:
            raise ValueError(f"image_size ({image_size}) must be a positive multiple of "
                             f"patch_size ({patch_size})")
        if dim < 1 or heads < 1 or dim % heads:
            raise ValueError(f"dim ({dim}) must be a positive multiple of heads ({heads})")
        if depth < 1 or num_classes < 1:
            raise ValueError(f"depth and num_classes must be >= 1, got {depth}, {num_classes}")
        self.image_size, self.patch_size = int(image_size), int(patch_size)
        n_patches = (image_size // patch_size) ** 2
        self.patch_embed = nn.Conv2d(in_channels, dim, patch_size, patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, n_patches + 1, dim))
        self.blocks = nn.Sequential(*[_Block(dim, heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(f"this ViT takes {self.image_size}x{self.image_size} images, got "
                             f"{tuple(x.shape[-2:])}; build it with image_size={x.shape[-1]}")
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)  # (n, n_patches, dim)
        cls = self.cls_token.expand(len(x), -1, -1).to(tokens.dtype)
        tokens = torch.cat([cls, tokens], dim=1) + self.pos_embed.to(tokens.dtype)
        tokens = self.norm(self.blocks(tokens))
        return self.head(tokens[:, 0])


@ARCHITECTURES.register("vit_tiny", zoo=False)
def vit_tiny(*, num_classes: int = 1000, image_size: int = 224, patch_size: int = 16,
             depth: int = 12, in_channels: int = 3, seed: int | None = 0) -> ViT:
    """ViT-Ti/16 (width 192, 3 heads, MLP 768); 5,717,416 parameters at 224×224 with 1000
    classes and 12 blocks. Random weights drawn from ``seed``, eval mode."""
    return _build(lambda: ViT(image_size=image_size, patch_size=patch_size, dim=192,
                              depth=depth, heads=3, num_classes=num_classes,
                              in_channels=in_channels), seed)


def _build(make, seed: int | None) -> nn.Module:
    if seed is None:
        net = make()
    else:
        with torch.random.fork_rng(devices=[]):  # leaves the global generator as it was
            torch.manual_seed(int(seed))
            net = make()
    return net.eval()
