"""Input and target checks: host or device data in, ``[B x D]`` arrays of the
model's dtype on its device out, or a clear error saying what was expected and
what came, before any work starts.

Used by :class:`mlp.Sequential`, the CLI and the scikit-learn estimators. The
functions take the model (anything with ``backend``, ``dtype``, ``layers``,
``input_width`` and ``output_width``) and never change it.
"""
from __future__ import annotations

import array_api_compat
import numpy as np

from . import losses as _losses
from .errors import DataError, fmt_shape, ShapeError
from .interop import from_foreign


def foreign_namespace(x):
    """The array library of ``x`` when it is a non-NumPy array, else None."""
    if isinstance(x, (np.ndarray, np.generic, list, tuple, int, float)):
        return None
    try:
        return array_api_compat.array_namespace(x)
    except TypeError:
        return None


def as_input(model, x, name="x"):
    """``x`` as a ``[B x D]`` array of the model's dtype on its device."""
    backend = model.backend
    foreign = foreign_namespace(x)
    if foreign is not None and not isinstance(x, np.ndarray):  # DLPack, or a DeviceMismatch
        return _check_device_input(model, from_foreign(x, backend, name), name)
    try:
        host = np.asarray(x)
    except Exception as err:
        first = str(err).split(". ")[0]
        raise DataError(f"{name} could not be read as one array of numbers ({first}); every row "
                        f"must have the same number of values") from err
    if host.size == 0:
        raise DataError(f"{name} is empty: {fmt_shape(host.shape)}; there is nothing to compute on")
    check_matrix(model, host.shape, name)
    if not (np.issubdtype(host.dtype, np.number) or host.dtype == bool):
        raise DataError(f"{name} must be numeric, got dtype {host.dtype}")
    if np.issubdtype(host.dtype, np.complexfloating):
        raise DataError(f"{name} must be real numbers, got dtype {host.dtype}")
    # min and max are NaN or infinite exactly when some value is: two passes, no
    # temporary (isfinite(host) of a 60,000 x 784 array costs ten times as much)
    if host.dtype != bool and not (np.isfinite(host.min()) and np.isfinite(host.max())):
        row = int(np.flatnonzero(~np.isfinite(host).all(axis=1))[0])
        raise DataError(
            f"{name} has NaN or infinite values; the first is in row {row}: {host[row][:8]}"
        )
    return backend.asarray(host.astype(model.dtype, copy=False), model.dtype)


def _check_device_input(model, x, name):
    """The checks of host data, on an array already on the model's device (one sync)."""
    backend = model.backend
    xp, want = backend.xp, backend.dtype(model.dtype)
    check_matrix(model, x.shape, name)
    if not xp.isdtype(x.dtype, ("real floating", "integral", "bool")):
        raise DataError(f"{name} must be real numbers, got dtype {x.dtype}")
    if x.dtype != want:
        x = xp.astype(x, want)
    finite = xp.all(xp.isfinite(x), axis=1)
    if not bool(backend.to_numpy(xp.all(finite))):
        row = int(np.flatnonzero(~np.asarray(backend.to_numpy(finite)))[0])
        raise DataError(f"{name} has NaN or infinite values; the first is in row {row}")
    return x


def check_matrix(model, shape, name="x"):
    """Raise unless ``shape`` is ``[B x D]`` with B > 0 and D the model's input width."""
    d = model.input_width
    first = model.describe_input_layer()
    if len(shape) != 2:
        hint = ""
        if len(shape) == 1:
            hint = (f"; for one sample of {shape[0]} features use x.reshape(1, -1)"
                    if shape[0] == d else "; reshape it to [B x D]")
        elif len(shape) > 2:
            hint = f"; flatten each sample with x.reshape({shape[0]}, -1)"
        raise ShapeError(f"{name} must be [B x {d}] for {first}, got {fmt_shape(shape)}{hint}")
    if shape[0] == 0:
        raise DataError(f"{name} is empty: [0 x {shape[1]}]; there is nothing to compute on")
    if shape[1] != d:
        raise ShapeError(f"{first} expects [B x {d}], got {name} {fmt_shape(shape)}")


def as_target(model, y, loss=None, n=None):
    """``y`` checked against ``loss`` (default: the model's) and ``n`` rows, as an
    array on the model's device: int32 class ids, else the model's dtype."""
    backend = model.backend
    loss = model.loss if loss is None else _losses.get(loss)
    if foreign_namespace(y) is not None and not isinstance(y, np.ndarray):
        y = backend.to_numpy(from_foreign(y, backend, "y"))  # validated on the host below, once
    host = _losses.check_targets(loss, y, model.output_width)
    if n is not None and host.shape[0] != n:
        raise ShapeError(f"x has {n} rows but y has {host.shape[0]}: they must match")
    if np.issubdtype(host.dtype, np.integer) and host.ndim == 1:
        return backend.asarray(host.astype(backend.index_dtype), backend.index_dtype)
    if not np.isfinite(host).all():
        row = int(np.flatnonzero(~np.isfinite(host).reshape(len(host), -1).all(axis=1))[0])
        raise DataError(f"y has NaN or infinite values; the first is in row {row}")
    return backend.asarray(host.astype(model.dtype), model.dtype)
