"""Hostile inputs to the public entry points.

Every call below either returns finite output of the documented shape, or raises a
``ValueError`` / ``TypeError`` (calix's own errors subclass these) whose message names the
offending argument. Any other exception (an IndexError, a RuntimeError from torch, a
MemoryError from trying to allocate a huge budget), a message that does not name the argument,
or a NaN / infinite / wrongly shaped result fails the case.

The sweep is a table of (entry point, hostile argument) cases; hypothesis adds random shapes,
dtypes and non-finite values on top of it.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import calix
from calix import calibrate as cal
from calix import uncertainty as unc
from calix.explain import METHODS, Explanation, FeatureExplainer
from calix.metrics import calibration as mcal
from calix.metrics import faithfulness as faith
from calix.metrics import robustness
from calix.perturb import (
    Bernoulli,
    Blur,
    Columns,
    Constant,
    FixedSize,
    Marginal,
    Mean,
    Noise,
    PatchGrid,
    Perturbation,
    Pixels,
    ShapleyKernel,
    StratifiedLevels,
    Superpixels,
    Uniform,
)

D, K, N = 4, 3, 2  # features, classes, rows of the tabular cases
IMG = (1, 6, 6)  # one input image (C, H, W)
HUGE = 10**8

# --------------------------------------------------------------------------- the property


def _finite(out: Any, where: str = "result") -> None:
    """Every number in ``out`` is finite (recursing into results and containers)."""
    if out is None or isinstance(out, str | bool):
        return
    if isinstance(out, torch.Tensor):
        out = out.detach().cpu().numpy()
    if isinstance(out, np.ndarray):
        if out.dtype.kind in "fc":
            assert np.isfinite(out).all(), f"{where} holds NaN or infinite values: {out}"
        return
    if isinstance(out, int | float | np.number):
        assert np.isfinite(out), f"{where} is {out}"
        return
    if isinstance(out, Explanation):
        for f in ("values", "feature_values", "std", "lower", "upper"):
            _finite(getattr(out, f), f"{where}.{f}")
        return
    if isinstance(out, dict):
        for k, v in out.items():
            _finite(v, f"{where}[{k!r}]")
        return
    if isinstance(out, list | tuple):
        for i, v in enumerate(out):
            _finite(v, f"{where}[{i}]")
        return
    fields = getattr(out, "__dataclass_fields__", None)
    if fields:
        for f in fields:
            if f not in ("extra", "params"):
                _finite(getattr(out, f), f"{where}.{f}")


def _names(msg: str, names: tuple[str, ...]) -> bool:
    return any(re.search(rf"(?<![A-Za-z0-9_]){re.escape(n)}(?![A-Za-z0-9_])", msg)
               for n in names)


def hold(call: Callable[[], Any], names: tuple[str, ...] | str,
         shape: Callable[[Any], None] | None = None, *, accept: bool = False,
         refuse: bool = False) -> Any:
    """Run ``call``; it returns finite output that passes ``shape`` or refuses naming one of
    ``names``. With ``accept`` the call must succeed (a well-formed input), with ``refuse`` it
    must be refused (a value with no meaning, which must not pass silently)."""
    names = (names,) if isinstance(names, str) else names
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            out = call()
        except (ValueError, TypeError) as exc:
            if accept:
                raise AssertionError(f"a well-formed call was refused: {exc}") from exc
            msg = str(exc)
            assert _names(msg, names), (
                f"{type(exc).__name__} does not name any of {names}: {msg!r}")
            return None
    assert not refuse, f"a meaningless argument passed silently, giving {out!r:.200}"
    _finite(out)
    if shape is not None:
        shape(out)
    return out


def _shape_is(*expected: int) -> Callable[[Any], None]:
    def check(out: Any) -> None:
        assert tuple(np.shape(out)) == tuple(expected), f"shape {np.shape(out)} != {expected}"
    return check


# --------------------------------------------------------------------------- hostile values


def hostile_arrays(shape: tuple[int, ...], seed: int = 0) -> dict[str, Any]:
    """Arrays that stand where a float batch of ``shape`` belongs, keyed by what is wrong."""
    rng = np.random.default_rng(seed)
    good = rng.standard_normal(shape).astype(np.float32)
    nan, inf, ninf = good.copy(), good.copy(), good.copy()
    nan.flat[0], inf.flat[-1], ninf.flat[1] = np.nan, np.inf, -np.inf
    return {
        "valid": good,
        "list": good.tolist(),
        "tensor": torch.from_numpy(good.copy()),
        "float64": good.astype(np.float64),
        "float16": good.astype(np.float16),
        "int": np.round(good * 3).astype(np.int64),
        "bool": good > 0,
        "nan": nan,
        "inf": inf,
        "-inf": ninf,
        "nan_tensor": torch.from_numpy(nan),
        "complex": good.astype(np.complex64),
        "object": good.astype(object),
        "str": good.astype(str),
        "ragged": [[1.0] * (shape[-1]), [1.0]],
        "scalar": np.float32(1.0),
        "none": None,
        "empty_rows": np.zeros((0, *shape[1:]), np.float32),
        "empty_features": np.zeros((shape[0], *([0] * (len(shape) - 1))), np.float32),
        "wrong_width": np.zeros((*shape[:-1], shape[-1] + 1), np.float32),
        "extra_dim": good[..., None],
        "flat": good.reshape(-1),
    }


#: cases every entry point must accept (the same numbers in another container or dtype)
WELL_FORMED = {"valid", "list", "tensor", "float64", "float16", "int", "bool"}

BAD_TARGETS: dict[str, Any] = {
    "none": None, "int": 1, "numpy_int": np.int64(2), "per_row": np.array([0, 2]),
    "high": K, "negative": -1, "per_row_high": [0, K + 5], "float_int": 1.0, "fraction": 1.5,
    "nan": float("nan"), "inf": float("inf"), "string": "cat", "strings": ["a", "b"],
    "too_many": [0, 1, 2], "too_few_2d": [[0], [1], [2]], "complex": 1 + 2j,
    "object": np.array([object(), object()], dtype=object), "empty": [],
}
GOOD_TARGETS = {"none", "int", "numpy_int", "per_row", "float_int"}


# --------------------------------------------------------------------------- models


def _tab_module() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(D, 8), nn.ReLU(), nn.Dropout(0.2), nn.Linear(8, K)).eval()


def _img_module() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(2 * IMG[1] * IMG[2], K)).eval()


_rng = np.random.default_rng(0)
X_TRAIN = _rng.standard_normal((40, D)).astype(np.float32)
Y_TRAIN = np.arange(40) % K


def _sklearn():
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(max_iter=200).fit(X_TRAIN, Y_TRAIN)


_W = _rng.standard_normal((D, K))


def _numpy_fn(a: np.ndarray) -> np.ndarray:
    return a.reshape(len(a), -1) @ _W


MODEL_KINDS: dict[str, Callable[[], Any]] = {
    "torch": lambda: calix.wrap(_tab_module()),
    "torch_shaped": lambda: calix.wrap(_tab_module(), input_shape=(D,)),
    "sklearn": lambda: calix.wrap(_sklearn()),
    "callable": lambda: calix.wrap(_numpy_fn),
}
MODEL_METHODS = ("forward", "predict_proba", "predict_logits")


def _model_call(model: Any, method: str, x: Any) -> Any:
    return getattr(model, method)(x)


@pytest.mark.parametrize("case", list(hostile_arrays((N, D))))
@pytest.mark.parametrize("method", MODEL_METHODS)
@pytest.mark.parametrize("kind", list(MODEL_KINDS))
def test_model_inputs(kind: str, method: str, case: str) -> None:
    x = hostile_arrays((N, D))[case]
    for warm in (False, True):  # before and after the model's first call
        model = MODEL_KINDS[kind]()
        if warm:
            model.forward(np.zeros((1, D), np.float32))
        n = len(x) if case in WELL_FORMED else None
        out = hold(lambda m=model: _model_call(m, method, x), "x",
                   _shape_is(n, K) if n is not None else None, accept=case in WELL_FORMED)
        if out is not None:
            assert np.shape(out)[1] == K, f"{kind}.{method} gave shape {np.shape(out)}"
            if method == "predict_proba":
                np.testing.assert_allclose(np.asarray(out).sum(1), 1.0, atol=1e-5)


WRAP_ARGS: dict[str, tuple[dict[str, Any], tuple[str, ...]]] = {
    "batch_size_zero": ({"batch_size": 0}, ("batch_size",)),
    "batch_size_negative": ({"batch_size": -3}, ("batch_size",)),
    "batch_size_float": ({"batch_size": 2.5}, ("batch_size",)),
    "batch_size_str": ({"batch_size": "8"}, ("batch_size",)),
    "task": ({"task": "clustering"}, ("task",)),
    "output": ({"output": "prob"}, ("output",)),
    "backend": ({"backend": "jax"}, ("backend",)),
    "input_shape_negative": ({"input_shape": (-1,)}, ("input_shape",)),
    "input_shape_str": ({"input_shape": "4"}, ("input_shape",)),
    "autocast": ({"autocast": "fp8"}, ("autocast",)),
}


@pytest.mark.parametrize("case", list(WRAP_ARGS))
@pytest.mark.parametrize("kind", ["torch", "sklearn", "callable"])
def test_wrap_arguments(kind: str, case: str) -> None:
    obj = {"torch": _tab_module, "sklearn": _sklearn, "callable": lambda: _numpy_fn}[kind]()
    kwargs, names = WRAP_ARGS[case]
    # an argument that does not apply to this kind of model is refused naming itself too
    model = hold(lambda: calix.wrap(obj, **kwargs), names)
    if model is not None:
        hold(lambda: model.predict_proba(X_TRAIN[:3]), names, _shape_is(3, K), accept=True)


@pytest.mark.parametrize("kind", ["torch", "sklearn", "callable"])
def test_wrap_rejects_non_models(kind: str) -> None:
    for obj in (None, 3, "model", np.zeros(3)):
        hold(lambda o=obj: calix.wrap(o), ("obj", "wrap"), refuse=True)


# --------------------------------------------------------------------------- perturbation

TAB_FILLS: dict[str, Callable[[], Any]] = {
    "constant": lambda: Constant(0.0),
    "mean": lambda: Mean().fit(X_TRAIN),
    "noise": lambda: Noise(0.5),
    "marginal": lambda: Marginal(X_TRAIN[:5]),
}
IMG_FILLS: dict[str, Callable[[], Any]] = {
    "constant": lambda: Constant(0.0),
    "mean": lambda: Mean().fit(np.random.default_rng(1).random((5, *IMG))),
    "blur": lambda: Blur(3, 1.0),
    "noise": lambda: Noise(0.5),
    "marginal": lambda: Marginal(np.random.default_rng(1).random((5, *IMG))),
}
ENGINES = (
    [(f"columns-{f}", Columns, fill, (N, D)) for f, fill in TAB_FILLS.items()]
    + [(f"{feat.__name__.lower()}-{f}", feat, fill, (N, *IMG))
       for feat in (Pixels, PatchGrid, Superpixels) for f, fill in IMG_FILLS.items()]
)


def _features(cls: type) -> Any:
    if cls is PatchGrid:
        return PatchGrid(2)
    if cls is Superpixels:
        return Superpixels(4, n_jobs=1)
    return cls()


def _engine_model(shape: tuple[int, ...]) -> Any:
    if len(shape) == 2:
        return calix.wrap(_tab_module(), input_shape=(D,))
    return calix.wrap(_img_module(), input_shape=IMG)


def _mask_cases(d: int) -> dict[str, Any]:
    ok = np.random.default_rng(0).random((5, d)) < 0.5
    return {
        "valid": ok, "list": ok.tolist(), "float": ok.astype(np.float32) * 0.5,
        "per_input": np.stack([ok, ~ok]), "int": ok.astype(np.int64),
        "wrong_width": ok[:, :-1], "too_wide": np.ones((5, d + 1), bool),
        "one_dim": ok[0], "four_dim": ok[None, None], "zero_masks": ok[:0],
        "above_one": ok * 2.0, "negative": -ok.astype(np.float32), "nan": np.full((5, d), np.nan),
        "str": ok.astype(str), "complex": ok.astype(np.complex64), "object": ok.astype(object),
        "none": None, "three_inputs": np.stack([ok, ok, ok]),
    }


MASK_OK = {"valid", "list", "float", "per_input", "int"}


@pytest.mark.parametrize("op", ["apply", "query"])
@pytest.mark.parametrize("engine_case", ENGINES, ids=[e[0] for e in ENGINES])
def test_perturbation_inputs(engine_case: tuple, op: str) -> None:
    _, feat, fill, shape = engine_case
    engine = Perturbation(_features(feat), fill())
    model = _engine_model(shape)
    good = hostile_arrays(shape)["valid"]
    d = engine.n_features(good)
    ok = _mask_cases(d)["valid"]

    def run(x: Any, masks: Any) -> Any:
        if op == "apply":
            return engine.apply(x, masks, seed=0)
        return engine.query(model, x, masks, seed=0)

    def shape_check(n: int, m: int) -> Callable[[Any], None]:
        def check(res: Any) -> None:
            lead = res.inputs.shape[:2] if op == "apply" else res.outputs.shape[:2]
            assert tuple(lead) == (n, m) and tuple(res.levels.shape) == (n, m)
            if op == "query":
                assert res.outputs.shape[2] == K
            else:
                assert tuple(res.inputs.shape[2:]) == shape[1:]
        return check

    for case, x in hostile_arrays(shape).items():
        well = case in WELL_FORMED
        hold(lambda x=x: run(x, ok), "x", shape_check(N, len(ok)) if well else None,
             accept=well and feat is not Superpixels)  # SLIC's count varies with the dtype
    for case, masks in _mask_cases(d).items():
        m = np.shape(masks)[-2] if case in MASK_OK else None
        hold(lambda mk=masks: run(good, mk), "masks",
             shape_check(N, m) if m is not None else None, accept=case in MASK_OK)


SAMPLERS = {"uniform": Uniform, "bernoulli": Bernoulli, "fixed_size": lambda: FixedSize(2),
            "shapley_kernel": ShapleyKernel, "stratified": lambda: StratifiedLevels(3)}
SAMPLE_ARGS: dict[str, tuple[Any, Any]] = {
    "valid": (6, 4), "numpy_ints": (np.int64(6), np.int32(4)), "zero_m": (0, 4),
    "negative_m": (-1, 4), "float_m": (2.5, 4), "str_m": ("6", 4), "none_m": (None, 4),
    "huge_m": (10**13, 4), "huge_d": (2, 10**13), "zero_d": (6, 0), "negative_d": (6, -2),
    "one_d": (6, 1), "str_d": (6, "4"), "float_d": (6, 4.5), "nan_m": (float("nan"), 4),
    "bool_m": (True, 4),
}


@pytest.mark.parametrize("case", list(SAMPLE_ARGS))
@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_sampler_sizes(sampler: str, case: str) -> None:
    m, d = SAMPLE_ARGS[case]
    ok = case in ("valid", "numpy_ints", "zero_m")

    def check(masks: Any) -> None:
        assert masks.dtype == torch.bool and tuple(masks.shape) == (int(m), int(d))

    hold(lambda: SAMPLERS[sampler]().sample(m, d, seed=0), ("m", "d", "size"),
         check, accept=ok)


# --------------------------------------------------------------------------- explainers

_BUDGETS: dict[str, dict[str, Any]] = {
    "integrated_gradients": {"n_steps": 4},
    "smoothgrad": {"n_samples": 4},
    "rise": {"n_masks": 20, "grid": 3},
    "lime": {"n_samples": 30},
    "kernel_shap": {"n_samples": 14},
    "poly_shap": {"n_samples": 20},
    "leverage_shap": {"n_samples": 20},
    "regression_adjusted_shap": {"n_samples": 20},
    "logit_surrogate_shap": {"n_samples": 20},
    "stacked_shap": {"n_samples": 24},
    "shapley": {"n_samples": 20},
    "meaningful_perturbation": {"steps": 2},
    "bayes_lime": {"n_samples": 30},
    "bayes_shap": {"n_samples": 30, "max_samples": 30},
    "eagle": {"n_samples": 30, "batch": 10},
    "glime": {"n_samples": 30},
    "us_lime": {"n_samples": 30},
    "lime_tabular": {"n_samples": 30, "training_data": X_TRAIN},
}
#: the budget argument of each explainer, set to a huge value in the budget cases
_BUDGET_ARG = {"integrated_gradients": "n_steps", "smoothgrad": "n_samples", "rise": "n_masks",
               "meaningful_perturbation": "steps"}
_IMAGES_ONLY = {"rise", "meaningful_perturbation"}
EXPLAINERS = sorted(METHODS)


def _explainer(name: str, **over: Any) -> Any:
    image = name in _IMAGES_ONLY
    model = calix.wrap(_img_module() if image else _tab_module(),
                       input_shape=IMG if image else (D,))
    kwargs = {**_BUDGETS.get(name, {}), **over}
    if not image and issubclass(METHODS[name], FeatureExplainer):
        kwargs.setdefault("fill", Constant(0.0))
    return METHODS[name](model, **kwargs)


def _explanation_shape(n: int, shape: tuple[int, ...]) -> Callable[[Any], None]:
    def check(exp: Any) -> None:
        assert isinstance(exp, Explanation)
        v = np.asarray(exp.values)
        assert v.shape[0] == n and v.ndim == len(shape) + 1, v.shape
        if len(shape) == 1:
            assert v.shape[1:] == shape, v.shape
        else:
            assert v.shape[-2:] == shape[-2:] and v.shape[1] in (1, shape[0]), v.shape
        assert np.shape(exp.target) == (n,)
        assert ((exp.target >= 0) & (exp.target < K)).all(), exp.target
    return check


@pytest.mark.parametrize("name", EXPLAINERS)
def test_explainer_inputs(name: str) -> None:
    explainer = _explainer(name)
    shape = IMG if name in _IMAGES_ONLY else (D,)
    for case, x in hostile_arrays((N, *shape)).items():
        well = case in WELL_FORMED
        hold(lambda x=x: explainer.explain(x), "x",
             _explanation_shape(N, shape) if well else None, accept=well)
    good = hostile_arrays((N, *shape))["valid"]
    hold(lambda: explainer.explain(good[0]), "x", _explanation_shape(1, shape), accept=True)


@pytest.mark.parametrize("name", [n for n in EXPLAINERS if n not in _IMAGES_ONLY | {
    "lime_tabular"}])
def test_explainer_images(name: str) -> None:
    """Every explainer that takes images, on hostile image batches (patch features)."""
    model = calix.wrap(_img_module(), input_shape=IMG)
    kwargs = dict(_BUDGETS.get(name, {}))
    if issubclass(METHODS[name], FeatureExplainer):
        kwargs["features"] = PatchGrid(3)  # 4 features
    if name == "glime":
        kwargs["variant"] = "gauss"
    explainer = METHODS[name](model, **kwargs)
    for case, x in hostile_arrays((N, *IMG)).items():
        well = case in WELL_FORMED
        hold(lambda x=x: explainer.explain(x), "x", _explanation_shape(N, IMG) if well else None,
             accept=well)


@pytest.mark.parametrize("name", EXPLAINERS)
def test_explainer_targets(name: str) -> None:
    explainer = _explainer(name)
    shape = IMG if name in _IMAGES_ONLY else (D,)
    good = hostile_arrays((N, *shape))["valid"]
    for case, target in BAD_TARGETS.items():
        hold(lambda t=target: explainer.explain(good, target=t), "target",
             _explanation_shape(N, shape), accept=case in GOOD_TARGETS)


@pytest.mark.parametrize("value", [HUGE, 0, -5, 2.5, "100"])
@pytest.mark.parametrize("name", EXPLAINERS)
def test_explainer_budgets(name: str, value: Any) -> None:
    arg = _BUDGET_ARG.get(name, "n_samples")
    shape = IMG if name in _IMAGES_ONLY else (D,)
    good = hostile_arrays((1, *shape))["valid"]
    # refused at construction or by explain, before anything of the budget's size exists
    hold(lambda: _explainer(name, **{arg: value}).explain(good), arg,
         _explanation_shape(1, shape))


@pytest.mark.parametrize("case", ["output", "reduce", "model"])
@pytest.mark.parametrize("name", EXPLAINERS)
def test_explainer_options(name: str, case: str) -> None:
    if case == "model":
        model: Any = "not a model"
        hold(lambda: METHODS[name](model, **_BUDGETS.get(name, {})), ("model", "obj", "wrap"))
        return
    hold(lambda: _explainer(name, **{case: "bogus"}), case, refuse=True)


# --------------------------------------------------------------------------- calibrators

_ZR = np.random.default_rng(3)
LOGITS = (3 * _ZR.standard_normal((60, K))).astype(np.float32)
LABELS = np.arange(60) % K
LEVELS = np.linspace(0, 1, 60)


def _logit_cases() -> dict[str, Any]:
    cases = hostile_arrays((60, K), seed=3)
    cases["valid"] = LOGITS
    cases["probabilities"] = np.exp(LOGITS) / np.exp(LOGITS).sum(1, keepdims=True)
    cases["one_class"] = LOGITS[:, :1]
    return cases


def _label_cases() -> dict[str, Any]:
    return {
        "valid": LABELS, "list": LABELS.tolist(), "tensor": torch.from_numpy(LABELS),
        "float_ints": LABELS.astype(np.float64), "int32": LABELS.astype(np.int32),
        "fractions": LABELS + 0.5, "nan": np.where(LABELS == 0, np.nan, LABELS),
        "inf": np.where(LABELS == 0, np.inf, LABELS),
        "high": np.where(LABELS == 0, K, LABELS), "negative": LABELS - 1,
        "strings": LABELS.astype(str), "letters": np.array(list("abc") * 20),
        "object": LABELS.astype(object), "complex": LABELS.astype(np.complex64),
        "short": LABELS[:-1], "long": np.r_[LABELS, 0], "two_dim": LABELS[:, None],
        "one_hot": np.eye(K)[LABELS], "single_class": np.zeros(60, int), "none": None,
        "scalar": 1, "empty": np.zeros(0, int), "bool": LABELS > 0,
    }


LABELS_OK = {"valid", "list", "tensor", "float_ints", "int32", "bool"}
CALIBRATORS = {
    "temperature": cal.TemperatureScaling,
    "dirichlet": lambda: cal.Dirichlet(reg_lambda=1e-3, reg_mu=1e-3),  # no CV grid: fast
    "recalx": lambda: cal.ReCalX(3, min_samples_per_bin=5),
}


def _fit(name: str, logits: Any, labels: Any, levels: Any = LEVELS) -> Any:
    c = CALIBRATORS[name]()
    if name == "recalx":
        return c.fit(logits, labels, levels=levels)
    return c.fit(logits, labels)


def _proba_shape(n: int, k: int = K) -> Callable[[Any], None]:
    def check(p: Any) -> None:
        assert np.shape(p) == (n, k)
        np.testing.assert_allclose(np.asarray(p).sum(1), 1.0, atol=1e-5)
    return check


@pytest.mark.parametrize("name", list(CALIBRATORS))
def test_calibrator_fit(name: str) -> None:
    for case, z in _logit_cases().items():
        ok = case in WELL_FORMED - {"bool", "int"}  # bool/int scores look like probabilities
        c = hold(lambda z=z: _fit(name, z, LABELS), "logits", accept=ok)
        if c is not None:  # fitted: it calibrates logits like those it was fitted on
            lv = LEVELS if name == "recalx" else None
            zf = np.asarray(z, dtype=np.float32)
            hold(lambda c=c, zf=zf, lv=lv: c.predict_proba(zf, lv), "logits",
                 lambda p, zf=zf: _proba_shape(60, zf.shape[1])(p), accept=True)
    for case, y in _label_cases().items():
        hold(lambda y=y: _fit(name, LOGITS, y), "labels", accept=case in LABELS_OK)


@pytest.mark.parametrize("name", list(CALIBRATORS))
def test_calibrator_predict(name: str) -> None:
    fresh = CALIBRATORS[name]()
    hold(lambda: fresh.predict_proba(LOGITS, LEVELS), ("fit",))
    c = _fit(name, LOGITS, LABELS)
    lv = LEVELS[:N] if name == "recalx" else None
    for case, z in hostile_arrays((N, K), seed=4).items():
        ok = case in WELL_FORMED
        hold(lambda z=z: c.predict_proba(z, lv), "logits", _proba_shape(N) if ok else None,
             accept=ok)
    if name == "recalx":
        for lv_bad in (None, [0.5], [2.0, 0.1], [np.nan, 0.1], ["a", "b"], [[0.1, 0.2]]):
            hold(lambda lv=lv_bad: c.predict_proba(LOGITS[:N], lv), "levels", _proba_shape(N))
        for lv_bad in (LEVELS[:-1], np.full(60, 2.0), np.full(60, np.nan), LEVELS.astype(str)):
            hold(lambda lv=lv_bad: _fit(name, LOGITS, LABELS, lv), "levels")


# --------------------------------------------------------------------------- calibration metrics

PROBS = np.exp(LOGITS) / np.exp(LOGITS).sum(1, keepdims=True)
CAL_METRICS: dict[str, Callable[..., Any]] = {
    "ece": mcal.ece, "ece_classwise": lambda p, y: mcal.ece(p, y, mode="classwise"),
    "kde_ece": mcal.kde_ece, "ce_kl": lambda p, y: mcal.ce_kl(p, y),
    "ce_kl_binned": mcal.ce_kl_binned, "nll": mcal.nll, "brier": mcal.brier,
    "accuracy": mcal.accuracy, "reliability_curve": mcal.reliability_curve,
}


def _metric_result(name: str) -> Callable[[Any], None]:
    def check(out: Any) -> None:
        if name == "reliability_curve":
            return
        assert np.ndim(out) == 0, f"{name} returned {out!r}"
    return check


def _reliability(p: Any, y: Any, **kw: Any) -> Any:
    """reliability_curve, whose empty bins are NaN by contract: checked without them."""
    out = mcal.reliability_curve(p, y, **kw)
    full = out["count"] > 0
    return {"confidence": out["confidence"][full], "accuracy": out["accuracy"][full],
            "count": out["count"], "edges": out["edges"]}


@pytest.mark.parametrize("metric", list(CAL_METRICS))
def test_calibration_metrics(metric: str) -> None:
    fn = _reliability if metric == "reliability_curve" else CAL_METRICS[metric]
    probs = hostile_arrays((60, K), seed=5)
    probs.update({"valid": PROBS, "list": PROBS.tolist(), "tensor": torch.from_numpy(PROBS),
                  "float64": PROBS.astype(np.float64), "logits": LOGITS,
                  "one_column": PROBS[:, :1], "unnormalised": PROBS * 2})
    for case, p in probs.items():
        hold(lambda p=p: fn(p, LABELS), "probs", _metric_result(metric),
             accept=case in {"valid", "list", "tensor", "float64"})
    for case, y in _label_cases().items():
        ok = case in LABELS_OK or case == "single_class"
        hold(lambda y=y: fn(PROBS, y), "labels", _metric_result(metric), accept=ok)


@pytest.mark.parametrize("value", [0, -1, 2.5, "10", None, HUGE])
@pytest.mark.parametrize("metric", ["ece", "reliability_curve", "ce_kl_binned"])
def test_calibration_bins(metric: str, value: Any) -> None:
    fn = _reliability if metric == "reliability_curve" else CAL_METRICS[metric]
    hold(lambda: fn(PROBS, LABELS, n_bins=value), "n_bins", _metric_result(metric))


def test_calibration_options() -> None:
    hold(lambda: mcal.ece(PROBS, LABELS, strategy="median"), "strategy", refuse=True)
    hold(lambda: mcal.ece(PROBS, LABELS, mode="all"), "mode", refuse=True)
    hold(lambda: mcal.reliability_curve(PROBS, LABELS, strategy="median"), "strategy",
         refuse=True)


# --------------------------------------------------------------------------- explanation metrics

CURVES = {"deletion": faith.deletion_curve, "insertion": faith.insertion_curve}


def _curve_shape(n: int) -> Callable[[Any], None]:
    def check(c: Any) -> None:
        assert c.scores.shape[0] == n and c.scores.shape[1] == len(c.fractions)
        assert c.auc.shape == (n,) and c.target.shape == (n,)
    return check


@pytest.mark.parametrize("curve", list(CURVES))
def test_curve_arguments(curve: str) -> None:
    fn = CURVES[curve]
    model = calix.wrap(_tab_module(), input_shape=(D,))
    x = hostile_arrays((N, D))["valid"]
    maps = np.abs(x)

    def run(**kw: Any) -> Any:
        args = {"x": x, "maps": maps, "steps": 4, "fill": Constant(0.0), **kw}
        return fn(model, args.pop("x"), args.pop("maps"), **args)

    for output in ("probability", "logit", "log_probability"):
        hold(lambda o=output: run(output=o), "output", _curve_shape(N), accept=True)
    for output in ("prob", "probabilities", "logits", "", "PROBABILITY", None, 3):
        hold(lambda o=output: run(output=o), "output", refuse=True)
    for case, target in BAD_TARGETS.items():
        hold(lambda t=target: run(target=t), "target", _curve_shape(N),
             accept=case in GOOD_TARGETS)
    for case, xb in hostile_arrays((N, D)).items():
        ok = case in WELL_FORMED
        hold(lambda xb=xb: run(x=xb, maps=np.ones((N, D))), "x",
             _curve_shape(N) if ok else None, accept=ok)
    for case, mp in hostile_arrays((N, D), seed=6).items():
        ok = case in WELL_FORMED
        hold(lambda mp=mp: run(maps=mp), "maps", _curve_shape(N) if ok else None, accept=ok)
    for steps in (0, -2, 2.5, "4", HUGE, [0.0, 0.5, 1.0], [0.5, 0.2], [0.0, 2.0], [[0, 1]]):
        hold(lambda s=steps: run(steps=s), ("steps", "fractions"), _curve_shape(N))


def test_fidelity_arguments() -> None:
    model = calix.wrap(_tab_module(), input_shape=(D,))
    x = hostile_arrays((N, D))["valid"]

    def run(**kw: Any) -> Any:
        args = {"x": x, "maps": np.abs(x), **kw}
        return faith.mif_lif(model, args.pop("x"), args.pop("maps"), **args)

    hold(run, "x", accept=True)
    for case, target in BAD_TARGETS.items():
        hold(lambda t=target: run(target=t), "target", accept=case in GOOD_TARGETS)
    for case, mp in hostile_arrays((N, D), seed=7).items():
        hold(lambda mp=mp: run(maps=mp), "maps", accept=case in WELL_FORMED)
    for fr in ([0.0, 0.5], [0.5, 0.2], [-1.0, 0.5], "0.5", [[0.0, 1.0]], [np.nan, 1.0]):
        hold(lambda f=fr: run(fractions=f), "fractions")


def test_better_than_random_arguments() -> None:
    model = calix.wrap(_img_module(), input_shape=IMG)
    x = hostile_arrays((N, *IMG))["valid"]

    def run(**kw: Any) -> Any:
        args = {"x": x, "maps": np.abs(x), "steps": 3, "n_segments": 4, "n_orders": 2, **kw}
        return faith.better_than_random(model, args.pop("x"), args.pop("maps"), **args)

    hold(run, "x", accept=True)
    for value in (0, -1, 2.5, "2", None, HUGE):
        hold(lambda v=value: run(n_orders=v), "n_orders")
        hold(lambda v=value: run(n_segments=v), "n_segments")
        hold(lambda v=value: run(steps=v), ("steps", "fractions"))
    hold(lambda: run(output="prob"), "output", refuse=True)
    hold(lambda: run(x=x[:, 0, 0], maps=x[:, 0, 0]), "x", refuse=True)


ROBUSTNESS = {"sensitivity": robustness.sensitivity, "local_lipschitz": robustness.local_lipschitz}


@pytest.mark.parametrize("metric", list(ROBUSTNESS))
def test_robustness_arguments(metric: str) -> None:
    fn = ROBUSTNESS[metric]
    explainer = METHODS["saliency"](calix.wrap(_tab_module(), input_shape=(D,)))

    def run(x: Any = None, **kw: Any) -> Any:
        x = hostile_arrays((N, D))["valid"] if x is None else x
        return fn(explainer, x, **{"n_neighbours": 3, **kw})

    for case, x in hostile_arrays((N, D)).items():
        ok = case in WELL_FORMED
        hold(lambda x=x: run(x), "x", _shape_is(N) if ok else None, accept=ok)
    for n_nb in (0, -1, 2.5, "3", HUGE):
        hold(lambda v=n_nb: run(n_neighbours=v), "n_neighbours", _shape_is(N))
    for radius in (-0.1, float("nan"), float("inf"), "0.1"):
        hold(lambda r=radius: run(radius=r), "radius", _shape_is(N))
    hold(lambda: run(ball="cube"), "ball", refuse=True)
    for case, target in BAD_TARGETS.items():
        hold(lambda t=target: run(target=t), "target", _shape_is(N),
             accept=case in GOOD_TARGETS)


# --------------------------------------------------------------------------- uncertainty

SAMPLER_CLASSES: dict[str, Callable[..., Any]] = {
    "mc_dropout": lambda **kw: unc.MCDropout(calix.wrap(_tab_module()), **kw),
    "mc_dropconnect": lambda **kw: unc.MCDropConnect(calix.wrap(_tab_module()), **kw),
    "flipout": lambda **kw: unc.Flipout(calix.wrap(unc.to_flipout(_tab_module())), **kw),
}


@pytest.mark.parametrize("value", [3, 0, -2, 2.5, "3", None, HUGE, True])
@pytest.mark.parametrize("sampler", list(SAMPLER_CLASSES))
def test_uncertainty_samples(sampler: str, value: Any) -> None:
    x = hostile_arrays((N, D))["valid"]

    def run() -> Any:
        s = SAMPLER_CLASSES[sampler](n_samples=value)
        res = unc.predictive_uncertainty(s, x)
        assert res.probs.shape == (int(value), N, K)
        return res

    hold(run, "n_samples", accept=value == 3)


@pytest.mark.parametrize("sampler", list(SAMPLER_CLASSES))
def test_uncertainty_inputs(sampler: str) -> None:
    s = SAMPLER_CLASSES[sampler](n_samples=2)
    for case, x in hostile_arrays((N, D)).items():
        ok = case in WELL_FORMED
        hold(lambda x=x: unc.predictive_uncertainty(s, x).mean_probs, "x",
             _shape_is(N, K) if ok else None, accept=ok)


# --------------------------------------------------------------------------- hypothesis

_DTYPES = st.sampled_from([np.float32, np.float64, np.float16, np.int64, np.int8, np.bool_,
                           np.complex64, object, str])
_SPECIAL = st.sampled_from([None, np.nan, np.inf, -np.inf])


@st.composite
def arrays(draw: Any, ndim: tuple[int, int] = (0, 3), width: int | None = None) -> Any:
    """A random array: shape, dtype and an optional non-finite entry drawn by hypothesis."""
    nd = draw(st.integers(*ndim))
    shape = [draw(st.integers(0, 4)) for _ in range(nd)]
    if width is not None and nd >= 2 and draw(st.booleans()):
        shape[-1] = width
    a = np.random.default_rng(draw(st.integers(0, 2**16))).standard_normal(shape)
    special = draw(_SPECIAL)
    if special is not None and a.size:
        a.flat[draw(st.integers(0, a.size - 1))] = special
    dtype = draw(_DTYPES)
    with np.errstate(invalid="ignore", over="ignore"):
        a = a.astype(dtype) if dtype is not str else a.astype(str)
    return a.tolist() if draw(st.booleans()) and a.ndim else a


_FAST = settings(max_examples=40, deadline=None, derandomize=True,
                 suppress_health_check=[HealthCheck.too_slow])


def _rows(a: Any) -> int | None:
    s = np.shape(a) if not isinstance(a, list) else np.asarray(a, dtype=object).shape
    return s[0] if len(s) else None


@_FAST
@given(x=arrays(width=D), kind=st.sampled_from(list(MODEL_KINDS)),
       method=st.sampled_from(MODEL_METHODS))
def test_random_model_inputs(x: Any, kind: str, method: str) -> None:
    model = MODEL_KINDS[kind]()
    out = hold(lambda: _model_call(model, method, x), "x")
    if out is not None:
        assert np.shape(out) == (_rows(x), K)


@_FAST
@given(p=arrays(ndim=(0, 3), width=K), y=arrays(ndim=(0, 2)),
       metric=st.sampled_from(list(CAL_METRICS)))
def test_random_calibration_metrics(p: Any, y: Any, metric: str) -> None:
    fn = _reliability if metric == "reliability_curve" else CAL_METRICS[metric]
    hold(lambda: fn(p, y), ("probs", "labels"), _metric_result(metric))


@_FAST
@given(z=arrays(ndim=(0, 3), width=K), y=arrays(ndim=(0, 2)),
       name=st.sampled_from(list(CALIBRATORS)))
def test_random_calibrators(z: Any, y: Any, name: str) -> None:
    def run() -> Any:
        c = _fit(name, z, y, levels=np.linspace(0, 1, _rows(z) or 1))
        return c.predict_proba(LOGITS[:N], LEVELS[:N] if name == "recalx" else None)

    hold(run, ("logits", "labels", "levels"), _proba_shape(N))


@_FAST
@given(x=arrays(ndim=(0, 3), width=D), target=st.one_of(
    st.none(), st.integers(-3, 6), st.floats(allow_nan=True), st.text(max_size=3),
    st.lists(st.integers(-1, 4), max_size=4)),
    name=st.sampled_from([n for n in EXPLAINERS if n not in _IMAGES_ONLY]))
def test_random_explanations(x: Any, target: Any, name: str) -> None:
    exp = hold(lambda: _explainer(name).explain(x, target=target), ("x", "target"))
    if exp is not None:
        n = _rows(x) if np.ndim(np.asarray(x, dtype=object)) == 2 else 1
        _explanation_shape(n, (D,))(exp)


def test_lime_tabular_training_data() -> None:
    model = calix.wrap(_tab_module(), input_shape=(D,))
    x = hostile_arrays((N, D))["valid"]
    for case, data in hostile_arrays((40, D), seed=8).items():
        well = case in WELL_FORMED
        hold(lambda t=data: METHODS["lime_tabular"](model, training_data=t,
                                                    n_samples=30).explain(x),
             ("training_data", "x"), _explanation_shape(N, (D,)) if well else None, accept=well)


@_FAST
@given(masks=arrays(ndim=(0, 4), width=D), op=st.sampled_from(["apply", "query"]),
       fill=st.sampled_from(list(TAB_FILLS)))
def test_random_masks(masks: Any, op: str, fill: str) -> None:
    engine = Perturbation(Columns(), TAB_FILLS[fill]())
    x = hostile_arrays((N, D))["valid"]
    model = calix.wrap(_tab_module(), input_shape=(D,))
    run = (lambda: engine.apply(x, masks, seed=0)) if op == "apply" else (
        lambda: engine.query(model, x, masks, seed=0))
    res = hold(run, "masks")
    if res is not None:
        m = np.shape(np.asarray(masks, dtype=object))[-2]
        assert tuple(res.levels.shape) == (N, m)


def _by_level(**kw: Any) -> Any:
    args = {"X": X_TRAIN[:12], "y": Y_TRAIN[:12], "n_samples": 12, "n_per_bin": 2,
            "n_bins": 3, "min_samples": 3, **kw}
    model = calix.wrap(_tab_module(), input_shape=(D,))
    return mcal.calibration_by_level(model, args.pop("X"), args.pop("y"),
                                     Perturbation(Columns(), Constant(0.0)), **args)


def _fit_perturbed(**kw: Any) -> Any:
    args = {"X": X_TRAIN[:12], "y": Y_TRAIN[:12], "n_samples": 12, "n_per_bin": 2, **kw}
    model = calix.wrap(_tab_module(), input_shape=(D,))
    c = cal.ReCalX(3, min_samples_per_bin=2)
    return c.fit_perturbed(model, args.pop("X"), args.pop("y"),
                           Perturbation(Columns(), Constant(0.0)), **args).predict_proba(
        LOGITS[:N], LEVELS[:N])


@pytest.mark.parametrize("entry", ["calibration_by_level", "fit_perturbed"])
def test_calibration_on_perturbations(entry: str) -> None:
    """Calibration by perturbation level: hostile inputs, labels and sizes."""
    fn = _by_level if entry == "calibration_by_level" else _fit_perturbed
    check = (lambda r: _finite(r.counts)) if entry == "calibration_by_level" else _proba_shape(N)
    hold(fn, "X", check, accept=True)
    for case, x in hostile_arrays((12, D), seed=9).items():
        hold(lambda x=x: fn(X=x), ("X", "x", "y"), accept=case in WELL_FORMED)
    y = Y_TRAIN[:12]
    for case, yy in {"strings": y.astype(str), "letters": np.array(list("abc") * 4),
                     "fractions": y + 0.5, "nan": np.where(y == 0, np.nan, y),
                     "high": np.where(y == 0, K + 1, y), "short": y[:-1],
                     "object": y.astype(object), "none": None, "list": y.tolist()}.items():
        hold(lambda yy=yy: fn(y=yy), ("y", "labels"), accept=case == "list")
    for arg in ("n_samples", "n_per_bin") + (("n_bins",) if fn is _by_level else ()):
        for value in (0, -1, 2.5, "3", None, HUGE):
            hold(lambda a=arg, v=value: fn(**{a: v}), (arg, "n_samples"))


def test_similarity_maps() -> None:
    from calix.metrics import similarity as sim

    good = np.random.default_rng(10).random((N, 1, 8, 8))
    for case, maps in hostile_arrays((N, 1, 8, 8), seed=10).items():
        ok = case in WELL_FORMED
        hold(lambda m=maps: sim.minmax(m), "maps", accept=ok)
        hold(lambda m=maps: sim.otsu_tv(m), "maps", _shape_is(N) if ok else None, accept=ok)
        hold(lambda m=maps: sim.ssim(m, good), "maps", _shape_is(N) if ok else None, accept=ok)
        hold(lambda m=maps: sim.ssim(good, m), "maps", _shape_is(N) if ok else None, accept=ok)


def test_stability_arguments() -> None:
    from calix.metrics import stability

    lime = METHODS["lime"](calix.wrap(_tab_module(), input_shape=(D,)), n_samples=30,
                           fill=Constant(0.0))
    x = hostile_arrays((N, D))["valid"]
    exp = lime.explain(x)
    for case, xx in hostile_arrays((N, D)).items():
        ok = case in WELL_FORMED
        hold(lambda xx=xx: stability.neighbourhood_stability(lime, xx, n_neighbours=2), "x",
             _shape_is(N) if ok else None, accept=ok)
    for value in (0, -1, 2.5, "2", None, HUGE):
        hold(lambda v=value: stability.neighbourhood_stability(lime, x, n_neighbours=v),
             "n_neighbours", _shape_is(N))
        hold(lambda v=value: stability.surrogate_r2(lime, exp, x, n_holdout=v), "n_holdout",
             _shape_is(N))


@pytest.mark.parametrize("sampler", ["mc_dropout", "mc_dropconnect"])
def test_explanation_distribution_arguments(sampler: str) -> None:
    s = SAMPLER_CLASSES[sampler](n_samples=2)
    shape = _explanation_shape(N, (D,))

    def run(x: Any, target: Any = None) -> Any:
        return unc.explanation_distribution(lambda m: METHODS["saliency"](m), s, x,
                                            target=target)

    for case, x in hostile_arrays((N, D)).items():
        ok = case in WELL_FORMED
        hold(lambda x=x: run(x), "x", shape if ok else None, accept=ok)
    good = hostile_arrays((N, D))["valid"]
    for case, target in BAD_TARGETS.items():
        hold(lambda t=target: run(good, t), "target", shape, accept=case in GOOD_TARGETS)


def test_calibrated_model_inputs() -> None:
    ts = cal.TemperatureScaling().fit(LOGITS, LABELS)
    model = cal.calibrated(calix.wrap(_tab_module(), input_shape=(D,)), ts)
    for case, x in hostile_arrays((N, D)).items():
        ok = case in WELL_FORMED
        hold(lambda x=x: model.predict_proba(x), "x", _proba_shape(N) if ok else None,
             accept=ok)
    hold(lambda: cal.calibrated(_tab_module(), cal.TemperatureScaling()).predict_proba(
        X_TRAIN[:N]), ("calibrator", "fit"))
