"""Optimizers as pure functions: ``update(params, grads, state) -> (params, state)``.

Nothing is changed in place: every call returns new arrays, which is what lets
JAX compile the whole train step and keeps NumPy and JAX behaving alike.
Hyper-parameters and update rules follow ``torch.optim`` (the tests compare
against it), with the names PyTorch and scikit-learn users know.
"""
from __future__ import annotations

import array_api_compat

from .tree import leaves, tree_map, tree_map_many


def _namespace(tree):
    """The array namespace of the first array in ``tree`` (all share one: the model's)."""
    return array_api_compat.array_namespace(_first(tree))


def _first(tree):
    if isinstance(tree, dict):
        tree = [tree[k] for k in sorted(tree)]
    if isinstance(tree, (list, tuple)):
        return next((leaf for leaf in map(_first, tree) if leaf is not None), None)
    return tree


def scale_add(y, a, x=None, b=1.0, *, inplace=False):
    """``a * y + b * x`` (``a * y`` without ``x``): the one place where an update
    may write into an existing array.

    With ``inplace=True`` the result is written into ``y``, which is returned:
    no new array of ``y``'s size is made. Only ``fit`` asks for that, on a
    backend whose ``Backend.inplace`` is True, and only for arrays it owns: it
    copies the parameters and optimizer state that a caller could hold before
    a run of steps, so arrays the caller can see never change. Otherwise (the
    default) ``y`` is left alone. Either way the result has the same bits: ``a``
    and ``b`` multiply first, then one addition (a factor of 1.0 is skipped).
    """
    if not inplace:
        ay = y if _is_one(a) else a * y
        return ay if x is None else ay + (x if _is_one(b) else b * x)
    if not _is_one(a):
        y *= a
    if x is not None:
        y += x if _is_one(b) else b * x
    return y


def _is_one(factor):
    return isinstance(factor, (int, float)) and factor == 1


def clip_by_global_norm(xp, grads, max_norm, inplace=False):
    """Scale all gradients together so that their global L2 norm is at most
    ``max_norm`` (as ``torch.nn.utils.clip_grad_norm_``)."""
    total = xp.sqrt(sum(xp.sum(g * g) for g in leaves(grads)))
    scale = xp.clip(max_norm / (total + 1e-6), max=1.0)
    return tree_map(lambda g: scale_add(g, scale, inplace=inplace), grads)


class Optimizer:
    def __init__(self, lr, weight_decay=0.0, clip_norm=None):
        if lr <= 0:
            raise ValueError(f"learning rate must be positive, got {lr!r}")
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
        if clip_norm is not None and clip_norm <= 0:
            raise ValueError(f"clip_norm must be positive or None, got {clip_norm!r}")
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.clip_norm = clip_norm

    def init(self, params):
        """The optimizer's state for ``params`` (arrays on the params' device)."""
        return {}

    def update(self, params, grads, state, *, inplace=False):
        """New ``(params, state)`` from ``grads``. ``inplace=True`` lets the update
        overwrite ``params``, ``grads`` and ``state`` (see :func:`scale_add`): for
        callers that own them, on backends whose ``Backend.inplace`` is True.
        Each parameter array is updated on its own, all its steps in a row (one
        function per leaf: its gradient is still in the cache)."""
        raise NotImplementedError

    def _prepare(self, xp, params, grads, inplace=False):
        if self.clip_norm is not None:
            grads = clip_by_global_norm(xp, grads, self.clip_norm, inplace)
        return grads

    def config(self):
        """Hyper-parameters as plain values (for checkpoints)."""
        return {"name": type(self).__name__.lower(), **{k: v for k, v in vars(self).items()}}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class SGD(Optimizer):
    """Stochastic gradient descent, optionally with (Nesterov) momentum:

    g = grad + weight_decay * p;  buf = momentum * buf + g;
    step = g + momentum * buf (Nesterov) or buf;  p = p - lr * step
    """

    def __init__(self, lr=0.01, momentum=0.0, nesterov=False, weight_decay=0.0, clip_norm=None):
        super().__init__(lr, weight_decay, clip_norm)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        if nesterov and momentum == 0:
            raise ValueError("Nesterov momentum needs momentum > 0")
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)

    def init(self, params):
        if self.momentum == 0:
            return {}
        xp = _namespace(params)
        return {"momentum": tree_map(xp.zeros_like, params)}

    def update(self, params, grads, state, *, inplace=False):
        xp = _namespace(params)
        grads = self._prepare(xp, params, grads, inplace)
        lr, wd, mu, nesterov = self.lr, self.weight_decay, self.momentum, self.nesterov

        def leaf(p, g, buf=None):
            if wd:
                g = scale_add(g, 1.0, p, wd, inplace=inplace)
            if not mu:
                return scale_add(p, 1.0, g, -lr, inplace=inplace), None
            buf = scale_add(buf, mu, g, inplace=inplace)
            step = g + mu * buf if nesterov else buf
            return scale_add(p, 1.0, step, -lr, inplace=inplace), buf

        if not mu:
            return tree_map_many(leaf, 2, params, grads)[0], state
        params, buf = tree_map_many(leaf, 2, params, grads, state["momentum"])
        return params, {"momentum": buf}


