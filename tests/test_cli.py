"""The ``mlp`` command, through ``mlp.cli.main`` on small data (and once as ``python -m mlp``)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file

from mlp import backends
from mlp import cli, datasets
from mlp.cli import main

from test_datasets import write_fake_idx

SMALL = ["--hidden", "16", "--batch-size", "64"]


@pytest.fixture(autouse=True)
def _default_backend(monkeypatch):
    """These tests are about the command's defaults: NumPy unless a flag says otherwise."""
    monkeypatch.delenv("MLP_BACKEND", raising=False)
    monkeypatch.delenv("MLP_DEVICE", raising=False)


def run(capsys, *argv):
    """``(status, stdout, stderr)`` of ``mlp ARGV``."""
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def train_json(capsys, *argv):
    status, out, err = run(capsys, "train", "--json", *argv)
    assert status == 0, err
    return json.loads(out)


def test_train_progress_summary_checkpoint_history(capsys, tmp_path):
    save = str(tmp_path / "a.safetensors")
    status, out, err = run(capsys, "train", "--epochs", "2", *SMALL, "--save", save)
    assert status == 0
    assert "epoch 1/2" in err and "epoch 2/2" in err and "samples/s" in err and "loss=" in err and "acc=" in err
    summary = out.strip().splitlines()[-1]
    assert summary.startswith("test accuracy ") and "after 2 epochs" in summary and "numpy:cpu" in summary
    assert os.path.exists(save)
    history = json.load(open(str(tmp_path / "a.history.json")))
    assert len(history["loss"]) == 2 and len(history["accuracy"]) == 2


def test_train_json_and_quiet(capsys):
    status, out, err = run(capsys, "train", "--epochs", "1", *SMALL, "--json", "--quiet")
    assert status == 0 and err == ""
    result = json.loads(out)
    assert result["dataset"] == "digits" and result["architecture"] == "64-16-10" and result["epochs"] == 1
    assert 0.0 <= result["test_accuracy"] <= 1.0 and result["backend"] == "numpy:cpu"


def test_resume_is_bit_identical_through_the_cli(capsys, tmp_path):
    """train --epochs 3 --save a; train --resume a --epochs 2 == train --epochs 5 (dropout included)."""
    a, b = str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors")
    flags = [*SMALL, "--dropout", "0.2", "--optimizer", "momentum", "--lr", "0.05", "--quiet"]
    assert main(["train", "--epochs", "3", "--save", a, *flags]) == 0
    assert main(["train", "--resume", a, "--epochs", "2", "--quiet"]) == 0  # settings come from a
    assert main(["train", "--epochs", "5", "--save", b, *flags]) == 0
    ta, tb = load_file(a), load_file(b)
    assert sorted(ta) == sorted(tb) and any(k.startswith("opt.") for k in ta)
    for k in ta:
        assert np.array_equal(ta[k], tb[k]), k
    assert json.load(open(str(tmp_path / "a.history.json")))["loss"] == \
        json.load(open(str(tmp_path / "b.history.json")))["loss"]
    capsys.readouterr()
    status, _, err = run(capsys, "train", "--resume", a, "--hidden", "32")
    assert status == 2 and err.startswith("mlp: error: --hidden 32 differs from the checkpoint's 16")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("ckpt") / "digits.safetensors")
    assert main(["train", "--epochs", "3", *SMALL, "--save", path, "--quiet"]) == 0
    return path


def test_evaluate_prints_accuracy_loss_confusion(capsys, saved):
    status, out, _ = run(capsys, "evaluate", saved)
    assert status == 0
    assert "digits test: accuracy" in out and "loss" in out and "confusion matrix" in out
    rows = out.strip().splitlines()[-10:]
    assert [r.split()[0] for r in rows] == [str(i) for i in range(10)]


def test_evaluate_on_array_api_strict_equals_numpy(capsys, saved):
    results = {}
    for spec in ("numpy", "array_api_strict"):
        status, out, err = run(capsys, "evaluate", saved, "--backend", spec, "--json")
        assert status == 0, err
        results[spec] = json.loads(out)
    a, b = results["numpy"], results["array_api_strict"]
    assert b["backend"].startswith("array_api_strict")
    assert a["accuracy"] == b["accuracy"] and a["confusion"] == b["confusion"] and a["n"] == 359
    assert sum(map(sum, a["confusion"])) == 359
    np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-6)


def test_evaluate_train_split(capsys, saved):
    status, out, _ = run(capsys, "evaluate", saved, "--split", "train", "--json")
    assert status == 0 and json.loads(out)["n"] == 1438


