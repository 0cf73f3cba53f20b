"""Orders of training examples shared by the runners."""

from __future__ import annotations

from functools import lru_cache

import torch

__all__ = ["epoch_index"]


@lru_cache(maxsize=4)
def _order(n: int, seed: int, epoch: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1_000_003 * seed + 7919 * epoch + 17)
    return torch.randperm(n, generator=g)


def epoch_index(step: int, n: int, batch_size: int, seed: int) -> torch.Tensor:
    """The examples of training step ``step``: full batches of a fresh random order of the ``n``
    examples in every pass (the last partial batch of a pass is dropped).

    The order of pass ``e`` depends on ``(seed, e)`` only, so a run resumed at any step draws the
    same batches as an uninterrupted one. Returns ``(batch_size,)`` int64 indices.
    """
    if n < batch_size or batch_size < 1:
        raise ValueError(f"need 1 <= batch_size <= n, got batch_size {batch_size}, n {n}")
    epoch, k = divmod(step, n // batch_size)
    return _order(n, seed, epoch)[k * batch_size : (k + 1) * batch_size]
