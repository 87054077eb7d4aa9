"""Losses on the model's raw outputs, each with its gradient. Mean reduction.

A loss is called as ``loss(xp, out, target) -> (value, d_out)``: the scalar
loss and its gradient with respect to ``out``, ready for the backward pass.

``loss(xp, out, target, weights)`` weighs the rows instead: ``weights`` is
``[B]``, non-negative, and the loss is the weighted mean of the rows' losses
(``sum(w_i * loss_i) / sum(w)``). Rows of weight 0 count for nothing: ``fit``
on JAX pads an epoch's last, partial batch to the full batch size with such
rows, so that every step of the epoch runs in one compiled program.
"""
from __future__ import annotations

import math

import array_api_compat
import numpy as np

from .errors import DataError, fmt_shape, ShapeError
from .layers import sigmoid


class Loss:
    name = "loss"
    #: what turns outputs into probabilities: "softmax", "sigmoid" or None
    output = None
    #: whether targets are class ids (accuracy makes sense)
    classification = False

    def __call__(self, xp, out, target, weights=None):
        raise NotImplementedError

    def correct(self, xp, out, target, weights=None):
        """Number of correct predictions in the batch (rows of weight 0 not
        counted), or None for regression."""
        return None

    def terms(self, xp, out, target, weights=None):
        """``(value, d_out, correct)``: what one training step needs, in one call.

        The default calls the loss and :meth:`correct`; a loss may override it to
        share work between the three (each array operation is a kernel launch on a
        GPU). ``weights`` is passed on only when given, so a user's loss written as
        ``loss(xp, out, target)`` works too."""
        weighed = () if weights is None else (weights,)
        value, grad = self(xp, out, target, *weighed)
        return value, grad, self.correct(xp, out, target, *weighed)

    def __repr__(self):
        return self.name


def _one_hot(xp, labels, k, dtype):
    classes = xp.arange(k, device=array_api_compat.device(labels))
    return xp.astype(xp.reshape(labels, (-1, 1)) == classes, dtype)


def _as_index(xp, ids):
    """Class ids in the namespace's indexing dtype (``fit`` already stores them so:
    then no operation runs); PyTorch's ``take_along_dim`` takes int64 only."""
    info = xp.__array_namespace_info__()
    want = info.default_dtypes(device=array_api_compat.device(ids))["indexing"]
    return ids if ids.dtype == want else xp.astype(ids, want)


def _normalized(xp, weights, dtype):
    """Row weights ``[B]`` scaled to sum to 1."""
    w = xp.astype(weights, dtype)
    return w / xp.sum(w)


class CrossEntropy(Loss):
    """Softmax cross-entropy on logits ``[B x K]``: the mean over rows of
    ``-sum_k t_k log softmax(z)_k``.

    Targets are integer class ids ``[B]`` or rows of numbers ``[B x K]``: one-hot,
    soft (label smoothing), or any non-negative rows, also rows that do not sum to
    1 (multi-hot ``[1, 1, 0]``, an all-zero row). The gradient is the true one for
    every such row: ``(softmax(z) * sum_k t_k - t) / B``, which is the familiar
    ``(softmax(z) - t) / B`` when the row sums to 1.
    ``log softmax(z) = z - max(z) - log(sum(exp(z - max(z))))`` stays finite for
    any logits.
    """

    name = "cross_entropy"
    output = "softmax"
    classification = True

    def __call__(self, xp, out, target, weights=None):
        value, grad, _ = self._terms(xp, out, target, weights, want_correct=False)
        return value, grad

    def terms(self, xp, out, target, weights=None):
        return self._terms(xp, out, target, weights, want_correct=True)

    def _terms(self, xp, out, target, weights, want_correct):
        if out.ndim != 2:
            raise ShapeError(f"cross_entropy expects logits [B x K], got {fmt_shape(out.shape)}")
        b, k = out.shape
        z = out - xp.max(out, axis=-1, keepdims=True)
        e = xp.exp(z)
        s = xp.sum(e, axis=-1, keepdims=True)
        if target.ndim == 1:  # class ids: each one-hot row sums to 1
            ids = xp.reshape(_as_index(xp, target), (-1, 1))
            rows = xp.log(s) - xp.take_along_axis(z, ids, axis=-1)  # [B x 1]: each row's loss
            d = e / s - _one_hot(xp, target, k, out.dtype)
            labels = target
        else:
            t_sum = xp.sum(target, axis=-1, keepdims=True)
            rows = t_sum * xp.log(s) - xp.sum(target * z, axis=-1, keepdims=True)
            d = e / s * t_sum - target
            labels = xp.argmax(target, axis=-1) if want_correct else None
        if weights is None:
            value, grad = xp.mean(rows), d / b
        else:
            w = _normalized(xp, weights, out.dtype)[:, None]
            value, grad = xp.sum(rows * w), d * w
        correct = self._hits(xp, out, labels, weights) if want_correct else None
        return value, grad, correct

    def correct(self, xp, out, target, weights=None):
        if target.ndim == 2:
            target = xp.argmax(target, axis=-1)
        return self._hits(xp, out, target, weights)

    @staticmethod
    def _hits(xp, out, labels, weights):
        hit = xp.argmax(out, axis=-1) == labels
        if weights is None:
            return xp.count_nonzero(hit)
        return xp.sum(xp.astype(hit, out.dtype) * xp.astype(weights, out.dtype))


