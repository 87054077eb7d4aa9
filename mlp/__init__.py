"""mlp: multilayer perceptrons written once against the Python array API.

    >>> import mlp
    >>> model = mlp.MLP([784, 16, 10], backend="numpy")   # or "jax", "torch", "gpu"
    >>> print(model.summary())

The math runs through the array namespace of the model's backend (see the
``backends`` package), so the same code trains on NumPy, CuPy, JAX, PyTorch and
array-api-strict. Importing mlp imports none of JAX, CuPy, PyTorch or scikit-learn.
"""
from . import checkpoint, datasets, losses, optimizers, precision
from .errors import DataError, DeviceMismatch, MLPError, OutOfMemory, ShapeError, TrainingDiverged
from .layers import (GELU, Dropout, Identity, Layer, LeakyReLU, Linear, ReLU, Sigmoid, Softmax,
                     Tanh)
from .model import MLP, History, Sequential, StopTraining, transfer
from .optimizers import SGD, Adam, AdamW
from .precision import PrecisionError

__version__ = "0.1.0"

__all__ = [
    "MLP", "Sequential", "History", "StopTraining", "transfer",
    "Layer", "Linear", "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "GELU", "Softmax", "Identity", "Dropout",
    "SGD", "Adam", "AdamW", "losses", "optimizers", "datasets", "checkpoint", "precision",
    "MLPError", "ShapeError", "DataError", "DeviceMismatch", "TrainingDiverged", "OutOfMemory",
    "PrecisionError",
]
