"""Training agrees across cells: same start, same trajectory, same end.

The reference is an independent float64 PyTorch loop (``F.linear``, ``F.relu``,
``F.cross_entropy``, ``torch.optim.Adam``) fed the same initial parameters and
the same batches, rounded to the cell's dtype.
"""
from __future__ import annotations

import functools

import array_api_compat
import numpy as np
import pytest

import mlp
from mlp.tree import leaves

SIZES = [64, 32, 10]
LR = 0.01


@functools.lru_cache(None)
def digits():
    """The bundled 8x8 digits (all 1797 x 64 rows, train then test), scaled to [0, 1]."""
    from mlp import datasets

    data = datasets.load("digits")
    x = np.concatenate([data.x_train, data.x_test]).astype("float64")
    return x, np.concatenate([data.y_train, data.y_test]).astype("int64")


# The batch order of the trajectory tests. Its float64 reference run keeps every
# hidden pre-activation at least 1e-5 away from ReLU's kink at 0 (checked below):
# with seed 1 one came within 1.6e-9 of it at step 24, far below what float32 can
# resolve, so whether a float32 run followed the reference there was a coin toss
# (it decides the sign of one unit's gradient), not a measure of its accuracy.
BATCH_SEED = 2
KINK_MARGIN = 1e-6


