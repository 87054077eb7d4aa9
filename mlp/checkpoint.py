"""Checkpoints: a model, its optimizer state and its random state in one safetensors file.

    >>> from mlp import checkpoint
    >>> checkpoint.save(model, "run.safetensors")
    >>> model, meta = checkpoint.load("run.safetensors", backend="jax")

Tensors: ``params.<layer>.<name>`` (``params.0.W``) and the optimizer state
flattened the same way (``opt.m.0.W``, ``opt.step``). Everything else is JSON in
the safetensors header: the architecture (``model.config()``), the optimizer's
hyper-parameters, the epoch, the host RNG state, the history and the caller's
``extra``. No pickle: a checkpoint is data, never code. Files are written
atomically (temporary file in the same folder, fsync, rename, fsync the folder),
so a crash leaves either the old checkpoint or the new one. Loading a model on
the same backend and training on gives exactly what an uninterrupted run gives.
"""
from __future__ import annotations

import json
import os
import tempfile

import numpy as np

from . import optimizers as _optimizers
from .errors import MLPError
from .model import History, Sequential

FORMAT = "mlp.checkpoint"
FORMAT_VERSION = 1


class CheckpointError(MLPError, ValueError):
    """A file that is not a readable mlp checkpoint (missing, corrupt, or another format)."""


def _paths(tree, prefix):
    """``[(dotted name, leaf)]`` for a nested dict/list/tuple, in a fixed order."""
    if isinstance(tree, dict):
        return [p for k in sorted(tree) for p in _paths(tree[k], f"{prefix}.{k}")]
    if isinstance(tree, (list, tuple)):
        return [p for i, t in enumerate(tree) for p in _paths(t, f"{prefix}.{i}")]
    if tree is None:
        return []
    return [(prefix, tree)]


def _fill(template, prefix, tensors, backend, path):
    """``template`` with every leaf replaced by the tensor of the same name, on ``backend``."""
    if isinstance(template, dict):
        return {k: _fill(v, f"{prefix}.{k}", tensors, backend, path) for k, v in template.items()}
    if isinstance(template, (list, tuple)):
        return type(template)(_fill(v, f"{prefix}.{i}", tensors, backend, path) for i, v in enumerate(template))
    if template is None:
        return None
    if prefix not in tensors:
        raise CheckpointError(f"{path}: tensor {prefix!r} is missing; the checkpoint is incomplete")
    host = tensors[prefix]
    if not hasattr(template, "shape"):  # a plain Python number in the optimizer state
        return type(template)(host.item())
    if tuple(host.shape) != tuple(template.shape):
        raise CheckpointError(f"{path}: tensor {prefix!r} is {list(host.shape)}, the model "
                              f"expects {list(template.shape)}")
    return backend.asarray(host, backend.dtype_name(template.dtype))


def _write_atomic(path, data):
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable (POSIX)
        dfd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def save(model, path, *, extra=None):
    """Write ``model`` (weights, optimizer state, epoch, RNG state, architecture,
    history) to ``path`` atomically; ``extra`` is any JSON-ready dict kept beside."""
    from safetensors.numpy import save as to_bytes

    from . import __version__

    to_host = model.backend.to_numpy
    tensors = {name: np.asarray(to_host(a), order="C") for name, a in _paths(model.params, "params")}
    if model.opt_state is not None:
        tensors.update({name: np.asarray(to_host(a), order="C") for name, a in _paths(model.opt_state, "opt")})
    history = {k: v for k, v in model.history.items() if k != "step_loss"}
    meta = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "mlp_version": __version__,
        "config": json.dumps(model.config()),
        "optimizer": json.dumps(model.optimizer.config() if model.optimizer is not None else None),
        "epoch": str(int(model.epoch)),
        "rng_state": json.dumps(model.rng.bit_generator.state),
        "history": json.dumps(history),
        "backend": model.backend.spec,
        "extra": json.dumps(extra if extra is not None else {}),
    }
    _write_atomic(path, to_bytes(tensors, metadata=meta))
    return path


def read(path):
    """``(tensors, meta)`` of a checkpoint file as host NumPy arrays and parsed JSON."""
    from safetensors import safe_open

    if not os.path.isfile(path):
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        with safe_open(path, framework="numpy") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as err:  # noqa: BLE001 - safetensors raises its own error types
        raise CheckpointError(f"{path} is not a readable safetensors file: {err}") from err
    if header.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a safetensors file but not an mlp checkpoint "
                              f"(its header has no format={FORMAT!r})")
    if int(header.get("format_version", 0)) > FORMAT_VERSION:
        raise CheckpointError(f"{path} has checkpoint format {header['format_version']}; this mlp "
                              f"reads format {FORMAT_VERSION} and older: upgrade mlp")
    try:
        meta = {k: json.loads(header[k]) for k in ("config", "optimizer", "rng_state", "history", "extra")}
        meta["epoch"] = int(header["epoch"])
    except (KeyError, ValueError) as err:
        raise CheckpointError(f"{path}: the checkpoint header is damaged ({type(err).__name__}: {err})") from err
    meta.update(format_version=int(header["format_version"]), mlp_version=header.get("mlp_version", ""),
                backend=header.get("backend", ""))
    return tensors, meta


def load(path, backend=None):
    """The model saved at ``path`` on ``backend`` (any backend, whatever wrote it),
    ready to train on, and the checkpoint's metadata as a dict."""
    tensors, meta = read(path)
    try:
        model = Sequential.from_config(meta["config"], backend=backend)
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: the architecture in the checkpoint is invalid: {err}") from err
    model.params = _fill(model.params, "params", tensors, model.backend, path)
    if meta["optimizer"] is not None:
        config = dict(meta["optimizer"])
        name = config.pop("name")
        model.set_optimizer(_optimizers.get(name, **config))
        model.opt_state = _fill(model.opt_state, "opt", tensors, model.backend, path)
    state = meta["rng_state"]
    rng = np.random.Generator(getattr(np.random, state["bit_generator"])())
    rng.bit_generator.state = state
    model.rng = rng
    model.epoch = meta["epoch"]
    model.history = History(meta["history"])
    return model, meta
