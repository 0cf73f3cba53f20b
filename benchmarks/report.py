"""Tables, numbers and the figure of a benchmark results file, for the book and the harness.

Every function takes ``bench``, the dict that :mod:`benchmarks.run` writes as
``bench_<mode>_<device>.json``, and returns a pandas DataFrame, a dict of numbers, or a
matplotlib figure; none of them prints. The performance chapter (``notebooks/performance.md``)
shows these tables and glues these numbers into its prose, and ``benchmarks.run`` saves
:func:`figure` next to the JSON file. Result files written before the harness recorded the device
(or the noise checks) read as CPU runs whose targets were judged.

Conventions: times are the minimum over rounds in milliseconds; speed columns of peers are the
ratio (peer time) / (permlib time), above 1 when permlib is faster; memory is in MiB (2^20 B).

The relaxations chapter reads the cost benchmark of one training step per relaxation
(:mod:`benchmarks.relaxations_cost`, ``relaxations_cost_<device>.json``) with
:func:`relaxations_cost` (a DataFrame), :func:`relaxations_cost_table`,
:func:`plot_relaxations_cost` (one panel on given axes) and :func:`relaxations_cost_figure`.

The GPU path: :func:`gpu_results` finds the GPU results recorded in ``benchmarks/results/`` (a
``bench_<mode>_cuda.json`` of ``benchmarks.run --device cuda`` and ``gpu_speed_cuda.json``, the
bandwidth-floor check of ``benchmarks/gpu_check.sh``), or None; :func:`gpu_table` puts the
GPU's :func:`method_table` beside the CPU's, :func:`gpu_floor_table` tabulates the floor check,
and :func:`gpu_summary` and :func:`gpu_floor_summary` say each in one paragraph
(:data:`GPU_NOT_MEASURED` where nothing is recorded).
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

__all__ = [
    "GPU_NOT_MEASURED",
    "PEERS",
    "STAGES",
    "accuracy_table",
    "bandwidth_numbers",
    "convergence_tables",
    "figure",
    "formatted",
    "gpu_floor_summary",
    "gpu_floor_table",
    "gpu_name",
    "gpu_numbers",
    "gpu_results",
    "gpu_summary",
    "gpu_table",
    "latest",
    "load",
    "matching_table",
    "memory_slopes",
    "memory_table",
    "method_table",
    "numbers",
    "peer_wins",
    "plot_relaxations_cost",
    "provenance_table",
    "relaxations_cost",
    "relaxations_cost_figure",
    "relaxations_cost_table",
    "skipped_table",
    "speed_table",
    "targets_table",
    "timed_rows",
]

PEERS = ["textbook loop", "pygmtools", "POT", "OTT-JAX"]
STAGES = {"fwd": "forward", "fwdbwd": "forward+backward"}
CONFIG = ["device", "B", "N", "L", "dtype"]
RESULTS = Path(__file__).resolve().parent / "results"


def formatted(df: pd.DataFrame, spec: str | dict[str, str], missing: str = "–") -> pd.DataFrame:
    """A copy of ``df`` with its numbers as text: ``spec`` is a format spec (``".2f"``) for every
    column or ``{column: spec}`` (columns not named are kept); a trailing ``×`` in a spec is
    appended to the number (``".2g×"``), and missing values read ``missing``."""
    specs = spec if isinstance(spec, dict) else dict.fromkeys(df.columns, spec)
    out = df.copy()
    for col, sp in specs.items():
        if col not in out:
            raise KeyError(f"spec names column {col!r}, which the table does not have")
        suffix = "×" if sp.endswith("×") else ""
        fmt = sp.removesuffix("×")
        out[col] = [missing if pd.isna(x) else f"{x:{fmt}}{suffix}" for x in out[col]]
    return out


def load(path: str | Path) -> dict:
    """The results dict of a ``bench_<mode>_<device>.json`` file."""
    bench = json.loads(Path(path).read_text())
    missing = {"provenance", "target_config", "rows", "targets"} - set(bench)
    if missing:
        raise ValueError(f"{path}: not a benchmarks.run results file (no {sorted(missing)})")
    return bench


def latest(folder: str | Path, device: str = "cpu") -> Path:
    """The file to show for ``device``: the full run's if there is one, else the quick run's."""
    folder = Path(folder)
    for mode in ("full", "quick"):
        path = folder / f"bench_{mode}_{device}.json"
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"no bench_full_{device}.json or bench_quick_{device}.json in {folder}: run "
        f"`python -m benchmarks.run --quick --device {device} --record`"
    )


def device_of(bench: dict) -> str:
    """The device the run measured (``cpu`` for files from before the device was recorded)."""
    return bench.get("device", bench["provenance"].get("device", "cpu"))


def target_key(bench: dict) -> tuple:
    """``(device, B, N, L, dtype)`` of the target configuration."""
    t = bench["target_config"]
    return (device_of(bench), t["B"], t["N"], t["L"], t["dtype"])


def timed_rows(bench: dict) -> pd.DataFrame:
    """The Sinkhorn rows that were timed: one per (configuration, stage, method)."""
    rows = [r for r in bench["rows"] if r.get("section") == "sinkhorn" and "skipped" not in r]
    cols = [*CONFIG, "stage", "method", "min_ms", "median_ms", "reps", "max_abs_diff_vs_loop"]
    return pd.DataFrame(rows, columns=cols)


def provenance_table(bench: dict) -> pd.DataFrame:
    """Where the numbers come from: command, commit, date, machine, device, load, versions."""
    prov, machine = bench["provenance"], bench["provenance"]["machine"]
    t = bench["target_config"]
    load_avg = machine.get("load_average_1_5_15_min")
    versions = ", ".join(f"{k} {v or '(not installed)'}" for k, v in prov["versions"].items())
    items = {
        "command": f"{prov['command']} (seed {prov['seed']})",
        "wall time": f"{prov['wall_s']:.0f} s",
        "git commit": prov["git_commit"],
        "date": prov["timestamp"],
        "machine": f"{machine['platform']}, {machine['cpu_count']} CPU cores, "
        f"{machine['torch_threads']} torch threads",
        "device": machine.get("device") or device_of(bench),
        "load average": "n/a"
        if load_avg is None
        else ", ".join(f"{x:.2f}" for x in load_avg) + " (1, 5, 15 min, at the end of the run)",
        "quiet run": "yes"
        if bench.get("quiet", True)
        else "no: " + "; ".join(bench.get("noise", [])),
        "target": f"B = {t['B']}, N = {t['N']}, L = {t['L']}, {t['dtype']}",
        "versions": versions,
    }
    return pd.DataFrame({"": list(items), "value": list(items.values())}).set_index("")


def _ratios(df: pd.DataFrame) -> pd.DataFrame:
    """permlib's min ms and each peer's over it, indexed by configuration and stage label."""
    wide = df.pivot_table(index=[*CONFIG, "stage"], columns="method", values="min_ms")
    if "permlib" not in wide:
        return pd.DataFrame(columns=[*CONFIG, "stage", "permlib (ms)", *PEERS])
    out = pd.DataFrame({"permlib (ms)": wide["permlib"]})
    for peer in PEERS:
        out[peer] = wide[peer] / wide["permlib"] if peer in wide else float("nan")
    out = out.reset_index()
    out["_order"] = out["stage"].map({k: i for i, k in enumerate(STAGES)})
    out["stage"] = out["stage"].map(STAGES)
    return out.sort_values([*CONFIG, "_order"]).drop(columns="_order").reset_index(drop=True)


def speed_table(bench: dict, which: str = "target") -> pd.DataFrame:
    """permlib's min time and each peer's time over it, per configuration and stage.

    ``which``: ``"target"`` (the target configuration), ``"across_n"`` (every N at the target's
    device, B, L and dtype) or ``"others"`` (every other configuration of the run).
    """
    if which not in ("target", "across_n", "others"):
        raise ValueError(f"which must be 'target', 'across_n' or 'others', got {which!r}")
    df = timed_rows(bench)
    dev, b, n, ll, dt = target_key(bench)
    same = (df.device == dev) & (df.B == b) & (df.L == ll) & (df.dtype == dt)
    sel = {"target": same & (df.N == n), "across_n": same, "others": ~same}[which]
    keep = {"target": ["stage"], "across_n": ["N", "stage"], "others": [*CONFIG, "stage"]}[which]
    return _ratios(df[sel]).set_index(keep)[["permlib (ms)", *PEERS]]


def skipped_table(bench: dict) -> pd.DataFrame:
    """Peers left out of configurations, with the harness's reason and where."""
    rows = [r for r in bench["rows"] if r.get("section") == "sinkhorn" and "skipped" in r]
    groups: dict[tuple[str, str], list[str]] = {}
    for r in rows:
        where = f"B={r['B']} N={r['N']} L={r['L']} {r['dtype']}"
        groups.setdefault((r["method"], r["skipped"]), []).append(where)
    return pd.DataFrame(
        [
            {"method": m, "reason": why, "configurations": len(w), "for example": w[0]}
            for (m, why), w in groups.items()
        ],
        columns=["method", "reason", "configurations", "for example"],
    )


