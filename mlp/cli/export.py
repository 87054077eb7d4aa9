"""The ``export`` command: a checkpoint's inference graph as an ONNX file (mlp.onnx)."""
from __future__ import annotations

import os

from .. import checkpoint
from .parser import CLIError


def export(args):
    model, meta = checkpoint.load(args.checkpoint, backend="numpy")
    info = meta["extra"].get("dataset", {}) if isinstance(meta["extra"].get("dataset"), dict) else {}
    scale = (info["low"], info["high"]) if not args.scaled and "low" in info else None
    try:
        from ..onnx import export_onnx

        proto = export_onnx(model, args.output, input_range=scale)
    except ImportError as err:
        raise CLIError(str(err)) from None
    outputs = ", ".join(o.name for o in proto.graph.output)
    units = "raw units, scaled to [0, 1] in the graph" if scale is not None else "scaled as the model was trained"
    print(f"wrote {args.output} ({os.path.getsize(args.output):,} bytes): x [batch x {model.input_width}] "
          f"({units}) -> {outputs}")
    return 0
