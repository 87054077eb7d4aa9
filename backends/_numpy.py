"""NumPy on the CPU: the default backend and the reference the tests compare against."""
import numpy as np

from ._base import Backend, BackendUnavailable, Kernels


class NumpyKernels(Kernels):
    """:class:`backends._base.Kernels` with NumPy ufuncs writing into their
    operands (``out=``): one temporary of the parameters' size instead of four."""

    def adam(self, p, g, m, v, *, b1, b2, scale, eps, decay=1.0, l2=0.0, inplace=False):
        out = (lambda a: a) if inplace else (lambda a: None)
        if l2:
            g = np.add(g, np.multiply(p, l2), out=out(g))
        if decay != 1:
            p = np.multiply(p, decay, out=out(p))
        m = np.multiply(m, b1, out=out(m))
        m += g
        t = np.multiply(g, g)
        v = np.multiply(v, b2, out=out(v))
        v += t
        np.sqrt(v, out=t)
        t += eps
        np.divide(m, t, out=t)
        t *= scale
        return np.add(p, t, out=out(p)), m, v


class NumpyBackend(Backend):
    inplace = True
    kernels = NumpyKernels()  # Adam's flat update with one temporary (same bits)

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
