"""The randomized family: random models, targets and optimizers on every cell.

Hypothesis draws an example (an architecture, a loss with one of its target
forms, a batch, a seed for the host data and, for training, an optimizer with
its options); the example runs on the cell and is checked against independent
float64 oracles (tests/oracles.py):

* ``test_family_gradients``: the forward pass against plain NumPy, the loss and
  every parameter's gradient against ``torch.autograd``, and the gradient
  against central finite differences of the cell's own loss;
* ``test_family_training``: the first steps of the model's own train step
  (compiled on JAX), then 200 steps of ``fit``, against a ``torch.optim`` loop
  fed the same initial parameters, batches and dropout masks: every step's
  loss, the parameters after the first steps and after the last. On a float32
  cell the reference is the float64 run, so this bounds how far float32
  training drifts.

The examples are derandomized (the same on every cell and every run). A plain
run draws a few per cell; ``-m slow`` draws many more, and
``MLP_FAMILY_EXAMPLES=500`` that many fresh random ones. docs/testing.md
describes the family and where mlp's conventions differ from PyTorch's.
"""
from __future__ import annotations

import copy
import functools
import os
import re
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import example, given, HealthCheck, note, settings
from hypothesis import strategies as st

import mlp
import oracles
from mlp.layers import ACTIVATIONS, from_config

pytestmark = pytest.mark.slow  # selected by -m slow, which also draws more examples (see _examples)

FEW = {"gradients": 4, "training": 2}  # examples per cell in a plain run (CI)
MANY = {"gradients": 60, "training": 20}  # per cell under -m slow
STEPS = 200  # of fit, against the reference; the train step is checked on its first EARLY steps
EARLY = 3
KINDS = sorted({cls.__name__ for cls in ACTIVATIONS.values()})  # every activation class, aliases once
TARGETS = {
    # sums of 1: ids, onehot, soft; other sums: multihot (with an all-zero row), smoothed (0.9), unnormalized
    "cross_entropy": ["ids", "onehot", "soft", "multihot", "smoothed", "unnormalized"],
    "mse": ["real", "real-1d"],
    "binary_cross_entropy": ["binary", "soft", "binary-1d"],
}
KINKS = (mlp.ReLU, mlp.LeakyReLU)  # activations whose gradient jumps at 0


@dataclass(frozen=True)
class Case:
    """One example of the family; hashable, so references are computed once per dtype."""

    layers: tuple  # each layer's config (mlp.layers.from_config) as sorted items
    loss: str
    target: str
    batch: int
    seed: int
    optimizer: tuple = ()  # (class name, sorted keyword items)

    def build(self):
        return [from_config(dict(c)) for c in self.layers]

    def make_optimizer(self):
        name, kwargs = self.optimizer
        return getattr(mlp, name)(**dict(kwargs))

    def __str__(self):
        text = ", ".join(repr(x) + (" nobias" if getattr(x, "bias", True) is False else "") for x in self.build())
        opt = f" | {self.make_optimizer()!r}" if self.optimizer else ""
        return f"[{text}] {self.loss}/{self.target} B={self.batch} seed={self.seed}{opt}"


def linear(d_in, d_out, bias=True, init="glorot"):
    return tuple(sorted(mlp.Linear(d_in, d_out, bias, init).config().items()))


def layer(kind, **kwargs):
    return tuple(sorted(from_config({"type": kind, **kwargs}).config().items()))


