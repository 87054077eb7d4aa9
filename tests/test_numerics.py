"""Regression tests for two numerical defects an independent check found (issue #16).

1. Cross-entropy with target rows that do not sum to 1 (multi-hot, all-zero,
   smoothed rows summing to 0.9): the gradient must be the gradient of the value
   mlp computes, ``(softmax * sum(t) - t) / B``, not ``(softmax - t) / B``.
2. Adam's bias corrections ``1 - beta**t`` in float32: computed as ``1 - beta**t``
   in the parameters' dtype they were off by about 1e-5 relative at every step;
   they must be as accurate as PyTorch's (double precision on the host).
"""
from __future__ import annotations

from decimal import Decimal, getcontext

import numpy as np
import pytest

import mlp
from mlp import losses

ROWS = np.array([
    [1.0, 1.0, 0.0, 0.0],    # multi-hot
    [0.0, 0.0, 0.0, 0.0],    # all zero
    [0.025, 0.9 - 0.075, 0.025, 0.025],  # smoothed, summing to 0.9
    [0.0, 2.0, 0.0, 0.5],    # any non-negative row
    [0.25, 0.25, 0.25, 0.25],
])


def _fd_grad(cell, out, target, weights=None):
    """Central finite differences of the loss value computed on the cell itself (float64 cells)."""
    xp, loss = cell.backend.xp, losses.get("cross_entropy")
    extra = () if weights is None else (cell.backend.asarray(weights, "int32"),)
    t = cell.asarray(target)

    def value(o):
        return float(cell.to_numpy(loss(xp, cell.asarray(o), t, *extra)[0]))

    h, grad = 1e-6, np.zeros_like(out)
    for idx in np.ndindex(out.shape):
        up, down = out.copy(), out.copy()
        up[idx] += h
        down[idx] -= h
        grad[idx] = (value(up) - value(down)) / (2 * h)
    return grad


@pytest.mark.parametrize("weighted", [False, True])
def test_cross_entropy_gradient_of_rows_not_summing_to_one(cell, weighted):
    rng = np.random.default_rng(3)
    out = rng.standard_normal(ROWS.shape) * 2
    weights = np.array([1, 0, 2, 1, 3]) if weighted else None
    xp, loss = cell.backend.xp, losses.get("cross_entropy")
    extra = () if weights is None else (cell.backend.asarray(weights, "int32"),)
    value, grad = loss(xp, cell.asarray(out), cell.asarray(ROWS), *extra)
    # the float64 reference: the analytic gradient of -sum(t * log_softmax(z)) (mean or weighted mean)
    z = cell.host(out)
    log_p = z - z.max(axis=1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(axis=1, keepdims=True))
    w = np.ones(len(z)) if weights is None else weights.astype(float)
    w = w / w.sum()
    want_value = -np.sum(w * np.sum(ROWS * log_p, axis=1))
    want_grad = (np.exp(log_p) * ROWS.sum(axis=1, keepdims=True) - ROWS) * w[:, None]
    cell.assert_close(value, want_value, "forward", "cross_entropy value")
    cell.assert_close(grad, want_grad, "grad", "cross_entropy gradient of unnormalized rows")
    if cell.dtype == "float64":  # mlp's own value, differentiated numerically, agrees
        cell.assert_close(grad, _fd_grad(cell, out, ROWS, weights), "fd", "finite differences")


def test_cross_entropy_rows_train_through_fit(cell):
    """``fit`` with multi-hot rows uses the same, true gradient: one SGD step moves the
    output bias exactly by -lr times the analytic gradient."""
    model = mlp.Sequential(mlp.Linear(3, 4), backend=cell.spec, dtype=cell.dtype, seed=0)
    x = np.eye(3)[[0, 1, 2, 0, 1]]
    w0, b0 = (cell.to_numpy(model.params[0][k]) for k in ("W", "b"))
    model.fit(x, ROWS, epochs=1, batch_size=5, optimizer=mlp.SGD(lr=0.5), shuffle=False)
    out0 = x @ w0 + b0
    p = np.exp(out0 - out0.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    grad_b = ((p * ROWS.sum(axis=1, keepdims=True) - ROWS) / len(x)).sum(axis=0)
    cell.assert_close(model.params[0]["b"], b0 - 0.5 * grad_b, "train", "bias after one SGD step")


def test_adam_bias_corrections_as_accurate_as_double(cell):
    """Device step counts in the cell's dtype give corrections within a few ulp
    (the reference: 50-digit decimal arithmetic on the betas' exact binary values)."""
    getcontext().prec = 50
    xp, opt = cell.backend.xp, mlp.Adam(betas=(0.9, 0.999))
    steps = np.array([1, 2, 3, 10, 100, 1000, 10_000, 100_000], dtype=cell.dtype)
    bc1, bc2 = opt.corrections(xp, cell.asarray(steps))
    want1, want2 = (np.array([float(1 - Decimal(b) ** int(t)) for t in steps]) for b in (0.9, 0.999))
    eps = np.finfo(cell.dtype).eps
    for got, want, name in ((bc1, want1, "1 - beta1**t"), (bc2, want2, "1 - beta2**t")):
        err = np.max(np.abs(cell.to_numpy(got) - want) / want)
        assert err < 8 * eps, f"{cell.id}: {name} off by {err:.1e} relative (dtype eps {eps:.1e})"
    # the host path (a Python int step) is PyTorch's own arithmetic, in double precision
    assert opt.corrections(xp, 7) == (1.0 - 0.9**7, 1.0 - 0.999**7)


def test_float32_adam_updates_follow_float64(cell):
    """200 Adam steps on a fixed sequence of gradients: the float32 trajectory stays
    within a few float32 ulp per step of the float64 one (a 1e-5 relative error in
    the corrections made every update about 6e-6 too large)."""
    if cell.dtype != "float32":
        pytest.skip("compares float32 with float64")
    rng = np.random.default_rng(0)
    p0 = {"w": rng.standard_normal(64)}
    grads = [{"w": 1.0 + 0.1 * rng.standard_normal(64)} for _ in range(200)]  # one sign: errors add up
    opt = mlp.Adam(lr=0.01)

    def run(asarray):
        params = {"w": asarray(p0["w"])}
        state = opt.init(params)
        for g in grads:
            params, state = opt.update(params, {"w": asarray(g["w"])}, state)
        return params["w"]

    ref = run(lambda a: np.asarray(a, dtype="float64"))
    got = cell.to_numpy(run(cell.asarray))
    moved = np.abs(ref - cell.host(p0["w"]))  # about 200 * lr = 2
    err = np.max(np.abs(got - ref) / moved)
    assert err < 2e-6, f"{cell.id}: float32 Adam drifts {err:.1e} relative to the float64 path"
