"""Small, seeded trainers for the zoo models (CPU in seconds; any device)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from calix._progress import progress_bar
from calix.models import as_tensor

__all__ = ["fit", "evaluate"]

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
