"""Permutations as index tensors and as matrices, and the conversions between them.

A permutation of ``N`` items is an integer index tensor ``perm`` (int64 in every output) of
shape ``(..., N)`` (batch dimensions first) with ``perm[..., i]`` the column (position) given to
row (item) ``i``; its matrix form ``P = permutation_matrix(perm)`` is the one-hot ``(..., N, N)``
tensor with ``P[..., i, perm[..., i]] = 1``. Every function keeps its input's device.
"""

from __future__ import annotations

import torch

from permlib._checks import check_permutation

__all__ = ["invert_permutation", "permutation_matrix"]


def permutation_matrix(perm: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """One-hot form of ``perm``: ``(..., N) -> (..., N, N)``, ``P[..., i, perm[..., i]] = 1``.

    Args:
        perm: ``(..., N)`` integer permutations (each row a rearrangement of ``0 .. N-1``), of
            any integer dtype that holds ``N - 1`` (``uint8`` included; converted to int64).
        dtype: dtype of the result.

    Returns:
        ``(..., N, N)`` matrix of zeros and ones on ``perm``'s device.
    """
    check_permutation(perm, "perm")
    n = perm.shape[-1]
    return torch.nn.functional.one_hot(perm.long(), n).to(dtype)


def invert_permutation(perm: torch.Tensor) -> torch.Tensor:
    """Inverse permutation: ``inv[..., perm[..., i]] = i``; ``(..., N) -> (..., N)`` int64.

    In matrix form, ``permutation_matrix(inv)`` is the transpose of ``permutation_matrix(perm)``.
    Any integer dtype is accepted (see :func:`permutation_matrix`); the result is int64.
    """
    check_permutation(perm, "perm")
    return _invert(perm)


def _invert(perm: torch.Tensor) -> torch.Tensor:
    """:func:`invert_permutation` without the check, for callers that have checked ``perm``."""
    perm = perm.long()
    ar = torch.arange(perm.shape[-1], device=perm.device).expand_as(perm)
    return torch.empty_like(perm).scatter_(-1, perm, ar)
