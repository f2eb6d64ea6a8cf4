"""Model adapters: one batched, device-aware evaluation path for every model calix explains.

:func:`wrap` turns a torch ``nn.Module``, a scikit-learn estimator or a plain callable into a
:class:`Model`. Every query of a model -- a plain prediction, a perturbed input from
:mod:`calix.perturb`, a gradient step -- goes through :meth:`Model.forward`, so batching,
device placement, input/output validation and query counting live in one place.

Outputs are *logits* for classifiers (scikit-learn probabilities become log-probabilities, whose
softmax gives the probabilities back) and raw values of shape ``(n, n_outputs)`` for regressors.

Example
-------
>>> import torch
>>> from calix.models import wrap
>>> model = wrap(torch.nn.Linear(4, 3), input_shape=(4,))
>>> model.predict_proba(torch.zeros(2, 4)).shape
(2, 3)
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from calix._progress import progress_bar
from calix._validation import check_choice, check_simplex, is_simplex
from calix.exceptions import ProbabilityOutputWarning

Task = Literal["classification", "regression"]

__all__ = ["Model", "TorchModel", "SklearnModel", "CallableModel", "wrap", "as_tensor"]

_PROBA_ATOL = 1e-4


def as_tensor(x: Any, *, name: str = "x", device: torch.device | str | None = None) -> Tensor:
    """Convert ``x`` (numpy array, tensor, nested lists) to a finite float32 tensor.

    Raises
    ------
    TypeError
        If ``x`` is not numeric (strings, objects, complex numbers).
    ValueError
        If ``x`` contains NaN or infinite values.
    """
    if isinstance(x, Tensor):
        t = x
    else:
        try:
            arr = np.asarray(x)
        except Exception as exc:  # ragged lists and the like
            raise TypeError(f"{name} could not be converted to an array: {exc}") from exc
        if arr.dtype.kind not in "biuf":
            bad = _non_numeric_columns(x)
            where = f" (non-numeric columns: {bad[:5]})" if bad else ""
            raise TypeError(
                f"{name} must be a real numeric array, got dtype {arr.dtype} "
                f"(kind {arr.dtype.kind!r}){where}; encode categorical columns as numbers "
                "first (e.g. inside a scikit-learn pipeline is not enough: calix perturbs "
                "numbers)"
            )
        if not arr.flags.c_contiguous:  # (np.ascontiguousarray would turn a scalar 1-D)
            arr = np.ascontiguousarray(arr)
        if not arr.flags.writeable:  # a DataFrame's or a memory map's read-only buffer
            arr = arr.copy()
        t = torch.from_numpy(arr)
    if t.is_complex() or not (t.is_floating_point() or t.dtype in _INT_DTYPES):
        raise TypeError(f"{name} must be a real numeric tensor, got dtype {t.dtype}")
    if t.dtype != torch.float32:
        t = t.to(torch.float32)
    if device is not None:
        t = t.to(device)
    if not torch.isfinite(t).all():
        n_bad = int((~torch.isfinite(t)).sum())
        raise ValueError(f"{name} contains {n_bad} NaN or infinite value(s)")
    return t


def _out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocation failure (CUDA, MPS or the CPU allocator)."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    msg = str(exc)
    return "out of memory" in msg or "can't allocate memory" in msg or (
        "not enough memory" in msg)


def _non_numeric_columns(x: Any) -> list[str]:
    dtypes = getattr(x, "dtypes", None)
    if dtypes is None or not hasattr(dtypes, "items"):
        return []
    return [str(c) for c, dt in dtypes.items() if getattr(dt, "kind", "O") not in "biuf"]


def _check_input_shape(shape: Any) -> tuple[int, ...]:
    """``shape`` as a tuple of positive ints (the shape of one input)."""
    dims = (shape,) if isinstance(shape, int | np.integer) else shape
    if isinstance(dims, str | bytes) or not hasattr(dims, "__iter__"):
        raise TypeError(f"input_shape must be a tuple of positive ints, got {shape!r}")
    dims = tuple(dims)
    if not all(isinstance(s, int | np.integer) and not isinstance(s, bool) and s >= 1
               for s in dims):
        raise ValueError(f"input_shape must be a tuple of positive ints, got {shape!r}")
    return tuple(int(s) for s in dims)


_INT_DTYPES = {torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64}


class Model(ABC):
    """A classifier or regressor behind one batched, validated, counted evaluation path.

    Subclasses implement :meth:`_forward` on one chunk of at most ``batch_size`` rows. Users call
    :meth:`forward` (tensors in, tensors out, differentiable when the model is) or the numpy
    conveniences :meth:`predict_logits`, :meth:`predict_proba` and :meth:`predict`.

    Parameters
    ----------
    task : {"classification", "regression"}
    input_shape : tuple of int or None
        Shape of one input, e.g. ``(n_features,)`` or ``(channels, height, width)``. When None
        it is fixed by the first call and enforced afterwards.
    batch_size : int
        Largest number of rows sent to the underlying model at once.
    device : str or torch.device or None
        Where inputs are placed before they reach the model.

    Attributes
    ----------
    n_queries : int
        Number of rows (inputs) evaluated so far; reset with :meth:`reset_queries`.
    level_aware : bool
        Whether the model uses the perturbation level ``levels`` passed with a query
        (a ReCalX-calibrated model does; a plain model ignores it).
    """

    differentiable: bool = False
    level_aware: bool = False
    #: What a classifier's underlying model returns: "logits", "probabilities" (turned into
    #: log-probabilities) or "auto" (decided on the first batch; see :func:`wrap`).
    output: str = "logits"
    _check_softmax: bool = False  # warn once if declared logits look like probabilities
    #: Called with the number of rows of every evaluated chunk (progress displays), or None.
    on_rows: Callable[[int], None] | None = None

    def __init__(
        self,
        *,
        task: Task = "classification",
        input_shape: tuple[int, ...] | None = None,
        batch_size: int = 1024,
        device: torch.device | str | None = None,
    ) -> None:
        if task not in ("classification", "regression"):
            raise ValueError(f"task must be 'classification' or 'regression', got {task!r}")
        if not isinstance(batch_size, int | np.integer) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if input_shape is not None:
            input_shape = _check_input_shape(input_shape)
        self.task: Task = task
        self.input_shape = input_shape
        self.batch_size = int(batch_size)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.n_outputs: int | None = None
        self.n_queries = 0

    # ------------------------------------------------------------------ subclass hook
    @abstractmethod
    def _forward(self, x: Tensor) -> Tensor:
        """Evaluate one chunk ``x`` of shape ``(b, *input_shape)`` on ``self.device``."""

    # ------------------------------------------------------------------ public API
    @property
    def n_classes(self) -> int | None:
        """Number of classes (None for regressors or before the first call)."""
        return self.n_outputs if self.task == "classification" else None

    def reset_queries(self) -> None:
        """Set :attr:`n_queries` back to zero."""
        self.n_queries = 0

    def check_input(self, x: Any, *, name: str = "x") -> Tensor:
        """Validate a batch and return it as a float32 tensor on :attr:`device`.

        Parameters
        ----------
        x : array-like of shape (n, *input_shape)

        Raises
        ------
        TypeError
            For non-numeric input.
        ValueError
            For NaN/inf values or a shape that does not match :attr:`input_shape`.
        """
        t = as_tensor(x, name=name, device=self.device)
        if t.ndim == 0:
            raise ValueError(f"{name} must have a batch dimension, got a scalar")
        if self.input_shape is not None and tuple(t.shape[1:]) != self.input_shape:
            if tuple(t.shape) == self.input_shape:
                hint = " (a single input? add a batch dimension, e.g. x[None])"
            else:
                hint = ""
            raise ValueError(
                f"{name} must have shape (n, {', '.join(map(str, self.input_shape))}), "
                f"got {tuple(t.shape)}{hint}"
            )
        return t

    def forward(
        self,
        x: Any,
        *,
        levels: Tensor | None = None,
        grad: bool | None = None,
        progress: bool = False,
        validate: bool = True,
    ) -> Tensor:
        """Logits (classification) or outputs (regression) of shape ``(n, n_outputs)``.

        Evaluated in chunks of :attr:`batch_size` rows. Gradients flow back to ``x`` when the
        model is differentiable and ``grad`` is True (default: when ``x`` requires grad).

        Parameters
        ----------
        x : array-like or Tensor of shape (n, *input_shape)
        levels : Tensor of shape (n,) or None
            Perturbation level λ of each row; used by level-aware (ReCalX) models, ignored
            otherwise.
        grad : bool or None
            Build the autograd graph. None means ``x.requires_grad``.
        progress : bool
            Show a progress bar over chunks.
        validate : bool
            Check the input's dtype, shape and finiteness (internal callers that built the
            input from validated parts, such as the perturbation engine, skip it; outputs are
            always checked).
        """
        t = self.check_input(x) if validate or not isinstance(x, Tensor) else x
        if grad is None:
            grad = bool(t.requires_grad)
        if grad and not self.differentiable:
            raise TypeError(
                f"{type(self).__name__} is not differentiable; gradient explainers need a "
                "torch model or a torch callable"
            )
        if levels is not None:
            levels = self._check_levels(levels, len(t))
        out = self._chunked(t, levels, grad=grad, progress=progress)
        return out

    __call__ = forward

    def predict_logits(self, x: Any, **kwargs: Any) -> np.ndarray:
        """Numpy logits of shape ``(n, n_outputs)`` (no gradients)."""
        return self.forward(x, grad=False, **kwargs).detach().cpu().numpy()

    def predict_proba(self, x: Any, **kwargs: Any) -> np.ndarray:
        """Numpy class probabilities of shape ``(n, n_classes)``; classifiers only."""
        self._require_classifier("predict_proba")
        return torch.softmax(self.forward(x, grad=False, **kwargs), dim=-1).cpu().numpy()

    def predict(self, x: Any, **kwargs: Any) -> np.ndarray:
        """Predicted class of shape ``(n,)`` (classifiers) or outputs ``(n, n_outputs)``."""
        out = self.forward(x, grad=False, **kwargs)
        if self.task == "classification":
            return out.argmax(dim=-1).cpu().numpy()
        return out.detach().cpu().numpy()

    def probabilities(self, logits: Tensor) -> Tensor:
        """Map logits to probabilities (softmax); differentiable."""
        self._require_classifier("probabilities")
        return torch.softmax(logits, dim=-1)

    # ------------------------------------------------------------------ internals
    def _require_classifier(self, what: str) -> None:
        if self.task != "classification":
            raise TypeError(f"{what} needs a classifier, but this model's task is {self.task!r}")

    def _check_levels(self, levels: Any, n: int) -> Tensor:
        lv = torch.as_tensor(levels, dtype=torch.float32, device=self.device).reshape(-1)
        if lv.numel() != n:
            raise ValueError(f"levels must have one value per input ({n}), got {lv.numel()}")
        if not torch.isfinite(lv).all() or (lv < 0).any() or (lv > 1).any():
            raise ValueError("levels must lie in [0, 1]")
        return lv

    def _chunked(self, x: Tensor, levels: Tensor | None, *, grad: bool, progress: bool) -> Tensor:
        outs = []
        n = len(x)
        starts = range(0, n, self.batch_size)
        with torch.set_grad_enabled(grad):
            for start in progress_bar(starts, total=len(starts), enabled=progress,
                                      description="model queries"):
                chunk = x[start : start + self.batch_size]
                lv = None if levels is None else levels[start : start + self.batch_size]
                outs.append(self._checked_forward(chunk, lv))
        if not outs:
            if self.n_outputs is None:
                raise ValueError(
                    f"x has no rows (shape {tuple(x.shape)}), and this model's number of "
                    "outputs is not known before it has evaluated a non-empty batch")
            return torch.empty(0, self.n_outputs, device=self.device)
        return torch.cat(outs)

    def _checked_forward(self, chunk: Tensor, levels: Tensor | None) -> Tensor:
        try:
            out = self._as_logits(self._forward_levels(chunk, levels))
        except (RuntimeError, ValueError, MemoryError) as exc:
            if _out_of_memory(exc):
                raise MemoryError(
                    f"a batch of {len(chunk)} inputs of shape {tuple(chunk.shape[1:])} did not "
                    f"fit in memory on {self.device} ({str(exc).splitlines()[0][:200]}); pass a "
                    f"smaller batch_size to calix.wrap(..., batch_size=...) (now "
                    f"{self.batch_size}): it bounds the memory of every query") from exc
            if self.input_shape is None:
                raise ValueError(
                    f"the model failed on inputs of shape {tuple(chunk.shape)} (does x have "
                    f"the shape the model expects?): {exc}"
                ) from exc
            raise
        out = self._check_output(out, len(chunk))
        if self.input_shape is None:
            self.input_shape = tuple(chunk.shape[1:])
        self.n_queries += len(chunk)
        if self.on_rows is not None:
            self.on_rows(len(chunk))
        return out

    def _forward_levels(self, chunk: Tensor, levels: Tensor | None) -> Tensor:
        """Forward pass; level-aware subclasses override this to use ``levels``."""
        return self._forward(chunk)

    def _check_output(self, out: Any, n: int) -> Tensor:
        if not isinstance(out, Tensor):
            out = torch.as_tensor(np.asarray(out, dtype=np.float32))
        out = out.to(self.device)
        if out.ndim == 1:
            if self.task == "classification":
                raise ValueError(
                    "a classifier must return scores of shape (n, n_classes), "
                    f"got {tuple(out.shape)}"
                )
            out = out[:, None]
        if out.ndim != 2 or out.shape[0] != n:
            raise ValueError(
                f"model output must have shape ({n}, n_outputs), got {tuple(out.shape)}"
            )
        if out.dtype != torch.float32:
            out = out.float()
        if not torch.isfinite(out).all():
            raise ValueError("model returned NaN or infinite outputs")
        if self.task == "classification" and out.shape[1] < 2:
            raise ValueError(
                "a classifier must return one score per class (at least 2 columns), got 1; "
                "for a single-logit binary classifier return torch.cat([zeros, z], 1), or "
                "wrap a regressor with task='regression'"
            )
        if self.n_outputs is None:
            self.n_outputs = int(out.shape[1])
        elif out.shape[1] != self.n_outputs:
            raise ValueError(
                f"model returned {out.shape[1]} outputs, earlier calls returned {self.n_outputs}"
            )
        return out

    def _as_logits(self, out: Any) -> Any:
        """Turn a classifier's probability outputs into log-probabilities (``output``)."""
        if self.task != "classification":
            return out
        if self.output == "logits":
            if self._check_softmax and isinstance(out, Tensor):
                self._check_softmax = False
                if looks_like_probabilities(out):
                    warnings.warn(
                        f"{type(self).__name__}: the outputs look like probabilities (every "
                        "row in [0, 1] and summing to 1) but are read as logits; if the model "
                        "ends in a softmax, remove it or wrap with output='probabilities'",
                        ProbabilityOutputWarning, stacklevel=5)
            return out
        if not isinstance(out, Tensor):
            out = torch.as_tensor(np.asarray(out, dtype=np.float64))
        if self.output == "auto":
            if looks_like_probabilities(out):
                warnings.warn(
                    f"{type(self).__name__}: the model's outputs are probabilities (every row "
                    "in [0, 1] and summing to 1), so they are used as such (their logs are the "
                    "logits); pass output='probabilities' to say so, or output='logits' if "
                    "they really are logits", ProbabilityOutputWarning, stacklevel=5)
                self.output = "probabilities"
                self._auto_probabilities = True
            else:
                self.output = "logits"
                return out
        try:
            return self._log_probabilities(out.to(torch.float64)).float()
        except ValueError as exc:
            if getattr(self, "_auto_probabilities", False):
                raise ValueError(
                    f"{exc}; output='auto' took the model's first outputs for probabilities, "
                    "but these are not: if the model returns logits, wrap it with "
                    "output='logits'") from exc
            raise

    @staticmethod
    def _log_probabilities(p: Tensor) -> Tensor:
        """Validate probabilities of shape (n, k) and return their logs (clipped at 1e-12)."""
        if p.ndim != 2:
            raise ValueError(f"probabilities must have shape (n, n_classes), got {tuple(p.shape)}")
        if not torch.isfinite(p).all():
            raise ValueError("model returned NaN or infinite probabilities")
        check_simplex(p, atol=_PROBA_ATOL, name="probabilities", sums="must sum to 1 over classes")
        return torch.log(p.clamp_min(1e-12))

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(task={self.task!r}, input_shape={self.input_shape}, "
            f"n_outputs={self.n_outputs}, batch_size={self.batch_size}, "
            f"device={str(self.device)!r})"
        )


