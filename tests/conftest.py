"""The backend x device x dtype matrix.

Any test that takes the ``cell`` fixture runs once per cell. A cell that cannot
run here is skipped with the registry's reason; ``MLP_REQUIRE_BACKENDS``
(e.g. ``cupy,jax:gpu``) turns those skips into failures, for a GPU CI job.

``--backends numpy,jax`` keeps only the cells whose backend name, spec or id is
listed; the run ends with a table of every cell: how many tests it ran, or why
it was skipped. docs/testing.md explains the matrix and its tolerances.
"""
from __future__ import annotations

import os
from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np
import pytest

from mlp import backends

# Tolerances the matrix uses, by dtype and kind of check (relative, absolute).
# docs/testing.md publishes the same table (tests/test_matrix_plugin.py checks it).
#   forward: one forward pass against the float64 reference
#   grad:    gradients against jax.grad / torch.autograd (float64 oracles)
#   fd:      gradients against central finite differences of the cell's own forward
#   train:   optimizer updates and training trajectories (losses, final params)
TOLERANCES = {
    "float64": {"forward": (1e-12, 1e-12), "grad": (1e-10, 1e-12), "fd": (1e-6, 1e-8), "train": (1e-10, 1e-12)},
    "float32": {"forward": (1e-5, 1e-6), "grad": (1e-4, 1e-6), "fd": (2e-2, 2e-3), "train": (1e-4, 1e-5)},
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

    # -- helpers for tests ---------------------------------------------------
    def asarray(self, host):
        """Host data as an array of this cell (its backend, device and dtype)."""
        host = np.asarray(host)
        dtype = self.dtype if np.issubdtype(host.dtype, np.floating) else str(host.dtype)
        return self.backend.asarray(host.astype(dtype), dtype)

    def host(self, host):
        """Host data rounded to this cell's dtype, as float64: what the cell really
        receives, so a float64 reference computed from it differs from the cell
        only by the cell's arithmetic."""
        return np.asarray(host, dtype=self.dtype).astype("float64")

    def to_numpy(self, x):
        return np.asarray(self.backend.to_numpy(x), dtype="float64")

    def assert_close(self, got, want, kind="forward", what=""):
        """``got`` (an array of this cell, or host data) against the float64
        reference ``want`` within this cell's tolerance for ``kind``. The
        absolute part scales with the reference's largest magnitude."""
        got = got if isinstance(got, np.ndarray) else self.to_numpy(got)
        want = np.asarray(want, dtype="float64")
        assert got.shape == want.shape, f"{self.id} {what}: shape {got.shape} != {want.shape}"
        rtol, atol = self.tol(kind)
        scale = max(1.0, float(np.max(np.abs(want)))) if want.size else 1.0
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol * scale,
                                   err_msg=f"{self.id} {what} ({kind}: rtol={rtol}, atol={atol})")


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


_RESULTS = defaultdict(Counter)  # cell id -> outcome counts, for the end-of-run summary
_SKIPS = {}  # cell id -> why the cell cannot run here


def _required():
    return {s.strip() for s in os.environ.get("MLP_REQUIRE_BACKENDS", "").split(",") if s.strip()}


def _matches(cell, names):
    return bool({cell.name, cell.spec, cell.id} & names)


def pytest_addoption(parser):
    parser.addoption(
        "--backends", default=None, metavar="NAMES",
        help="run only the matrix cells of these backends: names, specs or cell ids, comma-separated "
             "(e.g. numpy,jax or array_api_strict:device1 or torch-cpu-float32)",
    )


def pytest_configure(config):
    config.addinivalue_line("markers", "cell: a test that runs once per matrix cell")
    known = {c.name for c in CELLS} | {c.spec for c in CELLS} | {c.id for c in CELLS}
    option = config.getoption("--backends")
    selected = CELLS
    if option:
        names = {s.strip() for s in option.split(",") if s.strip()}
        unknown = sorted(names - known)
        if unknown:
            raise pytest.UsageError(
                f"--backends: no cell matches {', '.join(unknown)}; cells are "
                f"{', '.join(c.id for c in CELLS)} (backends {', '.join(sorted({c.name for c in CELLS}))})"
            )
        selected = [c for c in CELLS if _matches(c, names)]
    unknown = sorted(_required() - known)
    if unknown:
        raise pytest.UsageError(
            f"MLP_REQUIRE_BACKENDS names {', '.join(unknown)}, which matches no cell; "
            f"use backend names or specs such as {', '.join(sorted({c.spec for c in CELLS}))}"
        )
    config._mlp_cells = selected
    _RESULTS.clear()
    _SKIPS.clear()


def pytest_generate_tests(metafunc):
    if "cell" in metafunc.fixturenames:
        marks = lambda c: [pytest.mark.gpu] if c.gpu else []  # noqa: E731
        metafunc.parametrize(
            "cell",
            [pytest.param(c, id=c.id, marks=marks(c)) for c in metafunc.config._mlp_cells],
            indirect=True,
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


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    callspec = getattr(item, "callspec", None)
    if callspec is not None and isinstance(callspec.params.get("cell"), Cell):
        report.mlp_cell = callspec.params["cell"].id


def pytest_runtest_logreport(report):
    cell_id = getattr(report, "mlp_cell", None)
    if cell_id is None:
        return
    if report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reason = reason.removeprefix("Skipped: ")
        if reason.startswith(f"{cell_id}: "):  # the cell itself cannot run here
            _SKIPS[cell_id] = reason[len(cell_id) + 2:]
            return
        _RESULTS[cell_id]["skipped"] += 1
    elif report.when == "call" or report.failed:
        _RESULTS[cell_id]["passed" if report.passed else "failed"] += 1


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    results, skips = _RESULTS, _SKIPS
    if not results and not skips:
        return
    tr = terminalreporter
    tr.write_sep("=", "mlp matrix: backend x device x dtype cells")
    width = max(len(c.id) for c in CELLS)
    selected = {c.id for c in config._mlp_cells}
    for c in CELLS:
        counts = results.get(c.id)
        if counts:
            text = "ran      " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
            markup = {"red": True} if counts.get("failed") else {"green": True}
        elif c.id in skips:
            text, markup = f"skipped  {skips[c.id]}", {"yellow": True}
        elif c.id not in selected:
            text, markup = f"not selected (--backends {config.getoption('--backends')})", {}
        else:
            text, markup = "no test ran (deselected, or the run stopped early)", {}
        tr.write_line(f"{c.id.ljust(width)}  {text}", **markup)
