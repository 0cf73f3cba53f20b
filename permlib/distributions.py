"""Exact distributions over the permutations of a few items, by enumeration.

For ``n <= 8`` items every one of the ``n!`` permutations can be listed, so a distribution over
them is just a probability vector ``(n!,)``. All vectors here share one indexing: entry ``r`` is
the permutation of lexicographic rank ``r``, the row ``r`` of :func:`enumerate_permutations`
(:func:`permutation_rank` maps a permutation to its index). That makes exact laws, empirical
frequencies of samples and references comparable entry by entry (:func:`total_variation`).

A family is defined by its unnormalized log-probability of each permutation and normalized
over all of them by :func:`exact_distribution`: the Gibbs distribution of Mena et al. (2018,
``mena2018learning``), ``p(P) ∝ exp <P, X>_F``, is one; a Mallows model,
``p(perm) ∝ exp(-theta * d(perm, center))``, is another with the same call.

Conventions are permlib's: a permutation is an int64 index tensor ``perm (..., n)`` with
``perm[..., i]`` the column given to row ``i``; probabilities are float64.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import torch

from permlib._checks import check_float_matrix, check_permutation, check_tensor

__all__ = [
    "MAX_ITEMS",
    "enumerate_permutations",
    "exact_distribution",
    "gibbs_distribution",
    "permutation_frequencies",
    "permutation_rank",
    "total_variation",
]

#: Largest number of items enumerated: 8! = 40320 permutations.
MAX_ITEMS = 8


def enumerate_permutations(n: int, device: torch.device | str | None = None) -> torch.Tensor:
    """All permutations of ``n`` items in lexicographic order.

    Args:
        n: number of items, ``1 <= n <= MAX_ITEMS``.
        device: device of the result (default: the CPU).

    Returns:
        ``(n!, n)`` int64; row ``r`` is the permutation of rank ``r`` (``perm[i]`` = column of
        row ``i``).
    """
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_ITEMS:
        raise ValueError(f"n must be an integer in 1..{MAX_ITEMS} (enumeration), got {n!r}")
    perms = list(itertools.permutations(range(n)))
    return torch.tensor(perms, dtype=torch.int64, device=device)


def permutation_rank(perm: torch.Tensor) -> torch.Tensor:
    """Lexicographic rank of each permutation (its Lehmer code read as a factorial number).

    Args:
        perm: ``(..., n)`` integer permutations.

    Returns:
        ``(...)`` int64 ranks in ``0 .. n! - 1`` on ``perm``'s device:
        ``enumerate_permutations(n)[permutation_rank(perm)]`` equals ``perm``.
    """
    check_permutation(perm, "perm")
    perm = perm.long()
    n = perm.shape[-1]
    rank = torch.zeros(perm.shape[:-1], dtype=torch.int64, device=perm.device)
    for i in range(n):
        smaller_after = (perm[..., i + 1 :] < perm[..., i : i + 1]).sum(dim=-1)
        rank = rank + smaller_after * math.factorial(n - 1 - i)
    return rank


def permutation_frequencies(perm: torch.Tensor) -> torch.Tensor:
    """Empirical distribution of sampled permutations over all ``n!`` of them.

    Args:
        perm: ``(S, n)`` integer sampled permutations (any batch shape ``(..., n)`` is
            flattened), or ``(..., n, n)`` permutation matrices (floating dtype).

    Returns:
        ``(n!,)`` float64 frequencies on ``perm``'s device, indexed like
        :func:`enumerate_permutations`. No samples at all (an empty batch) raise
        ``ValueError``: frequencies out of nothing are undefined (they would be NaN).
    """
    check_tensor(perm, "perm")
    if perm.is_floating_point():
        check_float_matrix(perm, "perm")
        perm = perm.argmax(dim=-1)
    n = perm.shape[-1]
    if n > MAX_ITEMS:
        raise ValueError(f"perm must have n <= {MAX_ITEMS} items (enumeration), got n = {n}")
    if perm.numel() == 0:
        raise ValueError(
            f"perm holds no samples (shape {tuple(perm.shape)}): their frequencies are undefined"
        )
    counts = torch.bincount(permutation_rank(perm.reshape(-1, n)), minlength=math.factorial(n))
    return counts.double() / counts.sum()


def exact_distribution(
    log_weight: Callable[[torch.Tensor], torch.Tensor],
    n: int,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """The distribution ``p(perm) ∝ exp(log_weight(perm))`` over all permutations of ``n`` items.

    Args:
        log_weight: maps the ``(n!, n)`` int64 output of :func:`enumerate_permutations` to the
            ``(n!,)`` unnormalized log-probabilities of those permutations.
        n: number of items, ``1 <= n <= MAX_ITEMS``.
        device: where the permutations are listed and the probabilities computed.

    Returns:
        ``(n!,)`` float64 probabilities, indexed like :func:`enumerate_permutations`.
    """
    log_w = log_weight(enumerate_permutations(n, device=device))
    if log_w.shape != (math.factorial(n),):
        raise ValueError(
            f"log_weight must return shape ({math.factorial(n)},), got {tuple(log_w.shape)}"
        )
    return torch.softmax(log_w.double(), dim=0)


def gibbs_distribution(log_alpha: torch.Tensor) -> torch.Tensor:
    r"""The Gibbs distribution :math:`p(P) \propto \exp\langle P, X\rangle_F` over all permutations.

    Args:
        log_alpha: ``(n, n)`` scores ``X`` with ``n <= MAX_ITEMS``.

    Returns:
        ``(n!,)`` float64 probabilities on ``log_alpha``'s device, indexed like
        :func:`enumerate_permutations`.
    """
    check_float_matrix(log_alpha, "log_alpha")
    if log_alpha.dim() != 2:
        raise ValueError(f"log_alpha must be one (n, n) matrix, got shape {tuple(log_alpha.shape)}")
    x = log_alpha.detach().double()
    rows = torch.arange(x.shape[0], device=x.device)
    return exact_distribution(lambda perms: x[rows, perms].sum(dim=-1), x.shape[-1], x.device)


def total_variation(p: torch.Tensor, q: torch.Tensor) -> float:
    """Total variation distance ``0.5 * sum |p - q|`` between two distributions.

    Args:
        p, q: ``(K,)`` probability vectors indexed alike (e.g. over the ``n!`` permutations).

    Returns:
        The distance, in ``[0, 1]`` for probability vectors.
    """
    check_tensor(p, "p")
    check_tensor(q, "q")
    if p.shape != q.shape:
        shapes = f"{tuple(p.shape)} and {tuple(q.shape)}"
        raise ValueError(f"p and q must have the same shape, got {shapes}")
    return 0.5 * float((p.double() - q.double().to(p.device)).abs().sum())
