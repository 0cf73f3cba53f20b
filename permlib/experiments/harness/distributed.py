"""The process group as torchrun describes it: rank, world size, the main process, per-rank seeds,
and the few collectives the harness needs.

Outside torchrun (no ``RANK``/``WORLD_SIZE`` in the environment) there is one process of rank 0,
and every function here is a no-op returning the single-process answer, so the harness runs the
same code either way.

Under ``torchrun --nproc-per-node K -m permlib.experiments.<name> ...`` the harness works as
data parallelism over one experiment cell (see :func:`permlib.experiments.harness.fit`):

* :func:`init` starts the process group once (``gloo`` for the CPU, ``nccl`` for CUDA, where
  each process uses the GPU of its ``LOCAL_RANK``); :meth:`Experiment.main` calls it before any
  model is built, :func:`fit` calls it too for the Python API.
* every rank draws the same global batch from the shared ``"data"`` stream and keeps its
  ``1/K`` share (:func:`shard`); its other random streams (the Gumbel noise) are its own
  (:func:`offset_generator`, the seeds :func:`generators` gives rank ``r``);
* gradients are averaged over ranks after every backward pass (:func:`all_reduce_mean`);
* only rank 0 writes results, artifacts and checkpoints; decisions that depend on files or
  clocks (run this cell? checkpoint now?) are rank 0's and are sent to the others
  (:func:`broadcast_object`, :func:`agree`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any, TypeVar

import torch

__all__ = [
    "active",
    "agree",
    "all_gather_object",
    "all_reduce_mean",
    "broadcast_object",
    "broadcast_tensors",
    "device_for_rank",
    "generators",
    "init",
    "is_main",
    "local_rank",
    "offset_generator",
    "rank",
    "shard",
    "shutdown",
    "world_size",
]

T = TypeVar("T")

#: Seed offset between the streams of two consecutive ranks (see :func:`generators`).
RANK_STRIDE = 7919


def rank() -> int:
    """This process's global rank (``$RANK``; 0 outside torchrun)."""
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    """This process's rank on its machine (``$LOCAL_RANK``; 0 outside torchrun)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


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
    Runners build their streams for rank 0 (the default) and :func:`fit` moves the per-rank ones
    (every stream but ``"data"``) to rank ``r``'s seeds under torchrun, see
    :func:`offset_generator`.

    Args:
        seed: the experiment's seed.
        names: one stream per name (e.g. ``("init", "data", "noise", "test")``).
        rank: the process rank (see :func:`rank`).
        device: where the generators live. Data drawn on the CPU and moved to a GPU is the same
            data on every device; a CUDA generator draws different numbers.
    """
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 0:
        raise ValueError(f"rank must be a non-negative int, got {rank!r}")
    return {
        name: torch.Generator(device=device).manual_seed(
            1_000_003 * seed + i + RANK_STRIDE * rank
        )
        for i, name in enumerate(names)
    }


def offset_generator(generator: torch.Generator, rank: int) -> torch.Generator:
    """Reseed ``generator`` in place for ``rank``: seed ``initial_seed() + 7919 * rank``.

    A stream made by :func:`generators` for rank 0 becomes the one it makes for ``rank``. Rank 0
    is left untouched (its position in the stream included); on other ranks the stream restarts
    from its new seed. Returns ``generator``.
    """
    if rank:
        generator.manual_seed(generator.initial_seed() + RANK_STRIDE * rank)
    return generator


def _dist():
    import torch.distributed as dist

    return dist


def active() -> bool:
    """True when a process group of more than one process is running."""
    dist = _dist()
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def device_for_rank(device: str | torch.device) -> torch.device:
    """The device this rank should use: ``cuda`` without an index becomes ``cuda:LOCAL_RANK``
    under torchrun (one GPU per process); anything else is returned as given."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None and world_size() > 1:
        return torch.device("cuda", local_rank())
    return device


def init(device: str | torch.device = "cpu") -> bool:
    """Start the process group under torchrun (once); ``False`` when there is one process.

    The backend is ``nccl`` when ``device`` is a CUDA device (and this process is bound to the
    GPU of its ``LOCAL_RANK``), ``gloo`` otherwise. Call it before building models, so that
    ``.to("cuda")`` lands on this rank's GPU.
    """
    if world_size() <= 1:
        return False
    dist = _dist()
    if not dist.is_available():
        raise RuntimeError(
            f"WORLD_SIZE={world_size()} but this torch build has no torch.distributed"
        )
    if dist.is_initialized():
        return True
    device = device_for_rank(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device)
    else:
        dist.init_process_group("gloo")
    return True


def shutdown() -> None:
    """Destroy the process group if one is running (at the end of a command)."""
    dist = _dist()
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _comm_device() -> torch.device:
    """Where small tensors for collectives live: the GPU for nccl, the CPU for gloo."""
    dist = _dist()
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def broadcast_object(obj: T) -> T:
    """Rank 0's ``obj`` on every rank (``obj`` itself outside a process group). Picklable
    objects only; tensors are best sent on the CPU."""
    if not active():
        return obj
    box = [obj]
    _dist().broadcast_object_list(box, src=0)
    return box[0]


def broadcast_tensors(tensors: Sequence[torch.Tensor]) -> None:
    """Overwrite each tensor, in place, with rank 0's (nothing outside a process group)."""
    if not active():
        return
    with torch.no_grad():
        for t in tensors:
            _dist().broadcast(t.data, src=0)


