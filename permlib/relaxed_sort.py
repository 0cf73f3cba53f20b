"""Relaxed sorting operators: a vector of scores in, a soft permutation matrix out.

The founding papers relax a permutation through a square matrix of log-potentials
(:func:`permlib.sinkhorn`); the operators here start from one *score per item* and relax the
permutation that sorts the scores. They are the peers the relaxations chapter compares with:

* :func:`neural_sort`: NeuralSort (Grover et al., ICLR 2019, :cite:`grover2019stochastic`,
  eq. 5): position ``k`` takes the softmax over items of ``((N + 1 - 2k) s_i - sum_j |s_i -
  s_j|) / tau``, which at ``tau -> 0`` puts all its mass on the item of rank ``k``;
* :func:`soft_sort`: SoftSort (Prillo and Eisenschlos, ICML 2020, :cite:`prillo2020softsort`):
  position ``k`` takes the softmax of ``-|sort(s)_k - s_i|^p / tau``;
* :func:`ot_sort`: the optimal-transport sort of Cuturi, Teboul and Vert (2019,
  :cite:`cuturi2019`): the entropy-regularized transport plan from the (squashed) scores to
  ``N`` increasing targets, computed by :func:`permlib.log_sinkhorn`; the one operator here whose
  matrices are doubly stochastic (OTT-JAX's ``soft_sort`` computes the same plan);
* :func:`plackett_luce_perturb`: Gumbel noise on the scores, so that sorting them samples a
  permutation from the Plackett-Luce distribution with log-weights ``s``: NeuralSort's
  stochastic variant relaxes the sort of the perturbed scores.

Conventions (those of the rest of permlib, unlike the papers' code, which puts positions in
rows and sorts in descending order):

* ``scores`` has shape ``(..., N)``; the result ``P`` has shape ``(..., N, N)`` with **rows
  indexing items and columns positions**, positions in **ascending** order of score (position 0
  holds the smallest score). ``P^T x`` (:func:`permlib.nn.reconstruct`) is then the relaxed
  ascending sort of ``x``, as with a Sinkhorn matrix.
* Each column (a position) is a probability vector over items; the rows need not sum to 1 (the
  matrices are column-stochastic, not doubly stochastic), except for :func:`ot_sort`'s.
* The hard permutation these operators relax is :func:`sort_permutation` (``perm[..., i]`` the
  position of item ``i``, ties broken by index), which their ``tau -> 0`` limit reaches when no
  two scores tie.

The differentiable sorting networks of Petersen et al. (``diffsort``) are a package of their own
and are used through it (:mod:`permlib.experiments.relaxations`).
"""

from __future__ import annotations

import torch

from permlib._checks import check_finite, check_positive_real, check_tensor, compute_float
from permlib.gumbel import sample_gumbel
from permlib.sinkhorn import DEFAULT_THRESHOLD, SinkhornInfo, log_sinkhorn

__all__ = ["neural_sort", "ot_sort", "plackett_luce_perturb", "soft_sort", "sort_permutation"]


def _check_scores(scores: object, name: str = "scores") -> torch.Tensor:
    scores = check_tensor(scores, name)
    if not scores.dtype.is_floating_point:
        raise TypeError(f"{name} must be a floating tensor, got {scores.dtype}")
    if scores.dim() < 1:
        raise ValueError(f"{name} must have at least one dimension (..., N), got a scalar")
    check_finite(scores, name)
    return scores


def sort_permutation(scores: torch.Tensor) -> torch.Tensor:
    """The permutation that sorts ``scores`` ascending: ``(..., N) -> (..., N)`` int64,
    ``perm[..., i]`` = position of item ``i`` (ties broken by index)."""
    scores = check_tensor(scores, "scores")
    if scores.dim() < 1:
        raise ValueError("scores must have at least one dimension (..., N), got a scalar")
    order = torch.sort(scores, dim=-1, stable=True).indices  # order[k] = item at position k
    return torch.argsort(order, dim=-1)


