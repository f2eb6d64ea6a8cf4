import numpy as np
import pytest

from calix import data


@pytest.mark.parametrize("name", sorted(data.DATASETS))
def test_shipped_datasets(name):
    ds = data.load(name, seed=0)
    n = len(ds.X_train) + len(ds.X_val) + len(ds.X_test)
    assert ds.X_train.dtype == np.float32 and ds.mean.shape == ds.input_shape
    assert abs(len(ds.X_train) / n - 0.6) < 0.01 and abs(len(ds.X_test) / n - 0.2) < 0.01
    if ds.task == "classification":
        assert set(np.unique(ds.y_train)) == set(range(ds.n_classes))
        # stratified: class shares of train and test agree
        p_tr = np.bincount(ds.y_train) / len(ds.y_train)
        p_te = np.bincount(ds.y_test, minlength=ds.n_classes) / len(ds.y_test)
        assert np.abs(p_tr - p_te).max() < 0.05
    if not ds.is_image:  # standardised with training statistics
        np.testing.assert_allclose(ds.X_train.mean(0), 0, atol=1e-4)
    assert np.isfinite(ds.X_train).all()


def test_splits_are_deterministic_and_seeded():
    a, b, c = data.load("wine", seed=3), data.load("wine", seed=3), data.load("wine", seed=4)
    np.testing.assert_array_equal(a.X_test, b.X_test)
    assert not np.array_equal(a.X_test, c.X_test)


def test_digits_noisy_is_documented_variant():
    ds = data.load("digits-noisy")
    assert ds.input_shape == (1, 16, 16) and ds.n_classes == 10
    X, y = data.make_digits_noisy(seed=0)
    X2, y2 = data.make_digits_noisy(seed=0)
    np.testing.assert_array_equal(X, X2)
    from sklearn.datasets import load_digits

    flipped = np.mean(y != load_digits().target)
    assert 0.07 < flipped < 0.13  # 10% label noise


def test_regression_target_standardised():
    ds = data.load("diabetes")
    assert ds.task == "regression" and ds.n_classes is None
    assert abs(ds.y_train.mean()) < 1e-5 and abs(ds.y_train.std() - 1) < 1e-4
    assert ds.extra["y_std"] > 1


def test_unknown_dataset():
    with pytest.raises(ValueError, match="unknown dataset 'mnist'"):
        data.load("mnist")


def test_csv_loader(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3))
    y = np.where(X[:, 0] > 0, "yes", "no")
    p = tmp_path / "toy.csv"
    lines = ["a,b,label,c"] + [f"{r[0]},{r[1]},{lab},{r[2]}" for r, lab in zip(X, y, strict=True)]
    p.write_text("\n".join(lines) + "\n")
    ds = data.load_csv(p, target="label")
    assert ds.feature_names == ["a", "b", "c"] and ds.class_names == ["no", "yes"]
    assert len(ds.X_train) + len(ds.X_val) + len(ds.X_test) == 40
    # by path, the last column ("c") is the target, so the text column is a bad feature
    with pytest.raises(ValueError, match="feature columns must be numeric"):
        data.load(str(p))
    with pytest.raises(ValueError, match="no column named 'nope'"):
        data.load_csv(p, target="nope")
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n3\n")
    with pytest.raises(ValueError, match="every row must have 2 fields"):
        data.load_csv(bad)
    with pytest.raises(FileNotFoundError, match="CSV file not found"):
        data.load_csv(tmp_path / "missing.csv")


def test_csv_last_column_is_default_target(tmp_path):
    p = tmp_path / "reg.csv"
    rng = np.random.default_rng(1)
    rows = [f"{a:.4f},{b:.4f},{a + 2 * b:.4f}" for a, b in rng.normal(size=(60, 2))]
    p.write_text("u,v,target\n" + "\n".join(rows))
    ds = data.load_csv(p)
    assert ds.task == "regression" and ds.feature_names == ["u", "v"]


