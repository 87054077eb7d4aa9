"""Fuzzing the file readers: whatever the bytes, only our documented errors come out.

``MLP_FUZZ_EXAMPLES=5000 pytest tests/test_fuzz.py`` fuzzes longer.

Data loaders (IDX, CSV, NPZ) raise ``mlp.DataError``; the checkpoint loader raises
``mlp.checkpoint.CheckpointError``. What loads must be usable: finite features in
[0, 1] and class ids below the class count; a checkpoint that loads is the one saved.
"""
from __future__ import annotations

import gzip
import io
import json
import os
import tempfile
import zipfile

import numpy as np
import pytest
from hypothesis import example, given, HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import mlp
from mlp import checkpoint, datasets
from mlp.checkpoint import CheckpointError
from mlp.errors import DataError
from mlp.tree import leaves

# MLP_FUZZ_EXAMPLES=5000 fuzzes longer, with fresh random examples (the default run is repeatable)
LONG = int(os.environ.get("MLP_FUZZ_EXAMPLES", "0"))
FUZZ = settings(max_examples=LONG or 80, deadline=None, derandomize=not LONG, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
FOLDER = tempfile.mkdtemp(prefix="mlp-fuzz-")


def _file(name, data):
    path = os.path.join(FOLDER, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def _usable(data):
    assert isinstance(data, datasets.Dataset)
    for x, y in ((data.x_train, data.y_train), (data.x_test, data.y_test)):
        assert x.ndim == 2 and len(x) == len(y) and x.dtype == np.float32
        assert np.isfinite(x).all() and x.min() >= 0.0 and x.max() <= 1.0
        assert y.dtype == np.int64 and y.min() >= 0 and y.max() < data.n_classes
    assert data.x_train.shape[1] == data.x_test.shape[1]


# -- IDX ------------------------------------------------------------------------------------------
@st.composite
def idx_bytes(draw):
    """Mostly well-formed IDX headers (so the fuzzer reaches the body), with wrong parts."""
    magic = draw(st.sampled_from([b"\x00\x00\x08", b"\x00\x00\x0d", b"\x01\x00\x08", b""]))
    ndim = draw(st.integers(0, 6))
    dims = draw(st.lists(st.integers(0, 2**32 - 1) | st.integers(0, 12), min_size=0, max_size=ndim + 1))
    header = magic + bytes([ndim]) + b"".join(d.to_bytes(4, "big") for d in dims)
    body = draw(st.binary(max_size=300))
    data = header + body
    cut = draw(st.none() | st.integers(0, len(data)))
    return data if cut is None else data[:cut]


@FUZZ
@given(data=idx_bytes() | st.binary(max_size=200), gz=st.sampled_from(["plain", "gzip", "gz-name-only"]))
@example(data=b"\x00\x00\x08\x04" + b"\x00" * 4 + b"\x80\x00\x00\x00" * 3, gz="plain")  # found by fuzzing
def test_fuzz_idx(data, gz):
    if gz == "gzip":
        path = _file("f.idx.gz", gzip.compress(data))
    else:
        path = _file("f.idx.gz" if gz == "gz-name-only" else "f.idx", data)
    try:
        array = datasets.read_idx(path)
    except DataError:
        return
    assert isinstance(array, np.ndarray) and array.dtype == np.uint8


# -- CSV ------------------------------------------------------------------------------------------
CELLS = st.sampled_from(["0", "1", "2", "-1", "0.5", "1e308", "-1e308", "nan", "inf", "-inf", "",
                         " ", "a", "cat", "1e999", "0x10", "1_000", "\x00", "\u00e9", '"', "9" * 30]) | \
    st.floats(allow_nan=True, allow_infinity=True).map(repr) | st.text(max_size=4)


@st.composite
def csv_bytes(draw):
    rows = draw(st.lists(st.lists(CELLS, min_size=0, max_size=5), min_size=0, max_size=12))
    sep = draw(st.sampled_from([",", ";", ",,", "\t"]))
    text = "\n".join(sep.join(r) for r in rows)
    return text.encode(draw(st.sampled_from(["utf-8", "utf-16", "latin-1"])), errors="replace")


@FUZZ
@given(data=csv_bytes() | st.binary(max_size=200))
def test_fuzz_csv(data):
    path = _file("f.csv", data)
    try:
        loaded = datasets.load(f"csv:{path}")
    except DataError:
        return
    _usable(loaded)


# -- NPZ ------------------------------------------------------------------------------------------
DTYPES = st.sampled_from(["float64", "float32", "int8", "uint8", "int64", "bool", "complex64", "U3",
                          "float16", "datetime64[s]"])


def _arrays(draw, name):
    dtype = draw(DTYPES)
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=6))
    return hnp.arrays(np.dtype(dtype), shape) if dtype[0] not in "US" else \
        hnp.arrays(np.dtype(dtype), shape, elements=st.text("ab1", max_size=2))


