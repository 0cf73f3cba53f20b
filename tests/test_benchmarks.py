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
    monkeypatch.setattr(run, "SCRATCH", tmp_path / "scratch")
    monkeypatch.setattr(run, "RESULTS", tmp_path / "results")
    result = run.main(["--tiny", "--no-memory", "--no-figure"])
    assert (tmp_path / "scratch" / "bench_tiny_cpu.json").exists()
    assert not (tmp_path / "results").exists()
    assert not result["record_refused"]
    assert _git_status("benchmarks") == before


def test_record_writes_results_only_for_a_quiet_run(monkeypatch, tmp_path):
    import benchmarks.run as run

    monkeypatch.setattr(run, "run_ott", lambda *a: None)
    monkeypatch.setattr(run, "SCRATCH", tmp_path / "scratch")
    monkeypatch.setattr(run, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(run, "contradictions", lambda rows, bw, device: [])
    assert not run.main(["--tiny", "--no-memory", "--no-figure", "--record"])["record_refused"]
    assert (tmp_path / "results" / "bench_tiny_cpu.json").exists()
    (tmp_path / "results" / "bench_tiny_cpu.json").unlink()
    monkeypatch.setattr(run, "contradictions", lambda rows, bw, device: ["fwd slower than bwd"])
    result = run.main(["--tiny", "--no-memory", "--no-figure", "--record"])
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
    assert result["provenance"]["machine"]["cuda"]
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
