"""Provenance of a recorded result: command, seed, commit, versions, machine, device, wall time."""

from __future__ import annotations

import datetime as _dt
import functools
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

import torch

__all__ = ["code_commit", "command_line", "device_name", "git_commit", "provenance"]

_PACKAGES = ("permlib", "torch", "numpy", "scipy", "lapx")


def git_commit(path: str | os.PathLike | None = None) -> str | None:
    """The commit of the code that runs, ``+dirty`` when tracked files of its package changed.

    Git is asked about the folder ``path`` (default: the folder holding :mod:`permlib`, so an
    editable install reports its checkout and a wheel install reports ``None``).
    """
    folder = Path(path) if path is not None else Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", "."],
            cwd=folder, capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return None
    return sha + ("+dirty" if dirty else "")


@functools.cache
def code_commit() -> str | None:
    """:func:`git_commit` of the running code, read once per process and kept.

    A long run's results name the commit it started from, not one made while it ran (the code
    it runs was imported at the start). Runners read it when their grid starts
    (:func:`~permlib.experiments.harness.run_grid`); ``code_commit.cache_clear()`` forgets it.
    """
    return git_commit()


def _main_module() -> str | None:
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    name = getattr(spec, "name", None)
    if not name:
        return None
    return name.removesuffix(".__main__")


def command_line(argv: list[str] | None = None, module: str | None = None) -> str:
    """The running command without machine paths.

    ``python -m package.module args`` when the program was started with ``-m`` (or ``module`` is
    given), else ``python <script name> args``; absolute paths among the arguments are shortened
    to their last component. Under torchrun (``$TORCHELASTIC_RUN_ID`` set) ``python`` becomes
    ``torchrun --nnodes M --nproc-per-node K`` (from ``$GROUP_WORLD_SIZE`` and
    ``$LOCAL_WORLD_SIZE``).
    """
    from_sys = argv is None
    argv = list(sys.argv if argv is None else argv)
    module = module if module is not None else (_main_module() if from_sys else None)
    args = [Path(a).name if os.path.isabs(a) else a for a in argv[1:]]
    launcher = ["python"]
    if os.environ.get("TORCHELASTIC_RUN_ID"):
        launcher = ["torchrun", "--nnodes", os.environ.get("GROUP_WORLD_SIZE", "1"),
                    "--nproc-per-node", os.environ.get("LOCAL_WORLD_SIZE", "1")]  # fmt: skip
    if module:
        return shlex.join([*launcher, "-m", module, *args])
    script = Path(argv[0]).name if argv else "python"
    return shlex.join([*launcher, script, *args])


def device_name(device: str | torch.device = "cpu") -> str:
    """A readable name of ``device``: ``"cpu"`` or ``"cuda:0 (NVIDIA H100 ...)"``."""
    device = torch.device(device)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return device.type


def _version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def provenance(
    seed: int | None = None,
    mode: str | None = None,
    *,
    device: str | torch.device = "cpu",
    world_size: int | None = None,
    wall_s: float | None = None,
    artifacts: dict[str, dict] | None = None,
) -> dict:
    """Everything needed to say where a number came from (JSON-serializable).

    Args:
        seed: the seed of the run.
        mode: the runner's mode (``"ci"``, ``"full"``).
        device: where it ran.
        world_size: processes that shared the work (default: torchrun's ``$WORLD_SIZE``, 1
            outside torchrun).
        wall_s: wall time of the run, if known.
        artifacts: ``name -> {"path", "sha256"}`` of files the result depends on or produced.
    """
    if world_size is None:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
    out = {
        "command": command_line(),
        "seed": seed,
        "mode": mode,
        "git_commit": code_commit(),
        "timestamp": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "versions": {"python": platform.python_version(), **{k: _version(k) for k in _PACKAGES}},
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "device": device_name(device),
            "world_size": world_size,
        },
    }
    if wall_s is not None:
        out["wall_s"] = round(float(wall_s), 2)
    if artifacts:
        out["artifacts"] = artifacts
    return out
