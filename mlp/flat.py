"""One flat vector for all parameters: a training step at a fixed cost whatever the depth.

``fit`` concatenates the parameters (and the optimizer's parameter-shaped state,
its ``slots``) into one vector each when a run of steps begins, and splits them
back when it ends. Inside the run a step sees its layers' parameters as views of
the vector (slices and reshapes: no kernel launch), concatenates the gradients
once, and the optimizer updates every parameter with a handful of operations on
the one vector: ten for Adam, instead of thirteen per parameter array.

The public parameters and optimizer state keep their shapes: a checkpoint, a
callback or a caller never sees the flat form.
"""
from __future__ import annotations

import math

from .tree import leaves, tree_map


class Layout:
    """Where each parameter array lies in the flat vector (the order of
    :func:`mlp.tree.leaves`: layers in order, dict keys sorted)."""

    def __init__(self, params):
        self.template = tree_map(lambda a: _SLOT, params)
        self.shapes = [tuple(a.shape) for a in leaves(params)]
        self.sizes = [math.prod(s) for s in self.shapes]

    def flatten(self, xp, tree):
        """The leaves of ``tree`` (shaped like the parameters) as one new vector."""
        return xp.concat([xp.reshape(a, (-1,)) for a in leaves(tree)])

    def unflatten(self, xp, flat):
        """The parameters as views of ``flat`` (a fresh tree, same structure)."""
        views, start = [], 0
        for shape, size in zip(self.shapes, self.sizes):
            views.append(xp.reshape(flat[start:start + size], shape))
            start += size
        it = iter(views)
        return _fill(self.template, it)


_SLOT = object()  # where a parameter goes in the template


def _fill(template, values):
    if isinstance(template, dict):
        return {k: _fill(template[k], values) for k in sorted(template)}
    if isinstance(template, (list, tuple)):
        return type(template)(_fill(t, values) for t in template)
    return next(values) if template is _SLOT else template


class Run:
    """A run of steps on flat parameters: :meth:`begin` and :meth:`end` convert,
    :meth:`step` builds the step.

    ``host_counts``: the loop passes each step's number from the host (backends that
    run eagerly: the optimizer's step-dependent factors are then host floats and cost
    no array operation); otherwise the optimizer state counts steps on the device
    (compiled steps). ``kernels``: the backend's fused element-wise kernels
    (``Backend.kernels``), handed to the optimizer's ``step``."""

    def __init__(self, params, optimizer, xp, *, host_counts, kernels=None):
        self.layout, self.optimizer, self.xp = Layout(params), optimizer, xp
        self.host_counts, self.kernels = host_counts, kernels

    def begin(self, params, opt_state):
        """``(P, state, t0)``: new flat arrays (the caller's are never written) and the
        number of steps the state has seen (read from the device only with host counts)."""
        xp, layout, opt = self.xp, self.layout, self.optimizer
        flat = {k: (layout.flatten(xp, v) if k in opt.slots else v) for k, v in opt_state.items()}
        t0 = opt.steps_taken(opt_state) if self.host_counts else 0
        return layout.flatten(xp, params), opt.begin_run(flat), t0

    def end(self, P, state, steps):
        """The public ``(params, opt_state)`` after ``steps`` steps of the run."""
        xp, layout, opt = self.xp, self.layout, self.optimizer
        state = opt.end_run(state, steps if self.host_counts else 0)
        public = {k: (layout.unflatten(xp, v) if k in opt.slots else v) for k, v in state.items()}
        return layout.unflatten(xp, P), public

    def step(self, forward, loss, *, inplace=False):
        """``(P, state, x, y, masks, weights=None, count=None) -> (P, state, loss, correct)``
        from ``forward(params, x, masks) -> (out, backward)`` (training mode)."""
        xp, layout, optimizer = self.xp, self.layout, self.optimizer
        fused = {} if self.kernels is None else {"kernels": self.kernels}  # a user's step may not take them

        def step(P, state, x, y, masks, weights=None, count=None):
            out, backward = forward(layout.unflatten(xp, P), x, masks)
            value, dout, correct = loss.terms(xp, out, y, weights)
            G = layout.flatten(xp, backward(dout))
            P, state = optimizer.step(P, G, state, count, inplace=inplace, **fused)
            return P, state, value, correct

        return step


def supported(optimizer, opt_state):
    """Whether ``fit`` can run ``optimizer`` on flat parameters: its state holds
    only its declared ``slots`` (parameter-shaped) and scalars it handles itself."""
    return isinstance(opt_state, dict) and hasattr(optimizer, "step") and all(
        k in optimizer.slots or not isinstance(v, (list, tuple, dict)) for k, v in opt_state.items())
