"""How many strips the multi-digit CNN should see at a time: ``python -m benchmarks.cnn_chunk``.

The relaxations chapter's multi-digit task trains :class:`permlib.nn.multidigit.MultiDigitCNN`
on batches of ``20 n`` strips (``28 x 112`` images; 300 at ``n = 15``). Its protocol runs the
CNN on ``cnn_chunk`` strips at a time (32). This benchmark is the evidence for that choice: one
training step of the NeuralSort sorter (forward, backward and Adam update; the CNN is nearly all
of it) for each ``n`` and each chunk size (``0``: the whole batch at once), timed in interleaved
rounds in one process (:func:`benchmarks.timing.interleaved`); the minimum over rounds, per
strip, and its ratio to the whole batch's. Only ratios within one run mean anything on a shared
machine.

Results go to ``_build/bench/cnn_chunk_<device>.json`` (git-ignored), or with ``--record`` to
``benchmarks/results/`` (tracked), or to ``--out``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

from benchmarks.timing import interleaved

BENCH_DIR = Path(__file__).resolve().parent
RESULTS = BENCH_DIR / "results"
SCRATCH = BENCH_DIR.parent / "_build" / "bench"
NS = (3, 9, 15)
CHUNKS = (0, 16, 32, 64)


def step_fn(n: int, chunk: int, *, lists: int = 20, seed: int = 0, device: str = "cpu"):
    """One training step of the NeuralSort multi-digit sorter on a fixed batch of ``lists``
    random lists of ``n`` strips, with the CNN on ``chunk`` strips at a time (0: all)."""
    from permlib.experiments.relaxations import RelaxationsConfig, build, multidigit_loss

    config = RelaxationsConfig(task="multidigit", method="neuralsort", n=n, lr=1e-3,
                               batch_size=lists, cnn_chunk=chunk)  # fmt: skip
    gen = torch.Generator().manual_seed(seed)
    model = build(config, generator=gen).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    images = torch.rand(lists, n, 1, 28, 112, generator=gen).to(device)
    perm = torch.stack([torch.randperm(n, generator=gen) for _ in range(lists)]).to(device)

    def step() -> None:
        opt.zero_grad()
        multidigit_loss(model(images), perm).backward()
        opt.step()

    return step


def measure(ns=NS, chunks=CHUNKS, *, lists: int = 20, reps: int = 7, seed: int = 0,
            device: str = "cpu") -> list[dict]:  # fmt: skip
    """One row per (n, chunk): ``ms_per_strip`` (minimum over rounds) and ``vs_whole`` (its
    ratio to the whole batch's, when ``0`` is among ``chunks``)."""
    rows = []
    for n in ns:
        calls = {c: step_fn(n, c, lists=lists, seed=seed, device=device) for c in chunks}
        times = interleaved(calls, reps, device=device)
        strips = lists * n
        best = {c: 1000 * min(t) / strips for c, t in times.items()}
        for c in chunks:
            rows.append({"n": n, "strips": strips, "chunk": c, "ms_per_strip": best[c],
                         "vs_whole": best[c] / best[0] if 0 in best else None,
                         "rounds": len(times[c])})  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; returns the result (also written as JSON, see the module docstring)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda (where present)")
    ap.add_argument("--ns", type=int, nargs="+", default=list(NS), help="lists' lengths n")
    ap.add_argument("--chunks", type=int, nargs="+", default=list(CHUNKS),
                    help="strips per CNN call; 0: the whole batch (default 0 16 32 64)")
    ap.add_argument("--lists", type=int, default=20, help="lists per step (default 20)")
    ap.add_argument("--reps", type=int, default=7, help="timed rounds (default 7)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--record", action="store_true",
                    help="write to benchmarks/results/ instead of _build/bench/")
    ap.add_argument("--out", type=Path, default=None, help="folder for the JSON file")
    args = ap.parse_args(argv)
    if min(args.ns) < 1 or args.lists < 1 or args.reps < 1 or min(args.chunks) < 0:
        ap.error("--ns, --lists and --reps must be positive, --chunks non-negative")
    from benchmarks.run import parse_device, provenance_info, write_result

    dev = parse_device(ap, args.device)
    torch.set_num_threads(args.threads)
    start, load_start = time.perf_counter(), list(os.getloadavg())
    rows = measure(args.ns, args.chunks, lists=args.lists, reps=args.reps, seed=args.seed,
                   device=str(dev))  # fmt: skip
    prov = provenance_info(argv, args.seed, "cnn_chunk", str(dev), script="benchmarks.cnn_chunk",
                           packages=())  # fmt: skip
    prov["wall_s"] = round(time.perf_counter() - start, 2)
    prov["machine"]["load_average_1_5_15_min_start"] = load_start
    result = {"provenance": prov, "device": str(dev),
              "config": {"ns": args.ns, "chunks": args.chunks, "lists": args.lists,
                         "reps": args.reps, "threads": args.threads, "method": "neuralsort",
                         "step": "zero_grad, loss, backward, Adam step"},
              "rows": rows}  # fmt: skip
    print(f"one training step on {dev}, {args.threads} thread(s): ms per strip (x whole batch)")
    for r in rows:
        ratio = f"{r['vs_whole']:.2f}" if r["vs_whole"] is not None else "-"
        label = "whole" if r["chunk"] == 0 else str(r["chunk"])
        print(f"  n = {r['n']:3d} ({r['strips']:4d} strips)  chunk {label:>5}: "
              f"{r['ms_per_strip']:.2f} ms  (x {ratio})")
    path = write_result(result, f"cnn_chunk_{dev.type}", out=args.out, record=args.record,
                        results=RESULTS, scratch=SCRATCH)
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
