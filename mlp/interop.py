"""Entering and leaving mlp: PyTorch state_dicts and modules, arrays of other libraries.

    >>> sd = model.state_dict()                      # {"0.weight": [out x in] tensor, "0.bias": ...}
    >>> net = model.to_torch_module()                # torch.nn.Sequential, same predictions
    >>> model = from_torch_module(net)               # and back
    >>> model.predict(torch.from_numpy(rows))        # arrays of PyTorch, JAX, CuPy: through DLPack

mlp keeps a Linear's weight as ``[in x out]`` (``y = x @ W + b``); PyTorch's
``nn.Linear`` keeps ``[out x in]`` (``y = x @ W.T + b``). A state_dict here is
PyTorch's layout, keyed by the layer's position as ``nn.Sequential`` keys it
(``"2.weight"``), so layer ``i`` of the model is module ``i`` of the
``nn.Sequential``. PyTorch is imported only by the functions that make or read
torch objects. See docs/interop.md.
"""
from __future__ import annotations

import warnings

import array_api_compat
import numpy as np

from . import backends
from . import layers as _layers
from .errors import DataError, DeviceMismatch, fmt_shape, ShapeError

FORMATS = ("torch", "numpy")
_CPU = (1, 3)  # DLPack device types of host memory: kDLCPU, kDLCUDAHost (pinned)

# mlp layer type -> (nn class name, constructor keyword arguments from the layer)
_TO_TORCH = {
    _layers.Linear: ("Linear", lambda layer: {"in_features": layer.in_features,
                                              "out_features": layer.out_features, "bias": layer.bias}),
    _layers.ReLU: ("ReLU", lambda layer: {}),
    _layers.LeakyReLU: ("LeakyReLU", lambda layer: {"negative_slope": layer.slope}),
    _layers.Sigmoid: ("Sigmoid", lambda layer: {}),
    _layers.Tanh: ("Tanh", lambda layer: {}),
    _layers.GELU: ("GELU", lambda layer: {"approximate": "tanh"}),
    _layers.Softmax: ("Softmax", lambda layer: {"dim": -1}),
    _layers.Identity: ("Identity", lambda layer: {}),
    _layers.Dropout: ("Dropout", lambda layer: {"p": layer.p}),
}
# nn class name -> the mlp layer for a module of it (None: no mlp counterpart for these settings)
_FROM_TORCH = {
    "Linear": lambda m: _layers.Linear(m.in_features, m.out_features, bias=m.bias is not None),
    "ReLU": lambda m: _layers.ReLU(),
    "LeakyReLU": lambda m: _layers.LeakyReLU(m.negative_slope),
    "Sigmoid": lambda m: _layers.Sigmoid(),
    "Tanh": lambda m: _layers.Tanh(),
    "GELU": lambda m: _layers.GELU() if m.approximate == "tanh" else None,
    "Softmax": lambda m: _layers.Softmax() if m.dim in (-1, 1) else None,
    "Identity": lambda m: _layers.Identity(),
    "Dropout": lambda m: _layers.Dropout(m.p),
}


class CopyWarning(UserWarning):
    """An array of another library was copied between the host and a device to reach the model."""


def _torch():
    """PyTorch itself, through the registry (one place imports it: the torch backend)."""
    try:
        return backends.get("torch").library
    except backends.BackendUnavailable as err:
        raise ImportError(f"this needs PyTorch: {err}") from None


# -- state_dicts -----------------------------------------------------------------------------
def state_dict(model, format="torch"):
    """The weights in PyTorch's ``nn.Linear`` layout: ``{"i.weight": [out x in], "i.bias": [out]}``
    for each Linear layer ``i``; torch tensors (``format="torch"``) or NumPy arrays (``"numpy"``)."""
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(map(repr, FORMATS))}, got {format!r}")
    host = model.backend.to_numpy
    out = {}
    for i, (layer, params) in enumerate(zip(model.layers, model.params)):
        if not params:
            continue
        if type(layer) is not _layers.Linear:
            raise ValueError(f"layer {i} {layer!r} has parameters but no PyTorch layout; only Linear has one")
        out[f"{i}.weight"] = np.ascontiguousarray(np.asarray(host(params["W"])).T)
        if "b" in params:
            out[f"{i}.bias"] = np.array(host(params["b"]))
    if format == "torch":
        torch = _torch()
        out = {k: torch.from_numpy(v) for k, v in out.items()}
    return out


