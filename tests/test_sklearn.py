"""mlp.sklearn: scikit-learn's own estimator checks, the same training arithmetic as
scikit-learn's MLP, pipelines and grid search, digits accuracy against scikit-learn's
MLPClassifier, and the backend matrix."""
import importlib.util
import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")

import sklearn.neural_network as sknn  # noqa: E402
from sklearn.datasets import make_classification, make_regression  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import GridSearchCV, train_test_split  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from mlp.sklearn import MLPClassifier, MLPRegressor, expected_failed_checks  # noqa: E402

# Small and quick, yet able to reach the scores scikit-learn's checks ask for.
CHECKED = dict(hidden_layer_sizes=(16,), max_iter=40, learning_rate_init=0.01, random_state=0)
BACKENDS = ["numpy", "jax"]  # the two; the checks also run on these where installed:
EXTRA_CHECK_BACKENDS = [b for b in ("torch", "array_api_strict") if importlib.util.find_spec(b)]


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
            "jax_persistent_cache_min_entry_size_bytes": 0,
            "jax_disable_most_optimizations": True}
    old = {k: jax.config.values[k] for k in keys}
    for k, v in keys.items():
        jax.config.update(k, v)
    yield
    for k, v in old.items():
        jax.config.update(k, v)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The data here is tiny: BLAS and PyTorch thread pools only contend (with each
    other and with the other tests on a 2-core machine). Restored afterwards."""
    torch = None
    if importlib.util.find_spec("torch"):
        import torch
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    if torch is not None:
        torch.set_num_threads(threads)


def _checked(backend):
    return [MLPClassifier(backend=backend, **CHECKED), MLPRegressor(backend=backend, **CHECKED)]


@parametrize_with_checks([e for b in BACKENDS + EXTRA_CHECK_BACKENDS for e in _checked(b)],
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


# -- in scikit-learn's tools, on numpy and on jax -----------------------------------------

def test_pipeline_and_grid_search_on_numpy_and_jax():
    """The classifier, unchanged, inside Pipeline(StandardScaler, ...) and GridSearchCV:
    the same cross-validation scores on NumPy and JAX (same seed, same float64 math)."""
    X, y = make_classification(n_samples=150, n_features=6, n_informative=4, n_classes=3,
                               class_sep=2.0, random_state=0)
    X = X * 50 + 200  # badly scaled: the StandardScaler in the pipeline matters
    labels = np.array(["ant", "bee", "cat"])[y]
    scores = {}
    for backend in BACKENDS:
        pipe = make_pipeline(StandardScaler(), MLPClassifier(
            backend=backend, hidden_layer_sizes=(8,), learning_rate_init=0.02, max_iter=30,
            random_state=0))
        grid = GridSearchCV(pipe, {"mlpclassifier__alpha": [1e-4, 1.0],
                                   "mlpclassifier__hidden_layer_sizes": [(8,), (4, 4)]}, cv=3)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            grid.fit(X, labels)
        assert grid.best_score_ > 0.8, (backend, grid.cv_results_["mean_test_score"])
        assert set(grid.predict(X)) <= set(labels) and grid.score(X, labels) > 0.8
        best = grid.best_estimator_[-1]
        assert best._model.backend.name == backend and list(best.classes_) == ["ant", "bee", "cat"]
        assert isinstance(best.coefs_[0], np.ndarray) and best.coefs_[0].shape[0] == 6
        scores[backend] = grid.cv_results_["mean_test_score"]
    np.testing.assert_allclose(scores["jax"], scores["numpy"], atol=1e-12)


@pytest.mark.filterwarnings("ignore:X does not have valid feature names:UserWarning")
def test_pandas_frames_and_lists():
    pd = pytest.importorskip("pandas")
    X, y = make_classification(n_samples=80, n_features=4, random_state=1)
    frame = pd.DataFrame(X, columns=["a", "b", "c", "d"])
    clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=5, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(frame, pd.Series(np.where(y, "yes", "no")))
    assert list(clf.feature_names_in_) == ["a", "b", "c", "d"] and clf.n_features_in_ == 4
    assert list(clf.classes_) == ["no", "yes"]
    np.testing.assert_array_equal(clf.predict(frame), clf.predict(X.tolist()))
    assert clf.predict_proba(frame).shape == (80, 2)


# -- digits: accuracy against scikit-learn's own MLPClassifier ------------------------------

DIGITS_PARAMS = dict(hidden_layer_sizes=(64,), learning_rate_init=0.003, max_iter=30, alpha=1e-4)
DIGITS_SEEDS = tuple(range(10))


def digits_split():
    from mlp import datasets

    data = datasets.load("digits")  # the bundled copy, already scaled to [0, 1]
    return data.x_train, data.x_test, data.y_train, data.y_test


def test_digits_accuracy_at_least_sklearns():
    """Same split, same hyper-parameters, same seeds. The two train the same way (see
    test_training_matches_sklearn_step_for_step): what differs is the initial weights
    (He-normal here, Glorot-uniform there), so a single seed is a coin flip. We compare
    the mean over seeds and allow two standard errors of that difference of means."""
    Xtr, Xte, ytr, yte = digits_split()
    ours, theirs = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for seed in DIGITS_SEEDS:
            ours.append(MLPClassifier(random_state=seed, **DIGITS_PARAMS).fit(Xtr, ytr).score(Xte, yte))
            theirs.append(sknn.MLPClassifier(random_state=seed, **DIGITS_PARAMS).fit(Xtr, ytr).score(Xte, yte))
    ours, theirs = np.array(ours), np.array(theirs)
    se = np.sqrt((ours.var(ddof=1) + theirs.var(ddof=1)) / len(DIGITS_SEEDS))
    print(f"digits test accuracy: mlp {ours.round(4)} mean {ours.mean():.4f}; "
          f"scikit-learn {theirs.round(4)} mean {theirs.mean():.4f}; 2 SE {2 * se:.4f}")
    assert ours.mean() >= theirs.mean() - 2 * se, (ours, theirs)
    assert ours.min() > 0.93


# -- the backend matrix -------------------------------------------------------------------

def test_classifier_over_the_matrix(cell):
    """Fit and predict on every backend x device x dtype cell: the same probabilities as
    the NumPy float64 run (same seed, same host data), within the cell's tolerance."""
    X, y = make_classification(n_samples=64, n_features=5, n_informative=3, n_classes=3,
                               random_state=0)
    params = dict(hidden_layer_sizes=(8,), max_iter=3, learning_rate_init=0.01, batch_size=16,
                  random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ref = MLPClassifier(backend="numpy", dtype="float64", **params).fit(X, y)
        clf = MLPClassifier(backend=cell.spec, dtype=cell.dtype, **params).fit(X, y)
    rtol, atol = cell.tol("train")
    assert clf._model.backend.spec == cell.backend.spec and clf._model.dtype == cell.dtype
    assert clf.coefs_[0].dtype == np.dtype(cell.dtype)
    np.testing.assert_allclose(clf.loss_curve_, ref.loss_curve_, rtol=rtol, atol=atol)
    proba, ref_proba = clf.predict_proba(X), ref.predict_proba(X)
    assert isinstance(proba, np.ndarray)
    np.testing.assert_allclose(proba, ref_proba, rtol=rtol * 10, atol=atol * 10)
    top2 = np.sort(ref_proba, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 1e-4  # rows whose argmax float32 cannot flip
    np.testing.assert_array_equal(clf.predict(X)[clear], ref.predict(X)[clear])


# -- behaviour ----------------------------------------------------------------------------

def test_partial_fit_needs_classes_first_and_continues():
    X, y = make_classification(n_samples=90, n_features=4, random_state=0)
    clf = MLPClassifier(hidden_layer_sizes=(8,), learning_rate_init=0.01, random_state=0)
    with pytest.raises(ValueError, match="classes must be passed on the first call"):
        clf.partial_fit(X, y)
    clf.partial_fit(X[:45], y[:45], classes=[0, 1])
    for _ in range(20):
        clf.partial_fit(X, y)
    assert clf.n_iter_ == 1 and len(clf.loss_curve_) == 21 and clf.t_ == 45 + 20 * 90
    assert clf.loss_curve_[-1] < clf.loss_curve_[1]
    with pytest.raises(ValueError, match="classes not in"):
        clf.partial_fit(X, np.where(y, 2, 0))
    before = clf.predict_proba(X)
    clf.coefs_[0][:] = 0.0  # a host copy: the network keeps its weights
    np.testing.assert_array_equal(clf.predict_proba(X), before)


@pytest.mark.parametrize("backend", BACKENDS)
def test_copy_keeps_weights_optimizer_and_random_stream(backend):
    """deepcopy (and so pickle, joblib, clone of fitted estimators) goes through
    __getstate__/__setstate__: weights, Adam's moments and the shuffle generator
    come back on the backend, so training goes on exactly as in the original."""
    import copy

    X, y = make_classification(n_samples=60, n_features=4, random_state=0)
    clf = MLPClassifier(hidden_layer_sizes=(6,), learning_rate_init=0.01, batch_size=16,
                        backend=backend, random_state=0)
    clf.partial_fit(X, y, classes=[0, 1])
    twin = copy.deepcopy(clf)
    assert twin._model.backend.name == backend and twin._model is not clf._model
    for est in (clf, twin):
        est.partial_fit(X, y)
    np.testing.assert_array_equal(twin.predict_proba(X), clf.predict_proba(X))
    assert twin.loss_curve_ == clf.loss_curve_


def test_regressor_multioutput_and_loss_convention():
    X, y = make_regression(n_samples=120, n_features=4, n_targets=2, noise=0.1, random_state=0)
    y = y / y.std(axis=0)
    reg = MLPRegressor(hidden_layer_sizes=(16,), learning_rate_init=0.01, max_iter=150,
                       random_state=0).fit(X, y)
    assert reg.predict(X).shape == (120, 2) and reg.score(X, y) > 0.9
    # loss_curve_ is scikit-learn's: half the mean squared error (+ the L2 term)
    half_mse = 0.5 * np.mean((reg.predict(X) - y) ** 2) + reg._l2() / 120
    assert reg.loss_curve_[-1] == pytest.approx(half_mse, rel=0.2)
    single = MLPRegressor(hidden_layer_sizes=(8,), max_iter=3, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        assert single.fit(X, y[:, 0]).predict(X).shape == (120,)


def test_early_stopping_keeps_the_best_weights():
    X, y = make_classification(n_samples=200, n_features=6, random_state=0)
    clf = MLPClassifier(hidden_layer_sizes=(16,), learning_rate_init=0.05, max_iter=200,
                        early_stopping=True, n_iter_no_change=3, random_state=0).fit(X, y)
    assert clf.n_iter_ < 200 and clf.best_loss_ is None
    assert len(clf.validation_scores_) == clf.n_iter_
    assert clf.best_validation_score_ == max(clf.validation_scores_)
    rs = np.random.RandomState(0)
    rs.randint(2**31 - 1)  # the estimator draws the network's seed first, then splits
    Xtr, Xval, ytr, yval = train_test_split(X, y, random_state=rs, test_size=0.1, stratify=y)
    assert clf.score(Xval, yval) == pytest.approx(clf.best_validation_score_)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_multilabel():
    X, Y = make_classification(n_samples=100, n_features=5, random_state=0)[0], None
    Y = np.stack([X[:, 0] > 0, X[:, 1] + X[:, 2] > 0, X[:, 3] < 0.5], axis=1).astype(int)
    clf = MLPClassifier(hidden_layer_sizes=(16,), learning_rate_init=0.02, max_iter=100,
                        random_state=0).fit(X, Y)
    assert clf.predict(X).shape == (100, 3) and clf.predict_proba(X).shape == (100, 3)
    assert clf.score(X, Y) > 0.8  # subset accuracy: every label of a row right


def test_torch_backend_takes_read_only_arrays_quietly():
    """scikit-learn hands estimators read-only memmaps; torch.asarray warns when it
    shares read-only memory, so the torch backend copies such arrays."""
    pytest.importorskip("torch")
    from mlp import backends

    host = np.arange(6.0).reshape(2, 3)
    host.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x = backends.get("torch").asarray(host, "float64")
    np.testing.assert_array_equal(backends.get("torch").to_numpy(x), host)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_clear_errors():
    X, y = np.zeros((10, 3)), np.arange(10) % 2
    with pytest.raises(ValueError, match="'lbfgs' is not supported"):
        MLPClassifier(solver="lbfgs").fit(X, y)
    with pytest.raises(ValueError, match="hidden_layer_sizes must be positive ints"):
        MLPClassifier(hidden_layer_sizes=(4, 0)).fit(X, y)
    with pytest.raises(ValueError, match="at least 2 classes"):
        MLPClassifier().fit(X, np.zeros(10))
    with pytest.raises(ValueError, match="Unknown label type"):
        MLPClassifier().fit(X, np.linspace(0, 1, 10))
    with pytest.raises(ValueError, match="expecting 3 features"):
        MLPClassifier(max_iter=1).fit(X, y).predict(np.zeros((2, 4)))
    from mlp import backends

    with pytest.raises(backends.BackendUnavailable):
        MLPRegressor(backend="numpy", device="gpu").fit(X, y)
