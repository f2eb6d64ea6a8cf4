import numpy as np
import pytest
import torch

from calix import zoo
from calix.models import TorchModel


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CALIX_CACHE", str(tmp_path))
    return tmp_path


def test_cnn_trains_deterministically_and_caches(cache):
    a = zoo.train("cnn", "digits", seed=0, epochs=5)
    assert a.metrics["accuracy"] > 0.85
    assert a.path is not None and a.path.exists() and a.path.parent == cache / "zoo"
    torch.rand(7)  # global random state must not matter
    b = zoo.train("cnn", "digits", seed=0, epochs=5, cache=False)
    for (ka, va), (kb, vb) in zip(a.module.state_dict().items(), b.module.state_dict().items(),
                                  strict=True):
        assert ka == kb and torch.equal(va, vb)
    c = zoo.train("cnn", "digits", seed=0, epochs=5)  # from the cache
    assert c.metrics == a.metrics
    x = torch.as_tensor(a.dataset.X_test[:20])
    torch.testing.assert_close(c.module(x), a.module(x))
    assert not c.module.training
    d = zoo.train("cnn", "digits", seed=1, epochs=5)
    assert d.path != a.path


def test_cache_uses_weights_only_loading(cache, monkeypatch):
    trained = zoo.train("mlp", "iris", seed=0, epochs=3)
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    zoo.train("mlp", "iris", seed=0, epochs=3)
    assert calls == [True]
    assert not list(trained.path.parent.glob("*.tmp"))  # atomic write leaves no temp file


def test_mlp_tabular_and_regression(cache):
    clf = zoo.train("mlp", "breast_cancer", seed=0)
    assert clf.metrics["accuracy"] > 0.9
    reg = zoo.train("mlp", "diabetes", seed=0)
    model = reg.wrap()
    assert model.task == "regression"
    assert model.predict(reg.dataset.X_test).shape == (len(reg.dataset.X_test), 1)
    assert np.isfinite(reg.metrics["rmse"])


def test_zoo_cnn_works_with_wrap_and_has_relu_modules(cache):
    trained = zoo.train("cnn", "digits", seed=0, epochs=2)
    model = trained.wrap()
    assert isinstance(model, TorchModel) and model.input_shape == (1, 8, 8)
    relus = [m for m in trained.module.modules() if isinstance(m, torch.nn.ReLU)]
    assert len(relus) == 3


def test_zoo_errors(cache, tmp_path):
    with pytest.raises(ValueError, match="unknown zoo model 'resnet'"):
        zoo.train("resnet", "digits")
    with pytest.raises(ValueError, match="needs image data"):
        zoo.train("cnn", "wine")
    with pytest.raises(FileNotFoundError, match="model file not found"):
        zoo.load_checkpoint(tmp_path / "none.pt", torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="dropout must lie"):
        zoo.CNN(dropout=1.0)
