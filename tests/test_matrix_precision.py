"""Mixed precision (mlp.precision) on the precision cells: bfloat16 and TF32 products.

Every test here takes ``precision_cell`` (conftest.PRECISION_CELLS): float32
storage, matrix products under the cell's policy. The checks: each product is
within the format's error bound (and really rounded: not float32 in disguise),
the forward pass and the gradients against float64 autodiff within the
bfloat16/tf32 rows of TOLERANCES, training on the bundled digits against a
float32 run of the same backend, the CLI, checkpoints and ``to()``. The
refusals (a backend or dtype that cannot run a policy) need no cell.
"""
from __future__ import annotations

import functools
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import mlp
import oracles
from mlp import checkpoint, datasets

ROOT = pathlib.Path(__file__).resolve().parents[1]
BITS = {"bf16": 8, "tf32": 10}  # significand bits we count on: bfloat16 8; TF32 11, 10 if truncated


@functools.lru_cache(None)
def digits():
    return datasets.load("digits", seed=0)


# -- one product -----------------------------------------------------------------------
@pytest.mark.parametrize("k", [7, 64, 300])
def test_each_product_is_within_the_formats_bound_and_really_rounded(precision_cell, k):
    """``|got - a @ b| <= (3u + k 2^-23) (|a| @ |b|)`` elementwise: each input rounded
    (u each), the result rounded once more (PyTorch's bfloat16 output), float32 sums.
    And the error is far above float32's: the policy is not a silent float32 product."""
    cell = precision_cell
    rng = np.random.default_rng(k)
    a = rng.standard_normal((33, k)).astype("float32").astype("float64")
    b = rng.standard_normal((k, 17)).astype("float32").astype("float64")
    got = cell.backend.matmul(cell.asarray(a), cell.asarray(b), cell.precision)
    assert cell.backend.dtype_name(got.dtype) == "float32"
    u = 2.0 ** -BITS[cell.precision]
    err = np.abs(cell.to_numpy(got) - a @ b) / (np.abs(a) @ np.abs(b))
    assert err.max() <= 3 * u + k * 2.0 ** -23, f"{cell.id}: error {err.max():.3g} of sum|a b|"
    assert err.max() > u / 16, f"{cell.id}: error {err.max():.3g}: the product was not rounded to {cell.numerics}"


# -- forward and gradients against float64 -----------------------------------------------
MODELS = {
    "relu": lambda: mlp.MLP([64, 32, 10], "relu", seed=1, backend="numpy").layers,
    "tanh": lambda: mlp.MLP([64, 48, 24, 10], "tanh", seed=1, backend="numpy").layers,
    "gelu-nobias": lambda: mlp.MLP([64, 32, 10], "gelu", bias=False, seed=1, backend="numpy").layers,
}


def _batch(n=64):
    data = digits()
    return data.x_train[:n].astype("float32").astype("float64"), data.y_train[:n].astype("int64")


@pytest.mark.parametrize("name", MODELS)
def test_forward_and_gradients_against_float64_autodiff(precision_cell, name):
    cell = precision_cell
    model = mlp.Sequential(*MODELS[name](), seed=2, **cell.model_kwargs)
    params = [{k: cell.to_numpy(v) for k, v in p.items()} for p in model.params]  # float32 values
    x, y = _batch()
    want = x
    for layer, p in zip(model.layers, params):
        want = oracles.numpy_layer(layer, p, want)
    cell.assert_close(model.forward(x), want, "forward", f"{name}: outputs")
    value, grads = model.loss_and_grads(x, y)
    want_value, want_grads, _ = oracles.torch_model_grads(model.layers, params, x, y, "cross_entropy")
    cell.assert_close(value, np.asarray(want_value), "forward", f"{name}: loss")
    for i, (g, w) in enumerate(zip(grads, want_grads)):
        for k in w:  # relative to each gradient's largest element (gradients are << 1)
            scale = float(np.max(np.abs(w[k]))) or 1.0
            cell.assert_close(cell.to_numpy(g[k]) / scale, w[k] / scale, "grad", f"{name}: layer {i} d{k}")


# -- training on the digits --------------------------------------------------------------
@functools.lru_cache(None)
def trained(spec, precision, epochs=15):
    """(per-epoch losses, test accuracy, model) of a digits run on ``spec`` under ``precision``."""
    data = digits()
    model = mlp.MLP([64, 64, 10], backend=spec, precision=precision, seed=0)
    history = model.fit(data.x_train, data.y_train, epochs=epochs, batch_size=32)
    return np.array(history["loss"]), model.evaluate(data.x_test, data.y_test)["accuracy"], model


