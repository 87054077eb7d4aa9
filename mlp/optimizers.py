"""Optimizers as pure functions: ``update(params, grads, state) -> (params, state)``.

Nothing is changed in place: every call returns new arrays, which is what lets
JAX compile the whole train step and keeps NumPy and JAX behaving alike.
Hyper-parameters and update rules follow ``torch.optim`` (the tests compare
against it), with the names PyTorch and scikit-learn users know.
"""
from __future__ import annotations

import math

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

    # -- a run of steps on one flat parameter vector (what ``fit`` uses) --------------
    #: the entries of the state shaped like the parameters: ``fit`` flattens them
    #: with the parameters into one vector each, so that an update costs a fixed
    #: number of array operations whatever the depth of the model
    slots = ()

    def begin_run(self, state):
        """The state a run of :meth:`step` calls carries, from the public state
        (its ``slots`` already flattened). The default: the state itself."""
        return state

    def end_run(self, state, steps=0):
        """The public state back from :meth:`begin_run`'s after ``steps`` steps
        counted on the host (0 when the state counted them itself)."""
        return state

    def steps_taken(self, state):
        """How many steps the state has seen, read to the host (once per run), or 0."""
        return 0

    def step(self, p, g, state, count=None, *, inplace=False, kernels=None):
        """One update of the flat parameter vector ``p`` by the flat gradient ``g``,
        with a state from :meth:`begin_run`. ``count`` is the step number (1 for the
        first step) when the caller counts steps on the host (backends that run
        eagerly: then any factor that depends on it is computed on the host, in double
        precision, and costs no array operation); None when the state counts them on
        the device (compiled or captured steps). ``kernels``: the backend's fused
        element-wise kernels (``Backend.kernels``), for optimizers that use them.
        The default is :meth:`update`."""
        return self.update(p, g, state, inplace=inplace)

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

    @property
    def slots(self):
        return ("momentum",) if self.momentum else ()

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

    slots = ("m", "v")

    def init(self, params):
        xp = _namespace(params)
        first = leaves(params)[0]
        step = xp.zeros((), dtype=first.dtype, device=array_api_compat.device(first))
        return {
            "step": step,
            "m": tree_map(xp.zeros_like, params),
            "v": tree_map(xp.zeros_like, params),
        }

    def corrections(self, xp, t):
        """The bias corrections ``(1 - beta1**t, 1 - beta2**t)`` for step ``t``.

        For a host step number (a Python int) they are computed in double
        precision, as ``torch.optim.Adam`` does. For a step count on the device
        they are ``-expm1(t * log(beta))``: accurate to a few units in the last
        place of the parameters' dtype (``1 - beta2**t`` computed in float32 is
        off by about 1e-5 relative, which made float32 training drift)."""
        b1, b2 = self.betas
        if isinstance(t, int):
            return 1.0 - b1**t, 1.0 - b2**t
        return -xp.expm1(t * _log(b1)), -xp.expm1(t * _log(b2))

    def update(self, params, grads, state, *, inplace=False):
        xp = _namespace(params)
        grads = self._prepare(xp, params, grads, inplace)
        lr, wd, eps, decoupled = self.lr, self.weight_decay, self.eps, self.decoupled
        b1, b2 = self.betas
        step = state["step"] + 1.0
        bc1, bc2 = self.corrections(xp, step)
        neg_step_size = -lr / bc1
        bc2_sqrt = xp.sqrt(bc2)

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

    # The flat run keeps the moments divided by (1 - beta): m' = beta1 m' + g and
    # v' = beta2 v' + g g cost one operation less each, and the factors fold into
    # two scalars. Ten array operations per step in all, whatever the depth.
    def begin_run(self, state):
        b1, b2 = self.betas
        return {"step": state["step"], "m": state["m"] / (1.0 - b1), "v": state["v"] / (1.0 - b2)}

    def end_run(self, state, steps=0):
        b1, b2 = self.betas
        step = state["step"] + float(steps) if steps else state["step"]
        return {"step": step, "m": state["m"] * (1.0 - b1), "v": state["v"] * (1.0 - b2)}

    def steps_taken(self, state):
        return int(float(state["step"]))  # one read from the device, once per run

    def step(self, p, g, state, count=None, *, inplace=False, kernels=None):
        """See :meth:`Optimizer.step`; with ``kernels`` (``Backend.kernels``), the
        update of ``p``, ``m`` and ``v`` is one fused kernel (``Kernels.adam``)."""
        xp = array_api_compat.array_namespace(p)
        if self.clip_norm is not None:
            g = clip_by_global_norm(xp, g, self.clip_norm, inplace)
        lr, wd, eps = self.lr, self.weight_decay, self.eps
        b1, b2 = self.betas
        if count is None:  # the state counts: corrections on the device
            t = state["step"] + 1.0
            new_step, sqrt = t, xp.sqrt
        else:
            t, new_step, sqrt = int(count), state["step"], math.sqrt
        bc1, bc2 = self.corrections(xp, t)
        # sqrt(v) / sqrt(bc2) + eps = k (sqrt(v') + eps / k), with v = (1 - b2) v'
        k = math.sqrt(1.0 - b2) / sqrt(bc2)
        scale = -lr * (1.0 - b1) / (bc1 * k)
        if kernels is not None:
            decoupled = bool(wd and self.decoupled)
            p, m, v = kernels.adam(p, g, state["m"], state["v"], b1=b1, b2=b2, scale=scale, eps=eps / k,
                                   decay=1.0 - lr * wd if decoupled else 1.0, l2=0.0 if decoupled else wd,
                                   inplace=inplace)
            return p, {"step": new_step, "m": m, "v": v}
        if wd and self.decoupled:
            p = scale_add(p, 1.0 - lr * wd, inplace=inplace)
        elif wd:
            g = scale_add(g, 1.0, p, wd, inplace=inplace)
        m = scale_add(state["m"], b1, g, inplace=inplace)
        v = scale_add(state["v"], b2, g * g, inplace=inplace)
        d = xp.sqrt(v)
        d += eps / k  # in place on a temporary
        p = scale_add(p, 1.0, m / d, scale, inplace=inplace)
        return p, {"step": new_step, "m": m, "v": v}


def _log(beta):
    """log(beta) as a host float (-inf for 0: then beta**t is 0 for every t >= 1)."""
    return math.log(beta) if beta > 0 else -math.inf


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
