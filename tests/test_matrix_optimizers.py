"""Optimizers against ``torch.optim`` with the same hyper-parameters, on every cell.

The same gradients (host random numbers, rounded to the cell's dtype) are fed
to mlp's pure ``update`` and to ``torch.optim`` in float64; parameters must
agree after one update and after many.
"""
from __future__ import annotations

import functools

import array_api_compat
import numpy as np
import pytest

import mlp
from mlp.tree import leaves
import oracles

OPTIMIZERS = {
    "sgd": lambda: mlp.SGD(lr=0.1),
    "sgd-momentum": lambda: mlp.SGD(lr=0.05, momentum=0.9),
    "sgd-nesterov": lambda: mlp.SGD(lr=0.05, momentum=0.8, nesterov=True),
    "sgd-weight_decay": lambda: mlp.SGD(lr=0.05, momentum=0.5, weight_decay=0.1),
    "adam": lambda: mlp.Adam(lr=0.01),
    "adam-l2": lambda: mlp.Adam(lr=0.02, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.05),
    "adamw": lambda: mlp.AdamW(lr=0.01, weight_decay=0.1),
    "sgd-clip_norm": lambda: mlp.SGD(lr=0.1, momentum=0.9, clip_norm=0.5),
    "adam-clip_norm": lambda: mlp.Adam(lr=0.01, clip_norm=1.0),
}
SHAPES = [{"W": (4, 3), "b": (3,)}, {"W": (3, 1)}]
STEPS = 12


@functools.lru_cache(None)
def problem(name, dtype):
    """Initial params, the gradients of each step (rounded to ``dtype``) and torch's params after each step."""
    rng = np.random.default_rng(len(name))
    round_ = lambda a: np.asarray(a, dtype=dtype).astype("float64")  # noqa: E731
    params = [{k: round_(rng.standard_normal(s)) for k, s in layer.items()} for layer in SHAPES]
    grads = [[{k: round_(rng.standard_normal(s) * rng.choice([0.1, 1, 3])) for k, s in layer.items()}
              for layer in SHAPES] for _ in range(STEPS)]
    torch_steps = oracles.torch_updates(OPTIMIZERS[name](), leaves(params), [leaves(g) for g in grads])
    return params, grads, torch_steps


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_optimizer_matches_torch_optim(cell, name):
    params, grads, torch_steps = problem(name, cell.dtype)
    opt = OPTIMIZERS[name]()
    to_cell = lambda tree: [{k: cell.asarray(v) for k, v in p.items()} for p in tree]  # noqa: E731
    p = p0 = to_cell(params)
    before = [cell.to_numpy(a) for a in leaves(p0)]
    state = opt.init(p)
    for step, (g, want) in enumerate(zip(grads, torch_steps), 1):
        p, state = opt.update(p, to_cell(g), state)
        if step in (1, 2, STEPS):
            for i, (got, w) in enumerate(zip(leaves(p), want)):
                cell.assert_close(got, w, "train", f"{name}: param {i} after {step} update(s)")
    for a in leaves(p) + leaves(state):  # new arrays, on the cell's device, in its dtype
        assert array_api_compat.device(a) == cell.backend.device
        assert a.dtype == cell.backend.dtype(cell.dtype)
    for a, b in zip(leaves(p0), before):  # the caller's arrays were not changed
        np.testing.assert_array_equal(cell.to_numpy(a), b)
