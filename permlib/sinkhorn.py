"""The Sinkhorn operator S(X/tau): the "softmax of permutations".

Conventions (shared by all of permlib): ``log_alpha`` has shape ``(..., N, N)``, batch dimensions
first; rows index the items, columns index the positions they may take; entries are log-potentials
(scores) that are *maximized*. One Sinkhorn iteration is a row normalization followed by a column
normalization (eq. 1 of Mena et al., 2017, ``mena2017sinkhorn``; Sinkhorn, 1964, ``sinkhorn1964``):

    S^0(X) = exp(X),   S^l(X) = T_c(T_r(S^{l-1}(X))),   S(X) = lim_{l -> inf} S^l(X).

Rectangular ``(..., N, M)`` scores, forbidden pairs (``-inf`` scores) and padded batches of
problems of different sizes (``n_rows``/``n_cols``/``mask``) give the entropic *partial*
permutation: each item's shorter side sums to 1, its longer side to at most 1 (the slack taken
by dummy rows, as pygmtools' ``dummy_row=True``), excluded entries exactly 0; see
:func:`log_sinkhorn`. Square matrices of finite scores take the fast path described next.

The result is described by two potentials ``f`` (rows) and ``g`` (columns),
``log S^l(X)_{ij} = X_{ij} + f_i + g_j``, so large scores or tiny temperatures neither overflow
nor underflow. Only the length-N potentials change from one iteration to the next. The fast
path iterates on their exponentials (the scalings of Cuturi, 2013, ``cuturi2013``) and falls back
to the log-domain loop whenever over- or underflow could change the result.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np
import torch

from permlib._checks import (
    LOW_PRECISION,
    check_float_matrix,
    check_positive_int,
    check_positive_real,
    check_tensor,
    compute_float,
    entry_mask,
    extremes,
    finite_range,
    hall_violation,
    infeasible_error,
    plain,
)

__all__ = ["ConvergenceWarning", "SinkhornInfo", "log_sinkhorn", "sinkhorn"]

Backward = Literal["unroll", "implicit"]
_BACKWARDS = ("unroll", "implicit")
#: Residual under which a result counts as doubly stochastic when no ``tol`` was given.
DEFAULT_THRESHOLD = 1e-3
#: Iterations between two convergence checks that need the host (one synchronization each on
#: CUDA): with ``tol`` the loop runs on by up to this many iterations after the last item
#: converged (items that converged earlier are not changed by them, see :func:`_scalings`).
_CHECK_EVERY = 8


class ConvergenceWarning(UserWarning):
    """Issued when Sinkhorn iterations asked for a tolerance and some matrices did not reach it,
    or when ``backward="implicit"`` is asked of a forward that has not reached the fixed point.

    Attributes:
        residual: the largest residual (max over rows and columns of ``|sum - 1|``) among the
            matrices of the call, or ``None`` where the warning was raised without one. A
            training loop can track it (as :func:`permlib.experiments.harness.fit` does): how
            far from converged tells more than how often.
    """

    def __init__(self, *args: object, residual: float | None = None) -> None:
        super().__init__(*args)
        self.residual = residual


@dataclass(frozen=True)
class SinkhornInfo:
    """Per-item convergence report of :func:`log_sinkhorn` (``return_info=True``).

    Attributes:
        residual: ``(...)`` max over rows and columns of ``|sum - 1|`` of the returned matrix
            (rectangular and padded problems: over the present rows and columns of the
            problem with its slack, see :func:`log_sinkhorn`).
        n_iters: ``(...)`` int64, full iterations (row + column normalization) spent on each item.
        converged: ``(...)`` bool, ``residual <= threshold`` (or stopped early at ``tol``).
        errors: ``(..., K)`` the residual after each iteration ``1..K``, where ``K`` is the largest
            ``n_iters`` of the batch; from an item's last iteration on, its final ``residual``
            is repeated.
        threshold: the tolerance the items were judged by: ``tol``, or ``DEFAULT_THRESHOLD`` (1e-3)
            when ``tol`` was ``None`` (fixed unrolling, no early stop).
        f: ``(..., N)`` final row potentials, ``g``: ``(..., M)`` final column potentials, in the
            convention ``log P_ij = log_alpha_ij / tau + f_i + g_j`` (as OTT-JAX's
            ``SinkhornOutput.f``/``.g``, up to the temperature factor). Detached, in the dtype
            of the computation (float32 for float16/bfloat16 input). ``(f, g)`` can be passed
            back as ``init=`` to warm-start a later call (see :attr:`potentials`).
    """

    residual: torch.Tensor
    n_iters: torch.Tensor
    converged: torch.Tensor
    errors: torch.Tensor
    threshold: float
    f: torch.Tensor | None = None
    g: torch.Tensor | None = None

    @property
    def all_converged(self) -> bool:
        return bool(self.converged.all())

    @property
    def potentials(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(f, g)``, ready for ``init=``."""
        if self.f is None or self.g is None:
            raise ValueError("this SinkhornInfo carries no potentials")
        return self.f, self.g


# Shifted log-terms below these are dropped by _logsumexp: exp of anything lower underflows
# towards subnormals, which CPUs compute 10-30x slower, and adds < N e^floor relative to the sum.
_EXP_FLOOR = {torch.float32: -80.0, torch.float64: -700.0}


def _logsumexp(x: torch.Tensor, dim: int) -> torch.Tensor:
    """``torch.logsumexp(x, dim)`` for finite ``x``, without the slow subnormal ``exp`` path.

    The shift by the maximum is treated as a constant, so the gradient is exactly the softmax
    (of the terms above the floor).
    """
    m = x.detach().amax(dim=dim, keepdim=True)
    total = (x - m).clamp_min(_EXP_FLOOR.get(x.dtype, -80.0)).exp().sum(dim=dim)
    return total.log() + m.squeeze(dim)


def _residual(log_p: torch.Tensor) -> torch.Tensor:
    """``(..., N, N) -> (...)``: max over rows and columns of ``|sum - 1|``."""
    rows = _logsumexp(log_p, dim=-1).exp().sub(1).abs().amax(dim=-1)
    cols = _logsumexp(log_p, dim=-2).exp().sub(1).abs().amax(dim=-1)
    return torch.maximum(rows, cols)


def _defers(device: torch.device) -> bool:
    """Whether calls on ``device`` gather their host checks into one sync at the end (CUDA)
    instead of checking the input's range up front (CPU, where a check costs no sync)."""
    return device.type == "cuda"


def _sync_every(device: torch.device) -> int:
    """How often a loop may ask the host whether to stop: every iteration where that is free
    (CPU), every :data:`_CHECK_EVERY` iterations on an accelerator (each ask is a sync)."""
    return 1 if device.type == "cpu" else _CHECK_EVERY


class _Solved(NamedTuple):
    """What :func:`_solve` returns: the log plan, the report (or ``None``) and the potentials."""

    log_p: torch.Tensor
    info: SinkhornInfo | None
    f: torch.Tensor
    g: torch.Tensor


