"""The Sinkhorn operator S(X/tau): the "softmax of permutations".

Conventions (shared by all of permlib): ``log_alpha`` has shape ``(..., N, N)``, batch dimensions
first; rows index the items, columns index the positions they may take; entries are log-potentials
(scores) that are *maximized*. One Sinkhorn iteration is a row normalization followed by a column
normalization (000_7091bfda3c1c82a1, eq. 1):

    S^0(X) = exp(X),   S^l(X) = T_c(T_r(S^{l-1}(X))),   S(X) = lim_{l -> inf} S^l(X).

Everything is computed in the log domain through two potentials ``u`` (rows) and ``v`` (columns),
``log S^l(X)_{ij} = X_{ij} + u_i + v_j``, so large scores or tiny temperatures neither overflow nor
underflow. Only the length-N potentials change from one iteration to the next.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Literal

import torch

from permlib._checks import (
    check_float_matrix,
    check_positive_int,
    check_positive_real,
    finite_range,
)

__all__ = ["ConvergenceWarning", "SinkhornInfo", "log_sinkhorn", "sinkhorn"]

Backward = Literal["unroll", "implicit"]
_BACKWARDS = ("unroll", "implicit")
_LOW_PRECISION = (torch.float16, torch.bfloat16)
#: Residual under which a result counts as doubly stochastic when no ``tol`` was given.
DEFAULT_THRESHOLD = 1e-3


class ConvergenceWarning(UserWarning):
    """Issued when Sinkhorn iterations asked for a tolerance and some matrices did not reach it."""


@dataclass(frozen=True)
class SinkhornInfo:
    """Per-item convergence report of :func:`log_sinkhorn` (``return_info=True``).

    Attributes:
        residual: ``(...)`` max over rows and columns of ``|sum - 1|`` of the returned matrix.
        n_iters: ``(...)`` int64, full iterations (row + column normalization) spent on each item.
        converged: ``(...)`` bool, ``residual <= threshold`` (or stopped early at ``tol``).
        errors: ``(..., K)`` the residual after each iteration ``1..K``, where ``K`` is the largest
            ``n_iters`` of the batch; after an item stops, its last value is repeated.
        threshold: the tolerance the items were judged by: ``tol``, or ``DEFAULT_THRESHOLD`` (1e-3)
            when ``tol`` was ``None`` (fixed unrolling, no early stop).
    """

    residual: torch.Tensor
    n_iters: torch.Tensor
    converged: torch.Tensor
    errors: torch.Tensor
    threshold: float

    @property
    def all_converged(self) -> bool:
        return bool(self.converged.all())


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


def _solve(
    x: torch.Tensor, n_iters: int, tol: float | None, record: bool
) -> tuple[torch.Tensor, SinkhornInfo | None]:
    """Run the iterations on scaled scores ``x = log_alpha / tau``; returns ``log S^L(x)``."""
    batch, n = x.shape[:-2], x.shape[-1]
    v = torch.zeros(batch + (n,), dtype=x.dtype, device=x.device)
    u = v
    track = tol is not None or record
    active = torch.ones(batch, dtype=torch.bool, device=x.device) if tol is not None else None
    spent = torch.zeros(batch, dtype=torch.int64, device=x.device)
    errors: list[torch.Tensor] = []
    done = 0
    for it in range(n_iters):
        lse_rows = _logsumexp(x + v.unsqueeze(-2), dim=-1)
        if it > 0 and track:
            # Row sums of the plan after `it` iterations are exp(u + lse_rows); its columns are
            # already normalized, so this is its residual, obtained for O(N) extra work.
            err = (u + lse_rows).exp().sub(1).abs().amax(dim=-1)
            if active is not None:
                err = torch.where(active, err, errors[-1]) if errors else err
                active = active & (err > tol)
                if not bool(active.any()):
                    errors.append(err)
                    break
            errors.append(err)
        if active is None:
            u = -lse_rows
            v = -_logsumexp(x + u.unsqueeze(-1), dim=-2)
        else:
            u = torch.where(active.unsqueeze(-1), -lse_rows, u)
            v_new = -_logsumexp(x + u.unsqueeze(-1), dim=-2)
            v = torch.where(active.unsqueeze(-1), v_new, v)
            spent = spent + active
        done = it + 1
    log_p = x + u.unsqueeze(-1) + v.unsqueeze(-2)
    if not track:
        return log_p, None

    residual = _residual(log_p)
    if active is None:
        spent = torch.full(batch, done, dtype=torch.int64, device=x.device)
        threshold = DEFAULT_THRESHOLD
        converged = residual <= threshold
    else:
        threshold = float(tol)
        converged = ~active | (residual <= threshold)
    if len(errors) < spent.max().item():  # the last iteration was not followed by a check
        if active is None or not errors:
            errors.append(residual)
        else:
            errors.append(torch.where(active, residual, errors[-1]))
    err_t = torch.stack(errors, dim=-1) if errors else residual.unsqueeze(-1)
    info = SinkhornInfo(
        residual=residual, n_iters=spent, converged=converged, errors=err_t, threshold=threshold
    )
    return log_p, info


def _scalings(
    x: torch.Tensor, n_iters: int, keep: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """Fixed unrolling in the scaling (exp) domain, for ``x`` of shape ``(M, N, N)``, no grad.

    With ``c_i = max_j x_ij`` and ``K = exp(x - c 1^T)`` (entries in ``[0, 1]``, one 1 per row),
    the potentials of the log-domain loop are ``u = log a - c`` and ``v = log b``, where
    ``a^l = 1 / (K b^{l-1})``, ``b^l = 1 / (K^T a^l)`` and ``b^0 = 1``: each half-step is one
    batched vector-matrix product that reads ``K`` once, instead of the several passes over
    ``N x N`` temporaries that ``logsumexp`` makes. The arithmetic is the log-domain loop's up to
    rounding *provided nothing underflows or overflows*. That is checked per item from the
    extreme scalings: a product ``K_ij b_j`` that underflows loses at most ``tiny * max(1, b_hi)``
    of a row sum that is at least ``1 / a_hi`` (and symmetrically for columns), so the loss is
    below one rounding error when ``N * tiny * max(1, b_hi) * a_hi <= eps``. If any item fails
    (small ``tau`` on widely spread scores), ``None`` is returned and the caller falls back to
    the log-domain loop.

    Returns:
        ``(K, c, a, b)`` with ``c`` of shape ``(M, N, 1)``; with ``keep``, ``a`` and ``b`` of
        shape ``(L, M, N)`` hold ``a^1..a^L`` and ``b^1..b^L``, otherwise only the last ones,
        ``(1, M, N)``. ``None`` when the check fails.
    """
    m, n = x.shape[0], x.shape[-1]
    if m == 0 or x.device.type == "meta":
        return None
    c = x.amax(dim=-1, keepdim=True)
    k = torch.sub(x, c).exp_()
    k_t = k.mT
    slots = n_iters if keep else min(n_iters, 16)
    # (slots, M, 1, N): the per-iteration rows are views made once (unbind), so that an
    # iteration is four ops; view creation would otherwise dominate small problems.
    a_rows = x.new_empty((slots, m, 1, n))
    b_rows = x.new_empty((slots, m, 1, n))
    a, b = a_rows.squeeze(-2), b_rows.squeeze(-2)
    a_s, b_s = a_rows.unbind(0), b_rows.unbind(0)
    b_prev = x.new_ones((m, 1, n))
    a_lo = x.new_full((m,), math.inf)
    a_hi = x.new_full((m,), -math.inf)
    b_lo, b_hi = x.new_ones((m,)), x.new_ones((m,))
    for it in range(n_iters):
        s = it % slots
        # (1 x N) @ (N x N) products: BLAS runs these far faster than (N x N) @ (N x 1)
        torch.bmm(b_prev, k_t, out=a_s[s]).reciprocal_()
        torch.bmm(a_s[s], k, out=b_s[s]).reciprocal_()
        b_prev = b_s[s]
        if s == slots - 1 or it == n_iters - 1:
            done = slice(0, s + 1)
            torch.minimum(a_lo, a[done].amin(dim=(0, 2)), out=a_lo)
            torch.maximum(a_hi, a[done].amax(dim=(0, 2)), out=a_hi)
            torch.minimum(b_lo, b[done].amin(dim=(0, 2)), out=b_lo)
            torch.maximum(b_hi, b[done].amax(dim=(0, 2)), out=b_hi)
    fi = torch.finfo(x.dtype)
    loss = math.log(fi.tiny) + math.log(n) - math.log(fi.eps)  # all in log units
    top = math.log(fi.max) - 2 * math.log(n) - math.log(4 * n_iters + 4)
    if not _in_range(a_lo, a_hi, b_lo, b_hi, loss, top):
        return None
    if not keep:
        s = (n_iters - 1) % slots
        a, b = a[s : s + 1], b[s : s + 1]
    return k, c, a, b


def _in_range(
    a_lo: torch.Tensor,
    a_hi: torch.Tensor,
    b_lo: torch.Tensor,
    b_hi: torch.Tensor,
    loss: float,
    top: float,
) -> bool:
    """Whether every item's extreme scalings pass the check of :func:`_scalings`.

    With ``la = log a_hi`` and ``lb = log b_hi``: ``a_lo, b_lo > 0``, ``la, lb`` finite,
    ``la + max(lb, 0) + loss <= 0``, ``lb + max(la, 0) + loss <= 0`` and ``la + lb <= top``. A few
    items are checked on the host (one transfer instead of a dozen tiny tensor ops, which would
    dominate small problems); NaN fails every comparison either way.
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
    la, lb = a_hi.log(), b_hi.log()
    ok = (
        (a_lo > 0)
        & (b_lo > 0)
        & torch.isfinite(la)
        & torch.isfinite(lb)
        & (la + lb.clamp(min=0) + loss <= 0)
        & (lb + la.clamp(min=0) + loss <= 0)
        & (la + lb <= top)
    )
    return bool(ok.all())