def accuracy_table(bench: dict) -> pd.DataFrame:
    """Largest entry-wise difference from the textbook loop at the target, per method and stage."""
    df = timed_rows(bench)
    df = df[[tuple(r) == target_key(bench) for r in df[CONFIG].itertuples(index=False)]]
    wide = df.pivot_table(index="method", columns="stage", values="max_abs_diff_vs_loop")
    order = [m for m in ["permlib", *PEERS] if m in wide.index]
    return wide.rename(columns=STAGES).loc[order, [s for s in STAGES.values() if s in wide.rename(
        columns=STAGES)]]


def memory_table(bench: dict) -> pd.DataFrame:
    """Peak memory of one forward+backward in MiB: one row per L, one column per method."""
    rows = [r for r in bench["rows"] if r.get("section") == "memory"]
    if not rows:
        return pd.DataFrame()
    df = pd.DataFrame(rows)
    df["MiB"] = df["peak_bytes"].astype(float) / 2**20
    methods = list(dict.fromkeys(df["method"]))
    return df.pivot_table(index="L", columns="method", values="MiB", dropna=False)[methods]


def memory_slopes(bench: dict) -> pd.DataFrame:
    """Extra memory per iteration (slope between the smallest and largest L) of each method.

    Also expressed in the units the chapter's exercise asks for: ``N x N`` matrices of the batch
    for every method, and length-N vectors of the batch.
    """
    rows = [r for r in bench["rows"] if r.get("section") == "memory" and r["peak_bytes"]]
    out = []
    for method in dict.fromkeys(r["method"] for r in rows):
        pk = {r["L"]: r for r in rows if r["method"] == method}
        if len(pk) < 2:
            continue
        lo, hi = min(pk), max(pk)
        b, n = pk[lo]["B"], pk[lo]["N"]
        slope = (pk[hi]["peak_bytes"] - pk[lo]["peak_bytes"]) / (hi - lo)
        out.append(
            {
                "method": method,
                "KiB per iteration": slope / 1024,
                "N x N matrices": slope / (b * n * n * 4),
                "length-N vectors": slope / (b * n * 4),
                f"peak L={hi} / L={lo}": pk[hi]["peak_bytes"] / pk[lo]["peak_bytes"],
            }
        )
    return pd.DataFrame(out).set_index("method") if out else pd.DataFrame()


