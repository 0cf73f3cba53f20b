"""What the log-domain fallback of :func:`permlib.sinkhorn` costs on a trained network's scores,
and what absorbing its first iteration saves: ``python -m benchmarks.fallback [--record]``.

The scaling (exp) domain of :func:`permlib.sinkhorn` is fast, but where the scalings would
over- or underflow (small ``tau`` on widely spread scores) the call falls back to the log
domain. A trained sorting network reaches that case: the Gumbel-Sinkhorn network of Table 5
(:cite:`mena2018learning` protocol, ``N = 250``, seed 1, its recorded weights in
``benchmarks/results/artifacts/sorting_table5/``) has ``|log_alpha|`` near 100 at ``tau = 1``.
Forward+backward of the head's call (``n_samples`` Gumbel perturbations of one training batch,
``L = 20``, loss ``sum(P * W)``) is timed, in interleaved rounds (minimum and median), as

- ``absorbed``: :func:`permlib.sinkhorn` as it is: one log-domain iteration, the other
  ``L - 1`` in the scaling domain on its result, where those are in range;
- ``log loop``: the whole loop in the log domain (the fallback before the absorption);
- ``in range``: the same shape on N(0, 1) scores, which never leave the scaling domain (what
  the absorbed call is compared with).

The plans of ``absorbed`` and ``log loop`` are compared too (largest difference: rounding).
The machine may be shared: only ratios within one run mean anything. ``--record`` writes
``benchmarks/results/sinkhorn_fallback_<device>.json`` with the run's provenance.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

import permlib
from benchmarks.timing import interleaved, summary
from permlib.data import sample_sorting_batch
from permlib.experiments.sorting import TABLES, SortingConfig
from permlib.sinkhorn import _log_sinkhorn

__all__ = ["WEIGHTS", "RESULT", "load", "measure", "main"]

BENCH_DIR = Path(__file__).resolve().parent  # repository code: its own folder, not permlib's
RESULTS = BENCH_DIR / "results"

#: The trained network whose scores are timed (recorded weights of a Table 5 cell).
WEIGHTS = (
    BENCH_DIR / "results" / "artifacts" / "sorting_table5"
    / "method=gumbel_sinkhorn,n=250,seed=1" / "model.pt"
)  # fmt: skip


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
    keys = {"config", "timing", "max_abs_diff", "extent", "provenance"}
    missing = keys - set(data) if isinstance(data, dict) else keys
    if missing:
        raise ValueError(f"{path}: not a benchmarks.fallback result (no {sorted(missing)})")
    return data


def trained_scores(n: int = 250, batch: int = 10, seed: int = 0) -> torch.Tensor:
    """The perturbed scores ``(S, B, N, N)`` the trained Table 5 head feeds to Sinkhorn."""
    if not WEIGHTS.is_file():
        raise FileNotFoundError(f"no recorded weights at {WEIGHTS}")
    config = SortingConfig(n=n, method="gumbel_sinkhorn", **TABLES["table5"]["protocol"])
    model = config.build()
    try:
        model.load_state_dict(torch.load(WEIGHTS, map_location="cpu", weights_only=True))
    except Exception as err:  # a corrupt or foreign file: say which
        raise RuntimeError(f"cannot load the weights in {WEIGHTS}: {err}") from err
    g = torch.Generator().manual_seed(seed)
    x = sample_sorting_batch(batch, n, generator=g).x
    with torch.no_grad():
        log_alpha = model.log_alpha(x)
        head = model.head
        return permlib.perturb(log_alpha, head.n_samples, head.noise_factor, generator=g)


def measure(reps: int = 3, n_iters: int = 20, seed: int = 0, batch: int = 10) -> dict:
    """Time the three variants (see the module docstring) on ``batch`` lists; returns
    ``{"config", "timing", "max_abs_diff", "extent"}``, timing rows as in
    :mod:`benchmarks.convergence` (ratios against ``absorbed``)."""
    x = trained_scores(batch=batch, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    w = torch.randn(x.shape, generator=g)
    normal = torch.randn(x.shape, generator=g)

    def fwd_bwd(scores, absorb=True):
        def call():
            xg = scores.clone().requires_grad_()
            p = _log_sinkhorn(xg, 1.0, n_iters, None, "unroll", False, 2, True, absorb=absorb)
            (grad,) = torch.autograd.grad((p * w).sum(), xg)
            return p.detach()

        return call

    calls = {
        "absorbed": fwd_bwd(x),
        "log loop": fwd_bwd(x, absorb=False),
        "in range": fwd_bwd(normal),
    }
    diff = float((calls["absorbed"]() - calls["log loop"]()).abs().max())
    seconds = interleaved(calls, reps)
    base, base_med = min(seconds["absorbed"]), statistics.median(seconds["absorbed"])
    timing = [
        {
            **summary(v),
            "method": k,
            "ratio_vs_absorbed": min(v) / base,
            "median_ratio_vs_absorbed": statistics.median(v) / base_med,
        }
        for k, v in seconds.items()
    ]
    config = {"shape": list(x.shape), "L": n_iters, "tau": 1.0, "dtype": "float32",
              "reps": reps, "seed": seed, "weights": str(WEIGHTS.relative_to(BENCH_DIR.parent)),
              "device": "cpu", "threads": torch.get_num_threads()}  # fmt: skip
    extent = float(x.abs().max())
    return {"config": config, "timing": timing, "max_abs_diff": diff, "extent": extent}


def format_table(result: dict) -> str:
    """The result of :func:`measure` as a plain-text table."""
    c = result["config"]
    lines = [
        f"Sinkhorn forward+backward on trained Table 5 scores {tuple(c['shape'])}, L={c['L']}, "
        f"max |x| = {result['extent']:.0f} (min of {c['reps']} interleaved rounds)",
        f"{'method':<10} {'min ms':>10} {'vs absorbed':>12} {'median ms':>10}",
    ]
    for r in result["timing"]:
        lines.append(f"{r['method']:<10} {r['min_ms']:10.1f} {r['ratio_vs_absorbed']:11.2f}x "
                     f"{r['median_ms']:10.1f}")  # fmt: skip
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
    result = measure(a.reps)
    print(format_table(result))
    result["provenance"] = provenance_info(argv, 0, "full", "cpu", "benchmarks.fallback", ())
    result["provenance"]["wall_time_s"] = time.perf_counter() - start
    if a.record:
        RESULT.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {RESULT}")
    return result


if __name__ == "__main__":
    main()
