"""Device placement: every tensor an explainer, sampler or metric creates must live on the
device of the model and its inputs.

Two layers of tests:

1. CPU-only, always run: :class:`FakeCuda` emulates a second device under a
   ``torch.overrides.TorchFunctionMode``. Tensors "on the fake device" are ordinary CPU
   tensors whose storage is registered as such (so views, ``p.data = t`` and Parameters
   built on such a tensor are on it too); the mode intercepts every torch call and

   - answers ``t.device`` / ``t.is_cuda`` with ``cuda:0`` / True for tagged tensors, so code
     that copies a device (``torch.zeros(n, device=x.device)``, ``y.to(x.device)``,
     ``wrap(module)``) asks for CUDA;
   - runs a call that names CUDA (``device=...``, ``.to(...)``, ``.cuda()``) on the CPU and
     tags its result; ``.cpu()`` / ``.to("cpu")`` return an untagged copy;
   - propagates the tag: the outputs of a call on tagged tensors are tagged;
   - raises CUDA's own errors where CUDA would: tagged and untagged tensors in one call
     (untagged 0-dim tensors excepted, as CUDA accepts CPU scalars; index tensors of a
     tagged tensor may be untagged), a CPU ``generator`` for a tagged call, and ``.numpy()``
     of a tagged tensor.

   Model parameters and buffers are tagged before the model is wrapped, so ``Model.device``
   reads ``cuda:0`` and inputs are moved there exactly as on a GPU. A tensor created without
   a device (``torch.eye(d)``) is untagged and meets a tagged one in some later call: the
   error a GPU would raise. The emulator covers the torch API calix uses; a call on the fake
   device that it does not know (``torch.Generator(device="cuda")``) fails loudly with
   "Torch not compiled with CUDA enabled", never silently. Results must match the plain CPU
   run to 1e-6 (the same arithmetic), which also checks the emulator itself.

2. ``cuda`` tests, skipped without a GPU: the same entries on the real device, compared with
   CPU results within stated tolerances (TF32 off, so both sides compute in true float32).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from calix.explain import METHODS, FeatureExplainer
from calix.models import wrap
from calix.perturb import PatchGrid

_TAG = "_calix_fake_cuda"
_CUDA = torch.device("cuda", 0)


#: data pointer of every storage on the fake device -> a tensor that keeps it alive (so the
#: address is never reused by a CPU tensor while a test runs; cleared when the mode exits)
_STORAGES: dict[int, Tensor] = {}


def _ptr(t: Tensor) -> int:
    with torch._C.DisableTorchFunction():
        return t.untyped_storage().data_ptr() if t.numel() else 0


def _on(t: Any) -> bool:
    """Whether ``t`` lives on the fake device: its storage is registered (so views and
    Parameters built on a tagged tensor count too); empty tensors carry an attribute."""
    if not isinstance(t, Tensor):
        return False
    ptr = _ptr(t)
    return ptr in _STORAGES if ptr else bool(getattr(t, _TAG, False))


def _set(t: Tensor, on: bool) -> None:
    ptr = _ptr(t)
    if ptr and on:
        _STORAGES[ptr] = t
    elif ptr:
        _STORAGES.pop(ptr, None)
    elif on:
        setattr(t, _TAG, True)
    elif getattr(t, _TAG, False):
        delattr(t, _TAG)


def _tensors(obj: Any) -> Iterator[Tensor]:
    if isinstance(obj, Tensor):
        yield obj
    elif isinstance(obj, list | tuple):
        for o in obj:
            yield from _tensors(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from _tensors(o)


def _is_cuda(dev: Any) -> bool:
    if dev is None or isinstance(dev, Tensor | torch.dtype):
        return False
    try:
        return torch.device(dev).type == "cuda"
    except (RuntimeError, TypeError):
        return False


def tag(*tensors: Tensor) -> None:
    """Place tensors on the fake device (in place: they keep their identity)."""
    for t in tensors:
        _set(t, True)


def tag_module(module: nn.Module) -> nn.Module:
    """Place a module's parameters and buffers on the fake device."""
    tag(*module.parameters(), *module.buffers())
    return module


class DeviceMixing(RuntimeError):
    pass