class TorchModel(Model):
    """A torch ``nn.Module`` returning logits (classification) or outputs (regression).

    The module's train/eval mode is left as the caller set it (the zoo returns eval-mode
    modules; the uncertainty samplers switch dropout on inside a context manager).

    Parameters
    ----------
    module : torch.nn.Module
    autocast : None, "bf16", "fp16" or torch.bfloat16 / torch.float16
        Run every forward pass under ``torch.autocast`` on the model's device with this dtype
        (mixed precision: matrix products and convolutions in 16 bits, reductions in 32).
        Outputs are cast back to float32, so scores, surrogates and attributions are
        accumulated in float32; gradients flow through autocast to float32 inputs.
        bf16 and fp16 both run on CPU (torch >= 2.1); fp16 on CUDA, bf16 on CUDA GPUs that
        support it (Ampere and later).
    channels_last : bool
        Put the module's 4-D weights and every 4-D input batch in channels-last memory format
        (faster convolutions on recent GPUs and on CPUs with oneDNN; the values are unchanged).
    device, task, input_shape, batch_size
        As for :class:`Model`. ``device`` moves the module there, in place; None keeps the
        module's device (that of its first parameter or buffer). Inputs on another device are
        moved to the model's device before the forward pass.

    Raises
    ------
    ValueError
        For an unknown ``autocast`` value, or a dtype that autocast does not support on the
        device.
    """

    differentiable = True

    def __init__(self, module: torch.nn.Module, *,
                 autocast: str | torch.dtype | None = None, channels_last: bool = False,
                 output: Literal["logits", "probabilities"] = "logits",
                 **kwargs: Any) -> None:
        device = kwargs.pop("device", None)
        if device is None:
            first = _first_tensor(module)
            device = first.device if first is not None else "cpu"
        else:
            module = module.to(device)
        super().__init__(device=device, **kwargs)
        if output == "auto":
            raise ValueError("output='auto' is for plain callables; a torch module returns "
                             "'logits' (default) or 'probabilities'")
        self.output = _check_output_kind(output, self.task)
        self._check_softmax = self.task == "classification" and output == "logits"
        self.autocast = _autocast_dtype(autocast, self.device)
        self.channels_last = bool(channels_last)
        if self.channels_last:
            module = module.to(memory_format=torch.channels_last)
        self.module = module

    def _forward(self, x: Tensor) -> Tensor:
        first = _first_tensor(self.module)
        if first is not None and not _same_device(first.device, self.device):
            raise RuntimeError(
                f"the module's parameters are on {first.device} but this model evaluates on "
                f"{self.device} (the module was moved after wrap()); wrap it again with "
                f"wrap(module, device={str(first.device)!r}), or move it back with "
                f"module.to({str(self.device)!r})"
            )
        if not _same_device(x.device, self.device):
            x = x.to(self.device)  # differentiable: gradients reach the caller's tensor
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.autocast is None:
            return self.module(x)
        with torch.autocast(device_type=self.device.type, dtype=self.autocast):
            out = self.module(x)
        return out.float() if isinstance(out, Tensor) else out

    def __repr__(self) -> str:
        extra = ""
        if self.autocast is not None:
            extra += f", autocast={str(self.autocast).removeprefix('torch.')!r}"
        if self.channels_last:
            extra += ", channels_last=True"
        return super().__repr__()[:-1] + extra + ")"


