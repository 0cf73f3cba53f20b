"""Where an experiment reads and writes: command line first, then an environment variable, then a
default relative to the current working directory.

The installed package never looks for the repository: run from the repository root and the
defaults are the repository's own folders (``benchmarks/results``, ``benchmarks/checkpoints``,
``benchmarks/reference/paper_tables.json``); run from anywhere else and pass the folders (or set
the variables) explicitly.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "CHECKPOINT_ENV",
    "PAPER_TABLES_ENV",
    "RESULTS_ENV",
    "checkpoint_dir",
    "paper_tables_path",
    "results_dir",
]

RESULTS_ENV = "PERMLIB_RESULTS_DIR"
CHECKPOINT_ENV = "PERMLIB_CHECKPOINT_DIR"
PAPER_TABLES_ENV = "PERMLIB_PAPER_TABLES"

_DEFAULTS = {
    RESULTS_ENV: Path("benchmarks") / "results",
    CHECKPOINT_ENV: Path("benchmarks") / "checkpoints",
    PAPER_TABLES_ENV: Path("benchmarks") / "reference" / "paper_tables.json",
}


def _resolve(value: str | os.PathLike | None, env: str) -> Path:
    if value is not None and str(value) != "":
        return Path(value)
    from_env = os.environ.get(env)
    if from_env:
        return Path(from_env)
    return Path.cwd() / _DEFAULTS[env]


def results_dir(value: str | os.PathLike | None = None) -> Path:
    """The results folder: ``value``, else ``$PERMLIB_RESULTS_DIR``, else
    ``./benchmarks/results``."""
    return _resolve(value, RESULTS_ENV)


def checkpoint_dir(value: str | os.PathLike | None = None) -> Path:
    """Checkpoints of unfinished cells: ``value``, else ``$PERMLIB_CHECKPOINT_DIR``, else
    ``./benchmarks/checkpoints``."""
    return _resolve(value, CHECKPOINT_ENV)


def paper_tables_path(value: str | os.PathLike | None = None) -> Path:
    """The papers' transcribed numbers: ``value``, else ``$PERMLIB_PAPER_TABLES``, else
    ``./benchmarks/reference/paper_tables.json``."""
    return _resolve(value, PAPER_TABLES_ENV)