def test_npz_loader(tmp_path):
    rng = np.random.default_rng(0)
    p = tmp_path / "toy.npz"
    np.savez(p, X=rng.normal(size=(30, 1, 4, 4)), y=np.arange(30) % 3)
    ds = data.load_npz(p)
    assert ds.input_shape == (1, 4, 4) and ds.n_classes == 3
    with pytest.raises(ValueError, match=r"has no array\(s\) \['labels'\]"):
        data.load_npz(p, y_key="labels")
    with pytest.raises(FileNotFoundError):
        data.load_npz(tmp_path / "nope.npz")


def test_npz_with_nan_is_rejected(tmp_path):
    p = tmp_path / "nan.npz"
    X = np.zeros((20, 2))
    X[3, 1] = np.nan
    np.savez(p, X=X, y=np.arange(20) % 2)
    with pytest.raises(ValueError, match="NaN or infinite"):
        data.load_npz(p)


def test_image_folder_loader(tmp_path):
    from skimage import io

    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(8):
            img = (rng.random((6, 5, 3)) * 255).astype(np.uint8)
            io.imsave(tmp_path / cls / f"{i}.png", img, check_contrast=False)
    ds = data.load_image_folder(tmp_path)
    assert ds.input_shape == (1, 6, 5) and ds.class_names == ["cat", "dog"]
    assert 0 <= ds.X_train.min() and ds.X_train.max() <= 1
    rgb = data.load_image_folder(tmp_path, grayscale=False, size=(4, 4))
    assert rgb.input_shape == (3, 4, 4)
    assert data.load(str(tmp_path)).input_shape == (1, 6, 5)
    io.imsave(tmp_path / "cat" / "big.png", np.zeros((9, 9), np.uint8), check_contrast=False)
    with pytest.raises(ValueError, match="differ in shape"):
        data.load_image_folder(tmp_path)
    with pytest.raises(FileNotFoundError, match="image folder not found"):
        data.load_image_folder(tmp_path / "missing")


def test_from_arrays_errors():
    with pytest.raises(ValueError, match="y must have shape"):
        data.from_arrays(np.zeros((20, 2)), np.zeros(19))
    with pytest.raises(ValueError, match="at least two classes"):
        data.from_arrays(np.zeros((20, 2)), np.zeros(20, dtype=int))
    with pytest.raises(TypeError, match="features must be numeric"):
        data.from_arrays(np.array([["a", "b"]] * 20), np.arange(20) % 2)


# ---------------------------------------------------------------- hostile and careless files
def _rows(n=40, sep=",", seed=0):
    rng = np.random.default_rng(seed)
    return [sep.join([f"{a:.4f}", f"{b:.4f}", str(i % 2)])
            for i, (a, b) in enumerate(rng.normal(size=(n, 2)))]


def _npz_bytes(tmp_path):
    p = tmp_path / "good.npz"
    np.savez(p, X=np.random.default_rng(0).normal(size=(30, 3)), y=np.arange(30) % 2)
    return p.read_bytes()


