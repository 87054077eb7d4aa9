"""scikit-learn estimators that train on any backend: ``MLPClassifier`` and ``MLPRegressor``.

    >>> from mlp.sklearn import MLPClassifier
    >>> clf = MLPClassifier(hidden_layer_sizes=(64,), max_iter=50, backend="jax")
    >>> clf.fit(X_train, y_train).score(X_test, y_test)

Parameter names and meanings follow ``sklearn.neural_network.MLPClassifier``
(see docs/sklearn.md for the mapping and the differences). The network is an
:class:`mlp.Sequential` on the chosen backend; each iteration (epoch) is one
call of its ``fit(epochs=1)``. Fitted attributes (``coefs_``, ``intercepts_``,
``loss_curve_`` ...) come back to the host as NumPy.

This module imports scikit-learn; ``import mlp`` does not import this module.
"""
from __future__ import annotations

import numbers
import warnings

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets, type_of_target, unique_labels
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

import backends

from . import losses as _losses
from . import precision as _precision
from .layers import Identity, Linear, ReLU, Sigmoid, Tanh
from .model import Sequential
from .optimizers import SGD, Adam
from .tree import tree_map

__all__ = ["MLPClassifier", "MLPRegressor", "expected_failed_checks"]

_ACTIVATIONS = {"relu": ReLU, "tanh": Tanh, "logistic": Sigmoid, "identity": Identity}


class _L2Linear(Linear):
    """A Linear layer whose backward adds scikit-learn's L2 penalty gradient,
    ``alpha * W / batch_size``, to ``dW`` (biases are not penalised).

    The penalty is ``0.5 * alpha * ||W||^2 / batch_size`` per batch, as in
    scikit-learn; the batch size is read from the input's shape.
    """

    def __init__(self, in_features, out_features, alpha=0.0, init="glorot"):
        super().__init__(in_features, out_features, bias=True, init=init)
        self.alpha = float(alpha)

    def forward(self, xp, params, x, train=False, mask=None):
        y, backward = super().forward(xp, params, x, train=train, mask=mask)
        if not (train and self.alpha):
            return y, backward
        W, scale = params["W"], self.alpha / x.shape[0]

        def backward_l2(dy, need_dx=True):
            dx, grads = backward(dy, need_dx)
            return dx, {**grads, "W": grads["W"] + scale * W}

        return y, backward_l2


class _HalfMSE(_losses.MSE):
    """scikit-learn's squared loss: the value is ``mean((out - y)**2) / 2`` over every
    element (half of :class:`mlp.losses.MSE`), and, as in scikit-learn, the gradient is
    ``(out - y) / n_samples``: that of the per-sample *sum* over the k outputs, so
    k times the value's own gradient when there are k > 1 targets."""

    name = "mse"

    def __call__(self, xp, out, target, weights=None):
        value, grad = super().__call__(xp, out, target, weights)
        k = out.shape[1] if out.ndim == 2 else 1
        return value / 2, grad * (k / 2)


class _SummedBCE(_losses.BinaryCrossEntropy):
    """scikit-learn's logistic loss: summed over the outputs, averaged over the
    samples (:class:`mlp.losses.BinaryCrossEntropy` averages over both)."""

    name = "binary_cross_entropy"

    def __call__(self, xp, out, target, weights=None):
        value, grad = super().__call__(xp, out, target, weights)
        k = out.shape[1] if out.ndim == 2 else 1
        return value * k, grad * k


