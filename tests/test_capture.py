"""Whole-step capture (``Backend.capture``, ``backends/_capture.py``) and fused
kernels (``Backend.kernels``).

The replay engine runs here on a CPU fake of a graph library: recording runs the
step once and keeps it, each replay runs it again and writes its results into the
recorded output arrays (a CUDA graph's outputs are fixed memory too). What a CPU
cannot show (that the recorded kernels replay on the GPU) is the ``torch:cuda``
cell of ``test_backend_capture``, skipped here and required on a GPU runner
(``MLP_REQUIRE_BACKENDS``). ``test_the_step_copies_nothing_from_the_host`` watches
the PyTorch calls a step makes for what a CUDA graph cannot record.
"""
from __future__ import annotations

import contextlib
import types
import warnings

import array_api_compat
import numpy as np
import pytest

import mlp
from mlp.backends._capture import capture, CaptureWarning, Replay
from mlp.backends._numpy import NumpyKernels
from mlp import flat
from mlp.tree import leaves, tree_map


class FakeGraphs:
    """The graph API of ``backends._capture`` on any backend with mutable arrays."""

    def __init__(self, backend, fail=None, stale=False):
        self.backend, self.fail, self.stale = backend, fail, stale
        self.warmups = self.records = self.replays = 0

    def graph(self):
        return types.SimpleNamespace(fn=None, outputs=None)

    @contextlib.contextmanager
    def warming(self):
        self.warmups += 1
        yield

    def record(self, graph, fn):
        if self.fail:
            raise RuntimeError(self.fail)
        self.records += 1
        xp = self.backend.xp  # NumPy's reductions return scalars: hold them in 0-d arrays
        graph.fn = fn
        graph.outputs = tree_map(lambda a: a if hasattr(type(a), "__setitem__") else xp.asarray(a), fn())
        return graph.outputs

    def replay(self, graph):
        self.replays += 1
        if self.stale:  # a graph that replays something else than the step: nothing
            return
        for out, new in zip(leaves(graph.outputs), leaves(graph.fn())):
            if out is not new:
                self.copy_into(out, new)

    def is_array(self, obj):
        return array_api_compat.is_array_api_obj(obj) and not isinstance(obj, (int, float))

    def clone(self, a):
        return self.backend.xp.asarray(a, copy=True)

    def copy_into(self, dst, src):
        dst[...] = src

    def to_host(self, a):
        return self.backend.to_numpy(a)


def mutable(cell):
    """Skip cells whose arrays cannot be written (JAX compiles the step instead)."""
    if cell.backend.compiles:
        pytest.skip("JAX arrays are immutable: JAX compiles the whole step (Backend.jit) instead of capturing it")


def setup(cell, *, optimizer=None, inplace=True, steps=4, batch=8, seed=0):
    """A flat train step with dropout and its arguments for ``steps`` batches:
    ``(step, P, S, batches)`` where each batch is ``(x, y, masks)``."""
    rng = np.random.default_rng(seed)
    model = mlp.MLP([5, 7, 3], dropout=0.25, backend=cell.spec, dtype=cell.dtype, seed=1)
    opt = model.set_optimizer(optimizer or mlp.Adam(lr=0.05, weight_decay=1e-2, clip_norm=1.0))
    b = cell.backend
    run = flat.Run(model.params, opt, b.xp, host_counts=False)
    step = run.step(lambda p, x, masks: model.apply(p, x, train=True, masks=masks), model.loss, inplace=inplace)
    dropout = model.layers[2]
    batches = []
    for _ in range(steps):
        x = cell.asarray(rng.standard_normal((batch, 5)))
        y = b.asarray(rng.integers(0, 3, batch).astype(b.index_dtype), b.index_dtype)
        mask = cell.asarray(dropout.make_mask(rng, (batch, 7), cell.dtype))
        batches.append((x, y, [mask]))
    P, S, _ = run.begin(model.params, model.opt_state)
    return step, P, S, batches


def clones(cell, tree):
    return tuple(_clone(cell, t) for t in tree)


