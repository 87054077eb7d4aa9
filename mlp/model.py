"""The model: a stack of layers, its parameters on one backend, and training.

Data flows one way: host data -> the backend's device once -> a pure train
step ``(params, opt_state, x, y, masks) -> (params, opt_state, loss, correct)``
(compiled on JAX) -> metrics back to the host once per epoch.
"""
from __future__ import annotations

import inspect
import time

import array_api_compat
import numpy as np

import backends

from . import flat as _flat
from . import losses as _losses
from . import optimizers as _optimizers
from . import precision as _precision
from .errors import (DataError, DeviceMismatch, fmt_shape, is_out_of_memory, OutOfMemory, ShapeError,
                     TrainingDiverged)
from .layers import activation as _activation
from .layers import Dropout, from_config, Layer, Linear
from .tree import leaves, tree_map


class StopTraining(Exception):
    """Raised by a callback to end ``fit`` after the current epoch."""


class History(dict):
    """Per-epoch metrics (``loss``, ``accuracy``, ``val_loss``, ...) as lists,
    plus ``step_loss``: the loss of every step, in order."""

    @property
    def epochs(self):
        return len(self.get("loss", []))

    def append(self, **metrics):
        for k, v in metrics.items():
            self.setdefault(k, []).append(v)


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


def _where(x):
    """'a jax array on cpu:0': the library and device of a non-NumPy array, for messages."""
    for name in ("torch", "jax", "cupy", "array_api_strict", "dask", "ndonnx"):
        test = getattr(array_api_compat, f"is_{name}_array", None) or getattr(array_api_compat, f"is_{name}_obj", None)
        if test is not None and test(x):
            break
    else:
        name = type(x).__module__.split(".")[0]
    device = str(array_api_compat.device(x))
    if device.startswith("array_api_strict.Device("):
        device = device[len("array_api_strict.Device("):-1].strip("'")
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name} array on {device}"


def _foreign_namespace(x):
    """The array library of ``x`` when it is a non-NumPy array, else None."""
    if isinstance(x, (np.ndarray, np.generic, list, tuple, int, float)):
        return None
    try:
        return array_api_compat.array_namespace(x)
    except TypeError:
        return None


