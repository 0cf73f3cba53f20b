"""The Hungarian straight-through estimator (HSTE) of the anonymous preprint *End-to-end
Permutation Learning with Hungarian Algorithm* (``hste`` in ``book/references.bib``).

Forward: the exact matching of ``log_alpha`` as a permutation matrix, so the network always sees a
valid permutation (constraint error exactly 0, whatever the temperature or number of iterations).
Backward: the identity, ``dL/d log_alpha = dL/dP`` (the straight-through trick of Bengio et al.,
2013, ``bengio2013``).
"""

from __future__ import annotations

import torch

from permlib._checks import check_float_matrix
from permlib.matching import matching
from permlib.permutations import permutation_matrix

__all__ = ["hungarian_ste"]


class _HungarianSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, log_alpha: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return permutation_matrix(matching(log_alpha), dtype=log_alpha.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return grad


def hungarian_ste(log_alpha: torch.Tensor) -> torch.Tensor:
    """Hard permutation matrix forward, identity gradient backward.

    Args:
        log_alpha: ``(..., N, N)`` floating scores (maximized); rows index items, columns
            positions. Add Gumbel noise first (:func:`permlib.perturb`) for the noisy variant
            of the HSTE paper (``hste``).

    Returns:
        ``(..., N, N)`` permutation matrix ``M(log_alpha)`` in ``log_alpha``'s dtype, whose
        gradient passes unchanged to ``log_alpha``.
    """
    check_float_matrix(log_alpha, "log_alpha")
    return _HungarianSTE.apply(log_alpha)
