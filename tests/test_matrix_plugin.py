"""The matrix machinery itself: cell selection, required backends, the summary,
and the published tolerance table."""
from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import pytest

import backends
from conftest import CELLS, TOLERANCES

ROOT = pathlib.Path(__file__).resolve().parents[1]
SMOKE = "tests/test_model_smoke.py"  # one small test per cell


def pytest_run(*args, require=None):
    env = {k: v for k, v in os.environ.items()
           if k not in ("MLP_REQUIRE_BACKENDS", "MLP_BACKEND", "MLP_DEVICE", "PYTEST_ADDOPTS")}
    if require is not None:
        env["MLP_REQUIRE_BACKENDS"] = require
    out = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    return out.returncode, out.stdout + out.stderr


def _cupy_unavailable():
    try:
        backends.get("cupy").ensure_dtype("float32")
    except backends.BackendUnavailable as err:
        return str(err)
    return None


def test_required_backend_fails_instead_of_skipping():
    reason = _cupy_unavailable()
    code, text = pytest_run(SMOKE, "--backends", "cupy")
    assert code == 0, text
    assert re.search(r"cupy-gpu-float32 +skipped  cupy[ :]", text), text  # the summary says why
    code, text = pytest_run(SMOKE, "--backends", "cupy", require="cupy")
    if reason is None:  # a machine with CUDA and CuPy: the cells run and pass
        assert code == 0 and re.search(r"cupy-gpu-float32 +ran +1 passed", text), text
        return
    assert code == 1, text
    for dtype in ("float64", "float32"):
        assert f"cupy-gpu-{dtype} is required by MLP_REQUIRE_BACKENDS but unavailable: {reason}" in text, text
    assert "2 errors" in text, text
    assert re.search(r"cupy-gpu-float32 +ran +1 failed", text), text  # not "skipped" in the summary


def test_backends_option_selects_cells_and_the_summary_lists_every_cell():
    code, text = pytest_run(SMOKE, "--backends", "array_api_strict:device1,numpy-cpu-float32", "-q")
    assert code == 0, text
    assert "2 passed" in text
    summary = text.split("mlp matrix: backend x device x dtype cells")[1]
    for c in CELLS:
        line = next(line for line in summary.splitlines() if line.startswith(c.id + " "))
        if c.id in ("array_api_strict-device1-float32", "numpy-cpu-float32"):
            assert "ran      1 passed" in line, line
        else:
            assert "not selected (--backends array_api_strict:device1,numpy-cpu-float32)" in line, line


@pytest.mark.parametrize("option, env, message", [
    (["--backends", "nump"], None, "--backends: no cell matches nump; cells are numpy-cpu-float64"),
    ([], "cupyy", "MLP_REQUIRE_BACKENDS names cupyy, which matches no cell"),
])
def test_a_name_that_matches_no_cell_is_a_usage_error(option, env, message):
    code, text = pytest_run(SMOKE, *option, require=env)
    assert code == 4 and message in text, text


def _table(path):
    """The tolerance table of docs/testing.md as {dtype or precision: {kind: (rtol, atol) or None}}."""
    lines = path.read_text().splitlines()
    start = lines.index("<!-- tolerances: the same numbers as TOLERANCES in tests/conftest.py -->")
    header = [c.strip() for c in lines[start + 1].strip("|").split("|")]
    table = {}
    for line in lines[start + 3:]:
        if not line.startswith("|"):
            break
        dtype, *cells = [c.strip().strip("`") for c in line.strip("|").split("|")]
        table[dtype] = {}
        for kind, text in zip(header[1:], cells):
            if text.startswith("not run"):  # a check those cells do not make (None in TOLERANCES)
                table[dtype][kind.strip("`")] = None
                continue
            rtol, atol = re.fullmatch(r"rtol ([0-9.e-]+), atol ([0-9.e-]+)", text).groups()
            table[dtype][kind.strip("`")] = (float(rtol), float(atol))
    return table


def test_docs_publish_the_tolerances_the_tests_use():
    assert _table(ROOT / "docs" / "testing.md") == TOLERANCES


def test_precision_cells_show_in_the_summary_and_can_be_required():
    """The bfloat16 CPU cells run; the GPU precision cells run on a GPU, else are skipped
    with their reason; MLP_REQUIRE_BACKENDS turns such a skip into a failure."""
    from conftest import PRECISION_CELLS

    test = "tests/test_matrix_precision.py::test_each_product_is_within_the_formats_bound_and_really_rounded"
    code, text = pytest_run(test, "--backends", "jax,torch,cupy", "-q")
    assert code == 0, text
    summary = text.split("mlp matrix: backend x device x dtype cells")[1]
    for c in PRECISION_CELLS:
        line = next(line for line in summary.splitlines() if line.startswith(c.id + " "))
        if not c.gpu:
            assert "ran      3 passed" in line, line
        else:
            assert re.search(r"ran      3 passed|skipped  \S", line), line
    reason = _cupy_unavailable()
    if reason is not None:
        code, text = pytest_run(test, "--backends", "cupy", require="cupy")
        assert code == 1 and f"cupy-gpu-tf32 is required by MLP_REQUIRE_BACKENDS but unavailable: {reason}" in text
