"""Exact linear assignment M(X): the tau -> 0 limit of the Sinkhorn operator.

``matching(scores)`` returns, for each ``(N, N)`` matrix of a batch, the permutation that maximizes
``sum_i scores[i, perm[i]]`` (Mena et al., 2017, ``mena2017sinkhorn``, eq. 2). The solving is done
by real assignment solvers, never by a hand-written Hungarian algorithm: lapx's multi-threaded
batched Jonker-Volgenant (``lapjvr_batch``), or scipy's ``linear_sum_assignment`` one matrix at a
time. Index tensors and permutation matrices are converted by :mod:`permlib.permutations`.

Beyond square problems (as scipy's ``linear_sum_assignment``): rectangular ``(N, M)`` scores
(every row assigned when ``N <= M``, every column when ``N > M``), forbidden pairs (``-inf``
scores, ``+inf`` costs), and batches of problems of different sizes padded to one shape
(``n_rows``/``n_cols`` or a boolean ``mask``). The result is then a partial permutation:
``perm[..., i]`` is the column of row ``i``, or ``-1`` for a row left unassigned.
"""

from __future__ import annotations

from typing import Literal

import lap
import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from permlib._checks import (
    check_float_matrix,
    check_has_data,
    entry_mask,
    hall_violation,
    infeasible_error,
)

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
    def forward(  # noqa: D102
        scores: torch.Tensor, maximize: bool, solver: str, mask: torch.Tensor | None
    ) -> torch.Tensor:
        return _solve(scores, maximize, solver, mask)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:  # noqa: D102
        ctx.mark_non_differentiable(output)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[None, None, None, None]:  # noqa: D102
        return None, None, None, None

    @staticmethod
    def jvp(ctx, *tangents: torch.Tensor | None) -> None:  # noqa: D102
        return None

    @staticmethod
    def vmap(info, in_dims, scores, maximize, solver, mask):  # noqa: D102
        # the mapped dimension becomes one more batch dimension of a single batched solve
        scores = scores.movedim(in_dims[0], 0) if in_dims[0] is not None else scores.expand(
            info.batch_size, *scores.shape
        )
        if mask is not None:
            mask = mask.movedim(in_dims[3], 0) if in_dims[3] is not None else mask.expand(
                info.batch_size, *mask.shape
            )
            mask = mask.expand(scores.shape)
        return _Matching.apply(scores, maximize, solver, mask), 0


