"""Argument parsing for the ``mlp`` command: the flags, their types and defaults."""
from __future__ import annotations

import argparse

from .. import __version__
from ..layers import ACTIVATIONS
from ..precision import POLICIES

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
def sizes_arg(text):
    try:
        sizes = [int(s) for s in text.replace(" ", "").split(",") if s]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers such as 128,64, got {text!r}")
    if any(s < 1 for s in sizes):
        raise argparse.ArgumentTypeError(f"sizes must be positive, got {text!r}")
    return sizes


def fraction_arg(text):
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1), got {text}")
    return value


def positive_arg(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def devices_arg(text):
    return "all" if text == "all" else positive_arg(text)


sizes_arg.__name__, fraction_arg.__name__, positive_arg.__name__ = "sizes", "fraction", "positive integer"
devices_arg.__name__ = "'all' or a positive integer"


def backend_flags(p):
    p.add_argument("--backend", default=None,
                   help="numpy, jax, torch, cupy, array_api_strict, ... (default: MLP_BACKEND, else numpy)")
    p.add_argument("--device", default=None, help="cpu, gpu or gpu:N (default: the backend's own)")
    p.add_argument("--precision", choices=tuple(POLICIES), default=None,
                   help="matrix products in float32, tf32 or bf16 (default: float32, or the checkpoint's; "
                        "see docs/precision.md)")


def data_flags(p, dataset_default=None):
    p.add_argument("--dataset", default=dataset_default,
                   help="digits, mnist-sample, mnist, fashion-mnist, spirals, xor, csv:PATH or npz:PATH")
    p.add_argument("--data-dir", default=None,
                   help="folder holding mnist/ and fashion-mnist/ IDX files (default: MLP_DATA_DIR, else ./data)")


def build_parser():
    parser = argparse.ArgumentParser(prog="mlp", description="Multilayer perceptrons on any array backend.")
    parser.add_argument("--version", action="version", version=f"mlp {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    train_flags(sub)
    other_commands(sub)
    return parser


def train_flags(sub):
    """The ``train`` command's flags."""
    t = sub.add_parser("train", help="train a model (with a progress bar), evaluate it, save it",
                       description="Train an MLP on a dataset and report its test accuracy.")
    backend_flags(t)
    data_flags(t)
    t.add_argument("--hidden", type=sizes_arg, default=None, help="hidden layer widths (default: 128,64)")
    t.add_argument("--activation", choices=sorted(ACTIVATIONS), default=None, help="(default: relu)")
    t.add_argument("--dropout", type=fraction_arg, default=None, help="dropout after each hidden layer (default: 0)")
    t.add_argument("--epochs", type=int, default=20, help="epochs to run now (default: 20)")
    t.add_argument("--batch-size", type=positive_arg, default=None, help="(default: 32)")
    t.add_argument("--devices", type=devices_arg, default=None, metavar="N|all",
                   help="data-parallel training over N devices, or all (JAX only; "
                        "the batch size must divide by N)")
    t.add_argument("--optimizer", choices=("sgd", "momentum", "nesterov", "adam", "adamw"), default=None,
                   help="(default: adam)")
    t.add_argument("--lr", type=float, default=None, help="learning rate (default: the optimizer's: adam 1e-3, sgd 1e-2)")
    t.add_argument("--weight-decay", type=float, default=None, help="(default: the optimizer's)")
    t.add_argument("--seed", type=int, default=None, help="initial weights, shuffling, dropout (default: 0)")
    t.add_argument("--dtype", choices=("float32", "float64"), default=None, help="(default: float32)")
    t.add_argument("--val-split", type=fraction_arg, default=None,
                   help="share of the training set held out for validation (default: 0)")
    t.add_argument("--early-stopping", type=positive_arg, default=None, metavar="PATIENCE",
                   help="stop after PATIENCE epochs without a lower validation loss (needs --val-split)")
    t.add_argument("--save", default=None, metavar="PATH", help="checkpoint to write (.safetensors), after every epoch")
    t.add_argument("--resume", default=None, metavar="PATH",
                   help="continue from a checkpoint for --epochs more epochs (saves back to it unless --save)")
    t.add_argument("--plot", default=None, metavar="PATH.png", help="loss and accuracy curves (needs matplotlib)")
    t.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    t.add_argument("--quiet", action="store_true", help="no progress bar and no summary")


def other_commands(sub):
    """The ``evaluate``, ``predict``, ``summary`` and ``backends`` commands' flags."""

    e = sub.add_parser("evaluate", help="accuracy, loss and confusion matrix of a checkpoint",
                       description="Evaluate a checkpoint on its dataset's test split, on any backend.")
    e.add_argument("checkpoint")
    backend_flags(e)
    data_flags(e)
    e.add_argument("--split", choices=("test", "train"), default="test")
    e.add_argument("--json", action="store_true")

    p = sub.add_parser("predict", help="class predictions for rows in a .npy or .csv file",
                       description="Predict a class for each row of INPUT (.npy or .csv, one sample per row, "
                                   "in the units of the training data; --scaled if already in [0, 1]).")
    p.add_argument("checkpoint")
    p.add_argument("input")
    backend_flags(p)
    p.add_argument("--proba", action="store_true", help="also print the class probabilities")
    p.add_argument("--scaled", action="store_true", help="INPUT is already scaled to [0, 1]")
    p.add_argument("--output", default=None, metavar="PATH", help="write predictions to PATH (.csv or .npy)")
    p.add_argument("--json", action="store_true")

    x = sub.add_parser("export", help="write a checkpoint's inference graph as an ONNX file",
                       description="Export a checkpoint to ONNX (needs the onnx extra): input x [batch x D] in "
                                   "the units of the training data (--scaled: already in [0, 1]); outputs "
                                   "logits, probabilities and labels.")
    x.add_argument("checkpoint")
    x.add_argument("output", metavar="OUT.onnx")
    x.add_argument("--scaled", action="store_true", help="the graph takes inputs already scaled to [0, 1]")

    s = sub.add_parser("summary", help="shape flow and parameter count of a model",
                       description="Print a model's layers, shapes and parameter count.")
    s.add_argument("--sizes", type=sizes_arg, default=None, help="all widths, e.g. 784,16,10")
    s.add_argument("--hidden", type=sizes_arg, default=None, help="hidden widths, with --dataset giving the rest")
    s.add_argument("--dataset", default=None, help="dataset that fixes the input and output widths (default: digits)")
    s.add_argument("--data-dir", default=None)
    s.add_argument("--activation", choices=sorted(ACTIVATIONS), default="relu")
    s.add_argument("--dropout", type=fraction_arg, default=0.0)
    s.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    s.add_argument("--checkpoint", default=None, help="summarise a saved model instead")
    s.add_argument("--json", action="store_true")

    b = sub.add_parser("backends", help="the backends here: status, version, devices",
                       description="List every registered backend with its status, version and devices.")
    b.add_argument("--json", action="store_true")
