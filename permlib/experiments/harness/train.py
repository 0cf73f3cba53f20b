"""One training loop for every experiment: :func:`fit`.

``fit`` draws a batch, computes the loss, steps the optimizer and the learning-rate scheduler
(torch's own), shows progress, and checkpoints every ``checkpoint_every_s`` seconds so that a
killed run resumes to exactly the numbers of an uninterrupted one: the model, optimizer,
scheduler, every random generator and the learning curve are saved, atomically, and loaded with
``torch.load(weights_only=True)``. A checkpoint that cannot be read (cut short, zeroed, someone
else's file) is moved aside with a warning naming it, and training starts over; a checkpoint that
cannot be written (full disk) is reported and training goes on.

:class:`permlib.ConvergenceWarning` issued during training are counted (one warnings context
around the whole loop, not one per step) and reported in the result.

Data parallelism (torchrun)
---------------------------
Under ``torchrun --nproc-per-node K`` (``WORLD_SIZE=K`` in the environment), ``fit`` trains one
model on K processes, and a runner needs no change for it:

* the process group is started once (``gloo`` on the CPU, ``nccl`` on CUDA;
  :func:`~permlib.experiments.harness.distributed.init`), and rank 0's parameters and buffers
  are copied to every rank (rank 0's checkpoint too, when resuming);
* ``batches(step)`` returns the *global* batch, drawn from the stream named ``"data"``, which
  draws the same numbers on every rank; each rank keeps its ``1/K`` share (rows
  ``[r*B/K, (r+1)*B/K)`` of every tensor, :func:`~permlib.experiments.harness.distributed.shard`),
  so the batch size must be a multiple of K;
* every other generator in ``generators`` (the Gumbel noise, ...) is moved to the rank's own
  seed (``initial_seed() + 7919 * rank``, what ``generators(seed, names, rank=r)`` gives), so
  ranks draw independent noise for their shares (``shared_streams`` names the streams to keep
  common);
* after each backward pass the gradients (and the loss, for the learning curve) are averaged
  over ranks, one flattened ``all_reduce`` per dtype. This is DistributedDataParallel's
  arithmetic without its wrapper: runners call their model's own methods (``m.loss(...)``), which
  a ``DistributedDataParallel`` module would hide, and these models are small enough that
  overlapping communication with the backward pass would gain nothing;
* only rank 0 writes checkpoints (with every rank's generator states, so a resumed run draws
  what an uninterrupted one would); the decision to checkpoint is rank 0's and is shared every
  25 steps. A checkpoint belongs to one world size: its identity gains ``world_size``.

With a loss that is a mean over the batch's items (both runners'), the averaged gradient is the
gradient of the global batch's mean loss, so K processes follow the 1-process run on the same data
up to floating-point summation order; only the noise differs (each rank draws its own).
"""

from __future__ import annotations

import contextlib
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from permlib.experiments.harness import distributed
from permlib.experiments.harness.distributed import is_main
from permlib.sinkhorn import ConvergenceWarning

__all__ = [
    "CheckpointWarning",
    "FitResult",
    "cosine_decay",
    "cosine_schedule",
    "fit",
    "learning_curve",
    "loss_trend",
    "torch_threads",
]


class CheckpointWarning(UserWarning):
    """A checkpoint could not be read (moved aside) or written (training goes on)."""


@dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes:
        model: the trained model (in eval mode).
        losses: ``losses[t]`` is the training loss at step ``t`` (every session's steps).
        step: steps done.
        wall_s: training time summed over every session that worked on the run.
        convergence_warnings: :class:`~permlib.ConvergenceWarning` issued during training.
        resumed_from: the step a checkpoint resumed from, or ``None``.
        largest_residual: the largest Sinkhorn residual those warnings reported (``None``
            without warnings): a run whose forward drifted far from convergence stands out
            here, where the count of warnings may not single it out.
    """

    model: torch.nn.Module
    losses: list[float]
    step: int
    wall_s: float
    convergence_warnings: int = 0
    resumed_from: int | None = None
    largest_residual: float | None = None

    def summary(self) -> dict[str, Any]:
        """The JSON-ready ``"train"`` entry of a results record: wall time, steps, final loss,
        the learning curve (:func:`learning_curve`), convergence warnings (count and largest
        residual) and the resumed step."""
        return {
            "wall_s": round(self.wall_s, 2),
            "steps": self.step,
            "final_loss": self.losses[-1] if self.losses else None,
            "loss_curve": learning_curve(self.losses),
            "convergence_warnings": self.convergence_warnings,
            "largest_residual": self.largest_residual,
            "resumed_from_step": self.resumed_from,
        }


def _load_checkpoint(path: Path, device: torch.device) -> dict | None:
    """The checkpoint's state, or ``None`` (after moving an unreadable file aside)."""
    if not path.exists():
        return None
    try:
        state = torch.load(path, weights_only=True, map_location=device)
        if not isinstance(state, dict) or "step" not in state:
            raise ValueError("not a permlib training checkpoint")
        return state
    except Exception as exc:  # noqa: BLE001 - any unreadable file is handled the same way
        aside = path.with_name(path.name + ".corrupt")
        os.replace(path, aside)
        warnings.warn(
            f"checkpoint {path} could not be read ({type(exc).__name__}: {exc}); moved it to "
            f"{aside.name} and starting this run from step 0",
            CheckpointWarning,
            stacklevel=3,
        )
        return None


def _save_checkpoint(path: Path, state: dict) -> bool:
    """Atomic save; on failure (e.g. a full disk) warn and return ``False``."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(state, tmp)
        os.replace(tmp, path)
        return True
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        warnings.warn(
            f"could not write checkpoint {path} ({exc}); training goes on without it",
            CheckpointWarning,
            stacklevel=3,
        )
        return False


def fit(
    model: torch.nn.Module,
    loss_fn: Callable[[torch.nn.Module, Any], torch.Tensor],
    batches: Callable[[int], Any],
    optimizer: torch.optim.Optimizer,
    n_steps: int,
    *,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    generators: Mapping[str, torch.Generator] | None = None,
    device: str | torch.device = "cpu",
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every_s: float = 30.0,
    identity: Mapping[str, Any] | None = None,
    until: int | None = None,
    progress: bool = True,
    desc: str = "train",
    on_step: Callable[[int], None] | None = None,
    shared_streams: Sequence[str] | None = None,
) -> FitResult:
    """Train ``model`` for ``n_steps`` optimizer steps; resumable.

    Args:
        model: the network (already on ``device``).
        loss_fn: ``loss_fn(model, batch) -> scalar loss``.
        batches: ``batches(step) -> batch`` (draw a fresh batch, or return a fixed one).
        optimizer: over ``model``'s parameters.
        n_steps: total steps of the run.
        scheduler: a torch LR scheduler, stepped once after every optimizer step.
        generators: every random stream the run draws from (data, noise, ...); their states are
            checkpointed.
        device: where the model lives (checkpoints are loaded there).
        checkpoint: a file to save to every ``checkpoint_every_s`` seconds and at the end. If it
            exists and was written for the same ``identity``, training resumes from it; a
            checkpoint of another identity is ignored (and overwritten).
        identity: what makes two runs the same run (the config as a dict).
        until: stop after this step (default ``n_steps``), e.g. to test resuming.
        progress: show a tqdm bar.
        desc: the bar's label.
        on_step: called with the step index before each step (e.g. to anneal a temperature or
            a noise scale); it must depend on the step only, so a resumed run matches.
        shared_streams: under torchrun, the generators that draw the same numbers on every rank
            (the global batch); the others are reseeded per rank (see the module docstring).
            Default: ``("data",)`` (a runner without a ``"data"`` stream then draws a global
            batch per rank and keeps its share of it: valid, but not the 1-process run). Names
            given here must be keys of ``generators``. Ignored in a single process.

    Returns:
        A :class:`FitResult`.
    """
    if n_steps < 0:
        raise ValueError(f"n_steps must be >= 0, got {n_steps}")
    parallel = distributed.init(device)
    device = distributed.device_for_rank(device) if parallel else torch.device(device)
    r, k = (distributed.rank(), distributed.world_size()) if parallel else (0, 1)
    gens = dict(generators or {})
    if shared_streams is None:
        shared_streams = ("data",)
    elif set(shared_streams) - set(gens):
        raise ValueError(f"shared_streams names {sorted(set(shared_streams) - set(gens))}, not "
                         f"among the generators {sorted(gens)}")  # fmt: skip
    own = [name for name in gens if name not in shared_streams]  # per-rank streams
    for name in own if parallel else ():
        distributed.offset_generator(gens[name], r)
    identity = dict(identity or {})
    if parallel:
        identity["world_size"] = k
    losses: list[float] = []
    pending: list[torch.Tensor] = []  # losses not yet copied to the host (one sync per flush)
    step, wall, n_warn, resumed, worst = 0, 0.0, 0, None, None
    path = Path(checkpoint) if checkpoint is not None else None
    state = None
    if path is not None and is_main():
        state = _load_checkpoint(path, torch.device("cpu") if parallel else device)
    if parallel:
        state = distributed.broadcast_object(state)  # rank 0 reads (and moves aside) the file
    if state is not None and state.get("identity") == identity:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state.get("scheduler") is not None:
            scheduler.load_state_dict(state["scheduler"])
        for name, g in gens.items():
            g.set_state(state["generators"][name].cpu())
        if parallel:
            for name, st in state["rank_generators"][r].items():
                gens[name].set_state(st.cpu())
        losses, step = [float(v) for v in state["losses"]], int(state["step"])
        wall, n_warn, resumed = float(state["wall_s"]), int(state["convergence_warnings"]), step
        worst = state.get("largest_residual")  # absent from checkpoints written before it
    if parallel:  # every rank starts from rank 0's weights
        distributed.broadcast_tensors([*model.parameters(), *model.buffers()])

    def flush() -> None:
        if pending:
            losses.extend(torch.stack(pending).tolist())
            pending.clear()

    def snapshot() -> dict:
        """The checkpoint's content (every rank takes part: per-rank generators are gathered)."""
        flush()
        out = {
            "identity": identity,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": None if scheduler is None else scheduler.state_dict(),
            "generators": {k: g.get_state() for k, g in gens.items()},
            "losses": torch.tensor(losses, dtype=torch.float64),
            "step": step,
            "wall_s": wall,
            "convergence_warnings": n_warn,
            "largest_residual": worst,
        }
        if parallel:
            out["rank_generators"] = distributed.all_gather_object(
                {name: gens[name].get_state() for name in own})
        return out

    params = [p for p in model.parameters() if p.requires_grad]

    def average_gradients(loss: torch.Tensor) -> torch.Tensor:
        """Mean gradients over ranks (a parameter without a gradient on every rank keeps
        none); returns the mean loss."""
        has = torch.tensor([p.grad is not None for p in params], dtype=loss.dtype,
                           device=loss.device)  # fmt: skip
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        mean_loss, has, *grads = distributed.all_reduce_mean([loss.detach().reshape(1), has,
                                                              *grads])  # fmt: skip
        for p, g, h in zip(params, grads, has.tolist(), strict=True):
            p.grad = g if h > 0 else None
        return mean_loss[0]

    stop = n_steps if until is None else min(until, n_steps)
    saving = path is not None
    bar = tqdm(total=n_steps, initial=step, disable=not progress or not is_main(), leave=False,
               desc=desc, mininterval=2.0)  # fmt: skip
    t_start = t_saved = time.perf_counter()
    model.train()
    original_show = warnings.showwarning

    def count(message, category, *args, **kwargs):  # noqa: ANN001 - warnings' hook signature
        nonlocal n_warn, worst
        if issubclass(category, ConvergenceWarning):
            n_warn += 1
            residual = getattr(message, "residual", None)
            if residual is not None and (worst is None or residual > worst):
                worst = float(residual)
        else:
            original_show(message, category, *args, **kwargs)

    def save() -> None:
        nonlocal wall, t_start, t_saved
        now = time.perf_counter()
        wall += now - t_start
        t_start = t_saved = now
        content = snapshot()
        if is_main():
            _save_checkpoint(path, content)

    with bar, warnings.catch_warnings():
        warnings.simplefilter("always", ConvergenceWarning)
        warnings.showwarning = count
        while step < stop:
            if on_step is not None:
                on_step(step)
            batch = batches(step)
            if parallel:
                batch = distributed.shard(batch, r, k)
            loss = loss_fn(model, batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if parallel:
                loss = average_gradients(loss)
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            pending.append(loss.detach())
            step += 1
            bar.update(1)
            if step % 25 == 0:
                flush()
                bar.set_postfix(loss=f"{losses[-1]:.2e}")
            if not saving:
                continue
            if parallel:  # rank 0's clock decides, every 25 steps (a collective)
                if step % 25 == 0 and distributed.agree(
                        time.perf_counter() - t_saved > checkpoint_every_s):  # fmt: skip
                    save()
            elif time.perf_counter() - t_saved > checkpoint_every_s:
                save()
    flush()
    if saving:
        save()
    else:
        wall += time.perf_counter() - t_start
    model.eval()
    return FitResult(model, losses, step, wall, n_warn, resumed, worst)


def cosine_decay(step: int, n_steps: int) -> float:
    """The factor ``(1 + cos(pi * step / n_steps)) / 2``: 1 at step 0, 0 at ``n_steps``."""
    return 0.5 * (1 + math.cos(math.pi * step / n_steps))


def cosine_schedule(optimizer: torch.optim.Optimizer,
                    n_steps: int) -> torch.optim.lr_scheduler.LambdaLR:  # fmt: skip
    """Torch's ``LambdaLR`` decaying the learning rate from its value to 0 over ``n_steps``
    (:func:`cosine_decay`)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: cosine_decay(t, n_steps))


def learning_curve(losses: Sequence[float], points: int = 100) -> dict[str, list]:
    """A learning curve thinned to about ``points`` points: ``{"step": [...], "loss": [...]}``,
    the mean loss over each window of steps and the step that ends it."""
    w = max(1, math.ceil(len(losses) / points))
    steps, vals = [], []
    for i in range(0, len(losses), w):
        chunk = losses[i : i + w]
        steps.append(i + len(chunk))
        vals.append(sum(chunk) / len(chunk))
    return {"step": steps, "loss": vals}


def loss_trend(curve: Mapping[str, Sequence[float]], tail: float = 0.2) -> float:
    """How much the loss still fell at the end of training: ``1 - mean(last) / mean(before)``,
    where ``last`` is the final ``tail`` of a :func:`learning_curve`'s points and ``before`` the
    ``tail`` just before it. Positive: the loss was still falling when training stopped (0.05:
    by 5 % over the last fifth); near 0: it had levelled off.
    """
    if not 0 < tail <= 0.5:
        raise ValueError(f"tail must be in (0, 0.5], got {tail!r}")
    loss = list(curve["loss"])
    k = int(len(loss) * tail)
    if k < 1:
        raise ValueError(f"curve has {len(loss)} points, too few for tail={tail}")
    last, before = loss[-k:], loss[-2 * k : -k]
    return 1.0 - (sum(last) / k) / (sum(before) / k)


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Use ``n`` intra-op threads inside the block (``None`` or 0: leave torch's setting)."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
