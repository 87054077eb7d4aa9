"""The fast paths of training give the same numbers as the plain ones, and
never change an array that the caller can see.

- ``optimizers.scale_add``: the one helper that may write into an array.
- ``fit`` on a backend with ``Backend.inplace`` updates copies it owns.
- ``fit`` on a backend with ``Backend.fuse_steps`` runs many steps per call
  through ``Backend.scan`` (``train_steps``); the fallback ``scan`` is a loop.
"""
import copy

import numpy as np
import pytest

import backends
import mlp
from mlp.optimizers import scale_add
from mlp.tree import leaves

OPTIMIZERS = {
    "adam": lambda: mlp.Adam(lr=0.01),
    "adam_l2_clip": lambda: mlp.Adam(lr=0.01, weight_decay=0.1, clip_norm=0.5),
    "adamw": lambda: mlp.AdamW(lr=0.01),
    "sgd": lambda: mlp.SGD(lr=0.1),
    "nesterov_wd": lambda: mlp.SGD(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
}


def host(tree, backend):
    return [np.array(backend.to_numpy(a), copy=True) for a in leaves(tree)]


def data(n=90, d=6, k=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, d)), rng.integers(0, k, n)


def with_flags(model, **flags):
    """The model on a copy of its backend with some class flags changed."""
    model.backend = copy.copy(model.backend)
    for name, value in flags.items():
        setattr(model.backend, name, value)
    model._compiled = {}
    return model


# -- scale_add -------------------------------------------------------------------
def test_scale_add_out_of_place_leaves_inputs_alone(cell):
    b = cell.backend
    y0, x0 = np.linspace(-1, 1, 12).reshape(3, 4), np.linspace(2, 3, 12).reshape(3, 4)
    y, x = b.asarray(y0, cell.dtype), b.asarray(x0, cell.dtype)
    out = scale_add(y, 0.5, x, -0.25)
    np.testing.assert_allclose(b.to_numpy(out), 0.5 * y0 - 0.25 * x0, *cell.tol())
    np.testing.assert_array_equal(b.to_numpy(y), y0.astype(cell.dtype))
    np.testing.assert_array_equal(b.to_numpy(x), x0.astype(cell.dtype))
    np.testing.assert_array_equal(b.to_numpy(scale_add(y, 1.0)), b.to_numpy(y))


@pytest.mark.parametrize("a, b", [(0.9, 0.1), (1.0, -0.5), (1, 1.0), (0.5, None)])
def test_scale_add_in_place_writes_into_y_with_the_same_bits(a, b):
    rng = np.random.default_rng(1)
    y, x = rng.standard_normal((5, 7)).astype("float32"), rng.standard_normal((5, 7)).astype("float32")
    args = (a,) if b is None else (a, x, b)
    expected = scale_add(y, *args)
    target = y.copy()
    out = scale_add(target, *args, inplace=True)
    assert out is target
    np.testing.assert_array_equal(out, expected)


def test_only_numpy_advertises_in_place_here():
    assert backends.get("numpy").inplace
    for spec in ("jax", "torch", "array_api_strict"):
        assert not backends.get(spec).inplace, spec


# -- nothing the caller can see changes ---------------------------------------------
@pytest.mark.parametrize("name", ["adam_l2_clip", "nesterov_wd"])
def test_fit_changes_no_array_the_caller_holds(cell, name):
    check_fit_changes_nothing_held(cell.spec, cell.dtype, name)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_fit_changes_no_array_the_caller_holds_with_each_optimizer(name):
    check_fit_changes_nothing_held("numpy", "float32", name)  # numpy: the in-place backend


