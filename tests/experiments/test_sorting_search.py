import math

import pytest

from permlib.experiments import sorting_search


def test_search_cells_run_and_summarize(tmp_path, monkeypatch):
    grid = sorting_search.cells(ns=(4,), seeds=(100, 101), variants=["baseline", "standardize"])
    assert [c for c, _ in grid][:2] == [{"variant": "baseline", "n": 4, "seed": 100},
                                         {"variant": "standardize", "n": 4, "seed": 100}]
    assert grid[1][1].standardize and not grid[0][1].standardize
    with pytest.raises(ValueError, match="unknown variants"):
        sorting_search.cells(variants=["nope"])
    small = [(c, cfg.__class__(**{**cfg.__dict__, "n_steps": 5, "n_test": 10})) for c, cfg in grid]
    grid5 = sorting_search.cells(ns=(10,), seeds=(100,), table="table5")
    assert len(grid5) == 11 and {c.init for _, c in grid5} == {"torch", "glorot"}
    assert all(c.fixed_train_set and c.n_test == 100 for _, c in grid5)
    implicit = {c["variant"]: cfg for c, cfg in grid5 if c["variant"].startswith("implicit")}
    assert {cfg.method for cfg in implicit.values()} == {"gumbel_sinkhorn_implicit"}
    assert implicit["implicit_iters_1000"].head()["n_iters"] == 1000
    assert implicit["implicit"].head()["n_iters"] == 200
    assert implicit["implicit_cosine"].lr_schedule == "cosine"
    monkeypatch.setattr(sorting_search, "cells", lambda *a, **k: small)  # real cells take minutes
    data = sorting_search.run((4,), (100, 101), results_dir=tmp_path,
                              checkpoint_dir=tmp_path / "ck", progress=False)  # fmt: skip
    assert len(data["cells"]) == 4
    assert data["cells"][0]["provenance"]["mode"] == "search"
    table = sorting_search.summary(data)
    assert list(table.index) == [("baseline", 4), ("standardize", 4)]
    assert "±" in table.loc[("baseline", 4), "U(0,1)"]
    # the search starts from constant noise and relabels like Table 1; each run says what the
    # relabelling did, and its network as training left it can be reloaded
    assert grid[0][1].noise_schedule == "constant" and grid[0][1].relabel_lists == 1000
    rel = sorting_search.relabel_effects(data)
    assert len(rel) == 4 and (rel["paw_after"] >= 0).all() and (rel["moved"] >= 0).all()
    assert rel["pw_after"].le(rel["pw_before"] + 1).all()
    stuck = sorting_search.stuck_positions(data, results_dir=tmp_path)
    assert len(stuck) == 4
    assert stuck["P.A.W."].tolist() == rel["paw_before"].tolist()


def test_error_positions_find_swapped_columns():
    import torch

    from permlib.experiments.sorting_search import error_positions
    from permlib.nn import SortingNetwork

    net = SortingNetwork(5, hidden=1, head="hste")
    with torch.no_grad():
        net.g1.weight.fill_(1.0)
        net.g1.bias.zero_()
        net.g2.weight.copy_(torch.tensor([[0.0], [1.0], [2.0], [4.0], [3.0]]))  # 3, 4 swapped
        net.g2.bias.zero_()
    rate = error_positions(net, n_lists=50)
    assert rate.tolist() == [0.0, 0.0, 0.0, 1.0, 1.0]


def test_effects_compare_each_variant_with_the_baseline_on_shared_seeds():
    def rec(variant, seed, train, shifted):
        m = {"U(0,1)": {"prop_wrong": train}, "U(1,2)": {"prop_wrong": shifted},
             "U(0,10)": {"prop_wrong": 2 * shifted}}  # fmt: skip
        return {"cell": {"variant": variant, "n": 8, "seed": seed}, "metrics": m}

    data = {"cells": [rec("baseline", 100, 0.2, 0.1), rec("baseline", 101, 0.4, 0.3),
                      rec("a", 100, 0.1, 0.1), rec("a", 102, 0.9, 0.9),  # 102: no baseline
                      rec("b", 101, 0.1, 0.5), rec("c", 102, 0.0, 0.0)]}  # fmt: skip
    out = sorting_search.effects(data).set_index("variant")
    assert list(out.index) == ["a", "b"]  # c shares no seed with the baseline
    a, b = out.loc["a"], out.loc["b"]
    assert a["seeds"] == [100] and a["train"] == 0.1 and a["base_train"] == 0.2
    assert a["shifted"] == pytest.approx(0.15) and a["base_shifted"] == pytest.approx(0.15)
    assert a["better"] and not b["better"]  # b: better on U(0,1), worse past it
    assert sorting_search.effects(None).empty
    with pytest.raises(ValueError, match="train must be a test interval"):
        sorting_search.effects(data, train="U(5,6)")


def test_effects_pair_each_variant_with_its_own_baseline_without_shifted_intervals():
    def rec(variant, seed, pw):
        return {"cell": {"variant": variant, "n": 10, "seed": seed},
                "metrics": {"U(0,1)": {"prop_wrong": pw}}}

    data = {"cells": [rec("a_torch", 100, 0.2), rec("a_glorot", 100, 0.1),
                      rec("b_torch", 100, 0.0), rec("b_glorot", 100, 0.3),
                      rec("a_torch", 101, 0.4), rec("a_glorot", 101, 0.3)]}  # fmt: skip
    pairs = {"a_glorot": "a_torch", "b_glorot": "b_torch"}
    out = sorting_search.effects(data, baseline=pairs).set_index("variant")
    assert list(out.index) == ["a_glorot", "b_glorot"]  # the torch variants are baselines
    a = out.loc["a_glorot"]
    assert a["seeds"] == [100, 101] and a["train"] == pytest.approx(0.2)
    assert a["base_train"] == pytest.approx(0.3) and math.isnan(a["shifted"])
    assert a["better"] and not out.loc["b_glorot", "better"]
