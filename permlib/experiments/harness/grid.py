"""Run the cells of a grid: skip what is done, refuse or rerun what is stale, claim, resume.

An experiment describes its grid as a list of ``(cell, config)`` pairs (``cell`` a dict of grid
axes, ``config`` the dataclass that cell runs with) and a function that runs one cell; this
module does the rest for every experiment alike. Cells can be spread over processes or machines
sharing the results folder (each cell is claimed with a lock) or over a job array (one
``--cell`` per job; ``--list-cells`` prints them).

Under torchrun every rank runs the same cells (they train each cell together, see
:func:`~permlib.experiments.harness.fit`): rank 0 reads the results, claims each cell and decides
whether it runs, and tells the other ranks; only rank 0 writes records, artifacts and removes
checkpoints.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from tqdm import tqdm

from permlib.experiments.harness import distributed
from permlib.experiments.harness.provenance import code_commit, provenance
from permlib.experiments.harness.results import (
    ResultsStore,
    StaleCellError,
    cell_id,
    config_diff,
)

__all__ = ["parse_cell", "run_grid", "select_cells"]

OnStale = Literal["refuse", "rerun"]


def parse_cell(text: str, types: Mapping[str, type] | None = None) -> dict[str, Any]:
    """``"method=hste,n=100"`` -> ``{"method": "hste", "n": 100}`` (values cast by ``types``)."""
    cell: dict[str, Any] = {}
    for part in filter(None, text.split(",")):
        if "=" not in part:
            raise ValueError(f"--cell expects axis=value pairs separated by commas, got {text!r}")
        key, value = (s.strip() for s in part.split("=", 1))
        cast = (types or {}).get(key, str)
        try:
            cell[key] = cast(value)
        except ValueError as exc:
            raise ValueError(f"--cell {text!r}: {key}={value!r} is not a {cast.__name__}") from exc
    return cell


def select_cells(
    cells: Sequence[tuple[dict[str, Any], Any]],
    selection: Mapping[str, Sequence[Any]] | None = None,
    only: Sequence[Mapping[str, Any]] = (),
) -> list[tuple[dict[str, Any], Any]]:
    """The pairs whose cell matches every axis of ``selection`` (axis -> allowed values) and, if
    ``only`` is given, equals one of the partial cells in ``only`` on the axes they name."""
    out = []
    for cell, config in cells:
        if any(cell.get(a) not in list(vals) for a, vals in (selection or {}).items()):
            continue
        if only and not any(all(cell.get(k) == v for k, v in o.items()) for o in only):
            continue
        out.append((cell, config))
    return out


def run_grid(
    store: ResultsStore,
    cells: Sequence[tuple[dict[str, Any], Any]],
    run_cell: Callable[[dict[str, Any], Any, Path], dict[str, Any]],
    *,
    identity: Callable[[Any], dict[str, Any]],
    checkpoint_dir: str | os.PathLike,
    force: bool = False,
    on_stale: OnStale = "refuse",
    progress: bool = True,
    mode: str | None = None,
    device: Any = "cpu",
    post_training: Collection[str] = (),
    refresh: Callable[[dict[str, Any], Any, dict[str, Any]], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Run the cells not yet done, writing each record as soon as it is finished.

    Args:
        store: the table's results.
        cells: ``(cell, config)`` pairs in the order to run them.
        run_cell: ``run_cell(cell, config, checkpoint_path) -> record``, a JSON-ready dict
            (with ``wall_s``). Its optional ``"artifacts"`` entry, ``name -> object`` (e.g. a
            state dict), is saved with ``torch.save`` beside the results and replaced by the
            files' paths and SHA-256 in the record's ``provenance``, which is added here
            (seed from the cell, ``mode``, ``device``, wall time). ``config`` is set from
            ``identity(config)``.
        identity: ``config -> dict`` compared with a stored record's ``config``.
        checkpoint_dir: checkpoints of unfinished cells (removed when a cell is done).
        force: rerun finished cells too.
        on_stale: what to do with finished cells whose stored config differs from the current
            one: ``"refuse"`` (raise :class:`StaleCellError` before anything runs, naming the
            cells and the fields that differ) or ``"rerun"``.
        progress: show a tqdm bar over cells.
        mode, device: recorded in the provenance.
        post_training: config fields that act only after training (how the trained model is
            finished or tested). A stale cell whose stored config differs from the current one
            only in these fields, and that kept its artifacts, is *refreshed* instead of
            retrained: ``refresh(cell, config, stored_record) -> record`` finishes it from its
            saved weights. The new record's provenance is this run's, with the training
            run's under ``"training"``. ``force`` retrains these cells too.
        refresh: see ``post_training``.

    Returns:
        The results file's content after the run.
    """
    if on_stale not in ("refuse", "rerun"):
        raise ValueError(f"on_stale must be 'refuse' or 'rerun', got {on_stale!r}")
    code_commit()  # the commit this run's code came from, before a long run can outlive it
    main = distributed.is_main()
    status: dict[str, str] = {}
    if main:
        stored = store.records()  # read once for every cell's status
        status = {cell_id(c): store.status(c, identity(cfg), stored) for c, cfg in cells}
        for c, cfg in cells:
            if status[cell_id(c)] == "stale" and _refreshable(
                    store.get(c, stored), identity(cfg), post_training, refresh):  # fmt: skip
                status[cell_id(c)] = "refresh"
    status = distributed.broadcast_object(status)  # under torchrun: rank 0's view
    stale = [(c, cfg) for c, cfg in cells if status[cell_id(c)] == "stale"]
    if stale and on_stale == "refuse" and not force:
        stored = store.records()
        lines = []
        for c, cfg in stale[:10]:
            diff = config_diff(store.get(c, stored)["config"], identity(cfg))
            lines.append(f"  {cell_id(c)}: " + ", ".join(
                f"{k} {old!r} -> {new!r}" for k, (old, new) in diff.items()))  # fmt: skip
        more = f"\n  ... and {len(stale) - 10} more" if len(stale) > 10 else ""
        raise StaleCellError(
            f"{len(stale)} finished cell(s) of {store.path} were run with another config:\n"
            + "\n".join(lines) + more
            + "\nRerun them (--rerun-stale / on_stale='rerun') or restore the protocol."
        )
    todo = [(c, cfg) for c, cfg in cells if force or status[cell_id(c)] != "done"]
    if todo and main:
        store.check_writable()
    ckpt_dir = Path(checkpoint_dir) / store.path.stem
    for cell, config in tqdm(todo, desc=store.path.stem, disable=not progress or not main):
        ckpt = ckpt_dir / f"{cell_id(cell)}.pt"
        claim = store.claim(cell) if main else contextlib.nullcontext(True)
        with claim as mine:
            # another runner may hold the cell, or may have finished (or refreshed) it meanwhile
            how, old = "skip", None
            if main and mine and (force or store.status(cell, identity(config)) != "done"):
                how = "run"
                if not force and status[cell_id(cell)] == "refresh":
                    old = store.get(cell)
                    if _refreshable(old, identity(config), post_training, refresh):
                        how = "refresh"
            how = distributed.broadcast_object(how)  # under torchrun: rank 0's decision
            if how == "skip" or (how == "refresh" and not main):
                continue
            if how == "refresh":
                record = dict(refresh(cell, config, old))  # type: ignore[misc, arg-type]
                _write(store, cell, identity(config), record, mode, device,
                       training=old.get("provenance"))  # type: ignore[union-attr]
                continue
            record = dict(run_cell(cell, config, ckpt))
            if not main:
                continue
            _write(store, cell, identity(config), record, mode, device)
            ckpt.unlink(missing_ok=True)
    return store.load() or {}


