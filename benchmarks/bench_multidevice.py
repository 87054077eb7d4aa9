"""Data-parallel training throughput on 1, 2 and 4 devices (``fit(devices=N)``).

    python benchmarks/bench_multidevice.py            # simulated CPU devices
    python benchmarks/bench_multidevice.py --quick    # smaller run
    python benchmarks/bench_multidevice.py --platform gpu --devices 1 2 4 8

Each configuration runs in its own Python process: on CPU, JAX reads
``XLA_FLAGS=--xla_force_host_platform_device_count=N`` once, at start-up, so a
process simulates exactly N devices. Simulated CPU devices share the machine's
cores: on a 2-core machine there is no speed-up to expect, and the table shows
the cost of splitting each batch, the all-reduce and the per-step wait (see
docs/multidevice.md). "1 (plain)" is ``fit`` without ``devices``.
The first epoch (compilation) is not timed; the configurations take turns over
``--repeats`` rounds (so a busy moment on a shared machine hits them all) and
the table shows the median epoch of all rounds.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys

WORKER = r"""
import json, sys
import numpy as np
import mlp

sizes, batch, samples, epochs, devices, spec = json.loads(sys.argv[1])
rng = np.random.default_rng(0)
x = rng.standard_normal((samples, sizes[0])).astype("float32")
y = rng.integers(0, sizes[-1], samples)
model = mlp.MLP(sizes, backend=spec, seed=0)
history = model.fit(x, y, epochs=epochs + 1, batch_size=batch, devices=devices)
times = history["time"][1:]  # the first epoch compiles
print(json.dumps({"samples_per_s": [samples / t for t in times], "loss": history["loss"][-1]}))
"""


def run(config, devices, platform_name):
    env = dict(os.environ)
    if platform_name == "cpu":
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={max(devices or 1, 1)}"
        env["JAX_PLATFORMS"] = "cpu"
    args = [config["sizes"], config["batch"], config["samples"], config["epochs"], devices,
            f"jax:{platform_name}"]
    proc = subprocess.run([sys.executable, "-c", WORKER, json.dumps(args)], env=env,
                          capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise SystemExit(f"devices={devices} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples and epochs")
    parser.add_argument("--platform", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--repeats", type=int, default=3, help="rounds over all configurations")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    config = dict(sizes=[784, 256, 10], batch=256, samples=16_384, epochs=3)
    if args.quick:
        config.update(samples=4_096, epochs=2)
        args.repeats = 1

    rows = [("1 (plain)", None)] + [(str(n), n) for n in args.devices]
    results = {label: {"samples_per_s": []} for label, _ in rows}
    for _ in range(args.repeats):
        for label, devices in rows:
            results[label]["samples_per_s"] += run(config, devices, args.platform)["samples_per_s"]
    base = statistics.median(results["1 (plain)"]["samples_per_s"])

    print(f"mlp data-parallel fit on JAX {args.platform} ({'simulated ' if args.platform == 'cpu' else ''}"
          f"devices; {os.cpu_count()} cores; {platform.processor() or platform.machine()})")
    print(f"MLP {'-'.join(map(str, config['sizes']))}, global batch {config['batch']}, "
          f"{config['samples']:,} samples, median of {config['epochs']} epochs x {args.repeats} rounds")
    print(f"{'devices':>10}  {'samples/s':>10}  {'vs plain':>8}  {'rows/device':>11}")
    for label, devices in rows:
        speed = statistics.median(results[label]["samples_per_s"])
        per_device = config["batch"] // (devices or 1)
        print(f"{label:>10}  {speed:>10,.0f}  {speed / base:>7.2f}x  {per_device:>11}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"config": config, "platform": args.platform, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
