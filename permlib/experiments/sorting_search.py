"""Choosing the Table 1 protocol on seeds that are not reported.

The sorting chapter reports seeds 0, 1 and 2. Protocol changes (noise annealing, more Gumbel
samples, per-list standardization inside the network) are compared here on seeds 100, 101 and 102,
at the N where Table 1 falls short, with the same training budget and tests as Table 1. Every run
is a cell ``{"variant", "n", "seed"}`` of ``<results dir>/sorting_table1_search.json``, with its
provenance and weights, so the choice is evidence, not a code comment::

    python -m permlib.experiments.sorting_search                      # every variant, N = 100
    python -m permlib.experiments.sorting_search --variant baseline standardize --n 80 120
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from permlib.experiments import harness
from permlib.experiments.sorting import EXPERIMENT, TABLES, SortingConfig

__all__ = ["SEARCH_SEEDS", "VARIANTS", "cells", "main", "run", "store", "summary"]

#: Seeds the protocol is chosen on (never reported in the chapter's tables).
SEARCH_SEEDS = (100, 101, 102)

#: Protocol variants: overrides of the Table 1 protocol.
VARIANTS: dict[str, dict] = {
    "baseline": {},
    "noise_cosine": {"noise_schedule": "cosine"},
    "samples_20": {"n_samples": 20},
    "standardize": {"standardize": True},
    "standardize_noise_cosine": {"standardize": True, "noise_schedule": "cosine"},
}

AXES = ("variant", "n", "seed")


def store(results_dir: str | Path | None = None) -> harness.ResultsStore:
    """``<results dir>/sorting_table1_search.json``."""
    return harness.ResultsStore(
        harness.results_dir(results_dir), "sorting", "table1_search", AXES,
        meta={"title": "Table 1 protocol search (seeds not reported)",
              "protocol": TABLES["table1"]["protocol"],
              "grid": {"variant": list(VARIANTS)}, "variants": VARIANTS},
    )  # fmt: skip


def cells(
    ns: Sequence[int] = (100,),
    seeds: Sequence[int] = SEARCH_SEEDS,
    variants: Sequence[str] | None = None,
) -> list[tuple[dict, SortingConfig]]:
    """``({"variant", "n", "seed"}, config)`` for each combination, seeds outermost."""
    spec = TABLES["table1"]
    unknown = set(variants or ()) - set(VARIANTS)
    if unknown:
        raise ValueError(f"unknown variants {sorted(unknown)}; known: {list(VARIANTS)}")
    protocol = spec["protocol"] | {"test_distributions": spec["test_distributions"]}
    return [
        ({"variant": v, "n": n, "seed": s},
         SortingConfig(n=n, method="gumbel_sinkhorn", seed=s, **(protocol | VARIANTS[v])))
        for s in seeds for n in ns for v in (variants or VARIANTS)
    ]  # fmt: skip


def run(
    ns: Sequence[int] = (100,),
    seeds: Sequence[int] = SEARCH_SEEDS,
    variants: Sequence[str] | None = None,
    *,
    results_dir: str | Path | None = None,
    checkpoint_dir: str | Path | None = None,
    progress: bool = True,
    device: str = "cpu",
) -> dict:
    """Run the missing search cells (resumable; stale cells are rerun)."""

    def one(cell: dict, config: SortingConfig, ckpt: Path) -> dict:
        return EXPERIMENT.run_cell(config, checkpoint=ckpt, progress=progress, device=device)

    return harness.run_grid(
        store(results_dir), cells(ns, seeds, variants), one, identity=SortingConfig.to_dict,
        checkpoint_dir=harness.checkpoint_dir(checkpoint_dir), on_stale="rerun",
        progress=progress, mode="search", device=device,
    )  # fmt: skip


def summary(results: dict | None, metric: str = "prop_any_wrong") -> pd.DataFrame:
    """Mean ± sd over seeds of ``metric`` per variant, N and test distribution (wide table)."""
    rows = [{"variant": r["cell"]["variant"], "N": r["cell"]["n"], "distribution": d,
             "value": m[metric]}
            for r in (results or {}).get("cells", []) for d, m in r["metrics"].items()]
    if not rows:
        return pd.DataFrame()
    df = pd.DataFrame(rows).groupby(["variant", "N", "distribution"], sort=False)["value"]
    out = df.agg(mean="mean", sd="std", seeds="count").reset_index()
    out["text"] = [f"{m:.3f} ± {s:.3f}" if s == s else f"{m:.3f}"
                   for m, s in zip(out["mean"], out["sd"], strict=True)]  # fmt: skip
    return out.pivot(index=["variant", "N"], columns="distribution", values="text")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m permlib.experiments.sorting_search",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--variant", nargs="+", choices=tuple(VARIANTS), default=None)
    p.add_argument("--n", nargs="+", type=int, default=[100])
    p.add_argument("--seed", nargs="+", type=int, default=list(SEARCH_SEEDS))
    p.add_argument("--results-dir", default=None)
    p.add_argument("--checkpoint-dir", default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    with harness.torch_threads(args.threads):
        data = run(args.n, args.seed, args.variant, results_dir=args.results_dir,
                   checkpoint_dir=args.checkpoint_dir, progress=not args.no_progress,
                   device=args.device)  # fmt: skip
    print(summary(data).to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
