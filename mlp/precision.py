"""Precision policies: what a model's matrix products compute in.

    >>> mlp.MLP([64, 128, 10], backend="jax", precision="bf16")

A policy changes only the matrix products of the Linear layers (forward
``x @ W`` and the backward ``dy @ W.T`` and ``x.T @ dy``). Parameters (the
float32 "master weights"), optimizer state, the loss, activations and every
product's result stay float32.

- ``"float32"``: today's arithmetic, the default; every backend.
- ``"tf32"``: float32 arrays; the products in TensorFloat-32 (inputs rounded to
  10 explicit mantissa bits, float32 accumulation) for this model alone. NVIDIA
  GPUs of compute capability 8.0 and newer, on JAX, PyTorch and CuPy.
- ``"bf16"``: both inputs of each product rounded to bfloat16 (7 explicit
  mantissa bits), float32 accumulation. JAX (CPU and GPU) and PyTorch (CPU and CUDA).

The backends do the work (``Backend.precisions``, ``Backend.matmul``); this
module names the policies, checks a policy against a backend before anything
runs, and hands layers a namespace whose ``matmul`` applies the policy.
docs/precision.md says what each costs in accuracy and how to choose.
"""
from __future__ import annotations

from dataclasses import dataclass

from .errors import MLPError


class PrecisionError(MLPError, ValueError):
    """A precision policy that does not exist, or that this backend, device or dtype cannot run."""


@dataclass(frozen=True)
class Policy:
    """One precision policy; :func:`get` returns them by name."""

    name: str
    products: str  #: what the matrix products multiply in
    bits: int  #: significand bits of a product's inputs, the implicit one included
    where: str  #: the backends and devices that run it, for messages

    @property
    def unit_roundoff(self):
        """2**-bits: the largest relative error of rounding one input (2**-8 for bfloat16)."""
        return 2.0 ** -self.bits

    def check(self, backend, dtype="float32"):
        """Raise :class:`PrecisionError` unless ``backend`` runs this policy on
        ``dtype`` storage; return the policy."""
        if self.name == "float32":
            return self
        if dtype != "float32":
            raise PrecisionError(
                f"precision {self.name!r} keeps float32 master weights; it needs dtype 'float32', "
                f"got {dtype!r} (use precision='float32' for {dtype})"
            )
        if self.name not in backend.precisions:
            raise PrecisionError(
                f"precision {self.name!r} ({self.products} matrix products) is not available on "
                f"{backend!r}, which runs {_names(backend.precisions)}; {self.name} runs on {self.where}"
            )
        return self

    def namespace(self, backend):
        """What layers compute with: ``backend.xp`` itself for "float32", else a
        namespace whose ``matmul`` is ``backend.matmul`` under this policy."""
        return backend.xp if self.name == "float32" else PolicyNamespace(backend, self.name)


class PolicyNamespace:
    """``backend.xp`` with ``matmul`` under a precision policy; every other name is ``xp``'s."""

    def __init__(self, backend, precision):
        self._backend = backend
        self._xp = backend.xp
        self.precision = precision

    def matmul(self, a, b):
        return self._backend.matmul(a, b, self.precision)

    def __getattr__(self, name):
        return getattr(self._xp, name)

    def __repr__(self):
        return f"PolicyNamespace({self._xp.__name__}, precision={self.precision!r})"


POLICIES = {
    "float32": Policy("float32", "float32", 24, "every backend"),
    "tf32": Policy("tf32", "TensorFloat-32", 11,
                   "NVIDIA GPUs of compute capability 8.0 or newer (Ampere, Hopper) with "
                   "jax:gpu, torch:cuda or cupy; not on a CPU"),
    "bf16": Policy("bf16", "bfloat16", 8, "jax (cpu, gpu) and torch (cpu, cuda); not on numpy, "
                   "cupy or array_api_strict"),
}


def get(name="float32"):
    """The :class:`Policy` called ``name`` ("float32", "tf32" or "bf16"), or a Policy itself."""
    if isinstance(name, Policy):
        return name
    if name is None:
        return POLICIES["float32"]
    try:
        return POLICIES[name]
    except (KeyError, TypeError):
        raise PrecisionError(
            f"unknown precision {name!r}; expected one of {', '.join(map(repr, POLICIES))}"
        ) from None


def describe(dtype, precision):
    """'float32', or 'float32, precision bf16' under a mixed-precision policy
    (for summaries and messages)."""
    return dtype if precision == "float32" else f"{dtype}, precision {precision}"


def _names(precisions):
    return ", ".join(repr(p) for p in precisions)
