"""The Backend object: one array library on one device.

A Backend is what model code receives. It offers the library's array API
namespace (``xp``), the native device object, and the few things the array API
standard leaves to each library: moving host data in and out, compiling a
function, waiting for queued work, and seeded random numbers drawn on the host.
"""
from __future__ import annotations

import numpy as np


class BackendUnavailable(RuntimeError):
    """A backend (or one of its devices) cannot be had on this machine.

    The message says why and, where it helps, what to install.
    """


def parse_spec(spec):
    """The one spec grammar: ``"name"`` or ``"name:device"`` -> ``(name, device or None)``
    (``"jax:gpu:1"`` -> ``("jax", "gpu:1")``)."""
    name, _, device = spec.strip().partition(":")
    return name, device or None


def parse_device(device, library, kinds=("cpu", "gpu"), expected=None):
    """The one device grammar, used by the registry and every backend loader:
    None or ``""`` -> ``(None, None)``; ``"N"`` -> ``(None, N)``; ``"cpu"``,
    ``"cpu:N"``, ``"gpu"``, ``"gpu:N"`` (``"cuda"`` is ``"gpu"``) -> ``(kind, N or None)``.
    A kind not in ``kinds`` or an index that is not a number is :class:`BackendUnavailable`
    saying that ``library`` has no such device and what it ``expected``."""
    if device in (None, ""):
        return None, None
    kind, _, index = str(device).partition(":")
    if kind.isdigit() and not index:
        return None, int(kind)
    kind = "gpu" if kind == "cuda" else kind
    if kind not in kinds or (index and not index.isdigit()):
        want = expected or ", ".join(f"{k}, {k}:N" for k in kinds)
        raise BackendUnavailable(f"{library} has no device {device!r}; expected {want}")
    return kind, int(index) if index else None


FLOAT_DTYPES = ("float32", "float64")


