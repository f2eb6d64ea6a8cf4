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
