"""explain_dataset on a user's own model and data: scikit-learn on a CSV file and a torch
module on an image folder, read lazily by each chunk, equal bit for bit on a Dask LocalCluster
and on the local executor; the model sent to each worker once; runs identified by the model's
and the data's SHA-256."""

from __future__ import annotations

import csv
import json
import os
import warnings

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from torch import nn

from calix import wrap
from calix.explain import KernelSHAP, Occlusion
from calix.parallel import CsvFile, ImageFolder, explain_dataset, resolve_device

N_ROWS, N_FEATURES = 50, 4


@pytest.fixture(scope="module")
def client():
    """One LocalCluster for the module, as explain_dataset starts one: two single-threaded
    worker processes."""
    distributed = pytest.importorskip("distributed")
    from calix.parallel import _local_cluster

    inherited = os.environ.get("MALLOC_TRIM_THRESHOLD_")  # before a nanny sets it here
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cluster = _local_cluster(2)
        c = distributed.Client(cluster)
    c.inherited_trim = inherited
    yield c
    c.close()
    cluster.close()


@pytest.fixture(autouse=True)
def one_thread():
    """This process computes with one torch thread, as every Dask worker does here."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _table(seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(N_ROWS, N_FEATURES)).astype(np.float32) * [1, 10, 0.1, 3] + 5
    y = (X[:, 0] - 5 + (X[:, 1] - 5) / 10 > 0).astype(int)
    return X.astype(np.float32), y


def _write_csv(path, X, y, *, newline="\n", bom=False, blank_every=0):
    with open(path, "w", newline="", encoding="utf-8-sig" if bom else "utf-8") as f:
        w = csv.writer(f, lineterminator=newline)
        w.writerow(["a", "b", "label", "c", "d"])  # the label column sits in the middle
        for i, (row, lab) in enumerate(zip(X, y, strict=True)):
            w.writerow([repr(float(row[0])), repr(float(row[1])), int(lab),
                        repr(float(row[2])), repr(float(row[3]))])
            if blank_every and i % blank_every == 0:
                f.write(newline)
    return path


@pytest.fixture
def table(tmp_path):
    X, y = _table()
    clf = LogisticRegression(C=0.5).fit(X, y)
    return _write_csv(tmp_path / "table.csv", X, y), X, clf


def _same(a, b):
    for name in ("values", "std", "target", "indices"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def test_sklearn_on_csv_dask_equals_local_bitwise(tmp_path, table, client):
    path, X, clf = table
    kw = {"background": X[:20], "chunk_size": 16, "seed": 3,
          "method_kwargs": {"n_samples": 40}}
    data = CsvFile(path, target="label")
    local = explain_dataset(data, clf, "kernel_shap", out=tmp_path / "local", **kw)
    dask = explain_dataset(data, clf, "kernel_shap", out=tmp_path / "dask", executor="dask",
                           scheduler=client, **kw)
    assert local.values.shape == (N_ROWS, N_FEATURES) and len(dask.computed) == 4
    _same(dask, local)
    # each chunk read its own rows of the file: the first equals explaining them directly
    ref = KernelSHAP(wrap(clf), background=X[:20], seed=3, n_samples=40).explain(X[:16])
    np.testing.assert_array_equal(local.values[:16], ref.values)
    np.testing.assert_array_equal(local.target[:16], ref.target)
    assert np.abs(local.values).max() > 0
    manifest = json.loads((tmp_path / "dask" / "manifest.json").read_text())
    assert manifest["model"]["kind"] == "sklearn" and len(manifest["model"]["sha256"]) == 64
    assert manifest["data"]["columns"] == ["a", "b", "c", "d"] and manifest["data"]["n"] == 50
    # a rerun reads everything back, on either executor
    again = explain_dataset(data, clf, "kernel_shap", out=tmp_path / "dask", executor="dask",
                            scheduler=client, **kw)
    assert again.computed == []
    _same(again, local)


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(4 * 8 * 8, 3)).eval()


@pytest.fixture
def images(tmp_path):
    """14 RGB 16x16 PNG files in two class folders, and the arrays they hold."""
    from skimage import io
    from skimage.util import img_as_float32

    rng = np.random.default_rng(1)
    root = tmp_path / "images"
    arrays = {}
    for k in range(14):
        img = rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
        f = root / ("cats" if k < 8 else "dogs") / f"{k:03d}.png"
        f.parent.mkdir(parents=True, exist_ok=True)
        io.imsave(f, img, check_contrast=False)
        arrays[f] = np.moveaxis(img_as_float32(img), -1, 0)
    (root / ".hidden.png").write_bytes(b"not read")
    (root / "notes.txt").write_text("not an image")
    files = sorted(arrays)
    return root, files, np.stack([arrays[f] for f in files])


def test_torch_module_on_image_folder_dask_equals_local_bitwise(tmp_path, images, client):
    root, files, X = images
    net = _net()
    folder = ImageFolder(root)
    assert folder.files == files and folder.n == 14
    kw = {"chunk_size": 5, "seed": 0}
    local = explain_dataset(folder, net, "occlusion", out=tmp_path / "local", **kw)
    dask = explain_dataset(folder, net, "occlusion", out=tmp_path / "dask", executor="dask",
                           scheduler=client, **kw)
    assert local.values.shape[0] == 14 and len(dask.computed) == 3
    _same(dask, local)
    ref = Occlusion(wrap(net)).explain(X[:5])
    np.testing.assert_array_equal(local.values[:5], ref.values)
    # a stochastic explainer, seeded: equal as well (and a folder path as data)
    kw = {"chunk_size": 7, "seed": 2, "method_kwargs": {"n_samples": 80}}
    local = explain_dataset(str(root), net, "kernel_shap", out=tmp_path / "ks-local", **kw)
    dask = explain_dataset(str(root), net, "kernel_shap", out=tmp_path / "ks-dask",
                           executor="dask", scheduler=client, **kw)
    _same(dask, local)
    assert next(iter(net.parameters())).device.type == "cpu"  # the caller's module unmoved


class CountedLinear:
    """A picklable model function that records every unpickling (one line per process)."""

    def __init__(self, w, log):
        self.w, self.log = w, str(log)

    def __call__(self, x):
        return x @ self.w

    def __setstate__(self, state):
        self.__dict__.update(state)
        with open(self.log, "a") as f:
            f.write(f"{os.getpid()}\n")


def test_model_sent_to_each_worker_once(tmp_path, client):
    log = tmp_path / "unpickled.txt"
    fn = CountedLinear(np.array([[1.0, -1.0], [0.5, 0.0], [0.0, 2.0]], np.float32), log)
    model = wrap(fn, output="logits")
    X = np.random.default_rng(0).normal(size=(24, 3)).astype(np.float32)
    res = explain_dataset(X, model, "occlusion", out=tmp_path / "run", executor="dask",
                          scheduler=client, chunk_size=2,
                          background=np.zeros((1, 3), np.float32))
    assert len(res.computed) == 12
    pids = log.read_text().split()
    # twelve tasks, yet the model was unpickled at most once in each of the two workers
    assert 1 <= len(pids) <= 2 and len(set(pids)) == len(pids)
    assert str(os.getpid()) not in pids
    # the run's end takes the job (and the model in it) out of the workers again
    held = client.run(lambda dask_worker: [n for n in dask_worker.plugins
                                           if n.startswith("calix-job")])
    assert held and all(v == [] for v in held.values())
    local = explain_dataset(X, model, "occlusion", out=tmp_path / "local", chunk_size=2,
                            background=np.zeros((1, 3), np.float32))
    _same(res, local)


class LoadsOnlyHere(CountedLinear):
    """A model function that cannot be unpickled in any other process (as when the workers
    lack a module the model needs)."""

    def __setstate__(self, state):
        if os.getpid() != state["home"]:
            raise RuntimeError("this model cannot be loaded here")
        self.__dict__.update(state)

    def __getstate__(self):
        return {**self.__dict__, "home": os.getpid()}


def test_a_job_the_workers_cannot_load_is_not_left_on_the_cluster(tmp_path, client):
    fn = LoadsOnlyHere(np.eye(3, 2, dtype=np.float32), tmp_path / "unused.txt")
    X = np.ones((4, 3), np.float32)
    with pytest.raises(RuntimeError, match=r"the Dask workers could not load this run's model "
                                           r"and background \(.*cannot be loaded here"):
        explain_dataset(X, wrap(fn, output="logits"), "occlusion", out=tmp_path / "run",
                        executor="dask", scheduler=client, chunk_size=2,
                        background=np.zeros((1, 3), np.float32))
    # the scheduler would otherwise hand the job to every worker that joins later, and each
    # would fail to start
    held = client.run_on_scheduler(lambda dask_scheduler: [
        n for n in dask_scheduler.worker_plugins if n.startswith("calix-job")])
    assert held == []


def test_lazy_csv_rows_blank_lines_crlf_and_bom(tmp_path, table):
    _, X, clf = table
    y = clf.predict(X)
    path = _write_csv(tmp_path / "messy.csv", X, y, newline="\r\n", bom=True, blank_every=7)
    source = CsvFile(path, target="label")._bind(None)
    assert source.n == N_ROWS
    size = path.stat().st_size
    for start, stop in ((0, 16), (16, 32), (48, 50)):
        rows = source.rows(start, stop)
        assert 0 < rows.end - rows.begin < size / 2  # only this chunk's bytes are read
        np.testing.assert_array_equal(rows.read(), X[start:stop])
    # whitespace-only lines, a last line without a line break, a ';' delimiter
    text = "x;y\n \t \n1;2\n\n  \r\n3;4\n5;6"
    odd = tmp_path / "odd.csv"
    odd.write_text(text)
    with pytest.raises(ValueError, match=rf"{odd} has a single column 'x;y' when split at "
                                         r"',' *; pass delimiter= \(e.g. ';'\)"):
        CsvFile(odd, delimiter=",")._bind(None)
    source = CsvFile(odd, delimiter=";")._bind(None)
    assert source.n == 3 and source.rows(2, 3).read().tolist() == [[5.0, 6.0]]
    np.testing.assert_array_equal(source.rows(0, 3).read(), [[1, 2], [3, 4], [5, 6]])
    assert source.rows(1, 2).lines == [6]  # line numbers for messages count every line
    # the model's own column order wins over the file's
    rows = CsvFile(path)._bind(["d", "a"]).rows(3, 5)
    np.testing.assert_array_equal(rows.read(), X[3:5][:, [3, 0]])


def test_images_read_per_chunk(images):
    root, files, X = images
    source = ImageFolder(root)._bind(None)
    rows = source.rows(5, 9)
    assert rows.files == [str(f) for f in files[5:9]]
    np.testing.assert_array_equal(rows.read(), X[5:9])
    grey = ImageFolder(root, grayscale=True, size=(8, 8))._bind(None).rows(0, 2).read()
    assert grey.shape == (2, 1, 8, 8) and grey.dtype == np.float32
    # the identity changes with any file's bytes or name, and only then
    folder = ImageFolder(root)
    before = folder._bind(None).identity()
    assert folder._bind(None).identity() == before
    raw = bytearray(files[3].read_bytes())
    raw[-20] ^= 1
    files[3].write_bytes(bytes(raw))
    assert folder._bind(None).identity()["sha256"] != before["sha256"]
    files[3].write_bytes(bytes(raw[:-20] + bytes([raw[-20] ^ 1]) + raw[-19:]))
    assert folder._bind(None).identity() == before
    files[3].rename(files[3].with_name("zzz.png"))
    assert folder._bind(None).identity()["sha256"] != before["sha256"]


def test_rerun_with_another_model_or_data_is_refused(tmp_path, table):
    path, X, clf = table
    out = tmp_path / "run"
    kw = {"background": X, "chunk_size": 25, "method_kwargs": {"n_samples": 20}}
    first = explain_dataset(CsvFile(path, target="label"), clf, "kernel_shap", out=out, **kw)
    other = LogisticRegression(C=5.0).fit(X, clf.predict(X))
    with pytest.raises(ValueError, match=r"another configuration \(model: the folder's .*"
                                         r"sha256"):
        explain_dataset(CsvFile(path, target="label"), other, "kernel_shap", out=out, **kw)
    y = _table()[1]
    changed = X.copy()
    changed[7, 1] += 1
    _write_csv(path, changed, y)
    with pytest.raises(ValueError, match=r"another configuration \(data: the folder's "):
        explain_dataset(CsvFile(path, target="label"), clf, "kernel_shap", out=out, **kw)
    with pytest.raises(ValueError, match=r"another configuration \(background: "):
        explain_dataset(CsvFile(path, target="label"), clf, "kernel_shap", out=out,
                        **{**kw, "background": X[:10]})
    reused = CsvFile(path, target="label")  # one object, the file changed between runs
    with pytest.raises(ValueError, match=r"another configuration \(data: "):
        explain_dataset(reused, clf, "kernel_shap", out=out, **kw)
    _write_csv(path, X, y)  # the original bytes again: the run resumes
    assert explain_dataset(reused, clf, "kernel_shap", out=out, **kw).computed == []
    again = explain_dataset(CsvFile(path, target="label"), clf, "kernel_shap", out=out, **kw)
    assert again.computed == []
    _same(again, first)
    # a torch module's identity is its weights
    net = nn.Linear(N_FEATURES, 2)
    out2 = tmp_path / "torch"
    explain_dataset(X, net, "saliency", out=out2)
    with torch.no_grad():
        net.weight[0, 0] += 1
    with pytest.raises(ValueError, match="another configuration \\(model: "):
        explain_dataset(X, net, "saliency", out=out2)


def test_saved_models_dataframes_and_datasets(tmp_path, table, images):
    pd = pytest.importorskip("pandas")
    path, X, clf = table
    # a scikit-learn model fitted on a DataFrame; the data's columns come in another order
    frame = pd.DataFrame(X, columns=["a", "b", "c", "d"])
    named = LogisticRegression().fit(frame, clf.predict(X))
    res = explain_dataset(frame[["d", "b", "a", "c"]], named, "kernel_shap", out=tmp_path / "df",
                          background=frame, chunk_size=25, method_kwargs={"n_samples": 20})
    ref = explain_dataset(CsvFile(path), named, "kernel_shap", out=tmp_path / "df-csv",
                          background=X, chunk_size=25, method_kwargs={"n_samples": 20})
    np.testing.assert_array_equal(res.values, ref.values)  # same model, same rows, same order
    # a TorchScript file given by its path
    root, _, X_img = images
    scripted = tmp_path / "net.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(_net()), scripted)
        res = explain_dataset(ImageFolder(root), str(scripted), "saliency",
                              out=tmp_path / "script", chunk_size=8)
    direct = explain_dataset(X_img, _net(), "saliency", out=tmp_path / "direct", chunk_size=8)
    np.testing.assert_allclose(res.values, direct.values, rtol=1e-5, atol=1e-7)
    # a Dataset: its test split, its training split as the background of tables
    from calix import data

    ds = data.load("iris")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DefaultFillWarning: the background is given
        res = explain_dataset(ds, "mlp", "occlusion", out=tmp_path / "iris", chunk_size=10)
    assert res.values.shape == (len(ds.X_test), 4)
    manifest = json.loads((tmp_path / "iris" / "manifest.json").read_text())
    assert manifest["data"]["kind"] == "array" and manifest["background"] is not None


def test_bad_input_claims_nothing(tmp_path, table):
    path, X, clf = table
    out = tmp_path / "run"
    with pytest.raises(ValueError, match=r"the model does not take the data's inputs of shape "
                                         r"\(5,\)"):
        explain_dataset(CsvFile(path), clf, "occlusion", out=out)  # the label as a feature
    with pytest.raises(ValueError, match=rf"{path} has no column\(s\) \['zz'\]"):
        explain_dataset(CsvFile(path, columns=["a", "zz"]), clf, "occlusion", out=out)
    with pytest.raises(ValueError, match="the zoo model 'mlp' is trained on the data"):
        explain_dataset(X, "mlp", "occlusion", out=out)
    with pytest.raises(ValueError, match="neither a zoo model .* nor an existing model file"):
        explain_dataset(X, "resnet", "occlusion", out=out)
    with pytest.raises(ValueError, match="background inputs have shape"):
        explain_dataset(CsvFile(path, target="label"), clf, "occlusion", out=out,
                        background=X[:, :3])
    with pytest.raises(TypeError, match="bogus"):
        explain_dataset(CsvFile(path, target="label"), clf, "occlusion", out=out,
                        method_kwargs={"bogus": 1})
    with pytest.raises(ValueError, match="device must be"):
        explain_dataset(X, clf, "occlusion", out=out, device="tpu")
    with pytest.raises(ValueError, match="MC-Dropout needs a model with nn.Dropout"):
        explain_dataset(X, nn.Linear(N_FEATURES, 2), "saliency", out=out,
                        uncertainty="mc_dropout")
    with pytest.raises(ValueError, match="CSV file not found"):
        explain_dataset(CsvFile(tmp_path / "none.csv"), clf, "occlusion", out=out)
    assert not (out / "manifest.json").exists()


def test_bad_row_in_a_later_chunk_names_the_line_and_keeps_the_rest(tmp_path, table):
    path, X, clf = table
    lines = path.read_text().splitlines()
    lines[45] = lines[45].replace(lines[45].split(",")[1], "oops", 1)  # data row 44
    path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "run"
    kw = {"background": X, "chunk_size": 20}
    with pytest.raises(ValueError, match=rf"{path}: feature columns must be numeric, but "
                                         r"column 'b' holds 'oops' on line 46"):
        explain_dataset(CsvFile(path, target="label"), clf, "occlusion", out=out, **kw)
    assert len(list((out / "chunks").glob("chunk_*.npz"))) == 2  # rows 0..39 are kept


def test_device(monkeypatch):
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu").type == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="asks for a GPU, but torch sees none"):
        resolve_device("cuda")
    assert resolve_device("auto").type == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")


def test_local_cluster_workers_keep_one_thread_and_the_adaptive_allocator(client):
    env = client.run(lambda: (os.environ.get("OMP_NUM_THREADS"),
                              os.environ.get("MALLOC_TRIM_THRESHOLD_"), torch.get_num_threads()))
    assert len(env) == 2 and set(env.values()) == {("1", client.inherited_trim, 1)}


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_gpu_asked_of_workers_without_one(tmp_path, table, client):
    path, X, clf = table
    net = nn.Sequential(nn.Linear(N_FEATURES, 2))
    with pytest.raises(ValueError, match="device must be 'auto', 'cpu', 'cuda'"):
        explain_dataset(X, net, "saliency", out=tmp_path / "a", device="mps",
                        executor="dask", scheduler=client)
    # the caller (without a GPU) runs locally only on what it has ...
    with pytest.raises(ValueError, match="asks for a GPU, but torch sees none"):
        explain_dataset(X, net, "saliency", out=tmp_path / "b", device="cuda")
    assert not (tmp_path / "b" / "manifest.json").exists()
    # ... but a GPU is the workers' business: each refuses, naming its host
    with pytest.raises(ValueError, match="asks for a GPU, but torch sees none on "):
        explain_dataset(X, net, "saliency", out=tmp_path / "c", device="cuda",
                        executor="dask", scheduler=client)
    assert not list((tmp_path / "c" / "chunks").glob("*.npz"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_gpu_chunks_match_cpu_chunks(tmp_path, images):
    root, _, _ = images
    net = _net()
    gpu = explain_dataset(ImageFolder(root), net, "saliency", out=tmp_path / "gpu",
                          chunk_size=5, device="auto")
    cpu = explain_dataset(ImageFolder(root), net, "saliency", out=tmp_path / "cpu",
                          chunk_size=5, device="cpu")
    np.testing.assert_allclose(gpu.values, cpu.values, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(gpu.target, cpu.target)
