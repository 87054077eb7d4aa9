"""CuPy on a CUDA GPU."""
from ._base import Backend, BackendUnavailable, parse_device


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
