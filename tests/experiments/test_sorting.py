import json
import math

import pytest
import torch

from permlib.experiments import harness, sorting
from permlib.experiments.sorting import SortingConfig, evaluate, run_table, train

PAPER = "benchmarks/reference/paper_tables.json"


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
    config = SortingConfig(n=6, n_steps=20, fixed_train_set=fixed, lr_schedule="cosine", seed=3)
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
    first = train(config, checkpoint=cell_ckpt, until=8, progress=False).wall_s
    cell = sorting.run_cell(config, checkpoint=cell_ckpt, progress=False)
    assert cell["train"]["resumed_from_step"] == 8 and cell["train"]["wall_s"] > first
    assert cell["wall_s"] == pytest.approx(cell["train"]["wall_s"] + cell["eval_wall_s"], abs=0.02)


TINY = {
    "title": "tiny",
    "protocol": {"n_steps": 5, "batch_size": 4, "fixed_train_set": False, "n_test": 8},
    "methods": ("gumbel_sinkhorn", "hste"),
    "ns": (4, 5),
    "test_distributions": ("U(0,1)", "U(0,10)"),
}


def test_run_table_writes_cells_skips_finished_ones_and_keeps_weights(tmp_path, monkeypatch):
    monkeypatch.setitem(sorting.TABLES, "tiny", TINY)
    kw = {"results_dir": tmp_path, "checkpoint_dir": tmp_path / "ck", "progress": False}
    data = run_table("tiny", selection={"n": [4]}, **kw)
    cells = {(r["cell"]["method"], r["cell"]["n"]): r for r in data["cells"]}
    assert set(cells) == {("gumbel_sinkhorn", 4), ("hste", 4)}
    rec = cells[("hste", 4)]
    assert rec["cell"] == {"method": "hste", "n": 4, "seed": 0}
    assert rec["provenance"]["seed"] == 0 and "git_commit" in rec["provenance"]
    assert rec["provenance"]["machine"]["device"] == "cpu"
    assert set(rec["metrics"]) == {"U(0,1)", "U(0,10)"}
    stamp = rec["provenance"]["timestamp"]
    data = run_table("tiny", seeds=(0, 1), **kw)
    assert len(data["cells"]) == 8  # two seeds now
    again = sorting.store("tiny", tmp_path).get({"method": "hste", "n": 4, "seed": 0})
    assert again["provenance"]["timestamp"] == stamp  # not rerun
    assert not list((tmp_path / "ck").rglob("*.pt"))  # checkpoints of finished cells are removed
    # the weights reproduce the stored metrics
    check = sorting.verify("tiny", {"method": "hste", "n": 4, "seed": 1}, tmp_path)
    assert check["max_abs_diff"] == 0.0
    # a changed protocol is refused, naming the field, unless asked to rerun
    with pytest.raises(harness.StaleCellError, match="n_steps 5 -> 6"):
        run_table("tiny", overrides={"n_steps": 6}, **kw)
    data = run_table("tiny", selection={"method": ["hste"], "n": [5]}, overrides={"n_steps": 6},
                     on_stale="rerun", **kw)  # fmt: skip
    rec = sorting.store("tiny", tmp_path).get({"method": "hste", "n": 5, "seed": 0})
    assert rec["config"]["n_steps"] == 6 and rec["train"]["steps"] == 6


