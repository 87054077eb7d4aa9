"""The backend registry: a name and a device -> a :class:`Backend`.

    >>> from mlp import backends
    >>> backends.get("numpy")
    Backend(numpy 2..., cpu)

Specs: ``numpy``, ``cupy``, ``cupy:1``, ``jax``, ``jax:cpu``, ``jax:gpu:1``,
``torch``, ``torch:cuda:0``, ``array_api_strict``, ``array_api_strict:device1``,
and the shorthands ``cpu`` (NumPy) and ``gpu`` / ``gpu:N`` (the first library
with a CUDA device: CuPy, then JAX, then PyTorch).

Which backend ``get()`` returns without a spec: ``with backends.use(spec):`` >
the ``MLP_BACKEND`` (and ``MLP_DEVICE``) environment variables, read at call
time > ``numpy``. Importing this module imports none of JAX, CuPy or PyTorch.
"""
from __future__ import annotations

import contextlib
import contextvars
import importlib
import importlib.util
import os
from dataclasses import dataclass, field

from ._base import Backend, BackendUnavailable, parse_device, parse_spec

__all__ = ["Backend", "BackendUnavailable", "available", "get", "parse_device", "parse_spec", "register", "transfer",
           "use"]

ENTRY_POINT_GROUP = "mlp.backends"
GPU_ORDER = ("cupy", "jax", "torch")

# name -> (module that provides load/probe, the library to look for, pip extra)
_BUILTIN = {
    "numpy": ("._numpy", "numpy", None),
    "cupy": ("._cupy", "cupy", "cuda12"),
    "jax": ("._jax", "jax", "jax"),
    "torch": ("._torch", "torch", "torch"),
    "array_api_strict": ("._strict", "array_api_strict", "strict"),
}
_ALIASES = {"strict": "array_api_strict", "array-api-strict": "array_api_strict"}

_loaders: dict = {}  # name -> callable(device) -> Backend, for registered backends
_probes: dict = {}
_entry_points_loaded = False
_cache: dict = {}
_current: contextvars.ContextVar = contextvars.ContextVar("mlp_backend", default=None)


def register(name, loader, *, probe=None):
    """Add a backend under ``name``.

    ``loader(device)`` returns a :class:`Backend` (``device`` is the text after
    the first colon of the spec, or None) and raises :class:`BackendUnavailable`
    when it cannot. ``probe()``, optional, returns a dict with ``status``,
    ``version`` and ``devices`` for :func:`available`. Third-party packages can
    instead declare an entry point in the ``mlp.backends`` group that names the
    loader.
    """
    if not callable(loader):
        raise TypeError(f"loader for backend {name!r} must be callable, got {type(loader).__name__}")
    if name in _BUILTIN or name in ("cpu", "gpu"):
        raise ValueError(f"{name!r} is a built-in backend name; choose another")
    _loaders[name] = loader
    if probe is not None:
        _probes[name] = probe
    for key in [k for k in _cache if k[0] == name]:
        del _cache[key]


def _load_entry_points():
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in _loaders or ep.name in _BUILTIN:
            continue
        try:
            target = ep.load()
        except Exception as err:  # a broken plugin must not break the registry
            _loaders[ep.name] = _broken_loader(ep.name, err)
            continue
        if callable(target):
            _loaders[ep.name] = target
        else:  # a module with load() and, optionally, probe()
            _loaders[ep.name] = target.load
            if hasattr(target, "probe"):
                _probes[ep.name] = target.probe


def _broken_loader(name, err):
    def load(device=None):
        raise BackendUnavailable(f"backend {name!r}: its plugin failed to import: {err}")

    return load


def names():
    """Every backend name known here: the built-ins, then registered ones."""
    _load_entry_points()
    return list(_BUILTIN) + [n for n in _loaders if n not in _BUILTIN]


def _missing(name):
    module, library, extra = _BUILTIN[name]
    hint = f"pip install 'arraymlp[{extra}]'" if extra else "pip install numpy"
    return BackendUnavailable(f"{name}: not installed: {hint}")


def _load(name, device):
    key = (name, device)
    if key in _cache:
        return _cache[key]
    if name in _BUILTIN:
        module, library, _ = _BUILTIN[name]
        if importlib.util.find_spec(library) is None:
            raise _missing(name)
        backend = importlib.import_module(module, __name__).load(device)
    else:
        _load_entry_points()
        if name not in _loaders:
            raise ValueError(
                f"unknown backend {name!r}; known backends: {', '.join(names())} "
                "(and the shorthands cpu, gpu, gpu:N)"
            )
        backend = _loaders[name](device)
        if not isinstance(backend, Backend):
            raise TypeError(f"loader for backend {name!r} returned {type(backend).__name__}, not a Backend")
    _cache[key] = backend
    return backend