_AUTOCAST_NAMES = {
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
    "fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
}


def _autocast_dtype(autocast: str | torch.dtype | None, device: torch.device) -> torch.dtype | None:
    """Resolve ``autocast`` to a dtype and check that autocast supports it on ``device``."""
    if autocast is None:
        return None
    if isinstance(autocast, str):
        dtype = _AUTOCAST_NAMES.get(autocast.lower())
        if dtype is None:
            raise ValueError(
                f"autocast must be None, 'bf16', 'fp16', torch.bfloat16 or torch.float16, "
                f"got {autocast!r}")
    elif autocast in (torch.bfloat16, torch.float16):
        dtype = autocast
    else:
        raise ValueError(
            f"autocast must be None, 'bf16', 'fp16', torch.bfloat16 or torch.float16, "
            f"got {autocast!r}")
    if not torch.amp.is_autocast_available(device.type):
        raise ValueError(f"torch has no autocast for device type {device.type!r}; "
                         "use autocast=None on this device")
    import warnings

    with warnings.catch_warnings():  # torch warns and disables autocast for a bad dtype
        warnings.simplefilter("ignore")
        with torch.autocast(device_type=device.type, dtype=dtype):
            enabled = torch.is_autocast_enabled(device.type)
    if not enabled:
        other = "fp16" if dtype == torch.bfloat16 else "bf16"
        raise ValueError(
            f"autocast={autocast!r}: torch {torch.__version__} does not support "
            f"{dtype} autocast on {device}; try autocast={other!r} or None")
    return dtype


