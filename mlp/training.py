"""Training: step building and the compile cache, dropout-mask drawing, the
fit loop with its per-epoch rollback, and the two epoch strategies.

Data flows one way: host data -> the backend's device once -> a pure train
step ``(params, opt_state, x, y, masks) -> (params, opt_state, loss, correct)``
(compiled where the backend compiles) -> metrics back to the host once per epoch.

This module never imports :mod:`mlp.model`: :meth:`Sequential.fit` hands the
model to :func:`fit`, which uses only its public attributes and methods.
"""
from __future__ import annotations

import inspect
import time

import numpy as np

from . import flat as _flat
from . import losses as _losses
from . import validation
from .callbacks import StopTraining
from .errors import guard_memory, TrainingDiverged
from .tree import tree_map


class CompileCache(dict):
    """A model's compiled functions by key (``"infer"``, ``("step", ...)``,
    ``("steps", ...)``); ``clear()`` drops them all (after the backend changes)."""

    def get_or_build(self, key, build):
        fn = self.get(key)
        if fn is None:
            fn = self[key] = build()
        return fn


# -- dropout masks -----------------------------------------------------------------
def draw_masks(model, batch, steps=None, last=None):
    """Host-drawn dropout masks for one training batch, moved to the device;
    with ``steps``, for that many batches in a row, each mask stacked ``[steps x B x D]``
    (drawn in the same order as one batch at a time). With ``last``, the last
    of them is a partial batch of ``last`` rows: its masks are drawn for those
    rows (as a step of that size would) and padded with zero rows."""
    shapes = [(layer, width) for layer, width in zip(model.layers, model.layer_widths()) if layer.needs_mask]
    if not shapes:
        return []
    sizes = [batch] * (steps or 1)
    if last is not None:
        sizes[-1] = last

    def draw(layer, rows, width):
        mask = layer.make_mask(model.rng, (rows, width), model.dtype)
        return mask if rows == batch else np.concatenate([mask, np.zeros((batch - rows, width), mask.dtype)])

    draws = [[draw(layer, rows, width) for layer, width in shapes] for rows in sizes]
    hosts = draws[0] if steps is None else [np.stack(m) for m in zip(*draws)]
    return [model.backend.asarray(h, model.dtype) for h in hosts]


# -- steps -------------------------------------------------------------------------
def _resolve(model, loss, optimizer):
    return (_losses.get(loss) if loss is not None else model.loss,
            optimizer if optimizer is not None else model.optimizer)


def train_forward(model, params, x, masks):
    """The training forward pass; counts traces (once per trace on JAX, every call elsewhere)."""
    model.traces += 1
    return model.apply(params, x, train=True, masks=masks)


def flat_run(model, optimizer=None):
    """A :class:`mlp.flat.Run` for ``fit``, or None where the optimizer's state
    cannot be flattened (a user's optimizer without ``slots``)."""
    optimizer = optimizer if optimizer is not None else model.optimizer
    if not _flat.supported(optimizer, model.opt_state):
        return None
    return _flat.Run(model.params, optimizer, model.backend.xp, host_counts=not model.backend.compiles,
                     kernels=model.backend.kernels)


def step_fn(model, loss, optimizer, inplace=False):
    """The uncompiled step ``(params, opt_state, x, y, masks, weights=None) ->
    (params, opt_state, loss, correct)``."""
    xp = model.backend.xp

    def step(params, opt_state, x, y, masks, weights=None):
        out, backward = train_forward(model, params, x, masks)
        value, dout, correct = loss.terms(xp, out, y, weights)  # rows of weight 0 are padding
        params, opt_state = optimizer.update(params, backward(dout), opt_state, inplace=inplace)
        return params, opt_state, value, correct

    return step


def _body(model, loss, optimizer, run, inplace=False):
    if run is None:
        return step_fn(model, loss, optimizer, inplace)
    return run.step(lambda params, x, masks: train_forward(model, params, x, masks), loss, inplace=inplace)


