"""See what each hidden neuron looks for: its first-layer weights as an image.

Each hidden unit j of the first layer computes ``x @ W[:, j]``: one weight per
pixel. Reshaped to the image's shape, W[:, j] shows which strokes make the unit
fire (red: positive weights, blue: negative). Trained on ``mnist-sample``
(28x28) by default, or ``digits`` (8x8).

Run:  python examples/weights_as_images.py [--dataset mnist-sample] [--out weights.png]
Needs: pip install 'arraymlp[plot]'
"""
import argparse

import numpy as np

import mlp
from mlp import datasets


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mnist-sample", choices=["mnist-sample", "digits"])
    parser.add_argument("--hidden", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--out", default="weights.png")
    parser.add_argument("--weight-decay", type=float, default=1e-2,
                        help="L2 penalty: pulls weights that see no signal (the empty border) to zero")
    parser.add_argument("--backend", default=None)
    args = parser.parse_args(argv)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: pip install 'arraymlp[plot]'")
        return None

    data = datasets.load(args.dataset)
    d = data.x_train.shape[1]
    model = mlp.MLP([d, args.hidden, data.n_classes], backend=args.backend, seed=0)
    model.fit(data.x_train, data.y_train, epochs=args.epochs, batch_size=64,
              optimizer=mlp.Adam(lr=2e-3, weight_decay=args.weight_decay))
    acc = model.evaluate(data.x_test, data.y_test)["accuracy"]
    W = model.backend.to_numpy(model.params[0]["W"])  # [D x hidden]

    cols = int(np.ceil(np.sqrt(args.hidden)))
    rows = int(np.ceil(args.hidden / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.6 * rows + 0.4))
    for j, ax in enumerate(np.ravel(axes)):
        ax.axis("off")
        if j < args.hidden:
            w = W[:, j].reshape(data.image_shape)
            lim = np.abs(w).max()
            ax.imshow(w, cmap="RdBu_r", vmin=-lim, vmax=lim)
            ax.set_title(f"unit {j}", fontsize=8)
    fig.suptitle(f"First-layer weights, {args.dataset} {d}-{args.hidden}-{data.n_classes} "
                 f"(test accuracy {acc:.1%})", fontsize=9)
    fig.savefig(args.out, dpi=110, bbox_inches="tight")
    plt.close(fig)
    print(f"wrote {args.out}: {args.hidden} units of {data.image_shape[0]}x{data.image_shape[1]} "
          f"weights; test accuracy {acc:.1%}")
    return args.out


if __name__ == "__main__":
    main()
