"""Optimizers as pure functions: ``update(params, grads, state) -> (params, state)``.

Nothing is changed in place: every call returns new arrays, which is what lets
JAX compile the whole train step and keeps NumPy and JAX behaving alike.
Hyper-parameters and update rules follow ``torch.optim`` (the tests compare
against it), with the names PyTorch and scikit-learn users know.
"""
from __future__ import annotations

import array_api_compat

from .tree import leaves, tree_map


def _namespace(tree):
    return array_api_compat.array_namespace(*leaves(tree))


def clip_by_global_norm(xp, grads, max_norm):
    """Scale all gradients together so that their global L2 norm is at most
    ``max_norm`` (as ``torch.nn.utils.clip_grad_norm_``)."""
    total = xp.sqrt(sum(xp.sum(g * g) for g in leaves(grads)))
    scale = xp.clip(max_norm / (total + 1e-6), max=1.0)
    return tree_map(lambda g: g * scale, grads)


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

    def update(self, params, grads, state):
        raise NotImplementedError

    def _prepare(self, xp, params, grads):
        if self.clip_norm is not None:
            grads = clip_by_global_norm(xp, grads, self.clip_norm)
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

    def update(self, params, grads, state):
        xp = _namespace(params)
        grads = self._prepare(xp, params, grads)
        lr, wd, mu = self.lr, self.weight_decay, self.momentum
        if wd:
            grads = tree_map(lambda g, p: g + wd * p, grads, params)
        if not mu:
            return tree_map(lambda p, g: p - lr * g, params, grads), state
        buf = tree_map(lambda b, g: mu * b + g, state["momentum"], grads)
        if self.nesterov:
            step = tree_map(lambda g, b: g + mu * b, grads, buf)
        else:
            step = buf
        return tree_map(lambda p, s: p - lr * s, params, step), {"momentum": buf}


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

    def update(self, params, grads, state):
        xp = _namespace(params)
        grads = self._prepare(xp, params, grads)
        lr, wd, eps = self.lr, self.weight_decay, self.eps
        b1, b2 = self.betas
        if wd and self.decoupled:
            params = tree_map(lambda p: p * (1.0 - lr * wd), params)
        elif wd:
            grads = tree_map(lambda g, p: g + wd * p, grads, params)
        step = state["step"] + 1.0
        m = tree_map(lambda m, g: b1 * m + (1.0 - b1) * g, state["m"], grads)
        v = tree_map(lambda v, g: b2 * v + (1.0 - b2) * (g * g), state["v"], grads)
        step_size = lr / (1.0 - b1**step)
        bc2_sqrt = xp.sqrt(1.0 - b2**step)
        params = tree_map(
            lambda p, m, v: p - step_size * (m / (xp.sqrt(v) / bc2_sqrt + eps)), params, m, v
        )
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