def train_step(model, loss=None, optimizer=None, *, inplace=False, run=None):
    """:meth:`Sequential.train_step`: the pure step ``(params, opt_state, x, y, masks,
    weights=None) -> (params, opt_state, loss, correct)``, compiled once per backend
    through ``Backend.jit`` (``weights``: ``[B]`` row weights for the loss, see ``mlp.losses``).

    ``inplace=True`` (used by ``fit`` where ``Backend.inplace`` is True) lets
    the step overwrite the ``params`` and ``opt_state`` arrays it is given,
    which the caller must own and not use again. With ``run`` (a
    :class:`mlp.flat.Run`, what ``fit`` uses) the step works on one flat parameter
    vector instead: ``(P, state, x, y, masks, weights=None, count=None) -> (P, state,
    loss, correct)`` (see ``mlp.flat``)."""
    loss, optimizer = _resolve(model, loss, optimizer)
    inplace = bool(inplace and model.backend.inplace)
    return model.compiled.get_or_build(("step", id(loss), id(optimizer), inplace, run is not None),
                                       lambda: model.backend.jit(_body(model, loss, optimizer, run, inplace)))


def train_steps(model, loss=None, optimizer=None, *, run=None):
    """:meth:`Sequential.train_steps`: many steps in one call: ``(params, opt_state, X, Y,
    rows, masks, weights=None) -> (params, opt_state, losses, corrects)``, where ``rows``
    is ``[S x B]`` row numbers of ``X`` and ``Y`` (one batch per step), each mask is
    ``[S x B x D]`` and ``weights`` (``[S x B]``, or None for all 1) weigh the rows in
    the loss (0: a padding row). Built from the train step with ``Backend.scan`` and
    compiled as a whole: on JAX, one call and no Python per step. The data stays on
    the device; only row numbers travel. With ``run``, on flat parameters."""
    loss, optimizer = _resolve(model, loss, optimizer)

    def build():
        xp, backend, step = model.backend.xp, model.backend, _body(model, loss, optimizer, run)

        def steps(params, opt_state, X, Y, rows, masks, weights=None):
            def body(carry, batch):
                rows, masks, weights = batch
                x, y = xp.take(X, rows, axis=0), xp.take(Y, rows, axis=0)
                params, opt_state, value, correct = step(*carry, x, y, masks, weights)
                return (params, opt_state), (value, correct)

            (params, opt_state), (values, corrects) = backend.scan(
                body, (params, opt_state), (rows, masks, weights))
            return params, opt_state, values, corrects

        return backend.jit(steps)

    return model.compiled.get_or_build(("steps", id(loss), id(optimizer), run is not None), build)


# -- the fit loop --------------------------------------------------------------------
def fit(model, x, y, *, epochs=1, batch_size=32, optimizer=None, loss=None, shuffle=True,
        validation_data=None, callbacks=(), on_batch=None, devices=None):
    """:meth:`Sequential.fit`: train ``model`` for ``epochs`` passes over ``(x, y)``.

    Host data is moved to the device once; each epoch shuffles with a host
    permutation (from the model's seeded generator) and slices batches on
    the device. Returns the model's :class:`History`. ``optimizer`` defaults to
    the one in use, else ``Adam()``; ``loss`` replaces the model's loss. Each
    callback ``cb(model, epoch, logs)`` runs after each epoch and may raise
    :class:`StopTraining`; its ``on_train_begin(model)``, ``on_batch(step, n_steps)``
    and ``on_train_end(model)`` run where it has them. ``on_batch(step, n_steps)``,
    if given, runs after each step is dispatched (it reads nothing from the device:
    for progress bars). An epoch that fails is rolled back (see :func:`run_epochs`).

    ``devices`` (an int or ``"all"``; JAX only) trains data-parallel: the
    parameters are replicated on that many devices and each batch of
    ``batch_size`` rows (which must divide by the device count) is split
    over them; see docs/multidevice.md. Between epochs the parameters are
    back on the model's own device."""
    if loss is not None:
        model.loss = _losses.get(loss)
    if optimizer is not None and optimizer is not model.optimizer:
        model.set_optimizer(optimizer)
    elif model.optimizer is None:
        model.set_optimizer("adam")
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if not isinstance(epochs, (int, np.integer)) or epochs < 0:
        raise ValueError(f"epochs must be a non-negative int, got {epochs!r}")
    move = "keep the data on the host and train on a part of it, or use another device"
    X = guard_memory(model.backend, lambda: validation.as_input(model, x), "moving x to the device", move)
    n = X.shape[0]
    Y = validation.as_target(model, y, model.loss, n)
    checked = None
    if validation_data is not None:
        Xv = validation.as_input(model, validation_data[0], "validation x")
        checked = Xv, validation.as_target(model, validation_data[1], model.loss, Xv.shape[0])
    bs = min(int(batch_size), n)
    dp = model.backend.data_parallel(devices, batch_size=int(batch_size))  # no-op for one device
    hooks = [cb.on_batch for cb in callbacks if callable(getattr(cb, "on_batch", None))]
    if on_batch is not None:
        hooks.append(on_batch)
    batch_hook = hooks[0] if len(hooks) == 1 else (lambda step, n: [h(step, n) for h in hooks]) if hooks else None
    for cb in callbacks:
        getattr(cb, "on_train_begin", lambda m: None)(model)
    try:
        guard_memory(
            model.backend,
            lambda: run_epochs(model, X, Y, epochs, bs, shuffle, checked, callbacks, batch_hook, dp),
            f"training with batch size {bs} ([{bs} x {model.input_width}] inputs, {model.num_params:,} parameters)",
            f"try a batch size smaller than {bs} (--batch-size), a smaller model, or another device",
        )
    finally:
        for cb in callbacks:
            getattr(cb, "on_train_end", lambda m: None)(model)
    return model.history


