"""CuPy on a CUDA GPU."""
from ._base import Backend, BackendUnavailable, Kernels

EXTRA = "cuda12"


# The flat Adam update (backends._base.Kernels.adam) as one element-wise kernel; {p},
# {m}, {v} name the incoming values (the outputs themselves when updating in place).
_ADAM = """
T gg = l2 != (T)0 ? g + l2 * {p} : g;
T q = decay != (T)1 ? decay * {p} : {p};
m = b1 * {m} + gg;
v = b2 * {v} + gg * gg;
p = q + scale * (m / (sqrt(v) + eps));
"""
_SCALARS = "T b1, T b2, T scale, T eps, T decay, T l2"


def adam_kernels(cupy):
    """``(in_place, new_arrays)``: the two ``cupy.ElementwiseKernel`` of the flat Adam update."""
    kernel = cupy.ElementwiseKernel
    in_place = kernel(f"T g, {_SCALARS}", "T p, T m, T v", _ADAM.format(p="p", m="m", v="v"), "mlp_adam_inplace")
    new = kernel(f"T p0, T g, T m0, T v0, {_SCALARS}", "T p, T m, T v", _ADAM.format(p="p0", m="m0", v="v0"),
                 "mlp_adam")
    return in_place, new


class CupyKernels(Kernels):
    """:class:`backends._base.Kernels` as CuPy element-wise kernels: one launch each."""

    def __init__(self, cupy):
        self._adam_inplace, self._adam = adam_kernels(cupy)

    def adam(self, p, g, m, v, *, b1, b2, scale, eps, decay=1.0, l2=0.0, inplace=False):
        if inplace:
            self._adam_inplace(g, b1, b2, scale, eps, decay, l2, p, m, v)
            return p, m, v
        return self._adam(p, g, m, v, b1, b2, scale, eps, decay, l2)


class CupyBackend(Backend):
    def asarray(self, obj, dtype=None):
        with self.device:
            return super().asarray(obj, dtype=dtype)

    def to_numpy(self, x):
        return self.library.asnumpy(x)

    def synchronize(self, *arrays):
        self.device.synchronize()
        return arrays[0] if len(arrays) == 1 else arrays


def _no_device(cupy):
    return BackendUnavailable(
        f"cupy {cupy.__version__}: installed, no CUDA device (cupy.is_available() is False)"
    )


def load(device=None):
    if device in (None, ""):
        index = 0
    else:
        kind, _, index = device.partition(":")
        if kind.isdigit() and not index:
            index = kind
        elif kind not in ("gpu", "cuda") or (index and not index.isdigit()):
            raise BackendUnavailable(f"cupy has no device {device!r}; expected gpu, gpu:N or N")
        index = int(index or 0)
    import cupy

    if not cupy.is_available():
        raise _no_device(cupy)
    count = cupy.cuda.runtime.getDeviceCount()
    if index >= count:
        raise BackendUnavailable(f"cupy sees {count} CUDA device(s); asked for index {index}")
    import array_api_compat.cupy as xp

    backend = CupyBackend(
        "cupy", xp, cupy.cuda.Device(index), version=cupy.__version__, library=cupy,
        device_name=f"gpu:{index}",
    )
    backend.kernels = CupyKernels(cupy)  # compiled on first use
    return backend


def probe():
    import cupy

    if not cupy.is_available():
        return {"status": "installed, no CUDA device", "version": cupy.__version__, "devices": []}
    count = cupy.cuda.runtime.getDeviceCount()
    return {"status": "ready", "version": cupy.__version__, "devices": [f"gpu:{i}" for i in range(count)]}