def matching(
    scores: torch.Tensor,
    maximize: bool = True,
    solver: Solver = "auto",
    *,
    n_rows: int | torch.Tensor | None = None,
    n_cols: int | torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Exact matching (linear assignment) of a batch of score matrices, square or rectangular.

    Args:
        scores: ``(..., N, M)`` floating. Rows index items, columns index positions. ``-inf``
            (``+inf`` with ``maximize=False``) marks a forbidden pair, never used; NaN and an
            infinity of the other sign are errors. An empty batch (``(0, N, M)``) gives an
            empty ``(0, N)``. Meta tensors (shapes without values) are refused with a
            ``ValueError``: the solution depends on the values.
        maximize: maximize the total score (the default, scores as log-potentials); with
            ``False`` the entries are costs and the total is minimized.
        solver: ``"auto"`` (lapx's batched Jonker-Volgenant ``lapjvr_batch``, the fastest of
            scipy's and lapx's solvers at every size measured on our 2-core CPU machine: see
            ``benchmarks/``), ``"lapx"`` or ``"scipy"``. Costs are solved in the scores'
            precision: float64 for float64, float32 for float32 and lower. Padded batches
            (``n_rows``/``n_cols``/``mask``) are solved item by item with scipy, whatever
            ``solver`` says.
        n_rows, n_cols: sizes of a padded batch: ints, or integer tensors of the batch shape
            ``scores.shape[:-2]`` (or broadcastable to it); item ``b`` is the
            ``(n_rows[b], n_cols[b])`` top-left block of ``scores[b]``, the rest is padding
            (never assigned; its values are never read, NaN included).
        mask: bool, ``scores``' shape (or broadcastable to it): ``True`` where an entry exists.
            A row (column) without any ``True`` is padding: absent from the problem; a
            ``False`` entry of a present row and a present column is a forbidden pair (as
            ``-inf``); values under ``False`` are never read. Combined with
            ``n_rows``/``n_cols`` when both are given. A present
            row whose entries are all forbidden makes the problem infeasible (unlike an
            all-``False`` row, which is absent).

    Returns:
        ``perm``: ``(..., N)`` int64 on ``scores``' device; ``perm[..., i]`` is the column given
        to row ``i``, or ``-1`` when row ``i`` is not assigned. For each item with ``R``
        present rows and ``C`` present columns (``N`` and ``M`` without padding): when
        ``R <= C`` every present row is assigned (an injective map of the rows into the
        columns; a permutation when ``R = C``), when ``R > C`` every present column is
        assigned to one row and ``R - C`` present rows get ``-1``; padded rows always get
        ``-1``. The total score of the assigned pairs is the largest possible (smallest with
        ``maximize=False``). ``permutation_matrix(perm, m=M)`` gives the ``(..., N, M)`` 0/1
        matrix (zero rows for ``-1``), ``invert_permutation(perm, m=M)`` the row of each column.
        Not differentiable (use :func:`permlib.hungarian_ste` for gradients).

    Raises:
        ValueError: when an item has no feasible assignment (forbidden pairs leave some set of
            rows, or columns when ``R > C``, fewer partners than members, Hall's condition),
            naming the batch item and that set.

    Under ``torch.func`` transforms, ``vmap`` maps the solve over the mapped dimension as one
    batched solve, and ``grad``/``jacrev``/``jacfwd`` see a non-differentiable output.
    """
    check_float_matrix(scores, "scores", square=False, finite=False)
    if solver not in _SOLVERS:
        raise ValueError(f"solver must be one of {_SOLVERS}, got {solver!r}")
    check_has_data(scores, "scores", "matching")
    if n_rows is None and n_cols is None and mask is None:  # the common case: no call at all
        exists = None
    else:
        exists = entry_mask(scores, "scores", n_rows, n_cols, mask)
        if _is_transformed(exists):
            return _Matching.apply(scores, maximize, solver, exists)
    if _is_transformed(scores):
        return _Matching.apply(scores, maximize, solver, exists)
    return _solve(scores, maximize, solver, exists)


def _solve(
    scores: torch.Tensor, maximize: bool, solver: str, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """:func:`matching` of checked, plain (untransformed) scores; ``mask``: the existing
    entries (:func:`permlib._checks.entry_mask`) or ``None``."""
    batch, (n, m) = scores.shape[:-2], scores.shape[-2:]
    # Everything from here on is numpy: small torch ops on a busy CPU each wait for the OpenMP
    # pool, which costs more than the solve itself for batches of small matrices; and for large
    # ones, torch's multi-threaded negation and min/max made the whole call about 25% slower
    # (its OpenMP threads keep spinning and compete with lapx's workers on 2 cores).
    flat = scores.detach().reshape(-1, n, m).cpu()
    # Negating is exact. float32 problems are solved in float32 (half the memory traffic); lapx
    # then searches in float32 too, which found the optimum of the scores as given in every case
    # we tried, N = 9 to 80, near ties and large offsets included (tests/test_matching.py).
    if flat.dtype not in (torch.float32, torch.float64):
        flat = flat.float()  # exact for float16 / bfloat16
    arr = flat.numpy()
    costs = np.negative(arr) if maximize else np.ascontiguousarray(arr)
    if mask is not None:  # padding is never read: whatever it holds (NaN too) becomes 0
        mask = mask.reshape(-1, n, m).cpu().numpy()
        costs = np.where(mask, costs, 0.0).astype(costs.dtype, copy=False)
    finite = not costs.size or (np.isfinite(costs.min()) and np.isfinite(costs.max()))
    if not finite:  # NaN spreads to min and max; +inf costs are forbidden pairs
        _check_costs(costs, maximize)
    if costs.shape[0] == 0:
        cols = np.zeros((0, n), dtype=np.int64)
    elif mask is not None or not finite:
        cols = _solve_general(costs, mask, solver, batch)
    elif n != m:
        cols = _solve_rectangular(costs, solver)
    elif n == 1:
        cols = np.zeros((costs.shape[0], 1), dtype=np.int64)
    elif solver == "scipy":
        cols = _solve_scipy(costs)
    else:
        cols = _solve_lapx(costs)
    perm = torch.from_numpy(cols.astype(np.int64, copy=False))
    return perm.reshape(batch + (n,)).to(scores.device)


def _check_costs(costs: np.ndarray, maximize: bool) -> None:
    """Refuse NaN and the infinity that is not a forbidden pair (``-inf`` costs: ``+inf``
    scores when maximizing, ``-inf`` costs when minimizing)."""
    if np.isnan(costs).any() or np.isneginf(costs).any():
        wrong, right = ("+inf", "-inf scores") if maximize else ("-inf", "+inf costs")
        raise ValueError(
            f"scores contains invalid numeric entries (NaN or {wrong}; forbidden pairs are "
            f"{right} with maximize={maximize})"
        )


def _scatter(rows: list[np.ndarray], cols: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """``(B, N)`` int64 of -1 with ``out[b, rows[b]] = cols[b]``."""
    out = np.full(shape, -1, dtype=np.int64)
    lens = [len(r) for r in rows]
    if sum(lens):
        out[np.repeat(np.arange(shape[0]), lens), np.concatenate(rows)] = np.concatenate(cols)
    return out


def _solve_rectangular(costs: np.ndarray, solver: str) -> np.ndarray:
    """Finite ``(B, N, M)`` costs, ``N != M``: min(N, M) pairs each, as a ``(B, N)`` map."""
    if solver == "scipy":
        pairs = [linear_sum_assignment(c) for c in costs]
        rows, cols = [p[0] for p in pairs], [p[1] for p in pairs]
    else:
        rows, cols = lap.lapjvr_batch(costs, extend_cost=True, return_cost=False)
    return _scatter(rows, cols, costs.shape[:2])


def _solve_general(
    costs: np.ndarray, mask: np.ndarray | None, solver: str, batch: torch.Size
) -> np.ndarray:
    """``(B, N, M)`` costs with forbidden pairs (``+inf``) and/or a mask of existing entries:
    the ``(B, N)`` partial map, or a ``ValueError`` naming the first infeasible item."""
    count, n, m = costs.shape
    if mask is None and solver != "scipy":
        try:  # lapx takes +inf as forbidden; an infeasible item raises and is found below
            rows, cols = lap.lapjvr_batch(costs, extend_cost=n != m, return_cost=False)
            return _scatter(rows, cols, (count, n))
        except ValueError:
            pass
    out = np.full((count, n), -1, dtype=np.int64)
    for b in range(count):
        if mask is None:
            r_idx, c_idx = np.arange(n), np.arange(m)
            sub = costs[b]
        else:
            r_idx = np.flatnonzero(mask[b].any(axis=1))
            c_idx = np.flatnonzero(mask[b].any(axis=0))
            if not (r_idx.size and c_idx.size):
                continue
            block = np.ix_(r_idx, c_idx)
            sub = np.where(mask[b][block], costs[b][block], np.inf)
        try:
            ri, ci = linear_sum_assignment(sub)
        except ValueError as err:  # infeasible: find out which rows (columns) cannot be met
            allowed = np.isfinite(sub)
            transposed = sub.shape[0] > sub.shape[1]
            found = hall_violation(allowed.T if transposed else allowed)
            if found is None:
                raise
            side, other = found
            if transposed:
                side, other = c_idx[side], r_idx[other]
            else:
                side, other = r_idx[side], c_idx[other]
            item = tuple(int(i) for i in np.unravel_index(b, tuple(batch))) if batch else ()
            raise infeasible_error("scores", item, side, other, transposed) from err
        out[b, r_idx[ri]] = c_idx[ci]
    return out
