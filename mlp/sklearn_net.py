"""The network pieces the scikit-learn estimators (:mod:`mlp.sklearn`) train: a
Linear layer with scikit-learn's L2 penalty, scikit-learn's loss scalings, the
activations by scikit-learn's names, and the hyper-parameter checks.

Imports no scikit-learn (so it is cheap to test on its own).
"""
from __future__ import annotations

import numbers

from . import precision as _precision
from . import losses as _losses
from .layers import Identity, Linear, ReLU, Sigmoid, Tanh

ACTIVATIONS = {"relu": ReLU, "tanh": Tanh, "logistic": Sigmoid, "identity": Identity}


class L2Linear(Linear):
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


class HalfMSE(_losses.MSE):
    """scikit-learn's squared loss: the value is ``mean((out - y)**2) / 2`` over every
    element (half of :class:`mlp.losses.MSE`), and, as in scikit-learn, the gradient is
    ``(out - y) / n_samples``: that of the per-sample *sum* over the k outputs, so
    k times the value's own gradient when there are k > 1 targets."""

    name = "mse"

    def __call__(self, xp, out, target, weights=None):
        value, grad = super().__call__(xp, out, target, weights)
        k = out.shape[1] if out.ndim == 2 else 1
        return value / 2, grad * (k / 2)


class SummedBCE(_losses.BinaryCrossEntropy):
    """scikit-learn's logistic loss: summed over the outputs, averaged over the
    samples (:class:`mlp.losses.BinaryCrossEntropy` averages over both)."""

    name = "binary_cross_entropy"

    def __call__(self, xp, out, target, weights=None):
        value, grad = super().__call__(xp, out, target, weights)
        k = out.shape[1] if out.ndim == 2 else 1
        return value * k, grad * k


def check_params(est):
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
    if est.activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {est.activation!r}")
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
    _precision.get(est.precision)  # an unknown name is a PrecisionError (a ValueError) here
    if est.dtype not in (None, "float32", "float64"):
        raise ValueError(f"dtype must be None, 'float32' or 'float64', got {est.dtype!r}")
    return sizes