def load_state_dict(model, state):
    """Set ``model``'s weights from a PyTorch-layout state_dict (torch tensors or
    NumPy arrays, as :func:`state_dict` writes them); returns ``model``.

    Every key must be there and no other; shapes are checked before anything
    changes. The weights become new arrays (in the model's dtype, on its device);
    the optimizer, if one is set, starts afresh (its moments belonged to the old weights)."""
    want = {}
    for i, (layer, params) in enumerate(zip(model.layers, model.params)):
        for name, key in (("W", "weight"), ("b", "bias")):
            if name in params:
                shape = tuple(params[name].shape)
                want[f"{i}.{key}"] = (i, layer, name, shape[::-1])
    missing, extra = sorted(set(want) - set(state)), sorted(set(state) - set(want))
    if missing or extra:
        raise ValueError(f"the state_dict does not fit {model!r}: missing keys {missing}, unexpected keys "
                         f"{extra} (keys are '<layer index>.weight' and '<layer index>.bias')")
    new = [dict(p) for p in model.params]
    for key, (i, layer, name, shape) in want.items():
        value = _host_array(state[key], f"state_dict[{key!r}]")
        if value.shape != shape:
            raise ShapeError(f"state_dict[{key!r}] is {fmt_shape(value.shape)}, but layer {i} {layer!r} "
                             f"needs {fmt_shape(shape)} (PyTorch's [out x in] layout)")
        new[i][name] = model.backend.asarray(value.T.astype(model.dtype), model.dtype)
    model.params = new
    if model.optimizer is not None:
        model.set_optimizer(model.optimizer)
    return model


def _host_array(value, what):
    """A tensor or array of any library as a NumPy array (a copy from a device)."""
    if isinstance(value, np.ndarray):
        return value
    errors = []
    for read in (lambda v: np.from_dlpack(v), lambda v: np.from_dlpack(v, device="cpu", copy=True),
                 np.asarray):
        try:
            return np.asarray(read(value))
        except Exception as err:  # noqa: BLE001 - try the next way to reach the host
            errors.append(f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}")
    raise DataError(f"{what} could not be read through DLPack ({errors[0]}); pass an array "
                    "of numbers (a torch tensor detached from autograd: x.detach())")


# -- torch modules ---------------------------------------------------------------------------
def to_torch_module(model, device="cpu"):
    """A ``torch.nn.Sequential`` (in eval mode, in the model's dtype, on ``device``)
    that computes what ``model`` computes: module ``i`` is layer ``i``."""
    torch = _torch()
    modules = []
    for i, layer in enumerate(model.layers):
        if type(layer) not in _TO_TORCH:
            raise ValueError(f"layer {i} {layer!r} has no PyTorch counterpart; supported: "
                             f"{', '.join(t.__name__ for t in _TO_TORCH)}")
        name, kwargs = _TO_TORCH[type(layer)]
        modules.append(getattr(torch.nn, name)(**kwargs(layer)))
    net = torch.nn.Sequential(*modules).to(dtype=getattr(torch, model.dtype))
    net.load_state_dict(state_dict(model, "torch"))
    return net.to(device).eval()


def from_torch_module(module, *, backend=None, dtype=None, loss="cross_entropy", seed=0):
    """An mlp :class:`~mlp.model.Sequential` from a ``torch.nn.Sequential`` of Linear
    and supported activation modules, with its weights (``dtype``: the first
    Linear's, unless given)."""
    from .model import Sequential

    torch = _torch()
    if not isinstance(module, torch.nn.Sequential):
        raise TypeError(f"expected a torch.nn.Sequential, got {type(module).__name__}")
    made = []
    for i, m in enumerate(module):
        kind = type(m).__name__
        layer = _FROM_TORCH[kind](m) if kind in _FROM_TORCH and type(m) is getattr(torch.nn, kind) else None
        if layer is None:
            raise ValueError(f"module {i} {m!r} has no mlp counterpart; supported: Linear, ReLU, LeakyReLU, "
                             "Sigmoid, Tanh, GELU(approximate='tanh'), Softmax(dim=-1), Identity, Dropout")
        made.append(layer)
    if dtype is None:
        first = next((m.weight for m in module if isinstance(m, torch.nn.Linear)), None)
        dtype = str(first.dtype).replace("torch.", "") if first is not None else "float32"
    model = Sequential(*made, backend=backend, dtype=dtype, loss=loss, seed=seed)
    return load_state_dict(model, {k: v.detach() for k, v in module.state_dict().items()})


