"""Shared fixtures of the book tests: they check what `make book` built under _build/."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "_build"
HTML = BUILD / "html"
EXECUTED = BUILD / "src" / "notebooks"

def _toc_notebooks() -> list[Path]:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from build_book import toc_notebooks
    finally:
        sys.path.pop(0)
    return toc_notebooks()


NOTEBOOK_SOURCES = _toc_notebooks()  # the chapters listed in _toc.yml
IN_CI = bool(os.environ.get("CI"))
# The theory lectures carry proofs and numbered equations; experiment chapters need not.
THEORY = {"sinkhorn_operator", "sinkhorn_failures", "matching_and_hste"}


def require_build() -> None:
    """Skip locally when the book was not built; in CI a missing build is a failure."""
    if not (HTML / "index.html").exists():
        msg = "the book is not built: run `make book` first"
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)


def require_executed(name: str) -> None:
    """Skip locally when the chapter was not executed (`scripts/build_book.py --only NAME`)."""
    if not (EXECUTED / f"{name}.ipynb").exists():
        msg = f"{name} was not executed: run `make book` (or build_book.py --only {name})"
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)


@pytest.fixture(scope="session")
def html_dir() -> Path:
    require_build()
    return HTML
