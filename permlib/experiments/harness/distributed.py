"""The process group as torchrun describes it: rank, world size, the main process, per-rank seeds.

Outside torchrun (no ``RANK``/``WORLD_SIZE`` in the environment) there is one process of rank 0.
"""

from __future__ import annotations

import os

import torch

__all__ = ["generators", "is_main", "rank", "world_size"]


def rank() -> int:
    """This process's global rank (``$RANK``; 0 outside torchrun)."""
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    """Number of processes (``$WORLD_SIZE``; 1 outside torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main() -> bool:
    """True on the process that writes results and checkpoints (rank 0)."""
    return rank() == 0


def generators(
    seed: int, names: tuple[str, ...], *, rank: int = 0, device: str | torch.device = "cpu"
) -> dict[str, torch.Generator]:
    """Independent, reproducible random streams, one per name, distinct on every rank.

    Stream ``i`` of ``names`` on rank ``r`` is seeded with ``1_000_003 * seed + i + 7919 * r``:
    rank 0 gets the seeds the sorting runner has always used, so recorded results stay valid.

    Args:
        seed: the experiment's seed.
        names: one stream per name (e.g. ``("init", "data", "noise", "test")``).
        rank: the process rank (see :func:`rank`).
        device: where the generators live. Data drawn on the CPU and moved to a GPU is the same
            data on every device; a CUDA generator draws different numbers.
    """
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    return {
        name: torch.Generator(device=device).manual_seed(1_000_003 * seed + i + 7919 * rank)
        for i, name in enumerate(names)
    }
