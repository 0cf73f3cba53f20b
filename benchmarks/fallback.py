"""What the log-domain fallback of :func:`permlib.sinkhorn` costs on trained networks' scores,
and what absorbing its first iteration saves: ``python -m benchmarks.fallback [--record]``.

The scaling (exp) domain of :func:`permlib.sinkhorn` is fast, but where the scalings would
over- or underflow (small ``tau`` on widely spread scores) the call falls back to the log
domain. Trained sorting networks reach that case: their ``|log_alpha|`` exceeds 100 at
``tau = 1``. Two cases, each on the perturbed scores of one training batch of a network whose
weights are recorded in ``benchmarks/results/artifacts/``:

- ``fixed``: the Table 5 Gumbel-Sinkhorn head (:cite:`mena2018learning` protocol,
  ``N = 250``, seed 1): ``L = 20`` iterations, unrolled backward;
- ``implicit``: the scores of the Table 5 Gumbel-Sinkhorn network (``N = 120``, seed 1)
  through the tolerance head (``tol=1e-3``, at most 200 iterations, implicit backward).

Forward+backward (loss ``sum(P * W)``) is timed in interleaved rounds (minimum and median) as

- ``absorbed``: :func:`permlib.sinkhorn` as it is: one log-domain iteration, the rest in the
  scaling domain on its result, where those are in range;
- ``log loop``: the whole loop in the log domain (the fallback before the absorption);
- ``in range`` (``fixed`` only): N(0, 1) scores of the same shape, which never leave the
  scaling domain (what the absorbed call is compared with).

The plans of ``absorbed`` and ``log loop`` are compared too (largest difference: rounding),
and, with ``tol``, their mean iterations. The machine may be shared: only ratios within one
run mean anything. ``--record`` writes ``benchmarks/results/sinkhorn_fallback_<device>.json``
with the run's provenance.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import torch

import permlib
from benchmarks.timing import interleaved, ratio_rows
from permlib.data import sample_sorting_batch
from permlib.experiments import harness, sorting
from permlib.sinkhorn import _log_sinkhorn

__all__ = ["CASES", "RESULT", "load", "measure", "main", "trained_network", "trained_scores"]

BENCH_DIR = Path(__file__).resolve().parent  # repository code: its own folder, not permlib's
RESULTS = BENCH_DIR / "results"

#: The timed cases: the recorded network (table, N, seed) and the Sinkhorn call of its head.
CASES: dict[str, dict] = {
    "fixed": {"table": "table5", "n": 250, "seed": 1,
              "call": {"n_iters": 20, "tol": None, "backward": "unroll"}},
    "implicit": {"table": "table5", "n": 120, "seed": 1,
                 "call": {"n_iters": 200, "tol": 1e-3, "backward": "implicit"}},
}  # fmt: skip

#: Where ``--record`` writes (the CPU's; the chapter on performance reads it).
RESULT = RESULTS / "sinkhorn_fallback_cpu.json"


def load(path: str | Path = RESULT) -> dict:
    """A recorded result of this benchmark; a missing, corrupt or foreign file raises an error
    that names it."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: cannot read a benchmarks.fallback result ({err})") from err
    keys = {"cases", "provenance"}
    missing = keys - set(data) if isinstance(data, dict) else keys
    if missing:
        raise ValueError(f"{path}: not a benchmarks.fallback result (no {sorted(missing)})")
    return data


def trained_network(case: str) -> torch.nn.Module:
    """``case``'s recorded network: its cell's stored config and weights, read through the
    results store (which checks the weights' SHA-256 and names a missing or altered file)."""
    c = CASES[case]
    store = sorting.EXPERIMENT.store(c["table"], RESULTS)
    cell = {"method": "gumbel_sinkhorn", "n": c["n"], "seed": c["seed"]}
    record = store.get(cell)
    if record is None:
        raise KeyError(f"no cell {harness.cell_id(cell)} in {store.path}")
    return sorting.load_network(store, record)


