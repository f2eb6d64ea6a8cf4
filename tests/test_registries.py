"""One registry per family: every registered name resolves to a usable object, an unknown name
names the closest known one, the light name lists of ``calix._names`` equal the registries,
and the command line offers exactly the registries' names."""

from __future__ import annotations

import subprocess
import sys

import click
import numpy as np
import pytest
import torch
from torch import nn

import calix
from calix import _names
from calix._registry import Registry, UnknownNameError
from calix.calibrate import CALIBRATORS, Calibrator, fit_calibrator
from calix.explain import METHODS, Explainer
from calix.nets import ARCHITECTURES
from calix.procedures import _LEVEL_METRICS
from calix.uncertainty import SAMPLERS, Sampler, to_flipout


# ---------------------------------------------------------------------- the registry type
def test_register_get_names_meta_and_mapping():
    reg: Registry = Registry("colour")
    assert reg.register("red", 1, warm=True) == 1

    @reg.register("blue", warm=False)
    def blue():
        return 2

    assert reg.get("blue") is blue and reg["red"] == 1
    assert reg.names() == ("red", "blue") and list(reg) == ["red", "blue"] and len(reg) == 2
    assert "red" in reg and "green" not in reg and ["unhashable"] not in reg
    assert dict(reg.meta("red")) == {"warm": True}
    with pytest.raises(TypeError):
        reg.meta("red")["warm"] = False  # read-only
    assert reg.get("green", None) is None and dict(reg.items()) == {"red": 1, "blue": blue}
    with pytest.raises(ValueError, match="already registered"):
        reg.register("red", 3)
    with pytest.raises(TypeError, match="non-empty string"):
        reg.register("", 3)


def test_unknown_name_names_the_known_ones_and_the_closest():
    reg: Registry = Registry("colour")
    for name in ("red", "green", "blue"):
        reg.register(name, name)
    with pytest.raises(UnknownNameError) as info:
        reg.get("gren")
    msg = str(info.value)
    assert msg == "unknown colour 'gren'; known: red, green, blue (did you mean 'green'?)"
    assert isinstance(info.value, KeyError) and isinstance(info.value, ValueError)
    with pytest.raises(KeyError, match="did you mean"):
        reg["bleu"]
    with pytest.raises(UnknownNameError, match=r"known: red, green, blue$"):
        reg.meta("purple")  # nothing close: no suggestion


@pytest.mark.parametrize("registry, typo, closest", [
    (METHODS, "salency", "saliency"), (CALIBRATORS, "temprature", "temperature"),
    (SAMPLERS, "mc_dropuot", "mc_dropout"), (ARCHITECTURES, "resnet19", "resnet18"),
    (_LEVEL_METRICS, "ce_k", "ce_kl")])
def test_every_family_suggests_the_closest_name(registry, typo, closest):
    with pytest.raises(UnknownNameError, match=f"unknown {registry.family} '{typo}'.*"
                                               f"did you mean '{closest}'"):
        registry.get(typo)


# ---------------------------------------------------------------------- the name lists
def _zoo_names() -> list[str]:
    return [n for n in ARCHITECTURES if ARCHITECTURES.meta(n)["zoo"]]


def _untrained_samplers() -> list[str]:
    return [n for n in SAMPLERS if not SAMPLERS.meta(n)["needs_training"]]


def test_the_light_name_lists_are_the_registries():
    """calix._names holds the names for the command line, which must not import torch; this
    test is the contract that they are the registries' names, in order."""
    from calix import model_io, parallel, studies, zoo

    assert _names.EXPLAINERS == METHODS.names()
    assert _names.CALIBRATORS == CALIBRATORS.names()
    assert _names.SAMPLERS == SAMPLERS.names()
    assert _names.UNTRAINED_SAMPLERS == tuple(_untrained_samplers()) == parallel.UNCERTAINTY
    assert _names.ARCHITECTURES == ARCHITECTURES.names() == model_io.ARCHITECTURES
    assert tuple(model_io._architectures()) == ARCHITECTURES.names()
    assert _names.ZOO_MODELS == tuple(_zoo_names()) == tuple(zoo.ZOO)
    assert _names.LEVEL_METRICS == _LEVEL_METRICS.names()
    assert _names.STUDIES == studies.STUDIES.names()


