"""JAX on its CPU or GPU devices; the one backend with a compiler (``jax.jit``)."""
import functools
import threading
import warnings

import numpy as np

from ._base import Backend, BackendUnavailable, check_devices

EXTRA = "jax"

# Data-parallel steps of different threads never run at the same time (see
# DataParallel): the lock orders dispatch, and _LAST_STEP remembers which thread
# dispatched the latest step and that step's loss (ready when the step is done).
_STEP_LOCK = threading.Lock()
_LAST_STEP = [None, None]


class JaxBackend(Backend):
    fuse_steps = True
    compiles = True

    @property
    def float_dtypes(self):
        # float64 is always reachable: ensure_dtype turns on JAX's 64-bit mode.
        return ("float32", "float64")

    def ensure_dtype(self, dtype):
        name = dtype if isinstance(dtype, str) else self.dtype_name(dtype)
        if name == "float64":
            enable_x64(self.library)
        return super().ensure_dtype(name)

    @property
    def precisions(self):
        # bfloat16 products on every platform (XLA's CPU emulates them); TF32 only
        # on NVIDIA GPUs that have it (Ampere, compute capability 8.0, and newer).
        if self.device.platform == "gpu" and _capability(self.device) >= 8.0:
            return ("float32", "tf32", "bf16")
        return ("float32", "bf16")

    def matmul(self, a, b, precision="float32"):
        jnp = self.xp  # jax.numpy (a counting twin of it under mlp.opcount)
        if precision == "bf16":  # bfloat16 inputs, float32 accumulation and result
            return jnp.matmul(jnp.astype(a, jnp.bfloat16), jnp.astype(b, jnp.bfloat16),
                              preferred_element_type=a.dtype)
        if precision == "tf32" and "tf32" in self.precisions:
            # per product: overrides jit's default_matmul_precision("highest") for this dot only
            return jnp.matmul(a, b, precision=self.library.lax.DotAlgorithmPreset.TF32_TF32_F32)
        return super().matmul(a, b, precision)

    def asarray(self, obj, dtype=None):
        host = np.asarray(obj)
        if dtype is not None:
            name = dtype if isinstance(dtype, str) else self.dtype_name(dtype)
            host = host.astype(name, copy=False)
        return self.library.device_put(host, self.device)

    def to_numpy(self, x):
        return np.asarray(self.library.device_get(x))

    def jit(self, fn, **kwargs):
        jax = self.library

        @functools.wraps(fn)
        def traced(*args, **kw):
            # float32 matrix products in float32, as NumPy, CuPy and PyTorch compute them:
            # on Ampere and newer GPUs JAX's default is TF32 (10-bit mantissa), which
            # misses the float32 tolerances of the test matrix. No effect on the CPU.
            with jax.default_matmul_precision("highest"):
                return fn(*args, **kw)

        # keep_unused: an argument the function only reads the shape of (as an
        # optimizer's init) still pins the outputs to the arguments' device, and
        # keeps them committed there, like the outputs of every later call.
        return jax.jit(traced, **{"keep_unused": True, **kwargs})

    def scan(self, body, carry, xs):
        return self.library.lax.scan(body, carry, xs)

    def synchronize(self, *arrays):
        if arrays:
            self.library.block_until_ready(arrays)
        else:
            self.library.effects_barrier()
        return arrays[0] if len(arrays) == 1 else arrays

    def data_parallel(self, devices=None, *, batch_size=None):
        """A :class:`DataParallel` placement over ``devices`` (an int or "all")
        devices of this backend's platform; :class:`SingleDevice` for one."""
        n = check_devices(devices)
        if n is None:  # "all": every device of this platform, in every process
            n = len(self.library.devices(self.device.platform))
        if n == 1:
            return super().data_parallel(1)
        return DataParallel(self, n, batch_size)


