"""The backend registry: names, devices, precedence, transfers, and clear failures."""
import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

import array_api_compat
from mlp import backends
from mlp.backends import BackendUnavailable

READY_HERE = ["numpy", "jax", "jax:cpu", "torch", "torch:cpu", "array_api_strict",
              "array_api_strict:device1", "array_api_strict:no_float64"]


def run_python(code, **env):
    full = {**os.environ, **env}
    for key in ("MLP_BACKEND", "MLP_DEVICE"):
        if key not in env:
            full.pop(key, None)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_import_loads_no_heavy_library():
    code = ("import sys, mlp, backends; "
            "print(sorted(m for m in ('jax', 'cupy', 'torch', 'sklearn') if m in sys.modules))")
    assert run_python(code) == "[]"


def test_available_lists_all_five_with_status():
    table = backends.available()
    assert [s.name for s in table][:5] == ["numpy", "cupy", "jax", "torch", "array_api_strict"]
    assert table["numpy"].status == "ready" and table["numpy"].devices == ["cpu"]
    for name in ("jax", "torch", "array_api_strict"):
        assert table[name].ready, table[name]
        assert table[name].version
    assert "device1" in table["array_api_strict"].devices
    cupy = table["cupy"].status
    if importlib.util.find_spec("cupy") is None:
        assert cupy == "not installed: pip install 'arraymlp[cuda12]'"
    else:
        assert cupy in ("ready", "installed, no CUDA device")
    text = str(table)
    assert text.splitlines()[0].split() == ["backend", "status", "version", "devices"]
    assert all(name in text for name in ("numpy", "cupy", "jax", "torch", "array_api_strict"))


def test_available_survives_a_broken_library(monkeypatch):
    import mlp.backends._jax as jax_module

    def broken():
        raise OSError("libcuda.so: cannot open shared object file")

    monkeypatch.setattr(jax_module, "probe", broken)
    status = backends.available()["jax"].status
    assert status.startswith("installed, broken: OSError") and "libcuda" in status


@pytest.mark.parametrize("spec", READY_HERE)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_round_trip_is_exact_and_on_the_device(spec, dtype):
    b = backends.get(spec)
    if dtype not in b.float_dtypes:
        with pytest.raises(BackendUnavailable, match=f"does not support {dtype}"):
            b.ensure_dtype(dtype)
        return
    b.ensure_dtype(dtype)
    host = np.random.default_rng(0).standard_normal((5, 3)).astype(dtype)
    x = b.asarray(host, dtype=dtype)
    assert array_api_compat.device(x) == b.device
    assert array_api_compat.array_namespace(x) is b.xp
    assert b.owns(x)
    back = b.to_numpy(x)
    assert back.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(back, host)


def test_specs_and_repr():
    assert backends.get("cpu") == backends.get("numpy")
    assert backends.get("strict:device1") == backends.get("array_api_strict:device1")
    jax_b = backends.get("jax")
    assert repr(jax_b).startswith("Backend(jax ") and repr(jax_b).endswith(", cpu:0)")
    assert backends.get(jax_b) is jax_b
    assert backends.get("numpy", device="cpu").name == "numpy"
    assert backends.get("array_api_strict", device="device1").device_name == "device1"
    assert backends.get(backends.get("array_api_strict"), device="device2").device_name == "device2"
    assert str(backends.get("array_api_strict:device1").device) == "array_api_strict.Device('device1')"


def test_jit_is_identity_except_on_jax():
    f = lambda x: x * 2  # noqa: E731
    assert backends.get("numpy").jit(f) is f
    compiled = backends.get("jax").jit(f)
    assert compiled is not f and float(compiled(3.0)) == 6.0


def test_jax_jit_traces_float32_products_at_full_precision():
    """Inside Backend.jit, JAX's matmul precision is 'highest' (no TF32 on GPUs),
    and the user's own setting outside is left as it was."""
    jax = pytest.importorskip("jax")
    seen = []

    def f(x):
        seen.append(jax.config.jax_default_matmul_precision)
        return x @ x

    before = jax.config.jax_default_matmul_precision
    b = backends.get("jax")
    out = b.jit(f)(b.asarray(np.eye(3), "float32"))
    assert seen == ["highest"] and jax.config.jax_default_matmul_precision == before
    np.testing.assert_array_equal(b.to_numpy(out), np.eye(3))
    text = b.jit(f).lower(b.asarray(np.eye(3), "float32")).as_text()
    assert "HIGHEST" in text or "highest" in text


def test_seeded_random_is_identical_everywhere():
    ref = None
    for spec in ("numpy", "jax", "torch", "array_api_strict:device1"):
        b = backends.get(spec)
        r = b.random((4, 3), seed=7, dist="normal")
        assert array_api_compat.device(r) == b.device
        host = b.to_numpy(r)
        if ref is None:
            ref = host
        np.testing.assert_array_equal(host, ref)


@pytest.mark.parametrize("spec,reason", [
    ("cupy", "cupy"),
    ("gpu", "no backend has CUDA device gpu:0"),
    ("gpu:1", "no backend has CUDA device gpu:1"),
    ("jax:gpu", "no GPU device"),
    ("torch:cuda:0", "no CUDA device"),
    ("numpy:gpu", "numpy runs on the cpu only"),
    ("array_api_strict:device9", "no device 'device9'"),
])
def test_unavailable_says_why(spec, reason):
    with pytest.raises(BackendUnavailable, match=reason) as err:
        backends.get(spec)
    if spec == "cupy":
        assert ("installed, no CUDA device" in str(err.value)
                or "not installed: pip install 'arraymlp[cuda12]'" in str(err.value))


