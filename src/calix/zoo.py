"""The small model zoo: a CNN for the digit sets and an MLP for tabular data.

Models train on CPU in seconds, are deterministic by seed, and are cached on disk under a key
of their full configuration (written atomically, loaded with ``weights_only=True``). The cache
folder is ``$CALIX_CACHE`` or ``~/.cache/calix``.

Example
-------
>>> from calix import zoo
>>> trained = zoo.train("cnn", "digits", seed=0)        # doctest: +SKIP
>>> trained.metrics["accuracy"] > 0.9                     # doctest: +SKIP
True
>>> model = trained.wrap()                                # a calix Model # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from calix import data as data_mod
from calix.models import Model, wrap
from calix.train import evaluate, fit

__all__ = ["CNN", "MLP", "ZooModel", "train", "build", "cache_dir", "ZOO", "load_checkpoint"]

_FORMAT_VERSION = 1


class CNN(nn.Module):
    """Two 3×3 convolutions, max-pooling and two linear layers, with dropout.

    ReLU activations are ``nn.ReLU`` modules (not functional calls), so hook-based methods
    such as Guided Backprop can see them.

    Parameters
    ----------
    in_channels : int
    n_classes : int
    image_size : int
        Side of the (square) input; must be even.
    dropout : float
        Dropout probability after pooling and after the hidden linear layer.
    width : int
        Channels of the first convolution (the second has twice as many).

    Input shape ``(n, in_channels, image_size, image_size)``; output logits ``(n, n_classes)``.
    """

    def __init__(
        self, in_channels: int = 1, n_classes: int = 10, image_size: int = 8,
        dropout: float = 0.25, width: int = 16, hidden: int = 64,
    ):
        super().__init__()
        if image_size % 2:
            raise ValueError(f"image_size must be even, got {image_size}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
        side = image_size // 2
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Dropout(dropout), nn.Flatten(),
            nn.Linear(2 * width * side * side, hidden), nn.ReLU(),
            nn.Dropout(dropout), nn.Linear(hidden, n_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class MLP(nn.Module):
    """Fully connected network with ReLU modules and optional dropout.

    Input ``(n, n_features)``; output ``(n, n_outputs)`` logits or regression values.
    """

    def __init__(
        self, n_features: int, n_outputs: int, hidden: tuple[int, ...] = (64, 64),
        dropout: float = 0.0,
    ):
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
        layers: list[nn.Module] = []
        prev = n_features
        for h in hidden:
            layers += [nn.Linear(prev, h), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            prev = h
        layers.append(nn.Linear(prev, n_outputs))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


# Default hyper-parameters per architecture: chosen so that each trains in seconds on CPU.
ZOO: dict[str, dict[str, Any]] = {
    "cnn": {"dropout": 0.25, "epochs": 60, "lr": 1e-3, "batch_size": 64, "weight_decay": 0.0},
    "mlp": {"dropout": 0.1, "epochs": 60, "lr": 1e-3, "batch_size": 32, "weight_decay": 1e-4},
}


@dataclass
class ZooModel:
    """A trained zoo model and what it was trained on.

    Attributes
    ----------
    module : nn.Module (eval mode)
    config : dict -- everything that determines the weights (the cache key)
    metrics : dict -- test-split metrics (accuracy and NLL, or RMSE and R²)
    path : Path or None -- the cache file
    """

    module: nn.Module
    config: dict[str, Any]
    metrics: dict[str, float]
    path: Path | None = None
    dataset: data_mod.Dataset | None = field(default=None, repr=False)

    def wrap(self, **kwargs: Any) -> Model:
        """The module as a calix :class:`~calix.models.Model`."""
        task = "regression" if self.config["task"] == "regression" else "classification"
        return wrap(self.module, task=task, input_shape=tuple(self.config["input_shape"]),
                    **kwargs)


def cache_dir() -> Path:
    """The zoo cache folder: ``$CALIX_CACHE`` or ``~/.cache/calix``, then ``zoo/``."""
    root = os.environ.get("CALIX_CACHE") or Path.home() / ".cache" / "calix"
    return Path(root) / "zoo"


def build(name: str, dataset: data_mod.Dataset, *, dropout: float) -> nn.Module:
    """An untrained ``name`` model shaped for ``dataset``."""
    n_out = dataset.n_classes if dataset.task == "classification" else 1
    if name == "cnn":
        if not dataset.is_image:
            raise ValueError(f"the cnn needs image data; {dataset.name!r} is tabular (use mlp)")
        c, h, w = dataset.input_shape
        if h != w:
            raise ValueError(f"the cnn needs square images, got {h}x{w}")
        return CNN(in_channels=c, n_classes=n_out, image_size=h, dropout=dropout)
    if name == "mlp":
        n_features = 1
        for s in dataset.input_shape:
            n_features *= s
        mlp = MLP(n_features, n_out, dropout=dropout)
        return mlp if len(dataset.input_shape) == 1 else nn.Sequential(nn.Flatten(), mlp)
    raise ValueError(f"unknown zoo model {name!r}; choose one of {sorted(ZOO)}")


def train(
    name: str,
    data: str | data_mod.Dataset = "digits",
    *,
    seed: int = 0,
    data_seed: int = 0,
    dropout: float | None = None,
    epochs: int | None = None,
    lr: float | None = None,
    augment: Any = None,
    augment_config: dict[str, Any] | None = None,
    cache: bool = True,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> ZooModel:
    """Train (or load from the cache) zoo model ``name`` on a dataset.

    Parameters
    ----------
    name : {"cnn", "mlp"}
    data : str or Dataset
        A shipped dataset name (cached by name) or a Dataset (cached by its name and a hash
        of its arrays).
    seed : int
        Seeds initialisation, shuffling and dropout.
    data_seed : int
        The dataset's split seed (when ``data`` is a name).
    dropout, epochs, lr : optional overrides of the defaults in :data:`ZOO`.
    augment : callable (batch, generator) -> batch, optional
        Training-time augmentation; ``augment_config`` must then describe it (it joins the
        cache key).
    cache : bool
        Read and write the on-disk cache.
    """
    if name not in ZOO:
        raise ValueError(f"unknown zoo model {name!r}; choose one of {sorted(ZOO)}")
    if augment is not None and augment_config is None:
        raise ValueError("augment needs augment_config (a dict describing it) for the cache key")
    ds = data_mod.load(data, seed=data_seed) if isinstance(data, str) else data
    hp = dict(ZOO[name])
    for key, val in (("dropout", dropout), ("epochs", epochs), ("lr", lr)):
        if val is not None:
            hp[key] = val
    config: dict[str, Any] = {
        "format": _FORMAT_VERSION,
        "model": name,
        "data": ds.name,
        "data_seed": data_seed,
        "data_hash": _data_hash(ds),
        "task": ds.task,
        "input_shape": list(ds.input_shape),
        "n_outputs": ds.n_classes if ds.task == "classification" else 1,
        "seed": seed,
        # CUDA kernels round differently: weights trained there are cached apart from CPU ones
        "device": torch.device(device).type if device is not None else "cpu",
        "augment": augment_config,
        **hp,
    }
    key = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_dir() / f"{name}-{ds.name}-{key}.pt"
    with torch.random.fork_rng(devices=[]):  # seeded initialisation, global state untouched
        torch.manual_seed(seed)
        module = build(name, ds, dropout=hp["dropout"])
    if cache and path.exists():
        loaded, metrics = load_checkpoint(path, module)
        if device is not None:
            loaded.to(device)
        return ZooModel(loaded, config, metrics, path, ds)
    module = fit(
        module, ds.X_train, ds.y_train, task=ds.task, epochs=hp["epochs"], lr=hp["lr"],
        batch_size=hp["batch_size"], weight_decay=hp["weight_decay"], seed=seed,
        augment=augment, device=device, progress=progress,
    )
    metrics = evaluate(module, ds.X_test, ds.y_test, task=ds.task)
    if cache:
        _atomic_save(path, module, config, metrics)
    return ZooModel(module, config, metrics, path if cache else None, ds)


def load_checkpoint(path: str | Path, module: nn.Module) -> tuple[nn.Module, dict[str, float]]:
    """Load a zoo checkpoint into ``module`` (``weights_only=True``); returns it and its
    test metrics."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"model file not found: {p}")
    payload = torch.load(p, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or "state_dict" not in payload:
        raise ValueError(f"{p} is not a calix zoo checkpoint")
    device = next(module.parameters()).device
    module.load_state_dict(payload["state_dict"])
    module.to(device)
    return module.eval(), json.loads(payload.get("metrics", "{}"))


def _atomic_save(path: Path, module: nn.Module, config: dict, metrics: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "state_dict": {k: v.detach().cpu() for k, v in module.state_dict().items()},
        "config": json.dumps(config, sort_keys=True),
        "metrics": json.dumps(metrics),
    }
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _data_hash(ds: data_mod.Dataset) -> str:
    h = hashlib.sha256()
    for arr in (ds.X_train, ds.y_train, ds.X_test, ds.y_test):
        h.update(arr.tobytes())
    return h.hexdigest()[:16]
