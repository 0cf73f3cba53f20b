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

from permlib.experiments.harness.distributed import is_main
from permlib.sinkhorn import ConvergenceWarning

__all__ = ["CheckpointWarning", "FitResult", "fit", "learning_curve", "torch_threads"]


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
    """

    model: torch.nn.Module
    losses: list[float]
    step: int
    wall_s: float
    convergence_warnings: int = 0
    resumed_from: int | None = None


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

    Returns:
        A :class:`FitResult`.
    """
    if n_steps < 0:
        raise ValueError(f"n_steps must be >= 0, got {n_steps}")
    device = torch.device(device)
    gens = dict(generators or {})
    identity = dict(identity or {})
    losses: list[float] = []
    pending: list[torch.Tensor] = []  # losses not yet copied to the host (one sync per flush)
    step, wall, n_warn, resumed = 0, 0.0, 0, None
    path = Path(checkpoint) if checkpoint is not None else None
    state = _load_checkpoint(path, device) if path is not None else None
    if state is not None and state.get("identity") == identity:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state.get("scheduler") is not None:
            scheduler.load_state_dict(state["scheduler"])
        for name, g in gens.items():
            g.set_state(state["generators"][name].cpu())
        losses, step = [float(v) for v in state["losses"]], int(state["step"])
        wall, n_warn, resumed = float(state["wall_s"]), int(state["convergence_warnings"]), step

    def flush() -> None:
        if pending:
            losses.extend(torch.stack(pending).tolist())
            pending.clear()

    def snapshot() -> dict:
        flush()
        return {
            "identity": identity,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": None if scheduler is None else scheduler.state_dict(),
            "generators": {k: g.get_state() for k, g in gens.items()},
            "losses": torch.tensor(losses, dtype=torch.float64),
            "step": step,
            "wall_s": wall,
            "convergence_warnings": n_warn,
        }

    stop = n_steps if until is None else min(until, n_steps)
    saving = path is not None and is_main()
    bar = tqdm(total=n_steps, initial=step, disable=not progress, leave=False, desc=desc,
               mininterval=2.0)  # fmt: skip
    t_start = t_saved = time.perf_counter()
    model.train()
    original_show = warnings.showwarning

    def count(message, category, *args, **kwargs):  # noqa: ANN001 - warnings' hook signature
        nonlocal n_warn
        if issubclass(category, ConvergenceWarning):
            n_warn += 1
        else:
            original_show(message, category, *args, **kwargs)

    with bar, warnings.catch_warnings():
        warnings.simplefilter("always", ConvergenceWarning)
        warnings.showwarning = count
        while step < stop:
            if on_step is not None:
                on_step(step)
            batch = batches(step)
            loss = loss_fn(model, batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            pending.append(loss.detach())
            step += 1
            bar.update(1)
            if step % 25 == 0:
                flush()
                bar.set_postfix(loss=f"{losses[-1]:.2e}")
            now = time.perf_counter()
            if saving and now - t_saved > checkpoint_every_s:
                wall += now - t_start
                t_start = t_saved = now
                _save_checkpoint(path, snapshot())
    flush()
    wall += time.perf_counter() - t_start
    if saving:
        _save_checkpoint(path, snapshot())
    model.eval()
    return FitResult(model, losses, step, wall, n_warn, resumed)


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
