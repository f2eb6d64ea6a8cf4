"""The small model zoo: a CNN for the digit sets and an MLP for tabular data.

Models train on CPU in seconds, are deterministic by seed, and are cached on disk under a key
of their full configuration. The cache folder is ``$CALIX_CACHE`` or ``~/.cache/calix``.

The cache heals itself and can be shared:

- training runs on one torch thread, so the weights do not depend on the caller's thread count
  (which the key therefore leaves out);
- every entry carries its configuration and a SHA-256 of its weights, checked on every read
  (loaded with ``weights_only=True``); an unreadable or mismatching entry is moved aside to
  ``<entry>.corrupt`` with a warning and retrained;
- entries are written to a per-process temporary file, fsynced and renamed into place; a
  temporary file left by a killed process is removed by the next write (at once when its
  process is gone from this host, otherwise after an hour);
- files are created with mode ``0o666`` less the umask (``0o644`` under the usual umask 022),
  so Dask workers and other users can read them.

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
import io
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from calix import data as data_mod
from calix._io import atomic_write as _atomic_write
from calix._progress import torch_threads
from calix.models import Model, wrap
from calix.nets import ARCHITECTURES
from calix.train import evaluate, fit

__all__ = ["CNN", "MLP", "ZooModel", "train", "build", "cache_dir", "ZOO", "load_checkpoint"]

# 2: trained on one torch thread and checksummed (entries of format 1 depend on the thread
# count of whichever process trained them, so they are not reused)
_FORMAT_VERSION = 2


@ARCHITECTURES.register("cnn", zoo=True)
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


@ARCHITECTURES.register("mlp", zoo=True)
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
        True: load the cached entry when there is a sound one, else train and write it (a
        damaged entry is moved aside to ``<entry>.corrupt`` with a warning). False: always
        retrain; an existing entry is replaced by the fresh weights (so ``--no-cache``
        repairs it), but no new entry is created.

    Training runs on one torch thread (restored afterwards), so the weights depend only on
    the configuration, never on the caller's thread count.
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

    def fresh() -> nn.Module:
        with torch.random.fork_rng(devices=[]):  # seeded initialisation, global state untouched
            torch.manual_seed(seed)
            return build(name, ds, dropout=hp["dropout"])

    module = fresh()
    if cache and path.is_file():
        metrics = _load_cached(path, module, config)
        if metrics is not None:
            if device is not None:
                module.to(device)
            return ZooModel(module, config, metrics, path, ds)
        module = fresh()  # a failed load may have half-filled the first one
    # one thread: intra-op parallel reductions round differently with the thread count, and
    # the key must name everything the weights depend on (on CPU this costs little; measured
    # 3.1 s both ways for the digits CNN, 10.9 s against 9.1 s for the 16x16 CNN on 2 cores)
    with torch_threads(1):
        module = fit(
            module, ds.X_train, ds.y_train, task=ds.task, epochs=hp["epochs"], lr=hp["lr"],
            batch_size=hp["batch_size"], weight_decay=hp["weight_decay"], seed=seed,
            augment=augment, device=device, progress=progress,
        )
        metrics = evaluate(module, ds.X_test, ds.y_test, task=ds.task)
    # cache=False replaces an existing entry (so a retrain repairs it) but creates none
    written = None
    if cache or path.is_file():
        written = _save_or_warn(path, module, config, metrics)
    return ZooModel(module, config, metrics, written, ds)


def load_checkpoint(path: str | Path, module: nn.Module) -> tuple[nn.Module, dict[str, float]]:
    """Load a zoo checkpoint into ``module`` (``weights_only=True``); returns it and its
    test metrics.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        ``path`` is not a readable zoo checkpoint (truncated, corrupt, another kind of file),
        its weights do not match their checksum, or they do not fit ``module``.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"model file not found: {p}")
    payload, _ = _read_payload(p)
    return _apply(p, payload, module), _metrics(p, payload)


