"""Counting the array operations of training: each one is a kernel launch on a GPU.

A small step is launch-bound on a GPU (each operation costs 5-10 us from Python,
whatever its size), so the number of operations per step is the figure to drive
down. The code is the same on every backend, so the count is too (but for a
backend's fused kernels, ``Backend.kernels``: NumPy's and CuPy's Adam update is one
call): it is taken on any backend, here by running ``fit`` on a twin of the model
whose namespace and arrays count every call.

    >>> import mlp
    >>> from mlp import opcount
    >>> model = mlp.MLP([784, 128, 10], backend="torch")
    >>> opcount.count_fit_step(model, batch_size=128).step     # doctest: +SKIP
    40

What counts: every call of a namespace function (``xp.exp``, ``xp.sum``, ...)
and every arithmetic, comparison or matrix operator on an array, and every call
of a fused kernel (``kernels.adam``: 31 on NumPy for the model above). Views
(``.T``, ``reshape``, slicing) are counted apart: they launch no kernel.
"""
from __future__ import annotations

import operator
from collections import Counter
from dataclasses import dataclass, field

import array_api_compat
import numpy as np

#: functions and operators that make views (no kernel launch)
VIEWS = frozenset({"reshape", "permute_dims", "expand_dims", "squeeze", "broadcast_to", "__getitem__",
                   "T", "mT"})

_BINARY = ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul", "and", "or", "xor",
           "lshift", "rshift")
_COMPARE = ("lt", "le", "gt", "ge", "eq", "ne")
_UNARY = ("neg", "pos", "abs", "invert")


@dataclass
class OpCount:
    """Operations per training step of ``fit``, by kind and by name."""

    per_batch: int                     #: everything ``fit`` dispatches for one batch
    gather: int                        #: of which: taking the batch's rows of x and y
    views: int                         #: view operations (not in the counts above)
    by_name: Counter = field(default_factory=Counter)

    @property
    def step(self):
        """The train step itself: forward, loss, backward and update."""
        return self.per_batch - self.gather

    def __str__(self):
        top = ", ".join(f"{name} {n}" for name, n in self.by_name.most_common())
        return (f"{self.step} operations per train step (+{self.gather} to gather the batch, "
                f"{self.views} views): {top}")


class _Tally:
    def __init__(self):
        self.ops, self.views = Counter(), Counter()

    def add(self, name):
        (self.views if name in VIEWS else self.ops)[name] += 1


def _unwrap(obj):
    if isinstance(obj, _Array):
        return obj.raw
    if isinstance(obj, (list, tuple)):
        return type(obj)(_unwrap(o) for o in obj)
    if isinstance(obj, dict):
        return {k: _unwrap(v) for k, v in obj.items()}
    return obj


class _Array:
    """An array of the wrapped library that counts the operators applied to it."""

    __slots__ = ("raw", "_ns")

    def __init__(self, raw, ns):
        self.raw, self._ns = raw, ns

    def __array_namespace__(self, api_version=None):
        return self._ns

    shape = property(lambda self: self.raw.shape)
    ndim = property(lambda self: self.raw.ndim)
    dtype = property(lambda self: self.raw.dtype)
    device = property(lambda self: self.raw.device)
    size = property(lambda self: self.raw.size)
    T = property(lambda self: self._ns.wrap("T", self.raw.T))
    mT = property(lambda self: self._ns.wrap("mT", self.raw.mT))

    def to_device(self, device, /, stream=None):
        return self._ns.wrap("to_device", self.raw.to_device(device))

    def __getitem__(self, key):
        return self._ns.wrap("__getitem__", self.raw[_unwrap(key)])

    def __setitem__(self, key, value):
        self._ns.tally.add("__setitem__")
        self.raw[_unwrap(key)] = _unwrap(value)

    def __float__(self):
        return float(self.raw)

    def __int__(self):
        return int(self.raw)

    def __bool__(self):
        return bool(self.raw)

    def __index__(self):
        return operator.index(self.raw)

    def __len__(self):
        return len(self.raw)

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self.raw, dtype=dtype)

    def __dlpack__(self, **kwargs):
        return self.raw.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self.raw.__dlpack_device__()


def _operator(name, kind):
    dunder = f"__{name}__"

    if kind == "unary":
        def method(self):
            return self._ns.wrap(name, getattr(self.raw, dunder)())
    elif kind == "inplace":
        def method(self, other):
            self._ns.tally.add(f"{name}=")
            self.raw = getattr(operator, f"__i{name}__")(self.raw, _unwrap(other))
            return self
    else:
        def method(self, other):
            result = getattr(self.raw, dunder)(_unwrap(other))
            return NotImplemented if result is NotImplemented else self._ns.wrap(name, result)

    method.__name__ = dunder if kind != "inplace" else f"__i{name}__"
    return method


