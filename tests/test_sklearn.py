"""mlp.sklearn: scikit-learn's own estimator checks, pipelines, grid search,
digits accuracy against scikit-learn's MLPClassifier, and the backend matrix."""
import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from mlp.sklearn import MLPClassifier, MLPRegressor, expected_failed_checks  # noqa: E402

# Small and quick, yet able to reach the accuracy scikit-learn's checks ask for.
CHECKED = dict(hidden_layer_sizes=(16,), max_iter=40, learning_rate_init=0.01, random_state=0)
BACKENDS = ["numpy", "jax"]


def _checked(backend):
    return [MLPClassifier(backend=backend, **CHECKED), MLPRegressor(backend=backend, **CHECKED)]


@parametrize_with_checks([e for b in BACKENDS for e in _checked(b)],
                         expected_failed_checks=expected_failed_checks)
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)
