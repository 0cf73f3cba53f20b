"""Synthetic data for the number-sorting task of Sinkhorn networks and the Hungarian-STE paper.

A sorting batch holds ``B`` lists of ``N`` numbers drawn i.i.d. from ``U(low, high)`` (the
*scrambled* inputs ``x``), the same numbers in increasing order (``x_sorted``) and the true
permutation in permlib's convention: ``perm[b, i]`` is the position of number ``x[b, i]`` in the
sorted list (its rank), so that ``x_sorted[b, perm[b, i]] = x[b, i]``. With the one-hot
``P = permutation_matrix(perm)`` (rows index input numbers, columns positions) the sorted list is
``P^T x``, the reconstruction used by the papers' loss.

Models are trained on ``U(0, 1)`` and tested on the seven intervals of Table 1 of Mena et al. (2017)
(:data:`TEST_DISTRIBUTIONS`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["TEST_DISTRIBUTIONS", "SortingBatch", "sample_sorting_batch", "sorting_permutation"]

#: The test intervals of Table 1 of Mena et al. (2017 and 2018), in the papers' order:
#: name -> ``(low, high)``.
TEST_DISTRIBUTIONS: dict[str, tuple[float, float]] = {
    "U(0,1)": (0.0, 1.0),
    "U(0,10)": (0.0, 10.0),
    "U(0,1000)": (0.0, 1000.0),
    "U(1,2)": (1.0, 2.0),
    "U(10,11)": (10.0, 11.0),
    "U(100,101)": (100.0, 101.0),
    "U(1000,1001)": (1000.0, 1001.0),
}


@dataclass(frozen=True)
class SortingBatch:
    """A batch of sorting problems.

    Attributes:
        x: ``(B, N)`` the scrambled numbers fed to the network.
        x_sorted: ``(B, N)`` the same numbers in increasing order (the regression target).
        perm: ``(B, N)`` int64, ``perm[b, i]`` = position of ``x[b, i]`` in ``x_sorted[b]``.
        low, high: the interval the numbers were drawn from.
    """

    x: torch.Tensor
    x_sorted: torch.Tensor
    perm: torch.Tensor
    low: float
    high: float

    def __len__(self) -> int:
        return self.x.shape[0]

    @property
    def n(self) -> int:
        """Numbers per list, ``N``."""
        return self.x.shape[-1]


def sorting_permutation(x: torch.Tensor) -> torch.Tensor:
    """True permutation of a batch of lists: ``(..., N) -> (..., N)`` int64 ranks.

    ``perm[..., i]`` is the position of ``x[..., i]`` in the sorted list (ties, which float32 can
    produce on narrow far-away intervals such as ``U(1000, 1001)``, are broken by index).
    """
    order = torch.sort(x, dim=-1, stable=True).indices  # order[j] = input index at position j
    return torch.argsort(order, dim=-1)


def sample_sorting_batch(
    batch_size: int,
    n: int,
    low: float = 0.0,
    high: float = 1.0,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device | None = None,
) -> SortingBatch:
    """Draw ``batch_size`` lists of ``n`` numbers from ``U(low, high)``.

    Numbers are drawn in float64 and then cast to ``dtype``, so every interval gets the full
    resolution of ``dtype`` (in float32 the spacing near 1000 is 6e-5: close numbers may tie).

    Args:
        batch_size: number of lists ``B``.
        n: numbers per list ``N``.
        low, high: the interval, ``low < high``.
        generator: a ``torch.Generator`` for reproducible draws (global RNG if ``None``). The
            numbers are drawn on the generator's device, then moved to ``device``: a CPU
            generator gives the same lists on every device.
        dtype: floating dtype of the returned numbers.
        device: where the returned tensors live (default: the generator's device, else CPU).

    Returns:
        A :class:`SortingBatch` with ``x``, ``x_sorted`` of shape ``(B, N)`` and ``perm``.
    """
    if batch_size < 1 or n < 1:
        raise ValueError(f"batch_size and n must be positive, got {batch_size} and {n}")
    if not high > low:
        raise ValueError(f"need low < high, got low={low}, high={high}")
    draw_on = generator.device if generator is not None else torch.device(device or "cpu")
    u = torch.rand((batch_size, n), generator=generator, dtype=torch.float64, device=draw_on)
    x = (low + (high - low) * u).to(dtype=dtype, device=device or draw_on)
    perm = sorting_permutation(x)
    x_sorted = torch.sort(x, dim=-1, stable=True).values
    return SortingBatch(x=x, x_sorted=x_sorted, perm=perm, low=float(low), high=float(high))