@st.composite
def cases(draw, training=False):
    depth = draw(st.integers(1, 3))  # Linear layers
    loss = draw(st.sampled_from(sorted(TARGETS)))
    target = draw(st.sampled_from(TARGETS[loss]))
    widths = draw(st.lists(st.integers(1, 12), min_size=depth + 1, max_size=depth + 1))
    if target.endswith("-1d"):
        widths[-1] = 1
    elif loss == "cross_entropy":
        widths[-1] = max(widths[-1], 2)
    layers = []
    for i in range(depth):
        layers.append(linear(widths[i], widths[i + 1], draw(st.booleans()), draw(st.sampled_from(["glorot", "he"]))))
        last = i == depth - 1
        if last and not (loss == "mse" and draw(st.booleans())):  # regression may end in an activation
            break
        kind = draw(st.sampled_from(KINDS))
        slope = {"slope": draw(st.sampled_from([0.01, 0.2]))} if kind == "LeakyReLU" else {}
        layers.append(layer(kind, **slope))
        if not last and draw(st.booleans()):
            layers.append(layer("Dropout", p=draw(st.sampled_from([0.2, 0.5]))))
    optimizer = draw(optimizers()) if training else ()
    return Case(tuple(layers), loss, target, draw(st.integers(1, 8)), draw(st.integers(0, 2**16)), optimizer)


@st.composite
def optimizers(draw):
    """Every option: SGD plain, momentum, Nesterov; Adam; AdamW; weight decay; clip_norm."""
    name = draw(st.sampled_from(["SGD", "Adam", "AdamW"]))
    kw = {"weight_decay": draw(st.sampled_from([0.0, 1e-3, 0.05])),
          "clip_norm": draw(st.sampled_from([None, 0.5, 2.0]))}
    if name == "SGD":
        lr = draw(st.sampled_from([None, 0.05, 0.1]))  # None: the default, 0.01
        kw.update({} if lr is None else {"lr": lr})
        # momentum 0.9 only with lr <= 0.05: at an effective step lr / (1 - momentum) of 1 the
        # run is chaotic and float32 leaves the float64 path (PyTorch's float32 alike)
        kw["momentum"] = draw(st.sampled_from([0.0, 0.5] + ([0.9] if kw.get("lr", 0.01) <= 0.05 else [])))
        kw["nesterov"] = kw["momentum"] > 0 and draw(st.booleans())
    else:
        kw["lr"] = draw(st.sampled_from([1e-3, 5e-3, 0.01, 0.02]))
        kw["betas"] = (draw(st.sampled_from([0.9, 0.8])), draw(st.sampled_from([0.999, 0.99, 0.9999])))
        kw["eps"] = draw(st.sampled_from([1e-8, 1e-6]))
    return name, tuple(sorted(kw.items()))


# -- host data -----------------------------------------------------------------------
N_BATCHES = 4  # training cycles through this many batches: STEPS / N_BATCHES epochs of fit


def targets(loss, kind, rng, rows, k):
    """Host targets of one form for ``rows`` rows and ``k`` outputs."""
    ids = rng.integers(0, k, rows)
    if kind == "ids":
        return ids
    if kind == "onehot":
        return np.eye(k)[ids]
    if kind == "soft":  # probability rows for cross_entropy, probabilities in [0, 1] for binary
        return rng.dirichlet(np.ones(k), rows) if loss == "cross_entropy" else rng.random((rows, k))
    if kind == "multihot":
        t = rng.integers(0, 2, (rows, k)).astype("float64")
        t[rng.integers(0, rows)] = 0.0  # and an all-zero row
        return t
    if kind == "smoothed":  # label smoothing that keeps 0.9 of the mass
        return 0.9 * np.eye(k)[ids]
    if kind == "unnormalized":
        return 2.0 * rng.random((rows, k))
    if kind.startswith("real"):
        t = rng.standard_normal((rows, k))
    else:  # binary, binary-1d
        t = rng.integers(0, 2, (rows, k)).astype("float64")
    return t[:, 0] if kind.endswith("-1d") else t


def host_data(case, dtype, n_batches=1):
    """``x`` and ``y`` for ``n_batches`` batches of the case, floats rounded to ``dtype`` (as float64)."""
    layers = case.build()
    d, k = layers[0].in_features, host_model(case, dtype).output_width
    rng = np.random.default_rng([case.seed, 1])
    rows = case.batch * n_batches
    round_ = lambda a: a if a.dtype.kind == "i" else np.asarray(a, dtype=dtype).astype("float64")  # noqa: E731
    return round_(rng.standard_normal((rows, d))), round_(targets(case.loss, case.target, rng, rows, k))


