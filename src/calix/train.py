"""Small, seeded trainers for the zoo models (CPU in seconds; any device)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from calix._progress import progress_bar
from calix.models import as_tensor

__all__ = ["fit", "evaluate", "FPA"]

Augment = Callable[[Tensor, torch.Generator], Tensor]


def fit(
    module: nn.Module,
    X: Any,
    y: Any,
    *,
    task: Literal["classification", "regression"] = "classification",
    epochs: int = 30,
    lr: float = 1e-3,
    batch_size: int = 64,
    weight_decay: float = 0.0,
    seed: int = 0,
    augment: Augment | None = None,
    regularizer: Callable[[nn.Module], Tensor] | None = None,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> nn.Module:
    """Train ``module`` with Adam on cross-entropy (classification) or MSE (regression).

    Deterministic for a given ``seed``: the shuffling generator, the parameter updates and the
    dropout masks are all seeded, without touching the caller's global random state.

    Parameters
    ----------
    module : nn.Module
        Maps ``(b, *input_shape)`` to logits ``(b, n_classes)`` or outputs ``(b, n_outputs)``.
    X : array-like of shape (n, *input_shape)
    y : array-like of shape (n,)
        Class indices, or regression targets.
    augment : callable (batch, generator) -> batch, optional
        Applied to every training batch (e.g. Feature Perturbation Augmentation).
    regularizer : callable module -> scalar tensor, optional
        Added to every batch's loss (e.g. the ELBO's KL term for Flipout layers).
    progress : bool
        Show a progress bar over epochs.

    Returns
    -------
    The trained module, in eval mode.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    dev = torch.device(device) if device is not None else next(module.parameters()).device
    module.to(dev)
    Xt = as_tensor(X, name="X", device=dev)
    if task == "classification":
        yt = torch.as_tensor(np.asarray(y), dtype=torch.long, device=dev)
        loss_fn: nn.Module = nn.CrossEntropyLoss()
    else:
        yt = as_tensor(y, name="y", device=dev).reshape(len(Xt), -1)
        loss_fn = nn.MSELoss()
    if len(yt) != len(Xt):
        raise ValueError(f"X has {len(Xt)} rows but y has {len(yt)}")
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(module.parameters(), lr=lr, weight_decay=weight_decay)
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        torch.manual_seed(seed)
        module.train()
        epochs_iter = progress_bar(range(epochs), total=epochs, enabled=progress,
                                   description="training")
        for _ in epochs_iter:
            order = torch.randperm(len(Xt), generator=g).to(dev)
            for start in range(0, len(Xt), batch_size):
                idx = order[start : start + batch_size]
                xb = Xt[idx]
                if augment is not None:
                    xb = augment(xb, g)
                opt.zero_grad()
                loss = loss_fn(module(xb), yt[idx])
                if regularizer is not None:
                    loss = loss + regularizer(module)
                loss.backward()
                opt.step()
    return module.eval()


@torch.no_grad()
def evaluate(
    module: nn.Module,
    X: Any,
    y: Any,
    *,
    task: Literal["classification", "regression"] = "classification",
    batch_size: int = 1024,
) -> dict[str, float]:
    """Test metrics: accuracy and NLL (classification) or RMSE and R² (regression)."""
    dev = next(module.parameters()).device
    Xt = as_tensor(X, name="X", device=dev)
    was_training = module.training
    module.eval()
    out = torch.cat([module(Xt[s : s + batch_size]) for s in range(0, len(Xt), batch_size)])
    module.train(was_training)
    if task == "classification":
        yt = torch.as_tensor(np.asarray(y), dtype=torch.long, device=dev)
        acc = (out.argmax(1) == yt).float().mean().item()
        nll = nn.functional.cross_entropy(out, yt).item()
        return {"accuracy": acc, "nll": nll}
    yt = as_tensor(y, name="y", device=dev).reshape(out.shape)
    mse = ((out - yt) ** 2).mean().item()
    var = ((yt - yt.mean()) ** 2).mean().item()
    return {"rmse": mse**0.5, "r2": 1 - mse / var if var > 0 else float("nan")}


class FPA:
    """Feature Perturbation Augmentation (FPA paper), a seeded batch transform.

    With probability ``p`` a batch is perturbed: a density ρ ~ U(0, ``p1_max``) is drawn;
    every pixel is perturbed with probability ρ; a perturbed pixel becomes, with probability
    ``p2``, the top-left corner of a zeroed square of side s ~ randint(0, ``s_max``) (numpy's
    half-open convention, so s ∈ {0, …, s_max − 1}) when the square fits in the image and
    s ≥ 2, and otherwise a zeroed single pixel. All channels are zeroed (zero is the
    normalised-space value). Where the paper is silent, calix chooses: s < 2 and squares
    crossing the border fall back to a single pixel.

    Use as ``augment=`` of :func:`fit` / :func:`calix.zoo.train`, or call it on a batch:
    ``FPA(seed=0)(x)`` for x of shape (n, C, H, W).
    """

    def __init__(self, *, p: float = 0.5, p1_max: float = 0.25, p2: float = 0.1,
                 s_max: int = 3, seed: int | None = 0):
        for name, v in (("p", p), ("p1_max", p1_max), ("p2", p2)):
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {v}")
        if s_max < 1:
            raise ValueError(f"s_max must be >= 1, got {s_max}")
        self.p, self.p1_max, self.p2, self.s_max = float(p), float(p1_max), float(p2), int(s_max)
        self.seed = seed
        self._g = torch.Generator().manual_seed(seed if seed is not None else 0)

    def config(self) -> dict[str, Any]:
        """The settings (for cache keys and reports)."""
        return {"name": "fpa", "p": self.p, "p1_max": self.p1_max, "p2": self.p2,
                "s_max": self.s_max, "seed": self.seed}

    def masks(self, shape: tuple[int, ...], generator: torch.Generator | None = None,
              density: float | None = None) -> Tensor:
        """Boolean zero-masks of shape (n, H, W) for one perturbed batch (True = zeroed)."""
        g = generator or self._g
        n, h, w = shape[0], shape[-2], shape[-1]
        rho = float(torch.rand((), generator=g)) * self.p1_max if density is None else density
        hit = torch.rand(n, h, w, generator=g) < rho
        square = hit & (torch.rand(n, h, w, generator=g) < self.p2)
        side = torch.randint(0, self.s_max, (n, h, w), generator=g)
        rows = torch.arange(h).view(1, h, 1)
        cols = torch.arange(w).view(1, 1, w)
        fits = (rows + side <= h) & (cols + side <= w) & (side >= 2)
        out = hit.clone()
        for s in range(2, self.s_max):  # a handful of square sizes, each one vectorised
            corners = (square & fits & (side == s)).float()[:, None]
            # grow each corner into an s×s square to its bottom-right
            grown = torch.nn.functional.max_pool2d(
                torch.nn.functional.pad(corners, (s - 1, 0, s - 1, 0)), s, stride=1)
            out |= grown[:, 0].bool()
        return out

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        g = generator or self._g
        if x.ndim != 4:
            raise ValueError(f"FPA expects images (n, C, H, W), got {tuple(x.shape)}")
        if float(torch.rand((), generator=g)) >= self.p:
            return x
        m = self.masks(tuple(x.shape), g).to(x.device)
        return x.masked_fill(m[:, None], 0.0)
