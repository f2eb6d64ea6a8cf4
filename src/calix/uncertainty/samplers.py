"""Model samplers: T stochastic versions of one model, and their registry.

:class:`Sampler` is the base (``models()`` yields the T sample models; ``batched`` samplers
make every row of a batch an independent draw). :data:`SAMPLERS` maps names to sampler
classes (the Flipout sampler registers itself from :mod:`calix.uncertainty.flipout`).

- :class:`MCDropout` -- dropout kept on at inference. Masks are drawn per row from one seeded
  generator per dropout layer (a forward hook; the module's train/eval mode is untouched, so
  batch-norm layers stay in eval mode). Because ``torch.rand`` gives the same stream however
  a draw is split, T·n rows in one pass get exactly the masks of T sequential passes of n
  rows, so for explainers that send one row per input (``single_pass``: Saliency, Guided
  Backprop) the whole distribution is ONE explainer call on the inputs repeated T times.
  Explainers that send many rows per input (IG steps, SmoothGrad copies, LIME perturbations)
  get T sampled sub-networks instead (:meth:`MCDropout.models`: one unit mask per layer and
  sample, shared by all rows), so one sample is one network.
- :class:`MCDropConnect` -- Bernoulli masks on the weights of chosen layers (rescaled by
  1/(1 − p)); each sample is a different weight set, applied in place and restored.
- :class:`DeepEnsemble` -- M separately trained models (:func:`train_ensemble` trains zoo
  models with different seeds).

Samplers are context managers over their side effects: hooks are removed and weights restored
on exit, even after an error.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from calix._registry import Registry
from calix._validation import check_count
from calix.models import Model, TorchModel, wrap

__all__ = [
    "SAMPLERS", "Sampler", "MCDropout", "MCDropConnect", "DeepEnsemble", "train_ensemble",
]


#: name -> sampler class. Metadata: ``needs_training`` -- False where the sampler draws from
#: any one trained model (the samplers of dataset-scale runs, :mod:`calix.parallel`), True
#: where it needs models trained for it (an ensemble, Flipout layers).
SAMPLERS: Registry[type[Sampler]] = Registry("uncertainty sampler")


def _module_of(model: Model) -> nn.Module:
    if isinstance(model, TorchModel):
        return model.module
    base = getattr(model, "base", None)
    if isinstance(base, Model):
        return _module_of(base)
    raise TypeError("this sampler needs a torch model (calix.wrap of an nn.Module)")


class Sampler:
    """T stochastic versions of a model.

    ``batched`` samplers make every *row* of a batch an independent draw, so T samples of n
    inputs are one call on the inputs repeated T times; the others yield T models in turn.
    """

    batched: bool = False
    n_samples: int

    def models(self) -> Iterator[Model]:  # pragma: no cover - overridden
        """Yield the T sample models (side effects undone after each)."""
        raise NotImplementedError

    def active(self) -> contextlib.AbstractContextManager:  # pragma: no cover - overridden
        """Context in which the model is stochastic per row (batched samplers only)."""
        raise NotImplementedError


@SAMPLERS.register("mc_dropout", needs_training=False)
class MCDropout(Sampler):
    """Monte-Carlo dropout with seeded per-row masks (see the module docstring).

    Parameters
    ----------
    model : calix Model wrapping an ``nn.Module`` with ``nn.Dropout`` layers
    n_samples : int -- T (default 30)
    p : float or None -- override every dropout layer's probability (None keeps each layer's
        own p; p = 0 reproduces the deterministic model).
    seed : int
    """

    batched = True

    def __init__(self, model: Any, *, n_samples: int = 30, p: float | None = None,
                 seed: int = 0):
        self.model = wrap(model)
        self.module = _module_of(self.model)
        self.layers = [m for m in self.module.modules() if isinstance(m, nn.Dropout)]
        if not self.layers:
            raise ValueError("MC-Dropout needs a model with nn.Dropout layers")
        n_samples = check_count(n_samples, "n_samples")
        if p is not None and not 0.0 <= p < 1.0:
            raise ValueError(f"p must lie in [0, 1), got {p}")
        self.n_samples, self.p, self.seed = int(n_samples), p, int(seed)

    @contextlib.contextmanager
    def active(self, *, shared: bool = False) -> Iterator[Model]:
        """Dropout on from fresh seeded generators; hooks removed on exit.

        ``shared=False``: a fresh mask for every row (each row is its own network draw).
        ``shared=True``: one unit mask per layer, shared by every row until
        :meth:`_resample` -- one sampled sub-network, whatever rows an explainer sends.
        """
        handles = []
        self._masks: dict[int, torch.Tensor] = {}
        for i, layer in enumerate(self.layers):
            g = torch.Generator().manual_seed(self.seed * 1000 + i)
            rate = layer.p if self.p is None else self.p

            def hook(mod, inputs, output, g=g, rate=rate, i=i):
                x = inputs[0]
                if rate == 0.0:
                    return x
                if not shared:
                    keep = torch.rand(x.shape, generator=g).to(x.device) >= rate
                    return x * keep / (1.0 - rate)
                mask = self._masks.get(i)
                if mask is None or mask.shape != x.shape[1:]:
                    mask = (torch.rand(x.shape[1:], generator=g) >= rate).to(x.device)
                    self._masks[i] = mask
                return x * mask / (1.0 - rate)

            handles.append(layer.register_forward_hook(hook))
        try:
            yield self.model
        finally:
            for h in handles:
                h.remove()
            self._masks = {}

    def _resample(self) -> None:
        self._masks = {}

    def models(self) -> Iterator[Model]:
        """T sampled sub-networks: one unit mask per dropout layer and sample, shared by
        every row, so multi-row explainers (IG steps, LIME perturbations) explain one network
        per sample."""
        with self.active(shared=True) as m:
            for _ in range(self.n_samples):
                self._resample()
                yield m


@SAMPLERS.register("mc_dropconnect", needs_training=False)
class MCDropConnect(Sampler):
    """Monte-Carlo DropConnect: Bernoulli(1 − p) masks on the weights of ``layers`` (default
    every Linear and Conv2d), rescaled by 1/(1 − p); biases are kept. Each of the T samples
    masks the weights in place and restores them afterwards."""

    def __init__(self, model: Any, *, n_samples: int = 30, p: float = 0.1,
                 layers: Sequence[str] | None = None, seed: int = 0):
        self.model = wrap(model)
        self.module = _module_of(self.model)
        if not 0.0 <= p < 1.0:
            raise ValueError(f"p must lie in [0, 1), got {p}")
        named = dict(self.module.named_modules())
        if layers is None:
            layers = [n for n, m in named.items() if isinstance(m, nn.Linear | nn.Conv2d)]
        missing = [n for n in layers if n not in named]
        if missing or not layers:
            raise ValueError(f"unknown or no layers to mask: {missing or layers}")
        self.layer_names = list(layers)
        n_samples = check_count(n_samples, "n_samples")
        self.n_samples, self.p, self.seed = int(n_samples), float(p), int(seed)

    @contextlib.contextmanager
    def masked(self, generator: torch.Generator) -> Iterator[Model]:
        """One sample: weights masked in place, restored on exit."""
        saved = {}
        try:
            with torch.no_grad():
                for name in self.layer_names:
                    w = self.module.get_submodule(name).weight
                    saved[name] = w.detach().clone()
                    keep = torch.rand(w.shape, generator=generator).to(w.device) >= self.p
                    w.mul_(keep / (1.0 - self.p))
            yield self.model
        finally:
            with torch.no_grad():
                for name, w in saved.items():
                    self.module.get_submodule(name).weight.copy_(w)

    def models(self) -> Iterator[Model]:
        g = torch.Generator().manual_seed(self.seed)
        for _ in range(self.n_samples):
            with self.masked(g) as m:
                yield m


@SAMPLERS.register("deep_ensemble", needs_training=True)
class DeepEnsemble(Sampler):
    """A deep ensemble: each member is one sample."""

    def __init__(self, models: Sequence[Any]):
        if len(models) < 2:
            raise ValueError("an ensemble needs at least two models")
        self.members = [wrap(m) for m in models]
        self.model = self.members[0]
        self.n_samples = len(self.members)

    def models(self) -> Iterator[Model]:
        yield from self.members

    def mean_model(self) -> Model:
        """The ensemble's own prediction as one differentiable model: the mean of the members'
        probabilities (classifiers, a model whose output is probabilities) or of their outputs
        (regressors)."""
        members = self.members
        task = members[0].task

        def forward(x: torch.Tensor) -> torch.Tensor:
            if task == "regression":
                return torch.stack([m.forward(x) for m in members]).mean(0)
            return torch.stack([torch.softmax(m.forward(x), -1) for m in members]).mean(0)

        return wrap(forward, backend="torch", task=task,
                    output="logits" if task == "regression" else "probabilities",
                    input_shape=members[0].input_shape)


def train_ensemble(name: str, data: Any, *, n_members: int = 5, seed: int = 0,
                   **kwargs: Any) -> DeepEnsemble:
    """Train ``n_members`` zoo models with seeds seed, seed + 1, … (cached) as an ensemble."""
    from calix import zoo

    return DeepEnsemble([zoo.train(name, data, seed=seed + i, **kwargs).wrap()
                         for i in range(n_members)])
