"""The relaxations' cost benchmark runs end to end at tiny sizes (no timing assertions), its
guards stop a step that is too slow, and the chapter's loader and figure read what it writes."""

import json
from pathlib import Path

import pytest

import benchmarks.relaxations_cost as rc
from benchmarks import report
from permlib.experiments import relaxations


def _in_process(method, ns, batch, seed, slow_s, max_gb, threads):
    """The CPU probe without its subprocess (and without the memory cap): fast, same rows."""
    yield from rc.probe(method, ns, batch, seed, "cpu", slow_s)


def test_tiny_run_writes_a_file_the_chapter_reads(monkeypatch, tmp_path):
    monkeypatch.setattr(rc, "_probe_subprocess", _in_process)
    args = ["--ns", "5", "--methods", "sinkhorn", "neuralsort", "gumbel_sinkhorn_grover",
            "--reps", "2", "--out", str(tmp_path)]  # fmt: skip
    result = rc.main(args)
    data = json.loads((tmp_path / "relaxations_cost_cpu.json").read_text())
    assert data["rows"] == result["rows"]
    prov = data["provenance"]
    for key in ("command", "git_commit", "versions", "machine", "wall_s", "device", "timestamp"):
        assert key in prov
    assert prov["command"].startswith("python -m benchmarks.relaxations_cost --ns 5")
    assert prov["device"] == data["device"] == "cpu" and "diffsort" in prov["versions"]
    assert len(prov["machine"]["load_average_1_5_15_min"]) == 3
    assert data["skipped"] == {"gumbel_sinkhorn_grover": "multi-digit task only (Grover et al.'s "
                               "baseline layout)"}  # fmt: skip
    assert [(r["method"], r["n"]) for r in data["rows"]] == [("sinkhorn", 5), ("neuralsort", 5)]
    for r in data["rows"]:
        assert r["reps"] == 2 and 0 < r["min_ms"] <= r["median_ms"]
        assert isinstance(r["peak_bytes"], int) and r["peak_bytes"] >= 0

    cost = report.relaxations_cost(tmp_path)  # the folder, or the file
    assert cost.equals(report.relaxations_cost(tmp_path / "relaxations_cost_cpu.json"))
    assert list(cost.method) == ["sinkhorn", "neuralsort"]
    assert list(cost.family) == ["matrix", "scores"]
    assert cost.ms.notna().all() and (cost.note == "").all()
    assert cost.attrs["skipped"] == data["skipped"] and cost.attrs["device"] == "cpu"
    wide = report.relaxations_cost_table(cost)
    assert list(wide.columns) == ["n = 5"] and list(wide.index) == ["sinkhorn", "neuralsort"]
    assert wide.loc["sinkhorn", "n = 5"] == pytest.approx(data["rows"][0]["min_ms"])
    fig = report.relaxations_cost_figure(tmp_path)
    ax_t, ax_m = fig.axes
    assert ax_t.get_xscale() == ax_t.get_yscale() == "log"
    assert ax_t.get_xlabel() == "list length $n$" and "(ms)" in ax_t.get_ylabel()
    assert "(MiB)" in ax_m.get_ylabel()
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["sinkhorn", "neuralsort"]
    assert fig.get_size_inches()[0] == pytest.approx(12.8)  # 1280 px at 100 dpi

    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.4))  # as the chapter calls it
    assert rc.plot(rc.load(tmp_path), ax=ax) is ax
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["sinkhorn", "neuralsort"]
    assert ax.get_legend().get_title().get_text() == "cpu, batch of 10, 1 thread"
    assert rc.plot(tmp_path, what="memory").get_ylabel().startswith("peak memory")
    with pytest.raises(ValueError, match="what"):
        rc.plot(tmp_path, what="speed")
    plt.close("all")


def test_missing_peer_is_skipped_not_failed(monkeypatch, tmp_path):
    monkeypatch.setattr(rc, "_probe_subprocess", _in_process)
    monkeypatch.setitem(relaxations._PEERS, "diffsort", lambda: False)
    methods, skipped = rc.plan_methods(["softsort", "diffsort_odd_even", "diffsort_bitonic"])
    assert methods == ["softsort"]
    assert set(skipped) == {"diffsort_odd_even", "diffsort_bitonic"}
    assert all("needs the package diffsort" in why for why in skipped.values())
    result = rc.main(["--ns", "5", "--methods", "softsort", "diffsort_bitonic", "--reps", "2",
                      "--out", str(tmp_path)])  # fmt: skip
    assert [r["method"] for r in result["rows"]] == ["softsort"]
    assert "diffsort_bitonic" in result["skipped"]
    assert not any("failed" in r for r in result["rows"])
    assert report.relaxations_cost(tmp_path).attrs["skipped"] == result["skipped"]


