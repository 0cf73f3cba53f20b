"""The executed notebooks: structure, no errors, and nbval re-execution (cells must run again)."""

from __future__ import annotations

import re
import subprocess
import sys

import jupytext
import nbformat
import pytest

from .conftest import EXECUTED, NOTEBOOK_SOURCES, ROOT, THEORY, require_build

NAMES = [p.stem for p in NOTEBOOK_SOURCES]
# "Notebooks teach; permlib does the work": no operator or training loop defined in a notebook.
FORBIDDEN_DEF = re.compile(r"^\s*def\s+(\w*(sinkhorn|matching|gumbel|hungarian|train)\w*)\s*\(",
                           re.MULTILINE | re.IGNORECASE)


@pytest.mark.parametrize("name", NAMES)
def test_source_structure(name):
    nb = jupytext.read(ROOT / "notebooks" / f"{name}.md")
    code = [c for c in nb.cells if c.cell_type == "code"]
    params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1, "exactly one cell tagged 'parameters'"
    assert re.search(r'^mode = "ci"$', params[0].source, re.MULTILINE)
    assert all(not c.get("outputs") for c in code), "sources carry no outputs"
    source = "\n".join(c.source for c in code)
    assert not FORBIDDEN_DEF.search(source), "operators and training loops belong in permlib"
    assert "import permlib" in source
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    needles = ["## Overview", "## Summary", "{cite"]
    if name in THEORY:
        needles += ["## Exercises", "{prf:", "{math}"]
    for needle in needles:
        assert needle in text, f"lecture skeleton: missing {needle!r}"
    figures = [c for c in code if "figure" in c.metadata.get("mystnb", {})]
    assert figures, "at least one captioned figure"
    for cell in figures:
        assert cell.metadata["mystnb"]["figure"]["name"].startswith("fig-")
        assert "set_title" not in cell.source


@pytest.mark.parametrize("name", NAMES)
def test_executed_without_errors(name):
    require_build()
    nb = nbformat.read(EXECUTED / f"{name}.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert any("injected-parameters" in c.metadata.get("tags", []) for c in code)
    assert all(c.get("execution_count") for c in code), "every cell was executed"
    errors = [o for c in code for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, errors[:1]
    images = [o for c in code for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert images, "the figures were produced"


@pytest.mark.slow
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("name", NAMES)
def test_nbval(name, tmp_path):
    """Re-execute the executed notebook with nbval (lax: cells must run, outputs may differ)."""
    require_build()
    cmd = [sys.executable, "-m", "pytest", "--nbval-lax", "-q", "-p", "no:cacheprovider",
           "--rootdir", str(tmp_path), "-c", "/dev/null", str(EXECUTED / f"{name}.ipynb")]
    proc = subprocess.run(cmd, cwd=ROOT / "notebooks", capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
