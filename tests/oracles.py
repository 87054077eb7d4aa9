"""Independent float64 references the matrix compares every cell against.

Three implementations that share no code with ``mlp/``:

* ``numpy_*``: plain float64 NumPy formulas (the reference for forward passes);
* ``torch_*``: PyTorch's own functional layers and losses
  (``torch.nn.functional.linear``, ``cross_entropy``, ``gelu(approximate="tanh")``,
  ``binary_cross_entropy_with_logits``, ``mse_loss``, ...) differentiated by
  ``torch.autograd``, and ``torch.optim`` for the optimizers;
* ``jax_*``: ``jax.numpy`` / ``jax.nn`` differentiated by ``jax.grad``.

Layers are described by mlp layer objects only to read their kind and
hyper-parameters (slope, bias, p); the math below is written from scratch.
All inputs are host NumPy arrays; all outputs are float64 NumPy arrays.
"""
from __future__ import annotations

import functools
import math

import numpy as np

import mlp

GELU_C = math.sqrt(2.0 / math.pi)


# -- plain NumPy, float64 -------------------------------------------------------
def _np_logsumexp(z):
    m = np.max(z, axis=-1, keepdims=True)
    return m + np.log(np.sum(np.exp(z - m), axis=-1, keepdims=True))


def numpy_layer(layer, params, x, mask=None):
    """The float64 NumPy output of one layer."""
    x = np.asarray(x, dtype="float64")
    if isinstance(layer, mlp.Linear):
        y = x @ params["W"]
        return y + params["b"] if layer.bias else y
    if isinstance(layer, mlp.LeakyReLU):
        return np.where(x > 0, x, layer.slope * x)
    if isinstance(layer, mlp.ReLU):
        return np.maximum(x, 0.0)
    if isinstance(layer, mlp.Sigmoid):
        return np.exp(-np.logaddexp(0.0, -x))
    if isinstance(layer, mlp.Tanh):
        return np.tanh(x)
    if isinstance(layer, mlp.GELU):
        return 0.5 * x * (1.0 + np.tanh(GELU_C * (x + 0.044715 * x**3)))
    if isinstance(layer, mlp.Softmax):
        return np.exp(x - _np_logsumexp(x))
    if isinstance(layer, mlp.Identity):
        return x
    if isinstance(layer, mlp.Dropout):
        return x if mask is None else x * mask
    raise TypeError(f"no NumPy reference for {layer!r}")


def numpy_loss(name, z, t):
    """The float64 NumPy mean loss of outputs ``z`` for targets ``t``."""
    z = np.asarray(z, dtype="float64")
    if name == "cross_entropy":
        if t.ndim == 1:
            t = np.eye(z.shape[1])[t]
        return float(np.mean(np.sum(t * (_np_logsumexp(z) - z), axis=-1)))
    t = np.asarray(t, dtype="float64").reshape(z.shape)
    if name == "mse":
        return float(np.mean((z - t) ** 2))
    if name == "binary_cross_entropy":
        return float(np.mean(np.logaddexp(0.0, z) - z * t))
    raise ValueError(name)


# -- PyTorch: its own functional layers and autograd ------------------------------
def _torch():
    import torch

    return torch


def torch_layer(layer, params, x, mask=None):
    """One layer with ``torch.nn.functional``; ``params`` and ``x`` are tensors."""
    torch = _torch()
    F = torch.nn.functional
    if isinstance(layer, mlp.Linear):
        return F.linear(x, params["W"].T, params.get("b"))
    if isinstance(layer, mlp.LeakyReLU):
        return F.leaky_relu(x, layer.slope)
    if isinstance(layer, mlp.ReLU):
        return F.relu(x)
    if isinstance(layer, mlp.Sigmoid):
        return torch.sigmoid(x)
    if isinstance(layer, mlp.Tanh):
        return torch.tanh(x)
    if isinstance(layer, mlp.GELU):
        return F.gelu(x, approximate="tanh")
    if isinstance(layer, mlp.Softmax):
        return F.softmax(x, dim=-1)
    if isinstance(layer, mlp.Identity):
        return x
    if isinstance(layer, mlp.Dropout):
        return x if mask is None else x * mask
    raise TypeError(f"no torch reference for {layer!r}")


