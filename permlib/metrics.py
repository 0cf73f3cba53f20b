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

Rectangular and padded problems (the partial permutations of :func:`permlib.matching`): the
order metrics take ``m=`` (the number of columns; entries ``-1 .. m - 1``, ``-1`` for an
unassigned item) and ``n_rows=``/``mask=`` (the items that count in each batch entry; the others
are never read); :func:`constraint_error` takes ``(..., N, M)`` matrices and
``n_rows``/``n_cols``/``mask`` as :func:`permlib.sinkhorn` does; :func:`l1_error` and
:func:`l2_error` take ``mask=`` (the entries averaged).

Empty batches: ``reduction="none"`` on a batch with no permutations (``(0, N)``, or ``(0, N, N)``
for :func:`constraint_error`) returns an empty result of shape ``(...)``; a ``"mean"`` or ``"max"``
of an empty batch raises ``ValueError`` naming the argument, since the mean of nothing is undefined
(torch would return NaN). Likewise :func:`l1_error` and :func:`l2_error` raise when a mean
would be taken over no entries, and return an empty tensor when the result itself is empty.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from permlib._checks import (
    check_finite,
    check_float_matrix,
    check_partial_permutation,
    check_permutation,
    check_same_device,
    check_same_shape,
    check_tensor,
    defers,
    entry_mask,
    item_mask,
    nonfinite,
)
from permlib.permutations import _invert, invert_permutation

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


