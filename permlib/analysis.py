"""Analysis helpers for the book's theory chapters: they measure operators, they define none.

What is here inspects what the operators of :mod:`permlib` do: the entropy and the
entropy-regularized objective of Theorem 1 of Mena et al. (2017), the half-step constraint errors
and plateaus of Sinkhorn's iteration on the hard inputs of the HSTE paper, gradients of any loss
through an operator, and the autograd graph an operator records. Conventions are permlib's:
matrices ``(..., N, N)`` with batch dimensions first, rows index items and columns positions,
scores are maximized.

References (keys of ``book/references.bib``): ``mena2017sinkhorn`` (Theorem 1) and ``hste``, the
anonymous preprint *End-to-end Permutation Learning with Hungarian Algorithm* (its section 2,
Fig. 1, Fig. 5 and Appendix D).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from permlib.metrics import constraint_error

__all__ = [
    "alternate_normalizations",
    "autograd_graph",
    "entropic_objective",
    "entropy",
    "epsilon_matrix",
    "linear_loss_gradient",
    "normalization_errors",
    "operator_gradient",
    "oscillating_patterns",
    "plateau_exit",
]

# ---------------------------------------------------------------------------------------------
# Theorem 1 of Mena et al. (2017): entropy-regularized assignment
# ---------------------------------------------------------------------------------------------


def entropy(p: torch.Tensor) -> torch.Tensor:
    r"""Entropy :math:`H(P) = -\sum_{ij} P_{ij} \log P_{ij}` with :math:`0 \log 0 = 0`.

    Args:
        p: ``(..., N, N)`` nonnegative matrix (typically doubly stochastic).

    Returns:
        ``(...)`` entropies, same dtype and device as ``p``.
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


# ---------------------------------------------------------------------------------------------
# Convergence failures (HSTE paper, section 2 and Appendix D)
# ---------------------------------------------------------------------------------------------


def epsilon_matrix(
    eps: float | torch.Tensor,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """The matrix ``A = [[e, 1, e], [1, e, 1], [e, 1, e]]`` of Appendix D of the HSTE paper.

    Args:
        eps: a float, or a ``(B,)`` tensor of values of epsilon.
        dtype: floating dtype of the result.
        device: device of the result (default: ``eps``'s for a tensor, else the CPU).

    Returns:
        ``(3, 3)`` matrix, or ``(B, 3, 3)`` for a tensor ``eps``. Entries are *potentials*
        (positive), not log-potentials: pass ``A.log()`` to :func:`permlib.sinkhorn`.
    """
    if device is None and isinstance(eps, torch.Tensor):
        device = eps.device
    e = torch.as_tensor(eps, dtype=dtype, device=device)
    pattern = torch.tensor([[0, 1, 0], [1, 0, 1], [0, 1, 0]], dtype=dtype, device=device)
    return pattern + e[..., None, None] * (1 - pattern)


def oscillating_patterns(
    dtype: torch.dtype = torch.float64, device: torch.device | str | None = None
) -> torch.Tensor:
    """The 3x3 binary matrices of Fig. 1 of the HSTE paper, on which Sinkhorn oscillates forever.

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
    return torch.tensor(patterns, dtype=dtype, device=device)


def alternate_normalizations(a: torch.Tensor, n_normalizations: int) -> torch.Tensor:
    """Apply ``n_normalizations`` half-steps to a nonnegative matrix: rows, columns, rows, ...

    This is Sinkhorn's iteration in the original (potential) domain, one normalization at a
    time, as the HSTE paper analyses it: ``L`` full iterations are ``k = 2L`` normalizations.
    Zeros are allowed as long as no row or column is entirely zero.

    Args:
        a: ``(..., N, N)`` nonnegative potentials (``exp`` of the scores).
        n_normalizations: number ``k`` of half-steps.

    Returns:
        ``(..., k + 1, N, N)``: the input followed by the matrix after each normalization.
    """
    if n_normalizations < 0:
        raise ValueError(f"n_normalizations must be >= 0, got {n_normalizations}")
    out = [a]
    for k in range(n_normalizations):
        dim = -1 if k % 2 == 0 else -2
        out.append(out[-1] / out[-1].sum(dim=dim, keepdim=True))
    return torch.stack(out, dim=-3)


def normalization_errors(a: torch.Tensor, n_normalizations: int) -> torch.Tensor:
    r"""Constraint error after each normalization: the HSTE paper's :math:`\mathrm{Err}_c` and
    :math:`\mathrm{Err}_r`, interleaved.

    Each entry is :func:`permlib.metrics.constraint_error` of the matrix after that
    normalization. After a row normalization the rows sum to one (up to rounding), so the error
    is that of the columns, ``max_j |1 - sum_i P_ij|``; after a column normalization, the rows'.

    Args:
        a: ``(..., N, N)`` nonnegative potentials.
        n_normalizations: number ``k`` of half-steps.

    Returns:
        ``(..., k)``: entry ``k - 1`` is the error after ``k`` normalizations. At even ``k = 2L``
        it equals the residual that :func:`permlib.log_sinkhorn` reports after ``L`` iterations.
    """
    return constraint_error(alternate_normalizations(a, n_normalizations)[..., 1:, :, :])


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


# ---------------------------------------------------------------------------------------------
# Gradients through an operator
# ---------------------------------------------------------------------------------------------


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
        ``(..., N, N)`` gradient, same dtype and device as ``scores``.
    """
    x = scores.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(loss(op(x)).sum(), x)
    return grad


def linear_loss_gradient(
    op: Callable[[torch.Tensor], torch.Tensor], scores: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    r"""Gradient of :math:`\ell(X) = \langle \mathrm{op}(X), W\rangle_F` with respect to ``X``.

    :func:`operator_gradient` for a linear loss: used to compare how much signal different
    operators (Sinkhorn at several temperatures, unrolled or implicit, the Hungarian
    straight-through estimator) pass back to the scores.

    Args:
        op: maps ``(..., N, N)`` scores to a ``(..., N, N)`` (relaxed) permutation matrix.
        scores: ``(..., N, N)`` scores ``X`` (not modified).
        weights: ``(..., N, N)`` weights ``W`` of the linear loss (broadcast).

    Returns:
        ``(..., N, N)`` gradient, same dtype as ``scores``.
    """
    return operator_gradient(op, scores, lambda p: (p * weights).sum(dim=(-2, -1)))


# ---------------------------------------------------------------------------------------------
# Autograd graphs (the Hungarian straight-through estimator, Fig. 5 of the HSTE paper)
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
