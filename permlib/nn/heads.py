"""Permutation heads: scores in, (soft) permutation matrices out, separate from any scorer.

A scorer (the sorting network's per-number MLP, a jigsaw CNN, an assembly network) maps its input
to log-potentials ``log_alpha`` of shape ``(B, N, N)`` (rows index items, columns positions); a
:class:`PermutationHead` turns them into the matrices the training loss uses and, at test time,
into exact permutations. Every experiment plugs the same heads.

Kinds (Mena et al., 2018, :cite:`mena2018learning`; the Hungarian straight-through estimator):

* ``"sinkhorn"``: ``S(log_alpha / tau)``, no noise;
* ``"gumbel_sinkhorn"``: ``S((log_alpha + noise_factor * eps) / tau)`` for ``n_samples`` Gumbel
  draws ``eps``; with ``tol`` and ``backward="implicit"``, iterations stop at a tolerance and the
  gradient is the fixed point's;
* ``"hste"``: the exact matching ``M(log_alpha [+ noise])`` forward, the identity backward.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from permlib.gumbel import perturb
from permlib.hste import hungarian_ste
from permlib.matching import matching
from permlib.sinkhorn import Backward, sinkhorn

__all__ = ["HEADS", "Head", "PermutationHead", "make_head", "noise_samples", "reconstruct"]

Head = Literal["sinkhorn", "gumbel_sinkhorn", "hste"]
HEADS: tuple[str, ...] = ("sinkhorn", "gumbel_sinkhorn", "hste")


def reconstruct(perms: torch.Tensor, items: torch.Tensor, item_dims: int = 0) -> torch.Tensor:
    """Items put in the positions a permutation gives them: ``P^T items``.

    ``perms`` has rows indexing items and columns positions, so position ``j`` of the result is
    ``sum_i P[i, j] items[i]``: a hard ``P`` moves items, a soft one mixes them.

    Args:
        perms: ``(..., N, N)`` (soft) permutation matrices.
        items: ``(..., N, *item_shape)`` the items; ``item_dims = len(item_shape)`` trailing
            dimensions per item (0 for numbers, 3 for ``(C, H, W)`` image pieces). Leading
            dimensions broadcast against those of ``perms`` (e.g. Gumbel samples).
        item_dims: number of trailing dimensions of one item.

    Returns:
        ``(..., N, *item_shape)`` the reordered items.
    """
    if not isinstance(item_dims, int) or item_dims < 0:
        raise ValueError(f"item_dims must be a non-negative int, got {item_dims!r}")
    if perms.dim() < 2 or perms.shape[-1] != perms.shape[-2]:
        raise ValueError(f"perms must be (..., N, N), got shape {tuple(perms.shape)}")
    n = perms.shape[-1]
    if items.dim() < item_dims + 1 or items.shape[items.dim() - item_dims - 1] != n:
        raise ValueError(
            f"items must be (..., {n}, *item_shape) with {item_dims} item dims, "
            f"got shape {tuple(items.shape)}"
        )
    if item_dims == 0:
        return (perms.transpose(-1, -2) @ items.unsqueeze(-1)).squeeze(-1)
    item_shape = items.shape[items.dim() - item_dims :]
    flat = items.flatten(start_dim=items.dim() - item_dims)  # (..., N, F)
    out = perms.transpose(-1, -2).to(flat.dtype) @ flat
    return out.unflatten(-1, item_shape)


def noise_samples(noise_factor: float, n_samples: int | None) -> int:
    """A head's draws per input: ``n_samples``, by default 10 with noise and 1 without; a
    ``ValueError`` if it is below 1, or not 1 without noise."""
    if n_samples is None:
        n_samples = 10 if noise_factor > 0 else 1
    if n_samples < 1 or (noise_factor == 0 and n_samples != 1):
        raise ValueError(f"n_samples must be >= 1 (and 1 without noise), got {n_samples}")
    return n_samples


class PermutationHead(nn.Module):
    """Turns log-potentials into permutation matrices for training, and permutations for testing.

    Args:
        kind: ``"sinkhorn"``, ``"gumbel_sinkhorn"`` or ``"hste"`` (see the module docstring).
        tau: Sinkhorn temperature (ignored by ``"hste"``).
        n_iters: Sinkhorn iterations (the cap when ``tol`` is given).
        noise_factor: scale of the Gumbel noise during training; ``None`` picks the kind's
            default (1.0 for ``"gumbel_sinkhorn"``, 0 otherwise). ``"sinkhorn"`` takes no noise.
        n_samples: noise draws per input during training; ``None`` gives 1 without noise and
            10 with noise.
        tol: tolerance of :func:`permlib.sinkhorn` (``None``: fixed unrolling, the papers').
        backward: ``"unroll"`` or ``"implicit"`` (see :func:`permlib.log_sinkhorn`).

    Shape:
        ``forward(log_alpha)``: ``(B, N, N) -> (S, B, N, N)``, ``S = n_samples``: soft (or, for
        ``"hste"``, hard) permutation matrices. ``predict(log_alpha)``: ``(B, N, N) -> (B, N)``
        int64, ``perm[b, i]`` = position of item ``i``, the exact matching without noise.
    """

    def __init__(
        self,
        kind: Head = "gumbel_sinkhorn",
        *,
        tau: float = 1.0,
        n_iters: int = 20,
        noise_factor: float | None = None,
        n_samples: int | None = None,
        tol: float | None = None,
        backward: Backward = "unroll",
    ) -> None:
        super().__init__()
        if kind not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {kind!r}")
        if noise_factor is None:
            noise_factor = 1.0 if kind == "gumbel_sinkhorn" else 0.0
        if not noise_factor >= 0:
            raise ValueError(f"noise_factor must be >= 0, got {noise_factor}")
        if kind == "sinkhorn" and noise_factor != 0:
            raise ValueError("head 'sinkhorn' takes no noise; use head='gumbel_sinkhorn'")
        if kind == "gumbel_sinkhorn" and noise_factor == 0:
            raise ValueError("head 'gumbel_sinkhorn' needs noise_factor > 0; use head='sinkhorn'")
        n_samples = noise_samples(noise_factor, n_samples)
        self.kind = kind
        self.tau = tau
        self.n_iters = n_iters
        self.noise_factor = float(noise_factor)
        self.n_samples = n_samples
        self.tol = tol
        self.backward = backward

    def extra_repr(self) -> str:
        return (
            f"kind={self.kind!r}, tau={self.tau}, n_iters={self.n_iters}, "
            f"noise_factor={self.noise_factor}, n_samples={self.n_samples}, tol={self.tol}, "
            f"backward={self.backward!r}"
        )

    def forward(
        self, log_alpha: torch.Tensor, *, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Training-time permutation matrices ``(S, B, N, N)`` (noisy if ``noise_factor > 0``)."""
        scores = perturb(log_alpha, self.n_samples, self.noise_factor, generator=generator)
        if self.kind == "hste":
            return hungarian_ste(scores)
        return sinkhorn(
            scores, tau=self.tau, n_iters=self.n_iters, tol=self.tol, backward=self.backward
        )

    @torch.no_grad()
    def soft(self, log_alpha: torch.Tensor) -> torch.Tensor:
        """The noiseless soft permutation ``S(log_alpha / tau)``, ``(B, N, N)`` (for display)."""
        return sinkhorn(log_alpha, tau=self.tau, n_iters=self.n_iters)

    @torch.no_grad()
    def predict(self, log_alpha: torch.Tensor) -> torch.Tensor:
        """Test-time permutation: exact matching of ``log_alpha`` (no noise), ``(B, N)``."""
        return matching(log_alpha)


def make_head(head: Head | PermutationHead, **head_options) -> PermutationHead:
    """``head`` itself if it is a :class:`PermutationHead` (then no options may be given), else a
    new head of that kind built with ``head_options``: how every network takes its head."""
    if isinstance(head, PermutationHead):
        if head_options:
            raise ValueError(f"pass either a PermutationHead or its options, got both "
                             f"(options {sorted(head_options)})")  # fmt: skip
        return head
    return PermutationHead(head, **head_options)
