"""Training throughput of mlp's backends against hand-written references.

    python benchmarks/bench_train.py                 # CPU: both configs, 3 repeats
    python benchmarks/bench_train.py --device gpu    # CuPy, JAX-GPU, PyTorch CUDA
    python benchmarks/bench_train.py --quick         # fewer samples, 1 repeat
    python benchmarks/bench_train.py --device gpu --configs huge   # 784-4096-4096-10, batch 4096
    python benchmarks/bench_train.py --device gpu --configs huge --precision float32,tf32,bf16

Every implementation trains the same MLP (784-128-10, 784-1024-1024-10 or, on
a GPU, 784-4096-4096-10; ReLU, softmax cross-entropy, Adam lr=1e-3) on the same
synthetic float32 data, from the same initial weights, in the same batch order,
with float32 matrix products (no TF32; ``--precision`` adds mlp rows under
TF32 or bfloat16 policies): mlp's own backends (numpy, jax, torch)
and references written here (NumPy by hand, JAX by hand at precision "highest",
PyTorch eager, scikit-learn's MLPClassifier). mlp rows show their array
operations per training step (``mlp.opcount``); the "fit per epoch" rows call
``fit(epochs=1)`` once per epoch, as mlp.sklearn does, on data already on the device. Each implementation runs in its
own worker process (so thread pools and allocators do not interfere), the
repeats are interleaved across implementations, and the table shows medians;
ratios (to the best reference, to the GEMM ceiling) are medians of the
ratios within each round.

To measure NumPy at its best on machines that set OPENBLAS_CORETYPE (see
docs/benchmarks.md), unset it for this command alone:
``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_train.py``.
"""
from __future__ import annotations

import argparse
import ctypes
import datetime
import gc
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time

import numpy as np

SEED = 0
LR = 1e-3
BETAS = (0.9, 0.999)
EPS = 1e-8
# Loss agreement. The first steps agree to float32 rounding: same weights, data,
# batch order and math. After that, float32 trajectories of correct Adam
# implementations drift apart: Adam divides by sqrt(v), tiny for weights with
# near-zero gradients, so round-off grows (measured on the small config, mlp
# numpy against NumPy by hand: 3e-7 at step 5, 1e-5 at step 10, 5e-3 at step
# 200, 2e-2 at step 468). Epoch means therefore get a loose tolerance; a wrong
# gradient or update moves them by far more.
FIRST_STEPS = 5
STEP_RTOL = 1e-4
EPOCH_RTOL = 5e-2

# steps_per_epoch=None: an epoch is a pass over all samples; else over the
# first steps_per_epoch * batch samples (the large config, to fit the time budget).
CONFIGS = {
    "small": dict(sizes=(784, 128, 10), batch=128, samples=60_000, steps_per_epoch=None, epochs=3),
    "large": dict(sizes=(784, 1024, 1024, 10), batch=512, samples=60_000, steps_per_epoch=16, epochs=3),
    "tiny": dict(sizes=(64, 32, 10), batch=64, samples=2_048, steps_per_epoch=None, epochs=2),
    # for the GPU and its precision policies (issue 15): wide enough that matrix products dominate
    # (one step is ~0.5 TFLOP: seconds on a CPU, ~10 ms on an H200 in float32)
    "huge": dict(sizes=(784, 4096, 4096, 10), batch=4096, samples=60_000, steps_per_epoch=8, epochs=3),
}
QUICK = {"small": dict(samples=16_384, epochs=2), "large": dict(steps_per_epoch=4, epochs=2),
         "tiny": dict(epochs=2), "huge": dict(steps_per_epoch=2, epochs=2)}
DEFAULT_CONFIGS = {"cpu": "small,large", "gpu": "small,large,huge"}
PER_EPOCH = " (fit per epoch)"  # label suffix of the rows that call fit(epochs=1) once per epoch

# --precision: mlp rows under a mixed-precision policy (mlp.precision), for the
# libraries that have one; a device without it shows the row as unavailable, with
# mlp's own PrecisionError. Their loss agreement with the float32 anchor is held to
# 8 unit roundoffs of the format for the first steps (docs/testing.md).
PRECISIONS = ("float32", "tf32", "bf16")
PRECISION_LIBRARIES = {"tf32": ("jax", "torch", "cupy"), "bf16": ("jax", "torch")}
PRECISION_STEP_RTOL = {"tf32": 8 * 2.0 ** -10, "bf16": 8 * 2.0 ** -8}
# Epoch means of a policy row are shown (how far the policy moves the curve) and
# only checked for sanity: rounding each product perturbs every step by ~2^-8,
# far more than float32 drift, and on the synthetic task (a noisy random teacher)
# the trajectories then wander apart by several percent (docs/precision.md).
PRECISION_EPOCH_RTOL = 0.15

CPU_IMPLS = {  # label -> (kind, target)
    "mlp numpy": ("ours", "numpy"),
    "mlp jax": ("ours", "jax:cpu"),
    "mlp torch": ("ours", "torch:cpu"),
    "mlp numpy" + PER_EPOCH: ("ours_per_epoch", "numpy"),
    "mlp jax" + PER_EPOCH: ("ours_per_epoch", "jax:cpu"),
    "NumPy by hand": ("hand_numpy", "numpy"),
    "JAX by hand": ("hand_jax", "cpu"),
    "PyTorch eager": ("torch_eager", "cpu"),
    "scikit-learn": ("sklearn", "cpu"),
}
GPU_IMPLS = {
    "mlp cupy": ("ours", "cupy"),
    "mlp jax": ("ours", "jax:gpu"),
    "mlp torch": ("ours", "torch:cuda"),
    "mlp jax" + PER_EPOCH: ("ours_per_epoch", "jax:gpu"),
    "CuPy by hand": ("hand_numpy", "cupy"),
    "JAX by hand": ("hand_jax", "gpu"),
    "PyTorch eager": ("torch_eager", "cuda"),
}
OURS = ("ours", "ours_per_epoch")  # the kinds that run mlp itself
LIBRARY = {"ours": None, "ours_per_epoch": None, "hand_numpy": None, "hand_jax": "jax", "torch_eager": "torch", "sklearn": "sklearn"}