class FakeCuda(TorchFunctionMode):
    """A fake ``cuda:0`` on the CPU (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0  # torch calls seen
        self.on_device = 0  # of which on fake-device tensors

    def __exit__(self, *exc: Any) -> None:
        super().__exit__(*exc)
        _STORAGES.clear()

    @staticmethod
    def _mark(out: Any, on: bool, inputs: list[Tensor]) -> Any:
        """Tag (``on``) or untag the tensors of ``out``; an output that *is* an input whose tag
        would change is copied first, as a real device transfer copies."""
        if isinstance(out, Tensor):
            if _on(out) != on and (not on or any(out is t for t in inputs)):
                with torch._C.DisableTorchFunction():
                    out = out.clone()  # a transfer copies; never re-tag a shared storage
            if on:
                _set(out, True)
            return out
        if isinstance(out, tuple) and hasattr(out, "_fields") or type(out).__module__ == \
                "torch.return_types":
            for t in out:
                if isinstance(t, Tensor):
                    FakeCuda._mark(t, on, [])
            return out
        if isinstance(out, list | tuple):
            return type(out)(FakeCuda._mark(o, on, inputs) for o in out)
        return out

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.calls += 1
        kwargs = dict(kwargs or {})
        name = getattr(func, "__name__", "")
        owner = getattr(func, "__self__", None)
        if name == "_parse_to":  # Module.to(device=...) parses its arguments: keep the device
            return func(*args, **kwargs)
        if name == "__get__" and owner is not None and args and _on(args[0]):
            attr = getattr(owner, "__name__", "")
            if attr == "device":
                return _CUDA
            if attr == "is_cuda":
                return True
            if attr == "is_cpu":
                return False
        inputs = list(_tensors(args)) + list(_tensors(kwargs))
        tagged = any(_on(t) for t in inputs)
        self.on_device += tagged
        if name in ("numpy", "__array__") and tagged:
            raise TypeError("can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu() "
                            "to copy the tensor to host memory first. (fake CUDA)")
        gen = kwargs.get("generator")
        # --- calls that choose the device of their result
        target: bool | None = None
        if name == "cpu":
            target = False
        elif name == "cuda":
            target, args, kwargs = True, args[:1], {}
        elif name == "to":
            rest = args[1:]
            other = next((a for a in rest if isinstance(a, Tensor)), kwargs.get("other"))
            copy_ = bool(kwargs.pop("copy", False))
            dev, dtype, non_blocking, fmt = torch._C._nn._parse_to(*rest, **kwargs)
            if other is not None:
                target = _on(other)
            elif dev is not None:
                target = _is_cuda(dev)
            args = (args[0],)
            kwargs = {"dtype": dtype, "non_blocking": non_blocking, "copy": copy_}
            if fmt is not None:
                kwargs["memory_format"] = fmt
        elif name == "type_as":
            target = _on(args[1])
        elif "device" in kwargs and kwargs["device"] is not None:
            target = _is_cuda(kwargs["device"])
            if target:
                kwargs["device"] = "cpu"
        if target and isinstance(gen, torch.Generator) and gen.device.type == "cpu":
            raise DeviceMixing(f"Expected a 'cuda' device type for generator but found 'cpu' "
                               f"(fake CUDA: {name})")
        if target is None:
            if tagged and isinstance(gen, torch.Generator) and gen.device.type == "cpu":
                raise DeviceMixing(f"Expected a 'cuda' device type for generator but found "
                                   f"'cpu' (fake CUDA: {name})")
            self._check_mixing(name, args, kwargs)
            target = tagged if inputs else False
        out = func(*args, **kwargs)
        if name in ("__setitem__", "copy_") or out is None:
            return out
        return self._mark(out, target, inputs)

    @staticmethod
    def _check_mixing(name: str, args: tuple, kwargs: dict) -> None:
        if name in ("copy_", "__get__", "__set__", "__repr__", "__format__", "grad",
                    "_has_compatible_shallow_copy_type"):
            return
        if name in ("__getitem__", "__setitem__"):
            self_t, index = args[0], args[1]
            idx = list(_tensors(index))
            if not _on(self_t) and any(_on(i) for i in idx):
                raise DeviceMixing("indices should be either on cpu or on the same device as "
                                   f"the indexed tensor (cpu) (fake CUDA: {name})")
            if name == "__setitem__" and idx and isinstance(args[2], Tensor):
                v = args[2]
                if _on(v) != _on(self_t) and (v.dim() > 0 or _on(v)):
                    raise DeviceMixing("Expected all tensors to be on the same device, but "
                                       "found at least two devices, cuda:0 and cpu! "
                                       "(fake CUDA: index_put_)")
            return
        on = off = False
        for t in list(_tensors(args)) + list(_tensors(kwargs)):
            if _on(t):
                on = True
            elif t.dim() > 0:
                off = True
        if on and off:
            raise DeviceMixing("Expected all tensors to be on the same device, but found at "
                               f"least two devices, cuda:0 and cpu! (fake CUDA: {name})")


@pytest.fixture
def fake_cuda():
    mode = FakeCuda()
    with mode:
        yield mode


def test_fake_cuda_catches_mixing_and_allows_transfers(fake_cuda):
    x = torch.ones(3)
    tag(x)
    assert x.device == _CUDA and x.is_cuda
    z = torch.zeros(3, device=x.device)
    assert _on(z) and _on(x + z) and _on(x[torch.tensor([0, 1])])
    assert not _on(x.cpu()) and _on(x) and not _on(torch.zeros(3))
    assert _on(torch.zeros(3).to(x.device)) and _on(torch.zeros(3).to(x))
    assert float((x * torch.tensor(2.0)).sum()) == 6.0  # CPU scalars are fine
    with pytest.raises(DeviceMixing):
        x + torch.zeros(3)
    with pytest.raises(DeviceMixing):
        torch.cat([x, torch.zeros(3)])
    with pytest.raises(DeviceMixing):
        torch.multinomial(x, 1, generator=torch.Generator())
    with pytest.raises(DeviceMixing):
        torch.rand(3, generator=torch.Generator(), device=x.device)
    with pytest.raises(TypeError):
        x.numpy()
    lin = tag_module(nn.Linear(3, 2))
    assert _on(lin(x[None]))
    assert _on(nn.Linear(3, 2).to(device="cuda", dtype=torch.float32).weight)
    moved = nn.Linear(3, 2).to("cuda")
    assert _on(moved.weight) and _on(moved(x[None])) and moved.weight.device == _CUDA
    assert _on(copy.deepcopy(moved).weight) and _on(x[:2]) and _on(nn.Parameter(x))
    with pytest.raises(DeviceMixing):
        lin(torch.ones(1, 3))


# ---------------------------------------------------------------------- models and entries
N_CLASSES = 3
TAB_D = 6
IMG = (1, 8, 8)


def _mlp() -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(TAB_D, 16), nn.ReLU(), nn.Dropout(0.2),
                             nn.Linear(16, N_CLASSES)).eval()


def _cnn() -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Dropout(0.2),
                             nn.Flatten(), nn.Linear(4 * 64, N_CLASSES)).eval()


def _inputs(kind: str) -> Tensor:
    g = torch.Generator().manual_seed(1)
    if kind == "tabular":
        return torch.randn(3, TAB_D, generator=g)
    return torch.rand(2, *IMG, generator=g)


#: small budgets: these tests are about where tensors live, not about accuracy
_KWARGS: dict[str, dict[str, Any]] = {
    "integrated_gradients": {"n_steps": 8},
    "smoothgrad": {"n_samples": 6},
    "rise": {"n_masks": 40, "grid": 4},
    "lime": {"n_samples": 80},
    "kernel_shap": {"n_samples": 40},  # below 2^d - 2 for images: the sampled design
    "poly_shap": {"n_samples": 140},  # 136 second-order terms for 16 patches, + the ends
    "leverage_shap": {"n_samples": 60},
    "regression_adjusted_shap": {"n_samples": 80},
    "logit_surrogate_shap": {"n_samples": 90},
    "stacked_shap": {"n_samples": 60},
    "shapley": {"n_samples": 60},
    "meaningful_perturbation": {"steps": 3},
    "bayes_lime": {"n_samples": 80, "focused": True, "n_start": 30, "n_candidates": 60,
                   "batch": 25},
    "bayes_shap": {"n_samples": 60, "target_width": 0.5, "max_samples": 60, "n_start": 30},
    "eagle": {"n_samples": 60, "batch": 10},
    "glime": {"n_samples": 60},
    "us_lime": {"n_samples": 80},
    "lime_tabular": {"n_samples": 80,
                     "training_data": torch.randn(64, TAB_D,
                                                  generator=torch.Generator().manual_seed(2))},
}
_IMAGES_ONLY = {"rise", "meaningful_perturbation"}
_TABLES_ONLY = {"lime_tabular"}
ENTRIES = [(name, kind) for name in METHODS for kind in ("tabular", "image")
           if not (kind == "tabular" and name in _IMAGES_ONLY)
           and not (kind == "image" and name in _TABLES_ONLY)]


def _explain(name: str, kind: str, module: nn.Module, x: Tensor):
    model = wrap(module, input_shape=(TAB_D,) if kind == "tabular" else IMG)
    kwargs = dict(_KWARGS.get(name, {}))
    if kind == "image" and issubclass(METHODS[name], FeatureExplainer) and name not in \
            _IMAGES_ONLY:
        kwargs["features"] = PatchGrid(2)  # 16 features
    if name == "glime" and kind == "image":
        kwargs["variant"] = "gauss"
    return METHODS[name](model, **kwargs).explain(x)


def _same(a, b) -> None:
    for field in ("values", "feature_values", "std", "lower", "upper"):
        u, v = getattr(a, field), getattr(b, field)
        assert (u is None) == (v is None), field
        if u is not None:
            np.testing.assert_allclose(u, v, rtol=1e-6, atol=1e-7, err_msg=field)


@pytest.mark.parametrize(("name", "kind"), ENTRIES)
def test_explainer_keeps_tensors_on_the_model_device(name, kind):
    x = _inputs(kind)
    module = _mlp() if kind == "tabular" else _cnn()
    ref = _explain(name, kind, copy.deepcopy(module), x)
    with FakeCuda() as mode:
        tag_module(module)
        xd = x.to("cuda")
        out = _explain(name, kind, module, xd)
    assert mode.on_device > 0
    _same(out, ref)  # the emulator runs the same arithmetic


def _fake(module: nn.Module) -> nn.Module:
    """A copy of ``module`` on the fake device."""
    return tag_module(copy.deepcopy(module))


def _run_both(fn, *, module: nn.Module, x: Tensor):
    """``fn(module, x)`` on the CPU and on the fake device; returns both results."""
    ref = fn(copy.deepcopy(module), x)
    with FakeCuda() as mode:
        out = fn(_fake(module), x.to("cuda"))
    assert mode.on_device > 0
    return ref, out


def _close(a: Any, b: Any) -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _close(a[k], b[k])
    elif hasattr(a, "__dataclass_fields__"):
        for k in a.__dataclass_fields__:
            _close(getattr(a, k), getattr(b, k))
    elif isinstance(a, np.ndarray | float | int) and not isinstance(a, bool):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def _sampler(name: str, module: nn.Module):
    from calix import uncertainty as unc

    model = wrap(module, input_shape=(TAB_D,))
    if name == "mc_dropout":
        return unc.MCDropout(model, n_samples=4, p=0.3)
    if name == "mc_dropconnect":
        return unc.MCDropConnect(model, n_samples=3)
    if name == "ensemble":
        return unc.DeepEnsemble([model, model])
    return unc.Flipout(wrap(unc.to_flipout(module), input_shape=(TAB_D,)), n_samples=3)


@pytest.mark.parametrize("sampler", ["mc_dropout", "mc_dropconnect", "ensemble", "flipout"])
@pytest.mark.parametrize("method", ["saliency", "occlusion"])
def test_uncertainty_samplers_keep_tensors_on_the_model_device(sampler, method):
    from calix.uncertainty import explanation_distribution, predictive_uncertainty

    def run(module, x):
        s = _sampler(sampler, module)
        dist = explanation_distribution(lambda m: METHODS[method](m), s, x)
        return {"dist": dist.values, "std": dist.std,
                "pred": predictive_uncertainty(s, x).mean_probs}

    ref, out = _run_both(run, module=_mlp(), x=_inputs("tabular"))
    _close(ref, out)


def test_neighbours_are_drawn_onto_the_inputs_device():
    from calix.metrics.robustness import neighbours

    x = _inputs("tabular")
    ref = {ball: neighbours(x, 3, 0.1, ball=ball) for ball in ("uniform", "linf", "gaussian")}
    with FakeCuda():
        for ball, r in ref.items():
            nb = neighbours(x.to("cuda"), 3, 0.1, ball=ball)
            assert _on(nb), ball
            np.testing.assert_array_equal(nb.cpu().numpy(), r.numpy())


def test_to_flipout_keeps_the_module_device():
    from calix.uncertainty import flipout_layers, to_flipout

    with FakeCuda():
        bayes = to_flipout(_fake(_mlp()))
        assert flipout_layers(bayes)
        assert all(_on(p) for p in [*bayes.parameters(), *bayes.buffers()])


def _metric(name: str):
    from calix.explain import Occlusion, Saliency
    from calix.metrics import faithfulness as fa
    from calix.metrics import robustness as ro
    from calix.metrics import stability as st

    def run(module, x):
        image = x.ndim == 4
        model = wrap(module, input_shape=tuple(x.shape[1:]))
        maps = Saliency(model).explain(x).values
        if name == "deletion":
            return fa.deletion_curve(model, x, maps, steps=5)
        if name == "insertion":
            return fa.insertion_curve(model, x, maps, steps=5)
        if name == "mif_lif":
            return fa.mif_lif(model, x, maps)
        if name == "better_than_random":
            return fa.better_than_random(model, x, maps, steps=4, n_orders=2, n_segments=6)
        if name == "sensitivity":
            return ro.sensitivity(Saliency(model), x, n_neighbours=3)
        if name == "local_lipschitz":
            return ro.local_lipschitz(Saliency(model), x, n_neighbours=3)
        if name == "parameter_randomisation":
            return ro.parameter_randomisation(
                lambda m: Saliency(wrap(m, input_shape=tuple(x.shape[1:]))), module, x)
        features = {"features": PatchGrid(4)} if image else {}
        if name == "reproducibility":
            return st.reproducibility(lambda s: METHODS["lime"](model, n_samples=40, seed=s,
                                                                **features), x, seeds=(0, 1))
        if name == "neighbourhood_stability":
            return st.neighbourhood_stability(Occlusion(model, **features), x, n_neighbours=2)
        if name == "surrogate_r2":
            lime = METHODS["lime"](model, n_samples=40, **features)
            return st.surrogate_r2(lime, lime.explain(x), x, n_holdout=30)
        raise AssertionError(name)

    return run


_METRICS = ["deletion", "insertion", "mif_lif", "better_than_random", "sensitivity",
            "local_lipschitz", "parameter_randomisation", "reproducibility",
            "neighbourhood_stability", "surrogate_r2"]


@pytest.mark.parametrize("kind", ["tabular", "image"])
@pytest.mark.parametrize("name", _METRICS)
def test_metrics_keep_tensors_on_the_model_device(name, kind):
    if kind == "tabular" and name == "better_than_random":
        pytest.skip("images only")
    module = _mlp() if kind == "tabular" else _cnn()
    ref, out = _run_both(_metric(name), module=module, x=_inputs(kind))
    if name != "parameter_randomisation":  # re-initialises from the global generator
        _close(ref, out)


def _calibrated(module: nn.Module, kind: str, method: str):
    """``module`` wrapped and followed by a fitted calibrator (fitted on the CPU, then moved
    with the model: :class:`~calix.calibrate.CalibratedModel` moves it to the model)."""
    from calix.calibrate import ReCalX, TemperatureScaling, calibrated

    g = torch.Generator().manual_seed(3)
    logits = torch.randn(300, N_CLASSES, generator=g) * 3
    labels = torch.randint(0, N_CLASSES, (300,), generator=g)
    if method == "temperature":
        cal = TemperatureScaling().fit(logits, labels)
    else:
        levels = torch.rand(300, generator=g)
        cal = ReCalX(n_bins=2, min_samples_per_bin=10).fit(logits, labels, levels)
    shape = (TAB_D,) if kind == "tabular" else IMG
    return calibrated(wrap(module, input_shape=shape), cal)


@pytest.mark.parametrize("method", ["temperature", "recalx"])
@pytest.mark.parametrize("name", ["saliency", "integrated_gradients", "kernel_shap",
                                  "poly_shap", "bayes_shap", "eagle", "us_lime"])
def test_calibrated_model_keeps_tensors_on_the_model_device(name, method):
    def run(module, x):
        model = _calibrated(module, "tabular", method)
        return METHODS[name](model, **_KWARGS.get(name, {})).explain(x)

    ref, out = _run_both(run, module=_mlp(), x=_inputs("tabular"))
    _same(out, ref)


# ---------------------------------------------------------------------- the real device
#: GPU against CPU, both in float32 (TF32 off): model outputs differ by float rounding
#: (about 1e-6 relative); the surrogate fits amplify that a little. Checked on the CPU by
#: perturbing every weight by 1e-5 relative and every input by 1e-7 (ten times more than
#: float32 rounding): every entry below stayed within these tolerances.
RTOL, ATOL_SCALE = 1e-3, 1e-4


def _near(a: Any, b: Any, what: str = "") -> None:
    if isinstance(a, dict):
        for k in a:
            _near(a[k], b[k], f"{what}.{k}")
    elif hasattr(a, "__dataclass_fields__"):
        for k in a.__dataclass_fields__:
            _near(getattr(a, k), getattr(b, k), f"{what}.{k}")
    elif isinstance(a, np.ndarray) and a.dtype.kind == "f" or isinstance(a, float):
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        scale = float(np.nanmax(np.abs(a))) if a.size and np.isfinite(a).any() else 0.0
        np.testing.assert_allclose(b, a, rtol=RTOL, atol=ATOL_SCALE * scale + 1e-7,
                                   err_msg=what)


@pytest.fixture
def cuda():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _on_cuda(fn, *, module: nn.Module, x: Tensor, device: torch.device):
    ref = fn(copy.deepcopy(module), x)
    out = fn(copy.deepcopy(module).to(device), x.to(device))
    return ref, out


@pytest.mark.parametrize(("name", "kind"), ENTRIES)
def test_cuda_explainer_matches_cpu(cuda, name, kind):
    module = _mlp() if kind == "tabular" else _cnn()
    ref, out = _on_cuda(lambda m, x: _explain(name, kind, m, x), module=module,
                        x=_inputs(kind), device=cuda)
    _near(ref, out, name)


@pytest.mark.parametrize("method", ["temperature", "recalx"])
@pytest.mark.parametrize("name", ["saliency", "kernel_shap", "poly_shap", "eagle"])
def test_cuda_calibrated_explainer_matches_cpu(cuda, name, method):
    def run(module, x):
        return METHODS[name](_calibrated(module, "tabular", method),
                             **_KWARGS.get(name, {})).explain(x)

    ref, out = _on_cuda(run, module=_mlp(), x=_inputs("tabular"), device=cuda)
    _near(ref, out, name)


@pytest.mark.parametrize("sampler", ["mc_dropout", "mc_dropconnect", "ensemble", "flipout"])
def test_cuda_uncertainty_sampler_matches_cpu(cuda, sampler):
    from calix.uncertainty import explanation_distribution, predictive_uncertainty

    def run(module, x):
        s = _sampler(sampler, module)
        dist = explanation_distribution(lambda m: METHODS["saliency"](m), s, x)
        return {"dist": dist.values, "std": dist.std,
                "pred": predictive_uncertainty(s, x).mean_probs}

    ref, out = _on_cuda(run, module=_mlp(), x=_inputs("tabular"), device=cuda)
    _near(ref, out, sampler)


@pytest.mark.parametrize("kind", ["tabular", "image"])
@pytest.mark.parametrize("name", _METRICS)
def test_cuda_metric_matches_cpu(cuda, name, kind):
    if kind == "tabular" and name == "better_than_random":
        pytest.skip("images only")
    module = _mlp() if kind == "tabular" else _cnn()
    ref, out = _on_cuda(_metric(name), module=module, x=_inputs(kind), device=cuda)
    if name == "parameter_randomisation":  # CUDA draws its own re-initialisation
        assert np.isfinite(out["similarity"]).all()
        assert out["similarity"].shape == ref["similarity"].shape
    else:
        _near(ref, out, name)


# ---------------------------------------------------------------------- CaptumExplainer
# CaptumExplainer explains calix's forward (calibrator, then the output transform) whatever the
# attribution was built on; checked here against calix's own explainers and autograd, and on
# the fake device.
def _temperature_model():
    from calix.calibrate import TemperatureScaling, calibrated

    g = torch.Generator().manual_seed(3)
    logits = torch.randn(300, N_CLASSES, generator=g) * 4
    labels = torch.randint(0, N_CLASSES, (300,), generator=g)
    net = _mlp()
    return net, calibrated(wrap(net, input_shape=(TAB_D,)), TemperatureScaling().fit(
        logits, labels))


def test_captum_explainer_explains_the_calibrated_probability():
    from captum.attr import IntegratedGradients as CaptumIG

    from calix.explain import CaptumExplainer, IntegratedGradients

    net, model = _temperature_model()
    x = _inputs("tabular")
    raw = CaptumIG(net)
    got = CaptumExplainer(raw, model, n_steps=16, method="gausslegendre").explain(x, target=1)
    ref = IntegratedGradients(model, n_steps=16, baselines="zero").explain(x, target=1)
    assert got.params["output"] == "probability"
    np.testing.assert_allclose(got.values, ref.values, rtol=1e-5, atol=1e-7)
    assert raw.forward_func is net  # the user's object is left as it was


def test_captum_saliency_matches_the_gradient_by_hand():
    from captum.attr import Saliency as CaptumSaliency

    from calix.explain import CaptumExplainer

    net, model = _temperature_model()
    x = _inputs("tabular")
    for output in ("probability", "log_probability", "logit"):
        got = CaptumExplainer(CaptumSaliency(net), model, output=output, abs=False).explain(
            x, target=2)
        xg = x.clone().requires_grad_(True)
        z = model.forward(xg, grad=True)  # calibrated logits
        s = {"probability": torch.softmax(z, -1), "log_probability": torch.log_softmax(z, -1),
             "logit": z}[output][:, 2]
        (grad,) = torch.autograd.grad(s.sum(), xg)
        np.testing.assert_allclose(got.values, grad.numpy(), rtol=1e-5, atol=1e-8,
                                   err_msg=output)


def test_captum_deeplift_sums_to_the_calibrated_logit_difference():
    """DeepLift on a ReLU network followed by temperature scaling (linear): Σ attributions =
    calibrated logit(x) − calibrated logit(baseline) (summation-to-delta)."""
    from captum.attr import DeepLift

    from calix.explain import CaptumExplainer

    net, model = _temperature_model()
    x = _inputs("tabular")
    by_instance = CaptumExplainer(DeepLift(net), model, output="logit").explain(x, target=0)
    by_class = CaptumExplainer(DeepLift, model, output="logit").explain(x, target=0)
    np.testing.assert_allclose(by_instance.values, by_class.values, rtol=1e-6, atol=1e-8)
    with torch.no_grad():
        delta = (model.forward(x) - model.forward(torch.zeros_like(x)))[:, 0]
        raw_delta = (net(x) - net(torch.zeros_like(x)))[:, 0]
    assert not np.allclose(delta.numpy(), raw_delta.numpy(), atol=1e-3)  # T differs from 1
    np.testing.assert_allclose(by_instance.values.sum(1), delta.numpy(), atol=1e-5)


def test_captum_explainer_refuses_an_unknown_forward():
    from captum.attr import IntegratedGradients as CaptumIG

    from calix.explain import CaptumExplainer

    net, model = _temperature_model()
    with pytest.raises(TypeError, match="cannot tell what it explains"):
        CaptumExplainer(CaptumIG(lambda t: net(t) * 2), model)
    with pytest.raises(TypeError, match="Captum attribution"):
        CaptumExplainer(object(), model)


def test_captum_explainer_keeps_tensors_on_the_model_device():
    from captum.attr import DeepLift

    from calix.explain import CaptumExplainer

    def run(module, x):
        return CaptumExplainer(DeepLift(module), wrap(module, input_shape=(TAB_D,))
                               ).explain(x)

    ref, out = _run_both(run, module=_mlp(), x=_inputs("tabular"))
    _same(out, ref)


def test_kernel_shap_exact_path_keeps_tensors_on_the_model_device():
    def run(module, x):
        return METHODS["kernel_shap"](wrap(module, input_shape=(TAB_D,)), n_samples=64
                                      ).explain(x)

    ref, out = _run_both(run, module=_mlp(), x=_inputs("tabular"))
    assert out.extra["exact"]
    _same(out, ref)
