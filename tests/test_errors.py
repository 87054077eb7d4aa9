"""Bad input gets one clear error before any training starts, and nothing is lost.

``CASES`` holds every bad input of docs/errors.md; ``test_docs_table`` runs each
and compares the error with the table's row, so the table cannot go stale.
Regenerate the rows with ``python tests/test_errors.py`` (then read them over).
"""
from __future__ import annotations

import json
import os
import re
import tempfile

import numpy as np
import pytest
from safetensors.numpy import save_file

import backends
import mlp
from mlp import checkpoint, cli, datasets
from mlp.checkpoint import CheckpointError
from mlp.errors import (DataError, DeviceMismatch, is_out_of_memory, MLPError, OutOfMemory, ShapeError,
                        TrainingDiverged)
from mlp.layers import Linear, ReLU
from mlp.tree import leaves, tree_map

DOC = os.path.join(os.path.dirname(__file__), os.pardir, "docs", "errors.md")
CASES = {}


def case(name, tried):
    def register(fn):
        CASES[name] = (tried, fn)
        return fn
    return register


def mnist_like(**kw):
    return mlp.MLP([784, 16, 10], **kw)


def small(**kw):
    return mlp.MLP([4, 8, 3], **kw)


X4 = np.random.default_rng(0).uniform(size=(12, 4))
Y4 = np.arange(12) % 3


# -- shapes -------------------------------------------------------------------------------
@case("x-width", "`[4 x 2]` to `MLP([784, 16, 10])`")
def _():
    mnist_like().predict(np.zeros((4, 2)))


@case("x-one-sample", "one sample `[784]` to `predict`")
def _():
    mnist_like().predict(np.zeros(784))


@case("x-images", "images `[4 x 28 x 28]` unflattened")
def _():
    mnist_like().fit(np.zeros((4, 28, 28)), np.zeros(4, int))


@case("layers", "`Sequential(Linear(784, 16), ReLU(), Linear(32, 10))`")
def _():
    mlp.Sequential(Linear(784, 16), ReLU(), Linear(32, 10))


@case("val-width", "validation x `[3 x 5]` to a 4-input model")
def _():
    small().fit(X4, Y4, validation_data=(np.zeros((3, 5)), np.zeros(3, int)))


# -- data ---------------------------------------------------------------------------------
@case("x-empty", "`fit` on `[0 x 4]`")
def _():
    small().fit(np.zeros((0, 4)), np.zeros(0, int))


@case("x-empty-list", "`fit([], [])`")
def _():
    small().fit([], [])


@case("x-ragged", "rows of different lengths `[[1, 2, 3, 4], [1, 2]]`")
def _():
    small().predict([[1, 2, 3, 4], [1, 2]])


@case("x-strings", "x of strings")
def _():
    small().fit(np.full((2, 4), "a"), np.zeros(2, int))


@case("x-complex", "x of complex numbers")
def _():
    small().fit(np.ones((2, 4), complex), np.zeros(2, int))


@case("x-object", "x of dtype object (`None` inside)")
def _():
    small().fit(np.array([[1, 2, None, 4]]), np.zeros(1, int))


@case("x-nan", "NaN in row 7")
def _():
    x = X4.copy()
    x[7, 2] = np.nan
    small().fit(x, Y4)


@case("x-inf", "infinity in row 3 of `predict` input")
def _():
    x = X4.copy()
    x[3, 0] = np.inf
    small().predict(x)


@case("y-length", "12 rows, 11 labels")
def _():
    small().fit(X4, Y4[:11])


@case("y-range", "class id 3 for a 3-output model")
def _():
    small().fit(X4, np.where(np.arange(12) == 5, 3, Y4))


@case("y-negative", "class id -1")
def _():
    small().fit(X4, np.where(np.arange(12) == 2, -1, Y4))


@case("y-float", "float labels `[0.0, 1.0, ...]` for cross-entropy")
def _():
    small().fit(X4, Y4.astype(float))


@case("y-fraction", "labels `0.5` for cross-entropy")
def _():
    small().fit(X4, np.full(12, 0.5))


@case("y-strings", "string labels `'cat'`, `'dog'`")
def _():
    small().fit(X4, np.array(["cat", "dog"] * 6))


@case("y-onehot", "one-hot targets `[12 x 5]` for 3 outputs")
def _():
    small().fit(X4, np.eye(5)[Y4])


@case("y-onehot-strings", "one-hot targets of strings")
def _():
    small().fit(X4, np.full((12, 3), "1"))


