"""What every explainer shares (calix.explain.base): a batch equals one input at a time,
scikit-learn models, perturbation levels passed to a level-aware calibrator, and targets
checked against the classes."""

import numpy as np
import pytest
import torch

from calix.calibrate import calibrated
from calix.explain import KernelSHAP, Occlusion, Saliency
from calix.models import wrap
from calix.perturb import Columns, Constant, Perturbation
from tests._explain_models import _mlp


def test_batch_equals_one_by_one():
    model = wrap(_mlp(d=5), input_shape=(5,))
    x = torch.randn(4, 5)
    for make in (lambda: Occlusion(model), lambda: KernelSHAP(model, n_samples=64)):
        batch = make().explain(x).feature_values
        single = np.stack([make().explain(x[i]).feature_values[0] for i in range(4)])
        np.testing.assert_allclose(batch, single, atol=1e-6)


def test_perturbation_explainers_work_on_sklearn_models():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 5))
    y = (X[:, 0] > 0).astype(int)
    clf = LogisticRegression().fit(X, y)
    exp = KernelSHAP(clf, n_samples=32).explain(X[:3], target=1)
    assert np.argmax(np.abs(exp.feature_values), 1).tolist() == [0, 0, 0]
    with pytest.raises(TypeError, match="not differentiable"):
        Saliency(clf)


def test_explanations_pass_levels_to_a_recalx_model():
    from calix.calibrate import ReCalX

    net = _mlp(d=4)
    model = wrap(net, input_shape=(4,))
    rc = ReCalX(2, min_samples_per_bin=1).fit(torch.randn(50, 3), torch.randint(0, 3, (50,)),
                                              torch.rand(50))
    rc.log_temperatures_.copy_(torch.log(torch.tensor([1.0, 5.0])))
    x = torch.randn(1, 4)
    occ = Occlusion(calibrated(model, rc), output="logit").explain(x, target=0)
    # removing one of four features is level 0.25 -> bin 0 (T = 1): plain logits
    ref = Occlusion(model, output="logit").explain(x, target=0)
    np.testing.assert_allclose(occ.feature_values, ref.feature_values, atol=1e-6)
    ks = KernelSHAP(calibrated(model, rc), output="logit", n_samples=14).explain(x, target=0)
    base = Perturbation(Columns(), Constant(0.0)).query(model, x, torch.zeros(1, 4)).outputs
    # the empty coalition (level 1, T = 5) is cooled by its bin's temperature
    np.testing.assert_allclose(ks.extra["base_value"], base[0, 0, 0].item() / 5, rtol=1e-5)


def test_target_out_of_range():
    model = wrap(_mlp(), input_shape=(8,))
    with pytest.raises(ValueError, match=r"target must lie in \[0, 3\)"):
        Saliency(model).explain(torch.randn(2, 8), target=3)
    with pytest.raises(ValueError, match="one index or one per input"):
        Occlusion(model).explain(torch.randn(2, 8), target=[0, 1, 2])
