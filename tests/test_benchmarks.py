"""Smoke test of benchmarks/bench_train.py: the table has every implementation
and their losses agree. No timing is asserted (speed lives in the benchmark)."""
import importlib.util
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIBRARIES = {"mlp jax": "jax", "mlp torch": "torch", "JAX by hand": "jax", "PyTorch eager": "torch",
             "scikit-learn": "sklearn"}
LABELS = ["mlp numpy", "mlp jax", "mlp torch", "NumPy by hand", "JAX by hand", "PyTorch eager", "scikit-learn"]


def test_quick_benchmark_prints_every_implementation_and_losses_agree(tmp_path):
    out = tmp_path / "bench.json"
    run = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "bench_train.py"), "--quick", "--configs", "tiny", "--threads", "1",
         "--json", str(out)],
        capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    rows = json.loads(out.read_text())["results"]["tiny"]["rows"]
    expected = [k for k in LABELS if importlib.util.find_spec(LIBRARIES.get(k, "numpy"))]
    assert list(rows) == LABELS
    for label in expected:
        row = rows[label]
        assert "error" not in row, (label, row)
        assert row["loss_agrees"], (label, row["epoch_rel_diff"], row["step_rel_diff"])
        assert row["samples_per_s"] > 0 and row["peak_mib"] >= 0
        assert f"| {label} |" in run.stdout
    assert "GEMM ceiling" in run.stdout and "NumPy BLAS (threadpoolctl)" in run.stdout
    # The hand-written references really train: the loss moves.
    losses = rows["NumPy by hand"]["losses"]
    assert losses[-1] < losses[0]


def test_precision_rows_compare_with_float32_and_say_what_is_unavailable(tmp_path):
    """--precision adds a row per mlp backend and policy; a policy the device lacks
    (TF32 on a CPU) is an unavailable row with mlp's own reason."""
    import pytest

    pytest.importorskip("jax")
    out = tmp_path / "bench.json"
    run = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "bench_train.py"), "--quick", "--configs", "tiny",
         "--threads", "1", "--only", "mlp numpy,mlp jax", "--precision", "float32,bf16,tf32", "--json", str(out)],
        capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    rows = json.loads(out.read_text())["results"]["tiny"]["rows"]
    assert list(rows) == ["mlp numpy", "mlp jax", "mlp jax bf16", "mlp jax tf32"]
    bf16 = rows["mlp jax bf16"]
    assert bf16["precision"] == "bf16" and bf16["vs_float32"] > 0 and bf16["loss_agrees"], bf16
    assert 0 < bf16["step_rel_diff"]  # bfloat16 products move the loss, a little
    assert "PrecisionError: precision 'tf32'" in rows["mlp jax tf32"]["error"]
    assert "| tiny | mlp jax bf16 |" in run.stdout
