"""Gumbel-Sinkhorn and Gumbel-Matching: the permutation analog of Gumbel-softmax.

Adding i.i.d. Gumbel noise ``eps`` to log-potentials ``X`` and taking the exact matching gives a
sample from the Gumbel-Matching distribution ``G.M.(X) = M(X + eps)``; replacing the matching by the
Sinkhorn operator gives its relaxation, ``G.S.(X, tau) = S((X + eps) / tau)``, which tends to
``M(X + eps)`` as ``tau -> 0`` (Mena et al., 2018, ``mena2018learning``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from permlib._checks import check_float_matrix, check_positive_int, check_positive_real
from permlib.matching import matching
from permlib.permutations import permutation_matrix
from permlib.sinkhorn import Backward, sinkhorn

__all__ = ["gumbel_matching", "gumbel_sinkhorn", "perturb", "sample_gumbel"]


def sample_gumbel(
    shape: Sequence[int] | torch.Size,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Standard Gumbel samples ``-log(-log U)``, ``U ~ Uniform(0, 1)``, of the given shape.

    ``U`` is clamped away from 0 and 1 so that every sample is finite. Pass a ``generator`` (on
    ``device``) for reproducible draws; without one, the global generator is used.
    """
    if not torch.empty((), dtype=dtype).is_floating_point():
        raise TypeError(f"dtype must be a floating dtype, got {dtype}")
    if generator is not None and device is None:
        device = generator.device
    u = torch.rand(tuple(shape), generator=generator, device=device, dtype=dtype)
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

    ``noise_factor`` scales the noise (0 is allowed and returns copies of ``log_alpha``).
    """
    check_float_matrix(log_alpha, "log_alpha")
    n_samples = check_positive_int(n_samples, "n_samples")
    if noise_factor != 0:
        noise_factor = check_positive_real(noise_factor, "noise_factor")
    if generator is not None and generator.device != log_alpha.device:
        raise ValueError(
            f"generator is on {generator.device} but log_alpha is on {log_alpha.device}"
        )
    expanded = log_alpha.unsqueeze(0).expand((n_samples,) + tuple(log_alpha.shape))
    if noise_factor == 0:
        return expanded.clone()
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