def _refreshable(stored: Mapping[str, Any] | None, config: Mapping[str, Any],
                 post_training: Collection[str], refresh: Callable | None) -> bool:  # fmt: skip
    """Whether a stored cell can be brought to ``config`` from its saved weights: it differs
    only in post-training fields and kept its artifacts."""
    if refresh is None or stored is None or not stored.get("provenance", {}).get("artifacts"):
        return False
    diff = config_diff(stored.get("config", {}), config)
    return bool(diff) and set(diff) <= set(post_training)


def _write(store: ResultsStore, cell: dict[str, Any], config: dict[str, Any],
           record: dict[str, Any], mode: str | None, device: Any,
           training: Mapping[str, Any] | None = None) -> None:  # fmt: skip
    """Save a finished cell: its artifacts, then the record with ``config`` and provenance
    (``training``: the provenance of the run that trained a refreshed cell's weights)."""
    saved = {name: store.save_artifact(cell, name, obj)
             for name, obj in record.pop("artifacts", {}).items()}  # fmt: skip
    prov = provenance(seed=cell.get("seed"), mode=mode, device=device,
                      wall_s=record.get("wall_s"), artifacts=saved,
                      world_size=distributed.world_size())  # fmt: skip
    if training is not None:
        prov["training"] = {k: v for k, v in training.items() if k != "training"}
    store.put(cell, {"config": config, **record, "provenance": prov})
