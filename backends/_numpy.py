"""NumPy on the CPU: the default backend and the reference the tests compare against."""
import numpy as np

from ._base import Backend, BackendUnavailable


class NumpyBackend(Backend):
    inplace = True

    def to_numpy(self, x):
        return np.asarray(x)


def load(device=None):
    if device not in (None, "", "cpu", "cpu:0"):
        raise BackendUnavailable(
            f"numpy runs on the cpu only, not on {device!r}; for a GPU use cupy, "
            "jax:gpu or torch:cuda (or the shorthand 'gpu')"
        )
    import array_api_compat.numpy as xp

    from . import _malloc

    _malloc.tune()  # reuse freed memory between steps instead of new zeroed pages (see _malloc.py)
    return NumpyBackend("numpy", xp, "cpu", version=np.__version__, library=np, device_name="cpu")


def probe():
    return {"status": "ready", "version": np.__version__, "devices": ["cpu"]}
