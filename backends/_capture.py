"""Whole-step capture: record one train step once, then replay it on static buffers.

A small train step on a GPU is launch-bound (each array operation costs 5-10 us
from Python). A library that can record a stream of kernels and replay it in one
launch (PyTorch's CUDA graphs) removes that cost, under three conditions: the
step reads its inputs from fixed buffers (the *static* buffers, owned here), it
copies nothing from the host and never waits for the device while it is recorded,
and whatever depends on the step number lives on the device (a Python float would
be frozen into the graph: ``fit`` passes ``count=None``).

:func:`capture` is the engine; the graph library comes in as a parameter (an object
with the methods of :class:`GraphAPI`), so that tests drive it with a CPU fake and
``backends/_torch.py`` with CUDA graphs. Whatever cannot be captured falls back to
the plain (eager) step, with one warning saying why.
"""
from __future__ import annotations

import warnings

import numpy as np

from ._base import _map

#: (rtol, atol) by dtype for the check of the first replay against an eager step
TOLERANCES = {"float16": (1e-2, 1e-3), "bfloat16": (1e-2, 1e-2), "float32": (1e-4, 1e-5),
              "float64": (1e-10, 1e-12)}


class CaptureWarning(RuntimeWarning):
    """A step that was to be replayed from a captured graph runs eagerly instead."""


class GraphAPI:
    """What :func:`capture` needs from a graph library (the methods to provide)."""

    def graph(self):
        """A new, empty graph."""
        raise NotImplementedError

    def warming(self):
        """A context manager for the warm-up runs before capture (CUDA: a side stream)."""
        raise NotImplementedError

    def record(self, graph, fn):
        """Record the work of ``fn()`` into ``graph`` and return ``fn()``'s results: the
        arrays that each replay updates in place (CUDA: recorded, not run)."""
        raise NotImplementedError

    def replay(self, graph):
        """Run the recorded work once, on the buffers it was recorded with."""
        raise NotImplementedError

    def is_array(self, obj):
        raise NotImplementedError

    def clone(self, a):
        """A new array with ``a``'s values."""
        raise NotImplementedError

    def copy_into(self, dst, src):
        """Write ``src``'s values into ``dst`` (same shape and dtype), in place."""
        raise NotImplementedError

    def to_host(self, a):
        """``a`` as a NumPy array (used once, to check the first replay)."""
        raise NotImplementedError


def capture(step, args, api, *, carry=2, warmup=3):
    """``replay(*args)``: ``step``'s signature and results, from a graph of one call.

    ``args`` are example arguments (arrays, lists/tuples/dicts of arrays, None): the
    graph is recorded for their shapes and dtypes. The first ``carry`` results are the
    state a step hands to the next (parameters and optimizer state), shaped like the
    first ``carry`` arguments; the replay returns them as its static buffers, updated
    in place, and clones the other results (loss, correct) so that a caller may keep
    them. ``args`` themselves are never written: warm-up runs on clones. A failure to
    capture returns the plain step after one :class:`CaptureWarning`."""
    args = tuple(args)
    _check_arrays(args, api)
    try:
        static = _map(api.clone, args)
        graph, outputs = _record(step, static, api, carry, warmup)
    except Exception as err:  # noqa: BLE001 - a library's capture errors have no common base
        _warn(f"capturing the train step failed ({type(err).__name__}: {_first_line(err)})")
        return step
    return Replay(step, api, static, graph, outputs, carry)


def _check_arrays(args, api):
    for i, arg in enumerate(args):
        for leaf in _flat(arg):
            if not api.is_array(leaf):
                raise ValueError(
                    f"argument {i} of the step to capture holds {type(leaf).__name__} {leaf!r}; "
                    "expected arrays or None (a host value would be frozen into the graph: "
                    "pass count=None so that the optimizer counts steps on the device)")


def _record(step, static, api, carry, warmup):
    """Warm up on clones of the static buffers, then record one step on them. The
    recorded step ends by writing carried results into their static buffers (unless
    the step already updated them in place)."""
    warm = _map(api.clone, static)
    with api.warming():
        for _ in range(warmup):
            warm = tuple(step(*warm)[:carry]) + warm[carry:]

    def recorded():
        outputs = tuple(step(*static))
        for out, buf in _pairs(outputs[:carry], static[:carry]):
            if out is not buf:
                api.copy_into(buf, out)
        return outputs

    graph = api.graph()
    return graph, api.record(graph, recorded)


