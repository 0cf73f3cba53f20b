"""Gumbel-Sinkhorn and Gumbel-Matching: the permutation analog of Gumbel-softmax.

Adding i.i.d. Gumbel noise ``eps`` to log-potentials ``X`` and taking the exact matching gives a
sample from the Gumbel-Matching distribution ``G.M.(X) = M(X + eps)``; replacing the matching by the
Sinkhorn operator gives its relaxation, ``G.S.(X, tau) = S((X + eps) / tau)``, which tends to
``M(X + eps)`` as ``tau -> 0`` (Mena et al., 2018, ``mena2018learning``).

Rectangular ``(..., N, M)`` scores, forbidden pairs (``-inf``) and padded batches
(``n_rows``/``n_cols``/``mask``) are accepted as by :func:`permlib.sinkhorn` and
:func:`permlib.matching`: the samples are then partial permutations (matrices whose shorter side
sums to 1, the longer to at most 1), exactly 0 on excluded entries. A ``-inf`` score stays
``-inf`` after the noise is added.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Integral

import torch

from permlib._checks import (
    check_float_matrix,
    check_generator,
    check_positive_int,
    check_positive_real,
    defers,
    entry_mask,
    extremes,
    plain,
)
from permlib.matching import matching
from permlib.permutations import permutation_matrix
from permlib.sinkhorn import Backward, sinkhorn

__all__ = ["gumbel_matching", "gumbel_sinkhorn", "perturb", "sample_gumbel"]


def _check_shape(shape: object) -> tuple[int, ...]:
    """``shape`` as a tuple of sizes: an int ``n`` (as ``(n,)``) or a sequence of ints >= 0."""
    if isinstance(shape, Integral) and not isinstance(shape, bool):
        shape = (shape,)
    if isinstance(shape, (str, bytes)) or not isinstance(shape, Sequence):
        raise TypeError(
            f"shape must be an int or a sequence of ints (like torch.rand's size), "
            f"got {type(shape).__name__}"
        )
    for size in shape:
        if isinstance(size, bool) or not isinstance(size, Integral):
            raise TypeError(f"shape must hold integers, got {size!r} in {tuple(shape)!r}")
    if any(size < 0 for size in shape):
        raise ValueError(f"shape must hold sizes >= 0, got {tuple(shape)!r}")
    return tuple(int(size) for size in shape)


def _gumbel_bound(dtype: torch.dtype) -> float:
    """The largest ``|sample|`` :func:`sample_gumbel` can return in ``dtype`` (a float).

    ``U`` is clamped to ``[tiny, 1 - eps]``, so the samples lie in
    ``[-log(-log tiny), -log(-log(1 - eps))]``: about ``[-4.5, 15.9]`` in float32 and
    ``[-2.3, 6.9]`` in float16. Used to refuse a ``noise_factor`` that could overflow before
    drawing anything.
    """
    finfo = torch.finfo(dtype)
    upper = -math.log(-math.log1p(-finfo.eps))
    lower = -math.log(-math.log(finfo.tiny))
    return max(upper, -lower) * (1 + 16 * finfo.eps)  # margin for the rounding of the logs


def sample_gumbel(
    shape: int | Sequence[int] | torch.Size,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Standard Gumbel samples ``-log(-log U)``, ``U ~ Uniform(0, 1)``, of the given shape.

    Args:
        shape: the sizes, as a sequence of ints >= 0 (``(2, 3)``, ``torch.Size``, ``()`` for a
            scalar) or one int ``n`` for ``(n,)``, as :func:`torch.rand` accepts.
        generator: a ``torch.Generator`` for reproducible draws; without one, the global
            generator is used.
        device: where to draw (default: the generator's device, else the default device); must
            match the generator's.
        dtype: a floating dtype.

    Returns:
        The samples, ``shape`` in ``dtype``. ``U`` is clamped to ``[tiny, 1 - eps]`` of
        ``dtype``, so that every sample is finite (about -4.5 to 15.9 in float32).
    """
    shape = _check_shape(shape)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype, got {dtype}")
    check_generator(generator, device)
    if generator is not None and device is None:
        device = generator.device
    u = torch.rand(shape, generator=generator, device=device, dtype=dtype)
    finfo = torch.finfo(dtype)
    u = u.clamp(min=finfo.tiny, max=1.0 - finfo.eps)
    return -torch.log(-torch.log(u))