def _clone(cell, tree):
    xp = cell.backend.xp
    if isinstance(tree, dict):
        return {k: _clone(cell, v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_clone(cell, v) for v in tree)
    return None if tree is None else xp.asarray(tree, copy=True)


def eager_run(cell, step, P, S, batches):
    """The plain step over ``batches`` from clones of ``P`` and ``S``: every step's results."""
    P, S = clones(cell, (P, S))
    results = []
    for x, y, masks in batches:
        P, S, value, correct = step(P, S, x, y, masks)
        results.append(clones(cell, (P, S, value, correct)))
    return results


def assert_same(cell, got, want, what):
    for g, w in zip(leaves(got), leaves(want), strict=True):
        cell.assert_close(g, cell.to_numpy(w), "train", what)


@pytest.mark.parametrize("inplace", [True, False])
def test_replay_gives_the_eager_steps(cell, inplace):
    mutable(cell)
    step, P, S, batches = setup(cell, inplace=inplace)
    want = eager_run(cell, step, P, S, batches)
    api = FakeGraphs(cell.backend)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CaptureWarning)
        replay = capture(step, (P, S) + batches[0], api)
        assert isinstance(replay, Replay)
        for k, (x, y, masks) in enumerate(batches):
            P, S, value, correct = replay(P, S, x, y, masks)
            assert_same(cell, (P, S, value, correct), want[k], f"step {k + 1}, inplace={inplace}")
            if k == 0:
                static = P, S
            # the carried state is the replay's own buffers, updated in place
            assert P is static[0] and all(a is b for a, b in zip(leaves(S), leaves(static[1])))
    assert (api.records, api.replays) == (1, len(batches))


def test_state_keys_in_another_order_pair_up_by_name(cell):
    """A step (not in place) that returns its state dict with the keys in another
    order: each array still goes to its own buffer (m to m, v to v)."""
    mutable(cell)
    plain, P, S, batches = setup(cell, inplace=False)

    def step(*args):
        P, S, value, correct = plain(*args)
        return P, dict(reversed(list(S.items()))), value, correct

    want = eager_run(cell, plain, P, S, batches)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CaptureWarning)
        replay = capture(step, (P, S) + batches[0], FakeGraphs(cell.backend))
        for k, (x, y, masks) in enumerate(batches):
            P, S, value, correct = replay(P, S, x, y, masks)
            assert_same(cell, (P, S, value, correct), want[k], f"step {k + 1}, state keys reversed")


def test_replay_keeps_the_losses_a_caller_holds(cell):
    mutable(cell)
    step, P, S, batches = setup(cell)
    want = eager_run(cell, step, P, S, batches)
    replay = capture(step, (P, S) + batches[0], FakeGraphs(cell.backend))
    losses = []
    for x, y, masks in batches:
        P, S, value, correct = replay(P, S, x, y, masks)
        losses.append((value, correct))
    for k, got in enumerate(losses):  # not overwritten by the later replays
        assert_same(cell, got, want[k][2:], f"loss and correct count of step {k + 1}")


def test_capture_never_writes_the_callers_arrays(cell):
    mutable(cell)
    step, P, S, batches = setup(cell)
    args = (P, S) + batches[0]
    before = [cell.to_numpy(a).copy() for a in leaves(args)]
    replay = capture(step, args, FakeGraphs(cell.backend))
    assert all(np.array_equal(cell.to_numpy(a), b) for a, b in zip(leaves(args), before)), "capture wrote them"
    out = replay(*args)
    replay(*out[:2], *batches[1])
    assert all(np.array_equal(cell.to_numpy(a), b) for a, b in zip(leaves(args), before)), "replays wrote them"
    assert out[0] is not P


def test_a_failed_capture_warns_once_and_runs_the_step(cell):
    mutable(cell)
    step, P, S, batches = setup(cell)
    want = eager_run(cell, step, P, S, batches)
    api = FakeGraphs(cell.backend, fail="Cannot copy between CPU and CUDA tensors during CUDA graph capture")
    with pytest.warns(CaptureWarning, match="capturing the train step failed .*RuntimeError: Cannot copy") as seen:
        replay = capture(step, (P, S) + batches[0], api)
        P, S = clones(cell, (P, S))
        for k, (x, y, masks) in enumerate(batches):
            P, S, value, correct = replay(P, S, x, y, masks)
            assert_same(cell, (P, S, value, correct), want[k], f"eager fallback, step {k + 1}")
    assert len([w for w in seen if w.category is CaptureWarning]) == 1
    assert replay is step


