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

import backends

# Tolerances the matrix uses, by dtype and kind of check (relative, absolute).
# docs/testing.md publishes the same table (tests/test_matrix_plugin.py checks it).
#   forward: one forward pass against the float64 reference
#   grad:    gradients against jax.grad / torch.autograd (float64 oracles)
#   fd:      gradients against central finite differences of the cell's own forward
#   train:   optimizer updates and training trajectories (losses, final params)
# The precision rows (bfloat16, tf32: float32 storage, products under mlp.precision's
# policy) are multiples of the format's rounding error, derived in docs/testing.md;
# None: a check those cells do not run. Their "train" is the band around the float32
# run's per-epoch losses on the digits (tests/test_matrix_precision.py).
_BF16 = 2.0 ** -8  # bfloat16: 8 significand bits, unit roundoff 2^-8
_TF32 = 2.0 ** -10  # TF32: 11 bits (2^-11 rounded), 2^-10 when the hardware truncates
TOLERANCES = {
    "float64": {"forward": (1e-12, 1e-12), "grad": (1e-10, 1e-12), "fd": (1e-6, 1e-8), "train": (1e-10, 1e-12)},
    "float32": {"forward": (1e-5, 1e-6), "grad": (1e-4, 1e-6), "fd": (2e-2, 2e-3), "train": (1e-4, 1e-5)},
    "bfloat16": {"forward": (8 * _BF16, 8 * _BF16), "grad": (16 * _BF16, 16 * _BF16), "fd": None,
                 "train": (0.02, 0.005)},
    "tf32": {"forward": (8 * _TF32, 8 * _TF32), "grad": (16 * _TF32, 16 * _TF32), "fd": None,
             "train": (0.02, 0.005)},
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

    precision = "float32"  # the policy of mlp.precision the cell's models use

    @property
    def numerics(self):
        """The row of TOLERANCES: the dtype, or the precision policy's format."""
        return self.dtype

    def tol(self, kind="forward"):
        """(rtol, atol) for this cell's dtype (or precision) and the kind of check."""
        return TOLERANCES[self.numerics][kind]

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


@dataclass(frozen=True)
class PrecisionCell(Cell):
    """A cell whose models train under a mixed precision policy (mlp.precision):
    float32 storage, matrix products in bfloat16 or TF32. Not part of CELLS: the
    ``cell`` matrix assumes float32/float64 products; tests take ``precision_cell``."""

    precision: str = "bf16"

    @property
    def numerics(self):
        return {"bf16": "bfloat16", "tf32": "tf32"}[self.precision]

    @property
    def id(self):
        name, _, device = self.spec.partition(":")
        return f"{name}-{(device or ('gpu' if self.gpu else 'cpu')).replace(':', '')}-{self.numerics}"

    @property
    def model_kwargs(self):
        """What ``mlp.MLP``/``Sequential`` take to build a model of this cell."""
        return {"backend": self.spec, "dtype": self.dtype, "precision": self.precision}


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

PRECISION_CELLS = [
    PrecisionCell("jax:cpu", "float32", precision="bf16"),
    PrecisionCell("torch:cpu", "float32", precision="bf16"),
    PrecisionCell("jax:gpu", "float32", gpu=True, precision="bf16"),
    PrecisionCell("jax:gpu", "float32", gpu=True, precision="tf32"),
    PrecisionCell("torch:cuda", "float32", gpu=True, precision="bf16"),
    PrecisionCell("torch:cuda", "float32", gpu=True, precision="tf32"),
    PrecisionCell("cupy:gpu", "float32", gpu=True, precision="tf32"),
]
ALL_CELLS = CELLS + PRECISION_CELLS


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
    known = {c.name for c in ALL_CELLS} | {c.spec for c in ALL_CELLS} | {c.id for c in ALL_CELLS}
    option = config.getoption("--backends")
    selected = ALL_CELLS
    if option:
        names = {s.strip() for s in option.split(",") if s.strip()}
        unknown = sorted(names - known)
        if unknown:
            raise pytest.UsageError(
                f"--backends: no cell matches {', '.join(unknown)}; cells are "
                f"{', '.join(c.id for c in ALL_CELLS)} (backends {', '.join(sorted({c.name for c in CELLS}))})"
            )
        selected = [c for c in ALL_CELLS if _matches(c, names)]
    unknown = sorted(_required() - known)
    if unknown:
        raise pytest.UsageError(
            f"MLP_REQUIRE_BACKENDS names {', '.join(unknown)}, which matches no cell; "
            f"use backend names or specs such as {', '.join(sorted({c.spec for c in CELLS}))}"
        )
    config._mlp_cells = [c for c in selected if not isinstance(c, PrecisionCell)]
    config._mlp_precision_cells = [c for c in selected if isinstance(c, PrecisionCell)]
    _RESULTS.clear()
    _SKIPS.clear()


def pytest_generate_tests(metafunc):
    marks = lambda c: [pytest.mark.gpu] if c.gpu else []  # noqa: E731
    for name, cells in (("cell", metafunc.config._mlp_cells),
                        ("precision_cell", metafunc.config._mlp_precision_cells)):
        if name in metafunc.fixturenames:
            metafunc.parametrize(name, [pytest.param(c, id=c.id, marks=marks(c)) for c in cells],
                                 indirect=True)


def _load(c):
    """Load a cell's backend, or skip (fail, when MLP_REQUIRE_BACKENDS names it) with the reason."""
    import mlp.precision

    try:
        b = backends.get(c.spec)
        b.ensure_dtype(c.dtype)
        mlp.precision.get(c.precision).check(b, c.dtype)
    except (backends.BackendUnavailable, mlp.precision.PrecisionError) as err:
        required = _required()
        if c.name in required or c.spec in required:
            pytest.fail(f"{c.id} is required by MLP_REQUIRE_BACKENDS but unavailable: {err}")
        pytest.skip(f"{c.id}: {err}")
    return c


@pytest.fixture
def cell(request):
    """One cell of the matrix, its backend loaded (or the test skipped with the reason)."""
    return _load(request.param)


@pytest.fixture
def precision_cell(request):
    """One mixed-precision cell (PRECISION_CELLS): a backend that runs the cell's policy
    (or the test skipped with the reason, failed where MLP_REQUIRE_BACKENDS names it)."""
    return _load(request.param)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    callspec = getattr(item, "callspec", None)
    for name in ("cell", "precision_cell"):
        if callspec is not None and isinstance(callspec.params.get(name), Cell):
            report.mlp_cell = callspec.params[name].id


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
    width = max(len(c.id) for c in ALL_CELLS)
    selected = {c.id for c in config._mlp_cells + config._mlp_precision_cells}
    for c in ALL_CELLS:
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
