"""Data-parallel training (``fit(devices=...)``) on simulated CPU devices.

JAX reads ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` once, when it
starts, so every multi-device check runs in a fresh Python subprocess (with a
subprocess timeout as well as pytest's, since the failure these tests guard
against is a hang). See docs/multidevice.md.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from mlp import backends
import mlp

pytestmark = pytest.mark.timeout(150)


def _has_jax():
    try:
        backends.get("jax:cpu")
        return True
    except backends.BackendUnavailable:
        return False


needs_jax = pytest.mark.skipif(not _has_jax(), reason="jax is not installed: pip install 'arraymlp[jax]'")


def _env(devices):
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["JAX_PLATFORMS"] = "cpu"
    env.pop("MLP_BACKEND", None)
    return env


def _run(script, devices=4, timeout=90, args=()):
    """Run ``script`` in a fresh interpreter with ``devices`` CPU devices; its
    last stdout line is JSON."""
    try:
        proc = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(script), *map(str, args)],
            env=_env(devices), capture_output=True, text=True, timeout=timeout,
        )
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"subprocess hung for {timeout} s (a collective deadlock?):\n{err.stderr}")
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


# 24 full batches of 32 and a last one of 6 rows (6 does not split over 4
# devices: that batch is replicated) -> 25 steps an epoch, 200 steps in 8 epochs.
EQUIVALENCE = """
    import json
    import numpy as np
    import mlp
    from mlp import backends
    from mlp import training, validation

    rng = np.random.default_rng(0)
    X = rng.standard_normal((774, 16)).astype("float32")
    y = (X[:, 0] + X[:, 1] > 0).astype(int) + (X[:, 2] > 0.5)
    Xv, yv = X[:64], y[:64]

    def train(devices):
        m = mlp.MLP([16, 32, 32, 3], backend="jax:cpu", seed=3, dropout=0.1)
        m.fit(X, y, epochs=8, batch_size=32, devices=devices, validation_data=(Xv, yv))
        return m

    one, four = train(None), train(4)
    out = {"steps": len(one.history["step_loss"])}
    a, b = np.array(one.history["step_loss"]), np.array(four.history["step_loss"])
    out["loss_rel"] = float(np.max(np.abs(a - b) / np.abs(a)))
    out["val_rel"] = abs(one.history["val_loss"][-1] - four.history["val_loss"][-1]) / one.history["val_loss"][-1]
    out["param_rel"] = max(
        float(np.max(np.abs(np.asarray(p[k]) - np.asarray(q[k]))) / np.max(np.abs(np.asarray(p[k]))))
        for p, q in zip(one.params, four.params) for k in p)
    out["moved"] = float(np.max(np.abs(np.asarray(four.params[0]["W"]) - np.asarray(mlp.MLP([16, 32, 32, 3], seed=3).params[0]["W"]))))
    home = four.backend.device
    out["home"] = all(x.devices() == {home} for p in four.params for x in p.values())
    out["predict"] = bool(np.array_equal(np.asarray(one.predict(X[:50])), np.asarray(four.predict(X[:50]))))

    # The step really is split: [8 x 16] on each device, and XLA added an all-reduce.
    dp = four.backend.data_parallel("all", batch_size=32)
    xb, yb, masks = dp.shard((validation.as_input(four, X[:32]), validation.as_target(four, y[:32], four.loss, 32),
                              training.draw_masks(four, 32)))
    out["n_all"] = dp.n
    out["shards"] = sorted({s.data.shape for s in xb.addressable_shards})
    params, state = dp.replicate((four.params, four.opt_state))
    hlo = four.train_step().lower(params, state, xb, yb, masks).compile().as_text()
    out["all_reduce"] = "all-reduce" in hlo

    errors = {}
    for kwargs in ({"devices": 4, "batch_size": 30}, {"devices": 8, "batch_size": 32}):
        try:
            train_m = mlp.MLP([16, 8, 3], backend="jax:cpu")
            train_m.fit(X[:64], y[:64], epochs=1, **kwargs)
        except Exception as err:
            errors[str(kwargs["devices"])] = f"{type(err).__name__}: {err}"
    out["errors"] = errors
    print(json.dumps(out))
"""


@needs_jax
def test_four_devices_match_one_device_over_200_steps():
    out = _run(EQUIVALENCE, devices=4)
    assert out["steps"] == 200
    assert out["loss_rel"] < 1e-4, out
    assert out["param_rel"] < 1e-4, out
    assert out["val_rel"] < 1e-4, out
    assert out["moved"] > 1e-3  # training changed the weights: the comparison means something
    assert out["home"], "after fit the parameters should be back on the model's own device"
    assert out["predict"]
    assert out["n_all"] == 4 and out["shards"] == [[8, 16]]
    assert out["all_reduce"], "the sharded step should contain an all-reduce"
    assert out["errors"]["4"].startswith("ValueError: batch_size 30 does not split evenly over 4")
    assert "BackendUnavailable" in out["errors"]["8"] and "device_count=8" in out["errors"]["8"]


# Three threads train at once on the same 4 devices. Without the per-process
# step lock (and, on CPU, the wait inside it) in backends/_jax.py, the devices
# start the threads' all-reduce programs in different orders and hang; with it
# they finish, each equal to plain single-device training.
THREADS = """
    import json, threading
    import numpy as np
    import mlp

    rng = np.random.default_rng(1)
    X = rng.standard_normal((640, 12)).astype("float32")
    y = (X[:, 0] > 0).astype(int)
    models = [mlp.MLP([12, 16, 2], backend="jax:cpu", seed=5) for _ in range(3)]
    threads = [threading.Thread(target=m.fit, args=(X, y), kwargs=dict(epochs=2, batch_size=8, devices=4))
               for m in models]
    for t in threads: t.start()
    for t in threads: t.join()
    ref = mlp.MLP([12, 16, 2], backend="jax:cpu", seed=5)
    ref.fit(X, y, epochs=2, batch_size=8)
    a = np.array(ref.history["step_loss"])
    rel = [float(np.max(np.abs(np.array(m.history.get("step_loss", [np.nan])) - a) / a)) for m in models]
    print(json.dumps({"rel": rel, "steps": [len(m.history.get("step_loss", [])) for m in models]}))