def _check_partial_pair(
    pred: torch.Tensor,
    true: torch.Tensor,
    m: int | None,
    n_rows: object,
    mask: object,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Checked partial permutations ``(pred, true)`` (int64, ``-1`` for the items that do not
    count), the ``(..., N)`` mask of the items that count and ``m``."""
    check_tensor(pred, "pred")
    check_tensor(true, "true")
    check_same_device(pred=pred, true=true)
    check_same_shape(pred=pred, true=true)
    for name, t in (("pred", pred), ("true", true)):
        if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise TypeError(f"{name} must have an integer dtype, got {t.dtype}")
        if t.dim() < 1 or t.shape[-1] == 0:
            raise ValueError(f"{name} must have shape (..., N) with N >= 1, got {tuple(t.shape)}")
    m = pred.shape[-1] if m is None else m
    valid = item_mask(pred, "pred", n_rows, mask)
    if valid is None:
        valid = torch.ones(pred.shape, dtype=torch.bool, device=pred.device)
    out = []
    for name, t in (("pred", pred), ("true", true)):
        t = torch.where(valid, t.long(), -1)  # the items that do not count are not read
        check_partial_permutation(t, name, m)
        out.append(t)
    return out[0], out[1], valid, m


def _partial(m: object, n_rows: object, mask: object) -> bool:
    return m is not None or n_rows is not None or mask is not None


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
    pred: torch.Tensor,
    true: torch.Tensor,
    reduction: Reduction = "mean",
    *,
    m: int | None = None,
    n_rows: int | torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Fraction of items in a wrong position: a ``(..., N)`` pair -> ``(...)`` or a scalar.

    Partial permutations (``m``, ``n_rows``, ``mask``; see the module docstring): the fraction
    of the items that count whose column differs (an item unassigned in one and assigned in the
    other is wrong); 0 for a batch entry with no item that counts.
    """
    if not _partial(m, n_rows, mask):
        pred, true = _check_pair(pred, true)
        return _reduce((pred != true).float().mean(dim=-1), reduction, "pred", pred)
    pred, true, valid, _ = _check_partial_pair(pred, true, m, n_rows, mask)
    wrong = ((pred != true) & valid).sum(dim=-1)
    count = valid.sum(dim=-1)
    values = torch.where(count > 0, wrong / count.clamp_min(1), 0.0).float()
    return _reduce(values, reduction, "pred", pred)


def prop_any_wrong(
    pred: torch.Tensor,
    true: torch.Tensor,
    reduction: Reduction = "mean",
    *,
    m: int | None = None,
    n_rows: int | torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """1 for each permutation with at least one misplaced item, else 0 (then averaged).

    Partial permutations (``m``, ``n_rows``, ``mask``): among the items that count.
    """
    if not _partial(m, n_rows, mask):
        pred, true = _check_pair(pred, true)
        return _reduce((pred != true).any(dim=-1).float(), reduction, "pred", pred)
    pred, true, valid, _ = _check_partial_pair(pred, true, m, n_rows, mask)
    return _reduce(((pred != true) & valid).any(dim=-1).float(), reduction, "pred", pred)


def kendall_tau(
    pred: torch.Tensor,
    true: torch.Tensor,
    reduction: Reduction = "mean",
    convention: Convention = "items",
    *,
    m: int | None = None,
    n_rows: int | torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
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
        m, n_rows, mask: partial permutations of a rectangular or padded batch (see the module
            docstring). The two sequences are then compared where both are defined: by items,
            on the items that count and are assigned in both; by positions, on the columns
            that both give to an item that counts. With ``K`` such entries, tau is computed
            over their ``K (K - 1) / 2`` pairs (1 when ``K <= 1``).

    Returns:
        float32 tau, ``(...)`` or a scalar; 1 for ``N = 1`` (the single ordering is correct).
    """
    if convention not in _CONVENTIONS:
        raise ValueError(f"convention must be one of {_CONVENTIONS}, got {convention!r}")
    if _partial(m, n_rows, mask):
        pred, true, valid, m = _check_partial_pair(pred, true, m, n_rows, mask)
        if convention == "papers":
            pred, true = invert_permutation(pred, m=m), invert_permutation(true, m=m)
            both = (pred >= 0) & (true >= 0)
        else:
            both = valid & (pred >= 0) & (true >= 0)
        pairs = both.unsqueeze(-1) & both.unsqueeze(-2)
        before_pred = pred.unsqueeze(-1) < pred.unsqueeze(-2)
        discordant = (before_pred ^ (true.unsqueeze(-1) < true.unsqueeze(-2))) & pairs
        n_discordant = discordant.flatten(-2).sum(dim=-1)
        k = both.sum(dim=-1)
        total = (k * (k - 1)).clamp_min(1)
        tau = torch.where(k > 1, 1.0 - 2.0 * n_discordant.double() / total, 1.0)
        return _reduce(tau.float(), reduction, "pred", pred)
    pred, true = _check_pair(pred, true)
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


def _masked_mean_error(
    pred: torch.Tensor,
    target: torch.Tensor,
    dim: int | tuple[int, ...] | None,
    power: int,
    fname: str,
    mask: object,
) -> torch.Tensor:
    """:func:`_mean_error` over the entries where ``mask`` is ``True`` (the others not read):
    the same computation on zeros there, the mean rescaled by the fraction of entries that
    count (exact in float64 up to one rounding)."""
    for name, t in (("pred", pred), ("target", target)):
        check_tensor(t, name)
        if not t.is_floating_point():
            raise TypeError(f"{name} must have a floating dtype, got {t.dtype}")
    check_same_device(pred=pred, target=target)
    check_same_shape(pred=pred, target=target)
    mask = check_tensor(mask, "mask")
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor, got {mask.dtype}")
    check_same_device(pred=pred, mask=mask)
    try:
        fits = torch.broadcast_shapes(tuple(mask.shape), tuple(pred.shape)) == pred.shape
    except RuntimeError:
        fits = False
    if not fits:
        raise ValueError(
            f"mask must have pred's shape {tuple(pred.shape)} (or broadcast to it), got "
            f"{tuple(mask.shape)}"
        )
    mask = mask.expand(pred.shape)
    count = mask.sum() if dim is None else mask.sum(dim=dim)
    if pred.numel() and bool((count == 0).any()):
        raise ValueError(
            f"mask selects no entry of pred and target for some of the means: {fname} over no "
            "entries is undefined"
        )
    zero = torch.zeros((), dtype=pred.dtype, device=pred.device)
    a = torch.where(mask, pred, zero)
    b = torch.where(mask, target, zero.to(target.dtype))
    full = _mean_error(a, b, dim, power, fname)
    if not pred.numel():
        return full
    per = mask.numel() if dim is None else math.prod(
        pred.shape[d] for d in ((dim,) if isinstance(dim, int) else dim)
    )
    out = (full.double() * (per / count.double())).to(full.dtype)
    if not bool(torch.isfinite(out).all()):
        raise ValueError(
            f"{fname} of pred and target overflows {out.dtype}; pass float64 tensors"
        )
    return out


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
    pred: torch.Tensor,
    target: torch.Tensor,
    dim: int | tuple[int, ...] | None = None,
    *,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean absolute error between a reconstruction and the truth, averaged over ``dim`` (all).

    Args:
        pred, target: floating tensors of one shape, finite (checked).
        dim: dimension(s) averaged over; ``None`` for all (a scalar).
        mask: bool, broadcastable to ``pred``: average over the ``True`` entries only (e.g. the
            real items of a padded batch; the others are never read). Every mean must have at
            least one entry.

    Returns:
        The mean, in the dtype ``pred - target`` would have; computed in float64 without
        overflow (see the module docstring for empty inputs). A mean too large for that dtype
        raises ``ValueError`` rather than returning inf.
    """
    if mask is not None:
        return _masked_mean_error(pred, target, dim, 1, "l1_error", mask)
    return _mean_error(pred, target, dim, power=1, fname="l1_error")


def l2_error(
    pred: torch.Tensor,
    target: torch.Tensor,
    dim: int | tuple[int, ...] | None = None,
    *,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean squared error between a reconstruction and the truth, averaged over ``dim`` (all).

    Args and returns as :func:`l1_error` (the mean of ``(pred - target) ** 2``).
    """
    if mask is not None:
        return _masked_mean_error(pred, target, dim, 2, "l2_error", mask)
    return _mean_error(pred, target, dim, power=2, fname="l2_error")


def constraint_error(
    p: torch.Tensor,
    reduction: Literal["none", "mean", "max"] = "none",
    *,
    n_rows: int | torch.Tensor | None = None,
    n_cols: int | torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Max over rows and columns of ``|sum - 1|`` (``hste``, section 2): 0 iff the sums are 1.

    Args:
        p: ``(..., N, N)`` non-log matrix (e.g. the output of :func:`permlib.sinkhorn`), or
            ``(..., N, M)``: see below.
        reduction: ``"none"`` for ``(...)`` per matrix, or ``"mean"``/``"max"`` over the batch
            (an empty batch raises ``ValueError`` for those; ``"none"`` gives an empty result).
        n_rows, n_cols, mask: a padded batch, as in :func:`permlib.sinkhorn` (the padding is
            never read).

    Rectangular matrices and padded batches are measured against the constraints of a partial
    permutation (what :func:`permlib.sinkhorn` returns for them): with ``R`` present rows and
    ``C`` present columns, the shorter side's sums must be 1 (``|sum - 1|``), the longer
    side's at most 1 (``max(sum - 1, 0)``); a square item is measured as a square matrix.

    ``p`` must be finite where it exists (``ValueError`` naming ``p``); on CUDA that is read
    from the device once, after the result is computed, instead of before.
    """
    if n_rows is None and n_cols is None and mask is None:
        check_tensor(p, "p")
        if p.dim() < 2 or p.shape[-1] == p.shape[-2]:  # the square case, as it always was
            defer = defers(p.device)
            check_float_matrix(p, "p", finite=not defer)
            rows = (p.sum(dim=-1) - 1).abs().amax(dim=-1)
            cols = (p.sum(dim=-2) - 1).abs().amax(dim=-1)
            err = torch.maximum(rows, cols)
            out = _reduce(err, reduction, "p", p, allowed=("none", "mean", "max"))
            if defer and p.numel() and bool(nonfinite(p)):  # CUDA: read once, after the work
                check_finite(p, "p")
            return out
    check_float_matrix(p, "p", square=False, finite=False)
    exists = entry_mask(p, "p", n_rows, n_cols, mask)
    q = p if exists is None else torch.where(exists, p, 0.0)
    check_finite(q, "p")
    if exists is None:
        present_r = torch.ones(p.shape[:-1], dtype=torch.bool, device=p.device)
        present_c = torch.ones(p.shape[:-2] + p.shape[-1:], dtype=torch.bool, device=p.device)
    else:
        present_r, present_c = exists.any(dim=-1), exists.any(dim=-2)
    n_r, n_c = present_r.sum(dim=-1), present_c.sum(dim=-1)
    dev_r, dev_c = q.sum(dim=-1) - 1, q.sum(dim=-2) - 1
    exact_r = (n_r <= n_c).unsqueeze(-1)  # rows must sum to 1 (columns at most 1)
    exact_c = (n_c <= n_r).unsqueeze(-1)
    rows = torch.where(exact_r, dev_r.abs(), dev_r.clamp_min(0))
    cols = torch.where(exact_c, dev_c.abs(), dev_c.clamp_min(0))
    rows = torch.where(present_r, rows, 0.0).amax(dim=-1)
    cols = torch.where(present_c, cols, 0.0).amax(dim=-1)
    err = torch.maximum(rows, cols)
    return _reduce(err, reduction, "p", p, allowed=("none", "mean", "max"))