def test_unknown_name_lists_known_ones():
    with pytest.raises(ValueError, match="unknown backend 'tensorflow'; known backends: numpy, cupy, jax, torch, array_api_strict"):
        backends.get("tensorflow")


def test_missing_library_names_the_extra(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "jax" else real(name, *a))
    backends._cache.clear()
    try:
        with pytest.raises(BackendUnavailable, match=r"jax: not installed: pip install 'arraymlp\[jax\]'"):
            backends.get("jax")
        assert backends.available()["jax"].status == "not installed: pip install 'arraymlp[jax]'"
    finally:
        backends._cache.clear()


def test_precedence_argument_context_env_default(monkeypatch):
    monkeypatch.delenv("MLP_BACKEND", raising=False)
    monkeypatch.delenv("MLP_DEVICE", raising=False)
    assert backends.get().name == "numpy"
    monkeypatch.setenv("MLP_BACKEND", "torch")  # set after import: still read
    assert backends.get().name == "torch"
    monkeypatch.setenv("MLP_DEVICE", "device1")
    monkeypatch.setenv("MLP_BACKEND", "array_api_strict")
    assert backends.get().device_name == "device1"
    monkeypatch.delenv("MLP_DEVICE")
    with backends.use("jax") as b:
        assert b.name == "jax" and backends.get().name == "jax"
        assert backends.get("numpy").name == "numpy"
        with backends.use("array_api_strict", device="device2"):
            assert backends.get().device_name == "device2"
        assert backends.get().name == "jax"
    assert backends.get().name == "array_api_strict"


def test_env_var_in_a_fresh_process():
    assert run_python("from mlp import backends; print(backends.get().name)", MLP_BACKEND="jax") == "jax"
    code = "import os, backends; os.environ['MLP_BACKEND'] = 'torch'; print(backends.get().name)"
    assert run_python(code) == "torch"


def test_device_gpu_without_a_backend_picks_a_gpu_library(monkeypatch):
    monkeypatch.setenv("MLP_DEVICE", "gpu")
    monkeypatch.delenv("MLP_BACKEND", raising=False)
    with pytest.raises(BackendUnavailable, match="no backend has CUDA device gpu:0"):
        backends.get()


def test_register_a_third_party_backend():
    import array_api_strict as xps

    def load(device=None):
        return backends.Backend("strict_sim", xps, xps.Device(device or "device2"),
                                version="0", device_name=device or "device2")

    backends.register("strict_sim", load)
    try:
        b = backends.get("strict_sim:device1")
        assert b.device_name == "device1" and b.name == "strict_sim"
        assert "strict_sim" in backends.names()
        assert backends.available()["strict_sim"].status == "ready"
        with pytest.raises(ValueError, match="built-in"):
            backends.register("numpy", load)
    finally:
        backends._loaders.pop("strict_sim", None)
        backends._cache.clear()


def test_entry_point_plugins(monkeypatch, tmp_path):
    import importlib.metadata as md

    plugin = tmp_path / "my_plugin.py"
    plugin.write_text(
        "from mlp import backends\nimport array_api_strict as xps\n"
        "def load(device=None):\n"
        "    return backends.Backend('plugged', xps, xps.Device('CPU_DEVICE'), device_name='cpu')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    eps = [md.EntryPoint("plugged", "my_plugin:load", backends.ENTRY_POINT_GROUP),
           md.EntryPoint("broken", "no_such_module:load", backends.ENTRY_POINT_GROUP)]
    monkeypatch.setattr(md, "entry_points", lambda group=None: eps if group == backends.ENTRY_POINT_GROUP else [])
    monkeypatch.setattr(backends, "_entry_points_loaded", False)
    try:
        assert backends.get("plugged").name == "plugged"
        with pytest.raises(BackendUnavailable, match="plugin failed to import"):
            backends.get("broken")
        assert backends.available()["broken"].status.startswith("backend 'broken': its plugin failed")
    finally:
        for name in ("plugged", "broken"):
            backends._loaders.pop(name, None)
        backends._cache.clear()


def test_one_device_grammar():
    """``backends.parse_spec`` and ``backends.parse_device``: the grammar the registry
    and every loader read devices with."""
    assert backends.parse_spec("jax:gpu:1") == ("jax", "gpu:1")
    assert backends.parse_spec(" torch ") == ("torch", None)
    assert backends.parse_device(None, "x") == (None, None)
    assert backends.parse_device("2", "x") == (None, 2)
    assert backends.parse_device("cuda:3", "x") == ("gpu", 3)
    assert backends.parse_device("cpu", "x") == ("cpu", None)
    with pytest.raises(backends.BackendUnavailable, match=r"cupy has no device 'cpu'; expected gpu, gpu:N"):
        backends.parse_device("cpu", "cupy", kinds=("gpu",))
    with pytest.raises(backends.BackendUnavailable, match=r"jax has no device 'gpu:x'"):
        backends.parse_device("gpu:x", "jax")
