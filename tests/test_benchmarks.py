"""Smoke test of benchmarks/bench_train.py: the table has every implementation
and their losses agree. No timing is asserted (speed lives in the benchmark)."""
import importlib.util
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "benchmarks", "bench_train.py")
LIBRARIES = {"mlp jax": "jax", "mlp torch": "torch", "mlp jax (fit per epoch)": "jax", "JAX by hand": "jax",
             "PyTorch eager": "torch", "scikit-learn": "sklearn"}
LABELS = ["mlp numpy", "mlp jax", "mlp torch", "mlp numpy (fit per epoch)", "mlp jax (fit per epoch)",
          "NumPy by hand", "JAX by hand", "PyTorch eager", "scikit-learn"]
OURS = [k for k in LABELS if k.startswith("mlp ")]


def test_quick_benchmark_prints_every_implementation_and_losses_agree(tmp_path):
    out = tmp_path / "bench.json"
    run = subprocess.run(
        [sys.executable, BENCH, "--quick", "--configs", "tiny", "--threads", "1", "--json", str(out)],
        capture_output=True, text=True, timeout=180,
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
    # mlp rows count their operations per step (mlp.opcount); the references do not.
    assert "| ops/step |" in run.stdout
    counts = {k: rows[k]["ops_per_step"] for k in expected if k in OURS}
    assert all(isinstance(n, int) and n > 0 for n in counts.values()), counts
    # one code path: the same count on every backend without fused kernels (Backend.kernels: NumPy's
    # fused Adam is one operation where the generic update is ten), and none above the small target
    generic = {k: n for k, n in counts.items() if "numpy" not in k}
    assert len(set(generic.values())) == 1 and max(counts.values()) <= 40, counts
    assert rows["NumPy by hand"]["ops_per_step"] is None
    # fit once per epoch: the same training as one fit (same batches, same losses), as a ratio
    for label in [k for k in expected if k.endswith("(fit per epoch)")]:
        want = rows[label.removesuffix(" (fit per epoch)")]["losses"]
        assert all(abs(a - b) <= 1e-6 * abs(b) for a, b in zip(rows[label]["losses"], want, strict=True))
        assert rows[label]["vs_one_fit"] > 0
    assert "fit per epoch" in run.stdout and "against one fit" in run.stdout


def test_help_lists_the_huge_config():
    run = subprocess.run([sys.executable, BENCH, "--help"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "huge" in run.stdout and "784-4096-4096-10" in run.stdout


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
