"""The Hungarian straight-through estimator (HSTE) of the anonymous preprint *End-to-end
Permutation Learning with Hungarian Algorithm* (``hste`` in ``book/references.bib``).

Forward: the exact matching of ``log_alpha`` as a permutation matrix, so the network always sees a
valid permutation (constraint error exactly 0, whatever the temperature or number of iterations).
Backward: the identity, ``dL/d log_alpha = dL/dP`` (the straight-through trick of Bengio et al.,
2013, ``bengio2013``), except on excluded entries (forbidden pairs, padding), whose gradient is 0.
"""

from __future__ import annotations

import math

import torch

from permlib._checks import check_float_matrix, check_has_data, entry_mask, extremes, plain
from permlib.matching import _solve

__all__ = ["hungarian_ste"]


def _one_hot(perm: torch.Tensor, m: int, dtype: torch.dtype) -> torch.Tensor:
    """``(..., N)`` columns or ``-1`` -> ``(..., N, m)`` 0/1 rows (zero for ``-1``)."""
    idx = torch.where(perm < 0, m, perm)
    return torch.nn.functional.one_hot(idx, m + 1)[..., :m].to(dtype)


class _HungarianSTE(torch.autograd.Function):
    """Matching forward, identity backward (zero on the entries ``keep`` excludes);
    ``torch.func`` ready (``setup_context``, a ``vmap`` rule that solves the mapped dimension as
    one more batch dimension, ``jvp`` = the same masked identity)."""

    @staticmethod
    def forward(  # noqa: D102
        log_alpha: torch.Tensor, exists: torch.Tensor | None, keep: torch.Tensor | None
    ) -> torch.Tensor:
        n, m = log_alpha.shape[-2:]
        perm = _solve(log_alpha, maximize=True, solver="auto", mask=exists)
        if exists is None and n == m:  # a permutation by construction
            return torch.nn.functional.one_hot(perm, n).to(log_alpha.dtype)
        return _one_hot(perm, m, log_alpha.dtype)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:  # noqa: D102
        ctx.save_for_backward(inputs[2])
        ctx.save_for_forward(inputs[2])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # noqa: D102
        (keep,) = ctx.saved_tensors
        return (grad if keep is None else torch.where(keep, grad, 0.0)), None, None

    @staticmethod
    def jvp(ctx, tangent: torch.Tensor, *_) -> torch.Tensor:  # noqa: D102
        (keep,) = ctx.saved_tensors
        return tangent if keep is None else torch.where(keep, tangent, 0.0)

    @staticmethod
    def vmap(info, in_dims, log_alpha, exists, keep):  # noqa: D102
        def front(t: torch.Tensor | None, dim: int | None) -> torch.Tensor | None:
            if t is None:
                return None
            return t.movedim(dim, 0) if dim is not None else t.expand(info.batch_size, *t.shape)

        log_alpha = front(log_alpha, in_dims[0])
        exists, keep = front(exists, in_dims[1]), front(keep, in_dims[2])
        if exists is not None:
            exists = exists.expand(log_alpha.shape)
        if keep is not None:
            keep = keep.expand(log_alpha.shape)
        return _HungarianSTE.apply(log_alpha, exists, keep), 0


def hungarian_ste(
    log_alpha: torch.Tensor,
    *,
    n_rows: int | torch.Tensor | None = None,
    n_cols: int | torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Hard permutation matrix forward, identity gradient backward.

    Args:
        log_alpha: ``(..., N, M)`` floating scores (maximized); rows index items, columns
            positions. ``-inf`` marks a forbidden pair; NaN and ``+inf`` are errors. Add Gumbel
            noise first (:func:`permlib.perturb`) for the noisy variant of the HSTE paper
            (``hste``). An empty batch gives an empty result; meta tensors are refused (the
            matching needs values).
        n_rows, n_cols, mask: a padded batch, as in :func:`permlib.matching` (the padding's
            values are never read).

    Returns:
        ``(..., N, M)`` permutation matrix ``M(log_alpha)`` in ``log_alpha``'s dtype
        (``permutation_matrix(matching(log_alpha), m=M)``: for rectangular or padded problems
        a partial permutation matrix, zero rows for unassigned and padded rows), whose gradient
        passes unchanged to ``log_alpha`` (in reverse and forward mode), except on the entries
        that are excluded (forbidden pairs, padding): those get 0.

    Works under ``torch.func``: ``vmap`` (the mapped dimension is solved as one more batch
    dimension), ``grad``, ``jacrev`` and ``jacfwd`` (the Jacobian is the identity, masked).
    """
    check_float_matrix(log_alpha, "log_alpha", square=False, finite=False)
    check_has_data(log_alpha, "log_alpha", "hungarian_ste")
    exists = None
    if n_rows is not None or n_cols is not None or mask is not None:
        exists = entry_mask(log_alpha, "log_alpha", n_rows, n_cols, mask)
    vals = log_alpha.detach() if exists is None else torch.where(exists, log_alpha.detach(), 0.0)
    vals = plain(vals)  # read under torch.func too (all the mapped items)
    lo, hi = extremes(vals).tolist() if vals.numel() else (0.0, 0.0)
    if math.isnan(lo) or math.isnan(hi) or hi == math.inf:
        raise ValueError(
            "log_alpha contains invalid numeric entries (NaN or +inf; forbidden pairs are -inf)"
        )
    keep = None
    if exists is not None or lo == -math.inf:  # the excluded entries get no gradient
        keep = log_alpha.detach() > -math.inf
        keep = keep if exists is None else keep & exists
    return _HungarianSTE.apply(log_alpha, exists, keep)
