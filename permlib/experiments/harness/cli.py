"""The command line every experiment runner shares.

Common options (``--mode``, ``--table``, ``--cell``, ``--list-cells``, folders, ``--device``,
``--force``, ``--rerun-stale``, ``--verify``, ``--threads``, ...) plus one option per field of the
experiment's config dataclass (:mod:`.config`).

Spreading a grid over a job array: ``--list-cells`` prints the selected cells one per line in the
syntax ``--cell`` reads (``method=hste,n=100,seed=0``, prefixed with ``table=<name>,`` when more
than one table is selected), and job ``i`` runs line ``i``::

    python -m permlib.experiments.sorting --mode full --table table5 --list-cells > cells.txt
    python -m permlib.experiments.sorting --mode full --table table5 \
        --cell "$(sed -n "$((i + 1))p" cells.txt)"
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from permlib.experiments.harness.config import add_config_arguments, parse_config_arguments
from permlib.experiments.harness.grid import parse_cell

__all__ = ["TABLE_KEY", "Selection", "add_run_options", "cells_for_table", "experiment_parser",
           "selection_from_args"]

#: The ``--cell`` key that names a table (``table=table5,method=hste,n=100,seed=0``).
TABLE_KEY = "table"


def experiment_parser(
    prog: str, description: str, config_cls: type, axes: Sequence[str], tables: Sequence[str]
) -> argparse.ArgumentParser:
    """An argument parser with the common options and one option per config field."""
    p = argparse.ArgumentParser(prog=prog, description=description,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--mode", choices=("ci", "full"), default="ci",
                   help="ci: one small run; full: the grid of the selected tables")
    p.add_argument("--table", nargs="+", choices=tuple(tables), default=list(tables))
    p.add_argument("--cell", action="append", default=[], metavar="AXIS=VALUE,...",
                   help="only this cell (repeatable), e.g. " + ",".join(f"{a}=..." for a in axes)
                   + "; a table=NAME pair limits it to that table")
    p.add_argument("--merge", nargs="+", default=None, metavar="DIR",
                   help="add the selected tables' cells (and weights) found in these results "
                        "folders, e.g. one per host, to --results-dir, and exit")
    p.add_argument("--list-cells", action="store_true",
                   help="print the selected cells, one per line in the --cell syntax (for a job "
                        "array), and exit")
    add_run_options(p)
    p.add_argument("--force", action="store_true", help="rerun cells already in the results")
    p.add_argument("--rerun-stale", action="store_true",
                   help="rerun finished cells whose stored config differs (default: refuse)")
    p.add_argument("--verify", action="store_true",
                   help="recompute the selected cells' metrics from their saved weights")
    p.add_argument("--json", default=None, help="ci mode: also write the result to this file")
    add_config_arguments(p, config_cls, axes=axes)
    return p


def add_run_options(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the options of where and how a grid runs, shared by every runner and search:
    ``--results-dir``, ``--checkpoint-dir``, ``--device``, ``--threads``, ``--no-progress``."""
    p.add_argument("--results-dir", default=None,
                   help="results folder (default $PERMLIB_RESULTS_DIR or ./benchmarks/results)")
    p.add_argument("--checkpoint-dir", default=None,
                   help="checkpoints (default $PERMLIB_CHECKPOINT_DIR or ./benchmarks/checkpoints)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


@dataclass(frozen=True)
class Selection:
    """What the command line selected.

    Attributes:
        overrides: protocol fields given as options (``--n-steps 500``).
        selection: axis -> selected values (``--n 80 100``).
        only: partial cells from ``--cell``.
        seeds: the seeds to run (``--seed``, the seeds named by ``--cell``, else ``[0]``).
    """

    overrides: dict[str, Any]
    selection: dict[str, list]
    only: list[dict[str, Any]]
    seeds: list[int]


def selection_from_args(
    args: argparse.Namespace,
    config_cls: type,
    axes: Sequence[str],
    types: Mapping[str, type] | None = None,
) -> Selection:
    """Split parsed options into overrides, axis selection, ``--cell`` filters and seeds.

    A ``--cell`` naming a key that is neither an axis nor ``table`` raises ``ValueError``.
    """
    overrides, selection = parse_config_arguments(args, config_cls, axes=axes)
    only = [parse_cell(c, types) for c in args.cell]
    for text, cell in zip(args.cell, only, strict=True):
        unknown = [k for k in cell if k not in axes and k != TABLE_KEY]
        if unknown:
            raise ValueError(f"--cell {text!r}: {unknown} are not axes; the axes are "
                             f"{list(axes)} (and {TABLE_KEY}=NAME)")  # fmt: skip
    seeds = selection.get("seed") or sorted({c["seed"] for c in only if "seed" in c}) or [0]
    return Selection(overrides=overrides, selection=selection, only=only, seeds=seeds)


def cells_for_table(only: Sequence[Mapping[str, Any]], table: str) -> list[dict[str, Any]] | None:
    """The ``--cell`` filters that apply to ``table``, without their ``table`` key.

    ``[]`` when no ``--cell`` was given (every cell of the table runs); ``None`` when cells were
    given but all of them name other tables (nothing of ``table`` runs).
    """
    mine = [{k: v for k, v in c.items() if k != TABLE_KEY}
            for c in only if c.get(TABLE_KEY, table) == table]  # fmt: skip
    if only and not mine:
        return None
    return mine
