"""Peak memory of one Sinkhorn forward+backward: CUDA's allocator statistics, or on the CPU the
process's RSS high-water mark.

On CUDA the probe runs in this process: ``torch.cuda.reset_peak_memory_stats``, then the peak is
``torch.cuda.max_memory_allocated`` after forward+backward minus ``memory_allocated`` before it.

CPU tensors come from malloc, which tracemalloc does not see, and torch keeps no CPU allocator
statistics. So each measurement runs in a fresh subprocess (``python -m benchmarks.memory``)
with glibc's mmap threshold pinned low (``MALLOC_MMAP_THRESHOLD_``): every tensor larger than
64 KiB is then its own mapping, returned to the system when freed, and the resident set
tracks live tensor memory. Before each measurement the kernel's high-water mark is reset
(``/proc/self/clear_refs``); the reported peak is ``VmHWM`` after forward+backward minus
``VmRSS`` before it, with inputs allocated and one warm-up run done, so imports and one-off
allocations do not count. Linux only; elsewhere the probe reports ``None``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

import permlib
from permlib.testing import sinkhorn_loop

METHODS = {
    "permlib unroll": lambda x, n: permlib.sinkhorn(x, n_iters=n, backward="unroll"),
    "permlib implicit": lambda x, n: permlib.sinkhorn(x, n_iters=n, backward="implicit"),
    "textbook loop": lambda x, n: sinkhorn_loop(x, n),
}
ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
#: How the peak is measured on each device type (recorded with every memory row).
HOW = {
    "cpu": "rise of the RSS high-water mark in a fresh subprocess (VmHWM - VmRSS before)",
    "cuda": "torch.cuda.max_memory_allocated after forward+backward - memory_allocated before",
}


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def _peak(fn) -> int | None:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        before = _status("VmRSS")
    except OSError:
        return None
    fn()
    return max(_status("VmHWM") - before, 0)


def _peak_cuda(fn, device: torch.device) -> int:
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    fn()
    torch.cuda.synchronize(device)
    return max(torch.cuda.max_memory_allocated(device) - before, 0)


def peak_bytes(fn, device: str | torch.device = "cpu") -> int | None:
    """Peak bytes of ``fn()`` above what was in use before it, as :data:`HOW` says for the
    device type: CUDA's allocator statistics, or the rise of the RSS high-water mark (meaningful
    in a process started with :data:`ENV`; ``None`` off Linux)."""
    dev = torch.device(device)
    return _peak_cuda(fn, dev) if dev.type == "cuda" else _peak(fn)


def probe(
    method: str, batch: int, n: int, iters: list[int], seed: int, device: str = "cpu"
) -> list[int | None]:
    """In this process: peak bytes of forward+backward of ``method`` for each ``n_iters``.

    Inputs are ``(batch, n, n)`` float32 scores and weights drawn on the CPU from ``seed`` and
    moved to ``device``; the loss is ``sum(P * w)``.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
    dev = torch.device(device)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, n, n, generator=g).to(dev)
    w = torch.randn(batch, n, n, generator=g).to(dev)
    f = METHODS[method]

    def run(k):
        xg = x.clone().requires_grad_()
        (grad,) = torch.autograd.grad((f(xg, k) * w).sum(), xg)
        del grad

    run(min(iters))  # warm-up: thread pools, lazy initialisation
    return [peak_bytes(lambda k=k: run(k), dev) for k in iters]


def measure(
    method: str, batch: int, n: int, iters: list[int], seed: int, device: str = "cpu"
) -> list[int | None]:
    """Peak bytes per ``n_iters``: :func:`probe` in this process on CUDA, else in a fresh
    subprocess with the malloc settings above."""
    if torch.device(device).type == "cuda":
        return probe(method, batch, n, iters, seed, device)
    cmd = [sys.executable, "-m", "benchmarks.memory", method, str(batch), str(n), str(seed)]
    cmd += [str(k) for k in iters]
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, **ENV, "PYTHONPATH": str(root)}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=root, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("method", choices=list(METHODS))
    ap.add_argument("batch", type=int)
    ap.add_argument("n", type=int)
    ap.add_argument("seed", type=int)
    ap.add_argument("iters", type=int, nargs="+")
    a = ap.parse_args()
    print(json.dumps(probe(a.method, a.batch, a.n, a.iters, a.seed)))


if __name__ == "__main__":
    main()