# -- the task every implementation solves -------------------------------------
def make_data(sizes, samples):
    """Synthetic 'pixels' in [0, 1) labelled by a noisy random linear teacher."""
    rng = np.random.default_rng(1234)
    x = rng.random((samples, sizes[0]), dtype=np.float32)
    teacher = rng.standard_normal((sizes[0], sizes[-1])).astype(np.float32)
    logits = (x - 0.5) @ teacher + rng.gumbel(size=(samples, sizes[-1])).astype(np.float32)
    return x, np.argmax(logits, axis=1).astype(np.int64)


def make_task(name, quick):
    cfg = dict(CONFIGS[name], **(QUICK[name] if quick else {}))
    x, y = make_data(cfg["sizes"], cfg["samples"])
    if cfg["steps_per_epoch"]:
        n = min(cfg["steps_per_epoch"] * cfg["batch"], len(x))
        x, y = x[:n], y[:n]
    import mlp

    # mlp's own initialisation and shuffling: the model draws its weights from a
    # seeded host generator, then one permutation per epoch from the same one.
    model = mlp.MLP(list(cfg["sizes"]), backend="numpy", seed=SEED)
    init = [(np.asarray(p["W"]), np.asarray(p["b"])) for p in model.params if p]
    perms = [model.rng.permutation(len(x)) for _ in range(cfg["epochs"])]
    return dict(cfg, name=name, x=x, y=y, init=init, perms=perms)


def step_flops(sizes, batch):
    """FLOPs of the matrix products in one training step: per layer the forward
    product and the weight gradient, plus the input gradient for all layers
    but the first (which no implementation computes): about 6 x B x sum(in x out)."""
    pairs = list(zip(sizes[:-1], sizes[1:]))
    return sum(2 * batch * i * o * (2 if k == 0 else 3) for k, (i, o) in enumerate(pairs))


# -- implementations -----------------------------------------------------------
ABLATIONS = {  # --ablate NAME: undo one of mlp's speed-ups, to measure what it brings
    "no-fuse": "JAX: one call per step instead of one call per epoch (Backend.fuse_steps=False)",
    "no-inplace": "NumPy: allocate new parameter/optimizer arrays every step (Backend.inplace=False)",
    "relu-where": "ReLU through xp.where (as before) instead of clip and a 0/1 multiplier",
    "no-kernels": "NumPy, CuPy: Adam's flat update without fused kernels (Backend.kernels=None)",
}


def ablate(model, names):
    import copy

    if "no-fuse" in names or "no-inplace" in names or "no-kernels" in names:
        model.backend = copy.copy(model.backend)
        model.backend.fuse_steps = model.backend.fuse_steps and "no-fuse" not in names
        model.backend.inplace = model.backend.inplace and "no-inplace" not in names
        model.backend.kernels = None if "no-kernels" in names else model.backend.kernels
    if "relu-where" in names:
        from mlp import layers

        def forward(self, xp, params, x, train=False, mask=None):
            positive = x > 0
            return xp.where(positive, x, 0.0), lambda dy, need_dx=True: (xp.where(positive, dy, 0.0), {})

        layers.ReLU.forward = forward
    return model


def with_precisions(impls, precisions):
    """``impls`` plus a row "mlp jax bf16" (target "jax:cpu+bf16") for each mlp row
    whose library has each precision policy other than float32."""
    out = dict(impls)
    for precision in precisions:
        for label, (kind, target) in impls.items():
            if precision != "float32" and kind == "ours" and target.split(":")[0] in PRECISION_LIBRARIES[precision]:
                out[f"{label} {precision}"] = (kind, f"{target}+{precision}")
    return out


def run_ours(task, target, ablations=()):
    import mlp

    spec, _, precision = target.partition("+")
    model = ablate(mlp.MLP(list(task["sizes"]), backend=spec, seed=SEED, precision=precision or "float32"),
                   ablations)
    start = time.perf_counter()
    history = model.fit(task["x"], task["y"], epochs=task["epochs"], batch_size=task["batch"],
                        optimizer=mlp.Adam(lr=LR, betas=BETAS, eps=EPS))
    total = time.perf_counter() - start
    times = list(history["time"])
    times[0] = total - sum(times[1:])  # the first epoch includes moving the data and compiling
    return dict(times=times, losses=list(history["loss"]), steps=history["step_loss"][:FIRST_STEPS])