def matching_table(bench: dict) -> pd.DataFrame:
    """Min ms of each batched matching method per batch, and the largest objective gap."""
    rows = [r for r in bench["rows"] if r.get("section") == "matching"]
    if not rows:
        return pd.DataFrame()
    df = pd.DataFrame(rows)
    df["batch"] = [f"{b} × {n}²" for b, n in zip(df.B, df.N, strict=True)]
    order = list(dict.fromkeys(df["batch"]))
    methods = list(dict.fromkeys(df["method"]))
    wide = df.pivot_table(index="batch", columns="method", values="min_ms")[methods]
    wide["gap"] = df.groupby("batch")["max_objective_gap"].max()
    return wide.loc[order]


def convergence_tables(bench: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The convergence section (:mod:`benchmarks.convergence`): forward+backward min ms of the
    fixed path, ``tol``, ``return_info`` and the implicit backward, each over the fixed path,
    with OTT-JAX's implicit backward where it ran; and unrolled vs implicit peak memory (MB) per
    L. Two empty frames for a results file without the section."""
    conv = bench.get("convergence")
    if not conv:
        return pd.DataFrame(), pd.DataFrame()
    timing = pd.DataFrame(conv["timing"]).set_index("method")
    timing = timing.rename(columns={"min_ms": "min (ms)", "ratio_vs_fixed": "/ fixed"})
    ott = conv.get("ott_implicit")
    if ott:
        fixed = timing.loc["fixed", "min (ms)"]
        timing.loc["OTT-JAX implicit"] = [ott["min_ms"], ott["min_ms"] / fixed]
    memory = pd.DataFrame(conv["memory"])
    if len(memory):
        memory = memory.set_index("L").rename(
            columns={"unroll_mb": "unroll (MB)", "implicit_mb": "implicit (MB)",
                     "ratio_implicit_vs_unroll": "implicit / unroll"}
        )
    return timing, memory


def targets_table(bench: dict) -> pd.DataFrame:
    """The library's goals: value, goal, and met / missed / not judged (noisy run)."""
    rows = []
    for name, v in bench["targets"].items():
        status = v.get("status") or ("met" if v["met"] else "missed")
        rows.append(
            {
                "target": name,
                "ours": f"{v.get('ratio', v.get('value')):.3g}",
                "goal": str(v["goal"]),
                "status": status,
            }
        )
    return pd.DataFrame(rows, columns=["target", "ours", "goal", "status"]).set_index("target")


def peer_wins(bench: dict) -> pd.DataFrame:
    """Every (configuration, stage, peer) where the peer was faster than permlib, fastest first."""
    df = _ratios(timed_rows(bench))
    long = df.melt(
        id_vars=[*CONFIG, "stage"], value_vars=PEERS, var_name="peer", value_name="peer / permlib"
    )
    long = long[long["peer / permlib"] < 1]
    return long.sort_values("peer / permlib").reset_index(drop=True)


def bandwidth_numbers(bench: dict) -> dict[str, float]:
    """The forward against the memory-bandwidth estimate, at the target configuration."""
    bw, t = bench["bandwidth"], bench["target_config"]
    fwd = speed_table(bench, "target").loc[STAGES["fwd"], "permlib (ms)"]
    est = bw["fwd_estimate_ms"]
    out = {
        "k_mib": t["B"] * t["N"] ** 2 * 4 / 2**20,
        "k_mb": t["B"] * t["N"] ** 2 * 4 / 1e6,
        "iter_mib": bw["bytes_per_iteration"] / 2**20,
        "fwd_mb": t["L"] * bw["bytes_per_iteration"] / 1e6,
        "copy_gbs": bw["copy_bytes_per_s"] / 1e9,
        "estimate_ms": est,
        "fwd_ms": float(fwd),
        "fwd_over_estimate": float(fwd) / est,
        "goal": bench["targets"].get("fwd / bandwidth estimate", {}).get("goal", 2.0),
        "half_steps": 2 * t["L"],
    }
    if "read_bytes_per_s" in bw:
        out |= {
            "read_gbs": bw["read_bytes_per_s"] / 1e9,
            "read_over_copy": bw["read_bytes_per_s"] / bw["copy_bytes_per_s"],
            "read_estimate_ms": bw["fwd_estimate_at_read_bandwidth_ms"],
        }
    if "iterations_alone_ms" in bw:
        alone = bw["iterations_alone_ms"]
        out |= {
            "alone_ms": alone,
            "alone_over_estimate": alone / est,
            "alone_share_of_fwd": alone / float(fwd),
        }
    return out


def numbers(bench: dict) -> dict[str, float | int | str]:
    """The numbers the chapter's prose quotes, by name (glued into the text)."""
    t = bench["target_config"]
    target = speed_table(bench, "target")
    fwdbwd = target.loc[STAGES["fwdbwd"]]
    fwd = target.loc[STAGES["fwd"]]
    across = speed_table(bench, "across_n")
    loop_gain = across["textbook loop"].xs(STAGES["fwdbwd"], level="stage")
    goals = bench["targets"]
    met = sum(1 for v in goals.values() if v.get("status", "met" if v["met"] else "") == "met")
    out: dict[str, float | int | str] = {
        "mode": bench["provenance"].get("mode") or "?",
        "device": device_of(bench),
        "B": t["B"],
        "N": t["N"],
        "L": t["L"],
        "dtype": t["dtype"],
        "fwdbwd_ms": float(fwdbwd["permlib (ms)"]),
        "fwd_ms": float(fwd["permlib (ms)"]),
        "loop_gain_min": float(loop_gain.min()),
        "loop_gain_max": float(loop_gain.max()),
        "loop_gain_n_min": int(loop_gain.idxmin()),
        "loop_gain_n_max": int(loop_gain.idxmax()),
        "targets": len(goals),
        "targets_met": met,
        "peer_wins": len(peer_wins(bench)),
        "configurations": int(timed_rows(bench)[CONFIG].drop_duplicates().shape[0]),
        "quiet": "quiet" if bench.get("quiet", True) else "noisy",
    }
    for peer in PEERS:
        if pd.notna(fwdbwd.get(peer)):
            out[f"fwdbwd_vs_{peer.replace(' ', '_').replace('-', '_')}"] = float(fwdbwd[peer])
    slopes = memory_slopes(bench)
    mem = memory_table(bench)
    if len(mem):
        lo, hi = mem.index.min(), mem.index.max()
        out |= {"mem_l_lo": int(lo), "mem_l_hi": int(hi)}
        for method in mem.columns:
            key = method.replace("permlib ", "").replace(" ", "_")
            out[f"mem_{key}_lo"] = float(mem.loc[lo, method])
            out[f"mem_{key}_hi"] = float(mem.loc[hi, method])
    for method in slopes.index:
        key = method.replace("permlib ", "").replace(" ", "_")
        out[f"slope_{key}_matrices"] = float(slopes.loc[method, "N x N matrices"])
        out[f"slope_{key}_vectors"] = float(slopes.loc[method, "length-N vectors"])
    match = matching_table(bench)
    if len(match):
        others = [c for c in match.columns if c not in ("permlib", "gap")]
        ratio = match[others].div(match["permlib"], axis=0)
        out |= {
            "match_min_ms": float(match["permlib"].min()),
            "match_max_ms": float(match["permlib"].max()),
            "match_fastest_peer_min": float(ratio.min(axis=1).min()),
            "match_fastest_peer_max": float(ratio.min(axis=1).max()),
            "match_gap": float(match["gap"].max()),
        }
        if "scipy loop" in ratio:
            out |= {
                "match_scipy_min": float(ratio["scipy loop"].min()),
                "match_scipy_max": float(ratio["scipy loop"].max()),
            }
    if "bandwidth" in bench:
        out |= {f"bw_{k}": v for k, v in bandwidth_numbers(bench).items()}
    return out


# --------------------------------------------------------------------------- the GPU path

GPU_BENCH_FILES = ("bench_full_cuda.json", "bench_quick_cuda.json")  # the first found is shown
GPU_SPEED_FILE = "gpu_speed_cuda.json"  # `make gpu-check`'s speed.json, recorded
GPU_NOT_MEASURED = (
    "**GPU: not measured yet.** No GPU machine has been lent to this project's sessions so "
    "far, so this book shows CPU numbers only. On a machine with CUDA, run `make gpu-check` "
    "(`benchmarks/gpu_check.sh`, under 8 minutes); it writes into "
    "`_build/gpu_check/<device>/`, never into the tracked results. Copy its "
    f"`bench/bench_quick_cuda.json` to `benchmarks/results/bench_quick_cuda.json` and its "
    f"`speed.json` to `benchmarks/results/{GPU_SPEED_FILE}`, commit them, and run `make book`: "
    "this section then shows the GPU's times beside the CPU's."
)


def gpu_results(folder: str | Path = RESULTS) -> dict | None:
    """The GPU results recorded in ``folder``, or None where there are none.

    A dict ``{"bench", "bench_file", "speed", "speed_file"}``: the ``benchmarks.run --device
    cuda`` results of the full run if recorded, else of the quick run (``bench_<mode>_cuda.json``,
    read with :func:`load`), and the bandwidth-floor check of ``benchmarks/gpu_check.sh``
    (its ``speed.json``, recorded as :data:`GPU_SPEED_FILE`); either may be None.
    """
    folder = Path(folder)
    bench_file = next((folder / f for f in GPU_BENCH_FILES if (folder / f).is_file()), None)
    speed_file = folder / GPU_SPEED_FILE
    speed_file = speed_file if speed_file.is_file() else None
    if bench_file is None and speed_file is None:
        return None
    speed = json.loads(speed_file.read_text()) if speed_file else None
    if speed is not None and not {"device", "rows"} <= set(speed):
        raise ValueError(f"{speed_file}: not a gpu_check speed.json (no device or rows)")
    return {
        "bench": load(bench_file) if bench_file else None,
        "bench_file": bench_file,
        "speed": speed,
        "speed_file": speed_file,
    }


def gpu_name(gpu: dict) -> str:
    """The GPU's name: ``NVIDIA H100 80GB HBM3`` from ``cuda:0 (NVIDIA H100 80GB HBM3)``."""
    if gpu.get("bench") is not None:
        dev = gpu["bench"]["provenance"].get("machine", {}).get("device") or ""
        if "(" in dev and dev.endswith(")"):
            return dev[dev.index("(") + 1 : -1]
    if gpu.get("speed") is not None:
        return gpu["speed"]["device"]
    return "an unnamed CUDA device"


def method_table(bench: dict) -> pd.DataFrame:
    """Every method timed at the target configuration: forward (``fwd``) and forward+backward
    (``fwd+bwd``) min ms and the forward+backward time over permlib's (above 1 when permlib is
    faster); permlib first, then the peers of :data:`PEERS`, then any other method of the run."""
    cols = ["fwd (ms)", "fwd+bwd (ms)", "fwd+bwd / permlib"]
    df = timed_rows(bench)
    df = df[[tuple(r) == target_key(bench) for r in df[CONFIG].itertuples(index=False)]]
    wide = df.pivot_table(index="method", columns="stage", values="min_ms")
    out = pd.DataFrame(index=wide.index)
    for stage, col in zip(STAGES, cols, strict=False):
        out[col] = wide[stage] if stage in wide else float("nan")
    out[cols[2]] = out[cols[1]] / out[cols[1]].get("permlib", float("nan"))
    order = [m for m in ["permlib", *PEERS] if m in out.index]
    order += sorted(m for m in out.index if m not in order)
    return out.loc[order, cols].rename_axis("method")


def gpu_table(gpu: dict, cpu: dict | None = None) -> pd.DataFrame:
    """:func:`method_table` of the GPU run under a ``GPU`` column level, beside that of the CPU
    run ``cpu`` under ``CPU`` (each at its own target configuration; a method one of them did
    not time reads NaN). Empty where the GPU results hold no benchmark run."""
    if gpu.get("bench") is None:
        return pd.DataFrame()
    parts = {"GPU": method_table(gpu["bench"])}
    if cpu is not None:
        parts["CPU"] = method_table(cpu)
    order = list(dict.fromkeys(m for t in parts.values() for m in t.index))
    table = pd.concat(parts, axis=1).reindex(order)
    return table.rename_axis("method")


def gpu_floor_table(gpu: dict) -> pd.DataFrame:
    """The bandwidth-floor check of ``make gpu-check``, one row per dtype: ``log_sinkhorn``'s
    forward and forward+backward ms, the floor (``L`` x 2 passes over the ``B x N x N`` matrix
    at the HBM copy bandwidth), the forward over it (the goal: within 2x) and over the floor at
    a same-size copy's bandwidth, and the host synchronizations one forward makes. Empty where
    the speed check was not recorded."""
    speed = gpu.get("speed")
    if speed is None:
        return pd.DataFrame()
    rows = [
        {
            "dtype": r["dtype"],
            "fwd (ms)": r["forward_ms"],
            "fwd+bwd (ms)": r["forward_backward_ms"],
            "floor (ms)": r["floor_ms_hbm"],
            "fwd / floor": r["ratio_to_floor_hbm"],
            "fwd / same-size floor": r["ratio_to_floor_same_size"],
            "within 2×": "yes" if r["ratio_to_floor_hbm"] <= 2.0 else "no",
            "host syncs (fwd)": len(r.get("host_syncs_in_forward", [])),
        }
        for r in speed["rows"]
    ]
    return pd.DataFrame(rows).set_index("dtype")


def gpu_numbers(gpu: dict, cpu: dict | None = None) -> dict[str, float | int | str]:
    """The numbers the GPU section quotes: the device, the files, and at the target
    configuration permlib's times (and the CPU run's, given ``cpu``); the bandwidth check's
    ``B``, ``N``, ``L``, HBM copy rate and forward / floor per dtype, where recorded."""
    out: dict[str, float | int | str] = {"gpu_device": gpu_name(gpu)}
    bench = gpu.get("bench")
    if bench is not None:
        t = bench["target_config"]
        target = method_table(bench)
        prov = bench["provenance"]
        out |= {
            "gpu_file": gpu["bench_file"].name,
            "gpu_quiet": "quiet" if bench.get("quiet", True) else "noisy",
            "gpu_commit": str(prov.get("git_commit", "?"))[:10],
            "gpu_torch": str(prov.get("versions", {}).get("torch", "?")),
            "gpu_target": f"B = {t['B']}, N = {t['N']}, L = {t['L']}, {t['dtype']}",
            "gpu_fwd_ms": float(target.loc["permlib", "fwd (ms)"]),
            "gpu_fwdbwd_ms": float(target.loc["permlib", "fwd+bwd (ms)"]),
        }
        if "textbook loop" in target.index:
            out["gpu_fwdbwd_vs_textbook_loop"] = float(
                target.loc["textbook loop", "fwd+bwd / permlib"])
        if cpu is not None and cpu["target_config"] == t:
            cpu_fwdbwd = float(method_table(cpu).loc["permlib", "fwd+bwd (ms)"])
            out["cpu_fwdbwd_ms"] = cpu_fwdbwd
            out["cpu_over_gpu_fwdbwd"] = cpu_fwdbwd / out["gpu_fwdbwd_ms"]
    speed = gpu.get("speed")
    if speed is not None:
        out |= {
            "gpu_speed_file": gpu["speed_file"].name,
            "gpu_floor_B": speed["B"],
            "gpu_floor_N": speed["N"],
            "gpu_floor_L": speed["L"],
            "gpu_hbm_tbs": speed["hbm_copy_bytes_per_s"] / 1e12,
        }
        for r in speed["rows"]:
            out[f"gpu_floor_ratio_{r['dtype']}"] = float(r["ratio_to_floor_hbm"])
    return out


def gpu_summary(gpu: dict, cpu: dict | None = None) -> str:
    """One Markdown paragraph on the recorded GPU run, its numbers from :func:`gpu_numbers` (the
    chapter displays it above :func:`gpu_table`)."""
    n = gpu_numbers(gpu, cpu)
    if "gpu_file" not in n:
        return (f"**GPU: {n['gpu_device']}.** No `benchmarks.run --device cuda` run is "
                "recorded, only the bandwidth check of `make gpu-check`.")
    cpu_part = (f", against {n['cpu_fwdbwd_ms']:.3g} ms for forward+backward in the CPU run "
                "above" if "cpu_fwdbwd_ms" in n else "")
    return (
        f"**GPU: {n['gpu_device']}.** From `{n['gpu_file']}`, a {n['gpu_quiet']} run of commit "
        f"`{n['gpu_commit']}` (torch {n['gpu_torch']}). At its target configuration, "
        f"{n['gpu_target']}, `permlib`'s forward+backward took {n['gpu_fwdbwd_ms']:.3g} ms and "
        f"its forward {n['gpu_fwd_ms']:.3g} ms on the GPU{cpu_part}."
    )


def gpu_floor_summary(gpu: dict) -> str:
    """One Markdown paragraph on the bandwidth-floor check of ``make gpu-check`` (the chapter
    displays it above :func:`gpu_floor_table`); empty where the check was not recorded."""
    n = gpu_numbers(gpu)
    if "gpu_speed_file" not in n:
        return ""
    ratios = ", ".join(f"{n[k]:.2f} times the floor in {k.removeprefix('gpu_floor_ratio_')}"
                       for k in n if k.startswith("gpu_floor_ratio_"))
    return (
        f"The bandwidth check of `make gpu-check` (`{n['gpu_speed_file']}`) times "
        f"`permlib.log_sinkhorn` at B = {n['gpu_floor_B']}, N = {n['gpu_floor_N']}, "
        f"L = {n['gpu_floor_L']} against its floor: the time 2L passes over the B × N × N "
        f"matrix take at the GPU's copy rate, {n['gpu_hbm_tbs']:.2f} TB/s. Its forward took "
        f"{ratios}; the goal is within 2 times."
    )


def figure(bench: dict) -> plt.Figure:
    """Two panels: fwd+bwd time against N at the target's B, L, dtype (log-log), and peak memory
    of forward+backward against L (log-log; dashed: the implicit backward). One colour per method
    in both panels; axis labels say what and in which unit, and there is no title (captions do).
    """
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(9.5, 3.8), constrained_layout=True)
    across = timed_rows(bench)
    dev, b, _, ll, dt = target_key(bench)
    across = across[
        (across.device == dev) & (across.B == b) & (across.L == ll) & (across.dtype == dt)
        & (across.stage == "fwdbwd")
    ]
    methods = list(dict.fromkeys(across["method"]))
    mem = [r for r in bench["rows"] if r.get("section") == "memory" and r["peak_bytes"]]
    mem_methods = list(dict.fromkeys(r["method"] for r in mem))
    color = {m: f"C{i}" for i, m in enumerate(methods)}
    for method in methods:
        pts = across[across.method == method].sort_values("N")
        ax_t.loglog(pts.N, pts.min_ms, marker="o", color=color[method], label=method)
    ax_t.set_xlabel("matrix size $N$")
    ax_t.set_ylabel(f"forward+backward time (ms), $B$ = {b}")
    if methods:
        ax_t.legend(fontsize=8)
    for i, method in enumerate(mem_methods):
        pts = sorted((r["L"], r["peak_bytes"] / 2**20) for r in mem if r["method"] == method)
        style = {"ls": "--", "marker": "s"} if method.endswith("implicit") else {"marker": "o"}
        c = color.get(method, color.get(method.split()[0], f"C{len(methods) + i}"))
        ax_m.loglog(*zip(*pts, strict=True), color=c, label=method, **style)
    ax_m.set_xlabel("iterations $L$")
    size = f", $B$ = {mem[0]['B']}, $N$ = {mem[0]['N']}" if mem else ""
    ax_m.set_ylabel(f"peak memory (MiB){size}")
    if mem:
        ax_m.legend(fontsize=8)
    else:
        ax_m.text(0.5, 0.5, "no memory measurements", ha="center", transform=ax_m.transAxes)
    return fig


