"""Keep freed memory of large arrays in the process between training steps (glibc only).

A training step on the CPU allocates and frees the same large temporaries
(activations, gradients, Adam's intermediates: megabytes each) every step.
glibc's malloc gives such memory back to the kernel as soon as the free space
at the top of its heap exceeds a threshold, so the next step takes fresh pages
and the kernel zeroes each of them again. For the 784-1024-1024-10 network
of ``benchmarks/bench_train.py`` that costs a third of the step (its NumPy
backend: 47% of the matrix-multiply ceiling before, 67% after).

``tune()`` raises the thresholds once per process with ``mallopt``: arrays up
to 32 MiB (glibc's own upper limit for its adaptive threshold) come from the
heap, and up to 256 MiB of freed heap stays in the process for reuse. It does
nothing where the C library is not glibc, where the user already tunes malloc
(``GLIBC_TUNABLES`` with a malloc setting, ``MALLOC_TRIM_THRESHOLD_``,
``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TOP_PAD_``), or with ``MLP_MALLOC_TUNING=0``.
"""
from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 256 << 20
_USER_SETTINGS = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_")

_done = None


def tune():
    """Raise glibc's malloc thresholds once per process; True where they were raised."""
    global _done
    if _done is None:
        _done = _apply()
    return _done


def _apply():
    if os.environ.get("MLP_MALLOC_TUNING", "1").strip().lower() in ("0", "no", "off", "false"):
        return False
    if "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", "") or any(k in os.environ for k in _USER_SETTINGS):
        return False
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - raises AttributeError outside glibc (musl)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # the mmap threshold first: setting either one turns off glibc's adaptive thresholds
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