def run_ours_per_epoch(task, spec, ablations=()):
    """``fit(epochs=1)`` once per epoch, as mlp.sklearn and many custom loops call
    it, on data moved to the device once (each epoch's time is its whole call)."""
    import mlp

    model = ablate(mlp.MLP(list(task["sizes"]), backend=spec, seed=SEED), ablations)
    optimizer = mlp.Adam(lr=LR, betas=BETAS, eps=EPS)
    clock = _Epochs(len(task["x"]), task["batch"])  # from here: moving the data counts
    X = model.backend.asarray(task["x"], model.dtype)
    Y = model.backend.asarray(task["y"].astype(np.int32), "int32")
    n_steps = -(-len(task["x"]) // task["batch"])
    for _ in task["perms"]:  # fit draws the same permutations from the model's generator
        history = model.fit(X, Y, epochs=1, batch_size=task["batch"], optimizer=optimizer)
        clock.epoch_done(history["step_loss"][-n_steps:])  # the history grows with every call
    return clock.result()


def ops_per_step(spec, sizes, batch, precision="float32"):
    """Array operations of one training step of mlp on ``spec`` (``mlp.opcount``:
    forward, loss, backward and the Adam update; each is a kernel launch on a GPU)."""
    import mlp
    from mlp import opcount

    model = mlp.MLP(list(sizes), backend=spec, seed=SEED, precision=precision)
    return opcount.count_fit_step(model, batch, optimizer=mlp.Adam(lr=LR, betas=BETAS, eps=EPS)).step


def run_hand_numpy(task, device):
    """Forward, explicit backward and Adam, written as a NumPy user would
    (CuPy on the GPU: the same code with ``xp = cupy``)."""
    if device == "cupy":
        import cupy as xp
    else:
        xp = np
    b1, b2 = BETAS
    clock = _Epochs(len(task["x"]), task["batch"])  # from here: moving the data counts
    X, Y = xp.asarray(task["x"]), xp.asarray(task["y"])
    Ws = [xp.asarray(W) for W, _ in task["init"]]
    bs = [xp.asarray(b) for _, b in task["init"]]
    params = Ws + bs
    ms = [xp.zeros_like(p) for p in params]
    vs = [xp.zeros_like(p) for p in params]
    n, B, L, t = len(task["x"]), task["batch"], len(Ws), 0
    for perm in task["perms"]:
        perm = xp.asarray(perm)
        epoch_losses = []
        for i in range(0, n, B):
            idx = perm[i:i + B]
            x, y, nb = X[idx], Y[idx], len(idx)
            acts = [x]
            for l in range(L):
                z = acts[-1] @ Ws[l] + bs[l]
                acts.append(xp.maximum(z, 0) if l < L - 1 else z)
            z = acts[-1] - acts[-1].max(axis=1, keepdims=True)
            e = xp.exp(z)
            s = e.sum(axis=1, keepdims=True)
            rows = xp.arange(nb)
            epoch_losses.append(xp.log(s).mean() - z[rows, y].mean())
            d = e / s
            d[rows, y] -= 1
            d /= nb
            gW, gb = [None] * L, [None] * L
            for l in range(L - 1, -1, -1):
                gW[l], gb[l] = acts[l].T @ d, d.sum(axis=0)
                if l > 0:
                    d = (d @ Ws[l].T) * (acts[l] > 0)
            t += 1
            step_size, bc2_sqrt = LR / (1 - b1**t), (1 - b2**t) ** 0.5
            for p, g, m, v in zip(params, gW + gb, ms, vs):
                m *= b1
                m += (1 - b1) * g
                v *= b2
                v += (1 - b2) * (g * g)
                p -= step_size * (m / (xp.sqrt(v) / bc2_sqrt + EPS))
        step_loss = [float(v) for v in xp.stack(epoch_losses).tolist()]  # waits for the device
        clock.epoch_done(step_loss)
    return clock.result()


def run_hand_jax(task, device):
    """``jax.jit`` of ``jax.value_and_grad`` and an Adam update, data on the device,
    float32 products at precision "highest" as mlp's (JAX's GPU default is TF32)."""
    import jax
    import jax.numpy as jnp

    with jax.default_matmul_precision("highest"):  # traced (and so compiled) under it
        return _hand_jax(task, device, jax, jnp)


def _hand_jax(task, device, jax, jnp):
    dev = jax.devices(device)[0]
    b1, b2 = BETAS

    def forward(params, x):
        for W, b in params[:-1]:
            x = jax.nn.relu(x @ W + b)
        W, b = params[-1]
        return x @ W + b

    def loss_fn(params, x, y):
        logits = forward(params, x)
        picked = jnp.take_along_axis(logits, y[:, None], axis=1)[:, 0]
        return jnp.mean(jax.nn.logsumexp(logits, axis=1) - picked)

    def step(params, m, v, t, X, Y, idx):
        loss, grads = jax.value_and_grad(loss_fn)(params, X[idx], Y[idx])
        t = t + 1
        m = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, m, grads)
        v = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, v, grads)
        step_size, bc2_sqrt = LR / (1 - b1**t), jnp.sqrt(1 - b2**t)
        params = jax.tree.map(lambda p, m, v: p - step_size * m / (jnp.sqrt(v) / bc2_sqrt + EPS), params, m, v)
        return params, m, v, t, loss

    clock = _Epochs(len(task["x"]), task["batch"])  # from here: moving the data counts
    step = jax.jit(step, donate_argnums=(0, 1, 2))
    X, Y = jax.device_put(task["x"], dev), jax.device_put(task["y"].astype(np.int32), dev)
    params = jax.device_put([(W, b) for W, b in task["init"]], dev)
    m = jax.tree.map(jnp.zeros_like, params)
    v = jax.tree.map(jnp.zeros_like, params)
    t = jax.device_put(np.float32(0), dev)
    n, B = len(task["x"]), task["batch"]
    for perm in task["perms"]:
        perm = perm.astype(np.int32)
        epoch_losses = []
        for i in range(0, n, B):
            params, m, v, t, loss = step(params, m, v, t, X, Y, perm[i:i + B])
            epoch_losses.append(loss)
        step_loss = np.asarray(jnp.stack(epoch_losses)).tolist()
        clock.epoch_done(step_loss)
    return clock.result()


def run_torch_eager(task, device):
    """``nn.Sequential`` + ``torch.optim.Adam`` (``fused=True`` on CUDA) + ``nn.CrossEntropyLoss``,
    as in the tutorials; float32 products in float32 (PyTorch's default: no TF32)."""
    import torch
    from torch import nn

    dev = torch.device(device)
    clock = _Epochs(len(task["x"]), task["batch"])  # from here: moving the data counts
    layers = []
    for k, (W, b) in enumerate(task["init"]):
        linear = nn.Linear(*W.shape)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(W.T.copy()))
            linear.bias.copy_(torch.from_numpy(b))
        layers += [linear] if k == len(task["init"]) - 1 else [linear, nn.ReLU()]
    model = nn.Sequential(*layers).to(dev)
    # On a GPU, the fused Adam kernel: the fastest PyTorch by hand (issue 14's targets compare with it)
    opt = torch.optim.Adam(model.parameters(), lr=LR, betas=BETAS, eps=EPS, fused=dev.type == "cuda" or None)
    loss_fn = nn.CrossEntropyLoss()
    X, Y = torch.from_numpy(task["x"]).to(dev), torch.from_numpy(task["y"]).to(dev)
    n, B = len(task["x"]), task["batch"]
    for perm in task["perms"]:
        perm = torch.from_numpy(perm).to(dev)
        epoch_losses = []
        for i in range(0, n, B):
            idx = perm[i:i + B]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(X[idx]), Y[idx])
            loss.backward()
            opt.step()
            epoch_losses.append(loss.detach())
        step_loss = torch.stack(epoch_losses).tolist()
        clock.epoch_done(step_loss)
    return clock.result()


