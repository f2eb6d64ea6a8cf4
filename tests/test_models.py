import numpy as np
import pytest
import torch
from sklearn.linear_model import LinearRegression, LogisticRegression

from calix.models import CallableModel, Model, SklearnModel, TorchModel, as_tensor, wrap


@pytest.fixture(scope="module")
def twins():
    """A multinomial logistic regression and a torch linear layer with the same weights."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 5)).astype(np.float32)
    y = (X @ rng.normal(size=(5, 3))).argmax(1)
    sk = LogisticRegression(max_iter=2000).fit(X, y)
    lin = torch.nn.Linear(5, 3)
    with torch.no_grad():
        lin.weight.copy_(torch.as_tensor(sk.coef_, dtype=torch.float32))
        lin.bias.copy_(torch.as_tensor(sk.intercept_, dtype=torch.float32))
    return X, sk, lin


def test_three_adapters_agree(twins):
    X, sk, lin = twins
    m_torch = wrap(lin, input_shape=(5,))
    m_sk = wrap(sk)
    m_np = wrap(lambda a: sk.predict_proba(a), output="probabilities", input_shape=(5,))
    m_tc = wrap(lambda t: lin(t), backend="torch", input_shape=(5,))
    assert isinstance(m_torch, TorchModel) and isinstance(m_sk, SklearnModel)
    assert isinstance(m_np, CallableModel) and isinstance(m_tc, CallableModel)
    ref = m_sk.predict_proba(X)
    # float32 torch vs float64 sklearn softmax: agreement to 1e-5 absolute.
    for m in (m_torch, m_np, m_tc):
        np.testing.assert_allclose(m.predict_proba(X), ref, atol=1e-5)
        np.testing.assert_array_equal(m.predict(X), sk.predict(X))
    # sklearn logits are log-probabilities.
    np.testing.assert_allclose(m_sk.predict_logits(X), np.log(ref), atol=1e-5)


def test_batching_and_query_count(twins):
    X, _, lin = twins
    m = wrap(lin, input_shape=(5,), batch_size=7)
    full = wrap(lin, input_shape=(5,), batch_size=10_000).predict_logits(X)
    np.testing.assert_allclose(m.predict_logits(X), full, atol=1e-6)
    assert m.n_queries == len(X)
    m.predict(X[:10])
    assert m.n_queries == len(X) + 10
    m.reset_queries()
    assert m.n_queries == 0


def test_gradients_flow_through_torch_models(twins):
    _, _, lin = twins
    m = wrap(lin, input_shape=(5,), batch_size=2)
    x = torch.randn(5, 5, requires_grad=True)
    m(x)[:, 0].sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), np.tile(lin.weight[0].detach().numpy(), (5, 1)),
                               atol=1e-6)


def test_sklearn_model_is_not_differentiable(twins):
    X, sk, _ = twins
    with pytest.raises(TypeError, match="not differentiable"):
        wrap(sk).forward(torch.zeros(2, 5, requires_grad=True))


def test_regression_adapters_agree():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(50, 3)).astype(np.float32)
    y = X @ np.array([1.0, -2.0, 0.5]) + 0.3
    sk = LinearRegression().fit(X, y)
    lin = torch.nn.Linear(3, 1)
    with torch.no_grad():
        lin.weight.copy_(torch.as_tensor(sk.coef_[None], dtype=torch.float32))
        lin.bias.fill_(float(sk.intercept_))
    m_sk, m_t = wrap(sk), wrap(lin, task="regression", input_shape=(3,))
    assert m_sk.task == "regression"
    np.testing.assert_allclose(m_sk.predict(X), m_t.predict(X), atol=1e-5)
    assert m_sk.predict(X).shape == (50, 1)
    with pytest.raises(TypeError, match="needs a classifier"):
        m_t.predict_proba(X)


def test_unknown_model_type():
    with pytest.raises(TypeError, match="cannot wrap an object of type int"):
        wrap(3)


def test_wrong_input_shape(twins):
    _, sk, lin = twins
    for m in (wrap(lin, input_shape=(5,)), wrap(sk)):
        with pytest.raises(ValueError, match=r"must have shape \(n, 5\), got \(4, 6\)"):
            m.predict(np.zeros((4, 6)))
        with pytest.raises(ValueError, match="add a batch dimension"):
            m.predict(np.zeros(5))


def test_shape_is_learned_from_first_call(twins):
    _, _, lin = twins
    m = wrap(lin)
    m.predict(np.zeros((2, 5)))
    assert m.input_shape == (5,)
    with pytest.raises(ValueError, match="must have shape"):
        m.predict(np.zeros((2, 4)))


def test_model_failure_becomes_value_error_when_shape_unknown(twins):
    _, _, lin = twins
    with pytest.raises(ValueError, match="model failed on inputs of shape"):
        wrap(lin).predict(np.zeros((2, 7)))


def test_wrong_dtype(twins):
    _, _, lin = twins
    m = wrap(lin, input_shape=(5,))
    with pytest.raises(TypeError, match="real numeric"):
        m.predict(np.array([["a"] * 5]))
    with pytest.raises(TypeError, match="real numeric"):
        m.predict(np.ones((1, 5), dtype=complex))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input(twins, bad):
    _, _, lin = twins
    x = np.zeros((3, 5), dtype=np.float32)
    x[1, 2] = bad
    with pytest.raises(ValueError, match="NaN or infinite"):
        wrap(lin, input_shape=(5,)).predict(x)


def test_non_finite_output():
    m = wrap(lambda a: np.full((len(a), 2), np.nan), input_shape=(3,))
    with pytest.raises(ValueError, match="NaN or infinite outputs"):
        m.predict(np.zeros((2, 3)))


def test_probabilities_must_sum_to_one():
    m = wrap(lambda a: np.full((len(a), 3), 0.5), output="probabilities", input_shape=(2,))
    with pytest.raises(ValueError, match="must sum to 1"):
        m.predict_proba(np.zeros((4, 2)))


def test_probabilities_out_of_range():
    m = wrap(lambda a: np.tile([1.5, -0.5], (len(a), 1)), output="probabilities",
             input_shape=(2,))
    with pytest.raises(ValueError, match=r"lie in \[0, 1\]"):
        m.predict_proba(np.zeros((4, 2)))


def test_classifier_output_must_be_2d():
    m = wrap(lambda a: np.zeros(len(a)), input_shape=(2,))
    with pytest.raises(ValueError, match="shape \\(n, n_classes\\)"):
        m.predict(np.zeros((3, 2)))


def test_sklearn_classifier_without_predict_proba():
    from sklearn.svm import LinearSVC

    svc = LinearSVC().fit(np.random.default_rng(0).normal(size=(20, 2)), [0, 1] * 10)
    with pytest.raises(TypeError, match="no predict_proba"):
        wrap(svc, task="classification")


def test_levels_are_checked(twins):
    _, _, lin = twins
    m = wrap(lin, input_shape=(5,))
    with pytest.raises(ValueError, match=r"levels must lie in \[0, 1\]"):
        m.forward(torch.zeros(2, 5), levels=torch.tensor([0.1, 1.2]))
    with pytest.raises(ValueError, match="one value per input"):
        m.forward(torch.zeros(2, 5), levels=torch.tensor([0.1]))


def test_bad_batch_size():
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        wrap(torch.nn.Linear(2, 2), batch_size=0)


def test_wrap_is_idempotent(twins):
    m = wrap(twins[2])
    assert wrap(m) is m and isinstance(m, Model)


def test_as_tensor_converts_ints_and_float64():
    assert as_tensor(np.arange(3)).dtype == torch.float32
    assert as_tensor(np.zeros(2, dtype=np.float64)).dtype == torch.float32


def test_module_mode_is_left_alone():
    net = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Dropout(0.5))
    net.train()
    wrap(net, input_shape=(3,)).predict(np.zeros((2, 3)))
    assert net.training
