"""Peak memory of one Sinkhorn forward+backward, measured as the process's RSS high-water mark.

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
from benchmarks.textbook import sinkhorn_loop

METHODS = {
    "permlib unroll": lambda x, n: permlib.sinkhorn(x, n_iters=n, backward="unroll"),
    "permlib implicit": lambda x, n: permlib.sinkhorn(x, n_iters=n, backward="implicit"),
    "textbook loop": lambda x, n: sinkhorn_loop(x, n),
}
ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}


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


def probe(method: str, batch: int, n: int, iters: list[int], seed: int) -> list[int | None]:
    """In this process: peak bytes of forward+backward of ``method`` for each ``n_iters``."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, n, n, generator=g)
    w = torch.randn(batch, n, n, generator=g)
    f = METHODS[method]

    def run(k):
        xg = x.clone().requires_grad_()
        (grad,) = torch.autograd.grad((f(xg, k) * w).sum(), xg)
        del grad

    run(min(iters))  # warm-up: thread pools, lazy initialisation
    return [_peak(lambda k=k: run(k)) for k in iters]


def measure(method: str, batch: int, n: int, iters: list[int], seed: int) -> list[int | None]:
    """:func:`probe` in a fresh subprocess with the malloc settings above."""
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