class Adam(Optimizer):
    """Adam (Kingma & Ba) with PyTorch's arithmetic; ``weight_decay`` is an L2
    term added to the gradient. For decoupled decay use :class:`AdamW`."""

    decoupled = False

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, clip_norm=None):
        super().__init__(lr, weight_decay, clip_norm)
        b1, b2 = betas
        if not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0):
            raise ValueError(f"betas must be in [0, 1), got {betas!r}")
        self.betas = (float(b1), float(b2))
        self.eps = float(eps)

    def init(self, params):
        xp = _namespace(params)
        first = leaves(params)[0]
        step = xp.zeros((), dtype=first.dtype, device=array_api_compat.device(first))
        return {
            "step": step,
            "m": tree_map(xp.zeros_like, params),
            "v": tree_map(xp.zeros_like, params),
        }

    def update(self, params, grads, state, *, inplace=False):
        xp = _namespace(params)
        grads = self._prepare(xp, params, grads, inplace)
        lr, wd, eps, decoupled = self.lr, self.weight_decay, self.eps, self.decoupled
        b1, b2 = self.betas
        step = state["step"] + 1.0
        neg_step_size = -lr / (1.0 - b1**step)
        bc2_sqrt = xp.sqrt(1.0 - b2**step)

        def leaf(p, g, m, v):
            if wd and decoupled:
                p = scale_add(p, 1.0 - lr * wd, inplace=inplace)
            elif wd:
                g = scale_add(g, 1.0, p, wd, inplace=inplace)
            m = scale_add(m, b1, g, 1.0 - b1, inplace=inplace)
            v = scale_add(v, b2, g * g, 1.0 - b2, inplace=inplace)
            d = xp.sqrt(v)  # the direction m / (sqrt(v) / bc2_sqrt + eps), in one fresh array
            d /= bc2_sqrt  # in place on a temporary: safe on every backend
            d += eps
            return scale_add(p, 1.0, m / d, neg_step_size, inplace=inplace), m, v

        params, m, v = tree_map_many(leaf, 3, params, grads, state["m"], state["v"])
        return params, {"step": step, "m": m, "v": v}


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): p *= 1 - lr * wd."""

    decoupled = True

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, clip_norm=None):
        super().__init__(lr, betas, eps, weight_decay, clip_norm)


def get(name, **kwargs):
    """An optimizer from a name: 'sgd', 'momentum' (SGD, momentum 0.9),
    'nesterov', 'adam' or 'adamw'; keyword arguments pass through."""
    if isinstance(name, Optimizer):
        return name
    if name == "sgd":
        return SGD(**kwargs)
    if name == "momentum":
        return SGD(**{"momentum": 0.9, **kwargs})
    if name == "nesterov":
        return SGD(**{"momentum": 0.9, "nesterov": True, **kwargs})
    if name == "adam":
        return Adam(**kwargs)
    if name == "adamw":
        return AdamW(**kwargs)
    raise ValueError(f"unknown optimizer {name!r}; expected sgd, momentum, nesterov, adam or adamw")