def all_gather_object(obj: T) -> list[T]:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (``[obj]`` outside a group)."""
    if not active():
        return [obj]
    out: list[Any] = [None] * _dist().get_world_size()
    _dist().all_gather_object(out, obj)
    return out


def agree(flag: bool) -> bool:
    """Rank 0's ``flag`` on every rank (one tiny collective; ``flag`` outside a group)."""
    if not active():
        return flag
    t = torch.tensor([1 if flag and is_main() else 0], device=_comm_device())
    _dist().all_reduce(t)
    return bool(t.item())


def all_reduce_mean(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """The mean over ranks of each tensor (new tensors; the inputs are not modified).

    Tensors are grouped by ``(device, dtype)`` and each group is flattened into one buffer, so a
    model's gradients cost one collective per dtype, not one per parameter. Outside a process
    group the tensors are returned as they are.
    """
    tensors = list(tensors)
    if not active():
        return tensors
    k = _dist().get_world_size()
    groups: dict[tuple, list[int]] = {}
    for i, t in enumerate(tensors):
        groups.setdefault((t.device, t.dtype), []).append(i)
    out: list[torch.Tensor | None] = [None] * len(tensors)
    for index in groups.values():
        flat = torch.cat([tensors[i].reshape(-1) for i in index])
        _dist().all_reduce(flat)
        flat.div_(k)
        offset = 0
        for i in index:
            n = tensors[i].numel()
            out[i] = flat[offset : offset + n].view_as(tensors[i])
            offset += n
    return out  # type: ignore[return-value]


def _batch_size(batch: Any, found: list[int]) -> None:
    if isinstance(batch, torch.Tensor):
        if batch.dim() > 0:
            found.append(batch.shape[0])
    elif dataclasses.is_dataclass(batch) and not isinstance(batch, type):
        for f in dataclasses.fields(batch):
            _batch_size(getattr(batch, f.name), found)
    elif isinstance(batch, dict):
        for v in batch.values():
            _batch_size(v, found)
    elif isinstance(batch, list | tuple):
        for v in batch:
            _batch_size(v, found)


def _slice(batch: Any, lo: int, hi: int) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch[lo:hi] if batch.dim() > 0 else batch
    if dataclasses.is_dataclass(batch) and not isinstance(batch, type):
        return dataclasses.replace(batch, **{f.name: _slice(getattr(batch, f.name), lo, hi)
                                             for f in dataclasses.fields(batch) if f.init})
    if isinstance(batch, dict):
        return type(batch)((k, _slice(v, lo, hi)) for k, v in batch.items())
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # a namedtuple
        return type(batch)(*(_slice(v, lo, hi) for v in batch))
    if isinstance(batch, list | tuple):
        return type(batch)(_slice(v, lo, hi) for v in batch)
    return batch


def shard(batch: T, rank: int, world_size: int) -> T:
    """Rank ``rank``'s share of a global batch: rows ``[r*B/K, (r+1)*B/K)`` of every tensor.

    ``batch`` is a tensor, a dataclass (e.g. :class:`permlib.data.SortingBatch`), a dict, a list
    or a (named) tuple of them, nested at will; every tensor with at least one dimension must
    have the same leading (batch) size ``B``, and ``B`` must be a multiple of ``world_size``
    so that every rank holds as many items (then the mean of the ranks' mean losses is the mean
    loss of the global batch). Zero-dimensional tensors and other values are shared as they are.
    ``world_size == 1`` returns ``batch`` itself.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    if world_size == 1:
        return batch
    sizes: list[int] = []
    _batch_size(batch, sizes)
    if not sizes:
        raise ValueError(f"batch holds no tensor with a batch dimension to split over "
                         f"{world_size} processes: {type(batch).__name__}")  # fmt: skip
    if len(set(sizes)) > 1:
        raise ValueError(f"batch tensors have different leading sizes {sorted(set(sizes))}; "
                         "cannot split it over processes")  # fmt: skip
    b = sizes[0]
    if b % world_size:
        raise ValueError(
            f"a global batch of {b} items cannot be split evenly over {world_size} processes; "
            f"choose a batch size that is a multiple of {world_size} (e.g. --batch-size "
            f"{max(world_size, b - b % world_size)})"
        )
    share = b // world_size
    return _slice(batch, rank * share, (rank + 1) * share)
