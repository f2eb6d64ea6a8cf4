"""Gradient explainers: Saliency, Integrated Gradients, SmoothGrad(²), Guided Backprop.

Integrated Gradients, Saliency and Guided Backprop run on Captum; calix supplies the forward
function (the model's calibrated probability, logit or log-probability of the target, through
calix's batched path) and the target handling. SmoothGrad is written here because calix needs
a noise scale per input (σ = ``noise`` · (max − min) of each input, as in the FPA protocol),
SmoothGrad² from the same draws, and a seeded generator; Captum's NoiseTunnel takes one σ per
input tensor and draws from the global random state.

Any Captum attribution object can be used as a calix explainer with :class:`CaptumExplainer`.

Example
-------
>>> from calix.explain import IntegratedGradients
>>> exp = IntegratedGradients(model, baselines="black", n_steps=30).explain(x)  # doctest: +SKIP
>>> exp.values.shape                                                           # doctest: +SKIP
(8, 1, 16, 16)
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import torch
from torch import Tensor, nn

from calix._validation import check_count
from calix.calibrate import check_differentiable
from calix.explain.base import Explainer, Stochastic, _Attribution, score
from calix.models import Model, TorchModel

__all__ = [
    "Saliency", "IntegratedGradients", "SmoothGrad", "GuidedBackprop", "CaptumExplainer",
    "as_forward",
]


class _ScoreModule(nn.Module):
    """An ``nn.Module`` whose forward is the calix model's transformed output (n, k).

    The wrapped torch module is registered as a child so hook-based Captum methods (Guided
    Backprop) find its ReLU modules.
    """

    def __init__(self, model: Model, output: str):
        super().__init__()
        self.model = model
        self.output = output
        inner = _torch_module(model)
        if inner is not None:
            self.inner = inner

    def forward(self, x: Tensor) -> Tensor:
        z = self.model.forward(x, grad=torch.is_grad_enabled())
        if self.model.task == "regression" or self.output == "logit":
            return z
        if self.output == "probability":
            return torch.softmax(z, dim=-1)
        return torch.log_softmax(z, dim=-1)


def _leaf(x: Tensor) -> Tensor:
    """A copy of ``x`` that requires grad (Captum warns when it has to switch that on)."""
    return x.detach().clone().requires_grad_(True)


def _torch_module(model: Model) -> nn.Module | None:
    if isinstance(model, TorchModel):
        return model.module
    base = getattr(model, "base", None)
    return _torch_module(base) if isinstance(base, Model) else None


def as_forward(model: Model, output: str = "probability") -> nn.Module:
    """The model's explained outputs (n, k) as an ``nn.Module``, for Captum and friends."""
    return _ScoreModule(model, output)


class _GradientExplainer(Explainer):
    """Shared checks: the model must be differentiable."""

    multiply_by_input: bool = False

    def __init__(self, model: Any, *, multiply_by_input: bool = False, **kwargs: Any):
        super().__init__(model, **kwargs)
        if not self.model.differentiable:
            raise TypeError(
                f"{type(self).__name__} needs gradients, but {type(self.model).__name__} is not "
                "differentiable; use a perturbation explainer (occlusion, LIME, KernelSHAP, "
                "RISE) for scikit-learn models and numpy callables"
            )
        check_differentiable(self.model, type(self).__name__)  # a calibrator gradients pass
        self.multiply_by_input = bool(multiply_by_input)
        self._forward = as_forward(self.model, self.output)

    def params(self) -> dict[str, Any]:
        return {**super().params(), "multiply_by_input": self.multiply_by_input}

    def _finish(self, attr: Tensor, x: Tensor, **extra: Any) -> _Attribution:
        if self.multiply_by_input:
            attr = attr * x
        return _Attribution(values=attr.detach(), extra=extra)


class Saliency(_GradientExplainer):
    """Vanilla gradient ∂s/∂x of the target score (Sensitivity when ``reduce="abs_sum"``).

    ``multiply_by_input=True`` gives gradient × input.
    """

    name = "saliency"
    single_pass = True  # one forward/backward row per input
    _fixed_cost = 1

    def _explain(self, x: Tensor, targets: Tensor) -> _Attribution:
        from captum.attr import Saliency as CaptumSaliency

        attr = CaptumSaliency(self._forward).attribute(
            _leaf(x), target=targets.to(x.device).tolist(), abs=False)
        return self._finish(attr, x)


