"""Interoperability with Quantus (Hedström et al. 2023, "Quantus: an explainable AI toolkit
for responsible evaluation of neural network explanations and beyond", JMLR 24(34)).

Two directions:

- :func:`as_explain_func` turns a calix explainer (or a factory ``module -> explainer``) into
  a Quantus ``explain_func(model, inputs, targets, **kwargs) -> ndarray``, so any Quantus
  metric can evaluate calix explanations;
- :func:`quantus_style` turns a calix metric into a callable with Quantus's calling
  convention ``(model, x_batch, y_batch, a_batch, s_batch=None, explain_func=None, ...)``,
  returning calix's per-input scores; :class:`ExplainFuncExplainer` lets calix metrics that
  need an explainer run a Quantus ``explain_func``.

Quantus itself is not imported here: the adapters only follow its calling convention.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from calix.explain.base import Explanation
from calix.models import as_tensor, wrap

__all__ = ["as_explain_func", "quantus_style", "ExplainFuncExplainer"]


def _channel_first(arr: Any, channel_first: bool | None, name: str) -> Any:
    if arr is None or channel_first is None or channel_first:
        return arr
    a = np.asarray(arr)
    if a.ndim != 4:
        raise ValueError(f"channel_first=False needs {name} of shape (n, H, W, C), got "
                         f"shape {a.shape}")
    return np.moveaxis(a, -1, 1)


def as_explain_func(explainer: Any) -> Callable[..., np.ndarray]:
    """A Quantus ``explain_func`` that runs a calix explainer.

    Parameters
    ----------
    explainer : a calix Explainer (used whatever model Quantus passes), or a callable
        ``module -> Explainer`` (built for the model Quantus passes: what randomization
        metrics such as ``quantus.MPRT`` need, since they explain randomized copies).

    Returns
    -------
    callable ``(model, inputs, targets, **kwargs) -> ndarray`` of float32 attributions with
    one row per input, of the shape of calix's explanation values: (n, C, H, W) or
    (n, 1, H, W) for images, (n, d) for tables.

    Example
    -------
    >>> metric = quantus.MaxSensitivity(nr_samples=10)          # doctest: +SKIP
    >>> metric(model=module, x_batch=x, y_batch=y,              # doctest: +SKIP
    ...        explain_func=as_explain_func(Saliency(calix.wrap(module))))
    """
    fixed = hasattr(explainer, "explain")
    if not fixed and not callable(explainer):
        raise TypeError(f"explainer must be a calix Explainer or a callable module -> "
                        f"Explainer, got {type(explainer).__name__}")

    def explain_func(model: Any, inputs: Any, targets: Any, **kwargs: Any) -> np.ndarray:
        ex = explainer if fixed else explainer(model)
        tgt = None if targets is None else np.asarray(targets).reshape(-1).astype(np.int64)
        return np.asarray(ex.explain(inputs, target=tgt).values, dtype=np.float32)

    return explain_func


class ExplainFuncExplainer:
    """A calix-style explainer around a Quantus ``explain_func``.

    Parameters
    ----------
    explain_func : callable ``(model, inputs, targets, **kwargs) -> ndarray``
    model : what ``explain_func`` takes (usually a torch module); wrapped with
        :func:`calix.wrap` for the predictions metrics need (``.model``).
    **kwargs : passed to ``explain_func`` on every call (Quantus's ``explain_func_kwargs``).
    """

    def __init__(self, explain_func: Callable[..., Any], model: Any, **kwargs: Any):
        if not callable(explain_func):
            raise TypeError(f"explain_func must be callable, got {type(explain_func).__name__}")
        self.explain_func = explain_func
        self.raw_model = model
        self.model = wrap(model)
        self.kwargs = kwargs

    def explain(self, x: Any, target: Any = None) -> Explanation:
        xt = as_tensor(x, name="x")
        if target is None:
            with torch.no_grad():
                tgt = self.model.forward(xt).argmax(1).cpu().numpy()
        else:
            tgt = np.asarray(target).reshape(-1).astype(np.int64)
            if len(tgt) == 1 and len(xt) > 1:
                tgt = np.repeat(tgt, len(xt))
        values = np.asarray(self.explain_func(self.raw_model, xt.cpu().numpy(), tgt,
                                              **self.kwargs))
        if values.shape[0] != len(xt):
            raise ValueError(f"explain_func returned {values.shape[0]} rows for {len(xt)} "
                             f"inputs")
        return Explanation(values=values, method="explain_func", target=tgt)


def quantus_style(metric: Callable[..., Any], **metric_kwargs: Any) -> Callable[..., np.ndarray]:
    """A calix metric with Quantus's calling convention.

    The returned callable takes ``(model, x_batch, y_batch, a_batch=None, s_batch=None,
    channel_first=True, explain_func=None, explain_func_kwargs=None)`` and calls ``metric``
    according to what it evaluates (read from its first parameter):

    - maps only (complexity): ``metric(a_batch)``;
    - maps and masks / true attributions (localization, agreement):
      ``metric(a_batch, s_batch)``;
    - a model, inputs and maps (faithfulness, removal, axiomatic):
      ``metric(model, x_batch, a_batch, target=y_batch)``;
    - an explainer (random logit, relative stability): the ``explain_func`` as an
      :class:`ExplainFuncExplainer`, explaining ``y_batch``;
    - an explainer factory and a torch module (MPRT family): a factory of
      :class:`ExplainFuncExplainer` for every randomized copy.

    ``a_batch`` may be None when ``explain_func`` is given (it is then computed, as Quantus
    does). ``metric_kwargs`` go to every call. Curve- and dataclass-valued metrics return
    their per-input summary: ``auc`` of a :class:`~calix.metrics.faithfulness.Curve`,
    ``scores`` of a :class:`~calix.metrics.randomization.Randomization`.

    Returns
    -------
    callable returning an ndarray of shape (n,).

    Example
    -------
    >>> from calix.metrics import relevance_rank_accuracy
    >>> rra = quantus_style(relevance_rank_accuracy)
    >>> rra(None, None, None, a_batch=[[0.9, 0.1, 0.5]], s_batch=[[1, 0, 1]]).tolist()
    [1.0]
    """
    params = list(inspect.signature(metric).parameters)
    if not params:
        raise TypeError(f"{getattr(metric, '__name__', metric)!r} takes no arguments")
    first, second = params[0], params[1] if len(params) > 1 else None

    def call(model: Any, x_batch: Any, y_batch: Any, a_batch: Any = None, s_batch: Any = None,
             *, channel_first: bool | None = True, explain_func: Callable[..., Any] | None = None,
             explain_func_kwargs: dict[str, Any] | None = None) -> np.ndarray:
        x = _channel_first(x_batch, channel_first, "x_batch")
        a = _channel_first(a_batch, channel_first, "a_batch")
        s = _channel_first(s_batch, channel_first, "s_batch")
        ef_kwargs = explain_func_kwargs or {}
        y = None if y_batch is None else np.asarray(y_batch).reshape(-1).astype(np.int64)
        if a is None and first in ("maps", "model"):
            if explain_func is None:
                raise ValueError("give a_batch or an explain_func to compute it")
            a = np.asarray(explain_func(model, np.asarray(x), y, **ef_kwargs))
        if first == "maps":
            if second in ("masks", "truth"):
                if s is None:
                    raise ValueError(f"{metric.__name__} needs s_batch ({second})")
                out = metric(a, s, **metric_kwargs)
            else:
                out = metric(a, **metric_kwargs)
        elif first == "model":
            out = metric(model, x, a, target=y, **metric_kwargs)
        elif first in ("explainer", "make_explainer"):
            if explain_func is None:
                raise ValueError(f"{metric.__name__} needs an explain_func")

            def make(m: Any) -> ExplainFuncExplainer:
                return ExplainFuncExplainer(explain_func, m, **ef_kwargs)

            if first == "explainer":
                out = metric(make(model), x, target=y, **metric_kwargs)
            else:
                out = metric(make, model, x, target=y, **metric_kwargs)
        else:
            raise TypeError(f"{getattr(metric, '__name__', metric)!r} is not a calix metric "
                            f"this adapter knows (first parameter {first!r})")
        for attr in ("auc", "scores"):
            if hasattr(out, attr) and not isinstance(out, np.ndarray):
                return np.asarray(getattr(out, attr))
        return np.asarray(out)

    call.__name__ = f"quantus_style_{getattr(metric, '__name__', 'metric')}"
    call.__doc__ = f"{getattr(metric, '__name__', 'metric')} with Quantus's calling convention."
    return call