def host_model(case, dtype):
    return mlp.Sequential(*case.build(), backend="numpy", dtype=dtype, seed=case.seed, loss=case.loss)


def host_params(model, to_numpy=np.asarray):
    return [{k: np.asarray(to_numpy(v), dtype="float64") for k, v in p.items()} for p in model.params]


def draw_masks(layers, rng, rows, width, dtype):
    """Dropout masks for one batch, as ``Sequential`` draws them (in layer order, from ``rng``)."""
    masks = []
    for lay in layers:
        if lay.needs_mask:
            masks.append(np.asarray(lay.make_mask(rng, (rows, width), dtype), dtype="float64"))
        width = lay.output_width(width)
    return masks


def numpy_forward(layers, params, x, masks=()):
    """The float64 NumPy outputs, and the inputs of every ReLU/LeakyReLU (for the kink check)."""
    masks, kinks, h = iter(masks), [], x
    for lay, p in zip(layers, params):
        if isinstance(lay, KINKS):
            kinks.append(h)
        h = oracles.numpy_layer(lay, p, h, next(masks, None) if lay.needs_mask else None)
    return h, kinks


# -- running the family on a cell ------------------------------------------------------
def _examples(config, kind):
    """(examples per cell, derandomized): a few in a plain run, many under -m slow,
    MLP_FAMILY_EXAMPLES fresh random ones if set."""
    fresh = int(os.environ.get("MLP_FAMILY_EXAMPLES", "0"))
    if fresh:
        return fresh, False
    expr = config.getoption("markexpr") or ""
    asked = re.search(r"\bslow\b", expr) and not re.search(r"\bnot\s+slow\b", expr)
    return (MANY if asked else FEW)[kind], True


def run_family(request, kind, strategy, check, examples=()):
    """Run ``check(case)`` on hypothesis' examples (the explicit ``examples`` first)."""
    n, derandomize = _examples(request.config, kind)

    def one(case):
        note(f"example: {case}")
        check(case)

    for case in examples:
        one = example(case=case)(one)
    family = settings(max_examples=n, derandomize=derandomize, database=None, deadline=None,
                      suppress_health_check=[HealthCheck.too_slow])(given(case=strategy)(one))
    family()


def cell_model(cell, case):
    """The case's model on the cell, after checking it starts from the reference's parameters."""
    model = mlp.Sequential(*case.build(), backend=cell.spec, dtype=cell.dtype, seed=case.seed, loss=case.loss)
    for got, want in zip(host_params(model, cell.to_numpy), host_params(host_model(case, cell.dtype))):
        for k in want:
            np.testing.assert_array_equal(got[k], want[k], err_msg=f"{cell.id}: initial {k} differs")
    return model


# -- gradients --------------------------------------------------------------------------
@functools.lru_cache(None)
def gradient_reference(case, dtype):
    """The case's data, masks and float64 results by NumPy (forward) and torch.autograd (loss, grads)."""
    model = host_model(case, dtype)
    params = host_params(model)
    x, y = host_data(case, dtype)
    masks = draw_masks(model.layers, copy.deepcopy(model.rng), case.batch, model.input_width, dtype)
    out, _ = numpy_forward(model.layers, params, x)
    value, grads, _ = oracles.torch_model_grads(model.layers, params, x, y, case.loss, masks)
    train_out, _ = numpy_forward(model.layers, params, x, masks)
    np.testing.assert_allclose(oracles.numpy_loss(case.loss, train_out, y), value, rtol=1e-12,
                               err_msg=f"the oracles disagree on {case}")
    return dict(params=params, x=x, y=y, masks=masks, out=out, value=value, grads=grads)