def check_fit_changes_nothing_held(spec, dtype, name):
    x, y = data()
    model = mlp.MLP([6, 5, 3], backend=spec, dtype=dtype, dropout=0.2, seed=1)
    model.set_optimizer(OPTIMIZERS[name]())
    b = model.backend
    held = (model.params, model.opt_state)
    before = host(held, b)
    seen, seen_host = [], []

    def keep(model, epoch, logs):  # a callback that keeps the arrays of each epoch
        seen.append((model.params, model.opt_state))
        seen_host.append(host(seen[-1], b))

    x_in, y_in = x.copy(), y.copy()
    model.fit(x_in, y_in, epochs=3, batch_size=32, callbacks=[keep])
    for a, h in zip(leaves(held), before):
        np.testing.assert_array_equal(b.to_numpy(a), h)
    for tree, hosts in zip(seen, seen_host):
        for a, h in zip(leaves(tree), hosts):
            np.testing.assert_array_equal(b.to_numpy(a), h)
    np.testing.assert_array_equal(x_in, x)
    np.testing.assert_array_equal(y_in, y)
    assert any(not np.array_equal(h0, h1) for h0, h1 in zip(before, host(model.params, b)))


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_train_step_and_update_stay_pure(name):
    x, y = data()
    model = mlp.MLP([6, 5, 3], seed=2)
    opt = model.set_optimizer(OPTIMIZERS[name]())
    before = host((model.params, model.opt_state), model.backend)
    step = model.train_step()
    X, Y = model._as_input(x), model._as_target(y, model.loss, len(x))
    params, state, _, _ = step(model.params, model.opt_state, X, Y, [])
    _, grads = model.loss_and_grads(x, y)
    grads_before = host(grads, model.backend)
    opt.update(model.params, grads, model.opt_state)
    after = host((model.params, model.opt_state), model.backend)
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(grads_before, host(grads, model.backend)):
        np.testing.assert_array_equal(a, b)


# -- same numbers on every path ----------------------------------------------------
def test_in_place_steps_give_the_same_bits():
    x, y = data(n=100)
    runs = []
    for inplace in (True, False):
        model = with_flags(mlp.MLP([6, 5, 3], dropout=0.2, seed=4), inplace=inplace)
        runs.append(model.fit(x, y, epochs=2, batch_size=32, optimizer=OPTIMIZERS["adam_l2_clip"]())["step_loss"])
    assert runs[0] == runs[1]


@pytest.mark.parametrize("dropout, budget", [(0.0, None), (0.3, 2 * 32 * 5)])
def test_fused_epochs_match_step_by_step(cell, dropout, budget):
    """All full batches in one call, split by the mask budget (2 steps a call,
    then the leftover full batch, then the partial batch), or one step a call."""
    x, y = data(n=170)
    runs = []
    for fuse in (True, False):
        model = with_flags(mlp.MLP([6, 5, 3], backend=cell.spec, dtype=cell.dtype, dropout=dropout,
                                   seed=5), fuse_steps=fuse)
        if budget:
            model.mask_budget = budget
        h = model.fit(x, y, epochs=2, batch_size=32, optimizer="adam")
        runs.append((np.array(h["step_loss"]), h["accuracy"], host(model.params, model.backend)))
    (loss_a, acc_a, p_a), (loss_b, acc_b, p_b) = runs
    assert len(loss_a) == len(loss_b) == 12
    np.testing.assert_allclose(loss_a, loss_b, *cell.tol("train"))
    assert acc_a == acc_b
    for a, b in zip(p_a, p_b):
        np.testing.assert_allclose(a, b, *cell.tol("train"))


def test_fused_regression_has_no_accuracy():
    rng = np.random.default_rng(3)
    x, y = rng.random((40, 4)), rng.random((40, 2))
    model = with_flags(mlp.MLP([4, 3, 2], loss="mse", seed=0), fuse_steps=True)
    h = model.fit(x, y, epochs=1, batch_size=16)
    assert len(h["step_loss"]) == 3 and "accuracy" not in h


def test_scan_fallback_matches_jax_scan():
    pytest.importorskip("jax")
    xs_host = {"a": np.arange(12.0).reshape(4, 3), "b": [np.arange(4.0)]}

    def body_for(xp):
        def body(carry, x):
            carry = carry + xp.sum(x["a"]) * x["b"][0]
            return carry, (carry, None, {"twice": 2 * x["a"]})
        return body

    results = []
    for spec in ("numpy", "jax"):
        b = backends.get(spec)
        xs = {"a": b.asarray(xs_host["a"], "float32"), "b": [b.asarray(xs_host["b"][0], "float32")]}
        carry, (c, none, d) = b.scan(body_for(b.xp), b.asarray(1.0, "float32"), xs)
        assert none is None
        results.append((b.to_numpy(carry), b.to_numpy(c), b.to_numpy(d["twice"])))
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    assert results[0][2].shape == (4, 3)


