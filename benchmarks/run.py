"""Run the benchmarks: ``python -m benchmarks.run --quick`` (a few minutes) or ``--full``.

Every comparison is made in one process, on the same inputs (N(0, 1) scores drawn from
``--seed``, tau = 1, loss ``sum(P * W)``), in the same dtype; methods are timed in interleaved
rounds after one warm-up call each, and the minimum and median of the rounds are reported
(the machine is shared, so only ratios within one run mean anything).

``--device cpu`` (the default) or ``--device cuda`` (where a GPU is present): inputs are made on
the CPU from the seed and moved to the device, timings synchronize the device around each call,
and peak memory is ``torch.cuda.max_memory_allocated`` on CUDA (a subprocess's resident set on
the CPU, see :mod:`benchmarks.memory`). The result file names its device,
``bench_<mode>_<device>.json`` (and a ``.png`` of :func:`benchmarks.report.figure`), so a GPU
run never overwrites the CPU one.

Where it writes: ``_build/bench/`` (git-ignored) by default, ``benchmarks/results/`` (tracked, read
by the book) only with ``--record``, or ``--out``. A run that contradicts itself is *noisy*: a
forward pass faster than its own memory-bandwidth bound, or slower than the same method's
forward+backward. Its timing targets are then not judged, and ``--record`` refuses it (the file
goes to ``_build/bench/`` and the command exits with status 1).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from benchmarks import convergence, memory
from benchmarks.ott_worker import run_ott
from benchmarks.peers import as_numpy, matching_methods, sinkhorn_methods
from benchmarks.timing import best_seconds, interleaved, summary
from permlib.testing import sinkhorn_loop

BENCH_DIR = Path(__file__).resolve().parent  # repository code: its own folder, not permlib's
RESULTS = BENCH_DIR / "results"  # tracked; the book reads it; written only with --record
SCRATCH = BENCH_DIR.parent / "_build" / "bench"  # git-ignored; the default
TARGET = {"B": 128, "N": 100, "L": 20, "dtype": "float32"}
DTYPES = {"float32": torch.float32, "float64": torch.float64}
PEER_PACKAGES = ("pygmtools", "POT", "ott-jax", "jax", "jaxlib", "seaborn", "matplotlib", "pandas")


def plan(mode: str) -> dict:
    """The sizes each section runs in ``mode`` (``tiny`` is for the harness's own tests)."""
    if mode == "tiny":
        return {
            "sinkhorn": [(2, n, 3, "float32") for n in (4, 6)] + [(2, 4, 3, "float64")],
            "memory": {"B": 2, "N": 8, "L": [2, 4]},
            "matching": [(4, 5), (2, 12)],
            "reps": 2,
            "budget_s": 1.0,
        }
    t = TARGET
    if mode == "quick":
        grid = [(t["B"], n, t["L"], "float32") for n in (10, 50, 100, 200)]
        grid += [(t["B"], t["N"], t["L"], "float64"), (1, t["N"], t["L"], "float32")]
        reps = 5
    else:
        grid = [
            (b, n, ll, d)
            for d in DTYPES
            for ll in (20, 100)
            for b in (1, 32, 128)
            for n in (10, 50, 100, 200)
        ]
        reps = 7
    return {
        "sinkhorn": grid,
        "memory": {"B": 32, "N": 100, "L": [10, 50, 200]},
        "matching": [(1024, 9), (1024, 36), (256, 100), (16, 500)],
        "reps": reps,
        # a matching call takes about a millisecond and lapx's thread pool makes its times
        # spread widely (min 0.7, median 0.9 ms at 1024 x 9^2): more rounds for a stable min
        "matching_reps": 25,
        "budget_s": 3.0 if mode == "quick" else 10.0,
    }


def copy_bandwidth(numel: int, dtype: torch.dtype, device: str) -> float:
    """Bytes per second of ``dst.copy_(src)`` (read + write) on a tensor of the given size."""
    src = torch.randn(numel, dtype=dtype, device=device)
    dst = torch.empty_like(src)
    return 2 * src.element_size() * numel / best_seconds(lambda: dst.copy_(src), 50, device)


def read_bandwidth(numel: int, dtype: torch.dtype, device: str) -> float:
    """Bytes per second of ``src.sum()`` (a pure read) on a tensor of the given size."""
    src = torch.randn(numel, dtype=dtype, device=device)
    return src.element_size() * numel / best_seconds(src.sum, 50, device)


def iterations_ms(b: int, n: int, n_iters: int, device: str) -> float:
    """Best time of the ``2 L`` batched vector-matrix products alone (permlib's iterations)."""
    k = torch.rand(b, n, n, device=device)
    vec = torch.ones(b, 1, n, device=device)
    out = torch.empty_like(vec)

    def iterations() -> None:
        for _ in range(n_iters):
            torch.bmm(vec, k.mT, out=out)
            torch.bmm(vec, k, out=out)

    return 1e3 * best_seconds(iterations, 10, device)


def slow_peers(b, n, ll, dname, mode) -> dict[str, str]:
    """Peers left out of a configuration to keep the mode's time (POT loops over the batch)."""
    t = TARGET
    if mode == "quick" and (b, n, ll) != (t["B"], t["N"], t["L"]):
        return {
            "POT": "quick mode: a Python loop over the batch, run at the target size only",
            "pygmtools": "quick mode: the slowest batched peer, run at the target size only",
        }
    if mode == "quick" and dname != t["dtype"]:
        return {"POT": "quick mode: a Python loop over the batch, run at the target only"}
    if mode == "full" and b * ll > t["B"] * t["L"]:
        return {"POT": "full mode: POT (a Python loop over the batch) skipped for B * L > 2560"}
    return {}


def bench_sinkhorn(b, n, ll, dname, device, reps, seed, mode, budget_s) -> list[dict]:
    """Rows of forward and forward+backward timings of every method on ``(b, n, n)`` inputs."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, n, n, generator=g, dtype=DTYPES[dname]).to(device)
    w = torch.randn(b, n, n, generator=g, dtype=DTYPES[dname]).to(device)
    skip = slow_peers(b, n, ll, dname, mode)
    ott = None
    if device == "cpu":  # OTT-JAX is timed in a subprocess, see benchmarks.ott_worker
        ott = run_ott(x, w, ll, 1.0, reps)
        skip["OTT-JAX"] = "not installed (pip install '.[bench]')"
    methods, skipped = sinkhorn_methods(x, w, ll, 1.0, skip=skip)
    if ott is not None:
        skipped.pop("OTT-JAX")
    ref_p = {"cols": sinkhorn_loop(x, ll), "rows": sinkhorn_loop(x.mT, ll).mT}
    ref_g = {}
    for last, xx in (("cols", x), ("rows", x.mT)):
        xg = xx.detach().requires_grad_()
        wt = w if last == "cols" else w.mT
        (gr,) = torch.autograd.grad((sinkhorn_loop(xg, ll) * wt).sum(), xg)
        ref_g[last] = gr if last == "cols" else gr.mT
    cell = {"section": "sinkhorn", "device": device, "B": b, "N": n, "L": ll, "dtype": dname}
    rows = []
    for stage in ("fwd", "fwdbwd"):
        calls = {k: getattr(m, stage) for k, m in methods.items()}
        times = interleaved(calls, reps, budget_s, device=device)
        for k, m in methods.items():
            out = as_numpy(calls[k]())
            ref = as_numpy((ref_p if stage == "fwd" else ref_g)[m.last])
            rows.append(
                {
                    **cell,
                    "stage": stage,
                    "method": k,
                    **summary(times[k]),
                    "max_abs_diff_vs_loop": float(np.abs(out.astype(np.float64) - ref).max()),
                    "order": m.last,
                }
            )
        if ott is not None:
            ref = as_numpy((ref_p if stage == "fwd" else ref_g)["rows"])
            rows.append(
                {
                    **cell,
                    "stage": stage,
                    "method": "OTT-JAX",
                    **summary(list(ott[stage])),
                    "max_abs_diff_vs_loop": float(np.abs(ott[stage + "_out"] - ref).max()),
                    "order": "rows",
                    "process": "subprocess",
                }
            )
    for k, why in skipped.items():
        rows.append({**cell, "method": k, "skipped": why})
    return rows


def bench_matching(b, n, reps, seed) -> list[dict]:
    """Rows of batched exact matching timings (CPU solvers) on ``(b, n, n)`` scores."""
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(b, n, n, generator=g)
    calls, _ = matching_methods(scores)
    times = interleaved(calls, reps, budget_s=20.0)
    s = scores.double().numpy()
    best = None
    rows = []
    for k, f in calls.items():
        perm = f()
        total = s[np.arange(b)[:, None], np.arange(n)[None, :], perm].sum(-1)
        best = total if best is None else best
        rows.append(
            {
                "section": "matching",
                "B": b,
                "N": n,
                "method": k,
                **summary(times[k]),
                "max_objective_gap": float(np.abs(total - best).max()),
            }
        )
    return rows


def parse_device(ap: argparse.ArgumentParser, value: str) -> torch.device:
    """``--device``: ``cpu`` or an available ``cuda`` device, else a usage error."""
    try:
        dev = torch.device(value)
    except RuntimeError as err:
        ap.error(f"--device: {err}")
    if dev.type not in ("cpu", "cuda"):
        ap.error(f"--device must be cpu or cuda, got {value!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: no CUDA device is available here")
    return dev


def write_result(result: dict, name: str, *, out: Path | None, record: bool, results: Path,
                 scratch: Path) -> Path:  # fmt: skip
    """Write ``result`` as ``<folder>/<name>.json`` and return the path: ``out`` if given, else
    ``results`` (tracked) with ``record``, else ``scratch`` (git-ignored)."""
    folder = out if out is not None else (results if record else scratch)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    path.write_text(json.dumps(result, indent=1))
    return path


def provenance_info(argv: list[str], seed: int, mode: str, device: str,
                    script: str = "benchmarks.run",
                    packages: tuple[str, ...] = PEER_PACKAGES) -> dict:  # fmt: skip
    """Provenance of the run of ``python -m <script> <argv>``: command, commit of this
    repository, versions (the peers' included), machine and its load, device."""
    from permlib.experiments.harness.provenance import git_commit, provenance

    info = provenance(seed=seed, mode=mode, device=device)
    info["command"] = shlex.join(["python", "-m", script, *argv])
    info["git_commit"] = git_commit(BENCH_DIR.parent)  # this checkout, benchmarks/ included
    info["device"] = device
    for pkg in packages:
        try:
            info["versions"][pkg] = version(pkg)
        except PackageNotFoundError:
            info["versions"][pkg] = None
    info["machine"]["load_average_1_5_15_min"] = list(os.getloadavg())  # at the end of the run
    return info


def ratio_table(rows: list[dict]) -> str:
    """One line per (config, stage): permlib's min time and each peer's min time / permlib's."""
    peers = ["textbook loop", "pygmtools", "POT", "OTT-JAX"]
    head = f"{'device':6} {'B':>4} {'N':>4} {'L':>4} {'dtype':7} {'stage':6} {'permlib ms':>10}"
    head += "".join(f" {p:>14}" for p in peers)
    lines = [head, "-" * len(head)]
    keyed = {}
    for r in rows:
        if r["section"] == "sinkhorn" and "skipped" not in r:
            keyed.setdefault((r["device"], r["B"], r["N"], r["L"], r["dtype"], r["stage"]), {})[
                r["method"]
            ] = r["min_ms"]
    for (dev, b, n, ll, d, st), m in keyed.items():
        base = m["permlib"]
        line = f"{dev:6} {b:>4} {n:>4} {ll:>4} {d:7} {st:6} {base:>10.2f}"
        line += "".join(f" {m[p] / base:>13.1f}x" if p in m else f" {'-':>14}" for p in peers)
        lines.append(line)
    return "\n".join(lines)


def targets(rows: list[dict], bw_estimate_ms: float | None, device: str = "cpu") -> dict:
    """The library's goals at the target configuration on ``device``: value, goal, met.

    Each entry has ``kind`` (``time``, ``accuracy`` or ``memory``); :func:`judge` later sets
    ``met`` to None for the timing goals of a noisy run.
    """
    t = TARGET
    sel = {
        (r["stage"], r["method"]): r
        for r in rows
        if r["section"] == "sinkhorn"
        and "skipped" not in r
        and r["device"] == device
        and (r["B"], r["N"], r["L"], r["dtype"]) == (t["B"], t["N"], t["L"], t["dtype"])
    }
    out: dict = {}
    if ("fwdbwd", "permlib") in sel:
        ours = sel["fwdbwd", "permlib"]
        for peer, goal in (("pygmtools", 2.5), ("textbook loop", 1.5)):
            if (("fwdbwd", peer)) in sel:
                ratio = sel["fwdbwd", peer]["min_ms"] / ours["min_ms"]
                out[f"fwdbwd speed-up vs {peer}"] = {
                    "ratio": ratio,
                    "goal": goal,
                    "met": ratio >= goal,
                    "kind": "time",
                }
        diffs = [sel[s, "permlib"]["max_abs_diff_vs_loop"] for s in ("fwd",)]
        if ("fwd", "pygmtools") in sel:
            diffs.append(sel["fwd", "pygmtools"]["max_abs_diff_vs_loop"])
        out["max |P - P_loop| (permlib, pygmtools)"] = {
            "value": max(diffs),
            "goal": 1e-5,
            "met": max(diffs) <= 1e-5,
            "kind": "accuracy",
        }
        if bw_estimate_ms:
            r = sel["fwd", "permlib"]["min_ms"] / bw_estimate_ms
            out["fwd / bandwidth estimate"] = {
                "ratio": r,
                "goal": 2.0,
                "met": r <= 2.0,
                "kind": "time",
            }
    mem = [r for r in rows if r["section"] == "memory"]
    imp = {r["L"]: r["peak_bytes"] for r in mem if r["method"] == "permlib implicit"}
    unr = {r["L"]: r["peak_bytes"] for r in mem if r["method"] == "permlib unroll"}
    if len(imp) > 1 and None not in imp.values() and imp[min(imp)] > 0:
        lo, hi = min(imp), max(imp)
        out[f"implicit peak memory L={hi} / L={lo}"] = {
            "ratio": imp[hi] / imp[lo],
            "goal": 1.2,
            "met": imp[hi] / imp[lo] <= 1.2,
            "kind": "memory",
        }
    if len(unr) > 1 and None not in unr.values() and unr[min(unr)] > 0:
        lo, hi = min(unr), max(unr)
        out[f"unroll peak memory L={hi} / L={lo}"] = {
            "ratio": unr[hi] / unr[lo],
            "goal": "> 1",
            "met": unr[hi] > unr[lo],
            "kind": "memory",
        }
    match = {}
    for r in rows:
        if r["section"] == "matching":
            match.setdefault((r["B"], r["N"]), {})[r["method"]] = r["min_ms"]
    for (b, n), m in match.items():
        fastest = min(v for k, v in m.items() if k != "permlib")
        out[f"matching {b}x{n}^2: fastest peer / permlib"] = {
            "ratio": fastest / m["permlib"],
            "goal": 1.0,
            "met": fastest >= m["permlib"],
            "kind": "time",
        }
    return out


def bench_convergence(mode: str, device: str, reps: int, seed: int) -> dict:
    """:func:`benchmarks.convergence.measure` at the target configuration (tiny sizes in tiny
    mode), with OTT-JAX's implicit forward+backward timed on the same inputs (CPU only)."""
    t = TARGET if mode != "tiny" else {"B": 2, "N": 6, "L": 3, "dtype": "float32"}
    iters = convergence.MEMORY_ITERS if mode != "tiny" else (2, 4)
    out = convergence.measure(
        device, t["B"], t["N"], t["L"], DTYPES[t["dtype"]], reps, seed, memory_iters=iters
    )
    out["ott_implicit"] = None
    if torch.device(device).type == "cpu":
        g = torch.Generator().manual_seed(seed)  # the inputs measure() draws
        x = torch.randn(t["B"], t["N"], t["N"], generator=g, dtype=DTYPES[t["dtype"]])
        w = torch.randn(t["B"], t["N"], t["N"], generator=g, dtype=DTYPES[t["dtype"]])
        try:
            ott = run_ott(x, w, t["L"], 1.0, reps, implicit=True, stages=("fwdbwd",))
        except subprocess.CalledProcessError as err:  # e.g. OTT's adjoint solve fails at tiny L
            lines = [ln for ln in (err.stderr or b"").decode(errors="replace").splitlines() if ln]
            out["ott_implicit_failed"] = next(
                (ln.strip() for ln in lines if "Error: " in ln), lines[-1] if lines else repr(err)
            )[:300]
        else:
            if ott is not None:
                out["ott_implicit"] = summary(list(ott["fwdbwd"]))
    return out


def convergence_targets(conv: dict) -> dict:
    """Goals of the convergence section: the report and the tolerance stop cost at most 1.3x the
    fixed path (fwd+bwd), the implicit backward is at least as fast as OTT-JAX's implicit one,
    and its peak memory is at most the unrolled backward's from L = 20 on."""
    out: dict = {}
    c = conv["config"]
    size = f"B={c['B']} N={c['N']} L={c['L']}"
    ms = {r["method"]: r for r in conv["timing"]}
    for k in ("tol", "return_info"):
        if k in ms:
            r = ms[k]["ratio_vs_fixed"]
            out[f"fwdbwd {k} / fixed ({size})"] = {
                "ratio": r,
                "goal": 1.3,
                "met": r <= 1.3,
                "kind": "time",
            }
    if conv.get("ott_implicit") and "implicit" in ms:
        r = conv["ott_implicit"]["min_ms"] / ms["implicit"]["min_ms"]
        out[f"fwdbwd implicit: OTT-JAX implicit / permlib ({size})"] = {
            "ratio": r,
            "goal": 1.0,
            "met": r >= 1.0,
            "kind": "time",
        }
    mem = [
        r for r in conv["memory"] if r["ratio_implicit_vs_unroll"] is not None and r["L"] >= 20
    ]
    if mem:
        worst = max(mem, key=lambda r: r["ratio_implicit_vs_unroll"])
        out[f"implicit / unroll peak memory, L >= 20 (worst: L={worst['L']})"] = {
            "ratio": worst["ratio_implicit_vs_unroll"],
            "goal": 1.0,
            "met": worst["ratio_implicit_vs_unroll"] <= 1.0,
            "kind": "memory",
        }
    return out


def contradictions(rows: list[dict], bandwidth: dict | None, device: str = "cpu") -> list[str]:
    """What makes a run noisy: timings that contradict each other (empty for a quiet run).

    - a method's forward slower than its own forward+backward in one configuration;
    - ``permlib``'s forward at the target configuration faster than the time its bytes take at
      the fastest memory rate measured in the same run (copy or read), i.e. faster than its own
      bandwidth bound (``bandwidth`` as in the result file; None skips this check).
    """
    found = []
    best: dict[tuple, dict[str, float]] = {}
    for r in rows:
        if r.get("section") == "sinkhorn" and "min_ms" in r and r.get("device") == device:
            key = (r["method"], r["B"], r["N"], r["L"], r["dtype"])
            best.setdefault(key, {})[r["stage"]] = r["min_ms"]
    for (method, b, n, ll, d), st in best.items():
        if "fwd" in st and "fwdbwd" in st and st["fwd"] > st["fwdbwd"]:
            found.append(
                f"{method} B={b} N={n} L={ll} {d}: forward {st['fwd']:.3g} ms slower than "
                f"forward+backward {st['fwdbwd']:.3g} ms"
            )
    t = TARGET
    fwd = best.get(("permlib", t["B"], t["N"], t["L"], t["dtype"]), {}).get("fwd")
    if bandwidth and fwd is not None:
        rate = max(bandwidth.get("copy_bytes_per_s", 0.0), bandwidth.get("read_bytes_per_s", 0.0))
        if rate > 0:
            bound_ms = 1e3 * t["L"] * bandwidth["bytes_per_iteration"] / rate
            if fwd < bound_ms:
                found.append(
                    f"permlib forward at the target ({fwd:.3g} ms) faster than its bandwidth "
                    f"bound ({bound_ms:.3g} ms at the fastest rate measured, "
                    f"{rate / 1e9:.0f} GB/s)"
                )
    return found


def judge(goals: dict, noise: list[str]) -> dict:
    """``goals`` with a ``status`` each; a noisy run's timing goals are not judged (met None)."""
    out = {}
    for name, v in goals.items():
        v = dict(v)
        if noise and v.get("kind") == "time":
            v["met"] = None
            v["status"] = "not judged: noisy run"
        else:
            v["status"] = "met" if v["met"] else "missed"
        out[name] = v
    return out


def bandwidth_info(device: str) -> dict:
    """The memory-bandwidth estimate of the forward at the target configuration on ``device``."""
    t = TARGET
    numel = t["B"] * t["N"] ** 2
    bw = copy_bandwidth(numel, torch.float32, device)
    bytes_per_iter = 2 * numel * 4  # each iteration reads the N x N matrix twice, at least
    read_bw = read_bandwidth(numel, torch.float32, device)
    return {
        "copy_bytes_per_s": bw,
        "bytes_per_iteration": bytes_per_iter,
        "fwd_estimate_ms": 1e3 * t["L"] * bytes_per_iter / bw,
        "how": "L * (2 reads of the B x N x N float32 matrix) / copy bandwidth measured "
        "on a tensor of that size",
        # context for the estimate: reads alone run slower than copy's read+write count,
        # and permlib's iterations are 2 L batched vector-matrix products
        "read_bytes_per_s": read_bw,
        "fwd_estimate_at_read_bandwidth_ms": 1e3 * t["L"] * bytes_per_iter / read_bw,
        "iterations_alone_ms": iterations_ms(t["B"], t["N"], t["L"], device),
    }


def report(result: dict) -> None:
    """Print the ratio table, skipped peers, bandwidth, memory, matching, targets and noise."""
    rows, t, bw = result["rows"], result["target_config"], result["bandwidth"]
    print(
        f"\nSinkhorn on {result['device']}, min times; peer columns are (peer min) / "
        "(permlib min), > 1: permlib faster (tau = 1, loss sum(P*W))"
    )
    print(ratio_table(rows))
    skipped = {r["method"]: r["skipped"] for r in rows if "skipped" in r}
    for k, why in skipped.items():
        print(f"  skipped {k}: {why}")
    print(
        f"\nmemory-bandwidth estimate (B={t['B']}, N={t['N']}, L={t['L']}, float32): "
        f"{bw['bytes_per_iteration'] / 2**20:.1f} MiB per iteration / "
        f"{bw['copy_bytes_per_s'] / 1e9:.1f} GB/s copy = {bw['fwd_estimate_ms']:.2f} ms for the "
        f"forward\n  the same bytes at the read bandwidth of a sum "
        f"({bw['read_bytes_per_s'] / 1e9:.1f} GB/s): {bw['fwd_estimate_at_read_bandwidth_ms']:.2f}"
        f" ms; the {2 * t['L']} batched vector-matrix products of the iterations alone: "
        f"{bw['iterations_alone_ms']:.2f} ms"
    )
    print("\npeak memory of forward+backward (MiB):")
    for r in rows:
        if r["section"] == "memory":
            pk = "n/a" if r["peak_bytes"] is None else f"{r['peak_bytes'] / 2**20:.1f}"
            print(f"  {r['method']:18} B={r['B']} N={r['N']} L={r['L']:<4} {pk}")
    match = [r for r in rows if r["section"] == "matching"]
    if match:
        print("\nmatching, min ms (median):")
    for r in match:
        print(
            f"  {r['B']:>5}x{r['N']:<3}^2 {r['method']:14} {r['min_ms']:9.2f} "
            f"({r['median_ms']:.2f})  objective gap {r['max_objective_gap']:.1e}"
        )
    if result.get("convergence"):
        print()
        print(convergence.format_table(result["convergence"]))
        ott = result["convergence"].get("ott_implicit")
        if ott:
            print(f"OTT-JAX implicit fwd+bwd: {ott['min_ms']:.2f} ms (min of {ott['reps']})")
        elif result["convergence"].get("ott_implicit_failed"):
            print(f"OTT-JAX implicit failed: {result['convergence']['ott_implicit_failed']}")
    print("\ntargets:")
    for k, v in result["targets"].items():
        val = v.get("ratio", v.get("value"))
        flag = {"met": "met ", "missed": "MISS"}.get(v["status"], "????")
        print(f"  {flag} {k}: {val:.3g} (goal {v['goal']}; {v['status']})")
    if result["noise"]:
        print("\nNOISY RUN, timing targets not judged:")
        for line in result["noise"]:
            print(f"  {line}")


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmarks; returns the result (also written as JSON, see the module docstring)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_const", const="quick", dest="mode")
    g.add_argument("--full", action="store_const", const="full", dest="mode")
    g.add_argument(
        "--tiny",
        action="store_const",
        const="tiny",
        dest="mode",
        help="seconds; for the harness's tests",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda (where present)")
    ap.add_argument(
        "--record",
        action="store_true",
        help="write to benchmarks/results/ (tracked, read by the book) instead of "
        "_build/bench/ (git-ignored); refused for a noisy run",
    )
    ap.add_argument("--out", type=Path, default=None, help="folder for the JSON and figure")
    ap.add_argument("--no-figure", action="store_true")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory section")
    ap.add_argument(
        "--no-convergence",
        action="store_true",
        help="skip the tol / return_info / implicit section (benchmarks.convergence)",
    )
    args = ap.parse_args(argv)
    dev = parse_device(ap, args.device)
    device = str(dev)
    mode = args.mode or "quick"
    p = plan(mode)
    start = time.perf_counter()
    tasks = [("sinkhorn", c) for c in p["sinkhorn"]]
    if not args.no_memory:
        tasks += [("memory", m) for m in memory.METHODS]
    if dev.type == "cpu":  # scipy and lapx are CPU solvers
        tasks += [("matching", c) for c in p["matching"]]
    if not args.no_convergence:
        tasks.append(("convergence", None))
    rows: list[dict] = []
    conv = None
    for section, c in tqdm(tasks, desc=f"benchmarks ({mode}, {device})", file=sys.stderr):
        if section == "sinkhorn":
            rows += bench_sinkhorn(*c, device, p["reps"], args.seed, mode, p["budget_s"])
        elif section == "memory":
            m = p["memory"]
            peaks = memory.measure(c, m["B"], m["N"], m["L"], args.seed, device=device)
            rows += [
                {
                    "section": "memory",
                    "device": device,
                    "method": c,
                    "B": m["B"],
                    "N": m["N"],
                    "L": ll,
                    "dtype": "float32",
                    "peak_bytes": pk,
                    "how": memory.HOW[dev.type],
                }
                for ll, pk in zip(m["L"], peaks, strict=True)
            ]
        elif section == "convergence":
            conv = bench_convergence(mode, device, p["reps"], args.seed)
        else:
            rows += bench_matching(*c, p.get("matching_reps", p["reps"]), args.seed)

    bandwidth = bandwidth_info(device)
    noise = contradictions(rows, bandwidth, device)
    result = {
        "provenance": provenance_info(argv, args.seed, mode, device),
        "device": device,
        "target_config": TARGET,
        "bandwidth": bandwidth,
        "rows": rows,
        "noise": noise,
        "quiet": not noise,
        "convergence": conv,
        "targets": judge(
            targets(rows, bandwidth["fwd_estimate_ms"], device)
            | (convergence_targets(conv) if conv else {}),
            noise,
        ),
    }
    result["provenance"]["wall_s"] = time.perf_counter() - start
    report(result)

    out = args.out
    if out is None:
        out = RESULTS if args.record and not noise else SCRATCH
    result["record_refused"] = bool(args.record and noise and args.out is None)
    if result["record_refused"]:
        print(f"\nnot recorded in {RESULTS}: the run is noisy (see above); rerun it quietly")
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"bench_{mode}_{dev.type}.json"
    path.write_text(json.dumps(result, indent=1))
    print(f"\nwrote {path}")
    if not args.no_figure:
        import matplotlib.pyplot as plt

        from benchmarks.report import figure

        fig = figure(result)
        fig.savefig(path.with_suffix(".png"), dpi=150)
        plt.close(fig)
        print(f"wrote {path.with_suffix('.png')}")
    return result


if __name__ == "__main__":
    sys.exit(1 if main().get("record_refused") else 0)