def strategy_for(backend, dp):
    """The epoch strategy: many steps a call where the backend fuses them
    (``Backend.fuse_steps``) on one device, else one call a step."""
    return FusedEpoch() if backend.fuse_steps and dp.n == 1 else StepEpoch(dp)


def run_epochs(model, X, Y, epochs, bs, shuffle, validation_set, callbacks, on_batch, dp):
    """``epochs`` epochs on checked device arrays; each either finishes or is rolled back."""
    strategy, n = strategy_for(model.backend, dp), X.shape[0]
    for _ in range(epochs):
        start = time.perf_counter()
        # Steps are pure, so references are a snapshot: an epoch that fails (diverges, runs
        # out of memory, is interrupted) leaves the model exactly as the last finished one did.
        good = model.params, model.opt_state, model.rng.bit_generator.state, model.epoch
        lengths = {k: len(v) for k, v in model.history.items()}
        try:
            order = model.rng.permutation(n) if shuffle else np.arange(n)
            losses, corrects = strategy.run(model, X, Y, order, bs, on_batch)
            logs = epoch_logs(model.backend, losses, corrects, n, bs, model.epoch + 1)
            logs["time"] = time.perf_counter() - start
            if validation_set:
                val = model.scores(validation_set[0], validation_set[1], model.loss)
                logs.update({f"val_{k}": v for k, v in val.items()})
            model.epoch += 1
            model.history.append(**{k: v for k, v in logs.items() if k != "step_loss"})
            model.history.setdefault("step_loss", []).extend(logs["step_loss"])
        except BaseException:
            model.params, model.opt_state, model.rng.bit_generator.state, model.epoch = good
            for k in list(model.history):
                if k in lengths:
                    del model.history[k][lengths[k]:]
                else:
                    del model.history[k]
            raise
        try:
            for cb in callbacks:
                cb(model, model.epoch, logs)
        except StopTraining:
            break


