"""Evaluation metrics of the founding papers (keys of ``book/references.bib`` in brackets).

Order-based errors compare a predicted permutation with the true one, both as index tensors
``perm (..., N)`` (``perm[..., i]`` = position given to item ``i``): ``prop_wrong`` (the fraction
of items put in a wrong position, "Prop. wrong" of Mena et al., 2017 [mena2017sinkhorn], written
``1 - (1/N) sum P * Q`` in the HSTE paper [hste]), ``prop_any_wrong`` (1 if any item is misplaced,
"Prop. any wrong") and ``kendall_tau`` (rank correlation of the two permutations, by item, the
default, or by position with ``convention="papers"``, the papers' reference code's).
Feature-based errors compare a reconstruction with the truth: ``l1_error`` (mean absolute error) and
``l2_error`` (mean *squared* error, as reported in Table 2 of Mena et al., 2017 and Table 5 of the
HSTE paper). ``constraint_error`` is the distance of a matrix from the Birkhoff polytope's
row- and column-sum constraints used by the HSTE paper (its section 2).

Order-based metrics take ``reduction="mean"`` (a scalar over the batch) or ``"none"`` (one value
per permutation, shape ``(...)``). Permutations may have any integer dtype (``uint8`` included):
every metric computes in int64 or by comparisons, never by differences in the input's dtype.

Empty batches: ``reduction="none"`` on a batch with no permutations (``(0, N)``, or ``(0, N, N)``
for :func:`constraint_error`) returns an empty result of shape ``(...)``; a ``"mean"`` or ``"max"``
of an empty batch raises ``ValueError`` naming the argument, since the mean of nothing is undefined
(torch would return NaN). Likewise :func:`l1_error` and :func:`l2_error` raise when a mean
would be taken over no entries, and return an empty tensor when the result itself is empty.
"""

from __future__ import annotations

from typing import Literal

import torch

from permlib._checks import (
    check_finite,
    check_float_matrix,
    check_permutation,
    check_same_device,
    check_same_shape,
    check_tensor,
    defers,
    nonfinite,
)
from permlib.permutations import _invert

__all__ = [
    "constraint_error",
    "kendall_tau",
    "l1_error",
    "l2_error",
    "prop_any_wrong",
    "prop_wrong",
]

Reduction = Literal["mean", "none"]
Convention = Literal["items", "papers"]
_CONVENTIONS = ("items", "papers")