def check_gradients(cell, case):
    ref = gradient_reference(case, cell.dtype)
    model = cell_model(cell, case)
    train = bool(ref["masks"])  # with dropout: the training pass, with the masks the reference drew
    cell.assert_close(model(ref["x"]), ref["out"], "forward", f"forward of {case}")
    rng = copy.deepcopy(model.rng)
    value, grads = model.loss_and_grads(ref["x"], ref["y"], train=train)
    cell.assert_close(value, np.asarray(ref["value"]), "forward", f"loss of {case}")
    for i, (g, w) in enumerate(zip(grads, ref["grads"])):
        assert sorted(g) == sorted(w), f"layer {i} grads {sorted(g)} != {sorted(w)}"
        for k in g:
            cell.assert_close(g[k], w[k], "grad", f"layer {i} d{k} vs torch.autograd, {case}")
    check_finite_differences(cell, model, ref, grads, rng, train, case)


def check_finite_differences(cell, model, ref, grads, rng, train, case):
    """<grad, dp> against loss(p + dp/2) - loss(p - dp/2), both by the cell itself, for a
    random dp of norm 2h (h as in test_matrix_layers). Skipped where the segment
    crosses a ReLU kink: there the difference quotient is not the gradient."""
    h = 1e-5 if cell.dtype == "float64" else 1e-2
    vrng = np.random.default_rng([case.seed, 2])
    v = [{k: vrng.standard_normal(a.shape) for k, a in p.items()} for p in ref["params"]]
    norm = np.sqrt(sum(float(np.sum(a * a)) for p in v for a in p.values()))
    moved = {s: [{k: cell.host(a + s * h * v[i][k] / norm) for k, a in p.items()} for i, p in enumerate(ref["params"])]
             for s in (-1, 0, 1)}
    if not smooth_between(model.layers, moved, ref, cell.dtype):
        note("finite differences skipped: the segment crosses a kink")
        return

    def loss(s):
        model.params = [{k: cell.asarray(a) for k, a in p.items()} for p in moved[s]]
        model.rng = copy.deepcopy(rng)  # the same dropout masks
        return float(cell.to_numpy(model.loss_and_grads(ref["x"], ref["y"], train=train)[0]))

    fd = loss(1) - loss(-1)
    exact = sum(float(np.sum(cell.to_numpy(g[k]) * (moved[1][i][k] - moved[-1][i][k])))
                for i, g in enumerate(grads) for k in g)
    cell.assert_close(np.asarray(exact / (2 * h)), np.asarray(fd / (2 * h)), "fd",
                      f"gradient vs central finite differences, {case}")


def smooth_between(layers, moved, ref, dtype):
    """Whether every ReLU/LeakyReLU input keeps its sign (by a margin) from p - dp/2 to p + dp/2."""
    ins = [numpy_forward(layers, moved[s], ref["x"], ref["masks"])[1] for s in (-1, 0, 1)]
    margin = 1e-4 if dtype == "float32" else 1e-10
    for a, b, c in zip(*ins):
        scale = max(1.0, float(np.max(np.abs(b))))
        if not (np.array_equal(np.sign(a), np.sign(b)) and np.array_equal(np.sign(b), np.sign(c))):
            return False
        if np.any((np.abs(np.stack([a, b, c])) < margin * scale) & (np.stack([a, b, c]) != 0)):
            return False
    return True


REGRESSIONS = [  # issue 16: cross-entropy rows that do not sum to 1
    Case((linear(4, 6), layer("Tanh"), linear(6, 3)), "cross_entropy", "multihot", 6, 16),
    Case((linear(3, 5, init="he"), layer("ReLU"), linear(5, 4, bias=False)), "cross_entropy", "smoothed", 5, 7),
]


def test_family_gradients(cell, request):
    run_family(request, "gradients", cases(), lambda case: check_gradients(cell, case), REGRESSIONS)