def test_training_matches_float32_on_the_digits(precision_cell):
    """Same backend, same seed and batches: the test accuracy within 1 percentage point
    of the float32 run's, and every epoch's loss within the "train" band of its loss."""
    cell = precision_cell
    want_losses, want_accuracy, _ = trained(cell.spec, "float32")
    losses, accuracy, model = trained(cell.spec, cell.precision)
    assert model.precision == cell.precision
    assert accuracy >= want_accuracy - 0.01, f"{cell.id}: test accuracy {accuracy:.2%} vs float32 {want_accuracy:.2%}"
    rtol, atol = cell.tol("train")
    band = rtol * want_losses + atol
    worst = int(np.argmax(np.abs(losses - want_losses) - band))
    assert np.all(np.abs(losses - want_losses) <= band), (
        f"{cell.id}: epoch {worst + 1} loss {losses[worst]:.4f} vs float32 {want_losses[worst]:.4f} "
        f"(band rtol {rtol}, atol {atol})")


def _cli(*args):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("MLP_BACKEND", None)
    return subprocess.run([sys.executable, "-m", "mlp", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def test_cli_trains_the_digits_to_96_percent(precision_cell):
    cell = precision_cell
    out = _cli("train", "--backend", cell.spec, "--precision", cell.precision, "--quiet", "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["precision"] == cell.precision and result["dtype"] == "float32"
    assert result["test_accuracy"] >= 0.96, result


# -- checkpoints and moving ------------------------------------------------------------------
def test_checkpoint_keeps_float32_weights_and_loads_on_numpy(precision_cell, tmp_path):
    """The file records the policy; NumPy refuses it with a message that says what to
    pass, loads the float32 master weights with precision="float32", and predicts the
    classes of the mixed-precision model on >= 99% of the test rows."""
    cell = precision_cell
    _, _, model = trained(cell.spec, cell.precision)
    path = tmp_path / "run.safetensors"
    checkpoint.save(model, path)
    same, meta = checkpoint.load(path, backend=cell.spec)
    assert same.precision == cell.precision and meta["config"]["precision"] == cell.precision
    with pytest.raises(mlp.PrecisionError, match=r"load anywhere with precision='float32'"):
        checkpoint.load(path, backend="numpy")
    host, _ = checkpoint.load(path, backend="numpy", precision="float32")
    assert host.precision == "float32" and host.dtype == "float32"
    for p, q in zip(model.params, host.params):
        for k in p:
            assert np.array_equal(cell.backend.to_numpy(p[k]), q[k]), f"{cell.id}: {k} changed"
    x = digits().x_test
    got = np.asarray(host.predict(x))
    want = cell.backend.to_numpy(model.predict(x))
    assert np.mean(got == want) >= 0.99, f"{cell.id}: {np.mean(got == want):.2%} of the rows agree"


def test_to_keeps_the_policy_and_refuses_a_backend_without_it(precision_cell):
    cell = precision_cell
    model = mlp.MLP([64, 8, 10], **cell.model_kwargs)
    before = model.params
    with pytest.raises(mlp.PrecisionError, match=rf"precision '{cell.precision}'.*numpy"):
        model.to("numpy")
    assert model.backend == cell.backend and model.params is before  # nothing moved
    model.to(cell.spec)
    assert model.precision == cell.precision
    assert "precision " + cell.precision in repr(model) and "precision " + cell.precision in model.summary()


def test_sklearn_estimator_takes_a_precision(precision_cell):
    pytest.importorskip("sklearn")
    from mlp.sklearn import MLPClassifier

    cell, data = precision_cell, digits()
    scores = {}
    for precision in ("float32", cell.precision):
        clf = MLPClassifier((64,), max_iter=20, random_state=0, backend=cell.spec, precision=precision)
        with pytest.warns(Warning):  # max_iter reached (ConvergenceWarning)
            clf.fit(data.x_train, data.y_train)
        assert clf.get_params()["precision"] == precision and clf._model.precision == precision
        scores[precision] = clf.score(data.x_test, data.y_test)
    assert scores[cell.precision] >= scores["float32"] - 0.01, scores


def test_no_process_wide_switch_is_left_flipped(precision_cell):
    """After training under the policy, the libraries' global matmul settings are as before."""
    cell = precision_cell

    def switches():
        found = {}
        if cell.name == "torch":
            import torch

            flags = torch.backends.cuda.matmul
            found["torch"] = getattr(flags, "fp32_precision", None), flags.allow_tf32
        if cell.name == "jax":
            import jax

            found["jax"] = jax.config.jax_default_matmul_precision
        if cell.name == "cupy":
            from cupy._core import _routines_linalg as linalg

            found["cupy"] = linalg.get_compute_type(np.float32)
        return found

    before = switches()
    model = mlp.MLP([64, 16, 10], **cell.model_kwargs)
    model.fit(digits().x_train[:256], digits().y_train[:256], epochs=1)
    assert switches() == before


# -- refusals: no cell needed ----------------------------------------------------------------
@pytest.mark.parametrize("spec, precision, names", [
    ("numpy", "bf16", "jax (cpu, gpu) and torch (cpu, cuda)"),
    ("array_api_strict", "bf16", "jax (cpu, gpu) and torch (cpu, cuda)"),
    ("jax:cpu", "tf32", "not on a CPU"),
    ("torch:cpu", "tf32", "not on a CPU"),
    ("numpy", "tf32", "not on a CPU"),
])
def test_a_policy_the_backend_cannot_run_is_a_clear_error(spec, precision, names):
    with pytest.raises(mlp.PrecisionError) as err:
        mlp.MLP([4, 3], backend=spec, precision=precision)
    text = str(err.value)
    assert f"precision {precision!r}" in text and "is not available on Backend(" in text and names in text


def test_a_policy_needs_float32_storage_and_a_known_name():
    with pytest.raises(mlp.PrecisionError, match=r"needs dtype 'float32', got 'float64'"):
        mlp.MLP([4, 3], backend="jax", dtype="float64", precision="bf16")
    with pytest.raises(mlp.PrecisionError, match=r"unknown precision 'fp8'; expected one of 'float32', 'tf32', 'bf16'"):
        mlp.MLP([4, 3], precision="fp8")
    assert mlp.MLP([4, 3]).config()["precision"] == "float32"


def test_cli_bf16_on_numpy_exits_2_with_one_line():
    out = _cli("train", "--precision", "bf16", "--backend", "numpy", "--epochs", "1")
    assert out.returncode == 2 and out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mlp: error: precision 'bf16'"), out.stderr
    assert "bf16 runs on jax (cpu, gpu) and torch (cpu, cuda)" in lines[0]


def test_cli_resume_and_evaluate_keep_or_change_the_policy(tmp_path, capsys):
    """A bf16 run's checkpoint: evaluate on NumPy needs --precision float32 (one line,
    exit 2, without it); --resume keeps bf16, or continues in float32 when asked."""
    pytest.importorskip("jax")
    from mlp import cli

    path = str(tmp_path / "run.safetensors")

    def run(*argv):
        status = cli.main(list(argv))
        out, err = capsys.readouterr()
        return status, (json.loads(out) if status == 0 else None), err

    common = ("--epochs", "1", "--hidden", "16", "--quiet", "--json")
    status, result, _ = run("train", "--backend", "jax", "--precision", "bf16", "--save", path, *common)
    assert status == 0 and result["precision"] == "bf16"
    status, _, err = run("evaluate", path, "--backend", "numpy")
    assert status == 2 and len(err.strip().splitlines()) == 1 and "--precision float32" in err, err
    status, result, _ = run("evaluate", path, "--backend", "numpy", "--precision", "float32", "--json")
    _, same, _ = run("evaluate", path, "--backend", "jax", "--json")
    assert status == 0 and result["precision"] == "float32" and same["precision"] == "bf16"
    assert abs(result["accuracy"] - same["accuracy"]) <= 0.01, (result["accuracy"], same["accuracy"])
    status, result, _ = run("train", "--resume", path, "--backend", "jax", *common)
    assert status == 0 and result["precision"] == "bf16" and result["epochs"] == 2
    status, result, _ = run("train", "--resume", path, "--backend", "numpy", "--precision", "float32", *common)
    assert status == 0 and result["precision"] == "float32" and result["epochs"] == 3
    _, meta = checkpoint.load(path, backend="numpy")
    assert meta["config"]["precision"] == "float32" and meta["extra"]["train"]["precision"] == "float32"