def test_command_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sorting.TABLES, "tiny", TINY)
    args = ["--mode", "full", "--table", "tiny", "--results-dir", str(tmp_path),
            "--checkpoint-dir", str(tmp_path / "ck"), "--no-progress"]  # fmt: skip
    assert sorting.main([*args, "--cell", "method=hste,n=5", "--n-steps", "3"]) == 0
    recs = sorting.store("tiny", tmp_path).records()
    assert [(r["cell"]["method"], r["cell"]["n"], r["config"]["n_steps"]) for r in recs] == [
        ("hste", 5, 3)]
    assert sorting.main(["--verify", "--table", "tiny", "--results-dir", str(tmp_path)]) == 0
    assert "max |recomputed - stored| 0.00e+00" in capsys.readouterr().out
    # a cell recorded before weights were kept: a message that says how to record them
    path = sorting.store("tiny", tmp_path).path
    data = json.loads(path.read_text())
    del data["cells"][0]["provenance"]["artifacts"]
    path.write_text(json.dumps(data))
    assert sorting.main(["--verify", "--table", "tiny", "--results-dir", str(tmp_path)]) == 1
    said = capsys.readouterr().out
    assert "method=hste,n=5,seed=0: not verifiable" in said and "--force" in said
    with pytest.raises(harness.NoArtifactsError, match="without saved weights"):
        sorting.verify("tiny", {"method": "hste", "n": 5, "seed": 0}, tmp_path)
    out = tmp_path / "ci.json"
    assert sorting.main(["--mode", "ci", "--n", "4", "--n-steps", "5", "--n-test", "8",
                         "--no-progress", "--json", str(out)]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert printed.count("\n") < 20 and "| U(0,1) |" in printed  # a short table, not JSON
    assert json.loads(out.read_text())["config"]["n"] == 4


def test_recorded_results_are_current():
    """Every recorded cell was made with the config the code would run now (none is stale)."""
    for table in ("table1", "table5"):
        store = sorting.store(table, "benchmarks/results")
        records = store.records()
        for cell, config in sorting.cells(table):
            assert store.status(cell, config.to_dict(), records) == "done", (table, cell)


def test_compare_tables_against_paper():
    paper = harness.load_paper_tables(PAPER)

    def rec(method, n, metrics):
        return {"cell": {"method": method, "n": n, "seed": 0}, "metrics": metrics}

    fake = {"cells": [rec("gumbel_sinkhorn", 100, {
        d: {"prop_any_wrong": 0.0, "prop_wrong": 0.5} for d in sorting.TEST_DISTRIBUTIONS})]}
    rows = sorting.compare_table1(fake, paper, "prop_wrong")
    assert len(rows) == 21
    by = rows.set_index(["test_distribution", "N"])
    assert by.loc[("U(0,1)", 100), "status"] == "worse"
    assert by.loc[("U(0,1)", 80), "status"] == "missing"
    assert by.loc[("U(1000,1001)", 100), "paper"] == 0.39
    rows = sorting.compare_table1(fake, paper, "prop_any_wrong",
                                  source="sorting_gumbel_sinkhorn_table1")
    assert len(rows) == 42 and (rows["status"] == "met").sum() == 7
    s = harness.summarize(rows)
    assert s["met"] == 7 and s["missing"] == 35
    t5 = {"cells": [rec("hste", 100, {"U(0,1)": {"kendall_tau": 0.71, "l1": 0.001}})]}
    rows = sorting.compare_table5(t5, paper, "kendall_tau", methods=["hste"])
    row = rows.set_index("N").loc[100]
    assert row["status"] == "met" and row["gap"] == pytest.approx(0.01)
    row = sorting.compare_table5(t5, paper, "l1", methods=["hste"]).set_index("N").loc[100]
    assert row["ours"] == pytest.approx(0.1) and row["status"] == "met"
    t5["cells"].append(rec("hste", 300, t5["cells"][0]["metrics"]))
    rows = sorting.compare_table5(t5, paper, "kendall_tau", methods=["hste"])
    only = rows[rows["N"] == 300]
    assert len(only) == 1 and only["paper"].isna().all() and (only["status"] == "ours only").all()
    s = harness.summarize(rows)
    assert s["ours_only"] == 1 and s["total"] == len(rows) - 1 and s["met"] == 1
    text = harness.markdown_table(rows, ["method", "N", "paper", "ours", "gap"])
    assert text.count("\n") == len(rows) + 1 and "—" in text


def test_protocol_variants_train_and_keep_recorded_identities():
    base = SortingConfig(n=5, n_steps=40, n_test=50, lr_schedule="cosine")
    assert "noise_schedule" not in base.to_dict()  # recorded cells stay current
    varied = SortingConfig(n=5, n_steps=40, n_test=50, lr_schedule="cosine",
                           noise_schedule="cosine", n_samples=4, standardize=True)
    d = varied.to_dict()
    assert d["noise_schedule"] == "cosine" and d["head"]["n_samples"] == 4 and d["standardize"]
    result = train(varied, progress=False)
    assert result.model.head.noise_factor < 0.01  # annealed to (almost) zero at the last step
    assert result.model.standardize and result.losses[-1] < result.losses[0]
    with pytest.raises(ValueError, match="noise_schedule"):
        SortingConfig(noise_schedule="linear")


def test_temperature_annealing():
    base = SortingConfig(n=5, n_steps=40, n_test=50)
    assert "tau_final" not in base.to_dict()  # recorded cells stay current
    cfg = SortingConfig(n=5, n_steps=40, n_test=50, tau_final=0.1)
    assert cfg.to_dict()["tau_final"] == 0.1
    half = train(cfg, until=20, progress=False)
    decay = 0.5 * (1 + math.cos(math.pi * 19 / 40))  # before step 19, the 20th
    assert half.model.head.tau == pytest.approx(0.1 ** (1 - decay))
    result = train(cfg, progress=False)
    assert 0.1 <= result.model.head.tau < 0.11  # the last step's temperature
    assert train(base, progress=False).model.head.tau == 1.0
    for bad in (0, -1.0, float("inf"), "0.1"):
        with pytest.raises(ValueError, match="tau_final"):
            SortingConfig(tau_final=bad)


def test_sinkhorn_iterations_of_the_head():
    base = SortingConfig(n=5, method="gumbel_sinkhorn_implicit")
    assert "n_iters" not in base.to_dict() and base.head()["n_iters"] == 200  # recorded cells
    cfg = SortingConfig(n=5, method="gumbel_sinkhorn_implicit", n_iters=1000)
    assert cfg.to_dict()["n_iters"] == 1000 and cfg.head()["n_iters"] == 1000
    assert cfg.build().head.n_iters == 1000
    assert SortingConfig(n=5, n_iters=7).build().head.n_iters == 7  # the papers' fixed count
    for bad in (0, -3, 2.5, True, "200"):
        with pytest.raises(ValueError, match="n_iters"):
            SortingConfig(n_iters=bad)


def test_kendall_in_the_papers_convention_is_compared_like_for_like():
    paper = harness.load_paper_tables(PAPER)
    old = {"cell": {"method": "hste", "n": 100, "seed": 0},
           "metrics": {"U(0,1)": {"kendall_tau": 0.99}}}  # recorded before the papers' metric
    rows = sorting.compare_table5({"cells": [old]}, paper, "kendall_tau_papers", ["hste"])
    assert rows.set_index("N").loc[100, "status"] == "missing"
    new = {"cell": {"method": "hste", "n": 100, "seed": 1},
           "metrics": {"U(0,1)": {"kendall_tau": 0.99, "kendall_tau_papers": 0.5}}}
    rows = sorting.compare_table5({"cells": [old, new]}, paper, "kendall_tau_papers", ["hste"])
    row = rows.set_index("N").loc[100]
    assert row["ours"] == 0.5 and row["n_seeds"] == 1 and row["status"] == "worse"
    metrics = evaluate(sorting.SortingConfig(n=5).build(), 20, ["U(0,1)"],
                       generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert {"kendall_tau", "kendall_tau_papers"} <= metrics["U(0,1)"].keys()


def test_relabelled_cells_are_refreshed_from_their_weights_not_retrained(tmp_path, monkeypatch):
    """Adding ``relabel_lists`` to a protocol refreshes the recorded cells from their weights:
    the same training record, the metrics before and after, the relabelled weights verify, and
    refreshing back to no relabelling restores the trained network's metrics."""
    monkeypatch.setitem(sorting.TABLES, "tiny", TINY)
    kw = {"results_dir": tmp_path, "checkpoint_dir": tmp_path / "ck", "progress": False,
          "selection": {"method": ["gumbel_sinkhorn"], "n": [5]}}  # fmt: skip
    cell = {"method": "gumbel_sinkhorn", "n": 5, "seed": 0}
    st = sorting.store("tiny", tmp_path)
    run_table("tiny", **kw)
    trained = st.get(cell)
    assert "relabel" not in trained and "relabel_lists" not in trained["config"]
    # swap two columns of the stored network so that the relabelling has work to do
    state = st.load_artifact(trained, "model.pt")
    swap = torch.tensor([0, 1, 3, 2, 4])
    state["g2.weight"], state["g2.bias"] = state["g2.weight"][swap], state["g2.bias"][swap]
    trained["provenance"]["artifacts"]["model.pt"] = st.save_artifact(cell, "model.pt", state)
    config = harness.config_from_dict(SortingConfig, trained["config"])
    trained["metrics"] = sorting.EXPERIMENT.recompute(config, {"model.pt": state})
    st.put(cell, trained)

    monkeypatch.setattr(sorting, "train", lambda *a, **k: pytest.fail("retrained"))
    run_table("tiny", overrides={"relabel_lists": 200}, **kw)
    rec = st.get(cell)
    assert rec["config"]["relabel_lists"] == 200 and rec["train"] == trained["train"]
    assert rec["relabel"]["metrics_before"] == trained["metrics"]
    assert rec["relabel"]["moved"] and rec["relabel"]["order"] is not None
    assert rec["provenance"]["training"]["timestamp"] == trained["provenance"]["timestamp"]
    assert sorting.verify("tiny", cell, tmp_path)["max_abs_diff"] == 0.0
    assert (rec["metrics"]["U(0,1)"]["prop_wrong"]
            <= trained["metrics"]["U(0,1)"]["prop_wrong"])  # fmt: skip
    trained_net = sorting.load_network(st, rec, relabelled=False)
    tested_net = sorting.load_network(st, rec)
    assert torch.equal(trained_net.g2.weight, state["g2.weight"])
    assert not torch.equal(tested_net.g2.weight, state["g2.weight"])
    rows = sorting.compare_table1(st.load(), {"sorting_sinkhorn_networks_table1": {"rows": [
        {"test_distribution": "U(0,1)", "N": 5, "prop_wrong": 0.0}]}}, "prop_wrong",
        relabelled=False)  # fmt: skip
    assert rows["ours"].iloc[0] == pytest.approx(trained["metrics"]["U(0,1)"]["prop_wrong"])
    # loaded as current, the table leaves out cells of another protocol (here: the tiny one's)
    now = sorting.load_results("tiny", tmp_path, current=True)
    assert now["cells"] == [] and now["stale_cells"] == [harness.cell_id(cell)]
    assert len(sorting.load_results("tiny", tmp_path)["cells"]) == 1
    run_table("tiny", **kw)  # back: the trained network's own columns
    assert st.get(cell)["metrics"] == trained["metrics"] and "relabel" not in st.get(cell)
    assert sorting.load_results("tiny", tmp_path, current=True)["stale_cells"] == []
    with pytest.raises(ValueError, match="relabel_lists"):
        SortingConfig(relabel_lists=-1)
