"""Layers: each a forward and its explicit backward, written against the array API.

A layer's ``forward(xp, params, x, train, mask)`` returns ``(y, backward)``;
``backward(dy)`` returns ``(dx, grads)`` with ``grads`` shaped like ``params``.
The closure keeps what the backward pass needs (Thinc's ``(Y, backprop)`` style).

Shapes follow the textbook convention: a batch of B rows of D features,
``[B x D] @ [D x Z] + [1 x Z] -> [B x Z]``.
"""
from __future__ import annotations

import math

import numpy as np

from .errors import fmt_shape, ShapeError
from .precision import PolicyNamespace


class Layer:
    """Base class: a layer without parameters that keeps its input's width.

    The shape protocol: ``in_width`` (the input width the layer requires, or
    None for a layer that takes any), ``output_width(in_width)``,
    ``param_shapes(in_width)`` (name -> shape, empty without parameters) and
    ``describe(in_width)`` (the pieces of its :meth:`Sequential.summary` row).
    """

    has_params = False
    needs_mask = False  # True for layers that draw random masks in training (Dropout)
    in_width = None  # the input width this layer requires; None: any

    def init(self, rng):
        """Initial parameters as float64 NumPy arrays, drawn from the host ``rng``."""
        return {}

    def output_width(self, width):
        """The output width for an input of ``width`` features (checked against ``in_width``)."""
        if self.in_width is not None and width != self.in_width:
            raise ShapeError(f"{self!r} expects [B x {self.in_width}], got [B x {width}]")
        return width

    def param_shapes(self, width):
        """``{name: shape}`` of the parameters for an input of ``width`` features.

        A layer with parameters should override this (it is called often); this
        fallback draws :meth:`init` once from a throwaway generator and reads the shapes."""
        if not self.has_params:
            return {}
        return {k: tuple(np.shape(v)) for k, v in self.init(np.random.default_rng(0)).items()}

    def describe(self, width):
        """The summary row's pieces for an input of ``width`` features: ``computes``
        and ``weights`` (text), ``n_weights`` and ``n_biases`` (counts). Here every
        parameter counts as a weight."""
        n = sum(math.prod(s) for s in self.param_shapes(width).values())
        return {"computes": "", "weights": f"{n:,}" if n else "", "n_weights": n, "n_biases": 0}

    def forward(self, xp, params, x, train=False, mask=None):
        raise NotImplementedError

    def config(self):
        """The layer's constructor arguments as JSON-ready values (for checkpoints)."""
        return {"type": type(self).__name__}

    def __repr__(self):
        return f"{type(self).__name__}()"


def matmul(xp, a, b):
    """``a @ b``; under a precision policy (``xp`` is the model's
    :class:`~mlp.precision.PolicyNamespace`) the policy's product. The float32
    default keeps the operator: array-api-compat's ``matmul`` wrappers cost
    about 4 us a call on PyTorch, where ``@`` costs none."""
    return xp.matmul(a, b) if isinstance(xp, PolicyNamespace) else a @ b


class Linear(Layer):
    """``y = x @ W + b``: ``[B x in] @ [in x out] + [1 x out] -> [B x out]``.

    ``init="glorot"`` draws W uniformly in +-sqrt(6 / (in + out)) (good for
    tanh/sigmoid); ``init="he"`` draws it from N(0, 2 / in) (good for ReLU).
    Biases start at zero.
    """

    has_params = True

    def __init__(self, in_features, out_features, bias=True, init="glorot"):
        for name, value in (("in_features", in_features), ("out_features", out_features)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f"Linear {name} must be a positive int, got {value!r}")
        if init not in ("glorot", "he"):
            raise ValueError(f"Linear init must be 'glorot' or 'he', got {init!r}")
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.bias = bool(bias)
        self.init_scheme = init

    def __repr__(self):
        return f"Linear({self.in_features} -> {self.out_features})"

    def config(self):
        return {"type": "Linear", "in_features": self.in_features, "out_features": self.out_features,
                "bias": self.bias, "init": self.init_scheme}

    def init(self, rng):
        fan_in, fan_out = self.in_features, self.out_features
        if self.init_scheme == "glorot":
            limit = math.sqrt(6.0 / (fan_in + fan_out))
            w = rng.uniform(-limit, limit, size=(fan_in, fan_out))
        else:
            w = rng.standard_normal((fan_in, fan_out)) * math.sqrt(2.0 / fan_in)
        params = {"W": w}
        if self.bias:
            params["b"] = np.zeros(fan_out)
        return params

    @property
    def in_width(self):
        return self.in_features

    def output_width(self, width):
        super().output_width(width)
        return self.out_features

    def param_shapes(self, width):
        shapes = {"W": (self.in_features, self.out_features)}
        if self.bias:
            shapes["b"] = (self.out_features,)
        return shapes

    def describe(self, width):
        d_in, d_out = self.in_features, self.out_features
        w, b = d_in * d_out, d_out if self.bias else 0
        computes = f"[B x {d_in}] @ [{d_in} x {d_out}]" + (f" + [1 x {d_out}]" if self.bias else "")
        return {"computes": computes, "weights": f"{d_in} x {d_out} = {w:,}", "n_weights": w, "n_biases": b}

    def forward(self, xp, params, x, train=False, mask=None):
        if x.shape[-1] != self.in_features:
            raise ShapeError(f"{self!r} expects [B x {self.in_features}], got {fmt_shape(x.shape)}")
        W = params["W"]
        y = matmul(xp, x, W)
        if self.bias:
            y += params["b"]  # y is a fresh array: adding in place is safe everywhere

        def backward(dy, need_dx=True):
            grads = {"W": matmul(xp, x.T, dy)}
            if self.bias:
                grads["b"] = xp.sum(dy, axis=0)
            return (matmul(xp, dy, W.T) if need_dx else None), grads

        return y, backward


