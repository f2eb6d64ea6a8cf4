"""The explainer interface: ``Explainer(model, ...).explain(x, target=None) -> Explanation``."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from calix._progress import model_rows
from calix._random import make_generator
from calix._validation import check_choice, check_count, check_index_range, one_per_input
from calix.models import Model, as_tensor, wrap

__all__ = ["Explanation", "Explainer", "Stochastic", "Output", "Reduce", "reduce_channels",
           "score"]

Output = Literal["probability", "logit", "log_probability"]
Reduce = Literal["none", "sum", "abs_sum", "square_sum"]
_REDUCE = ("none", "sum", "abs_sum", "square_sum")
_OUTPUTS = ("probability", "logit", "log_probability")
#: explainer attributes that hold a budget (model evaluations, steps or masks per input)
_BUDGET_ATTRS = ("n_samples", "n_steps", "n_masks", "steps", "max_samples", "n_permutations")
#: the largest budget per input, and the most evaluations one explain call may plan
MAX_BUDGET = 1 << 24
MAX_QUERIES = 1 << 26


@dataclass(kw_only=True)
class _Annotations:
    """The optional fields an :class:`Explanation` and an explainer's :class:`_Attribution`
    share (keyword-only; documented on :class:`Explanation`)."""

    feature_values: np.ndarray | None = None
    labels: np.ndarray | None = None
    std: np.ndarray | None = None
    lower: np.ndarray | None = None
    upper: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    feature_names: list[str] | None = None
    class_names: list[str] | None = None
    data: np.ndarray | None = None


@dataclass
class Explanation(_Annotations):
    """Attributions for a batch of inputs.

    Attributes
    ----------
    values : ndarray of shape (n, *input_shape), or (n, 1, H, W) for maps reduced over
        channels and for spatial-feature methods on images
        Attribution of every input element (features mapped back to the input's shape).
    method : str
    target : ndarray of shape (n,) -- the explained class (or output index).
    n_queries : int or None -- model evaluations spent (None when unknown).
    params : dict -- the method's parameters.
    feature_values : ndarray of shape (n, d) or None -- per-feature attributions (feature
        methods only).
    labels : ndarray of shape (n, *input_shape) or None -- feature index of every element.
    std, lower, upper : ndarray like ``feature_values`` (or ``values``) or None -- uncertainty.
    extra : dict -- method-specific results (e.g. a surrogate's intercept and R²).
    feature_names : list of d str or None -- names of the features (``feature_values``'
        columns, or ``values``' for tables); None means ``x0, x1, ...``.
    class_names : list of str or None -- names of the classes ``target`` indexes.
    data : ndarray of shape (n, d) or (n, *input_shape) or None -- the explained inputs.

    An Explanation indexes like a batch: ``exp[i]``, ``exp[1:3]``, ``exp[[0, 2]]`` and a boolean
    mask of length n give an Explanation of the selected inputs (``exp[i]`` keeps a batch
    of one). Per-input arrays are sliced, among them the arrays of ``extra`` whose input axis
    has length n (axis 0, or axis 1 for ``extra["samples"]`` of shape (T, n, ...)); scalars,
    names, ``params`` and ``n_queries`` (the whole batch's count) are kept.

    Example
    -------
    >>> exp = KernelSHAP(model).explain(x)          # doctest: +SKIP
    >>> exp[:3].to_pandas()                          # doctest: +SKIP
    >>> exp.save("shap.npz"); Explanation.load("shap.npz")  # doctest: +SKIP
    """

    values: np.ndarray
    method: str
    target: np.ndarray
    n_queries: int | None = None
    params: dict[str, Any] = field(default_factory=dict)

    #: fields with one entry per input (sliced by indexing; stored as arrays by ``save``)
    _ARRAYS = ("values", "target", "feature_values", "labels", "std", "lower", "upper", "data")
    #: ``extra`` arrays whose input axis is not axis 0
    _EXTRA_INPUT_AXIS = {"samples": 1}
    _ARRAY_TAG = "__calix_array__"

    def __len__(self) -> int:
        return len(self.values)

    # ------------------------------------------------------------- selection
    def __getitem__(self, index: Any) -> Explanation:
        """The Explanation of the inputs ``index`` selects (int, slice, indices or mask)."""
        from dataclasses import replace

        n = len(self)
        if isinstance(index, tuple) or isinstance(index, (bool, np.bool_)):
            raise TypeError(f"index an Explanation by input (int, slice, list of ints or a "
                            f"boolean mask of length {n}), got {index!r}")
        try:
            rows = np.atleast_1d(np.arange(n)[index])
        except IndexError as err:
            raise IndexError(f"index {index!r} does not select inputs of an Explanation of "
                             f"{n} inputs: {err}") from err
        arrays = {f: None if getattr(self, f) is None else self._numpy(getattr(self, f))[rows]
                  for f in self._ARRAYS}
        extra = {}
        for key, v in self.extra.items():
            axis = self._EXTRA_INPUT_AXIS.get(key, 0)
            if isinstance(v, np.ndarray) and v.ndim > axis and v.shape[axis] == n:
                v = np.take(v, rows, axis=axis)
            extra[key] = v
        names = {k: None if getattr(self, k) is None else list(getattr(self, k))
                 for k in ("feature_names", "class_names")}
        return replace(self, **arrays, **names, extra=extra, params=dict(self.params))

    def __repr__(self) -> str:
        parts = [f"method={self.method!r}", f"n={len(self)}",
                 f"shape={tuple(np.shape(self.values)[1:])}"]
        if self.feature_values is not None:
            parts.append(f"features={np.shape(self.feature_values)[1]}")
        if self.target is not None:
            try:
                labels = self._target_labels()
            except ValueError:  # a target outside class_names: show the indices
                labels = self._numpy(self.target).reshape(-1).tolist()
            named = any(isinstance(v, str) for v in labels)
            kinds, counts = np.unique(np.asarray(labels, dtype=object if named else None),
                                      return_counts=True)
            shown = ", ".join(f"{k!r}: {c}" if isinstance(k, str) else f"{int(k)}: {c}"
                              for k, c in list(zip(kinds, counts, strict=True))[:6])
            parts.append(f"target={{{shown}{', ...' if len(kinds) > 6 else ''}}}")
        parts.append(f"intervals={self.lower is not None and self.upper is not None}")
        if self.std is not None:
            parts.append("std=True")
        if self.n_queries is not None:
            parts.append(f"n_queries={self.n_queries}")
        return f"Explanation({', '.join(parts)})"

    # ------------------------------------------------------------- tables
    def feature_table(self, which: str = "values") -> np.ndarray:
        """One attribution (or ``std``/``lower``/``upper``) per feature, shape (n, d).

        ``values`` means ``feature_values`` when the method has features (superpixels, patches,
        columns), else ``values`` when it is already a table (n, d). Pixel maps of images
        without ``feature_values`` have no feature table: a ValueError says so.
        """
        if which not in ("values", "std", "lower", "upper"):
            raise ValueError(f"which must be 'values', 'std', 'lower' or 'upper', got {which!r}")
        if which == "values":
            a = self.feature_values if self.feature_values is not None else self.values
        else:
            a = getattr(self, which)
            if a is None:
                raise ValueError(f"this {self.method!r} explanation has no {which}")
        a = self._numpy(a)
        if a.ndim != 2:
            raise ValueError(
                f"{self.method!r} gives a map of shape {a.shape} and no per-feature values, so "
                f"there is no feature table of {which}; use the array itself, or explain with "
                "a feature method (Occlusion, LIME, KernelSHAP ... with PatchGrid or "
                "Superpixels features), whose feature_values have shape (n, d)")
        return a

    def names(self, d: int | None = None) -> list[str]:
        """The d feature names: ``feature_names`` or ``x0 .. x{d-1}``."""
        if d is None:
            d = self.feature_table().shape[1]
        if self.feature_names is None:
            return [f"x{j}" for j in range(d)]
        if len(self.feature_names) != d:
            raise ValueError(f"feature_names has {len(self.feature_names)} names for {d} "
                             "features")
        return [str(s) for s in self.feature_names]

    def _target_labels(self) -> list[Any]:
        t = self._numpy(self.target).reshape(-1)
        if self.class_names is None:
            return t.tolist()
        k = len(self.class_names)
        bad = [int(v) for v in t if not 0 <= int(v) < k]
        if bad:
            raise ValueError(f"target {bad[:5]} lies outside class_names ({k} names)")
        return [str(self.class_names[int(v)]) for v in t]

    def to_pandas(self, which: str = "values") -> Any:
        """A DataFrame with one row per input and one column per feature, plus ``target``.

        Columns are named by ``feature_names`` (else ``x0 ..``); ``target`` holds class names
        when ``class_names`` is known, else class indices. ``which`` picks ``"values"`` (the
        per-feature attributions, see :meth:`feature_table`), ``"std"``, ``"lower"`` or
        ``"upper"``. Image explanations give their per-feature table when they have
        ``feature_values`` (superpixels, patches); pixel maps without it raise a ValueError.
        Needs pandas.
        """
        try:
            import pandas as pd
        except ImportError as err:
            raise ImportError("Explanation.to_pandas needs pandas: pip install pandas") from err
        table = self.feature_table(which)
        names = self.names(table.shape[1])
        if "target" in names:
            raise ValueError("a feature is named 'target', which to_pandas uses for the "
                             "explained class; rename that feature in feature_names")
        df = pd.DataFrame(table, columns=names)
        if self.target is not None:
            df["target"] = self._target_labels()
        return df

    def to_shap(self) -> Any:
        """The explanation as a ``shap.Explanation`` (for shap's plots).

        ``values`` are the per-feature attributions (n, d) (see :meth:`feature_table`),
        ``base_values`` the method's ``extra["base_value"]`` (KernelSHAP, PolySHAP: s(∅)) or
        else its surrogate's ``extra["intercept"]`` (LIME family), ``data`` the explained
        inputs when ``data`` is stored with one value per feature, ``lower_bounds`` /
        ``upper_bounds`` the interval when present. Needs shap.
        """
        try:
            import shap
        except ImportError as err:
            raise ImportError("Explanation.to_shap needs the shap package: pip install shap"
                              ) from err
        values = self.feature_table()
        n = len(values)
        base = self.extra.get("base_value", self.extra.get("intercept"))
        if base is not None:
            base = np.broadcast_to(np.asarray(base, dtype=np.float64), (n,)).copy()
        data = None if self.data is None else self._numpy(self.data)
        if data is not None and data.shape != values.shape:
            data = None  # pixels of images explained by superpixels: not one value per feature
        bounds = {}
        if self.lower is not None and self.upper is not None:
            lo, hi = self._numpy(self.lower), self._numpy(self.upper)
            if lo.shape == values.shape == hi.shape:
                bounds = {"lower_bounds": lo, "upper_bounds": hi}
        return shap.Explanation(values=values, base_values=base, data=data,
                                feature_names=self.names(values.shape[1]), **bounds)

    # ------------------------------------------------------------- storage
    def save(self, path: Any) -> Any:
        """Write the explanation to ``path`` (an ``.npz`` archive, no pickle).

        Arrays (the per-input fields and the arrays of ``params`` and ``extra``) are stored
        as they are, so they load back bit for bit with their dtype; the rest (method,
        n_queries, names, other ``params``/``extra`` entries) goes into a JSON string.
        numpy scalars become Python numbers, tuples lists, and arrays nested in lists or
        dicts lists; anything else that JSON cannot hold (an object, an object array)
        raises a TypeError naming the entry. Returns ``path``.
        """
        import json

        arrays: dict[str, np.ndarray] = {}

        def store(value: Any, where: str) -> Any:
            if isinstance(value, (np.ndarray, Tensor)):
                a = self._numpy(value)
                if a.dtype.kind == "O":
                    raise TypeError(f"cannot save {where}: an object array needs pickle; "
                                    "convert it to a numeric or string array")
                name = f"a{len(arrays)}"
                arrays[name] = a
                return {self._ARRAY_TAG: name}
            return self._json_safe(value, where)

        fields = {f: store(self._numpy(getattr(self, f)), f)[self._ARRAY_TAG]
                  for f in self._ARRAYS if getattr(self, f) is not None}
        meta = {
            "format": "calix.Explanation", "version": 1, "method": self.method,
            "n_queries": None if self.n_queries is None else int(self.n_queries),
            "fields": fields,
            "params": {str(k): store(v, f"params[{k!r}]") for k, v in self.params.items()},
            "extra": {str(k): store(v, f"extra[{k!r}]") for k, v in self.extra.items()},
            "feature_names": None if self.feature_names is None
            else [str(s) for s in self.feature_names],
            "class_names": None if self.class_names is None
            else [str(s) for s in self.class_names],
        }
        arrays["meta"] = np.array(json.dumps(meta, allow_nan=True))
        with open(path, "wb") as fh:
            np.savez(fh, **arrays)
        return path

    @classmethod
    def load(cls, path: Any) -> Explanation:
        """Read an explanation written by :meth:`save` (never unpickles)."""
        import json

        with np.load(path, allow_pickle=False) as z:
            if "meta" not in z.files:
                raise ValueError(f"{path} is not a saved Explanation (no 'meta' entry)")
            meta = json.loads(str(z["meta"][()]))
            if meta.get("format") != "calix.Explanation":
                raise ValueError(f"{path} is not a saved Explanation "
                                 f"(format {meta.get('format')!r})")

            def restore(v: Any) -> Any:
                if isinstance(v, dict) and set(v) == {cls._ARRAY_TAG}:
                    return z[v[cls._ARRAY_TAG]]
                return v

            kw = {f: z[name] for f, name in meta["fields"].items()}
            return cls(method=meta["method"], n_queries=meta["n_queries"],
                       params={k: restore(v) for k, v in meta["params"].items()},
                       extra={k: restore(v) for k, v in meta["extra"].items()},
                       feature_names=meta["feature_names"], class_names=meta["class_names"],
                       **{"target": None, **kw})

    @staticmethod
    def _numpy(a: Any) -> np.ndarray:
        return a.detach().cpu().numpy() if isinstance(a, Tensor) else np.asarray(a)

    @staticmethod
    def _json_safe(v: Any, where: str) -> Any:
        """``v`` as JSON values (numpy scalars -> numbers, tuples/arrays -> lists)."""
        if v is None or isinstance(v, (bool, int, float, str)):
            return v
        if isinstance(v, np.generic):
            if v.dtype.kind == "O":
                raise TypeError(f"cannot save {where}: an object scalar needs pickle")
            return v.item()
        if isinstance(v, (np.ndarray, Tensor)):
            a = Explanation._numpy(v)
            if a.dtype.kind == "O":
                raise TypeError(f"cannot save {where}: an object array needs pickle")
            return a.tolist()
        if isinstance(v, (list, tuple)):
            return [Explanation._json_safe(u, f"{where}[{i}]") for i, u in enumerate(v)]
        if isinstance(v, dict):
            if not all(isinstance(k, str) for k in v):
                raise TypeError(f"cannot save {where}: dict keys must be str, got "
                                f"{sorted({type(k).__name__ for k in v})}")
            return {k: Explanation._json_safe(u, f"{where}[{k!r}]") for k, u in v.items()}
        raise TypeError(f"cannot save {where}: a {type(v).__name__} ({v!r:.60}) is not "
                        "JSON-serialisable; store a number, string, list or array instead")

    def normalized(self) -> np.ndarray:
        """``values`` min-max normalised to [0, 1] per input (constant maps become 0)."""
        v = self.values.reshape(len(self.values), -1)
        lo, hi = v.min(1, keepdims=True), v.max(1, keepdims=True)
        span = np.where(hi > lo, hi - lo, 1.0)
        return ((v - lo) / span).reshape(self.values.shape)


@dataclass
class _Attribution(_Annotations):
    """What an explainer's ``_explain`` computes for a batch; :meth:`Explainer.explain` alone
    turns it into the public :class:`Explanation` (adding the method, targets, the reduction
    over channels, the query count and the names).

    ``values`` (n, *input_shape), a tensor or an array, is reduced over channels by
    ``explain``; the other fields pass on as they are (see :class:`Explanation`). ``n_queries``
    None means: count the model's queries during the call; ``params`` adds to (and overrides)
    the explainer's :meth:`~Explainer.params`; ``feature_names``, ``class_names`` and
    ``data`` None mean: take them from the explained input and the model where known.
    """

    values: Any
    n_queries: int | None = None
    params: dict[str, Any] = field(default_factory=dict)


def column_names(x: Any) -> list[str] | None:
    """The column names of a DataFrame-like ``x`` (pandas, polars), else None."""
    cols = getattr(x, "columns", None)
    if cols is None or isinstance(x, np.ndarray | Tensor):
        return None
    names = [str(c) for c in cols]
    if len(set(names)) != len(names):
        dup = sorted({c for c in names if names.count(c) > 1})
        raise ValueError(f"x has duplicate column names {dup[:5]}; give every column its own "
                         "name")
    return names


def reduce_channels(values: Tensor, how: str, *, image: bool) -> Tensor:
    """Reduce attributions over channels: ``sum`` (signed), ``abs_sum``, ``square_sum``.

    For images ``(n, C, H, W)`` the result keeps a channel axis of size 1; for other inputs
    ``abs_sum`` and ``square_sum`` act element-wise and ``sum`` is the identity.
    """
    check_choice(how, _REDUCE, "reduce")
    if how == "none":
        return values
    v = values.abs() if how == "abs_sum" else values**2 if how == "square_sum" else values
    return v.sum(dim=1, keepdim=True) if image else v


def score(outputs: Tensor, targets: Tensor, output: str, task: str) -> Tensor:
    """The explained scalar per row: probability / logit / log-probability of the target.

    Parameters
    ----------
    outputs : Tensor of shape (n, ..., k) -- logits (calibrated logits for calibrated models).
    targets : Tensor of shape (n,) -- class (or output) index per input.
    """
    if task == "regression":
        z = outputs
    elif output == "probability":
        z = torch.softmax(outputs, dim=-1)
    elif output == "log_probability":
        z = torch.log_softmax(outputs, dim=-1)
    else:
        z = outputs
    idx = targets.to(z.device).view(-1, *([1] * (z.ndim - 1))).expand(*z.shape[:-1], 1)
    return z.gather(-1, idx).squeeze(-1)


class Explainer(ABC):
    """Base class of every calix explainer.

    Parameters
    ----------
    model : calix Model, torch module, scikit-learn estimator or callable (wrapped with
        :func:`calix.wrap`). A calibrated model (:func:`calix.calibrate.calibrated`) is explained
        through its calibration.
    output : {"probability", "logit", "log_probability"}
        The explained scalar for classifiers (regressors explain their raw output).
    reduce : {"none", "sum", "abs_sum", "square_sum"}
        Reduction over channels (signed sum, or unsigned absolute / squared sums).
    budget : int or None
        Model queries per input, in place of the method's own knob (``n_samples``,
        ``n_steps``, ``n_masks``, ``steps``; giving both is an error): see :attr:`budget`.

    A subclass implements ``_explain(x, targets)``, which returns the private record
    ``_Attribution``; :meth:`explain` alone builds the public :class:`Explanation` from it.
    Defaults that depend on the input (features, fill) are resolved per call and never
    stored on the explainer, so one explainer explains any inputs as a fresh one would.
    """

    name: str = "explainer"
    #: True when an explanation evaluates exactly one model row per input (no steps, noisy
    #: copies or perturbations); such explainers can share a batch with per-row model samples.
    single_pass: bool = False
    #: Whether the explanation in progress shows a progress bar (set by :meth:`explain`).
    progress: bool = False
    #: Column names of the tabular input being explained (set by :meth:`explain`).
    _column_names: list[str] | None = None

    #: the method's own budget knob (an attribute named in ``_BUDGET_ATTRS``) that
    #: ``budget=`` sets through :meth:`_set_budget`; None where the method's cost is fixed
    #: (gradients: one query per input; occlusion: d + 1) and ``budget`` is only a cap
    _budget_knob: str | None = None
    #: the ``budget`` given to ``__init__`` (model queries per input), None if not given
    _budget: int | None = None
    #: queries per input of a method without a knob, where they do not depend on the input
    _fixed_cost: int | None = None

    def __init__(self, model: Any, *, output: Output = "probability", reduce: Reduce = "none",
                 budget: int | None = None):
        check_choice(output, _OUTPUTS, "output")
        check_choice(reduce, _REDUCE, "reduce")
        self.model: Model = wrap(model)
        self.output = output
        self.reduce = reduce
        if budget is not None:
            budget = check_count(budget, "budget")
            if budget > MAX_BUDGET:
                raise ValueError(f"budget={budget} model queries per input is too large: calix "
                                 f"runs at most {MAX_BUDGET:.3g} per input")
            self._budget = budget

    # ---------------------------------------------------------------- budget
    @property
    def budget(self) -> int | None:
        """Model queries per input this explainer spends at most (recorded in ``params``):
        the ``budget`` given, else what the method's knob spends.

        Every registered explainer takes ``budget=`` (queries per input) in place of its own
        knob (``n_samples``, ``n_steps``, ``n_masks``, ``steps``): sampling methods spend it
        exactly; methods whose cost is fixed (gradients, occlusion) take it as a cap and refuse
        inputs that would need more. None: no budget was given and the cost depends on the
        input (occlusion: d + 1 queries for d features). A fill that averages over background
        rows (``Marginal``) evaluates the model once per background row for every query.
        """
        if self._budget is not None:
            return self._budget
        if self._budget_knob is None:
            return self._fixed_cost
        return self._queries(int(getattr(self, self._budget_knob)))

    def _queries(self, knob: int) -> int:
        """Model queries per input spent with the knob set to ``knob`` (the inverse of
        :meth:`_set_budget`)."""
        return knob

    def _set_budget(self, budget: int) -> None:
        """Set the method's own knob so that it spends ``budget`` queries per input (at most);
        raise a ValueError naming ``budget`` when it cannot be honoured."""
        if self._budget_knob is not None:
            setattr(self, self._budget_knob, budget)

    def _apply_budget(self, given: Any, default: int) -> None:
        """Set the knob ``_budget_knob``: to ``given``, or from ``budget=`` (never both), or
        to ``default``."""
        knob = self._budget_knob
        if self._budget is None:
            setattr(self, knob, default if given is None else given)
        elif given is not None:
            raise ValueError(f"give either budget={self._budget} (model queries per input) or "
                             f"{knob}={given!r}, not both")
        else:
            self._set_budget(self._budget)

    def _knob_given(self) -> str:
        """The knob's value for messages, with the ``budget`` it came from."""
        value = getattr(self, self._budget_knob)
        return str(value) if self._budget is None else f"{value} (from budget={self._budget})"

    def _check_cost(self, cost: int, what: str) -> None:
        """Refuse a fixed cost per input above the ``budget`` given."""
        if self._budget is not None and cost > self._budget:
            raise ValueError(f"{type(self).__name__} needs {cost} model queries per input "
                             f"({what}), more than budget={self._budget}; raise budget or use "
                             "fewer features")

    # ---------------------------------------------------------------- public
    def explain(self, x: Any, target: Any = None, *, progress: bool = False) -> Explanation:
        """Explain one input ``(*input_shape)`` or a batch ``(n, *input_shape)``.

        Parameters
        ----------
        x : array-like, tensor or DataFrame
            A DataFrame's column names (or the ``feature_names_in_`` of a scikit-learn model)
            name the features of the Explanation and may name column groups.
        target : None, int, class name or array-like of shape (n,)
            None explains the predicted class; an int explains that class for every input;
            an array gives one class per input. Class names (strings) are looked up in the
            model's classes (``classes_`` of a scikit-learn classifier).
        progress : bool
            Show a live count of the model rows evaluated, with the elapsed time (on stderr),
            for every explainer: perturbation and gradient methods, Captum attributions and
            sequential designs alike.
        """
        cols = column_names(x) or getattr(self.model, "feature_names_in_", None)
        xb = self._batch(x)
        self._check_budget(len(xb))
        targets = self.targets(xb, target)
        before = self.model.n_queries
        # the call's own state (column names, progress) lives on the explainer only while
        # the call runs: a later call, on other data, starts from the class defaults again
        self._column_names, self.progress = cols, bool(progress)
        try:
            with model_rows(self.model, enabled=self.progress, description=self.name):
                rec = self._explain(xb, targets)
        finally:
            vars(self).pop("_column_names", None)
            vars(self).pop("progress", None)
        used = self.model.n_queries - before
        image = xb.ndim == 4
        values = reduce_channels(torch.as_tensor(rec.values), self.reduce, image=image)
        feature_names, data = rec.feature_names, rec.data
        if xb.ndim == 2:  # tables: names and the explained rows travel with the attributions
            per_column = rec.feature_values is None or rec.feature_values.shape[1] == xb.shape[1]
            if feature_names is None and cols is not None and per_column:
                feature_names = list(cols)
            if data is None and per_column:
                data = xb.detach().cpu().numpy()
        class_names = rec.class_names
        classes = getattr(self.model, "classes_", None)
        if class_names is None and classes is not None:
            class_names = [str(c) for c in classes]
        return Explanation(
            values=values.detach().cpu().numpy(), method=self.name,
            target=targets.cpu().numpy(),
            n_queries=used if rec.n_queries is None else rec.n_queries,
            params={"output": self.output, "reduce": self.reduce, **self.params(),
                    **rec.params},
            feature_values=rec.feature_values, labels=rec.labels, std=rec.std,
            lower=rec.lower, upper=rec.upper, extra=rec.extra, feature_names=feature_names,
            class_names=class_names, data=data)

    def explain_classes(self, x: Any, classes: Any = None, *, progress: bool = False
                        ) -> dict[Any, Explanation]:
        """One Explanation per class: ``{class: explain(x, target=class)}``.

        Parameters
        ----------
        classes : None or sequence of class indices / names
            None explains every class of the model, keyed by the model's class labels
            (``classes_``) when it has them, else by index. Given integers are column indices;
            strings are class names.

        Each class costs one :meth:`explain` (seeded explainers draw the same coalitions for
        every class). ``np.stack([e.feature_values for e in out.values()], -1)`` gives the
        ``(n, d, k)`` array of shap's multi-output explainers.
        """
        if self.model.task != "classification":
            raise ValueError("explain_classes needs a classifier; a regressor has one output")
        if classes is None:
            xb = self._batch(x)
            if self.model.n_outputs is None:
                with torch.no_grad():
                    self.model.forward(xb[:1])
            names = getattr(self.model, "classes_", None)
            labels = list(names) if names is not None else list(range(self.model.n_outputs))
            # by column, keyed by label (integer labels such as [1, 2, 5] are not indices)
            return {c: self.explain(x, target=i, progress=progress)
                    for i, c in enumerate(labels)}
        classes = list(classes)
        if not classes:
            raise ValueError("classes is empty; give at least one class")
        return {c: self.explain(x, target=str(c) if isinstance(c, str) else c,
                                progress=progress) for c in classes}

    def params(self) -> dict[str, Any]:
        """The method's parameters (recorded in every Explanation), ``budget`` first."""
        return {"budget": self.budget}

    # ---------------------------------------------------------------- helpers
    @abstractmethod
    def _explain(self, x: Tensor, targets: Tensor) -> _Attribution:
        """Explain a validated batch ``x`` (n, *input_shape) for ``targets`` (n,)."""

    def _check_budget(self, n: int) -> None:
        """Refuse a budget (samples, steps, masks per input) that cannot run: not a positive
        integer, past :data:`MAX_BUDGET` per input or :data:`MAX_QUERIES` for the ``n`` inputs."""
        for name in _BUDGET_ATTRS:
            value = getattr(self, name, None)
            if value is None:
                continue
            value = check_count(value, name)
            if value > MAX_BUDGET or value * n > MAX_QUERIES:
                raise ValueError(
                    f"{name}={value} for {n} input(s) is too large: calix runs at most "
                    f"{MAX_BUDGET:.3g} per input and {MAX_QUERIES:.3g} in one explain call; "
                    f"lower {name} or explain fewer inputs at a time")

    def _batch(self, x: Any) -> Tensor:
        t = as_tensor(x, name="x", device=self.model.device)
        shape = self.model.input_shape
        if shape is not None and tuple(t.shape) == shape:
            t = t[None]
        t = self.model.check_input(t)
        if len(t) == 0:
            raise ValueError("x has no inputs")
        return t

    def targets(self, x: Tensor, target: Any) -> Tensor:
        """Resolve ``target`` to a long tensor of shape (n,), checking the class range."""
        n = len(x)
        k = self.model.n_outputs
        if target is None:
            with torch.no_grad():
                out = self.model.forward(x)
            k = out.shape[1]
            if self.model.task == "regression":
                return torch.zeros(n, dtype=torch.long)
            return out.argmax(1).cpu()
        if not isinstance(target, Tensor):
            target = self._class_indices(np.asarray(target))
        t = torch.as_tensor(target)
        if t.is_floating_point() and (t != t.round()).any():
            raise ValueError(f"target must be integer class indices, got {t}")
        t = one_per_input(t.long().cpu().reshape(-1), n, "target")
        if k is None:
            with torch.no_grad():
                k = self.model.forward(x[:1]).shape[1]
        check_index_range(t, k, "target", of=f" for a model with {k} outputs", found="got")
        return t

    def _class_indices(self, target: np.ndarray) -> np.ndarray:
        """Class names (strings, or any non-numeric labels) to column indices."""
        if target.dtype.kind in "biuf":
            return target
        classes = getattr(self.model, "classes_", None)
        if classes is None:
            raise ValueError(
                f"target {target.tolist()!r} names classes, but this model's class names are "
                "unknown; pass class indices (0 .. n_classes - 1)")
        lookup = {str(c): i for i, c in enumerate(classes)}
        flat = [str(v) for v in target.reshape(-1)]
        bad = sorted({v for v in flat if v not in lookup})
        if bad:
            raise ValueError(f"target names unknown class(es) {bad[:5]}; the model's classes "
                             f"are {[str(c) for c in classes]}")
        return np.asarray([lookup[v] for v in flat], dtype=np.int64).reshape(target.shape)

    def _score(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return score(outputs, targets, self.output, self.model.task)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"


class Stochastic(Explainer):
    """Base of the explainers that draw at random (noise, masks, coalitions, samples).

    Parameters
    ----------
    seed : int, torch ``Generator``, numpy ``Generator`` or None
        Every draw of one explain call comes from one stream made from it: an int gives the
        same explanation on every call; a generator continues its stream from call to call (a
        numpy Generator gives the stream's seed); None draws a fresh seed per call.
    """

    def __init__(self, model: Any, *, seed: Any = 0, **kwargs: Any):
        super().__init__(model, **kwargs)
        if isinstance(seed, bool) or not (
                seed is None or isinstance(seed, int | np.integer | np.random.Generator
                                           | torch.Generator)):
            raise TypeError(f"seed must be an int, a numpy Generator, a torch Generator or "
                            f"None, got {type(seed).__name__}")
        self.seed = seed

    def _generator(self) -> torch.Generator:
        """The call's random stream (a CPU torch Generator) from ``seed``."""
        if isinstance(self.seed, np.random.Generator):
            return make_generator(int(self.seed.integers(2**63 - 1)))
        return make_generator(self.seed)
