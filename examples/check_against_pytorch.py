"""Check our forward pass, loss and every gradient against PyTorch.

We build the same network in PyTorch from our initial weights (note the
transpose: our Linear stores W as [in x out] for x @ W; torch.nn.Linear stores
[out x in]), run one batch through both, let torch.autograd differentiate, and
print the largest differences. In float64 they agree to ~1e-15.

Run:  python examples/check_against_pytorch.py [--dtype float64] [--backend numpy]
Needs: pip install 'arraymlp[torch]'
"""
import argparse

import numpy as np

import mlp


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="numpy")
    parser.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    parser.add_argument("--sizes", default="64,32,16,10")
    args = parser.parse_args(argv)
    try:
        import torch
    except ImportError:
        print("PyTorch is not installed: pip install 'arraymlp[torch]'")
        return None

    sizes = [int(s) for s in args.sizes.split(",")]
    model = mlp.MLP(sizes, activation="tanh", backend=args.backend, dtype=args.dtype, seed=0)
    rng = np.random.default_rng(1)
    x = rng.random((8, sizes[0])).astype(args.dtype)
    y = rng.integers(0, sizes[-1], 8)

    # Ours: explicit chain rule.
    loss, grads = model.loss_and_grads(x, y)
    logits = model.backend.to_numpy(model(x))

    # PyTorch: the same weights, torch's own layers and autograd.
    dtype = getattr(torch, args.dtype)
    linears = [i for i, layer in enumerate(model.layers) if isinstance(layer, mlp.Linear)]
    weights = [torch.tensor(model.backend.to_numpy(model.params[i]["W"]), dtype=dtype, requires_grad=True)
               for i in linears]
    biases = [torch.tensor(model.backend.to_numpy(model.params[i]["b"]), dtype=dtype, requires_grad=True)
              for i in linears]
    h = torch.tensor(x, dtype=dtype)
    for k, (w, b) in enumerate(zip(weights, biases)):
        h = torch.nn.functional.linear(h, w.T, b)
        if k < len(weights) - 1:
            h = torch.tanh(h)
    t_loss = torch.nn.functional.cross_entropy(h, torch.tensor(y))
    t_loss.backward()

    diffs = {"logits": np.abs(logits - h.detach().numpy()).max(),
             "loss": abs(float(model.backend.to_numpy(loss)) - t_loss.item())}
    for k, i in enumerate(linears):
        diffs[f"dW{k} {mlp.errors.fmt_shape(weights[k].shape)}"] = np.abs(
            model.backend.to_numpy(grads[i]["W"]) - weights[k].grad.numpy()).max()
        diffs[f"db{k} {mlp.errors.fmt_shape(biases[k].shape)}"] = np.abs(
            model.backend.to_numpy(grads[i]["b"]) - biases[k].grad.numpy()).max()
    print(f"{model.backend}, {args.dtype}: largest absolute differences from PyTorch")
    for name, d in diffs.items():
        print(f"  {name:<18} {d:.3e}")
    return diffs


if __name__ == "__main__":
    main()
