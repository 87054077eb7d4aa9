"""A JAX training step copies nothing between host and device (issue 14): with the
data, parameters, optimizer state, masks and row weights already on the device,
the compiled step (``train_step``) and the fused epoch (``train_steps``) run under
``jax.transfer_guard("disallow")``, which raises on any implicit transfer. On a
GPU each such copy is a synchronisation, and it would also keep the step out of a
CUDA graph on the other backends (their code is the same)."""
import numpy as np
import pytest

import mlp
from mlp import flat

B, STEPS = 8, 3


def mask_widths(model):
    """The input width of every layer that draws a dropout mask."""
    widths, width = [], model.input_width
    for layer in model.layers:
        if layer.needs_mask:
            widths.append(width)
        width = layer.output_width(width)
    return widths


def on_device(cell, dropout, loss):
    """A model and everything a step takes, placed on the cell's device first."""
    kwargs = getattr(cell, "model_kwargs", {"backend": cell.spec, "dtype": cell.dtype})
    model = mlp.MLP([8, 16, 16, 3], dropout=dropout, seed=0, loss=loss, **kwargs)
    model.set_optimizer("adam")
    rng = np.random.default_rng(0)
    X = cell.asarray(rng.normal(size=(B * STEPS, 8)))
    Y = cell.asarray(rng.integers(0, 3, B * STEPS).astype("int32"))
    widths = mask_widths(model)
    assert len(widths) == (2 if dropout else 0)
    masks = [cell.asarray(rng.integers(0, 2, (STEPS, B, w)) * 2.0) for w in widths]
    rows = cell.asarray(np.arange(B * STEPS, dtype="int32").reshape(STEPS, B))
    weights = cell.asarray(np.ones((STEPS, B), dtype="int32"))
    return model, X, Y, masks, rows, weights


@pytest.mark.parametrize("dropout", [0.0, 0.5], ids=["plain", "dropout"])
def test_a_jax_step_makes_no_host_device_transfer(cell, dropout):
    check_no_transfer(cell, dropout)


def test_a_jax_step_under_a_precision_policy_makes_no_host_device_transfer(precision_cell):
    check_no_transfer(precision_cell, 0.5)


def check_no_transfer(cell, dropout):
    if cell.name != "jax":
        pytest.skip("jax.transfer_guard is JAX's")
    import jax

    model, X, Y, masks, rows, weights = on_device(cell, dropout, "cross_entropy")
    x, y, w = X[:B], Y[:B], weights[0]  # slicing with host indices is a transfer: before the guard
    batch_masks = [m[0] for m in masks]
    step, steps = model.train_step(), model.train_steps()
    # what fit runs: the same steps on one flat parameter vector (mlp.flat)
    run = flat.Run(model.params, model.optimizer, model.backend.xp, host_counts=not model.backend.compiles)
    P, state, _ = run.begin(model.params, model.opt_state)
    flat_step, flat_steps = model.train_step(run=run), model.train_steps(run=run)
    args = [(step, (model.params, model.opt_state, x, y, batch_masks)),
            (step, (model.params, model.opt_state, x, y, batch_masks, w)),
            (steps, (model.params, model.opt_state, X, Y, rows, masks)),
            (steps, (model.params, model.opt_state, X, Y, rows, masks, weights)),
            (flat_step, (P, state, x, y, batch_masks, w)),
            (flat_steps, (P, state, X, Y, rows, masks, weights))]
    for fn, a in args:  # compiled (and its constants placed) outside the guard
        jax.block_until_ready(fn(*a))
    with jax.transfer_guard("disallow"):
        results = [jax.block_until_ready(fn(*a)) for fn, a in args]
    for params, opt_state, loss, correct in results:
        assert np.all(np.isfinite(cell.to_numpy(loss)))
        assert jax.tree.leaves(params)[0].devices() == X.devices()