def run_sklearn(task, device):
    """``MLPClassifier(solver="adam")`` on float32 input, one ``partial_fit`` per
    epoch on that epoch's shuffled copy (made outside the timer) so that the batch
    order is the same as everyone's; initial weights through ``_init_coef``."""
    from sklearn.neural_network import MLPClassifier

    init = list(task["init"])

    class SameStart(MLPClassifier):
        def _init_coef(self, fan_in, fan_out, dtype):
            W, b = init.pop(0)
            return W.astype(dtype, copy=True), b.astype(dtype, copy=True)

    sizes, B = task["sizes"], task["batch"]
    clf = SameStart(hidden_layer_sizes=sizes[1:-1], activation="relu", solver="adam", alpha=0.0,
                    batch_size=B, learning_rate_init=LR, beta_1=BETAS[0], beta_2=BETAS[1],
                    epsilon=EPS, shuffle=False)
    classes = np.arange(sizes[-1])
    times, losses = [], []
    for perm in task["perms"]:
        x, y = task["x"][perm], task["y"][perm]
        start = time.perf_counter()
        clf.partial_fit(x, y, classes=classes)
        times.append(time.perf_counter() - start)
        losses.append(float(clf.loss_))
    assert clf.coefs_[0].dtype == np.float32, clf.coefs_[0].dtype
    return dict(times=times, losses=losses, steps=[])


RUNNERS = {"ours": run_ours, "ours_per_epoch": run_ours_per_epoch, "hand_numpy": run_hand_numpy, "hand_jax": run_hand_jax,
           "torch_eager": run_torch_eager, "sklearn": run_sklearn}


class _Epochs:
    """Times and losses of a reference's epochs: ``epoch_done(step_losses)`` ends one
    (its time runs from the previous one's end, the first's from construction)."""

    def __init__(self, n, batch):
        self.n, self.batch, self.start = n, batch, time.perf_counter()
        self.times, self.losses, self.steps = [], [], []

    def epoch_done(self, step_loss):
        self.times.append(time.perf_counter() - self.start)
        self.start = time.perf_counter()
        self.losses.append(_epoch_mean(step_loss, self.n, self.batch))
        self.steps = self.steps or list(step_loss[:FIRST_STEPS])

    def result(self):
        return dict(times=self.times, losses=self.losses, steps=self.steps)


def _epoch_mean(step_loss, n, batch):
    sizes = np.full(len(step_loss), batch, dtype=float)
    sizes[-1] = n - batch * (len(step_loss) - 1)
    return float(np.dot(step_loss, sizes) / n)


# -- memory --------------------------------------------------------------------
class PeakMemory:
    """Peak memory of one run. CPU: the process's peak resident set (VmHWM, reset
    through /proc/self/clear_refs) above its resident set at the start, after the
    memory earlier runs freed has gone back to the kernel (``malloc_trim``: mlp's
    NumPy backend keeps freed memory for reuse, see backends/_malloc.py). GPU: the
    library's peak device allocation."""

    def __init__(self, kind, target):
        target = target.partition("+")[0]  # "jax:gpu+bf16": the device is the spec's
        self.gpu = target in ("cupy", "gpu", "cuda") or target.endswith(("gpu", "cuda"))
        self.kind, self.target = kind, target

    def __enter__(self):
        if self.gpu:
            self.what = "device"
            self._gpu_reset()
        else:
            self.what = "RSS"
            gc.collect()
            try:
                ctypes.CDLL(None).malloc_trim(0)
            except (OSError, AttributeError):  # not glibc
                pass
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.base = _status("VmRSS")
        return self

    def __exit__(self, *exc):
        self.peak = self._gpu_peak() if self.gpu else _status("VmHWM") - self.base

    def _gpu_reset(self):
        lib = self.target.split(":")[0]
        if self.kind == "torch_eager" or lib == "torch":
            import torch

            if not torch.cuda.is_available():
                raise RuntimeError(f"torch {torch.__version__}: no CUDA device (torch.cuda.is_available() is False)")
            torch.cuda.reset_peak_memory_stats()
        self.lib = "torch" if (self.kind == "torch_eager" or lib == "torch") else (
            "jax" if (self.kind == "hand_jax" or lib == "jax") else "cupy")
        self.base = 0
        if self.lib == "jax":
            import jax

            self.base = jax.devices("gpu")[0].memory_stats().get("peak_bytes_in_use", 0)

    def _gpu_peak(self):
        if self.lib == "torch":
            import torch

            return torch.cuda.max_memory_allocated()
        if self.lib == "jax":
            import jax

            return jax.devices("gpu")[0].memory_stats().get("peak_bytes_in_use", 0) - self.base
        import cupy

        return cupy.get_default_memory_pool().total_bytes()


def _status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


