import json
import os

import pytest
import torch

from permlib.experiments.harness import ResultsFileError, ResultsStore, StaleCellError, run_grid
from permlib.experiments.harness.results import SCHEMA_VERSION, config_diff


def make(tmp_path, **kw):
    return ResultsStore(tmp_path, "exp", "t1", ("method", "n"),
                        meta={"grid": {"method": ["b", "a"]}}, **kw)  # fmt: skip


def test_put_get_status_and_order(tmp_path):
    store = make(tmp_path)
    assert store.load() is None and store.records() == []
    store.put({"method": "a", "n": 5}, {"config": {"lr": 1}, "metrics": {"x": 1.0}, "wall_s": 2})
    store.put({"method": "b", "n": 10, "extra": 0}, {"config": {"lr": 1}, "wall_s": 3})
    store.put({"method": "b", "n": 5}, {"config": {"lr": 1}, "wall_s": 1})
    data = json.loads(store.path.read_text())
    assert data["schema_version"] == SCHEMA_VERSION and data["axes"] == ["method", "n"]
    # grid order of the method axis ("b" first), then n
    assert [tuple(r["cell"].values()) for r in data["cells"]] == [("b", 5), ("b", 10), ("a", 5)]
    assert data["summary"] == {"cells_done": 3, "wall_s_total": 6.0}
    assert store.get({"method": "a", "n": 5})["metrics"] == {"x": 1.0}
    assert store.status({"method": "a", "n": 5}, {"lr": 1}) == "done"
    assert store.status({"method": "a", "n": 5}, {"lr": 2}) == "stale"
    assert store.status({"method": "a", "n": 6}, {"lr": 1}) == "missing"
    store.put({"method": "a", "n": 5}, {"config": {"lr": 2}})  # replaces, no duplicate
    assert len(store.records()) == 3 and store.status({"method": "a", "n": 5}, {"lr": 2}) == "done"
    with pytest.raises(ValueError, match="lacks the axes"):
        store.get({"method": "a"})
    assert not list(tmp_path.glob(".*.tmp"))


def test_corrupt_and_foreign_files_name_the_file(tmp_path):
    store = make(tmp_path)
    store.path.write_text('{"cells": [')
    with pytest.raises(ResultsFileError, match=str(store.path.name)):
        store.load()
    store.path.write_text(json.dumps({"cells": {"a/N=5": {}}}))  # the old layout
    with pytest.raises(ResultsFileError, match="schema_version"):
        store.records()


def test_artifacts_are_hashed_and_checked(tmp_path):
    store = make(tmp_path)
    cell = {"method": "a", "n": 5}
    info = store.save_artifact(cell, "model.pt", {"w": torch.arange(3.0)})
    assert len(info["sha256"]) == 64 and not os.path.isabs(info["path"])
    store.put(cell, {"config": {}, "provenance": {"artifacts": {"model.pt": info}}})
    rec = store.get(cell)
    assert torch.equal(store.load_artifact(rec, "model.pt")["w"], torch.arange(3.0))
    torch.save({"w": torch.zeros(3)}, tmp_path / info["path"])  # tampered
    with pytest.raises(ResultsFileError, match="SHA-256"):
        store.load_artifact(rec, "model.pt")


def test_claim_is_exclusive(tmp_path):
    store = make(tmp_path)
    with store.claim({"method": "a", "n": 1}) as first:
        with make(tmp_path).claim({"method": "a", "n": 1}) as second:
            assert first and not second
        with store.claim({"method": "a", "n": 2}) as other:
            assert other


