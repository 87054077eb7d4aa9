"""Every layer, activation and loss, forward and backward, on every cell.

Odd shapes on purpose: batch 1, width 1, non-square, and logits large enough
to overflow a naive softmax or sigmoid. Each cell's result is compared with a
float64 reference computed from the same host data rounded to the cell's dtype:
plain NumPy for forward passes, ``torch.autograd`` (PyTorch's own functional
layers) for gradients, and central finite differences of the cell's own
forward pass. ``jax.grad`` joins in test_matrix_grads.py, on whole models.
"""
from __future__ import annotations

import functools

import numpy as np
import pytest

import mlp
import oracles

LAYERS = {
    "linear": (mlp.Linear(5, 3), 5),
    "linear-nobias-he": (mlp.Linear(4, 6, bias=False, init="he"), 4),
    "linear-1x1": (mlp.Linear(1, 1), 1),
    "linear-7to1": (mlp.Linear(7, 1), 7),
    "linear-1to4": (mlp.Linear(1, 4), 1),
    "relu": (mlp.ReLU(), None),
    "leaky_relu": (mlp.LeakyReLU(0.2), None),
    "sigmoid": (mlp.Sigmoid(), None),
    "tanh": (mlp.Tanh(), None),
    "gelu": (mlp.GELU(), None),
    "softmax": (mlp.Softmax(), None),
    "identity": (mlp.Identity(), None),
    "dropout": (mlp.Dropout(0.4), None),
}
BATCHES = (1, 7)
ACTIVATION_WIDTHS = (1, 6)
LARGE = 1e3  # inputs up to ~3000: exp() overflows float32 beyond 88, float64 beyond 709


def _away_from_zero(rng, shape):
    """Normal-ish values with |x| >= 0.1, so no finite difference straddles a kink."""
    return np.sign(rng.standard_normal(shape)) * (0.1 + 1.5 * np.abs(rng.standard_normal(shape)))


@functools.lru_cache(None)
def layer_case(name, batch, width, large, dtype):
    """Host data for one layer case (rounded to ``dtype``) and its float64 references."""
    layer, fixed = LAYERS[name]
    width = fixed or width
    rng = np.random.default_rng([len(name), batch, width, int(large)])
    x = _away_from_zero(rng, (batch, width)) * (LARGE if large else 1.0)
    params = {k: v + 0.1 * rng.standard_normal(v.shape) for k, v in layer.init(rng).items()}
    mask = layer.make_mask(rng, (batch, width), "float64") if isinstance(layer, mlp.Dropout) else None
    round_ = lambda a: np.asarray(a, dtype=dtype).astype("float64")  # noqa: E731
    x, params = round_(x), {k: round_(v) for k, v in params.items()}
    y = oracles.numpy_layer(layer, params, x, mask)
    dy = rng.standard_normal(y.shape)
    dy = round_(dy)
    ty, tdx, tgrads = oracles.torch_vjp(layer, params, x, dy, mask)
    return dict(layer=layer, x=x, params=params, mask=mask, y=y, dy=dy, torch_y=ty, torch=(tdx, tgrads))


def _shapes(name):
    fixed = LAYERS[name][1]
    large = [] if fixed else [(4, 5, True)]
    return [(b, w, False) for b in BATCHES for w in ((fixed,) if fixed else ACTIVATION_WIDTHS)] + large


def _run(cell, case, x=None, params=None):
    xp = cell.backend.xp
    layer = case["layer"]
    mask = None if case["mask"] is None else cell.asarray(case["mask"])
    p = {k: cell.asarray(v) for k, v in (params if params is not None else case["params"]).items()}
    return layer.forward(xp, p, cell.asarray(case["x"] if x is None else x),
                         train=mask is not None, mask=mask)


@pytest.mark.parametrize("name", LAYERS)
def test_layer_forward(cell, name):
    for batch, width, large in _shapes(name):
        case = layer_case(name, batch, width, large, cell.dtype)
        what = f"{name} forward on {case['x'].shape}{' large' if large else ''}"
        np.testing.assert_allclose(case["torch_y"], case["y"], rtol=1e-12, atol=1e-12, err_msg="oracles disagree")
        y, _ = _run(cell, case)
        assert y.dtype == cell.backend.dtype(cell.dtype), what
        assert np.isfinite(cell.to_numpy(y)).all(), what
        cell.assert_close(y, case["y"], "forward", what)


@pytest.mark.parametrize("name", LAYERS)
def test_layer_backward(cell, name):
    for batch, width, large in _shapes(name):
        case = layer_case(name, batch, width, large, cell.dtype)
        what = f"{name} backward on {case['x'].shape}{' large' if large else ''}"
        _, backward = _run(cell, case)
        dx, grads = backward(cell.asarray(case["dy"]))
        assert sorted(grads) == sorted(case["params"]), what
        want_dx, want_grads = case["torch"]
        cell.assert_close(dx, want_dx, "grad", f"{what}: dx vs torch.autograd")
        for k in grads:
            cell.assert_close(grads[k], want_grads[k], "grad", f"{what}: d{k} vs torch.autograd")
        if isinstance(case["layer"], mlp.Linear):  # the first layer skips its input gradient
            _, backward = _run(cell, case)
            dx_skipped, grads_again = backward(cell.asarray(case["dy"]), need_dx=False)
            assert dx_skipped is None, what
            cell.assert_close(grads_again["W"], case["torch"][1]["W"], "grad", f"{what}: dW, need_dx=False")
        if not large:
            _check_finite_differences(cell, case, dx, grads, what)


