import argparse
import json
from dataclasses import dataclass, field
from typing import Literal

import pytest

from permlib.experiments.harness import (
    add_config_arguments,
    checkpoint_dir,
    command_line,
    config_dict,
    generators,
    parse_config_arguments,
    provenance,
    results_dir,
)


@dataclass(frozen=True)
class Cfg:
    n: int = 5
    method: str = "a"
    lr: float = 0.1
    schedule: Literal["constant", "cosine"] = "constant"
    fixed: bool = False
    tol: float | None = None
    dists: tuple[str, ...] = ("x", "y")
    seed: int = field(default=0, metadata={"help": "the seed"})


def parse(argv):
    p = argparse.ArgumentParser()
    add_config_arguments(p, Cfg, axes=("n", "method", "seed"))
    return parse_config_arguments(p.parse_args(argv), Cfg, axes=("n", "method", "seed"))


def test_every_field_is_an_option():
    overrides, selection = parse(["--lr", "0.5", "--schedule", "cosine", "--fixed", "true",
                                  "--tol", "none", "--dists", "u", "v", "w", "--n", "5", "10"])
    assert overrides == {"lr": 0.5, "schedule": "cosine", "fixed": True, "tol": None,
                         "dists": ("u", "v", "w")}  # fmt: skip
    assert selection == {"n": [5, 10]}
    assert parse(["--tol", "1e-3", "--seed", "0", "1"]) == ({"tol": 1e-3}, {"seed": [0, 1]})
    assert parse([]) == ({}, {})
    with pytest.raises(SystemExit):
        parse(["--schedule", "linear"])
    with pytest.raises(SystemExit):
        parse(["--fixed", "maybe"])
    cfg = Cfg(**parse(["--dists", "u"])[0])
    assert config_dict(cfg)["dists"] == ["u"] and "seed" not in config_dict(cfg, exclude=["seed"])


def test_added_fields_are_left_out_at_their_default():
    added = {"lr": 0.1}  # as if lr had been added after results were recorded
    assert "lr" not in config_dict(Cfg(), added=added)
    assert config_dict(Cfg(lr=0.2), added=added)["lr"] == 0.2
    assert config_dict(Cfg(), added=added) == {k: v for k, v in config_dict(Cfg()).items()
                                               if k != "lr"}  # fmt: skip


def test_paths_follow_argument_then_environment_then_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PERMLIB_RESULTS_DIR", raising=False)
    assert results_dir() == tmp_path / "benchmarks" / "results"
    assert checkpoint_dir("x") == tmp_path.__class__("x")
    monkeypatch.setenv("PERMLIB_RESULTS_DIR", "/data/r")
    assert str(results_dir()) == "/data/r" and str(results_dir("mine")) == "mine"


def test_generators_are_independent_reproducible_and_per_rank():
    a, b = generators(3, ("x", "y")), generators(3, ("x", "y"))
    assert all(a[k].initial_seed() == b[k].initial_seed() for k in a)
    assert a["x"].initial_seed() != a["y"].initial_seed()
    assert generators(3, ("x",), rank=1)["x"].initial_seed() != a["x"].initial_seed()
    assert a["x"].initial_seed() == 1_000_003 * 3  # the seeds recorded results were made with
    with pytest.raises(ValueError, match="seed"):
        generators(-1, ("x",))


def test_command_line_has_no_machine_paths():
    assert command_line(["/abs/run.py", "--mode", "full"], module="permlib.experiments.sorting") \
        == "python -m permlib.experiments.sorting --mode full"
    assert command_line(["/elsewhere/tool.py", "a b", "/tmp/out.json"]) == \
        "python tool.py 'a b' out.json"


def test_provenance_is_complete_and_serializable():
    info = json.loads(json.dumps(provenance(seed=3, mode="ci", wall_s=1.234,
                                            artifacts={"m": {"path": "a", "sha256": "0"}})))
    assert info["seed"] == 3 and info["mode"] == "ci" and info["wall_s"] == 1.23
    assert {"command", "git_commit", "timestamp", "versions", "machine", "artifacts"} <= info.keys()
    assert info["versions"]["torch"].startswith("2.13.0")
    assert info["machine"]["device"] == "cpu" and info["machine"]["world_size"] == 1


def test_a_run_keeps_the_commit_it_started_from(monkeypatch, tmp_path):
    """A commit made while a grid runs is not attributed to the cells it runs."""
    import sys

    from permlib.experiments.harness import ResultsStore, code_commit, run_grid

    module = sys.modules["permlib.experiments.harness.provenance"]

    head = ["aaa"]
    monkeypatch.setattr(module, "git_commit", lambda path=None: head[0])
    code_commit.cache_clear()
    try:
        def run_one(cell, cfg, ckpt):
            head[0] = "bbb"  # somebody commits while the cell trains
            return {"metrics": {"x": 1.0}, "wall_s": 0.0}

        store = ResultsStore(tmp_path, "t", "grid", ("seed",))
        data = run_grid(store, [({"seed": 0}, {}), ({"seed": 1}, {})], run_one,
                        identity=lambda c: c, checkpoint_dir=tmp_path / "ck", progress=False)
        assert [c["provenance"]["git_commit"] for c in data["cells"]] == ["aaa", "aaa"]
        assert provenance()["git_commit"] == "aaa" and module.git_commit() == "bbb"
    finally:
        code_commit.cache_clear()
