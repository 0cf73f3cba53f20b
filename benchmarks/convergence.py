"""What the convergence report, the tolerance stop and the implicit backward cost, against fixed
unrolling: ``python -m benchmarks.convergence [--device cpu] [--b 128 --n 100 --l 20]``.

Four forward+backward calls of :func:`permlib.sinkhorn` on the same ``(B, N, N)`` N(0, 1) scores
(tau = 1, loss ``sum(P * W)``), timed in interleaved rounds (minimum of the rounds, see
:mod:`benchmarks.timing`):

- ``fixed``: ``n_iters=L``, the papers' fixed unrolling (the reference of every ratio);
- ``tol``: ``tol=1e-30``, the smallest tolerance there is in practice: an item stops only where
  its residual is exactly zero, i.e. at the fixed point in floating point. The loop runs all
  ``L`` iterations as long as one item has not stopped, so the time is that of ``L``
  iterations plus the convergence checks and the per-item stopping machinery (frozen items,
  masked backward). In float32 at tau = 1, N = 100 many items do reach an exactly zero residual
  within 20 iterations; the share of items that stopped before ``L`` is reported
  (``tol_stopped_early``). The :class:`permlib.ConvergenceWarning` for the others is silenced;
- ``return_info``: fixed unrolling plus the per-item report;
- ``implicit``: ``backward="implicit"`` (conjugate-gradient adjoint solve).

Then the peak memory of forward+backward, unrolled against implicit, at ``L`` = 10, 20, 50,
measured as :mod:`benchmarks.memory` does (CUDA allocator statistics, or the RSS high-water
mark of a fresh subprocess on the CPU). The machine may be shared: only the ratios within one
run mean anything.
"""

from __future__ import annotations

import argparse
import warnings

import torch

import permlib
from benchmarks import memory
from benchmarks.timing import interleaved, ratio_rows

__all__ = ["measure", "main"]

MEMORY_ITERS = (10, 20, 50)
UNREACHABLE_TOL = 1e-30


def _calls(x: torch.Tensor, w: torch.Tensor, n_iters: int) -> dict:
    """The four forward+backward callables, by name."""

    def fwd_bwd(**kwargs):
        def call():
            xg = x.clone().requires_grad_()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", permlib.ConvergenceWarning)
                out = permlib.sinkhorn(xg, n_iters=n_iters, **kwargs)
            p = out[0] if isinstance(out, tuple) else out
            (grad,) = torch.autograd.grad((p * w).sum(), xg)
            return grad

        return call

    return {
        "fixed": fwd_bwd(),
        "tol": fwd_bwd(tol=UNREACHABLE_TOL),
        "return_info": fwd_bwd(return_info=True),
        "implicit": fwd_bwd(backward="implicit"),
    }


def measure(
    device: str = "cpu",
    B: int = 128,  # noqa: N803 (the benchmark's names)
    N: int = 100,  # noqa: N803
    L: int = 20,  # noqa: N803
    dtype: torch.dtype = torch.float32,
    reps: int = 5,
    seed: int = 0,
    memory_iters: tuple[int, ...] = MEMORY_ITERS,
) -> dict:
    """Time the four variants and measure unrolled vs implicit peak memory.

    Args:
        device: where to run (``"cpu"`` or ``"cuda"``).
        B, N, L: batch size, matrix size, iterations of the timed calls.
        dtype: of the scores (the memory probe uses float32, as :mod:`benchmarks.memory` does).
        reps: interleaved rounds per variant (the minimum is reported).
        seed: of the scores and weights (drawn on the CPU, moved to ``device``).
        memory_iters: the ``L`` values of the memory comparison (empty: skip it).

    Returns:
        ``{"config": {...}, "timing": [row, ...], "memory": [row, ...]}``; ``config`` also
        holds ``tol_stopped_early``, the share of items the ``tol`` variant stopped before
        ``L`` (residual exactly zero). A timing row is ``{"method", "min_ms", "median_ms",
        "reps", "ratio_vs_fixed", "median_ratio_vs_fixed"}`` (ratios of the minima and of the
        medians: on a shared machine, look at both); a memory row is
        ``{"L", "unroll_mb", "implicit_mb", "ratio_implicit_vs_unroll"}`` (MB = 1e6 bytes;
        ``None`` where the platform gives no measurement).
    """
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, N, N, generator=g, dtype=dtype).to(device)
    w = torch.randn(B, N, N, generator=g, dtype=dtype).to(device)
    seconds = interleaved(_calls(x, w, L), reps, device=device)
    timing = ratio_rows(seconds, "fixed")
    rows = []
    if memory_iters:
        iters = list(memory_iters)
        unroll = memory.measure("permlib unroll", B, N, iters, seed, device)
        implicit = memory.measure("permlib implicit", B, N, iters, seed, device)
        for k, u, i in zip(iters, unroll, implicit, strict=True):
            rows.append(
                {
                    "L": k,
                    "unroll_mb": None if u is None else u / 1e6,
                    "implicit_mb": None if i is None else i / 1e6,
                    "ratio_implicit_vs_unroll": None if not u or i is None else i / u,
                }
            )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", permlib.ConvergenceWarning)
        _, info = permlib.sinkhorn(x, n_iters=L, tol=UNREACHABLE_TOL, return_info=True)
    config = {"device": str(device), "B": B, "N": N, "L": L, "dtype": str(dtype), "reps": reps}
    config["seed"] = seed
    config["tol_stopped_early"] = float((info.n_iters < L).float().mean())
    return {"config": config, "timing": timing, "memory": rows}


def format_table(result: dict) -> str:
    """The result of :func:`measure` as two plain-text tables."""
    c = result["config"]
    lines = [
        f"Sinkhorn forward+backward, B={c['B']} N={c['N']} L={c['L']} {c['dtype']} "
        f"on {c['device']} (min of {c['reps']} interleaved rounds; with tol, "
        f"{100 * c['tol_stopped_early']:.0f}% of the items stopped before L)",
        f"{'method':<12} {'min ms':>9} {'vs fixed':>9} {'median ms':>10} {'vs fixed':>9}",
    ]
    for r in result["timing"]:
        lines.append(
            f"{r['method']:<12} {r['min_ms']:9.2f} {r['ratio_vs_fixed']:8.2f}x "
            f"{r['median_ms']:10.2f} {r['median_ratio_vs_fixed']:8.2f}x"
        )
    if result["memory"]:
        lines += ["", f"{'peak MB':<8} {'unroll':>9} {'implicit':>9} {'ratio':>7}"]
        for r in result["memory"]:
            u, i, q = r["unroll_mb"], r["implicit_mb"], r["ratio_implicit_vs_unroll"]
            lines.append(
                f"L={r['L']:<6} {'-' if u is None else f'{u:9.1f}':>9} "
                f"{'-' if i is None else f'{i:9.1f}':>9} {'-' if q is None else f'{q:6.2f}x':>7}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--b", type=int, default=128)
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--l", type=int, default=20)
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--no-memory", action="store_true", help="skip the memory comparison")
    a = ap.parse_args(argv)
    result = measure(
        a.device,
        a.b,
        a.n,
        a.l,
        getattr(torch, a.dtype),
        a.reps,
        memory_iters=() if a.no_memory else MEMORY_ITERS,
    )
    print(format_table(result))


if __name__ == "__main__":
    main()