def _first_tensor(module: torch.nn.Module) -> Tensor | None:
    """The module's first parameter, or its first buffer when it has no parameters."""
    first = next(iter(module.parameters()), None)
    return first if first is not None else next(iter(module.buffers()), None)


def _same_device(a: torch.device, b: torch.device) -> bool:
    """Same device, treating ``cuda`` and ``cuda:<current>`` alike."""
    if a.type != b.type:
        return False
    if a.index is None or b.index is None:
        if a.type == "cuda" and torch.cuda.is_available():
            cur = torch.cuda.current_device()
            return (a.index if a.index is not None else cur) == (
                b.index if b.index is not None else cur)
        return True
    return a.index == b.index


class SklearnModel(Model):
    """A scikit-learn classifier (``predict_proba`` → log-probabilities) or regressor.

    Not differentiable. ``input_shape`` defaults to ``(n_features_in_,)``; pass an image shape
    such as ``(1, 8, 8)`` explicitly and inputs are flattened before they reach an estimator
    trained on flattened pixels. Classes are the columns of ``predict_proba``: ``predict``
    returns column indices 0..k−1 (``estimator.classes_[i]`` is the label of column i).
    """

    def __init__(self, estimator: Any, **kwargs: Any) -> None:
        if kwargs.get("input_shape") is None and hasattr(estimator, "n_features_in_"):
            kwargs["input_shape"] = (int(estimator.n_features_in_),)
        super().__init__(**kwargs)
        self.estimator = estimator
        if self.task == "classification" and not hasattr(estimator, "predict_proba"):
            raise TypeError(
                f"{type(estimator).__name__} has no predict_proba; calibration and explanation "
                "of a classifier need probabilities (use task='regression' for regressors)"
            )
        names = getattr(estimator, "feature_names_in_", None)
        #: Column names the estimator was fitted with (a DataFrame): rows reach it as a
        #: DataFrame with these columns, so pipelines that select columns by name work.
        self.feature_names_in_: list[str] | None = (
            None if names is None else [str(c) for c in names])
        classes = getattr(estimator, "classes_", None)
        #: Labels of the predict_proba columns (``estimator.classes_``), when known.
        self.classes_: list[Any] | None = (
            None if classes is None or self.task != "classification" else list(classes))

    def _frame(self, arr: np.ndarray) -> Any:
        names = self.feature_names_in_
        if names is None or arr.shape[1] != len(names):
            return arr
        try:
            import pandas as pd
        except ImportError:  # fitted on a DataFrame library other than pandas
            return arr
        return pd.DataFrame(arr, columns=names)

    def _forward(self, x: Tensor) -> Tensor:
        arr = self._frame(x.detach().cpu().numpy().reshape(len(x), -1))
        if self.task == "classification":
            p = torch.as_tensor(np.asarray(self.estimator.predict_proba(arr), dtype=np.float64))
            return self._log_probabilities(p).float()
        return torch.as_tensor(np.asarray(self.estimator.predict(arr), dtype=np.float32))