def torch_loss(name, z, t):
    torch = _torch()
    F = torch.nn.functional
    if name == "cross_entropy":
        return F.cross_entropy(z, t)  # class ids (int64) or probability rows
    t = t.reshape(z.shape)
    if name == "mse":
        return F.mse_loss(z, t)
    if name == "binary_cross_entropy":
        return F.binary_cross_entropy_with_logits(z, t)
    raise ValueError(name)


def _t(a, grad=False):
    torch = _torch()
    a = np.asarray(a)
    if np.issubdtype(a.dtype, np.integer):
        return torch.from_numpy(a.astype("int64"))
    return torch.tensor(a.astype("float64"), requires_grad=grad)


def torch_model_grads(layers, params, x, y, loss, masks=()):
    """(loss, grads, dx) of ``layers`` on ``(x, y)``, by torch.autograd."""
    torch = _torch()
    tp = [{k: _t(v, True) for k, v in p.items()} for p in params]
    tx = _t(x, True)
    masks = iter([_t(m) for m in masks])
    h = tx
    for layer, p in zip(layers, tp):
        h = torch_layer(layer, p, h, next(masks, None) if isinstance(layer, mlp.Dropout) else None)
    value = torch_loss(loss, h, _t(y))
    flat = [v for p in tp for v in p.values()] + [tx]
    got = torch.autograd.grad(value, flat)
    it = iter(g.numpy() for g in got)
    grads = [{k: next(it) for k in p} for p in tp]
    return float(value.detach()), grads, next(it)


def torch_vjp(layer, params, x, dy, mask=None):
    """(y, dx, grads) of one layer: the vector-Jacobian product with ``dy``."""
    torch = _torch()
    tp = {k: _t(v, True) for k, v in params.items()}
    tx = _t(x, True)
    y = torch_layer(layer, tp, tx, None if mask is None else _t(mask))
    got = torch.autograd.grad(y, [tx, *tp.values()], grad_outputs=_t(dy))
    return y.detach().numpy(), got[0].numpy(), {k: g.numpy() for k, g in zip(tp, got[1:])}


def torch_loss_grad(name, z, t):
    """(value, d value / d z) by torch.autograd."""
    torch = _torch()
    tz = _t(z, True)
    value = torch_loss(name, tz, _t(t))
    (dz,) = torch.autograd.grad(value, [tz])
    return float(value.detach()), dz.numpy()


def torch_optimizer(opt, params):
    """The ``torch.optim`` optimizer with ``opt``'s hyper-parameters."""
    torch = _torch()
    if isinstance(opt, mlp.AdamW):
        return torch.optim.AdamW(params, lr=opt.lr, betas=opt.betas, eps=opt.eps, weight_decay=opt.weight_decay)
    if isinstance(opt, mlp.Adam):
        return torch.optim.Adam(params, lr=opt.lr, betas=opt.betas, eps=opt.eps, weight_decay=opt.weight_decay)
    return torch.optim.SGD(params, lr=opt.lr, momentum=opt.momentum, nesterov=opt.nesterov,
                           weight_decay=opt.weight_decay)


def torch_updates(opt, params, grads_per_step):
    """Params after each step of ``torch.optim`` fed the given gradients
    (``clip_norm`` through ``torch.nn.utils.clip_grad_norm_``)."""
    torch = _torch()
    tp = [torch.tensor(np.asarray(p, dtype="float64"), requires_grad=True) for p in params]
    topt = torch_optimizer(opt, tp)
    out = []
    for grads in grads_per_step:
        for p, g in zip(tp, grads):
            p.grad = torch.tensor(np.asarray(g, dtype="float64"))
        if opt.clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(tp, opt.clip_norm)
        topt.step()
        out.append([p.detach().numpy().copy() for p in tp])
    return out


# -- JAX: jax.numpy, jax.nn and jax.grad ------------------------------------------
@functools.lru_cache(None)
def _jax():
    import jax

    jax.config.update("jax_enable_x64", True)  # the oracle computes in float64
    return jax


