"""mlp.sklearn: scikit-learn's own estimator checks, the same training arithmetic as
scikit-learn's MLP, pipelines and grid search, digits accuracy against scikit-learn's
MLPClassifier, and the backend matrix."""
import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")

import sklearn.neural_network as sknn  # noqa: E402
from sklearn.datasets import load_digits, make_classification, make_regression  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import GridSearchCV, train_test_split  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from mlp.sklearn import MLPClassifier, MLPRegressor, expected_failed_checks  # noqa: E402

# Small and quick, yet able to reach the scores scikit-learn's checks ask for.
CHECKED = dict(hidden_layer_sizes=(16,), max_iter=40, learning_rate_init=0.01, random_state=0)
BACKENDS = ["numpy", "jax"]


@pytest.fixture(scope="module", autouse=True)
def jax_compilation_cache(tmp_path_factory):
    """Every estimator the checks build is a new network, so JAX would compile the
    same train step again and again (~0.3 s each); its persistent compilation cache
    turns the repeats into look-ups. Restored afterwards."""
    try:
        import jax
    except ImportError:
        yield
        return
    keys = {"jax_compilation_cache_dir": str(tmp_path_factory.mktemp("jax-cache")),
            "jax_persistent_cache_min_compile_time_secs": 0,
            "jax_persistent_cache_min_entry_size_bytes": 0}
    old = {k: getattr(jax.config, k) for k in keys}
    for k, v in keys.items():
        jax.config.update(k, v)
    yield
    for k, v in old.items():
        jax.config.update(k, v)


def _checked(backend):
    return [MLPClassifier(backend=backend, **CHECKED), MLPRegressor(backend=backend, **CHECKED)]


@parametrize_with_checks([e for b in BACKENDS for e in _checked(b)],
                         expected_failed_checks=expected_failed_checks)
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


# -- the same arithmetic as scikit-learn's MLP ------------------------------------------

def _same_start(ours, theirs, X, y):
    """Fit both once (warm_start), then give scikit-learn's estimator our weights."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours.fit(X, y)
        theirs.fit(X, y)
    theirs.coefs_ = [c.copy() for c in ours.coefs_]
    theirs.intercepts_ = [b.copy() for b in ours.intercepts_]
    for est in (ours, theirs):
        est.set_params(max_iter=6)
        est.loss_curve_.clear()


@pytest.mark.parametrize("kind", ["regressor", "multiclass", "binary", "multilabel"])
@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_training_matches_sklearn_step_for_step(kind, solver):
    """From the same weights, full-batch training gives scikit-learn's loss_curve_ and
    weights: same loss conventions (squared_error / 2, summed logistic loss), same L2
    scaling (alpha / batch size, weights only), same SGD momentum and Adam."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 5))
    if kind == "regressor":
        y = X @ rng.standard_normal((5, 2)) + 0.1 * rng.standard_normal((60, 2))
    elif kind == "multilabel":
        y = (X[:, :3] + 0.3 * rng.standard_normal((60, 3)) > 0).astype(int)
    else:
        y = np.digitize(X[:, 0] + X[:, 1], [-0.5, 0.5] if kind == "multiclass" else [0.0])
    params = dict(hidden_layer_sizes=(7, 4), activation="tanh", solver=solver, alpha=0.3,
                  batch_size=60, learning_rate_init=0.05, max_iter=1, shuffle=False,
                  momentum=0.8, nesterovs_momentum=True, warm_start=True, random_state=0, tol=0.0,
                  # scikit-learn's Adam folds the bias correction into the step size, which
                  # scales epsilon by 1 / sqrt(1 - beta_2**t) against ours (PyTorch's): a tiny
                  # epsilon takes that one known difference out of the comparison.
                  epsilon=1e-15)
    ours_cls, theirs_cls = ((MLPRegressor, sknn.MLPRegressor) if kind == "regressor"
                            else (MLPClassifier, sknn.MLPClassifier))
    ours, theirs = ours_cls(**params), theirs_cls(**params)
    _same_start(ours, theirs, X, y)
    if solver == "sgd":  # the momentum buffers both start from zero again
        ours._optimizer = ours._new_optimizer()
        ours._model.set_optimizer(ours._optimizer)
    else:  # Adam's moments both start from zero again
        ours._model.set_optimizer(ours._optimizer)
    del theirs._optimizer
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours.fit(X, y)
        theirs.fit(X, y)
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-9)
    for a, b in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_):
        np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-10)
    if kind != "regressor":
        np.testing.assert_allclose(ours.predict_proba(X), theirs.predict_proba(X), rtol=1e-5, atol=1e-8)
        assert (ours.predict(X) == theirs.predict(X)).all()