# -- the matrix-multiply ceiling --------------------------------------------------
def gemm_ceiling(sizes, batch, device, seconds=1.0):
    """GFLOP/s of the float32 matrix products of one training step (NumPy on the
    CPU, CuPy or PyTorch on the GPU), timed at the step's own shapes; median of
    repeats."""
    to_device, sync = (lambda a: a), (lambda: None)
    if device == "gpu":
        try:
            import cupy

            to_device, sync = cupy.asarray, cupy.cuda.Device().synchronize
        except ImportError:
            import torch

            to_device, sync = (lambda a: torch.as_tensor(a, device="cuda")), torch.cuda.synchronize
    rng = np.random.default_rng(0)

    def rand(*shape):
        return to_device(rng.random(shape, dtype=np.float32) - 0.5)

    ops = []
    for k, (i, o) in enumerate(zip(sizes[:-1], sizes[1:])):
        x, W, dy = rand(batch, i), rand(i, o), rand(batch, o)
        ops += [lambda x=x, W=W: x @ W, lambda x=x, dy=dy: x.T @ dy]
        if k > 0:
            ops.append(lambda W=W, dy=dy: dy @ W.T)

    def once():
        start = time.perf_counter()
        for op in ops:
            op()
        sync()
        return time.perf_counter() - start

    once()
    times, deadline = [], time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(times) < 5:
        times.append(once())
    return step_flops(sizes, batch) / statistics.median(times) / 1e9


# -- environment -------------------------------------------------------------------
def environment(kind, target):
    info = {"python": platform.python_version(), "numpy": np.__version__}
    try:
        from threadpoolctl import threadpool_info

        blas = [p for p in threadpool_info() if p.get("user_api") == "blas"]
        info["blas"] = [
            f"{p.get('internal_api')} {p.get('version')} {p.get('architecture') or ''} "
            f"({p.get('num_threads')} threads)".replace("  ", " ") for p in blas
        ]
    except ImportError:
        info["blas"] = ["threadpoolctl not installed"]
    lib = LIBRARY.get(kind) or (target.partition("+")[0].split(":")[0] if kind in OURS else None)
    if lib in ("jax", "torch", "sklearn", "cupy"):
        module = __import__(lib)
        info[lib] = module.__version__
    if lib == "torch":
        import torch

        info["torch_threads"] = torch.get_num_threads()
    return info


# -- worker --------------------------------------------------------------------------
def worker(kind, target, config, quick):
    """Builds the task once, then runs one repeat per 'run' line on stdin and
    answers with one JSON line on stdout."""
    out = sys.stdout
    sys.stdout = sys.stderr  # libraries' chatter must not mix with the answers
    try:
        if kind == "ceiling":
            cfg = dict(CONFIGS[config], **(QUICK[config] if quick else {}))
            print(json.dumps({"ready": True, "env": environment("ours", "numpy")}), file=out, flush=True)
            for line in sys.stdin:
                if line.strip() != "run":
                    break
                try:
                    gflops = gemm_ceiling(cfg["sizes"], cfg["batch"], target, seconds=0.2 if quick else 1.0)
                except Exception as err:  # noqa: BLE001 - e.g. --device gpu without a GPU library
                    gflops = None
                    print(f"GEMM ceiling not measured: {err}", file=sys.stderr)
                print(json.dumps({"ceiling": gflops}), file=out, flush=True)
            return
        task = make_task(config, quick)
        ready = {"ready": True}
        if kind in OURS:
            from mlp import backends
            import mlp.precision

            spec, _, precision = target.partition("+")
            # fail now, with the registry's (or the precision policy's) reason, if missing
            backend = backends.get(spec)
            mlp.precision.get(precision or "float32").check(backend)
            ready["ops_per_step"] = ops_per_step(spec, task["sizes"], task["batch"], precision or "float32")
            if hasattr(backend, "compilation_cache"):  # JAX: where compiled programs may come from
                ready["compilation_cache"] = backend.compilation_cache
        if kind not in OURS and LIBRARY[kind]:
            __import__(LIBRARY[kind])
        print(json.dumps(dict(ready, env=environment(kind, target))), file=out, flush=True)
    except Exception as err:  # noqa: BLE001 - reported in the table as unavailable
        print(json.dumps({"error": f"{type(err).__name__}: {err}"}), file=out, flush=True)
        return
    for line in sys.stdin:
        if line.strip() != "run":
            break
        try:
            ablations = [a for a in os.environ.get("BENCH_ABLATE", "").split(",") if a]
            with PeakMemory(kind, target) as mem:
                if kind in OURS:
                    result = RUNNERS[kind](task, target, ablations)
                else:
                    result = RUNNERS[kind](task, target)
            result.update(peak=mem.peak, memory=mem.what)
        except Exception as err:  # noqa: BLE001
            import traceback

            traceback.print_exc()
            result = {"error": f"{type(err).__name__}: {err}"}
        print(json.dumps(result), file=out, flush=True)


THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


class Worker:
    def __init__(self, label, kind, target, config, quick, threads=None):
        self.label = label
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", kind, target, config]
        cmd += ["--quick"] if quick else []
        env = dict(os.environ)
        if threads:  # BLAS, OpenMP (PyTorch) and XLA's CPU thread pools
            env.update({k: str(threads) for k in THREAD_VARIABLES})
            env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
                                f" intra_op_parallelism_threads={threads}").strip()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)

    def read(self):
        line = self.proc.stdout.readline()
        if not line:
            return {"error": f"worker exited with code {self.proc.wait()} (see its output above)"}
        return json.loads(line)

    def run(self):
        self.proc.stdin.write("run\n")
        self.proc.stdin.flush()
        return self.read()

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait()


# -- the benchmark ---------------------------------------------------------------------
def bench_config(config, impls, device, quick, repeats, log, threads=None):
    ceiling_worker = Worker("ceiling", "ceiling", device, config, quick, threads)
    env = ceiling_worker.read().get("env", {})
    workers = {label: Worker(label, kind, target, config, quick, threads)
               for label, (kind, target) in impls.items()}
    status = {label: w.read() for label, w in workers.items()}
    runs = {label: [] for label in impls}
    ceilings, round_ceilings = [], {}
    for r in range(repeats):
        # The GEMM ceiling is measured in every round, next to the runs it scales.
        ceiling = ceiling_worker.run().get("ceiling")
        if ceiling:
            ceilings.append(ceiling)
            round_ceilings[r] = ceiling
            log(f"  {config} repeat {r + 1}/{repeats} GEMM ceiling {ceiling:.1f} GFLOP/s")
        for label, w in workers.items():
            if "error" in status[label]:
                continue
            result = w.run()
            if "error" in result:
                status[label] = result
                continue
            runs[label].append(dict(result, round=r))
            log(f"  {config} repeat {r + 1}/{repeats} {label:14s} epochs "
                + " ".join(f"{t:.2f}s" for t in result["times"]))
    for w in [ceiling_worker, *workers.values()]:
        w.close()
    return {"ceiling": statistics.median(ceilings) if ceilings else None, "ceilings": ceilings, "env": env,
            "round_ceilings": round_ceilings, "status": status, "runs": runs}


