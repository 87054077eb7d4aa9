"""The errors mlp raises on bad input. Each says what was expected and what came.

docs/errors.md lists every bad input we try and the exact message it gets.
"""


class MLPError(Exception):
    """Base class of mlp's own errors."""


class ShapeError(MLPError, ValueError):
    """Arrays whose shapes do not line up (written as [B x D])."""


class DataError(MLPError, ValueError):
    """Training or prediction data that cannot be used (labels, dtypes, NaN, ...)."""


class DeviceMismatch(MLPError, ValueError):
    """An array that lives in another library or on another device than the model."""


class TrainingDiverged(MLPError, FloatingPointError):
    """The loss became NaN or infinite."""

    def __init__(self, message, epoch=None, step=None):
        super().__init__(message)
        self.epoch = epoch
        self.step = step


class OutOfMemory(MLPError, MemoryError):
    """A device (or the host) ran out of memory; the message names the batch size."""


def fmt_shape(shape):
    """(4, 784) -> '[4 x 784]'; a vector (784,) -> '[784]'."""
    return "[" + " x ".join(str(d) for d in shape) + "]"


# Out-of-memory errors of the array libraries, recognised without importing them:
# torch.OutOfMemoryError (and torch.cuda.OutOfMemoryError), cupy.cuda.memory.OutOfMemoryError,
# jaxlib's XlaRuntimeError/JaxRuntimeError "RESOURCE_EXHAUSTED: Out of memory ...".
_OOM_NAMES = ("OutOfMemoryError",)
_OOM_TEXT = ("RESOURCE_EXHAUSTED", "out of memory", "CUDA_ERROR_OUT_OF_MEMORY", "cudaErrorMemoryAllocation")


def is_out_of_memory(err):
    """True for MemoryError and the array libraries' out-of-memory errors."""
    if isinstance(err, MemoryError):
        return True
    if any(type(err).__name__ == name for name in _OOM_NAMES):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and any(t.lower() in text.lower() for t in _OOM_TEXT)


def guard_memory(backend, run, what, hint="pass fewer rows at a time"):
    """``run()``, with an out-of-memory error of any library turned into
    :class:`OutOfMemory` naming ``backend``, ``what`` ran and a ``hint``."""
    try:
        return run()
    except Exception as err:  # noqa: BLE001 - libraries' OOM errors have no common base class
        if not is_out_of_memory(err) or isinstance(err, OutOfMemory):
            raise
        first = (str(err).strip().splitlines() or [""])[0][:200].rstrip(".")
        raise OutOfMemory(f"out of memory on {backend!r} during {what}: "
                          f"{type(err).__name__}: {first}. Hint: {hint}") from err