class ReLU(Layer):
    """``max(x, 0)``; its gradient passes where x > 0.

    The backward multiplies by ``sign(y)``, which is 1 where y > 0 and 0 where
    y = 0: one array operation fewer than a comparison and a cast (each operation
    is a kernel launch on a GPU), and as fast as either on NumPy (``where`` is
    several times slower there).

    The forward is ``clip(x, min=0)``, not ``maximum(x, 0)``: array-api-compat's
    PyTorch ``maximum`` turns the Python 0 into a new tensor copied from the host on
    every call, which a captured CUDA graph cannot hold (``Backend.capture``);
    ``clip`` with a Python bound is ``torch.clamp``, one kernel."""

    def forward(self, xp, params, x, train=False, mask=None):
        y = xp.clip(x, min=0.0)
        return y, lambda dy, need_dx=True: (dy * xp.sign(y), {})


class LeakyReLU(Layer):
    """``x`` where x > 0, ``slope * x`` elsewhere."""

    def __init__(self, slope=0.01):
        self.slope = float(slope)

    def __repr__(self):
        return f"LeakyReLU({self.slope})"

    def config(self):
        return {"type": "LeakyReLU", "slope": self.slope}

    def forward(self, xp, params, x, train=False, mask=None):
        positive = x > 0
        y = xp.where(positive, x, self.slope * x)
        return y, lambda dy, need_dx=True: (xp.where(positive, dy, self.slope * dy), {})


def sigmoid(xp, x):
    """1 / (1 + exp(-x)) without overflow for large |x|."""
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


class Sigmoid(Layer):
    """``1 / (1 + exp(-x))``; dy/dx = y (1 - y)."""

    def forward(self, xp, params, x, train=False, mask=None):
        y = sigmoid(xp, x)
        return y, lambda dy, need_dx=True: (dy * y * (1.0 - y), {})


class Tanh(Layer):
    """``tanh(x)``; dy/dx = 1 - y**2."""

    def forward(self, xp, params, x, train=False, mask=None):
        y = xp.tanh(x)
        return y, lambda dy, need_dx=True: (dy * (1.0 - y * y), {})


_GELU_C = math.sqrt(2.0 / math.pi)


class GELU(Layer):
    """GELU in its tanh form (the array API has no erf), as PyTorch's
    ``gelu(approximate="tanh")``: ``0.5 x (1 + tanh(c (x + 0.044715 x**3)))``."""

    def forward(self, xp, params, x, train=False, mask=None):
        u = _GELU_C * (x + 0.044715 * x * x * x)
        t = xp.tanh(u)
        y = 0.5 * x * (1.0 + t)

        def backward(dy, need_dx=True):
            du = _GELU_C * (1.0 + 3 * 0.044715 * x * x)
            return dy * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du), {}

        return y, backward


def softmax(xp, x):
    """Row-wise softmax; subtracting the row max keeps exp() from overflowing."""
    z = x - xp.max(x, axis=-1, keepdims=True)
    e = xp.exp(z)
    return e / xp.sum(e, axis=-1, keepdims=True)


class Softmax(Layer):
    """Row-wise softmax as a layer (for losses on logits, use cross_entropy instead).

    Backward: dx = y * (dy - sum(dy * y)) along each row.
    """

    def forward(self, xp, params, x, train=False, mask=None):
        y = softmax(xp, x)

        def backward(dy, need_dx=True):
            return y * (dy - xp.sum(dy * y, axis=-1, keepdims=True)), {}

        return y, backward


class Identity(Layer):
    def forward(self, xp, params, x, train=False, mask=None):
        return x, lambda dy, need_dx=True: (dy, {})


