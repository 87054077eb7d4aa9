"""What the CLI's commands share: the backend from the flags, output, model descriptions, files."""
from __future__ import annotations

import json
import os
import sys

import numpy as np

from .. import backends

from .. import datasets
from .parser import CLIError, SPLIT_SEED, TEST_SIZE

def backend_of(args):
    return backends.get(args.backend, device=args.device)


def say(args, *lines):
    """Human-readable lines: stdout, or stderr when stdout carries JSON."""
    if not getattr(args, "quiet", False):
        print(*lines, sep="\n", file=sys.stderr if args.json else sys.stdout)


def dataset_info(data):
    def plain(v):
        return np.asarray(v).tolist()

    return {"name": data.name, "classes": list(data.classes), "image_shape": data.image_shape,
            "low": plain(data.low), "high": plain(data.high), "test_size": TEST_SIZE}


def hidden_widths(model):
    """The widths of the hidden layers: the outputs of all but the last layer that changes the width."""
    widths = model.layer_widths() + [model.output_width]
    changes = [widths[i + 1] for i in range(len(model.layers)) if model.layers[i].in_width is not None]
    return changes[:-1]


def arch(model):
    return "-".join(str(w) for w in [model.input_width, *hidden_widths(model), model.output_width])


def activation_name(model):
    return next((type(l).__name__ for l in model.layers if l.in_width is None and not l.needs_mask
                 and type(l).__name__ != "Dropout"), "linear")


def opt_text(opt):
    text = f"{type(opt).__name__} lr={opt.lr:g}"
    if getattr(opt, "momentum", 0):
        text += f" momentum={opt.momentum:g}{' nesterov' if opt.nesterov else ''}"
    return text + (f" weight_decay={opt.weight_decay:g}" if opt.weight_decay else "")


def history_path(save, plot):
    base = save if save else plot
    return os.path.splitext(base)[0] + ".history.json"


def write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


def plot(path, history, test, name, arch):
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



def dataset_of(meta, args):
    name = args.dataset or meta["extra"].get("dataset", {}).get("name")
    if not name:
        raise CLIError("the checkpoint does not say which dataset it was trained on: pass --dataset")
    test_size = meta["extra"].get("dataset", {}).get("test_size", TEST_SIZE)
    return datasets.load(name, data_dir=args.data_dir, seed=SPLIT_SEED, test_size=test_size)