def _check_params(est):
    """Clear errors for hyper-parameters that cannot work (checked at fit time)."""
    def positive(name, value, kind=numbers.Real, strict=True):
        bad = not isinstance(value, kind) or isinstance(value, bool)
        if bad or (value <= 0 if strict else value < 0):
            rel = "> 0" if strict else ">= 0"
            raise ValueError(f"{name} must be a number {rel}, got {value!r}")

    sizes = est.hidden_layer_sizes
    sizes = (sizes,) if isinstance(sizes, numbers.Integral) else tuple(sizes)
    if any(not isinstance(s, numbers.Integral) or isinstance(s, bool) or s < 1 for s in sizes):
        raise ValueError(f"hidden_layer_sizes must be positive ints, got {est.hidden_layer_sizes!r}")
    if est.activation not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {est.activation!r}")
    if est.solver not in ("adam", "sgd"):
        raise ValueError(f"solver must be 'adam' or 'sgd' ('lbfgs' is not supported), got {est.solver!r}")
    positive("alpha", est.alpha, strict=False)
    positive("learning_rate_init", est.learning_rate_init)
    positive("max_iter", est.max_iter, numbers.Integral)
    positive("tol", est.tol, strict=False)
    positive("n_iter_no_change", est.n_iter_no_change, numbers.Integral)
    if est.batch_size != "auto":
        positive("batch_size", est.batch_size, numbers.Integral)
    if not 0.0 < est.validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in (0, 1), got {est.validation_fraction!r}")
    if not 0.0 <= est.momentum < 1.0:
        raise ValueError(f"momentum must be in [0, 1), got {est.momentum!r}")
    if est.dtype not in (None, "float32", "float64"):
        raise ValueError(f"dtype must be None, 'float32' or 'float64', got {est.dtype!r}")
    _precision.get(est.precision)  # an unknown name is a PrecisionError (a ValueError) here
    return sizes