class DataParallel:
    """Data-parallel training on a JAX mesh: one axis, ``"batch"``, over n devices.

    Parameters and optimizer state are replicated on every device; each batch is
    split along its first axis. The compiled train step is the same function:
    XLA partitions it by the shardings of its inputs and inserts the all-reduce
    that turns the per-device partial sums into the mean over the global batch.
    A batch whose size does not divide by n (only the last, partial batch of an
    epoch can be one: ``fit`` checks ``batch_size``) is replicated instead: every
    device computes it whole, which gives the same numbers as one device.
    Across processes (``jax.distributed``) every process holds the same global
    batch and places only its own devices' shards.
    """

    def __init__(self, backend, n, batch_size=None):
        """``n`` devices of ``backend``'s platform, starting at its own device."""
        jax = self.jax = backend.library
        from jax.sharding import Mesh, NamedSharding, PartitionSpec

        platform = backend.device.platform
        devices = jax.devices(platform)
        if jax.process_count() == 1:  # start at the backend's own device
            at = devices.index(backend.device)
            devices = devices[at:] + devices[:at]
        if n > len(devices):
            hint = (
                " (on CPU, set XLA_FLAGS=--xla_force_host_platform_device_count="
                f"{n} before JAX starts to simulate {n} devices)" if platform == "cpu" else ""
            )
            raise BackendUnavailable(
                f"jax has {len(devices)} {platform} device(s); data-parallel training asked "
                f"for {n}{hint}"
            )
        if batch_size is not None and batch_size % n:
            raise ValueError(
                f"batch_size {batch_size} does not split evenly over {n} devices; use a "
                f"multiple of {n} (e.g. {max(n, batch_size // n * n)}): the global batch "
                "size is the one you ask for, and each device gets batch_size / devices rows"
            )
        self.n = n
        self.home = backend.device
        self.mesh = Mesh(np.array(devices[:n]), ("batch",))
        self.replicated = NamedSharding(self.mesh, PartitionSpec())
        self.split = NamedSharding(self.mesh, PartitionSpec("batch"))

    def __repr__(self):
        return f"DataParallel({self.n} devices: {', '.join(str(d) for d in self.mesh.devices)})"

    def _put(self, x, sharding):
        if self.jax.process_count() == 1:
            return self.jax.device_put(x, sharding)
        # Several processes: each places the shards of its own devices.
        return self.jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

    def replicate(self, tree):
        """Parameters and optimizer state: a full copy on every device."""
        return self.jax.tree.map(lambda x: self._put(x, self.replicated), tree)

    def shard(self, tree):
        """A batch: rows split evenly over the devices (replicated where they do not split)."""
        return self.jax.tree.map(
            lambda x: self._put(x, self.replicated if x.shape[0] % self.n else self.split), tree
        )

    def wrap(self, step):
        """``step(params, opt_state, x, y, masks)`` with the batch ``(x, y, masks)``
        sharded, guarded against the cross-thread deadlock.

        A step with an all-reduce runs as one share per device, and each share
        waits at the all-reduce for the others. When two threads' steps are in
        flight together, devices can start them in different orders and each
        waits for a peer busy with the other step: a hang (docs/multidevice.md,
        "The hang"). So before a thread dispatches a step, the steps another
        thread left in flight are waited for; one thread alone never waits.
        """
        def sharded_step(params, opt_state, x, y, masks):
            x, y, masks = self.shard((x, y, masks))
            me = threading.get_ident()
            with _STEP_LOCK:
                thread, pending = _LAST_STEP
                if thread != me and pending is not None:
                    self.jax.block_until_ready(pending)
                out = step(params, opt_state, x, y, masks)
                _LAST_STEP[:] = [me, out[2]]
            return out

        return sharded_step

    def gather(self, tree):
        """Replicated arrays back to the backend's own device, as one-device arrays."""
        def local(x):
            if not x.is_fully_addressable:  # replicated: any local copy is the whole array
                x = x.addressable_data(0)
            return self.jax.device_put(x, self.home)

        return self.jax.tree.map(local, tree)


def _capability(device):
    """A GPU's CUDA compute capability as a number (9.0 for an H100/H200); 0 when unknown."""
    try:
        return float(getattr(device, "compute_capability", 0) or 0)
    except (TypeError, ValueError):
        return 0.0


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
        # this process's devices (all of them unless jax.distributed runs several)
        devices = jax.local_devices(backend=platform)
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
