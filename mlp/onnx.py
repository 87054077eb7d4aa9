"""ONNX export: the model's own forward pass, run on ndonnx, is the graph.

    >>> from mlp.onnx import export_onnx
    >>> export_onnx(model, "model.onnx")               # or model.export_onnx("model.onnx")

``ndonnx`` is an array API namespace whose arrays record ONNX operations. Each
layer's ``forward(xp, params, x)`` runs once with ``xp = ndonnx``, the weights
as constants and ``x`` a symbolic ``[batch x D]`` input: what it records is the
inference graph, with no second implementation of any layer and no converter.
The graph has one input, ``x``, and the outputs ``logits``, ``probabilities``
and ``labels`` (as ``predict_proba`` and ``predict`` compute them; a regression
model has ``logits`` only). Given ``input_range=(low, high)`` (what ``mlp
export`` reads from a checkpoint's dataset), ``x`` is raw data and the graph
scales it to [0, 1] first, as ``mlp predict`` does.

The raw recording is then made compact (:func:`compact`), checked with
``onnx.checker`` and written atomically. Training is not exported. Needs the
``onnx`` extra: ``pip install 'arraymlp[onnx]'`` (ndonnx, onnx, onnxruntime).
"""
from __future__ import annotations

import importlib
import os

import numpy as np

from .errors import MLPError
from .layers import sigmoid, softmax

OUTPUTS = ("logits", "probabilities", "labels")


class ExportError(MLPError, ValueError):
    """A model (or one of its layers) that cannot be written as an ONNX graph."""


def _require(name):
    try:
        return importlib.import_module(name)
    except ImportError as err:
        raise ImportError(f"ONNX export needs {name}: pip install 'arraymlp[onnx]' ({err})") from None


def export_onnx(model, path, *, input_range=None):
    """Write ``model``'s inference graph to ``path`` (``.onnx``) and return the
    ``onnx.ModelProto``. ``input_range=(low, high)``: raw values that map to 0
    and 1 (scalars or one per feature); the graph then scales its input first."""
    proto = to_onnx(model, input_range=input_range)
    from .checkpoint import write_atomic

    write_atomic(os.fspath(path), proto.SerializeToString())
    return proto


def to_onnx(model, *, input_range=None):
    """The checked, compact ``onnx.ModelProto`` of ``model``'s inference graph."""
    ndx = _require("ndonnx")
    onnx = _require("onnx")
    x = ndx.argument(shape=("batch", model.input_width), dtype=getattr(ndx, model.dtype))
    out = x if input_range is None else _scaled(ndx, x, input_range, model.dtype, model.input_width)
    to_host = model.backend.to_numpy
    for i, (layer, params) in enumerate(zip(model.layers, model.params)):
        constants = {k: ndx.asarray(np.asarray(to_host(v))) for k, v in params.items()}
        out = _trace(ndx, i, layer, constants, out)
    outputs = {"logits": out, **heads(ndx, model.loss.output, out)}
    proto = compact(ndx.build({"x": x}, outputs))
    proto.producer_name = "mlp"
    proto.doc_string = f"{model!r}: inference only (x -> {', '.join(outputs)})"
    onnx.checker.check_model(proto, full_check=True)
    return proto


def heads(xp, output, logits):
    """``probabilities`` and ``labels`` from ``logits``, as ``Sequential.predict_proba``
    and ``predict`` compute them for a loss whose ``output`` is softmax or sigmoid."""
    if output == "softmax":
        return {"probabilities": softmax(xp, logits), "labels": xp.argmax(logits, axis=-1)}
    if output == "sigmoid":
        return {"probabilities": sigmoid(xp, logits), "labels": xp.astype(logits > 0, xp.int32)}
    return {}


def _scaled(xp, x, input_range, dtype, width):
    """``clip((x - low) / (high - low), 0, 1)``, as ``mlp.datasets`` scales raw data."""
    low, high = (np.asarray(v, dtype=np.float64) for v in input_range)
    for name, v in (("low", low), ("high", high)):
        if v.ndim > 1 or v.size not in (1, width):
            raise ExportError(f"input_range {name} must be a scalar or [{width}] values, got shape {list(v.shape)}")
    span = np.where(high > low, high - low, 1.0)
    return xp.clip((x - xp.asarray(low.astype(dtype))) / xp.asarray(span.astype(dtype)), 0.0, 1.0)


