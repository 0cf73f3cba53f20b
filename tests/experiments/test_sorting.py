import json

import pytest
import torch

from permlib.experiments import sorting
from permlib.experiments.sorting import SortingConfig, evaluate, run_table, train


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("method", ["gumbel_sinkhorn", "hste_gumbel"])
def test_tiny_training_learns_to_sort(method):
    config = SortingConfig(n=5, method=method, n_steps=150, n_test=200, seed=0)
    result = train(config, progress=False)
    first, last = sum(result.losses[:10]) / 10, sum(result.losses[-10:]) / 10
    assert last < 0.2 * first
    metrics = evaluate(result.model, 200, ["U(0,1)"], generator=torch.Generator().manual_seed(1))
    assert metrics["U(0,1)"]["prop_any_wrong"] == 0.0
    assert metrics["U(0,1)"]["kendall_tau"] == 1.0
    assert metrics["U(0,1)"]["l1"] == 0.0


@pytest.mark.parametrize("fixed", [False, True])
def test_resume_from_checkpoint_matches_uninterrupted_run(tmp_path, fixed):
    config = SortingConfig(n=6, n_steps=20, fixed_train_set=fixed, seed=3)
    straight = train(config, progress=False)
    ckpt = tmp_path / "run.pt"
    part = train(config, checkpoint=ckpt, until=8, progress=False)
    assert part.step == 8 and ckpt.exists()
    resumed = train(config, checkpoint=ckpt, progress=False)
    assert resumed.resumed_from == 8 and resumed.step == 20
    assert resumed.losses == straight.losses
    for a, b in zip(resumed.model.parameters(), straight.model.parameters(), strict=True):
        assert torch.equal(a, b)
    # a resumed cell reports the training time of every session, not only the last one
    cell_ckpt = tmp_path / "cell.pt"
    train(config, checkpoint=cell_ckpt, until=8, progress=False)
    first = torch.load(cell_ckpt, weights_only=False)["wall_s"]
    cell = sorting.run_cell(config, checkpoint=cell_ckpt, progress=False)
    assert cell["train"]["resumed_from_step"] == 8 and cell["train"]["wall_s"] > first
    assert cell["wall_s"] == pytest.approx(cell["train"]["wall_s"] + cell["eval_wall_s"], abs=0.02)
    # a checkpoint of another configuration is ignored
    other = train(SortingConfig(n=6, n_steps=3, seed=4), checkpoint=ckpt, progress=False)
    assert other.resumed_from is None and other.step == 3


def test_run_table_writes_cells_and_skips_finished_ones(tmp_path, monkeypatch):
    tiny = {
        "title": "tiny",
        "protocol": {"n_steps": 5, "batch_size": 4, "fixed_train_set": False, "n_test": 8},
        "methods": ("gumbel_sinkhorn", "hste"),
        "ns": (4, 5),
        "test_distributions": ("U(0,1)", "U(0,10)"),
    }
    monkeypatch.setitem(sorting.TABLES, "tiny", tiny)
    data = run_table("tiny", ns=[4], results_dir=tmp_path, checkpoint_dir=tmp_path, progress=False)
    assert set(data["cells"]) == {"gumbel_sinkhorn/N=4", "hste/N=4"}
    cell = data["cells"]["hste/N=4"]
    assert cell["provenance"]["seed"] == 0 and "git_commit" in cell["provenance"]
    assert set(cell["metrics"]) == {"U(0,1)", "U(0,10)"}
    stamp = json.loads((tmp_path / "sorting_tiny.json").read_text())["cells"]["hste/N=4"]
    data = run_table("tiny", results_dir=tmp_path, checkpoint_dir=tmp_path, progress=False)
    assert len(data["cells"]) == 4
    assert data["cells"]["hste/N=4"]["provenance"] == stamp["provenance"]  # not rerun
    assert not list(tmp_path.glob("tiny/*.pt"))  # checkpoints of finished cells are removed


def test_compare_tables_against_paper():
    paper = sorting.load_paper_tables()
    fake = {"cells": {"gumbel_sinkhorn/N=100": {"metrics": {
        d: {"prop_any_wrong": 0.0, "prop_wrong": 0.5} for d in sorting.TEST_DISTRIBUTIONS
    }}}}  # fmt: skip
    rows = sorting.compare_table1(fake, paper, "prop_wrong")
    assert len(rows) == 21
    by = {(r["test_distribution"], r["N"]): r for r in rows}
    assert by[("U(0,1)", 100)]["status"] == "worse" and by[("U(0,1)", 80)]["status"] == "missing"
    assert by[("U(1000,1001)", 100)]["paper"] == 0.39
    rows = sorting.compare_table1(
        fake, paper, "prop_any_wrong", source="sorting_gumbel_sinkhorn_table1"
    )
    assert len(rows) == 42 and sum(r["status"] == "met" for r in rows) == 7
    s = sorting.summarize(rows)
    assert s["met"] == 7 and s["missing"] == 35
    t5 = {"cells": {"hste/N=100": {"metrics": {"U(0,1)": {"kendall_tau": 0.71, "l1": 0.001}}}}}
    rows = sorting.compare_table5(t5, paper, "kendall_tau", methods=["hste"])
    row = next(r for r in rows if r["N"] == 100)
    assert row["status"] == "met" and row["gap"] == pytest.approx(0.01)
    row = next(
        r for r in sorting.compare_table5(t5, paper, "l1", methods=["hste"]) if r["N"] == 100
    )
    assert row["ours"] == pytest.approx(0.1) and row["status"] == "met"
    t5["cells"]["hste/N=300"] = t5["cells"]["hste/N=100"]
    rows = sorting.compare_table5(t5, paper, "kendall_tau", methods=["hste"])
    only = [r for r in rows if r["N"] == 300]
    assert len(only) == 1 and only[0]["paper"] is None and only[0]["status"] == "no paper value"
    s = sorting.summarize(rows)
    assert s["ours_only"] == 1 and s["total"] == len(rows) - 1 and s["met"] == 1
    text = sorting.markdown_table(rows, ["method", "N", "paper", "ours", "gap"])
    assert text.count("\n") == len(rows) + 1 and "—" in text
