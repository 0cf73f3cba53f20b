"""Jigsaw puzzles: images cut into an ``M x M`` grid of pieces, scrambled, with their permutation.

Conventions (the same as the sorting task, so one set of metrics and heads serves both):

* pieces are numbered row-major: piece ``k`` of an image is grid cell ``(k // M, k % M)``;
* a scrambled puzzle lists the pieces in a random order, ``scrambled[i] = pieces[order[i]]``;
  the label is ``perm[i] = order[i]``, the *position* (grid cell) of scrambled piece ``i``
  (permlib's ``perm`` convention: item -> position). Putting the pieces back is
  ``reconstruct(permutation_matrix(perm), scrambled, item_dims=3) == pieces``.

Two ways of making an image tile, both published for MNIST:

* ``"crop"`` (the PyTorch code the Hungarian-STE paper builds on): pieces of ``floor(H / M)``
  pixels cut from the top-left corner, the rest of the image dropped (MNIST 6x6: 4-pixel pieces,
  the last 4 rows and columns lost);
* ``"resize"`` (Mena et al.'s code): the image is first resized (bilinear) to a side that ``M``
  divides, given per grid size by :data:`RESIZE_SIDES` for 28-pixel MNIST (28, 27, 28, 30, 30 for
  2x2 ... 6x6: pieces of 14, 9, 7, 6, 5 pixels); other sizes round the side to the nearest
  multiple of ``M``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

__all__ = [
    "RESIZE_SIDES",
    "TILINGS",
    "JigsawBatch",
    "from_pieces",
    "sample_jigsaw_batch",
    "scramble",
    "tile",
    "to_pieces",
]

Tiling = Literal["crop", "resize"]
TILINGS: tuple[str, ...] = ("crop", "resize")

#: Side (pixels) a 28-pixel MNIST digit is resized to for each grid size ``M`` in Mena et al.'s
#: code (``"resize"`` tiling).
RESIZE_SIDES: dict[int, int] = {2: 28, 3: 27, 4: 28, 5: 30, 6: 30}


def _check_images(images: torch.Tensor, name: str = "images") -> None:
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"{name} must be a (B, C, H, W) tensor, got {shape}")
    if not images.is_floating_point():
        raise TypeError(f"{name} must be floating point (pixels in [0, 1]), got {images.dtype}")


def _check_grid(grid: int) -> None:
    if isinstance(grid, bool) or not isinstance(grid, int) or grid < 1:
        raise ValueError(f"grid must be a positive int (pieces per side), got {grid!r}")


def tile(images: torch.Tensor, grid: int, tiling: Tiling = "crop") -> torch.Tensor:
    """The part of ``images`` the ``grid x grid`` pieces cover: ``(B, C, H, W) -> (B, C, S, S')``.

    ``"crop"`` keeps the top-left ``M * floor(H / M)`` by ``M * floor(W / M)`` pixels;
    ``"resize"`` resizes bilinearly to the sides of :data:`RESIZE_SIDES` (28-pixel images) or
    the nearest multiple of ``M``. Raises ``ValueError`` when a piece would be empty.
    """
    _check_images(images)
    _check_grid(grid)
    if tiling not in TILINGS:
        raise ValueError(f"tiling must be one of {TILINGS}, got {tiling!r}")
    h, w = images.shape[-2:]
    if h < grid or w < grid:
        raise ValueError(f"a {grid}x{grid} grid does not fit {h}x{w} images: pieces would be empty")
    if tiling == "crop":
        return images[..., : grid * (h // grid), : grid * (w // grid)]
    if h == w == 28 and grid in RESIZE_SIDES:
        side = (RESIZE_SIDES[grid], RESIZE_SIDES[grid])
    else:
        side = tuple(max(grid, grid * round(s / grid)) for s in (h, w))
    if side == (h, w):
        return images
    return F.interpolate(images, size=side, mode="bilinear", align_corners=False).clamp(0, 1)


def to_pieces(images: torch.Tensor, grid: int) -> torch.Tensor:
    """Cut ``(B, C, H, W)`` images (``grid`` divides ``H`` and ``W``; see :func:`tile`) into
    ``(B, grid**2, C, H / grid, W / grid)`` pieces, row-major."""
    _check_images(images)
    _check_grid(grid)
    b, c, h, w = images.shape
    if h % grid or w % grid:
        raise ValueError(f"grid {grid} does not divide the {h}x{w} images; tile() them first")
    p, q = h // grid, w // grid
    x = images.reshape(b, c, grid, p, grid, q).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, grid * grid, c, p, q)


def from_pieces(pieces: torch.Tensor, grid: int) -> torch.Tensor:
    """The inverse of :func:`to_pieces`: ``(..., grid**2, C, p, q) -> (..., C, grid*p, grid*q)``."""
    _check_grid(grid)
    if pieces.dim() < 4 or pieces.shape[-4] != grid * grid:
        raise ValueError(f"pieces must be (..., {grid * grid}, C, p, q), got {tuple(pieces.shape)}")
    *lead, _, c, p, q = pieces.shape
    x = pieces.reshape(*lead, grid, grid, c, p, q)
    nd = len(lead)
    x = x.permute(*range(nd), nd + 2, nd, nd + 3, nd + 1, nd + 4)
    return x.reshape(*lead, c, grid * p, grid * q)


def scramble(
    pieces: torch.Tensor, *, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Shuffle each puzzle's pieces independently.

    Args:
        pieces: ``(B, N, C, p, q)`` pieces in their true (row-major) order.
        generator: draws the orders (on the pieces' device).

    Returns:
        ``(scrambled, perm)``: ``scrambled[b, i] = pieces[b, perm[b, i]]``, so ``perm[b, i]`` is
        the true position of scrambled piece ``i`` (``(B, N)`` int64).
    """
    if pieces.dim() != 5:
        raise ValueError(f"pieces must be (B, N, C, p, q), got {tuple(pieces.shape)}")
    b, n = pieces.shape[:2]
    draw_on = generator.device if generator is not None else pieces.device
    perm = torch.rand(b, n, generator=generator, device=draw_on).argsort(dim=-1).to(pieces.device)
    index = perm.view(b, n, 1, 1, 1).expand_as(pieces)
    return pieces.gather(1, index), perm


@dataclass(frozen=True)
class JigsawBatch:
    """A batch of puzzles.

    Attributes:
        pieces: ``(B, N, C, p, q)`` pieces in their true order (the target of the loss).
        scrambled: ``(B, N, C, p, q)`` the network's input.
        perm: ``(B, N)`` int64, ``perm[b, i]`` = true position of ``scrambled[b, i]``.
        grid: pieces per side ``M`` (``N = M**2``).
    """

    pieces: torch.Tensor
    scrambled: torch.Tensor
    perm: torch.Tensor
    grid: int

    def __len__(self) -> int:
        return self.pieces.shape[0]


def sample_jigsaw_batch(
    images: torch.Tensor,
    grid: int,
    batch_size: int | None = None,
    *,
    tiling: Tiling = "crop",
    generator: torch.Generator | None = None,
    index: torch.Tensor | None = None,
    device: str | torch.device | None = None,
) -> JigsawBatch:
    """Puzzles from ``images`` ``(B0, C, H, W)``: ``batch_size`` images drawn with replacement
    (or the rows ``index``, or all of them when both are ``None``), tiled, cut and scrambled.

    ``generator`` draws the images and the orders; ``device`` is where the batch goes (default:
    the images' device).
    """
    _check_images(images)
    if index is None:
        if batch_size is None:
            index = torch.arange(images.shape[0])
        else:
            if batch_size < 0:
                raise ValueError(f"batch_size must be >= 0, got {batch_size}")
            index = torch.randint(images.shape[0], (batch_size,), generator=generator,
                                  device=generator.device if generator is not None else "cpu")
    x = images[index.to(images.device)]
    if device is not None:
        x = x.to(device)
    pieces = to_pieces(tile(x, grid, tiling), grid)
    scrambled, perm = scramble(pieces, generator=generator)
    return JigsawBatch(pieces, scrambled, perm, grid)