class MSE(Loss):
    """Mean squared error over every element: ``mean((out - target)**2)``."""

    name = "mse"

    def __call__(self, xp, out, target, weights=None):
        if target.ndim == 1 and out.ndim == 2 and out.shape[1] == 1:
            target = xp.reshape(target, (-1, 1))
        diff = out - target
        if weights is not None:  # each row: the mean over its elements
            w = _normalized(xp, weights, out.dtype)[:, None] / math.prod(diff.shape[1:])
            return xp.sum(diff * diff * w), 2.0 * diff * w
        n = math.prod(diff.shape)
        return xp.sum(diff * diff) / n, (2.0 / n) * diff


class BinaryCrossEntropy(Loss):
    """Binary cross-entropy on logits, element-wise, averaged:
    ``max(z, 0) - z y + log(1 + exp(-|z|))``; gradient ``(sigmoid(z) - y) / N``."""

    name = "binary_cross_entropy"
    output = "sigmoid"
    classification = True

    def __call__(self, xp, out, target, weights=None):
        if target.ndim == 1 and out.ndim == 2 and out.shape[1] == 1:
            target = xp.reshape(target, (-1, 1))
        target = xp.astype(target, out.dtype)
        elements = xp.clip(out, min=0.0) - out * target + xp.log1p(xp.exp(-xp.abs(out)))
        if weights is not None:  # each row: the mean over its elements
            w = _normalized(xp, weights, out.dtype)[:, None] / math.prod(out.shape[1:])
            return xp.sum(elements * w), (sigmoid(xp, out) - target) * w
        n = math.prod(out.shape)
        return xp.sum(elements) / n, (sigmoid(xp, out) - target) / n

    def correct(self, xp, out, target, weights=None):
        if target.ndim == 1 and out.ndim == 2:
            target = xp.reshape(target, (-1, 1))
        hit = xp.astype((out > 0) == (target > 0.5), out.dtype)
        if weights is not None:
            hit = hit * xp.astype(weights, out.dtype)[:, None]
        return xp.sum(hit) / out.shape[1]


LOSSES = {
    "cross_entropy": CrossEntropy,
    "ce": CrossEntropy,
    "mse": MSE,
    "squared_error": MSE,
    "binary_cross_entropy": BinaryCrossEntropy,
    "bce": BinaryCrossEntropy,
}


def get(loss):
    """A loss object from a name ('cross_entropy', 'mse', 'binary_cross_entropy') or itself."""
    if isinstance(loss, Loss):
        return loss
    try:
        return LOSSES[loss]()
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown loss {loss!r}; expected one of {', '.join(sorted(LOSSES))}"
        ) from None


def _real(y):
    return y.dtype == bool or np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)


def check_targets(loss, y, n_outputs):
    """Validate host targets for ``loss`` before training; return them as NumPy."""
    y = np.asarray(y)
    if isinstance(loss, CrossEntropy):
        if y.ndim == 1:
            if not np.issubdtype(y.dtype, np.integer):
                if np.issubdtype(y.dtype, np.floating) and y.size and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
                    raise DataError(
                        f"cross_entropy expects integer class ids, got {y.dtype} labels; "
                        "convert them with y.astype(int)"
                    )
                if np.issubdtype(y.dtype, np.floating):
                    bad = int(np.flatnonzero(~np.isfinite(y) | (y != np.round(y)))[0])
                    raise DataError(f"cross_entropy expects integer class ids [B], got {y.dtype} labels; "
                                    f"row {bad} holds {y[bad]}, which is not a class id")
                raise DataError(f"cross_entropy expects integer class ids [B], got dtype {y.dtype}")
            if y.size and (y.min() < 0 or y.max() >= n_outputs):
                bad = int(np.flatnonzero((y < 0) | (y >= n_outputs))[0])
                raise DataError(
                    f"class id {int(y[bad])} at row {bad} is out of range: the model has "
                    f"{n_outputs} outputs, so ids must be in 0..{n_outputs - 1}"
                )
        elif y.ndim == 2:
            if not _real(y):
                raise DataError(f"cross_entropy targets [B x K] must be numbers, got dtype {y.dtype}")
            if y.shape[1] != n_outputs:
                raise ShapeError(
                    f"one-hot targets must be [B x {n_outputs}], got {fmt_shape(y.shape)}"
                )
        else:
            raise ShapeError(f"cross_entropy targets must be [B] ids or [B x K] rows, got {fmt_shape(y.shape)}")
    else:
        if y.ndim == 1 and n_outputs == 1:
            y = y.reshape(-1, 1)
        if y.ndim != 2 or y.shape[1] != n_outputs:
            raise ShapeError(f"{loss.name} targets must be [B x {n_outputs}], got {fmt_shape(y.shape)}")
        if not _real(y):
            raise DataError(f"{loss.name} targets must be real numbers, got dtype {y.dtype}")
    return y