def trained_scores(case: str = "fixed", batch: int = 10, seed: int = 0) -> torch.Tensor:
    """The perturbed scores ``(S, B, N, N)`` that ``case``'s trained head feeds to Sinkhorn."""
    model = trained_network(case)
    g = torch.Generator().manual_seed(seed)
    x = sample_sorting_batch(batch, CASES[case]["n"], generator=g).x
    with torch.no_grad():
        log_alpha = model.log_alpha(x)
        head = model.head
        return permlib.perturb(log_alpha, head.n_samples, head.noise_factor, generator=g)


def measure(case: str = "fixed", reps: int = 3, seed: int = 0, batch: int = 10) -> dict:
    """Time ``case`` (a key of :data:`CASES`) on ``batch`` lists; returns ``{"config",
    "timing", "max_abs_diff", "extent", "mean_iterations"}``, timing rows as in
    :mod:`benchmarks.convergence` (ratios against ``absorbed``)."""
    if case not in CASES:
        raise ValueError(f"case must be one of {tuple(CASES)}, got {case!r}")
    kw = CASES[case]["call"]
    x = trained_scores(case, batch=batch, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    w = torch.randn(x.shape, generator=g)
    normal = torch.randn(x.shape, generator=g)
    iterations: dict[str, float] = {}

    def fwd_bwd(name, scores, absorb=True):
        def call():
            xg = scores.clone().requires_grad_()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", permlib.ConvergenceWarning)
                p, info = _log_sinkhorn(
                    xg, 1.0, kw["n_iters"], kw["tol"], kw["backward"], True, 2, True,
                    absorb=absorb,
                )
            (grad,) = torch.autograd.grad((p * w).sum(), xg)
            iterations[name] = float(info.n_iters.double().mean())
            return p.detach()

        return call

    calls = {"absorbed": fwd_bwd("absorbed", x), "log loop": fwd_bwd("log loop", x, False)}
    if kw["tol"] is None:
        calls["in range"] = fwd_bwd("in range", normal)
    diff = float((calls["absorbed"]() - calls["log loop"]()).abs().max())
    seconds = interleaved(calls, reps)
    timing = ratio_rows(seconds, "absorbed")
    config = {"case": case, **CASES[case], "shape": list(x.shape), "tau": 1.0,
              "dtype": "float32", "reps": reps, "seed": seed, "device": "cpu",
              "results": f"sorting_{CASES[case]['table']}.json",
              "threads": torch.get_num_threads()}  # fmt: skip
    return {"config": config, "timing": timing, "max_abs_diff": diff,
            "extent": float(x.abs().max()), "mean_iterations": iterations}  # fmt: skip


def format_table(result: dict) -> str:
    """One case's result of :func:`measure` as a plain-text table."""
    c = result["config"]
    lines = [
        f"{c['case']}: Sinkhorn forward+backward on trained {c['table']} scores "
        f"{tuple(c['shape'])}, {c['call']}, max |x| = {result['extent']:.0f} "
        f"(min of {c['reps']} interleaved rounds)",
        f"{'method':<10} {'min ms':>10} {'vs absorbed':>12} {'median ms':>10} {'iterations':>11}",
    ]
    for r in result["timing"]:
        it = result["mean_iterations"][r["method"]]
        lines.append(f"{r['method']:<10} {r['min_ms']:10.1f} {r['ratio_vs_absorbed']:11.2f}x "
                     f"{r['median_ms']:10.1f} {it:11.1f}")  # fmt: skip
    lines.append(f"largest |P_absorbed - P_log loop|: {result['max_abs_diff']:.2e}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    from benchmarks.run import provenance_info  # (imports tqdm.auto: not for the chapter)

    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--record", action="store_true", help="write benchmarks/results/")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    start = time.perf_counter()
    result: dict = {"cases": {}}
    for case in CASES:
        result["cases"][case] = measure(case, a.reps)
        print(format_table(result["cases"][case]))
    result["provenance"] = provenance_info(argv, 0, "full", "cpu", "benchmarks.fallback", ())
    result["provenance"]["wall_time_s"] = time.perf_counter() - start
    if a.record:
        RESULT.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {RESULT}")
    return result


if __name__ == "__main__":
    main()
