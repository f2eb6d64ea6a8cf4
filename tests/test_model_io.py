"""load_model: TorchScript, state_dicts into named / given architectures, joblib only when
trusted, skops when installed; every failure a ValueError naming the file."""

from __future__ import annotations

import pickle
import zipfile

import joblib
import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from torch import nn

from calix.model_io import ModelFileError, load_model, model_file_kind
from calix.models import SklearnModel, TorchModel
from calix.nets import resnet18


class Tiny(nn.Module):
    def __init__(self, n_in: int = 4, n_out: int = 3):
        super().__init__()
        self.lin = nn.Linear(n_in, n_out)

    def forward(self, x):
        return self.lin(x)


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    return Tiny().eval()


X = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)


def _logits(module, x=X):
    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()


def test_torchscript_round_trip(tmp_path, tiny):
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(tiny), path)
    assert model_file_kind(path) == "torchscript"
    model = load_model(path, input_shape=(4,))
    assert isinstance(model, TorchModel) and not model.module.training
    assert str(model.device) == "cpu"
    np.testing.assert_array_equal(model.predict_logits(X), _logits(tiny))


def test_state_dict_into_instance_class_and_named_architecture(tmp_path, tiny):
    path = tmp_path / "weights.pth"
    torch.save(tiny.state_dict(), path)
    assert model_file_kind(path) == "state_dict"
    # an instance to load into, a class with kwargs
    for arch, kw in ((Tiny(), None), (Tiny, {"n_in": 4, "n_out": 3})):
        model = load_model(path, architecture=arch, architecture_kwargs=kw)
        np.testing.assert_array_equal(model.predict_logits(X), _logits(tiny))
    # a calix.nets name with kwargs, and a checkpoint holding the weights under "state_dict"
    net = resnet18(num_classes=5, width=0.125, seed=3)
    ckpt = tmp_path / "resnet.ckpt"
    torch.save({"state_dict": net.state_dict(), "epoch": 7}, ckpt)
    model = load_model(ckpt, architecture="resnet18",
                       architecture_kwargs={"num_classes": 5, "width": 0.125, "seed": None})
    img = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        np.testing.assert_array_equal(model.predict_logits(img), net(img).numpy())
    assert not model.module.training


def test_state_dict_failures_name_the_file(tmp_path, tiny):
    path = tmp_path / "weights.pt"
    torch.save(tiny.state_dict(), path)
    with pytest.raises(ValueError, match=rf"{path} holds torch weights .* pass architecture="):
        load_model(path)
    with pytest.raises(ValueError, match=rf"weights in {path} do not fit the architecture Tiny"
                                         r" \(.*size mismatch"):
        load_model(path, architecture=Tiny, architecture_kwargs={"n_in": 5})
    with pytest.raises(ValueError, match=rf"weights in {path} do not fit .*ResNet"):
        load_model(path, architecture="resnet18", architecture_kwargs={"width": 0.125})
    with pytest.raises(ValueError, match=rf"unknown architecture 'resnet19' for {path}"):
        load_model(path, architecture="resnet19")
    with pytest.raises(ValueError, match=rf"cannot build the architecture .* for {path}"):
        load_model(path, architecture=Tiny, architecture_kwargs={"bogus": 1})
    # a whole pickled module is not read with weights_only=True
    whole = tmp_path / "whole.pt"
    torch.save(tiny, whole)
    with pytest.raises(ValueError, match=rf"{whole} cannot be read as torch weights with "
                                         r"weights_only=True .*state_dict\(\) or TorchScript"):
        load_model(whole, architecture=Tiny)
    # a torch file holding a tensor, not a dict of them
    tensor = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), tensor)
    with pytest.raises(ValueError, match=rf"{tensor} holds a Tensor, not a state_dict"):
        load_model(tensor, architecture=Tiny)