class CallableModel(Model):
    """A plain function ``f(x)`` on numpy arrays or torch tensors.

    Parameters
    ----------
    fn : callable
        Takes a batch of shape ``(b, *input_shape)``, returns ``(b, n_outputs)`` (or ``(b,)``
        for a single regression output).
    backend : {"numpy", "torch"}
        What ``fn`` takes. Torch callables are differentiable when ``fn`` is.
    output : {"auto", "logits", "probabilities"}
        What a classifier's ``fn`` returns; probabilities are checked to sum to 1 and turned
        into log-probabilities. ``"auto"`` decides on the first batch: outputs with every row
        in [0, 1] summing to 1 (``predict_proba``, a softmax) are probabilities, and a
        :class:`~calix.exceptions.ProbabilityOutputWarning` says so; anything else is logits.
    """

    def __init__(
        self,
        fn: Callable[[Any], Any],
        *,
        backend: Literal["numpy", "torch"] = "numpy",
        output: Literal["auto", "logits", "probabilities"] = "auto",
        **kwargs: Any,
    ) -> None:
        if backend not in ("numpy", "torch"):
            raise ValueError(f"backend must be 'numpy' or 'torch', got {backend!r}")
        super().__init__(**kwargs)
        self.output = _check_output_kind(output, self.task)
        self.fn = fn
        self.backend = backend
        self.differentiable = backend == "torch"

    def _forward(self, x: Tensor) -> Tensor:
        if self.backend == "numpy":
            res = self.fn(x.detach().cpu().numpy())
            out = torch.as_tensor(np.asarray(res, dtype=np.float64))
        else:
            out = self.fn(x)
            if not isinstance(out, Tensor):
                raise TypeError(f"a torch callable must return a tensor, got {type(out).__name__}")
        return out.float() if out.dtype == torch.float64 and self.output == "logits" else out