def _first_gpu(index):
    reasons = []
    for name in GPU_ORDER:
        try:
            return _load(name, f"gpu:{index}")
        except BackendUnavailable as err:
            reasons.append(str(err))
    raise BackendUnavailable(f"no backend has CUDA device gpu:{index}: " + "; ".join(reasons))


def _is_gpu(device):
    return device is not None and parse_spec(device)[0] in ("gpu", "cuda")


def get(spec=None, *, device=None) -> Backend:
    """The backend for ``spec`` (``"jax:gpu"``, ``"cpu"``, a Backend ...).

    ``device`` (``"cpu"``, ``"gpu"``, ``"gpu:1"``, ...) overrides the device part
    of the spec. Without a spec: ``use()`` > ``MLP_BACKEND``/``MLP_DEVICE`` >
    ``numpy``; asking only for ``device="gpu"`` then picks the first library
    with a CUDA device.
    """
    explicit = spec is not None
    if isinstance(spec, Backend):
        if device is None:
            return spec
        spec = spec.name
    if spec is None:
        current = _current.get()
        if current is not None:
            spec, ctx_device = current
            explicit = True
            device = device if device is not None else ctx_device
        else:
            spec = os.environ.get("MLP_BACKEND") or None
            explicit = spec is not None
            if device is None:
                device = os.environ.get("MLP_DEVICE") or None
            spec = spec or "numpy"
    if not isinstance(spec, str):
        raise TypeError(f"backend spec must be a string or a Backend, got {type(spec).__name__}")
    name, spec_device = parse_spec(spec)
    name = _ALIASES.get(name, name)
    if device is None:
        device = spec_device
    if name == "cpu":
        if spec_device:
            raise ValueError(f"'cpu' takes no device, got {spec!r}")
        name = "numpy"
    if name == "gpu":
        return _first_gpu(_gpu_index(f"gpu:{device}" if device and device.isdigit() else device or "gpu"))
    if name == "numpy" and _is_gpu(device) and not explicit:
        return _first_gpu(_gpu_index(device))
    return _load(name, device)


def _gpu_index(device):
    try:
        return parse_device(device, "gpu", kinds=("gpu",))[1] or 0
    except BackendUnavailable:
        raise ValueError(f"expected a device such as gpu or gpu:1, got {device!r}") from None


@contextlib.contextmanager
def use(spec, *, device=None):
    """Make ``spec`` the default backend inside a ``with`` block (thread- and task-local)."""
    if isinstance(spec, Backend):
        device = device or spec.device_name
        spec = spec.name
    token = _current.set((spec, device))
    try:
        yield get()
    finally:
        _current.reset(token)


@dataclass
class BackendStatus:
    name: str
    status: str
    version: str = ""
    devices: list = field(default_factory=list)

    @property
    def ready(self):
        return self.status == "ready"


class Availability(list):
    """The list :func:`available` returns; prints as a table."""

    def __str__(self):
        rows = [("backend", "status", "version", "devices")]
        rows += [(s.name, s.status, s.version, ", ".join(s.devices)) for s in self]
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        return "\n".join(
            "  ".join(c.ljust(w) for c, w in zip(r[:3], widths)) + "  " + r[3] for r in rows
        ).rstrip()

    def __repr__(self):
        return self.__str__()

    def __getitem__(self, key):
        if isinstance(key, str):
            for s in self:
                if s.name == key:
                    return s
            raise KeyError(key)
        return super().__getitem__(key)


def _probe(name):
    if name in _BUILTIN:
        module, library, _ = _BUILTIN[name]
        if importlib.util.find_spec(library) is None:
            return BackendStatus(name, str(_missing(name)).split(": ", 1)[1])
        info = importlib.import_module(module, __name__).probe()
    elif name in _probes:
        info = _probes[name]()
    else:
        try:
            backend = _loaders[name](None)
        except BackendUnavailable as err:
            return BackendStatus(name, str(err))
        info = {"status": "ready", "version": backend.version, "devices": [backend.device_name]}
    return BackendStatus(name, info["status"], info.get("version", ""), list(info.get("devices", [])))


def available():
    """Every registered backend with its status, version and devices.

    Never raises because one library is missing, broken or has no driver.
    """
    out = Availability()
    for name in names():
        try:
            out.append(_probe(name))
        except Exception as err:  # noqa: BLE001 - a broken library is a status, not a crash
            out.append(BackendStatus(name, f"installed, broken: {type(err).__name__}: {err}"))
    return out


def transfer(x, src, dst):
    """An array of backend ``src`` as an array of backend ``dst``.

    DLPack where both libraries share the memory kind (zero-copy), else a copy
    through the host. Arrays are never mutated in place here, so sharing is safe.
    """
    if src == dst:
        return x
    try:
        y = dst.xp.from_dlpack(x)
        if dst.owns(y):
            return y
    except Exception:  # noqa: BLE001 - DLPack support differs by library and device
        pass
    return dst.asarray(src.to_numpy(x))