@case("y-mse-complex", "complex targets for `mse`")
def _():
    small(loss="mse").fit(X4, np.ones((12, 3), complex))


@case("y-mse-nan", "NaN target in row 4 for `mse`")
def _():
    y = np.zeros((12, 3))
    y[4, 1] = np.nan
    small(loss="mse").fit(X4, y)


@case("batch-size", "`batch_size=0`")
def _():
    small().fit(X4, Y4, batch_size=0)


# -- devices ------------------------------------------------------------------------------
@case("torch-to-numpy", "a torch tensor to a NumPy model")
def _():
    torch = pytest.importorskip("torch")
    small().predict(torch.zeros(2, 4))


@case("jax-to-torch", "a JAX array to a torch model")
def _():
    jnp = pytest.importorskip("jax.numpy")
    pytest.importorskip("torch")
    small(backend="torch").predict(jnp.zeros((2, 4)))


@case("device2-to-device1", "an array_api_strict array on device2 to a model on device1")
def _():
    xps = pytest.importorskip("array_api_strict")
    small(backend="array_api_strict:device1").predict(xps.asarray(X4, device=xps.Device("device2")))


@case("torch-labels", "torch labels to a NumPy model")
def _():
    torch = pytest.importorskip("torch")
    small().fit(X4, torch.zeros(12, dtype=torch.int64))


# -- training -----------------------------------------------------------------------------
@case("diverged", "SGD with `lr=1e30`")
def _():
    with np.errstate(all="ignore"):
        small().fit(X4, Y4, optimizer=mlp.optimizers.SGD(lr=1e30), epochs=3, batch_size=4)


def _oom_step(error, model, after=0):
    """Replace ``model``'s train step by one that raises ``error`` after ``after`` good steps."""
    if model.optimizer is None:
        model.set_optimizer("adam")
    real_train_step = model.train_step
    calls = [0]

    def train_step(*a, **k):
        real = real_train_step(*a, **k)

        def step(*args):
            calls[0] += 1
            if calls[0] > after:
                raise error
            return real(*args)

        return step

    model.train_step = train_step


@case("oom-memoryerror", "`MemoryError` in a train step")
def _():
    model = small()
    _oom_step(MemoryError("Unable to allocate 16.0 GiB"), model)
    model.fit(X4, Y4, batch_size=4)


@case("oom-torch", "`torch.OutOfMemoryError` (simulated)")
def _():
    model = small()
    err = type("OutOfMemoryError", (RuntimeError,), {"__module__": "torch"})
    _oom_step(err("CUDA out of memory. Tried to allocate 20.00 GiB"), model)
    model.fit(X4, Y4, batch_size=4)


@case("oom-jax", "JAX `XlaRuntimeError: RESOURCE_EXHAUSTED` (simulated)")
def _():
    model = small()
    err = type("XlaRuntimeError", (RuntimeError,), {"__module__": "jaxlib.xla_extension"})
    _oom_step(err("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 17179869184 bytes."), model)
    model.fit(X4, Y4, batch_size=4)


@case("oom-cupy", "`cupy.cuda.memory.OutOfMemoryError` (simulated)")
def _():
    model = small()
    err = type("OutOfMemoryError", (MemoryError,), {"__module__": "cupy.cuda.memory"})
    _oom_step(err("Out of memory allocating 17,179,869,184 bytes"), model)
    model.fit(X4, Y4, batch_size=4)


# -- checkpoints --------------------------------------------------------------------------
def _good(path="good.safetensors"):
    model = small()
    model.fit(X4, Y4, epochs=1, batch_size=4)
    checkpoint.save(model, path)
    return path


def _header(path):
    tensors, meta = checkpoint.read(path)
    header = {k: json.dumps(meta[k]) for k in ("config", "optimizer", "rng_state", "history", "extra")}
    header.update(format="mlp.checkpoint", format_version="1", epoch=str(meta["epoch"]))
    return tensors, header


@case("ckpt-missing", "a path with no file")
def _():
    checkpoint.load("missing.safetensors")