class Dropout(Layer):
    """Zeroes each input with probability ``p`` in training and scales the rest
    by 1 / (1 - p); does nothing at prediction time.

    The mask is drawn on the host from the model's seeded generator and moved
    with the batch, so every backend drops the same units for the same seed.
    """

    def __init__(self, p=0.5):
        if not 0.0 <= p < 1.0:
            raise ValueError(f"Dropout p must be in [0, 1), got {p!r}")
        self.p = float(p)

    @property
    def needs_mask(self):
        return self.p > 0.0

    def __repr__(self):
        return f"Dropout({self.p})"

    def config(self):
        return {"type": "Dropout", "p": self.p}

    def make_mask(self, rng, shape, dtype):
        """The host mask: 0 for dropped units, 1 / (1 - p) for kept ones."""
        keep = rng.random(shape) >= self.p
        return (keep / (1.0 - self.p)).astype(dtype)

    def forward(self, xp, params, x, train=False, mask=None):
        if not train or not self.needs_mask:
            return x, lambda dy, need_dx=True: (dy, {})
        if mask is None:
            raise ValueError("Dropout in training needs a mask (the model draws one per batch)")
        return x * mask, lambda dy, need_dx=True: (dy * mask, {})


ACTIVATIONS = {
    "relu": ReLU,
    "leaky_relu": LeakyReLU,
    "sigmoid": Sigmoid,
    "logistic": Sigmoid,
    "tanh": Tanh,
    "gelu": GELU,
    "softmax": Softmax,
    "identity": Identity,
    "linear": Identity,
}


def activation(name):
    """An activation layer by name ('relu', 'tanh', 'sigmoid', 'gelu', ...)."""
    if isinstance(name, Layer):
        return name
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(
            f"unknown activation {name!r}; expected one of {', '.join(sorted(ACTIVATIONS))}"
        ) from None


LAYERS = {cls.__name__: cls for cls in (Linear, ReLU, LeakyReLU, Sigmoid, Tanh, GELU, Softmax, Identity, Dropout)}


def register_layer(cls, name=None):
    """Make ``cls`` (a :class:`Layer` subclass) rebuildable from its ``config()``
    (checkpoints, ``Sequential.from_config``) under ``name`` (default: the class
    name, which ``Layer.config`` writes as ``type``). Returns ``cls``, so it
    also works as a class decorator."""
    if not (isinstance(cls, type) and issubclass(cls, Layer)):
        raise TypeError(f"register_layer expects a Layer subclass, got {cls!r}")
    name = cls.__name__ if name is None else name
    known = LAYERS.get(name)
    if known is not None and known is not cls:
        raise ValueError(f"a different layer is already registered as {name!r}: {known!r}")
    LAYERS[name] = cls
    return cls


def stack(sizes, act="relu", *, dropout=0.0, init=None, bias=True):
    """The layers of a multilayer perceptron from its widths: ``stack([784, 16, 10])``
    is ``[Linear(784, 16), ReLU(), Linear(16, 10)]``.

    ``init`` defaults to 'he' for ReLU-like activations and 'glorot' otherwise;
    ``dropout`` adds a Dropout after each hidden activation."""
    sizes = list(sizes)
    if len(sizes) < 2:
        raise ValueError(f"MLP needs at least an input and an output width, got {sizes!r}")
    name = act if isinstance(act, str) else type(act).__name__.lower()
    if init is None:
        init = "he" if name in ("relu", "leaky_relu", "leakyrelu", "gelu") else "glorot"
    layers = []
    for i, (d_in, d_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(Linear(d_in, d_out, bias=bias, init=init))
        if i < len(sizes) - 2:
            layers.append(activation(act))  # layers without params can be shared
            if dropout:
                layers.append(Dropout(dropout))
    return layers


def chain_widths(layers):
    """The input width of every layer in order, then the last one's output width,
    starting from the first layer that fixes its input width (``Layer.in_width``)."""
    start = next((i for i, layer in enumerate(layers) if layer.in_width is not None), None)
    if start is None:
        raise ValueError("Sequential needs a layer that fixes the input width (such as Linear)")
    width, source, widths = layers[start].in_width, None, []
    for i, layer in enumerate(layers):
        need = layer.in_width
        if need is not None and source is not None and width != need:
            raise ShapeError(f"layer {i} {layer!r} expects [B x {need}], but layer "
                             f"{source[0]} {source[1]!r} produces [B x {width}]")
        widths.append(width)
        out = layer.output_width(width)
        if need is not None or out != width:
            source = (i, layer)
        width = out
    return widths + [width]


def from_config(config):
    """Rebuild a layer from :meth:`Layer.config`'s dict."""
    config = dict(config)
    kind = config.pop("type", None)
    if kind not in LAYERS:
        raise ValueError(f"unknown layer type {kind!r}; expected one of {', '.join(LAYERS)}")
    return LAYERS[kind](**config)
