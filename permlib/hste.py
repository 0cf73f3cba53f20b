"""The Hungarian straight-through estimator (HSTE) of the anonymous preprint *End-to-end
Permutation Learning with Hungarian Algorithm* (``hste`` in ``book/references.bib``).

Forward: the exact matching of ``log_alpha`` as a permutation matrix, so the network always sees a
valid permutation (constraint error exactly 0, whatever the temperature or number of iterations).
Backward: the identity, ``dL/d log_alpha = dL/dP`` (the straight-through trick of Bengio et al.,
2013, ``bengio2013``).
"""

from __future__ import annotations

import torch

from permlib._checks import check_finite, check_float_matrix, check_has_data
from permlib.matching import _solve

__all__ = ["hungarian_ste"]


class _HungarianSTE(torch.autograd.Function):
    """Matching forward, identity backward; ``torch.func`` ready (``setup_context``, a ``vmap``
    rule that solves the mapped dimension as one more batch dimension, ``jvp`` = identity)."""

    @staticmethod
    def forward(log_alpha: torch.Tensor) -> torch.Tensor:  # noqa: D102
        check_finite(log_alpha, "log_alpha")  # here, on the unwrapped tensor under torch.func
        perm = _solve(log_alpha, maximize=True, solver="auto")  # a permutation by construction
        return torch.nn.functional.one_hot(perm, log_alpha.shape[-1]).to(log_alpha.dtype)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:  # noqa: D102
        pass

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return grad

    @staticmethod
    def jvp(ctx, tangent: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return tangent

    @staticmethod
    def vmap(info, in_dims, log_alpha: torch.Tensor):  # noqa: D102
        return _HungarianSTE.apply(log_alpha.movedim(in_dims[0], 0)), 0


def hungarian_ste(log_alpha: torch.Tensor) -> torch.Tensor:
    """Hard permutation matrix forward, identity gradient backward.

    Args:
        log_alpha: ``(..., N, N)`` floating, finite scores (maximized); rows index items,
            columns positions. Add Gumbel noise first (:func:`permlib.perturb`) for the noisy
            variant of the HSTE paper (``hste``). An empty batch gives an empty result; meta
            tensors are refused (the matching needs values).

    Returns:
        ``(..., N, N)`` permutation matrix ``M(log_alpha)`` in ``log_alpha``'s dtype, whose
        gradient passes unchanged to ``log_alpha`` (in reverse and forward mode).

    Works under ``torch.func``: ``vmap`` (the mapped dimension is solved as one more batch
    dimension), ``grad``, ``jacrev`` and ``jacfwd`` (the Jacobian is the identity).
    """
    check_float_matrix(log_alpha, "log_alpha", finite=False)
    check_has_data(log_alpha, "log_alpha", "hungarian_ste")
    return _HungarianSTE.apply(log_alpha)
