"""The model: a stack of layers and its parameters on one backend.

:class:`Sequential` holds the structure (layers, widths, config, summary), the
parameters and optimizer state on its backend, moving between backends, and
the forward pass with its explicit backward, prediction and evaluation.
Training lives in :mod:`mlp.training`, input checks in :mod:`mlp.validation`,
callbacks in :mod:`mlp.callbacks`, the ways out (ONNX, PyTorch) in :mod:`mlp.interop`."""
from __future__ import annotations

import numpy as np

from . import backends
from .backends import transfer  # noqa: F401 - re-exported: mlp.transfer

from . import losses as _losses
from . import optimizers as _optimizers
from . import precision as _precision
from . import training, validation
from .callbacks import History, StopTraining  # noqa: F401 - re-exported: mlp.model.History
from .errors import guard_memory, ShapeError
from .interop import Portable
from .layers import chain_widths, from_config, Layer, sigmoid, softmax, stack
from .tree import leaves, tree_map


#: The NumPy bit generators a saved RNG state may name.
BIT_GENERATORS = ("PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64")


class Sequential(Portable):
    """Layers applied in order, with parameters on one backend.

    ``Sequential(Linear(784, 16), ReLU(), Linear(16, 10), backend="jax", seed=0)``

    Initial weights come from a host ``numpy.random.Generator`` seeded with ``seed``
    and are moved to the backend once: the same seed, the same start everywhere.
    ``precision="bf16"``/``"tf32"``: the matrix products' policy (mlp.precision).
    """

    #: The most dropout-mask elements fit draws ahead for one train_steps call (64 MiB of float32)
    mask_budget = 1 << 24

    def __init__(self, *layers, backend=None, seed=0, dtype="float32", loss="cross_entropy", precision="float32"):
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = tuple(layers[0])
        if not layers:
            raise ValueError("Sequential needs at least one layer")
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"layer {i} is {type(layer).__name__}, not an mlp layer")
        self.layers = list(layers)
        self._widths = chain_widths(self.layers)  # every layer's input width, then the output's
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
        #: compiled functions (:class:`mlp.training.CompileCache`); ``clear()`` drops them
        self.compiled = training.CompileCache()
        self.traces = 0  # how many times the train step was traced (compiled) on JAX

    # -- structure ----------------------------------------------------------
    @property
    def input_width(self):
        return self._widths[0]

    @property
    def output_width(self):
        return self._widths[-1]

    def layer_widths(self):
        """The input width of every layer, in order."""
        return self._widths[:-1]

    def describe_input_layer(self):
        """'layer 0 Linear(4 -> 3)': the first layer that fixes the input width, for messages."""
        return next(f"layer {i} {layer!r}" for i, layer in enumerate(self.layers) if layer.in_width is not None)

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
        return cls(*layers, backend=backend, seed=config.get("seed", 0), dtype=config.get("dtype", "float32"),
                   loss=config.get("loss", "cross_entropy"), precision=config.get("precision", "float32"))

    def state(self):
        """Everything that defines the model now, as host values: ``config``,
        ``params`` and ``opt_state`` (NumPy trees), ``optimizer`` (its config or
        None), ``epoch``, ``rng_state`` and ``history``. :meth:`load_state` of a
        model built by :meth:`from_config` from ``config`` restores it exactly."""
        host = lambda tree: tree_map(lambda a: np.asarray(self.backend.to_numpy(a)), tree)  # noqa: E731
        return {"config": self.config(), "params": host(self.params), "opt_state": host(self.opt_state),
                "optimizer": self.optimizer.config() if self.optimizer is not None else None,
                "epoch": int(self.epoch), "rng_state": self.rng.bit_generator.state,
                "history": {k: list(v) for k, v in self.history.items() if k != "step_loss"}}

    def load_state(self, state):
        """Restore :meth:`state`'s values (host trees shaped like this model's) onto the
        backend; keys that ``state`` lacks (or ``optimizer: None``) leave that part as it is."""
        def put(template, host):
            if not hasattr(template, "shape"):  # a plain Python number in the optimizer state
                return type(template)(np.asarray(host).item())
            if tuple(np.shape(host)) != tuple(template.shape):
                raise ShapeError(f"a saved array is {list(np.shape(host))}, the model expects {list(template.shape)}")
            return self.backend.asarray(host, self.backend.dtype_name(template.dtype))

        if "params" in state:
            self.params = tree_map(put, self.params, state["params"])
        if state.get("optimizer") is not None:
            config = dict(state["optimizer"])
            self.set_optimizer(config.pop("name"), **config)
            self.opt_state = tree_map(put, self.opt_state, state["opt_state"])
        if "rng_state" in state:
            rng = state["rng_state"]
            if rng.get("bit_generator") not in BIT_GENERATORS:  # a name from a file is never just called
                raise ValueError(f"unknown bit generator {rng.get('bit_generator')!r}")
            self.rng = np.random.Generator(getattr(np.random, rng["bit_generator"])())
            self.rng.bit_generator.state = rng
        self.epoch = int(state.get("epoch", self.epoch))
        self.history = History(state["history"]) if "history" in state else self.history
        return self

    def __repr__(self):
        inner = ", ".join(repr(layer) for layer in self.layers)
        return f"Sequential({inner}; {self.backend!r}, {_precision.describe(self.dtype, self.precision)})"

    def summary(self):
        """The shape flow and parameter arithmetic, one line per layer."""
        rows = [("", "Input", f"[B x {self.input_width}]", "", "", "")]
        total_w = total_b = 0
        for i, (layer, width) in enumerate(zip(self.layers, self.layer_widths())):
            d = layer.describe(width)
            total_w, total_b = total_w + d["n_weights"], total_b + d["n_biases"]
            biases = f"{d['n_biases']:,}" if d["n_biases"] or d["computes"] else ""
            rows.append((str(i), repr(layer), f"[B x {self._widths[i + 1]}]", d["computes"], d["weights"], biases))
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
        self.compiled.clear()
        return self

    # -- forward and backward ----------------------------------------------
    def apply(self, params, x, *, train=False, masks=()):
        """Run every layer on a checked device array ``x`` with ``params``; return
        the output and ``backward(dout) -> grads`` (shaped like ``params``).
        ``masks``: one per layer that draws one in training (see ``mlp.training.draw_masks``)."""
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

    def forward(self, x):
        """The model's raw outputs (logits) for ``x``, on the model's device."""
        return guard_memory(self.backend, lambda: self._infer()(self.params, validation.as_input(self, x)),
                            "a forward pass over x")

    def _infer(self):
        """The compiled ``(params, x) -> outputs``."""
        return self.compiled.get_or_build("infer", lambda: self.backend.jit(lambda p, x: self.apply(p, x)[0]))

    __call__ = forward

    def predict_proba(self, x):
        """Class probabilities: softmax of the outputs (sigmoid for binary cross-entropy)."""
        out = self.forward(x)
        return (sigmoid if self.loss.output == "sigmoid" else softmax)(self.backend.xp, out)

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
        X = validation.as_input(self, x)
        Y = validation.as_target(self, y, loss, X.shape[0])
        masks = training.draw_masks(self, X.shape[0]) if train else ()
        out, backward = self.apply(self.params, X, train=train, masks=masks)
        value, dout = loss(self.backend.xp, out, Y)
        return value, backward(dout)

    def evaluate(self, x, y, loss=None):
        """Mean loss (and accuracy for classification) on ``(x, y)``, as floats."""
        loss = _losses.get(loss) if loss is not None else self.loss
        X = validation.as_input(self, x)
        Y = validation.as_target(self, y, loss, X.shape[0])
        return guard_memory(self.backend, lambda: self.scores(X, Y, loss), "evaluate() over x")

    def scores(self, X, Y, loss=None):
        """:meth:`evaluate` on arrays already checked and on the device
        (from :func:`mlp.validation.as_input` / :func:`~mlp.validation.as_target`)."""
        loss = _losses.get(loss) if loss is not None else self.loss
        out = self._infer()(self.params, X)
        value, _ = loss(self.backend.xp, out, Y)
        result = {"loss": float(self.backend.to_numpy(value))}
        if loss.classification:
            correct = loss.correct(self.backend.xp, out, Y)
            result["accuracy"] = float(self.backend.to_numpy(correct)) / X.shape[0]
        return result

    # -- training (mlp.training) --------------------------------------------
    def train_step(self, loss=None, optimizer=None, *, inplace=False, run=None):
        """The pure step ``(params, opt_state, x, y, masks, weights=None) -> (params,
        opt_state, loss, correct)``, compiled once through ``Backend.jit``; ``inplace``
        may overwrite the arrays it is given, ``run`` (a :class:`mlp.flat.Run`, what
        ``fit`` uses) works on one flat parameter vector. See :func:`mlp.training.train_step`."""
        return training.train_step(self, loss, optimizer, inplace=inplace, run=run)

    def train_steps(self, loss=None, optimizer=None, *, run=None):
        """Many steps in one compiled call: ``(params, opt_state, X, Y, rows, masks,
        weights=None) -> (params, opt_state, losses, corrects)``, ``rows`` being ``[S x B]``
        row numbers of the device arrays ``X`` and ``Y``. See :func:`mlp.training.train_steps`."""
        return training.train_steps(self, loss, optimizer, run=run)

    def set_optimizer(self, optimizer, **kwargs):
        """Use ``optimizer`` (an Optimizer or a name such as 'adam') from now on,
        with fresh state."""
        self.optimizer = _optimizers.get(optimizer, **kwargs)
        # compiled where the backend compiles: one program, not one per array shape
        self.opt_state = self.backend.jit(self.optimizer.init)(self.params)
        return self.optimizer

    def fit(self, x, y, *, epochs=1, batch_size=32, optimizer=None, loss=None, shuffle=True,
            validation_data=None, callbacks=(), on_batch=None, devices=None):
        """Train for ``epochs`` passes over ``(x, y)`` in mini-batches; returns the
        :class:`History` (also ``self.history``). ``optimizer`` defaults to the one in
        use, else ``Adam()``; ``callbacks``: see :mod:`mlp.callbacks`; ``on_batch(step,
        n_steps)`` runs after each step is dispatched; ``devices`` (JAX) trains
        data-parallel (docs/multidevice.md). Details: :func:`mlp.training.fit`."""
        return training.fit(self, x, y, epochs=epochs, batch_size=batch_size, optimizer=optimizer, loss=loss,
                            shuffle=shuffle, validation_data=validation_data, callbacks=callbacks,
                            on_batch=on_batch, devices=devices)


def MLP(sizes, activation="relu", *, dropout=0.0, init=None, bias=True, **kwargs):
    """A multilayer perceptron from layer widths: ``MLP([784, 16, 10])`` is
    ``Linear(784, 16), ReLU(), Linear(16, 10)`` (see :func:`mlp.layers.stack`).
    Other keyword arguments (``backend``, ``seed``, ``dtype``, ``loss``) go to :class:`Sequential`."""
    return Sequential(*stack(sizes, activation, dropout=dropout, init=init, bias=bias), **kwargs)
