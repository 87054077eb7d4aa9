"""The ``train`` command in steps: settings, data, model, callbacks, fit, report."""
from __future__ import annotations

import json
import time
from types import SimpleNamespace

from .. import checkpoint, datasets
from .. import optimizers as _optimizers
from .. import precision as _precision
from ..callbacks import CheckpointWriter, EarlyStopping, ProgressBar
from ..errors import TrainingDiverged
from ..model import MLP
from .common import (activation_name, arch, backend_of, dataset_info, hidden_widths, history_path, opt_text,
                     plot, say, write_json)
from .parser import CLIError, DEFAULTS, Interrupted, SPLIT_SEED, TEST_SIZE


def train(args):
    """``mlp train``: each step below reads and extends one record of the run."""
    run = settings(args)
    load_data(run)
    build_model(run)
    make_callbacks(run)
    fit(run)
    return report(run)


def settings(args):
    """Check the flags, load the checkpoint to resume, and settle the run's settings."""
    if args.epochs < 0:
        raise CLIError(f"--epochs must be >= 0, got {args.epochs}")
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise CLIError("--plot needs matplotlib, which is not installed: pip install 'arraymlp[plot]'") from None
    run = SimpleNamespace(args=args, backend=backend_of(args), meta=None, model=None)
    if args.precision and not args.resume:  # before any data is read
        _precision.get(args.precision).check(run.backend, args.dtype or DEFAULTS["dtype"])
    if args.resume:
        run.model, run.meta = checkpoint.load(args.resume, backend=run.backend, precision=args.precision)
    run.settings = s = settings_of(args, run.meta)
    s["precision"] = run.model.precision if run.meta is not None else (args.precision or "float32")
    model = run.model
    if run.meta is not None and "train" not in run.meta["extra"]:  # saved from Python: describe the model
        s.update(hidden=hidden_widths(model), dtype=model.dtype, seed=model.seed,
                 activation=activation_name(model).lower())
        if model.optimizer is not None:
            s.update(optimizer=model.optimizer.config()["name"], lr=model.optimizer.lr)
    if args.early_stopping and not s["val_split"]:
        raise CLIError("--early-stopping watches the validation loss: add --val-split (e.g. --val-split 0.1)")
    return run


def load_data(run):
    """The dataset, its training rows and the validation rows held out of them."""
    s = run.settings
    run.data = datasets.load(s["dataset"], data_dir=run.args.data_dir, seed=SPLIT_SEED, test_size=TEST_SIZE)
    run.x, run.y, run.validation = run.data.x_train, run.data.y_train, None
    if s["val_split"]:
        fit_idx, val_idx = datasets.split(len(run.y), s["val_split"], SPLIT_SEED)
        run.x, run.y, run.validation = run.x[fit_idx], run.y[fit_idx], (run.x[val_idx], run.y[val_idx])


def build_model(run):
    """A new model with its optimizer, or the resumed one checked against the data."""
    s, data = run.settings, run.data
    if run.meta is None:
        run.model = MLP([data.n_features, *s["hidden"], data.n_classes], s["activation"], dropout=s["dropout"],
                        backend=run.backend, seed=s["seed"], dtype=s["dtype"], precision=s["precision"])
        kwargs = {k: s[k] for k in ("lr", "weight_decay") if s[k] is not None}
        run.model.set_optimizer(_optimizers.get(s["optimizer"], **kwargs))
    elif (run.model.input_width, run.model.output_width) != (data.n_features, data.n_classes):
        raise CLIError(f"the checkpoint's model is {arch(run.model)}, which does not fit {data.name} "
                       f"({data.n_features} features, {data.n_classes} classes)")


def make_callbacks(run):
    """Say what is about to run; the progress bar, checkpoint writer and early stopping."""
    args, model, data, bs = run.args, run.model, run.data, run.settings["batch_size"]
    run.save, run.start_epoch = args.save or args.resume, model.epoch
    last = model.epoch + args.epochs
    validation = f" / {len(run.validation[1]):,} validation" if run.validation else ""
    say(args, f"mlp: {'resuming' if run.meta else 'training'} {arch(model)} ({activation_name(model)}) on "
              f"{data.name}: {len(run.y):,} train / {len(data.y_test):,} test{validation}; "
              f"{opt_text(model.optimizer)}, batch {bs}, epochs {model.epoch + 1}..{last}; "
              f"{model.backend.spec}, {_precision.describe(model.dtype, model.precision)}")
    run.extra = {"train": run.settings, "dataset": dataset_info(data)}
    run.progress = ProgressBar(len(run.y), bs, last, disable=args.quiet)
    resumed_into_itself = run.meta is not None and run.save == args.resume
    run.write = CheckpointWriter(run.save, run.extra, run.start_epoch if resumed_into_itself else None)
    run.stopper = EarlyStopping(args.early_stopping) if args.early_stopping else None
    run.callbacks = [run.progress] + ([run.write] if run.save else []) + ([run.stopper] if run.stopper else [])