def paired(a, b):
    """Median over the rounds that both ran of a's value over b's in the same round
    (``a``, ``b``: {round: value}): what a shared machine's slow phases cancel out of."""
    both = sorted(set(a) & set(b))
    return statistics.median(a[r] / b[r] for r in both) if both else None


def summarize(config, quick, raw, impls):
    cfg = dict(CONFIGS[config], **(QUICK[config] if quick else {}))
    n = min(cfg["steps_per_epoch"] * cfg["batch"], cfg["samples"]) if cfg["steps_per_epoch"] else cfg["samples"]
    per_sample = step_flops(cfg["sizes"], cfg["batch"]) / cfg["batch"]
    rows = {}
    for label, runs in raw["runs"].items():
        if not runs:
            rows[label] = {"error": raw["status"][label].get("error", "no runs")}
            continue
        steady = [n * (len(r["times"]) - 1) / sum(r["times"][1:]) for r in runs]
        by_round = {r["round"]: v for r, v in zip(runs, steady)}
        first = [r["times"][0] for r in runs]
        warmup = [r["times"][0] - statistics.median(r["times"][1:]) for r in runs]
        sps = statistics.median(steady)
        rows[label] = dict(
            samples_per_s=sps, best_samples_per_s=max(steady), first_epoch_s=statistics.median(first), warmup_s=statistics.median(warmup),
            peak_mib=statistics.median(r["peak"] for r in runs) / 2**20, memory=runs[0]["memory"],
            best_warmup_s=min(warmup), final_loss=runs[0]["losses"][-1], losses=runs[0]["losses"], steps=runs[0]["steps"],
            gflops=sps * per_sample / 1e9, repeats=len(runs), by_round=by_round,
        )
    ok = {k: v for k, v in rows.items() if "error" not in v}
    anchor = next((k for k in impls if impls[k][0] == "ours" and k in ok), next(iter(ok), None))
    best_ref = max((k for k in ok if impls[k][0] not in OURS), key=lambda k: ok[k]["samples_per_s"], default=None)
    for label, row in ok.items():
        a = ok[anchor]
        row["epoch_rel_diff"] = max(abs(x - y) / abs(y) for x, y in zip(row["losses"], a["losses"]))
        pairs = list(zip(row["steps"], a["steps"]))
        row["step_rel_diff"] = max((abs(x - y) / abs(y) for x, y in pairs), default=None)
        precision = impls[label][1].partition("+")[2]
        epoch_rtol = PRECISION_EPOCH_RTOL if precision else EPOCH_RTOL
        row["loss_agrees"] = row["epoch_rel_diff"] <= epoch_rtol and (
            row["step_rel_diff"] is None or row["step_rel_diff"] <= PRECISION_STEP_RTOL.get(precision, STEP_RTOL))
        base = label.rsplit(" ", 1)[0] if precision else None
        if base in ok:  # the same backend in float32, round by round
            row["precision"] = precision
            row["vs_float32"] = paired(row["by_round"], ok[base]["by_round"])
        if best_ref:
            row["vs_best_ref"] = paired(row["by_round"], ok[best_ref]["by_round"])
            fastest = max(ok[k]["best_samples_per_s"] for k in ok if impls[k][0] not in OURS)
            row["best_vs_best_ref"] = row["best_samples_per_s"] / fastest
        if raw["ceiling"]:
            gflops = {r: v * per_sample / 1e9 for r, v in row["by_round"].items()}
            row["of_ceiling"] = paired(gflops, raw["round_ceilings"])
            row["best_of_ceiling"] = row["best_samples_per_s"] * per_sample / 1e9 / max(raw["ceilings"])
        row["ops_per_step"] = raw["status"][label].get("ops_per_step")
        one_fit = ok.get(label.removesuffix(PER_EPOCH)) if label.endswith(PER_EPOCH) else None
        if one_fit:  # fit per epoch against one fit of all epochs, round by round
            row["vs_one_fit"] = paired(row["by_round"], one_fit["by_round"])
            row["best_vs_one_fit"] = row["best_samples_per_s"] / one_fit["best_samples_per_s"]
    return dict(config=config, sizes=cfg["sizes"], batch=cfg["batch"], samples_per_epoch=n,
                epochs=cfg["epochs"], steps_per_epoch=-(-n // cfg["batch"]), ceiling_gflops=raw["ceiling"],
                ceilings=raw["ceilings"],
                anchor=anchor, best_reference=best_ref, rows=rows, env=raw["env"], status=raw["status"],
                worker_env={k: v.get("env") for k, v in raw["status"].items() if "env" in v})


TARGETS = [  # (config, implementation, measure, threshold, text)
    ("small", "mlp jax", "vs_best_ref", 1.3, "JAX backend >= 1.3x the fastest reference"),
    ("small", "mlp numpy", "vs_hand_numpy", 1.0, "NumPy backend >= 1.0x NumPy by hand"),
    ("large", "mlp jax", "of_ceiling", 0.90, "JAX backend >= 90% of the GEMM ceiling"),
    ("large", "mlp numpy", "of_ceiling", 0.75, "NumPy backend >= 75% of the GEMM ceiling"),
    ("small", "mlp jax", "warmup_s", -1.0, "JAX backend warm-up (first epoch - steady epoch) < 1 s"),
    ("large", "mlp jax", "warmup_s", -1.0, "JAX backend warm-up (first epoch - steady epoch) < 1 s"),
    # issue 14: operations per step (at most), and fit called once per epoch
    ("small", "mlp numpy", "ops_per_step", 40, "NumPy backend <= 40 array operations per step"),
    ("small", "mlp torch", "ops_per_step", 40, "PyTorch backend <= 40 array operations per step"),
    ("large", "mlp numpy", "ops_per_step", 50, "NumPy backend <= 50 array operations per step"),
    ("large", "mlp torch", "ops_per_step", 50, "PyTorch backend <= 50 array operations per step"),
    ("small", "mlp jax" + PER_EPOCH, "vs_one_fit", 0.95, "JAX: fit per epoch >= 0.95x one fit"),
    ("small", "mlp numpy" + PER_EPOCH, "vs_one_fit", 0.95, "NumPy: fit per epoch >= 0.95x one fit"),
]


def targets(results):
    lines = []
    for config, label, measure, threshold, text in TARGETS:
        res = results.get(config)
        row = res and res["rows"].get(label)
        if not row or "error" in row:
            continue
        if measure == "vs_hand_numpy":
            hand = res["rows"].get("NumPy by hand", {})
            if "samples_per_s" not in hand:
                continue
            value = paired(row["by_round"], hand["by_round"])
            best = row["best_samples_per_s"] / hand["best_samples_per_s"]
        elif measure == "warmup_s":
            value, best = row.get(measure), row.get("best_warmup_s")
        elif measure == "ops_per_step":  # a count: the same every repeat, and at most the threshold
            value = best = row.get(measure)
        else:
            value, best = row.get(measure), row.get("best_" + measure)
        if value is None:
            continue
        fmt = (lambda v: f"{v:.2f} s") if threshold < 0 else (
            (lambda v: f"{v:.0%}") if measure == "of_ceiling" else (lambda v: f"{v:.2f}x"))
        ok = (lambda v: v < -threshold) if threshold < 0 else (lambda v: v >= threshold)
        if measure == "ops_per_step":
            fmt, ok = str, (lambda v: v <= threshold)
        status = lambda v: "met" if ok(v) else "NOT met"  # noqa: E731
        lines.append(f"| {config} | {text} | {fmt(value)} | {status(value)} | {fmt(best)} | {status(best)} |")
    if not lines:
        return ""
    head = ["| config | target | median | status | best of repeats | status |",
            "| --- | --- | --- | --- | --- | --- |"]
    return "\n".join([*head, *lines])


PRECISION_TARGETS = {("huge", "tf32"): 4.0, ("huge", "bf16"): 6.0}  # GPU: x the float32 speed


def precision_table(results):
    """One line per precision row: its speed over the same backend's float32 row
    (median of within-round ratios), how far it moves the loss, and the target
    where the issue set one (the huge config on a GPU)."""
    lines = []
    for config, res in results.items():
        for label, row in res["rows"].items():
            if "vs_float32" not in row:
                continue
            target = PRECISION_TARGETS.get((config, row["precision"]))
            met = "" if target is None or not res.get("gpu") else (
                f"{target:.0f}x: {'met' if row['vs_float32'] >= target else 'NOT met'}")
            steps = "" if row["step_rel_diff"] is None else f"{row['step_rel_diff']:.1e}"
            lines.append(f"| {config} | {label} | {row['vs_float32']:.2f}x | {row['epoch_rel_diff']:.1e} | "
                         f"{steps} | {'yes' if row['loss_agrees'] else 'NO'} | {met} |")
    if not lines:
        return ""
    head = ["| config | implementation | x float32 | epoch losses vs anchor | first steps vs anchor | "
            "agrees | target |", "| --- | --- | ---: | ---: | ---: | --- | --- |"]
    return "\n".join([*head, *lines])


def table(res):
    head = (f"### {res['config']}: {'-'.join(map(str, res['sizes']))}, batch {res['batch']}, "
            f"{res['samples_per_epoch']:,} samples ({res['steps_per_epoch']} steps) per epoch, "
            f"{res['epochs']} epochs")
    ceiling = res["ceiling_gflops"]
    spread = ", ".join(f"{c:.0f}" for c in res["ceilings"])
    lines = [head, "", f"GEMM ceiling (float32 products of one step at its own shapes, median of "
             f"rounds: {spread}): {ceiling:.1f} GFLOP/s" if ceiling else "GEMM ceiling: not measured", "",
             "| implementation | samples/s | x best ref | first epoch s | warm-up s | peak MiB | "
             "final loss | loss agrees | GFLOP/s | of ceiling | ops/step |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |"]
    for label, row in res["rows"].items():
        if "error" in row:
            lines.append(f"| {label} | unavailable: {row['error'][:80]} | | | | | | | | | |")
            continue
        steps = "" if row["step_rel_diff"] is None else f", steps {row['step_rel_diff']:.0e}"
        agree = f"{'yes' if row['loss_agrees'] else 'NO'} (epochs {row['epoch_rel_diff']:.0e}{steps})"
        nan = float("nan")
        lines.append(
            f"| {label} | {row['samples_per_s']:,.0f} | {row.get('vs_best_ref') or nan:.2f} | "
            f"{row['first_epoch_s']:.2f} | {row['warmup_s']:.2f} | {row['peak_mib']:.0f} ({row['memory']}) | "
            f"{row['final_loss']:.4f} | {agree} | {row['gflops']:.1f} | "
            f"{row.get('of_ceiling') or nan:.0%} | {row.get('ops_per_step') or ''} |")
    best = ", ".join(f"{k} {v['best_samples_per_s']:,.0f}" for k, v in res["rows"].items() if "error" not in v)
    lines += ["", f"Best reference: {res['best_reference']}; loss anchor: {res['anchor']}. "
              f"Best samples/s of the repeats (a shared machine only ever slows a run down): {best}."]
    per_epoch = [f"{label.removesuffix(PER_EPOCH)} {row['vs_one_fit']:.2f}x (best {row['best_vs_one_fit']:.2f}x)"
                 for label, row in res["rows"].items() if row.get("vs_one_fit")]
    if per_epoch:
        lines += ["", "fit per epoch (fit(epochs=1) once per epoch, data on the device) against one "
                  "fit of every epoch, samples/s: " + "; ".join(per_epoch) + "."]
    return "\n".join(lines)


def header(results, device, repeats, load_before, load_after, threads=None):
    env = next(iter(results.values()))["env"] if results else {}
    versions = {}
    for res in results.values():
        for e in res["worker_env"].values():
            versions.update({k: v for k, v in (e or {}).items() if k in ("jax", "torch", "sklearn", "cupy")})
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
    except OSError:
        commit = ""
    blas_env = ", ".join(f"{k}={os.environ[k]}" for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE",
                                                         *THREAD_VARIABLES) if k in os.environ)
    blas_env += f"; workers limited to {threads} thread(s)" if threads else ""
    caches = sorted({str(s.get("compilation_cache")) for res in results.values()
                     for s in res.get("status", {}).values() if "compilation_cache" in s})
    lines = [
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; mlp commit {commit or '?'}",
        f"- machine: {cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}",
        f"- device: {device}; repeats: {repeats} (medians shown); load average before/after: "
        f"{load_before:.2f} / {load_after:.2f}",
        "- " + ", ".join([f"python {env.get('python', '?')}", f"numpy {env.get('numpy', '?')}"]
                         + [f"{k} {v}" for k, v in sorted(versions.items())]),
        f"- NumPy BLAS (threadpoolctl): {'; '.join(env.get('blas', ['?']))}; "
        f"environment: {blas_env or 'no OPENBLAS_* / OMP_* variables set'}",
    ]
    if caches:
        lines.append(f"- mlp jax's persistent compilation cache: {', '.join(caches)} (a first epoch may load "
                     "its program from there; MLP_JAX_CACHE=0 measures a cold start)")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--quick", action="store_true", help="fewer samples and steps, 1 repeat")
    parser.add_argument("--configs", default=None, help=(
        f"comma-separated, from {', '.join(CONFIGS)} (huge: 784-4096-4096-10, batch 4096, for GPUs); "
        f"default: {DEFAULT_CONFIGS['cpu']} on the CPU, {DEFAULT_CONFIGS['gpu']} on a GPU"))
    parser.add_argument("--only", default="", help="comma-separated implementation labels to run")
    parser.add_argument("--repeats", type=int, default=None, help="runs per implementation (default 3, 1 with --quick)")
    parser.add_argument("--threads", type=int, help="limit every library to this many threads "
                        "(sets OMP/OPENBLAS/MKL_NUM_THREADS and XLA's CPU flags in the workers)")
    parser.add_argument("--ablate", default="", help="comma-separated speed-ups of mlp to undo, to "
                        "measure each: " + "; ".join(f"{k}: {v}" for k, v in ABLATIONS.items()))
    parser.add_argument("--precision", default="float32",
                        help="comma-separated precision policies of mlp's rows, from "
                             f"{', '.join(PRECISIONS)} (e.g. float32,bf16): each adds rows such as "
                             "'mlp jax bf16', compared with the same backend in float32")
    parser.add_argument("--json", help="also write the raw results here")
    parser.add_argument("--worker", nargs=3, metavar=("KIND", "TARGET", "CONFIG"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(*args.worker, args.quick)
    impls = GPU_IMPLS if args.device == "gpu" else CPU_IMPLS
    if args.only:
        wanted = [s.strip() for s in args.only.split(",")]
        unknown = [w for w in wanted if w not in impls]
        if unknown:
            parser.error(f"unknown implementation(s) {unknown}; expected some of {list(impls)}")
        impls = {k: v for k, v in impls.items() if k in wanted}
    precisions = [p.strip() for p in args.precision.split(",") if p.strip()]
    for p in precisions:
        if p not in PRECISIONS:
            parser.error(f"unknown precision {p!r}; expected some of {', '.join(PRECISIONS)}")
    impls = with_precisions(impls, precisions)
    configs = [c.strip() for c in (args.configs or DEFAULT_CONFIGS[args.device]).split(",")]
    for c in configs:
        if c not in CONFIGS:
            parser.error(f"unknown config {c!r}; expected some of {', '.join(CONFIGS)}")
    repeats = args.repeats or (1 if args.quick else 3)
    ablations = [a.strip() for a in args.ablate.split(",") if a.strip()]
    for a in ablations:
        if a not in ABLATIONS:
            parser.error(f"unknown ablation {a!r}; expected some of {', '.join(ABLATIONS)}")
    os.environ["BENCH_ABLATE"] = ",".join(ablations)  # read by the workers
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    results = {}
    for config in configs:
        raw = bench_config(config, impls, args.device, args.quick, repeats, log, args.threads)
        results[config] = dict(summarize(config, args.quick, raw, impls), gpu=args.device == "gpu")
    load_after = os.getloadavg()[0]
    print(f"## Training throughput ({args.device})\n")
    if ablations:
        print("Ablated (mlp rows only): " + "; ".join(ABLATIONS[a] for a in ablations) + "\n")
    print(header(results, args.device, repeats, load_before, load_after, args.threads) + "\n")
    for res in results.values():
        print(table(res) + "\n")
    goals = targets(results) if args.device == "cpu" else ""
    if goals:
        print("### Targets (issues 6 and 14)\n\n" + goals + "\n")
    speedups = precision_table(results)
    if speedups:
        print("### Precision policies (issue 15): speed and loss against the same backend in float32\n\n"
              + speedups + "\n")
    again = list(sys.argv[1:])  # the same options, but where to write the raw results
    if "--json" in again:
        del again[again.index("--json"):again.index("--json") + 2]
    again = [a for a in again if not a.startswith("--json=")]
    print(f"Total time {time.perf_counter() - start:.0f} s. Regenerate: "
          + " ".join(["python benchmarks/bench_train.py", *map(shlex.quote, again)]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": args.device, "repeats": repeats, "results": results,
                       "load": [load_before, load_after]}, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