def test_a_replay_that_differs_warns_once_and_runs_the_step(cell):
    mutable(cell)
    step, P, S, batches = setup(cell)
    want = eager_run(cell, step, P, S, batches)
    api = FakeGraphs(cell.backend, stale=True)
    replay = capture(step, (P, S) + batches[0], api)
    with pytest.warns(CaptureWarning, match="differs from the plain step in result array") as seen:
        for k, (x, y, masks) in enumerate(batches):
            P, S, value, correct = replay(P, S, x, y, masks)
            assert_same(cell, (P, S, value, correct), want[k], f"after a bad replay, step {k + 1}")
    assert len([w for w in seen if w.category is CaptureWarning]) == 1
    assert replay.eager and api.replays == 1


def test_other_shapes_run_the_plain_step(cell):
    mutable(cell)
    step, P, S, batches = setup(cell)
    _, _, partial = setup(cell, steps=1, batch=3, seed=5)[1:]
    sequence = [batches[0], partial[0], batches[1]]
    want = eager_run(cell, step, P, S, sequence)
    api = FakeGraphs(cell.backend)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CaptureWarning)
        replay = capture(step, (P, S) + batches[0], api)
        for k, (x, y, masks) in enumerate(sequence):
            P, S, value, correct = replay(P, S, x, y, masks)
            assert_same(cell, (P, S, value, correct), want[k], f"step {k + 1} (the second on 3 rows)")
    assert api.replays == 2


def test_a_host_value_cannot_be_captured(cell):
    mutable(cell)
    step, P, S, batches = setup(cell)
    with pytest.raises(ValueError, match="argument 6 of the step to capture holds int 3; expected arrays or None"):
        capture(step, (P, S) + batches[0] + (None, 3), FakeGraphs(cell.backend))


# the backends that capture a step (by cell spec); every other one returns None
CAPTURES = {"torch:cuda"}


def test_backend_capture(cell):
    """``Backend.capture``: None where the backend cannot capture; on CUDA with
    PyTorch a replay that gives the eager steps, without a warning."""
    backend = cell.backend
    step, P, S, batches = setup(cell, inplace=not backend.compiles)
    want = eager_run(cell, step, P, S, batches)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CaptureWarning)
        replay = backend.capture(step, (P, S) + batches[0])
        if cell.spec not in CAPTURES:
            assert replay is None, f"{cell.id}: {replay!r}"
            return
        assert isinstance(replay, Replay)
        for k, (x, y, masks) in enumerate(batches):
            P, S, value, correct = replay(P, S, x, y, masks)
            assert_same(cell, (P, S, value, correct), want[k], f"CUDA graph replay, step {k + 1}")
        assert not replay.eager