def _potential_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype in which :func:`_solve` accumulates the potentials: float64 where the device has
    it (the potentials grow to ``max |x|``, and in float32 their sum with ``x`` would lose the
    digits of the entries that carry mass; they are ``O(N)``, so this costs nothing)."""
    return x.dtype if x.device.type == "mps" else torch.float64


def _error_history(
    errors: list[torch.Tensor],
    residual: torch.Tensor,
    active: torch.Tensor | None,
    longest: int,
) -> torch.Tensor:
    """The report's ``errors``: the residual after each of the ``longest`` iterations,
    ``(..., longest)``, from the per-iteration checks ``errors`` (each ``(...)``, none after
    iteration 0) and the final ``residual``. Where the last iteration was not followed by a
    check, the final residual fills it for the items still ``active`` (all items without a
    tolerance, or when no check ran); an item that stopped early repeats its last check."""
    err_t = torch.stack(errors, dim=-1) if errors else residual.unsqueeze(-1)[..., :0]
    err_t = err_t[..., :longest]
    if err_t.shape[-1] < longest:  # the last iteration was not followed by a check
        if active is None or err_t.shape[-1] == 0:  # no check at all: none stopped early
            last = residual
        else:
            last = torch.where(active, residual, err_t[..., -1])
        err_t = torch.cat([err_t, last.unsqueeze(-1)], dim=-1)
    return err_t


def _solve(
    x: torch.Tensor,
    n_iters: int,
    tol: float | None,
    record: bool,
    init: tuple[torch.Tensor, torch.Tensor] | None = None,
    stops: torch.Tensor | None = None,
    history: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> _Solved:
    """The log-domain loop on scaled scores ``x = log_alpha / tau``; returns ``log S^L(x)``.

    Written as the textbook loop: the matrix ``X^l = x + f^l 1^T + 1 (g^l)^T`` itself is
    updated (``X <- X - lse_rows(X)``, then ``X <- X - lse_cols(X)``), so the entries that carry
    mass (near 0) keep full precision however large ``x`` or the potentials grow (forming
    ``x + f + g`` from potentials of size ``max |x|`` would lose ``eps * max |x|`` there). The
    potentials ``f``, ``g`` (the sums of the increments) are accumulated on the side in
    :func:`_potential_dtype` for the report and the backward.

    ``init`` gives the starting potentials ``(f, g)`` (``(..., N)`` each; only ``g`` enters the
    first row step). ``stops`` (``(...)`` int64, replay of a run's per-item stops) freezes each
    item after its own number of iterations instead of ``tol``. Items that converged are frozen
    (masked), so how often the loop asks the host whether every item has stopped (each
    iteration on the CPU, every :data:`_CHECK_EVERY` elsewhere, where asking is a sync) does not
    change the result. ``history``: a list that receives ``(f^l, g^l)`` after each iteration
    (``O(N)`` per iteration and matrix, for :class:`_UnrolledLog`).
    """
    batch, n = x.shape[:-2], x.shape[-1]
    pdt = _potential_dtype(x)
    u = torch.zeros(batch + (n,), dtype=pdt, device=x.device)
    if init is None:
        v, mat = u, x
    else:
        v = init[1].to(pdt).expand_as(u)
        mat = x + init[1].to(x.dtype).unsqueeze(-2)
    track = tol is not None or record
    active = torch.ones(batch, dtype=torch.bool, device=x.device) if tol is not None else None
    spent = torch.zeros(batch, dtype=torch.int64, device=x.device)
    meta = x.device.type == "meta"  # shapes only: nothing to read on the host
    every = _sync_every(x.device)
    errors: list[torch.Tensor] = []
    done = 0
    for it in range(n_iters):
        lse_rows = _logsumexp(mat, dim=-1)
        if it > 0 and track:
            # the row sums of the plan after `it` iterations (its columns are normalized): its
            # residual, for O(N) extra work
            err = lse_rows.detach().exp().sub(1).abs().amax(dim=-1)
            if active is not None:
                err = torch.where(active, err, errors[-1]) if errors else err
                active = active & (err > tol)
                errors.append(err)
                if not meta and it % every == 0 and not bool(active.any()):
                    break
            else:
                errors.append(err)
        step = stops > it if stops is not None else active
        if step is not None:
            lse_rows = torch.where(step.unsqueeze(-1), lse_rows, 0.0)
        mat = mat - lse_rows.unsqueeze(-1)
        lse_cols = _logsumexp(mat, dim=-2)
        if step is not None:
            lse_cols = torch.where(step.unsqueeze(-1), lse_cols, 0.0)
            spent = spent + step
        mat = mat - lse_cols.unsqueeze(-2)
        u = u - lse_rows.detach().to(pdt)
        v = v - lse_cols.detach().to(pdt)
        if history is not None:
            history.append((u, v))
        done = it + 1
    log_p = mat
    if not track:
        return _Solved(log_p, None, u, v)

    residual = _residual(log_p.detach())
    if active is None:
        spent = torch.full(batch, done, dtype=torch.int64, device=x.device)
        threshold = DEFAULT_THRESHOLD
        converged = residual <= threshold
    else:
        threshold = float(tol)
        converged = ~active | (residual <= threshold)
    longest = n_iters if meta else int(spent.max()) if spent.numel() else 0
    err_t = _error_history(errors, residual, active, longest)
    info = SinkhornInfo(
        residual=residual,
        n_iters=spent,
        converged=converged,
        errors=err_t.detach(),
        threshold=threshold,
        f=u.to(x.dtype),
        g=v.to(x.dtype),
    )
    return _Solved(log_p, info, u, v)


class _Scaled(NamedTuple):
    """What :func:`_scalings` returns (shapes for ``x`` of shape ``(M, N, N)``)."""

    k: torch.Tensor  # (M, N, N) kernel exp(x - c), still intact
    a: torch.Tensor | None  # with keep: (R, M, N), a^1..a^R
    b: torch.Tensor | None  # with keep: (R + 1, M, N), b^0..b^R
    a_fin: torch.Tensor  # (M, N) each item's result a
    b_fin: torch.Tensor  # (M, N) each item's result b
    shift: torch.Tensor | None  # (M,) gauge shift of a warm start (b^0 = exp(g0 - shift))
    stops: torch.Tensor | None  # (M,) int64 iterations per item (with tol); None: all ran R
    stopped: torch.Tensor | None  # (M,) bool, stopped before the cap (with tol)
    n_run: int  # R, iterations run
    ok: bool | torch.Tensor  # the over/underflow check (a 0-d tensor when deferred)
    info: SinkhornInfo | None  # flat report, shapes (M,), when tracked


def _scalings(
    x: torch.Tensor,
    c: torch.Tensor | None,
    n_iters: int,
    keep: bool,
    tol: float | None = None,
    track: bool = False,
    g0: torch.Tensor | None = None,
    defer: bool = False,
    abort: torch.Tensor | None = None,
) -> _Scaled | None:
    """The iterations in the scaling (exp) domain, for ``x`` of shape ``(M, N, N)``, no grad.

    ``c`` is ``(M, N, 1)``, the row maxima of ``x``, or ``None`` when the caller already shifted
    the rows (``max_j x_ij = 0``, see :func:`_log_sinkhorn`). ``K = exp(x - c 1^T)`` has entries
    in ``[0, 1]`` and one 1 per row; the potentials of the log-domain loop on the row-shifted
    ``x - c 1^T`` are ``f = log a`` and ``g = log b``, where
    ``a^l = 1 / (K b^{l-1})``, ``b^l = 1 / (K^T a^l)`` and ``b^0 = 1`` (``exp(g0 - max g0)``
    for a warm start: the shift is a gauge that cancels in the plan): each half-step is one
    batched vector-matrix product that reads ``K`` once, instead of the several passes over
    ``N x N`` temporaries that ``logsumexp`` makes. The arithmetic is the log-domain loop's up to
    rounding *provided nothing underflows or overflows*. That is checked per item from the
    extreme scalings: a product ``K_ij b_j`` that underflows loses at most ``tiny * max(1, b_hi)``
    of a row sum that is at least ``1 / a_hi`` (and symmetrically for columns), so the loss is
    below one rounding error when ``N * tiny * max(1, b_hi) * a_hi <= eps``. If any item fails
    (small ``tau`` on widely spread scores), ``ok`` is false and the caller falls back to the
    log-domain loop (with ``defer`` ``ok`` is a device tensor, for the caller's one combined
    check, instead of a host bool).

    The convergence report costs no pass over ``N x N``: after the column step of iteration
    ``l`` the plan ``diag(a^l) K diag(b^l)`` has row sums ``a^l_i (K b^l)_i = a^l_i / a^{l+1}_i``
    (its columns sum to 1), so the residual of iteration ``l`` is read off the next row step.
    Every :data:`_CHECK_EVERY` iterations (a block) these residuals are computed for the whole
    block at once; with ``tol`` an item's first iteration ``l >= 1`` whose residual is ``<= tol``
    is its stop, and its scalings of that iteration are its result, exactly as if it had been
    frozen there (the log loop's masking). The loop ends when every item has stopped (one host
    sync per block; a true ``abort`` flag, e.g. non-finite input, also ends it) or after
    ``n_iters``. The final residual (rows and columns) costs two more vector-matrix products.

    Args:
        keep: store every iteration's scalings (for the unrolled backward); otherwise a ring of
            one block.
        tol, track: early stop at ``tol`` / build the report.
        g0: ``(M, N)`` starting column potentials, or ``None`` (zeros).

    Returns:
        a :class:`_Scaled`; ``None`` for meta tensors.
    """
    m, n = x.shape[0], x.shape[-1]
    if x.device.type == "meta":
        return None
    tracking = track or tol is not None
    k = x.exp() if c is None else torch.sub(x, c).exp_()
    # Subnormal entries of K are flushed to 0: they change a row or column sum by less than
    # the underflow of the products K_ij b_j that the range check below already bounds (so the
    # result is the same to that bound), and on the CPU each product with a subnormal takes a
    # slow path (the absorbed fallback on a trained network's scores, Table 5 at N = 250, took
    # about 1.6 times as long without this flush).
    torch.nn.functional.threshold_(k, torch.finfo(k.dtype).tiny, 0.0)
    k_t = k.mT
    if keep and not tracking:
        block = n_iters  # a single block
    else:
        block = min(n_iters, _CHECK_EVERY if tracking else 16)
    # (block + 1, M, 1, N): slot 0 holds the values before the block, slots 1.. its iterations;
    # the per-iteration rows are views made once (unbind), so that an iteration is four ops
    # (view creation would otherwise dominate small problems).
    a_buf = x.new_empty((block + 1, m, 1, n))
    b_buf = x.new_empty((block + 1, m, 1, n))
    a_s, b_s = a_buf.unbind(0), b_buf.unbind(0)
    if g0 is None:
        shift = None
        b_s[0].fill_(1.0)
    else:
        shift = g0.amax(dim=-1) if g0.numel() else x.new_zeros((m,))
        torch.sub(g0.unsqueeze(-2), shift.view(m, 1, 1), out=b_s[0]).exp_()
    a_kept: list[torch.Tensor] = []
    b_kept = [b_buf.narrow(0, 0, 1).squeeze(-2)] if keep and tracking else []  # multi-block
    a_lo = x.new_full((m,), math.inf)
    a_hi = x.new_full((m,), -math.inf)
    b_lo, b_hi = x.new_ones((m,)), x.new_ones((m,))
    stops = stopped = a_fin = b_fin = ar = None
    if tol is not None:
        ar = torch.arange(m, device=x.device)
        stops = torch.full((m,), n_iters, dtype=torch.int64, device=x.device)
        stopped = torch.zeros((m,), dtype=torch.bool, device=x.device)
    errors: list[torch.Tensor] = []
    done = nb = 0
    b_prev = b_s[0]
    while done < n_iters:
        if done > 0:  # the previous block's last values become slot 0 of the next
            if keep:
                prev_a, prev_b = a_s[nb], b_s[nb]
                a_buf, b_buf = torch.empty_like(a_buf), torch.empty_like(b_buf)
                a_s, b_s = a_buf.unbind(0), b_buf.unbind(0)
                a_s[0].copy_(prev_a)
                b_s[0].copy_(prev_b)
                b_prev = b_s[0]
            elif tracking:  # the residuals and the stops read slot 0
                a_s[0].copy_(a_s[nb])
                b_s[0].copy_(b_s[nb])
                b_prev = b_s[0]
            # otherwise b_prev stays the last slot, read before it is overwritten
        nb = min(block, n_iters - done)
        for j in range(1, nb + 1):
            # (1 x N) @ (N x N) products: BLAS runs these far faster than (N x N) @ (N x 1)
            torch.bmm(b_prev, k_t, out=a_s[j]).reciprocal_()
            torch.bmm(a_s[j], k, out=b_s[j]).reciprocal_()
            b_prev = b_s[j]
        new_a, new_b = a_buf.narrow(0, 1, nb).squeeze(-2), b_buf.narrow(0, 1, nb).squeeze(-2)
        torch.minimum(a_lo, new_a.amin(dim=(0, 2)), out=a_lo)
        torch.maximum(a_hi, new_a.amax(dim=(0, 2)), out=a_hi)
        torch.minimum(b_lo, new_b.amin(dim=(0, 2)), out=b_lo)
        torch.maximum(b_hi, new_b.amax(dim=(0, 2)), out=b_hi)
        if keep:
            a_kept.append(new_a)
            b_kept.append(new_b)
        first = 1 if done == 0 else 0  # iteration 0 is not judged
        if tracking and first < nb:
            # row residuals of iterations done + first .. done + nb - 1: |a^l / a^{l+1} - 1|
            a_sq = a_buf.squeeze(-2)
            ratio = a_sq[first:nb] / a_sq[first + 1 : nb + 1]
            errs = ratio.sub_(1).abs_().amax(dim=-1)  # (nb - first, M)
            errors.append(errs)
            if tol is not None:
                hit = errs <= tol
                new = hit.any(dim=0) & ~stopped
                slot = first + hit.to(torch.uint8).argmax(dim=0)  # first hit (slot l - done)
                stops = torch.where(new, done + slot, stops)
                if not keep:  # keep that iteration's scalings; the ring is overwritten later
                    pick_a, pick_b = a_sq[slot, ar], b_buf.squeeze(-2)[slot, ar]
                    if a_fin is None:
                        a_fin, b_fin = pick_a, pick_b  # non-hits are replaced at the end
                    else:
                        a_fin = torch.where(new.unsqueeze(-1), pick_a, a_fin)
                        b_fin = torch.where(new.unsqueeze(-1), pick_b, b_fin)
                stopped = stopped | new
        done += nb
        if tol is not None and done < n_iters:
            go_on = ~stopped.all() if abort is None else ~stopped.all() & ~abort
            if not bool(go_on):
                break
    n_run = done
    last_a, last_b = a_s[nb].squeeze(-2), b_s[nb].squeeze(-2)
    a_all = b_all = None
    if keep and len(a_kept) == 1:
        a_all, b_all = a_kept[0], b_buf.narrow(0, 0, nb + 1).squeeze(-2)  # views, no copy
    elif keep:
        a_all, b_all = torch.cat(a_kept), torch.cat(b_kept)
    if tol is None:
        a_fin, b_fin = last_a, last_b
    else:
        ran_out = ~stopped
        stops = torch.where(ran_out, torch.full_like(stops, n_run), stops)
        if keep:
            a_fin, b_fin = a_all[stops - 1, ar], b_all[stops, ar]
        elif a_fin is None:  # no iteration was judged (n_iters too small): none stopped
            a_fin, b_fin = last_a, last_b
        else:
            a_fin = torch.where(ran_out.unsqueeze(-1), last_a, a_fin)
            b_fin = torch.where(ran_out.unsqueeze(-1), last_b, b_fin)

    fi = torch.finfo(x.dtype)
    loss = math.log(fi.tiny) + math.log(n) - math.log(fi.eps)  # all in log units
    top = math.log(fi.max) - 2 * math.log(n) - math.log(4 * n_run + 4)
    if defer:
        ok = _range_ok(a_lo, a_hi, b_lo, b_hi, loss, top).all()
    else:
        ok = _in_range(a_lo, a_hi, b_lo, b_hi, loss, top)

    info = None
    if tracking:
        # final residual of rows and columns: a_i (K b)_i and b_j (K^T a)_j
        rows = torch.bmm(b_fin.unsqueeze(-2), k_t).squeeze(-2).mul_(a_fin)
        cols = torch.bmm(a_fin.unsqueeze(-2), k).squeeze(-2).mul_(b_fin)
        residual = torch.maximum(
            rows.sub_(1).abs_().amax(dim=-1), cols.sub_(1).abs_().amax(dim=-1)
        )
        spent = stops if tol is not None else torch.full((m,), n_run, device=x.device)
        err_t = torch.cat(errors + [residual.unsqueeze(0)]).mT  # (M, n_run)
        after = torch.arange(n_run, device=x.device) >= (spent - 1).unsqueeze(-1)
        err_t = torch.where(after, residual.unsqueeze(-1), err_t)
        if tol is None:
            threshold, converged = DEFAULT_THRESHOLD, residual <= DEFAULT_THRESHOLD
        else:
            threshold, converged = float(tol), stopped | (residual <= tol)
        info = SinkhornInfo(
            residual=residual,
            n_iters=spent.to(torch.int64),
            converged=converged,
            errors=err_t,
            threshold=threshold,
            f=a_fin.log() - (0.0 if shift is None else shift.unsqueeze(-1)),
            g=b_fin.log() + (0.0 if shift is None else shift.unsqueeze(-1)),
        )
    return _Scaled(k, a_all, b_all, a_fin, b_fin, shift, stops, stopped, n_run, ok, info)


def _range_ok(
    a_lo: torch.Tensor,
    a_hi: torch.Tensor,
    b_lo: torch.Tensor,
    b_hi: torch.Tensor,
    loss: float,
    top: float,
) -> torch.Tensor:
    """``(M,)`` bool, on the device: which items' extreme scalings pass the check of
    :func:`_scalings`: with ``la = log a_hi`` and ``lb = log b_hi``, ``a_lo, b_lo > 0``,
    ``la, lb`` finite, ``la + max(lb, 0) + loss <= 0``, ``lb + max(la, 0) + loss <= 0`` and
    ``la + lb <= top``. NaN fails every comparison."""
    la, lb = a_hi.log(), b_hi.log()
    return (
        (a_lo > 0)
        & (b_lo > 0)
        & torch.isfinite(la)
        & torch.isfinite(lb)
        & (la + lb.clamp(min=0) + loss <= 0)
        & (lb + la.clamp(min=0) + loss <= 0)
        & (la + lb <= top)
    )


def _in_range(
    a_lo: torch.Tensor,
    a_hi: torch.Tensor,
    b_lo: torch.Tensor,
    b_hi: torch.Tensor,
    loss: float,
    top: float,
) -> bool:
    """Whether every item passes :func:`_range_ok`, decided on the host.

    A few items are checked in Python (one transfer instead of a dozen tiny tensor ops, which
    would dominate small problems), more with :func:`_range_ok`; NaN fails either way.
    """
    if a_lo.numel() <= 64:
        rows = torch.stack([a_lo, a_hi, b_lo, b_hi]).tolist()
        for alo, ahi, blo, bhi in zip(*rows, strict=True):
            if not (alo > 0 and blo > 0 and 0 < ahi < math.inf and 0 < bhi < math.inf):
                return False
            la, lb = math.log(ahi), math.log(bhi)
            if la + max(lb, 0) + loss > 0 or lb + max(la, 0) + loss > 0 or la + lb > top:
                return False
        return True
    return bool(_range_ok(a_lo, a_hi, b_lo, b_hi, loss, top).all())


def _log_plan(
    x: torch.Tensor,
    c: torch.Tensor | None,
    a: torch.Tensor,
    b: torch.Tensor,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """``log P = (x - c 1^T) + f 1^T + 1 g^T`` with ``f = log a`` and ``g = log b`` (into
    ``out``, e.g. the no longer needed ``K``, to spare a fresh ``N x N`` allocation).

    ``x - c 1^T`` is formed first (``c``: the row maxima, or ``None`` if ``x`` is shifted) and
    ``f``, ``g`` are bounded by the range check of :func:`_scalings`, so the entries that carry
    mass (``log P`` near 0) are sums of terms of moderate size and keep full precision, however
    large the original scores (adding ``x`` to ``f = log a - c`` would round ``f`` to the
    spacing of ``c``)."""
    if c is not None:
        out = torch.sub(x, c, out=out)
        return out.add_(a.log().unsqueeze(-1)).add_(b.log().unsqueeze(-2))
    return torch.add(x, a.log().unsqueeze(-1), out=out).add_(b.log().unsqueeze(-2))


class _UnrolledScaled(torch.autograd.Function):
    """Exact gradient of the unrolled iterations from the stored scalings (no N x N per step).

    Forward assembles ``log P = x + f 1^T + 1 g^T`` from each item's final scalings of
    :func:`_scalings`. Backward is reverse mode through the iterations written out by hand:
    with the row-step plan ``R^l = diag(a^l) K diag(b^{l-1})``, the column-step plan
    ``C^l = diag(a^l) K diag(b^l)`` and adjoints ``ubar``, ``vbar`` of the potentials
    (``vbar^L = G^T 1``, ``ubar^L`` starts at ``G 1``, where ``G = dL/d log P``),

        ubar^l += -C^l vbar^l,   vbar^{l-1} = -(R^l)^T ubar^l,
        dL/dx = G - sum_l (C^l * (1 vbar^l^T) + R^l * (ubar^l 1^T))
              = G - K * sum_l (a^l (b^l * vbar^l)^T + (a^l * ubar^l) (b^{l-1})^T),

    so the backward costs ``2 L`` vector-matrix products with ``K`` and one rank-``2L`` product;
    per iteration only the length-N scalings are stored. With per-item stops (``tol``) an item's
    iterations after its stop are identities: their terms are masked out and its adjoints pass
    through unchanged. A second derivative (``create_graph``) replays the log-domain loop under
    autograd (with the same stops and warm start), so it is exact too, at the loop's cost.
    """

    @staticmethod
    def forward(ctx, x, c, a, b, stops, a_fin, b_fin):  # noqa: D102
        ctx.save_for_backward(x, c, a, b, stops)
        return _log_plan(x, c, a_fin, b_fin)

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        x, c, a, b, stops = ctx.saved_tensors
        n_iters, m, n = a.shape
        if torch.is_grad_enabled():  # double backward: differentiate the plain loop
            with torch.enable_grad():
                g0 = b[0].log()  # the warm start (up to a gauge shift, which cancels)
                start = (torch.zeros_like(g0), g0)
                xs = x if c is None else x - c  # rows shifted, as the forward's
                out = _solve(xs, n_iters, None, False, init=start, stops=stops).log_p
                (grad_x,) = torch.autograd.grad(out, x, grad, create_graph=True)
            return grad_x, None, None, None, None, None, None
        k = x.exp() if c is None else torch.sub(x, c).exp_()
        k_t = k.mT
        # The rank-2L factors, (2L, M, 1, N): even slots (a^l, b^l * vbar^l), odd slots
        # (a^l * ubar^l, b^{l-1}). Everything known up front is copied in one op; the loop writes
        # the rest in place through views made once, so an iteration is eight ops.
        left = a.new_empty((2 * n_iters, m, 1, n))
        right = torch.empty_like(left)
        left[0::2] = a.unsqueeze(-2)
        right[1::2] = b[:-1].unsqueeze(-2)
        a_r, b_r = a.unsqueeze(-2).unbind(0), b.unsqueeze(-2).unbind(0)  # b_r[l] = b^l
        left_r, right_r = left.unbind(0), right.unbind(0)
        u_in = grad.sum(dim=-1).unsqueeze(-2)
        vbar = grad.sum(dim=-2, keepdim=True)
        if stops is not None:  # per-item masks of all iterations, made once: (L, M, 1, 1)
            its = torch.arange(n_iters, device=x.device).view(-1, 1, 1, 1)
            live_b = stops.view(1, m, 1, 1) > its
            live_r = live_b.to(a.dtype).unbind(0)
            last_r = (stops.view(1, m, 1, 1) == its + 1).to(a.dtype).unbind(0)
            live_b = live_b.unbind(0)
        for it in range(n_iters - 1, -1, -1):
            w = torch.mul(b_r[it + 1], vbar, out=right_r[2 * it])
            if stops is not None:
                w.mul_(live_r[it])
            ubar = torch.bmm(w, k_t).mul_(a_r[it]).neg_()
            if stops is not None:
                ubar.addcmul_(u_in, last_r[it])  # G 1 enters at the item's last step
            elif it == n_iters - 1:
                ubar.add_(u_in)
            z = torch.mul(ubar, a_r[it], out=left_r[2 * it + 1])
            if it > 0:
                back = torch.bmm(z, k).mul_(b_r[it]).neg_()
                vbar = back if stops is None else torch.where(live_b[it], back, vbar)
        low_rank = torch.bmm(
            left.squeeze(-2).permute(1, 2, 0), right.squeeze(-2).transpose(0, 1)
        )
        return torch.addcmul(grad, k, low_rank, value=-1), None, None, None, None, None, None


class _UnrolledLog(torch.autograd.Function):
    """Exact gradient of the log-domain loop (:func:`_solve`) from its potentials alone.

    The fallback's counterpart of :class:`_UnrolledScaled`: autograd through the loop would
    keep an ``N x N`` tensor per half-step (``O(L N^2)``, about 9x the fast path's memory at
    ``B = 4096, N = 100``); this stores ``x`` and the potentials ``f^l``, ``g^l`` of every
    iteration (``O(N)`` each, in :func:`_potential_dtype`) and, going backwards, recomputes the
    row-step plan ``R^l = exp(x + f^l 1^T + 1 (g^{l-1})^T)`` and the column-step plan
    ``C^l = exp(x + f^l 1^T + 1 (g^l)^T)`` one at a time (the sum formed in the potentials'
    dtype, so entries near 1 keep their digits). These are the softmaxes of the two
    ``logsumexp`` of iteration ``l``, so the backward is the textbook loop's own, on one
    ``N x N`` gradient ``H = dL/dX`` (from ``H = G`` at the end):

        H <- H - C^l * (1 1^T H),   then   H <- H - R^l * (H 1 1^T),

    the sums taken of the rounded ``H`` itself, so that where ``P`` saturates the terms cancel
    exactly, as they do in autograd through the loop; an item's iterations after its stop are
    identities (masked). The backward costs two ``exp`` over ``N x N`` per iteration (what the
    autograd backward of ``logsumexp`` costs) and memory for three ``N x N`` temporaries
    (``H``, the plan and its float64 exponent). A second derivative replays :func:`_solve` under
    autograd (same stops and warm start), so it is exact too, at the plain loop's memory.
    """

    @staticmethod
    def forward(ctx, x, log_p, us, vs, stops):  # noqa: D102
        ctx.save_for_backward(x, us, vs, stops)
        return log_p

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        x, us, vs, stops = ctx.saved_tensors
        n_iters, m, n = us.shape
        if torch.is_grad_enabled():  # double backward: differentiate the plain loop
            with torch.enable_grad():
                start = (vs[0], vs[0])  # only g enters the first row step
                out = _solve(x, n_iters, None, False, init=start, stops=stops).log_p
                (grad_x,) = torch.autograd.grad(out, x, grad, create_graph=True)
            return grad_x, None, None, None, None
        floor = _EXP_FLOOR.get(x.dtype, -80.0)
        xp = x.to(us.dtype)  # the potentials' dtype (float64): x + f + g without cancellation
        z = torch.empty_like(xp)
        plan = torch.empty_like(x)
        out = grad.clone()  # dL/dX^l, from l = L down to dL/dx
        if stops is not None:  # per-item masks of all iterations, made once: (L, M, 1, 1)
            its = torch.arange(n_iters, device=x.device).view(-1, 1, 1, 1)
            live = (stops.view(1, m, 1, 1) > its).to(x.dtype).unbind(0)

        def exp_plan(f: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
            torch.add(xp, f.unsqueeze(-1), out=z).add_(g.unsqueeze(-2))
            # entries below the floor are dropped (exactly 0), as the forward's floored
            # logsumexp drops them: kept as e^floor they breed subnormal products in the
            # updates below, which CPUs compute 10-30x slower
            plan.copy_(z)
            return plan.masked_fill_(plan < floor, -math.inf).exp_()

        for it in range(n_iters - 1, -1, -1):
            c = exp_plan(us[it], vs[it + 1])  # column step: X <- X - lse_cols(X), softmax C
            col = out.sum(dim=-2, keepdim=True)
            out.addcmul_(c, col if stops is None else col.mul_(live[it]), value=-1)
            r = exp_plan(us[it], vs[it])  # row step: X <- X - lse_rows(X), softmax R
            row = out.sum(dim=-1, keepdim=True)
            out.addcmul_(r, row if stops is None else row.mul_(live[it]), value=-1)
        return out, None, None, None, None


def _check_tau(tau: object) -> tuple[float, torch.Tensor | None]:
    """``tau`` as a float (a finite number > 0), and as a 0-d tensor when it is a tensor that
    requires grad: then ``log_alpha / tau`` is formed with it and ``d/dtau`` flows (through
    either backward) instead of being silently dropped."""
    value = check_positive_real(tau, "tau")
    if isinstance(tau, torch.Tensor) and tau.requires_grad:
        return value, tau.reshape(())
    return value, None


def _representable(log_p: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``log_p`` with entries below ``-finfo(dtype).max`` raised to it, so that the cast to a low
    precision ``dtype`` stays finite (float16 holds no log-probability below -65504, which the
    cast would turn into -inf). ``exp`` of the floor is 0 in that dtype, as the true value's is.
    The gradient passes through unchanged (straight through), as if the value were held."""
    floor = -torch.finfo(dtype).max
    if not (log_p.requires_grad and torch.is_grad_enabled()):
        return log_p.clamp_min(floor)
    return log_p + (log_p.detach().clamp_min(floor) - log_p.detach())


def _upcast_if_overflowing(x: torch.Tensor, tau: float, extent: float) -> torch.Tensor:
    """Return ``x`` in a dtype in which ``x / tau`` and the potentials (a few times larger) fit.

    ``extent`` is ``max |x|`` (from :func:`permlib._checks.finite_range`).
    """
    scale = extent / tau
    for dtype in (x.dtype, torch.float64):
        if scale <= torch.finfo(dtype).max / 16:
            return x.to(dtype)
    raise ValueError(
        f"log_alpha / tau overflows even in float64 (max |log_alpha| / tau = {scale:.3g}); "
        "rescale log_alpha or raise tau"
    )


def _adjoint_cg(p: torch.Tensor, rhs: torch.Tensor, on: torch.Tensor | None = None) -> torch.Tensor:
    """Solve ``(I - P^T P) y = rhs`` on the complement of ``1`` by conjugate gradients.

    ``p`` is ``(M, N, N)`` (doubly stochastic), ``rhs`` is ``(M, N)``; batched, in ``p``'s dtype.
    ``I - P^T P`` is symmetric positive semi-definite with eigenvalues in ``[0, 1]``; for a
    positive ``P`` its null space is exactly the gauge direction ``1`` (``P^T P`` is a positive
    matrix with Perron eigenvector ``1``), which is projected out of ``rhs`` and of every
    iterate. Each CG step costs two batched vector-matrix products with ``P``. An item stops when
    its residual falls below ``rtol * |rhs|`` (``rtol = eps ** 0.75``, 1.8e-12 in float64,
    6.4e-6 in float32), or when a search direction has no curvature left at working precision
    (``d^T A d <= 8 eps |d|^2``: as ``tau -> 0`` and ``P`` tends to a permutation, ``A`` gets
    eigenvalues near zero; stopping there, CG's Krylov truncation regularizes the solution, as
    the truncated pseudo-inverse did), or after ``2 N + 10`` steps. Convergence is checked on
    the host every iteration on the CPU and every :data:`_CHECK_EVERY` on an accelerator (a
    stopped item is frozen, so a late check changes nothing).

    ``on`` (``(M, N)`` bool, for the rectangular and padded problems of :func:`_general`, where
    ``p`` is ``(M, R, N)`` with rows scaled so that ``P^T P`` still has eigenvalues in
    ``[0, 1]``): the columns that exist; the gauge direction is then their indicator, and the
    other columns (zero in ``p`` and ``rhs``) stay zero.
    """
    eps = torch.finfo(p.dtype).eps
    rtol = eps**0.75
    p_t = p.mT
    if on is None:

        def proj(d: torch.Tensor) -> torch.Tensor:
            return d - d.mean(dim=-1, keepdim=True)

    else:
        onf = on.to(p.dtype).unsqueeze(-2)  # (M, 1, N)
        count = onf.sum(dim=-1, keepdim=True).clamp_min(1.0)

        def proj(d: torch.Tensor) -> torch.Tensor:
            return d - (d * onf).sum(dim=-1, keepdim=True).div_(count).mul(onf)

    def apply(d: torch.Tensor) -> torch.Tensor:  # (I - P^T P) d, projected; d of shape (M, 1, N)
        pd = torch.bmm(d, p_t)  # (P d)^T
        out = d - torch.bmm(pd, p)  # d - (P^T P d)^T
        return proj(out)

    if on is None:
        r = (rhs - rhs.mean(dim=-1, keepdim=True)).unsqueeze(-2)  # (M, 1, N)
    else:
        r = proj(rhs.unsqueeze(-2))
    y = torch.zeros_like(r)
    d = r.clone()
    rs = (r * r).sum(dim=-1)  # (M, 1)
    target = rs * rtol**2
    alive = rs > target
    every = _sync_every(p.device)
    n = p.shape[-1]
    for it in range(2 * n + 10):
        if it % every == 0 and not bool(alive.any()):
            break
        ad = apply(d)
        curv = (d * ad).sum(dim=-1)
        alive = alive & (curv > 8 * eps * (d * d).sum(dim=-1))
        step = torch.where(alive, rs / torch.where(alive, curv, 1.0), 0.0).unsqueeze(-1)
        y.addcmul_(step, d)
        r.addcmul_(step, ad, value=-1)
        rs_new = (r * r).sum(dim=-1)
        beta = torch.where(alive, rs_new / torch.where(alive, rs, 1.0), 0.0).unsqueeze(-1)
        d = torch.addcmul(r, beta, d)
        rs = torch.where(alive, rs_new, rs)
        alive = alive & (rs > target)
    return y.squeeze(-2)


class _ImplicitGrad(torch.autograd.Function):
    """Attach the implicit-function-theorem gradient of the Sinkhorn fixed point to the result.

    At the fixed point ``log P = X + f 1^T + 1 g^T`` with ``P 1 = 1`` and ``P^T 1 = 1``. For an
    upstream gradient ``G = dL/d log P``, differentiating the two constraints gives

        dL/dX = G - P * (alpha 1^T + 1 beta^T),
        [[I, P], [P^T, I]] [alpha; beta] = [G 1; G^T 1],

    solved through the Schur complement ``(I - P^T P) beta = G^T 1 - P^T G 1`` by conjugate
    gradients (:func:`_adjoint_cg`, as OTT-JAX solves its adjoint system iteratively), then
    ``alpha = G 1 - P beta``. The system is singular along the gauge direction
    ``(alpha, beta) = (1, -1)``, which changes no ``alpha_i + beta_j`` and is projected out.
    Nothing from the iterations is stored, only the result ``P`` (or ``log P``) itself, so
    memory does not grow with the number of iterations; the solve works on length-N vectors in
    the input's dtype. ``plan``: the output is ``P`` (then ``G`` is the upstream gradient times
    ``P``), otherwise ``log P``. Second derivatives are not available (the saved plan carries
    no dependence on the input): a double backward raises.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, out: torch.Tensor, plan: bool) -> torch.Tensor:  # noqa: D102
        ctx.plan = plan
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # noqa: D102
        if torch.is_grad_enabled():
            raise RuntimeError(
                "second derivatives through backward='implicit' are not supported: the implicit "
                "gradient is computed from the saved fixed point, not differentiably; use "
                "backward='unroll' for double backward (e.g. create_graph=True, Hessians)"
            )
        (out,) = ctx.saved_tensors
        shape, n = out.shape, out.shape[-1]
        if ctx.plan:
            p = out.reshape(-1, n, n)
            g = grad.reshape(-1, n, n).mul(p)  # dL/d log P, becomes dL/dX in place
        else:
            p = out.reshape(-1, n, n).exp()
            g = grad.reshape(-1, n, n).clone()
        r = g.sum(dim=-1)
        c = g.sum(dim=-2)
        rhs = c - torch.bmm(r.unsqueeze(-2), p).squeeze(-2)
        beta = _adjoint_cg(p, rhs)
        alpha = r - torch.bmm(beta.unsqueeze(-2), p.mT).squeeze(-2)
        g.addcmul_(p, alpha.unsqueeze(-1), value=-1).addcmul_(p, beta.unsqueeze(-2), value=-1)
        return g.reshape(shape), None, None


def _check_init(
    init: object, log_alpha: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Validate ``init = (f, g)`` (shapes, dtype, device); finiteness is checked by the caller."""
    if init is None:
        return None
    if not isinstance(init, (tuple, list)) or len(init) != 2:
        raise TypeError(
            f"init must be a pair (f, g) of potentials or None, got {type(init).__name__}"
        )
    batch, (n, m) = tuple(log_alpha.shape[:-2]), log_alpha.shape[-2:]
    wants = ((batch + (n,), "N"), (batch + (m,), "N" if m == n else "M"))
    out = []
    for name, t, (want, size) in zip(("init[0] (f)", "init[1] (g)"), init, wants, strict=True):
        t = check_tensor(t, name)
        if not t.is_floating_point():
            raise TypeError(f"{name} must have a floating dtype, got {t.dtype}")
        if t.device != log_alpha.device:
            raise ValueError(f"{name} is on {t.device} but log_alpha is on {log_alpha.device}")
        try:  # (..., N), broadcastable to log_alpha's batch shape
            fits = t.dim() >= 1 and torch.broadcast_shapes(tuple(t.shape), want) == want
        except RuntimeError:
            fits = False
        if not fits:
            raise ValueError(
                f"{name} must have shape {want} (log_alpha's batch shape and {size}), got "
                f"{tuple(t.shape)}"
            )
        out.append(t.detach())
    return out[0], out[1]


def _warn_unconverged(
    n_bad: int,
    total: int,
    worst: float,
    tol: float | None,
    n_iters: int,
    implicit: bool,
    stacklevel: int,
) -> None:
    if tol is not None:
        msg = (
            f"Sinkhorn did not reach tol={tol:g} within n_iters={n_iters} for {n_bad} of {total} "
            f"matrices (largest residual {worst:.3g}); raise n_iters or tau"
        )
    else:
        msg = (
            f"Sinkhorn has not converged for {n_bad} of {total} matrices after n_iters="
            f"{n_iters} (largest residual {worst:.3g} > {DEFAULT_THRESHOLD:g})"
        )
    if implicit:
        msg += (
            "; backward='implicit' differentiates the fixed point, which the forward has not "
            "reached, so the gradient is not that of the returned matrix (raise n_iters, pass "
            "tol, or use backward='unroll')"
        )
    warnings.warn(ConvergenceWarning(msg, residual=float(worst)), stacklevel=stacklevel + 1)


def log_sinkhorn(
    log_alpha: torch.Tensor,
    tau: float | torch.Tensor = 1.0,
    n_iters: int = 20,
    tol: float | None = None,
    backward: Backward = "unroll",
    return_info: bool = False,
    *,
    init: tuple[torch.Tensor, torch.Tensor] | None = None,
    n_rows: int | torch.Tensor | None = None,
    n_cols: int | torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor | tuple[torch.Tensor, SinkhornInfo]:
    r"""Logarithm of the Sinkhorn operator, ``log S(log_alpha / tau)``.

    Args:
        log_alpha: ``(..., N, M)`` floating scores (log-potentials), maximized; rows index items,
            columns index positions. Any float dtype: float16/bfloat16 are computed in float32
            and returned in the input dtype. ``-inf`` marks a forbidden pair (exactly 0 in the
            result); NaN and ``+inf`` are errors. ``N != M`` (rectangular), ``-inf`` entries
            and the padding arguments below give the partial permutation described under
            "Rectangular and padded problems".
        tau: temperature > 0, a number or a one-element tensor. As ``tau -> 0`` the result
            tends to the matching ``M(log_alpha)``. A tensor ``tau`` that requires grad receives
            its gradient ``d/dtau`` (through either backward); otherwise its value is read.
        n_iters: number of iterations (row then column normalization) when ``tol`` is None
            (the papers' fixed unrolling); otherwise the cap on iterations.
        tol: if given, each item stops once its max row/column-sum error is ``<= tol``; items that
            do not get there within ``n_iters`` trigger a :class:`ConvergenceWarning`.
        backward: ``"unroll"`` backpropagates through the iterations (the exact gradient of
            the iterations each item ran; memory grows with them, by ``O(N)`` per iteration and
            matrix, on the fast path described below and on the log-domain fallback alike: both
            store the potentials only and recompute the rest in a hand-written backward);
            ``"implicit"`` differentiates the fixed point (implicit function theorem, the
            adjoint system solved by conjugate gradients), with memory independent of the
            number of iterations. Both agree at convergence; before it, they differ: the
            implicit gradient is only the derivative of the fixed point, so when the forward
            has not reached it (residual above ``tol``, or above 1e-3 without ``tol``) a
            :class:`ConvergenceWarning` says so (turn it into an error with
            ``warnings.simplefilter("error", ConvergenceWarning)``). When ``tau`` is so small
            that ``P`` is numerically a permutation, the adjoint system is ill-conditioned and
            the implicit gradient is a regularized (truncated conjugate-gradient) estimate:
            prefer ``"unroll"`` there. Second derivatives (double backward) exist only with
            ``"unroll"``; through ``"implicit"`` they raise a ``RuntimeError``.
        return_info: also return a :class:`SinkhornInfo` with per-item residuals and the final
            potentials.
        init: warm start, ``(f, g)`` potentials of shapes ``(..., N)`` and ``(..., M)`` in the
            convention ``log P_ij = log_alpha_ij / tau + f_i + g_j`` (e.g. ``info.potentials``
            of an earlier call, on scores that changed a little). The first step, a row
            normalization, recomputes ``f`` from ``g``, so only ``g`` shapes the result; ``f``
            is checked and accepted so that a report's potentials can be passed back as they
            are. ``None`` starts from zeros (``S^0 = exp(X / tau)``). No gradient flows into
            ``init``. Must be finite, on ``log_alpha``'s device. (An item with more rows than
            columns is solved transposed, so there ``f`` shapes the result and ``g`` does not.)
        n_rows, n_cols: sizes of a padded batch: ints or integer tensors of the batch shape
            ``log_alpha.shape[:-2]`` (or broadcastable to it); item ``b`` is the
            ``(n_rows[b], n_cols[b])`` top-left block of ``log_alpha[b]``. The padding's values
            are never read (NaN included); it is exactly 0 in the result (``-inf`` in the log
            result) and gets a zero gradient.
        mask: bool, ``log_alpha``'s shape (or broadcastable to it), ``True`` where an entry
            exists: rows and columns without any ``True`` are padding, a ``False`` entry of a
            present row and column is a forbidden pair (as ``-inf``). Combined with
            ``n_rows``/``n_cols`` when both are given.

    Returns:
        ``(..., N, M)`` log of a (nearly) doubly stochastic matrix (square problems; a partial
        permutation otherwise, see below), in ``log_alpha``'s dtype; with
        ``return_info``, the pair ``(log_p, info)``. After the last iteration columns sum to 1;
        the row residual is what ``info.residual`` reports. Always finite: in float16, whose
        most negative value is -65504, log-probabilities below it (``P`` far below the
        smallest float16, which ``exp`` turns into 0 either way) are returned as -65504
        (``-finfo(dtype).max``; the gradient passes through them as if they were held).

    Math:
        For ``tau > 0``, ``S(X / tau)`` is the unique maximizer over doubly stochastic ``P`` of
        :math:`\langle P, X\rangle_F + \tau H(P)`, with :math:`H(P) = -\sum_{ij} P_{ij}\log P_{ij}`
        (Theorem 1 of Mena et al., 2017, ``mena2017sinkhorn``; Mena et al., 2018,
        ``mena2018learning``).

    Note:
        Rectangular and padded problems. For an item with ``R`` present rows and ``C`` present
        columns, ``R <= C``, the result is the entropic partial permutation: the maximizer of
        :math:`\langle P, X\rangle_F + \tau H(P) + \tau H(D)` over ``P >= 0`` with rows
        summing to 1, and a slack block ``D`` of ``C - R`` dummy rows that fills the columns to
        1 (columns of ``P`` sum to at most 1), excluded entries fixed at 0: the construction of
        pygmtools' ``sinkhorn(..., n1, n2, dummy_row=True)``, whose plans it equals (the
        ``C - R`` identical dummy rows are carried as one row of mass ``C - R``). When
        ``R > C`` the item is transposed: columns sum to 1, rows to at most 1. Each iteration
        normalizes the shorter side first, then the longer one with its slack (for square
        items the rows, then the columns), so after the last iteration the longer side's sums
        (with the slack) are exact and ``info.residual`` reports the shorter side's. A
        problem whose forbidden pairs leave some rows (columns when ``R > C``) fewer allowed
        partners than members raises a ``ValueError`` naming the batch item and those rows.
        These problems run the log-domain loop with masks (no scaling fast path, checks on
        the host also on CUDA); ``tol``, ``return_info``, ``init``, both backwards and the
        ``torch.func`` transforms work as for square ones, except that ``backward="unroll"``
        differentiates the loop with autograd (``O(L N M)`` memory). With forbidden pairs,
        entries that no feasible assignment uses tend to 0 only as about ``1 / L``: expect
        slow convergence there.

    Note:
        Convergence can be slow for small ``tau`` or for nearly-decomposable inputs (the
        epsilon-matrices of Appendix D of the HSTE paper, ``hste``, need about ``-log2(eps)``
        normalizations before they leave a plateau). Fixed unrolling then silently returns a
        matrix that is not doubly stochastic: pass ``tol`` (or ``return_info=True``) to see it,
        and raise ``n_iters`` or ``tau`` to fix it. Whatever the input scale and temperature,
        the output is finite and its columns sum to 1 (the last step is a column
        normalization); at temperatures far below the gaps between scores (e.g. ``tau=1e-4``
        on scores of scale 1000) the rows can stay far from 1 for thousands of iterations,
        which ``info.residual`` and ``info.converged`` report.

    Note:
        Precision. Each row of ``log_alpha`` is shifted to its maximum *before* the division
        by ``tau`` (``S`` does not change; the shift gets no gradient, which it would not
        have), so ``log_alpha / tau`` keeps the digits of the differences that decide ``P``
        even when ``max |log_alpha| / tau`` is far beyond ``1 / eps``; the result is then
        assembled from potentials of moderate size (fast path), or the log-domain loop
        updates the matrix itself as the textbook loop does. In float32 the largest error of
        ``P`` against float64 on the same input stays at a few 1e-7 to 1e-6 for
        ``max |log_alpha| / tau`` from 1 to 1e8 and for offsets up to 1e8 (the textbook loop,
        which divides first, loses the offsets). Where ``P`` saturates to a permutation the
        unrolled gradient is exactly 0 there, as through the textbook loop (the log-domain
        backward takes its sums of the rounded gradient itself, see :class:`_UnrolledLog`).

    Note:
        Speed. The iterations run on scalings ``a = exp(f)``, ``b = exp(g)`` of the kernel
        ``exp(X - max_j X)``: one batched vector-matrix product per half-step, and a
        hand-written backward that stores only the scalings. ``tol``, ``return_info``, ``init``
        and ``backward="implicit"`` all stay on this path: the per-iteration residual is read
        off the scalings (``a^l / a^{l+1}`` are the row sums after iteration ``l``), checked
        every few iterations, and each item's result is that of its own stopping iteration,
        as in the log-domain loop. The result equals the log-domain loop's up to rounding;
        whenever over- or underflow could change that (checked from the scalings, typically
        small ``tau`` on spread-out scores) the call falls back to the log-domain loop
        (same arguments, same report; its unrolled backward also stores only the potentials,
        in float64, and recomputes two ``N x N`` plans per iteration, so the fallback costs
        time, not memory). The fallback runs only the first iteration in the log domain and
        the others in the scaling domain on its result (``S^L(x) = S^{L-1}(log S^1(x))``, whose
        scalings are usually in range; ``python -m benchmarks.fallback`` times it on a trained
        network's scores); with ``tol``, unless an item is already within it after that first
        iteration (then the whole loop runs in the log domain). ``python -m
        benchmarks.convergence`` measures the cost of ``tol``/``return_info`` and of the
        implicit backward against fixed unrolling.

    Note:
        Devices. On the CPU the input's range is checked before the iterations (NaN/inf raise
        a ``ValueError`` naming ``log_alpha``). On CUDA the checks (finite input, no overflow
        of ``log_alpha / tau``, the scaling range, convergence for the warnings) are gathered
        into one host synchronization per call; a failed check re-runs the call with the
        eager checks, which raise the same errors or take the fallback. With ``tol`` the loop
        also asks the device whether every item has stopped once per 8 iterations, never
        every iteration.

    Note:
        ``torch.func``. With fixed unrolling (``tol=None``) and ``backward="unroll"`` the
        function works under ``vmap`` (the mapped dimension becomes one more batch dimension of
        a single call, so ``vmap(log_sinkhorn)(x)`` equals ``log_sinkhorn(x)`` bit for bit;
        ``tau`` and ``init`` may be mapped too), ``grad``, ``vjp``, ``jacrev``, ``jacfwd``,
        ``jvp``, ``hessian`` and their compositions (e.g. ``vmap(grad(loss))`` for per-sample
        gradients): derivatives under these transforms are those of the unrolled log-domain
        loop, replayed in torch ops (equal to the plain call's to rounding; the replay costs
        the textbook loop's time and ``O(L N^2)`` memory per matrix). The input checks read
        the values under the transform's wrappers. ``tol``, ``return_info=True`` and
        ``backward="implicit"`` decide on the host from each item's values and raise a
        ``NotImplementedError`` under a transform: drop them, or use a batch dimension instead
        of ``vmap`` and ``torch.autograd`` instead of ``torch.func.grad``. A plain call pays
        one flag test for this.
    """
    exists = _exists(log_alpha, n_rows, n_cols, mask)
    return _log_sinkhorn(
        log_alpha, tau, n_iters, tol, backward, return_info, stacklevel=3, init=init,
        exists=exists,
    )


def _log_sinkhorn(
    log_alpha: torch.Tensor,
    tau: float | torch.Tensor,
    n_iters: int,
    tol: float | None,
    backward: str,
    return_info: bool,
    stacklevel: int,
    plan: bool = False,
    init: tuple[torch.Tensor, torch.Tensor] | None = None,
    eager: bool = False,
    exists: torch.Tensor | None = None,
    absorb: bool = True,
    warn: bool = True,
) -> torch.Tensor | tuple[torch.Tensor, SinkhornInfo]:
    """Implementation of :func:`log_sinkhorn` (of :func:`sinkhorn` with ``plan``: the result is
    exponentiated); ``stacklevel`` points the warning at the caller; ``eager`` forces the
    up-front host checks (the CPU's way) on any device; ``exists``: the entries that exist
    (:func:`permlib._checks.entry_mask`), ``None`` for all. Square problems of finite scores
    take the fast path; the others (rectangular, padded, ``-inf``) :func:`_general`.
    ``absorb``: where the scalings leave their range, may the fallback absorb the first
    iteration into the scores and go on in the scaling domain (see :func:`_absorbed`);
    ``warn``: issue the :class:`ConvergenceWarning` (the absorbed call's caller does)."""
    check_float_matrix(log_alpha, "log_alpha", square=False, finite=False)
    if (
        _is_transformed(log_alpha)
        or _is_transformed(tau)
        or (isinstance(init, (tuple, list)) and any(map(_is_transformed, init)))
        or (exists is not None and _is_transformed(exists))
    ):
        return _under_transform(
            log_alpha, tau, n_iters, tol, backward, return_info, plan, init, exists
        )
    tau_in = tau  # as given, for the eager re-run
    tau, tau_t = _check_tau(tau)
    n_iters = check_positive_int(n_iters, "n_iters")
    if tol is not None:
        tol = check_positive_real(tol, "tol")
    if backward not in _BACKWARDS:
        raise ValueError(f"backward must be one of {_BACKWARDS}, got {backward!r}")
    pot = _check_init(init, log_alpha)

    dtype = log_alpha.dtype
    x = compute_float(log_alpha)
    if exists is not None or log_alpha.shape[-1] != log_alpha.shape[-2]:
        return _general_checked(
            log_alpha, x, exists, tau, tau_t, n_iters, tol, backward, return_info,
            stacklevel + 1, plan, pot,
        )
    defer = not eager and _defers(x.device) and x.numel() > 0
    bad = None
    if defer:  # one device flag instead of a sync: non-finite input or overflow of x / tau
        ext = torch.cat([extremes(t).to(x.dtype) for t in (log_alpha, *(pot or ()))])
        big = torch.finfo(x.dtype).max / 16
        bad = ~torch.isfinite(ext).all() | (ext[:2].abs().amax() / tau > big)
    else:
        if log_alpha.device.type == "meta" or not log_alpha.numel():
            lo = hi = 0.0
        else:
            lo, hi = extremes(log_alpha).tolist()
        if not (math.isfinite(lo) and math.isfinite(hi)):
            if lo == -math.inf and hi < math.inf:  # forbidden pairs (NaN fails both tests)
                return _general_checked(
                    log_alpha, x, exists, tau, tau_t, n_iters, tol, backward, return_info,
                    stacklevel + 1, plan, pot,
                )
            finite_range(log_alpha, "log_alpha")  # raises, naming log_alpha
        for name, t in zip(("init[0] (f)", "init[1] (g)"), pot or (), strict=False):
            finite_range(t, name)
        x = _upcast_if_overflowing(x, tau, max(-lo, hi))
    # Shift each row to its maximum BEFORE dividing by tau: S is unchanged (the first step is a
    # row normalization; the shift is a constant for autograd, whose row sums of dL/dx vanish),
    # and x / tau keeps the digits of the differences that decide P even when max |x| / tau is
    # far beyond 1 / eps (1e6 + randn at tau = 1e-2 would otherwise round by ~4 in x / tau).
    # At tau = 1 the shift is left to the passes that read x anyway (c: the row maxima), so that
    # no extra N x N copy is made; the fallback loop then shifts for itself.
    shift = x.detach().amax(dim=-1, keepdim=True)
    c = None
    if tau_t is not None:
        x = (x - shift) / tau_t.to(device=x.device, dtype=x.dtype)
    elif tau != 1.0:
        x = (x - shift).div_(tau)
    else:
        c = shift
    batch, n = x.shape[:-2], x.shape[-1]
    flat = x.reshape(-1, n, n)
    if c is not None:
        c = c.reshape(-1, n, 1)
    if pot is not None:
        pot = tuple(t.to(x.dtype).expand(batch + (n,)) for t in pot)
    g0 = None if pot is None else pot[1].reshape(-1, n)
    grad = flat.requires_grad and torch.is_grad_enabled()
    implicit = backward == "implicit" and grad
    unroll = grad and not implicit
    track = return_info or tol is not None or implicit

    with torch.no_grad():
        sc = _scalings(flat.detach(), c, n_iters, unroll, tol, track, g0, defer, bad)
    # The one host check of the call: input and scaling range (deferred on CUDA), and what the
    # warnings and the report's shape need.
    flags: list[torch.Tensor] = []
    if defer:
        ok = sc.ok if sc is not None else torch.zeros((), dtype=torch.bool, device=x.device)
        flags.append(bad | ~ok)
    elif sc is not None and not sc.ok:
        sc = None
    if sc is not None and sc.info is not None:
        flags += [(~sc.info.converged).sum(), _amax0(sc.info.residual)]
        if tol is not None:
            flags += [_amax0(sc.stops), sc.stopped.any()]
    host = [float(v) for v in torch.stack([f.double() for f in flags]).tolist()] if flags else []
    if defer and host.pop(0):  # bad input, overflow or out of range: redo with host checks
        return _log_sinkhorn(
            log_alpha, tau_in, n_iters, tol, backward, return_info, stacklevel + 1, plan, init,
            True, absorb=absorb, warn=warn,
        )

    n_bad, worst, info = 0, 0.0, None
    # the report's f is in the convention log P = log_alpha / tau + f + g: undo the row shift
    offset = (shift.squeeze(-1) / (tau if tau_t is None else tau_t.detach().to(shift))).reshape(
        -1, n
    )
    if sc is not None:
        stops = sc.stops
        if sc.info is not None:
            n_bad, worst = int(host[0]), host[1]
            info = _shaped(sc.info, batch, int(host[2]) if tol is not None else None, offset)
            if tol is not None and not host[3]:
                stops = None  # every item ran all iterations: the plain backward
        out = _from_scalings(flat, c, sc, stops, unroll, implicit, plan)
    else:  # the log-domain loop
        init_flat = None if pot is None else (pot[0].reshape(-1, n), g0)
        if c is not None:
            flat = flat - c
        solved = absorbed = None
        if absorb and n_iters > 1 and x.device.type != "meta":
            absorbed = _absorbed(
                flat, n_iters, tol, track, grad, init_flat, backward, stacklevel + 1, plan, eager
            )
        if absorbed is not None:
            out, flat_info = absorbed
        elif not grad or x.device.type == "meta":  # no gradient, or shapes only: plain autograd
            solved = _solve(flat, n_iters, tol, track, init_flat)
            out = solved.log_p.exp() if plan else solved.log_p
        elif implicit:
            with torch.no_grad():
                solved = _solve(flat.detach(), n_iters, tol, track, init_flat)
            res = solved.log_p.exp_() if plan else solved.log_p
            out = _ImplicitGrad.apply(flat, res, plan)
        else:  # unrolled: the hand-written backward stores potentials only
            solved, out = _unrolled_log(flat, n_iters, tol, track, init_flat)
            out = out.exp() if plan else out
        if solved is not None:
            flat_info = solved.info
        if flat_info is not None and x.device.type != "meta":
            n_bad, worst = int((~flat_info.converged).sum()), float(_amax0(flat_info.residual))
        if flat_info is not None:
            info = _shaped(flat_info, batch, None, offset)
    if warn and n_bad and (tol is not None or implicit):
        total = math.prod(batch)
        _warn_unconverged(n_bad, total, worst, tol, n_iters, implicit, stacklevel)
    out = out.reshape(x.shape)
    if not plan and dtype in LOW_PRECISION:
        out = _representable(out, dtype)
    out = out.to(dtype)
    return (out, info) if return_info else out


def _unrolled_log(
    flat: torch.Tensor,
    n_iters: int,
    tol: float | None,
    track: bool,
    init: tuple[torch.Tensor, torch.Tensor] | None,
) -> tuple[_Solved, torch.Tensor]:
    """The log-domain loop on ``flat`` (``(M, N, N)``, rows shifted) with the unrolled gradient:
    ``(solved, log_p)``, ``log_p`` differentiable through :class:`_UnrolledLog`, whose backward
    stores the potentials only."""
    hist: list[tuple[torch.Tensor, torch.Tensor]] = []
    with torch.no_grad():
        solved = _solve(flat.detach(), n_iters, tol, track, init, history=hist)
        zero = torch.zeros_like(hist[0][1])
        g0 = None if init is None else init[1]
        us = torch.stack([h[0] for h in hist])
        vs = torch.stack([zero if g0 is None else g0.to(zero.dtype)] + [h[1] for h in hist])
    stops = solved.info.n_iters if tol is not None else None
    return solved, _UnrolledLog.apply(flat, solved.log_p, us, vs, stops)


def _absorbed(
    flat: torch.Tensor,
    n_iters: int,
    tol: float | None,
    track: bool,
    grad: bool,
    init: tuple[torch.Tensor, torch.Tensor] | None,
    backward: str,
    stacklevel: int,
    plan: bool,
    eager: bool,
) -> tuple[torch.Tensor, SinkhornInfo | None] | None:
    """The log-domain fallback as ``S^L(x) = S^{L-1}(log S^1(x))``, or ``None`` to decline.

    Sinkhorn iterations compose, so one iteration in the log domain followed by ``L - 1`` on
    its result ``log S^1(x)`` is the same loop (Schmitzer's absorption of the potentials into
    the kernel, done once). Scores whose scalings leave the float range in :func:`_scalings`
    (small ``tau`` on widely spread scores) are usually balanced after that one iteration: the
    plan ``S^1(x)`` has unit column sums and row sums of order 1, so the remaining iterations
    take the scaling domain (its own range check still decides; where it fails, they run in the
    log domain). A trained network's scores reach this case (Table 5's Gumbel-Sinkhorn at
    ``N = 250`` and ``400``: ``|log_alpha|`` over 100), where ``python -m benchmarks.fallback``
    times it against the log loop for all ``L`` iterations. Autograd composes the gradients of
    the two parts (the first iteration's unrolled one with the rest's, unrolled or implicit:
    the fixed point of ``log S^1(x)`` is that of ``x``), so values and gradients are the
    loop's up to rounding.

    With ``tol`` an item may stop after the first iteration, which the second part cannot
    express (it judges its own iterations from the first on): if any item's residual after
    the first iteration is within ``tol``, the call declines and the caller runs the whole log
    loop. The report joins the two parts: one more iteration, the first iteration's residual
    in front of ``errors``, and the potentials summed (``log P = x + f + g``).

    ``flat`` is ``(M, N, N)``, rows shifted. Returns ``(out, info)``: the log plan (the plan
    with ``plan``), ``(M, N, N)``, and the flat ``(M, ...)`` report when ``track``, else None.
    """
    if grad:
        solved, head = _unrolled_log(flat, 1, None, False, init)
    else:
        solved = _solve(flat, 1, None, False, init)
        head = solved.log_p
    first = None
    if track:  # the residual after the first iteration: its columns are normalized
        with torch.no_grad():
            first = _logsumexp(head.detach(), dim=-1).exp_().sub_(1).abs_().amax(dim=-1)
        if tol is not None and bool((first <= tol).any()):
            return None
    out = _log_sinkhorn(
        head, 1.0, n_iters - 1, tol, backward, track, stacklevel + 1, plan, None, eager,
        absorb=False, warn=False,
    )
    if not track:
        return out, None
    out, rest = out
    pdt = solved.f.dtype
    info = SinkhornInfo(
        residual=rest.residual,
        n_iters=rest.n_iters + 1,
        converged=rest.converged,
        errors=torch.cat([first.to(rest.errors.dtype).unsqueeze(-1), rest.errors], dim=-1),
        threshold=rest.threshold,
        f=(solved.f + rest.f.to(pdt)).to(rest.f.dtype),
        g=(solved.g + rest.g.to(pdt)).to(rest.g.dtype),
    )
    return out, info


def _is_transformed(t: object) -> bool:
    """Whether ``t`` is a tensor wrapped by a ``torch.func`` transform (vmap's batching, the
    grad/jvp tracking of ``grad``, ``jacrev``, ``jacfwd``, ``vjp``, ``jvp``)."""
    return isinstance(t, torch.Tensor) and torch._C._functorch.is_functorch_wrapped_tensor(t)


def _unwrapped(t: torch.Tensor) -> torch.Tensor:
    """The plain tensor under every ``torch.func`` wrapper of ``t`` (under ``vmap`` it holds the
    values of all the mapped items): what the host checks can read."""
    while torch._C._functorch.is_functorch_wrapped_tensor(t):
        t = torch._C._functorch.get_unwrapped(t)
    return t


def _transforms(*ts: object) -> str:
    """The ``torch.func`` transforms that wrap any of ``ts``, in words, for error messages."""
    names = []
    for t in ts:
        while _is_transformed(t):
            batched = torch._C._functorch.is_batchedtensor(t)
            name = "vmap" if batched else "grad/jacrev/jacfwd/vjp/jvp"
            if name not in names:
                names.append(name)
            t = torch._C._functorch.get_unwrapped(t)
    return " and ".join(f"torch.func {n}" for n in names)


def _under_transform(
    log_alpha: torch.Tensor,
    tau: float | torch.Tensor,
    n_iters: int,
    tol: float | None,
    backward: str,
    return_info: bool,
    plan: bool,
    init: tuple[torch.Tensor, torch.Tensor] | None,
    exists: torch.Tensor | None = None,
) -> torch.Tensor:
    """:func:`_log_sinkhorn` when an argument is wrapped by a ``torch.func`` transform.

    Fixed unrolling with ``backward="unroll"`` is supported (through :class:`_FuncSinkhorn`);
    what needs values on the host per item (``tol``'s early stop, the report, the implicit
    backward's convergence check) raises a ``NotImplementedError`` naming the transform and
    the alternative. The input checks read the plain tensor under the wrappers (all the mapped
    items at once under ``vmap``, as the batched call reads its whole batch).
    """
    fn = "sinkhorn" if plan else "log_sinkhorn"
    where = _transforms(log_alpha, tau, *(init if isinstance(init, (tuple, list)) else ()))
    instead = (
        "call it without the transform: a batch dimension instead of vmap (every argument "
        "broadcasts over leading batch dimensions), torch.autograd instead of torch.func.grad"
    )
    if tol is not None:
        raise NotImplementedError(
            f"{fn}(tol={tol!r}) is not supported under {where}: the early stop at tol decides "
            "on the host, from each item's values, when to stop and whether to warn; pass "
            f"tol=None (fixed unrolling of n_iters iterations), or {instead}"
        )
    if return_info:
        raise NotImplementedError(
            f"{fn}(return_info=True) is not supported under {where}: the report is built from "
            f"values read on the host; pass return_info=False, or {instead}"
        )
    if backward not in _BACKWARDS:
        raise ValueError(f"backward must be one of {_BACKWARDS}, got {backward!r}")
    if backward == "implicit":
        raise NotImplementedError(
            f"{fn}(backward='implicit') is not supported under {where}: whether the forward "
            "reached the fixed point (and the conjugate-gradient solve's stop) is decided on the "
            f"host; pass backward='unroll' (exact, also for second derivatives), or {instead}"
        )
    n_iters = check_positive_int(n_iters, "n_iters")
    if _is_transformed(tau):
        if tau.numel() != 1:
            raise TypeError(
                "tau must be a real number or a one-element tensor, got a tensor of shape "
                f"{tuple(tau.shape)}"
            )
        if not tau.is_floating_point():
            raise TypeError(f"tau must be a floating tensor under {where}, got {tau.dtype}")
        values = _unwrapped(tau).detach()
        if not bool((torch.isfinite(values) & (values > 0)).all()):
            raise ValueError("tau must be a finite number > 0 (every mapped value)")
        tau_min, tau_t = float(values.amin()) if values.numel() else 1.0, tau.reshape(())
    else:
        tau_min, tau_t = _check_tau(tau)
    pot = _check_init(init, log_alpha)
    dtype = log_alpha.dtype
    x = compute_float(log_alpha)
    square = log_alpha.shape[-1] == log_alpha.shape[-2]
    if exists is not None or not square or bool((_unwrapped(log_alpha) == -math.inf).any()):
        # the masked loop in torch ops, which every transform differentiates (fixed unrolling)
        return _general_checked(
            log_alpha, x, exists, tau_min, tau_t, n_iters, None, "unroll", False, 3, plan, pot
        )
    lo, hi = finite_range(_unwrapped(log_alpha), "log_alpha")
    for name, t in zip(("init[0] (f)", "init[1] (g)"), pot or (), strict=False):
        finite_range(_unwrapped(t), name)
    x = _upcast_if_overflowing(x, tau_min, max(-lo, hi))
    # the plain call's row shift and scaling (see _log_sinkhorn), in ops every transform knows
    shift = x.detach().amax(dim=-1, keepdim=True)
    x = (x - shift) / (tau_min if tau_t is None else tau_t.to(device=x.device, dtype=x.dtype))
    g0 = None if pot is None else pot[1].to(x.dtype)
    out = _FuncSinkhorn.apply(x, g0, n_iters, plan)
    if not plan and dtype in LOW_PRECISION:
        out = _representable(out, dtype)
    return out.to(dtype)


def _replay(x: torch.Tensor, g0: torch.Tensor | None, n_iters: int, plan: bool) -> torch.Tensor:
    """The log-domain loop (:func:`_solve`) on prepared scores, in differentiable torch ops:
    what :class:`_FuncSinkhorn` differentiates (the unrolled iterations, as the plain call's
    backward, to rounding)."""
    log_p = _solve(x, n_iters, None, False, init=None if g0 is None else (g0, g0)).log_p
    return log_p.exp() if plan else log_p


class _FuncSinkhorn(torch.autograd.Function):
    """``log S(x)`` (``S(x)`` with ``plan``) of prepared scores ``x`` (rows shifted to their
    maximum, divided by ``tau``; ``(..., N, N)``) for ``torch.func`` transforms.

    ``forward`` runs on plain tensors (every transform level peeled off) and is the plain call
    itself, fast path included. The ``vmap`` rule folds the mapped dimension into the batch
    dimensions (one batched call, as the user's own batched call; bit for bit the same result).
    ``backward`` and ``jvp`` differentiate the unrolled log-domain loop through ``torch.func``
    (:func:`_replay`), in torch ops, so outer transforms compose: ``jacrev`` (a vmapped
    backward), ``vmap(grad)``, ``hessian`` and other higher derivatives are those of the
    unrolled iterations. ``g0``: ``(..., N)`` warm start of the column potentials, or ``None``;
    it receives no gradient (as ``init`` in the plain call).
    """

    @staticmethod
    def forward(x, g0, n_iters, plan):  # noqa: D102
        with torch.no_grad():
            init = None if g0 is None else (g0, g0)
            return _log_sinkhorn(x, 1.0, n_iters, None, "unroll", False, 3, plan, init)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:  # noqa: D102
        x, g0, n_iters, plan = inputs
        ctx.n_iters, ctx.plan = n_iters, plan
        ctx.save_for_backward(x, g0)
        ctx.save_for_forward(x, g0)

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        x, g0 = ctx.saved_tensors

        def f(x: torch.Tensor) -> torch.Tensor:
            return _replay(x, g0, ctx.n_iters, ctx.plan)

        _, pullback = torch.func.vjp(f, x)
        return pullback(grad)[0], None, None, None

    @staticmethod
    def jvp(ctx, x_t, g0_t, n_iters, plan):  # noqa: D102
        x, g0 = ctx.saved_tensors

        def f(x: torch.Tensor) -> torch.Tensor:
            return _replay(x, g0, ctx.n_iters, ctx.plan)

        return torch.func.jvp(f, (x,), (x_t,))[1]

    @staticmethod
    def vmap(info, in_dims, x, g0, n_iters, plan):  # noqa: D102
        x_dim, g_dim = in_dims[0], in_dims[1]
        size = info.batch_size
        x = x.movedim(x_dim, 0) if x_dim is not None else x.expand(size, *x.shape)
        if g0 is not None and g_dim is not None:
            g0 = g0.movedim(g_dim, 0)  # (V, ..., N), aligned with x's batch (V, ...)
            g0 = g0.reshape(size, *([1] * (x.dim() - 1 - g0.dim())), *g0.shape[1:])
        return _FuncSinkhorn.apply(x, g0, n_iters, plan), 0


def _amax0(t: torch.Tensor) -> torch.Tensor:
    """``t.amax()``, 0 for an empty ``t`` (an empty batch)."""
    return t.amax() if t.numel() else torch.zeros((), dtype=t.dtype, device=t.device)


def _shaped(
    info: SinkhornInfo, batch: torch.Size, longest: int | None, offset: torch.Tensor
) -> SinkhornInfo:
    """The flat ``(M, ...)`` report in the batch shape, errors cut to ``longest`` iterations,
    ``offset`` (``(M, N)``, the row shift over ``tau``) taken off ``f``."""
    errors = info.errors if longest is None else info.errors[..., :longest]
    f = info.f if info.f is None else info.f - offset.to(info.f.dtype)
    return SinkhornInfo(
        residual=info.residual.reshape(batch),
        n_iters=info.n_iters.reshape(batch),
        converged=info.converged.reshape(batch),
        errors=errors.reshape(batch + errors.shape[-1:]),
        threshold=info.threshold,
        f=None if f is None else f.reshape(batch + f.shape[-1:]),
        g=None if info.g is None else info.g.reshape(batch + info.g.shape[-1:]),
    )


def _from_scalings(
    flat: torch.Tensor,
    c: torch.Tensor | None,
    sc: _Scaled,
    stops: torch.Tensor | None,
    unroll: bool,
    implicit: bool,
    plan: bool,
) -> torch.Tensor:
    """``log P`` (``P`` with ``plan``), ``(M, N, N)``, from the scalings, with its gradient:
    unrolled (hand-written backward), implicit, or none."""
    a, b = sc.a_fin, sc.b_fin
    if unroll:
        out = _UnrolledScaled.apply(flat, c, sc.a, sc.b, stops, a, b)
        return out.exp() if plan else out
    with torch.no_grad():  # in place in K: the plan needs no log and no exp over N x N
        if plan:
            out = sc.k.mul_(a.unsqueeze(-1)).mul_(b.unsqueeze(-2))
        else:
            out = _log_plan(flat.detach(), c, a, b, out=sc.k)
    return _ImplicitGrad.apply(flat, out, plan) if implicit else out


def sinkhorn(
    log_alpha: torch.Tensor,
    tau: float | torch.Tensor = 1.0,
    n_iters: int = 20,
    tol: float | None = None,
    backward: Backward = "unroll",
    return_info: bool = False,
    *,
    init: tuple[torch.Tensor, torch.Tensor] | None = None,
    n_rows: int | torch.Tensor | None = None,
    n_cols: int | torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor | tuple[torch.Tensor, SinkhornInfo]:
    """The Sinkhorn operator ``S(log_alpha / tau)``: ``exp`` of :func:`log_sinkhorn`.

    Same arguments and conventions as :func:`log_sinkhorn`; returns a ``(..., N, M)`` (nearly)
    doubly stochastic matrix in ``log_alpha``'s dtype (a partial permutation for rectangular,
    padded or forbidden-pair problems, with exact zeros where entries are excluded; and the
    info with ``return_info``).
    """
    exists = _exists(log_alpha, n_rows, n_cols, mask)
    return _log_sinkhorn(
        log_alpha, tau, n_iters, tol, backward, return_info, stacklevel=3, plan=True, init=init,
        exists=exists,
    )


# --- Rectangular problems, forbidden pairs and padded batches (issue 19) ----------------------
#
# Everything that is not a square matrix of finite entries takes this path; the square one above
# is not touched by it. The problem of each item is written in a "frame" where it has no more
# rows than columns (the item is transposed otherwise, as pygmtools does), with one dummy row
# that takes the columns' slack: the ``C - R`` identical dummy rows of the usual construction
# (pygmtools' ``dummy_row=True``; Cuturi, 2013, ``cuturi2013``, for the marginals) carry the same
# scalings at every iteration, so one row of mass ``C - R`` gives the same plan. The loop is the
# log-domain loop of :func:`_solve` with masks: excluded entries are ``-inf`` from the start and
# stay exactly 0 in the plan.


class _Frame(NamedTuple):
    """A flat batch of problems in the solver's frame (``B`` items, ``R`` rows, ``C`` columns,
    ``R <= C`` for every item's present rows and columns; row ``R`` is the dummy)."""

    x: torch.Tensor  # (B, R + 1, C) scores / tau, frame rows shifted to their max; -inf excluded
    allowed: torch.Tensor  # (B, R + 1, C) bool
    row_on: torch.Tensor  # (B, R + 1) bool: the rows with a marginal (the dummy where C > R)
    col_on: torch.Tensor  # (B, C) bool: the present columns
    log_r: torch.Tensor  # (B, R + 1) log row marginals: 0, the dummy's log(C - R)
    shift: torch.Tensor  # (B, R) the frame rows' shift, over tau (taken off the report's f)
    mode: str  # "plain", "transposed" or "mixed" (per item, in a max(N, M) square)
    flip: torch.Tensor | None  # (B,) bool, the transposed items (mode "mixed")


def _to_frame(t: torch.Tensor, mode: str, flip: torch.Tensor | None, fill: object) -> torch.Tensor:
    """``(B, N, M)`` -> the frame's ``(B, R, C)`` (transposed items, ``fill`` in the padding)."""
    if mode == "plain":
        return t
    if mode == "transposed":
        return t.mT
    n, m = t.shape[-2:]
    size = max(n, m)
    t = torch.nn.functional.pad(t, (0, size - m, 0, size - n), value=fill)
    return torch.where(flip.view(-1, 1, 1), t.mT, t)


def _from_frame(t: torch.Tensor, mode: str, flip: torch.Tensor | None, n: int, m: int):
    """The frame's ``(B, R, C)`` -> ``(B, N, M)`` (the inverse of :func:`_to_frame`)."""
    if mode == "plain":
        return t
    if mode == "transposed":
        return t.mT
    return torch.where(flip.view(-1, 1, 1), t.mT, t)[..., :n, :m]


def _vectors_to_frame(f, g, mode, flip):
    """Row and column vectors ``(B, N)``, ``(B, M)`` -> the frame's rows and columns."""
    if mode == "plain":
        return f, g
    if mode == "transposed":
        return g, f
    size = max(f.shape[-1], g.shape[-1])
    f = torch.nn.functional.pad(f, (0, size - f.shape[-1]))
    g = torch.nn.functional.pad(g, (0, size - g.shape[-1]))
    fl = flip.view(-1, 1)
    return torch.where(fl, g, f), torch.where(fl, f, g)


def _vectors_from_frame(u, v, mode, flip, n, m):
    """The frame's row and column vectors -> ``(B, N)``, ``(B, M)``."""
    if mode == "plain":
        return u, v
    if mode == "transposed":
        return v, u
    fl = flip.view(-1, 1)
    return torch.where(fl, v, u)[..., :n], torch.where(fl, u, v)[..., :m]


def _check_general_input(log_alpha: torch.Tensor, exists: torch.Tensor | None) -> float:
    """NaN and ``+inf`` in the entries that exist are errors (``-inf`` is a forbidden pair);
    returns ``max |finite entry|`` (for :func:`_upcast_if_overflowing`)."""
    if exists is not None:  # (under torch.func, where() lines the mapped items up)
        log_alpha = torch.where(exists, log_alpha.detach(), 0.0)
    vals = plain(log_alpha).detach()
    if vals.device.type == "meta" or not vals.numel():
        return 0.0
    lo, hi = extremes(vals).tolist()
    if math.isnan(lo) or math.isnan(hi) or hi == math.inf:
        raise ValueError(
            "log_alpha contains invalid numeric entries (NaN or +inf; forbidden pairs are -inf)"
        )
    finite = torch.where(torch.isfinite(vals), vals, 0.0)
    lo, hi = extremes(finite).tolist()
    return max(-lo, hi)


def _check_feasible(allowed: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, batch) -> None:
    """Raise the ``ValueError`` of :func:`permlib._checks.infeasible_error` for the first item
    whose forbidden pairs leave some rows (columns, where it has more rows than columns) without
    enough partners. Only items with forbidden pairs are searched (scipy's matching)."""
    allowed, rows, cols = plain(allowed), plain(rows), plain(cols)
    if allowed.device.type == "meta" or not allowed.numel():
        return
    # under vmap the mapped dimensions lead (plain): they name the item too
    lead, (n, m) = allowed.shape[:-2], allowed.shape[-2:]
    batch = tuple(lead[:-1]) + tuple(batch)
    allowed = allowed.reshape(-1, n, m)
    rows = rows.expand(lead + (n,)).reshape(-1, n)
    cols = cols.expand(lead + (m,)).reshape(-1, m)
    full = rows.unsqueeze(-1) & cols.unsqueeze(-2)
    holes = (full & ~allowed).flatten(1).any(dim=1)
    if not bool(holes.any()):
        return
    for b in torch.nonzero(holes).flatten().tolist():
        r_idx = torch.nonzero(rows[b]).flatten().cpu().numpy()
        c_idx = torch.nonzero(cols[b]).flatten().cpu().numpy()
        sub = allowed[b].cpu().numpy()[np.ix_(r_idx, c_idx)]
        transposed = sub.shape[0] > sub.shape[1]
        found = hall_violation(sub.T if transposed else sub)
        if found is None:
            continue
        side, other = found
        if transposed:
            side, other = c_idx[side], r_idx[other]
        else:
            side, other = r_idx[side], c_idx[other]
        item = tuple(int(i) for i in np.unravel_index(b, tuple(batch))) if len(batch) else ()
        raise infeasible_error("log_alpha", item, side, other, transposed)


def _make_frame(
    x: torch.Tensor,
    exists: torch.Tensor | None,
    tau: float,
    tau_t: torch.Tensor | None,
) -> _Frame:
    """The frame of the flat ``(B, N, M)`` scores ``x`` (``exists``: ``(B, N, M)`` or ``None``)."""
    count, n, m = x.shape
    allowed = x > -math.inf
    if exists is not None:
        allowed = allowed & exists
        rows, cols = exists.any(dim=-1), exists.any(dim=-2)
    else:
        rows = torch.ones((count, n), dtype=torch.bool, device=x.device)
        cols = torch.ones((count, m), dtype=torch.bool, device=x.device)
    flip = rows.sum(dim=-1) > cols.sum(dim=-1)  # more rows than columns: transposed
    seen = plain(flip)
    if seen.device.type == "meta" or not seen.numel():
        mode = "plain" if n <= m else "transposed"
    else:
        n_flip = int(seen.sum())
        mode = "plain" if n_flip == 0 else "transposed" if n_flip == seen.numel() else "mixed"
    xs = _to_frame(x, mode, flip, -math.inf)
    al = _to_frame(allowed, mode, flip, False)
    rows_f, cols_f = _vectors_to_frame(rows, cols, mode, flip)
    # each frame row shifted to its maximum, then divided by tau (as the square path does); the
    # excluded entries never enter an arithmetic op (no inf * 0 in any gradient)
    safe = torch.where(al, xs, 0.0)
    shift = torch.where(al, xs, -math.inf).detach().amax(dim=-1, keepdim=True)
    shift = torch.where(shift > -math.inf, shift, 0.0)
    scaled = (safe - shift) / (tau if tau_t is None else tau_t.to(device=x.device, dtype=x.dtype))
    xs = torch.where(al, scaled, -math.inf)
    slack = cols_f.sum(dim=-1) - rows_f.sum(dim=-1)  # (B,) >= 0: the dummy row's mass
    dummy_on = slack > 0
    dummy = (cols_f & dummy_on.unsqueeze(-1)).unsqueeze(-2)  # (B, 1, C)
    frame_x = torch.cat([xs, torch.where(dummy, 0.0, -math.inf).to(xs.dtype)], dim=-2)
    frame_al = torch.cat([al, dummy], dim=-2)
    row_on = torch.cat([rows_f, dummy_on.unsqueeze(-1)], dim=-1)
    dummy_mass = slack.clamp_min(1).to(x.dtype).log().unsqueeze(-1)
    log_r = torch.cat([torch.zeros_like(rows_f, dtype=x.dtype), dummy_mass], dim=-1)
    if tau_t is None:
        off = shift.squeeze(-1) / tau
    else:
        off = shift.squeeze(-1) / tau_t.detach().to(device=x.device, dtype=x.dtype)
    return _Frame(frame_x, frame_al, row_on, cols_f, log_r, off, mode, flip)


def _masked_lse(x: torch.Tensor, allowed: torch.Tensor, dim: int) -> torch.Tensor:
    """:func:`_logsumexp` over the allowed entries only (the others are ``-inf`` in ``x``); 0 for
    a line with none (whose marginal is off, so the value is never used)."""
    m = x.detach().amax(dim=dim, keepdim=True)
    m = torch.where(m > -math.inf, m, 0.0)
    z = torch.where(allowed, (x - m).clamp_min(_EXP_FLOOR.get(x.dtype, -80.0)), -math.inf)
    total = z.exp().sum(dim=dim)
    return torch.where(total > 0, total, 1.0).log() + m.squeeze(dim)


def _masked_solve(
    fr: _Frame,
    n_iters: int,
    tol: float | None,
    record: bool,
    v0: torch.Tensor | None = None,
) -> _Solved:
    """The log-domain loop of :func:`_solve` on a frame: row steps to the marginals ``log_r``,
    column steps to 1, only on the rows and columns that are on; items that reach ``tol`` are
    frozen. The residual (per iteration and final) is ``max |sum - 1|`` over the real rows and
    over the columns (their sums including the dummy row's slack): the dummy row's own sum is
    implied by them. ``v0``: ``(B, C)`` starting column potentials, or ``None``."""
    x, allowed, row_on, col_on, log_r = fr.x, fr.allowed, fr.row_on, fr.col_on, fr.log_r
    count = x.shape[0]
    pdt = _potential_dtype(x)
    u = torch.zeros(row_on.shape, dtype=pdt, device=x.device)
    if v0 is None:
        v = torch.zeros(col_on.shape, dtype=pdt, device=x.device)
        mat = x
    else:
        v = torch.where(col_on, v0, 0.0).to(pdt)
        mat = torch.where(allowed, x + torch.where(col_on, v0, 0.0).to(x.dtype).unsqueeze(-2), x)
    real = row_on[:, :-1]
    track = tol is not None or record
    active = torch.ones(count, dtype=torch.bool, device=x.device) if tol is not None else None
    spent = torch.zeros(count, dtype=torch.int64, device=x.device)
    meta = x.device.type == "meta"
    every = _sync_every(x.device)
    errors: list[torch.Tensor] = []
    done = 0

    def row_error(lse: torch.Tensor) -> torch.Tensor:  # (B, R + 1) -> (B,), real rows only
        return torch.where(real, lse[:, :-1].detach().exp().sub(1).abs(), 0.0).amax(dim=-1)

    for it in range(n_iters):
        lse_rows = _masked_lse(mat, allowed, dim=-1)
        if it > 0 and track:
            err = row_error(lse_rows)
            if active is not None:
                err = torch.where(active, err, errors[-1]) if errors else err
                active = active & (err > tol)
                errors.append(err)
                if not meta and it % every == 0 and not bool(plain(active).any()):
                    break
            else:
                errors.append(err)
        step_r = torch.where(row_on, lse_rows - log_r, 0.0)
        if active is not None:
            step_r = torch.where(active.unsqueeze(-1), step_r, 0.0)
        mat = mat - step_r.unsqueeze(-1)
        lse_cols = _masked_lse(mat, allowed, dim=-2)
        step_c = torch.where(col_on, lse_cols, 0.0)
        if active is not None:
            step_c = torch.where(active.unsqueeze(-1), step_c, 0.0)
            spent = spent + active
        mat = mat - step_c.unsqueeze(-2)
        u = u - step_r.detach().to(pdt)
        v = v - step_c.detach().to(pdt)
        done = it + 1
    if not track:
        return _Solved(mat, None, u, v)
    final = mat.detach()
    rows_err = row_error(_masked_lse(final, allowed, dim=-1))
    cols_dev = _masked_lse(final, allowed, dim=-2).exp().sub(1).abs()
    residual = torch.maximum(rows_err, torch.where(col_on, cols_dev, 0.0).amax(dim=-1))
    if active is None:
        spent = torch.full((count,), done, dtype=torch.int64, device=x.device)
        threshold = DEFAULT_THRESHOLD
        converged = residual <= threshold
    else:
        threshold = float(tol)
        converged = ~active | (residual <= threshold)
    longest = n_iters if meta else int(plain(spent).max()) if spent.numel() else 0
    err_t = _error_history(errors, residual, active, longest)
    info = SinkhornInfo(
        residual=residual,
        n_iters=spent,
        converged=converged,
        errors=err_t.detach(),
        threshold=threshold,
    )
    return _Solved(mat, info, u, v)


class _ImplicitMasked(torch.autograd.Function):
    """The implicit gradient of :class:`_ImplicitGrad` for a frame (marginals ``r`` on the rows,
    1 on the columns, excluded entries fixed at 0).

    With ``D = diag(r)`` the fixed point's system is ``[[D, P], [P^T, I]] [alpha; beta] =
    [G 1; G^T 1]``, whose Schur complement ``(I - P^T D^-1 P) beta = G^T 1 - P^T D^-1 G 1`` is
    the square case's with ``Q = D^-1/2 P`` in place of ``P`` (eigenvalues of ``Q^T Q`` in
    ``[0, 1]``, the gauge direction the indicator of the present columns), solved by the same
    conjugate gradients; then ``alpha = D^-1 (G 1 - P beta)`` and
    ``dL/dX = G - P * (alpha 1^T + 1 beta^T)`` on the allowed entries, 0 elsewhere."""

    @staticmethod
    def forward(ctx, x, out, allowed, row_on, col_on, log_r, plan):  # noqa: D102
        ctx.plan = plan
        ctx.save_for_backward(out, allowed, row_on, col_on, log_r)
        return out

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        if torch.is_grad_enabled():
            raise RuntimeError(
                "second derivatives through backward='implicit' are not supported: the implicit "
                "gradient is computed from the saved fixed point, not differentiably; use "
                "backward='unroll' for double backward (e.g. create_graph=True, Hessians)"
            )
        out, allowed, row_on, col_on, log_r = ctx.saved_tensors
        p = out if ctx.plan else out.exp()
        g = torch.where(allowed, grad * p if ctx.plan else grad, 0.0)
        r = g.sum(dim=-1)
        c = g.sum(dim=-2)
        mass = torch.where(row_on, log_r.exp(), 1.0)
        rhs = c - torch.bmm((r / mass).unsqueeze(-2), p).squeeze(-2)
        q = p / mass.sqrt().unsqueeze(-1)
        beta = _adjoint_cg(q, torch.where(col_on, rhs, 0.0), col_on)
        pb = torch.bmm(beta.unsqueeze(-2), p.mT).squeeze(-2)
        alpha = torch.where(row_on, (r - pb) / mass, 0.0)
        g = g - p * (alpha.unsqueeze(-1) + beta.unsqueeze(-2))
        return torch.where(allowed, g, 0.0), None, None, None, None, None, None


def _general(
    log_alpha: torch.Tensor,
    x: torch.Tensor,
    exists: torch.Tensor | None,
    tau: float,
    tau_t: torch.Tensor | None,
    n_iters: int,
    tol: float | None,
    backward: str,
    return_info: bool,
    stacklevel: int,
    plan: bool,
    pot: tuple[torch.Tensor, torch.Tensor] | None,
) -> torch.Tensor | tuple[torch.Tensor, SinkhornInfo]:
    """:func:`log_sinkhorn` (:func:`sinkhorn` with ``plan``) of rectangular, padded or
    forbidden-pair problems: ``x`` is ``log_alpha`` in the dtype of the computation (checked:
    NaN/+inf raise, overflow upcast), ``exists`` the entries that exist (or ``None``), ``pot``
    checked potentials ``(f, g)`` of shapes ``(..., N)``, ``(..., M)``."""
    dtype = log_alpha.dtype
    batch, (n, m) = x.shape[:-2], x.shape[-2:]
    flat = x.reshape(-1, n, m)
    ex = None if exists is None else exists.reshape(-1, n, m)
    fr = _make_frame(flat, ex, tau, tau_t)
    real_rows, real_cols = _vectors_from_frame(
        fr.row_on[:, :-1], fr.col_on, fr.mode, fr.flip, n, m
    )
    _check_feasible(_from_frame(fr.allowed[:, :-1], fr.mode, fr.flip, n, m), real_rows,
                    real_cols, batch)
    v0 = None
    if pot is not None:
        f0, g0 = (t.to(x.dtype).expand(batch + t.shape[-1:]).reshape(-1, t.shape[-1]) for t in pot)
        v0 = _vectors_to_frame(f0, g0, fr.mode, fr.flip)[1]
    grad = fr.x.requires_grad and torch.is_grad_enabled()
    implicit = backward == "implicit" and grad
    track = return_info or tol is not None or implicit
    if implicit:
        with torch.no_grad():
            solved = _masked_solve(fr._replace(x=fr.x.detach()), n_iters, tol, track, v0)
        res = solved.log_p.exp() if plan else solved.log_p
        out = _ImplicitMasked.apply(
            fr.x, res, fr.allowed, fr.row_on, fr.col_on, fr.log_r, plan
        )
    else:  # unrolled: autograd through the masked loop (O(L N M) memory with a gradient)
        solved = _masked_solve(fr, n_iters, tol, track, v0)
        out = solved.log_p.exp() if plan else solved.log_p
    out = _from_frame(out[:, :-1], fr.mode, fr.flip, n, m)
    info, n_bad, worst = None, 0, 0.0
    if solved.info is not None:
        si = solved.info
        u = solved.f[:, :-1] - fr.shift.to(solved.f.dtype)
        f, g = _vectors_from_frame(u, solved.g, fr.mode, fr.flip, n, m)
        f = torch.where(real_rows, f, 0.0).to(x.dtype)
        g = torch.where(real_cols, g, 0.0).to(x.dtype)
        info = SinkhornInfo(
            residual=si.residual.reshape(batch),
            n_iters=si.n_iters.reshape(batch),
            converged=si.converged.reshape(batch),
            errors=si.errors.reshape(batch + si.errors.shape[-1:]),
            threshold=si.threshold,
            f=f.reshape(batch + (n,)),
            g=g.reshape(batch + (m,)),
        )
        if x.device.type != "meta":
            n_bad, worst = int((~si.converged).sum()), float(_amax0(si.residual))
    if n_bad and (tol is not None or implicit):
        _warn_unconverged(n_bad, math.prod(batch), worst, tol, n_iters, implicit, stacklevel)
    out = out.reshape(x.shape)
    if not plan and dtype in LOW_PRECISION:
        keep = _from_frame(fr.allowed[:, :-1], fr.mode, fr.flip, n, m).reshape(x.shape)
        out = torch.where(keep, _representable(out, dtype), -math.inf)
    out = out.to(dtype)
    return (out, info) if return_info else out


def _general_checked(
    log_alpha: torch.Tensor,
    x: torch.Tensor,
    exists: torch.Tensor | None,
    tau: float,
    tau_t: torch.Tensor | None,
    n_iters: int,
    tol: float | None,
    backward: str,
    return_info: bool,
    stacklevel: int,
    plan: bool,
    pot: tuple[torch.Tensor, torch.Tensor] | None,
) -> torch.Tensor | tuple[torch.Tensor, SinkhornInfo]:
    """:func:`_general` after the host checks of its input (NaN, ``+inf``, the potentials,
    overflow of ``log_alpha / tau``), which it always makes (also on CUDA)."""
    extent = _check_general_input(log_alpha, exists)
    for name, t in zip(("init[0] (f)", "init[1] (g)"), pot or (), strict=False):
        finite_range(plain(t), name)
    x = _upcast_if_overflowing(x, tau, extent)
    return _general(
        log_alpha, x, exists, tau, tau_t, n_iters, tol, backward, return_info, stacklevel + 1,
        plan, pot,
    )


def _exists(log_alpha: object, n_rows: object, n_cols: object, mask: object) -> torch.Tensor | None:
    """The entries that exist (:func:`permlib._checks.entry_mask`), ``None`` when all do."""
    if n_rows is None and n_cols is None and mask is None:
        return None
    check_float_matrix(log_alpha, "log_alpha", square=False, finite=False)
    return entry_mask(log_alpha, "log_alpha", n_rows, n_cols, mask)