def test_run_grid_skips_done_refuses_stale_and_reruns_on_request(tmp_path):
    store = make(tmp_path)
    runs = []

    def run_cell(cell, config, ckpt):
        runs.append(cell["n"])
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        ckpt.write_text("partial")  # removed once the cell is stored
        return {"metrics": {"v": config["lr"] * cell["n"]}}

    cells = [({"method": "a", "n": n}, {"lr": 1}) for n in (1, 2)]
    data = run_grid(store, cells, run_cell, identity=dict, checkpoint_dir=tmp_path / "ck",
                    progress=False)  # fmt: skip
    assert runs == [1, 2] and len(data["cells"]) == 2
    assert not list((tmp_path / "ck").rglob("*.pt"))
    run_grid(store, cells, run_cell, identity=dict, checkpoint_dir=tmp_path / "ck", progress=False)
    assert runs == [1, 2]  # done cells are skipped
    changed = [(c, {"lr": 3}) for c, _ in cells]
    with pytest.raises(StaleCellError, match=r"lr 1 -> 3"):
        run_grid(store, changed, run_cell, identity=dict, checkpoint_dir=tmp_path, progress=False)
    assert runs == [1, 2]  # refused before anything ran
    run_grid(store, changed, run_cell, identity=dict, checkpoint_dir=tmp_path, progress=False,
             on_stale="rerun")  # fmt: skip
    assert runs == [1, 2, 1, 2] and store.get({"method": "a", "n": 2})["metrics"]["v"] == 6


def test_run_grid_checks_the_folder_before_training(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    store = ResultsStore(blocker / "results", "exp", "t", ("n",), lock_dir=tmp_path / "locks")

    def never(*_):
        raise AssertionError("trained although results cannot be written")

    with pytest.raises(OSError, match="cannot write results"):
        run_grid(store, [({"n": 1}, {})], never, identity=dict, checkpoint_dir=tmp_path,
                 progress=False)  # fmt: skip


def test_config_diff():
    assert config_diff({"a": 1, "b": 2}, {"a": 1, "b": 3, "c": 4}) == {"b": (2, 3), "c": (None, 4)}


def test_run_grid_refreshes_cells_that_changed_only_after_training(tmp_path):
    """A cell whose config differs only in post-training fields is finished from its saved
    artifacts (no training) and keeps its training run's provenance; other changes, a cell
    without artifacts, and force still retrain."""
    store = make(tmp_path)
    runs, refreshed = [], []

    def run_cell(cell, config, ckpt):
        runs.append(cell["n"])
        return {"metrics": {"v": cell["n"] * config.get("scale", 1)}, "wall_s": 5.0,
                "artifacts": {"w.pt": {"n": torch.tensor(cell["n"])}}}  # fmt: skip

    def refresh(cell, config, record):
        refreshed.append(cell["n"])
        w = store.load_artifact(record, "w.pt")["n"]
        return {"metrics": {"v": int(w) * config["scale"]}, "wall_s": 6.0,
                "artifacts": {"w.pt": {"n": w}}}  # fmt: skip

    kw = dict(identity=dict, checkpoint_dir=tmp_path / "ck", progress=False,
              post_training=("scale",), refresh=refresh)  # fmt: skip
    cells = [({"method": "a", "n": n}, {"lr": 1}) for n in (1, 2)]
    run_grid(store, cells, run_cell, **kw)
    first = store.get({"method": "a", "n": 2})["provenance"]
    run_grid(store, [(c, {"lr": 1, "scale": 10}) for c, _ in cells], run_cell, **kw)
    assert runs == [1, 2] and refreshed == [1, 2]
    rec = store.get({"method": "a", "n": 2})
    assert rec["config"] == {"lr": 1, "scale": 10} and rec["metrics"]["v"] == 20
    assert rec["provenance"]["training"]["timestamp"] == first["timestamp"]
    assert "training" not in rec["provenance"]["training"]
    assert rec["provenance"]["artifacts"]["w.pt"]["sha256"]
    # a refreshed cell is done; a training field that changes retrains; force retrains
    run_grid(store, [(c, {"lr": 1, "scale": 10}) for c, _ in cells], run_cell, **kw)
    assert runs == [1, 2] and refreshed == [1, 2]
    with pytest.raises(StaleCellError, match="lr 1 -> 2"):
        run_grid(store, [(c, {"lr": 2, "scale": 10}) for c, _ in cells], run_cell, **kw)
    run_grid(store, [(c, {"lr": 1, "scale": 3}) for c, _ in cells[:1]], run_cell, **kw,
             force=True)  # fmt: skip
    assert runs == [1, 2, 1] and refreshed == [1, 2]
    # without artifacts there is nothing to refresh from: stale as before
    store.put({"method": "a", "n": 3}, {"config": {"lr": 1}, "metrics": {}})
    with pytest.raises(StaleCellError, match="scale None -> 10"):
        run_grid(store, [({"method": "a", "n": 3}, {"lr": 1, "scale": 10})], run_cell, **kw)