@pytest.mark.parametrize("n", [96, 100])
def test_jax_trains_an_epoch_in_one_call_of_one_program(n):
    """3 full batches (and with n=100 a partial one of 4 rows, padded): one call
    per epoch, and one trace (one compiled program) for the whole run."""
    pytest.importorskip("jax")
    x, y = data(n=n)
    model = mlp.MLP([6, 5, 3], backend="jax", seed=0)
    calls = []
    model.set_optimizer("adam")
    steps = model.train_steps(run=model._flat_run())  # the flat steps fit uses
    model._compiled[("steps", id(model.loss), id(model.optimizer), True)] = lambda *a: calls.append(1) or steps(*a)
    h = model.fit(x, y, epochs=2, batch_size=32)
    assert len(calls) == 2 and model.traces == 1
    assert len(h["step_loss"]) == 2 * -(-n // 32)


def test_on_batch_sees_every_step_on_every_path(cell):
    """``on_batch(step, n_steps)`` runs once per step, in order, whether the
    backend trains step by step or many steps per call."""
    x, y = data(n=170)
    model = mlp.MLP([6, 5, 3], backend=cell.spec, dtype=cell.dtype, dropout=0.3, seed=5)
    model.mask_budget = 2 * 32 * 5  # fused: 2 steps a call, then 1, then the partial batch
    seen = []
    model.fit(x, y, epochs=2, batch_size=32, on_batch=lambda step, n: seen.append((step, n)))
    assert seen == [(k, 6) for k in range(6)] * 2


def test_an_interrupted_fast_epoch_is_rolled_back_exactly(cell):
    """Ctrl-C inside epoch 2 on the fast paths (in-place on NumPy, fused on JAX)
    leaves the weights, optimizer state and RNG of epoch 1; training on gives
    the uninterrupted run's numbers."""
    x, y = data(n=170)

    def make():
        model = mlp.MLP([6, 5, 3], backend=cell.spec, dtype=cell.dtype, dropout=0.3, seed=6)
        model.mask_budget = 2 * 32 * 5
        return model

    whole = make()
    whole.fit(x, y, epochs=3, batch_size=32)
    model = make()
    model.fit(x, y, epochs=1, batch_size=32)
    after_one = host((model.params, model.opt_state), model.backend)

    def interrupt(step, n_steps):
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        model.fit(x, y, epochs=1, batch_size=32, on_batch=interrupt)
    assert model.epoch == 1 and len(model.history["step_loss"]) == 6
    for a, b in zip(after_one, host((model.params, model.opt_state), model.backend)):
        np.testing.assert_array_equal(a, b)
    model.fit(x, y, epochs=2, batch_size=32)
    assert model.history["step_loss"] == whole.history["step_loss"]
    for a, b in zip(host(whole.params, whole.backend), host(model.params, model.backend)):
        np.testing.assert_array_equal(a, b)


# -- the NumPy backend's malloc thresholds (backends/_malloc.py) ---------------------
def _tuned_in_fresh_process(env):
    import os
    import subprocess
    import sys

    code = "import backends, backends._malloc as m; backends.get('numpy'); print(m._done)"
    env = {k: v for k, v in os.environ.items() if k not in ("MLP_MALLOC_TUNING", "GLIBC_TUNABLES")} | env
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert run.returncode == 0, run.stderr
    return run.stdout.strip()


def test_numpy_backend_raises_glibc_malloc_thresholds_unless_told_not_to():
    import ctypes
    import sys

    try:
        glibc = sys.platform.startswith("linux") and bool(ctypes.CDLL(None).gnu_get_libc_version)
    except (OSError, AttributeError):
        glibc = False
    assert _tuned_in_fresh_process({}) == str(glibc)
    assert _tuned_in_fresh_process({"MLP_MALLOC_TUNING": "0"}) == "False"
    # the user's own malloc settings win
    assert _tuned_in_fresh_process({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1000000"}) == "False"
    assert _tuned_in_fresh_process({"MALLOC_TRIM_THRESHOLD_": "1000000"}) == "False"


def test_a_loss_without_weights_still_trains_fused_with_a_partial_batch(cell):
    """A user's loss written for ``loss(xp, out, y)`` alone: the fused path runs
    the partial batch in a call of its own instead of padding it."""
    from mlp import losses

    class Plain(losses.CrossEntropy):
        def __call__(self, xp, out, target):
            return super().__call__(xp, out, target)

        def correct(self, xp, out, target):
            return super().correct(xp, out, target)

    x, y = data(n=170)
    runs = []
    for fuse in (True, False):
        model = with_flags(mlp.MLP([6, 5, 3], backend=cell.spec, dtype=cell.dtype, seed=5, loss=Plain()),
                           fuse_steps=fuse)
        h = model.fit(x, y, epochs=2, batch_size=32)
        runs.append((np.array(h["step_loss"]), h["accuracy"]))
    assert len(runs[0][0]) == len(runs[1][0]) == 12
    np.testing.assert_allclose(runs[0][0], runs[1][0], *cell.tol("train"))
    assert runs[0][1] == runs[1][1]
