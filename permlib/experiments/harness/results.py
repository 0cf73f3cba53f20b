"""The results store: one JSON file per table, one record per grid cell.

A *cell* is a dict of grid axes (``{"method": "hste", "n": 100, "seed": 0}``). Each record holds
the cell, the ``config`` it was run with, what the experiment measured, and its provenance. A
finished cell counts as done only while its stored config equals the one the code would run now:
a changed protocol makes the cell *stale*, and the runner reruns it or refuses with a message
naming the fields that changed (never silently keeping an old number).

Writes are atomic (a temporary file, then ``os.replace``) and serialized by a lock, so several
runners (or a job array on a shared folder) can fill one table; only the main process of a
torchrun group writes. Files carry ``schema_version``; a file of another version, or one that is not
valid JSON, is refused with an error naming the file.

Results written on hosts that do not share a folder are combined with :meth:`ResultsStore.merge`
(``--merge DIR ...`` on the command line).

Artifacts (trained weights a reader can re-check, a network another cell reuses) live in
``<results dir>/artifacts/<file stem>/`` and are recorded with their SHA-256.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from permlib.experiments.harness.distributed import is_main

__all__ = [
    "SCHEMA_VERSION",
    "ResultsFileError",
    "ResultsStore",
    "StaleCellError",
    "cell_id",
    "config_diff",
    "select_records",
    "sha256",
]

#: Version of the results-file layout written by :class:`ResultsStore`.
SCHEMA_VERSION = 2

Status = Literal["missing", "done", "stale"]


class ResultsFileError(ValueError):
    """A results file that cannot be read: not JSON, wrong layout or schema version."""


class StaleCellError(RuntimeError):
    """Finished cells whose stored config differs from the current one."""


def cell_id(cell: Mapping[str, Any]) -> str:
    """A readable, file-name-safe identifier of a cell: ``method=hste,n=100,seed=0``."""
    return ",".join(f"{k}={cell[k]}" for k in cell)


def sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def config_diff(stored: Mapping[str, Any], current: Mapping[str, Any]) -> dict[str, tuple]:
    """Fields whose values differ: ``name -> (stored, current)`` (absent fields as ``None``)."""
    keys = list(dict.fromkeys([*stored, *current]))
    return {
        k: (stored.get(k), current.get(k)) for k in keys if stored.get(k) != current.get(k)
    }


def select_records(data: Mapping[str, Any] | None, **axes: Any) -> list[dict[str, Any]]:
    """The records of a loaded results file whose cell matches every given axis value
    (``select_records(data, method="hste", n=100)``); ``[]`` for ``None``."""
    return [r for r in (data or {}).get("cells", [])
            if all(r["cell"].get(k) == v for k, v in axes.items())]  # fmt: skip


class ResultsStore:
    """The results of one table of one experiment, in ``<results_dir>/<experiment>_<table>.json``.

    Args:
        results_dir: the folder (created on first write; see :mod:`.paths` for defaults).
        experiment: e.g. ``"sorting"``.
        table: e.g. ``"table1"``.
        axes: the grid axes in display order (cells are sorted by them).
        meta: table-level information written with every update (title, grid, ...).
        lock_dir: where the lock files go (default: ``<results_dir>/.locks``).
    """

    def __init__(
        self,
        results_dir: str | os.PathLike,
        experiment: str,
        table: str,
        axes: Sequence[str],
        *,
        meta: Mapping[str, Any] | None = None,
        lock_dir: str | os.PathLike | None = None,
    ) -> None:
        if not axes:
            raise ValueError("axes must name at least one grid axis")
        self.dir = Path(results_dir)
        self.experiment, self.table = experiment, table
        self.axes = tuple(axes)
        self.meta = dict(meta or {})
        self.path = self.dir / f"{experiment}_{table}.json"
        self.lock_dir = Path(lock_dir) if lock_dir is not None else self.dir / ".locks"

    # ------------------------------------------------------------------ reading

    def load(self) -> dict[str, Any] | None:
        """The file's content, or ``None`` if it does not exist yet."""
        if not self.path.exists():
            return None
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ResultsFileError(
                f"results file {self.path} is not valid JSON ({exc}); it may have been cut short. "
                "Restore it from git (`git checkout -- <file>`) or move it aside to start over."
            ) from exc
        version = data.get("schema_version") if isinstance(data, dict) else None
        if version != SCHEMA_VERSION or not isinstance(data.get("cells"), list):
            raise ResultsFileError(
                f"results file {self.path} has schema_version {version!r}; this permlib reads "
                f"version {SCHEMA_VERSION} (a list of cells keyed by {list(self.axes)})"
            )
        return data

    def records(self) -> list[dict[str, Any]]:
        """Every stored record (``[]`` for a missing file)."""
        return list((self.load() or {}).get("cells", []))

    def _key(self, cell: Mapping[str, Any]) -> tuple:
        missing = [a for a in self.axes if a not in cell]
        if missing:
            raise ValueError(f"cell {dict(cell)} lacks the axes {missing} of {self.path.name}")
        return tuple(cell[a] for a in self.axes)

    def get(
        self, cell: Mapping[str, Any], records: list[dict[str, Any]] | None = None
    ) -> dict[str, Any] | None:
        """The record of ``cell``, or ``None``; ``records``: the file's records if already
        loaded (:meth:`records`), so that many lookups read the file once."""
        key = self._key(cell)
        for rec in self.records() if records is None else records:
            if self._key(rec["cell"]) == key:
                return rec
        return None

    def status(
        self,
        cell: Mapping[str, Any],
        config: Mapping[str, Any],
        records: list[dict[str, Any]] | None = None,
    ) -> Status:
        """``"missing"``, ``"done"`` (stored with this config) or ``"stale"`` (another config);
        ``records`` as for :meth:`get`."""
        rec = self.get(cell, records)
        if rec is None:
            return "missing"
        return "done" if rec.get("config") == dict(config) else "stale"

    # ------------------------------------------------------------------ writing

    @contextlib.contextmanager
    def _lock(self, name: str, blocking: bool = True) -> Iterator[bool]:
        self.lock_dir.mkdir(parents=True, exist_ok=True)
        with open(self.lock_dir / f"{name}.lock", "w") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def claim(self, cell: Mapping[str, Any]) -> Iterator[bool]:
        """Non-blocking exclusive claim on a cell: ``False`` if another runner holds it."""
        with self._lock(f"{self.path.stem}.{cell_id(cell)}", blocking=False) as mine:
            yield mine

    def check_writable(self) -> None:
        """Create the folder and check that a file can be written there (before any training)."""
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            # a probe of this process's own: runners sharing the folder probe at the same time
            fd, probe = tempfile.mkstemp(prefix=f".{self.path.stem}.", suffix=".probe",
                                         dir=self.dir)  # fmt: skip
            os.write(fd, b"ok")
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise OSError(f"cannot write results to {self.dir}: {exc}") from exc

    def put(self, cell: Mapping[str, Any], record: Mapping[str, Any]) -> dict[str, Any]:
        """Store (or replace) the record of ``cell``; returns the file's new content.

        ``record`` should hold ``config``; ``cell`` is added to it. Only the main process writes.
        """
        self._key(cell)  # every axis present
        cell = {a: cell[a] for a in self.axes}
        full = {"cell": cell, **{k: v for k, v in record.items() if k != "cell"}}
        if not is_main():
            return {"cells": [full]}
        self.dir.mkdir(parents=True, exist_ok=True)
        with self._lock(self.path.stem):
            data = self.load() or {"cells": []}
            cells = [r for r in data["cells"] if self._key(r["cell"]) != self._key(cell)]
            cells.append(full)
            cells.sort(key=lambda r: self._sort_key(r["cell"]))
            wall = [r.get("wall_s") or 0.0 for r in cells]
            data = {
                "schema_version": SCHEMA_VERSION,
                "experiment": self.experiment,
                "table": self.table,
                "axes": list(self.axes),
                **self.meta,
                "summary": {"cells_done": len(cells), "wall_s_total": round(sum(wall), 1)},
                "cells": cells,
            }
            self._atomic_write(self.path, json.dumps(data, indent=1) + "\n")
        return data

    def merge(self, source_dir: str | os.PathLike, *, replace: bool = False) -> dict[str, list]:
        """Add the records of the same table from another results folder (e.g. one host's own
        ``--results-dir``) to this one, with their artifacts.

        A cell missing here is copied, its artifact files first, each checked against the
        SHA-256 its record gives (a mismatch raises :class:`ResultsFileError` naming the file and
        copies nothing of that cell). A cell present in both folders is left as it is here
        (``"conflicts"`` when the records differ) unless ``replace``. Every record is written
        under the lock, like :meth:`put`, so merges may run while runners write.

        Returns:
            ``{"added": [...], "same": [...], "conflicts": [...]}``, cell ids
            (``conflicts`` lists the replaced cells when ``replace``).
        """
        import shutil

        source = ResultsStore(source_dir, self.experiment, self.table, self.axes)
        if source.path.resolve() == self.path.resolve():
            raise ValueError(f"cannot merge {self.path} into itself")
        out: dict[str, list] = {"added": [], "same": [], "conflicts": []}
        here = self.records()
        for rec in source.records():
            cid = cell_id(rec["cell"])
            mine = self.get(rec["cell"], here)
            if mine is not None and mine == rec:
                out["same"].append(cid)
                continue
            if mine is not None:
                out["conflicts"].append(cid)
                if not replace:
                    continue
            else:
                out["added"].append(cid)
            arts = rec.get("provenance", {}).get("artifacts", {})
            for name, info in arts.items():
                src = source.dir / info["path"]
                if not src.exists() or sha256(src) != info["sha256"]:
                    raise ResultsFileError(
                        f"artifact {name!r} of cell {cid} in {source.path}: {src} is missing or "
                        "does not match its SHA-256; nothing of that cell was merged"
                    )
            for info in arts.values():
                dst = self.dir / info["path"]
                dst.parent.mkdir(parents=True, exist_ok=True)
                tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
                shutil.copyfile(source.dir / info["path"], tmp)
                os.replace(tmp, dst)
            self.put(rec["cell"], rec)
        return out

    def _sort_key(self, cell: Mapping[str, Any]) -> tuple:
        """Grid order (``meta["grid"][axis]`` lists the values in order), then value order."""
        order = self.meta.get("grid", {})
        key = []
        for a in self.axes:
            values, v = list(order.get(a, [])), cell[a]
            key.append((values.index(v) if v in values else len(values), v))
        return tuple(key)

    @staticmethod
    def _atomic_write(path: Path, text: str) -> None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    # ------------------------------------------------------------------ artifacts

    def artifact_path(self, cell: Mapping[str, Any], name: str) -> Path:
        """Where artifact ``name`` of ``cell`` lives."""
        return self.dir / "artifacts" / self.path.stem / cell_id(cell) / name

    def save_artifact(self, cell: Mapping[str, Any], name: str, obj: Any) -> dict[str, str]:
        """``torch.save`` ``obj`` as an artifact of ``cell``; returns ``{"path", "sha256"}`` with
        the path relative to the results folder, for the record's provenance. Only the main
        process writes; on other torchrun ranks nothing is written and ``sha256`` is ``None``."""
        import torch

        path = self.artifact_path(cell, name)
        rel = str(path.relative_to(self.dir))
        if not is_main():
            return {"path": rel, "sha256": None}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        torch.save(obj, tmp)
        os.replace(tmp, path)
        return {"path": rel, "sha256": sha256(path)}

    def load_artifact(self, record: Mapping[str, Any], name: str, *, map_location: Any = "cpu"):
        """Load artifact ``name`` of a stored record, checking its SHA-256 first."""
        import torch

        info = record.get("provenance", {}).get("artifacts", {}).get(name)
        if info is None:
            raise KeyError(f"cell {cell_id(record['cell'])} of {self.path.name} has no {name!r}")
        path = self.dir / info["path"]
        if not path.exists():
            raise FileNotFoundError(f"artifact {path} of cell {cell_id(record['cell'])} is missing")
        if sha256(path) != info["sha256"]:
            raise ResultsFileError(f"artifact {path} does not match the SHA-256 in {self.path}")
        return torch.load(path, weights_only=True, map_location=map_location)
