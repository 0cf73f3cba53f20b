"""The runners, unchanged, under ``torchrun --nproc-per-node 2`` (gloo on loopback): one cell
with a noise-free head reaches the metrics of the 1-process run on the same global batches, only
rank 0 writes, and the provenance records the world size and the torchrun command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from permlib.experiments import jigsaw, sorting

CASES = {
    "sorting": (sorting, "table5", "method=sinkhorn,n=15,seed=0",
                ["--n-steps", "6", "--n-test", "50"]),
    "jigsaw": (jigsaw, "table4", "dataset=mnist,method=hste,grid=2,seed=0",
               ["--n-steps", "6", "--batch-size", "8", "--n-eval", "40"]),
}  # fmt: skip


def _argv(table: str, cell: str, extra: list[str], folder: Path) -> list[str]:
    return ["--mode", "full", "--table", table, "--cell", cell, *extra, "--no-progress",
            "--results-dir", str(folder / "results"),
            "--checkpoint-dir", str(folder / "checkpoints")]  # fmt: skip


def _numbers(tree) -> list[float]:
    if isinstance(tree, dict):
        return [x for k in sorted(tree) for x in _numbers(tree[k])]
    return [float(tree)]


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_a_runner_under_torchrun_matches_one_process(name, tmp_path):
    module, table, cell, extra = CASES[name]
    one, two = tmp_path / "one", tmp_path / "two"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", module.__name__, *_argv(table, cell, extra, two)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("total wall time") == 1  # rank 0 alone reports
    assert module.main(_argv(table, cell, extra, one)) == 0

    a, b = (json.loads((d / "results" / f"{name}_{table}.json").read_text())["cells"]
            for d in (one, two))  # fmt: skip
    assert len(a) == len(b) == 1
    a, b = a[0], b[0]
    assert a["cell"] == b["cell"] and a["config"] == b["config"]
    diff = max(abs(x - y) for x, y in zip(_numbers(a["metrics"]), _numbers(b["metrics"]),
                                          strict=True))  # fmt: skip
    print(f"\n{name}: max |2-process - 1-process| over the metrics: {diff:.2e}")
    assert diff < 1e-6
    assert b["train"]["final_loss"] == pytest.approx(a["train"]["final_loss"], rel=1e-3)
    prov = b["provenance"]
    assert prov["machine"]["world_size"] == 2 and a["provenance"]["machine"]["world_size"] == 1
    launcher = f"torchrun --nnodes 1 --nproc-per-node 2 -m {module.__name__} "
    assert prov["command"].startswith(launcher)
    # one record, one set of weights (rank 0's, hashed), no checkpoint left behind
    store = module.EXPERIMENT.store(table, two / "results")
    assert store.load_artifact(store.records()[0], "model.pt")
    assert not list((two / "checkpoints").rglob("*.pt"))
    assert not list((two / "results").rglob("*.tmp"))
