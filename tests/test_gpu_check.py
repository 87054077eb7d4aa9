"""ci/gpu-check.sh: on a machine without CUDA it says there is nothing to check and
exits 0; on one with CUDA (faked here: a stub nvidia-smi and a stub python that
records its calls) it runs every step and ends with a summary of their status."""
import os
import shutil
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "ci", "gpu-check.sh")
NOTHING = "nothing to check"


def run(env_changes, cwd):
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "WHEELS", "OUT")}
    env.update(env_changes)
    return subprocess.run(["bash", SCRIPT], capture_output=True, text=True, env=env, cwd=cwd, timeout=60)


def test_no_cuda_device_means_nothing_to_check(tmp_path):
    for hidden in ("", "-1"):  # no GPU visible, whatever this machine has
        got = run({"CUDA_VISIBLE_DEVICES": hidden, "OUT": str(tmp_path / "out")}, tmp_path)
        assert got.returncode == 0, got.stderr
        assert NOTHING in got.stdout and "summary" not in got.stdout
        assert not (tmp_path / "out").exists()  # no step ran, no log was written
    if shutil.which("nvidia-smi") is None and not any(p.startswith("nvidia") for p in os.listdir("/dev")):
        got = run({}, tmp_path)  # this machine itself has no CUDA
        assert got.returncode == 0 and NOTHING in got.stdout, got.stdout + got.stderr


def stub(path, body):
    path.write_text("#!/usr/bin/env bash\n" + body)
    path.chmod(0o755)


def test_every_step_runs_and_the_summary_says_which_failed(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stub(bin_dir / "nvidia-smi", 'echo "GPU 0: Fake GPU (UUID: GPU-0)"\n')
    calls = tmp_path / "calls.txt"
    # the stub python: records each call; 'pytest' fails, everything else passes
    stub(bin_dir / "fakepython", f'echo "$* | $XLA_PYTHON_CLIENT_PREALLOCATE | $MLP_REQUIRE_BACKENDS" >> {calls}\n'
                                 'case "$*" in *"-m pytest"*) exit 3;; esac\n')
    got = run({"PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHON": str(bin_dir / "fakepython"),
               "OUT": str(tmp_path / "out")}, tmp_path)
    assert got.returncode == 1, got.stdout + got.stderr
    lines = calls.read_text().splitlines()
    assert any("-m pytest" in line and "-m gpu" in line for line in lines)
    for backend in ("cupy", "jax", "torch"):
        assert any(f"-m mlp train --device gpu --backend {backend}" in line for line in lines), lines
    assert any("bench_train.py --device gpu" in line for line in lines)
    assert all(line.endswith("| false | cupy,jax:gpu,torch:cuda") for line in lines if "-c" not in line.split())
    summary = got.stdout[got.stdout.index("gpu-check summary"):]
    assert "FAILED (exit 3)" in summary and summary.count("passed") == 4
    assert (tmp_path / "out" / "pytest.log").exists()