@case("ckpt-truncated", "a checkpoint cut in half")
def _():
    raw = open(_good(), "rb").read()
    open("cut.safetensors", "wb").write(raw[: len(raw) // 2])
    checkpoint.load("cut.safetensors")


@case("ckpt-corrupt", "a checkpoint with its header bytes overwritten")
def _():
    raw = bytearray(open(_good(), "rb").read())
    raw[8:40] = b"#" * 32
    open("bad.safetensors", "wb").write(bytes(raw))
    checkpoint.load("bad.safetensors")


@case("ckpt-bitflip", "a checkpoint with one bit of a weight flipped")
def _():
    raw = bytearray(open(_good(), "rb").read())
    raw[-5] ^= 0x10
    open("flipped.safetensors", "wb").write(bytes(raw))
    checkpoint.load("flipped.safetensors")


@case("ckpt-text", "a text file")
def _():
    open("notes.txt", "w").write("these are my notes\n")
    checkpoint.load("notes.txt")


@case("ckpt-pickle", "a pickle file (`torch.save`); never unpickled")
def _():
    # the bytes of pickle.dumps({"w": 1}, protocol=4): written by hand, no pickle import
    open("model.pt", "wb").write(b"\x80\x04\x95\x0b\x00\x00\x00\x00\x00\x00\x00}\x94\x8c\x01w\x94K\x01s.")
    checkpoint.load("model.pt")


@case("ckpt-foreign", "a safetensors file from another program")
def _():
    save_file({"w": np.zeros(3, np.float32)}, "other.safetensors")
    checkpoint.load("other.safetensors")


@case("ckpt-version", "a checkpoint of a future format (99)")
def _():
    tensors, header = _header(_good())
    save_file(tensors, "future.safetensors", metadata={**header, "format_version": "99"})
    checkpoint.load("future.safetensors")


@case("ckpt-version-bad", "a checkpoint with format version `'x'`")
def _():
    tensors, header = _header(_good())
    save_file(tensors, "odd.safetensors", metadata={**header, "format_version": "x"})
    checkpoint.load("odd.safetensors")


@case("ckpt-weights", "weights that do not fit the saved architecture")
def _():
    tensors, header = _header(_good())
    tensors["params.0.W"] = np.zeros((5, 8), np.float32)
    save_file(tensors, "mixed.safetensors", metadata=header)
    checkpoint.load("mixed.safetensors")


@case("ckpt-header-json", "a checkpoint whose config is not JSON")
def _():
    tensors, header = _header(_good())
    save_file(tensors, "json.safetensors", metadata={**header, "config": "{not json"})
    checkpoint.load("json.safetensors")


@case("ckpt-into-other", "`load_weights` of a 4-8-3 checkpoint into `MLP([4, 9, 3])`")
def _():
    checkpoint.load_weights(mlp.MLP([4, 9, 3]), _good())


@case("ckpt-resume-other-data", "`mlp train --resume` a 4-8-3 checkpoint on digits")
def _():
    return _cli("train", "--resume", _good(), "--quiet")


# -- data files ---------------------------------------------------------------------------
@case("idx-magic", "an IDX file with a wrong magic number")
def _():
    open("images.idx", "wb").write(b"\x00\x00\x0d\x03" + b"\x00" * 12)
    datasets.read_idx("images.idx")


@case("idx-truncated", "an IDX file shorter than its header says")
def _():
    open("images.idx", "wb").write(b"\x00\x00\x08\x03" + (2).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + b"\x00" * 100)
    datasets.read_idx("images.idx")


@case("idx-gzip", "a `.gz` IDX file that is not gzip")
def _():
    open("labels.idx.gz", "wb").write(b"\x00\x00\x08\x01\x00\x00\x00\x02\x01\x02")
    datasets.read_idx("labels.idx.gz")


@case("csv-ragged", "a CSV file with rows of 3 and 4 columns")
def _():
    open("data.csv", "w").write("1,2,0\n3,4,5,1\n")
    datasets.load("csv:data.csv")


@case("csv-text", "a CSV file with a word among the features")
def _():
    open("data.csv", "w").write("a,b,label\n1,2,0\n3,four,1\n")
    datasets.load("csv:data.csv")


@case("csv-nan", "a CSV file with `nan` in a feature")
def _():
    open("data.csv", "w").write("1,2,0\n3,nan,1\n5,6,0\n")
    datasets.load("csv:data.csv")


@case("csv-binary", "a binary file named `.csv`")
def _():
    open("data.csv", "wb").write(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe")
    datasets.load("csv:data.csv")


@case("npz-not-zip", "a text file named `.npz`")
def _():
    open("data.npz", "w").write("x,y\n")
    datasets.load("npz:data.npz")


@case("npz-keys", "an `.npz` without `x` and `y`")
def _():
    np.savez("data.npz", a=np.zeros(3))
    datasets.load("npz:data.npz")


@case("npz-object", "an `.npz` whose `x` is an object array")
def _():
    # an .npy header declaring dtype object (whose body would be a pickle), written by hand
    header = "{'descr': '|O', 'fortran_order': False, 'shape': (4, 2), }"
    header = header.ljust(64 - 10 - 1) + "\n"
    npy = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode() + b"never unpickled"
    import zipfile

    with zipfile.ZipFile("data.npz", "w") as z:
        z.writestr("x.npy", npy)
        z.writestr("y.npy", npy)
    datasets.load("npz:data.npz")


@case("npz-strings", "an `.npz` whose `x` holds strings")
def _():
    np.savez("data.npz", x=np.full((4, 2), "a"), y=np.zeros(4))
    datasets.load("npz:data.npz")


@case("npz-test-width", "an `.npz` with `x` `[6 x 2]` but `x_test` `[2 x 3]`")
def _():
    np.savez("data.npz", x=np.zeros((6, 2)), y=np.zeros(6), x_test=np.zeros((2, 3)), y_test=np.zeros(2))
    datasets.load("npz:data.npz")


# -- the command ----------------------------------------------------------------------------
def _cli(*argv):
    """``('exit N', first stderr line)`` of ``mlp ARGV`` (the command prints no traceback)."""
    import contextlib
    import io

    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        status = cli.main(list(argv))
    lines = [line for line in err.getvalue().splitlines() if line.startswith("mlp:")]
    assert "Traceback" not in err.getvalue()
    return f"exit {status}", lines[-1] if lines else ""


@case("cli-diverged", "`mlp train --save run.safetensors`, diverging in epoch 3")
def _():
    return _diverging_cli_run()


@case("cli-oom", "`mlp train --batch-size 4096` out of memory (simulated)")
def _():
    return _cli_oom()


# -- precision policies (mlp.precision, docs/precision.md) -----------------------------------
@case("precision-backend", "`MLP([4, 8, 3], precision=\"bf16\")` on NumPy")
def _():
    small(precision="bf16")


@case("precision-dtype", "`precision=\"bf16\"` with `dtype=\"float64\"`")
def _():
    small(precision="bf16", dtype="float64", backend="jax")


@case("precision-name", "`precision=\"fp8\"`")
def _():
    small(precision="fp8")


@case("precision-checkpoint", "a bf16 checkpoint loaded on NumPy without `precision=\"float32\"`")
def _():
    checkpoint.save(small(precision="bf16", backend="torch"), "bf16.safetensors")
    checkpoint.load("bf16.safetensors", backend="numpy")


@case("cli-precision", "`mlp train --precision bf16 --backend numpy`")
def _():
    return _cli("train", "--precision", "bf16", "--backend", "numpy")


# -- running the cases ------------------------------------------------------------------------
def run_case(name):
    """``(error type or 'exit N', message)`` of one case."""
    try:
        result = CASES[name][1]()
    except Exception as err:  # noqa: BLE001 - that is what we record
        return type(err).__name__, str(err)
    if result is None:
        raise AssertionError(f"case {name} raised nothing")
    return result


def doc_rows():
    """``{name: (tried, error, message)}`` from the table in docs/errors.md."""
    rows = {}
    for line in open(DOC, encoding="utf-8"):
        m = re.match(r"^\| `([a-z0-9-]+)` \| (.*) \| `([^`]+)` \| `(.*)` \|$", line.rstrip("\n"))
        if m:
            rows[m.group(1)] = m.group(2), m.group(3), m.group(4)
    return rows


def _matches(doc, actual):
    """The doc's message, where ``...`` stands for text that varies (versions, library wording)."""
    pattern = ".*".join(re.escape(part) for part in doc.split("..."))
    return re.fullmatch(pattern, actual, re.S) is not None


def test_every_case_is_in_the_docs():
    assert sorted(doc_rows()) == sorted(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_docs_table(name, tmp_path, monkeypatch):
    """Each bad input of docs/errors.md gets exactly the error and message written there."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLP_BACKEND", raising=False)
    monkeypatch.delenv("MLP_DEVICE", raising=False)
    rows = doc_rows()
    assert name in rows, f"{name} has no row in docs/errors.md"
    kind, message = run_case(name)
    _, doc_kind, doc_message = rows[name]
    assert kind == doc_kind, (kind, message)
    assert _matches(doc_message, message), f"\ndocs:   {doc_message}\nactual: {message}"
    if not kind.startswith("exit"):  # only our documented errors (and ValueError for bad arguments)
        assert kind in ("ShapeError", "DataError", "DeviceMismatch", "TrainingDiverged", "OutOfMemory",
                        "CheckpointError", "PrecisionError", "ValueError"), kind


# -- before any training --------------------------------------------------------------------
FIT_CASES = [n for n in CASES if n.startswith(("x-", "y-", "val-", "torch-labels", "batch"))]


@pytest.mark.parametrize("name", FIT_CASES)
def test_bad_data_changes_nothing(name, monkeypatch):
    """The error comes before any step: weights, optimizer steps, epoch and RNG are untouched."""
    made = []
    real = mlp.Sequential.__init__

    def init(self, *a, **k):
        real(self, *a, **k)
        made.append((self, [np.array(self.backend.to_numpy(p)) for p in leaves(self.params)],
                     self.rng.bit_generator.state))

    monkeypatch.setattr(mlp.Sequential, "__init__", init)
    kind, _ = run_case(name)
    assert kind in ("ShapeError", "DataError", "DeviceMismatch", "ValueError")
    for model, before, rng in made:
        assert model.epoch == 0 and model.traces == 0 and model.rng.bit_generator.state == rng
        for a, b in zip(before, leaves(model.params)):
            assert np.array_equal(a, model.backend.to_numpy(b))


# -- the matrix -------------------------------------------------------------------------------
def _foreign(cell, host):
    """``host`` as an array of another library or device than ``cell``'s."""
    if cell.name == "array_api_strict":
        import array_api_strict as xps

        other = "device2" if "device1" in cell.spec else "device1"
        return xps.asarray(host, device=xps.Device(other)), other
    if cell.name == "torch":
        jnp = pytest.importorskip("jax.numpy")
        return jnp.asarray(host), "jax"
    torch = pytest.importorskip("torch")
    return torch.asarray(host), "torch"


def test_foreign_and_device_arrays(cell):
    """On every cell: arrays of another library or device are refused naming both sides;
    the model's own device arrays get the same checks as host data."""
    model = mlp.MLP([4, 8, 3], backend=cell.spec, dtype=cell.dtype)
    foreign, name = _foreign(cell, X4.astype(cell.dtype))
    for call in (lambda: model.predict(foreign), lambda: model.fit(foreign, Y4),
                 lambda: model.evaluate(X4, _foreign(cell, Y4.astype("int32"))[0])):
        with pytest.raises(DeviceMismatch) as info:
            call()
        text = str(info.value)
        assert name in text and cell.backend.name in text and cell.backend.device_name in text, text
    b = cell.backend
    own = b.asarray(X4.astype(cell.dtype), cell.dtype)
    assert model.predict(own).shape == (12,)  # the model's own arrays need no copy
    bad = X4.astype(cell.dtype)
    bad[5, 1] = np.nan
    with pytest.raises(DataError, match="first is in row 5"):
        model.fit(b.asarray(bad, cell.dtype), Y4)
    with pytest.raises(ShapeError, match=r"expects \[B x 4\], got x \[12 x 3\]"):
        model.predict(b.asarray(X4[:, :3].astype(cell.dtype), cell.dtype))
    assert model.epoch == 0


# -- divergence ------------------------------------------------------------------------------
def test_diverged_fit_keeps_the_last_good_epoch():
    """TrainingDiverged names the epoch; the model keeps the weights of the epoch before."""
    model = small(seed=1)
    model.fit(X4, Y4, epochs=2, batch_size=4)
    good = [np.array(p) for p in leaves(model.params)]
    rng = model.rng.bit_generator.state
    with np.errstate(all="ignore"), pytest.raises(TrainingDiverged) as info:
        model.fit(X4, Y4, epochs=3, batch_size=4, optimizer=mlp.optimizers.SGD(lr=1e30))
    assert info.value.epoch == 3 and info.value.step >= 1 and "epoch 3" in str(info.value)
    assert model.epoch == 2 and len(model.history["loss"]) == 2
    assert all(np.array_equal(a, b) for a, b in zip(good, leaves(model.params)))
    assert model.rng.bit_generator.state == rng


def test_interrupted_fit_is_the_last_finished_epoch_exactly():
    """Ctrl-C in the middle of epoch 3 leaves the model as epoch 2 left it (weights,
    optimizer state, RNG, history), so training on gives exactly the uninterrupted run."""
    whole = small(seed=2, dropout=0.2)
    whole.fit(X4, Y4, epochs=4, batch_size=4)
    model = small(seed=2, dropout=0.2)
    model.fit(X4, Y4, epochs=2, batch_size=4)

    def interrupt(step, n_steps):
        if step == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        model.fit(X4, Y4, epochs=2, batch_size=4, on_batch=interrupt)
    assert model.epoch == 2 and len(model.history["loss"]) == 2 and len(model.history["step_loss"]) == 6
    model.fit(X4, Y4, epochs=2, batch_size=4)
    for a, b in zip(leaves(whole.params) + leaves(whole.opt_state), leaves(model.params) + leaves(model.opt_state)):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    assert model.history["loss"] == whole.history["loss"]


def _sabotage(monkeypatch, from_epoch):
    """Make the weights NaN once ``from_epoch`` starts: the loss of its next step is NaN."""
    real = mlp.Sequential._epochs

    def epochs(self, *args, **kwargs):
        real_train_step = self.train_step

        def train_step(*a, **k):
            real_step = real_train_step(*a, **k)

            def step(params, *rest):
                if self.epoch + 1 >= from_epoch:
                    params = tree_map(lambda v: v * float("nan"), params)
                return real_step(params, *rest)

            return step

        self.train_step = train_step
        try:
            return real(self, *args, **kwargs)
        finally:
            del self.train_step

    monkeypatch.setattr(mlp.Sequential, "_epochs", epochs)


def _diverging_cli_run():
    import pytest as _pytest

    with _pytest.MonkeyPatch.context() as mp:
        _sabotage(mp, from_epoch=3)
        result = _cli("train", "--save", "run.safetensors", "--epochs", "5", "--hidden", "8", "--quiet")
    return result


def test_diverged_cli_run_keeps_the_checkpoint(tmp_path, monkeypatch):
    """One line, exit 2, and run.safetensors still holds epoch 2 and loads."""
    monkeypatch.chdir(tmp_path)
    status, line = _diverging_cli_run()
    assert status == "exit 2" and "diverged in epoch 3" in line and "run.safetensors holds epoch 2" in line
    model, meta = checkpoint.load("run.safetensors")
    assert model.epoch == 2 and meta["epoch"] == 2
    assert all(np.isfinite(np.asarray(p)).all() for p in leaves(model.params))
    status, line = _cli("train", "--resume", "run.safetensors", "--epochs", "1", "--quiet")
    assert status == "exit 0", line


# -- out of memory ----------------------------------------------------------------------------
def _cli_oom():
    import pytest as _pytest

    err = type("OutOfMemoryError", (RuntimeError,), {"__module__": "torch"})
    with _pytest.MonkeyPatch.context() as mp:
        real = mlp.Sequential._epochs

        def epochs(self, *args, **kwargs):
            _oom_step(err("CUDA out of memory. Tried to allocate 20.00 GiB"), self)
            try:
                return real(self, *args, **kwargs)
            finally:
                del self.train_step

        mp.setattr(mlp.Sequential, "_epochs", epochs)
        return _cli("train", "--batch-size", "4096", "--hidden", "8", "--quiet", "--epochs", "1")


def test_out_of_memory_keeps_the_last_epoch():
    model = small()
    _oom_step(MemoryError("Unable to allocate"), model, after=3)  # epoch 1 has 3 steps
    with pytest.raises(OutOfMemory, match="batch size 4") as info:
        model.fit(X4, Y4, epochs=2, batch_size=4)
    assert isinstance(info.value, MemoryError) and isinstance(info.value.__cause__, MemoryError)
    assert model.epoch == 1 and len(model.history["loss"]) == 1


def test_out_of_memory_recognition():
    named = type("OutOfMemoryError", (Exception,), {})
    assert is_out_of_memory(MemoryError()) and is_out_of_memory(named("x"))
    assert is_out_of_memory(RuntimeError("RESOURCE_EXHAUSTED: Out of memory"))
    assert not is_out_of_memory(RuntimeError("shapes do not match"))
    assert not is_out_of_memory(ValueError("out of memory"))  # only runtime errors are read


def test_predict_out_of_memory_says_so(monkeypatch):
    model = small()
    model.forward(X4)  # compile
    monkeypatch.setitem(model._compiled, "infer", lambda *a: (_ for _ in ()).throw(MemoryError("no room")))
    with pytest.raises(OutOfMemory, match="forward pass over x: MemoryError: no room. Hint: pass fewer rows"):
        model.predict(X4)


if __name__ == "__main__":  # print the table rows of docs/errors.md from the real messages
    os.chdir(tempfile.mkdtemp())
    for name, (tried, _) in CASES.items():
        kind, message = run_case(name)
        print(f"| `{name}` | {tried} | `{kind}` | `{message}` |")