def _bad_npz(kind, tmp_path):
    p = tmp_path / "data.npz"
    if kind == "folder":
        p.mkdir()
    elif kind == "garbage":
        p.write_text("not an archive at all\n")
    elif kind == "empty":
        p.write_bytes(b"")
    elif kind == "truncated":
        b = _npz_bytes(tmp_path)
        p.write_bytes(b[: len(b) // 2])
    elif kind == "npy":
        with p.open("wb") as fh:
            np.save(fh, np.zeros((30, 3)))
    elif kind == "objects":
        np.savez(p, X=np.array([{}] * 30, dtype=object), y=np.arange(30) % 2)
    elif kind == "text-features":
        np.savez(p, X=np.array([["a"]] * 30), y=np.arange(30) % 2)
    return p


@pytest.mark.parametrize("kind, match", [
    ("folder", "is a folder, not an NPZ file"),
    ("garbage", "is not a valid .npz archive"),
    ("empty", r"is empty \(0 bytes\)"),
    ("truncated", "is not a valid .npz archive"),
    ("npy", "holds a single .npy array"),
    ("objects", "array 'X' holds Python objects"),
    ("text-features", "features must be numeric"),
])
def test_npz_loader_names_the_file_and_the_fault(tmp_path, kind, match):
    p = _bad_npz(kind, tmp_path)
    for load in (data.load_npz, lambda q: data.load(str(q))):
        with pytest.raises(data.DataFileError, match=match) as info:
            load(p)
        assert str(p) in str(info.value)
        assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("content, match", [
    (bytes(range(256)) * 4, "contains NUL bytes"),
    ("a,b\n1,\xe9\n".encode("latin-1"), r"is not UTF-8 text \(byte 0xe9 at offset 6\)"),
    (("label\n" + "\n".join(str(i % 2) for i in range(40))).encode(),
     "has a single column 'label' when split at ','"),
    (("a,a,y\n" + "\n".join(f"{i},1,{i % 2}" for i in range(40))).encode(),
     r"duplicate column name\(s\) \['a'\]"),
    (("a,,y\n" + "\n".join(f"{i},1,{i % 2}" for i in range(40))).encode(),
     r"column\(s\) \[2\] of the header row have no name"),
    (("a,b,y\n" + "\n".join(f"{i},{'x7' if i == 5 else 1},{i % 2}" for i in range(40))).encode(),
     "column 'b' holds 'x7' on line 7; the label column is 'y'"),
    (("a,b,y\n" + "\n".join(f"{i},{'' if i == 3 else 1},{i % 2}" for i in range(40))).encode(),
     "column 'b' holds an empty field on line 5"),
    (("a,b,y\n" + "\n".join(f"{i},{'nan' if i == 8 else 1},{i % 2}" for i in range(40))).encode(),
     "column 'b' holds 'nan' on line 10, which is not a finite number"),
    (("a,b,y\n" + "\n".join(f"{i},1,{'nan' if i == 4 else i % 2}" for i in range(40))).encode(),
     r"the label column 'y' is empty or NaN on 1 row\(s\), the first on line 6"),
    (("a,b,y\n" + "\n".join(f"{i},1,{'' if i in (4, 9) else 'yes'}" for i in range(40))).encode(),
     r"the label column 'y' is empty or NaN on 2 row\(s\), the first on line 6"),
], ids=["binary", "latin-1", "label-only", "duplicate-names", "unnamed-column", "text-feature",
        "empty-feature", "nan-feature", "nan-label", "empty-label"])
def test_csv_loader_rejects_what_is_not_data(tmp_path, content, match):
    p = tmp_path / "data.csv"
    p.write_bytes(content)
    with pytest.raises(data.DataFileError, match=match) as info:
        data.load(str(p))
    assert str(p) in str(info.value)


def test_csv_folder_named_like_a_file(tmp_path):
    (tmp_path / "x.csv").mkdir()
    with pytest.raises(data.DataFileError, match="x.csv is a folder, not a CSV file"):
        data.load(str(tmp_path / "x.csv"))


@pytest.mark.parametrize("sep", [";", "\t", "|", ","])
def test_csv_delimiter_is_sniffed(tmp_path, sep):
    p = tmp_path / "data.csv"
    p.write_text(sep.join(["a", "b", "y"]) + "\n" + "\n".join(_rows(sep=sep)) + "\n")
    ds = data.load(str(p))
    assert ds.feature_names == ["a", "b"] and ds.class_names == ["0", "1"]
    assert ds.input_shape == (2,)
    ref = tmp_path / "comma.csv"
    ref.write_text("a,b,y\n" + "\n".join(_rows()) + "\n")
    np.testing.assert_array_equal(ds.X_train, data.load(str(ref)).X_train)


def test_csv_delimiter_can_be_stated(tmp_path):
    p = tmp_path / "data.csv"
    p.write_text("a;b;y\n" + "\n".join(_rows(sep=";")) + "\n")
    assert data.load(str(p), delimiter=";").input_shape == (2,)
    assert data.load_csv(p, delimiter=";").feature_names == ["a", "b"]
    # a stated delimiter that does not split the header: no feature column, not a dataset
    with pytest.raises(data.DataFileError, match="has a single column 'a;b;y' when split at ','"):
        data.load_csv(p, delimiter=",")
    with pytest.raises(ValueError, match="delimiter must be one character"):
        data.load_csv(p, delimiter=";;")
    with pytest.raises(ValueError, match="delimiter ';' applies to .csv files only"):
        data.load("wine", delimiter=";")


def test_csv_without_header_row(tmp_path):
    p = tmp_path / "noheader.csv"
    p.write_text("\n".join(_rows()) + "\n")
    first = _rows()[0]
    with pytest.raises(data.DataFileError, match=f"the first row '{first}' looks like data, not "
                                                 "a header row"):
        data.load_csv(p)
    # integer column names, as pandas writes a frame's default columns, are a header
    p.write_text("0,1,2\n" + "\n".join(_rows()) + "\n")
    assert data.load_csv(p).feature_names == ["0", "1"]


def test_csv_crlf_and_blank_lines(tmp_path):
    p = tmp_path / "crlf.csv"
    p.write_bytes(("a,b,y\r\n" + "\r\n".join(_rows()) + "\r\n  \r\n\r\n,,\r\n").encode())
    ds = data.load_csv(p)
    assert ds.feature_names == ["a", "b"] and len(ds.X_train) + len(ds.X_val) + len(
        ds.X_test) == 40


def test_empty_dataset_name():
    with pytest.raises(ValueError, match="dataset name is empty"):
        data.load(" ")


def test_csv_byte_order_mark_and_padded_header(tmp_path):
    p = tmp_path / "bom.csv"
    p.write_bytes(("\ufeffa, b, y\n" + "\n".join(_rows()) + "\n").encode("utf-8"))
    assert data.load_csv(p, target="y").feature_names == ["a", "b"]


def test_nan_label_is_not_a_class():
    y = np.array([0.0, 1.0] * 9 + [np.nan, 1.0])
    with pytest.raises(ValueError, match=r"1 missing \(NaN, infinite or None\) label\(s\), the "
                                         "first at index 18"):
        data.from_arrays(np.zeros((20, 2)), y)
    with pytest.raises(ValueError, match="missing"):
        data.from_arrays(np.zeros((20, 2)), np.array(["a", "b"] * 9 + [None, "a"], dtype=object))


@pytest.mark.parametrize("seed", [-1, 2**32, 1.5, True])
def test_bad_seed_is_named(seed):
    with pytest.raises(ValueError, match=f"seed must be an integer in \\[0, 2\\*\\*32\\), got "
                                         f"{seed!r}"):
        data.load("iris", seed=seed)


def _image_folder(root, n=6):
    from skimage import io

    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            io.imsave(root / cls / f"{i}.png", (rng.random((5, 5)) * 255).astype(np.uint8),
                      check_contrast=False)
    return root


@pytest.mark.parametrize("content, match", [
    (b"", r"is empty \(0 bytes\), not an image"),
    (b"\x89PNG\r\n\x1a\nnot really", "cannot be read as an image"),
    (b"GIF89a" + b"\x00" * 5, "cannot be read as an image"),
], ids=["empty", "corrupt-png", "truncated-gif"])
def test_image_folder_names_the_unreadable_image(tmp_path, content, match):
    root = _image_folder(tmp_path / "imgs")
    bad = root / "dog" / "broken.png"
    bad.write_bytes(content)
    with pytest.raises(data.DataFileError, match=match) as info:
        data.load(str(root))
    assert str(bad) in str(info.value) and "pip install" not in str(info.value)


def test_image_folder_skips_hidden_entries_and_rejects_empty_classes(tmp_path):
    root = _image_folder(tmp_path / "imgs")
    (root / ".ipynb_checkpoints").mkdir()
    (root / "cat" / "._0.png").write_bytes(b"resource fork, not a PNG")
    ds = data.load_image_folder(root)
    assert ds.class_names == ["cat", "dog"] and len(ds.X_train) + len(ds.X_val) + len(
        ds.X_test) == 12
    (root / "bird").mkdir()
    with pytest.raises(data.DataFileError, match="class folder .*bird holds no images"):
        data.load_image_folder(root)
    with pytest.raises(data.DataFileError, match="is a file, not an image folder"):
        data.load_image_folder(root / "cat" / "0.png")


def test_existing_file_of_unknown_kind(tmp_path):
    p = tmp_path / "notes.txt"
    p.write_text("hello")
    with pytest.raises(data.DataFileError, match="notes.txt is not a dataset calix can read"):
        data.load(str(p))
