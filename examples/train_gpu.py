"""Train on the CPU or a GPU with one flag.

``--device gpu`` picks the first library with a CUDA device (CuPy, then JAX,
then PyTorch); ``--backend jax --device gpu`` asks for one in particular. On a
machine without a GPU this says so, and what is missing, and exits cleanly.

Run:  python examples/train_gpu.py --device cpu
      python examples/train_gpu.py --device gpu [--backend jax]
"""
import argparse
import time

from mlp import backends
import mlp
from mlp import datasets


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu, gpu or gpu:N")
    parser.add_argument("--backend", default=None, help="numpy, cupy, jax, torch (default: any with the device)")
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args(argv)

    try:
        backend = backends.get(args.backend, device=args.device)
    except backends.BackendUnavailable as err:
        print(f"No {args.device} here: {err}")
        return None
    data = datasets.load("digits")
    model = mlp.MLP([64, 128, 10], backend=backend, seed=0)
    print(f"training on {backend} (device: {backend.device})")
    model.fit(data.x_train, data.y_train, epochs=1, batch_size=64)  # warm-up (compiles on JAX)
    start = time.perf_counter()
    model.fit(data.x_train, data.y_train, epochs=args.epochs, batch_size=64)
    backend.synchronize(*[a for p in model.params for a in p.values()])
    seconds = time.perf_counter() - start
    acc = model.evaluate(data.x_test, data.y_test)["accuracy"]
    speed = args.epochs * len(data.x_train) / seconds
    print(f"{args.epochs} epochs in {seconds:.2f} s ({speed:,.0f} samples/s), test accuracy {acc:.1%}")
    return speed


if __name__ == "__main__":
    main()
