r"""Two reparameterizations of the Birkhoff polytope for variational inference over permutations.

Linderman, Mena, Cooper, Paninski and Cunningham (2018, ``linderman2018reparameterizing``) turn a
matrix of Gaussians into a point in, or near, the Birkhoff polytope :math:`\mathcal{B}_N` (the
doubly stochastic ``N x N`` matrices) with a temperature ``tau`` that pushes the result towards
the permutation matrices, and with a density that can be evaluated, so that the map serves as a
reparameterized variational family:

* **Stick-breaking** (:func:`stick_breaking`): ``(N - 1)^2`` unconstrained values ``psi`` ->
  ``beta = sigmoid(psi / tau)`` in the unit cube -> a doubly stochastic ``X`` filled entry by
  entry, row by row (left to right, top to bottom). Entry ``(i, j)`` with ``i, j < N - 1`` is
  ``x_ij = l + beta_ij (u - l)`` with

  - ``u = min(r, c_j)``: ``r = 1 - sum_{k<j} x_ik`` is what row ``i`` has left and
    ``c_j = 1 - sum_{k<i} x_kj`` what column ``j`` has left;
  - ``l = max(0, r - sum_{k>j} c_k)``: the row must leave no more than the later columns of the
    row (the last one included) can still take.

  The last entry of each row takes the row's remainder and the last row takes the columns'
  remainders. The map is a bijection from ``R^{(N-1)^2}`` onto the interior of the polytope
  (in the free coordinates ``X[:N-1, :N-1]``), and it is *feed-forward*: ``x_ij`` depends on
  ``psi_ij`` and on earlier entries only, so its Jacobian is triangular and

  .. math:: \log|\det J| = \sum_{i,j<N-1} \Big[\log(u_{ij} - l_{ij}) - \log\tau
            + \log\sigma(\psi_{ij}/\tau) + \log\sigma(-\psi_{ij}/\tau)\Big].

* **Rounding** (:func:`rounding`): ``Psi`` in ``R^{N x N}`` ->
  ``X = tau Psi + (1 - tau) round(Psi)``, where ``round(Psi)`` is the permutation matrix nearest
  to ``Psi`` in Frobenius norm, i.e. the exact matching maximizing ``<P, Psi>``
  (:func:`permlib.matching`). The map is piecewise linear; inside each cell where ``round`` is
  constant its Jacobian is ``tau I``, so ``log|det J| = N^2 log tau`` everywhere (the jumps lie
  on a set of measure zero). The variational family draws ``Psi = M~ + V * Z`` with ``Z``
  standard normal, ``M~`` the Sinkhorn normalization of a positive matrix ``M`` (10 iterations
  in the paper) and ``V > 0`` a matrix of standard deviations (:func:`sample_rounding`,
  :func:`rounding_log_prob`).

Conventions are permlib's: batch dimensions first, rows index items and columns positions, a
permutation ``perm (..., N)`` gives row ``i`` the column ``perm[..., i]``. Outputs are in the
input's dtype and on its device; randomness comes from an optional ``torch.Generator``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F

from permlib._checks import (
    check_finite,
    check_float_matrix,
    check_generator,
    check_positive_int,
    check_positive_real,
    check_same_device,
    check_tensor,
)
from permlib.matching import matching
from permlib.permutations import permutation_matrix
from permlib.sinkhorn import sinkhorn

__all__ = [
    "RoundingSample",
    "rounding",
    "rounding_inverse",
    "rounding_log_prob",
    "sample_rounding",
    "stick_breaking",
    "stick_breaking_inverse",
    "stick_breaking_log_prob",
]

_LOG_2PI = math.log(2 * math.pi)


# --------------------------------------------------------------------------- checks


def _check_psi(psi: object) -> torch.Tensor:
    """``psi (..., N-1, N-1)``: floating, finite, square in its last two dimensions."""
    psi = check_tensor(psi, "psi")
    if not psi.is_floating_point():
        raise TypeError(f"psi must have a floating dtype, got {psi.dtype}")
    if psi.dim() < 2 or psi.shape[-1] != psi.shape[-2]:
        raise ValueError(
            "psi must hold (N-1)^2 parameters as a (..., N-1, N-1) matrix (reshape a flat "
            f"vector of (N-1)^2 values to it), got shape {tuple(psi.shape)}"
        )
    check_finite(psi, "psi")
    return psi


def _check_tau(tau: object, upper: float | None = None) -> float:
    tau = check_positive_real(tau, "tau")
    if upper is not None and tau > upper:
        raise ValueError(f"tau must be in (0, {upper:g}], got {tau}")
    return tau


def _check_doubly_stochastic(x: object, name: str, atol: float | None) -> torch.Tensor:
    """A ``(..., N, N)`` floating matrix with non-negative entries and unit row/column sums."""
    x = check_float_matrix(x, name)
    if atol is None:
        atol = 1e3 * x.shape[-1] * torch.finfo(x.dtype).eps
    if x.numel():
        d = x.detach()
        worst_neg = float(-d.min())
        rows = float((d.sum(dim=-1) - 1).abs().max())
        cols = float((d.sum(dim=-2) - 1).abs().max())
        if worst_neg > atol or rows > atol or cols > atol:
            raise ValueError(
                f"{name} must be doubly stochastic (entries >= 0, rows and columns summing to 1, "
                f"to {atol:.1e}): most negative entry {-worst_neg:.2e}, largest row-sum error "
                f"{rows:.2e}, largest column-sum error {cols:.2e}"
            )
    return x


# --------------------------------------------------------------------------- stick-breaking


def stick_breaking(psi: torch.Tensor, tau: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The stick-breaking map from ``(N-1)^2`` real values to a doubly stochastic matrix.

    Args:
        psi: ``(..., N-1, N-1)`` floating, finite: the parameters in matrix form, entry
            ``psi[..., i, j]`` driving ``X[..., i, j]`` (a flat vector of ``(N-1)^2`` values
            is ``psi.reshape(..., N-1, N-1)``, row-major). ``(..., 0, 0)`` gives ``N = 1``.
        tau: temperature > 0 (a number or a one-element tensor): ``beta = sigmoid(psi / tau)``;
            as ``tau -> 0`` the ``beta`` go to 0 or 1 and ``X`` to a permutation matrix.

    Returns:
        ``(X, log_det_jacobian)``: ``X (..., N, N)`` doubly stochastic (entries in ``[0, 1]``,
        rows and columns summing to 1 up to rounding), differentiable in ``psi``;
        ``log_det_jacobian (...)`` is ``log|det dX_free / dpsi|`` with
        ``X_free = X[..., :N-1, :N-1]`` (row-major), the Jacobian of the free coordinates
        (the rest of ``X`` follows from them). Both in ``psi``'s dtype and on its device.

    Precision. The remainders of rows and columns are carried as
    ``(r - u) + sigmoid(-psi / tau) (u - l)`` rather than ``r - x``, so a remainder that is tiny
    next to 1 keeps its relative precision. A lower bound ``l = r - sum_{k>j} c_k`` is still a
    difference of numbers of order 1, so when ``|psi| / tau`` is large (tens) an interval
    ``u - l`` far below the dtype's resolution can come out as 0: ``X`` stays doubly
    stochastic, and its ``log(u - l)`` term is floored at ``log(finfo(dtype).tiny)`` (about
    -708 in float64, -87 in float32) instead of ``-inf``, with no gradient through that term.
    Compute in float64 at small temperatures. See the module docstring for the map.
    """
    psi = _check_psi(psi)
    tau = _check_tau(tau)
    k = psi.shape[-1]
    n = k + 1
    batch = psi.shape[:-2]
    t = psi / tau
    beta, beta_c = torch.sigmoid(t), torch.sigmoid(-t)
    log_det = (F.logsigmoid(t) + F.logsigmoid(-t)).sum(dim=(-2, -1)) - k * k * math.log(tau)
    one = torch.ones(batch, dtype=psi.dtype, device=psi.device)
    tiny = torch.finfo(psi.dtype).tiny
    col_left = [one] * n  # what each column has left after the rows filled so far
    rows = []
    for i in range(k):
        # what the columns after j have left, for each j (none of them filled yet in this row)
        later = torch.stack(col_left, dim=-1).flip(-1).cumsum(-1).flip(-1)
        row_left = one
        row = []
        for j in range(k):
            hi = torch.minimum(row_left, col_left[j])
            lo = (row_left - later[..., j + 1]).clamp_min(0)
            width = (hi - lo).clamp_min(0)
            row.append(lo + beta[..., i, j] * width)
            log_det = log_det + width.clamp_min(tiny).log()
            rest = beta_c[..., i, j] * width  # hi - x
            row_left, col_left[j] = (row_left - hi) + rest, (col_left[j] - hi) + rest
        row.append(row_left)  # the last column takes what the row has left
        col_left[k] = col_left[k] - row_left
        rows.append(torch.stack(row, dim=-1))
    rows.append(torch.stack(col_left, dim=-1))  # the last row takes what the columns have left
    return torch.stack(rows, dim=-2), log_det