class _BaseMLP(BaseEstimator):
    """What the classifier and the regressor share: the network, the training
    loop of scikit-learn's stochastic solvers, and the fitted attributes."""

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam", alpha=0.0001,
                 batch_size="auto", learning_rate_init=0.001, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, backend=None,
                 device=None, dtype=None, precision="float32"):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate_init = learning_rate_init
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.backend = backend
        self.device = device
        self.dtype = dtype
        self.precision = precision

    # -- the network -----------------------------------------------------------
    def _dtype_for(self, X):
        """The model's dtype: ``dtype`` if set, else X's (float32 stays float32,
        anything else is float64), float32 on devices without float64 and under a
        mixed precision policy (whose master weights are float32)."""
        mixed = _precision.get(self.precision).name != "float32"
        name = self.dtype or ("float32" if X.dtype == np.float32 or mixed else "float64")
        if name not in self._backend.float_dtypes:
            name = "float32"
        return name

    def _new_model(self, n_in, n_out, seed):
        sizes = [n_in, *self._hidden, n_out]
        act = _ACTIVATIONS[self.activation]
        init = "he" if self.activation == "relu" else "glorot"
        layers = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(_L2Linear(a, b, alpha=self.alpha, init=init))
            if i < len(sizes) - 2:
                layers.append(act())
        return Sequential(*layers, backend=self._backend, seed=seed, dtype=self._dtype, loss=self._loss,
                          precision=self.precision)

    def _new_optimizer(self):
        if self.solver == "adam":
            return Adam(lr=self.learning_rate_init, betas=(self.beta_1, self.beta_2), eps=self.epsilon)
        return SGD(lr=self.learning_rate_init, momentum=self.momentum,
                   nesterov=bool(self.nesterovs_momentum and self.momentum > 0))

    def _sync_attributes(self):
        """Copy the parameters to the host as scikit-learn's ``coefs_`` / ``intercepts_``
        (copies, also on NumPy: editing them never reaches the network, nor the reverse)."""
        model = self._model
        linear = [p for layer, p in zip(model.layers, model.params) if isinstance(layer, Linear)]
        self.coefs_ = [np.array(model.backend.to_numpy(p["W"])) for p in linear]
        self.intercepts_ = [np.array(model.backend.to_numpy(p["b"])) for p in linear]

    def _l2(self):
        return 0.5 * self.alpha * sum(float(np.sum(c.astype(np.float64) ** 2)) for c in self.coefs_)

    # -- training ----------------------------------------------------------------
    def _fit(self, X, Y, incremental):
        """Stochastic training as scikit-learn's ``_fit_stochastic``: one epoch per
        iteration, stopping when the training loss (or the validation score with
        ``early_stopping``) has not improved by ``tol`` for ``n_iter_no_change``
        iterations in a row."""
        self._hidden = _check_params(self)
        if self.early_stopping and incremental:
            raise ValueError("partial_fit does not support early_stopping=True")
        first = not hasattr(self, "_model") or not (incremental or self.warm_start)
        if first:
            rs = check_random_state(self.random_state)
            self._random_state = rs
            self._backend = backends.get(self.backend, device=self.device)
            self._dtype = self._dtype_for(X)
            self.n_outputs_ = Y.shape[1]
            self._model = self._new_model(X.shape[1], Y.shape[1], int(rs.randint(2**31 - 1)))
            self._optimizer = self._new_optimizer()
            self._model.set_optimizer(self._optimizer)
            self._sync_attributes()
            self.t_ = 0
            self.loss_curve_ = []
            self._no_improvement_count = 0
            self.best_loss_ = None if self.early_stopping else np.inf
            self.validation_scores_ = [] if self.early_stopping else None
            self.best_validation_score_ = -np.inf if self.early_stopping else None
        self.n_iter_ = 0  # iterations of this call, as in scikit-learn (1 after partial_fit)
        model = self._model
        if self.early_stopping:
            X, X_val, Y, Y_val = train_test_split(
                X, Y, random_state=self._random_state, test_size=self.validation_fraction,
                stratify=self._stratify_labels(Y))
            if X_val.shape[0] < 2:
                raise ValueError("The validation set is too small. Increase 'validation_fraction' "
                                 "or the size of your dataset.")
            best_params = self._snapshot()
        n = X.shape[0]
        if self.batch_size == "auto":
            bs = min(200, n)
        else:
            if self.batch_size > n:
                warnings.warn(f"Got `batch_size` larger than the sample size ({self.batch_size} > {n}). "
                              "It is going to be clipped")
            bs = int(np.clip(self.batch_size, 1, n))
        Xd = model._as_input(X)  # moved to the device once, reused by every epoch
        Yd = model._as_target(self._targets(Y), model.loss, n)
        n_batches = -(-n // bs)
        for _ in range(1 if incremental else self.max_iter):
            l2 = self._l2() if self.alpha else 0.0  # with the weights the epoch starts from
            history = model.fit(Xd, Yd, epochs=1, batch_size=bs, optimizer=self._optimizer,
                                shuffle=bool(self.shuffle))
            self.n_iter_ += 1
            self.t_ += n
            self._sync_attributes()
            # scikit-learn's loss: the data loss plus 0.5 * alpha * ||W||^2 / batch size for
            # every batch (here with the weights at the start of the epoch: exact for one batch).
            self.loss_ = history["loss"][-1] + l2 * n_batches / n
            self.loss_curve_.append(self.loss_)
            if self.verbose:
                print(f"Iteration {self.n_iter_}, loss = {self.loss_:.8f}")
            if self.early_stopping:
                score = self._score_on(X_val, Y_val)
                self.validation_scores_.append(score)
                if self.verbose:
                    print(f"Validation score: {score:f}")
                worse = score < self.best_validation_score_ + self.tol
                if score > self.best_validation_score_:
                    self.best_validation_score_, best_params = score, self._snapshot()
            else:
                worse = self.loss_ > self.best_loss_ - self.tol
                self.best_loss_ = min(self.best_loss_, self.loss_)
            self._no_improvement_count = self._no_improvement_count + 1 if worse else 0
            if self._no_improvement_count > self.n_iter_no_change:
                what = "Validation score" if self.early_stopping else "Training loss"
                if self.verbose:
                    print(f"{what} did not improve more than tol={self.tol:f} for "
                          f"{self.n_iter_no_change} consecutive epochs. Stopping.")
                break
            if not incremental and self.n_iter_ == self.max_iter:
                warnings.warn(f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) reached "
                              "and the optimization hasn't converged yet.", ConvergenceWarning)
        if self.early_stopping:
            model.params = best_params
            self._sync_attributes()
        return self

    def _snapshot(self):
        """A copy of the network's parameters on its device (for early stopping's best)."""
        xp = self._model.backend.xp
        return tree_map(lambda a: xp.asarray(a, copy=True), self._model.params)

    def _stratify_labels(self, Y):
        return None

    def _targets(self, Y):
        return Y.astype(self._dtype)

    def _raw(self, X):
        """The network's outputs for validated ``X``, as NumPy on the host."""
        return self._model.backend.to_numpy(self._model.forward(X))

    # -- pickling (scikit-learn's checks, joblib and copy.deepcopy need it) -------
    def __getstate__(self):
        state = self.__dict__.copy()
        model = state.pop("_model", None)
        state.pop("_backend", None)
        if model is not None:
            state["_opt_state"] = tree_map(model.backend.to_numpy, model.opt_state)
            state["_rng_state"] = model.rng.bit_generator.state
        return state

    def __setstate__(self, state):
        opt_state, rng_state = state.pop("_opt_state", None), state.pop("_rng_state", None)
        self.__dict__.update(state)
        if "coefs_" in state:
            self._backend = backends.get(self.backend, device=self.device)
            model = self._model = self._new_model(self.n_features_in_, self.n_outputs_, 0)
            model.rng.bit_generator.state = rng_state
            params = iter(zip(self.coefs_, self.intercepts_))
            b = model.backend
            model.params = [
                {k: b.asarray(v, self._dtype) for k, v in zip(("W", "b"), next(params))}
                if isinstance(layer, Linear) else {} for layer in model.layers
            ]
            model.optimizer = self._optimizer
            model.opt_state = tree_map(lambda a: b.asarray(a, a.dtype.name), opt_state)


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """Multi-layer perceptron classifier with scikit-learn's interface, trained
    on any ``mlp`` backend (``backend="jax"``, ``backend="torch", device="cuda"``, ...).

    Multiclass targets train a softmax output with cross-entropy; two classes
    and multilabel indicator targets train logistic outputs, as scikit-learn
    does. ``coefs_[i]`` is ``[n_in x n_out]``, ``intercepts_[i]`` is ``[n_out]``.
    """

    def _set_classes(self, labels):
        """Fit the label binarizer on ``labels``; choose the output and the loss."""
        self._label_binarizer = LabelBinarizer().fit(labels)
        self.classes_ = self._label_binarizer.classes_
        if self._label_binarizer.y_type_ == "multilabel-indicator":
            self._kind = "multilabel-indicator"
        elif len(self.classes_) < 2:
            raise ValueError(f"{type(self).__name__} needs at least 2 classes in y, got 1 class: "
                             f"{self.classes_.tolist()}")
        else:
            self._kind = "binary" if len(self.classes_) == 2 else "multiclass"
        self._binary = self._kind == "binary"
        self._loss = _losses.CrossEntropy() if self._kind == "multiclass" else _SummedBCE()

    def _stratify_labels(self, Y):
        return Y.argmax(axis=1) if self._kind == "multiclass" else (Y[:, 0] if self._binary else None)

    def _validate_y(self, X, y, reset):
        X, y = validate_data(self, X, y, multi_output=True, dtype=(np.float64, np.float32), reset=reset)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        return X, y

    def fit(self, X, y):
        """Train on ``X`` [n_samples x n_features] and labels ``y`` (any labels,
        or a multilabel indicator matrix); returns ``self``."""
        X, y = self._validate_y(X, y, reset=True)
        self._set_classes(y)
        return self._fit(X, self._label_binarizer.transform(y), incremental=False)

    def partial_fit(self, X, y, classes=None):
        """One iteration over ``(X, y)``; ``classes`` (every label there will be)
        is required on the first call, as in scikit-learn."""
        first = not hasattr(self, "_model")
        if first and classes is None:
            raise ValueError("classes must be passed on the first call to partial_fit.")
        X, y = self._validate_y(X, y, reset=first)
        multilabel = type_of_target(y) == "multilabel-indicator"
        if first:
            self._set_classes(y if multilabel else classes)
        elif classes is not None and not np.array_equal(np.unique(classes), self.classes_):
            raise ValueError(f"`classes={list(classes)}` is not the same as on the first call "
                             f"to partial_fit: {self.classes_.tolist()}")
        if not multilabel:
            unknown = np.setdiff1d(unique_labels(y), self.classes_)
            if unknown.size:
                raise ValueError(f"`y` has classes not in `self.classes_`: {unknown.tolist()}; "
                                 f"expected a subset of {self.classes_.tolist()}")
        return self._fit(X, self._label_binarizer.transform(y), incremental=True)

    def predict_proba(self, X):
        """Class probabilities ``[n_samples x n_classes]`` (columns in ``classes_`` order)."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=(np.float64, np.float32), reset=False)
        proba = self._model.backend.to_numpy(self._model.predict_proba(X))
        if self._binary:
            return np.hstack([1.0 - proba, proba])
        return proba

    def predict_log_proba(self, X):
        """Natural log of :meth:`predict_proba`."""
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def predict(self, X):
        """Predicted labels (an indicator matrix for multilabel targets)."""
        proba = self.predict_proba(X)
        if self._kind == "multilabel-indicator":
            return (proba > 0.5).astype(int)
        return self.classes_[np.argmax(proba, axis=1)]

    def _score_on(self, X, Y):
        return accuracy_score(self._label_binarizer.inverse_transform(Y), self.predict(X))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


class MLPRegressor(RegressorMixin, _BaseMLP):
    """Multi-layer perceptron regressor with scikit-learn's interface, trained on
    any ``mlp`` backend. Identity output, squared loss ``mean((y - out)**2) / 2``
    (scikit-learn's convention: ``loss_curve_`` matches its values);
    multi-output targets ``[n_samples x n_targets]`` are supported."""

    def _validate_y(self, X, y, reset):
        X, y = validate_data(self, X, y, multi_output=True, y_numeric=True,
                             dtype=(np.float64, np.float32), reset=reset)
        if reset:
            self._y_1d = y.ndim == 1
        return X, (y.reshape(-1, 1) if y.ndim == 1 else y)

    def fit(self, X, y):
        """Train on ``X`` [n_samples x n_features] and targets ``y`` [n_samples]
        or [n_samples x n_targets]; returns ``self``."""
        X, Y = self._validate_y(X, y, reset=True)
        self._loss = _HalfMSE()
        return self._fit(X, Y, incremental=False)

    def partial_fit(self, X, y):
        """One iteration over ``(X, y)``, continuing from the current weights."""
        first = not hasattr(self, "_model")
        X, Y = self._validate_y(X, y, reset=first)
        if not first and Y.shape[1] != self.n_outputs_:
            raise ValueError(f"y has {Y.shape[1]} targets, but {type(self).__name__} was fitted "
                             f"with {self.n_outputs_}")
        self._loss = _HalfMSE()
        return self._fit(X, Y, incremental=True)

    def predict(self, X):
        """Predictions ``[n_samples]`` (or ``[n_samples x n_targets]``)."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=(np.float64, np.float32), reset=False)
        out = self._raw(X)
        return out.ravel() if self._y_1d else out

    def _score_on(self, X, Y):
        return r2_score(Y.ravel() if self._y_1d else Y, self.predict(X))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags


# Checks of scikit-learn's suite that these estimators are expected to fail, with the
# reason (docs/sklearn.md lists the same). Pass it to parametrize_with_checks /
# check_estimator as ``expected_failed_checks``.
EXPECTED_FAILED_CHECKS = {
    "MLPClassifier": {},
    "MLPRegressor": {},
}


def expected_failed_checks(estimator):
    """``{check name: reason}`` for ``parametrize_with_checks(..., expected_failed_checks=...)``."""
    return dict(EXPECTED_FAILED_CHECKS.get(type(estimator).__name__, {}))