def _baseline_tensors(baselines: Any, x: Tensor) -> list[Tensor]:
    named = {"zero": 0.0, "black": None, "white": None}
    items = baselines if isinstance(baselines, list | tuple) else [baselines]
    out = []
    for b in items:
        if isinstance(b, str):
            if b not in named:
                raise ValueError(f"unknown baseline {b!r}; use 'zero', 'black', 'white', a number "
                                 "or an array")
            if b == "zero":
                out.append(torch.zeros_like(x))
            else:  # darkest / brightest value of each input
                flat = x.reshape(len(x), -1)
                v = flat.min(1).values if b == "black" else flat.max(1).values
                out.append(v.view(-1, *([1] * (x.ndim - 1))).expand_as(x).clone())
        elif isinstance(b, int | float):
            out.append(torch.full_like(x, float(b)))
        else:
            t = torch.as_tensor(b, dtype=x.dtype, device=x.device)
            if tuple(t.shape) == tuple(x.shape[1:]):
                t = t.expand_as(x)
            if tuple(t.shape) != tuple(x.shape):
                raise ValueError(
                    f"baseline must have shape {tuple(x.shape[1:])} or {tuple(x.shape)}, "
                    f"got {tuple(t.shape)}"
                )
            if not torch.isfinite(t).all():
                raise ValueError("baseline contains NaN or infinite values")
            out.append(t.clone())
    if not out:
        raise ValueError("at least one baseline is needed")
    return out


class IntegratedGradients(_GradientExplainer):
    """Integrated Gradients (Sundararajan et al. 2017) on Captum, all steps batched.

    Parameters
    ----------
    baselines : str, number, array, or list of them
        ``"zero"``, ``"black"`` / ``"white"`` (each input's minimum / maximum), a constant, an
        array of the input's shape; a list averages IG over several baselines.
    n_steps : int or None
        Riemann / Gauss–Legendre steps (Captum's ``method``); default 50.
    budget : int or None
        Model queries per input instead of ``n_steps``: each baseline costs ``n_steps + 2``
        (the path and the two ends of the completeness check), so ``n_steps = budget //
        n_baselines − 2``.
    multiply_by_input : bool
        True (default): attributions are (x − baseline) × the path-averaged gradient, which
        satisfy completeness; False returns the path-averaged gradient alone.
    method : str
        Captum's integration rule (``"gausslegendre"``, ``"riemann_trapezoid"``, ...).
    internal_batch_size : int or None
        Rows per forward/backward pass; None uses the model's ``batch_size``.

    ``extra["delta"]`` holds the completeness gap Σ attributions − (s(x) − s(baseline)) per
    input (averaged over baselines).
    """

    name = "integrated_gradients"
    _budget_knob = "n_steps"

    def __init__(self, model: Any, *, baselines: Any = "zero", n_steps: int | None = None,
                 method: str = "gausslegendre", internal_batch_size: int | None = None,
                 multiply_by_input: bool = True, **kwargs: Any):
        super().__init__(model, multiply_by_input=multiply_by_input, **kwargs)
        self.baselines, self.method = baselines, method
        self._apply_budget(n_steps, 50)
        self.n_steps = int(check_count(self.n_steps, "n_steps"))
        self.internal_batch_size = internal_batch_size

    @property
    def n_baselines(self) -> int:
        """How many baselines IG is averaged over."""
        return len(self.baselines) if isinstance(self.baselines, list | tuple) else 1

    def _queries(self, knob: int) -> int:
        return self.n_baselines * (knob + 2)

    def _set_budget(self, budget: int) -> None:
        nb = self.n_baselines
        if budget // nb - 2 < 1:
            raise ValueError(
                f"budget={budget} is too small for Integrated Gradients with {nb} baseline(s): "
                f"each baseline costs n_steps + 2 queries per input (the path and the two ends "
                f"of the completeness check); give budget >= {3 * nb}")
        self.n_steps = budget // nb - 2

    def params(self) -> dict[str, Any]:
        b = self.baselines if isinstance(self.baselines, str | int | float) else "custom"
        return {**super().params(), "baselines": b, "n_steps": self.n_steps,
                "integration": self.method}

    def _explain(self, x: Tensor, targets: Tensor) -> _Attribution:
        from captum.attr import IntegratedGradients as CaptumIG

        ig = CaptumIG(self._forward, multiply_by_inputs=self.multiply_by_input)
        # Captum wants at least one full copy of the inputs per internal batch
        ibs = max(self.internal_batch_size or self.model.batch_size, len(x))
        tgt = targets.to(x.device).tolist()
        total, delta = torch.zeros_like(x), torch.zeros(len(x), device=x.device)
        bases = _baseline_tensors(self.baselines, x)
        for base in bases:  # a handful of baselines; steps and inputs are batched inside
            attr, d = ig.attribute(x, baselines=base, target=tgt, n_steps=self.n_steps,
                                   method=self.method, internal_batch_size=ibs,
                                   return_convergence_delta=True)
            total += attr
            delta += d
        attr = total / len(bases)
        return _Attribution(values=attr.detach(),
                            extra={"delta": (delta / len(bases)).detach().cpu().numpy()})