def _stick_bounds(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(lo, hi)``, both ``(..., N-1, N-1)``: the bounds of each free entry of ``x``, computed
    from the entries before it (raster order)."""
    k = x.shape[-1] - 1
    row_used = x.cumsum(-1) - x  # sum_{m<j} x_im
    col_used = x.cumsum(-2) - x  # sum_{m<i} x_mj
    row_left, col_left = 1 - row_used, 1 - col_used
    later = col_left.flip(-1).cumsum(-1).flip(-1) - col_left  # sum_{m>j} col_left[i, m]
    hi = torch.minimum(row_left, col_left)[..., :k, :k]
    lo = (row_left - later).clamp_min(0)[..., :k, :k]
    return lo, hi


def stick_breaking_inverse(
    x: torch.Tensor, tau: float = 1.0, *, atol: float | None = None
) -> torch.Tensor:
    """The ``psi`` that :func:`stick_breaking` maps to ``x``.

    Args:
        x: ``(..., N, N)`` doubly stochastic, floating (``N >= 1``).
        tau: the temperature ``x`` was made with (> 0).
        atol: tolerance of the doubly-stochastic check (default ``1000 N eps`` of the dtype).

    Returns:
        ``psi (..., N-1, N-1)`` in ``x``'s dtype: ``tau * logit((x - l) / (u - l))`` for each
        free entry. Defined where every free entry lies strictly inside its interval
        ``(l, u)`` (the interior of the polytope); an entry on a bound gives ``+-inf`` and a
        degenerate interval ``u = l`` gives NaN there. Raises ``ValueError`` (naming ``x``)
        when ``x`` is not doubly stochastic.
    """
    x = _check_doubly_stochastic(x, "x", atol)
    tau = _check_tau(tau)
    lo, hi = _stick_bounds(x)
    k = x.shape[-1] - 1
    beta = (x[..., :k, :k] - lo) / (hi - lo)
    return tau * torch.logit(beta)


def stick_breaking_log_prob(
    x: torch.Tensor,
    mean: torch.Tensor,
    scale: torch.Tensor,
    tau: float = 1.0,
    *,
    atol: float | None = None,
) -> torch.Tensor:
    """Log density of ``X = stick_breaking(mean + scale * Z, tau)``, ``Z`` standard normal.

    The density is with respect to Lebesgue measure on the free coordinates
    ``X[..., :N-1, :N-1]``: ``log N(psi; mean, scale^2) - log|det J(psi)|`` with
    ``psi = stick_breaking_inverse(x, tau)``.

    Args:
        x: ``(..., N, N)`` doubly stochastic.
        mean, scale: ``(..., N-1, N-1)`` Gaussian means and standard deviations (> 0),
            broadcastable against ``x``'s batch.
        tau: temperature > 0.
        atol: tolerance of the doubly-stochastic check of ``x``.

    Returns:
        ``(...)`` log densities in ``x``'s dtype (``-inf`` on the boundary of the polytope).
    """
    psi = stick_breaking_inverse(x, tau, atol=atol)
    k = psi.shape[-1]
    mean = _check_matrix_param(mean, "mean", k, "N-1")
    scale = _check_scale(scale, k, "N-1")
    check_same_device(x=x, mean=mean, scale=scale)
    tau = _check_tau(tau)
    lo, hi = _stick_bounds(x)
    t = psi / tau
    log_det = ((hi - lo).log() + F.logsigmoid(t) + F.logsigmoid(-t)).sum(dim=(-2, -1))
    log_det = log_det - k * k * math.log(tau)
    z = (psi - mean) / scale
    log_normal = (-0.5 * z**2 - scale.log() - 0.5 * _LOG_2PI).sum(dim=(-2, -1))
    out = log_normal - log_det
    # on the boundary (an entry on a bound, or a degenerate interval) the density is 0
    interior = torch.isfinite(psi).all(dim=-1).all(dim=-1)
    return torch.where(interior, out, torch.full_like(out, -math.inf))


def _check_matrix_param(t: object, name: str, size: int, what: str) -> torch.Tensor:
    """A finite floating ``(..., size, size)`` parameter matrix."""
    t = check_float_matrix(t, name)
    if t.shape[-1] != size:
        raise ValueError(
            f"{name} must have shape (..., {what}, {what}) = (..., {size}, {size}), "
            f"got {tuple(t.shape)}"
        )
    return t


def _check_scale(scale: object, size: int, what: str) -> torch.Tensor:
    """Standard deviations: a finite ``(..., size, size)`` matrix of positive entries."""
    scale = _check_matrix_param(scale, "scale", size, what)
    smallest = float(scale.detach().min()) if scale.numel() else 1.0
    if smallest <= 0:
        raise ValueError(f"scale must be > 0 everywhere, got a minimum of {smallest}")
    return scale


# --------------------------------------------------------------------------- rounding


def rounding(psi: torch.Tensor, tau: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The rounding map ``X = tau * psi + (1 - tau) * round(psi)``.

    Args:
        psi: ``(..., N, N)`` floating, finite.
        tau: temperature in ``(0, 1]``; ``tau = 1`` is the identity, ``tau -> 0`` gives the
            matching ``round(psi)`` (the permutation matrix nearest to ``psi`` in Frobenius
            norm, :func:`permlib.matching` of ``psi``).

    Returns:
        ``(X, log_det_jacobian)``: ``X (..., N, N)`` (differentiable in ``psi`` with derivative
        ``tau``: no gradient flows through ``round``) and ``log_det_jacobian (...)``, the
        constant ``N^2 log tau``. In ``psi``'s dtype and on its device.
    """
    psi = check_float_matrix(psi, "psi")
    tau = _check_tau(tau, upper=1.0)
    perm = permutation_matrix(matching(psi), dtype=psi.dtype)
    n = psi.shape[-1]
    log_det = torch.full(psi.shape[:-2], n * n * math.log(tau), dtype=psi.dtype,
                         device=psi.device)  # fmt: skip
    return tau * psi + (1 - tau) * perm, log_det


def rounding_inverse(x: torch.Tensor, tau: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The inverse of :func:`rounding` on its image.

    Args:
        x: ``(..., N, N)`` floating, finite.
        tau: the temperature in ``(0, 1]`` that ``x`` was made with.

    Returns:
        ``(psi, inside)``: ``psi = (x - (1 - tau) round(x)) / tau`` (``(..., N, N)``) and
        ``inside (...)`` bool, whether ``x`` is in the image of the map, i.e. whether
        ``round(psi) == round(x)``. Outside the image (the "hole" around the centre of the
        polytope for ``tau < 1``) ``psi`` has no meaning.
    """
    x = check_float_matrix(x, "x")
    tau = _check_tau(tau, upper=1.0)
    perm = matching(x)
    psi = (x - (1 - tau) * permutation_matrix(perm, dtype=x.dtype)) / tau
    inside = (matching(psi) == perm).all(dim=-1)
    return psi, inside


class RoundingSample(NamedTuple):
    """What :func:`sample_rounding` returns.

    Attributes:
        x: ``(S..., ..., N, N)`` the samples ``tau * psi + (1 - tau) * round(psi)``,
            differentiable in ``log_m`` and ``scale``.
        psi: ``(S..., ..., N, N)`` the Gaussian matrices ``M~ + scale * z``.
        perm: ``(S..., ..., N)`` int64, ``round(psi)`` as index permutations.
        log_prob: ``(S..., ...)`` log density of each ``x`` under the family (the value
            :func:`rounding_log_prob` gives, computed here from ``z`` directly).
    """

    x: torch.Tensor
    psi: torch.Tensor
    perm: torch.Tensor
    log_prob: torch.Tensor


def _normalized_mean(log_m: torch.Tensor, n_iters: int) -> torch.Tensor:
    return sinkhorn(log_m, n_iters=n_iters)


def sample_rounding(
    log_m: torch.Tensor,
    scale: torch.Tensor,
    tau: float,
    *,
    sample_shape: int | Sequence[int] = (),
    n_iters: int = 10,
    generator: torch.Generator | None = None,
) -> RoundingSample:
    """Draw from the rounding family: ``psi = M~ + scale * Z``, ``X = rounding(psi, tau)``.

    Args:
        log_m: ``(..., N, N)`` log of the positive matrix ``M``; ``M~`` is its Sinkhorn
            normalization ``permlib.sinkhorn(log_m, n_iters=n_iters)`` (a point in the
            Birkhoff polytope, differentiable in ``log_m``).
        scale: ``(..., N, N)`` standard deviations ``V > 0`` (broadcastable against ``log_m``).
        tau: temperature in ``(0, 1]``.
        sample_shape: leading sample dimensions (an int ``S`` or a sequence of ints).
        n_iters: Sinkhorn iterations for ``M~`` (10 in the paper).
        generator: a ``torch.Generator`` on ``log_m``'s device for ``Z``.

    Returns:
        A :class:`RoundingSample` of shape ``sample_shape + batch``.
    """
    log_m = check_float_matrix(log_m, "log_m")
    tau = _check_tau(tau, upper=1.0)
    n_iters = check_positive_int(n_iters, "n_iters")
    scale = _check_scale(scale, log_m.shape[-1], "N")
    check_same_device(log_m=log_m, scale=scale)
    check_generator(generator, log_m.device, "log_m")
    shape = (sample_shape,) if isinstance(sample_shape, int) else tuple(sample_shape)
    if any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in shape):
        raise ValueError(f"sample_shape must hold integers >= 0, got {sample_shape!r}")
    batch = torch.broadcast_shapes(log_m.shape, scale.shape)
    z = torch.randn(shape + batch, generator=generator, dtype=log_m.dtype, device=log_m.device)
    psi = _normalized_mean(log_m, n_iters) + scale * z
    perm = matching(psi)
    x = tau * psi + (1 - tau) * permutation_matrix(perm, dtype=psi.dtype)
    log_prob = _rounding_log_density(z, scale, tau)
    return RoundingSample(x, psi, perm, log_prob)


def _rounding_log_density(z: torch.Tensor, scale: torch.Tensor, tau: float) -> torch.Tensor:
    n = z.shape[-1]
    log_normal = -0.5 * z**2 - scale.log() - 0.5 * _LOG_2PI
    return log_normal.sum(dim=(-2, -1)) - n * n * math.log(tau)


def rounding_log_prob(
    x: torch.Tensor,
    log_m: torch.Tensor,
    scale: torch.Tensor,
    tau: float,
    *,
    n_iters: int = 10,
) -> torch.Tensor:
    """Log density of ``x`` under the rounding family of :func:`sample_rounding`.

    ``log q(X) = sum_mn [log N(z_mn; 0, 1) - log(tau V_mn)]`` with
    ``z = (rounding_inverse(X) - M~) / V`` (the Jacobian of the rounding map is the constant
    ``tau^(N^2)``), and ``-inf`` where ``X`` is outside the map's image.

    Args:
        x: ``(..., N, N)`` matrices.
        log_m, scale, tau, n_iters: the family's parameters, as in :func:`sample_rounding`.

    Returns:
        ``(...)`` log densities in ``x``'s dtype (broadcast over the batches of ``x``,
        ``log_m`` and ``scale``).
    """
    n_iters = check_positive_int(n_iters, "n_iters")
    psi, inside = rounding_inverse(x, tau)
    log_m = _check_matrix_param(log_m, "log_m", x.shape[-1], "N")
    scale = _check_scale(scale, x.shape[-1], "N")
    check_same_device(x=x, log_m=log_m, scale=scale)
    z = (psi - _normalized_mean(log_m, n_iters)) / scale
    log_q = _rounding_log_density(z, scale, float(tau))
    return torch.where(inside, log_q, torch.full_like(log_q, -math.inf))
