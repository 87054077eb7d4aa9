"""Training on one flat parameter vector (mlp.flat) gives the steps of the nested
per-array path (``Sequential.train_step``), for every optimizer setting, with the
step count on the host or on the device; the public state comes back in its shape."""
from __future__ import annotations

import numpy as np
import pytest

import mlp
from mlp import flat
from mlp.tree import leaves

OPTIMIZERS = {
    "sgd": lambda: mlp.SGD(lr=0.1),
    "momentum-wd": lambda: mlp.SGD(lr=0.05, momentum=0.9, weight_decay=1e-3),
    "nesterov-clip": lambda: mlp.SGD(lr=0.05, momentum=0.8, nesterov=True, clip_norm=0.5),
    "adam": lambda: mlp.Adam(lr=0.01),
    "adam-wd-clip": lambda: mlp.Adam(lr=0.01, weight_decay=1e-2, clip_norm=1.0, betas=(0.8, 0.99)),
    "adamw": lambda: mlp.AdamW(lr=0.01, weight_decay=0.1),
    "adam-beta0": lambda: mlp.Adam(lr=0.01, betas=(0.0, 0.0)),
}


@pytest.mark.parametrize("host_counts", [True, False])
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_flat_steps_equal_the_nested_steps(cell, name, host_counts):
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((24, 5)), rng.integers(0, 3, 24)
    model = mlp.MLP([5, 7, 4, 3], activation="tanh", backend=cell.spec, dtype=cell.dtype, seed=1)
    opt = OPTIMIZERS[name]()
    model.set_optimizer(opt)
    b, xp = cell.backend, cell.backend.xp
    X, Y = cell.asarray(x), b.asarray(y.astype(b.index_dtype), b.index_dtype)
    # two runs of 3 steps each, so that a run starts from a state with steps taken
    nested = (model.params, model.opt_state)
    flat_public = (model.params, model.opt_state)
    step = model.train_step()
    run = flat.Run(model.params, opt, xp, host_counts=host_counts)
    fstep = run.step(lambda p, xb, masks: model.apply(p, xb, train=True, masks=masks), model.loss)
    for r in range(2):
        P, S, t0 = run.begin(*flat_public)
        for k in range(3):
            rows = slice(8 * k, 8 * k + 8)
            nested = step(*nested, X[rows, ...], Y[rows], [])[:2]
            count = t0 + k + 1 if host_counts else None
            P, S, value, correct = fstep(P, S, X[rows, ...], Y[rows], [], None, count)
        flat_public = run.end(P, S, 3)
    for got, want in zip(leaves(flat_public[0]) + leaves(flat_public[1]), leaves(nested[0]) + leaves(nested[1])):
        assert tuple(got.shape) == tuple(want.shape)
        cell.assert_close(got, cell.to_numpy(want), "train", f"{name}: flat vs nested after 6 steps")


def test_flat_run_never_writes_the_callers_arrays(cell):
    model = mlp.MLP([4, 6, 2], backend=cell.spec, dtype=cell.dtype, seed=0)
    opt = model.set_optimizer("adam")
    before = [cell.to_numpy(a).copy() for a in leaves(model.params) + leaves(model.opt_state)]
    run = flat.Run(model.params, opt, cell.backend.xp, host_counts=True)
    P, S, _ = run.begin(model.params, model.opt_state)
    g = cell.asarray(np.ones(P.shape[0]))
    P, S = opt.step(P, g, S, 1, inplace=cell.backend.inplace)
    run.end(P, S, 1)
    after = [cell.to_numpy(a) for a in leaves(model.params) + leaves(model.opt_state)]
    assert all(np.array_equal(a, b) for a, b in zip(before, after))