def test_import_calix_cli_imports_no_torch():
    """``calix --help`` stays fast: the command line reads calix._names, not the registries."""
    code = ("import sys, calix.cli; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'numpy')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"


# ---------------------------------------------------------------------- every name resolves
def _tab_model():
    torch.manual_seed(0)
    return calix.wrap(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.2), nn.Linear(8, 3)),
                      input_shape=(4,))


X = np.random.default_rng(0).normal(size=(30, 4)).astype(np.float32)
Y = np.arange(30) % 3


@pytest.mark.parametrize("name", METHODS.names())
def test_every_explainer_constructs(name):
    kwargs = {"training_data": X} if name == "lime_tabular" else {}
    explainer = METHODS.get(name)(_tab_model(), **kwargs)
    assert isinstance(explainer, Explainer)


@pytest.mark.parametrize("name", CALIBRATORS.names())
def test_every_calibrator_fits(name):
    from calix.perturb import Columns, Constant, Perturbation

    assert issubclass(CALIBRATORS.get(name), Calibrator)
    model = _tab_model()
    perturbation = (Perturbation(Columns(), Constant(0.0))
                    if CALIBRATORS.meta(name)["fit_on"] == "perturbed" else None)
    cal = fit_calibrator(name, model, X, Y, perturbation=perturbation, n_bins=2, n_samples=30,
                         n_per_bin=6)
    assert isinstance(cal, CALIBRATORS.get(name))
    assert CALIBRATORS.meta(name)["fit_on"] in ("clean", "perturbed")


def test_an_unknown_calibrator_keeps_its_message():
    import re

    names = ", ".join(repr(n) for n in CALIBRATORS.names())
    with pytest.raises(ValueError, match=re.escape(f"method must be one of ({names}), "
                                                   "got 'platt'")):
        fit_calibrator("platt", _tab_model(), X, Y)


@pytest.mark.parametrize("name", SAMPLERS.names())
def test_every_sampler_draws(name):
    cls = SAMPLERS.get(name)
    assert issubclass(cls, Sampler)
    if name == "deep_ensemble":
        sampler = cls([_tab_model(), _tab_model()])
    elif name == "flipout":
        sampler = cls(to_flipout(_tab_model().module), n_samples=2)
    else:
        sampler = cls(_tab_model(), n_samples=2)
    models = list(sampler.models()) if not sampler.batched else [sampler.model]
    assert models and all(m.predict_proba(X[:2]).shape == (2, 3) for m in models)


_ARCH_KWARGS = {
    "resnet18": {"num_classes": 3, "width": 0.125},
    "resnet50": {"num_classes": 3, "width": 0.125},
    "vit_tiny": {"num_classes": 3, "image_size": 32, "depth": 1},
    "cnn": {"in_channels": 3, "n_classes": 3, "image_size": 32},
}


@pytest.mark.parametrize("name", ARCHITECTURES.names())
def test_every_architecture_builds(name):
    if name == "mlp":
        net, x = ARCHITECTURES.get(name)(4, 3), torch.zeros(2, 4)
    else:
        net, x = ARCHITECTURES.get(name)(**_ARCH_KWARGS[name]), torch.zeros(2, 3, 32, 32)
    with torch.no_grad():
        assert net.eval()(x).shape == (2, 3)


@pytest.mark.parametrize("name", _LEVEL_METRICS.names())
def test_every_level_metric_scores(name):
    p = np.full((30, 3), 1 / 3)
    fn = _LEVEL_METRICS.get(name)
    assert np.isfinite(fn(p, Y))
    assert _LEVEL_METRICS.meta(name)["direction"] == fn.direction == "lower"


@pytest.mark.parametrize("name", _names.STUDIES)
def test_every_study_has_a_module(name):
    import importlib.util

    from calix.studies import STUDIES

    assert importlib.util.find_spec(f"calix.studies.{STUDIES[name]}") is not None


def test_the_study_registry_suggests_the_closest_name():
    from calix.studies import STUDIES, run_study

    assert isinstance(STUDIES, Registry) and STUDIES.family == "study"
    with pytest.raises(UnknownNameError, match="unknown study 'recalk'.*did you mean 'recalx'"):
        STUDIES.get("recalk")
    with pytest.raises(ValueError, match="unknown study 'fpaa'.*did you mean 'fpa'"):
        run_study("fpaa", "never-written")


