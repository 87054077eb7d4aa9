"""Array operations per training step (each is a kernel launch on a GPU): the
counts of issue #14's targets, a fixed optimizer cost whatever the depth, and no
data moved between host and device inside a step. Counted with mlp.opcount on a
twin of the model, on every cell (the code, and so the count, is the same)."""
from __future__ import annotations

import pytest

import mlp
from mlp import opcount

MOVES = {"asarray", "to_device", "from_dlpack"}


@pytest.mark.parametrize("sizes, batch, most", [([784, 128, 10], 128, 40), ([784, 1024, 1024, 10], 512, 50)],
                         ids=["small", "large"])
def test_a_train_step_dispatches_few_operations(cell, sizes, batch, most):
    if sizes[1] > 128 and cell.name != "numpy":
        pytest.skip("the large config is counted on numpy (the count is the same code on every cell)")
    model = mlp.MLP(sizes, backend=cell.spec, dtype=cell.dtype)
    count = opcount.count_fit_step(model, batch)
    assert count.step <= most, f"{cell.id}: {count}"
    assert count.gather == 2, f"{cell.id}: {count}"
    assert not MOVES & set(count.by_name), f"{cell.id}: a step moves data: {count}"


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam", "adamw"])
def test_the_update_costs_the_same_whatever_the_depth(cell, optimizer):
    """Each added hidden layer adds its own forward and backward operations (8 with
    ReLU: matmul, bias add, max; two matmuls, a sum, sign and a product) and nothing
    in the optimizer."""
    counts = []
    for depth in (1, 2, 3):
        model = mlp.MLP([6] + [5] * depth + [3], backend=cell.spec, dtype=cell.dtype)
        counts.append(opcount.count_fit_step(model, 4, optimizer=optimizer).step)
    assert counts[2] - counts[1] == counts[1] - counts[0] == 8, f"{cell.id} {optimizer}: {counts}"


def test_the_count_is_of_the_real_fit_step():
    """The counting twin trains like the model: same losses (numpy, float64)."""
    model = mlp.MLP([5, 4, 3], dtype="float64", seed=2)
    backend, ns = opcount.counting_backend(model.backend)
    twin = mlp.Sequential.from_config(model.config(), backend=backend)
    import numpy as np

    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((20, 5)), rng.integers(0, 3, 20)
    a = model.fit(x, y, epochs=2, batch_size=8)["loss"]
    b = twin.fit(x, y, epochs=2, batch_size=8)["loss"]
    assert a == b and sum(ns.tally.ops.values()) > 0
