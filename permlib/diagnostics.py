"""Analysis helpers for the book's theory chapters: measure operators, do not define new ones.

Everything here inspects what the operators of :mod:`permlib` do (entropy and the
entropy-regularized objective of Theorem 1, half-step constraint errors and plateaus of
Sinkhorn's iteration, the exact distribution of Gumbel-Matching on small ``N``, gradients and
autograd graphs). Conventions are permlib's: matrices ``(..., N, N)`` with batch dimensions
first, rows index items and columns positions, scores are maximized, a permutation is an index
tensor ``perm (..., N)`` with ``perm[..., i]`` the column of row ``i``.

References (keys of ``book/references.bib``): ``mena2017sinkhorn`` (Theorem 1),
``mena2018learning`` (Gumbel-Matching), ``hste`` (plateaus, Fig. 1, Appendix D).
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "alternate_normalizations",
    "autograd_graph",
    "entropic_objective",
    "entropic_reference",
    "entropy",
    "enumerate_permutations",
    "epsilon_matrix",
    "gibbs_distribution",
    "gumbel_matching_reference",
    "linear_loss_gradient",
    "load_paper_table",
    "normalization_errors",
    "operator_gradient",
    "oscillating_patterns",
    "permutation_frequencies",
    "plateau_exit",
    "total_variation",
]

#: Where the numbers transcribed from the papers live (shared with the benchmarks).
PAPER_TABLES = (
    Path(__file__).resolve().parents[1] / "benchmarks" / "reference" / "paper_tables.json"
)


def load_paper_table(key: str, path: str | Path | None = None) -> dict:
    """Return entry ``key`` of ``benchmarks/reference/paper_tables.json`` (the papers' numbers).

    Args:
        key: e.g. ``"sinkhorn_plateau_appendix_d"``.
        path: another JSON file with the same layout; defaults to the repository's copy.
    """
    with open(path or PAPER_TABLES, encoding="utf-8") as fh:
        tables = json.load(fh)
    if key not in tables:
        raise KeyError(f"{key!r} not in {path or PAPER_TABLES}; keys: {sorted(tables)}")
    return tables[key]


# ---------------------------------------------------------------------------------------------
# Theorem 1: entropy-regularized assignment
# ---------------------------------------------------------------------------------------------


def entropy(p: torch.Tensor) -> torch.Tensor:
    r"""Entropy :math:`H(P) = -\sum_{ij} P_{ij} \log P_{ij}` with :math:`0 \log 0 = 0`.

    Args:
        p: ``(..., N, N)`` nonnegative matrix (typically doubly stochastic).

    Returns:
        ``(...)`` entropies, same dtype as ``p``.
    """
    plogp = torch.where(p > 0, p * torch.log(p.clamp_min(torch.finfo(p.dtype).tiny)), 0.0)
    return -plogp.sum(dim=(-2, -1))


def entropic_objective(p: torch.Tensor, scores: torch.Tensor, tau: float) -> torch.Tensor:
    r"""The objective of Theorem 1, :math:`\langle P, X\rangle_F + \tau H(P)`.

    Args:
        p: ``(..., N, N)`` doubly stochastic matrix.
        scores: ``(..., N, N)`` scores ``X`` (broadcast against ``p``).
        tau: temperature ``> 0``.

    Returns:
        ``(...)`` objective values.
    """
    return (p * scores).sum(dim=(-2, -1)) + tau * entropy(p)


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


# ---------------------------------------------------------------------------------------------
# Convergence failures (seed 003, Section 2 and Appendix D)
# ---------------------------------------------------------------------------------------------


def epsilon_matrix(eps: float | torch.Tensor, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The matrix ``A = [[e, 1, e], [1, e, 1], [e, 1, e]]`` of 003's Appendix D.

    Args:
        eps: a float, or a ``(B,)`` tensor of values of epsilon.
        dtype: floating dtype of the result.

    Returns:
        ``(3, 3)`` matrix, or ``(B, 3, 3)`` for a tensor ``eps``. Entries are *potentials*
        (positive), not log-potentials: pass ``A.log()`` to :func:`permlib.sinkhorn`.
    """
    e = torch.as_tensor(eps, dtype=dtype)
    pattern = torch.tensor([[0, 1, 0], [1, 0, 1], [0, 1, 0]], dtype=dtype)
    return pattern + e[..., None, None] * (1 - pattern)


def oscillating_patterns(dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The 3x3 binary matrices of 003's Fig. 1, on which Sinkhorn oscillates forever.

    They contain zeros and have no doubly stochastic scaling, so Sinkhorn's theorem does not
    apply: row and column normalization undo each other. Rotations are omitted, as in the paper.

    Returns:
        ``(6, 3, 3)`` tensor of zeros and ones (potentials, not log-potentials).
    """
    patterns = [
        [[0, 1, 1], [1, 0, 0], [1, 0, 0]],
        [[1, 1, 1], [1, 0, 0], [1, 0, 0]],
        [[1, 1, 1], [0, 1, 0], [0, 1, 0]],
        [[1, 0, 1], [0, 1, 0], [0, 1, 0]],
        [[0, 1, 0], [1, 1, 1], [0, 1, 0]],
        [[0, 1, 0], [1, 0, 1], [0, 1, 0]],
    ]
    return torch.tensor(patterns, dtype=dtype)


def alternate_normalizations(a: torch.Tensor, n_normalizations: int) -> torch.Tensor:
    """Apply ``n_normalizations`` half-steps to a nonnegative matrix: rows, columns, rows, ...

    This is Sinkhorn's iteration in the original (potential) domain, one normalization at a
    time, as analysed in 003: ``L`` full iterations are ``k = 2L`` normalizations. Zeros are
    allowed as long as no row or column is entirely zero.

    Args:
        a: ``(..., N, N)`` nonnegative potentials (``exp`` of the scores).
        n_normalizations: number ``k`` of half-steps.

    Returns:
        ``(..., k + 1, N, N)``: the input followed by the matrix after each normalization.
    """
    if n_normalizations < 0:
        raise ValueError("n_normalizations must be >= 0")
    out = [a]
    for k in range(n_normalizations):
        dim = -1 if k % 2 == 0 else -2
        out.append(out[-1] / out[-1].sum(dim=dim, keepdim=True))
    return torch.stack(out, dim=-3)


def normalization_errors(a: torch.Tensor, n_normalizations: int) -> torch.Tensor:
    """Constraint error after each normalization: 003's ``Err_c`` and ``Err_r`` interleaved.

    After a row normalization the rows sum to one exactly, so the error is that of the columns,
    ``max_j |1 - sum_i P_ij|``; after a column normalization it is that of the rows.

    Args:
        a: ``(..., N, N)`` nonnegative potentials.
        n_normalizations: number ``k`` of half-steps.

    Returns:
        ``(..., k)``: entry ``k - 1`` is the error after ``k`` normalizations. At even ``k = 2L``
        it equals the residual that :func:`permlib.log_sinkhorn` reports after ``L`` iterations.
    """
    mats = alternate_normalizations(a, n_normalizations)[..., 1:, :, :]
    col_err = (mats.sum(dim=-2) - 1).abs().amax(dim=-1)
    row_err = (mats.sum(dim=-1) - 1).abs().amax(dim=-1)
    after_rows = torch.arange(n_normalizations) % 2 == 0
    return torch.where(after_rows, col_err, row_err)


def plateau_exit(errors: torch.Tensor, fraction: float = 0.5) -> torch.Tensor:
    """Number of normalizations ``k`` after which the error leaves its initial plateau.

    The plateau level is the error after the first normalization; ``k`` is the first count at
    which the error falls below ``fraction`` times that level.

    Args:
        errors: ``(..., K)`` errors from :func:`normalization_errors`.
        fraction: how far below the plateau counts as having left it.

    Returns:
        ``(...)`` int64, ``k`` in ``1..K``, or ``-1`` where the error never fell that low.
    """
    below = errors < fraction * errors[..., :1]
    first = below.int().argmax(dim=-1) + 1
    return torch.where(below.any(dim=-1), first, torch.full_like(first, -1)).long()


def linear_loss_gradient(
    op: Callable[[torch.Tensor], torch.Tensor], scores: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    r"""Gradient of :math:`\ell(X) = \langle \mathrm{op}(X), W\rangle_F` with respect to ``X``.

    Used to compare how much signal different operators (Sinkhorn at several temperatures,
    unrolled or implicit, the Hungarian straight-through estimator) pass back to the scores.

    Args:
        op: maps ``(..., N, N)`` scores to a ``(..., N, N)`` (relaxed) permutation matrix.
        scores: ``(..., N, N)`` scores ``X`` (not modified).
        weights: ``(..., N, N)`` weights ``W`` of the linear loss (broadcast).

    Returns:
        ``(..., N, N)`` gradient, same dtype as ``scores``.
    """
    x = scores.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad((op(x) * weights).sum(), x)
    return grad


def operator_gradient(
    op: Callable[[torch.Tensor], torch.Tensor],
    scores: torch.Tensor,
    loss: Callable[[torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """Gradient with respect to the scores of ``loss(op(X)).sum()``, for any loss.

    Args:
        op: maps ``(..., N, N)`` scores to a ``(..., N, N)`` (relaxed) permutation matrix, e.g.
            ``permlib.hungarian_ste`` or ``lambda x: permlib.sinkhorn(x, tau=0.1)``.
        scores: ``(..., N, N)`` scores ``X`` (not modified).
        loss: maps the ``(..., N, N)`` matrix to per-item losses ``(...)`` (summed).

    Returns:
        ``(..., N, N)`` gradient, same dtype as ``scores``.
    """
    x = scores.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(loss(op(x)).sum(), x)
    return grad


# ---------------------------------------------------------------------------------------------
# Distributions over permutations on small N (by enumeration)
# ---------------------------------------------------------------------------------------------


def enumerate_permutations(n: int) -> torch.Tensor:
    """All permutations of ``n`` items in lexicographic order.

    Returns:
        ``(n!, n)`` int64; row ``r`` is the permutation of rank ``r`` (``perm[i]`` = column of
        row ``i``). Keep ``n <= 8``.
    """
    if not 1 <= n <= 8:
        raise ValueError(f"enumeration is for small n (1..8), got {n}")
    return torch.tensor(list(itertools.permutations(range(n))), dtype=torch.int64)


def _rank(perm: torch.Tensor) -> torch.Tensor:
    """Lexicographic rank of each permutation: ``(..., n) -> (...)`` int64 (Lehmer code)."""
    n = perm.shape[-1]
    rank = torch.zeros(perm.shape[:-1], dtype=torch.int64)
    for i in range(n):
        smaller_after = (perm[..., i + 1 :] < perm[..., i : i + 1]).sum(dim=-1)
        rank = rank + smaller_after * math.factorial(n - 1 - i)
    return rank


def permutation_frequencies(perm: torch.Tensor) -> torch.Tensor:
    """Empirical distribution of sampled permutations over the ``n!`` of them.

    Args:
        perm: ``(S, n)`` int64 sampled permutations (or ``(S, n, n)`` permutation matrices).

    Returns:
        ``(n!,)`` float64 frequencies, indexed like :func:`enumerate_permutations`.
    """
    if perm.dim() == 3:
        perm = perm.argmax(dim=-1)
    n = perm.shape[-1]
    counts = torch.bincount(_rank(perm.reshape(-1, n).cpu()), minlength=math.factorial(n))
    return counts.double() / counts.sum()


def gibbs_distribution(log_alpha: torch.Tensor) -> torch.Tensor:
    r"""The Gibbs distribution :math:`p(P) \propto \exp\langle P, X\rangle_F` over all permutations.

    Args:
        log_alpha: ``(n, n)`` scores.

    Returns:
        ``(n!,)`` float64 probabilities, indexed like :func:`enumerate_permutations`.
    """
    perms = enumerate_permutations(log_alpha.shape[-1])
    x = log_alpha.detach().double().cpu()
    energy = x[torch.arange(x.shape[0]), perms].sum(dim=-1)
    return torch.softmax(energy, dim=0)


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
    :func:`permlib.gumbel_matching` (same noise law: i.i.d. standard Gumbel on the ``n^2``
    entries, scaled by ``noise_factor``). Float64 throughout.

    Args:
        log_alpha: ``(n, n)`` scores (small ``n``: the cost is ``n_samples * n! * n``).
        n_samples: number of noise draws.
        noise_factor: scale of the Gumbel noise.
        generator: source of randomness.
        chunk: draws processed at a time (bounds memory).

    Returns:
        ``(n!,)`` float64 frequencies, indexed like :func:`enumerate_permutations`.
    """
    n = log_alpha.shape[-1]
    perms = enumerate_permutations(n)
    rows = torch.arange(n)
    x = log_alpha.detach().double().cpu()
    counts = torch.zeros(perms.shape[0], dtype=torch.float64)
    done = 0
    while done < n_samples:
        m = min(chunk, n_samples - done)
        u = torch.rand((m, n, n), generator=generator, dtype=torch.float64)
        g = -torch.log(-torch.log(u.clamp(1e-300, 1 - 1e-16)))
        z = x + noise_factor * g  # (m, n, n)
        scores = z[:, rows, perms].sum(dim=-1)  # (m, n!)
        counts += torch.bincount(scores.argmax(dim=-1), minlength=perms.shape[0]).double()
        done += m
    return counts / counts.sum()


def total_variation(p: torch.Tensor, q: torch.Tensor) -> float:
    """Total variation distance ``0.5 * sum |p - q|`` between two distributions ``(K,)``."""
    return 0.5 * float((p.double() - q.double()).abs().sum())


# ---------------------------------------------------------------------------------------------
# Autograd graphs (the Hungarian straight-through estimator, 003 Fig. 5)
# ---------------------------------------------------------------------------------------------


def autograd_graph(output: torch.Tensor) -> list[tuple[str, str]]:
    """Edges of the backward graph that produced ``output``, from the output to the leaves.

    Args:
        output: a tensor with ``grad_fn``.

    Returns:
        List of ``(child, parent)`` node names such as ``("MulBackward0", "AccumulateGrad")``,
        in breadth-first order; ``AccumulateGrad`` nodes are the leaves that receive gradients.
        Names of repeated node types are suffixed ``#2``, ``#3``, ... to keep nodes distinct.
    """
    if output.grad_fn is None:
        return []
    names: dict[int, str] = {}
    seen_types: dict[str, int] = {}

    def name(node: object) -> str:
        key = id(node)
        if key not in names:
            base = type(node).__name__
            seen_types[base] = seen_types.get(base, 0) + 1
            names[key] = base if seen_types[base] == 1 else f"{base}#{seen_types[base]}"
        return names[key]

    edges: list[tuple[str, str]] = []
    queue, visited = [output.grad_fn], set()
    while queue:
        node = queue.pop(0)
        if id(node) in visited:
            continue
        visited.add(id(node))
        for parent, _ in getattr(node, "next_functions", ()):
            if parent is not None:
                edges.append((name(node), name(parent)))
                queue.append(parent)
    return edges
