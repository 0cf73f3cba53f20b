import json

import pytest
import torch

from permlib.distributions import enumerate_permutations, permutation_rank
from permlib.experiments import birkhoff_vi, harness
from permlib.experiments.birkhoff_vi import BirkhoffVIConfig, make_problems, run_table

PAPER = "benchmarks/reference/paper_tables.json"


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


TINY = {
    "title": "tiny",
    "methods": ("mallows", "rounding", "exact_samples"),
    "sigmas": (0.1, 0.5),
    "protocol": {"n_reps": 4, "n_iters": 40, "n_mc": 2, "n_eval_samples": 300,
                 "n_elbo_samples": 4, "rounding_taus": (1.0,), "rounding_noise_maxes": (0.5,),
                 "thetas": (0.5, 10.0), "mallows_mcmc_steps": 40},
}  # fmt: skip


def test_problems_share_their_draws_across_noise_levels():
    a, b = make_problems(5, 6, 0.1, seed=3), make_problems(5, 6, 0.5, seed=3)
    assert torch.equal(a.centres, b.centres) and torch.equal(a.true_perm, b.true_perm)
    torch.testing.assert_close((a.obs - a.centres[torch.arange(5)[:, None], a.true_perm]) * 5,
                               b.obs - b.centres[torch.arange(5)[:, None], b.true_perm])
    # problem r does not depend on how many problems are drawn
    assert torch.equal(make_problems(2, 6, 0.1, seed=3).obs, a.obs[:2])
    torch.testing.assert_close(a.posterior.sum(-1), torch.ones(5, dtype=torch.float64))
    assert torch.equal(permutation_rank(a.map_perm), a.posterior.argmax(-1))
    # the exact posterior is p(perm | y) ∝ prod_m N(y_m | c_perm[m], sigma^2 I)
    perms = enumerate_permutations(6)
    sq = ((a.obs[0][None] - a.centres[0][perms]) ** 2).sum((-2, -1))
    torch.testing.assert_close(a.posterior[0], torch.softmax(-sq / (2 * 0.1**2), 0))


def test_histogram_counts_each_problem_separately():
    perms = enumerate_permutations(4)
    draws = torch.stack([perms[[0, 0, 5, 23]], perms[[1, 1, 1, 1]]], dim=1)  # (S=4, R=2, N)
    h = birkhoff_vi.histogram(draws)
    assert h.shape == (2, 24)
    assert h[0, 0] == 0.5 and h[0, 5] == 0.25 and h[0, 23] == 0.25 and h[1, 1] == 1.0


def test_a_fit_raises_the_elbo():
    config = BirkhoffVIConfig(method="stick_breaking", sigma=0.25, n_reps=3, n_iters=60, n_mc=4)
    p = make_problems(3, 6, 0.25, seed=0)
    setting = {"tau": 1.0, "noise_max": 0.3}
    _, losses = birkhoff_vi.fit_family("stick_breaking", setting, p, config,
                                       torch.Generator().manual_seed(0))  # fmt: skip
    assert sum(losses[-10:]) / 10 < 0.7 * sum(losses[:10]) / 10


def test_run_table_writes_cells_resumes_and_verifies(tmp_path, monkeypatch):
    monkeypatch.setitem(birkhoff_vi.TABLES, "tiny", TINY)
    kw = {"results_dir": tmp_path, "checkpoint_dir": tmp_path / "ck", "progress": False}
    data = run_table("tiny", selection={"sigma": [0.1]}, **kw)
    cells = {r["cell"]["method"]: r for r in data["cells"]}
    assert set(cells) == {"mallows", "rounding", "exact_samples"}
    rec = cells["rounding"]
    assert rec["cell"] == {"method": "rounding", "sigma": 0.1, "seed": 0}
    assert rec["provenance"]["seed"] == 0 and "git_commit" in rec["provenance"]
    assert "params.pt" in rec["provenance"]["artifacts"]
    assert "thetas" not in rec["config"] and "rounding_taus" in rec["config"]
    assert len(rec["metrics"]["settings"][0]["distance"]) == 4
    stamp = rec["provenance"]["timestamp"]
    data = run_table("tiny", **kw)  # the sigma = 0.5 cells now; sigma = 0.1 is not rerun
    assert len(data["cells"]) == 6
    again = birkhoff_vi.store("tiny", tmp_path).get({"method": "rounding", "sigma": 0.1,
                                                     "seed": 0})  # fmt: skip
    assert again["provenance"]["timestamp"] == stamp
    # stored metrics are reproduced from the saved parameters (and, for Mallows, from scratch)
    for method in ("rounding", "mallows", "exact_samples"):
        check = birkhoff_vi.verify("tiny", {"method": method, "sigma": 0.5, "seed": 0}, tmp_path)
        assert check["max_abs_diff"] == 0.0
    # a changed protocol is refused, naming the field; another method's field changes nothing
    with pytest.raises(harness.StaleCellError, match="n_iters 40 -> 41"):
        run_table("tiny", overrides={"n_iters": 41}, selection={"method": ["rounding"]}, **kw)
    data = run_table("tiny", overrides={"sb_taus": (0.5,)}, **kw)
    assert len(data["cells"]) == 6

    # metric sanity: a concentrated Mallows at the MAP is close to the nearly one-point posterior
    # of small noise and far from the spread-out one; theta = 0.5 is far at both
    def mallows(sigma, theta):
        rec = birkhoff_vi.store("tiny", tmp_path).get({"method": "mallows", "sigma": sigma,
                                                       "seed": 0})  # fmt: skip
        row = next(r for r in rec["metrics"]["settings"] if r["setting"]["theta"] == theta)
        return row["mean_distance"], row["mean_distance_sampled"]

    exact, sampled = mallows(0.1, 10.0)
    assert exact < 0.2 and sampled < 0.2
    assert mallows(0.5, 10.0)[0] > exact + 0.2
    assert mallows(0.1, 0.5)[0] > 0.6
    floor = birkhoff_vi.store("tiny", tmp_path).get({"method": "exact_samples", "sigma": 0.1,
                                                     "seed": 0})  # fmt: skip
    assert floor["metrics"]["settings"][0]["mean_distance"] < 0.05