@st.composite
def npz_bytes(draw):
    keys = draw(st.lists(st.sampled_from(["x", "y", "x_test", "y_test", "z"]), unique=True, max_size=5))
    arrays = {k: draw(_arrays(draw, k)) for k in keys}
    if draw(st.booleans()) and "x" in arrays:  # consistent x and y, so the fuzzer gets past the shapes
        n = draw(st.integers(1, 8))
        arrays["x"] = draw(hnp.arrays(np.dtype(draw(DTYPES.filter(lambda d: d[0] not in "US"))), (n, 3)))
        arrays["y"] = draw(hnp.arrays(np.int64, n, elements=st.integers(-2, 12)))
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    data = buf.getvalue()
    cut = draw(st.none() | st.integers(0, len(data)))
    if cut is not None:
        data = data[:cut]
    flips = draw(st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)), max_size=2))
    raw = bytearray(data)
    for pos, bit in flips:
        if raw:
            raw[pos % len(raw)] ^= bit
    return bytes(raw)


@FUZZ
@given(data=npz_bytes() | st.binary(max_size=100))
def test_fuzz_npz(data):
    path = _file("f.npz", data)
    try:
        loaded = datasets.load(f"npz:{path}")
    except DataError:
        return
    _usable(loaded)


def test_npz_member_that_is_not_an_array():
    """A zip member that is not an .npy array (here: text) is a DataError, not a crash."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("x.npy", "not an array")
        z.writestr("y.npy", "neither")
    with pytest.raises(DataError):
        datasets.load(f"npz:{_file('z.npz', buf.getvalue())}")


# -- checkpoints ------------------------------------------------------------------------------------
def _reference():
    model = mlp.MLP([3, 5, 2], seed=1)
    model.fit(np.random.default_rng(0).uniform(size=(16, 3)), np.arange(16) % 2, epochs=1, batch_size=8)
    path = checkpoint.save(model, os.path.join(FOLDER, "ref.safetensors"))
    return model, open(path, "rb").read()


REF, RAW = _reference()
HEADER_LEN = int.from_bytes(RAW[:8], "little")


def _same_as_reference(model):
    assert model.epoch == REF.epoch and model.config() == REF.config()
    for a, b in zip(leaves(REF.params), leaves(model.params)):
        assert np.array_equal(np.asarray(a), np.asarray(b))


@st.composite
def damaged_checkpoint(draw):
    raw = bytearray(RAW)
    kind = draw(st.sampled_from(["truncate", "flip", "header", "flip-header"]))
    if kind == "truncate":
        return bytes(raw[: draw(st.integers(0, len(raw) - 1))])
    if kind in ("flip", "flip-header"):
        top = 8 + HEADER_LEN if kind == "flip-header" else len(raw)
        for pos, bit in draw(st.lists(st.tuples(st.integers(0, top - 1), st.integers(1, 255)), min_size=1,
                                      max_size=3)):
            raw[pos] ^= bit
        return bytes(raw)
    # rewrite one header field with any JSON-ish text, keeping the file well-formed safetensors
    from safetensors.numpy import save

    tensors, _ = checkpoint.read(os.path.join(FOLDER, "ref.safetensors"))
    from safetensors import safe_open

    with safe_open(os.path.join(FOLDER, "ref.safetensors"), framework="numpy") as f:
        meta = dict(f.metadata())
    json_values = st.recursive(st.none() | st.booleans() | st.integers(-3, 10**12) | st.floats() | st.text(max_size=5),
                               lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
                               max_leaves=8)
    key = draw(st.sampled_from(sorted(meta) + ["new"]))
    meta[key] = draw(json_values.map(json.dumps) | st.text(max_size=20))
    if draw(st.booleans()):
        meta.pop("crc32", None)  # as if edited by hand, so the edit reaches the parser
    return save(tensors, metadata=meta)


def test_checkpoint_names_are_never_called_blindly(monkeypatch):
    """The file names its RNG's bit generator; only NumPy's bit generators are accepted,
    so a file cannot make load call another numpy.random function (np.random.seed here)."""
    tensors, _ = checkpoint.read(os.path.join(FOLDER, "ref.safetensors"))
    from safetensors import safe_open
    from safetensors.numpy import save

    with safe_open(os.path.join(FOLDER, "ref.safetensors"), framework="numpy") as f:
        meta = dict(f.metadata())
    meta.pop("crc32")
    meta["rng_state"] = json.dumps({"bit_generator": "seed"})
    called = []
    monkeypatch.setattr(np.random, "seed", lambda *a: called.append(a))
    with pytest.raises(CheckpointError, match="unknown bit generator 'seed'"):
        checkpoint.load(_file("seed.safetensors", save(tensors, metadata=meta)))
    assert not called


@FUZZ
@given(data=damaged_checkpoint() | st.binary(max_size=300))
def test_fuzz_checkpoint(data):
    path = _file("c.safetensors", data)
    try:
        model, _ = checkpoint.load(path)
    except CheckpointError:
        return
    if data != RAW and b"crc32" in data:
        _same_as_reference(model)  # with a checksum, what loads is exactly what was saved
