"""CuPy on a CUDA GPU."""
import contextlib

from ._base import Backend, BackendUnavailable, Kernels, parse_device


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

    @property
    def precisions(self):
        # TF32 through cuBLAS's compute type, on Ampere and newer; CuPy's float32
        # matmul has no bfloat16 path (CuPy has no bfloat16 dtype)
        if _linalg(self.library) is not None and int(self.device.compute_capability) >= 80:
            return ("float32", "tf32")
        return ("float32",)

    def matmul(self, a, b, precision="float32"):
        if precision == "tf32" and "tf32" in self.precisions:
            with self.device, _tf32(self.library, a.dtype):
                return self.xp.matmul(a, b)
        return super().matmul(a, b, precision)

    def to_numpy(self, x):
        return self.library.asnumpy(x)

    def synchronize(self, *arrays):
        self.device.synchronize()
        return arrays[0] if len(arrays) == 1 else arrays


def _linalg(cupy):
    """CuPy's module that holds cuBLAS's compute type per dtype (``CUPY_TF32`` sets it
    for the whole process); None where this CuPy has no such switch."""
    try:
        from cupy._core import _routines_linalg as linalg
    except ImportError:
        return None
    ok = all(hasattr(linalg, n) for n in ("get_compute_type", "set_compute_type"))
    return linalg if ok else None


@contextlib.contextmanager
def _tf32(cupy, dtype):
    """TF32 for the float32 products launched inside, then the process's compute type
    back (the one ``CUPY_TF32`` chose). Process-wide while it lasts: another thread's
    float32 product meanwhile would get TF32 too (docs/precision.md)."""
    linalg = _linalg(cupy)
    before = linalg.get_compute_type(dtype)
    linalg.set_compute_type(dtype, getattr(linalg, "COMPUTE_TYPE_TF32", 7))
    try:
        yield
    finally:
        linalg.set_compute_type(dtype, before)


def _no_device(cupy):
    return BackendUnavailable(
        f"cupy {cupy.__version__}: installed, no CUDA device (cupy.is_available() is False)"
    )


def load(device=None):
    index = parse_device(device, "cupy", kinds=("gpu",), expected="gpu, gpu:N or N")[1] or 0
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
