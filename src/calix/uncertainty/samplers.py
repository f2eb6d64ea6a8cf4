"""Uncertainty on explanations: stochastic model samplers and explanation distributions.

A sampler stands for T stochastic versions of one model. Running any calix explainer on
every version gives T maps per input; :func:`explanation_distribution` returns their mean E_μ,
standard deviation E_σ and coefficient of variation E_σ / E_μ.

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
- :class:`Flipout` -- Bayesian layers (:class:`FlipoutLinear`, :class:`FlipoutConv2d`) trained
  by ELBO with the Flipout estimator (:func:`train_flipout`); like MC-Dropout every row draws
  its own weights, so sampling is batched.

Samplers are context managers over their side effects: hooks are removed and weights restored
on exit, even after an error.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from calix._registry import Registry
from calix._validation import check_count
from calix.explain.base import Explainer, Explanation
from calix.models import Model, TorchModel, as_tensor, wrap

__all__ = [
    "Sampler", "MCDropout", "MCDropConnect", "DeepEnsemble", "train_ensemble",
    "explanation_distribution", "coefficient_of_variation", "predictive_uncertainty",
    "PredictiveUncertainty", "mean_cv", "cv_by_class", "Flipout", "FlipoutLinear",
    "FlipoutConv2d", "to_flipout", "train_flipout", "elbo_regularizer", "flipout_layers",
    "distribution_curves", "SAMPLERS",
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


def coefficient_of_variation(mean: np.ndarray, std: np.ndarray, *, eps: float | None = None
                             ) -> np.ndarray:
    """CV = E_σ / |E_μ| per feature with a guard where |E_μ| ≈ 0.

    The guard: where |E_μ| < ε the CV is set to 0 and reported as masked; ε defaults to 1% of
    the largest |E_μ| of each input (so the CV is never inf or NaN).

    Returns
    -------
    ndarray like ``mean`` (the CV) -- masked entries are 0.
    """
    m = np.abs(np.asarray(mean, dtype=np.float64))
    s = np.asarray(std, dtype=np.float64)
    flat = m.reshape(len(m), -1)
    if eps is None:
        eps_i = 0.01 * flat.max(1)
        eps_arr = eps_i.reshape(-1, *([1] * (m.ndim - 1)))
    else:
        eps_arr = float(eps)
    ok = m >= np.maximum(eps_arr, 1e-12)
    return np.where(ok, s / np.where(ok, m, 1.0), 0.0)


def explanation_distribution(explainer: Explainer | Callable[[Model], Explainer],
                             sampler: Sampler, x: Any, *, target: Any = None) -> Explanation:
    """Explain ``x`` under every stochastic sample and summarise.

    Parameters
    ----------
    explainer : an Explainer of the sampler's model, or a factory model -> Explainer (needed
        for ensembles, whose members are different models)
    sampler : MCDropout, MCDropConnect or DeepEnsemble
    x : inputs (n, *input_shape) or one input
    target : None (the class predicted by the mean of the samples, explained in every
        sample), an int, or one label per input (the paper's ground-truth variant)

    Returns
    -------
    Explanation with ``values`` = E_μ (n, ...), ``std`` = E_σ, ``extra["cv"]`` (guarded CV),
    ``extra["cv_masked"]`` (where |E_μ| was too small), ``extra["samples"]`` (T, n, ...), and
    ``n_queries`` over all samples.
    """
    if isinstance(explainer, Explainer) and isinstance(sampler, DeepEnsemble):
        raise ValueError("an ensemble's members are different models: pass a factory "
                         "model -> Explainer, e.g. lambda m: IntegratedGradients(m)")

    def make(model: Model) -> Explainer:
        return explainer if isinstance(explainer, Explainer) else explainer(model)

    xb = as_tensor(x, name="x")
    first = sampler.model
    if first.input_shape is not None and tuple(xb.shape) == first.input_shape:
        xb = xb[None]
    if xb.ndim < 2 or len(xb) == 0:
        raise ValueError(f"x must be one input or a non-empty batch (n, *input_shape), got "
                         f"shape {tuple(xb.shape)}")
    n = len(xb)
    if target is None:
        probs = predictive_uncertainty(sampler, xb).mean_probs
        tgt = probs.argmax(1)
    else:  # indices, class names and their range, as every explainer resolves them
        tgt = make(first).targets(first.check_input(xb), target).numpy()
    T = check_count(sampler.n_samples, "n_samples", width=xb.numel())
    queries = 0
    if sampler.batched and getattr(make(sampler.model), "single_pass", False):
        with sampler.active() as model:
            ex = make(model)
            rep = xb.repeat(T, *([1] * (xb.ndim - 1)))  # sample t = rows t·n … (t+1)·n
            out = ex.explain(rep, target=np.tile(tgt, T))
        maps = out.values.reshape(T, n, *out.values.shape[1:])
        queries, method, params = out.n_queries or 0, out.method, out.params
    else:
        collected = []
        for model in sampler.models():  # T different models: one batched call each
            out = make(model).explain(xb, target=tgt)
            collected.append(out.values)
            queries += out.n_queries or 0
        maps = np.stack(collected)
        method, params = out.method, out.params
    maps = maps.astype(np.float64)
    mean, std = maps.mean(0), maps.std(0)
    cv = coefficient_of_variation(mean, std)
    masked = (cv == 0) & (std > 0)
    return Explanation(values=mean, method=f"{method}@{type(sampler).__name__}", target=tgt,
                       n_queries=queries, params={**params, "n_samples": T}, std=std,
                       extra={"cv": cv, "cv_masked": masked, "samples": maps})


@dataclass
class PredictiveUncertainty:
    """Predictive summaries over T samples.

    Attributes
    ----------
    mean_probs : ndarray (n, k) -- the predictive distribution (mean of the samples).
    entropy : ndarray (n,) -- total uncertainty H[E p].
    mutual_information : ndarray (n,) -- epistemic part H[E p] − E H[p].
    probs : ndarray (T, n, k)
    """

    mean_probs: np.ndarray
    entropy: np.ndarray
    mutual_information: np.ndarray
    probs: np.ndarray


def predictive_uncertainty(sampler: Sampler, x: Any) -> PredictiveUncertainty:
    """Predictive entropy and mutual information of a sampler on inputs x (n, ...)."""
    xb = as_tensor(x, name="x")
    if xb.ndim < 2 or len(xb) == 0:
        raise ValueError(f"x must be a non-empty batch of shape (n, *input_shape), got shape "
                         f"{tuple(xb.shape)}")
    # the T copies of the batch are built at once
    T = check_count(sampler.n_samples, "n_samples", width=xb.numel())
    with torch.no_grad():
        if sampler.batched:
            with sampler.active() as model:
                rep = xb.repeat(T, *([1] * (xb.ndim - 1)))
                probs = torch.softmax(model.forward(rep), -1).reshape(T, len(xb), -1)
        else:
            probs = torch.stack([torch.softmax(m.forward(xb), -1) for m in sampler.models()])
    p = probs.double().cpu().numpy()
    mean = p.mean(0)

    def ent(q):
        return -(q * np.log(np.clip(q, 1e-12, 1.0))).sum(-1)

    h = ent(mean)
    return PredictiveUncertainty(mean, h, h - ent(p).mean(0), p)



def mean_cv(exp: Explanation) -> np.ndarray:
    """Mean guarded CV per input over the features where it is defined, shape (n,)."""
    cv, masked = exp.extra["cv"], exp.extra["cv_masked"]
    flat_cv = cv.reshape(len(cv), -1)
    valid = ~masked.reshape(len(cv), -1) & (exp.std.reshape(len(cv), -1) > 0)
    counts = valid.sum(1)
    return np.where(counts > 0, (flat_cv * valid).sum(1) / np.maximum(counts, 1), 0.0)


def cv_by_class(exp: Explanation, labels: Any = None) -> dict[int, float]:
    """Mean CV per class (the paper's class-level analysis); ``labels`` default: the targets."""
    lab = np.asarray(exp.target if labels is None else labels)
    per_input = mean_cv(exp)
    return {int(c): float(per_input[lab == c].mean()) for c in np.unique(lab)}


# ---------------------------------------------------------------------- Flipout
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


def distribution_curves(model: Any, x: Any, dist: Explanation, *, fill: Any = None,
                        steps: int = 50, output: str = "probability") -> dict[str, Any]:
    """The paper's modified insertion/deletion: rank pixels by the mean map E_μ and,
    separately, by the std map E_σ; delete / insert in ``steps`` steps with ``fill`` (default
    zero), following the target probability.

    Returns
    -------
    dict with ``deletion_mean``, ``insertion_mean``, ``deletion_std``, ``insertion_std``
    (:class:`~calix.metrics.faithfulness.Curve` each; ``.auc`` is (n,)).
    """
    from calix.metrics.faithfulness import deletion_curve, insertion_curve

    out = {}
    for name, maps in (("mean", dist.values), ("std", dist.std)):
        kw = dict(fill=fill, steps=steps, target=dist.target, output=output)
        out[f"deletion_{name}"] = deletion_curve(model, x, maps, **kw)
        out[f"insertion_{name}"] = insertion_curve(model, x, maps, **kw)
    return out
