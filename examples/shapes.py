"""How the shapes line up in a multilayer perceptron.

The classic question: "my input is 4x2 and the next matrix is 2x3; how do I get
an output with K columns?" A layer computes ``[B x D] @ [D x Z] + [1 x Z]``:
the batch size B passes through untouched, the inner D's must match, and the
layer's weight matrix decides the new width Z. Chain a second layer
``[B x Z] @ [Z x K] + [1 x K]`` and you have K columns.

Run:  python examples/shapes.py [--batch 4] [--features 2] [--hidden 3] [--outputs 5]
"""
import argparse

import numpy as np

import mlp


def walk(model, x):
    """Push ``x`` through the model one layer at a time, printing each shape."""
    xp = model.backend.xp
    h = model.backend.asarray(x, model.dtype)
    print(f"input                      {mlp.errors.fmt_shape(h.shape)}")
    for layer, params in zip(model.layers, model.params):
        out, _ = layer.forward(xp, params, h)
        if isinstance(layer, mlp.Linear):
            w, b = params["W"], params["b"]
            print(f"{layer!r:<26} {mlp.errors.fmt_shape(h.shape)} @ {mlp.errors.fmt_shape(w.shape)}"
                  f" + [1 x {b.shape[0]}] -> {mlp.errors.fmt_shape(out.shape)}"
                  f"   ({w.shape[0]} x {w.shape[1]} weights + {b.shape[0]} biases"
                  f" = {w.shape[0] * w.shape[1] + b.shape[0]} parameters)")
        else:
            print(f"{layer!r:<26} element-wise, keeps the shape -> {mlp.errors.fmt_shape(out.shape)}")
        h = out
    return h


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4, help="B: rows in the batch")
    parser.add_argument("--features", type=int, default=2, help="D: features per row")
    parser.add_argument("--hidden", type=int, default=3, help="Z: neurons in the hidden layer")
    parser.add_argument("--outputs", type=int, default=5, help="K: output columns")
    args = parser.parse_args(argv)
    B, D, Z, K = args.batch, args.features, args.hidden, args.outputs

    print(f"A batch of B={B} rows with D={D} features, a hidden layer of Z={Z} neurons, K={K} outputs:\n")
    model = mlp.Sequential(mlp.Linear(D, Z), mlp.ReLU(), mlp.Linear(Z, K), seed=0)
    x = np.random.default_rng(0).random((B, D))
    out = walk(model, x)
    print(f"\nThe output is [B x K] = {mlp.errors.fmt_shape(out.shape)}; "
          f"{model.num_params} parameters in all ({D}*{Z} + {Z} + {Z}*{K} + {K}).")
    print("Only the inner sizes must agree: D with the first matrix's rows, Z with the second's.\n")

    print("The textbook digit network, 784 pixels -> 16 hidden neurons -> 10 digits:\n")
    print(mlp.MLP([784, 16, 10]).summary())
    return model


if __name__ == "__main__":
    main()
