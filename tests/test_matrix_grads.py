"""``Sequential.loss_and_grads`` against ``jax.grad`` and ``torch.autograd``.

For every layer type and every loss, on every cell: the mlp model's loss and
explicit-chain-rule gradients against two autodiff oracles run in float64 on
the same host data (the cell's initial parameters and inputs, as the cell holds
them). In float64 cells they agree within 1e-10 (see TOLERANCES).
"""
from __future__ import annotations

import copy
import functools

import numpy as np
import pytest

import mlp
import oracles

L = mlp.Linear
MODELS = {
    # name: (layers, loss, target kind, train)
    "relu": (lambda: [L(6, 5, init="he"), mlp.ReLU(), L(5, 3)], "cross_entropy", "ids", False),
    "leaky_relu": (lambda: [L(6, 5), mlp.LeakyReLU(0.1), L(5, 3)], "cross_entropy", "ids", False),
    "sigmoid": (lambda: [L(6, 5), mlp.Sigmoid(), L(5, 3)], "cross_entropy", "ids", False),
    "tanh": (lambda: [L(6, 5), mlp.Tanh(), L(5, 3)], "cross_entropy", "ids", False),
    "gelu": (lambda: [L(6, 5), mlp.GELU(), L(5, 3)], "cross_entropy", "ids", False),
    "softmax": (lambda: [L(6, 5), mlp.Softmax(), L(5, 3)], "cross_entropy", "ids", False),
    "identity-nobias": (lambda: [L(6, 5, bias=False), mlp.Identity(), L(5, 3, bias=False)], "cross_entropy", "ids", False),
    "dropout": (lambda: [L(6, 5), mlp.Tanh(), mlp.Dropout(0.3), L(5, 3)], "cross_entropy", "ids", True),
    "cross_entropy-rows": (lambda: [L(6, 5), mlp.Tanh(), L(5, 3)], "cross_entropy", "rows", False),
    "mse": (lambda: [L(6, 5), mlp.Tanh(), L(5, 3)], "mse", "real", False),
    "binary_cross_entropy": (lambda: [L(6, 5), mlp.GELU(), L(5, 4), mlp.Sigmoid(), L(4, 1)],
                             "binary_cross_entropy", "binary-1d", False),
    "deep-mixed": (lambda: [L(6, 4), mlp.ReLU(), L(4, 4), mlp.LeakyReLU(0.3), L(4, 3), mlp.Tanh(), L(3, 2)],
                   "cross_entropy", "ids", False),
}
BATCH = 7


def _data(name, k, dtype):
    rng = np.random.default_rng(len(name))
    x = np.asarray(rng.standard_normal((BATCH, 6)), dtype=dtype).astype("float64")
    kind = MODELS[name][2]
    if kind == "ids":
        y = rng.integers(0, k, BATCH)
    elif kind == "rows":
        y = rng.random((BATCH, k))
        y /= y.sum(axis=1, keepdims=True)
    elif kind == "real":
        y = rng.standard_normal((BATCH, k))
    else:
        y = rng.integers(0, 2, BATCH).astype("float64")
    if y.dtype.kind == "f":
        y = np.asarray(y, dtype=dtype).astype("float64")
    return x, y


def _masks(model, rng):
    """The dropout masks loss_and_grads(train=True) will draw, from a copy of the model's generator."""
    masks, width = [], model.input_width
    for layer in model.layers:
        if layer.needs_mask:
            masks.append(layer.make_mask(rng, (BATCH, width), "float64"))
        width = layer.output_width(width)
    return masks


@functools.lru_cache(None)
def reference(name, dtype, masks_key):
    """(torch, jax) results for model ``name`` with float64 copies of the cell's data."""
    make, loss, _, _ = MODELS[name]
    layers = make()
    host = mlp.Sequential(*layers, backend="numpy", dtype=dtype, seed=3, loss=loss)
    params = [{k: v.astype("float64") for k, v in p.items()} for p in host.params]
    x, y = _data(name, host.output_width, dtype)
    masks = [np.frombuffer(m).reshape(BATCH, -1) for m in masks_key]
    return (params, oracles.torch_model_grads(layers, params, x, y, loss, masks),
            oracles.jax_model_grads(layers, params, x, y, loss, masks))