# --------------------------------------------------------------------------- relaxations cost

_COST_NOTES = ("too_slow", "too_big", "failed", "not_run")


def relaxations_cost(path: str | Path = RESULTS, device: str = "cpu") -> pd.DataFrame:
    """The recorded cost of one training step of each relaxation, one row per (method, n).

    ``path``: a ``relaxations_cost_<device>.json`` file of :mod:`benchmarks.relaxations_cost`,
    or the folder holding it (default: the tracked ``benchmarks/results/``). Columns: ``method``,
    ``family`` (``"matrix"``: the Sinkhorn family, ``"scores"``: score-based), ``n``, ``ms``
    (minimum over the rounds), ``median_ms``, ``reps``, ``peak_mib`` (peak memory of a step),
    ``step_s`` (seconds of the one step run of a cell too slow to time) and ``note`` (why a
    cell has no timing: ``"too slow: ..."``, ``"too big: ..."``, ``"failed: ..."``,
    ``"not run: ..."``; empty otherwise). ``df.attrs`` holds the file's ``provenance``,
    ``config``, ``device`` and ``skipped`` (methods left out, with the reason).
    """
    path = Path(path)
    if path.is_dir():
        path = path / f"relaxations_cost_{device}.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: run `python -m benchmarks.relaxations_cost --device {device} "
            "--record`"
        )
    data = json.loads(path.read_text())
    missing = {"provenance", "config", "rows", "skipped"} - set(data)
    if missing:
        raise ValueError(f"{path}: not a benchmarks.relaxations_cost file (no {sorted(missing)})")
    rows = []
    for r in data["rows"]:
        note = next((f"{k.replace('_', ' ')}: {r[k]}" for k in _COST_NOTES if k in r), "")
        peak = r.get("peak_bytes")
        rows.append({
            "method": r["method"], "family": r.get("family"), "n": r["n"],
            "ms": r.get("min_ms"), "median_ms": r.get("median_ms"), "reps": r.get("reps"),
            "peak_mib": None if peak is None else peak / 2**20,
            "step_s": r.get("first_step_s") if "too_slow" in r else None, "note": note,
        })  # fmt: skip
    cols = ["method", "family", "n", "ms", "median_ms", "reps", "peak_mib", "step_s", "note"]
    df = pd.DataFrame(rows, columns=cols)
    for col in ("ms", "median_ms", "peak_mib", "step_s"):
        df[col] = df[col].astype(float)
    df["reps"] = df["reps"].astype("Int64")
    df.attrs = {k: data.get(k) for k in ("provenance", "config", "device", "skipped")}
    return df


