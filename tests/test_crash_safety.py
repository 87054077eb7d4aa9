"""Nothing is lost: a process killed while saving, and Ctrl-C during ``mlp train --save``."""
from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from mlp import callbacks, checkpoint, cli

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

SAVER = r"""
import os, sys, time
import numpy as np
import mlp
from mlp import checkpoint

real_fsync = os.fsync
def slow_fsync(fd):  # a slow disk: kills often land between writing the new file and the rename
    time.sleep(0.004)
    real_fsync(fd)
os.fsync = slow_fsync

path = sys.argv[1]
model = mlp.MLP([64, 256, 256, 10], backend="numpy", seed=0)
model.set_optimizer("adam")
epoch = int(sys.argv[2])
print("ready", flush=True)
while True:  # saves until killed; each save carries its own epoch and matching weights
    epoch += 1
    model.epoch = epoch
    model.params = [{k: np.full_like(v, epoch) for k, v in p.items()} for p in model.params]
    checkpoint.save(model, path)
"""


def _env():
    env = dict(os.environ)
    env.pop("MLP_BACKEND", None)
    env.pop("MLP_DEVICE", None)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_killed_while_saving_leaves_a_loadable_checkpoint(tmp_path):
    """SIGKILL a process that saves in a loop, at random moments, many times: the
    checkpoint always loads, whole (weights match the epoch), and never goes back."""
    path = str(tmp_path / "run.safetensors")
    rng = random.Random(7)
    last = 0
    kills, mid_save, deadline = 0, 0, time.monotonic() + 8.0
    while kills < 25 and (kills < 8 or time.monotonic() < deadline):
        child = subprocess.Popen([sys.executable, "-c", SAVER, path, str(last)], stdout=subprocess.PIPE,
                                 env=_env(), text=True)
        assert child.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.0, 0.12))
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
        kills += 1
        stray = [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]
        mid_save += bool(stray)
        for f in stray:
            os.unlink(tmp_path / f)
        if not os.path.exists(path):  # killed before its first save finished: nothing to load yet
            continue
        model, meta = checkpoint.load(path)
        assert model.epoch >= last
        for p in model.params:
            for v in p.values():
                assert np.all(np.asarray(v) == model.epoch)  # one save's weights, not a mixture
        last = model.epoch
    assert last > 0, "no save ever completed"
    assert mid_save > 0, "no kill landed during a write"  # about half of them do
    print(f"{kills} kills, {mid_save} of them during a write, last epoch {last}")


def _train(*argv, cwd):
    return subprocess.Popen([sys.executable, "-m", "mlp", "train", *argv], cwd=cwd, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


SMALL = ["--hidden", "16", "--batch-size", "64", "--seed", "3", "--dropout", "0.1"]


def test_ctrl_c_saves_the_last_epoch_and_resumes(tmp_path, monkeypatch):
    """SIGINT to a real ``mlp train --save``: exit 130, one line, no traceback; the
    checkpoint holds the last finished epoch and resuming from it continues exactly."""
    run = _train("--save", "run.safetensors", "--epochs", "100000", "--quiet", *SMALL, cwd=tmp_path)
    start = time.monotonic()
    while not (tmp_path / "run.safetensors").exists():
        assert run.poll() is None, run.communicate()
        assert time.monotonic() - start < 60
        time.sleep(0.01)
    time.sleep(0.1)
    run.send_signal(signal.SIGINT)
    out, err = run.communicate(timeout=60)
    assert run.returncode == 130, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    m = re.fullmatch(r"mlp: interrupted in epoch (\d+); run\.safetensors holds epoch (\d+) "
                     r"\(continue with: mlp train --resume run\.safetensors\)", err.strip())
    assert m and int(m.group(2)) == int(m.group(1)) - 1, err
    saved = int(m.group(2))
    model, meta = checkpoint.load(str(tmp_path / "run.safetensors"))
    assert model.epoch == saved >= 1
    history = json.loads((tmp_path / "run.history.json").read_text())
    assert len(history["loss"]) == saved

    resumed = _train("--resume", "run.safetensors", "--epochs", "2", "--json", "--quiet", cwd=tmp_path)
    out, err = resumed.communicate(timeout=60)
    assert resumed.returncode == 0, err
    result = json.loads(out)
    assert result["epochs"] == saved + 2 and result["epochs_run"] == 2

    # the same number of epochs without an interruption gives the same model
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLP_BACKEND", raising=False)
    status = cli.main(["train", "--save", "whole.safetensors", "--epochs", str(saved + 2), "--quiet", *SMALL])
    assert status == 0
    whole, _ = checkpoint.load("whole.safetensors")
    again, _ = checkpoint.load("run.safetensors")
    for a, b in zip(whole.params, again.params):
        for k in a:
            assert np.array_equal(np.asarray(a[k]), np.asarray(b[k]))


def test_ctrl_c_while_saving_still_saves_that_epoch(tmp_path, monkeypatch, capsys):
    """Ctrl-C during the save of epoch 3 (the write is abandoned, the file keeps
    epoch 2): the command writes epoch 3 before it exits."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLP_BACKEND", raising=False)
    real, calls = checkpoint.write_atomic, [0]

    def write(path, data):
        calls[0] += 1
        if calls[0] == 3:
            raise KeyboardInterrupt
        return real(path, data)

    monkeypatch.setattr(checkpoint, "write_atomic", write)
    status = cli.main(["train", "--save", "run.safetensors", "--epochs", "5", "--quiet", *SMALL])
    err = capsys.readouterr().err
    assert status == 130
    assert err.strip() == ("mlp: interrupted in epoch 4; run.safetensors holds epoch 3 "
                           "(continue with: mlp train --resume run.safetensors)")
    assert checkpoint.load("run.safetensors")[0].epoch == 3 and calls[0] == 4
    assert sorted(os.listdir(tmp_path)) == ["run.history.json", "run.safetensors"]  # no stray temporary file


def test_ctrl_c_before_the_first_epoch_saves_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLP_BACKEND", raising=False)

    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(callbacks.ProgressBar, "on_batch", stop)
    assert cli.main(["train", "--save", "run.safetensors", "--epochs", "3", *SMALL]) == 130
    assert "no epoch had finished, so nothing was saved" in capsys.readouterr().err
    assert not os.path.exists("run.safetensors")
