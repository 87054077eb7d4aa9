"""The layer protocol owns shapes: a user's layer, written as docs/new-layer.md
says and registered with ``mlp.register_layer``, trains, round-trips through a
checkpoint and shows the right parameter total in ``summary()``."""
import re

import numpy as np
import pytest

import mlp
from mlp import checkpoint
from mlp.layers import LAYERS
from mlp.tree import leaves


class Scale(mlp.Layer):
    """y = x * s, one learned scale per feature (docs/new-layer.md)."""
    has_params = True

    def __init__(self, width):
        self.width = width

    def init(self, rng):
        return {"s": np.ones(self.width)}

    def param_shapes(self, width):
        return {"s": (self.width,)}

    def forward(self, xp, params, x, train=False, mask=None):
        s = params["s"]

        def backward(dy, need_dx=True):
            return dy * s, {"s": xp.sum(dy * x, axis=0)}

        return x * s, backward

    def config(self):
        return {"type": "Scale", "width": self.width}


class Bare(Scale):
    """The same layer without ``param_shapes``: the protocol's fallback reads them from ``init``."""

    param_shapes = mlp.Layer.param_shapes

    def config(self):
        return {"type": "Bare", "width": self.width}


@pytest.fixture(autouse=True)
def registered(monkeypatch):
    monkeypatch.setattr("mlp.layers.LAYERS", dict(LAYERS))
    mlp.register_layer(Scale)
    mlp.register_layer(Bare)


def model_with(layer_cls, cell):
    return mlp.Sequential(mlp.Linear(6, 8), layer_cls(8), mlp.ReLU(), mlp.Linear(8, 3),
                          backend=cell.spec, dtype=cell.dtype, seed=1)


@pytest.mark.parametrize("layer_cls", [Scale, Bare])
def test_user_layer_summary_total_is_num_params(cell, layer_cls):
    model = model_with(layer_cls, cell)
    total = int(re.search(r"Total params: ([\d,]+)", model.summary()).group(1).replace(",", ""))
    assert total == model.num_params == 6 * 8 + 8 + 8 + 8 * 3 + 3
    assert layer_cls(8).param_shapes(8) == {"s": (8,)}


def test_user_layer_trains_and_round_trips_a_checkpoint(cell, tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.random((60, 6)), rng.integers(0, 3, 60)
    model = model_with(Scale, cell)
    s0 = np.asarray(model.backend.to_numpy(model.params[1]["s"]))
    model.fit(x, y, epochs=2, batch_size=16)
    assert not np.array_equal(np.asarray(model.backend.to_numpy(model.params[1]["s"])), s0)  # it learned
    path = str(tmp_path / "scale.safetensors")
    checkpoint.save(model, path)
    again, _ = checkpoint.load(path, backend=cell.spec)
    assert [type(layer) for layer in again.layers] == [type(layer) for layer in model.layers]
    for a, b in zip(leaves(model.state()["params"]), leaves(again.state()["params"])):
        np.testing.assert_array_equal(a, b)
    h1, h2 = model.fit(x, y, epochs=1, batch_size=16), again.fit(x, y, epochs=1, batch_size=16)
    assert h1["loss"] == h2["loss"] and h1["step_loss"][-4:] == h2["step_loss"][-4:]


def test_a_layer_that_fixes_the_width_checks_its_neighbours():
    with pytest.raises(mlp.ShapeError, match=r"layer 1 Fixed\(\) expects \[B x 5\], but layer 0"):
        class Fixed(Scale):
            in_width = property(lambda self: self.width)
        mlp.Sequential(mlp.Linear(6, 8), Fixed(5))


def test_register_layer_refuses_what_is_not_a_layer_or_a_second_class_of_a_name():
    with pytest.raises(TypeError, match="Layer subclass"):
        mlp.register_layer(int)
    clash = type("Scale", (mlp.Layer,), {})
    with pytest.raises(ValueError, match="already registered as 'Scale'"):
        mlp.register_layer(clash)


def test_state_round_trips_through_from_config(cell):
    rng = np.random.default_rng(2)
    x, y = rng.random((40, 6)), rng.integers(0, 3, 40)
    model = model_with(Scale, cell)
    model.fit(x, y, epochs=1, batch_size=16, optimizer="adam")
    state = model.state()
    twin = mlp.Sequential.from_config(state["config"], backend=cell.spec).load_state(state)
    assert twin.epoch == 1 and twin.history["loss"] == model.history["loss"]
    assert model.fit(x, y, epochs=1)["loss"] == twin.fit(x, y, epochs=1)["loss"]