def relaxations_cost_table(cost: pd.DataFrame, value: str = "ms") -> pd.DataFrame:
    """One row per method (in the file's order), one column per ``n``: ``value`` of
    :func:`relaxations_cost` (``"ms"``, ``"median_ms"``, ``"peak_mib"``), missing where the cell
    has no measurement (see its ``note``)."""
    if value not in ("ms", "median_ms", "peak_mib"):
        raise ValueError(f"value must be 'ms', 'median_ms' or 'peak_mib', got {value!r}")
    wide = cost.pivot_table(index="method", columns="n", values=value, dropna=False)
    wide = wide.reindex(index=list(dict.fromkeys(cost["method"])),
                        columns=sorted(cost["n"].unique()))  # fmt: skip
    wide.columns = [f"n = {n}" for n in wide.columns]
    wide.index.name = "method"
    return wide


def _cost_where(cost: pd.DataFrame, device: str) -> tuple[str, str]:
    """The device of a cost DataFrame and the legend's title (device, batch, threads)."""
    cfg = cost.attrs.get("config") or {}
    dev = str(cost.attrs.get("device") or device)
    where = [dev] + [f"batch of {cfg['batch']}"] * bool(cfg.get("batch"))
    if cfg.get("threads") and dev == "cpu":
        where.append(f"{cfg['threads']} thread" + "s" * (cfg["threads"] > 1))
    return dev, ", ".join(where)