def test_predict_npy_csv_proba_output(capsys, saved, tmp_path):
    raw = np.load(os.path.join(os.path.dirname(datasets.__file__), "data", "digits.npz"))["x"][:6]
    npy, csv = str(tmp_path / "rows.npy"), str(tmp_path / "rows.csv")
    np.save(npy, raw)  # [6 x 8 x 8] raw pixels 0..16: flattened and scaled as in training
    np.savetxt(csv, raw.reshape(6, -1), delimiter=",", fmt="%d")
    status, out, _ = run(capsys, "predict", saved, npy)
    labels = out.split()
    assert status == 0 and len(labels) == 6 and all(label in "0123456789" for label in labels)
    status, out, _ = run(capsys, "predict", saved, csv, "--json", "--proba")
    result = json.loads(out)
    assert result["predictions"] == labels
    np.testing.assert_allclose(np.sum(result["probabilities"], axis=1), 1.0, rtol=1e-5)
    scaled = str(tmp_path / "scaled.npy")
    np.save(scaled, raw.reshape(6, -1) / 16.0)
    assert run(capsys, "predict", saved, scaled, "--scaled")[1].split() == labels
    target = str(tmp_path / "pred.csv")
    status, out, _ = run(capsys, "predict", saved, npy, "--proba", "--output", target)
    lines = open(target).read().splitlines()
    assert status == 0 and [line.split(",")[0] for line in lines] == labels and len(lines[0].split(",")) == 11
    target = str(tmp_path / "pred.npy")
    assert run(capsys, "predict", saved, npy, "--output", target)[0] == 0
    assert np.load(target).tolist() == [int(label) for label in labels]


def test_predict_errors(capsys, saved, tmp_path):
    wide = str(tmp_path / "wide.npy")
    np.save(wide, np.zeros((2, 65)))
    status, _, err = run(capsys, "predict", saved, wide)
    assert status == 2 and "rows of 65 values; the model takes 64" in err
    txt = tmp_path / "rows.txt"
    txt.write_text("1,2\n")
    assert "expected a .npy or .csv" in run(capsys, "predict", saved, str(txt))[2]


def test_summary(capsys, saved):
    status, out, _ = run(capsys, "summary", "--sizes", "784,16,10")
    assert status == 0 and "[B x 784] @ [784 x 16] + [1 x 16]" in out and "Total params: 12,730" in out
    status, out, _ = run(capsys, "summary", "--hidden", "32", "--json")
    assert status == 0 and json.loads(out)["params"] == 64 * 32 + 32 + 32 * 10 + 10
    status, out, _ = run(capsys, "summary", "--checkpoint", saved)
    assert status == 0 and "epoch 3" in out and "Linear(64 -> 16)" in out
    status, _, err = run(capsys, "summary", "--sizes", "4,2", "--hidden", "3")
    assert status == 2 and "either --sizes" in err


def test_backends(capsys):
    status, out, _ = run(capsys, "backends")
    assert status == 0 and out.splitlines()[0].split() == ["backend", "status", "version", "devices"]
    assert any(line.split()[:2] == ["numpy", "ready"] for line in out.splitlines())
    status, out, _ = run(capsys, "backends", "--json")
    table = {row["name"]: row for row in json.loads(out)}
    assert table["numpy"]["status"] == "ready" and "cupy" in table


def _no_gpu_here():
    try:
        backends.get(None, device="gpu")
    except backends.BackendUnavailable:
        return True
    return False


@pytest.mark.skipif(not _no_gpu_here(), reason="a CUDA device is present")
def test_device_gpu_without_cuda_is_one_clear_line(capsys):
    status, out, err = run(capsys, "train", "--device", "gpu", "--epochs", "1")
    assert status == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mlp: error: no backend has CUDA device gpu:0")
    assert "Traceback" not in err


def test_numpy_on_gpu_is_an_error(capsys):
    status, _, err = run(capsys, "train", "--backend", "numpy", "--device", "gpu")
    assert status == 2 and len(err.strip().splitlines()) == 1 and "numpy runs on the cpu only" in err


def test_errors_are_one_line(capsys, tmp_path):
    for argv, words in [
        (["train", "--dataset", "cifar"], "unknown dataset 'cifar'"),
        (["train", "--dataset", "mnist", "--data-dir", str(tmp_path)], "train-images-idx3-ubyte.gz"),
        (["train", "--early-stopping", "2"], "add --val-split"),
        (["evaluate", str(tmp_path / "none.safetensors")], "no checkpoint at"),
        (["train", "--backend", "nosuch"], "unknown backend 'nosuch'"),
    ]:
        status, _, err = run(capsys, *argv)
        assert status == 2 and err.startswith("mlp: error: ") and words in err, err
        assert len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit) as exit_:
        main([])  # no subcommand: argparse's usage error
    assert exit_.value.code == 2


