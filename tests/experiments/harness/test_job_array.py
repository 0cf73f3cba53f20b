"""A grid spread over a job array (``--list-cells``, one ``--cell`` per job) and over processes
sharing one results folder: every cell is run once and none is lost."""

from __future__ import annotations

import json
import multiprocessing
import os
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from permlib.experiments.harness import (
    Experiment,
    ResultsFileError,
    ResultsStore,
    run_grid,
    select_cells,
)


@dataclass(frozen=True)
class ToyConfig:
    method: str = "a"
    n: int = 2
    seed: int = 0
    scale: float = 1.0


TABLES = {
    "t1": {"title": "first", "methods": ("a", "b"), "ns": (2, 3)},
    "t2": {"title": "second", "methods": ("a",), "ns": (2,)},
}


class Toy(Experiment):
    name, config_cls, axes, tables = "toy", ToyConfig, ("method", "n", "seed"), TABLES

    def cells(self, table, seeds, selection, only, overrides):
        spec = TABLES[table]
        out = [({"method": m, "n": n, "seed": s}, ToyConfig(m, n, s, **overrides))
               for s in seeds for m in spec["methods"] for n in spec["ns"]]  # fmt: skip
        return select_cells(out, {k: v for k, v in selection.items() if k != "seed"}, only)

    def run_cell(self, config, *, checkpoint, progress, device):
        value = config.n * config.scale + config.seed
        return {"metrics": {"value": value}, "wall_s": 0.0,
                "artifacts": {"w.pt": {"v": torch.tensor([value])}}}  # fmt: skip


def listed(capsys, *argv: str) -> list[str]:
    assert Toy().main(["--list-cells", *argv]) == 0
    return capsys.readouterr().out.splitlines()


def test_list_cells_prints_the_cell_syntax(capsys):
    assert listed(capsys, "--table", "t1") == [
        "method=a,n=2,seed=0", "method=a,n=3,seed=0", "method=b,n=2,seed=0", "method=b,n=3,seed=0"
    ]  # fmt: skip
    assert listed(capsys, "--table", "t1", "--n", "3", "--seed", "0", "4") == [
        "method=a,n=3,seed=0", "method=b,n=3,seed=0", "method=a,n=3,seed=4", "method=b,n=3,seed=4"
    ]  # fmt: skip
    both = listed(capsys)  # two tables: each line names its table
    assert both[0] == "table=t1,method=a,n=2,seed=0" and both[-1] == "table=t2,method=a,n=2,seed=0"
    assert len(both) == 5
    assert listed(capsys, "--cell", "table=t2") == ["table=t2,method=a,n=2,seed=0"]


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--cell", "methd=a"], "not axes"),
        (["--cell", "n=x"], "is not a int"),
        (["--table", "t1", "--cell", "table=t2,n=2"], "names table"),
    ],
)
def test_bad_cells_are_refused_naming_the_problem(capsys, argv, match):
    with pytest.raises(SystemExit):
        Toy().main(argv)
    assert match in capsys.readouterr().err


def test_a_job_array_runs_each_listed_cell_once(tmp_path, capsys):
    """Job ``i`` runs line ``i`` of ``--list-cells``: after every job exactly one more cell is
    stored, in its own table (a cell of both tables runs only where its line says)."""
    lines = listed(capsys, "--seed", "0", "1")
    assert len(lines) == 10
    common = ["--mode", "full", "--results-dir", str(tmp_path / "r"),
              "--checkpoint-dir", str(tmp_path / "c"), "--no-progress", "--seed", "0", "1"]
    toy = Toy()
    done: set[str] = set()
    for line in lines:
        assert toy.main([*common, "--cell", line]) == 0
        now = {f"table={t},{','.join(f'{k}={v}' for k, v in r['cell'].items())}"
               for t in TABLES for r in toy.store(t, tmp_path / "r").records()}
        assert now == done | {line}
        done = now
    rec = toy.store("t1", tmp_path / "r").get({"method": "b", "n": 3, "seed": 1})
    assert rec["metrics"] == {"value": 4.0} and rec["provenance"]["machine"]["world_size"] == 1


