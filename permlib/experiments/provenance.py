"""Provenance of an experiment result: command, git commit, versions, machine."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

__all__ = ["REPO_ROOT", "command_line", "git_commit", "provenance"]

#: Root of the source tree (the editable install lives in the repository).
REPO_ROOT = Path(__file__).resolve().parents[2]


def git_commit(root: Path = REPO_ROOT) -> str | None:
    """``HEAD``'s SHA, suffixed ``+dirty`` when tracked files under ``permlib/`` are modified."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", "permlib"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return sha + ("+dirty" if dirty else "")


def _version(name: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:  # noqa: BLE001 - a missing package is reported as None
        return None


def command_line(argv: list[str] | None = None) -> str:
    """The command that is running, with no machine paths: ``python -m package.module args``."""
    argv = list(sys.argv if argv is None else argv)
    script = Path(argv[0]) if argv else Path("python")
    try:
        rel = script.resolve().relative_to(REPO_ROOT).with_suffix("")
    except ValueError:
        return shlex.join(["python", script.name, *argv[1:]])
    parts = [p for p in rel.parts if p != "__main__"]
    return shlex.join(["python", "-m", ".".join(parts), *argv[1:]])


def provenance(seed: int | None = None, mode: str | None = None) -> dict:
    """Everything needed to say where a number came from (JSON-serializable)."""
    import torch

    return {
        "command": command_line(),
        "seed": seed,
        "mode": mode,
        "git_commit": git_commit(),
        "timestamp": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "versions": {
            "python": platform.python_version(),
            **{k: _version(k) for k in ("permlib", "torch", "numpy", "scipy", "lapx")},
        },
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "device": "cpu",
        },
    }
