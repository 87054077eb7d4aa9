"""ONNX export (mlp.onnx, ``mlp export``): the graph ONNX Runtime runs predicts what mlp predicts."""
import json

import numpy as np
import pytest

import mlp
from mlp import datasets, layers
from mlp.cli import main
from mlp.onnx import ExportError

ndonnx = pytest.importorskip("ndonnx", reason="ONNX export needs the onnx extra: pip install 'arraymlp[onnx]'")
onnx = pytest.importorskip("onnx", reason="ONNX export needs the onnx extra: pip install 'arraymlp[onnx]'")
ort = pytest.importorskip("onnxruntime", reason="running exported graphs needs onnxruntime (the onnx extra)")

RTOL, ATOL = 1e-5, 1e-6  # float32, as the matrix's forward tolerance (docs/testing.md)


def run_onnx(path, x):
    """``{output name: array}`` of the ONNX file at ``path`` on ``x``, in ONNX Runtime."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {"x": x})))


def assert_matches(model, path, x, rtol=RTOL, atol=ATOL):
    """The exported graph's logits, probabilities and labels are mlp's own."""
    out = run_onnx(path, x)
    host = model.backend.to_numpy
    np.testing.assert_allclose(out["logits"], host(model.forward(x)), rtol=rtol, atol=atol)
    np.testing.assert_allclose(out["probabilities"], host(model.predict_proba(x)), rtol=rtol, atol=atol)
    np.testing.assert_array_equal(out["labels"], host(model.predict(x)))


def _trained(layer_list, seed=0, dtype="float32"):
    """A small model, trained a few steps so that its biases are not zero."""
    model = mlp.Sequential(*layer_list, seed=seed, dtype=dtype)
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=(64, 6)), rng.integers(0, 3, 64)
    model.fit(x, y, epochs=2, batch_size=16)
    return model


@pytest.mark.parametrize("name", sorted(set(layers.ACTIVATIONS) - {"logistic", "linear"}))
def test_every_activation_and_dropout_exports_and_matches(name, tmp_path):
    model = _trained([mlp.Linear(6, 8), layers.activation(name), mlp.Dropout(0.3),
                      mlp.Linear(8, 5), layers.activation(name), mlp.Linear(5, 3)])
    path = tmp_path / f"{name}.onnx"
    model.export_onnx(path)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    x = np.random.default_rng(1).normal(size=(33, 6)).astype(np.float32) * 3
    assert_matches(model, path, x)
    assert run_onnx(path, x[:1])["logits"].shape == (1, 3)  # the batch axis is dynamic
    assert run_onnx(path, x[:0])["logits"].shape == (0, 3)


def test_float64_model_exports_a_float64_graph(tmp_path):
    model = _trained([mlp.Linear(6, 8), mlp.GELU(), mlp.Linear(8, 3)], dtype="float64")
    model.export_onnx(tmp_path / "m.onnx")
    x = np.random.default_rng(2).normal(size=(10, 6))
    assert_matches(model, tmp_path / "m.onnx", x, rtol=1e-12, atol=1e-12)


def test_models_on_every_cell_export(cell, tmp_path):
    """A model that lives on any backend exports the same graph as its NumPy twin."""
    model = mlp.MLP([6, 8, 3], "tanh", backend=cell.spec, dtype=cell.dtype, seed=3)
    model.export_onnx(tmp_path / "m.onnx")
    x = np.random.default_rng(3).normal(size=(9, 6)).astype(cell.dtype)
    cell.assert_close(model.forward(x), run_onnx(tmp_path / "m.onnx", x)["logits"], what="onnx logits")


def test_binary_and_regression_heads(tmp_path):
    binary = mlp.MLP([4, 6, 1], loss="binary_cross_entropy", seed=1)
    binary.export_onnx(tmp_path / "b.onnx")
    x = np.random.default_rng(4).normal(size=(20, 4)).astype(np.float32) * 4
    assert_matches(binary, tmp_path / "b.onnx", x)
    regression = mlp.MLP([4, 6, 2], loss="mse", seed=1)
    regression.export_onnx(tmp_path / "r.onnx")
    out = run_onnx(tmp_path / "r.onnx", x)
    assert sorted(out) == ["logits"]
    np.testing.assert_allclose(out["logits"], regression.forward(x), rtol=RTOL, atol=ATOL)


def test_an_input_scaling_per_feature_is_folded_in(tmp_path):
    model = mlp.MLP([4, 6, 3], seed=2)
    low, high = np.array([0.0, -1.0, 10.0, 5.0]), np.array([255.0, 1.0, 20.0, 5.0])  # a constant feature too
    model.export_onnx(tmp_path / "m.onnx", input_range=(low, high))
    raw = np.random.default_rng(5).uniform(-5, 300, size=(50, 4))
    scaled = np.clip((raw - low) / np.where(high > low, high - low, 1.0), 0.0, 1.0).astype(np.float32)
    got = run_onnx(tmp_path / "m.onnx", raw.astype(np.float32))
    np.testing.assert_allclose(got["probabilities"], model.predict_proba(scaled), rtol=RTOL, atol=ATOL)
    with pytest.raises(ExportError, match=r"input_range low must be a scalar or \[4\] values, got shape \[3\]"):
        model.export_onnx(tmp_path / "bad.onnx", input_range=(np.zeros(3), 1.0))


def test_the_graph_is_compact(tmp_path):
    """784-128-10: the file is within 20% of its raw weights; no If, no Identity detours."""
    model = mlp.MLP([784, 128, 10])
    proto = model.export_onnx(tmp_path / "m.onnx")
    raw = model.num_params * 4
    size = (tmp_path / "m.onnx").stat().st_size
    assert size <= 1.2 * raw, (size, raw)
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("MatMul") == 2 and ops.count("Identity") <= 1, ops


class Halves(mlp.Layer):
    """A layer that divides by the batch size: Python arithmetic on x.shape[0]."""

    def forward(self, xp, params, x, train=False, mask=None):
        return x / x.shape[0], lambda dy, need_dx=True: (dy / x.shape[0], {})


class Branchy(mlp.Layer):
    """A layer with Python control flow on array values."""

    def forward(self, xp, params, x, train=False, mask=None):
        if float(xp.max(x)) > 0:
            return x, lambda dy, need_dx=True: (dy, {})
        return -x, lambda dy, need_dx=True: (-dy, {})


@pytest.mark.parametrize("layer", [Halves(), Branchy()], ids=["batch-size", "control-flow"])
def test_a_layer_that_cannot_be_exported_is_named(layer, tmp_path):
    model = mlp.Sequential(mlp.Linear(4, 5), layer, mlp.Linear(5, 2))
    model.predict(np.ones((3, 4)))  # fine in mlp itself
    with pytest.raises(ExportError, match=rf"layer 1 {type(layer).__name__}\(\) cannot be exported to ONNX"):
        model.export_onnx(tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


# -- mlp export ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits_checkpoint(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("ckpt") / "digits.safetensors")
    assert main(["train", "--epochs", "3", "--hidden", "32", "--batch-size", "64", "--save", path,
                 "--quiet"]) == 0
    return path


def test_mlp_export_predicts_what_mlp_predict_does(digits_checkpoint, tmp_path, capsys, monkeypatch):
    """On every test row of digits, in raw units: the same classes, probabilities within 1e-5."""
    monkeypatch.delenv("MLP_BACKEND", raising=False)
    data = datasets.load("digits", seed=0)
    raw = (data.x_test * (np.asarray(data.high) - np.asarray(data.low)) + np.asarray(data.low))
    rows = tmp_path / "rows.npy"
    np.save(rows, raw)
    out = str(tmp_path / "digits.onnx")
    assert main(["export", digits_checkpoint, out]) == 0
    said = capsys.readouterr().out
    assert said.startswith(f"wrote {out}") and "logits, probabilities, labels" in said
    assert main(["predict", digits_checkpoint, str(rows), "--json", "--proba"]) == 0
    predicted = json.loads(capsys.readouterr().out)
    got = run_onnx(out, raw.astype(np.float32))
    assert len(got["labels"]) == len(raw) == 359
    np.testing.assert_array_equal(got["labels"], predicted["ids"])
    np.testing.assert_allclose(got["probabilities"], predicted["probabilities"], rtol=0, atol=1e-5)
    # --scaled: the graph takes [0, 1] data, as `mlp predict --scaled`
    assert main(["export", digits_checkpoint, out, "--scaled"]) == 0
    np.testing.assert_array_equal(run_onnx(out, data.x_test)["labels"], predicted["ids"])


def test_mlp_export_errors(tmp_path, capsys):
    assert main(["export", str(tmp_path / "missing.safetensors"), str(tmp_path / "m.onnx")]) == 2
    assert capsys.readouterr().err.startswith("mlp: error: no checkpoint at")