for _name in _BINARY:
    setattr(_Array, f"__{_name}__", _operator(_name, "binary"))
    setattr(_Array, f"__r{_name}__", _operator(f"r{_name}", "binary"))
    setattr(_Array, f"__i{_name}__", _operator(_name, "inplace"))
for _name in _COMPARE:
    setattr(_Array, f"__{_name}__", _operator(_name, "binary"))
for _name in _UNARY:
    setattr(_Array, f"__{_name}__", _operator(_name, "unary"))
_Array.__hash__ = None


class CountingNamespace:
    """An array API namespace that forwards to ``xp`` and counts every call."""

    def __init__(self, xp):
        self.xp, self.tally = xp, _Tally()

    def wrap(self, name, result):
        self.tally.add(name)
        return self._wrap_result(result)

    def _wrap_result(self, result):
        if isinstance(result, tuple):
            return tuple(self._wrap_result(r) for r in result)
        if not isinstance(result, _Array) and array_api_compat.is_array_api_obj(result):
            return _Array(result, self)
        return result

    def __getattr__(self, name):
        attr = getattr(self.xp, name)
        if not callable(attr) or isinstance(attr, type) or name.startswith("__") or name in ("isdtype",):
            return attr

        def counted(*args, **kwargs):
            return self.wrap(name, attr(*_unwrap(args), **_unwrap(kwargs)))

        counted.__name__ = name
        return counted


def counting_backend(backend):
    """``(twin, namespace)``: a twin of ``backend`` whose namespace and arrays count
    every operation in ``namespace.tally``; it runs eagerly (no compilation) and
    keeps the backend's other capabilities."""
    base = type(backend)
    ns = CountingNamespace(backend.xp)

    class Counting(base):
        fuse_steps = False

        def asarray(self, obj, dtype=None):
            return ns._wrap_result(backend.asarray(_unwrap(obj), dtype))

        def to_numpy(self, x):
            return backend.to_numpy(_unwrap(x))

        def owns(self, x):
            return isinstance(x, _Array) or backend.owns(x)

        def jit(self, fn, **kwargs):
            return fn

        def dtype(self, dtype):
            return backend.dtype(dtype)

        def dtype_name(self, dtype):
            return backend.dtype_name(dtype)

    twin = Counting.__new__(Counting)
    twin.__dict__.update(backend.__dict__)
    twin.xp = ns
    twin.compiles = False
    twin.kernels = None if backend.kernels is None else _CountingKernels(backend.kernels, ns)
    return twin, ns


class _CountingKernels:
    """A backend's fused kernels (``Backend.kernels``): each call counts as one
    operation (``kernels.adam``: one launch)."""

    def __init__(self, kernels, ns):
        self._kernels, self._ns = kernels, ns

    def __getattr__(self, name):
        fn = getattr(self._kernels, name)

        def counted(*args, **kwargs):
            return self._ns.wrap(f"kernels.{name}", fn(*_unwrap(args), **_unwrap(kwargs)))

        return counted



def count_fit_step(model, batch_size=128, *, optimizer=None, loss=None, rows=None):
    """:class:`OpCount` of one batch of ``model.fit`` (on a twin of the model: the
    model itself is not changed). Counted between the ``on_batch`` calls of the
    second and third batch of a three-batch epoch, so it excludes per-epoch work."""
    from .model import Sequential

    backend, ns = counting_backend(model.backend)
    twin = Sequential.from_config(model.config(), backend=backend)
    twin.set_optimizer(optimizer if optimizer is not None else (model.optimizer or "adam"))
    n = 3 * batch_size
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, twin.input_width)) if rows is None else rows
    k = twin.output_width
    y = rng.integers(0, k, n) if twin.loss.classification and twin.loss.output == "softmax" else (
        rng.integers(0, 2, (n, k)).astype(float) if twin.loss.classification else rng.standard_normal((n, k)))
    marks = []

    def on_batch(step, n_steps):
        marks.append((Counter(ns.tally.ops), Counter(ns.tally.views)))

    twin.fit(x, y, epochs=1, batch_size=batch_size, shuffle=False, on_batch=on_batch,
             **({"loss": loss} if loss is not None else {}))
    (ops1, views1), (ops2, views2) = marks[1], marks[2]
    ops, views = ops2 - ops1, views2 - views1
    gather = ops.get("take", 0)
    return OpCount(per_batch=sum(ops.values()), gather=min(gather, 2), views=sum(views.values()),
                   by_name=ops)
