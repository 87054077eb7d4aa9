"""JAX on its CPU or GPU devices; the one backend with a compiler (``jax.jit``)."""
import warnings

import numpy as np

from ._base import Backend, BackendUnavailable

EXTRA = "jax"


class JaxBackend(Backend):
    fuse_steps = True

    @property
    def float_dtypes(self):
        # float64 is always reachable: ensure_dtype turns on JAX's 64-bit mode.
        return ("float32", "float64")

    def ensure_dtype(self, dtype):
        name = dtype if isinstance(dtype, str) else self.dtype_name(dtype)
        if name == "float64":
            enable_x64(self.library)
        return super().ensure_dtype(name)

    def asarray(self, obj, dtype=None):
        host = np.asarray(obj)
        if dtype is not None:
            name = dtype if isinstance(dtype, str) else self.dtype_name(dtype)
            host = host.astype(name, copy=False)
        return self.library.device_put(host, self.device)

    def to_numpy(self, x):
        return np.asarray(self.library.device_get(x))

    def jit(self, fn, **kwargs):
        # keep_unused: an argument the function only reads the shape of (as an
        # optimizer's init) still pins the outputs to the arguments' device, and
        # keeps them committed there, like the outputs of every later call.
        return self.library.jit(fn, **{"keep_unused": True, **kwargs})

    def scan(self, body, carry, xs):
        return self.library.lax.scan(body, carry, xs)

    def synchronize(self, *arrays):
        if arrays:
            self.library.block_until_ready(arrays)
        else:
            self.library.effects_barrier()
        return arrays[0] if len(arrays) == 1 else arrays


def enable_x64(jax):
    """Turn on JAX's 64-bit mode (needed for float64), saying so once."""
    if not jax.config.jax_enable_x64:
        warnings.warn(
            "mlp: float64 on JAX turned on JAX's 64-bit mode (jax_enable_x64) for "
            "this process; JAX's default integer and float types are now 64-bit. "
            "Set JAX_ENABLE_X64=1 before starting Python to choose this yourself.",
            stacklevel=3,
        )
        jax.config.update("jax_enable_x64", True)


def _parse(device):
    """'cpu', 'cpu:1', 'gpu', 'gpu:1', 'cuda:0', '1' or None -> (platform, index)."""
    if device in (None, ""):
        return None, 0
    platform, _, index = device.partition(":")
    if platform.isdigit() and not index:
        return None, int(platform)
    if platform == "cuda":
        platform = "gpu"
    if platform not in ("cpu", "gpu") or (index and not index.isdigit()):
        raise BackendUnavailable(
            f"jax has no device {device!r}; expected cpu, cpu:N, gpu or gpu:N"
        )
    return platform, int(index or 0)


def load(device=None):
    platform, index = _parse(device)
    import jax

    try:
        devices = jax.devices(platform) if platform else jax.devices()
    except RuntimeError as err:
        raise BackendUnavailable(
            f"jax {jax.__version__}: installed, no {platform.upper()} device "
            f"(jax.devices({platform!r}) found none); for CUDA: pip install 'mlp[jax-cuda12]'"
        ) from err
    if index >= len(devices):
        raise BackendUnavailable(
            f"jax has {len(devices)} {devices[0].platform} device(s); asked for index {index}"
        )
    dev = devices[index]
    import jax.numpy as jnp

    return JaxBackend(
        "jax", jnp, dev, version=jax.__version__, library=jax,
        device_name=f"{dev.platform}:{dev.id}",
    )


def probe():
    import jax

    devices = [f"{d.platform}:{d.id}" for d in jax.devices("cpu")]
    try:
        devices += [f"{d.platform}:{d.id}" for d in jax.devices("gpu")]
    except RuntimeError:
        pass
    return {"status": "ready", "version": jax.__version__, "devices": devices}
