"""The backend x device x dtype matrix.

Any test that takes the ``cell`` fixture runs once per cell. A cell that cannot
run here is skipped with the registry's reason; ``MLP_REQUIRE_BACKENDS``
(e.g. ``cupy,jax:gpu``) turns those skips into failures, for a GPU CI job.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import pytest

import backends

# Tolerances the matrix uses, by dtype and kind of check (relative, absolute).
# docs/testing.md publishes the same table.
TOLERANCES = {
    "float64": {"forward": (1e-12, 1e-12), "grad": (1e-10, 1e-12), "train": (1e-10, 1e-12)},
    "float32": {"forward": (1e-5, 1e-6), "grad": (1e-4, 1e-6), "train": (1e-4, 1e-5)},
}


@dataclass(frozen=True)
class Cell:
    spec: str
    dtype: str
    gpu: bool = False

    @property
    def id(self):
        name, _, device = self.spec.partition(":")
        return f"{name}-{(device or ('gpu' if self.gpu else 'cpu')).replace(':', '')}-{self.dtype}"

    @property
    def name(self):
        return self.spec.partition(":")[0]

    @property
    def backend(self):
        return backends.get(self.spec)

    def tol(self, kind="forward"):
        """(rtol, atol) for this cell's dtype and the kind of check."""
        return TOLERANCES[self.dtype][kind]


CELLS = [
    Cell("numpy", "float64"),
    Cell("numpy", "float32"),
    Cell("array_api_strict", "float64"),
    Cell("array_api_strict:device1", "float32"),
    Cell("array_api_strict:no_float64", "float32"),
    Cell("jax:cpu", "float64"),
    Cell("jax:cpu", "float32"),
    Cell("torch:cpu", "float64"),
    Cell("torch:cpu", "float32"),
    Cell("cupy:gpu", "float64", gpu=True),
    Cell("cupy:gpu", "float32", gpu=True),
    Cell("jax:gpu", "float32", gpu=True),
    Cell("jax:gpu", "float64", gpu=True),
    Cell("torch:cuda", "float32", gpu=True),
]


def _required():
    return {s.strip() for s in os.environ.get("MLP_REQUIRE_BACKENDS", "").split(",") if s.strip()}


def pytest_generate_tests(metafunc):
    if "cell" in metafunc.fixturenames:
        marks = lambda c: [pytest.mark.gpu] if c.gpu else []  # noqa: E731
        metafunc.parametrize(
            "cell", [pytest.param(c, id=c.id, marks=marks(c)) for c in CELLS], indirect=True
        )


@pytest.fixture
def cell(request):
    """One cell of the matrix, its backend loaded (or the test skipped with the reason)."""
    c = request.param
    try:
        b = backends.get(c.spec)
        b.ensure_dtype(c.dtype)
    except backends.BackendUnavailable as err:
        required = _required()
        if c.name in required or c.spec in required:
            pytest.fail(f"{c.id} is required by MLP_REQUIRE_BACKENDS but unavailable: {err}")
        pytest.skip(f"{c.id}: {err}")
    return c
