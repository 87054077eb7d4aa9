"""JAX's cold start (backends/_jax_startup.py): the persistent compilation cache is
on by default, moves with MLP_JAX_CACHE_DIR, turns off with MLP_JAX_CACHE=0 and
leaves a user's own cache alone; the GPU-only XLA flag never reaches a CPU-only run.

Each check runs in a fresh subprocess (these are process-wide JAX settings that JAX
reads once), with a temporary cache folder; cache use is read from JAX's own
monitoring events (hits and misses), not from timing.
"""
import importlib.util
import json
import os
import subprocess
import sys

import pytest

from mlp.backends import _jax_startup as startup

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
needs_jax = pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")

# A tiny fit on jax:cpu; prints what the cache did and the settings JAX ended with.
CHILD = r"""
import json, os
from collections import Counter
import jax, jax.monitoring
import numpy as np
import mlp
from mlp.backends import _jax_startup

events = Counter()
jax.monitoring.register_event_listener(lambda name, **kw: events.update([name]))
model = mlp.MLP([8, 16, 3], backend="jax:cpu", seed=0)
rng = np.random.default_rng(0)
model.fit(rng.normal(size=(32, 8)), rng.integers(0, 3, 32), epochs=1, batch_size=8)
print(json.dumps({
    "hits": events["/jax/compilation_cache/cache_hits"],
    "misses": events["/jax/compilation_cache/cache_misses"],
    "dir": jax.config.jax_compilation_cache_dir,
    "min_secs": jax.config.jax_persistent_cache_min_compile_time_secs,
    "xla_flags": os.environ.get("XLA_FLAGS", ""),
    "settings": _jax_startup.SETTINGS,
}))
"""


def run_child(tmp_path, **env_changes):
    env = {k: v for k, v in os.environ.items()
           if k not in ("JAX_COMPILATION_CACHE_DIR", "MLP_JAX_CACHE", "MLP_JAX_CACHE_DIR", "XLA_FLAGS",
                        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "JAX_ENABLE_COMPILATION_CACHE")}
    env.update(PYTHONPATH=os.pathsep.join([ROOT, env.get("PYTHONPATH", "")]), JAX_PLATFORMS="cpu",
               XDG_CACHE_HOME=str(tmp_path / "xdg"), HOME=str(tmp_path / "home"))
    env.update({k: v for k, v in env_changes.items() if v is not None})
    run = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, env=env,
                         timeout=120, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def cache_files(folder):
    return sorted(p for p in os.listdir(folder) if p.endswith("-cache")) if os.path.isdir(folder) else []


@needs_jax
def test_a_second_process_starts_from_the_persistent_cache(tmp_path):
    folder = tmp_path / "xdg" / "mlp" / "jax"  # the default: $XDG_CACHE_HOME/mlp/jax
    first = run_child(tmp_path)
    assert first["dir"] == str(folder) and first["min_secs"] == startup.MIN_COMPILE_SECS
    assert first["misses"] >= 1 and first["hits"] == 0, first
    written = cache_files(folder)
    assert any(name.startswith("jit_steps") for name in written), written  # the fused epoch
    second = run_child(tmp_path)
    assert second["hits"] == first["misses"] and second["misses"] == 0, (first, second)  # every program
    assert cache_files(folder) == written  # nothing compiled anew


@needs_jax
def test_the_cache_moves_and_turns_off(tmp_path):
    moved = run_child(tmp_path, MLP_JAX_CACHE_DIR=str(tmp_path / "elsewhere"))
    assert moved["dir"] == str(tmp_path / "elsewhere") and cache_files(tmp_path / "elsewhere")
    off = run_child(tmp_path, MLP_JAX_CACHE="0")
    assert off["dir"] is None and off["settings"]["cache"] is None
    assert off["hits"] == 0 and off["misses"] == 0  # no cache consulted at all
    assert not os.path.exists(tmp_path / "xdg" / "mlp")


@needs_jax
def test_a_cache_the_user_configured_is_left_alone(tmp_path):
    theirs = tmp_path / "theirs"
    got = run_child(tmp_path, JAX_COMPILATION_CACHE_DIR=str(theirs), MLP_JAX_CACHE_DIR=str(tmp_path / "ours"))
    assert got["dir"] == str(theirs) and got["settings"]["cache"] == str(theirs)
    assert got["min_secs"] == 1.0  # JAX's default threshold: their cache, their settings
    assert not os.path.exists(tmp_path / "ours") and not os.path.exists(tmp_path / "xdg" / "mlp")
    off = run_child(tmp_path, JAX_ENABLE_COMPILATION_CACHE="false")
    assert off["dir"] is None and off["hits"] == 0 and off["misses"] == 0


@needs_jax
def test_a_cpu_only_run_never_gets_the_gpu_flag(tmp_path):
    got = run_child(tmp_path, XLA_FLAGS="--xla_cpu_enable_fast_math=false")
    assert got["xla_flags"] == "--xla_cpu_enable_fast_math=false"
    assert "xla_flag" not in got["settings"]


def test_the_gpu_flag_only_with_a_cuda_plugin_and_a_gpu_platform():
    flag = startup.TRITON_FLAG
    assert startup.gpu_xla_flags("gpu", {}, cuda=True) == flag
    assert startup.gpu_xla_flags(None, {"XLA_FLAGS": "--a=1"}, cuda=True) == f"--a=1 {flag}"
    assert startup.gpu_xla_flags(None, {"JAX_PLATFORMS": "cuda,cpu"}, cuda=True) == flag
    # a CPU-only jaxlib, the CPU asked for, or no GPU platform allowed: XLA_FLAGS untouched
    assert startup.gpu_xla_flags("gpu", {}, cuda=False) is None
    assert startup.gpu_xla_flags("cpu", {}, cuda=True) is None
    assert startup.gpu_xla_flags(None, {"JAX_PLATFORMS": "cpu"}, cuda=True) is None
    # the user's own setting of the flag, either way, wins
    for theirs in ("--xla_gpu_enable_triton_gemm=true", "--xla_gpu_enable_triton_gemm=false"):
        assert startup.gpu_xla_flags("gpu", {"XLA_FLAGS": theirs}, cuda=True) is None
    # once JAX has started its backends, XLA reads XLA_FLAGS no more: nothing to add
    assert startup.add_gpu_flags("gpu", backends_started=True) is None


def test_the_default_cache_folder():
    assert startup.default_cache_dir({"XDG_CACHE_HOME": "/x"}) == os.path.join("/x", "mlp", "jax")
    assert startup.default_cache_dir({}) == os.path.join(os.path.expanduser("~"), ".cache", "mlp", "jax")
    assert startup.default_cache_dir({"MLP_JAX_CACHE_DIR": "/y/z", "XDG_CACHE_HOME": "/x"}) == "/y/z"
    for off in ("0", "false", "off", "no"):
        assert startup.default_cache_dir({"MLP_JAX_CACHE": off, "MLP_JAX_CACHE_DIR": "/y"}) is None
