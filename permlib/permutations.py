"""Permutations as index tensors and as matrices, and the conversions between them.

A permutation of ``N`` items is an integer index tensor ``perm`` (int64 in every output) of
shape ``(..., N)`` (batch dimensions first) with ``perm[..., i]`` the column (position) given to
row (item) ``i``; its matrix form ``P = permutation_matrix(perm)`` is the one-hot ``(..., N, N)``
tensor with ``P[..., i, perm[..., i]] = 1``. Every function keeps its input's device.

Partial permutations (the result of :func:`permlib.matching` on rectangular or padded problems)
map ``N`` rows injectively into ``M`` columns: ``perm[..., i]`` is the column of row ``i`` or
``-1`` when row ``i`` is not assigned, and no column is taken twice. Pass ``m=M`` to convert
them: ``permutation_matrix(perm, m=M)`` is the ``(..., N, M)`` 0/1 matrix (a zero row for each
``-1``), ``invert_permutation(perm, m=M)`` the ``(..., M)`` row of each column (``-1`` for a
column no row takes).
"""

from __future__ import annotations

import torch

from permlib._checks import check_partial_permutation, check_permutation

__all__ = ["invert_permutation", "permutation_matrix"]


def permutation_matrix(
    perm: torch.Tensor, dtype: torch.dtype = torch.float32, *, m: int | None = None
) -> torch.Tensor:
    """One-hot form of ``perm``: ``(..., N) -> (..., N, N)``, ``P[..., i, perm[..., i]] = 1``.

    Args:
        perm: ``(..., N)`` integer permutations (each row a rearrangement of ``0 .. N-1``), of
            any integer dtype that holds ``N - 1`` (``uint8`` included; converted to int64).
            With ``m``: partial permutations, entries in ``-1 .. m - 1`` (``-1``: the row is
            not assigned), the assigned columns distinct.
        dtype: dtype of the result.
        m: number of columns of a partial permutation (e.g. ``scores.shape[-1]`` of the
            :func:`permlib.matching` that returned ``perm``); ``None``: ``perm`` must be a
            permutation of ``0 .. N-1``.

    Returns:
        ``(..., N, N)`` (``(..., N, m)`` with ``m``) matrix of zeros and ones on ``perm``'s
        device; with ``m`` a row is zero where ``perm`` is ``-1``, so rows and columns sum to
        at most 1.
    """
    if m is None:
        check_permutation(perm, "perm")
        n = perm.shape[-1]
        return torch.nn.functional.one_hot(perm.long(), n).to(dtype)
    check_partial_permutation(perm, "perm", m)
    idx = perm.long()
    idx = torch.where(idx < 0, m, idx)  # the unassigned rows go to an extra column, dropped
    return torch.nn.functional.one_hot(idx, m + 1)[..., :m].to(dtype)


def invert_permutation(perm: torch.Tensor, *, m: int | None = None) -> torch.Tensor:
    """Inverse permutation: ``inv[..., perm[..., i]] = i``; ``(..., N) -> (..., N)`` int64.

    In matrix form, ``permutation_matrix(inv)`` is the transpose of ``permutation_matrix(perm)``.
    Any integer dtype is accepted (see :func:`permutation_matrix`); the result is int64.

    With ``m`` (a partial permutation of ``N`` rows into ``m`` columns, see
    :func:`permutation_matrix`): ``(..., N) -> (..., m)``, ``inv[..., j]`` the row that takes
    column ``j`` or ``-1``; ``permutation_matrix(inv, m=N)`` is then the transpose of
    ``permutation_matrix(perm, m=m)``.
    """
    if m is None:
        check_permutation(perm, "perm")
        return _invert(perm)
    check_partial_permutation(perm, "perm", m)
    idx = perm.long()
    idx = torch.where(idx < 0, m, idx)
    rows = torch.arange(perm.shape[-1], device=perm.device).expand_as(idx)
    out = torch.full(idx.shape[:-1] + (m + 1,), -1, dtype=torch.int64, device=perm.device)
    return out.scatter_(-1, idx, rows)[..., :m]


def _invert(perm: torch.Tensor) -> torch.Tensor:
    """:func:`invert_permutation` without the check, for callers that have checked ``perm``."""
    perm = perm.long()
    ar = torch.arange(perm.shape[-1], device=perm.device).expand_as(perm)
    return torch.empty_like(perm).scatter_(-1, perm, ar)
