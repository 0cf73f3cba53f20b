"""Lists of multi-digit numbers drawn as MNIST images: the sorting benchmark of NeuralSort.

Grover et al. (ICLR 2019, section 6.1) sort ``n`` numbers, each written as a horizontal strip
of four MNIST digits (a 28 x 112 image); a network sees only the images. Each number's digits
are drawn independently and uniformly from a set of digit images, so a number lies in
``0 .. 10^d - 1`` (leading zeros allowed, as in their code), and lists are drawn with the
numbers' images from the training or the test digits only (train and test digits disjoint).

Conventions: ``perm[b, i]`` is the position of number ``i`` in the ascending order of the
list (ties, about one list in ``10^d / n^2``, broken by index), as in
:func:`permlib.data.sorting.sorting_permutation`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from permlib._checks import check_generator
from permlib.data.sorting import sorting_permutation

__all__ = ["MultiDigitBatch", "sample_multidigit_batch"]


@dataclass(frozen=True)
class MultiDigitBatch:
    """A batch of lists of multi-digit numbers.

    Attributes:
        images: ``(B, n, C, H, d * W)`` float images, one strip of ``d`` digits per number.
        values: ``(B, n)`` int64, the numbers.
        perm: ``(B, n)`` int64, ``perm[b, i]`` = position of number ``i`` (ascending).
        sorted_values: ``(B, n)`` int64, the numbers in ascending order.
    """

    images: torch.Tensor
    values: torch.Tensor
    perm: torch.Tensor
    sorted_values: torch.Tensor

    @property
    def n(self) -> int:
        """Numbers per list."""
        return self.values.shape[-1]


def sample_multidigit_batch(
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int,
    n: int,
    n_digits: int = 4,
    *,
    shift: int = 0,
    generator: torch.Generator | None = None,
    device: str | torch.device | None = None,
) -> MultiDigitBatch:
    """Draw ``batch_size`` lists of ``n`` numbers of ``n_digits`` digits each.

    Args:
        images: ``(M, C, H, W)`` digit images (e.g. :func:`permlib.data.mnist`'s ``train``).
        labels: ``(M,)`` their digits, integers in ``0 .. 9``.
        batch_size: lists ``B`` (0 gives an empty batch).
        n: numbers per list, >= 1.
        n_digits: digits per number ``d`` (4 in Grover et al.'s text), >= 1.
        shift: data augmentation: translate every digit image by its own random offset of
            ``-shift .. shift`` pixels along each axis (zero fill) before the strip is built;
            0 (the default, and Grover et al.'s setting) leaves the images as they are and
            draws nothing more from ``generator``.
        generator: a CPU ``torch.Generator`` for the digit draws (global RNG if ``None``).
        device: where the returned tensors live (default: ``images``' device).

    Returns:
        A :class:`MultiDigitBatch`.
    """
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        raise ValueError("images must be a (M, C, H, W) tensor, got "
                         f"{tuple(images.shape) if isinstance(images, torch.Tensor) else images!r}")
    if not isinstance(labels, torch.Tensor) or labels.shape != images.shape[:1]:
        raise ValueError(f"labels must be a ({images.shape[0]},) tensor of digits, got "
                         f"{tuple(labels.shape) if isinstance(labels, torch.Tensor) else labels!r}")
    if labels.dtype.is_floating_point or labels.numel() and not (
        0 <= int(labels.min()) and int(labels.max()) <= 9
    ):
        raise ValueError("labels must be integer digits 0 .. 9")
    for name, v, low in (("batch_size", batch_size, 0), ("n", n, 1), ("n_digits", n_digits, 1),
                         ("shift", shift, 0)):  # fmt: skip
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise ValueError(f"{name} must be an int >= {low}, got {v!r}")
    if images.shape[0] == 0:
        raise ValueError("images is empty: no digits to draw from")
    check_generator(generator, "cpu")
    device = torch.device(device) if device is not None else images.device
    idx = torch.randint(images.shape[0], (batch_size, n, n_digits), generator=generator)
    digits = labels.cpu()[idx]  # (B, n, d)
    place = 10 ** torch.arange(n_digits - 1, -1, -1)
    values = (digits * place).sum(dim=-1)
    strips = images[idx.to(images.device)]  # (B, n, d, C, H, W)
    if shift:
        strips = _translate(strips, shift, generator)
    strips = strips.permute(0, 1, 3, 4, 2, 5).flatten(-2)  # (B, n, C, H, d * W)
    perm = sorting_permutation(values)
    return MultiDigitBatch(
        images=strips.to(device),
        values=values.to(device),
        perm=perm.to(device),
        sorted_values=values.sort(dim=-1, stable=True).values.to(device),
    )


def _translate(x: torch.Tensor, shift: int, generator: torch.Generator | None) -> torch.Tensor:
    """Each image of ``x`` (``(..., C, H, W)``) moved by its own random offset in
    ``-shift .. shift`` pixels along both axes, zero fill (offsets drawn on the CPU)."""
    *lead, c, h, w = x.shape
    flat = x.reshape(-1, c, h, w)
    k = flat.shape[0]
    offsets = torch.randint(0, 2 * shift + 1, (2, k), generator=generator).to(x.device)
    padded = torch.nn.functional.pad(flat, (shift, shift, shift, shift))
    rows = offsets[0, :, None] + torch.arange(h, device=x.device)  # (K, H)
    cols = offsets[1, :, None] + torch.arange(w, device=x.device)  # (K, W)
    out = padded[torch.arange(k, device=x.device)[:, None, None], :, rows[:, :, None],
                 cols[:, None, :]]  # (K, H, W, C)  # fmt: skip
    return out.permute(0, 3, 1, 2).reshape(*lead, c, h, w)