def neural_sort(scores: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """NeuralSort's relaxation of the ascending sort of ``scores`` (Grover et al., 2019).

    With ``u = -scores`` (descending order of ``u`` is ascending order of ``scores``) and
    ``A_ij = |u_i - u_j|``, position ``k = 1 .. N`` of the result is
    ``softmax_i(((N + 1 - 2k) u_i - sum_j A_ij) / tau)``: Grover et al.'s eq. 5, transposed to
    permlib's layout.

    Args:
        scores: ``(..., N)`` real scores, finite.
        tau: temperature, > 0; as ``tau -> 0`` the result tends to the permutation matrix of
            :func:`sort_permutation` (when the scores are distinct).

    Returns:
        ``(..., N, N)`` matrix, rows items and columns positions, every column summing to 1.
    """
    scores = _check_scores(scores)
    tau = check_positive_real(tau, "tau")
    n = scores.shape[-1]
    u = -scores
    spread = (u.unsqueeze(-1) - u.unsqueeze(-2)).abs().sum(dim=-1)  # (..., N): sum_j |u_i - u_j|
    k = torch.arange(1, n + 1, device=scores.device, dtype=scores.dtype)
    # logits[..., i, k] = (N + 1 - 2k) u_i - spread_i; softmax over items i for each position k
    logits = (n + 1 - 2 * k) * u.unsqueeze(-1) - spread.unsqueeze(-1)
    return torch.softmax(logits / tau, dim=-2)


def soft_sort(scores: torch.Tensor, tau: float = 1.0, *, power: float = 1.0) -> torch.Tensor:
    """SoftSort's relaxation of the ascending sort of ``scores`` (Prillo and Eisenschlos, 2020).

    Position ``k`` of the result is ``softmax_i(-|sort(scores)_k - scores_i|^power / tau)``,
    with ``sort`` ascending (the paper sorts descending and puts positions in rows).

    Args:
        scores: ``(..., N)`` real scores, finite.
        tau: temperature, > 0.
        power: the exponent ``p`` of the distance (1 in the paper's experiments), > 0.

    Returns:
        ``(..., N, N)`` matrix, rows items and columns positions, every column summing to 1.
    """
    scores = _check_scores(scores)
    tau = check_positive_real(tau, "tau")
    power = check_positive_real(power, "power")
    ordered = torch.sort(scores, dim=-1).values
    dist = (scores.unsqueeze(-1) - ordered.unsqueeze(-2)).abs()  # (..., N items, N positions)
    if power != 1.0:
        dist = dist.pow(power)
    return torch.softmax(-dist / tau, dim=-2)


def ot_sort(scores: torch.Tensor, epsilon: float = 1e-2, *, n_iters: int = 2000,
            tol: float = 1e-3, backward: str = "implicit", squash: bool = True,
            return_info: bool = False) -> torch.Tensor | tuple[torch.Tensor, SinkhornInfo]:
    """The optimal-transport relaxation of the ascending sort of ``scores`` (Cuturi, Teboul and
    Vert, 2019).

    Each list's scores are squashed into ``[0, 1]`` by a sigmoid of their standardized values
    (``(s - mean) / (sd + 1e-10)``, population sd; OTT-JAX's default), and ``N`` targets are
    spread evenly over ``[0, 1]``, ``y_k = k / (N - 1)``. The result is ``N`` times the
    entropy-regularized optimal transport plan between the two uniform measures for the cost
    ``(x_i - y_k)^2``: the Sinkhorn operator of ``-(x_i - y_k)^2`` at temperature ``epsilon``,
    iterated until every row and column sums to 1 within ``tol`` (:func:`permlib.log_sinkhorn`,
    which warns with a :class:`~permlib.ConvergenceWarning` when ``n_iters`` do not suffice). As
    ``epsilon -> 0`` it tends to the permutation matrix of :func:`sort_permutation` (distinct
    scores).

    Args:
        scores: ``(..., N)`` real scores, finite.
        epsilon: the regularization (OTT-JAX's ``epsilon``, default ``1e-2`` as there), > 0.
        n_iters, tol, backward: as in :func:`permlib.log_sinkhorn` (defaults: OTT-JAX's cap
            of 2,000 iterations, its threshold ``1e-3`` and its implicit differentiation).
        squash: apply the sigmoid of the standardized scores (``False``: use the scores as
            they are, which should then lie in ``[0, 1]``).
        return_info: also return :func:`permlib.log_sinkhorn`'s :class:`~permlib.SinkhornInfo`
            (per list: the iterations Sinkhorn ran, the final residual, the potentials).

    Returns:
        ``(..., N, N)`` doubly stochastic matrix, rows items and columns positions; with
        ``return_info``, the pair ``(P, info)``.
    """
    scores = _check_scores(scores)
    epsilon = check_positive_real(epsilon, "epsilon")
    n = scores.shape[-1]
    if scores.numel() == 0:
        empty = scores.new_zeros(*scores.shape, n)
        return (empty, _empty_info(scores, tol)) if return_info else empty
    x = compute_float(scores)  # half precision in float32: the sd of large scores overflows
    if squash:
        mean = x.mean(dim=-1, keepdim=True)
        sd = x.std(dim=-1, correction=0, keepdim=True)
        x = torch.sigmoid((x - mean) / (sd + 1e-10))
    y = torch.linspace(0.0, 1.0, n, device=scores.device, dtype=x.dtype)
    cost = (x.unsqueeze(-1) - y).square()  # (..., N items, N targets)
    out = log_sinkhorn(-cost, tau=epsilon, n_iters=n_iters, tol=tol, backward=backward,
                       return_info=return_info)
    if return_info:
        log_p, info = out
        return log_p.exp().to(scores.dtype), info
    return out.exp().to(scores.dtype)


def _empty_info(scores: torch.Tensor, tol: float | None) -> SinkhornInfo:
    """The report of an empty batch (or of ``N = 0``, whose empty plan is doubly stochastic)."""
    batch, n = scores.shape[:-1], scores.shape[-1]
    x = compute_float(scores)
    return SinkhornInfo(
        residual=x.new_zeros(batch), n_iters=torch.zeros(batch, dtype=torch.int64,
                                                         device=scores.device),
        converged=torch.ones(batch, dtype=torch.bool, device=scores.device),
        errors=x.new_zeros(*batch, 0), threshold=DEFAULT_THRESHOLD if tol is None else tol,
        f=x.new_zeros(*batch, n), g=x.new_zeros(*batch, n),
    )


def plackett_luce_perturb(
    scores: torch.Tensor,
    n_samples: int = 1,
    noise_factor: float = 1.0,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``n_samples`` Gumbel perturbations of ``scores``: ``(..., N) -> (S, ..., N)``.

    Sorting ``scores + g`` (``g`` standard Gumbel, ``noise_factor = 1``) in *descending* order
    draws a permutation from the Plackett-Luce distribution whose log-weights are ``scores``
    (Grover et al., 2019, section 4); NeuralSort's stochastic variant relaxes that sort. In
    permlib's ascending convention the same sample is the ascending sort of ``-(scores + g)``;
    the experiments treat the scores as ascending keys, so they relax the sort of
    ``scores - g`` (the noise's sign does not matter for training, only its scale).
    """
    scores = _check_scores(scores)
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"n_samples must be a positive int, got {n_samples!r}")
    if isinstance(noise_factor, bool) or not float(noise_factor) >= 0:
        raise ValueError(f"noise_factor must be a real number >= 0, got {noise_factor!r}")
    noise = sample_gumbel((n_samples, *scores.shape), generator=generator,
                          device=scores.device, dtype=scores.dtype)  # fmt: skip
    return scores.unsqueeze(0) - float(noise_factor) * noise
