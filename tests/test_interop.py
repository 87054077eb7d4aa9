"""PyTorch state_dicts and modules both ways, and arrays of other libraries as input (DLPack)."""
import warnings

import numpy as np
import pytest

from mlp import backends
import mlp
from mlp import interop, layers
from mlp.errors import DataError, DeviceMismatch, ShapeError
from mlp.interop import CopyWarning, from_foreign, from_torch_module
from mlp.tree import leaves

torch = pytest.importorskip("torch", reason="PyTorch interop needs torch: pip install 'arraymlp[torch]'")
nn = torch.nn

X = np.random.default_rng(0).normal(size=(24, 6))
Y = (X[:, 0] > 0).astype(np.int64) + (X[:, 1] > 0)  # learnable: 0, 1 or 2
ACTS = sorted(set(layers.ACTIVATIONS) - {"logistic", "linear"})


def _model(act="relu", **kw):
    return mlp.Sequential(mlp.Linear(6, 8), layers.activation(act), mlp.Dropout(0.25), mlp.Linear(8, 5),
                          layers.activation(act), mlp.Linear(5, 3, bias=False), **kw)


def _torch_out(net, x):
    with torch.no_grad():
        return net(torch.as_tensor(x)).numpy()


# -- mlp -> PyTorch -------------------------------------------------------------------------
def test_state_dict_layout_is_pytorchs():
    model = _model(seed=1)
    sd = model.state_dict()
    assert list(sd) == ["0.weight", "0.bias", "3.weight", "3.bias", "5.weight"]
    assert all(isinstance(v, torch.Tensor) for v in sd.values())
    assert tuple(sd["0.weight"].shape) == (8, 6) and tuple(sd["5.weight"].shape) == (3, 5)
    np.testing.assert_array_equal(sd["3.weight"].numpy(), np.asarray(model.params[3]["W"]).T)
    host = model.state_dict(format="numpy")
    assert all(type(v) is np.ndarray and v.flags.c_contiguous for v in host.values())
    with pytest.raises(ValueError, match="format must be one of 'torch', 'numpy', got 'keras'"):
        model.state_dict(format="keras")


@pytest.mark.parametrize("act", ACTS)
def test_to_torch_module_predicts_what_mlp_predicts(act):
    model = _model(act, seed=2)
    model.fit(X, Y, epochs=2, batch_size=8)  # trained: biases are not zero
    net = model.to_torch_module()
    assert not net.training and len(net) == len(model.layers)
    x = X.astype(np.float32) * 2
    np.testing.assert_allclose(_torch_out(net, x), model.forward(x), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(_torch_out(net, x).argmax(1), model.predict(x))


def test_a_hand_built_sequential_takes_the_state_dict():
    model = _model("tanh", seed=3)
    net = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Dropout(0.25), nn.Linear(8, 5), nn.Tanh(),
                        nn.Linear(5, 3, bias=False))
    net.load_state_dict(model.state_dict())
    net.eval()
    np.testing.assert_allclose(_torch_out(net, X.astype(np.float32)), model.forward(X), rtol=1e-5, atol=1e-6)


def test_models_on_every_cell_leave_for_torch(cell):
    model = mlp.MLP([6, 8, 3], "gelu", backend=cell.spec, dtype=cell.dtype, seed=4)
    net = model.to_torch_module()
    assert net[0].weight.dtype == getattr(torch, cell.dtype)
    x = cell.host(X)
    cell.assert_close(model.forward(x), _torch_out(net, x.astype(cell.dtype)), what="torch module")


def test_layers_without_a_pytorch_counterpart_are_named():
    class Square(mlp.Layer):
        def forward(self, xp, params, x, train=False, mask=None):
            return x * x, lambda dy, need_dx=True: (2 * x * dy, {})

    model = mlp.Sequential(mlp.Linear(6, 4), Square(), mlp.Linear(4, 3))
    with pytest.raises(ValueError, match=r"layer 1 Square\(\) has no PyTorch counterpart"):
        model.to_torch_module()
    assert list(model.state_dict("numpy")) == ["0.weight", "0.bias", "2.weight", "2.bias"]


