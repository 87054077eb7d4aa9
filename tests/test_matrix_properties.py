"""Property tests: random architectures and batch sizes, on every cell.

Hypothesis draws layer widths, depths, activations, losses and batch sizes;
for each model the forward pass, ``predict_proba`` and ``loss_and_grads`` must
agree with ``torch.autograd`` in float64 on the same data (few examples per
cell, so the matrix stays fast).
"""
from __future__ import annotations

import numpy as np
from hypothesis import given, HealthCheck, settings
from hypothesis import strategies as st

import mlp
import oracles

ACTIVATIONS = ["relu", "leaky_relu", "sigmoid", "tanh", "gelu", "identity", "softmax"]


@st.composite
def architectures(draw):
    depth = draw(st.integers(1, 3))  # Linear layers
    widths = draw(st.lists(st.integers(1, 6), min_size=depth + 1, max_size=depth + 1))
    loss = draw(st.sampled_from(["cross_entropy", "mse", "binary_cross_entropy"]))
    if loss == "cross_entropy":
        widths[-1] = max(widths[-1], 2)
    return dict(widths=widths, activation=draw(st.sampled_from(ACTIVATIONS)), loss=loss,
                batch=draw(st.integers(1, 9)), seed=draw(st.integers(0, 2**16)))


@settings(max_examples=6, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(arch=architectures())
def test_random_models_match_torch(cell, arch):
    widths, batch, loss = arch["widths"], arch["batch"], arch["loss"]
    model = mlp.MLP(widths, arch["activation"], backend=cell.spec, dtype=cell.dtype, seed=arch["seed"], loss=loss)
    rng = np.random.default_rng(arch["seed"])
    x = cell.host(rng.standard_normal((batch, widths[0])))
    if loss == "cross_entropy":
        y = rng.integers(0, widths[-1], batch)
    else:
        y = rng.integers(0, 2, (batch, widths[-1])).astype("float64")
    params = [{k: cell.to_numpy(v) for k, v in p.items()} for p in model.params]
    want_value, want_grads, _ = oracles.torch_model_grads(model.layers, params, x, y, loss)

    out = model(x)
    assert out.shape == (batch, widths[-1])
    h = x
    for layer, p in zip(model.layers, params):
        h = oracles.numpy_layer(layer, p, h)
    cell.assert_close(out, h, "forward", f"forward of {arch}")
    proba = cell.to_numpy(model.predict_proba(x))
    assert np.all(proba >= 0)
    if loss == "cross_entropy":
        np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=cell.tol("forward")[0] * 10)

    value, grads = model.loss_and_grads(x, y)
    cell.assert_close(value, np.asarray(want_value), "forward", f"loss of {arch}")
    for i, (g, w) in enumerate(zip(grads, want_grads)):
        assert sorted(g) == sorted(w)
        for k in g:
            cell.assert_close(g[k], w[k], "grad", f"layer {i} d{k} of {arch}")
