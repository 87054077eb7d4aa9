"""Callbacks for :meth:`mlp.Sequential.fit`: public, usable from Python and the CLI.

A callback is any callable ``cb(model, epoch, logs)``, run after each finished
epoch (``logs``: that epoch's metrics); it may raise :class:`StopTraining` to
end ``fit`` after that epoch. A callback may also have ``on_train_begin(model)``,
``on_batch(step, n_steps)`` (after each step is dispatched; it must read nothing
from the device) and ``on_train_end(model)`` (run however ``fit`` ends).
"""
from __future__ import annotations

import sys


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


class EarlyStopping:
    """Stop when ``monitor`` (default ``val_loss``: pass ``validation_data``) has
    not improved for ``patience`` epochs in a row. ``stopped_at`` is the epoch
    it stopped after (None if it did not). With ``restore_best_weights``, the
    model gets back the parameters of its best epoch when it stops."""

    def __init__(self, patience=5, restore_best_weights=False, monitor="val_loss"):
        if not isinstance(patience, int) or patience < 1:
            raise ValueError(f"EarlyStopping patience must be a positive int, got {patience!r}")
        self.patience, self.monitor, self.restore_best_weights = patience, monitor, restore_best_weights
        self.best, self.wait, self.stopped_at, self.best_params = float("inf"), 0, None, None

    def __call__(self, model, epoch, logs):
        if self.monitor not in logs:
            raise KeyError(f"EarlyStopping watches {self.monitor!r}, which the epoch's logs lack "
                           f"(they have {', '.join(sorted(logs))}); for val_loss pass validation_data")
        if logs[self.monitor] < self.best:
            # steps are pure: the arrays of a finished epoch never change, a reference is a snapshot
            self.best, self.wait = logs[self.monitor], 0
            self.best_params = model.params if self.restore_best_weights else None
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_at = epoch
            if self.restore_best_weights and self.best_params is not None:
                model.params = self.best_params
            raise StopTraining


class ProgressBar:
    """One tqdm bar per epoch on stderr: samples/s while it runs, loss and accuracy
    at its end. ``n``: training rows, ``batch_size``: rows a step, ``last_epoch``:
    the epoch number the run ends at (for the ``epoch 3/10`` label)."""

    def __init__(self, n, batch_size, last_epoch, disable=False):
        self.n, self.bs, self.last, self.disable = n, min(batch_size, n), last_epoch, disable
        self.bar = None
        self.model = None

    def on_train_begin(self, model):
        self.model = model

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

    def on_train_end(self, model):
        self.close()

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class CheckpointWriter:
    """Save the model to ``path`` (atomically, see :mod:`mlp.checkpoint`) after
    every finished epoch, with ``extra`` in its metadata. ``saved_epoch`` is the
    epoch the file holds (None until it writes)."""

    def __init__(self, path, extra=None, saved_epoch=None):
        self.path, self.extra, self.saved_epoch = path, extra, saved_epoch

    def __call__(self, model, epoch=None, logs=None):
        from . import checkpoint  # checkpoint imports the model, which imports this module

        checkpoint.save(model, self.path, extra=self.extra)
        self.saved_epoch = model.epoch
