"""The ``evaluate``, ``predict``, ``summary`` and ``backends`` commands."""
from __future__ import annotations

import json
import os

import numpy as np

from .. import backends

from .. import checkpoint, datasets
from .. import precision as _precision
from ..model import MLP
from .common import arch, backend_of, dataset_of, opt_text, say
from .parser import CLIError, DEFAULTS, SPLIT_SEED

def evaluate(args):
    model, meta = checkpoint.load(args.checkpoint, backend=backend_of(args), precision=args.precision)
    data = dataset_of(meta, args)
    if model.input_width != data.n_features:
        raise CLIError(f"the checkpoint's model takes {model.input_width} features, {data.name} has {data.n_features}")
    x, y = (data.x_test, data.y_test) if args.split == "test" else (data.x_train, data.y_train)
    result = model.evaluate(x, y)
    pred = np.asarray(model.backend.to_numpy(model.predict(x))).astype(np.int64)
    k = max(model.output_width, data.n_classes)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (y, pred), 1)
    classes = list(data.classes) + [str(i) for i in range(len(data.classes), k)]
    out = {"checkpoint": args.checkpoint, "dataset": data.name, "split": args.split, "n": int(len(y)),
           "correct": int(np.trace(confusion)), "accuracy": result.get("accuracy"), "loss": result["loss"],
           "epoch": model.epoch, "backend": model.backend.spec, "precision": model.precision, "classes": classes,
           "confusion": confusion.tolist()}
    if args.json:
        print(json.dumps(out))
        return 0
    numerics = _precision.describe(model.dtype, model.precision)
    print(f"{args.checkpoint}: {arch(model)}, epoch {model.epoch}, {numerics}, on {model.backend.spec}")
    print(f"{data.name} {args.split}: accuracy {out['accuracy']:.2%} ({out['correct']}/{out['n']}), "
          f"loss {out['loss']:.4f}")
    print("confusion matrix (rows: true class, columns: predicted):")
    print(format_confusion(confusion, classes))
    return 0


def format_confusion(matrix, classes):
    labels = [c if len(c) <= 8 else c[:7] + "." for c in classes]
    width = max(max(len(str(v)) for v in matrix.ravel()), max(len(c) for c in labels))
    head = " " * (width + 1) + " ".join(c.rjust(width) for c in labels)
    rows = [labels[i].rjust(width) + " " + " ".join(str(v).rjust(width) for v in row)
            for i, row in enumerate(matrix)]
    return "\n".join([head, *rows])


def read_rows(path):
    """Rows of numbers from a .npy (any shape; one sample per first-axis entry) or .csv file."""
    if not os.path.isfile(path):
        raise CLIError(f"no input file at {path}")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".npy":
        try:
            x = np.load(path, allow_pickle=False)
        except ValueError as err:
            raise CLIError(f"{path} is not a plain numeric .npy file: {err}") from None
        x = x.reshape(1, -1) if x.ndim == 1 else x.reshape(len(x), -1)
    elif ext == ".csv":
        import csv

        with open(path, newline="") as f:
            rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
        if rows and not datasets.is_numeric(rows[0]):
            rows = rows[1:]
        try:
            x = np.array([[float(c) for c in r] for r in rows])
        except ValueError as err:
            raise CLIError(f"{path}: every row must have the same number of numeric columns ({err})") from None
    else:
        raise CLIError(f"{path}: expected a .npy or .csv file of rows, got {ext or 'no extension'}")
    if x.size == 0 or x.ndim != 2:
        raise CLIError(f"{path} holds no rows")
    return x


def predict(args):
    model, meta = checkpoint.load(args.checkpoint, backend=backend_of(args), precision=args.precision)
    x = read_rows(args.input)
    if x.shape[1] != model.input_width:
        raise CLIError(f"{args.input} has rows of {x.shape[1]} values; the model takes {model.input_width} "
                       f"features per row")
    info = meta["extra"].get("dataset", {})
    if not args.scaled and "low" in info:
        x = datasets.scale(x, info["low"], info["high"])
    classes = info.get("classes") or [str(i) for i in range(model.output_width)]
    proba = np.asarray(model.backend.to_numpy(model.predict_proba(x)), dtype=np.float64)
    ids = proba.argmax(axis=1)
    names = [classes[i] if i < len(classes) else str(i) for i in ids]
    if args.output:
        if args.output.endswith(".npy"):
            np.save(args.output, proba if args.proba else ids)
        else:
            with open(args.output, "w") as f:
                for name, p in zip(names, proba):
                    f.write(",".join([name, *(f"{v:.6g}" for v in p)] if args.proba else [name]) + "\n")
    if args.json:
        out = {"classes": classes, "predictions": names, "ids": ids.tolist()}
        if args.proba:
            out["probabilities"] = proba.tolist()
        print(json.dumps(out))
    elif not args.output:
        for name, p in zip(names, proba):
            print(",".join([name, *(f"{v:.4f}" for v in p)]) if args.proba else name)
    else:
        print(f"wrote {len(ids)} predictions to {args.output}")
    return 0


# -- summary, backends ---------------------------------------------------------------------
def summary(args):
    if args.checkpoint:
        model, meta = checkpoint.load(args.checkpoint, backend="numpy")
        opt = opt_text(model.optimizer) if model.optimizer is not None else "none"
        text = f"{args.checkpoint}: epoch {model.epoch}, optimizer {opt}\n{model.summary()}"
    else:
        sizes = args.sizes
        if sizes is None:
            data = datasets.load(args.dataset or "digits", data_dir=args.data_dir, seed=SPLIT_SEED)
            hidden = args.hidden if args.hidden is not None else DEFAULTS["hidden"]
            sizes = [data.n_features, *hidden, data.n_classes]
        elif args.hidden is not None or args.dataset is not None:
            raise CLIError("give either --sizes, or --hidden and --dataset, not both")
        if len(sizes) < 2:
            raise CLIError(f"--sizes needs at least an input and an output width, got {sizes}")
        model = MLP(sizes, args.activation, dropout=args.dropout, backend="numpy", dtype=args.dtype)
        text = model.summary()
    if args.json:
        print(json.dumps({"architecture": arch(model), "params": model.num_params, "summary": text}))
    else:
        print(text)
    return 0


def list_backends(args):
    table = backends.available()
    if args.json:
        print(json.dumps([{"name": s.name, "status": s.status, "version": s.version, "devices": s.devices}
                          for s in table]))
    else:
        print(table)
    return 0