class Sequential:
    """Layers applied in order, with parameters on one backend.

    ``Sequential(Linear(784, 16), ReLU(), Linear(16, 10), backend="jax", seed=0)``

    Initial weights come from a host ``numpy.random.Generator`` seeded with
    ``seed`` and are moved to the backend once, so the same seed gives
    bit-identical starting parameters on every backend and device.

    ``precision="bf16"`` or ``"tf32"`` (float32 ``dtype`` only) runs the Linear
    layers' matrix products in bfloat16 or TF32 on backends that have them;
    weights, optimizer state and loss stay float32 (``mlp.precision``).
    """

    #: The most dropout-mask elements ``fit`` draws ahead for one call of
    #: :meth:`train_steps` (2**24: 64 MiB of float32); more steps split the epoch.
    mask_budget = 1 << 24

    def __init__(self, *layers, backend=None, seed=0, dtype="float32", loss="cross_entropy",
                 precision="float32"):
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = tuple(layers[0])
        if not layers:
            raise ValueError("Sequential needs at least one layer")
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"layer {i} is {type(layer).__name__}, not an mlp layer")
        self.layers = list(layers)
        self._check_widths()
        if dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
        self.dtype = dtype
        self.backend = backends.get(backend)
        self.precision = _precision.get(precision).check(self.backend, dtype).name  # see mlp/precision.py
        self.backend.ensure_dtype(dtype)
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        host = [layer.init(self.rng) for layer in self.layers]
        self.params = [{k: self.backend.asarray(v.astype(dtype), dtype) for k, v in p.items()} for p in host]
        self.loss = _losses.get(loss)
        self.optimizer = None
        self.opt_state = None
        self.history = History()
        self.epoch = 0
        self._compiled = {}
        self.traces = 0  # how many times the train step was traced (compiled) on JAX

    # -- structure ----------------------------------------------------------
    def _check_widths(self):
        width, source = None, None
        for i, layer in enumerate(self.layers):
            if isinstance(layer, Linear):
                if width is not None and width != layer.in_features:
                    raise ShapeError(
                        f"layer {i} {layer!r} expects [B x {layer.in_features}], but layer "
                        f"{source[0]} {source[1]!r} produces [B x {width}]"
                    )
                width, source = layer.out_features, (i, layer)
        if width is None:
            raise ValueError("Sequential needs at least one Linear layer")

    @property
    def input_width(self):
        return next(layer.in_features for layer in self.layers if isinstance(layer, Linear))

    @property
    def output_width(self):
        return [layer.out_features for layer in self.layers if isinstance(layer, Linear)][-1]

    @property
    def num_params(self):
        return sum(int(np.prod(a.shape)) for a in leaves(self.params))

    def config(self):
        """The architecture as JSON-ready values; :meth:`from_config` rebuilds it."""
        return {
            "layers": [layer.config() for layer in self.layers],
            "dtype": self.dtype,
            "loss": self.loss.name,
            "seed": self.seed,
            "precision": self.precision,
        }

    @classmethod
    def from_config(cls, config, backend=None):
        layers = [from_config(c) for c in config["layers"]]
        return cls(*layers, backend=backend, seed=config.get("seed", 0),
                   dtype=config.get("dtype", "float32"), loss=config.get("loss", "cross_entropy"),
                   precision=config.get("precision", "float32"))

    def __repr__(self):
        inner = ", ".join(repr(layer) for layer in self.layers)
        return f"Sequential({inner}; {self.backend!r}, {_precision.describe(self.dtype, self.precision)})"

    def summary(self):
        """The shape flow and parameter arithmetic, one line per layer."""
        rows = [("", "Input", f"[B x {self.input_width}]", "", "", "")]
        total_w = total_b = 0
        width = self.input_width
        for i, (layer, p) in enumerate(zip(self.layers, self.params)):
            width = layer.output_width(width)
            if isinstance(layer, Linear):
                w = layer.in_features * layer.out_features
                b = layer.out_features if layer.bias else 0
                total_w, total_b = total_w + w, total_b + b
                math = f"[B x {layer.in_features}] @ [{layer.in_features} x {layer.out_features}]"
                math += f" + [1 x {layer.out_features}]" if layer.bias else ""
                weights = f"{layer.in_features} x {layer.out_features} = {w:,}"
                rows.append((str(i), repr(layer), f"[B x {width}]", math, weights, f"{b:,}"))
            else:
                rows.append((str(i), repr(layer), f"[B x {width}]", "", "", ""))
        header = ("#", "Layer", "Output", "Computes", "Weights", "Biases")
        table = [header] + rows
        widths = [max(len(r[c]) for r in table) for c in range(len(header))]
        lines = [
            f"Sequential on {self.backend!r}, {_precision.describe(self.dtype, self.precision)}",
            *("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in table),
            f"Total params: {total_w + total_b:,} ({total_w:,} weights + {total_b:,} biases)",
        ]
        return "\n".join(lines)

    # -- moving between backends -------------------------------------------
    def to(self, spec, *, device=None):
        """Move parameters and optimizer state to another backend or device, in memory."""
        dst = backends.get(spec, device=device)
        dst.ensure_dtype(self.dtype)
        _precision.get(self.precision).check(dst, self.dtype)  # before anything moves
        src = self.backend
        self.params = tree_map(lambda a: transfer(a, src, dst), self.params)
        self.opt_state = tree_map(lambda a: transfer(a, src, dst), self.opt_state)
        self.backend = dst
        self._compiled = {}
        return self

    # -- data --------------------------------------------------------------
    def _as_input(self, x, name="x"):
        """``x`` as a ``[B x D]`` array of the model's dtype on its device."""
        backend = self.backend
        foreign = _foreign_namespace(x)
        if foreign is not None and not isinstance(x, np.ndarray):
            if backend.owns(x):
                return self._check_device_input(x, name)
            raise DeviceMismatch(
                f"{name} is {_where(x)}, but the model lives on {backend!r}; pass host (NumPy) "
                f"data, convert {name} yourself, or move the model with model.to(...)"
            )
        try:
            host = np.asarray(x)
        except Exception as err:
            first = str(err).split(". ")[0]
            raise DataError(f"{name} could not be read as one array of numbers ({first}); every row "
                            f"must have the same number of values") from err
        if host.size == 0:
            raise DataError(f"{name} is empty: {fmt_shape(host.shape)}; there is nothing to compute on")
        self._check_matrix(host.shape, name)
        if not (np.issubdtype(host.dtype, np.number) or host.dtype == bool):
            raise DataError(f"{name} must be numeric, got dtype {host.dtype}")
        if np.issubdtype(host.dtype, np.complexfloating):
            raise DataError(f"{name} must be real numbers, got dtype {host.dtype}")
        # min and max are NaN or infinite exactly when some value is: two passes, no
        # temporary (isfinite(host) of a 60,000 x 784 array costs ten times as much)
        if host.dtype != bool and not (np.isfinite(host.min()) and np.isfinite(host.max())):
            row = int(np.flatnonzero(~np.isfinite(host).all(axis=1))[0])
            raise DataError(
                f"{name} has NaN or infinite values; the first is in row {row}: {host[row][:8]}"
            )
        return backend.asarray(host.astype(self.dtype, copy=False), self.dtype)

    def _check_device_input(self, x, name):
        """The checks of host data, on an array already on the model's device (one sync)."""
        xp, want = self.backend.xp, self.backend.dtype(self.dtype)
        self._check_matrix(x.shape, name)
        if not xp.isdtype(x.dtype, ("real floating", "integral", "bool")):
            raise DataError(f"{name} must be real numbers, got dtype {x.dtype}")
        if x.dtype != want:
            x = xp.astype(x, want)
        finite = xp.all(xp.isfinite(x), axis=1)
        if not bool(self.backend.to_numpy(xp.all(finite))):
            row = int(np.flatnonzero(~np.asarray(self.backend.to_numpy(finite)))[0])
            raise DataError(f"{name} has NaN or infinite values; the first is in row {row}")
        return x

    def _check_matrix(self, shape, name):
        d = self.input_width
        first = next(f"layer {i} {layer!r}" for i, layer in enumerate(self.layers) if isinstance(layer, Linear))
        if len(shape) != 2:
            hint = ""
            if len(shape) == 1:
                hint = (f"; for one sample of {shape[0]} features use x.reshape(1, -1)"
                        if shape[0] == d else "; reshape it to [B x D]")
            elif len(shape) > 2:
                hint = f"; flatten each sample with x.reshape({shape[0]}, -1)"
            raise ShapeError(f"{name} must be [B x {d}] for {first}, got {fmt_shape(shape)}{hint}")
        if shape[0] == 0:
            raise DataError(f"{name} is empty: [0 x {shape[1]}]; there is nothing to compute on")
        if shape[1] != d:
            raise ShapeError(f"{first} expects [B x {d}], got {name} {fmt_shape(shape)}")

    def _as_target(self, y, loss, n):
        backend = self.backend
        if _foreign_namespace(y) is not None and not isinstance(y, np.ndarray):
            if not backend.owns(y):
                raise DeviceMismatch(
                    f"y is {_where(y)}, but the model lives on {backend!r}; pass host (NumPy) "
                    f"labels, convert y yourself, or move the model with model.to(...)"
                )
            y = backend.to_numpy(y)  # validated on the host below, once
        host = _losses.check_targets(loss, y, self.output_width)
        if host.shape[0] != n:
            raise ShapeError(f"x has {n} rows but y has {host.shape[0]}: they must match")
        if np.issubdtype(host.dtype, np.integer) and host.ndim == 1:
            return backend.asarray(host.astype(backend.index_dtype), backend.index_dtype)
        if not np.isfinite(host).all():
            row = int(np.flatnonzero(~np.isfinite(host).reshape(len(host), -1).all(axis=1))[0])
            raise DataError(f"y has NaN or infinite values; the first is in row {row}")
        return backend.asarray(host.astype(self.dtype), self.dtype)

    # -- forward and backward ----------------------------------------------
    def _forward(self, params, x, train=False, masks=()):
        """Run every layer; return the output and the backward function."""
        xp = _precision.get(self.precision).namespace(self.backend)  # matmul under the policy
        backs = []
        masks = iter(masks)
        for layer, p in zip(self.layers, params):
            mask = next(masks) if train and layer.needs_mask else None
            x, back = layer.forward(xp, p, x, train=train, mask=mask)
            backs.append(back)

        def backward(dout):
            grads = [None] * len(backs)
            for i in range(len(backs) - 1, -1, -1):
                dout, grads[i] = backs[i](dout, need_dx=i > 0)
            return grads

        return x, backward

    def apply(self, params, x, *, train=False, masks=()):
        """The forward pass with the given parameters (shaped like ``self.params``):
        ``(outputs, backward)``, where ``backward(d_outputs)`` returns the gradients,
        shaped like ``params``. ``x`` must already be on the model's device."""
        return self._forward(params, x, train=train, masks=masks)

    def _masks(self, batch, steps=None, last=None):
        """Host-drawn dropout masks for one training batch, moved to the device;
        with ``steps``, for that many batches in a row, each mask stacked ``[steps x B x D]``
        (drawn in the same order as one batch at a time). With ``last``, the last
        of them is a partial batch of ``last`` rows: its masks are drawn for those
        rows (as a step of that size would) and padded with zero rows."""
        shapes, width = [], self.input_width
        for layer in self.layers:
            if layer.needs_mask:
                shapes.append((layer, width))
            width = layer.output_width(width)
        if not shapes:
            return []
        sizes = [batch] * (steps or 1)
        if last is not None:
            sizes[-1] = last

        def draw(layer, rows, width):
            mask = layer.make_mask(self.rng, (rows, width), self.dtype)
            return mask if rows == batch else np.concatenate([mask, np.zeros((batch - rows, width), mask.dtype)])

        draws = [[draw(layer, rows, width) for layer, width in shapes] for rows in sizes]
        hosts = draws[0] if steps is None else [np.stack(m) for m in zip(*draws)]
        return [self.backend.asarray(h, self.dtype) for h in hosts]

    def forward(self, x):
        """The model's raw outputs (logits) for ``x``, on the model's device."""
        return self._guard_memory(lambda: self._infer()(self.params, self._as_input(x)), "a forward pass over x")

    def _infer(self):
        """The compiled ``(params, x) -> outputs``."""
        fn = self._compiled.get("infer")
        if fn is None:
            fn = self._compiled["infer"] = self.backend.jit(lambda params, x: self._forward(params, x)[0])
        return fn

    __call__ = forward

    def _guard_memory(self, run, what, hint="pass fewer rows at a time"):
        """``run()``, with an out-of-memory error of any library turned into :class:`OutOfMemory`."""
        try:
            return run()
        except Exception as err:  # noqa: BLE001 - libraries' OOM errors have no common base class
            if not is_out_of_memory(err) or isinstance(err, OutOfMemory):
                raise
            first = (str(err).strip().splitlines() or [""])[0][:200].rstrip(".")
            raise OutOfMemory(f"out of memory on {self.backend!r} during {what}: "
                              f"{type(err).__name__}: {first}. Hint: {hint}") from err

    def predict_proba(self, x):
        """Class probabilities: softmax of the outputs (sigmoid for binary cross-entropy)."""
        out = self.forward(x)
        xp = self.backend.xp
        if self.loss.output == "sigmoid":
            from .layers import sigmoid

            return sigmoid(xp, out)
        from .layers import softmax

        return softmax(xp, out)

    def predict(self, x):
        """Predicted class ids (argmax of the outputs); raw outputs for regression."""
        out = self.forward(x)
        xp = self.backend.xp
        if self.loss.output == "sigmoid":
            return xp.astype(out > 0, xp.int32)
        if self.loss.output == "softmax":
            return xp.argmax(out, axis=-1)
        return out

    def loss_and_grads(self, x, y, loss=None, train=False):
        """The mean loss on ``(x, y)`` and its gradient for every parameter.

        ``grads`` is shaped like ``params``: a list with one dict per layer.
        """
        loss = _losses.get(loss) if loss is not None else self.loss
        X = self._as_input(x)
        Y = self._as_target(y, loss, X.shape[0])
        masks = self._masks(X.shape[0]) if train else ()
        out, backward = self._forward(self.params, X, train=train, masks=masks)
        value, dout = loss(self.backend.xp, out, Y)
        return value, backward(dout)

    def evaluate(self, x, y, loss=None):
        """Mean loss (and accuracy for classification) on ``(x, y)``, as floats."""
        loss = _losses.get(loss) if loss is not None else self.loss
        X = self._as_input(x)
        Y = self._as_target(y, loss, X.shape[0])
        return self._guard_memory(lambda: self._scores(X, Y, loss), "evaluate() over x")

    def _scores(self, X, Y, loss):
        """:meth:`evaluate` on arrays already checked and on the device."""
        out = self._infer()(self.params, X)
        value, _ = loss(self.backend.xp, out, Y)
        result = {"loss": float(self.backend.to_numpy(value))}
        if loss.classification:
            correct = loss.correct(self.backend.xp, out, Y)
            result["accuracy"] = float(self.backend.to_numpy(correct)) / X.shape[0]
        return result

    # -- training ----------------------------------------------------------
    def train_step(self, loss=None, optimizer=None, *, inplace=False, run=None):
        """The pure step ``(params, opt_state, x, y, masks, weights=None) -> (params,
        opt_state, loss, correct)``, compiled once per backend through ``Backend.jit``
        (``weights``: ``[B]`` row weights for the loss, see ``mlp.losses``).

        ``inplace=True`` (used by ``fit`` where ``Backend.inplace`` is True) lets
        the step overwrite the ``params`` and ``opt_state`` arrays it is given,
        which the caller must own and not use again.

        With ``run`` (a :class:`mlp.flat.Run`, what ``fit`` uses) the step works on
        one flat parameter vector instead: ``(P, state, x, y, masks, weights=None,
        count=None) -> (P, state, loss, correct)`` (see ``mlp.flat``)."""
        loss = _losses.get(loss) if loss is not None else self.loss
        optimizer = optimizer if optimizer is not None else self.optimizer
        inplace = bool(inplace and self.backend.inplace)
        key = ("step", id(loss), id(optimizer), inplace, run is not None)
        fn = self._compiled.get(key)
        if fn is None:
            body = (self._step_fn(loss, optimizer, inplace) if run is None
                    else run.step(self._train_forward, loss, inplace=inplace))
            fn = self._compiled[key] = self.backend.jit(body)
        return fn

    def _train_forward(self, params, x, masks):
        self.traces += 1  # runs once per trace on JAX, every call elsewhere
        return self._forward(params, x, train=True, masks=masks)

    def _flat_run(self, optimizer=None):
        """A :class:`mlp.flat.Run` for ``fit``, or None where the optimizer's state
        cannot be flattened (a user's optimizer without ``slots``)."""
        optimizer = optimizer if optimizer is not None else self.optimizer
        if not _flat.supported(optimizer, self.opt_state):
            return None
        return _flat.Run(self.params, optimizer, self.backend.xp, host_counts=not self.backend.compiles,
                         kernels=self.backend.kernels)

    def _step_fn(self, loss, optimizer, inplace=False):
        xp = self.backend.xp

        def step(params, opt_state, x, y, masks, weights=None):
            out, backward = self._train_forward(params, x, masks)
            value, dout, correct = loss.terms(xp, out, y, weights)  # rows of weight 0 are padding
            params, opt_state = optimizer.update(params, backward(dout), opt_state, inplace=inplace)
            return params, opt_state, value, correct

        return step

    def train_steps(self, loss=None, optimizer=None, *, run=None):
        """Many steps in one call: ``(params, opt_state, X, Y, rows, masks, weights=None) ->
        (params, opt_state, losses, corrects)``, where ``rows`` is ``[S x B]``
        row numbers of ``X`` and ``Y`` (one batch per step), each mask is
        ``[S x B x D]`` and ``weights`` (``[S x B]``, or None for all 1) weigh
        the rows in the loss (0: a padding row). Built from :meth:`train_step`'s step with
        ``Backend.scan`` and compiled as a whole: on JAX, one call and no Python
        per step. The data stays on the device; only row numbers travel. With ``run``
        (a :class:`mlp.flat.Run` whose state counts steps), on flat parameters."""
        loss = _losses.get(loss) if loss is not None else self.loss
        optimizer = optimizer if optimizer is not None else self.optimizer
        key = ("steps", id(loss), id(optimizer), run is not None)
        fn = self._compiled.get(key)
        if fn is not None:
            return fn
        xp, backend = self.backend.xp, self.backend
        step = self._step_fn(loss, optimizer) if run is None else run.step(self._train_forward, loss)

        def steps(params, opt_state, X, Y, rows, masks, weights=None):
            def body(carry, batch):
                rows, masks, weights = batch
                x, y = xp.take(X, rows, axis=0), xp.take(Y, rows, axis=0)
                params, opt_state, value, correct = step(*carry, x, y, masks, weights)
                return (params, opt_state), (value, correct)

            (params, opt_state), (values, corrects) = backend.scan(
                body, (params, opt_state), (rows, masks, weights))
            return params, opt_state, values, corrects

        fn = self._compiled[key] = backend.jit(steps)
        return fn

    def set_optimizer(self, optimizer, **kwargs):
        """Use ``optimizer`` (an Optimizer or a name such as 'adam') from now on,
        with fresh state."""
        self.optimizer = _optimizers.get(optimizer, **kwargs)
        # compiled where the backend compiles: one program, not one per array shape
        self.opt_state = self.backend.jit(self.optimizer.init)(self.params)
        return self.optimizer

    def fit(self, x, y, *, epochs=1, batch_size=32, optimizer=None, loss=None, shuffle=True,
            validation_data=None, callbacks=(), on_batch=None, devices=None):
        """Train for ``epochs`` passes over ``(x, y)`` in mini-batches.

        Host data is moved to the device once; each epoch shuffles with a host
        permutation (from the model's seeded generator) and slices batches on
        the device. Returns the :class:`History` (also kept as ``self.history``).
        ``optimizer`` defaults to the one in use, else ``Adam()``; a callback
        ``cb(model, epoch, logs)`` runs after each epoch and may raise
        :class:`StopTraining`. ``on_batch(step, n_steps)``, if given, runs after
        each step is dispatched (it reads nothing from the device: for progress bars).

        ``devices`` (an int or ``"all"``; JAX only) trains data-parallel: the
        parameters are replicated on that many devices and each batch of
        ``batch_size`` rows (which must divide by the device count) is split
        over them; see docs/multidevice.md. Between epochs the parameters are
        back on the model's own device.
        """
        if loss is not None:
            self.loss = _losses.get(loss)
        if optimizer is not None and optimizer is not self.optimizer:
            self.set_optimizer(optimizer)
        elif self.optimizer is None:
            self.set_optimizer("adam")
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if not isinstance(epochs, (int, np.integer)) or epochs < 0:
            raise ValueError(f"epochs must be a non-negative int, got {epochs!r}")
        move = "keep the data on the host and train on a part of it, or use another device"
        X = self._guard_memory(lambda: self._as_input(x), "moving x to the device", move)
        n = X.shape[0]
        Y = self._as_target(y, self.loss, n)
        validation = None
        if validation_data is not None:
            Xv = self._as_input(validation_data[0], "validation x")
            validation = Xv, self._as_target(validation_data[1], self.loss, Xv.shape[0])
        bs = min(int(batch_size), n)
        dp = self.backend.data_parallel(devices, batch_size=int(batch_size))  # no-op for one device
        self._guard_memory(
            lambda: self._epochs(X, Y, epochs, bs, shuffle, validation, callbacks, on_batch, dp),
            f"training with batch size {bs} ([{bs} x {self.input_width}] inputs, {self.num_params:,} parameters)",
            f"try a batch size smaller than {bs} (--batch-size), a smaller model, or another device",
        )
        return self.history

    def _epochs(self, X, Y, epochs, bs, shuffle, validation, callbacks, on_batch, dp):
        backend, n = self.backend, X.shape[0]
        single = dp.n == 1
        for _ in range(epochs):
            start = time.perf_counter()
            # Steps are pure, so references are a snapshot: an epoch that fails (diverges, runs
            # out of memory, is interrupted) leaves the model exactly as the last finished one did.
            good = self.params, self.opt_state, self.rng.bit_generator.state, self.epoch
            lengths = {k: len(v) for k, v in self.history.items()}
            try:
                order = self.rng.permutation(n) if shuffle else np.arange(n)
                if backend.fuse_steps and single:
                    losses, corrects = self._epoch_fused(X, Y, order, bs, on_batch)
                else:
                    losses, corrects = self._epoch_by_steps(X, Y, order, bs, on_batch, dp)
                logs = self._epoch_logs(losses, corrects, n, bs, self.epoch + 1)
                logs["time"] = time.perf_counter() - start
                if validation:
                    val = self._scores(validation[0], validation[1], self.loss)
                    logs.update({f"val_{k}": v for k, v in val.items()})
                self.epoch += 1
                self.history.append(**{k: v for k, v in logs.items() if k != "step_loss"})
                self.history.setdefault("step_loss", []).extend(logs["step_loss"])
            except BaseException:
                self.params, self.opt_state, self.rng.bit_generator.state, self.epoch = good
                for k in list(self.history):
                    if k in lengths:
                        del self.history[k][lengths[k]:]
                    else:
                        del self.history[k]
                raise
            try:
                for cb in callbacks:
                    cb(self, self.epoch, logs)
            except StopTraining:
                break

    def _epoch_by_steps(self, X, Y, order, bs, on_batch, dp):
        """One epoch, one call of the train step per batch; the per-step losses
        and correct counts stay on the device, stacked, until the epoch ends.

        Where ``Backend.inplace`` is True (and on one device) the step updates
        the parameters and optimizer state in place: it works on copies made
        here, so the arrays that ``self.params`` and ``self.opt_state`` held
        before (the epoch's rollback snapshot, or a caller's) never change."""
        backend, xp, n = self.backend, self.backend.xp, X.shape[0]
        inplace = backend.inplace and dp.n == 1
        run = self._flat_run()
        step = dp.wrap(self.train_step(inplace=inplace, run=run))  # shards each batch over the devices
        params, opt_state, t0 = self.params, self.opt_state, 0
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
            params, opt_state, value, correct = step(params, opt_state, xb, yb, self._masks(xb.shape[0]), *extra)
            losses.append(value)
            corrects.append(correct)
            if on_batch is not None:
                on_batch(k, n_steps)
        params, opt_state = dp.gather((params, opt_state))
        self.params, self.opt_state = (params, opt_state) if run is None else run.end(params, opt_state, n_steps)
        return [xp.stack(losses)], (None if corrects[0] is None else [xp.stack(corrects)])

    def _epoch_fused(self, X, Y, order, bs, on_batch):
        """One epoch in as few calls of :meth:`train_steps` as the dropout masks
        allow: without dropout, one call, so one compiled program serves every
        epoch. A last, partial batch of ``r`` rows is padded to ``bs`` rows of
        weight 0 (see ``mlp.losses``): the same step as one on its ``r`` rows
        (for a loss without ``weights``, the partial batch gets a call of its own).
        Same steps, same order and same random masks as :meth:`_epoch_by_steps`;
        ``on_batch`` runs for each step of a call once the call is dispatched."""
        n, n_steps = X.shape[0], -(-X.shape[0] // bs)
        partial = n % bs
        padded = bool(partial) and _takes_weights(self.loss)
        scanned = n_steps if padded else n // bs  # the steps of full (or padded) batches
        mask_width = sum(w for w, layer in zip(self._widths(), self.layers) if layer.needs_mask)
        chunk = max(1, min(scanned, self.mask_budget // (bs * mask_width))) if mask_width else scanned
        calls = [(first, min(chunk, scanned - first), bs) for first in range(0, scanned, chunk)]
        if partial and not padded:
            calls.append((scanned, 1, partial))
        order, weights = order.astype("int32"), None
        if padded:  # padding rows: row 0 again, with weight 0
            order = np.concatenate([order, np.zeros(bs - partial, "int32")])
            weights = (np.arange(n_steps * bs) < n).astype("int32").reshape(n_steps, bs)
        run = self._flat_run()
        steps = self.train_steps(run=run)
        params, opt_state = self.params, self.opt_state
        if run is not None:
            params, opt_state, _ = run.begin(params, opt_state)
        losses, corrects = [], []
        for first, count, size in calls:
            rows = self.backend.asarray(order[first * bs:first * bs + count * size].reshape(count, size), "int32")
            w = None if weights is None else self.backend.asarray(weights[first:first + count], "int32")
            last = partial if padded and first + count == n_steps else None
            params, opt_state, values, correct = steps(params, opt_state, X, Y, rows,
                                                       self._masks(size, count, last=last), w)
            losses.append(values)
            corrects.append(correct)
            for k in range(first, first + count) if on_batch is not None else ():
                on_batch(k, n_steps)
        self.params, self.opt_state = (params, opt_state) if run is None else run.end(params, opt_state, 0)
        return losses, (None if corrects[0] is None else corrects)

    def _widths(self):
        """The input width of every layer."""
        widths, width = [], self.input_width
        for layer in self.layers:
            widths.append(width)
            width = layer.output_width(width)
        return widths

    def _epoch_logs(self, losses, corrects, n, bs, epoch):
        """Epoch metrics from the per-step losses and correct counts: lists of
        device arrays, read back to the host here, once per epoch."""
        backend = self.backend
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


def _takes_weights(loss):
    """Whether ``loss`` accepts row weights (``mlp.losses``' own do; a user's may not)."""
    try:
        return "weights" in inspect.signature(loss).parameters
    except (TypeError, ValueError):
        return False


def MLP(sizes, activation="relu", *, dropout=0.0, init=None, bias=True, **kwargs):
    """A multilayer perceptron from layer widths: ``MLP([784, 16, 10])`` is
    ``Linear(784, 16), ReLU(), Linear(16, 10)``.

    ``init`` defaults to 'he' for ReLU-like activations and 'glorot' otherwise;
    ``dropout`` adds a Dropout after each hidden activation. Other keyword
    arguments (``backend``, ``seed``, ``dtype``, ``loss``, ``precision``) go to
    :class:`Sequential`; ``precision="bf16"`` or ``"tf32"`` runs the matrix products
    in bfloat16 or TF32 (docs/precision.md).
    """
    sizes = list(sizes)
    if len(sizes) < 2:
        raise ValueError(f"MLP needs at least an input and an output width, got {sizes!r}")
    name = activation if isinstance(activation, str) else type(activation).__name__.lower()
    if init is None:
        init = "he" if name in ("relu", "leaky_relu", "leakyrelu", "gelu") else "glorot"
    layers = []
    for i, (d_in, d_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(Linear(d_in, d_out, bias=bias, init=init))
        if i < len(sizes) - 2:
            layers.append(_activation(activation))  # layers without params can be shared
            if dropout:
                layers.append(Dropout(dropout))
    return Sequential(*layers, **kwargs)