@pytest.mark.slow  # a fresh interpreter imports torch: seconds
def test_memory_probe_runs_in_a_subprocess():
    (cell,) = rc._probe_subprocess("neuralsort", [5], 4, 0, 20.0, 2.0, 1)
    assert cell["n"] == 5 and isinstance(cell["peak_bytes"], int) and cell["first_step_s"] > 0


def test_a_step_too_slow_is_stopped_and_larger_n_not_run(monkeypatch):
    monkeypatch.setattr(rc, "STARTUP_S", 0.0)  # the probe cannot even import in 3 * 0.01 s
    (cell,) = rc._probe_subprocess("sinkhorn", [5, 15], 4, 0, 0.01, 2.0, 1)
    assert cell["n"] == 5 and cell["too_slow"].endswith("(stopped after 0.03 s)")
    monkeypatch.setattr(rc, "_probe_subprocess", lambda m, ns, *a: iter([cell]))
    rows = rc.measure(["sinkhorn"], [5, 15], reps=2, progress=None)
    assert rows[0]["too_slow"] == cell["too_slow"] and "min_ms" not in rows[0]
    assert rows[1]["not_run"] == "too costly at n = 5"


def test_a_step_over_the_time_budget_is_recorded_with_its_time():
    cells = list(rc.probe("neuralsort", [5, 15], 4, 0, "cpu", slow_s=0.0))
    assert len(cells) == 1 and cells[0]["too_slow"].startswith("one step took ")
    assert cells[0]["first_step_s"] > 0 and "peak_bytes" not in cells[0]


def test_arguments_are_checked():
    with pytest.raises(SystemExit):
        rc.main(["--device", "tpu"])
    with pytest.raises(SystemExit):
        rc.main(["--methods", "no_such_method"])
    with pytest.raises(SystemExit):
        rc.main(["--ns", "0"])


def test_report_marks_cells_without_a_timing(tmp_path):
    rows = [{"method": "a", "family": "matrix", "n": n, "min_ms": float(n), "median_ms": 1.0 * n,
             "reps": 3, "peak_bytes": 2**20 * n} for n in (5, 15)]  # fmt: skip
    rows += [{"method": "a", "family": "matrix", "n": 100, "first_step_s": 30.0,
              "too_slow": "one step took 30 s"},
             {"method": "b", "family": "scores", "n": 5, "min_ms": 1.0, "median_ms": 1.0,
              "reps": 3, "peak_bytes": 0},
             {"method": "b", "family": "scores", "n": 15, "too_big": "more than 4 GB"},
             {"method": "b", "family": "scores", "n": 100, "not_run": "too costly at n = 15"}]
    data = {"provenance": {}, "config": {"batch": 10, "threads": 1}, "device": "cpu",
            "rows": rows, "skipped": {}}  # fmt: skip
    (tmp_path / "relaxations_cost_cpu.json").write_text(json.dumps(data))
    cost = report.relaxations_cost(tmp_path)
    assert cost.loc[2, "step_s"] == 30.0 and cost.loc[2, "note"].startswith("too slow: ")
    assert cost.loc[4, "note"] == "too big: more than 4 GB" and cost.ms.isna().sum() == 3
    assert report.relaxations_cost_table(cost, "peak_mib").loc["a", "n = 15"] == 15.0
    fig = report.relaxations_cost_figure(cost)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["a (n = 100: too slow, one step (open marker))",
                      "b (n = 15: too big; n = 100: not run)"]
    assert fig.legends[0].get_title().get_text() == "cpu, batch of 10, 1 thread"
    assert any("not shown" in t.get_text() for t in fig.axes[1].texts)  # b's 0 at n = 5
    with pytest.raises(FileNotFoundError, match="--record"):
        report.relaxations_cost(tmp_path, device="cuda")
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(ValueError, match="not a benchmarks.relaxations_cost file"):
        report.relaxations_cost(tmp_path / "x.json")


def test_recorded_files_load():
    for path in Path(report.__file__).parent.joinpath("results").glob("relaxations_cost_*.json"):
        cost = report.relaxations_cost(path)
        assert len(cost) and (cost.ms.notna() | (cost.note != "")).all()