def jax_layer(layer, params, x, mask=None):
    jax = _jax()
    jnp = jax.numpy
    if isinstance(layer, mlp.Linear):
        y = jnp.dot(x, params["W"])
        return y + params["b"] if layer.bias else y
    if isinstance(layer, mlp.LeakyReLU):
        return jax.nn.leaky_relu(x, layer.slope)
    if isinstance(layer, mlp.ReLU):
        return jax.nn.relu(x)
    if isinstance(layer, mlp.Sigmoid):
        return jax.nn.sigmoid(x)
    if isinstance(layer, mlp.Tanh):
        return jnp.tanh(x)
    if isinstance(layer, mlp.GELU):
        return jax.nn.gelu(x, approximate=True)
    if isinstance(layer, mlp.Softmax):
        return jax.nn.softmax(x, axis=-1)
    if isinstance(layer, mlp.Identity):
        return x
    if isinstance(layer, mlp.Dropout):
        return x if mask is None else x * mask
    raise TypeError(f"no JAX reference for {layer!r}")


def jax_loss(name, z, t):
    jax = _jax()
    jnp = jax.numpy
    if name == "cross_entropy":
        if t.ndim == 1:
            t = jax.nn.one_hot(t, z.shape[1], dtype=z.dtype)
        return -jnp.mean(jnp.sum(t * jax.nn.log_softmax(z, axis=-1), axis=-1))
    t = t.reshape(z.shape)
    if name == "mse":
        return jnp.mean((z - t) ** 2)
    if name == "binary_cross_entropy":
        return -jnp.mean(t * jax.nn.log_sigmoid(z) + (1.0 - t) * jax.nn.log_sigmoid(-z))
    raise ValueError(name)


def jax_model_grads(layers, params, x, y, loss, masks=()):
    """(loss, grads, dx) of ``layers`` on ``(x, y)``, by jax.grad."""
    jax = _jax()
    jnp = jax.numpy
    masks = list(masks)

    def f(params, x):
        it = iter(masks)
        h = x
        for layer, p in zip(layers, params):
            h = jax_layer(layer, p, h, next(it, None) if isinstance(layer, mlp.Dropout) else None)
        return jax_loss(loss, h, jnp.asarray(y))

    as64 = lambda a: jnp.asarray(np.asarray(a, dtype="float64"))  # noqa: E731
    jp = [{k: as64(v) for k, v in p.items()} for p in params]
    value, (grads, dx) = jax.value_and_grad(f, argnums=(0, 1))(jp, as64(x))
    grads = [{k: np.asarray(v) for k, v in g.items()} for g in grads]
    return float(value), grads, np.asarray(dx)



def torch_train(layers, params, batches, loss, opt, masks=(), keep=()):
    """A float64 training loop with PyTorch's functional layers, ``torch.autograd``
    and ``torch.optim`` (``clip_norm`` through ``torch.nn.utils.clip_grad_norm_``).

    ``batches`` is one ``(x, y)`` per step; ``masks`` one list of dropout masks
    per step (or nothing). Returns the loss of every step (before its update)
    and ``{step: params after that step}`` for the steps in ``keep`` and the
    last one, as float64 NumPy arrays shaped like ``params``."""
    torch = _torch()
    tp = [{k: _t(v, True) for k, v in p.items()} for p in params]
    flat = [v for p in tp for v in p.values()]
    topt = torch_optimizer(opt, flat)
    keep = set(keep) | {len(batches)}
    losses, snapshots = [], {}
    for i, (x, y) in enumerate(batches):
        step_masks = iter([_t(m) for m in (masks[i] if len(masks) else ())])
        h = _t(x)
        for layer, p in zip(layers, tp):
            h = torch_layer(layer, p, h, next(step_masks, None) if isinstance(layer, mlp.Dropout) else None)
        value = torch_loss(loss, h, _t(y))
        topt.zero_grad()
        value.backward()
        if opt.clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(flat, opt.clip_norm)
        topt.step()
        losses.append(float(value.detach()))
        if i + 1 in keep:
            snapshots[i + 1] = [{k: v.detach().numpy().copy() for k, v in p.items()} for p in tp]
    return np.array(losses), snapshots
