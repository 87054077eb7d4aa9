"""The ``mlp`` command: ``train``, ``evaluate``, ``predict``, ``summary``, ``backends``.

    mlp train                                   # digits, NumPy on the CPU, a progress bar
    mlp train --device gpu --save run.safetensors
    mlp train --resume run.safetensors --epochs 5
    mlp evaluate run.safetensors --backend jax
    mlp predict run.safetensors rows.csv
    mlp summary --sizes 784,16,10
    mlp backends

Errors a user can fix (a missing GPU, a bad flag, a missing file) print one line
``mlp: error: ...`` on stderr and exit with status 2. See docs/cli.md.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

import backends

from . import __version__, checkpoint, datasets
from . import optimizers as _optimizers
from . import precision as _precision
from .errors import is_out_of_memory, MLPError, TrainingDiverged
from .layers import ACTIVATIONS
from .model import MLP, StopTraining

DEFAULTS = {
    "dataset": "digits", "hidden": [128, 64], "activation": "relu", "dropout": 0.0,
    "dtype": "float32", "seed": 0, "optimizer": "adam", "lr": None, "weight_decay": None,
    "batch_size": 32, "val_split": 0.0,
}
TEST_SIZE = 0.2
SPLIT_SEED = 0  # the train/test (and validation) split is fixed, whatever --seed is


class CLIError(Exception):
    """A problem the user can fix; printed as one line."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, with a line saying what was saved; exit status 130."""


# -- argument parsing -------------------------------------------------------------
def _sizes(text):
    try:
        sizes = [int(s) for s in text.replace(" ", "").split(",") if s]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers such as 128,64, got {text!r}")
    if any(s < 1 for s in sizes):
        raise argparse.ArgumentTypeError(f"sizes must be positive, got {text!r}")
    return sizes


def _fraction(text):
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1), got {text}")
    return value


