"""Flipout: Bayesian layers trained by ELBO, and the sampler that draws from them.

:class:`FlipoutLinear` and :class:`FlipoutConv2d` hold mean-field Gaussian weights sampled
with the Flipout estimator (Wen et al. 2018); :func:`to_flipout` swaps a network's linear and
convolution layers for them, :func:`flipout_layers` finds them, :func:`elbo_regularizer` is
the KL term of the ELBO and :func:`train_flipout` trains a zoo architecture with it. The
:class:`Flipout` sampler (registered in :data:`calix.uncertainty.SAMPLERS`) gives every row
its own weights, so sampling is batched like MC-Dropout.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from calix._validation import check_count
from calix.models import Model, wrap
from calix.uncertainty.samplers import SAMPLERS, Sampler, _module_of

__all__ = [
    "Flipout", "FlipoutLinear", "FlipoutConv2d", "to_flipout", "train_flipout",
    "elbo_regularizer", "flipout_layers",
]


class _FlipoutMixin:
    """Mean-field Gaussian weights q(W) = N(μ, softplus(ρ)²) with a N(0, prior_std²) prior,
    sampled with the Flipout estimator (Wen et al. 2018): one ΔW per batch, decorrelated per
    example by random sign vectors, so every row sees its own weight sample.

    ``sample`` switches sampling on (training, or inside :class:`Flipout`); otherwise the layer
    uses its mean weights. ``generator`` (optional) seeds the draws.
    """

    prior_std: float
    sample: bool
    generator: torch.Generator | None

    def _init_bayes(self, prior_std: float) -> None:
        self.prior_std = float(prior_std)
        self.sample = False
        self.generator = None
        self.fixed: tuple[torch.Tensor, torch.Tensor | None] | None = None
        with torch.no_grad():
            for name in ("weight", "bias"):
                p = getattr(self, name, None)
                if p is not None:
                    rho = nn.Parameter(torch.full_like(p, -5.0))  # σ ≈ 0.0067 at the start
                    self.register_parameter(f"{name}_rho", rho)

    def _rand(self, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
        return torch.rand(shape, generator=self.generator).to(device) if self.generator \
            is not None else torch.rand(shape, device=device)

    def _normal(self, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
        from calix._random import std_normal

        if self.generator is not None:
            return std_normal(torch.Size(shape), self.generator).to(device)
        return torch.randn(shape, device=device)

    def _signs(self, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
        return (self._rand(shape, device) < 0.5).float() * 2 - 1

    def kl(self) -> torch.Tensor:
        """KL(q ‖ p) summed over weights and biases."""
        total = 0.0
        for name in ("weight", "bias"):
            mu = getattr(self, name, None)
            if mu is None:
                continue
            sigma = nn.functional.softplus(getattr(self, f"{name}_rho"))
            total = total + (torch.log(self.prior_std / sigma)
                             + (sigma**2 + mu**2) / (2 * self.prior_std**2) - 0.5).sum()
        return total

    def draw_fixed(self) -> None:
        """Fix one weight sample W = μ + σ ε (used by every row until cleared)."""
        dev = self.weight.device
        db = self._delta("bias", dev) if self.bias is not None else None
        self.fixed = (self._delta("weight", dev), db)

    def _delta(self, name: str, device: torch.device) -> torch.Tensor:
        mu = getattr(self, name)
        sigma = nn.functional.softplus(getattr(self, f"{name}_rho"))
        return sigma * self._normal(tuple(mu.shape), device)


class FlipoutLinear(_FlipoutMixin, nn.Linear):
    """A Bayesian ``nn.Linear`` trained with Flipout (see :class:`_FlipoutMixin`)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 prior_std: float = 1.0):
        super().__init__(in_features, out_features, bias=bias)
        self._init_bayes(prior_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fixed is not None:
            dw, db = self.fixed
            return nn.functional.linear(x, self.weight + dw,
                                        None if self.bias is None else self.bias + db)
        out = nn.functional.linear(x, self.weight, self.bias)
        if not (self.sample or self.training):
            return out
        s_in = self._signs((x.shape[0], self.in_features), x.device)
        s_out = self._signs((x.shape[0], self.out_features), x.device)
        dw = self._delta("weight", x.device)
        pert = nn.functional.linear(x * s_in, dw) * s_out
        if self.bias is not None:
            pert = pert + self._delta("bias", x.device) * s_out
        return out + pert


class FlipoutConv2d(_FlipoutMixin, nn.Conv2d):
    """A Bayesian ``nn.Conv2d`` trained with Flipout (see :class:`_FlipoutMixin`)."""

    def __init__(self, *args: Any, prior_std: float = 1.0, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._init_bayes(prior_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fixed is not None:
            dw, db = self.fixed
            return self._conv_forward(x, self.weight + dw,
                                      None if self.bias is None else self.bias + db)
        out = self._conv_forward(x, self.weight, self.bias)
        if not (self.sample or self.training):
            return out
        s_in = self._signs((x.shape[0], self.in_channels, 1, 1), x.device)
        s_out = self._signs((x.shape[0], self.out_channels, 1, 1), x.device)
        dw = self._delta("weight", x.device)
        db = self._delta("bias", x.device) if self.bias is not None else None
        pert = self._conv_forward(x * s_in, dw, db) * s_out
        return out + pert


def flipout_layers(module: nn.Module) -> list[_FlipoutMixin]:
    """The Flipout layers of a module."""
    return [m for m in module.modules() if isinstance(m, _FlipoutMixin)]


def to_flipout(module: nn.Module, *, prior_std: float = 1.0) -> nn.Module:
    """A copy of ``module`` with every Linear / Conv2d replaced by its Flipout version
    (weights copied as the initial means), on the device and in the dtype of the layer it
    replaces. Dropout layers are kept (set dropout=0 in the zoo architecture for a pure
    Flipout model)."""
    import copy

    new = copy.deepcopy(module)
    for name, child in list(new.named_children()):
        if isinstance(child, nn.Linear):
            rep: nn.Module = FlipoutLinear(child.in_features, child.out_features,
                                           child.bias is not None, prior_std=prior_std)
        elif isinstance(child, nn.Conv2d):
            rep = FlipoutConv2d(child.in_channels, child.out_channels, child.kernel_size,
                                stride=child.stride, padding=child.padding,
                                bias=child.bias is not None, prior_std=prior_std)
        else:
            setattr(new, name, to_flipout(child, prior_std=prior_std))
            continue
        rep = rep.to(device=child.weight.device, dtype=child.weight.dtype)
        with torch.no_grad():
            rep.weight.copy_(child.weight)
            if child.bias is not None:
                rep.bias.copy_(child.bias)
        setattr(new, name, rep)
    return new


def elbo_regularizer(n_train: int) -> Callable[[nn.Module], torch.Tensor]:
    """KL(q ‖ p) / n_train, the ELBO's complexity term per example (add to the NLL)."""
    def reg(module: nn.Module) -> torch.Tensor:
        return sum(layer.kl() for layer in flipout_layers(module)) / n_train

    return reg


def train_flipout(name: str, data: Any, *, seed: int = 0, epochs: int | None = None,
                  prior_std: float = 1.0, progress: bool = False) -> Model:
    """Train a zoo architecture (``cnn`` or ``mlp``, dropout 0) with Flipout layers by ELBO.

    Not cached (the zoo cache keys plain modules); seconds on CPU for the digit sets.
    """
    from calix import data as data_mod
    from calix import zoo
    from calix.train import fit

    ds = data_mod.load(data) if isinstance(data, str) else data
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = to_flipout(zoo.build(name, ds, dropout=0.0), prior_std=prior_std)
    hp = zoo.ZOO[name]
    fit(module, ds.X_train, ds.y_train, task=ds.task, epochs=epochs or hp["epochs"],
        lr=hp["lr"], batch_size=hp["batch_size"], seed=seed,
        regularizer=elbo_regularizer(len(ds.X_train)), progress=progress)
    return wrap(module, task=ds.task, input_shape=ds.input_shape)


@SAMPLERS.register("flipout", needs_training=True)
class Flipout(Sampler):
    """Samples of a Flipout-trained model: every row draws its own weights (batched like
    :class:`MCDropout`), seeded per layer; the layers return to their mean weights on exit.

    Flipout shares one weight perturbation ΔW per pass and decorrelates the rows with random
    sign flips, so rows are marginally exact posterior samples but not independent, and a
    batched pass is not the same as T sequential passes (unlike :class:`MCDropout`)."""

    batched = True

    def __init__(self, model: Any, *, n_samples: int = 30, seed: int = 0):
        self.model = wrap(model)
        self.layers = flipout_layers(_module_of(self.model))
        if not self.layers:
            raise ValueError("Flipout sampling needs a model with Flipout layers "
                             "(see to_flipout / train_flipout)")
        self.n_samples, self.seed = check_count(n_samples, "n_samples"), int(seed)

    @contextlib.contextmanager
    def active(self) -> Iterator[Model]:
        """Per-row Flipout sampling, seeded; restored on exit."""
        saved = [(layer.sample, layer.generator, layer.fixed) for layer in self.layers]
        try:
            for i, layer in enumerate(self.layers):
                layer.sample = True
                layer.generator = torch.Generator().manual_seed(self.seed * 1000 + i)
            yield self.model
        finally:
            for layer, (s, g, f) in zip(self.layers, saved, strict=True):
                layer.sample, layer.generator, layer.fixed = s, g, f

    def models(self) -> Iterator[Model]:
        """T fixed weight samples W_t = μ + σ ε_t, each shared by every row."""
        with self.active() as m:
            for _ in range(self.n_samples):
                with torch.no_grad():
                    for layer in self.layers:
                        layer.draw_fixed()
                yield m
