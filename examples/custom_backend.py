"""Register a backend of your own and train on it.

A backend is an array library on one device. Here we register
array-api-strict on its simulated device ``device2`` under the new name
``sim`` (a stand-in for a new accelerator), then train a model on it. The model
code does not change: it only ever talks to the backend's array API namespace.
A package can do the same without code, through an entry point in the
``mlp.backends`` group (see docs/architecture.md).

Run:  python examples/custom_backend.py [--epochs 5]
"""
import argparse

import numpy as np

from mlp import backends
import mlp


def load_sim(device=None):
    """Loader: device text after 'sim:' (or None) -> a Backend."""
    import array_api_strict as xps

    name = device or "device2"
    return backends.Backend("sim", xps, xps.Device(name), version=xps.__version__, device_name=name)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args(argv)

    if "sim" not in backends.names():
        backends.register("sim", load_sim)
    sim = backends.get("sim")
    print("registered:", sim, "| devices of array_api_strict:", backends.available()["array_api_strict"].devices)

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 2))
    y = (x[:, 0] * x[:, 1] > 0).astype(int)  # XOR of the signs
    model = mlp.MLP([2, 16, 2], activation="tanh", backend="sim", seed=0)
    history = model.fit(x, y, epochs=args.epochs, batch_size=32, optimizer=mlp.Adam(lr=0.05))
    pred = model.predict(x)
    print(f"trained on {model.backend}: loss {history['loss'][0]:.3f} -> {history['loss'][-1]:.3f}, "
          f"accuracy {history['accuracy'][-1]:.1%}, predictions live on {pred.device}")
    return model, history


if __name__ == "__main__":
    main()
