"""The one wall-clock timer of the benchmarks: best of rounds, optionally interleaved.

Every timing in ``benchmarks/`` (and in the performance chapter) goes through this module:

- :func:`time_rounds` times one callable ``rounds`` times and returns every round's seconds;
- :func:`best_seconds` is the minimum of :func:`time_rounds`;
- :func:`interleaved` times several callables in rotating order (round ``r`` starts with the
  ``r``-th callable), so that a slow phase of a shared machine hits every method alike and
  ratios within one run stay meaningful; each callable gets one untimed warm-up call first
  (JIT compilation, caches, thread pools).

On CUDA the timer synchronizes the device before starting the clock and after the call, since
kernels run asynchronously and ``fn()`` returns before they finish. ``device`` is a string or
a :class:`torch.device`; anything but a CUDA device needs no synchronization.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping

import torch

__all__ = ["best_seconds", "interleaved", "ratio_rows", "summary", "sync_for", "time_rounds"]

Device = str | torch.device


def sync_for(device: Device | None) -> Callable[[], None]:
    """What waits for ``device``'s queued work: ``torch.cuda.synchronize`` or a no-op."""
    if device is not None and torch.device(device).type == "cuda":
        dev = torch.device(device)
        return lambda: torch.cuda.synchronize(dev)
    return lambda: None


def _check_rounds(rounds: int) -> None:
    if not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"rounds must be a positive int, got {rounds!r}")


def time_rounds(fn: Callable[[], object], rounds: int, device: Device = "cpu") -> list[float]:
    """Wall seconds of each of ``rounds`` calls of ``fn()`` (synchronized on CUDA), no warm-up."""
    _check_rounds(rounds)
    sync = sync_for(device)
    out = []
    for _ in range(rounds):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        out.append(time.perf_counter() - t0)
    return out


def best_seconds(fn: Callable[[], object], rounds: int, device: Device = "cpu") -> float:
    """Minimum wall time of ``fn()`` over ``rounds`` calls (synchronizing on CUDA)."""
    return min(time_rounds(fn, rounds, device))


def interleaved(
    calls: Mapping[str, Callable[[], object]],
    reps: int,
    budget_s: float = float("inf"),
    device: Device = "cpu",
) -> dict[str, list[float]]:
    """Seconds of ``reps`` rounds of each callable, timed in rotating order after a warm-up.

    A callable whose warm-up call took longer than ``budget_s / reps`` gets fewer rounds
    (``budget_s / warm-up``, at least 2 where ``reps >= 2``), so one slow peer does not stretch
    the run.
    Returns ``{name: [seconds per round]}``.
    """
    _check_rounds(reps)
    if not budget_s > 0:
        raise ValueError(f"budget_s must be positive, got {budget_s!r}")
    names = list(calls)
    sync = sync_for(device)
    times: dict[str, list[float]] = {k: [] for k in names}
    first = {k: time_rounds(calls[k], 1, device)[0] for k in names}  # warm-up, sizes the rounds
    rounds = {k: min(reps, max(2, int(min(budget_s / max(first[k], 1e-9), reps)))) for k in names}
    for r in range(max(rounds.values(), default=0)):
        shift = r % len(names)
        for k in names[shift:] + names[:shift]:
            if len(times[k]) < rounds[k]:
                sync()
                t0 = time.perf_counter()
                calls[k]()
                sync()
                times[k].append(time.perf_counter() - t0)
    return times


def summary(seconds: list[float]) -> dict:
    """``{"min_ms", "median_ms", "reps"}`` of a list of round times in seconds."""
    if not seconds:
        raise ValueError("summary needs at least one round time")
    return {
        "min_ms": 1e3 * min(seconds),
        "median_ms": 1e3 * statistics.median(seconds),
        "reps": len(seconds),
    }


def ratio_rows(seconds: dict[str, list[float]], base: str) -> list[dict]:
    """One row per method of :func:`interleaved`'s result: :func:`summary` plus ``"method"``,
    ``"ratio_vs_<base>"`` and ``"median_ratio_vs_<base>"`` (ratios of the minima and of the
    medians against method ``base``: on a shared machine, look at both)."""
    if base not in seconds:
        raise KeyError(f"base {base!r} is not among the timed methods {tuple(seconds)}")
    low, mid = min(seconds[base]), statistics.median(seconds[base])
    return [
        {
            **summary(v),
            "method": k,
            f"ratio_vs_{base}": min(v) / low,
            f"median_ratio_vs_{base}": statistics.median(v) / mid,
        }
        for k, v in seconds.items()
    ]