def fit(run):
    """Train; Ctrl-C saves the last finished epoch, divergence says what the file holds."""
    args, model, save = run.args, run.model, run.save
    run.start = time.perf_counter()
    try:
        model.fit(run.x, run.y, epochs=args.epochs, batch_size=run.settings["batch_size"],
                  validation_data=run.validation, callbacks=run.callbacks, devices=args.devices)
    except KeyboardInterrupt:
        # fit leaves the model as the last finished epoch left it: that is what gets saved
        run.progress.close()
        raise Interrupted(interrupted(model, save, run.write, args)) from None
    except TrainingDiverged as err:
        run.progress.close()
        kept = (f"; {save} holds epoch {run.write.saved_epoch}, intact"
                if save and run.write.saved_epoch is not None else "; nothing was saved")
        raise CLIError(f"{err}{kept}") from None
    finally:
        run.progress.close()
    run.fit_seconds = time.perf_counter() - run.start


def report(run):
    """Evaluate on the test split, write the files, print the result."""
    args, model, data, save = run.args, run.model, run.data, run.save
    test = model.evaluate(data.x_test, data.y_test)
    wall = time.perf_counter() - run.start
    if save and model.epoch == run.start_epoch:  # no epoch ran: still write what we have
        checkpoint.save(model, save, extra=run.extra)
    history = {k: v for k, v in model.history.items() if k != "step_loss"}
    history_file = history_path(save, args.plot) if save or args.plot else None
    if history_file:
        write_json(history_file, history)
    if args.plot:
        plot(args.plot, history, test, data.name, arch(model))
    ran = model.epoch - run.start_epoch
    speed = ran * len(run.y) / run.fit_seconds if run.fit_seconds > 0 and ran else 0.0
    stopped = bool(run.stopper and run.stopper.stopped_at)
    result = {
        "dataset": data.name, "architecture": arch(model), "backend": model.backend.spec,
        "dtype": model.dtype, "precision": model.precision, "epochs": model.epoch, "epochs_run": ran,
        "stopped_early": stopped,
        "train_loss": history.get("loss", [None])[-1] if history else None,
        "train_accuracy": history.get("accuracy", [None])[-1] if history else None,
        "test_loss": test["loss"], "test_accuracy": test.get("accuracy"),
        "wall_time_s": round(wall, 3), "samples_per_s": round(speed, 1),
        "checkpoint": save, "history_file": history_file, "plot": args.plot,
    }
    if run.validation is not None and "val_accuracy" in history:
        result.update(val_loss=history["val_loss"][-1], val_accuracy=history["val_accuracy"][-1])
    stop = f" (early stop at epoch {run.stopper.stopped_at})" if stopped else ""
    say(args, f"test accuracy {test.get('accuracy', float('nan')):.2%} (loss {test['loss']:.4f}) after "
              f"{model.epoch} epochs{stop} in {wall:.1f} s ({speed:,.0f} samples/s) on "
              f"{model.backend.spec}, {_precision.describe(model.dtype, model.precision)}"
              f"{'; saved ' + save if save else ''}")
    if args.json:
        print(json.dumps(result))
    return 0


def settings_of(args, meta):
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


def interrupted(model, save, write, args):
    """Save the last finished epoch (unless already saved); the line to print."""
    where = f"in epoch {model.epoch + 1}"
    if not save:
        return f"interrupted {where}; nothing saved (--save PATH keeps every finished epoch)"
    if write.saved_epoch is None and model.epoch == 0:
        return f"interrupted {where}; no epoch had finished, so nothing was saved"
    if write.saved_epoch != model.epoch:
        write(model)
    write_json(history_path(save, args.plot), {k: v for k, v in model.history.items() if k != "step_loss"})
    return (f"interrupted {where}; {save} holds epoch {model.epoch} "
            f"(continue with: mlp train --resume {save})")
