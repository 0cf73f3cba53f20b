"""Evaluation metrics of the founding papers (keys of ``book/references.bib`` in brackets).

Order-based errors compare a predicted permutation with the true one, both as index tensors
``perm (..., N)`` (``perm[..., i]`` = position given to item ``i``): ``prop_wrong`` (the fraction
of items put in a wrong position, "Prop. wrong" of Mena et al., 2017 [mena2017sinkhorn], written
``1 - (1/N) sum P * Q`` in the HSTE paper [hste]), ``prop_any_wrong`` (1 if any item is misplaced,
"Prop. any wrong") and ``kendall_tau`` (rank correlation of the two permutations).
Feature-based errors compare a reconstruction with the truth: ``l1_error`` (mean absolute error) and
``l2_error`` (mean *squared* error, as reported in Table 2 of Mena et al., 2017 and Table 5 of the
HSTE paper). ``constraint_error`` is the distance of a matrix from the Birkhoff polytope's
row- and column-sum constraints used by the HSTE paper (its section 2).

Order-based metrics take ``reduction="mean"`` (a scalar over the batch) or ``"none"`` (one value
per permutation, shape ``(...)``).
"""

from __future__ import annotations

from typing import Literal

import torch

from permlib._checks import (
    check_float_matrix,
    check_permutation,
    check_same_device,
    check_same_shape,
    check_tensor,
)

__all__ = [
    "constraint_error",
    "kendall_tau",
    "l1_error",
    "l2_error",
    "prop_any_wrong",
    "prop_wrong",
]

Reduction = Literal["mean", "none"]


def _check_pair(pred: torch.Tensor, true: torch.Tensor) -> None:
    check_tensor(pred, "pred")
    check_tensor(true, "true")
    check_same_device(pred=pred, true=true)
    check_permutation(pred, "pred")
    check_permutation(true, "true")
    check_same_shape(pred=pred, true=true)


def _reduce(values: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return values.mean()
    if reduction == "none":
        return values
    raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")


def prop_wrong(
    pred: torch.Tensor, true: torch.Tensor, reduction: Reduction = "mean"
) -> torch.Tensor:
    """Fraction of items in a wrong position: a ``(..., N)`` pair -> ``(...)`` or a scalar."""
    _check_pair(pred, true)
    return _reduce((pred != true).float().mean(dim=-1), reduction)


def prop_any_wrong(
    pred: torch.Tensor, true: torch.Tensor, reduction: Reduction = "mean"
) -> torch.Tensor:
    """1 for each permutation with at least one misplaced item, else 0 (then averaged)."""
    _check_pair(pred, true)
    return _reduce((pred != true).any(dim=-1).float(), reduction)


def kendall_tau(
    pred: torch.Tensor, true: torch.Tensor, reduction: Reduction = "mean"
) -> torch.Tensor:
    """Kendall's tau between ``pred`` and ``true`` seen as sequences indexed by item.

    Equals ``scipy.stats.kendalltau(pred[b], true[b])`` for each permutation: the fraction of
    concordant item pairs minus the fraction of discordant ones, in ``[-1, 1]``. Compare the
    predicted permutation with the true one in the same convention (not with its inverse: the
    two give different values in general). For ``N = 1`` the single ordering is correct: 1.
    """
    _check_pair(pred, true)
    n = pred.shape[-1]
    if n == 1:
        return _reduce(torch.ones(pred.shape[:-1], device=pred.device), reduction)
    sp = torch.sign(pred.unsqueeze(-1) - pred.unsqueeze(-2)).to(torch.int8)
    st = torch.sign(true.unsqueeze(-1) - true.unsqueeze(-2)).to(torch.int8)
    agreement = (sp * st).flatten(-2).sum(dim=-1, dtype=torch.int64)  # each pair counted twice
    tau = agreement.double() / (n * (n - 1))
    return _reduce(tau.float(), reduction)


def _mean_error(
    pred: torch.Tensor, target: torch.Tensor, dim: int | tuple[int, ...] | None, power: int
) -> torch.Tensor:
    """Mean of ``|pred - target| ** power`` over ``dim`` (all dimensions when ``None``)."""
    for name, t in (("pred", pred), ("target", target)):
        check_tensor(t, name)
        if not t.is_floating_point():
            raise TypeError(f"{name} must have a floating dtype, got {t.dtype}")
    check_same_device(pred=pred, target=target)
    check_same_shape(pred=pred, target=target)
    diff = (pred - target).abs() if power == 1 else (pred - target).square()
    return diff.mean() if dim is None else diff.mean(dim=dim)


def l1_error(
    pred: torch.Tensor, target: torch.Tensor, dim: int | tuple[int, ...] | None = None
) -> torch.Tensor:
    """Mean absolute error between a reconstruction and the truth, averaged over ``dim`` (all)."""
    return _mean_error(pred, target, dim, power=1)


def l2_error(
    pred: torch.Tensor, target: torch.Tensor, dim: int | tuple[int, ...] | None = None
) -> torch.Tensor:
    """Mean squared error between a reconstruction and the truth, averaged over ``dim`` (all)."""
    return _mean_error(pred, target, dim, power=2)


def constraint_error(
    p: torch.Tensor, reduction: Literal["none", "mean", "max"] = "none"
) -> torch.Tensor:
    """Max over rows and columns of ``|sum - 1|`` (``hste``, section 2): 0 iff the sums are 1.

    Args:
        p: ``(..., N, N)`` non-log matrix (e.g. the output of :func:`permlib.sinkhorn`).
        reduction: ``"none"`` for ``(...)`` per matrix, or ``"mean"``/``"max"`` over the batch.
    """
    check_float_matrix(p, "p")
    rows = (p.sum(dim=-1) - 1).abs().amax(dim=-1)
    cols = (p.sum(dim=-2) - 1).abs().amax(dim=-1)
    err = torch.maximum(rows, cols)
    if reduction == "max":
        return err.max()
    return _reduce(err, reduction)