def _check_output_kind(output: str, task: str) -> str:
    check_choice(output, _OUTPUT_KINDS, "output")
    if output == "probabilities" and task == "regression":
        raise ValueError("output='probabilities' makes no sense for a regressor")
    return output


_OUTPUT_KINDS = ("auto", "logits", "probabilities")


def looks_like_probabilities(out: Tensor, *, atol: float = _PROBA_ATOL) -> bool:
    """Whether scores ``(n, k)`` (k >= 2) are probabilities: every entry in [0, 1] and every
    row summing to 1 within ``atol``. Logits practically never pass: they would have to be
    non-negative and sum to exactly 1 in every row."""
    if not isinstance(out, Tensor) or out.ndim != 2 or out.shape[1] < 2 or len(out) == 0:
        return False
    o = out.detach().double()
    return bool(torch.isfinite(o).all()) and is_simplex(o, atol=atol)


def wrap(
    obj: Any,
    *,
    task: Task | None = None,
    input_shape: tuple[int, ...] | None = None,
    batch_size: int = 1024,
    device: torch.device | str | None = None,
    backend: Literal["numpy", "torch"] | None = None,
    output: Literal["auto", "logits", "probabilities"] | None = None,
    autocast: str | torch.dtype | None = None,
    channels_last: bool = False,
) -> Model:
    """Wrap ``obj`` as a :class:`Model`.

    Parameters
    ----------
    obj : torch.nn.Module, scikit-learn estimator, callable or Model
        A :class:`Model` is returned unchanged.
    task : {"classification", "regression"} or None
        None infers it: scikit-learn regressors and ``task`` of an existing Model; otherwise
        classification.
    input_shape : tuple of int or None
        Shape of one input; inferred from ``n_features_in_`` for scikit-learn estimators.
    batch_size : int
        Rows per chunk of the batched evaluation path.
    device : str or torch.device or None
        For torch modules: move the module there, in place (None keeps its device).
    backend : {"numpy", "torch"} or None
        For plain callables: what they take (default numpy).
    output : {"auto", "logits", "probabilities"} or None
        For plain callables and torch modules: what a classifier returns. Probabilities are
        turned into log-probabilities (their softmax gives them back). None means ``"auto"``
        for callables (decided on the first batch: rows in [0, 1] summing to 1 are
        probabilities, with a :class:`~calix.exceptions.ProbabilityOutputWarning`; so
        ``wrap(clf.predict_proba)`` works) and ``"logits"`` for torch modules, which warn
        when their outputs look like probabilities (a softmax left at the end).
    autocast : None, "bf16", "fp16", torch.bfloat16 or torch.float16
        For torch modules: mixed precision, every forward pass under ``torch.autocast`` with
        this dtype; outputs come back as float32 (see :class:`TorchModel`).
    channels_last : bool
        For torch modules: module and 4-D inputs in channels-last memory format.

    Raises
    ------
    TypeError
        For an object that is none of the supported kinds.
    """
    if isinstance(obj, Model):
        return obj
    common: dict[str, Any] = dict(input_shape=input_shape, batch_size=batch_size, device=device)
    if isinstance(obj, torch.nn.Module):
        return TorchModel(obj, task=task or "classification", autocast=autocast,
                          channels_last=channels_last, output=output or "logits", **common)
    if output is not None and _is_sklearn_estimator(obj):
        raise TypeError("output applies to torch modules and plain callables; a scikit-learn "
                        "classifier's predict_proba is always read as probabilities")
    if autocast is not None or channels_last:
        raise TypeError("autocast and channels_last apply to torch modules only, got an object "
                        f"of type {type(obj).__name__}")
    if _is_sklearn_estimator(obj):
        if task is None:
            task = "regression" if _is_sklearn_regressor(obj) else "classification"
        return SklearnModel(obj, task=task, **common)
    if callable(obj):
        return CallableModel(
            obj, backend=backend or "numpy", output=output or "auto",
            task=task or "classification",
            **common,
        )
    raise TypeError(
        f"cannot wrap an object of type {type(obj).__name__}: expected a torch.nn.Module, "
        "a scikit-learn estimator, a callable or a calix Model"
    )


def _is_sklearn_estimator(obj: Any) -> bool:
    return hasattr(obj, "get_params") and (hasattr(obj, "predict") or hasattr(obj, "predict_proba"))


def _is_sklearn_regressor(obj: Any) -> bool:
    try:
        from sklearn.base import is_regressor

        return bool(is_regressor(obj))
    except Exception:  # pragma: no cover - sklearn is a hard dependency
        return False