"""


@needs_jax
@pytest.mark.timeout(120)
def test_concurrent_data_parallel_fits_do_not_deadlock():
    out = _run(THREADS, devices=4, timeout=60)
    assert out["steps"] == [160, 160, 160]
    assert max(out["rel"]) < 1e-4, out


# Two processes on this machine's loopback, two CPU devices each: one mesh of
# four devices over jax.distributed (CPU collectives through Gloo).
MULTIHOST = """
    import json, sys
    import jax
    pid, port = int(sys.argv[1]), sys.argv[2]
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2,
                               process_id=pid, initialization_timeout=60)
    import numpy as np
    import mlp

    rng = np.random.default_rng(2)
    X = rng.standard_normal((256, 10)).astype("float32")
    y = (X[:, 0] > 0).astype(int)
    ref = mlp.MLP([10, 16, 2], backend="jax:cpu", seed=1)
    ref.fit(X, y, epochs=2, batch_size=32)
    m = mlp.MLP([10, 16, 2], backend="jax:cpu", seed=1)
    m.fit(X, y, epochs=2, batch_size=32, devices="all")
    a, b = np.array(ref.history["step_loss"]), np.array(m.history["step_loss"])
    err = max(float(np.max(np.abs(np.asarray(p[k]) - np.asarray(q[k])))) for p, q in zip(ref.params, m.params) for k in p)
    print(json.dumps({"processes": jax.process_count(), "devices": len(jax.devices()),
                      "loss_rel": float(np.max(np.abs(a - b) / a)), "param_err": err}))
"""

OLD_CPU_ERROR = "Multiprocess computations aren't implemented on the CPU backend"


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@needs_jax
@pytest.mark.timeout(120)
def test_two_processes_on_loopback():
    port = _free_port()
    cmd = [sys.executable, "-c", textwrap.dedent(MULTIHOST)]
    procs = [subprocess.Popen(cmd + [str(i), str(port)], env=_env(2), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    results = []
    try:
        for p in procs:
            stdout, stderr = p.communicate(timeout=90)
            if OLD_CPU_ERROR in stderr:
                pytest.skip(f"this jaxlib has no cross-process CPU collectives: {OLD_CPU_ERROR}")
            assert p.returncode == 0, stderr[-4000:]
            results.append(json.loads(stdout.strip().splitlines()[-1]))
    except subprocess.TimeoutExpired:
        pytest.fail("the two-process run hung")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for r in results:
        assert r["processes"] == 2 and r["devices"] == 4
        assert r["loss_rel"] < 1e-4 and r["param_err"] < 1e-5, r


# -- in this process: one device --------------------------------------------------
X = np.random.default_rng(0).standard_normal((40, 6)).astype("float32")
Y = (X[:, 0] > 0).astype(int)


def test_devices_on_every_cell(cell):
    """One device is plain training everywhere; more is JAX only, and asking for
    more than there are says how many there are."""
    def model():
        return mlp.MLP([6, 4, 2], backend=cell.spec, dtype=cell.dtype, seed=0)

    one = model().fit(X, Y, epochs=2, batch_size=8, devices=1)
    default = model().fit(X, Y, epochs=2, batch_size=8)
    assert one["step_loss"] == default["step_loss"]
    if cell.name != "jax":
        for devices in (2, "all"):
            with pytest.raises(backends.BackendUnavailable, match="needs the JAX backend") as info:
                model().fit(X, Y, epochs=1, devices=devices)
            assert "CuPy" in str(info.value)
        return
    import jax

    platform = cell.backend.device.platform
    have = len(jax.local_devices(backend=platform))
    hint = "xla_force_host_platform_device_count" if platform == "cpu" else f"{have} {platform} device"
    with pytest.raises(backends.BackendUnavailable, match=hint):
        model().fit(X, Y, epochs=1, batch_size=8 * (have + 1), devices=have + 1)
    if have == 1:  # "all" of one device is plain training
        got = model().fit(X, Y, epochs=2, batch_size=8, devices="all")
        assert got["step_loss"] == default["step_loss"]


@pytest.mark.parametrize("devices", [0, -1, 2.5, "two", True])
def test_bad_devices_value(devices):
    with pytest.raises(ValueError, match="devices must be a positive int or 'all'"):
        mlp.MLP([6, 4, 2], seed=0).fit(X, Y, epochs=1, devices=devices)


@needs_jax
def test_cli_devices_flag():
    """`mlp train --backend jax --devices all` trains over 4 devices and matches
    one device; on NumPy the flag is one clear error line."""
    cmd = [sys.executable, "-m", "mlp", "train", "--backend", "jax", "--epochs", "2",
           "--batch-size", "32", "--hidden", "32", "--quiet", "--json"]
    runs = {}
    for devices in (None, "all"):
        extra = ["--devices", devices] if devices else []
        proc = subprocess.run(cmd + extra, env=_env(4), capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-2000:]
        runs[devices] = json.loads(proc.stdout)
    assert runs["all"]["train_loss"] == pytest.approx(runs[None]["train_loss"], rel=1e-4)
    proc = subprocess.run([sys.executable, "-m", "mlp", "train", "--devices", "2", "--epochs", "1"],
                          env=_env(1), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "needs the JAX backend" in proc.stderr.strip().splitlines()[-1]