# -- arrays of other libraries (DLPack) -------------------------------------------------------
def describe(x):
    """'a jax array on cpu:0': the library and device of a non-NumPy array, for messages."""
    for name in ("torch", "jax", "cupy", "array_api_strict", "dask", "ndonnx"):
        test = getattr(array_api_compat, f"is_{name}_array", None) or getattr(array_api_compat, f"is_{name}_obj", None)
        if test is not None and test(x):
            break
    else:
        name = type(x).__module__.split(".")[0]
    device = str(array_api_compat.device(x))
    if device.startswith("array_api_strict.Device("):
        device = device[len("array_api_strict.Device("):-1].strip("'")
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name} array on {device}"


def from_foreign(x, backend, name="x"):
    """``x``, an array of any library, as an array of ``backend`` on its device.

    The backend's own arrays come back as they are. An array of another library
    (PyTorch, JAX, CuPy, ...) goes through DLPack: shared, not copied, where it
    is on the backend's device; copied between the host and the device, with a
    :class:`CopyWarning`, where one of them is the host. An array of the
    backend's own library on another device, or on another accelerator than the
    backend's, is a :class:`DeviceMismatch`: mlp does not move data between
    two devices behind your back."""
    if backend.owns(x):
        return x
    what = "labels" if name == "y" else "data"
    mismatch = (f"{name} is {describe(x)}, but the model lives on {backend!r}; pass host (NumPy) {what}, "
                f"convert {name} yourself, or move the model with model.to(...)")
    if array_api_compat.array_namespace(x) is backend.xp:  # the same library, another device
        raise DeviceMismatch(mismatch)
    try:
        y = backend.xp.from_dlpack(x)
        if backend.owns(y):
            return y
    except Exception:  # noqa: BLE001 - DLPack support differs by library and device
        pass
    if not (_on_host(x) or _on_host(backend.asarray(np.zeros(1)))):
        raise DeviceMismatch(mismatch + " (DLPack shares memory only on one device)")
    host = _host_array(x, f"{name} ({describe(x)})")
    if host.dtype.kind == "f" and host.dtype.name not in backend.float_dtypes:  # float64 to a device without it
        host = host.astype(backend.float_dtypes[-1])
    warnings.warn(f"mlp: {name} ({describe(x)}) was copied to {backend!r}: DLPack shares memory only "
                  f"on the same device; pass arrays on the model's device to avoid the copy",
                  CopyWarning, stacklevel=4)
    return backend.asarray(host)


def _on_host(x):
    try:
        return int(x.__dlpack_device__()[0]) in _CPU
    except Exception:  # noqa: BLE001 - no DLPack: not something a device library made
        return True


class Portable:
    """The ways out of mlp, as methods of ``Sequential`` (each delegates to a function here
    or in :mod:`mlp.onnx`, imported when first used)."""

    def export_onnx(self, path, **kwargs):
        """Write the inference graph to ``path`` as ONNX; see :func:`mlp.onnx.export_onnx`."""
        from .onnx import export_onnx

        return export_onnx(self, path, **kwargs)

    def state_dict(self, format="torch"):
        """The weights in PyTorch's ``nn.Linear`` layout; see :func:`state_dict`."""
        return state_dict(self, format)

    def load_state_dict(self, state):
        """Weights from a PyTorch-layout state_dict; see :func:`load_state_dict`."""
        return load_state_dict(self, state)

    def to_torch_module(self, device="cpu"):
        """A ``torch.nn.Sequential`` that predicts what this model predicts."""
        return to_torch_module(self, device)
