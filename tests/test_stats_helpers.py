"""The row-wise correlations and the standard error of calix._stats."""

import math

import numpy as np
import pytest
from scipy import stats

from calix._stats import pearson, spearman, standard_error


def test_pearson_matches_scipy_row_by_row():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 3, 4)), rng.normal(size=(5, 3, 4))
    r = pearson(a, b)
    assert r.shape == (5,)
    for i in range(5):
        assert r[i] == pytest.approx(stats.pearsonr(a[i].ravel(), b[i].ravel()).statistic)
    np.testing.assert_allclose(pearson(a, a), 1.0)
    np.testing.assert_allclose(pearson(a, -2 * a + 1), -1.0)


def test_spearman_matches_scipy_with_ties():
    rng = np.random.default_rng(1)
    a, b = rng.integers(0, 4, size=(6, 10)), rng.normal(size=(6, 10))
    r = spearman(a, b)
    for i in range(6):
        assert r[i] == pytest.approx(stats.spearmanr(a[i], b[i]).statistic)
    assert spearman(b, np.exp(b)).tolist() == pytest.approx([1.0] * 6)


def test_constant_rows_get_the_constant():
    a = np.array([[1.0, 1.0, 1.0], [1.0, 2.0, 3.0]])
    b = np.array([[1.0, 2.0, 3.0], [3.0, 3.0, 3.0]])
    assert pearson(a, b).tolist() == [1.0, 1.0]
    assert pearson(a, b, constant=0.0).tolist() == [0.0, 0.0]
    assert spearman(a, b, constant=np.nan).tolist() == pytest.approx([np.nan] * 2,
                                                                      nan_ok=True)


def test_row_mismatch_is_refused():
    with pytest.raises(ValueError, match="as many rows"):
        pearson(np.zeros((2, 3)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="rows of the same size"):
        pearson(np.zeros((2, 3)), np.zeros((2, 4)))


def test_standard_error():
    v = np.array([1.0, 2.0, 4.0, 7.0])
    assert standard_error(v) == v.std(ddof=1) / math.sqrt(4)
    assert standard_error([[1.0, 2.0], [4.0, 7.0]]) == standard_error(v)
    assert math.isnan(standard_error([3.0]))
