"""CuPy on a CUDA GPU."""
import contextlib

from ._base import Backend, BackendUnavailable, parse_device


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

    return CupyBackend(
        "cupy", xp, cupy.cuda.Device(index), version=cupy.__version__, library=cupy,
        device_name=f"gpu:{index}",
    )


def probe():
    import cupy

    if not cupy.is_available():
        return {"status": "installed, no CUDA device", "version": cupy.__version__, "devices": []}
    count = cupy.cuda.runtime.getDeviceCount()
    return {"status": "ready", "version": cupy.__version__, "devices": [f"gpu:{i}" for i in range(count)]}
