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
so a crash leaves either the old checkpoint or the new one. A CRC-32 of the tensors
and the header fields (``crc32``) turns silent corruption into a CheckpointError.
Loading a model on the same backend and training on gives exactly what an
uninterrupted run gives.
"""
from __future__ import annotations

import json
import os
import tempfile
import zlib

import numpy as np

import backends

from . import optimizers as _optimizers
from . import precision as _precision
from .errors import MLPError
from .layers import from_config, Linear
from .model import History, Sequential
from .precision import PrecisionError

FORMAT = "mlp.checkpoint"
FORMAT_VERSION = 1
BIT_GENERATORS = ("PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64")


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
    if host.dtype.kind not in "fiub":
        raise CheckpointError(f"{path}: tensor {prefix!r} has dtype {host.dtype}, not a real number type")
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
    meta["crc32"] = _checksum(tensors, meta)
    _write_atomic(path, to_bytes(tensors, metadata=meta))
    return path


def _checksum(tensors, meta):
    """CRC-32 of every tensor (name, dtype, shape, bytes) and every header field: a flipped
    bit anywhere that safetensors itself does not notice is still caught on load."""
    crc = 0
    for name in sorted(tensors):
        t = np.asarray(tensors[name])
        crc = zlib.crc32(f"{name}:{t.dtype.str}:{t.shape}".encode(), crc)
        crc = zlib.crc32(np.ascontiguousarray(t).reshape(-1).view(np.uint8), crc)
    for key in sorted(k for k in meta if k != "crc32"):
        crc = zlib.crc32(f"{key}={meta[key]}".encode(), crc)
    return f"{crc:08x}"


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
    if "crc32" in header and header["crc32"] != _checksum(tensors, header):
        raise CheckpointError(f"{path} is corrupted: its contents do not match the checksum in its header")
    if header.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a safetensors file but not an mlp checkpoint "
                              f"(its header has no format={FORMAT!r})")
    version = header.get("format_version", "")
    if not (version.isascii() and version.isdigit()) or not 1 <= int(version) <= FORMAT_VERSION:
        known = "1" if FORMAT_VERSION == 1 else f"1 to {FORMAT_VERSION}"
        raise CheckpointError(f"{path} has checkpoint format {version!r}; this mlp reads format {known}"
                              + (": upgrade mlp" if version.isascii() and version.isdigit() and int(version) > 1 else ""))
    try:
        meta = {k: json.loads(header[k]) for k in ("config", "optimizer", "rng_state", "history", "extra")}
        meta["epoch"] = int(header["epoch"])
        if not (isinstance(meta["config"], dict) and isinstance(meta["history"], dict)
                and isinstance(meta["extra"], dict) and isinstance(meta["rng_state"], dict)
                and isinstance(meta["optimizer"], (dict, type(None))) and meta["epoch"] >= 0):
            raise ValueError("a field has the wrong type")
    except (KeyError, ValueError) as err:
        raise CheckpointError(f"{path}: the checkpoint header is damaged ({type(err).__name__}: {err})") from err
    meta.update(format_version=int(version), mlp_version=header.get("mlp_version", ""),
                backend=header.get("backend", ""))
    return tensors, meta


def _check_shapes(layers, tensors, path):
    """Every parameter tensor the architecture needs is there with its shape, before
    anything is allocated for the model (a damaged config cannot ask for terabytes)."""
    for i, layer in enumerate(layers):
        if not isinstance(layer, Linear):
            continue
        want = {"W": (layer.in_features, layer.out_features)}
        if layer.bias:
            want["b"] = (layer.out_features,)
        for name, shape in want.items():
            key = f"params.{i}.{name}"
            if key not in tensors:
                raise CheckpointError(f"{path}: tensor {key!r} of layer {i} {layer!r} is missing; "
                                      f"the checkpoint is incomplete or not of this architecture")
            if tuple(tensors[key].shape) != shape:
                raise CheckpointError(f"{path}: tensor {key!r} is {list(tensors[key].shape)}, but layer {i} "
                                      f"{layer!r} needs {list(shape)}: the weights do not fit the architecture")


def load(path, backend=None, precision=None):
    """The model saved at ``path`` on ``backend`` (any backend, whatever wrote it),
    ready to train on, and the checkpoint's metadata as a dict.

    ``precision`` (default: the one the checkpoint records) is the model's
    precision policy; the weights are float32 whatever it is. A policy the
    backend cannot run is a PrecisionError that says to pass precision="float32"."""
    tensors, meta = read(path)
    if not isinstance(backend, backends.Backend):
        backend = backends.get(backend)  # an unavailable backend is BackendUnavailable, not a bad file
    try:
        config = meta["config"]
        layers = [from_config(c) for c in config["layers"]]
        _check_shapes(layers, tensors, path)
        model = Sequential(*layers, backend=backend, seed=config.get("seed", 0),
                           dtype=config.get("dtype", "float32"), loss=config.get("loss", "cross_entropy"),
                           precision=_precision_for(config, backend, precision, path))
    except (backends.BackendUnavailable, CheckpointError, PrecisionError):
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise CheckpointError(f"{path}: the architecture in the checkpoint is invalid: {err}") from err
    try:
        model.params = _fill(model.params, "params", tensors, model.backend, path)
        if meta["optimizer"] is not None:
            config = dict(meta["optimizer"])
            name = config.pop("name")
            model.set_optimizer(_optimizers.get(name, **config))
            model.opt_state = _fill(model.opt_state, "opt", tensors, model.backend, path)
        state = meta["rng_state"]
        if state.get("bit_generator") not in BIT_GENERATORS:  # a name from the file is never just called
            raise ValueError(f"unknown bit generator {state.get('bit_generator')!r}")
        rng = np.random.Generator(getattr(np.random, state["bit_generator"])())
        rng.bit_generator.state = state
        model.rng = rng
        model.epoch = meta["epoch"]
        model.history = History(meta["history"])
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as err:
        raise CheckpointError(f"{path}: the checkpoint is damaged ({type(err).__name__}: {err})") from err
    return model, meta


def _precision_for(config, backend, precision, path):
    """The policy to load with: ``precision`` if given, else the recorded one,
    which must run on ``backend`` (no silent fallback to float32)."""
    if precision is not None:
        return precision
    saved = config.get("precision", "float32")
    policy = _precision.get(saved)
    if saved not in backend.precisions:
        raise PrecisionError(
            f"{path} was saved with precision {saved!r}, which {backend!r} does not run (it runs "
            f"{', '.join(map(repr, backend.precisions))}); its float32 weights load anywhere with "
            f"precision='float32' (CLI: --precision float32); {saved} runs on {policy.where}")
    return saved


def load_weights(model, path):
    """Put the weights saved at ``path`` into ``model`` (same architecture, any backend);
    the model's optimizer state, epoch and history stay as they are."""
    tensors, meta = read(path)
    layers = model.layers
    try:
        saved = [from_config(c) for c in meta["config"]["layers"]]
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise CheckpointError(f"{path}: the architecture in the checkpoint is invalid: {err}") from err
    def shape(layer):  # what the weights depend on (not how they were first drawn)
        return {k: v for k, v in layer.config().items() if k != "init"}

    if [shape(layer) for layer in saved] != [shape(layer) for layer in layers]:
        raise CheckpointError(f"{path} holds a model {', '.join(map(repr, saved))}; it does not fit "
                              f"this model {', '.join(map(repr, layers))}")
    _check_shapes(layers, tensors, path)
    try:
        model.params = _fill(model.params, "params", tensors, model.backend, path)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: the checkpoint is damaged ({type(err).__name__}: {err})") from err
    return model