# -- PyTorch -> mlp -------------------------------------------------------------------------
def _torch_net(dtype=torch.float32):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.LeakyReLU(0.1), nn.Dropout(0.5), nn.Linear(16, 8),
                         nn.GELU(approximate="tanh"), nn.Linear(8, 8), nn.Sigmoid(), nn.Linear(8, 3),
                         nn.Softmax(dim=-1)).to(dtype).eval()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_from_torch_module_predicts_what_torch_predicts(dtype):
    net = _torch_net(getattr(torch, dtype))
    model = from_torch_module(net)
    assert model.dtype == dtype and [type(layer).__name__ for layer in model.layers] == [
        "Linear", "LeakyReLU", "Dropout", "Linear", "GELU", "Linear", "Sigmoid", "Linear", "Softmax"]
    x = X.astype(dtype)
    tol = 1e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(model.forward(x), _torch_out(net, x), rtol=tol, atol=tol)
    # and back again: the same weights, bit for bit
    for k, v in model.state_dict().items():
        assert torch.equal(v, net.state_dict()[k]), k


def test_load_state_dict_into_a_model_on_every_cell(cell):
    net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)).to(getattr(torch, cell.dtype)).eval()
    model = mlp.MLP([6, 8, 3], backend=cell.spec, dtype=cell.dtype)
    model.fit(cell.host(X), Y, epochs=1, batch_size=8)
    before = [np.array(cell.to_numpy(p)) for p in (model.params[0]["W"], model.params[2]["b"])]
    old = model.params
    assert model.load_state_dict(net.state_dict()) is model
    assert model.params is not old and all(cell.backend.owns(a) for p in model.params for a in p.values())
    np.testing.assert_array_equal(cell.to_numpy(old[0]["W"]), before[0])  # the old arrays are untouched
    fresh = [cell.to_numpy(a) if hasattr(a, "shape") else np.asarray(a) for a in leaves(model.opt_state)]
    assert not any(np.any(a) for a in fresh)  # Adam starts afresh: step 0, zero moments
    x = cell.host(X)
    cell.assert_close(model.forward(x), _torch_out(net, x.astype(cell.dtype)), what="after load_state_dict")


def test_state_dict_errors():
    model = mlp.MLP([6, 8, 3])
    sd = model.state_dict()
    with pytest.raises(ShapeError, match=r"state_dict\['0.weight'\] is \[6 x 8\], but layer 0 Linear\(6 -> 8\) "
                                         r"needs \[8 x 6\] \(PyTorch's \[out x in\] layout\)"):
        model.load_state_dict({**sd, "0.weight": sd["0.weight"].T})
    with pytest.raises(ValueError, match=r"missing keys \['2.bias'\], unexpected keys \['2.b'\]"):
        model.load_state_dict({k if k != "2.bias" else "2.b": v for k, v in sd.items()})
    for bad, text in ((nn.GELU(), r"module 1 GELU\(approximate='none'\) has no mlp counterpart"),
                      (nn.Conv1d(1, 1, 1), r"module 1 Conv1d.* has no mlp counterpart")):
        with pytest.raises(ValueError, match=text):
            from_torch_module(nn.Sequential(nn.Linear(6, 8), bad, nn.Linear(8, 3)))
    with pytest.raises(TypeError, match="expected a torch.nn.Sequential, got Linear"):
        from_torch_module(nn.Linear(6, 3))


# -- arrays of other libraries ----------------------------------------------------------------
def test_a_torch_tensor_trains_a_numpy_model_without_a_copy():
    x = X.astype(np.float32)
    tensor, labels = torch.from_numpy(x), torch.from_numpy(Y)
    numpy_backend = backends.get("numpy")
    shared = from_foreign(tensor, numpy_backend)
    assert shared.ctypes.data == tensor.data_ptr()  # zero-copy: the same buffer
    a, b = _model(seed=5), _model(seed=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CopyWarning)
        a.fit(tensor, labels, epochs=5, batch_size=8)
    b.fit(x, Y, epochs=5, batch_size=8)
    assert a.history["loss"] == b.history["loss"] and a.history["loss"][-1] < a.history["loss"][0]
    assert a.evaluate(tensor, labels) == b.evaluate(x, Y)


