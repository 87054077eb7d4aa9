"""The errors mlp raises on bad input. Each says what was expected and what came."""


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


def fmt_shape(shape):
    """(4, 784) -> '[4 x 784]'; a vector (784,) -> '[784]'."""
    return "[" + " x ".join(str(d) for d in shape) + "]"