def batches(n_rows, batch, steps, seed=BATCH_SEED):
    """Row indices of ``steps`` batches: a host permutation per epoch."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < steps:
        order = rng.permutation(n_rows)
        out += [order[i:i + batch] for i in range(0, n_rows, batch)]
    return out[:steps]


def host_init(dtype, seed=0):
    """The initial parameters mlp draws for ``MLP(SIZES, seed=seed)``, as host float64."""
    model = mlp.MLP(SIZES, backend="numpy", dtype=dtype, seed=seed)
    return [{k: v.astype("float64") for k, v in p.items()} for p in model.params]


@functools.lru_cache(None)
def torch_reference(dtype, steps, n_rows, batch):
    """Per-step losses and final params of a float64 torch.optim.Adam run."""
    import torch

    F = torch.nn.functional
    x, y = digits()
    x = np.asarray(x[:n_rows], dtype=dtype).astype("float64")
    params = [{k: torch.tensor(v, requires_grad=True) for k, v in p.items()} for p in host_init(dtype) if p]
    opt = torch.optim.Adam([v for p in params for v in p.values()], lr=LR)
    losses, margin = [], np.inf
    for idx in batches(n_rows, batch, steps):
        h = torch.from_numpy(x[idx])
        for i, p in enumerate(params):
            h = F.linear(h, p["W"].T, p["b"])
            if i < len(params) - 1:
                margin = min(margin, float(h.detach().abs().min()))
                h = F.relu(h)
        loss = F.cross_entropy(h, torch.from_numpy(y[:n_rows][idx]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert margin > KINK_MARGIN, (
        f"the reference run passes {margin:.1e} from a ReLU kink: choose another BATCH_SEED")
    return np.array(losses), [{k: v.detach().numpy().copy() for k, v in p.items()} for p in params]


def test_initial_params_identical_on_every_cell(cell):
    for seed in (0, 7):
        model = mlp.MLP(SIZES, backend=cell.spec, dtype=cell.dtype, seed=seed)
        for got, want in zip(model.params, host_init("float64", seed)):
            for k in want:
                host = cell.backend.to_numpy(got[k])
                assert host.dtype == np.dtype(cell.dtype)
                assert np.array_equal(host, want[k].astype(cell.dtype)), f"{cell.id}: {k} differs (seed {seed})"


def test_200_adam_steps_follow_the_reference(cell):
    steps, n_rows, batch = 200, 512, 32
    want_losses, want_params = torch_reference(cell.dtype, steps, n_rows, batch)
    x, y = digits()
    model = mlp.MLP(SIZES, backend=cell.spec, dtype=cell.dtype, seed=0)
    model.set_optimizer(mlp.Adam(lr=LR))
    step = model.train_step()  # the step fit uses: compiled on JAX
    params, state = model.params, model.opt_state
    X, Y = cell.asarray(x[:n_rows]), cell.backend.asarray(y[:n_rows].astype("int32"), "int32")
    xp = cell.backend.xp
    losses = []
    for idx in batches(n_rows, batch, steps):
        rows = cell.backend.asarray(idx.astype("int32"), "int32")
        params, state, loss, _ = step(params, state, xp.take(X, rows, axis=0), xp.take(Y, rows, axis=0), [])
        losses.append(loss)
    got = np.array([float(cell.to_numpy(v)) for v in losses])
    assert got[-1] < 0.5 * got[0], "the run did not learn"
    rtol, atol = cell.tol("train")
    np.testing.assert_allclose(got, want_losses, rtol=rtol, atol=atol,
                               err_msg=f"{cell.id}: per-step losses vs float64 torch reference")
    for i, (p, w) in enumerate(zip([p for p in params if p], want_params)):
        for k in w:
            cell.assert_close(p[k], w[k], "train", f"layer {i} {k} after {steps} Adam steps")


@pytest.mark.slow
def test_longer_fit_reaches_the_reference_accuracy(cell):
    x, y = digits()
    train, test = slice(0, 1400), slice(1400, None)
    epochs, batch = 8, 50
    steps = epochs * 1400 // batch
    model = mlp.MLP(SIZES, backend=cell.spec, dtype=cell.dtype, seed=0)
    model.fit(x[train], y[train], epochs=epochs, batch_size=batch, optimizer=mlp.Adam(lr=LR), shuffle=False)
    assert len(model.history["step_loss"]) == steps
    accuracy = model.evaluate(x[test], y[test])["accuracy"]
    # the same run, by the float64 torch reference (shuffle=False: batches in order)
    ref = mlp.MLP(SIZES, backend="numpy", dtype="float64", seed=0)
    it = iter(torch_fit_reference(epochs, batch))
    ref.params = [next(it) if p else p for p in ref.params]
    want = ref.evaluate(x[test], y[test])["accuracy"]
    assert want > 0.8 and abs(accuracy - want) <= 2 / 397, f"{cell.id}: accuracy {accuracy:.4f}, reference {want:.4f}"


@functools.lru_cache(None)
def torch_fit_reference(epochs, batch):
    """Final params of a float64 torch.optim.Adam run over digits[:1400], batches in order."""
    import torch

    F = torch.nn.functional
    x, y = digits()
    x, y = x[:1400], y[:1400]
    params = [{k: torch.tensor(v, requires_grad=True) for k, v in p.items()} for p in host_init("float64") if p]
    opt = torch.optim.Adam([v for p in params for v in p.values()], lr=LR)
    for _ in range(epochs):
        for i in range(0, len(x), batch):
            h = torch.from_numpy(x[i:i + batch])
            for j, p in enumerate(params):
                h = F.linear(h, p["W"].T, p["b"])
                h = F.relu(h) if j < len(params) - 1 else h
            loss = F.cross_entropy(h, torch.from_numpy(y[i:i + batch]))
            opt.zero_grad()
            loss.backward()
            opt.step()
    return [{k: v.detach().numpy().copy() for k, v in p.items()} for p in params]


def test_moved_from_numpy_then_trained_ends_where_numpy_ends(cell):
    x, y = digits()
    x, y = x[:256], y[:256]
    whole = mlp.MLP(SIZES, backend="numpy", dtype=cell.dtype, seed=0)
    whole.fit(x, y, epochs=4, batch_size=32, optimizer=mlp.Adam(lr=LR))
    moved = mlp.MLP(SIZES, backend="numpy", dtype=cell.dtype, seed=0)
    moved.fit(x, y, epochs=2, batch_size=32, optimizer=mlp.Adam(lr=LR))
    moved.to(cell.spec)
    assert moved.backend == cell.backend
    for a in leaves(moved.params) + leaves(moved.opt_state):
        assert array_api_compat.device(a) == cell.backend.device
    moved.fit(x, y, epochs=2, batch_size=32)  # the same optimizer, its state carried over
    np.testing.assert_allclose(moved.history["step_loss"], whole.history["step_loss"],
                               rtol=cell.tol("train")[0], atol=cell.tol("train")[1])
    for p, w in zip(moved.params, whole.params):
        for k in w:
            cell.assert_close(p[k], w[k].astype("float64"), "train", f"{k} after numpy -> {cell.spec}")


def test_train_step_traced_at_most_twice_with_a_partial_batch(cell):
    rng = np.random.default_rng(0)
    x, y = rng.random((100, 8)), rng.integers(0, 3, 100)  # batches of 32, 32, 32 and 4
    model = mlp.MLP([8, 6, 3], backend=cell.spec, dtype=cell.dtype)
    model.fit(x, y, epochs=3, batch_size=32)
    assert len(model.history["step_loss"]) == 12
    if cell.name == "jax":
        assert model.traces <= 2, f"the JAX train step was traced {model.traces} times in 3 epochs"
    else:  # nothing compiles: the step runs as Python every time
        assert model.traces == 12


def test_outputs_grads_and_optimizer_state_stay_on_the_device(cell):
    rng = np.random.default_rng(0)
    x, y = rng.random((40, 8)), rng.integers(0, 3, 40)
    model = mlp.MLP([8, 6, 3], backend=cell.spec, dtype=cell.dtype, dropout=0.2)
    model.fit(x, y, epochs=1, batch_size=16, optimizer="adamw")
    value, grads = model.loss_and_grads(x, y, train=True)
    b = model.backend
    arrays = {"params": leaves(model.params), "optimizer state": leaves(model.opt_state),
              "grads": leaves(grads), "loss": [value], "forward": [model(x)],
              "predict_proba": [model.predict_proba(x)], "predict": [model.predict(x)]}
    for what, group in arrays.items():
        assert group, what
        for a in group:
            assert b.owns(a), f"{cell.id}: {what} is on {array_api_compat.device(a)}, not {b.device}"
            if what != "predict":
                assert a.dtype == b.dtype(cell.dtype), f"{cell.id}: {what} is {a.dtype}"
    # feeding the model its own device arrays works and stays there
    assert b.owns(model(cell.asarray(x)))


# -- mixing devices ---------------------------------------------------------------
def _strict(device):
    import backends

    return backends.get(f"array_api_strict:{device}")


def test_an_array_from_another_device_is_a_clear_error():
    x, y = np.random.default_rng(0).random((5, 4)), np.array([0, 1, 2, 0, 1])
    model = mlp.MLP([4, 3, 3], backend="array_api_strict:device1")
    on_device2 = _strict("device2").asarray(x, "float32")
    for call in (lambda: model(on_device2), lambda: model.predict(on_device2),
                 lambda: model.fit(on_device2, y, epochs=1), lambda: model.loss_and_grads(on_device2, y)):
        with pytest.raises(mlp.DeviceMismatch, match=r"device2.*device1|device1.*device2") as err:
            call()
        assert "model.to(" in str(err.value)
    y2 = _strict("device2").asarray(y.astype("int32"), "int32")
    with pytest.raises(mlp.DeviceMismatch, match=r"y is an array_api_strict array on device2, but the model lives on .*device1"):
        model.fit(x, y2, epochs=1)
    default = mlp.MLP([4, 3, 3], backend="array_api_strict")
    with pytest.raises(mlp.DeviceMismatch, match="device1"):
        default(_strict("device1").asarray(x, "float32"))
    model(_strict("device1").asarray(x, "float32"))  # its own device is fine


def test_mixing_devices_below_the_model_raises_too():
    """array-api-strict refuses arrays of two devices in one operation, so a
    model array left on the wrong device cannot pass silently."""
    layer = mlp.Linear(4, 3)
    d1, d2 = _strict("device1"), _strict("device2")
    params = {k: d1.asarray(v, "float32") for k, v in layer.init(np.random.default_rng(0)).items()}
    with pytest.raises(ValueError, match="device"):
        layer.forward(d1.xp, params, d2.asarray(np.ones((2, 4)), "float32"))