@pytest.mark.parametrize("spec", ["jax", "torch"])
def test_other_backends_train_to_the_same_accuracy(capsys, spec):
    try:
        backends.get(spec)
    except backends.BackendUnavailable as err:
        pytest.skip(str(err))
    flags = ["--dataset", "spirals", "--hidden", "16", "--epochs", "2", "--dtype", "float64", "--quiet"]
    ref = train_json(capsys, *flags)
    other = train_json(capsys, *flags, "--backend", spec)
    assert other["backend"].startswith(spec)
    assert other["test_accuracy"] == ref["test_accuracy"]
    np.testing.assert_allclose(other["test_loss"], ref["test_loss"], rtol=1e-9)


def test_mnist_from_idx_files_and_user_csv(capsys, tmp_path):
    write_fake_idx(str(tmp_path / "mnist"), n_train=64, n_test=16)
    result = train_json(capsys, "--dataset", "mnist", "--data-dir", str(tmp_path), "--epochs", "1", *SMALL, "--quiet")
    assert result["architecture"] == "784-16-10"
    path = tmp_path / "points.csv"
    path.write_text("a,b,label\n" + "".join(f"{i % 7},{i % 5},{'odd' if i % 2 else 'even'}\n" for i in range(60)))
    result = train_json(capsys, "--dataset", f"csv:{path}", "--epochs", "1", "--hidden", "4", "--quiet")
    assert result["architecture"] == "2-4-2"


def test_validation_early_stopping_and_plot(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    plot = str(tmp_path / "curves.png")
    result = train_json(capsys, "--dataset", "xor", "--hidden", "8", "--epochs", "3", "--val-split", "0.25",
                        "--early-stopping", "5", "--plot", plot, "--quiet")
    assert result["epochs_run"] == 3 and not result["stopped_early"] and "val_accuracy" in result
    assert open(plot, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    history = json.load(open(str(tmp_path / "curves.history.json")))
    assert len(history["val_loss"]) == 3


def test_early_stopping_counts_epochs_without_improvement():
    from mlp import StopTraining
    from mlp.callbacks import EarlyStopping

    stop = EarlyStopping(2)
    for epoch, val in enumerate([1.0, 0.8, 0.9], start=1):
        stop(None, epoch, {"val_loss": val})
    with pytest.raises(StopTraining):
        stop(None, 4, {"val_loss": 0.85})
    assert stop.stopped_at == 4 and stop.best == 0.8


def test_plot_without_matplotlib(capsys, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    status, _, err = run(capsys, "train", "--plot", str(tmp_path / "p.png"))
    assert status == 2 and "pip install 'arraymlp[plot]'" in err


def test_python_dash_m_mlp(tmp_path):
    """One real process: ``python -m mlp`` trains, and importing the CLI loads no heavy library."""
    env = {**os.environ, "MLP_BACKEND": ""}
    proc = subprocess.run([sys.executable, "-m", "mlp", "train", "--dataset", "xor", "--hidden", "4", "--epochs", "1",
                           "--json", "--quiet"], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["architecture"] == "2-4-2"
    check = ("import sys, mlp.cli, mlp.checkpoint, mlp.datasets; "
             "print(sorted(m for m in ('jax', 'torch', 'cupy', 'matplotlib', 'sklearn') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "[]", proc.stderr


def test_resume_a_checkpoint_saved_from_python(capsys, tmp_path):
    """The command continues a model saved with the API exactly as ``fit`` would."""
    import mlp
    from mlp import checkpoint, datasets

    data = datasets.load("digits")
    model = mlp.MLP([64, 20, 10], activation="tanh", seed=2)
    model.fit(data.x_train, data.y_train, epochs=1, batch_size=32, optimizer="momentum")
    path = str(tmp_path / "api.safetensors")
    checkpoint.save(model, path)
    result = train_json(capsys, "--resume", path, "--epochs", "1", "--quiet")
    assert result["architecture"] == "64-20-10" and result["epochs"] == 2
    model.fit(data.x_train, data.y_train, epochs=1, batch_size=32)
    resumed, meta = checkpoint.load(path)
    assert all(np.array_equal(a, b) for p, q in zip(model.params, resumed.params) for a, b in zip(p.values(), q.values()))
    assert meta["extra"]["train"]["hidden"] == [20] and meta["extra"]["train"]["optimizer"] == "sgd"


def test_a_backends_folder_in_the_working_directory_shadows_nothing(tmp_path):
    """The registry is ``mlp.backends``: a user's own ``backends`` package in the
    working directory (first on ``sys.path`` for ``python -m``) is never imported."""
    (tmp_path / "backends").mkdir()
    (tmp_path / "backends" / "__init__.py").write_text("raise RuntimeError('the user folder was imported')\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(datasets.__file__)))
    env = {**os.environ, "MLP_BACKEND": ""}
    env["PYTHONPATH"] = os.pathsep.join([root] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    proc = subprocess.run([sys.executable, "-m", "mlp", "backends"], cwd=tmp_path, capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "numpy" in proc.stdout and "user folder" not in proc.stderr