class SmoothGrad(_GradientExplainer, Stochastic):
    """SmoothGrad (Smilkov et al. 2017) and SmoothGrad² (``squared=True``).

    Averages the gradient (or its square) over ``n_samples`` noisy copies of each input,
    x + N(0, σ²) with σ = ``noise`` · (max(x) − min(x)) per input. All copies of all inputs go
    through the model in batches of the model's ``batch_size``.

    Parameters
    ----------
    n_samples : int or None -- noisy copies per input, one query each (default and FPA
        protocol: 50); ``budget=`` sets it instead.
    noise : float (FPA protocol: 0.15)
    squared : bool -- SmoothGrad²: mean of squared gradients.
    seed : see :class:`~calix.explain.base.Stochastic`
    """

    name = "smoothgrad"
    _budget_knob = "n_samples"

    def __init__(self, model: Any, *, n_samples: int | None = None, noise: float = 0.15,
                 squared: bool = False, **kwargs: Any):
        super().__init__(model, **kwargs)
        self._apply_budget(n_samples, 50)
        n_samples = check_count(self.n_samples, "n_samples")
        if noise < 0:
            raise ValueError(f"noise must be >= 0, got {noise}")
        self.n_samples, self.noise, self.squared = int(n_samples), float(noise), bool(squared)
        if squared:
            self.name = "smoothgrad_squared"

    def params(self) -> dict[str, Any]:
        return {**super().params(), "n_samples": self.n_samples, "noise": self.noise,
                "squared": self.squared, "seed": self.seed}

    def _explain(self, x: Tensor, targets: Tensor) -> _Attribution:
        from calix._random import std_normal

        n, s = len(x), self.n_samples
        flat = x.reshape(n, -1)
        sigma = self.noise * (flat.max(1).values - flat.min(1).values)
        eps = std_normal(torch.Size((n, s, *x.shape[1:])), self._generator())
        eps = eps.to(x.device) * sigma.view(n, 1, *([1] * (x.ndim - 1)))
        noisy = (x[:, None] + eps).reshape(n * s, *x.shape[1:]).requires_grad_(True)
        tgt = targets.to(x.device).repeat_interleave(s)
        grads = torch.empty_like(noisy)
        bs = self.model.batch_size
        for start in range(0, n * s, bs):  # chunks of the model's batch size, not per sample
            chunk = noisy[start : start + bs].detach().requires_grad_(True)
            out = self.model.forward(chunk, grad=True)
            sc = score(out, tgt[start : start + bs], self.output, self.model.task)
            (g,) = torch.autograd.grad(sc.sum(), chunk)
            grads[start : start + bs] = g
        grads = grads.reshape(n, s, *x.shape[1:])
        attr = (grads**2).mean(1) if self.squared else grads.mean(1)
        return self._finish(attr, x)


class GuidedBackprop(_GradientExplainer):
    """Guided Backpropagation (Springenberg et al. 2015) on Captum.

    Needs a torch model built with ``nn.ReLU`` modules (as the zoo models are); gradients
    flow through a calibrator when the model is calibrated.
    """

    name = "guided_backprop"
    single_pass = True
    _fixed_cost = 1

    def __init__(self, model: Any, **kwargs: Any):
        super().__init__(model, **kwargs)
        inner = _torch_module(self.model)
        if inner is None or not any(isinstance(m, nn.ReLU) for m in inner.modules()):
            raise TypeError("Guided Backprop needs a torch nn.Module with nn.ReLU modules")

    def _explain(self, x: Tensor, targets: Tensor) -> _Attribution:
        from captum.attr import GuidedBackprop as CaptumGBP

        with warnings.catch_warnings():  # Captum announces its (temporary) ReLU hooks
            warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU")
            attr = CaptumGBP(self._forward).attribute(_leaf(x),
                                                      target=targets.to(x.device).tolist())
        return self._finish(attr, x)


