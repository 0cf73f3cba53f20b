"""Exact linear assignment M(X): the tau -> 0 limit of the Sinkhorn operator.

``matching(scores)`` returns, for each ``(N, N)`` matrix of a batch, the permutation that maximizes
``sum_i scores[i, perm[i]]`` (Mena et al., 2017, ``mena2017sinkhorn``, eq. 2). The solving is done
by real assignment solvers, never by a hand-written Hungarian algorithm: lapx's multi-threaded
batched Jonker-Volgenant (``lapjvr_batch``), or scipy's ``linear_sum_assignment`` one matrix at a
time. Index tensors and permutation matrices are converted by :mod:`permlib.permutations`.
"""

from __future__ import annotations

from typing import Literal

import lap
import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from permlib._checks import check_float_matrix, check_has_data

__all__ = ["matching"]

Solver = Literal["auto", "lapx", "scipy"]
_SOLVERS = ("auto", "lapx", "scipy")


def _solve_lapx(costs: np.ndarray) -> np.ndarray:
    _, cols = lap.lapjvr_batch(costs, return_cost=False)
    # one concatenation, then a view: about 3x faster than np.stack over 1024 small arrays
    return np.concatenate(cols).reshape(costs.shape[:2])


def _solve_scipy(costs: np.ndarray) -> np.ndarray:
    return np.concatenate([linear_sum_assignment(c)[1] for c in costs]).reshape(costs.shape[:2])


def _is_transformed(x: torch.Tensor) -> bool:
    """Whether ``x`` is wrapped by a ``torch.func`` transform (vmap's batching, grad tracking)."""
    return torch._C._functorch.is_functorch_wrapped_tensor(x)


class _Matching(torch.autograd.Function):
    """:func:`matching` for ``torch.func``: the numpy solve on the unwrapped scores, a batched
    solve as the ``vmap`` rule, and an integer output that is marked non-differentiable."""

    @staticmethod
    def forward(scores: torch.Tensor, maximize: bool, solver: str) -> torch.Tensor:  # noqa: D102
        return _solve(scores, maximize, solver)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:  # noqa: D102
        ctx.mark_non_differentiable(output)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[None, None, None]:  # noqa: D102
        return None, None, None

    @staticmethod
    def jvp(ctx, *tangents: torch.Tensor | None) -> None:  # noqa: D102
        return None

    @staticmethod
    def vmap(info, in_dims, scores: torch.Tensor, maximize: bool, solver: str):  # noqa: D102
        # the mapped dimension becomes one more batch dimension of a single batched solve
        return matching(scores.movedim(in_dims[0], 0), maximize, solver), 0


def matching(scores: torch.Tensor, maximize: bool = True, solver: Solver = "auto") -> torch.Tensor:
    """Exact matching (linear assignment) of a batch of square score matrices.

    Args:
        scores: ``(..., N, N)`` floating, finite. Rows index items, columns index positions.
            An empty batch (``(0, N, N)``) gives an empty ``(0, N)``. Meta tensors (shapes
            without values) are refused with a ``ValueError``: the solution depends on the
            values.
        maximize: maximize the total score (the default, scores as log-potentials); with
            ``False`` the entries are costs and the total is minimized.
        solver: ``"auto"`` (lapx's batched Jonker-Volgenant ``lapjvr_batch``, the fastest of
            scipy's and lapx's solvers at every size measured on our 2-core CPU machine: see
            ``benchmarks/``), ``"lapx"`` or ``"scipy"``. Costs are solved in the scores'
            precision: float64 for float64, float32 for float32 and lower.

    Returns:
        ``perm``: ``(..., N)`` int64 on ``scores``' device; ``perm[..., i]`` is the column given
        to row ``i``. Not differentiable (use :func:`permlib.hungarian_ste` for gradients).

    Under ``torch.func`` transforms, ``vmap`` maps the solve over the mapped dimension as one
    batched solve, and ``grad``/``jacrev``/``jacfwd`` see a non-differentiable output.
    """
    check_float_matrix(scores, "scores", finite=False)
    if solver not in _SOLVERS:
        raise ValueError(f"solver must be one of {_SOLVERS}, got {solver!r}")
    check_has_data(scores, "scores", "matching")
    if _is_transformed(scores):
        return _Matching.apply(scores, maximize, solver)
    return _solve(scores, maximize, solver)


def _solve(scores: torch.Tensor, maximize: bool, solver: str) -> torch.Tensor:
    """:func:`matching` of checked, plain (untransformed) scores."""
    batch, n = scores.shape[:-2], scores.shape[-1]
    # Everything from here on is numpy: small torch ops on a busy CPU each wait for the OpenMP
    # pool, which costs more than the solve itself for batches of small matrices; and for large
    # ones, torch's multi-threaded negation and min/max made the whole call about 25% slower
    # (its OpenMP threads keep spinning and compete with lapx's workers on 2 cores).
    flat = scores.detach().reshape(-1, n, n).cpu()
    # Negating is exact. float32 problems are solved in float32 (half the memory traffic); lapx
    # then searches in float32 too, which found the optimum of the scores as given in every case
    # we tried, N = 9 to 80, near ties and large offsets included (tests/test_matching.py).
    if flat.dtype not in (torch.float32, torch.float64):
        flat = flat.float()  # exact for float16 / bfloat16
    arr = flat.numpy()
    costs = np.negative(arr) if maximize else np.ascontiguousarray(arr)
    if costs.size and not (np.isfinite(costs.min()) and np.isfinite(costs.max())):  # NaN spreads
        raise ValueError("scores contains invalid numeric entries (NaN or inf)")
    if costs.shape[0] == 0:
        cols = np.zeros((0, n), dtype=np.int64)
    elif n == 1:
        cols = np.zeros((costs.shape[0], 1), dtype=np.int64)
    elif solver == "scipy":
        cols = _solve_scipy(costs)
    else:
        cols = _solve_lapx(costs)
    perm = torch.from_numpy(cols.astype(np.int64, copy=False))
    return perm.reshape(batch + (n,)).to(scores.device)