def _log_plan(
    x: torch.Tensor,
    c: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """``log P = x + u 1^T + 1 v^T`` with ``u = log a - c`` and ``v = log b`` (into ``out``, e.g.
    the no longer needed ``K``, to spare a fresh ``N x N`` allocation)."""
    u = a.log().unsqueeze(-1).sub_(c)
    return torch.add(x, u, out=out).add_(b.log().unsqueeze(-2))


class _UnrolledScaled(torch.autograd.Function):
    """Exact gradient of ``L`` unrolled iterations from the stored scalings (no N x N per step).

    Forward assembles ``log P^L = x + u^L 1^T + 1 v^L^T`` from :func:`_scalings`. Backward is
    reverse mode through the iterations written out by hand: with the row-step plan
    ``R^l = diag(a^l) K diag(b^{l-1})``, the column-step plan ``C^l = diag(a^l) K diag(b^l)``
    and adjoints ``ubar``, ``vbar`` of the potentials (``vbar^L = G^T 1``, ``ubar^L`` starts at
    ``G 1``, where ``G = dL/d log P``),

        ubar^l += -C^l vbar^l,   vbar^{l-1} = -(R^l)^T ubar^l,
        dL/dx = G - sum_l (C^l * (1 vbar^l^T) + R^l * (ubar^l 1^T))
              = G - K * sum_l (a^l (b^l * vbar^l)^T + (a^l * ubar^l) (b^{l-1})^T),

    so the backward costs ``2 L`` vector-matrix products with ``K`` and one rank-``2L`` product;
    per iteration only the length-N scalings are stored. A second derivative (``create_graph``)
    replays the log-domain loop under autograd, so it is exact too, at the loop's cost.
    """

    @staticmethod
    def forward(ctx, x, c, a, b, n_iters):  # noqa: D102
        ctx.save_for_backward(x, c, a, b)
        ctx.n_iters = n_iters
        return _log_plan(x, c, a[-1], b[-1])

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        x, c, a, b = ctx.saved_tensors
        if torch.is_grad_enabled():  # double backward: differentiate the plain loop
            with torch.enable_grad():
                out, _ = _solve(x, ctx.n_iters, None, False)
                (grad_x,) = torch.autograd.grad(out, x, grad, create_graph=True)
            return grad_x, None, None, None, None
        k = torch.sub(x, c).exp_()
        k_t = k.mT
        n_iters, m, n = a.shape
        # The rank-2L factors, (2L, M, 1, N): even slots (a^l, b^l * vbar^l), odd slots
        # (a^l * ubar^l, b^{l-1}). Everything known up front is copied in one op; the loop writes
        # the rest in place through views made once, so an iteration is eight ops.
        left = a.new_empty((2 * n_iters, m, 1, n))
        right = torch.empty_like(left)
        left[0::2] = a.unsqueeze(-2)
        right[3::2] = b[:-1].unsqueeze(-2)
        right[1] = 1.0
        a_r, b_r = a.unsqueeze(-2).unbind(0), b.unsqueeze(-2).unbind(0)
        left_r, right_r = left.unbind(0), right.unbind(0)
        u_in = grad.sum(dim=-1).unsqueeze(-2)
        vbar = grad.sum(dim=-2, keepdim=True)
        for it in range(n_iters - 1, -1, -1):
            w = torch.mul(b_r[it], vbar, out=right_r[2 * it])
            ubar = torch.bmm(w, k_t).mul_(a_r[it]).neg_()
            if it == n_iters - 1:
                ubar.add_(u_in)
            z = torch.mul(ubar, a_r[it], out=left_r[2 * it + 1])
            if it > 0:
                vbar = torch.bmm(z, k).mul_(b_r[it - 1]).neg_()
        low_rank = torch.bmm(
            left.squeeze(-2).permute(1, 2, 0), right.squeeze(-2).transpose(0, 1)
        )
        return torch.addcmul(grad, k, low_rank, value=-1), None, None, None, None


def _unrolled_fast(x: torch.Tensor, n_iters: int, plan: bool = False) -> torch.Tensor | None:
    """``log S^L(x)`` (``S^L(x)`` with ``plan``) through :func:`_scalings` with its exact
    unrolled gradient, or ``None``.

    Without gradient, the plan is ``diag(a) K diag(b)`` computed in place in ``K``: no ``log``
    and no ``exp`` over ``N x N``. It equals ``exp(log S^L(x))`` up to rounding in each entry
    above ``eps / N`` (the check of :func:`_scalings` bounds what underflow in ``K`` can lose).
    """
    n = x.shape[-1]
    flat = x.reshape(-1, n, n)
    grad = flat.requires_grad and torch.is_grad_enabled()
    with torch.no_grad():
        found = _scalings(flat.detach(), n_iters, keep=grad)
    if found is None:
        return None
    k, c, a, b = found
    if grad:
        out = _UnrolledScaled.apply(flat, c, a, b, n_iters)
        out = out.exp() if plan else out
    elif plan:
        out = k.mul_(a[-1].unsqueeze(-1)).mul_(b[-1].unsqueeze(-2))
    else:
        out = _log_plan(flat, c, a[-1], b[-1], out=k)
    return out.reshape(x.shape)


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


class _ImplicitGrad(torch.autograd.Function):
    """Attach the implicit-function-theorem gradient of the Sinkhorn fixed point to ``log_p``.

    At the fixed point ``log P = X + u 1^T + 1 v^T`` with ``P 1 = 1`` and ``P^T 1 = 1``. For an
    upstream gradient ``G = dL/d log P``, differentiating the two constraints gives

        dL/dX = G - P * (a 1^T + 1 b^T),   [[I, P], [P^T, I]] [a; b] = [G 1; G^T 1],

    solved through the Schur complement ``(I - P^T P) b = G^T 1 - P^T G 1`` (singular along the
    gauge direction ``1``, which ``1 1^T / N`` removes, and nearly so when P is nearly a
    permutation, hence a pseudo-inverse). Nothing from the iterations is stored,
    so memory does not grow with the number of iterations.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, log_p: torch.Tensor) -> torch.Tensor:  # noqa: D102
        ctx.save_for_backward(log_p)
        return log_p.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # noqa: D102
        (log_p,) = ctx.saved_tensors
        work = torch.float64 if grad.device.type == "cpu" or log_p.dtype == torch.float64 else None
        g = grad.to(work or grad.dtype)
        p = log_p.to(g.dtype).exp()
        n = p.shape[-1]
        r = g.sum(dim=-1)
        c = g.sum(dim=-2)
        rhs = c - (p.transpose(-1, -2) @ r.unsqueeze(-1)).squeeze(-1)
        eye = torch.eye(n, dtype=g.dtype, device=g.device)
        system = eye - p.transpose(-1, -2) @ p + 1.0 / n
        # Symmetric PSD; nearly singular when P is nearly a permutation (small tau), where each
        # block of P's support adds a gauge direction. The least-norm solution is the right one
        # (gauges cancel in a_i + b_j on the support), so solve with a pseudo-inverse.
        evals, evecs = torch.linalg.eigh(system)
        rel = 1e-6 if g.dtype == torch.float64 else 1e-3  # drop the near-null (gauge) directions
        cutoff = evals.amax(dim=-1, keepdim=True) * rel
        inv = torch.where(evals > cutoff, 1.0 / evals, torch.zeros_like(evals))
        coef = (evecs.transpose(-1, -2) @ rhs.unsqueeze(-1)).squeeze(-1) * inv
        b = (evecs @ coef.unsqueeze(-1)).squeeze(-1)
        a = r - (p @ b.unsqueeze(-1)).squeeze(-1)
        grad_x = g - p * (a.unsqueeze(-1) + b.unsqueeze(-2))
        return grad_x.to(grad.dtype), None


def log_sinkhorn(
    log_alpha: torch.Tensor,
    tau: float = 1.0,
    n_iters: int = 20,
    tol: float | None = None,
    backward: Backward = "unroll",
    return_info: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, SinkhornInfo]:
    r"""Logarithm of the Sinkhorn operator, ``log S(log_alpha / tau)``.

    Args:
        log_alpha: ``(..., N, N)`` floating scores (log-potentials), maximized; rows index items,
            columns index positions. Any float dtype: float16/bfloat16 are computed in float32
            and returned in the input dtype. Must be finite.
        tau: temperature > 0. As ``tau -> 0`` the result tends to the matching ``M(log_alpha)``.
        n_iters: number of iterations (row then column normalization) when ``tol`` is None
            (the papers' fixed unrolling); otherwise the cap on iterations.
        tol: if given, each item stops once its max row/column-sum error is ``<= tol``; items that
            do not get there within ``n_iters`` trigger a :class:`ConvergenceWarning`.
        backward: ``"unroll"`` backpropagates through the iterations (the exact gradient of
            the ``n_iters`` iterations; memory grows with them, by ``O(N)`` per iteration and
            matrix on the fast path described below, ``O(N^2)`` on the log-domain one);
            ``"implicit"`` differentiates the fixed point, with memory independent of the number
            of iterations. Both agree at convergence; before it, they differ. When ``tau`` is
            so small that ``P`` is numerically a permutation, the fixed-point system is
            ill-conditioned and the implicit gradient is only a regularized (truncated
            pseudo-inverse) estimate: prefer ``"unroll"`` there.
        return_info: also return a :class:`SinkhornInfo` with per-item residuals.

    Returns:
        ``(..., N, N)`` log of a (nearly) doubly stochastic matrix, in ``log_alpha``'s dtype; with
        ``return_info``, the pair ``(log_p, info)``. After the last iteration columns sum to 1;
        the row residual is what ``info.residual`` reports.

    Math:
        For ``tau > 0``, ``S(X / tau)`` is the unique maximizer over doubly stochastic ``P`` of
        :math:`\langle P, X\rangle_F + \tau H(P)`, with :math:`H(P) = -\sum_{ij} P_{ij}\log P_{ij}`
        (Theorem 1 of 000_7091bfda3c1c82a1).

    Note:
        Convergence can be slow for small ``tau`` or for nearly-decomposable inputs (003's
        epsilon-matrices need about ``-log2(eps)`` normalizations before they leave a plateau).
        Fixed unrolling then silently returns a matrix that is not doubly stochastic: pass
        ``tol`` (or ``return_info=True``) to see it, and raise ``n_iters`` or ``tau`` to fix it.
        Whatever the input scale and temperature, the output is finite and its columns sum to 1
        (the last step is a column normalization); at temperatures far below the gaps between
        scores (e.g. ``tau=1e-4`` on scores of scale 1000) the rows can stay far from 1 for
        thousands of iterations, which ``info.residual`` and ``info.converged`` report.

    Note:
        Speed. With fixed unrolling (``tol=None``) and ``return_info=False`` the iterations run
        on scalings ``a = exp(u)``, ``b = exp(v)`` of the kernel ``exp(X - max_j X)``: one
        batched vector-matrix product per half-step, and a hand-written backward that stores
        only the scalings. The result equals the log-domain loop's up to rounding; whenever
        over- or underflow could change that (checked from the scalings, typically small
        ``tau`` on spread-out scores) the whole call falls back to the log-domain loop, which
        is also used with ``tol`` or ``return_info``. ``benchmarks/`` measures both.
    """
    return _log_sinkhorn(log_alpha, tau, n_iters, tol, backward, return_info, stacklevel=3)


def _log_sinkhorn(
    log_alpha: torch.Tensor,
    tau: float,
    n_iters: int,
    tol: float | None,
    backward: str,
    return_info: bool,
    stacklevel: int,
    plan: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, SinkhornInfo]:
    """Implementation of :func:`log_sinkhorn` (of :func:`sinkhorn` with ``plan``: the result is
    exponentiated); ``stacklevel`` points the warning at the caller."""
    check_float_matrix(log_alpha, "log_alpha", finite=False)
    lo, hi = finite_range(log_alpha, "log_alpha")
    tau = check_positive_real(tau, "tau")
    n_iters = check_positive_int(n_iters, "n_iters")
    if tol is not None:
        tol = check_positive_real(tol, "tol")
    if backward not in _BACKWARDS:
        raise ValueError(f"backward must be one of {_BACKWARDS}, got {backward!r}")

    dtype = log_alpha.dtype
    x = log_alpha.float() if dtype in _LOW_PRECISION else log_alpha
    x = _upcast_if_overflowing(x, tau, max(-lo, hi))
    if tau != 1.0:
        x = x / tau
    fast = tol is None and not return_info
    if backward == "implicit" and x.requires_grad:
        with torch.no_grad():
            log_p = _unrolled_fast(x.detach(), n_iters) if fast else None
            if log_p is None:
                log_p, info = _solve(x.detach(), n_iters, tol, return_info)
        log_p = _ImplicitGrad.apply(x, log_p)
    else:
        log_p = _unrolled_fast(x, n_iters, plan) if fast else None
        if log_p is not None and plan:
            return log_p.to(dtype)
        if log_p is None:
            log_p, info = _solve(x, n_iters, tol, return_info)

    if tol is not None and not info.all_converged:
        k, total = int((~info.converged).sum()), info.converged.numel()
        warnings.warn(
            f"Sinkhorn did not reach tol={tol:g} within n_iters={n_iters} for {k} of {total} "
            f"matrices (largest residual {info.residual.max().item():.3g}); "
            "raise n_iters or tau",
            ConvergenceWarning,
            stacklevel=stacklevel,
        )
    if plan:  # a fresh tensor: exponentiate in place unless autograd needs the log
        log_p = log_p.exp() if log_p.requires_grad else log_p.exp_()
    log_p = log_p.to(dtype)
    return (log_p, info) if return_info else log_p


def sinkhorn(
    log_alpha: torch.Tensor,
    tau: float = 1.0,
    n_iters: int = 20,
    tol: float | None = None,
    backward: Backward = "unroll",
    return_info: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, SinkhornInfo]:
    """The Sinkhorn operator ``S(log_alpha / tau)``: ``exp`` of :func:`log_sinkhorn`.

    Same arguments and conventions as :func:`log_sinkhorn`; returns a ``(..., N, N)`` (nearly)
    doubly stochastic matrix in ``log_alpha``'s dtype (and the info with ``return_info``).
    """
    return _log_sinkhorn(
        log_alpha, tau, n_iters, tol, backward, return_info, stacklevel=3, plan=True
    )