def plot_relaxations_cost(cost: pd.DataFrame | str | Path = RESULTS, ax: plt.Axes | None = None,
                          what: str = "time", *, device: str = "cpu",
                          memory_floor_mib: float | None = None,
                          legend: bool = True) -> plt.Axes:  # fmt: skip
    """One panel against the list length ``n`` (log-log) on ``ax`` (default: a new figure):
    ``what="time"``, the time of one training step (ms), or ``"memory"``, its peak memory
    (MiB); one line per method (solid: the Sinkhorn family, dashed: the score-based
    relaxations). In the time panel, a cell too slow to time shows the time of its one step as
    an open marker on a dotted line; a method without a timing at some ``n`` (too slow, too
    big, not run) says so in its legend label. With ``legend``, the legend sits to the right of
    the axes, titled with the device, batch and threads.

    ``cost``: the DataFrame of :func:`relaxations_cost`, or what it reads (a file or folder).
    ``memory_floor_mib``: peaks below it are not drawn (default: 1 MiB for a CPU run, whose
    resident-set measurement cannot resolve less: small tensors reuse heap pages already mapped,
    so a step of a few KiB reads 0 or a page or two; nothing for CUDA's exact statistics).
    """
    if what not in ("time", "memory"):
        raise ValueError(f"what must be 'time' or 'memory', got {what!r}")
    if not isinstance(cost, pd.DataFrame):
        cost = relaxations_cost(cost, device)
    dev, where = _cost_where(cost, device)
    if memory_floor_mib is None:
        memory_floor_mib = 1.0 if dev.startswith("cpu") else 0.0
    if ax is None:
        _, ax = plt.subplots(figsize=(9.0, 4.6), layout="constrained")
    markers = "osD^vP*Xhp<>"
    for i, method in enumerate(dict.fromkeys(cost["method"])):
        pts = cost[cost.method == method].sort_values("n")
        ls = "-" if (pts.family == "matrix").all() else "--"
        style = {"color": f"C{i % 10}", "marker": markers[i % len(markers)], "ls": ls, "lw": 1.8,
                 "ms": 6}  # fmt: skip
        if what == "memory":
            mem = pts[(pts.peak_mib > 0) & (pts.peak_mib >= memory_floor_mib)]
            ax.loglog(mem.n, mem.peak_mib, label=method, **style)
            continue
        timed = pts[pts.ms.notna()]
        slow = pts[pts.step_s.notna()]
        if len(slow) and len(timed):
            last = timed.iloc[-1]
            ax.loglog([last.n, *slow.n], [last.ms, *(1e3 * slow.step_s)], color=style["color"],
                      ls=":", lw=1.5)  # fmt: skip
        if len(slow):
            ax.loglog(slow.n, 1e3 * slow.step_s, ls="none", marker=style["marker"], ms=8,
                      mfc="white", mec=style["color"], mew=1.8)  # fmt: skip
        gaps: dict[str, list[str]] = {}  # why -> the n without a timing
        for r in pts[pts.ms.isna()].itertuples():
            why = "too slow, one step (open marker)" if r.step_s > 0 else r.note.split(":")[0]
            gaps.setdefault(why, []).append(str(r.n))
        notes = [f"n = {', '.join(ns)}: {why}" for why, ns in gaps.items()]
        ax.loglog(timed.n, timed.ms, label=method + (f" ({'; '.join(notes)})" if notes else ""),
                  **style)  # fmt: skip
    if what == "time":
        ax.set_ylabel("time per training step (ms)", fontsize=11)
    else:
        ax.set_ylabel("peak memory per training step (MiB)", fontsize=11)
        if memory_floor_mib > 0 and (cost.peak_mib < memory_floor_mib).any():
            ax.text(0.02, 0.97, f"peaks under {memory_floor_mib:g} MiB not shown\n(below the "
                    "resolution of the CPU measurement)", transform=ax.transAxes, va="top",
                    fontsize=9.5, color="0.3")  # fmt: skip
    ax.set_xlabel("list length $n$", fontsize=11)
    ax.tick_params(labelsize=10)
    ax.grid(True, which="major", alpha=0.3)
    ns = sorted(cost["n"].unique())
    ax.set_xticks(ns, [str(n) for n in ns])
    ax.set_xlim(min(ns) / 1.25, max(ns) * 1.25)
    ax.minorticks_off()
    if legend and ax.get_legend_handles_labels()[0]:
        ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=9.5, frameon=False,
                  title=where, title_fontsize=10, alignment="left")  # fmt: skip
    return ax


def relaxations_cost_figure(cost: pd.DataFrame | str | Path = RESULTS, device: str = "cpu",
                            memory_floor_mib: float | None = None) -> plt.Figure:  # fmt: skip
    """Two panels of :func:`plot_relaxations_cost` side by side, time and peak memory of one
    training step against ``n``, with one legend below them (the time panel's labels, which
    say where a method has no timing). No title (captions do); sized to read at 1280 px wide.
    """
    if not isinstance(cost, pd.DataFrame):
        cost = relaxations_cost(cost, device)
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(12.8, 6.0), layout="constrained")
    plot_relaxations_cost(cost, ax_t, "time", device=device, legend=False)
    plot_relaxations_cost(cost, ax_m, "memory", device=device, legend=False,
                          memory_floor_mib=memory_floor_mib)  # fmt: skip
    handles, labels = ax_t.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=3, fontsize=10,
                   frameon=False, title=_cost_where(cost, device)[1], title_fontsize=10)
    return fig