def perturb(
    log_alpha: torch.Tensor,
    n_samples: int = 1,
    noise_factor: float = 1.0,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``n_samples`` Gumbel perturbations of ``log_alpha``: ``(..., N, M) -> (S, ..., N, M)``.

    ``noise_factor`` scales the noise (0 is allowed and returns copies of ``log_alpha``).
    ``-inf`` entries (forbidden pairs) stay ``-inf``; NaN and ``+inf`` are errors. The
    perturbed scores of finite entries are finite by construction: a ``noise_factor`` whose
    noise, added to
    ``log_alpha``, could overflow ``log_alpha``'s dtype (e.g. ``1e38`` in float32) raises
    ``ValueError`` before drawing (the bound is the largest Gumbel sample times ``noise_factor``
    plus ``max |log_alpha|``, computed from the finiteness check's min and max: no extra pass).
    An empty batch (``(0, N, N)``) gives an empty ``(S, 0, N, N)``.

    Devices: on the CPU ``log_alpha`` is checked before drawing. On CUDA the checks are device
    flags read once, after drawing (a failed flag re-runs the host checks, which raise the same
    errors; the generator has then advanced); in :func:`gumbel_sinkhorn` and
    :func:`gumbel_matching` they cost no read of their own, riding on the Sinkhorn call's one
    deferred check or on matching's transfer to the host.
    """
    out, bad = _perturb(log_alpha, n_samples, noise_factor, generator)
    if bad is not None and bool(bad):  # the one host read (CUDA): redo the checks, which raise
        _check_input(log_alpha, noise_factor)
    return out


def _input_range(log_alpha: torch.Tensor, exists: torch.Tensor | None) -> tuple[float, float]:
    """``(min, max)`` of the finite entries of ``log_alpha`` that exist, after refusing NaN and
    ``+inf`` there (``-inf``, a forbidden pair, is accepted); ``(0, 0)`` without values."""
    if exists is not None:  # (under torch.func, where() lines the mapped items up)
        log_alpha = torch.where(exists, log_alpha.detach(), 0.0)
    vals = plain(log_alpha).detach()
    if vals.device.type == "meta" or not vals.numel():
        return 0.0, 0.0
    lo, hi = extremes(vals).tolist()
    if math.isnan(lo) or math.isnan(hi) or hi == math.inf:
        raise ValueError(
            "log_alpha contains invalid numeric entries (NaN or +inf; forbidden pairs are -inf)"
        )
    if lo == -math.inf:  # the finite range, without the forbidden pairs
        lo, hi = extremes(torch.where(vals > -math.inf, vals, 0.0)).tolist()
    return lo, hi


def _check_input(
    log_alpha: torch.Tensor, noise_factor: float, exists: torch.Tensor | None = None
) -> None:
    """The host checks of :func:`perturb`: no NaN or ``+inf`` in ``log_alpha`` (where it exists),
    and noise that cannot overflow (raise ``ValueError`` naming ``log_alpha`` or
    ``noise_factor``)."""
    lo, hi = _input_range(log_alpha, exists)
    if noise_factor == 0:
        return
    noise_bound = noise_factor * _gumbel_bound(log_alpha.dtype)
    largest = max(abs(lo), abs(hi))
    if largest + noise_bound > torch.finfo(log_alpha.dtype).max:
        raise ValueError(
            f"noise_factor={noise_factor:g} is too large for {log_alpha.dtype}: its Gumbel noise "
            f"(up to {noise_bound:.3g} in magnitude) added to log_alpha (entries up to "
            f"{largest:.3g}) can overflow; lower noise_factor or use float64"
        )


def _perturb(
    log_alpha: torch.Tensor,
    n_samples: int,
    noise_factor: float,
    generator: torch.Generator | None,
    exists: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`perturb` without its host read where checks are deferred (CUDA).

    Returns ``(perturbed, bad)``: ``bad`` is ``None`` where the checks ran up front on the host
    (CPU), else a 0-d bool tensor on the device, true when ``log_alpha`` is not finite or the
    noise could overflow; the perturbed scores are then NaN, so that any later check of them
    (the Sinkhorn call's own deferred check, matching's on the host) fails too, and the caller
    re-runs :func:`_check_input` for the error that names the argument. ``exists``: the
    entries that exist (padded batches); the others are never read and are ``-inf`` in the
    result.
    """
    check_float_matrix(log_alpha, "log_alpha", square=False, finite=False)
    n_samples = check_positive_int(n_samples, "n_samples")
    if noise_factor != 0:
        noise_factor = check_positive_real(noise_factor, "noise_factor")
    check_generator(generator, log_alpha.device, "log_alpha")
    defer = defers(log_alpha.device) and log_alpha.numel() > 0
    if exists is not None:  # padding: checked on the host, never read, -inf in the result
        _check_input(log_alpha, noise_factor, exists)
        out, _ = _perturb(
            torch.where(exists, log_alpha, -math.inf), n_samples, noise_factor, generator
        )
        return out, None
    if not defer:
        _check_input(log_alpha, noise_factor)
    expanded = log_alpha.unsqueeze(0).expand((n_samples,) + tuple(log_alpha.shape))
    if noise_factor == 0:
        out = expanded.clone()
    else:
        noise = sample_gumbel(
            expanded.shape, generator=generator, device=log_alpha.device, dtype=log_alpha.dtype
        )
        out = expanded + noise_factor * noise
    if not defer:
        return out, None
    ext = extremes(log_alpha).double()
    # NaN or +inf; -inf (a forbidden pair) is accepted: then the lower end of the overflow check
    # is not known on the device (a finite entry within the noise of -finfo.max would become
    # -inf, i.e. forbidden, unnoticed: an entry within 16 of -3.4e38 in float32)
    bad = torch.isnan(ext).any() | (ext[1] == math.inf)
    if noise_factor != 0:
        bound = noise_factor * _gumbel_bound(log_alpha.dtype)
        size = torch.where(torch.isfinite(ext), ext.abs(), 0.0).amax()
        bad = bad | (size + bound > torch.finfo(log_alpha.dtype).max)
    return out.masked_fill_(bad, math.nan), bad


def gumbel_sinkhorn(
    log_alpha: torch.Tensor,
    tau: float | torch.Tensor = 1.0,
    n_samples: int = 1,
    noise_factor: float = 1.0,
    n_iters: int = 20,
    *,
    tol: float | None = None,
    backward: Backward = "unroll",
    generator: torch.Generator | None = None,
    n_rows: int | torch.Tensor | None = None,
    n_cols: int | torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gumbel-Sinkhorn samples ``S((log_alpha + noise_factor * eps) / tau)``.

    Args:
        log_alpha: ``(..., N, M)`` scores (maximized); rows index items, columns positions.
            ``-inf`` marks a forbidden pair; ``N != M`` gives partial permutations (as
            :func:`permlib.sinkhorn`).
        tau, n_iters, tol, backward: as in :func:`permlib.log_sinkhorn`.
        n_samples: number of independent noise draws per matrix.
        noise_factor: scale of the Gumbel noise (0 gives the plain Sinkhorn operator).
        generator: a ``torch.Generator`` for reproducible noise.
        n_rows, n_cols, mask: a padded batch, as in :func:`permlib.sinkhorn` (shapes of
            ``log_alpha``'s batch, not of the samples'): the padding is never read, exactly 0
            in the samples and ``-inf`` in the perturbed scores, with zero gradient.

    Returns:
        ``(samples, perturbed)``, both ``(n_samples, ..., N, M)``: the doubly stochastic samples
        (partial permutations for rectangular, padded or forbidden-pair problems) and the
        perturbed log-potentials ``log_alpha + noise_factor * eps``, differentiable with
        respect to ``log_alpha``.
    """
    exists = None
    if n_rows is not None or n_cols is not None or mask is not None:
        check_float_matrix(log_alpha, "log_alpha", square=False, finite=False)
        exists = entry_mask(log_alpha, "log_alpha", n_rows, n_cols, mask)
    perturbed, bad = _perturb(log_alpha, n_samples, noise_factor, generator, exists)
    try:  # on CUDA, the input checks ride on the Sinkhorn call's one deferred host read
        samples = sinkhorn(
            perturbed, tau=tau, n_iters=n_iters, tol=tol, backward=backward,
            mask=None if exists is None else exists.expand(perturbed.shape),
        )
    except ValueError:
        if bad is not None and bool(bad):
            _check_input(log_alpha, noise_factor)
        raise
    return samples, perturbed


def gumbel_matching(
    log_alpha: torch.Tensor,
    n_samples: int = 1,
    noise_factor: float = 1.0,
    *,
    generator: torch.Generator | None = None,
    n_rows: int | torch.Tensor | None = None,
    n_cols: int | torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact samples of the Gumbel-Matching distribution ``M(log_alpha + noise_factor * eps)``.

    ``log_alpha`` is ``(..., N, M)``, ``-inf`` for forbidden pairs; ``n_rows``/``n_cols``/``mask``
    describe a padded batch, as in :func:`permlib.matching`.

    Returns:
        ``(samples, perturbed)``, both ``(n_samples, ..., N, M)``: permutation matrices in
        ``log_alpha``'s dtype (``samples.argmax(-1)`` gives the index form of a square one;
        rectangular and padded problems give partial permutation matrices,
        ``permutation_matrix(perm, m=M)`` of :func:`permlib.matching`'s result, zero rows for
        unassigned and padded rows) and the perturbed log-potentials (``-inf`` on the
        padding). The samples carry no gradient.
    """
    exists = None
    if n_rows is not None or n_cols is not None or mask is not None:
        check_float_matrix(log_alpha, "log_alpha", square=False, finite=False)
        exists = entry_mask(log_alpha, "log_alpha", n_rows, n_cols, mask)
    perturbed, bad = _perturb(log_alpha, n_samples, noise_factor, generator, exists)
    n, m = log_alpha.shape[-2:]
    try:  # on CUDA, the input checks ride on matching's transfer to the host (NaN if bad)
        perm = matching(perturbed, mask=None if exists is None else exists.expand(perturbed.shape))
    except ValueError:
        if bad is not None and bool(bad):
            _check_input(log_alpha, noise_factor)
        raise
    if exists is None and n == m:
        return permutation_matrix(perm, dtype=log_alpha.dtype), perturbed
    return permutation_matrix(perm, dtype=log_alpha.dtype, m=m), perturbed
