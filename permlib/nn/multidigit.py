"""The network of NeuralSort's multi-digit MNIST sorting benchmark (Grover et al., ICLR 2019).

Each number is a strip of ``d`` MNIST digits (``(1, 28, 28 d)``). One CNN, shared by every number
of a list, maps a strip to ``out_features`` values: one score for the score-based relaxations
(NeuralSort, SoftSort, sorting networks), or ``n`` log-potentials, a row of the ``n x n`` matrix
of a Sinkhorn head, as in Grover et al.'s Sinkhorn baselines (which follow Mena et al.).

The CNN of their code (``multi_mnist_cnn.deepnn``): 5 x 5 convolution with 32 channels, ReLU,
2 x 2 max pooling, 5 x 5 convolution with 64 channels, ReLU, 2 x 2 max pooling, a dense layer of
64 units with ReLU, and a dense layer to ``out_features``. Their strips are stacked vertically
(``l * 28 x 28``); ours side by side (``28 x 28 l``): the same network up to a transposition of
every image. Initialization: PyTorch's default (theirs: truncated normal with sd 0.1, biases
0.1), drawn from ``generator``.

``chunk`` runs the network on that many images at a time. On a CPU a whole training batch of
the benchmark (``20 n`` strips, 300 at ``n = 15``) leaves the caches and costs about 1.8 times
as much per image as chunks of 32 (``python -m benchmarks.cnn_chunk``: one run on 2 cores,
2026-12-07, in ``benchmarks/results/cnn_chunk_cpu.json``; at 60 strips it changes little). The
forward pass treats each image alone (bitwise the same outputs on that machine, and equal to
rounding everywhere, as a test checks); the weights' gradients are summed over the images in
another order, which changes the trained weights in their last bits.
"""

from __future__ import annotations

import torch
from torch import nn

from permlib.nn.init import torch_default_init_

__all__ = ["MultiDigitCNN"]


class MultiDigitCNN(nn.Module):
    """Scores (or rows of log-potentials) of multi-digit strips.

    Args:
        n_digits: digits per strip ``d`` (4 in the benchmark).
        out_features: outputs per strip (1: a score; ``n``: a row of log-potentials).
        channels: the two convolutions' channels (32, 64 in Grover et al.'s code).
        hidden: width of the dense layer (64).
        chunk: images per call of the network (``None``: all at once); see the module's note.
        generator: CPU generator for the initial weights (PyTorch's default initialization).

    Shape:
        ``forward(images)``: ``(..., 1, 28, 28 d) -> (..., out_features)``.
    """

    def __init__(self, n_digits: int = 4, out_features: int = 1,
                 channels: tuple[int, int] = (32, 64), hidden: int = 64, *,
                 chunk: int | None = None,
                 generator: torch.Generator | None = None) -> None:  # fmt: skip
        super().__init__()
        sizes = (("n_digits", n_digits), ("out_features", out_features), ("hidden", hidden))
        for name, v in (*sizes, *((("chunk", chunk),) if chunk is not None else ())):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        self.n_digits, self.out_features, self.chunk = n_digits, out_features, chunk
        c1, c2 = channels
        self.features = nn.Sequential(
            nn.Conv2d(1, c1, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        )  # fmt: skip
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(c2 * 7 * 7 * n_digits, hidden), nn.ReLU(),
            nn.Linear(hidden, out_features),
        )  # fmt: skip
        if generator is not None:
            torch_default_init_(self, generator)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        shape = (1, 28, 28 * self.n_digits)
        if not isinstance(images, torch.Tensor) or tuple(images.shape[-3:]) != shape:
            got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"images must be (..., {', '.join(map(str, shape))}), got {got}")
        lead = images.shape[:-3]
        flat = images.reshape(-1, *shape)
        if self.chunk is None or flat.shape[0] <= self.chunk:
            out = self.head(self.features(flat))
        else:
            out = torch.cat([self.head(self.features(c)) for c in flat.split(self.chunk)])
        return out.reshape(*lead, self.out_features)


class MultiDigitSorter(nn.Module):
    """A :class:`MultiDigitCNN` and a head: the whole sorter of the multi-digit benchmark.

    Args:
        n: numbers per list.
        head: a :class:`~permlib.nn.heads.PermutationHead` (the CNN emits ``n`` log-potentials
            per number, a row of the ``n x n`` matrix), a
            :class:`~permlib.nn.ranking.SortRelaxation` (the CNN emits one score per number) or
            a :class:`~permlib.nn.ranking.SoftRank` (one score; ``forward`` returns soft ranks
            ``(S, B, n)``).
        n_digits: digits per number.
        chunk: images per call of the CNN (``None``: all at once; :class:`MultiDigitCNN`).
        generator: CPU generator for the CNN's initial weights.

    Shape:
        ``images``: ``(B, n, 1, 28, 28 d)``. ``logits(images)``: ``(B, n, n)`` log-potentials
        or ``(B, n)`` scores. ``forward(images)``: ``(S, B, n, n)``, rows numbers, columns
        positions. ``predict(images)``: ``(B, n)`` int64 positions (exact matching of the
        log-potentials, or the sort of the scores).
    """

    def __init__(self, n: int, head: nn.Module, n_digits: int = 4, *,
                 chunk: int | None = None,
                 generator: torch.Generator | None = None) -> None:  # fmt: skip
        super().__init__()
        from permlib.nn.heads import PermutationHead
        from permlib.nn.ranking import SoftRank, SortRelaxation

        if not isinstance(head, PermutationHead | SortRelaxation | SoftRank):
            raise TypeError("head must be a PermutationHead, a SortRelaxation or a SoftRank, "
                            f"got {type(head)}")  # fmt: skip
        self.n, self.head = n, head
        self.scores_only = isinstance(head, SortRelaxation | SoftRank)
        self.cnn = MultiDigitCNN(n_digits, 1 if self.scores_only else n, chunk=chunk,
                                 generator=generator)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Scores ``(B, n)`` or log-potentials ``(B, n, n)``."""
        if not isinstance(images, torch.Tensor) or images.dim() != 5 or images.shape[1] != self.n:
            got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"images must be (B, {self.n}, 1, 28, 28 d), got {got}")
        out = self.cnn(images)
        return out.squeeze(-1) if self.scores_only else out

    def forward(self, images: torch.Tensor, *,
                generator: torch.Generator | None = None) -> torch.Tensor:  # fmt: skip
        """Training-time matrices ``(S, B, n, n)``."""
        return self.head(self.logits(images), generator=generator)

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Test-time positions ``(B, n)`` (no noise)."""
        return self.head.predict(self.logits(images))
