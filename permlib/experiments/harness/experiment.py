"""What every experiment runner shares beyond training: its tables, its command line, running a
table's grid, checking a stored cell against its saved weights.

An experiment subclasses :class:`Experiment`, names itself, its config dataclass, its grid axes
and its tables, and implements four methods: :meth:`Experiment.cells` (the grid of a table),
:meth:`Experiment.run_cell` (train and test one config), :meth:`Experiment.recompute` (metrics
from saved weights) and :meth:`Experiment.ci` (the small run a chapter shows). The rest (results
files, resuming, stale checks, artifacts, provenance, ``--verify``, the command line) is here.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import time
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from permlib.experiments.harness import cli, distributed, paths
from permlib.experiments.harness.compare import markdown_table
from permlib.experiments.harness.config import config_dict, config_from_dict
from permlib.experiments.harness.grid import run_grid
from permlib.experiments.harness.results import ResultsStore, cell_id
from permlib.experiments.harness.train import torch_threads

__all__ = ["Experiment", "NoArtifactsError"]

Cells = list[tuple[dict[str, Any], Any]]


class NoArtifactsError(LookupError):
    """A stored cell has no saved artifacts (it was recorded before weights were kept), so
    its metrics cannot be recomputed; the message says how to record them."""


class Experiment:
    """Base class of the experiment runners.

    Class attributes to set: ``name`` (e.g. ``"sorting"``; results go to
    ``<results dir>/<name>_<table>.json``), ``config_cls`` (a frozen dataclass), ``axes`` (the
    grid axes, ``"seed"`` among them) and ``tables`` (table name -> spec with at least
    ``"title"``). Override :meth:`identity` if the stored config is not ``config_dict(config)``.
    """

    name: str
    config_cls: type
    axes: tuple[str, ...]
    tables: Mapping[str, Mapping[str, Any]]
    #: Config fields that act only after training; a cell whose stored config differs only in
    #: these is brought up to date by :meth:`refresh` from its saved weights, not retrained.
    post_training: tuple[str, ...] = ()

    # ------------------------------------------------------------------ to implement

    def cells(self, table: str, seeds: Sequence[int], selection: Mapping[str, list],
              only: Sequence[Mapping[str, Any]], overrides: Mapping[str, Any]) -> Cells:
        """The ``(cell, config)`` pairs of ``table`` that the selection keeps, in run order."""
        raise NotImplementedError

    def run_cell(self, config: Any, *, checkpoint: Path | None, progress: bool,
                 device: str | torch.device) -> dict[str, Any]:
        """Train and test one config: a JSON-ready record with ``metrics`` and ``wall_s``, and
        ``artifacts`` (name -> object to ``torch.save``, e.g. the final state dict)."""
        raise NotImplementedError

    def recompute(self, config: Any, artifacts: Mapping[str, Any]) -> dict[str, Any]:
        """The metrics of a stored cell, recomputed from its loaded artifacts."""
        raise NotImplementedError

    def refresh(self, config: Any, record: Mapping[str, Any],
                artifacts: Mapping[str, Any]) -> dict[str, Any]:  # fmt: skip
        """Bring a stored cell (``record``, its loaded ``artifacts``) to ``config``, which differs
        from the stored one only in :attr:`post_training` fields: a record as
        :meth:`run_cell` returns. Only needed when :attr:`post_training` is set."""
        raise NotImplementedError

    def ci(self, *, seed: int, progress: bool, device: str | torch.device,
           **overrides: Any) -> dict[str, Any]:
        """The small run of ``--mode ci``: a dict with ``config``, ``metrics``, ``train``,
        ``wall_s`` and ``provenance``."""
        raise NotImplementedError

    def ci_table(self, out: Mapping[str, Any]) -> str:
        """The short table ``--mode ci`` prints (default: metrics by their first key)."""
        rows = [{"": k} | v for k, v in out["metrics"].items()]
        return markdown_table(rows, ["", *next(iter(out["metrics"].values()))], digits=3)

    # ------------------------------------------------------------------ provided

    def identity(self, config: Any) -> dict[str, Any]:
        """What a stored cell's config is compared with."""
        return config_dict(config)

    def table_meta(self, table: str) -> dict[str, Any]:
        """Table-level information written into the results file."""
        return {"title": self.tables[table].get("title", table)}

    def store(self, table: str, results_dir: str | Path | None = None) -> ResultsStore:
        """The results of ``table``."""
        if table not in self.tables:
            raise ValueError(f"table must be one of {tuple(self.tables)}, got {table!r}")
        return ResultsStore(paths.results_dir(results_dir), self.name, table, self.axes,
                            meta=self.table_meta(table))  # fmt: skip

    def load_results(self, table: str, results_dir: str | Path | None = None, *,
                     current: bool = False) -> dict | None:  # fmt: skip
        """The results file of ``table``, or ``None`` if absent.

        With ``current=True`` the cells of the grid recorded under another config than the one
        the code runs now (stale: an older protocol) are left out, so that a table never mixes
        protocols; their ids are listed under ``"stale_cells"`` (a chapter says how many).
        """
        data = self.store(table, results_dir).load()
        if data is None or not current:
            return data
        seeds = sorted({rec["cell"]["seed"] for rec in data["cells"]})
        with contextlib.redirect_stdout(io.StringIO()):  # what cells() says it skips is for runs
            grid = self.cells(table, seeds, {}, [], {})
        now = {cell_id(c): self.identity(cfg) for c, cfg in grid}
        ids = [cell_id(rec["cell"]) for rec in data["cells"]]
        stale = [i for i, rec in zip(ids, data["cells"], strict=True)
                 if i in now and rec.get("config") != now[i]]
        return {**data, "cells": [rec for i, rec in zip(ids, data["cells"], strict=True)
                                  if i not in stale],
                "stale_cells": stale}  # fmt: skip

    def run_table(
        self,
        table: str,
        *,
        seeds: Sequence[int] = (0,),
        selection: Mapping[str, list] | None = None,
        only: Sequence[Mapping[str, Any]] = (),
        overrides: Mapping[str, Any] | None = None,
        results_dir: str | Path | None = None,
        checkpoint_dir: str | Path | None = None,
        force: bool = False,
        on_stale: str = "refuse",
        progress: bool = True,
        mode: str = "full",
        device: str | torch.device = "cpu",
    ) -> dict:
        """Run the missing cells of ``table`` (see :func:`~permlib.experiments.harness.run_grid`):
        done cells are skipped, stale ones refused or rerun (or refreshed from their weights
        when only :attr:`post_training` fields changed), each record written with its
        provenance and artifacts as soon as it is finished. Returns the file's content.

        ``overrides`` (config fields set over the table's protocol) are written to the file's
        header as ``"overrides"`` beside ``"protocol"``, so the header says what the run did."""
        grid = self.cells(table, seeds, dict(selection or {}), list(only), dict(overrides or {}))

        store = self.store(table, results_dir)
        if overrides:
            store.meta["overrides"] = {k: list(v) if isinstance(v, tuple) else v
                                       for k, v in overrides.items()}  # fmt: skip

        def one(cell: dict, config: Any, ckpt: Path) -> dict:
            return self.run_cell(config, checkpoint=ckpt, progress=progress, device=device)

        return run_grid(
            store, grid, one, identity=self.identity,
            checkpoint_dir=paths.checkpoint_dir(checkpoint_dir), force=force, on_stale=on_stale,
            progress=progress, mode=mode, device=device, post_training=self.post_training,
            refresh=self.refresher(store),
        )  # fmt: skip

    def refresher(self, store: ResultsStore) -> Any:
        """``refresh(cell, config, record)`` for :func:`~permlib.experiments.harness.run_grid`:
        :meth:`refresh` with the record's artifacts loaded (SHA-256 checked) from ``store``."""

        def refresh(cell: dict, config: Any, record: dict) -> dict:
            names = record["provenance"]["artifacts"]
            return self.refresh(config, record,
                                {name: store.load_artifact(record, name) for name in names})

        return refresh

    def verify(
        self, table: str, cell: Mapping[str, Any], results_dir: str | Path | None = None
    ) -> dict:
        """Recompute a stored cell's metrics from its saved artifacts: ``stored``,
        ``recomputed`` and ``max_abs_diff`` over every number of the metrics."""
        store = self.store(table, results_dir)
        rec = store.get(cell)
        if rec is None:
            raise KeyError(f"no cell {cell_id(cell)} in {store.path}")
        names = rec.get("provenance", {}).get("artifacts", {})
        artifacts = {name: store.load_artifact(rec, name) for name in names}
        try:
            again = self.recompute(config_from_dict(self.config_cls, rec["config"]), artifacts)
        except KeyError as err:
            if names:
                raise
            raise NoArtifactsError(
                f"cell {cell_id(cell)} of {store.path} was recorded without saved weights "
                f"({err} is missing), so its metrics cannot be recomputed; record them with: "
                f"python -m permlib.experiments.{self.name} --mode full --table {table} "
                f"--cell {cell_id(cell)} --force") from err
        diff = max((abs(a - b) for a, b in zip(_numbers(again), _numbers(rec["metrics"]),
                                               strict=True)), default=0.0)  # fmt: skip
        return {"stored": rec["metrics"], "recomputed": again, "max_abs_diff": diff}

    def list_cells(self, tables: Sequence[str], seeds: Sequence[int],
                   selection: Mapping[str, list], only: Sequence[Mapping[str, Any]],
                   overrides: Mapping[str, Any]) -> list[str]:  # fmt: skip
        """The selected cells of ``tables`` in the ``--cell`` syntax, in run order
        (``method=hste,n=100,seed=0``); prefixed with ``table=<name>,`` when there are several
        tables, so that each line names exactly one cell of one table."""
        lines = []
        for table in tables:
            mine = cli.cells_for_table(only, table)
            if mine is None:
                continue
            prefix = f"{cli.TABLE_KEY}={table}," if len(tables) > 1 else ""
            lines += [prefix + cell_id(cell)
                      for cell, _ in self.cells(table, seeds, selection, mine, overrides)]
        return lines

    def main(self, argv: Sequence[str] | None = None) -> int:
        """The command line: ``python -m permlib.experiments.<name> --help``.

        Under ``torchrun --nproc-per-node K -m permlib.experiments.<name> ...`` the selected
        cells are trained by K processes together (see :func:`~permlib.experiments.harness.fit`):
        the process group starts here, before any model is built (``--device cuda`` becomes
        each process's own GPU, ``cuda:LOCAL_RANK``), and only rank 0 prints and writes.
        """
        prog = f"python -m permlib.experiments.{self.name}"
        doc = (sys.modules[type(self).__module__].__doc__ or self.name).split("\n\n")[0]
        parser = cli.experiment_parser(prog, doc, self.config_cls, self.axes, tuple(self.tables))
        args = parser.parse_args(argv)
        hints = typing.get_type_hints(self.config_cls)
        types = {a: int for a in self.axes if hints.get(a) is int}
        try:
            sel = cli.selection_from_args(args, self.config_cls, self.axes, types)
        except ValueError as exc:
            parser.error(str(exc))
        named = {c[cli.TABLE_KEY] for c in sel.only if cli.TABLE_KEY in c}
        if named - set(args.table):
            parser.error(f"--cell names table(s) {sorted(named - set(args.table))}; the selected "
                         f"tables are {args.table} (--table)")  # fmt: skip
        if args.merge:
            for table in args.table:
                store = self.store(table, args.results_dir)
                for folder in args.merge:
                    got = store.merge(folder)
                    print(f"{store.path.name} <- {folder}: {len(got['added'])} added, "
                          f"{len(got['same'])} already there, {len(got['conflicts'])} "
                          f"different (kept ours: {', '.join(got['conflicts']) or '-'})")
            return 0
        if args.list_cells:
            lines = self.list_cells(args.table, sel.seeds, sel.selection, sel.only, sel.overrides)
            print("\n".join(lines))
            return 0
        started = distributed.init(args.device)
        device = str(distributed.device_for_rank(args.device)) if started else args.device
        try:
            with torch_threads(args.threads):
                return self._run(args, sel, device)
        finally:
            if started:
                distributed.shutdown()

    def _run(self, args: Any, sel: cli.Selection, device: str) -> int:
        """The body of :meth:`main` once the options are parsed (every rank runs it)."""
        say = distributed.is_main()
        t0 = time.perf_counter()
        if args.verify:
            unverifiable = 0
            for table in args.table:
                only = cli.cells_for_table(sel.only, table)
                if only is None:
                    continue
                for cell, _ in self.cells(table, sel.seeds, sel.selection, only, sel.overrides):
                    if self.store(table, args.results_dir).get(cell) is None:
                        continue
                    try:
                        d = self.verify(table, cell, args.results_dir)["max_abs_diff"]
                    except NoArtifactsError as err:
                        unverifiable += 1
                        if say:
                            print(f"{table} {cell_id(cell)}: not verifiable: {err}")
                        continue
                    if say:
                        print(f"{table} {cell_id(cell)}: max |recomputed - stored| {d:.2e}")
            return 1 if unverifiable else 0
        if args.mode == "ci":
            ci = {k: v[0] for k, v in sel.selection.items() if k != "seed"} | sel.overrides
            out = self.ci(seed=sel.seeds[0], progress=not args.no_progress and say,
                          device=device, **ci)  # fmt: skip
            if say:
                print(self.ci_table(out))
                print(f"\n{out['train']['steps']} steps, final loss "
                      f"{out['train']['final_loss']:.2e}, {out['wall_s']:.1f} s")
                if args.json:
                    keep = ("config", "metrics", "train", "wall_s", "provenance")
                    text = json.dumps({k: out[k] for k in keep}, indent=1)
                    Path(args.json).write_text(text + "\n")
            return 0
        for table in args.table:
            only = cli.cells_for_table(sel.only, table)
            if only is None:
                continue
            data = self.run_table(
                table, seeds=sel.seeds, selection=sel.selection, only=only,
                overrides=sel.overrides, results_dir=args.results_dir,
                checkpoint_dir=args.checkpoint_dir, force=args.force,
                on_stale="rerun" if args.rerun_stale else "refuse",
                progress=not args.no_progress, device=device,
            )  # fmt: skip
            if say:
                print(f"{table}: {data.get('summary')}", file=sys.stderr)
        if say:
            print(f"total wall time {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        return 0


def model_record(record: dict[str, Any]) -> dict[str, Any]:
    """A runner's cell record as the store keeps it: the loss curve dropped and the trained
    ``model`` moved into the artifacts, as ``model.pt`` (its CPU state dict)."""
    record = dict(record)
    record.pop("losses", None)
    model = record.pop("model")
    return record | {"artifacts": {"model.pt": model.cpu().state_dict()}}


def _numbers(tree: Any) -> list[float]:
    """The numbers of a nested dict/list, in a fixed order."""
    if isinstance(tree, Mapping):
        return [x for k in sorted(tree) for x in _numbers(tree[k])]
    if isinstance(tree, list | tuple):
        return [x for v in tree for x in _numbers(v)]
    return [float(tree)] if isinstance(tree, int | float) and not isinstance(tree, bool) else []