# -- training ---------------------------------------------------------------------------
@functools.lru_cache(None)
def training_reference(case, dtype):
    """Batches, dropout masks (as the model draws them in training) and the float64
    torch.optim run of STEPS steps."""
    model = host_model(case, dtype)
    x, y = host_data(case, dtype, N_BATCHES)
    b = case.batch
    batches = [(x[i * b:(i + 1) * b], y[i * b:(i + 1) * b]) for i in range(N_BATCHES)]
    mrng = copy.deepcopy(model.rng)
    masks = [draw_masks(model.layers, mrng, b, model.input_width, dtype) for _ in range(STEPS)]
    masks = masks if masks[0] else []
    losses, params = oracles.torch_train(model.layers, host_params(model),
                                         [batches[i % N_BATCHES] for i in range(STEPS)],
                                         case.loss, case.make_optimizer(), masks, keep=(1, EARLY))
    return dict(batches=batches, masks=masks, losses=losses, params=params)


def check_training(cell, case):
    """The model's own train step (compiled on JAX) for its first steps, then ``fit``
    (on JAX: a compiled epoch) for all of them, against the reference."""
    ref = training_reference(case, cell.dtype)
    check_train_step(cell, case, ref)
    model = cell_model(cell, case)
    x, y = (np.concatenate(part) for part in zip(*ref["batches"]))
    model.fit(x, y, epochs=STEPS // N_BATCHES, batch_size=case.batch, optimizer=case.make_optimizer(), shuffle=False)
    cell.assert_close(np.asarray(model.history["step_loss"]), ref["losses"], "train",
                      f"fit: per-step losses vs float64 torch.optim, {case}")
    compare_params(cell, model.params, ref["params"][STEPS], f"after fit's {STEPS} steps, {case}")


def check_train_step(cell, case, ref):
    model = cell_model(cell, case)
    model.set_optimizer(case.make_optimizer())
    step = model.train_step()  # compiled on JAX
    b = cell.backend

    def target(y):
        y = mlp.losses.check_targets(model.loss, y, model.output_width)
        return b.asarray(y.astype("int32"), "int32") if y.dtype.kind == "i" else cell.asarray(y)

    batches = [(cell.asarray(x), target(y)) for x, y in ref["batches"]]
    masks = [[cell.asarray(m) for m in step_masks] for step_masks in ref["masks"]]
    params, state, losses = model.params, model.opt_state, []
    for i in range(EARLY):
        params, state, value, _ = step(params, state, *batches[i % N_BATCHES], masks[i] if masks else [])
        losses.append(float(cell.to_numpy(value)))
        if i + 1 in ref["params"]:
            compare_params(cell, params, ref["params"][i + 1], f"train_step: after {i + 1} step(s), {case}")
    cell.assert_close(np.array(losses), ref["losses"][:EARLY], "train",
                      f"train_step: per-step losses vs float64 torch.optim, {case}")


def compare_params(cell, params, want, what):
    for i, (p, w) in enumerate(zip(params, want)):
        for k in w:
            cell.assert_close(p[k], w[k], "train", f"layer {i} {k} {what}")


TRAINING_REGRESSIONS = [  # issue 16
    # float32 Adam's bias corrections: 200 steps at lr 0.01 on a ReLU network with binary
    # cross-entropy, with the default betas and with beta2 = 0.9999
    Case((linear(3, 12, init="he"), layer("ReLU"), linear(12, 1)), "binary_cross_entropy", "binary-1d", 8, 1,
         ("Adam", (("lr", 0.01),))),
    Case((linear(5, 8, init="he"), layer("ReLU"), linear(8, 1)), "binary_cross_entropy", "binary-1d", 8, 4,
         ("Adam", (("betas", (0.9, 0.9999)), ("lr", 0.01)))),
    # cross-entropy rows that do not sum to 1, trained
    Case((linear(4, 6), layer("GELU"), linear(6, 3)), "cross_entropy", "multihot", 6, 5,
         ("SGD", (("lr", 0.1), ("momentum", 0.5)))),
]


def test_family_training(cell, request):
    run_family(request, "training", cases(training=True), lambda case: check_training(cell, case),
               TRAINING_REGRESSIONS)