class Backend:
    """An array library on one device, reached through its array API namespace.

    Subclasses override the few methods where libraries differ; everything else
    goes through ``xp``, the namespace array-api-compat hands out.
    """

    #: True where model code may update arrays in place (they are mutable and
    #: nobody else holds them). Only hot paths behind one tested helper use it
    #: (``mlp.optimizers.scale_add``, on arrays ``fit`` owns).
    inplace = False

    #: True where running many train steps in one call (:meth:`scan` inside
    #: :meth:`jit`) pays: the library compiles the loop, so each step costs no
    #: Python dispatch. ``fit`` then trains a whole epoch per call.
    fuse_steps = False

    #: True where :meth:`jit` compiles (JAX): a compiled step keeps its step count
    #: on the device; elsewhere steps run eagerly and ``fit`` counts them on the host.
    compiles = False

    #: Fused element-wise kernels (an object with the methods of :class:`Kernels`:
    #: the flat Adam update in one launch), or None. ``mlp.flat.Run`` hands them to
    #: the optimizer's ``step``.
    kernels = None

    #: The precision policies (``mlp.precision``) this backend runs on its device:
    #: "float32" everywhere; "bf16" and "tf32" where a backend module says so.
    precisions = ("float32",)

    def __init__(self, name, xp, device, *, version="", library=None, device_name=None):
        self.name = name
        self.xp = xp
        self.device = device
        self.version = version
        self.library = library
        self.device_name = device_name if device_name is not None else str(device)

    # -- identity ---------------------------------------------------------
    @property
    def spec(self):
        """The string that ``backends.get`` maps back to this backend."""
        return f"{self.name}:{self.device_name}"

    def __repr__(self):
        version = f" {self.version}" if self.version else ""
        return f"Backend({self.name}{version}, {self.device_name})"

    def __eq__(self, other):
        return isinstance(other, Backend) and (self.name, self.device_name) == (
            other.name,
            other.device_name,
        )

    def __hash__(self):
        return hash((self.name, self.device_name))

    # -- dtypes -----------------------------------------------------------
    @property
    def float_dtypes(self):
        """Names of the floating dtypes this device supports, e.g. ('float32', 'float64')."""
        info = self.xp.__array_namespace_info__()
        found = info.dtypes(device=self.device, kind="real floating")
        return tuple(n for n in FLOAT_DTYPES if n in found)

    def dtype(self, dtype):
        """The namespace's dtype object for a name such as ``"float32"`` (or a dtype)."""
        if isinstance(dtype, str):
            if dtype not in ("float32", "float64", "int32", "int64", "bool", "float16"):
                raise ValueError(f"unknown dtype {dtype!r}; expected 'float32' or 'float64'")
            return getattr(self.xp, dtype)
        return dtype

    def dtype_name(self, dtype):
        """The standard name of a dtype object of this namespace (``float32`` ...)."""
        for name in ("float32", "float64", "float16", "int32", "int64", "int8", "uint8", "bool"):
            if getattr(self.xp, name, None) == dtype:
                return name
        return str(dtype)

    @property
    def index_dtype(self):
        """The name of the namespace's default indexing dtype on this device
        (``int64`` on NumPy and PyTorch, ``int32`` on JAX without 64-bit mode):
        class ids and row numbers use it, so that every library's indexing
        functions take them as they are (PyTorch's ``take_along_dim`` takes int64 only)."""
        info = self.xp.__array_namespace_info__()
        return self.dtype_name(info.default_dtypes(device=self.device)["indexing"])

    def ensure_dtype(self, dtype):
        """Check that this device computes in ``dtype``; return its dtype object."""
        name = dtype if isinstance(dtype, str) else self.dtype_name(dtype)
        if name not in self.float_dtypes and name in FLOAT_DTYPES:
            raise BackendUnavailable(
                f"{self!r} does not support {name}; it supports {', '.join(self.float_dtypes)}"
            )
        return self.dtype(name)

    # -- precision ----------------------------------------------------------
    def matmul(self, a, b, precision="float32"):
        """``a @ b`` of two float32 arrays under a precision policy, as float32.

        "float32" is ``xp.matmul``. A backend that lists "bf16" or "tf32" in
        :attr:`precisions` overrides this for them: "bf16" rounds both inputs to
        bfloat16 and multiplies with float32 accumulation; "tf32" multiplies in
        TensorFloat-32 for this product alone (never by a process-wide switch
        left on). See docs/precision.md."""
        if precision != "float32":
            raise BackendUnavailable(
                f"{self!r} has no {precision} matrix products; it runs {', '.join(self.precisions)}"
            )
        return self.xp.matmul(a, b)

    # -- host <-> device ----------------------------------------------------
    def asarray(self, obj, dtype=None):
        """Host data (NumPy array, list, scalar) as an array on this device."""
        if dtype is not None:
            dtype = self.dtype(dtype)
        return self.xp.asarray(np.asarray(obj), dtype=dtype, device=self.device)

    def to_numpy(self, x):
        """An array of this backend as a NumPy array on the host (DLPack where
        the library offers it, else ``numpy.asarray``)."""
        try:
            return np.from_dlpack(x)
        except (AttributeError, BufferError, RuntimeError, TypeError, ValueError):
            return np.asarray(x)

    def owns(self, x):
        """True when ``x`` is an array of this library on this backend's device."""
        import array_api_compat

        try:
            xp = array_api_compat.array_namespace(x)
        except TypeError:
            return False
        return xp is self.xp and array_api_compat.device(x) == self.device

    # -- compilation and timing --------------------------------------------
    def jit(self, fn, **kwargs):
        """Compile ``fn`` where the library can (JAX); elsewhere return it as is."""
        return fn

    def scan(self, body, carry, xs):
        """``carry, ys`` from ``carry, y = body(carry, x)`` for each ``x`` in ``xs``.

        ``xs`` is an array, or a list/tuple/dict of them, sliced along the first
        axis; ``ys`` stacks the ``y`` (arrays or None, or lists/tuples/dicts of
        them) along a new first axis. A Python loop here; JAX overrides it with
        ``jax.lax.scan``, which compiles the loop (``jax.lax.scan``'s contract).
        """
        steps = _leaves(xs)[0].shape[0]
        ys = []
        for k in range(steps):
            carry, y = body(carry, _map(lambda a: a[k, ...], xs))
            ys.append(y)
        return carry, _stack(self.xp, ys)

    def synchronize(self, *arrays):
        """Wait until queued device work (or the work producing ``arrays``) is done."""
        return arrays[0] if len(arrays) == 1 else arrays

    def capture(self, step, args):
        """The train ``step`` replayed from one captured graph, or None (the default:
        this backend cannot capture; run ``step`` itself).

        ``args`` are a call's arguments ``(P, state, x, y, masks[, weights])`` (arrays,
        trees of them, None; no host values: ``count=None``). The result is called like
        ``step`` and returns the same structure: ``P`` and ``state`` as buffers it owns
        and updates in place on the next call (copy them before they leave the run),
        the loss and correct count as new arrays. Calls with other shapes (a partial
        batch) run ``step``; where capture fails, or its first replay differs from
        ``step``, the replay warns once (``backends._capture.CaptureWarning``) and
        runs ``step`` from then on. See ``backends/_capture.py``."""
        return None

    # -- several devices -----------------------------------------------------
    def data_parallel(self, devices=None, *, batch_size=None):
        """A :class:`SingleDevice` placement, or an error for ``devices > 1``.

        ``fit(devices=...)`` asks for this. Only the JAX backend trains one model
        over several devices (it overrides this method); one device is this
        backend's own, so ``None`` and ``1`` change nothing here.
        """
        n = check_devices(devices)
        if n == 1:
            return SingleDevice()
        asked = "all devices" if n is None else f"{n} devices"
        raise BackendUnavailable(
            f"{self!r} trains on one device; data-parallel training over {asked} needs the "
            "JAX backend (backend='jax', or 'jax:gpu' for GPUs). Multi-GPU CuPy would need "
            "an all-reduce of the gradients (NCCL through cupy.cuda.nccl) and a model copy "
            "per GPU; see docs/multidevice.md."
        )

    # -- random numbers ----------------------------------------------------
    def random(self, shape, *, rng=None, seed=None, dist="uniform", dtype="float32"):
        """Seeded random numbers, drawn on the host and moved here.

        Drawing on the host with NumPy's ``Generator`` makes every backend and
        device receive bit-identical numbers for the same seed.
        """
        if rng is None:
            rng = np.random.default_rng(seed)
        if dist == "uniform":
            host = rng.random(shape)
        elif dist == "normal":
            host = rng.standard_normal(shape)
        else:
            raise ValueError(f"dist must be 'uniform' or 'normal', got {dist!r}")
        name = dtype if isinstance(dtype, str) else self.dtype_name(dtype)
        return self.asarray(host.astype(name), dtype=name)