def test_results_of_hosts_without_a_shared_folder_merge(tmp_path, capsys):
    """Two hosts each fill part of the grid in their own folder; ``--merge`` combines them with
    their weights; a cell both ran differently is kept as it is and reported."""
    lines = listed(capsys, "--table", "t1")
    toy = Toy()
    for i, line in enumerate(lines):  # host A runs the even lines, host B the odd ones
        host = tmp_path / ("A" if i % 2 == 0 else "B")
        toy.main(["--mode", "full", "--table", "t1", "--cell", line, "--results-dir", str(host),
                  "--checkpoint-dir", str(host / "c"), "--no-progress"])  # fmt: skip
    # B also ran line 0, with another protocol
    toy.main(["--mode", "full", "--table", "t1", "--cell", lines[0], "--scale", "2",
              "--results-dir", str(tmp_path / "B"), "--no-progress",
              "--checkpoint-dir", str(tmp_path / "c")])  # fmt: skip
    capsys.readouterr()
    merged = tmp_path / "merged"
    argv = ["--table", "t1", "--results-dir", str(merged), "--merge"]
    assert toy.main([*argv, str(tmp_path / "A"), str(tmp_path / "B")]) == 0
    out = capsys.readouterr().out
    assert "2 added, 0 already there, 0 different" in out  # from A
    assert f"2 added, 0 already there, 1 different (kept ours: {lines[0]})" in out  # from B
    store = toy.store("t1", merged)
    assert len(store.records()) == 4
    for rec in store.records():
        assert store.load_artifact(rec, "w.pt")["v"].item() == rec["metrics"]["value"]
    assert store.get({"method": "a", "n": 2, "seed": 0})["metrics"] == {"value": 2.0}  # A's
    again = store.merge(tmp_path / "A")
    assert again["added"] == [] and len(again["same"]) == 2
    replaced = store.merge(tmp_path / "B", replace=True)
    assert replaced["conflicts"] == [lines[0]]
    assert store.get({"method": "a", "n": 2, "seed": 0})["metrics"] == {"value": 4.0}


def test_merge_refuses_an_artifact_that_does_not_match_its_hash(tmp_path):
    toy = Toy()
    toy.main(["--mode", "full", "--table", "t2", "--results-dir", str(tmp_path / "A"),
              "--checkpoint-dir", str(tmp_path / "c"), "--no-progress"])  # fmt: skip
    rec = toy.store("t2", tmp_path / "A").records()[0]
    path = tmp_path / "A" / rec["provenance"]["artifacts"]["w.pt"]["path"]
    torch.save({"v": torch.tensor([-1.0])}, path)
    store = toy.store("t2", tmp_path / "merged")
    with pytest.raises(ResultsFileError, match="SHA-256"):
        store.merge(tmp_path / "A")
    assert store.records() == []
    with pytest.raises(ValueError, match="into itself"):
        toy.store("t2", tmp_path / "A").merge(tmp_path / "A")


# --------------------------------------------------------------------------- several processes


def _store(folder: str) -> ResultsStore:
    return ResultsStore(folder, "toy", "t1", ("method", "n", "seed"))


def _writer(folder: str, method: str, count: int, barrier) -> None:
    store = _store(folder)
    barrier.wait()
    for n in range(count):
        store.put({"method": method, "n": n, "seed": 0}, {"config": {}, "wall_s": 0.01})


def _grid_runner(folder: str, log: str, barrier) -> None:
    store = _store(folder)
    cells = [({"method": m, "n": n, "seed": 0}, {"m": m, "n": n}) for m in "ab" for n in range(6)]

    def run_cell(cell, config, ckpt):
        with open(log, "a") as fh:  # O_APPEND: one line per run, never interleaved
            fh.write(json.dumps(cell) + "\n")
        return {"wall_s": 0.0}

    barrier.wait()
    run_grid(store, cells, run_cell, identity=dict, checkpoint_dir=Path(folder) / "ckpt",
             progress=False)  # fmt: skip


def _start(target, *args) -> list:
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=target, args=(*a, barrier)) for a in args]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    return [p.exitcode for p in procs]


def test_two_processes_writing_one_results_file_lose_no_cell(tmp_path):
    """Concurrent read-modify-write of one JSON file by two writers: the lock serializes them
    (without it, a writer replacing the file with its stale copy would drop the other's cells)."""
    assert _start(_writer, (str(tmp_path), "a", 40), (str(tmp_path), "b", 40)) == [0, 0]
    records = _store(tmp_path).records()
    assert len(records) == 80
    assert {(r["cell"]["method"], r["cell"]["n"]) for r in records} == {
        (m, n) for m in "ab" for n in range(40)}  # fmt: skip
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_two_runners_sharing_a_folder_run_every_cell_exactly_once(tmp_path):
    log = tmp_path / "runs.log"
    args = (str(tmp_path), str(log))
    assert _start(_grid_runner, args, args) == [0, 0]
    runs = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(runs) == 12 and len({json.dumps(c) for c in runs}) == 12
    assert len(_store(tmp_path).records()) == 12


def test_overrides_are_written_to_the_header(tmp_path):
    data = Toy().run_table("t2", overrides={"scale": 2.0}, results_dir=tmp_path,
                           checkpoint_dir=tmp_path / "ck", progress=False)  # fmt: skip
    assert data["overrides"] == {"scale": 2.0} and data["cells"][0]["metrics"]["value"] == 4.0
    plain = Toy().run_table("t1", results_dir=tmp_path, checkpoint_dir=tmp_path / "ck",
                            progress=False)  # fmt: skip
    assert "overrides" not in plain