def _pairs(outputs, buffers):
    got, want = _flat(outputs), _flat(buffers)
    shapes = [tuple(a.shape) for a in got], [tuple(a.shape) for a in want]
    if shapes[0] != shapes[1]:
        raise ValueError(f"the step's carried results have shapes {shapes[0]}, its arguments {shapes[1]}")
    return list(zip(got, want))


class Replay:
    """A captured step: call it as the step itself (see :func:`capture`).

    A call whose arrays differ in shape or dtype from the captured ones (a partial
    last batch) runs the plain step on them, once, without a warning. ``eager`` is
    True once the replay has fallen back to the plain step for good."""

    def __init__(self, step, api, static, graph, outputs, carry):
        self.step, self.api, self.static, self.graph = step, api, static, graph
        self.outputs, self.carry = outputs, carry
        self.buffers = _flat(static)
        self.signature = _signature(static)
        self.checked, self.eager = False, False

    def __call__(self, *args):
        if self.eager or _signature(args) != self.signature:
            return self.step(*args)
        for src, buf in zip(_flat(args), self.buffers):
            if src is not buf:
                self.api.copy_into(buf, src)
        if not self.checked:
            return self._first()
        self.api.replay(self.graph)
        return self._results()

    def _results(self):
        rest = tuple(_map(self.api.clone, out) for out in self.outputs[self.carry:])
        return tuple(self.static[:self.carry]) + rest

    def _first(self):
        """The first replay, checked against the plain step on clones of its inputs."""
        want = self.step(*_map(self.api.clone, self.static))
        try:
            self.api.replay(self.graph)
            got = self._results()
            why = _difference(self.api, got, want)
        except Exception as err:  # noqa: BLE001
            why = f"replaying it failed ({type(err).__name__}: {_first_line(err)})"
        if why:
            self.eager = True
            _warn(f"the captured train step {why}")
            return tuple(want)
        self.checked = True
        return got


def _signature(args):
    """The shapes and dtypes of the arrays in ``args``, argument by argument."""
    return tuple(tuple((tuple(getattr(x, "shape", ())), str(getattr(x, "dtype", type(x))))
                       for x in _flat(a)) for a in args)


def _difference(api, got, want):
    """Why ``got`` (a replay's results) differs from ``want`` (the plain step's), or ''."""
    got, want = _flat(got), _flat(want)
    if len(got) != len(want):
        return f"returned {len(got)} arrays where the plain step returns {len(want)}"
    for i, (g, w) in enumerate(zip(got, want)):
        g, w = np.asarray(api.to_host(g)), np.asarray(api.to_host(w))
        rtol, atol = TOLERANCES.get(str(w.dtype), (0.0, 0.0))
        if g.shape != w.shape or not np.allclose(g, w, rtol=rtol, atol=atol, equal_nan=True):
            err = np.max(np.abs(g.astype("float64") - w.astype("float64"))) if g.shape == w.shape else None
            return (f"differs from the plain step in result array {i} ({w.dtype} {list(w.shape)}: "
                    f"max abs difference {err}, tolerance rtol={rtol}, atol={atol})")
    return ""


def _flat(tree):
    """The arrays of ``tree`` in a fixed order (dicts by sorted key, as ``mlp.tree.leaves``):
    a state dict whose keys come back in another order pairs up all the same."""
    if isinstance(tree, dict):
        return [leaf for k in sorted(tree) for leaf in _flat(tree[k])]
    if isinstance(tree, (list, tuple)):
        return [leaf for t in tree for leaf in _flat(t)]
    return [] if tree is None else [tree]


def _warn(why):
    warnings.warn(f"{why}; training runs the plain step instead (same results, one kernel launch "
                  "per array operation)", CaptureWarning, stacklevel=3)


def _first_line(err):
    return (str(err).strip().splitlines() or [""])[0][:200]