def test_a_jax_array_reaches_a_jax_model_without_a_copy(monkeypatch):
    """The compiled forward pass of ``predict`` receives the caller's buffer itself."""
    jnp = pytest.importorskip("jax.numpy")
    model = mlp.MLP([6, 8, 3], backend="jax")
    x = jnp.asarray(X.astype(np.float32))
    seen, jit = [], model.backend.jit

    def spying_jit(fn, **kwargs):
        compiled = jit(fn, **kwargs)

        def call(params, batch, *rest):
            seen.append(batch.unsafe_buffer_pointer())
            return compiled(params, batch, *rest)

        return call

    monkeypatch.setattr(model.backend, "jit", spying_jit)  # the model compiles its forward on first use
    got = model.predict(x)
    assert seen == [x.unsafe_buffer_pointer()]
    np.testing.assert_array_equal(np.asarray(got), np.asarray(model.predict(np.array(x))))
    assert len(seen) == 2 and seen[1] != seen[0]  # the check can tell: other data, another buffer


def test_host_arrays_of_another_library_reach_every_cell(cell):
    """A CPU array of another library is shared where the model is on the host, and
    copied with a CopyWarning where it lives on a (real or simulated) device."""
    if cell.name == "torch":
        other = pytest.importorskip("jax.numpy").asarray(X.astype(cell.dtype))
    else:
        other = torch.from_numpy(X.astype(cell.dtype))
    labels = torch.from_numpy(Y) if cell.name != "torch" else pytest.importorskip("jax.numpy").asarray(Y)
    model = mlp.MLP([6, 8, 3], backend=cell.spec, dtype=cell.dtype, seed=6)
    x = cell.host(X)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = model.predict(other)
        scores = model.evaluate(other, labels)
    copied = cell.gpu or (cell.name == "array_api_strict" and cell.backend.device_name != "cpu")
    assert bool([w for w in caught if issubclass(w.category, CopyWarning)]) == copied, caught
    assert cell.backend.owns(got)
    np.testing.assert_array_equal(cell.to_numpy(got), cell.to_numpy(model.predict(x)))
    assert scores == model.evaluate(x, Y)


def test_copy_warning_says_what_was_copied_where():
    model = mlp.MLP([6, 8, 3], backend="array_api_strict:device1")
    with pytest.warns(CopyWarning, match=r"mlp: x \(a torch array on cpu\) was copied to "
                                         r"Backend\(array_api_strict .*device1\): DLPack shares memory"):
        model.predict(torch.from_numpy(X))


def test_float64_tensors_reach_a_device_without_float64():
    model = mlp.MLP([6, 8, 3], backend="array_api_strict:no_float64")
    with pytest.warns(CopyWarning):
        got = model.predict(torch.from_numpy(X))  # float64, copied as float32
    np.testing.assert_array_equal(model.backend.to_numpy(got), model.backend.to_numpy(model.predict(X)))


def test_a_tensor_that_needs_grad_is_a_clear_error():
    with pytest.raises(DataError, match=r"x \(a torch array on cpu\) could not be read through DLPack "
                                        r"\(BufferError: Can't export tensors that require gradient"):
        mlp.MLP([6, 8, 3]).predict(torch.ones(2, 6, requires_grad=True))


def test_the_same_library_on_another_device_stays_an_error():
    strict = pytest.importorskip("array_api_strict")
    model = mlp.MLP([6, 8, 3], backend="array_api_strict:device1")
    with pytest.raises(DeviceMismatch, match=r"x is an array_api_strict array on device2, but the model lives "
                                             r"on Backend\(array_api_strict .*device1\)"):
        model.predict(strict.asarray(X, device=strict.Device("device2")))


@pytest.mark.gpu
def test_gpu_tensors_between_libraries():
    """On a CUDA machine: a CUDA tensor is shared with a CuPy model on its GPU, copied
    (with a warning) to a NumPy model, and refused by a torch model on the CPU."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device for torch")
    t = torch.from_numpy(X.astype(np.float32)).cuda()
    with pytest.warns(CopyWarning, match="was copied to Backend\\(numpy"):
        got = mlp.MLP([6, 8, 3]).predict(t)
    assert got.shape == (24,)
    with pytest.raises(DeviceMismatch, match="torch array on cuda:0"):
        mlp.MLP([6, 8, 3], backend="torch").predict(t)
    try:
        cupy_backend = backends.get("cupy")
    except backends.BackendUnavailable as err:
        pytest.skip(str(err))
    assert from_foreign(t, cupy_backend).data.ptr == t.data_ptr()
    assert interop.describe(t) == "a torch array on cuda:0"