class Kernels:
    """Fused element-wise kernels: what ``Backend.kernels`` offers (CuPy: one
    ``cupy.ElementwiseKernel`` launch each, see ``backends/_cupy.py``)."""

    def adam(self, p, g, m, v, *, b1, b2, scale, eps, decay=1.0, l2=0.0, inplace=False):
        """The flat Adam update of ``mlp.optimizers.Adam.step`` in one pass:

            g' = g + l2 p;  m' = b1 m + g';  v' = b2 v + g' g';
            p' = decay p + scale m' / (sqrt(v') + eps)

        ``(p', m', v')``: written into ``p``, ``m`` and ``v`` (and ``g``) with
        ``inplace=True``, new arrays otherwise. ``scale`` and ``eps`` are floats or
        0-d arrays on the device (a step count on the device)."""
        raise NotImplementedError


def check_devices(devices):
    """``None`` or ``1`` -> 1, a positive int -> itself, ``"all"`` -> None
    (every device the backend can use); anything else is a ValueError."""
    if devices is None:
        return 1
    if isinstance(devices, str) and devices.strip().lower() == "all":
        return None
    if isinstance(devices, str) and devices.strip().isdigit():
        devices = int(devices)
    if isinstance(devices, bool) or not isinstance(devices, (int, np.integer)) or devices < 1:
        raise ValueError(f"devices must be a positive int or 'all', got {devices!r}")
    return int(devices)


class SingleDevice:
    """The placement for training on one device: every method hands back what it got.

    The data-parallel placement of the JAX backend (``backends._jax.DataParallel``)
    has the same methods: ``replicate`` (parameters and optimizer state to every
    device), ``shard`` (a batch split along its first axis), ``gather`` (back to
    the backend's own device) and ``wrap`` (a train step that shards its batch).
    """

    n = 1

    def wrap(self, step):
        return step

    def replicate(self, tree):
        return tree

    def shard(self, tree):
        return tree

    def gather(self, tree):
        return tree


def _map(fn, tree):
    if isinstance(tree, dict):
        return {k: _map(fn, tree[k]) for k in sorted(tree)}  # sorted, as mlp.tree and JAX
    if isinstance(tree, (list, tuple)):
        return type(tree)(_map(fn, t) for t in tree)
    return None if tree is None else fn(tree)


def _leaves(tree):
    out = []
    _map(out.append, tree)
    return out


def _stack(xp, trees):
    """A list of equally shaped trees -> one tree of arrays stacked along axis 0."""
    first = trees[0]
    if isinstance(first, dict):
        return {k: _stack(xp, [t[k] for t in trees]) for k in sorted(first)}
    if isinstance(first, (list, tuple)):
        return type(first)(_stack(xp, [t[i] for t in trees]) for i in range(len(first)))
    return None if first is None else xp.stack(trees)
