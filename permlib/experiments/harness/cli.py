"""The command line every experiment runner shares.

Common options (``--mode``, ``--table``, ``--cell``, folders, ``--device``, ``--force``,
``--rerun-stale``, ``--verify``, ``--threads``, ...) plus one option per field of the experiment's
config dataclass (:mod:`.config`).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from permlib.experiments.harness.config import add_config_arguments, parse_config_arguments
from permlib.experiments.harness.grid import parse_cell

__all__ = ["Selection", "experiment_parser", "selection_from_args"]


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
                   help="only this cell (repeatable), e.g. " + ",".join(f"{a}=..." for a in axes))
    p.add_argument("--results-dir", default=None,
                   help="results folder (default $PERMLIB_RESULTS_DIR or ./benchmarks/results)")
    p.add_argument("--checkpoint-dir", default=None,
                   help="checkpoints (default $PERMLIB_CHECKPOINT_DIR or ./benchmarks/checkpoints)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--force", action="store_true", help="rerun cells already in the results")
    p.add_argument("--rerun-stale", action="store_true",
                   help="rerun finished cells whose stored config differs (default: refuse)")
    p.add_argument("--verify", action="store_true",
                   help="recompute the selected cells' metrics from their saved weights")
    p.add_argument("--json", default=None, help="ci mode: also write the result to this file")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_config_arguments(p, config_cls, axes=axes)
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
    """Split parsed options into overrides, axis selection, ``--cell`` filters and seeds."""
    overrides, selection = parse_config_arguments(args, config_cls, axes=axes)
    only = [parse_cell(c, types) for c in args.cell]
    seeds = selection.get("seed") or sorted({c["seed"] for c in only if "seed" in c}) or [0]
    return Selection(overrides=overrides, selection=selection, only=only, seeds=seeds)