def test_joblib_refused_unless_trusted(tmp_path):
    rng = np.random.default_rng(0)
    Xtr = rng.normal(size=(40, 4))
    clf = LogisticRegression().fit(Xtr, (Xtr[:, 0] > 0).astype(int))
    path = tmp_path / "clf.joblib"
    joblib.dump(clf, path)
    assert model_file_kind(path) == "pickle"
    with pytest.raises(ValueError, match=rf"{path} is a pickle .*runs code.*trusted=True"):
        load_model(path)
    model = load_model(path, trusted=True)
    assert isinstance(model, SklearnModel) and model.input_shape == (4,)
    np.testing.assert_allclose(model.predict_proba(X), clf.predict_proba(X), rtol=1e-6)
    # compressed joblib and plain pickle files are pickles as well
    for name, save in (("c.joblib", lambda f: joblib.dump(clf, f, compress=3)),
                       ("p.pkl", lambda f: f.write_bytes(pickle.dumps(clf)))):
        save(tmp_path / name)
        with pytest.raises(ValueError, match="trusted=True"):
            load_model(tmp_path / name)
        np.testing.assert_allclose(load_model(tmp_path / name, trusted=True).predict_proba(X),
                                   clf.predict_proba(X), rtol=1e-6)
    # a damaged pickle, even trusted, is named
    bad = tmp_path / "bad.joblib"
    bad.write_bytes(path.read_bytes()[:50])
    with pytest.raises(ValueError, match=rf"{bad} cannot be unpickled"):
        load_model(bad, trusted=True)
    # architecture makes no sense for it
    with pytest.raises(ValueError, match="needs no architecture"):
        load_model(path, trusted=True, architecture="mlp")


def test_missing_empty_corrupt_and_foreign_files(tmp_path, tiny):
    with pytest.raises(ValueError, match=f"model file not found: {tmp_path / 'nope.pt'}"):
        load_model(tmp_path / "nope.pt")
    with pytest.raises(ValueError, match=f"{tmp_path} is a folder"):
        load_model(tmp_path)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=f"{empty} is empty"):
        load_model(empty)
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    with pytest.raises(ValueError, match=f"{text} is not a model file calix can read"):
        load_model(text)
    npz = tmp_path / "arrays.npz"
    np.savez(npz, a=np.zeros(2))
    with pytest.raises(ValueError, match=f"{npz} is a zip archive but neither"):
        load_model(npz)
    # a TorchScript archive with a damaged member, and one cut short
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(tiny), path)
    broken = tmp_path / "broken.pt"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(broken, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("/data.pkl"):  # the module's structure
                data = b"\x80\x02garbage"
            dst.writestr(info, data)
    with pytest.raises(ValueError, match=rf"{broken} is not a loadable TorchScript file"):
        load_model(broken)
    cut_script = tmp_path / "cut_script.pt"
    cut_script.write_bytes(path.read_bytes()[:300])
    with pytest.raises(ValueError, match=str(cut_script)):
        load_model(cut_script)
    # truncated weights
    weights = tmp_path / "w.pt"
    torch.save(tiny.state_dict(), weights)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ValueError, match=str(cut)):
        load_model(cut, architecture=Tiny)
    assert issubclass(ModelFileError, ValueError)


def _double(x):
    return 2 * x


def test_skops(tmp_path):
    sio = pytest.importorskip("skops.io")
    rng = np.random.default_rng(0)
    Xtr = rng.normal(size=(40, 4))
    clf = LogisticRegression().fit(Xtr, (Xtr[:, 0] > 0).astype(int))
    path = tmp_path / "clf.skops"
    sio.dump(clf, path)
    assert model_file_kind(path) == "skops"
    np.testing.assert_allclose(load_model(path).predict_proba(X), clf.predict_proba(X),
                               rtol=1e-6)
    # a type skops does not trust by default is named, and loads only when trusted
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    pipe = make_pipeline(FunctionTransformer(_double), LogisticRegression()).fit(
        Xtr, (Xtr[:, 0] > 0).astype(int))
    piped = tmp_path / "pipe.skops"
    sio.dump(pipe, piped)
    untrusted = sio.get_untrusted_types(file=piped)
    assert untrusted
    with pytest.raises(ValueError, match=rf"{piped} names types that skops does not trust"):
        load_model(piped)
    for trusted in (True, list(untrusted)):
        np.testing.assert_allclose(load_model(piped, trusted=trusted).predict_proba(X),
                                   pipe.predict_proba(X), rtol=1e-6)


def test_skops_missing_package_is_named(tmp_path, monkeypatch):
    import sys

    path = tmp_path / "clf.skops"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("schema.json", "{}")
    monkeypatch.setitem(sys.modules, "skops", None)
    monkeypatch.setitem(sys.modules, "skops.io", None)
    with pytest.raises(ValueError, match=rf"{path} is a skops file.*pip install skops"):
        load_model(path)
