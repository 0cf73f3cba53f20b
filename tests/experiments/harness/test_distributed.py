"""Data parallelism in the harness: batch shards, per-rank streams, and two gloo processes on
loopback that must train what one process trains on the same global batches."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import pytest
import torch

from permlib.data import sample_sorting_batch
from permlib.experiments.harness import (
    command_line,
    distributed,
    fit,
    generators,
    provenance,
)
from tests.experiments.harness import ddp_worker

WORKER = Path(ddp_worker.__file__)
# the module, which the package's function of the same name hides
provenance_module = sys.modules["permlib.experiments.harness.provenance"]


# --------------------------------------------------------------------------- shards


def test_shards_of_a_dataclass_batch_concatenate_to_the_batch():
    batch = sample_sorting_batch(6, 4, generator=torch.Generator().manual_seed(0))
    parts = [distributed.shard(batch, r, 3) for r in range(3)]
    assert [len(p) for p in parts] == [2, 2, 2]
    for field in ("x", "x_sorted", "perm"):
        assert torch.equal(torch.cat([getattr(p, field) for p in parts]), getattr(batch, field))
    assert all(p.low == batch.low and p.high == batch.high for p in parts)
    assert distributed.shard(batch, 0, 1) is batch


def test_shards_of_nested_containers():
    Pair = namedtuple("Pair", "a b")
    x = torch.arange(8.0).reshape(4, 2)
    batch = {"x": x, "pair": Pair(x[:, 0], [x[:, 1]]), "scale": torch.tensor(2.0), "name": "n"}
    s = distributed.shard(batch, 1, 2)
    assert torch.equal(s["x"], x[2:]) and torch.equal(s["pair"].a, x[2:, 0])
    assert torch.equal(s["pair"].b[0], x[2:, 1]) and isinstance(s["pair"], Pair)
    assert s["scale"].item() == 2.0 and s["name"] == "n"


@pytest.mark.parametrize(
    "batch, rank, world, match",
    [
        (torch.zeros(5, 2), 0, 2, "cannot be split evenly over 2"),
        ((torch.zeros(4), torch.zeros(6)), 0, 2, "different leading sizes"),
        ("text", 0, 2, "no tensor"),
        (torch.zeros(4), 2, 2, "rank"),
    ],
)
def test_shard_refuses_what_it_cannot_split(batch, rank, world, match):
    with pytest.raises(ValueError, match=match):
        distributed.shard(batch, rank, world)


# --------------------------------------------------------------------------- streams, one process


def test_offset_generator_gives_the_ranks_own_stream():
    names = ("init", "data", "noise")
    g0 = generators(3, names)["noise"]
    before = g0.get_state()
    assert torch.equal(distributed.offset_generator(g0, 0).get_state(), before)
    g2 = distributed.offset_generator(generators(3, names)["noise"], 2)
    want = generators(3, names, rank=2)["noise"]
    assert torch.equal(torch.rand(5, generator=g2), torch.rand(5, generator=want))
    assert not torch.equal(torch.rand(5, generator=g2), torch.rand(5, generator=g0))
    with pytest.raises(ValueError, match="rank"):
        generators(0, names, rank=-1)


def test_fit_refuses_shared_streams_it_does_not_have():
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.ones(4, 2)
    with pytest.raises(ValueError, match=r"shared_streams names \['dta'\]"):
        fit(model, lambda m, b: m(b).mean(), lambda step: x, opt, 1,
            generators=generators(0, ("data",)), shared_streams=("dta",), progress=False)


def test_single_process_collectives_are_identities(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert not distributed.init("cpu") and not distributed.active()
    t = [torch.ones(2)]
    assert distributed.all_reduce_mean(t)[0] is t[0]
    assert distributed.broadcast_object({"a": 1}) == {"a": 1}
    assert distributed.agree(True) and not distributed.agree(False)
    assert distributed.all_gather_object(5) == [5]
    assert distributed.device_for_rank("cuda") == torch.device("cuda")


def test_device_for_rank_under_torchrun(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert distributed.device_for_rank("cuda") == torch.device("cuda", 1)
    assert distributed.device_for_rank("cuda:0") == torch.device("cuda", 0)  # as given
    assert distributed.device_for_rank("cpu") == torch.device("cpu")


def test_command_line_names_the_module_and_torchrun(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["/repo/permlib/experiments/sorting.py", "--mode", "full"])
    monkeypatch.setattr(provenance_module, "_main_module", lambda: "permlib.experiments.sorting")
    for k in ("TORCHELASTIC_RUN_ID", "GROUP_WORLD_SIZE", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(k, raising=False)
    assert command_line() == "python -m permlib.experiments.sorting --mode full"
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "x")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert command_line() == (
        "torchrun --nnodes 1 --nproc-per-node 4 -m permlib.experiments.sorting --mode full")
    assert provenance()["command"].startswith("torchrun --nnodes 1 --nproc-per-node 4 -m ")


def test_provenance_records_the_world_size(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert provenance()["machine"]["world_size"] == 3
    monkeypatch.delenv("WORLD_SIZE")
    assert provenance()["machine"]["world_size"] == 1
    assert provenance(world_size=4)["machine"]["world_size"] == 4


# --------------------------------------------------------------------------- two processes


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> list[dict]:
    """The worker run by ``torchrun --nproc-per-node 2`` (gloo on loopback)."""
    out = tmp_path_factory.mktemp("ddp")
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["PYTHONPATH"] = str(Path.cwd()) + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(WORKER), str(out)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]


@pytest.fixture(scope="module")
def one_rank(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("single")
    saved = {k: os.environ.pop(k) for k in ("RANK", "WORLD_SIZE") if k in os.environ}
    try:
        ddp_worker.main(out)
    finally:
        os.environ.update(saved)
    return torch.load(out / "rank0.pt", weights_only=False)


def _max_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b, strict=True))


@pytest.mark.slow
def test_two_gloo_processes_train_what_one_process_trains(two_ranks, one_rank):
    assert [r["world_size"] for r in two_ranks] == [2, 2]
    one, (r0, r1) = one_rank["plain"], (two_ranks[0]["plain"], two_ranks[1]["plain"])
    # both ranks hold the same model, and it is the one-process model on the same global batches
    assert _max_diff(r0["params"], r1["params"]) == 0.0
    diff = _max_diff(r0["params"], one["params"])
    print(f"\nmax |2-process - 1-process| over parameters after 12 steps: {diff:.2e}")
    assert diff < 1e-5
    assert r0["losses"] == pytest.approx(one["losses"], rel=1e-5, abs=1e-7)
    assert r0["losses"] == r1["losses"]  # the averaged loss, the same on every rank
    # data drawn from one shared stream, noise from each rank's own
    assert r0["data_seed"] == r1["data_seed"] == one["data_seed"]
    assert r0["noise_seed"] == one["noise_seed"] != r1["noise_seed"]


@pytest.mark.slow
def test_two_processes_resume_a_checkpoint_to_the_uninterrupted_run(two_ranks):
    for rank in two_ranks:
        assert rank["checkpoint_after_stop"]
        straight, part, resumed = (rank[k] for k in
                                   ("noisy_straight", "noisy_first_part", "noisy_resumed"))
        assert len(part["losses"]) == 50 and resumed["resumed_from"] == 50
        assert resumed["losses"] == straight["losses"]
        assert _max_diff(resumed["params"], straight["params"]) == 0.0
    # the ranks' noise differs, yet they train one model
    assert _max_diff(two_ranks[0]["noisy_straight"]["params"],
                     two_ranks[1]["noisy_straight"]["params"]) == 0.0  # fmt: skip
