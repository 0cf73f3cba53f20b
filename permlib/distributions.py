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

from permlib._checks import check_finite, check_float_matrix, check_permutation, check_tensor

__all__ = [
    "MAX_ITEMS",
    "bhattacharyya_coefficient",
    "bhattacharyya_distance",
    "enumerate_permutations",
    "exact_distribution",
    "gibbs_distribution",
    "hellinger_distance",
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


def _check_probability_vectors(p: object, q: object, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two floating tensors of one shape whose slices along ``dim`` are probability vectors."""
    p, q = check_tensor(p, "p"), check_tensor(q, "q")
    if p.shape != q.shape:
        raise ValueError(f"p and q must have the same shape, got {tuple(p.shape)} and "
                         f"{tuple(q.shape)}")  # fmt: skip
    if p.dim() == 0:
        raise ValueError("p and q must have at least one dimension (the outcomes)")
    for name, t in (("p", p), ("q", q)):
        if not t.is_floating_point():
            raise TypeError(f"{name} must have a floating dtype, got {t.dtype}")
        if not t.numel():
            continue
        check_finite(t, name)
        if float(t.min()) < 0:
            raise ValueError(f"{name} must be non-negative, got an entry {float(t.min()):.3g}")
        # float32 sums of K entries are off by up to about K eps
        tol = max(1e-6, t.shape[dim] * torch.finfo(t.dtype).eps)
        err = float((t.double().sum(dim=dim) - 1).abs().max())
        if err > tol:
            raise ValueError(
                f"{name} must hold probability vectors along dim {dim} (summing to 1), "
                f"got a sum off by {err:.3g}"
            )
    return p.double(), q.double().to(p.device)


def bhattacharyya_coefficient(p: torch.Tensor, q: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Bhattacharyya coefficient ``BC = sum_k sqrt(p_k q_k)`` of two distributions.

    Args:
        p, q: probability vectors along ``dim`` (e.g. ``(..., n!)`` over the permutations of
            :func:`enumerate_permutations`), of one shape, floating, non-negative.
        dim: the dimension of the outcomes.

    Returns:
        ``BC`` in ``[0, 1]`` (1 for equal distributions, 0 for disjoint supports), float64, of
        the shape of ``p`` without ``dim``.
    """
    p, q = _check_probability_vectors(p, q, dim)
    return (p * q).sqrt().sum(dim=dim).clamp(0.0, 1.0)


def bhattacharyya_distance(p: torch.Tensor, q: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Bhattacharyya distance ``-ln BC`` (:func:`bhattacharyya_coefficient`).

    In ``[0, inf]``: ``inf`` for disjoint supports, and above 1 as soon as ``BC < 1/e``.
    Same arguments and shape as :func:`bhattacharyya_coefficient`.
    """
    return -bhattacharyya_coefficient(p, q, dim).log()


def hellinger_distance(p: torch.Tensor, q: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Hellinger distance ``sqrt(1 - BC)`` (:func:`bhattacharyya_coefficient`).

    In ``[0, 1]``; a metric, equal to ``||sqrt(p) - sqrt(q)||_2 / sqrt(2)``. Same arguments and
    shape as :func:`bhattacharyya_coefficient`.
    """
    return (1 - bhattacharyya_coefficient(p, q, dim)).clamp_min(0.0).sqrt()