def test_compare_table1_against_the_paper(tmp_path, monkeypatch):
    paper = harness.load_paper_tables(PAPER)

    def rec(method, sigma, rows, **best):
        return {"cell": {"method": method, "sigma": sigma, "seed": 0},
                "metrics": {"settings": rows, "best": 0, **best}}  # fmt: skip

    fake = {"cells": [
        rec("rounding", 0.5, [{"setting": {"tau": 1.0}, "distance": [0.30, 0.34]},
                              {"setting": {"tau": 0.1}, "distance": [0.9, 0.9]}], best_by_elbo=1),
        rec("mallows", 0.5, [{"setting": {"theta": 2.0}, "distance": [0.7, 0.9],
                              "distance_sampled": [0.5, 0.5]},
                             {"setting": {"theta": 1.0}, "distance": [0.6, 0.6],
                              "distance_sampled": [0.6, 0.6]}]),
    ]}  # fmt: skip
    table = birkhoff_vi.compare_table1(fake, paper).set_index(["method", "sigma"])
    row = table.loc[("Rounding", 0.5)]
    assert row["paper"] == 0.32 and row["ours"] == pytest.approx(0.32) and row["n_seeds"] == 2
    assert row["status"] == "met" and row["within_se"]
    assert not table.loc[("Mallows (theta=2)", 0.5), "within_se"]  # 0.80 ± 0.10 vs 0.53
    assert table.loc[("Mallows (theta=1)", 0.5), "status"] == "ours only"
    assert table.loc[("Stick-breaking", 0.1), "status"] == "missing"
    by_elbo = birkhoff_vi.compare_table1(fake, paper, select="best_by_elbo")
    assert by_elbo.set_index(["method", "sigma"]).loc[("Rounding", 0.5), "ours"] == 0.9
    sampled = birkhoff_vi.compare_table1(fake, paper, mallows="sampled")
    assert sampled.set_index(["method", "sigma"]).loc[("Mallows (theta=2)", 0.5), "ours"] == 0.5
    with pytest.raises(ValueError, match="select must be"):
        birkhoff_vi.compare_table1(fake, paper, select="worst")


def test_command_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(birkhoff_vi.TABLES, "tiny", TINY)
    args = ["--mode", "full", "--table", "tiny", "--results-dir", str(tmp_path),
            "--checkpoint-dir", str(tmp_path / "ck"), "--no-progress"]  # fmt: skip
    assert birkhoff_vi.main([*args, "--cell", "method=mallows,sigma=0.5", "--n-reps", "2"]) == 0
    recs = birkhoff_vi.store("tiny", tmp_path).records()
    assert [(r["cell"]["method"], r["cell"]["sigma"], r["config"]["n_reps"]) for r in recs] == [
        ("mallows", 0.5, 2)]
    assert birkhoff_vi.main(["--verify", "--table", "tiny", "--results-dir", str(tmp_path),
                             "--n-reps", "2"]) == 0  # fmt: skip
    assert "max |recomputed - stored| 0.00e+00" in capsys.readouterr().out
    out = tmp_path / "ci.json"
    assert birkhoff_vi.main(["--mode", "ci", "--sigma", "0.1", "--n-reps", "2", "--n-iters", "5",
                             "--n-eval-samples", "50", "--no-progress", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| Rounding | " in printed and "(0.06)" in printed  # ours beside the paper's
    assert printed.count("\n") < 20
    assert json.loads(out.read_text())["config"]["n_reps"] == 2


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="method must be one of"):
        BirkhoffVIConfig(method="sinkhorn")
    with pytest.raises(ValueError, match="rounding_taus must hold"):
        BirkhoffVIConfig(rounding_taus=(0.0,))
    with pytest.raises(ValueError, match="rounding_noise_maxes"):
        BirkhoffVIConfig(rounding_noise_maxes=(0.05,))
    with pytest.raises(ValueError, match="thetas"):
        BirkhoffVIConfig(thetas=(-1.0,))


def test_the_choices_the_paper_leaves_open_are_listed():
    choices = birkhoff_vi.our_choices()
    for name in ("centre_scale", "prior_eta", "n_iters", "n_mc", "n_eval_samples", "init",
                 "sb_taus", "rounding_noise_maxes", "mallows_mcmc_steps"):
        assert name in choices and choices[name].startswith("our choice")
    assert "lr" not in choices and "rounding_sinkhorn_iters" not in choices  # the paper's
