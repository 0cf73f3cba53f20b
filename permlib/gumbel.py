"""Gumbel-Sinkhorn and Gumbel-Matching: the permutation analog of Gumbel-softmax.

Adding i.i.d. Gumbel noise ``eps`` to log-potentials ``X`` and taking the exact matching gives a
sample from the Gumbel-Matching distribution ``G.M.(X) = M(X + eps)``; replacing the matching by the
Sinkhorn operator gives its relaxation, ``G.S.(X, tau) = S((X + eps) / tau)``, which tends to
``M(X + eps)`` as ``tau -> 0`` (Mena et al., 2018, ``mena2018learning``).
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
    finite_range,
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
    """``n_samples`` Gumbel perturbations of ``log_alpha``: ``(..., N, N) -> (S, ..., N, N)``.

    ``noise_factor`` scales the noise (0 is allowed and returns copies of ``log_alpha``). The
    perturbed scores are finite by construction: a ``noise_factor`` whose noise, added to
    ``log_alpha``, could overflow ``log_alpha``'s dtype (e.g. ``1e38`` in float32) raises
    ``ValueError`` before drawing (the bound is the largest Gumbel sample times ``noise_factor``
    plus ``max |log_alpha|``, computed from the finiteness check's min and max: no extra pass).
    An empty batch (``(0, N, N)``) gives an empty ``(S, 0, N, N)``.
    """
    check_float_matrix(log_alpha, "log_alpha", finite=False)
    lo, hi = finite_range(log_alpha, "log_alpha")
    n_samples = check_positive_int(n_samples, "n_samples")
    if noise_factor != 0:
        noise_factor = check_positive_real(noise_factor, "noise_factor")
    check_generator(generator, log_alpha.device, "log_alpha")
    expanded = log_alpha.unsqueeze(0).expand((n_samples,) + tuple(log_alpha.shape))
    if noise_factor == 0:
        return expanded.clone()
    noise_bound = noise_factor * _gumbel_bound(log_alpha.dtype)
    largest = max(abs(lo), abs(hi))
    if largest + noise_bound > torch.finfo(log_alpha.dtype).max:
        raise ValueError(
            f"noise_factor={noise_factor:g} is too large for {log_alpha.dtype}: its Gumbel noise "
            f"(up to {noise_bound:.3g} in magnitude) added to log_alpha (entries up to "
            f"{largest:.3g}) can overflow; lower noise_factor or use float64"
        )
    noise = sample_gumbel(
        expanded.shape, generator=generator, device=log_alpha.device, dtype=log_alpha.dtype
    )
    return expanded + noise_factor * noise


def gumbel_sinkhorn(
    log_alpha: torch.Tensor,
    tau: float = 1.0,
    n_samples: int = 1,
    noise_factor: float = 1.0,
    n_iters: int = 20,
    *,
    tol: float | None = None,
    backward: Backward = "unroll",
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gumbel-Sinkhorn samples ``S((log_alpha + noise_factor * eps) / tau)``.

    Args:
        log_alpha: ``(..., N, N)`` scores (maximized); rows index items, columns positions.
        tau, n_iters, tol, backward: as in :func:`permlib.log_sinkhorn`.
        n_samples: number of independent noise draws per matrix.
        noise_factor: scale of the Gumbel noise (0 gives the plain Sinkhorn operator).
        generator: a ``torch.Generator`` for reproducible noise.

    Returns:
        ``(samples, perturbed)``, both ``(n_samples, ..., N, N)``: the doubly stochastic samples
        and the perturbed log-potentials ``log_alpha + noise_factor * eps``, differentiable with
        respect to ``log_alpha``.
    """
    perturbed = perturb(log_alpha, n_samples, noise_factor, generator=generator)
    samples = sinkhorn(perturbed, tau=tau, n_iters=n_iters, tol=tol, backward=backward)
    return samples, perturbed


def gumbel_matching(
    log_alpha: torch.Tensor,
    n_samples: int = 1,
    noise_factor: float = 1.0,
    *,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact samples of the Gumbel-Matching distribution ``M(log_alpha + noise_factor * eps)``.

    Returns:
        ``(samples, perturbed)``, both ``(n_samples, ..., N, N)``: permutation matrices in
        ``log_alpha``'s dtype (``samples.argmax(-1)`` gives the index form) and the perturbed
        log-potentials. The samples carry no gradient.
    """
    perturbed = perturb(log_alpha, n_samples, noise_factor, generator=generator)
    perm = matching(perturbed)
    return permutation_matrix(perm, dtype=log_alpha.dtype), perturbed
