"""Every example runs, on small sizes, and shows what its docstring promises."""
import importlib.util
import pathlib

import numpy as np
import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"


def load(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_example_has_a_docstring_and_a_test():
    tested = {line.split('load("')[1].split('"')[0]
              for line in pathlib.Path(__file__).read_text().splitlines() if 'load("' in line}
    for path in EXAMPLES.glob("*.py"):
        module_doc = path.read_text().split('"""')[1]
        assert "Run:" in module_doc, f"{path.name} docstring says how to run it"
        assert path.stem in tested, f"{path.name} has no smoke test"


def test_shapes(capsys):
    model = load("shapes").main(["--batch", "4", "--features", "2", "--hidden", "3", "--outputs", "5"])
    out = capsys.readouterr().out
    assert "[4 x 2] @ [2 x 3] + [1 x 3] -> [4 x 3]" in out
    assert "[4 x 3] @ [3 x 5] + [1 x 5] -> [4 x 5]" in out
    assert model.num_params == 2 * 3 + 3 + 3 * 5 + 5
    assert "784 x 16 = 12,544" in out and "16 x 10 = 160" in out
    assert "Total params: 12,730" in out


def test_custom_backend(capsys):
    from mlp import backends

    try:
        model, history = load("custom_backend").main(["--epochs", "15"])
    finally:
        backends._loaders.pop("sim", None)
        backends._cache.clear()
    out = capsys.readouterr().out
    assert "Backend(sim" in out and "device2" in out
    assert history["loss"][-1] < history["loss"][0]
    assert history["accuracy"][-1] > 0.8


def test_check_against_pytorch(capsys):
    pytest.importorskip("torch")
    diffs = load("check_against_pytorch").main(["--dtype", "float64"])
    assert set(diffs) >= {"logits", "loss"} and len(diffs) == 2 + 2 * 3
    assert max(diffs.values()) < 1e-12
    assert "largest absolute differences from PyTorch" in capsys.readouterr().out


def test_switch_backends(capsys):
    pytest.importorskip("jax")
    final = load("switch_backends").main(["--epochs", "2"])
    out = capsys.readouterr().out
    assert "Backend(numpy" in out and "Backend(jax" in out
    ref = final["numpy"]
    for name, p in final.items():
        np.testing.assert_allclose(p, ref, rtol=1e-4, atol=1e-5)
        assert np.array_equal(p.argmax(1), ref.argmax(1)), name


def test_switch_backends_follows_the_environment(monkeypatch, capsys):
    monkeypatch.setenv("MLP_BACKEND", "array_api_strict")
    models = load("switch_backends").main(["--epochs", "1", "--env"])
    assert list(models) == ["array_api_strict"]
    assert "Backend(array_api_strict" in capsys.readouterr().out


def test_train_gpu_on_cpu_and_without_a_gpu(capsys):
    example = load("train_gpu")
    speed = example.main(["--device", "cpu", "--epochs", "1"])
    assert speed > 0
    out = capsys.readouterr().out
    assert "training on Backend(numpy" in out and "samples/s" in out
    from mlp import backends

    try:
        backends.get("gpu")
        pytest.skip("a GPU is present: the no-GPU message cannot be shown here")
    except backends.BackendUnavailable:
        pass
    assert example.main(["--device", "gpu", "--epochs", "1"]) is None
    assert "No gpu here: no backend has CUDA device gpu:0" in capsys.readouterr().out


def test_weights_as_images(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "w.png"
    load("weights_as_images").main(["--dataset", "digits", "--hidden", "4", "--epochs", "2", "--out", str(out)])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 2000
    assert "4 units of 8x8 weights" in capsys.readouterr().out
