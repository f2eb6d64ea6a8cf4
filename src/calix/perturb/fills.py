"""Fills: what replaces a removed feature.

:class:`Fill` is the base (``fit`` on background data, ``reference`` for a batch);
:class:`Constant`, :class:`Mean`, :class:`Blur`, :class:`Noise` (seeded) and
:class:`Marginal` (background rows, averaged over by the engine on request).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import Tensor

from calix._random import std_normal as _std_normal
from calix.models import as_tensor

__all__ = [
    "Fill", "Constant", "Mean", "Blur", "Noise", "Marginal",
]


class Fill(ABC):
    """What replaces removed features.

    Deterministic fills return one reference per input; stochastic fills (``stochastic =
    True``) draw a fresh reference for every perturbed row.
    """

    stochastic: bool = False

    def fit(self, background: Any) -> Fill:
        """Learn from background data of shape ``(n_background, *input_shape)``; returns self."""
        return self

    @abstractmethod
    def reference(self, x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """Replacement values for a batch ``x`` of shape ``(n, *input_shape)``, same shape."""


class Constant(Fill):
    """Replace removed features by a constant (default 0, e.g. black or the standardised mean)."""

    def __init__(self, value: float = 0.0):
        self.value = float(value)

    def reference(self, x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        return torch.full_like(x, self.value)


class Mean(Fill):
    """Replace removed features by their mean over background (training) data.

    Parameters
    ----------
    mean : array-like of shape input_shape, or None
        Given means; otherwise call :meth:`fit` with background data.
    """

    def __init__(self, mean: Any = None):
        self.mean_ = None if mean is None else as_tensor(mean, name="mean")

    def fit(self, background: Any) -> Mean:
        bg = as_tensor(background, name="background")
        if len(bg) == 0:
            raise ValueError("background data is empty")
        self.mean_ = bg.mean(dim=0)
        return self

    def reference(self, x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        if self.mean_ is None:
            raise RuntimeError("Mean fill is not fitted: pass mean=... or call fit(background)")
        if tuple(self.mean_.shape) != tuple(x.shape[1:]):
            raise ValueError(
                f"Mean fill was fitted on inputs of shape {tuple(self.mean_.shape)}, "
                f"got inputs of shape {tuple(x.shape[1:])}"
            )
        return self.mean_.to(x.device).expand_as(x)


class Blur(Fill):
    """Gaussian-blurred copy of the image: depthwise, separable, reflection padding.

    Parameters
    ----------
    kernel_size : int
        Odd kernel width (11 in Calibrate-to-Interpret). Must be smaller than twice the image
        side for reflection padding.
    sigma : float
        Standard deviation of the Gaussian in pixels (the paper says 10; large σ approaches a
        box blur).
    """

    def __init__(self, kernel_size: int = 11, sigma: float = 5.0):
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size}")
        if sigma <= 0:
            raise ValueError(f"sigma must be > 0, got {sigma}")
        self.kernel_size = int(kernel_size)
        self.sigma = float(sigma)

    def kernel(self, device: torch.device | None = None) -> Tensor:
        """The normalised 1-D Gaussian of shape ``(kernel_size,)``."""
        r = torch.arange(self.kernel_size, dtype=torch.float32, device=device)
        r = r - (self.kernel_size - 1) / 2
        k = torch.exp(-0.5 * (r / self.sigma) ** 2)
        return k / k.sum()

    def reference(self, x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        if x.ndim != 4:
            raise ValueError(f"Blur expects images of shape (n, C, H, W), got {tuple(x.shape)}")
        c, h, w = x.shape[1:]
        pad = self.kernel_size // 2
        if pad >= h or pad >= w:
            raise ValueError(
                f"kernel_size {self.kernel_size} is too large for {h}x{w} images with "
                "reflection padding (need kernel_size // 2 < side)"
            )
        k = self.kernel(x.device)
        kh = k.view(1, 1, -1, 1).expand(c, 1, -1, 1)
        kw = k.view(1, 1, 1, -1).expand(c, 1, 1, -1)
        y = torch.nn.functional.pad(x, (pad, pad, pad, pad), mode="reflect")
        y = torch.nn.functional.conv2d(y, kh, groups=c)
        return torch.nn.functional.conv2d(y, kw, groups=c)


class Noise(Fill):
    """Gaussian noise ``mean + std * ε`` drawn afresh for every perturbed row.

    Parameters
    ----------
    std, mean : float
        Noise parameters (in the input's units).
    around_input : bool
        If True the noise is added to the input (``x + std * ε``) instead of replacing it.
    """

    stochastic = True

    def __init__(self, std: float = 1.0, mean: float = 0.0, *, around_input: bool = False):
        if std < 0:
            raise ValueError(f"std must be >= 0, got {std}")
        self.std, self.mean, self.around_input = float(std), float(mean), bool(around_input)

    def reference(self, x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        eps = _std_normal(x.shape, generator).to(x.device)
        base = x if self.around_input else self.mean
        return base + self.std * eps


class Marginal(Fill):
    """Removed features take the values of background rows: the interventional (marginal)
    game of SHAP, v(S) = E_b f(x_S, b_S̄) over the background rows b.

    Explainers (:class:`~calix.explain.FeatureExplainer` and its subclasses) evaluate every
    coalition with *every* background row and average the explained score, as shap's
    ``KernelExplainer`` does with the same background: queries cost ``len(background)`` model
    rows per coalition, so keep the background small (50--100 rows, e.g. a k-means summary
    or a random subset). The base value is then E_b f(b).

    Used directly through :meth:`Perturbation.apply` / :meth:`Perturbation.query` (and so in
    calibration on perturbed inputs), each perturbed row draws one random background row.

    Parameters
    ----------
    background : array-like of shape (n_background, *input_shape) or None
        Or call :meth:`fit`.
    """

    stochastic = True

    def __init__(self, background: Any = None):
        self.background_ = None
        if background is not None:
            self.fit(background)

    def fit(self, background: Any) -> Marginal:
        bg = as_tensor(background, name="background")
        if bg.ndim < 2 or len(bg) == 0:
            raise ValueError(
                f"background must have shape (n_background, *input_shape), got {tuple(bg.shape)}"
            )
        self.background_ = bg
        return self

    def _checked_background(self, x: Tensor) -> Tensor:
        if self.background_ is None:
            raise RuntimeError("Marginal fill is not fitted: pass background=... or call fit()")
        if tuple(self.background_.shape[1:]) != tuple(x.shape[1:]):
            raise ValueError(
                f"background rows have shape {tuple(self.background_.shape[1:])}, "
                f"inputs have shape {tuple(x.shape[1:])}"
            )
        return self.background_

    def reference(self, x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        bg = self._checked_background(x)
        idx = torch.randint(len(bg), (len(x),), generator=generator)
        return bg[idx].to(x.device)
