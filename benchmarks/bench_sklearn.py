"""Fit time of mlp.sklearn.MLPClassifier against scikit-learn's MLPClassifier on digits.

    python benchmarks/bench_sklearn.py                    # numpy and jax, 7 repeats
    python benchmarks/bench_sklearn.py --backends numpy   # the issue's comparison only
    python benchmarks/bench_sklearn.py --backends numpy,jax:gpu,torch:cuda --repeats 7

Both estimators get the same hyper-parameters (Adam, lr 1e-3, alpha 1e-4,
batch 'auto' = 200, one hidden layer of --hidden ReLU units) and run exactly
--max-iter epochs (n_iter_no_change is set past max_iter, so neither stops
early) on the same split of scikit-learn's digits (pixels / 16). The repeats
are interleaved across implementations; the table shows the median and the
minimum fit time, the test accuracy of the last repeat, and the ratios of the
medians and of the minimums to scikit-learn's (below 1 is faster; on a busy
machine the minimum is the steadier of the two). A backend's first fit, which includes
JAX's compilation, is run once before timing and shown as "first". BLAS
runs on one thread unless --threads says otherwise (both libraries use the
same NumPy, so the limit applies to both alike).
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
import warnings

import numpy as np


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="numpy,jax",
                        help="comma-separated mlp backend specs (default: numpy,jax)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1,
                        help="BLAS threads for both (default 1: on a shared machine, thread "
                             "contention made the timings of either swing by 3x); 0: no limit")
    parser.add_argument("--max-iter", type=int, default=100)
    parser.add_argument("--hidden", type=int, default=100, help="hidden units (scikit-learn's default 100)")
    args = parser.parse_args(argv)

    import sklearn
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier as SkMLP

    from mlp.sklearn import MLPClassifier

    from threadpoolctl import threadpool_limits

    if args.threads:
        threadpool_limits(args.threads)
    warnings.simplefilter("ignore", ConvergenceWarning)
    from mlp import datasets

    data = datasets.load("digits")  # the bundled copy, scaled to [0, 1]
    Xtr, Xte, ytr, yte = data.x_train, data.x_test, data.y_train, data.y_test
    params = dict(hidden_layer_sizes=(args.hidden,), solver="adam", learning_rate_init=1e-3,
                  alpha=1e-4, batch_size="auto", max_iter=args.max_iter,
                  n_iter_no_change=args.max_iter + 1, random_state=0)

    makers = {"scikit-learn": lambda: SkMLP(**params)}
    for spec in [s.strip() for s in args.backends.split(",") if s.strip()]:
        makers[f"mlp {spec}"] = lambda spec=spec: MLPClassifier(backend=spec, **params)

    first, times, acc = {}, {name: [] for name in makers}, {}
    for name, make in list(makers.items()):
        try:
            start = time.perf_counter()
            make().fit(Xtr, ytr)
            first[name] = time.perf_counter() - start
        except Exception as err:  # noqa: BLE001 - a backend missing here is a row, not a crash
            print(f"skipping {name}: {type(err).__name__}: {err}", file=sys.stderr)
            del makers[name], times[name]
    for _ in range(args.repeats):
        for name, make in makers.items():
            est = make()
            start = time.perf_counter()
            est.fit(Xtr, ytr)
            times[name].append(time.perf_counter() - start)
            acc[name] = est.score(Xte, yte)

    base, base_min = statistics.median(times["scikit-learn"]), min(times["scikit-learn"])
    print(f"digits {Xtr.shape[0]} train / {Xte.shape[0]} test, 64-{args.hidden}-10 ReLU, Adam, "
          f"batch 200, {args.max_iter} epochs, {args.repeats} repeats, BLAS threads "
          f"{args.threads or 'any'}; numpy {np.__version__}, "
          f"scikit-learn {sklearn.__version__}, Python {platform.python_version()}, "
          f"{platform.machine()}")
    rows = [("implementation", "median s", "min s", "first s", "test acc", "ratio", "min ratio")]
    for name in makers:
        med = statistics.median(times[name])
        rows.append((name, f"{med:.3f}", f"{min(times[name]):.3f}", f"{first[name]:.3f}",
                     f"{acc[name]:.4f}", f"{med / base:.2f}", f"{min(times[name]) / base_min:.2f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))


if __name__ == "__main__":
    main()
