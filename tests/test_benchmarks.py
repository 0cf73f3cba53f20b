"""The benchmark harness runs end to end at tiny sizes (no timing assertions), so it cannot rot."""

import json

import numpy as np
import pytest
import torch

from benchmarks.peers import as_numpy, matching_methods, sinkhorn_methods
from benchmarks.textbook import log_sinkhorn_loop
from permlib import log_sinkhorn


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
    data = json.loads((tmp_path / "bench_tiny.json").read_text())
    assert "git_commit" in data["provenance"]
    for key in ("command", "seed", "versions", "machine", "wall_s"):
        assert key in data["provenance"]
    sections = {r["section"] for r in data["rows"]}
    assert {"sinkhorn", "memory", "matching"} <= sections
    timed = [r for r in data["rows"] if "min_ms" in r]
    assert timed and all(r["min_ms"] <= r["median_ms"] for r in timed)
    assert "bandwidth" in data and data["bandwidth"]["fwd_estimate_ms"] > 0
    bw = data["bandwidth"]
    assert bw["read_bytes_per_s"] > 0 and bw["iterations_alone_ms"] > 0
    assert bw["fwd_estimate_at_read_bandwidth_ms"] > 0
    assert (tmp_path / "bench_tiny.png").stat().st_size > 1000
    assert result["targets"] == data["targets"]


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
