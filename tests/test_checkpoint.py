"""Checkpoints: every backend loads what NumPy wrote, resume is exact, bad files fail clearly."""
import json
import os
import struct

import numpy as np
import pytest

from mlp import backends
import mlp
from mlp import checkpoint, datasets
from mlp.checkpoint import CheckpointError
from mlp.tree import leaves

DATA = datasets.load("spirals")
X, Y = DATA.x_train[:256], DATA.y_train[:256]


def _host(model, tree):
    return [np.asarray(model.backend.to_numpy(a)) for a in leaves(tree)]


def _trained(dtype="float32", optimizer="adam", epochs=1, dropout=0.1, seed=3, backend="numpy"):
    model = mlp.MLP([2, 16, 8, 3], dropout=dropout, backend=backend, seed=seed, dtype=dtype)
    model.fit(X, Y, epochs=epochs, batch_size=32, optimizer=optimizer)
    return model


def test_loads_on_every_cell(cell, tmp_path):
    """A checkpoint written on NumPy loads on every backend and device, bit for bit;
    one written there loads back on NumPy."""
    ref = _trained(cell.dtype)
    path = str(tmp_path / "a.safetensors")
    checkpoint.save(ref, path, extra={"note": "numpy"})
    model, meta = checkpoint.load(path, backend=cell.spec)
    assert model.backend == cell.backend and model.dtype == cell.dtype
    for a, b in zip(_host(ref, ref.params), _host(model, model.params)):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    for a, b in zip(_host(ref, ref.opt_state), _host(model, model.opt_state)):
        assert np.array_equal(a, b)
    assert model.epoch == 1 and meta["extra"] == {"note": "numpy"}
    assert model.rng.bit_generator.state == ref.rng.bit_generator.state
    rtol, atol = cell.tol("forward")
    np.testing.assert_allclose(model.backend.to_numpy(model.predict_proba(X[:64])),
                               ref.predict_proba(X[:64]), rtol=rtol, atol=atol)
    # train on there, save there, load on NumPy
    model.fit(X, Y, epochs=1, batch_size=32)
    back_path = str(tmp_path / "b.safetensors")
    checkpoint.save(model, back_path)
    back, meta = checkpoint.load(back_path)
    assert back.backend.name == "numpy" and back.epoch == 2 and meta["backend"] == model.backend.spec
    for a, b in zip(_host(model, model.params), _host(back, back.params)):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam", "adamw"])
def test_resume_is_bit_identical(tmp_path, optimizer):
    """N epochs + save + load + M epochs == N + M epochs, with dropout (masks from the RNG)."""
    whole = _trained(optimizer=optimizer, epochs=5)
    part = _trained(optimizer=optimizer, epochs=3)
    path = str(tmp_path / "r.safetensors")
    checkpoint.save(part, path)
    resumed, _ = checkpoint.load(path)
    resumed.fit(X, Y, epochs=2, batch_size=32)
    assert resumed.epoch == 5
    for a, b in zip(leaves(whole.params) + leaves(whole.opt_state),
                    leaves(resumed.params) + leaves(resumed.opt_state)):
        assert np.array_equal(a, b)
    assert resumed.history["loss"] == whole.history["loss"]


def test_metadata_is_json(tmp_path):
    model = _trained()
    path = str(tmp_path / "m.safetensors")
    checkpoint.save(model, path, extra={"dataset": {"name": "spirals"}})
    with open(path, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
    meta = header.pop("__metadata__")
    assert meta["format"] == "mlp.checkpoint" and meta["format_version"] == "1"
    assert meta["mlp_version"] == mlp.__version__ and meta["epoch"] == "1"
    assert json.loads(meta["config"]) == model.config()
    assert json.loads(meta["optimizer"])["name"] == "adam"
    assert json.loads(meta["rng_state"])["bit_generator"] == "PCG64"
    assert set(header) == {"params.0.W", "params.0.b", "params.3.W", "params.3.b", "params.6.W", "params.6.b",
                           "opt.step", *(f"opt.{k}.{i}.{p}" for k in "mv" for i in (0, 3, 6) for p in "Wb")}


def test_model_without_optimizer(tmp_path):
    model = mlp.MLP([2, 4, 3], seed=1)
    path = str(tmp_path / "fresh.safetensors")
    checkpoint.save(model, path)
    loaded, meta = checkpoint.load(path)
    assert loaded.optimizer is None and meta["optimizer"] is None and loaded.epoch == 0
    assert all(np.array_equal(a, b) for a, b in zip(leaves(model.params), leaves(loaded.params)))


def test_atomic_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = str(tmp_path / "c.safetensors")
    first = _trained(epochs=1)
    checkpoint.save(first, path)
    before = open(path, "rb").read()

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save(_trained(epochs=2), path)
    assert open(path, "rb").read() == before
    assert os.listdir(tmp_path) == ["c.safetensors"]  # no temporary file left behind
    monkeypatch.undo()
    checkpoint.save(_trained(epochs=2), path)
    assert checkpoint.load(path)[0].epoch == 2 and os.listdir(tmp_path) == ["c.safetensors"]


def test_bad_files_raise_checkpoint_error(tmp_path):
    good = str(tmp_path / "good.safetensors")
    checkpoint.save(_trained(), good)
    raw = open(good, "rb").read()
    cases = {
        "garbage": b"this is not a checkpoint at all",
        "truncated": raw[: len(raw) // 2],
        "empty": b"",
    }
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(CheckpointError, match="not a readable safetensors file"):
            checkpoint.load(str(path))
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        checkpoint.load(str(tmp_path / "missing.safetensors"))

    from safetensors.numpy import save_file

    other = str(tmp_path / "other.safetensors")
    save_file({"w": np.zeros(3, np.float32)}, other)
    with pytest.raises(CheckpointError, match="not an mlp checkpoint"):
        checkpoint.load(other)

    tensors, meta = checkpoint.read(good)
    header = {k: json.dumps(meta[k]) for k in ("config", "optimizer", "rng_state", "history", "extra")}
    header.update(format="mlp.checkpoint", format_version="1", epoch="1")
    del tensors["params.3.W"]
    save_file(tensors, other, metadata=header)
    with pytest.raises(CheckpointError, match="params.3.W"):
        checkpoint.load(other)
    save_file({}, other, metadata={**header, "config": json.dumps({"layers": [{"type": "Conv9D"}]})})
    with pytest.raises(CheckpointError, match="unknown layer type 'Conv9D'"):
        checkpoint.load(other)
    save_file({}, other, metadata={**header, "format_version": "99"})
    with pytest.raises(CheckpointError, match="upgrade mlp"):
        checkpoint.load(other)
    assert issubclass(CheckpointError, mlp.MLPError)


def test_unsupported_dtype_on_target_says_so(tmp_path):
    path = str(tmp_path / "f64.safetensors")
    checkpoint.save(_trained("float64"), path)
    try:
        backends.get("array_api_strict:no_float64")
    except backends.BackendUnavailable as err:
        pytest.skip(str(err))
    with pytest.raises(backends.BackendUnavailable, match="float64"):
        checkpoint.load(path, backend="array_api_strict:no_float64")
