"""Switch backends in code: train on NumPy, move to JAX (and CuPy if a GPU
exists), keep training, and compare predictions across backends.

``model.to("jax")`` moves the parameters and the optimizer state in memory
(DLPack where the libraries allow); the training code is the same on each.
The same script also follows the environment: ``MLP_BACKEND=torch python
examples/switch_backends.py --env`` trains wherever MLP_BACKEND points.

Run:  python examples/switch_backends.py [--epochs 3] [--env]
"""
import argparse

import numpy as np

from mlp import backends
import mlp
from mlp import datasets


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3, help="epochs on each backend")
    parser.add_argument("--env", action="store_true", help="train only on the backend MLP_BACKEND names")
    args = parser.parse_args(argv)
    data = datasets.load("digits")
    fit = dict(epochs=args.epochs, batch_size=64)

    if args.env:
        model = mlp.MLP([64, 64, 10], seed=0)  # no backend given: MLP_BACKEND, else numpy
        model.fit(data.x_train, data.y_train, **fit)
        print(f"trained on {model.backend} (from MLP_BACKEND): "
              f"test accuracy {model.evaluate(data.x_test, data.y_test)['accuracy']:.1%}")
        return {model.backend.name: model}

    model = mlp.MLP([64, 64, 10], backend="numpy", seed=0)
    targets = ["numpy", "jax"]
    if backends.available()["cupy"].ready:
        targets.append("cupy")
    predictions = {}
    for name in targets:
        try:
            model.to(name)
        except backends.BackendUnavailable as err:
            print(f"skipping {name}: {err}")
            continue
        model.fit(data.x_train, data.y_train, **fit)
        acc = model.evaluate(data.x_test, data.y_test)["accuracy"]
        print(f"{str(model.backend):<28} after {model.epoch} epochs: test accuracy {acc:.1%}")
        predictions[name] = model.backend.to_numpy(model.predict_proba(data.x_test))

    # The same parameters give the same predictions on every backend.
    final = {}
    for name in predictions:
        model.to(name)
        final[name] = model.backend.to_numpy(model.predict_proba(data.x_test))
    ref = final["numpy"]
    for name, p in final.items():
        print(f"max |p_{name} - p_numpy| = {np.abs(p - ref).max():.2e}, "
              f"same predicted classes: {np.array_equal(p.argmax(1), ref.argmax(1))}")
    return final


if __name__ == "__main__":
    main()