@pytest.mark.parametrize("name", MODELS)
def test_loss_and_grads_match_autodiff(cell, name):
    make, loss, _, train = MODELS[name]
    model = mlp.Sequential(*make(), backend=cell.spec, dtype=cell.dtype, seed=3, loss=loss)
    masks = _masks(model, copy.deepcopy(model.rng)) if train else []
    params, torch_ref, jax_ref = reference(name, cell.dtype, tuple(m.tobytes() for m in masks))
    for p, q in zip(model.params, params):  # the oracles start from the cell's own parameters
        for k in p:
            np.testing.assert_array_equal(cell.to_numpy(p[k]), q[k])
    x, y = _data(name, model.output_width, cell.dtype)
    value, grads = model.loss_and_grads(x, y, train=train)
    assert len(grads) == len(model.params)
    for oracle, (want_value, want_grads, _) in (("torch.autograd", torch_ref), ("jax.grad", jax_ref)):
        cell.assert_close(value, np.asarray(want_value), "forward", f"{name}: loss vs {oracle}")
        for i, (g, w) in enumerate(zip(grads, want_grads)):
            assert sorted(g) == sorted(w), f"{name}: layer {i} grads {sorted(g)} != {sorted(w)}"
            for k in g:
                assert g[k].shape == model.params[i][k].shape
                cell.assert_close(g[k], w[k], "grad", f"{name}: layer {i} d{k} vs {oracle}")


def test_the_two_autodiff_oracles_agree():
    """torch.autograd and jax.grad, both in float64, agree far below the tolerances."""
    for name in MODELS:
        params, (tv, tg, tdx), (jv, jg, jdx) = reference(name, "float64", ())
        np.testing.assert_allclose(tv, jv, rtol=1e-13)
        np.testing.assert_allclose(tdx, jdx, rtol=1e-12, atol=1e-14)
        for a, b in zip(tg, jg):
            for k in a:
                np.testing.assert_allclose(a[k], b[k], rtol=1e-12, atol=1e-14, err_msg=name)


# -- row weights: how fit pads a partial batch on JAX -----------------------------------
WEIGHTED = {  # loss: (output width, target kind)
    "cross_entropy": (3, "ids"),
    "cross_entropy-rows": (3, "rows"),
    "mse": (2, "real"),
    "binary_cross_entropy": (1, "binary-1d"),
    "binary_cross_entropy-2d": (2, "binary-2d"),
}


@pytest.mark.parametrize("name", WEIGHTED)
def test_rows_of_weight_zero_count_for_nothing(cell, name):
    """``loss(xp, out, y, weights)`` with 0/1 weights is the loss of the rows of
    weight 1 alone, value, gradient (0 on the other rows) and correct count alike."""
    from mlp import losses

    k, kind = WEIGHTED[name]
    loss = losses.get(name.split("-")[0])
    rng = np.random.default_rng(7)
    out = rng.standard_normal((BATCH, k))
    y = {"ids": lambda: rng.integers(0, k, BATCH),
         "rows": lambda: rng.dirichlet(np.ones(k), BATCH),
         "real": lambda: rng.standard_normal((BATCH, k)),
         "binary-1d": lambda: rng.integers(0, 2, BATCH).astype("float64"),
         "binary-2d": lambda: rng.integers(0, 2, (BATCH, k)).astype("float64")}[kind]()
    w = np.array([1, 0, 1, 1, 0, 1, 1])
    keep = w == 1
    b, xp = cell.backend, cell.backend.xp
    ydtype = "int32" if kind == "ids" else cell.dtype

    def dev(a, dtype):
        return b.asarray(np.asarray(a).astype(dtype), dtype)

    value, grad = loss(xp, dev(out, cell.dtype), dev(y, ydtype), dev(w, "int32"))
    want_value, want_grad = loss(xp, dev(out[keep], cell.dtype), dev(y[keep], ydtype))
    cell.assert_close(value, cell.to_numpy(want_value), "forward", f"{name}: weighted value")
    grad = cell.to_numpy(grad)
    cell.assert_close(grad[keep], cell.to_numpy(want_grad), "grad", f"{name}: weighted gradient")
    assert np.all(grad[~keep] == 0), f"{name}: rows of weight 0 get a gradient"
    if loss.classification:
        got = cell.to_numpy(loss.correct(xp, dev(out, cell.dtype), dev(y, ydtype), dev(w, "int32")))
        want = cell.to_numpy(loss.correct(xp, dev(out[keep], cell.dtype), dev(y[keep], ydtype)))
        assert float(got) == float(want)
    ones = loss(xp, dev(out, cell.dtype), dev(y, ydtype), dev(np.ones(BATCH, int), "int32"))[0]
    cell.assert_close(ones, cell.to_numpy(loss(xp, dev(out, cell.dtype), dev(y, ydtype))[0]), "forward",
                      f"{name}: weights of 1 are the plain mean")
