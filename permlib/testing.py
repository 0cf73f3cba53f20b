"""Reference implementations shared by the tests, the benchmarks and the book.

Each one computes something :mod:`permlib` also computes, by an independent and deliberately
plain route, so that the library's answer can be checked against it:

* :func:`log_sinkhorn_loop` / :func:`sinkhorn_loop`: the textbook log-domain Sinkhorn loop, written
  as the papers write it (the baseline of the benchmarks and the reference of the Sinkhorn tests);
* :func:`entropic_reference`: the maximizer of Theorem 1's entropy-regularized objective found by a
  generic constrained solver (SciPy's SLSQP), with no Sinkhorn iteration involved;
* :func:`gumbel_matching_reference`: the law of Gumbel-Matching by brute force over all
  permutations, with no assignment solver involved.

References (keys of ``book/references.bib``): ``mena2017sinkhorn`` (eq. 1, Theorem 1) and
``mena2018learning`` (Gumbel-Matching). Conventions are permlib's: matrices ``(..., N, N)`` with
batch dimensions first, rows index items and columns positions, scores are maximized.
"""

from __future__ import annotations

import numpy as np
import torch

from permlib.distributions import enumerate_permutations
from permlib.gumbel import sample_gumbel

__all__ = [
    "entropic_reference",
    "gumbel_matching_reference",
    "log_sinkhorn_loop",
    "sinkhorn_loop",
]


def log_sinkhorn_loop(x: torch.Tensor, n_iters: int) -> torch.Tensor:
    """The textbook loop: ``log S^L(x)``, rows then columns, ``n_iters`` times.

    ``L`` times, subtract the row log-sum-exp, then the column log-sum-exp (eq. 1 of Mena et al.,
    2017, in the log domain). Every step rewrites the whole ``N x N`` matrix and autograd stores
    what each ``logsumexp`` needs, so memory grows by ``O(N^2)`` per iteration: this is the
    baseline :func:`permlib.log_sinkhorn` is measured and checked against.

    Args:
        x: ``(..., N, N)`` floating scores, already divided by the temperature.
        n_iters: number ``L`` of full iterations.

    Returns:
        ``(..., N, N)`` log of the (approximately) doubly stochastic matrix, differentiable.
    """
    for _ in range(n_iters):
        x = x - torch.logsumexp(x, dim=-1, keepdim=True)
        x = x - torch.logsumexp(x, dim=-2, keepdim=True)
    return x


def sinkhorn_loop(x: torch.Tensor, n_iters: int) -> torch.Tensor:
    """``exp`` of :func:`log_sinkhorn_loop`: ``(..., N, N) -> (..., N, N)``."""
    return log_sinkhorn_loop(x, n_iters).exp()


def entropic_reference(scores: torch.Tensor | np.ndarray, tau: float) -> np.ndarray:
    r"""Maximize :math:`\langle P, X\rangle_F + \tau H(P)` over the Birkhoff polytope with SciPy.

    A generic constrained solver (SLSQP on the :math:`N^2` entries, float64, analytic gradient,
    equality constraints for the row and column sums), independent of any Sinkhorn iteration: it
    is the reference against which Theorem 1's claim ``S(X / tau) = argmax`` is checked.

    Args:
        scores: ``(N, N)`` scores ``X`` (one matrix; keep ``N`` small, e.g. ``N <= 6``).
        tau: temperature ``> 0``.

    Returns:
        ``(N, N)`` float64 maximizer ``P`` (doubly stochastic up to the solver's tolerance).
    """
    from scipy.optimize import minimize

    x = np.asarray(
        scores.detach().cpu() if isinstance(scores, torch.Tensor) else scores, dtype=np.float64
    )
    if x.ndim != 2 or x.shape[0] != x.shape[1]:
        raise ValueError(f"scores must be one square matrix, got shape {x.shape}")
    if not tau > 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    n = x.shape[0]
    floor = 1e-300

    def neg_objective(flat: np.ndarray) -> tuple[float, np.ndarray]:
        p = np.maximum(flat, floor)
        value = flat @ x.ravel() - tau * np.sum(p * np.log(p))
        grad = x.ravel() - tau * (np.log(p) + 1.0)
        return -value, -grad

    rows = np.kron(np.eye(n), np.ones((1, n)))  # (N, N^2): row sums of the flattened matrix
    cols = np.kron(np.ones((1, n)), np.eye(n))  # (N, N^2): column sums
    a_eq = np.vstack([rows, cols[:-1]])  # one constraint is redundant
    constraint = {"type": "eq", "fun": lambda f: a_eq @ f - 1.0, "jac": lambda f: a_eq}
    start = np.full(n * n, 1.0 / n)
    res = minimize(
        neg_objective,
        start,
        jac=True,
        method="SLSQP",
        bounds=[(0.0, 1.0)] * n * n,
        constraints=[constraint],
        options={"ftol": 1e-15, "maxiter": 2000},
    )
    if not res.success:
        raise RuntimeError(f"SLSQP did not converge: {res.message}")
    return res.x.reshape(n, n)


def gumbel_matching_reference(
    log_alpha: torch.Tensor,
    n_samples: int,
    *,
    noise_factor: float = 1.0,
    generator: torch.Generator | None = None,
    chunk: int = 100_000,
) -> torch.Tensor:
    r"""Distribution of Gumbel-Matching :math:`M(X + G)`, by brute force over all permutations.

    For each noise draw, the score of every permutation is computed and the largest taken: no
    assignment solver is involved, so this is an independent reference for
    :func:`permlib.gumbel_matching`. The noise is the library's own
    (:func:`permlib.sample_gumbel`: i.i.d. standard Gumbel on the ``n^2`` entries, scaled by
    ``noise_factor``), drawn in float64 on ``log_alpha``'s device.

    Args:
        log_alpha: ``(n, n)`` scores (small ``n``: the cost is ``n_samples * n! * n``).
        n_samples: number of noise draws.
        noise_factor: scale of the Gumbel noise.
        generator: source of randomness, on ``log_alpha``'s device.
        chunk: draws processed at a time (bounds memory).

    Returns:
        ``(n!,)`` float64 frequencies, indexed like
        :func:`permlib.distributions.enumerate_permutations`.
    """
    if log_alpha.dim() != 2 or log_alpha.shape[0] != log_alpha.shape[1]:
        raise ValueError(f"log_alpha must be one (n, n) matrix, got shape {tuple(log_alpha.shape)}")
    x = log_alpha.detach().double()
    n = x.shape[-1]
    perms = enumerate_permutations(n, device=x.device)
    rows = torch.arange(n, device=x.device)
    counts = torch.zeros(perms.shape[0], dtype=torch.float64, device=x.device)
    done = 0
    while done < n_samples:
        m = min(chunk, n_samples - done)
        g = sample_gumbel((m, n, n), generator=generator, device=x.device, dtype=torch.float64)
        z = x + noise_factor * g  # (m, n, n)
        scores = z[:, rows, perms].sum(dim=-1)  # (m, n!)
        counts += torch.bincount(scores.argmax(dim=-1), minlength=perms.shape[0]).double()
        done += m
    return counts / counts.sum()