def _read_payload(p: Path) -> tuple[dict[str, Any], os.stat_result]:
    """The checkpoint's payload, checked, and the file's stat as it was read."""
    hint = "delete it (a zoo model is retrained on demand) or pass a calix zoo checkpoint"
    try:
        with open(p, "rb") as f:
            st = os.fstat(f.fileno())
            raw = f.read()
    except IsADirectoryError as exc:
        raise ValueError(f"{p} is a folder, not a calix zoo checkpoint") from exc
    try:
        payload = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged file; none are useful
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
        raise ValueError(f"{p} is not a readable calix zoo checkpoint ({len(raw)} bytes; "
                         f"{reason}); {hint}") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("state_dict"), dict):
        raise ValueError(f"{p} is not a calix zoo checkpoint (no state_dict); {hint}")
    state = payload["state_dict"]
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{p} is not a calix zoo checkpoint (state_dict holds non-tensors); "
                         f"{hint}")
    digest = payload.get("sha256")
    if digest is not None and digest != _digest(state):
        raise ValueError(f"{p} is corrupt: its weights do not match their SHA-256; {hint}")
    return payload, st


def _apply(p: Path, payload: dict[str, Any], module: nn.Module) -> nn.Module:
    device = next(module.parameters()).device
    try:
        module.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise ValueError(f"the weights in {p} do not fit this {type(module).__name__} "
                         f"({first})") from exc
    module.to(device)
    return module.eval()


def _metrics(p: Path, payload: dict[str, Any]) -> dict[str, float]:
    try:
        metrics = json.loads(payload.get("metrics", "{}"))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{p} holds unreadable metrics ({exc})") from exc
    if not isinstance(metrics, dict):
        raise ValueError(f"{p} holds unreadable metrics ({metrics!r})")
    return metrics


def _load_cached(path: Path, module: nn.Module, config: dict[str, Any]
                 ) -> dict[str, float] | None:
    """Load a cache entry into ``module`` and return its metrics; ``None`` (with a warning,
    the entry moved aside) when it is damaged or belongs to another configuration."""
    st = None
    try:
        payload, st = _read_payload(path)
        if payload.get("config") != json.dumps(config, sort_keys=True):
            raise ValueError(f"{path} holds a model of another configuration")
        if "sha256" not in payload:
            raise ValueError(f"{path} carries no checksum")
        metrics = _metrics(path, payload)
        _apply(path, payload, module)
        return metrics
    except FileNotFoundError:
        return None  # moved aside by another process meanwhile: retrain
    except PermissionError as exc:
        warnings.warn(f"zoo cache entry {path} cannot be read ({exc.strerror}); retraining "
                      f"the model", RuntimeWarning, stacklevel=3)
        return None
    except ValueError as exc:
        _move_aside(path, st, exc)
        return None


def _move_aside(path: Path, st: os.stat_result | None, why: Exception) -> None:
    bad = path.with_name(path.name + ".corrupt")
    try:
        now = os.stat(path)
        # another process may have healed the entry since we read it: leave a new file alone
        if st is None or (now.st_ino, now.st_mtime_ns, now.st_size) == (
                st.st_ino, st.st_mtime_ns, st.st_size):
            os.replace(path, bad)
            where = f"moved it to {bad}"
        else:
            where = "another process has replaced it meanwhile"
    except FileNotFoundError:
        where = "another process has moved it meanwhile"
    except OSError as exc:
        where = f"could not move it aside ({exc})"
    warnings.warn(f"zoo cache entry {path} is unusable: {why}; {where}; retraining the model",
                  RuntimeWarning, stacklevel=4)


def _save_or_warn(path: Path, module: nn.Module, config: dict, metrics: dict) -> Path | None:
    """Write the cache entry; a cache that cannot be written costs a warning, not the model."""
    state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
    payload = {
        "state_dict": state,
        "config": json.dumps(config, sort_keys=True),
        "metrics": json.dumps(metrics),
        "sha256": _digest(state),
    }
    try:
        _atomic_write(path, lambda f: torch.save(payload, f))
    except OSError as exc:
        warnings.warn(f"could not write the zoo cache entry {path} ({exc}); the model was "
                      f"trained but not cached (set CALIX_CACHE to a writable folder)",
                      RuntimeWarning, stacklevel=3)
        return None
    return path


def _digest(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 of a state dict: names, dtypes, shapes and raw bytes, in key order."""
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _data_hash(ds: data_mod.Dataset) -> str:
    h = hashlib.sha256()
    for arr in (ds.X_train, ds.y_train, ds.X_test, ds.y_test):
        h.update(arr.tobytes())
    return h.hexdigest()[:16]
