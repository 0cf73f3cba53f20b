"""What one training step of each relaxation costs: ``python -m benchmarks.relaxations_cost``.

The cost benchmark of the relaxations chapter ("Which relaxation should I use?"). For every
method of :data:`permlib.experiments.relaxations.RELAXATION_METHODS` and every list length
``n`` (``--ns``, default 5 15 100 400): the network of the chapter's ``numbers`` task,
``build(RelaxationsConfig(method=m, n=n))`` (the founding papers' network with an ``n x n``
matrix of log-potentials for the Sinkhorn family, the same ``g1`` with one score per number for
NeuralSort, SoftSort and the sorting networks), Adam at the task's learning rate (0.1), one
fixed batch of ``--batch`` lists from :func:`permlib.data.sample_sorting_batch`, and one full
training step: ``zero_grad``, the loss, ``backward``, ``optimizer.step``. Every step is the next
step of the same run from the same initialization (``--seed``), so tolerance-controlled methods
(``gumbel_sinkhorn_implicit``) are measured near initialization.

Per ``n``, first each method's peak memory: one untimed step, then the rise of the memory in use
during a second step, measured as :mod:`benchmarks.memory` does (CUDA's allocator statistics,
or on the CPU the RSS high-water mark of a fresh subprocess whose tensors glibc maps one by one).
On the CPU that subprocess also guards the run: a step longer than ``--slow-s`` seconds (its
first step is timed) is recorded as *too slow* with its time and not timed further, a subprocess
still running after ``3 * --slow-s`` seconds is stopped, and one that needs more than
``--max-gb`` GB (``RLIMIT_DATA``) is recorded as *too big*, so that a step such as the odd-even
sorting network's at ``n = 400`` (``n`` layers, each a few ``n x n`` matrix products per list)
neither hangs the benchmark nor takes the machine's memory. Then the methods that passed are
timed in interleaved rounds in this process (:func:`benchmarks.timing.interleaved`: one warm-up
step each, ``--reps`` rounds, fewer for a method whose warm-up took longer than
``--budget-s / --reps``); the minimum and the median of the rounds are reported. Only ratios
within one run mean anything on a shared machine.

Methods left out are reported with the reason: ``gumbel_sinkhorn_grover`` (a training layout of
the multi-digit task only) and methods whose peer package is missing (``diffsort``,
``pip install -e '.[peers]'``). A cell whose step raises is recorded as *failed* with the error.

``--device cpu`` (the default; ``--threads``, default 1, torch threads) or ``--device cuda``.
Results go to ``_build/bench/relaxations_cost_<device>.json`` (git-ignored), or with
``--record`` to ``benchmarks/results/`` (tracked, read by the book), or to ``--out``; the
relaxations chapter reads them with :func:`load` and draws them with :func:`plot` (thin
wrappers of :func:`benchmarks.report.relaxations_cost` and
:func:`benchmarks.report.plot_relaxations_cost`; :func:`benchmarks.report.relaxations_cost_figure`
draws time and memory side by side).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import selectors
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch

from benchmarks import memory
from benchmarks.timing import interleaved, summary, time_rounds

__all__ = [
    "MULTIDIGIT_ONLY",
    "load",
    "main",
    "make_step",
    "markdown",
    "measure",
    "plan_methods",
    "plot",
    "probe",
]

BENCH_DIR = Path(__file__).resolve().parent
RESULTS = BENCH_DIR / "results"  # tracked; the book reads it; written only with --record
SCRATCH = BENCH_DIR.parent / "_build" / "bench"  # git-ignored; the default
NS = (5, 15, 100, 400)
#: Methods of RELAXATION_METHODS that exist for the multi-digit task only, with the reason.
MULTIDIGIT_ONLY = {
    "gumbel_sinkhorn_grover": "multi-digit task only (Grover et al.'s baseline layout)",
}
PEER_PACKAGES = ("diffsort", "pandas", "matplotlib")
STARTUP_S = 60.0  # what a probe subprocess may take to start (imports), beyond its cells' time
_STREAMS = ("init", "data", "noise")


def plan_methods(methods: Sequence[str] | None = None) -> tuple[list[str], dict[str, str]]:
    """The methods to measure (``None``: all) and ``{method: why}`` for those left out."""
    from permlib.experiments.relaxations import RELAXATION_METHODS, available

    names = list(RELAXATION_METHODS) if methods is None else list(methods)
    unknown = [m for m in names if m not in RELAXATION_METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}: choose from {list(RELAXATION_METHODS)}")
    skipped = {}
    for m in names:
        why = MULTIDIGIT_ONLY.get(m) or available(m)
        if why:
            skipped[m] = why
    return [m for m in names if m not in skipped], skipped


def make_step(method: str, n: int, batch: int = 10, seed: int = 0,
              device: str | torch.device = "cpu") -> Callable[[], None]:  # fmt: skip
    """One training step of ``method`` on lists of ``n`` numbers: a callable that runs
    ``zero_grad``, the loss, ``backward`` and ``optimizer.step`` on a fixed batch (every call is
    the next step of the same run)."""
    from permlib import ConvergenceWarning
    from permlib.data.sorting import sample_sorting_batch
    from permlib.experiments import harness
    from permlib.experiments.relaxations import RelaxationsConfig, build

    config = RelaxationsConfig(method=method, n=n, batch_size=batch, seed=seed)
    gens = harness.generators(seed, _STREAMS)
    noise = harness.generators(seed, _STREAMS, device=device)["noise"]
    model = build(config, generator=gens["init"]).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    data = sample_sorting_batch(batch, n, generator=gens["data"], device=device)

    def step() -> None:
        opt.zero_grad()
        with warnings.catch_warnings():  # the tol-controlled method at its iteration cap
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.loss(data.x, data.x_sorted, generator=noise).backward()
        opt.step()

    return step


def _too_big(err: BaseException) -> bool:
    if isinstance(err, MemoryError):
        return True
    oom = getattr(torch.cuda, "OutOfMemoryError", ())
    return isinstance(err, oom) or "can't allocate memory" in str(err)


def probe(method: str, ns: Sequence[int], batch: int = 10, seed: int = 0, device: str = "cpu",
          slow_s: float = 20.0, max_gb: float | None = None) -> Iterator[dict]:  # fmt: skip
    """In this process, for each ``n`` in increasing order: time one step, then measure the peak
    memory of the next one.

    Yields ``{"n", "first_step_s", "peak_bytes"}`` per ``n``, or with ``too_slow`` instead of
    ``peak_bytes`` when the first step took longer than ``slow_s`` (no second step), or
    ``{"n", "too_big"}`` or ``{"n", "failed"}`` (the error); after ``too_slow`` or ``too_big``
    the larger ``n`` are not run (a step costs more as ``n`` grows). ``max_gb`` caps this
    process's data segment (CPU only; ``RLIMIT_DATA``), so a step that needs more fails with an
    allocation error instead of taking the machine's memory.
    """
    if max_gb is not None and torch.device(device).type == "cpu":
        cap = memory._status("VmData") + int(max_gb * 1e9)
        resource.setrlimit(resource.RLIMIT_DATA, (cap, resource.RLIM_INFINITY))
    for n in sorted(ns):
        try:
            step = make_step(method, n, batch, seed, device)
            first = time_rounds(step, 1, device)[0]
            if first > slow_s:
                yield {"n": n, "first_step_s": first, "too_slow": f"one step took {first:.3g} s"}
                return
            yield {"n": n, "first_step_s": first, "peak_bytes": memory.peak_bytes(step, device)}
        except Exception as err:  # recorded, not raised: one cell must not end the run
            if _too_big(err):
                cap = f"the {max_gb:g} GB cap (--max-gb)" if max_gb is not None else "memory"
                yield {"n": n, "too_big": f"one step needs more than {cap}"}
                return
            yield {"n": n, "failed": f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"}
        finally:
            step = None  # free this n's model before the next one


def _probe_subprocess(method: str, ns: Sequence[int], batch: int, seed: int, slow_s: float,
                      max_gb: float, threads: int) -> Iterator[dict]:  # fmt: skip
    """:func:`probe` in a fresh process with :data:`benchmarks.memory.ENV`; a cell that has not
    answered ``3 * slow_s`` seconds after the previous one (the first: plus :data:`STARTUP_S`) is
    stopped."""
    cmd = [sys.executable, "-m", "benchmarks.relaxations_cost", "--probe", method,
           "--ns", *map(str, ns), "--batch", str(batch), "--seed", str(seed),
           "--slow-s", str(slow_s), "--max-gb", str(max_gb), "--threads", str(threads)]
    env = {**os.environ, **memory.ENV, "PYTHONPATH": str(BENCH_DIR.parent)}
    stop = 3 * slow_s
    with tempfile.TemporaryFile("w+") as err, subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env, cwd=BENCH_DIR.parent
    ) as proc:  # fmt: skip
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        todo = sorted(ns)
        wait = stop + STARTUP_S  # the first cell also waits for the imports
        while todo:
            if not sel.select(timeout=wait):
                proc.kill()
                yield {"n": todo[0], "too_slow": f"one step took more than {slow_s:g} s "
                       f"(stopped after {stop:g} s)"}  # fmt: skip
                return
            line = proc.stdout.readline()
            if not line:  # the process ended without answering for every n
                proc.wait()
                err.seek(0)
                last = [ln for ln in err.read().splitlines() if ln.strip()]
                why = f"probe exited with {proc.returncode}: {last[-1] if last else '?'}"
                yield {"n": todo[0], "failed": why[:300]}
                return
            cell = json.loads(line)
            todo.remove(cell["n"])
            wait = stop
            yield cell
            if "too_slow" in cell or "too_big" in cell:  # the probe ends there
                return


def measure(methods: Sequence[str], ns: Sequence[int], *, batch: int = 10, reps: int = 7,
            seed: int = 0, device: str = "cpu", slow_s: float = 20.0, max_gb: float = 4.0,
            budget_s: float = 10.0, threads: int = 1,
            progress: Callable[[str], None] | None = print) -> list[dict]:  # fmt: skip
    """One row per (method, n), in the order of ``ns`` then ``methods``: ``min_ms``,
    ``median_ms``, ``reps``, ``peak_bytes``, ``first_step_s``; or ``too_slow``, ``too_big``,
    ``failed`` or ``not_run`` (why) instead of the timings."""
    from permlib.experiments.relaxations import RELAXATION_METHODS

    dev = torch.device(device)
    cells: dict[tuple[str, int], dict] = {}
    for m in methods:  # memory, and the guard against a step too slow or too big
        t0 = time.perf_counter()
        if dev.type == "cuda":
            found = probe(m, ns, batch, seed, device, slow_s)
        else:
            found = _probe_subprocess(m, ns, batch, seed, slow_s, max_gb, threads)
        stopped = None
        for res in found:
            cells[m, res["n"]] = res
            if "too_slow" in res or "too_big" in res:
                stopped = res["n"]
        for n in ns:
            if (m, n) not in cells:
                why = f"too costly at n = {stopped}" if stopped else "the probe stopped before"
                cells[m, n] = {"n": n, "not_run": why}
        if progress:
            bad = [f"n={n}: {k} {r[k]}" for n in ns for r in [cells[m, n]]
                   for k in ("too_slow", "too_big", "failed") if k in r]  # fmt: skip
            progress(f"  {m}: memory probes {time.perf_counter() - t0:.1f} s"
                     + ("; " + "; ".join(bad) if bad else ""))  # fmt: skip
    rows = []
    for n in ns:  # timing, interleaved across the methods that passed
        ok = [m for m in methods if "peak_bytes" in cells[m, n]]
        if ok:
            calls = {m: make_step(m, n, batch, seed, device) for m in ok}
            t0 = time.perf_counter()
            times = interleaved(calls, reps, budget_s, device=device)
            del calls
            for m in ok:
                cells[m, n] |= summary(times[m])
            if progress:
                progress(f"  n={n}: timed {len(ok)} methods in {time.perf_counter() - t0:.1f} s")
        for m in methods:
            spec = RELAXATION_METHODS[m]
            rows.append({"method": m, "n": n, "family": spec["family"], "device": device,
                         "batch": batch, **cells[m, n], "how_memory": memory.HOW[dev.type]})
    return rows


def _cell(row: dict) -> str:
    if "min_ms" in row:
        peak = row.get("peak_bytes")
        mem = "n/a" if peak is None else f"{peak / 2**20:.3g} MiB"
        return f"{row['min_ms']:.3g} ms, {mem}"
    for k in ("too_slow", "too_big", "failed", "not_run"):
        if k in row:
            return f"{k.replace('_', ' ')}: {row[k]}"
    return "–"


def markdown(result: dict) -> str:
    """The result as a Markdown table: one row per method, one column per ``n``; each cell the
    minimum ms per step and the peak MiB of a step; then the methods left out."""
    rows = result["rows"]
    ns = list(dict.fromkeys(r["n"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    by = {(r["method"], r["n"]): r for r in rows}
    lines = ["| method | " + " | ".join(f"n = {n}" for n in ns) + " |",
             "|---|" + "---|" * len(ns)]  # fmt: skip
    for m in methods:
        lines.append(f"| {m} | " + " | ".join(_cell(by[m, n]) for n in ns) + " |")
    for m, why in result["skipped"].items():
        lines.append(f"\nskipped {m}: {why}")
    return "\n".join(lines)


def provenance_info(argv: list[str], seed: int, device: str) -> dict:
    """Provenance of the run (:func:`benchmarks.run.provenance_info` for this script)."""
    from benchmarks.run import provenance_info as info

    return info(argv, seed, "cost", device, script="benchmarks.relaxations_cost",
                packages=PEER_PACKAGES)


def load(path: str | Path = RESULTS, device: str = "cpu"):
    """The recorded file as a DataFrame, one row per (method, n):
    :func:`benchmarks.report.relaxations_cost` (``path``: the file or its folder)."""
    from benchmarks import report

    return report.relaxations_cost(path, device)


def plot(cost=RESULTS, ax=None, what: str = "time", **kwargs):
    """Time (or ``what="memory"``: peak memory) per training step against ``n``, log-log, one
    line per method, on ``ax``: :func:`benchmarks.report.plot_relaxations_cost`. ``cost``: the
    DataFrame of :func:`load`, or a file or folder. Returns the axes."""
    from benchmarks import report

    return report.plot_relaxations_cost(cost, ax, what, **kwargs)


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; returns the result (also written as JSON, see the module docstring)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda (where present)")
    ap.add_argument("--ns", type=int, nargs="+", default=list(NS), help="list lengths n")
    ap.add_argument("--methods", nargs="+", default=None, help="default: every method")
    ap.add_argument("--batch", type=int, default=10, help="lists per step (default 10)")
    ap.add_argument("--reps", type=int, default=7, help="timed rounds per cell (default 7)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--slow-s", type=float, default=20.0,
                    help="a step longer than this is recorded as too slow (default 20 s)")
    ap.add_argument("--max-gb", type=float, default=4.0,
                    help="memory cap of a step on the CPU (default 4 GB)")
    ap.add_argument("--budget-s", type=float, default=10.0,
                    help="timing budget per cell: a slow step gets fewer rounds (at least 2)")
    ap.add_argument("--record", action="store_true",
                    help="write to benchmarks/results/ (tracked, read by the book) instead of "
                    "_build/bench/ (git-ignored)")  # fmt: skip
    ap.add_argument("--out", type=Path, default=None, help="folder for the JSON file")
    ap.add_argument("--probe", metavar="METHOD", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.probe:  # the subprocess of one method's CPU memory probes: a JSON line per n
        for cell in probe(args.probe, args.ns, args.batch, args.seed, "cpu", args.slow_s,
                          args.max_gb):  # fmt: skip
            print(json.dumps(cell), flush=True)
        return {}
    from benchmarks.run import parse_device, write_result

    dev = parse_device(ap, args.device)
    if min(args.ns) < 1 or args.batch < 1 or args.reps < 1:
        ap.error("--ns, --batch and --reps must be positive")
    try:
        methods, skipped = plan_methods(args.methods)
    except ValueError as err:
        ap.error(str(err))
    device = str(dev)
    args.ns = sorted(set(args.ns))
    for m, why in skipped.items():
        print(f"skipping {m}: {why}")
    start = time.perf_counter()
    load_start = list(os.getloadavg())
    rows = measure(methods, args.ns, batch=args.batch, reps=args.reps, seed=args.seed,
                   device=device, slow_s=args.slow_s, max_gb=args.max_gb,
                   budget_s=args.budget_s, threads=args.threads)  # fmt: skip
    prov = provenance_info(argv, args.seed, device)
    prov["wall_s"] = round(time.perf_counter() - start, 2)
    prov["machine"]["load_average_1_5_15_min_start"] = load_start
    prov["machine"]["load_average_1_5_15_min"] = list(os.getloadavg())  # at the end of the run
    result = {
        "provenance": prov,
        "device": device,
        "config": {"ns": args.ns, "methods": methods, "batch": args.batch, "reps": args.reps,
                   "seed": args.seed, "threads": args.threads, "slow_s": args.slow_s,
                   "max_gb": args.max_gb, "budget_s": args.budget_s, "task": "numbers",
                   "step": "zero_grad, loss, backward, Adam step (lr 0.1)"},  # fmt: skip
        "rows": rows,
        "skipped": skipped,
    }
    print(f"\nOne training step on {device} (batch {args.batch}, {args.threads} thread(s)): "
          f"min ms over rounds, peak MiB of a step\n")  # fmt: skip
    print(markdown(result))
    path = write_result(result, f"relaxations_cost_{dev.type}", out=args.out, record=args.record,
                        results=RESULTS, scratch=SCRATCH)
    print(f"\nwrote {path}")
    return result


if __name__ == "__main__":
    main()