class StepEpoch:
    """One epoch, one call of the train step per batch; the per-step losses
    and correct counts stay on the device, stacked, until the epoch ends.

    Where ``Backend.inplace`` is True (and on one device) the step updates
    the parameters and optimizer state in place: it works on copies made
    here, so the arrays that ``model.params`` and ``model.opt_state`` held
    before (the epoch's rollback snapshot, or a caller's) never change."""

    def __init__(self, dp):
        self.dp = dp

    def run(self, model, X, Y, order, bs, on_batch):
        backend, xp, n, dp = model.backend, model.backend.xp, X.shape[0], self.dp
        inplace = backend.inplace and dp.n == 1
        run = flat_run(model)
        step = dp.wrap(model.train_step(inplace=inplace, run=run))  # shards each batch over the devices
        params, opt_state, t0 = model.params, model.opt_state, 0
        if run is not None:  # new flat arrays: the step may write them in place
            params, opt_state, t0 = run.begin(params, opt_state)
        elif inplace:
            params, opt_state = tree_map(lambda a: xp.asarray(a, copy=True), (params, opt_state))
        params, opt_state = dp.replicate((params, opt_state))
        counted = run is not None and run.host_counts
        idx = backend.asarray(order.astype(backend.index_dtype), backend.index_dtype)
        n_steps = -(-n // bs)
        losses, corrects = [], []
        for k, i in enumerate(range(0, n, bs)):
            batch = idx[i:min(i + bs, n)]
            xb, yb = xp.take(X, batch, axis=0), xp.take(Y, batch, axis=0)
            extra = (None, t0 + k + 1) if counted else ()  # the step number, from the host
            params, opt_state, value, correct = step(params, opt_state, xb, yb, draw_masks(model, xb.shape[0]),
                                                     *extra)
            losses.append(value)
            corrects.append(correct)
            if on_batch is not None:
                on_batch(k, n_steps)
        params, opt_state = dp.gather((params, opt_state))
        model.params, model.opt_state = (params, opt_state) if run is None else run.end(params, opt_state, n_steps)
        return [xp.stack(losses)], (None if corrects[0] is None else [xp.stack(corrects)])


class FusedEpoch:
    """One epoch in as few calls of :meth:`Sequential.train_steps` as the dropout
    masks allow (at most ``model.mask_budget`` mask elements a call): without
    dropout, one call, so one compiled program serves every epoch. A last,
    partial batch of ``r`` rows is padded to ``bs`` rows of weight 0 (see
    ``mlp.losses``): the same step as one on its ``r`` rows (for a loss without
    ``weights``, the partial batch gets a call of its own). Same steps, same
    order and same random masks as :class:`StepEpoch`; ``on_batch`` runs for
    each step of a call once the call is dispatched."""

    def plan(self, model, n, bs):
        """``(calls, padded)``: the calls as ``(first step, steps, rows a step)``."""
        n_steps, partial = -(-n // bs), n % bs
        padded = bool(partial) and takes_weights(model.loss)
        scanned = n_steps if padded else n // bs  # the steps of full (or padded) batches
        widths = model.layer_widths()
        mask_width = sum(w for w, layer in zip(widths, model.layers) if layer.needs_mask)
        chunk = max(1, min(scanned, model.mask_budget // (bs * mask_width))) if mask_width else scanned
        calls = [(first, min(chunk, scanned - first), bs) for first in range(0, scanned, chunk)]
        if partial and not padded:
            calls.append((scanned, 1, partial))
        return calls, padded

    def run(self, model, X, Y, order, bs, on_batch):
        n, backend = X.shape[0], model.backend
        n_steps, partial = -(-n // bs), n % bs
        calls, padded = self.plan(model, n, bs)
        order, weights = order.astype("int32"), None
        if padded:  # padding rows: row 0 again, with weight 0
            order = np.concatenate([order, np.zeros(bs - partial, "int32")])
            weights = (np.arange(n_steps * bs) < n).astype("int32").reshape(n_steps, bs)
        run = flat_run(model)
        steps = model.train_steps(run=run)
        params, opt_state = model.params, model.opt_state
        if run is not None:
            params, opt_state, _ = run.begin(params, opt_state)
        losses, corrects = [], []
        for first, count, size in calls:
            rows = backend.asarray(order[first * bs:first * bs + count * size].reshape(count, size), "int32")
            w = None if weights is None else backend.asarray(weights[first:first + count], "int32")
            last = partial if padded and first + count == n_steps else None
            params, opt_state, values, correct = steps(params, opt_state, X, Y, rows,
                                                       draw_masks(model, size, count, last=last), w)
            losses.append(values)
            corrects.append(correct)
            for k in range(first, first + count) if on_batch is not None else ():
                on_batch(k, n_steps)
        model.params, model.opt_state = (params, opt_state) if run is None else run.end(params, opt_state, 0)
        return losses, (None if corrects[0] is None else corrects)


def epoch_logs(backend, losses, corrects, n, bs, epoch):
    """Epoch metrics from the per-step losses and correct counts: lists of
    device arrays, read back to the host here, once per epoch."""
    step_loss = np.concatenate([np.reshape(backend.to_numpy(v), -1) for v in losses]).astype(float)
    if not np.isfinite(step_loss).all():
        bad = int(np.flatnonzero(~np.isfinite(step_loss))[0])
        raise TrainingDiverged(
            f"training diverged in epoch {epoch}, step {bad + 1}: the loss is "
            f"{step_loss[bad]}; lower the learning rate or check the data (the model keeps "
            f"the weights of epoch {epoch - 1})",
            epoch=epoch, step=bad + 1,
        )
    sizes = np.full(len(step_loss), bs, dtype=float)
    sizes[-1] = n - bs * (len(step_loss) - 1)
    logs = {"loss": float(np.dot(step_loss, sizes) / n), "step_loss": step_loss.tolist()}
    if corrects:
        logs["accuracy"] = float(sum(np.sum(backend.to_numpy(c)) for c in corrects)) / n
    return logs


def takes_weights(loss):
    """Whether ``loss`` accepts row weights (``mlp.losses``' own do; a user's may not)."""
    try:
        return "weights" in inspect.signature(loss).parameters
    except (TypeError, ValueError):
        return False