def test_eagle_compares_registered_explainers():
    """The EAGLE study's display names map to explainers of calix.explain.METHODS."""
    from calix.studies import eagle

    assert list(eagle.METHODS) == list(eagle.REGISTERED) == list(eagle.Config.quick().methods)
    for display, key in eagle.REGISTERED.items():
        factory = eagle.METHODS[display]
        assert getattr(factory, "func", factory) is METHODS.get(key), display
    assert set(eagle.BASELINES) | set(eagle.INTERVAL_METHODS) <= set(eagle.METHODS)


# ---------------------------------------------------------------------- metric metadata
def test_metric_metadata_lives_on_the_functions():
    import importlib
    import pkgutil

    from calix import metrics
    from calix.metrics._base import metric

    assert metrics.ece.direction == "lower" and metrics.ece.category == "calibration"
    assert metrics.accuracy.direction == "higher" and metrics.accuracy.category == "performance"
    assert metrics.sensitivity.metric_names == ("max_sensitivity", "avg_sensitivity")
    modules = [importlib.import_module(f"calix.metrics.{m.name}")
               for m in pkgutil.iter_modules(metrics.__path__) if not m.name.startswith("_")]
    modules = [m for m in modules if hasattr(m, "METRICS")]
    assert len(modules) >= 5
    declared_all: set[str] = set()
    for module in modules:
        declared = {n for fn in vars(module).values() if callable(fn)
                    for n in getattr(fn, "metric_names", ())}
        assert declared <= set(module.METRICS), module.__name__
        declared_all |= declared
        for name, info in module.METRICS.items():
            assert info.name == name and info.direction in ("higher", "lower")
            assert metrics.METRICS[name] == info
    # every metric in the package's table is declared on a function (roar_drop: by a
    # procedure in calix.procedures)
    assert set(metrics.METRICS) - declared_all == {"roar_drop"}
    with pytest.raises(ValueError, match="direction"):
        metric("up", "x")


# ---------------------------------------------------------------------- the command line
def _choices(command: click.Command, name: str) -> list[str]:
    (param,) = [p for p in command.params if p.name == name]
    assert isinstance(param.type, click.Choice)
    return list(param.type.choices)


def test_the_cli_offers_exactly_the_registries():
    from calix.cli import main

    cmd = main.commands
    zoo_names = _zoo_names()
    assert _choices(cmd["train"], "model") == zoo_names
    assert _choices(cmd["calibrate"], "model_name") == zoo_names
    assert _choices(cmd["calibrate"], "method") == list(CALIBRATORS)
    assert _choices(cmd["calibrate"], "metric") == list(_LEVEL_METRICS)
    assert _choices(cmd["explain"], "method") == [*METHODS, "smoothgrad_squared"]
    assert _choices(cmd["explain"], "cal_method") == ["none", *CALIBRATORS]
    assert _choices(cmd["explain-dataset"], "method") == list(METHODS)
    assert _choices(cmd["explain-dataset"], "uncertainty") == _untrained_samplers()
    for name in ("explain", "explain-dataset"):
        assert _choices(cmd[name], "architecture") == list(ARCHITECTURES)
    from calix.studies import STUDIES

    assert _choices(cmd["reproduce"], "study") == list(STUDIES)
    assert _choices(cmd["demo"], "studies") == list(STUDIES)


def test_cli_seed_reaches_every_stochastic_explainer():
    # `calix explain --seed` builds each registered explainer through _make_explainer: every
    # explainer that takes a seed gets it; those that do not draw nothing at random
    import numpy as np
    import torch

    from calix.cli import _init_params, _make_explainer
    from calix.explain import METHODS
    from calix.models import wrap

    model = wrap(torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(),
                                     torch.nn.Linear(8, 3)).eval())
    background = np.random.default_rng(0).normal(size=(20, 6)).astype("float32")
    deterministic = {"saliency", "integrated_gradients", "guided_backprop", "occlusion",
                     "meaningful_perturbation"}
    for name in METHODS.names():
        explainer = _make_explainer(name, model, seed=7, n_samples=None, background=background)
        if name in deterministic:
            assert "seed" not in _init_params(type(explainer)), name
        else:
            assert explainer.seed == 7, name