def _trace(ndx, i, layer, params, x):
    """One layer's forward on ndonnx arrays, or an ExportError naming the layer."""
    where = f"layer {i} {layer!r}"
    try:
        y, _ = layer.forward(ndx, params, x, train=False)
    except Exception as err:  # noqa: BLE001 - whatever the layer tried, say which layer
        first = (str(err).strip().splitlines() or [""])[0][:200]
        raise ExportError(
            f"{where} cannot be exported to ONNX: its forward failed on symbolic ndonnx arrays "
            f"({type(err).__name__}: {first}); it must use only array API functions, no Python "
            f"control flow on array values and no sizes of the batch axis (None here)"
        ) from err
    if not isinstance(y, ndx.Array):
        raise ExportError(f"{where} cannot be exported to ONNX: its forward returned "
                          f"{type(y).__name__}, not an array of the namespace it was given")
    return y


# -- making the recorded graph compact ----------------------------------------------------
def compact(proto):
    """The recorded graph without its detours, in place; returns ``proto``.

    1. ndonnx wraps each matrix product in an ``If`` that returns zeros when an
       operand is empty (a guard against an old onnxruntime bug with zero-sized
       MatMul inputs); ``MatMul`` itself gives the same empty result, so the ``If``
       becomes its ``MatMul``. 2. ``Identity`` nodes are bypassed. 3. Nodes whose
       results nobody reads are dropped. 4. Values get short names."""
    graph = proto.graph
    for k, node in enumerate(graph.node):
        matmul = _guarded_matmul(node)
        if matmul is not None:
            graph.node[k].CopyFrom(matmul)
    _bypass_identities(graph)
    _drop_unused(graph)
    _rename(graph)
    return proto


def _guarded_matmul(node):
    """The ``MatMul`` an ndonnx zero-size guard (an ``If``) wraps, or None."""
    if node.op_type != "If" or len(node.output) != 1:
        return None
    branch = next((a.g for a in node.attribute if a.name == "else_branch"), None)
    if branch is None:
        return None
    ops = [n for n in branch.node if n.op_type != "Identity"]
    inner = {o for n in branch.node for o in n.output}
    if len(ops) != 1 or ops[0].op_type != "MatMul" or any(i in inner for i in ops[0].input):
        return None
    onnx = _require("onnx")
    return onnx.helper.make_node("MatMul", list(ops[0].input), list(node.output))


def _bypass_identities(graph):
    outputs = {o.name for o in graph.output}
    alias = {}
    keep = []
    for node in graph.node:
        if node.op_type == "Identity" and node.output[0] not in outputs:
            alias[node.output[0]] = alias.get(node.input[0], node.input[0])
        else:
            keep.append(node)
    for node in keep:
        node.input[:] = [alias.get(i, i) for i in node.input]
    for node in keep:  # an Identity that makes a graph output: its producer writes the output
        if node.op_type == "Identity" and node.output[0] in outputs:
            producer = next((n for n in keep if node.input[0] in n.output and n.op_type != "Identity"), None)
            readers = [n for n in keep if node.input[0] in n.input and n is not node]
            if producer is not None and not readers and node.input[0] not in outputs:
                producer.output[list(producer.output).index(node.input[0])] = node.output[0]
                node.op_type = "Dropped"
    _set_nodes(graph, [n for n in keep if n.op_type != "Dropped"])


def _drop_unused(graph):
    needed = {o.name for o in graph.output}
    keep = []
    for node in reversed(graph.node):
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(node.input)
            needed.update(_captured(node))
    _set_nodes(graph, keep[::-1])
    inits = [t for t in graph.initializer if t.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(inits)


def _captured(node):
    """Names a node's subgraphs read from the enclosing graph."""
    names = set()
    for attr in node.attribute:
        for g in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
            for n in g.node:
                names.update(n.input)
                names.update(_captured(n))
    return names


def _rename(graph, names=None, fixed=None):
    """Short value names, ``v0``, ``v1``, ..., in the graph and its subgraphs (which
    read outer names); no node names. The graph's inputs and outputs keep theirs."""
    if names is None:
        names = {}
        fixed = {v.name for v in list(graph.input) + list(graph.output)} | {t.name for t in graph.initializer}
    for node in graph.node:
        node.name = ""
        node.input[:] = [names.get(i, i) for i in node.input]
        for attr in node.attribute:
            for g in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                _rename(g, names, fixed)
        for j, o in enumerate(node.output):
            if o and o not in fixed:
                names.setdefault(o, f"v{len(names)}")
                node.output[j] = names[o]
    for v in graph.output:
        v.name = names.get(v.name, v.name)
    del graph.value_info[:]


def _set_nodes(graph, nodes):
    nodes = [n for n in nodes]
    del graph.node[:]
    graph.node.extend(nodes)