def _positive(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def _devices(text):
    return "all" if text == "all" else _positive(text)


_sizes.__name__, _fraction.__name__, _positive.__name__ = "sizes", "fraction", "positive integer"
_devices.__name__ = "'all' or a positive integer"


def _where(p):
    p.add_argument("--backend", default=None,
                   help="numpy, jax, torch, cupy, array_api_strict, ... (default: MLP_BACKEND, else numpy)")
    p.add_argument("--device", default=None, help="cpu, gpu or gpu:N (default: the backend's own)")
    p.add_argument("--precision", choices=tuple(_precision.POLICIES), default=None,
                   help="matrix products in float32, tf32 or bf16 (default: float32, or the checkpoint's; "
                        "see docs/precision.md)")


def _data_flags(p, dataset_default=None):
    p.add_argument("--dataset", default=dataset_default,
                   help="digits, mnist-sample, mnist, fashion-mnist, spirals, xor, csv:PATH or npz:PATH")
    p.add_argument("--data-dir", default=None,
                   help="folder holding mnist/ and fashion-mnist/ IDX files (default: MLP_DATA_DIR, else ./data)")


def build_parser():
    parser = argparse.ArgumentParser(prog="mlp", description="Multilayer perceptrons on any array backend.")
    parser.add_argument("--version", action="version", version=f"mlp {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    t = sub.add_parser("train", help="train a model (with a progress bar), evaluate it, save it",
                       description="Train an MLP on a dataset and report its test accuracy.")
    _where(t)
    _data_flags(t)
    t.add_argument("--hidden", type=_sizes, default=None, help="hidden layer widths (default: 128,64)")
    t.add_argument("--activation", choices=sorted(ACTIVATIONS), default=None, help="(default: relu)")
    t.add_argument("--dropout", type=_fraction, default=None, help="dropout after each hidden layer (default: 0)")
    t.add_argument("--epochs", type=int, default=20, help="epochs to run now (default: 20)")
    t.add_argument("--batch-size", type=_positive, default=None, help="(default: 32)")
    t.add_argument("--devices", type=_devices, default=None, metavar="N|all",
                   help="data-parallel training over N devices, or all (JAX only; "
                        "the batch size must divide by N)")
    t.add_argument("--optimizer", choices=("sgd", "momentum", "nesterov", "adam", "adamw"), default=None,
                   help="(default: adam)")
    t.add_argument("--lr", type=float, default=None, help="learning rate (default: the optimizer's: adam 1e-3, sgd 1e-2)")
    t.add_argument("--weight-decay", type=float, default=None, help="(default: the optimizer's)")
    t.add_argument("--seed", type=int, default=None, help="initial weights, shuffling, dropout (default: 0)")
    t.add_argument("--dtype", choices=("float32", "float64"), default=None, help="(default: float32)")
    t.add_argument("--val-split", type=_fraction, default=None,
                   help="share of the training set held out for validation (default: 0)")
    t.add_argument("--early-stopping", type=_positive, default=None, metavar="PATIENCE",
                   help="stop after PATIENCE epochs without a lower validation loss (needs --val-split)")
    t.add_argument("--save", default=None, metavar="PATH", help="checkpoint to write (.safetensors), after every epoch")
    t.add_argument("--resume", default=None, metavar="PATH",
                   help="continue from a checkpoint for --epochs more epochs (saves back to it unless --save)")
    t.add_argument("--plot", default=None, metavar="PATH.png", help="loss and accuracy curves (needs matplotlib)")
    t.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    t.add_argument("--quiet", action="store_true", help="no progress bar and no summary")

    e = sub.add_parser("evaluate", help="accuracy, loss and confusion matrix of a checkpoint",
                       description="Evaluate a checkpoint on its dataset's test split, on any backend.")
    e.add_argument("checkpoint")
    _where(e)
    _data_flags(e)
    e.add_argument("--split", choices=("test", "train"), default="test")
    e.add_argument("--json", action="store_true")

    p = sub.add_parser("predict", help="class predictions for rows in a .npy or .csv file",
                       description="Predict a class for each row of INPUT (.npy or .csv, one sample per row, "
                                   "in the units of the training data; --scaled if already in [0, 1]).")
    p.add_argument("checkpoint")
    p.add_argument("input")
    _where(p)
    p.add_argument("--proba", action="store_true", help="also print the class probabilities")
    p.add_argument("--scaled", action="store_true", help="INPUT is already scaled to [0, 1]")
    p.add_argument("--output", default=None, metavar="PATH", help="write predictions to PATH (.csv or .npy)")
    p.add_argument("--json", action="store_true")

    s = sub.add_parser("summary", help="shape flow and parameter count of a model",
                       description="Print a model's layers, shapes and parameter count.")
    s.add_argument("--sizes", type=_sizes, default=None, help="all widths, e.g. 784,16,10")
    s.add_argument("--hidden", type=_sizes, default=None, help="hidden widths, with --dataset giving the rest")
    s.add_argument("--dataset", default=None, help="dataset that fixes the input and output widths (default: digits)")
    s.add_argument("--data-dir", default=None)
    s.add_argument("--activation", choices=sorted(ACTIVATIONS), default="relu")
    s.add_argument("--dropout", type=_fraction, default=0.0)
    s.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    s.add_argument("--checkpoint", default=None, help="summarise a saved model instead")
    s.add_argument("--json", action="store_true")

    b = sub.add_parser("backends", help="the backends here: status, version, devices",
                       description="List every registered backend with its status, version and devices.")
    b.add_argument("--json", action="store_true")
    return parser


# -- helpers ----------------------------------------------------------------------
def _backend(args):
    return backends.get(args.backend, device=args.device)


def _say(args, *lines):
    """Human-readable lines: stdout, or stderr when stdout carries JSON."""
    if not getattr(args, "quiet", False):
        print(*lines, sep="\n", file=sys.stderr if args.json else sys.stdout)


def _dataset_info(data):
    def plain(v):
        return np.asarray(v).tolist()

    return {"name": data.name, "classes": list(data.classes), "image_shape": data.image_shape,
            "low": plain(data.low), "high": plain(data.high), "test_size": TEST_SIZE}


def _arch(model):
    from .layers import Linear

    widths = [model.input_width] + [l.out_features for l in model.layers if isinstance(l, Linear)]
    return "-".join(str(w) for w in widths)


def _activation_name(model):
    from .layers import Dropout, Linear

    return next((type(l).__name__ for l in model.layers if not isinstance(l, (Linear, Dropout))), "linear")


def _opt_text(opt):
    text = f"{type(opt).__name__} lr={opt.lr:g}"
    if getattr(opt, "momentum", 0):
        text += f" momentum={opt.momentum:g}{' nesterov' if opt.nesterov else ''}"
    return text + (f" weight_decay={opt.weight_decay:g}" if opt.weight_decay else "")


def _history_path(save, plot):
    base = save if save else plot
    return os.path.splitext(base)[0] + ".history.json"


def _write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


# -- train --------------------------------------------------------------------------
class _Progress:
    """One tqdm bar per epoch: samples/s while it runs, loss and accuracy at its end."""

    def __init__(self, n, batch_size, last_epoch, disable):
        self.n, self.bs, self.last, self.disable = n, batch_size, last_epoch, disable
        self.bar = None
        self.model = None

    def on_batch(self, step, n_steps):
        if self.bar is None:
            from tqdm.auto import tqdm

            width = len(str(self.last))
            self.bar = tqdm(total=self.n, unit="samples", unit_scale=True, leave=True, file=sys.stderr,
                            desc=f"epoch {self.model.epoch + 1:>{width}}/{self.last}", disable=self.disable,
                            dynamic_ncols=True)
        self.bar.update(min(self.bs, self.n - step * self.bs))

    def __call__(self, model, epoch, logs):
        if self.bar is None:
            return
        post = {"loss": f"{logs['loss']:.4f}", "acc": f"{logs.get('accuracy', float('nan')):.4f}"}
        if "val_loss" in logs:
            post.update(val_loss=f"{logs['val_loss']:.4f}", val_acc=f"{logs.get('val_accuracy', float('nan')):.4f}")
        self.bar.set_postfix(post, refresh=False)
        self.close()

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class _EarlyStopping:
    def __init__(self, patience):
        self.patience, self.best, self.wait, self.stopped_at = patience, float("inf"), 0, None

    def __call__(self, model, epoch, logs):
        if logs["val_loss"] < self.best:
            self.best, self.wait = logs["val_loss"], 0
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_at = epoch
            raise StopTraining


def _settings(args, meta):
    """The run's settings: the checkpoint's when resuming (flags may not contradict
    them), else the flags over DEFAULTS."""
    flags = {k: getattr(args, k) for k in DEFAULTS if getattr(args, k) is not None}
    if meta is None:
        return {**DEFAULTS, **flags}
    saved = meta["extra"].get("train", {})
    for key, value in flags.items():
        if key in saved and saved[key] != value:
            flag = "--" + key.replace("_", "-")
            show = ",".join(map(str, value)) if isinstance(value, list) else value
            was = ",".join(map(str, saved[key])) if isinstance(saved[key], list) else saved[key]
            raise CLIError(f"{flag} {show} differs from the checkpoint's {was}; a resumed run keeps "
                           f"the checkpoint's settings (drop {flag}, or start a new run without --resume)")
    return {**DEFAULTS, **saved, **flags}


def _train(args):
    if args.epochs < 0:
        raise CLIError(f"--epochs must be >= 0, got {args.epochs}")
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise CLIError("--plot needs matplotlib, which is not installed: pip install 'mlp[plot]'") from None
    backend = _backend(args)
    if args.precision and not args.resume:  # before any data is read
        _precision.get(args.precision).check(backend, args.dtype or DEFAULTS["dtype"])
    meta = None
    if args.resume:
        model, meta = checkpoint.load(args.resume, backend=backend, precision=args.precision)
    settings = _settings(args, meta)
    settings["precision"] = model.precision if meta is not None else (args.precision or "float32")
    if meta is not None and "train" not in meta["extra"]:  # saved from Python: describe the model as it is
        from .layers import Linear

        widths = [layer.out_features for layer in model.layers if isinstance(layer, Linear)][:-1]
        settings.update(hidden=widths, dtype=model.dtype, seed=model.seed, activation=_activation_name(model).lower())
        if model.optimizer is not None:
            settings.update(optimizer=model.optimizer.config()["name"], lr=model.optimizer.lr)
    if args.early_stopping and not settings["val_split"]:
        raise CLIError("--early-stopping watches the validation loss: add --val-split (e.g. --val-split 0.1)")
    data = datasets.load(settings["dataset"], data_dir=args.data_dir, seed=SPLIT_SEED, test_size=TEST_SIZE)
    x, y = data.x_train, data.y_train
    validation = None
    if settings["val_split"]:
        fit_idx, val_idx = datasets.split(len(y), settings["val_split"], SPLIT_SEED)
        x, y, validation = x[fit_idx], y[fit_idx], (x[val_idx], y[val_idx])
    if meta is None:
        model = MLP([data.n_features, *settings["hidden"], data.n_classes], settings["activation"],
                    dropout=settings["dropout"], backend=backend, seed=settings["seed"], dtype=settings["dtype"],
                    precision=settings["precision"])
        kwargs = {k: settings[k] for k in ("lr", "weight_decay") if settings[k] is not None}
        model.set_optimizer(_optimizers.get(settings["optimizer"], **kwargs))
    elif (model.input_width, model.output_width) != (data.n_features, data.n_classes):
        raise CLIError(f"the checkpoint's model is {_arch(model)}, which does not fit {data.name} "
                       f"({data.n_features} features, {data.n_classes} classes)")
    save = args.save or args.resume
    last = model.epoch + args.epochs
    bs = settings["batch_size"]
    _say(args, f"mlp: {'resuming' if meta else 'training'} {_arch(model)} ({_activation_name(model)}) on "
               f"{data.name}: {len(y):,} train / {len(data.y_test):,} test"
               f"{f' / {len(validation[1]):,} validation' if validation else ''}; "
               f"{_opt_text(model.optimizer)}, batch {bs}, epochs {model.epoch + 1}..{last}; "
               f"{model.backend.spec}, {_precision.describe(model.dtype, model.precision)}")

    extra = {"train": settings, "dataset": _dataset_info(data)}
    progress = _Progress(len(y), min(bs, len(y)), last, disable=args.quiet)
    progress.model = model
    callbacks = [progress]
    start_epoch = model.epoch
    saved_epoch = [start_epoch if meta is not None and save == args.resume else None]

    def write(m, epoch=None, logs=None):
        checkpoint.save(m, save, extra=extra)
        saved_epoch[0] = m.epoch

    if save:
        callbacks.append(write)
    stopper = _EarlyStopping(args.early_stopping) if args.early_stopping else None
    if stopper:
        callbacks.append(stopper)
    start = time.perf_counter()
    try:
        model.fit(x, y, epochs=args.epochs, batch_size=bs, validation_data=validation, callbacks=callbacks,
                  on_batch=progress.on_batch, devices=args.devices)
    except KeyboardInterrupt:
        # fit leaves the model as the last finished epoch left it: that is what gets saved
        progress.close()
        raise Interrupted(_interrupted(model, save, saved_epoch, write, args)) from None
    except TrainingDiverged as err:
        progress.close()
        kept = (f"; {save} holds epoch {saved_epoch[0]}, intact" if save and saved_epoch[0] is not None
                else "; nothing was saved")
        raise CLIError(f"{err}{kept}") from None
    finally:
        progress.close()
    fit_seconds = time.perf_counter() - start
    test = model.evaluate(data.x_test, data.y_test)
    wall = time.perf_counter() - start
    if save and model.epoch == start_epoch:  # no epoch ran: still write what we have
        checkpoint.save(model, save, extra=extra)
    history = {k: v for k, v in model.history.items() if k != "step_loss"}
    history_file = None
    if save or args.plot:
        history_file = _history_path(save, args.plot)
        _write_json(history_file, history)
    if args.plot:
        _plot(args.plot, history, test, data.name, _arch(model))
    ran = model.epoch - start_epoch
    speed = ran * len(y) / fit_seconds if fit_seconds > 0 and ran else 0.0
    result = {
        "dataset": data.name, "architecture": _arch(model), "backend": model.backend.spec,
        "dtype": model.dtype, "precision": model.precision, "epochs": model.epoch, "epochs_run": ran,
        "stopped_early": bool(stopper and stopper.stopped_at),
        "train_loss": history.get("loss", [None])[-1] if history else None,
        "train_accuracy": history.get("accuracy", [None])[-1] if history else None,
        "test_loss": test["loss"], "test_accuracy": test.get("accuracy"),
        "wall_time_s": round(wall, 3), "samples_per_s": round(speed, 1),
        "checkpoint": save, "history_file": history_file, "plot": args.plot,
    }
    if validation is not None and "val_accuracy" in history:
        result.update(val_loss=history["val_loss"][-1], val_accuracy=history["val_accuracy"][-1])
    stop = f" (early stop at epoch {stopper.stopped_at})" if result["stopped_early"] else ""
    saved = f"; saved {save}" if save else ""
    _say(args, f"test accuracy {test.get('accuracy', float('nan')):.2%} (loss {test['loss']:.4f}) after "
               f"{model.epoch} epochs{stop} in {wall:.1f} s ({speed:,.0f} samples/s) on "
               f"{model.backend.spec}, {_precision.describe(model.dtype, model.precision)}{saved}")
    if args.json:
        print(json.dumps(result))
    return 0


def _interrupted(model, save, saved_epoch, write, args):
    """Save the last finished epoch (unless already saved); the line to print."""
    where = f"in epoch {model.epoch + 1}"
    if not save:
        return f"interrupted {where}; nothing saved (--save PATH keeps every finished epoch)"
    if saved_epoch[0] is None and model.epoch == 0:
        return f"interrupted {where}; no epoch had finished, so nothing was saved"
    if saved_epoch[0] != model.epoch:
        write(model)
    _write_json(_history_path(save, args.plot), {k: v for k, v in model.history.items() if k != "step_loss"})
    return (f"interrupted {where}; {save} holds epoch {model.epoch} "
            f"(continue with: mlp train --resume {save})")


def _plot(path, history, test, name, arch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = range(1, len(history.get("loss", [])) + 1)
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, title in ((ax_loss, "loss", "loss"), (ax_acc, "accuracy", "accuracy")):
        ax.plot(epochs, history.get(key, []), label="train")
        if f"val_{key}" in history:
            ax.plot(epochs, history[f"val_{key}"], label="validation")
        if key in test:
            ax.axhline(test[key], color="grey", linestyle="--", label=f"test ({test[key]:.4f})")
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.legend()
    fig.suptitle(f"{name}, {arch}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# -- evaluate, predict ---------------------------------------------------------------
def _dataset_of(meta, args):
    name = args.dataset or meta["extra"].get("dataset", {}).get("name")
    if not name:
        raise CLIError("the checkpoint does not say which dataset it was trained on: pass --dataset")
    test_size = meta["extra"].get("dataset", {}).get("test_size", TEST_SIZE)
    return datasets.load(name, data_dir=args.data_dir, seed=SPLIT_SEED, test_size=test_size)


def _evaluate(args):
    model, meta = checkpoint.load(args.checkpoint, backend=_backend(args), precision=args.precision)
    data = _dataset_of(meta, args)
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
    print(f"{args.checkpoint}: {_arch(model)}, epoch {model.epoch}, {numerics}, on {model.backend.spec}")
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
        if rows and not datasets._numeric(rows[0]):
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


def _predict(args):
    model, meta = checkpoint.load(args.checkpoint, backend=_backend(args), precision=args.precision)
    x = read_rows(args.input)
    if x.shape[1] != model.input_width:
        raise CLIError(f"{args.input} has rows of {x.shape[1]} values; the model takes {model.input_width} "
                       f"features per row")
    info = meta["extra"].get("dataset", {})
    if not args.scaled and "low" in info:
        x = datasets._scale(x, info["low"], info["high"])
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
def _summary(args):
    if args.checkpoint:
        model, meta = checkpoint.load(args.checkpoint, backend="numpy")
        opt = _opt_text(model.optimizer) if model.optimizer is not None else "none"
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
        print(json.dumps({"architecture": _arch(model), "params": model.num_params, "summary": text}))
    else:
        print(text)
    return 0


def _backends(args):
    table = backends.available()
    if args.json:
        print(json.dumps([{"name": s.name, "status": s.status, "version": s.version, "devices": s.devices}
                          for s in table]))
    else:
        print(table)
    return 0


COMMANDS = {"train": _train, "evaluate": _evaluate, "predict": _predict, "summary": _summary,
            "backends": _backends}


def main(argv=None):
    """Run the ``mlp`` command with ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (CLIError, MLPError, backends.BackendUnavailable, ValueError, OSError) as err:
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"mlp: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        print(f"mlp: {err}" if str(err) else "mlp: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - only out-of-memory errors, from any library
        if not is_out_of_memory(err):
            raise
        print(f"mlp: error: out of memory ({type(err).__name__}); try a smaller --batch-size, a smaller "
              f"model or another --device", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
