"""benchmarks/gpu_check.sh where it can be checked without a GPU: it parses, explains itself, and
on a machine without CUDA stops at once with a clear message, writing nothing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.sh"
pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def run(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=120, env=os.environ | env)  # fmt: skip


def test_the_script_parses_and_prints_its_usage():
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0
    out = run("--help")
    assert out.returncode == 0
    for word in ("pytest -m gpu", "B = 1024", "results_<device>", "--download-wheels",
                 "Exit status"):
        assert word in out.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_without_cuda_it_exits_early_and_writes_nothing(tmp_path):
    out = run(str(tmp_path / "gc"), PYTHON=sys.executable)
    assert out.returncode == 3
    assert "no CUDA device here" in out.stderr and "nothing was run" in out.stderr
    assert not (tmp_path / "gc").exists()


def test_without_torch_it_says_which_interpreter(tmp_path):
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\nexit 1\n")
    fake.chmod(0o755)
    out = run(str(tmp_path / "gc"), PYTHON=str(fake))
    assert out.returncode == 3 and f"{fake} cannot import torch" in out.stderr
    assert not (tmp_path / "gc").exists()
