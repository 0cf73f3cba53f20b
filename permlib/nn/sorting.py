"""The permutation-equivariant sorting network of Sinkhorn networks (Mena et al., 2017 and 2018).

Every number ``x_i`` of a list goes through the same small network
``g = g2 ∘ g1`` (``g1``: affine ``1 -> hidden`` + ReLU, ``g2``: affine ``hidden -> N``), whose
``N`` outputs form row ``i`` of the log-potentials ``log_alpha`` (rows index input numbers, columns
positions). Permuting the inputs therefore permutes the rows of ``log_alpha``: the network is
permutation equivariant (:cite:`mena2017sinkhorn`, section 3.1).

A :class:`~permlib.nn.heads.PermutationHead` (``"sinkhorn"``, ``"gumbel_sinkhorn"`` or ``"hste"``)
turns ``log_alpha`` into the (soft) permutation matrices used by the loss. At test time no noise is
used: :meth:`SortingNetwork.predict` returns the exact matching of ``log_alpha``.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from permlib.data.sorting import sorting_permutation
from permlib.matching import matching
from permlib.nn.heads import Head, PermutationHead, make_head, reconstruct
from permlib.nn.init import init_linear_

__all__ = ["INITS", "Init", "SortingNetwork"]

Init = Literal["glorot", "torch"]
INITS: tuple[str, ...] = ("glorot", "torch")


class SortingNetwork(nn.Module):
    """Sinkhorn network for sorting ``n`` numbers.

    Args:
        n: numbers per list ``N`` (the width of ``g2``).
        hidden: width of ``g1`` (32 in the papers).
        head: a :class:`~permlib.nn.heads.PermutationHead`, or its kind (``"sinkhorn"``,
            ``"gumbel_sinkhorn"``, ``"hste"``), built with ``head_options``.
        init: ``"glorot"`` (Glorot-uniform weights and zero biases: the defaults of the
            TensorFlow reference implementation of Mena et al.) or ``"torch"`` (``nn.Linear``'s
            default, uniform in ``±1/sqrt(fan_in)`` for weights and biases, as in the PyTorch
            port the Hungarian-STE paper builds on). With zero biases every ReLU of g1 has its
            kink at 0, so the network is affine in ``x`` on all of ``x > 0`` and what it learns
            on ``U(0, 1)`` extends to the other test intervals; with random biases a quarter of
            the units start with kinks beyond 1, never train, and scramble the scores outside
            the training interval.
        standardize: feed ``(x_i - mean(x)) / std(x)`` to g1 instead of ``x_i``, with the mean
            and standard deviation of each list. Both are symmetric functions of the list, so
            the network stays permutation equivariant; it becomes invariant to shifting and
            scaling a list, which sorting is. Not in the papers (off by default).
        order_columns: after the random initialization, relabel the output columns (rows of
            ``g2``'s weight and bias) so that their initial slopes ``log_alpha_j(1) -
            log_alpha_j(0)`` increase with ``j``. The columns are exchangeable under the random
            initialization, so this changes no distribution, only which column stands for which
            position: the one consistent with sorting. Without it, two neighbouring columns that
            start in the wrong order can stay swapped for good (see the sorting chapter). Not in
            the papers (off by default).
        generator: CPU generator for the initial weights (instead of the global RNG).
        **head_options: keyword arguments of :class:`~permlib.nn.heads.PermutationHead`
            (``tau``, ``n_iters``, ``noise_factor``, ``n_samples``, ``tol``, ``backward``);
            ``n_samples`` defaults to 10 with noise, the value of Table 3 of the Hungarian-STE
            paper.

    Shape:
        ``x``: ``(B, N)`` scrambled numbers. ``log_alpha(x)``: ``(B, N, N)``.
        ``forward(x)``: ``(S, B, N, N)`` soft (or, for HSTE, hard) permutation matrices, ``S`` =
        ``n_samples``. ``predict(x)``: ``(B, N)`` int64, ``perm[b, i]`` = predicted position of
        ``x[b, i]``.
    """

    def __init__(
        self,
        n: int,
        hidden: int = 32,
        head: Head | PermutationHead = "gumbel_sinkhorn",
        *,
        init: Init = "glorot",
        standardize: bool = False,
        order_columns: bool = False,
        generator: torch.Generator | None = None,
        **head_options: Any,
    ) -> None:
        super().__init__()
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive int, got {n!r}")
        if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1:
            raise ValueError(f"hidden must be a positive int, got {hidden!r}")
        self.n = n
        self.head = make_head(head, **head_options)
        self.g1 = nn.Linear(1, hidden)
        self.g2 = nn.Linear(hidden, n)
        self.init = init
        self.standardize = bool(standardize)
        self.order_columns = bool(order_columns)
        self.reset_parameters(generator=generator)

    @torch.no_grad()
    def reset_parameters(self, *, generator: torch.Generator | None = None) -> None:
        """Initialize g1 and g2 as ``self.init`` says, drawing from ``generator``."""
        init_linear_((self.g1, self.g2), self.init, generator)
        if self.order_columns:
            ends = torch.tensor([[-1.0], [1.0]] if self.standardize else [[0.0], [1.0]],
                                dtype=self.g1.weight.dtype)  # fmt: skip
            scores = self.g2(torch.relu(self.g1(ends)))  # (2, N)
            order = (scores[1] - scores[0]).argsort()
            self.g2.weight.copy_(self.g2.weight[order])
            self.g2.bias.copy_(self.g2.bias[order])

    def log_alpha(self, x: torch.Tensor) -> torch.Tensor:
        """Log-potentials ``(B, N) -> (B, N, N)``; row ``i`` is ``g2(relu(g1(x_i)))``."""
        if not isinstance(x, torch.Tensor) or x.dim() < 1 or x.shape[-1] != self.n:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must be lists of {self.n} numbers (..., {self.n}), got {shape}")
        weight = self.g1.weight
        if x.dtype != weight.dtype or x.device != weight.device:
            raise TypeError(
                f"x is {x.dtype} on {x.device} but the network is {weight.dtype} on "
                f"{weight.device}: convert one (e.g. x.to(net.g1.weight) or net.to(x.dtype))"
            )
        if self.standardize:
            std = x.std(dim=-1, keepdim=True) if self.n > 1 else torch.ones_like(x)
            x = (x - x.mean(dim=-1, keepdim=True)) / std.clamp_min(torch.finfo(x.dtype).tiny)
        return self.g2(torch.relu(self.g1(x.unsqueeze(-1))))

    def forward(self, x: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """Training-time permutation matrices ``(S, B, N, N)`` (noisy if ``noise_factor > 0``)."""
        return self.head(self.log_alpha(x), generator=generator)

    def loss(
        self,
        x: torch.Tensor,
        x_sorted: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """The papers' training loss: mean squared error between ``P^T x`` and the sorted list,
        averaged over lists, positions and noise samples (a scalar)."""
        perms = self(x, generator=generator)
        return (reconstruct(perms, x) - x_sorted).square().mean()

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Test-time permutation: exact matching of ``log_alpha`` (no noise), ``(B, N)``."""
        return self.head.predict(self.log_alpha(x))

    @torch.no_grad()
    def relabel_columns_(self, x: torch.Tensor) -> torch.Tensor:
        """Relabel the output columns so that the matching places the most numbers of ``x``
        right; in place, returns ``order``.

        Column ``j`` of the scores is meant to stand for position ``j``, but training can leave
        two neighbouring columns in the wrong order for good: the numbers of those ranks are
        then swapped in every list, and the reconstruction loss, which pays only the squared
        gap between two neighbours, hardly sees it (see the sorting chapter). Matching is
        equivariant to relabelling the columns, so this counts, over the lists ``x`` and their
        true sorting permutations, how often a number of rank ``r`` is matched to column ``c``,
        and gives each column the rank it is matched with most in total (an exact assignment
        on that ``(N, N)`` count matrix, :func:`permlib.matching.matching`). On ``x`` the
        proportion of misplaced numbers can only go down; the rows of ``g2``'s weight and bias
        are permuted, nothing else changes. Not in the papers.

        Args:
            x: ``(B, N)`` lists drawn like the training lists (fresh ones, not test lists).

        Returns:
            ``order``: ``(N,)`` int64, new column ``j`` is old column ``order[j]`` (the identity
            when nothing moves). ``g2.weight[order.argsort()]`` undoes it.
        """
        if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[0] == 0:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must be a non-empty batch of lists (B, {self.n}), got {shape}")
        pred = self.predict(x)  # (B, N): column matched to number i
        counts = torch.zeros(self.n * self.n, dtype=torch.float64, device=pred.device)
        counts.index_add_(0, (pred * self.n + sorting_permutation(x)).flatten(),
                          torch.ones(pred.numel(), dtype=torch.float64, device=pred.device))
        rank_of = matching(counts.view(self.n, self.n))  # old column c stands for rank_of[c]
        order = rank_of.argsort()
        self.g2.weight.copy_(self.g2.weight[order])
        self.g2.bias.copy_(self.g2.bias[order])
        return order
