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

from . import backends

from . import optimizers as _optimizers
from . import precision as _precision
from .errors import MLPError
from .layers import chain_widths, from_config
from .model import Sequential
from .precision import PrecisionError
from .tree import map_named, named_leaves

FORMAT = "mlp.checkpoint"
FORMAT_VERSION = 1


class CheckpointError(MLPError, ValueError):
    """A file that is not a readable mlp checkpoint (missing, corrupt, or another format)."""


def _tensor(tensors, path):
    """``fn(name, template)``: the host tensor ``name`` of a checkpoint at ``path``,
    checked against the model's array ``template``."""
    def get(name, template):
        if name not in tensors:
            raise CheckpointError(f"{path}: tensor {name!r} is missing; the checkpoint is incomplete")
        host = tensors[name]
        if host.dtype.kind not in "fiub":
            raise CheckpointError(f"{path}: tensor {name!r} has dtype {host.dtype}, not a real number type")
        if hasattr(template, "shape") and tuple(host.shape) != tuple(template.shape):
            raise CheckpointError(f"{path}: tensor {name!r} is {list(host.shape)}, the model "
                                  f"expects {list(template.shape)}")
        return host

    return get


def write_atomic(path, data):
    """Write ``data`` to a temporary file in ``path``'s folder, then rename it over
    ``path`` (a reader sees the old file or the new one, never a mix)."""
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

    state = model.state()
    tensors = {name: np.asarray(a, order="C") for name, a in named_leaves(state["params"], "params")}
    tensors.update({name: np.asarray(a, order="C") for name, a in named_leaves(state["opt_state"], "opt")})
    meta = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "mlp_version": __version__,
        "config": json.dumps(state["config"]),
        "optimizer": json.dumps(state["optimizer"]),
        "epoch": str(state["epoch"]),
        "rng_state": json.dumps(state["rng_state"]),
        "history": json.dumps(state["history"]),
        "backend": model.backend.spec,
        "extra": json.dumps(extra if extra is not None else {}),
    }
    meta["crc32"] = _checksum(tensors, meta)
    write_atomic(path, to_bytes(tensors, metadata=meta))
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
    for i, (layer, width) in enumerate(zip(layers, chain_widths(layers))):
        for name, shape in layer.param_shapes(width).items():
            key = f"params.{i}.{name}"
            if key not in tensors:
                raise CheckpointError(f"{path}: tensor {key!r} of layer {i} {layer!r} is missing; "
                                      f"the checkpoint is incomplete or not of this architecture")
            if tuple(tensors[key].shape) != tuple(shape):
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
        _check_shapes([from_config(c) for c in config["layers"]], tensors, path)
        config = {**config, "precision": _precision_for(config, backend, precision, path)}
        model = Sequential.from_config(config, backend=backend)
    except (backends.BackendUnavailable, CheckpointError, PrecisionError):
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise CheckpointError(f"{path}: the architecture in the checkpoint is invalid: {err}") from err
    try:
        get = _tensor(tensors, path)
        state = {**meta, "params": map_named(get, model.params, "params")}
        if meta["optimizer"] is not None:
            config = dict(meta["optimizer"])
            template = _optimizers.get(config.pop("name"), **config).init(model.params)
            state["opt_state"] = map_named(get, template, "opt")
        model.load_state(state)
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
        model.load_state({"params": map_named(_tensor(tensors, path), model.params, "params")})
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: the checkpoint is damaged ({type(err).__name__}: {err})") from err
    return model