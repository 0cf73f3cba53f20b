"""The jigsaw network of Sinkhorn networks (Mena et al., 2017 and 2018; the Hungarian-STE paper).

Every scrambled piece goes through the same small CNN ``g1`` (a 5x5 convolution with padding 2,
ReLU, 2x2 max pooling) and the same affine map ``g2`` to ``N = M**2`` scores, row ``i`` of the
log-potentials ``log_alpha`` (rows index scrambled pieces, columns grid positions). Sharing the
weights across pieces makes the network permutation equivariant: shuffling the input pieces
shuffles the rows of ``log_alpha`` (:cite:`mena2018learning`, section 4.1). A
:class:`~permlib.nn.heads.PermutationHead` turns ``log_alpha`` into the matrices the loss puts
the pieces back with; at test time the exact matching of ``log_alpha`` (no noise) decides.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from permlib.nn.heads import Head, PermutationHead, make_head, reconstruct

__all__ = ["JIGSAW_INITS", "JigsawNetwork"]

JigsawInit = Literal["torch", "kaiming"]
JIGSAW_INITS: tuple[str, ...] = ("torch", "kaiming")


class JigsawNetwork(nn.Module):
    """Sinkhorn network for ``grid x grid`` jigsaw puzzles of ``piece_size``-pixel pieces.

    Args:
        grid: pieces per side ``M``; the network scores ``N = M**2`` positions.
        piece_size: ``(p, q)`` or ``p`` for square pieces, in pixels.
        channels: colour channels of a piece (1 for MNIST, 3 for photos).
        conv_channels: output channels of the convolution (64 in the Hungarian-STE paper).
        kernel_size: odd convolution size (5); the padding keeps the piece size.
        bias: whether ``g2`` has a bias (the Hungarian-STE paper's has none).
        n_heads: output heads sharing ``g1`` (Mena et al.'s assembly network: one per target
            digit); :meth:`log_alpha` then takes the head of each puzzle.
        head: a :class:`~permlib.nn.heads.PermutationHead` or its kind.
        init: ``"torch"`` (PyTorch's defaults) or ``"kaiming"`` (He-normal weights, fan-out, and
            a zero convolution bias, as in the PyTorch code the Hungarian-STE paper builds on).
        generator: CPU generator for the initial weights.
        **head_options: options of :class:`~permlib.nn.heads.PermutationHead`.

    Shape:
        ``scrambled``: ``(B, N, C, p, q)`` pieces; ``head``: ``(B,)`` int64 in ``[0, n_heads)``
        (``None`` with one head). ``log_alpha``: ``(B, N, N)``.
        ``forward``: ``(S, B, N, N)``; ``predict``: ``(B, N)`` int64, ``perm[b, i]`` = predicted
        position of scrambled piece ``i``.
    """

    def __init__(
        self,
        grid: int,
        piece_size: int | tuple[int, int],
        channels: int = 1,
        conv_channels: int = 64,
        *,
        kernel_size: int = 5,
        bias: bool = False,
        n_heads: int = 1,
        head: Head | PermutationHead = "gumbel_sinkhorn",
        init: JigsawInit = "kaiming",
        generator: torch.Generator | None = None,
        **head_options: Any,
    ) -> None:
        super().__init__()
        for name, v in (("grid", grid), ("channels", channels), ("conv_channels", conv_channels),
                        ("kernel_size", kernel_size), ("n_heads", n_heads)):  # fmt: skip
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (padding keeps the size), got {kernel_size}")
        if init not in JIGSAW_INITS:
            raise ValueError(f"init must be one of {JIGSAW_INITS}, got {init!r}")
        p, q = (piece_size, piece_size) if isinstance(piece_size, int) else tuple(piece_size)
        if min(p, q) < 2:
            raise ValueError(f"piece_size must be >= 2 pixels (2x2 pooling), got {piece_size!r}")
        self.grid, self.n, self.piece_size, self.channels = grid, grid * grid, (p, q), channels
        self.head = make_head(head, **head_options)
        self.g1 = nn.Sequential(
            nn.Conv2d(channels, conv_channels, kernel_size, padding=kernel_size // 2),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.n_heads = n_heads
        # every head's scores in one affine map: (F) -> (n_heads * N), head h in columns h*N:
        self.g2 = nn.Linear(conv_channels * (p // 2) * (q // 2), n_heads * self.n, bias=bias)
        self.init = init
        self.reset_parameters(generator=generator)

    @torch.no_grad()
    def reset_parameters(self, *, generator: torch.Generator | None = None) -> None:
        """Initialize the convolution and ``g2`` as ``self.init`` says, from ``generator``."""
        conv = self.g1[0]
        for layer in (conv, self.g2):
            w = layer.weight
            fan_in, fan_out = w[0].numel(), w.shape[0] * w[0, 0].numel()
            if layer is self.g2:
                fan_out = self.n  # per head
            if self.init == "kaiming":
                w.normal_(0.0, (2.0 / fan_out) ** 0.5, generator=generator)
                if layer.bias is not None:
                    layer.bias.zero_()
            else:  # nn.Conv2d / nn.Linear defaults: U(+-1/sqrt(fan_in)) for weights and biases
                bound = 1.0 / fan_in**0.5
                w.uniform_(-bound, bound, generator=generator)
                if layer.bias is not None:
                    layer.bias.uniform_(-bound, bound, generator=generator)

    def log_alpha(self, scrambled: torch.Tensor, head: torch.Tensor | None = None) -> torch.Tensor:
        """Log-potentials ``(B, N, C, p, q) -> (B, N, N)``; row ``i`` scores piece ``i`` (with
        output head ``head[b]`` for puzzle ``b`` when there are several)."""
        shape = (self.n, self.channels, *self.piece_size)
        if not isinstance(scrambled, torch.Tensor) or scrambled.dim() != 5 \
                or tuple(scrambled.shape[1:]) != shape:
            got = tuple(scrambled.shape) if isinstance(scrambled, torch.Tensor) else type(scrambled)
            raise ValueError(f"scrambled must be (B, {', '.join(map(str, shape))}), got {got}")
        w = self.g2.weight
        if scrambled.dtype != w.dtype or scrambled.device != w.device:
            raise TypeError(f"scrambled is {scrambled.dtype} on {scrambled.device} but the network "
                            f"is {w.dtype} on {w.device}")  # fmt: skip
        b = scrambled.shape[0]
        feats = self.g1(scrambled.reshape(b * self.n, *shape[1:]))
        scores = self.g2(feats.reshape(b, self.n, self.g2.in_features))
        if self.n_heads == 1 and head is None:
            return scores
        if not isinstance(head, torch.Tensor) or head.shape != (b,) or head.is_floating_point():
            raise ValueError(f"head must be a ({b},) integer tensor with {self.n_heads} heads, "
                             f"got {head if head is None else tuple(head.shape)}")  # fmt: skip
        if b and not (0 <= int(head.min()) and int(head.max()) < self.n_heads):
            raise ValueError(f"head values must lie in [0, {self.n_heads}), got "
                             f"{int(head.min())} ... {int(head.max())}")  # fmt: skip
        scores = scores.reshape(b, self.n, self.n_heads, self.n)
        index = head.to(scores.device).view(b, 1, 1, 1).expand(b, self.n, 1, self.n)
        return scores.gather(2, index).squeeze(2)

    def forward(
        self,
        scrambled: torch.Tensor,
        head: torch.Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Training-time permutation matrices ``(S, B, N, N)``."""
        return self.head(self.log_alpha(scrambled, head), generator=generator)

    def loss(
        self,
        scrambled: torch.Tensor,
        pieces: torch.Tensor,
        head: torch.Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """The papers' training loss: the mean squared error between the pieces put back by the
        (soft) permutations, ``P^T scrambled``, and the true pieces, averaged over puzzles,
        pixels and noise samples (a scalar)."""
        perms = self(scrambled, head, generator=generator)
        return (reconstruct(perms, scrambled, item_dims=3) - pieces).square().mean()

    @torch.no_grad()
    def predict(self, scrambled: torch.Tensor, head: torch.Tensor | None = None) -> torch.Tensor:
        """Test-time permutation: exact matching of ``log_alpha`` (no noise), ``(B, N)``."""
        return self.head.predict(self.log_alpha(scrambled, head))
