"""array-api-strict: the standard and nothing more, with simulated devices.

Running the model here proves it uses only the array API; its devices
('device1', 'no_float64', ...) prove device handling without a GPU.
"""
import numpy as np

from ._base import Backend, BackendUnavailable

_ALIASES = {None: "CPU_DEVICE", "": "CPU_DEVICE", "cpu": "CPU_DEVICE", "cpu:0": "CPU_DEVICE"}


class StrictBackend(Backend):
    def to_numpy(self, x):
        cpu = self.library.Device("CPU_DEVICE")
        return np.asarray(x.to_device(cpu))


def _device_names(xps):
    # Device's repr is "array_api_strict.Device('device1')"
    return [str(d).split("'")[1] for d in xps.__array_namespace_info__().devices()]


def load(device=None):
    import array_api_strict as xps

    name = _ALIASES.get(device, device)
    known = _device_names(xps)
    if name not in known:
        raise BackendUnavailable(
            f"array_api_strict has no device {device!r}; its devices are "
            f"cpu (CPU_DEVICE), {', '.join(k for k in known if k != 'CPU_DEVICE')}"
        )
    shown = "cpu" if name == "CPU_DEVICE" else name
    return StrictBackend(
        "array_api_strict",
        xps,
        xps.Device(name),
        version=xps.__version__,
        library=xps,
        device_name=shown,
    )


def probe():
    import array_api_strict as xps

    devices = ["cpu" if d == "CPU_DEVICE" else d for d in _device_names(xps)]
    return {"status": "ready", "version": xps.__version__, "devices": devices}
