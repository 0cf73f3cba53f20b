"""Sort a handful of numbers with the Sinkhorn operator: ``python -m permlib.demo``.

By the rearrangement inequality, the permutation maximizing ``sum_i x_i * pos_i`` puts the numbers
in increasing order, so the scores ``x_i * j`` (item i at position j) make sorting a matching
problem. The Sinkhorn operator relaxes it; as the temperature falls it approaches the sort.
"""

from __future__ import annotations

import argparse
import warnings

import torch

from permlib import ConvergenceWarning, matching, sinkhorn
from permlib.metrics import prop_wrong


def sorting_scores(x: torch.Tensor) -> torch.Tensor:
    """``(..., N) -> (..., N, N)``: score of putting item ``i`` at position ``j`` is ``x_i * j``."""
    n = x.shape[-1]
    positions = torch.arange(n, dtype=x.dtype, device=x.device) / max(n - 1, 1)
    return x.unsqueeze(-1) * positions


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=8, help="how many numbers to sort")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    x = torch.rand(args.n, generator=torch.Generator().manual_seed(args.seed))
    scores = sorting_scores(x)
    true_perm = torch.argsort(torch.argsort(x))  # position of each number in sorted order
    print(f"numbers:        {[round(v, 3) for v in x.tolist()]}")
    print(f"sorted (torch): {[round(v, 3) for v in x.sort().values.tolist()]}")
    print("Each line reads the convergence report (return_info=True), so the demo prints it in\n"
          "place of the ConvergenceWarning that an unconverged call would otherwise issue.")
    for tau in (1.0, 0.1, 0.01, 0.001):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # reported on the line below
            p, info = sinkhorn(scores, tau=tau, n_iters=5000, tol=1e-4, return_info=True)
        soft_positions = p @ torch.arange(args.n, dtype=p.dtype)
        status = "converged" if info.all_converged else "NOT converged"
        advice = "" if info.all_converged else "; raise n_iters or tau"
        print(
            f"tau={tau:<6g} expected positions {[round(v, 2) for v in soft_positions.tolist()]}"
            f"  ({status} after {info.n_iters.item()} iterations, residual "
            f"{info.residual.item():.1e}{advice})"
        )
    perm = matching(scores)
    result = torch.empty_like(x).scatter_(0, perm, x)
    print(f"sorted (M(X)):  {[round(v, 3) for v in result.tolist()]}")
    print(f"proportion wrong vs argsort: {prop_wrong(perm, true_perm).item():.2f}")


if __name__ == "__main__":
    main()