def _check_finite_differences(cell, case, dx, grads, what):
    """<grad, v> against (f(p + h v) - f(p - h v)) / 2h along random directions v,
    where f = sum(layer(x) * dy) runs on the cell itself, in its dtype."""
    h = 1e-5 if cell.dtype == "float64" else 1e-2
    rng = np.random.default_rng(0)
    dy = case["dy"]

    def f(x, params):
        y, _ = _run(cell, case, x, params)
        return float(np.sum(cell.to_numpy(y) * dy))

    for name, base, g in [("x", case["x"], dx)] + [(k, case["params"][k], grads[k]) for k in grads]:
        v = rng.standard_normal(base.shape)
        moved = lambda s: (base + s * h * v, case["params"]) if name == "x" else (  # noqa: E731
            case["x"], {**case["params"], name: base + s * h * v})
        fd = (f(*moved(+1)) - f(*moved(-1))) / (2 * h)
        exact = float(np.sum(cell.to_numpy(g) * v))
        cell.assert_close(np.asarray(exact), np.asarray(fd), "fd", f"{what}: d{name} vs finite differences")


# -- losses ----------------------------------------------------------------------
LOSS_CASES = {
    # name: (loss, [(batch, outputs, target kind, logit scale)])
    "cross_entropy-ids": ("cross_entropy", [(1, 3, "ids", 1), (6, 4, "ids", 1), (2, 1, "ids", 1), (5, 4, "ids", 1e4)]),
    "cross_entropy-rows": ("cross_entropy", [(1, 3, "rows", 1), (6, 4, "rows", 1), (5, 4, "onehot", 1e4)]),
    "mse": ("mse", [(1, 1, "real", 1), (6, 1, "real-1d", 1), (4, 3, "real", 1)]),
    "binary_cross_entropy": ("binary_cross_entropy", [(1, 1, "binary", 1), (6, 1, "binary-1d", 1),
                                                       (3, 4, "soft", 1), (5, 2, "binary", 1e3)]),
}


@functools.lru_cache(None)
def loss_case(name, i, dtype):
    loss, shapes = LOSS_CASES[name]
    batch, k, kind, scale = shapes[i]
    rng = np.random.default_rng([len(name), i])
    z = np.asarray(rng.standard_normal((batch, k)) * 2 * scale, dtype=dtype).astype("float64")
    if kind == "ids":
        t = rng.integers(0, k, batch)
    elif kind == "rows":
        t = rng.random((batch, k))
        t /= t.sum(axis=1, keepdims=True)
    elif kind == "onehot":
        t = np.eye(k)[rng.integers(0, k, batch)]
    elif kind.startswith("binary"):
        t = rng.integers(0, 2, (batch, k)).astype("float64")
    else:  # real or soft
        t = rng.random((batch, k)) if kind == "soft" else rng.standard_normal((batch, k))
    if kind.endswith("-1d"):
        t = t[:, 0]
    if t.dtype.kind == "f":
        t = np.asarray(t, dtype=dtype).astype("float64")
    value = oracles.numpy_loss(loss, z, t)
    torch_value, torch_dz = oracles.torch_loss_grad(loss, z, t)
    return dict(loss=loss, z=z, t=t, value=value, torch=(torch_value, torch_dz),
                what=f"{name} on {oracles_shape(z)} ({kind}, logits ~{scale:g})")


def oracles_shape(a):
    return "[" + " x ".join(map(str, a.shape)) + "]"


@pytest.mark.parametrize("name", LOSS_CASES)
def test_loss_forward_and_gradient(cell, name):
    for i in range(len(LOSS_CASES[name][1])):
        case = loss_case(name, i, cell.dtype)
        what = case["what"]
        np.testing.assert_allclose(case["torch"][0], case["value"], rtol=1e-12, err_msg="oracles disagree")
        t = case["t"]
        target = cell.backend.asarray(t.astype("int32"), "int32") if t.dtype.kind == "i" else cell.asarray(t)
        value, dz = mlp.losses.get(case["loss"])(cell.backend.xp, cell.asarray(case["z"]), target)
        assert value.shape == () and dz.shape == case["z"].shape, what
        assert dz.dtype == cell.backend.dtype(cell.dtype), what
        cell.assert_close(value, case["value"], "forward", f"{what}: value")
        cell.assert_close(dz, case["torch"][1], "grad", f"{what}: d loss / d out vs torch.autograd")
