"""The executed notebooks: structure, no errors, and nbval re-execution (outputs reproduce)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import jupytext
import nbformat
import pytest

from .conftest import EXECUTED, NOTEBOOK_SOURCES, ROOT, THEORY, require_executed

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
    require_executed(name)
    nb = nbformat.read(EXECUTED / f"{name}.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert any("injected-parameters" in c.metadata.get("tags", []) for c in code)
    assert all(c.get("execution_count") for c in code), "every cell was executed"
    errors = [o for c in code for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, errors[:1]
    images = [o for c in code for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert images, "the figures were produced"


SANITIZE = ROOT / "tests" / "book" / "nbval_sanitize.cfg"


@pytest.mark.slow
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("name", NAMES)
def test_nbval(name):
    """Re-execute each executed chapter and compare every output with papermill's, strictly.

    Only the sanitizers of ``nbval_sanitize.cfg`` (timings, dates, addresses, paths, progress
    bars) and cells tagged ``nbval-ignore-output`` (live measurements; the chapter says why) are
    exempt, so the chapters' numbers are shown to reproduce. Cells run with input history, as
    papermill runs them (``nbval_history.py``: a trailing ``;`` then silences a value), and
    ``figure_text.py`` checks every figure for overlapping text in the same run. The
    notebook is re-run from a folder directly under the repository, as papermill ran it from
    ``notebooks/``, so that the chapters' ``../benchmarks/...`` paths resolve.
    """
    require_executed(name)
    with tempfile.TemporaryDirectory(dir=ROOT, prefix=".nbval-") as tmp:
        copy = Path(tmp) / f"{name}.ipynb"
        shutil.copy(EXECUTED / f"{name}.ipynb", copy)
        overlap_log = Path(tmp) / "figure_text.jsonl"
        cmd = [sys.executable, "-m", "pytest", "--nbval", "--nbval-current-env",
               "--nbval-sanitize-with", str(SANITIZE), "-p", "nbval_history",
               "-p", "figure_text", "-q",
               "-p", "no:cacheprovider", "--rootdir", tmp, "-c", "/dev/null", str(copy)]
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent),  # the two plugins
               "BOOK_FIGURE_TEXT_LOG": str(overlap_log)}
        proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, env=env)
        overlaps = overlap_log.read_text(encoding="utf-8") if overlap_log.exists() else ""
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    # figure_text.py, in the same kernel: texts of one figure drawn over each other.
    assert not overlaps, f"{name}: figure texts that overlap (cell, figure, pairs):\n{overlaps}"


def test_ignored_outputs_say_why():
    """A cell exempt from nbval's comparison names the reason in a comment of its source."""
    for name in NAMES:
        nb = jupytext.read(ROOT / "notebooks" / f"{name}.md")
        for cell in nb.cells:
            if "nbval-ignore-output" in cell.metadata.get("tags", []):
                assert re.search(r"#\s*nbval-ignore-output:\s*\S", cell.source), (
                    f"{name}: a cell tagged nbval-ignore-output without a "
                    "'# nbval-ignore-output: <why>' comment"
                )


def test_sanitizers_keep_numbers_and_remove_what_varies():
    import configparser

    config = configparser.ConfigParser(interpolation=None)
    config.read(SANITIZE)
    pairs = [(config[s]["regex"], config[s]["replace"]) for s in config.sections()]
    nbval_pairs = re.findall("^regex: (.*)$\n^replace: (.*)$", SANITIZE.read_text(),
                             flags=re.MULTILINE)
    assert pairs == nbval_pairs, "every section is one regex line, then one replace line"

    def clean(text):
        for regex, replace in pairs:
            text = re.sub(regex, replace, text)
        return text

    varying = ("epochs: 100%|##########| 50/50 [00:01<00:00, 45.2it/s]\n"
               "run at 2026-11-28T07:50:38+00:00 took 12.3 ms (4 µs per item, 1.5 s in all)\n"
               "/home/reader/permlib/sinkhorn.py:12: ConvergenceWarning <function f at 0x7f3a2b>")
    assert clean(varying) == ("TQDM-BARrun at DATE took TIMING (TIMING per item, TIMING in all)\n"
                              "PATH:12: ConvergenceWarning <function f at ADDRESS>")
    kept = "B = 32, N = 100: gap 2.1e-07, ratio 9.1x, 45% wrong, 171 GB/s, |P - Q| = 0.5"
    assert clean(kept) == kept


GLUE_ROLE = re.compile(r"\{glue(?::(?:text|md|any))?\}`([\w.-]+)(?::([^`]*))?`")


@pytest.mark.parametrize("name", NAMES)
def test_every_glued_reference_is_glued_and_formats(name):
    """Each {glue:text}`key:spec` of the prose names a value the executed chapter glued, and the
    format spec applies to it (a missing key or a bad spec is a warning, an error under -W)."""
    from myst_nb.core.variables import format_plain_text

    source = (ROOT / "notebooks" / f"{name}.md").read_text(encoding="utf-8")
    refs = GLUE_ROLE.findall(source)
    if not refs:
        return
    require_executed(name)
    nb = nbformat.read(EXECUTED / f"{name}.ipynb", as_version=4)
    glued = {}
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            meta = out.get("metadata", {}).get("scrapbook")
            if meta:
                data = out["data"]
                glued[meta["name"]] = next(v for k, v in data.items() if k.endswith("text/plain"))
    for key, spec in refs:
        assert key in glued, f"{name}: {{glue}} `{key}` is not glued"
        format_plain_text(glued[key], spec or "")