# -- what a CUDA graph cannot record, watched on the CPU ---------------------------------
LAYERS = ["relu", "leaky_relu", "tanh", "sigmoid", "gelu"]
LOSSES = {"cross_entropy": 3, "mse": 2, "binary_cross_entropy": 1}
OPTIMIZERS = {
    "adam-l2-clip": lambda: mlp.Adam(lr=0.01, weight_decay=0.1, clip_norm=1.0),
    "adamw": lambda: mlp.AdamW(lr=0.01),
    "nesterov-wd": lambda: mlp.SGD(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
    "sgd": lambda: mlp.SGD(lr=0.1),
}


def host_reads(torch):
    """A PyTorch function mode and a dispatch mode that list, in ``found``, the calls
    of a step that a CUDA graph cannot record: tensors made from host data (on CUDA: a
    copy from the host), reads back to the host and ops that wait for the device."""
    from torch.overrides import TorchFunctionMode
    from torch.utils._python_dispatch import TorchDispatchMode

    makers = {torch.tensor, torch.as_tensor, torch.asarray, torch.scalar_tensor, torch.from_numpy}
    reads = {torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.numpy, torch.Tensor.cpu, torch.Tensor.cuda,
             torch.Tensor.__float__, torch.Tensor.__int__, torch.Tensor.__bool__}
    waits = {"aten._local_scalar_dense", "aten.nonzero", "aten.masked_select", "aten._unique2"}
    found = []

    class Functions(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func in makers and args and not isinstance(args[0], torch.Tensor):
                found.append(f"{func.__name__}({args[0]!r}): a tensor from host data")
            elif func in reads:
                found.append(f"Tensor.{func.__name__}: a read to the host")
            elif func is torch.Tensor.to and any(isinstance(a, (str, torch.device)) for a in args[1:]) or (
                    func is torch.Tensor.to and "device" in kwargs):
                found.append("Tensor.to(device): a copy between devices")
            return func(*args, **kwargs)

    def masked(indices):
        return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices or ())

    class Dispatch(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = str(func.overloadpacket)
            if name in waits:
                found.append(f"{name}: waits for the device")
            # x[mask] counts the mask's elements on the host; x[mask] = v too, unless v is
            # one value (ATen then calls masked_fill_, as compat's sign does for NaNs)
            elif name == "aten.index" and masked(args[1]):
                found.append("x[boolean mask]: waits for the device")
            elif name in ("aten.index_put", "aten.index_put_") and masked(args[1]) and args[2].numel() != 1:
                found.append("x[boolean mask] = array: waits for the device")
            return func(*args, **(kwargs or {}))

    return Functions(), Dispatch(), found


@pytest.mark.parametrize("activation", LAYERS)
def test_the_step_copies_nothing_from_the_host(cell, activation):
    """Every loss and optimizer, full and weighted batches, dropout, device step counts."""
    if cell.name != "torch":
        pytest.skip("watches PyTorch calls (the one backend that captures)")
    import torch

    found = []
    for loss in sorted(LOSSES):
        for optimizer in sorted(OPTIMIZERS):
            found += watch_step(cell, torch, activation, loss, optimizer)
    assert not found, "\n".join(sorted(set(found)))


def test_a_precision_policy_copies_nothing_from_the_host(precision_cell):
    """The same watch under a mixed-precision policy (bfloat16 or TF32 products)."""
    if precision_cell.name != "torch":
        pytest.skip("watches PyTorch calls (the one backend that captures)")
    import torch

    found = watch_step(precision_cell, torch, "relu", "cross_entropy", "adam-l2-clip",
                       precision=precision_cell.precision)
    assert not found, "\n".join(sorted(set(found)))


def watch_step(cell, torch, activation, loss, optimizer, **kwargs):
    """What ``host_reads`` finds in two flat steps (the second on weighted rows)."""
    rng = np.random.default_rng(0)
    model = mlp.MLP([4, 6, LOSSES[loss]], activation=activation, dropout=0.2, loss=loss, backend=cell.spec,
                    dtype=cell.dtype, seed=0, **kwargs)
    opt = model.set_optimizer(OPTIMIZERS[optimizer]())
    b = cell.backend
    run = flat.Run(model.params, opt, b.xp, host_counts=False)
    step = run.step(lambda p, x, masks: model.apply(p, x, train=True, masks=masks), model.loss, inplace=True)
    x = cell.asarray(rng.standard_normal((8, 4)))
    if loss == "cross_entropy":
        y = b.asarray(rng.integers(0, 3, 8).astype(b.index_dtype), b.index_dtype)
    else:
        y = cell.asarray((rng.random((8, LOSSES[loss])) > 0.5).astype("float64"))
    masks = [cell.asarray(model.layers[2].make_mask(rng, (8, 6), cell.dtype))]
    weights = b.asarray(np.r_[np.ones(6), np.zeros(2)].astype("int32"), "int32")
    P, S, _ = run.begin(model.params, model.opt_state)
    functions, dispatch, found = host_reads(torch)
    with functions, dispatch:
        P, S = step(P, S, x, y, masks)[:2]
        step(P, S, x, y, masks, weights)
    return [f"{activation}, {loss}, {optimizer}: {f}" for f in found]


def test_the_watch_sees_a_host_copy(cell):
    """The check above can fail: ``maximum`` with a Python scalar makes a tensor from
    host data (what ReLU did before it used ``clip``)."""
    if cell.name != "torch":
        pytest.skip("watches PyTorch calls (the one backend that captures)")
    import torch

    x = cell.asarray(np.arange(-3.0, 3.0))
    functions, dispatch, found = host_reads(torch)
    with functions, dispatch:
        cell.backend.xp.maximum(x, 0.0)
        float(x[0])
        x[x > 0]
    assert any("from host data" in f for f in found) and any("read to the host" in f for f in found), found
    assert any("x[boolean mask]" in f for f in found), found


# -- fused kernels (Backend.kernels) -------------------------------------------------
ADAMS = {
    "adam": lambda: mlp.Adam(lr=0.01),
    "adam-l2-clip": lambda: mlp.Adam(lr=0.01, weight_decay=0.1, clip_norm=0.5, betas=(0.8, 0.99)),
    "adamw": lambda: mlp.AdamW(lr=0.01, weight_decay=0.1),
    "adam-beta0": lambda: mlp.Adam(lr=0.01, betas=(0.0, 0.0)),
}


def kernels_of(cell):
    """The backend's fused kernels; NumPy's own (``backends._numpy.NumpyKernels``) on
    the NumPy cells, whether or not the backend uses them; else skip."""
    if cell.backend.kernels is not None:
        return cell.backend.kernels
    if cell.name == "numpy":
        return NumpyKernels()
    pytest.skip("no fused kernels on this backend (Backend.kernels is None)")


@pytest.mark.parametrize("host_counts", [True, False])
@pytest.mark.parametrize("inplace", [True, False])
@pytest.mark.parametrize("name", sorted(ADAMS))
def test_fused_adam_gives_the_plain_update(cell, name, inplace, host_counts):
    """Three steps of ``Adam.step`` with the backend's kernels (CuPy: the
    ``ElementwiseKernel``s, compiled here) against three without."""
    kernels = kernels_of(cell)
    rng = np.random.default_rng(3)
    opt = ADAMS[name]()
    n = 37
    p0 = cell.asarray(rng.standard_normal(n))
    run = flat.Run([{"w": p0}], opt, cell.backend.xp, host_counts=host_counts)
    state = opt.init([{"w": p0}])
    results = []
    for fused in (None, kernels):
        P, S, t0 = run.begin([{"w": p0}], state)
        for k in range(3):
            g = cell.asarray(np.random.default_rng(k).standard_normal(n))
            count = t0 + k + 1 if host_counts else None
            P, S = opt.step(P, g, S, count, inplace=inplace, kernels=fused)
        results.append(run.end(P, S, 3))
    for got, want in zip(leaves(results[1]), leaves(results[0]), strict=True):
        cell.assert_close(got, cell.to_numpy(want), "train", f"{name}: fused vs plain Adam")
    if cell.name == "numpy":  # the same operations in the same order: the same bits
        assert all(np.array_equal(cell.to_numpy(a), cell.to_numpy(b))
                   for a, b in zip(leaves(results[1]), leaves(results[0])))


def test_fused_adam_out_of_place_leaves_its_inputs(cell):
    kernels = kernels_of(cell)
    rng = np.random.default_rng(0)
    p, g, m, v = (cell.asarray(rng.random(11)) for _ in range(4))
    before = [cell.to_numpy(a).copy() for a in (p, g, m, v)]
    out = kernels.adam(p, g, m, v, b1=0.9, b2=0.999, scale=-0.01, eps=1e-8, decay=0.99, l2=0.1)
    assert all(np.array_equal(cell.to_numpy(a), b) for a, b in zip((p, g, m, v), before))
    assert all(o is not a for o, a in zip(out, (p, m, v)))


def test_fit_with_fused_kernels_gives_the_same_model(cell):
    """``mlp.flat.Run`` hands ``Backend.kernels`` to the optimizer: ``fit`` on a
    backend with kernels trains the same model as without."""
    import copy

    kernels = kernels_of(cell)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((50, 4)), rng.integers(0, 3, 50)
    models = []
    for fused in (None, kernels):
        model = mlp.MLP([4, 8, 3], backend=cell.spec, dtype=cell.dtype, seed=2)
        model.backend = copy.copy(model.backend)
        model.backend.kernels = fused
        model.fit(x, y, epochs=2, batch_size=16, optimizer=mlp.AdamW(lr=0.01, weight_decay=0.1))
        models.append(model)
    for got, want in zip(leaves(models[1].params) + leaves(models[1].opt_state),
                         leaves(models[0].params) + leaves(models[0].opt_state), strict=True):
        cell.assert_close(got, cell.to_numpy(want), "train", "fit with kernels vs without")