def _check_pair(pred: torch.Tensor, true: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Checked ``(pred, true)`` in int64 (a no-op for int64 input)."""
    check_tensor(pred, "pred")
    check_tensor(true, "true")
    check_same_device(pred=pred, true=true)
    check_permutation(pred, "pred")
    check_permutation(true, "true")
    check_same_shape(pred=pred, true=true)
    return pred.long(), true.long()


def _reduce(
    values: torch.Tensor,
    reduction: str,
    name: str,
    source: torch.Tensor,
    allowed: tuple[str, ...] = ("mean", "none"),
) -> torch.Tensor:
    """``values`` (one per batch entry) reduced; ``name`` (``source``) is blamed if empty."""
    if reduction not in allowed:
        listed = " or ".join(repr(r) for r in allowed)
        raise ValueError(f"reduction must be {listed}, got {reduction!r}")
    if reduction == "none":
        return values
    if values.numel() == 0:
        raise ValueError(
            f"{name} is an empty batch (shape {tuple(source.shape)}): reduction={reduction!r} "
            "of no values is undefined; "
            'use reduction="none" for an empty result'
        )
    return values.mean() if reduction == "mean" else values.amax()


def prop_wrong(
    pred: torch.Tensor, true: torch.Tensor, reduction: Reduction = "mean"
) -> torch.Tensor:
    """Fraction of items in a wrong position: a ``(..., N)`` pair -> ``(...)`` or a scalar."""
    pred, true = _check_pair(pred, true)
    return _reduce((pred != true).float().mean(dim=-1), reduction, "pred", pred)


def prop_any_wrong(
    pred: torch.Tensor, true: torch.Tensor, reduction: Reduction = "mean"
) -> torch.Tensor:
    """1 for each permutation with at least one misplaced item, else 0 (then averaged)."""
    pred, true = _check_pair(pred, true)
    return _reduce((pred != true).any(dim=-1).float(), reduction, "pred", pred)


def kendall_tau(
    pred: torch.Tensor,
    true: torch.Tensor,
    reduction: Reduction = "mean",
    convention: Convention = "items",
) -> torch.Tensor:
    """Kendall's tau between a predicted and a true permutation, in one of two conventions.

    Kendall's tau is the fraction of concordant pairs minus the fraction of discordant ones, in
    ``[-1, 1]`` (permutations have no ties, so scipy's default tau-b equals tau-a). It depends on
    which sequences are compared, since a permutation and its inverse order pairs differently:

    * ``convention="items"`` (the default, kept for backwards compatibility): the sequences
      indexed by item, ``perm[i]`` = position of item ``i`` (permlib's convention), i.e.
      ``scipy.stats.kendalltau(pred[b], true[b])``: the classical rank correlation between the
      ranks the two permutations give the same items.
    * ``convention="papers"``: the sequences indexed by position, ``inv[j]`` = item at position
      ``j`` (the inverse permutations), i.e. ``scipy.stats.kendalltau(inv(pred)[b],
      inv(true)[b])``. This is how the reference code of Mena et al. (2018,
      ``mena2018learning``: google/gumbel_sinkhorn, ``sorting/sorting_model.py``) and the
      PyTorch port the HSTE paper (``hste``) builds on compute it; compare with their tables in
      this convention.

    The two agree when ``true`` is the identity (a permutation and its inverse have the same
    inversions) and differ in general: the 3-cycle ``pred = [1, 2, 0]`` against the swap
    ``true = [0, 2, 1]`` gives 1/3 by items and -1 by positions.

    Args:
        pred, true: ``(..., N)`` integer permutations (any integer dtype), same shape and device.
        reduction: ``"mean"`` over the batch (a scalar) or ``"none"`` (``(...)``).
        convention: ``"items"`` or ``"papers"``, as above.

    Returns:
        float32 tau, ``(...)`` or a scalar; 1 for ``N = 1`` (the single ordering is correct).
    """
    pred, true = _check_pair(pred, true)
    if convention not in _CONVENTIONS:
        raise ValueError(f"convention must be one of {_CONVENTIONS}, got {convention!r}")
    n = pred.shape[-1]
    if n == 1:
        return _reduce(torch.ones(pred.shape[:-1], device=pred.device), reduction, "pred", pred)
    if convention == "papers":
        pred, true = _invert(pred), _invert(true)
    # Comparisons, not differences: nothing can wrap around, and booleans take 1 byte per pair.
    # A pair (i, j), i != j, is discordant when the two orders disagree; each appears twice.
    before_pred = pred.unsqueeze(-1) < pred.unsqueeze(-2)
    discordant = before_pred ^ (true.unsqueeze(-1) < true.unsqueeze(-2))
    n_discordant = discordant.flatten(-2).sum(dim=-1)  # int64, twice the discordant pairs
    tau = 1.0 - 2.0 * n_discordant.double() / (n * (n - 1))
    return _reduce(tau.float(), reduction, "pred", pred)


def _mean_error(
    pred: torch.Tensor,
    target: torch.Tensor,
    dim: int | tuple[int, ...] | None,
    power: int,
    fname: str,
) -> torch.Tensor:
    """Mean of ``|pred - target| ** power`` over ``dim`` (all dimensions when ``None``).

    Computed in float64 on operands scaled by a power of two per result entry (exact), so that
    no difference or square overflows and the mean of finite input is finite whenever it is
    representable in the result's dtype. On CUDA the finiteness of both inputs and of the
    result are read from the device once, at the end (errors as on the CPU).
    """
    for name, t in (("pred", pred), ("target", target)):
        check_tensor(t, name)
        if not t.is_floating_point():
            raise TypeError(f"{name} must have a floating dtype, got {t.dtype}")
    check_same_device(pred=pred, target=target)
    check_same_shape(pred=pred, target=target)
    defer = defers(pred.device)  # CUDA: one host read at the end instead of three
    if not defer:
        check_finite(pred, "pred")
        check_finite(target, "target")
    out_dtype = torch.result_type(pred, target)
    if pred.numel() == 0:
        shaped = pred.new_empty(pred.shape, dtype=out_dtype)
        empty = shaped.sum() if dim is None else shaped.sum(dim=dim)  # the result's shape
        if empty.numel():
            raise ValueError(
                f"pred and target have shape {tuple(pred.shape)}: {fname} would be a mean over "
                "no entries, which is undefined"
            )
        return empty
    a, b = pred.double(), target.double()
    keep = {} if dim is None else {"dim": dim, "keepdim": True}
    largest = torch.maximum(a.detach().abs().amax(**keep), b.detach().abs().amax(**keep))
    # Scale by powers of two (exact), as torch.ldexp's own backward rounds 2 ** -k to 0 for an
    # integer k: |a| and |b| < 2 ** (exponent + 1), and every factor stays finite in float64.
    _, exponent = torch.frexp(largest)
    exponent = (exponent - 1).clamp(min=-1000)
    one = torch.ones_like(largest)
    down, up = torch.ldexp(one, -exponent), torch.ldexp(one, exponent)
    diff = a * down - b * down  # |diff| < 4
    scaled = diff.abs() if power == 1 else diff.square()
    mean = scaled.mean() if dim is None else scaled.mean(dim=dim)
    if dim is not None:
        up = up.squeeze(dim if isinstance(dim, int) else tuple(dim))
    result = mean
    for _ in range(power):  # one factor at a time: up ** 2 may overflow where the result does not
        result = result * up
    out = result.to(out_dtype)
    bad = ~torch.isfinite(out).all()
    if defer:
        bad = bad | nonfinite(pred, target)
    if bool(bad):
        if defer:  # the host checks, which name the argument
            check_finite(pred, "pred")
            check_finite(target, "target")
        worst = result.detach().abs().max().item()
        raise ValueError(
            f"{fname} of pred and target is {worst:.3g}, which overflows {out_dtype}; "
            "pass float64 tensors"
        )
    return out


def l1_error(
    pred: torch.Tensor, target: torch.Tensor, dim: int | tuple[int, ...] | None = None
) -> torch.Tensor:
    """Mean absolute error between a reconstruction and the truth, averaged over ``dim`` (all).

    Args:
        pred, target: floating tensors of one shape, finite (checked).
        dim: dimension(s) averaged over; ``None`` for all (a scalar).

    Returns:
        The mean, in the dtype ``pred - target`` would have; computed in float64 without
        overflow (see the module docstring for empty inputs). A mean too large for that dtype
        raises ``ValueError`` rather than returning inf.
    """
    return _mean_error(pred, target, dim, power=1, fname="l1_error")


def l2_error(
    pred: torch.Tensor, target: torch.Tensor, dim: int | tuple[int, ...] | None = None
) -> torch.Tensor:
    """Mean squared error between a reconstruction and the truth, averaged over ``dim`` (all).

    Args and returns as :func:`l1_error` (the mean of ``(pred - target) ** 2``).
    """
    return _mean_error(pred, target, dim, power=2, fname="l2_error")


def constraint_error(
    p: torch.Tensor, reduction: Literal["none", "mean", "max"] = "none"
) -> torch.Tensor:
    """Max over rows and columns of ``|sum - 1|`` (``hste``, section 2): 0 iff the sums are 1.

    Args:
        p: ``(..., N, N)`` non-log matrix (e.g. the output of :func:`permlib.sinkhorn`).
        reduction: ``"none"`` for ``(...)`` per matrix, or ``"mean"``/``"max"`` over the batch
            (an empty batch raises ``ValueError`` for those; ``"none"`` gives an empty result).

    ``p`` must be finite (``ValueError`` naming ``p``); on CUDA that is read from the device
    once, after the result is computed, instead of before.
    """
    defer = defers(p.device) if isinstance(p, torch.Tensor) else False
    check_float_matrix(p, "p", finite=not defer)
    rows = (p.sum(dim=-1) - 1).abs().amax(dim=-1)
    cols = (p.sum(dim=-2) - 1).abs().amax(dim=-1)
    err = torch.maximum(rows, cols)
    out = _reduce(err, reduction, "p", p, allowed=("none", "mean", "max"))
    if defer and p.numel() and bool(nonfinite(p)):  # CUDA: read once, after the work is queued
        check_finite(p, "p")
    return out