def _retarget(attribution: Any, old: Any, new: nn.Module) -> Any:
    """A shallow copy of a Captum attribution whose references to ``old`` (its forward
    function or model) point to ``new``; nested attributions (a layer method's inner
    Integrated Gradients) are retargeted too and hook lists are not shared."""
    out = copy.copy(attribution)
    for key, value in vars(attribution).items():
        if value is old:
            setattr(out, key, new)
        elif isinstance(value, list):
            setattr(out, key, list(value))
        elif hasattr(value, "attribute") and getattr(value, "forward_func", None) is old:
            setattr(out, key, _retarget(value, old, new))
    return out


class CaptumExplainer(Explainer):
    """Any Captum attribution method as a calix explainer, explaining what its ``output``
    says: the model's (calibrated) probability, logit or log-probability of the target.

    Parameters
    ----------
    attribution : a Captum attribution class (``DeepLift``), or an instance built on the
        model's own torch module (``DeepLift(net)``) or on :func:`as_forward`.
        calix runs it on ``as_forward(model, output)`` -- the model's forward through its
        calibrator (a :func:`calix.calibrate.calibrated` model) followed by the output
        transform. An instance on the raw module is copied and retargeted (the original is
        left as it is); hook-based methods (DeepLift, Guided Backprop, LRP) still find the
        module's layers, which are children of that forward. DeepLift's rescale rule applies
        to the module's layers; the calibrator and the softmax pass plain gradients (use
        ``output="logit"`` on an uncalibrated model for DeepLift's summation-to-delta).
        An instance on any other function is refused: calix could not tell what it explains.
    model : the calix model explained (target resolution, query counts, the forward).
    **attribute_kwargs : passed to ``attribution.attribute`` on every call.

    Raises
    ------
    TypeError
        For an object that is not a Captum attribution, or one built on a forward function
        other than the model's module or :func:`as_forward` of the model.

    Example
    -------
    >>> from captum.attr import DeepLift                                       # doctest: +SKIP
    >>> exp = CaptumExplainer(DeepLift, calibrated_model).explain(x)          # doctest: +SKIP
    >>> exp.params["output"]  # the calibrated probability was explained      # doctest: +SKIP
    'probability'
    """

    name = "captum"

    def __init__(self, attribution: Any, model: Any, *, output: str = "probability",
                 reduce: str = "none", **attribute_kwargs: Any):
        super().__init__(model, output=output, reduce=reduce)
        check_differentiable(self.model, "CaptumExplainer")
        if not hasattr(attribution, "attribute"):
            raise TypeError("attribution must be a Captum attribution class or object (with "
                            f".attribute), got {type(attribution).__name__}")
        self.attribution = self._on_calix_forward(attribution)
        self.attribute_kwargs = attribute_kwargs
        self.name = f"captum.{type(self.attribution).__name__}"

    def _on_calix_forward(self, attribution: Any) -> Any:
        """The attribution running on ``as_forward(self.model, self.output)``."""
        forward = as_forward(self.model, self.output)
        if isinstance(attribution, type):
            return attribution(forward)
        old = getattr(attribution, "forward_func", None)
        if isinstance(old, _ScoreModule) and old.model is self.model and \
                old.output == self.output:
            return attribution
        inner = _torch_module(self.model)
        ours = isinstance(old, _ScoreModule) and old.model is self.model
        if not (ours or (inner is not None and old is inner)):
            raise TypeError(
                f"the {type(attribution).__name__} attribution is built on {old!r}, not on "
                "this model: calix cannot tell what it explains. Build it on the model's torch "
                "module or on calix.explain.as_forward(model, output), or pass the Captum "
                f"class itself (CaptumExplainer({type(attribution).__name__}, model))")
        return _retarget(attribution, old, forward)

    def params(self) -> dict[str, Any]:
        return {k: v for k, v in self.attribute_kwargs.items()
                if isinstance(v, int | float | str | bool)}

    def _explain(self, x: Tensor, targets: Tensor) -> _Attribution:
        attr = self.attribution.attribute(_leaf(x), target=targets.to(x.device).tolist(),
                                          **self.attribute_kwargs)
        if isinstance(attr, tuple):
            attr = attr[0]
        return _Attribution(values=attr.detach())
