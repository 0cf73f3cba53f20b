"""The benchmark harness runs end to end at tiny sizes (no timing assertions), so it cannot rot."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.peers import as_numpy, matching_methods, sinkhorn_methods
from permlib import log_sinkhorn
from permlib.testing import log_sinkhorn_loop


def test_textbook_loop_is_permlib_in_float64():
    x = torch.randn(3, 7, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.testing.assert_close(
        log_sinkhorn_loop(x / 0.1, 9), log_sinkhorn(x, 0.1, 9), atol=1e-10, rtol=0
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_every_available_sinkhorn_method_agrees(dtype):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 5, 5, generator=g, dtype=dtype)
    w = torch.randn(2, 5, 5, generator=g, dtype=dtype)
    methods, skipped = sinkhorn_methods(x, w, n_iters=4, tau=1.0)
    assert {"permlib", "textbook loop"} <= set(methods)
    assert not set(methods) & set(skipped)
    ref = {"cols": log_sinkhorn_loop(x, 4).exp(), "rows": log_sinkhorn_loop(x.mT, 4).exp().mT}
    for name, m in methods.items():
        p = as_numpy(m.fwd())
        np.testing.assert_allclose(p, ref[m.last].numpy(), atol=1e-5, err_msg=name)
        assert as_numpy(m.fwdbwd()).shape == x.shape


def test_matching_methods_agree():
    scores = torch.randn(3, 6, 6, generator=torch.Generator().manual_seed(2))
    calls, _ = matching_methods(scores)
    s = scores.numpy()
    totals = {k: s[np.arange(3)[:, None], np.arange(6), f()].sum(-1) for k, f in calls.items()}
    for k, t in totals.items():
        np.testing.assert_allclose(t, totals["permlib"], rtol=1e-6, err_msg=k)


@pytest.mark.slow
def test_harness_tiny_run_writes_json_and_figure(tmp_path):
    pytest.importorskip("seaborn")
    from benchmarks.run import main

    result = main(["--tiny", "--out", str(tmp_path)])
    data = json.loads((tmp_path / "bench_tiny_cpu.json").read_text())
    assert "git_commit" in data["provenance"]
    for key in ("command", "seed", "versions", "machine", "wall_s", "device"):
        assert key in data["provenance"]
    assert data["provenance"]["device"] == data["device"] == "cpu"
    assert data["provenance"]["command"].startswith("python -m benchmarks.run --tiny")
    sections = {r["section"] for r in data["rows"]}
    assert {"sinkhorn", "memory", "matching"} <= sections
    timed = [r for r in data["rows"] if "min_ms" in r]
    assert timed and all(r["min_ms"] <= r["median_ms"] for r in timed)
    assert "bandwidth" in data and data["bandwidth"]["fwd_estimate_ms"] > 0
    bw = data["bandwidth"]
    assert bw["read_bytes_per_s"] > 0 and bw["iterations_alone_ms"] > 0
    assert bw["fwd_estimate_at_read_bandwidth_ms"] > 0
    assert (tmp_path / "bench_tiny_cpu.png").stat().st_size > 1000
    assert result["targets"] == data["targets"]
    assert data["quiet"] == (not data["noise"])
    assert all(v["status"] in ("met", "missed", "not judged: noisy run")
               for v in data["targets"].values())
    conv = data["convergence"]
    assert {r["method"] for r in conv["timing"]} == {"fixed", "tol", "return_info", "implicit"}
    assert [r["L"] for r in conv["memory"]] == [2, 4]
    assert any(k.startswith("fwdbwd tol / fixed") for k in data["targets"])


def _git_status(path):
    import subprocess

    root = Path(__file__).resolve().parents[1]
    return subprocess.run(["git", "status", "--porcelain", "--", path], cwd=root,
                          capture_output=True, text=True, check=True).stdout


def test_bench_without_record_leaves_the_tracked_results_alone(monkeypatch, tmp_path):
    """`make bench` (no --record) writes to the git-ignored scratch folder, never results/."""
    import benchmarks.run as run

    before = _git_status("benchmarks")
    monkeypatch.setattr(run, "run_ott", lambda *a: None)  # seconds, not a JAX start per size
    monkeypatch.setattr(run, "RESULTS", tmp_path / "results")  # a write there would show
    written = run.SCRATCH / "bench_tiny_cpu.json"  # the real default: _build/bench/
    written.unlink(missing_ok=True)
    result = run.main(["--tiny", "--no-memory", "--no-figure", "--no-convergence"])
    assert json.loads(written.read_text())["rows"] == result["rows"]
    assert not (tmp_path / "results").exists()
    assert not result["record_refused"]
    assert _git_status("benchmarks") == before  # benchmarks/ as clean (or dirty) as before


@pytest.mark.slow
def test_record_writes_results_only_for_a_quiet_run(monkeypatch, tmp_path):
    import benchmarks.run as run

    monkeypatch.setattr(run, "run_ott", lambda *a: None)
    monkeypatch.setattr(run, "SCRATCH", tmp_path / "scratch")
    monkeypatch.setattr(run, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(run, "contradictions", lambda rows, bw, device: [])
    args = ["--tiny", "--no-memory", "--no-figure", "--no-convergence", "--record"]
    assert not run.main(args)["record_refused"]
    assert (tmp_path / "results" / "bench_tiny_cpu.json").exists()
    (tmp_path / "results" / "bench_tiny_cpu.json").unlink()
    monkeypatch.setattr(run, "contradictions", lambda rows, bw, device: ["fwd slower than bwd"])
    result = run.main(args)
    assert result["record_refused"] and not result["quiet"]
    assert not (tmp_path / "results" / "bench_tiny_cpu.json").exists()
    assert (tmp_path / "scratch" / "bench_tiny_cpu.json").exists()


def test_scratch_folder_is_git_ignored():
    import subprocess

    import benchmarks.run as run

    root = Path(run.__file__).resolve().parents[1]
    probe = run.SCRATCH / "bench_quick_cpu.json"
    ignored = subprocess.run(["git", "check-ignore", "-q", str(probe)], cwd=root)
    assert ignored.returncode == 0, f"{run.SCRATCH} must be git-ignored"


def _row(method, stage, ms, n=100):
    return {"section": "sinkhorn", "device": "cpu", "B": 128, "N": n, "L": 20,
            "dtype": "float32", "method": method, "stage": stage, "min_ms": ms}


def test_noisy_run_is_flagged_and_its_timing_targets_not_judged():
    from benchmarks.run import contradictions, judge

    bw = {"copy_bytes_per_s": 100e9, "read_bytes_per_s": 50e9, "bytes_per_iteration": 10_240_000}
    # bound: 20 * 10.24 MB / 100 GB/s = 2.048 ms
    quiet = [_row("permlib", "fwd", 3.0), _row("permlib", "fwdbwd", 9.0)]
    assert contradictions(quiet, bw) == []
    too_fast = [_row("permlib", "fwd", 1.5), _row("permlib", "fwdbwd", 9.0)]
    assert any("bandwidth bound" in c for c in contradictions(too_fast, bw))
    inverted = quiet + [_row("pygmtools", "fwd", 40.0, 200), _row("pygmtools", "fwdbwd", 30.0, 200)]
    (msg,) = contradictions(inverted, bw)
    assert "pygmtools" in msg and "N=200" in msg
    assert contradictions(inverted, bw, device="cuda") == []  # other device's rows
    goals = {"speed": {"ratio": 3.0, "goal": 2.5, "met": True, "kind": "time"},
             "memory": {"ratio": 1.0, "goal": 1.2, "met": True, "kind": "memory"}}
    judged = judge(goals, [msg])
    assert judged["speed"]["met"] is None and judged["speed"]["status"].startswith("not judged")
    assert judged["memory"]["status"] == "met"
    assert judge(goals, [])["speed"]["status"] == "met"


def test_convergence_targets():
    from benchmarks.run import convergence_targets

    conv = {
        "config": {"B": 128, "N": 100, "L": 20},
        "timing": [{"method": "fixed", "min_ms": 10.0, "ratio_vs_fixed": 1.0},
                   {"method": "tol", "min_ms": 12.0, "ratio_vs_fixed": 1.2},
                   {"method": "return_info", "min_ms": 14.0, "ratio_vs_fixed": 1.4},
                   {"method": "implicit", "min_ms": 20.0, "ratio_vs_fixed": 2.0}],
        "memory": [{"L": 10, "ratio_implicit_vs_unroll": 3.0},
                   {"L": 20, "ratio_implicit_vs_unroll": 0.9},
                   {"L": 50, "ratio_implicit_vs_unroll": 0.4}],
        "ott_implicit": {"min_ms": 25.0},
    }
    got = {k.split(" (")[0]: (v["ratio"], v["met"]) for k, v in convergence_targets(conv).items()}
    assert got == {
        "fwdbwd tol / fixed": (1.2, True),
        "fwdbwd return_info / fixed": (1.4, False),
        "fwdbwd implicit: OTT-JAX implicit / permlib": (1.25, True),
        "implicit / unroll peak memory, L >= 20": (0.9, True),  # L = 10 is not a goal
    }
    conv["ott_implicit"] = None
    assert not any("OTT" in k for k in convergence_targets(conv))


def test_device_argument_is_checked():
    from benchmarks.run import main

    with pytest.raises(SystemExit):
        main(["--tiny", "--device", "tpu"])
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit):
            main(["--tiny", "--device", "cuda"])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_peak_memory_and_timing(tmp_path):
    from benchmarks import memory
    from benchmarks.run import main

    peaks = memory.measure("textbook loop", 2, 16, [2, 8], seed=0, device="cuda")
    assert 0 < peaks[0] < peaks[1]
    result = main(["--tiny", "--device", "cuda", "--no-figure", "--out", str(tmp_path)])
    assert (tmp_path / "bench_tiny_cuda.json").exists()
    assert result["provenance"]["machine"]["device"].startswith("cuda:0 (")
    assert {r["device"] for r in result["rows"] if r["section"] == "sinkhorn"} == {"cuda"}


def test_timer_best_of_rounds_and_interleaved_order():
    from benchmarks import timing

    order = []
    calls = {k: (lambda k=k: order.append(k)) for k in "abc"}
    times = timing.interleaved(calls, reps=3)
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3, "c": 3}
    # one warm-up each, then rounds rotate: abc, bca, cab
    assert "".join(order) == "abc" + "abc" + "bca" + "cab"
    assert timing.best_seconds(lambda: None, 4, "cpu") == pytest.approx(0.0, abs=1e-3)
    s = timing.summary([0.002, 0.001, 0.004])
    assert s == {"min_ms": 1.0, "median_ms": 2.0, "reps": 3}
    with pytest.raises(ValueError, match="rounds"):
        timing.best_seconds(lambda: None, 0, "cpu")


def test_timer_gives_a_slow_callable_fewer_rounds():
    import time

    from benchmarks.timing import interleaved

    times = interleaved({"fast": lambda: None, "slow": lambda: time.sleep(0.02)}, 6, 0.05)
    assert len(times["fast"]) == 6 and len(times["slow"]) == 2


def tiny_results() -> dict:
    """A hand-made results dict: target B=2, N=4, L=3; a second N, a B=1 configuration."""

    def row(method, stage, ms, n=4, b=2, diff=0.0):
        return {"section": "sinkhorn", "device": "cpu", "B": b, "N": n, "L": 3,
                "dtype": "float32", "stage": stage, "method": method, "min_ms": ms,
                "median_ms": ms * 1.1, "reps": 3, "max_abs_diff_vs_loop": diff}

    rows = [
        row("permlib", "fwd", 1.0, diff=1e-7), row("permlib", "fwdbwd", 2.0, diff=2e-7),
        row("textbook loop", "fwd", 4.0), row("textbook loop", "fwdbwd", 6.0),
        row("OTT-JAX", "fwd", 0.5, diff=3e-7), row("OTT-JAX", "fwdbwd", 3.0, diff=4e-7),
        row("permlib", "fwd", 2.0, n=8), row("permlib", "fwdbwd", 5.0, n=8),
        row("textbook loop", "fwd", 20.0, n=8), row("textbook loop", "fwdbwd", 40.0, n=8),
        row("permlib", "fwd", 0.2, b=1), row("permlib", "fwdbwd", 0.4, b=1),
        row("textbook loop", "fwd", 0.1, b=1), row("textbook loop", "fwdbwd", 0.8, b=1),
        {"section": "sinkhorn", "device": "cpu", "B": 2, "N": 8, "L": 3, "dtype": "float32",
         "method": "OTT-JAX", "skipped": "too slow"},
    ]
    mib = 2**20
    for method, peaks in (("permlib unroll", (1, 2)), ("textbook loop", (4, 12))):
        rows += [{"section": "memory", "device": "cpu", "method": method, "B": 2, "N": 4,
                  "L": ll, "dtype": "float32", "peak_bytes": pk * mib}
                 for ll, pk in zip((10, 20), peaks, strict=True)]
    rows += [{"section": "matching", "B": 8, "N": 5, "method": m, "min_ms": ms,
              "median_ms": ms, "reps": 3, "max_objective_gap": 0.0}
             for m, ms in (("permlib", 1.0), ("scipy loop", 3.0), ("lapx jvr f32", 0.9))]
    return {
        "provenance": {"command": "python -m benchmarks.run --tiny", "seed": 0, "mode": "tiny",
                       "git_commit": "abc", "timestamp": "2026-01-01T00:00:00+00:00",
                       "wall_s": 1.0, "versions": {"torch": "2"},
                       "machine": {"platform": "Linux", "cpu_count": 2, "torch_threads": 2,
                                   "load_average_1_5_15_min": [0.5, 0.5, 0.5]}},
        "device": "cpu",
        "target_config": {"B": 2, "N": 4, "L": 3, "dtype": "float32"},
        "bandwidth": {"copy_bytes_per_s": 1e9, "bytes_per_iteration": 256,
                      "fwd_estimate_ms": 0.5, "read_bytes_per_s": 5e8,
                      "fwd_estimate_at_read_bandwidth_ms": 1.0, "iterations_alone_ms": 0.8},
        "rows": rows,
        "noise": [],
        "quiet": True,
        "targets": {
            "fwdbwd speed-up vs textbook loop": {"ratio": 3.0, "goal": 1.5, "met": True,
                                                 "kind": "time", "status": "met"},
            "fwd / bandwidth estimate": {"ratio": 2.0, "goal": 2.0, "met": None, "kind": "time",
                                         "status": "not judged: noisy run"},
            "old style": {"value": 1e-6, "goal": 1e-5, "met": False},
        },
    }


def test_report_speed_tables():
    from benchmarks import report

    bench = tiny_results()
    t = report.speed_table(bench, "target")
    assert list(t.index) == ["forward", "forward+backward"]
    assert t.loc["forward", "permlib (ms)"] == 1.0
    assert t.loc["forward+backward", "textbook loop"] == 3.0
    assert t.loc["forward", "OTT-JAX"] == 0.5
    assert np.isnan(t.loc["forward", "pygmtools"])  # a peer absent from the run
    across = report.speed_table(bench, "across_n")
    assert list(across.index) == [(4, "forward"), (4, "forward+backward"),
                                  (8, "forward"), (8, "forward+backward")]
    assert across.loc[(8, "forward+backward"), "textbook loop"] == 8.0
    others = report.speed_table(bench, "others")
    assert len(others) == 2 and set(others.index.get_level_values("B")) == {1}
    with pytest.raises(ValueError, match="which"):
        report.speed_table(bench, "all")
    wins = report.peer_wins(bench)
    assert list(zip(wins.peer, wins["peer / permlib"], strict=True)) == [
        ("textbook loop", 0.5), ("OTT-JAX", 0.5)]
    assert set(wins.B) == {1, 2}


def test_report_other_tables():
    from benchmarks import report

    bench = tiny_results()
    skipped = report.skipped_table(bench)
    assert skipped.to_dict("records") == [{"method": "OTT-JAX", "reason": "too slow",
                                           "configurations": 1,
                                           "for example": "B=2 N=8 L=3 float32"}]
    acc = report.accuracy_table(bench)
    assert list(acc.index) == ["permlib", "textbook loop", "OTT-JAX"]
    assert acc.loc["OTT-JAX", "forward+backward"] == 4e-7
    mem = report.memory_table(bench)
    assert mem.loc[20, "textbook loop"] == 12.0 and list(mem.index) == [10, 20]
    slopes = report.memory_slopes(bench)
    # textbook loop: 8 MiB over 10 iterations; an N x N matrix of the batch is 2 * 4 * 4 * 4 B
    assert slopes.loc["textbook loop", "N x N matrices"] == pytest.approx(0.8 * 2**20 / 128)
    assert slopes.loc["permlib unroll", "peak L=20 / L=10"] == 2.0
    match = report.matching_table(bench)
    assert list(match.index) == ["8 × 5²"] and match.loc["8 × 5²", "scipy loop"] == 3.0
    targets = report.targets_table(bench)
    assert list(targets.status) == ["met", "not judged: noisy run", "missed"]
    prov = report.provenance_table(bench)
    assert prov.loc["device", "value"] == "cpu" and prov.loc["quiet run", "value"] == "yes"


def test_report_numbers_and_figure():
    from benchmarks import report

    bench = tiny_results()
    n = report.numbers(bench)
    assert (n["fwdbwd_ms"], n["fwd_ms"], n["fwdbwd_vs_textbook_loop"]) == (2.0, 1.0, 3.0)
    assert (n["loop_gain_min"], n["loop_gain_n_min"], n["loop_gain_max"]) == (3.0, 4, 8.0)
    assert (n["targets"], n["targets_met"], n["peer_wins"], n["configurations"]) == (3, 1, 2, 3)
    assert n["mem_textbook_loop_hi"] == 12.0 and n["mem_l_lo"] == 10
    assert n["match_fastest_peer_min"] == pytest.approx(0.9) and n["match_scipy_max"] == 3.0
    assert n["bw_fwd_over_estimate"] == 2.0 and n["bw_alone_share_of_fwd"] == 0.8
    fig = report.figure(bench)
    ax_t, ax_m = fig.axes
    assert ax_t.get_xlabel() == "matrix size $N$" and "memory" in ax_m.get_ylabel()
    labels = [line.get_label() for line in ax_t.get_lines()]
    assert labels == ["permlib", "textbook loop", "OTT-JAX"]
    ott = ax_t.get_lines()[2]
    assert list(ott.get_xdata()) == [4]  # skipped at N = 8: one point
    assert [line.get_linestyle() for line in ax_m.get_lines()] == ["-", "-"]


def test_report_reads_the_recorded_files(tmp_path):
    from benchmarks import report

    with pytest.raises(FileNotFoundError, match="--record"):
        report.latest(tmp_path)
    (tmp_path / "bench_quick_cpu.json").write_text(json.dumps(tiny_results()))
    assert report.latest(tmp_path).name == "bench_quick_cpu.json"
    (tmp_path / "bench_full_cpu.json").write_text(json.dumps(tiny_results()))
    assert report.latest(tmp_path).name == "bench_full_cpu.json"
    assert report.load(report.latest(tmp_path))["device"] == "cpu"
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(ValueError, match="not a benchmarks.run results file"):
        report.load(tmp_path / "x.json")
    for path in Path(report.__file__).parent.joinpath("results").glob("bench_*_*.json"):
        bench = report.load(path)  # the recorded files: every table builds
        assert len(report.speed_table(bench)) == 2 and report.numbers(bench)["targets"] > 0


def test_report_formatted_tables_are_text():
    import pandas as pd

    from benchmarks import report

    df = pd.DataFrame({"a": [1.2345, float("nan")], "b": [12.0, 0.5]})
    out = report.formatted(df, {"a": ".2f", "b": ".2g×"})
    assert out.to_dict("list") == {"a": ["1.23", "–"], "b": ["12×", "0.5×"]}
    assert report.formatted(df, ".1e")["b"].tolist() == ["1.2e+01", "5.0e-01"]
    with pytest.raises(KeyError, match="'c'"):
        report.formatted(df, {"c": ".1f"})


def test_report_convergence_tables():
    from benchmarks import report

    bench = tiny_results()
    timing, memory = report.convergence_tables(bench)
    assert timing.empty and memory.empty  # files recorded before the section existed
    bench["convergence"] = {
        "config": {"B": 2, "N": 4, "L": 3},
        "timing": [{"method": "fixed", "min_ms": 2.0, "ratio_vs_fixed": 1.0},
                   {"method": "implicit", "min_ms": 3.0, "ratio_vs_fixed": 1.5}],
        "memory": [{"L": 20, "unroll_mb": 2.0, "implicit_mb": 1.0,
                    "ratio_implicit_vs_unroll": 0.5}],
        "ott_implicit": {"min_ms": 5.0, "median_ms": 5.0, "reps": 2},
    }
    timing, memory = report.convergence_tables(bench)
    assert timing.loc["OTT-JAX implicit"].tolist() == [5.0, 2.5]
    assert timing.loc["implicit", "/ fixed"] == 1.5
    assert memory.loc[20, "implicit / unroll"] == 0.5


def cuda_copy_of_recorded_cpu_file() -> dict:
    """A synthetic GPU run: the recorded CPU results with their device fields set to CUDA."""
    from benchmarks import report

    bench = report.load(report.latest(report.RESULTS, device="cpu"))
    bench["device"] = bench["provenance"]["device"] = "cuda"
    bench["provenance"]["machine"]["device"] = "cuda:0 (NVIDIA Test GPU)"
    for row in bench["rows"]:
        if row.get("section") in ("sinkhorn", "memory"):
            row["device"] = "cuda"
    return bench


def synthetic_speed() -> dict:
    """A synthetic ``speed.json`` of benchmarks/gpu_check.sh (its keys, made-up numbers)."""

    def row(dtype, fwd, floor, syncs):
        return {"dtype": dtype, "forward_ms": fwd, "forward_backward_ms": 3 * fwd,
                "floor_ms_hbm": floor, "floor_ms_same_size": floor / 2,
                "same_size_copy_bytes_per_s": 4e12, "host_syncs_in_forward": syncs,
                "host_syncs_in_forward_backward": syncs, "ratio_to_floor_hbm": fwd / floor,
                "ratio_to_floor_same_size": 2 * fwd / floor,
                "goal_within_2x_met": fwd / floor <= 2}

    return {"device": "NVIDIA Test GPU", "B": 1024, "N": 100, "L": 20,
            "hbm_copy_bytes_per_s": 3e12, "floor": "...",
            "rows": [row("float32", 1.5, 1.0, []), row("bfloat16", 1.5, 0.5, ["sync"])]}


def test_gpu_results_absent_then_found(tmp_path):
    from benchmarks import report

    cpu = tiny_results()
    (tmp_path / "bench_quick_cpu.json").write_text(json.dumps(cpu))
    assert report.gpu_results(tmp_path) is None  # a CPU file is not a GPU result
    assert "not measured yet" in report.GPU_NOT_MEASURED
    assert "make gpu-check" in report.GPU_NOT_MEASURED
    assert f"benchmarks/results/{report.GPU_SPEED_FILE}" in report.GPU_NOT_MEASURED

    (tmp_path / "bench_quick_cuda.json").write_text(json.dumps(cuda_copy_of_recorded_cpu_file()))
    gpu = report.gpu_results(tmp_path)
    assert gpu["bench_file"].name == "bench_quick_cuda.json" and gpu["speed"] is None
    assert report.device_of(gpu["bench"]) == "cuda"
    assert report.gpu_name(gpu) == "NVIDIA Test GPU"
    assert report.gpu_floor_table(gpu).empty
    (tmp_path / "bench_full_cuda.json").write_text(json.dumps(cuda_copy_of_recorded_cpu_file()))
    assert report.gpu_results(tmp_path)["bench_file"].name == "bench_full_cuda.json"

    (tmp_path / report.GPU_SPEED_FILE).write_text(json.dumps(synthetic_speed()))
    assert report.gpu_results(tmp_path)["speed"]["B"] == 1024
    (tmp_path / report.GPU_SPEED_FILE).write_text("{}")
    with pytest.raises(ValueError, match="speed.json"):
        report.gpu_results(tmp_path)


def test_gpu_table_beside_the_cpu_run(tmp_path):
    from benchmarks import report

    recorded = report.load(report.latest(report.RESULTS, device="cpu"))
    (tmp_path / "bench_quick_cuda.json").write_text(json.dumps(cuda_copy_of_recorded_cpu_file()))
    gpu = report.gpu_results(tmp_path)
    cols = ["fwd (ms)", "fwd+bwd (ms)", "fwd+bwd / permlib"]
    alone = report.gpu_table(gpu)
    assert list(alone.columns) == [("GPU", c) for c in cols]
    table = report.gpu_table(gpu, recorded)
    assert list(table.columns) == [(d, c) for d in ("GPU", "CPU") for c in cols]
    assert table.index.name == "method" and table.index[0] == "permlib"
    assert set(table.index) == set(report.timed_rows(recorded)["method"])
    assert table.loc["permlib", ("GPU", "fwd+bwd / permlib")] == 1.0
    # the synthetic GPU run is the CPU run renamed: the same numbers on both sides
    np.testing.assert_allclose(table["GPU"].to_numpy(), table["CPU"].to_numpy())
    target = report.speed_table(recorded, "target")
    np.testing.assert_allclose(
        table.loc["textbook loop", ("GPU", "fwd+bwd / permlib")],
        target.loc["forward+backward", "textbook loop"])
    assert table.loc["permlib", ("GPU", "fwd (ms)")] == target.loc["forward", "permlib (ms)"]
    shown = report.formatted(table, {c: ".2g×" if "/" in c[1] else ".3g" for c in table.columns})
    assert shown.loc["permlib", ("GPU", "fwd+bwd / permlib")] == "1×"
    n = report.gpu_numbers(gpu, recorded)
    assert n["gpu_device"] == "NVIDIA Test GPU" and n["gpu_file"] == "bench_quick_cuda.json"
    assert n["cpu_over_gpu_fwdbwd"] == pytest.approx(1.0)
    text = report.gpu_summary(gpu, recorded)
    assert text.startswith("**GPU: NVIDIA Test GPU.**") and "bench_quick_cuda.json" in text
    assert report.gpu_floor_summary(gpu) == ""


def test_gpu_bandwidth_floor_table(tmp_path):
    from benchmarks import report

    (tmp_path / report.GPU_SPEED_FILE).write_text(json.dumps(synthetic_speed()))
    gpu = report.gpu_results(tmp_path)
    assert gpu["bench"] is None and report.gpu_table(gpu).empty
    assert report.gpu_name(gpu) == "NVIDIA Test GPU"
    floor = report.gpu_floor_table(gpu)
    assert list(floor.index) == ["float32", "bfloat16"]
    assert floor["fwd / floor"].tolist() == [1.5, 3.0]
    assert floor["within 2×"].tolist() == ["yes", "no"]
    assert floor["host syncs (fwd)"].tolist() == [0, 1]
    n = report.gpu_numbers(gpu)
    assert (n["gpu_floor_B"], n["gpu_floor_ratio_float32"], n["gpu_hbm_tbs"]) == (1024, 1.5, 3.0)
    assert "only the bandwidth check" in report.gpu_summary(gpu)
    text = report.gpu_floor_summary(gpu)
    assert "B = 1024" in text and "3.00 times the floor in bfloat16" in text


def test_recorded_gpu_results_if_any_build_their_tables():
    """The tracked results folder: None today, or a GPU file the chapter can show."""
    from benchmarks import report

    gpu = report.gpu_results()
    if gpu is None:
        return
    cpu = report.load(report.latest(report.RESULTS))
    assert report.gpu_summary(gpu, cpu).startswith("**GPU: ")
    if gpu["bench"] is not None:
        assert report.gpu_table(gpu, cpu).index[0] == "permlib"


@pytest.mark.parametrize("case", ["fixed", "implicit"])
def test_fallback_benchmark_times_the_trained_scores_and_agrees(case):
    """benchmarks/fallback.py on one list: the recorded networks give scores that leave the
    scaling range; the absorbed fallback and the whole log loop give the same plans (and,
    with tol, the same iterations on average)."""
    from benchmarks.fallback import CASES, format_table, measure

    result = measure(case, reps=1, batch=1)
    assert result["config"]["shape"] == [10, 1, CASES[case]["n"], CASES[case]["n"]]
    assert result["extent"] > 80  # spread far beyond the scaling domain's range at tau = 1
    methods = ["absorbed", "log loop"] + (["in range"] if case == "fixed" else [])
    assert [r["method"] for r in result["timing"]] == methods
    assert result["timing"][0]["ratio_vs_absorbed"] == 1.0
    assert result["max_abs_diff"] < 1e-4
    its = result["mean_iterations"]
    assert abs(its["absorbed"] - its["log loop"]) <= 0.5
    assert "largest |P_absorbed - P_log loop|" in format_table(result)


def test_fallback_benchmark_names_a_missing_weights_file(monkeypatch, tmp_path):
    import shutil

    import benchmarks.fallback as fallback

    monkeypatch.setattr(fallback, "RESULTS", tmp_path)
    with pytest.raises(KeyError, match="sorting_table5.json"):  # no results file: no cell
        fallback.trained_scores()
    shutil.copy(Path(fallback.__file__).parent / "results" / "sorting_table5.json", tmp_path)
    with pytest.raises(FileNotFoundError, match="model.pt"):
        fallback.trained_scores()
    path = tmp_path / "artifacts" / "sorting_table5" / "method=gumbel_sinkhorn,n=250,seed=1"
    path.mkdir(parents=True)
    (path / "model.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="model.pt"):  # its SHA-256 is not the recorded one
        fallback.trained_scores()
    with pytest.raises(ValueError, match="case must be one of"):
        fallback.measure("nope")


def test_fallback_result_loads_and_a_bad_file_is_named(tmp_path):
    from benchmarks.fallback import RESULT, load

    recorded = load()
    assert set(recorded["cases"]) == {"fixed", "implicit"}
    assert load(RESULT)["cases"]["fixed"]["timing"][0]["method"] == "absorbed"
    for text in ("{not json", "[1, 2]", '{"cases": {}}'):
        bad = tmp_path / "bad.json"
        bad.write_text(text)
        with pytest.raises(ValueError, match="bad.json"):
            load(bad)


def test_ratio_rows_against_a_base_method():
    from benchmarks.timing import ratio_rows

    rows = ratio_rows({"a": [2.0, 4.0, 3.0], "b": [1.0, 1.0, 3.0]}, "a")
    assert [r["method"] for r in rows] == ["a", "b"]
    assert rows[0]["ratio_vs_a"] == 1.0 and rows[1]["ratio_vs_a"] == 0.5
    assert rows[1]["median_ratio_vs_a"] == pytest.approx(1 / 3)
    assert rows[1]["min_ms"] == 1000.0 and rows[1]["reps"] == 3
    with pytest.raises(KeyError, match="'c'"):
        ratio_rows({"a": [1.0]}, "c")


def test_cnn_chunk_benchmark_records_ratios(tmp_path):
    from benchmarks import cnn_chunk

    result = cnn_chunk.main(["--ns", "2", "--chunks", "0", "3", "--lists", "3", "--reps", "2",
                             "--out", str(tmp_path)])  # fmt: skip
    rows = {r["chunk"]: r for r in result["rows"]}
    assert set(rows) == {0, 3} and rows[0]["vs_whole"] == 1.0 and rows[3]["strips"] == 6
    assert rows[3]["ms_per_strip"] > 0 and rows[3]["vs_whole"] > 0
    saved = json.loads((tmp_path / "cnn_chunk_cpu.json").read_text())
    assert saved["rows"] == result["rows"] and "git_commit" in saved["provenance"]
    with pytest.raises(SystemExit):
        cnn_chunk.main(["--chunks", "-1", "--out", str(tmp_path)])
