"""Learning to sort numbers: the sorting experiments of 000, 002 and 003, one runner.

Two protocols, both on lists of ``N`` numbers drawn from ``U(0, 1)`` and the
:class:`permlib.nn.SortingNetwork` (g1: 1 -> 32 + ReLU, g2: 32 -> N), Adam with lr 0.1,
``tau = 1`` and 20 Sinkhorn iterations:

* ``"table1"`` (000 Table 1 and 002 Table 1): a fresh batch of 10 lists at every step for 1500
  steps (learning rate decayed to 0 along a cosine), Gumbel-Sinkhorn with unit noise; tested on
  1000 lists from each of the seven intervals of :data:`permlib.data.TEST_DISTRIBUTIONS`
  (P.W., P.A.W., Kendall tau, l1, l2).
* ``"table5"`` (003 Table 5, setup of its Table 3): one fixed training set of 10 lists (batch =
  training set), 500 epochs, 10 Gumbel samples, 10 test lists from ``U(0, 1)``, PyTorch's default
  initialization; heads Sinkhorn, Hungarian-STE with and without noise, Gumbel-Sinkhorn.

Both tables add a head the papers do not have: Gumbel-Sinkhorn with permlib's tolerance-controlled
iterations (``tol=1e-3``, at most 200) and implicit backward (``gumbel_sinkhorn_implicit``).

Evaluation is the papers': no noise at test time, the hard permutation is the exact matching of the
log-potentials, and the metrics come from :mod:`permlib.metrics`, comparing the predicted
permutation ``perm[i]`` (position of number ``i``) with the true one (the rank of number ``i``).

Usage::

    python -m permlib.experiments.sorting --mode full            # every table, resumable
    python -m permlib.experiments.sorting --mode full --table table1 --n 100
    python -m permlib.experiments.sorting --mode ci              # one small model, ~1 minute

Each finished cell (method, N) is written to ``benchmarks/results/sorting_<table>.json`` at once,
with its provenance; unfinished trainings checkpoint to ``benchmarks/checkpoints/sorting/`` (git
ignored) every few seconds, so rerunning the same command continues where it stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from permlib import metrics
from permlib.data import TEST_DISTRIBUTIONS, sample_sorting_batch
from permlib.experiments.provenance import REPO_ROOT, provenance
from permlib.matching import permutation_matrix
from permlib.nn import SortingNetwork, reconstruct
from permlib.sinkhorn import ConvergenceWarning, sinkhorn

__all__ = [
    "METHODS",
    "PAPER_METHODS",
    "TABLES",
    "SortingConfig",
    "compare_table1",
    "compare_table5",
    "evaluate",
    "load_paper_tables",
    "load_results",
    "markdown_table",
    "run",
    "run_cell",
    "run_table",
    "summarize",
    "train",
]

RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
CHECKPOINT_DIR = REPO_ROOT / "benchmarks" / "checkpoints" / "sorting"
PAPER_TABLES = REPO_ROOT / "benchmarks" / "reference" / "paper_tables.json"

#: Head settings of each method: keyword arguments of :class:`permlib.nn.SortingNetwork`.
METHODS: dict[str, dict] = {
    "sinkhorn": {"head": "sinkhorn"},
    "gumbel_sinkhorn": {"head": "gumbel_sinkhorn", "noise_factor": 1.0, "n_samples": 10},
    "hste": {"head": "hste", "noise_factor": 0.0},
    "hste_gumbel": {"head": "hste", "noise_factor": 1.0, "n_samples": 10},
    "gumbel_sinkhorn_implicit": {
        "head": "gumbel_sinkhorn",
        "noise_factor": 1.0,
        "n_samples": 10,
        "tol": 1e-3,
        "n_iters": 200,
        "backward": "implicit",
    },
}

#: The method names of 003 Table 5 (and ``paper_tables.json``) for our method keys.
PAPER_METHODS: dict[str, str] = {
    "sinkhorn": "Sinkhorn",
    "hste": "Hungarian-STE without Gumbel noise",
    "gumbel_sinkhorn": "Gumbel-Sinkhorn",
    "hste_gumbel": "Hungarian-STE with Gumbel noise",
}


@dataclass(frozen=True)
class SortingConfig:
    """One training run (a cell of a table).

    Attributes:
        n: numbers per list.
        method: a key of :data:`METHODS`.
        hidden: width of g1.
        init: ``"glorot"`` or ``"torch"`` (see :class:`permlib.nn.SortingNetwork`).
        lr: Adam learning rate.
        batch_size: lists per step.
        n_steps: optimizer steps (= epochs when ``fixed_train_set``).
        lr_schedule: ``"constant"`` (the papers) or ``"cosine"`` (decay from ``lr`` to 0 over
            ``n_steps``).
        fixed_train_set: train on one fixed set of ``batch_size`` lists (003) instead of a fresh
            batch at each step (000/002).
        n_test: test lists per test distribution.
        test_distributions: keys of :data:`permlib.data.TEST_DISTRIBUTIONS`.
        train_low, train_high: the training interval.
        seed: seeds the initialization, the training data, the noise and the test data (four
            independent generators).
    """

    n: int = 100
    method: str = "gumbel_sinkhorn"
    hidden: int = 32
    lr: float = 0.1
    batch_size: int = 10
    n_steps: int = 500
    lr_schedule: str = "constant"
    init: str = "glorot"
    fixed_train_set: bool = False
    n_test: int = 1000
    test_distributions: tuple[str, ...] = tuple(TEST_DISTRIBUTIONS)
    train_low: float = 0.0
    train_high: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {tuple(METHODS)}, got {self.method!r}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(
                f"lr_schedule must be 'constant' or 'cosine', got {self.lr_schedule!r}"
            )
        unknown = set(self.test_distributions) - set(TEST_DISTRIBUTIONS)
        if unknown:
            raise ValueError(f"unknown test distributions {sorted(unknown)}")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["test_distributions"] = list(self.test_distributions)
        d["head"] = METHODS[self.method]
        return d

    def build(self, generator: torch.Generator | None = None) -> SortingNetwork:
        """A freshly initialized network for this configuration."""
        return SortingNetwork(
            self.n, self.hidden, init=self.init, generator=generator, **METHODS[self.method]
        )


#: The tables: training protocol, grid of N and methods, and the paper it reproduces.
TABLES: dict[str, dict] = {
    "table1": {
        "title": "000 Table 1 and 002 Table 1: Sinkhorn networks, seven test distributions",
        # 1500 steps with a cosine decay of the learning rate: at N = 100, 500 constant-rate
        # steps leave P.A.W. at 0.56 on U(0,1) and 1500 constant-rate steps at 1.0 (seed 0).
        "protocol": {
            "n_steps": 1500,
            "lr_schedule": "cosine",
            "batch_size": 10,
            "fixed_train_set": False,
            "n_test": 1000,
        },
        "methods": ("gumbel_sinkhorn", "gumbel_sinkhorn_implicit"),
        "ns": (5, 10, 15, 80, 100, 120),
        "test_distributions": tuple(TEST_DISTRIBUTIONS),
    },
    "table5": {
        "title": "003 Table 5: Sinkhorn, Gumbel-Sinkhorn and Hungarian-STE, N up to 400",
        # PyTorch's default initialization, as in the implementation 003 builds on: with 10
        # training lists, zero first-layer biases (the "glorot" init of Table 1) leave P.A.W.
        # at 0.1-0.7 for N = 10 and 15 where the default init gives 0 (3 seeds, 100 test lists).
        "protocol": {
            "n_steps": 500,
            "init": "torch",
            "batch_size": 10,
            "fixed_train_set": True,
            "n_test": 10,
        },
        "methods": (
            "sinkhorn",
            "hste",
            "gumbel_sinkhorn",
            "hste_gumbel",
            "gumbel_sinkhorn_implicit",
        ),
        # 300 is in the grid but not in 003 Table 5: ours only, no paper value.
        "ns": (5, 10, 15, 80, 100, 120, 150, 200, 250, 300, 400),
        "test_distributions": ("U(0,1)",),
        # The implicit head needs up to 200 iterations and an N x N solve per matrix: too slow
        # for the 3-hour budget beyond N = 120 (run it with --methods/--n to extend).
        "ns_by_method": {"gumbel_sinkhorn_implicit": (5, 10, 15, 80, 100, 120)},
    },
}

_CI = {"n": 15, "method": "gumbel_sinkhorn", "n_steps": 300, "lr_schedule": "cosine", "n_test": 200}


def _generators(seed: int) -> dict[str, torch.Generator]:
    """Independent streams for initialization, training data, noise and test data."""
    names = ("init", "data", "noise", "test")
    return {k: torch.Generator().manual_seed(1_000_003 * seed + i) for i, k in enumerate(names)}


# --------------------------------------------------------------------------- training


@dataclass
class TrainResult:
    """What :func:`train` returns: the model and its learning curve."""

    model: SortingNetwork
    losses: list[float]
    step: int
    wall_s: float
    convergence_warnings: int = 0
    resumed_from: int | None = None
    extra: dict = field(default_factory=dict)


def _save_checkpoint(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def train(
    config: SortingConfig,
    *,
    checkpoint: str | Path | None = None,
    checkpoint_every_s: float = 30.0,
    until: int | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train a sorting network; resumable.

    Args:
        config: the run.
        checkpoint: file to save to every ``checkpoint_every_s`` seconds (and at the end); if it
            exists and matches ``config``, training resumes from it (model, optimizer, generator
            states and learning curve), giving the same result as an uninterrupted run.
        until: stop after this step (default ``config.n_steps``), e.g. to test resuming.
        progress: show a tqdm bar.

    Returns:
        A :class:`TrainResult`; ``losses[t]`` is the training loss at step ``t``.
    """
    gens = _generators(config.seed)
    model = config.build(generator=gens["init"])
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    losses: list[float] = []
    step, wall, n_warn, resumed = 0, 0.0, 0, None
    fixed = None
    if config.fixed_train_set:
        fixed = sample_sorting_batch(
            config.batch_size, config.n, config.train_low, config.train_high,
            generator=gens["data"],
        )  # fmt: skip
    path = Path(checkpoint) if checkpoint is not None else None
    if path is not None and path.exists():
        state = torch.load(path, weights_only=False)
        if state.get("config") == config.to_dict():
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            for k, g in gens.items():
                g.set_state(state["generators"][k])
            losses, step, wall = list(state["losses"]), state["step"], state["wall_s"]
            n_warn, resumed = state.get("convergence_warnings", 0), state["step"]

    def snapshot() -> dict:
        return {
            "config": config.to_dict(),
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "generators": {k: g.get_state() for k, g in gens.items()},
            "losses": losses,
            "step": step,
            "wall_s": wall,
            "convergence_warnings": n_warn,
        }

    stop = config.n_steps if until is None else min(until, config.n_steps)
    bar = tqdm(
        total=config.n_steps, initial=step, disable=not progress, leave=False,
        desc=f"{config.method} N={config.n}", mininterval=2.0,
    )  # fmt: skip
    t_start, t_saved = time.perf_counter(), time.perf_counter()
    model.train()
    with bar:
        while step < stop:
            batch = fixed if fixed is not None else sample_sorting_batch(
                config.batch_size, config.n, config.train_low, config.train_high,
                generator=gens["data"],
            )  # fmt: skip
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ConvergenceWarning)
                if config.lr_schedule == "cosine":
                    for group in opt.param_groups:
                        group["lr"] = (
                            0.5 * config.lr * (1 + math.cos(math.pi * step / config.n_steps))
                        )
                loss = model.loss(batch.x, batch.x_sorted, generator=gens["noise"])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            n_warn += sum(issubclass(w.category, ConvergenceWarning) for w in caught)
            losses.append(loss.item())
            step += 1
            bar.update(1)
            if step % 25 == 0:
                bar.set_postfix(loss=f"{losses[-1]:.2e}")
            now = time.perf_counter()
            if path is not None and now - t_saved > checkpoint_every_s:
                wall += now - t_start
                t_start = t_saved = now
                _save_checkpoint(path, snapshot())
    wall += time.perf_counter() - t_start
    if path is not None:
        _save_checkpoint(path, snapshot())
    model.eval()
    return TrainResult(model, losses, step, wall, n_warn, resumed)


# --------------------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate(
    model: SortingNetwork,
    n_test: int,
    distributions: Sequence[str] = tuple(TEST_DISTRIBUTIONS),
    *,
    generator: torch.Generator | None = None,
    chunk: int = 250,
) -> dict[str, dict[str, float]]:
    """Test a trained network as the papers do: no noise, exact matching of ``log_alpha``.

    Returns, for each test distribution, ``prop_wrong``, ``prop_any_wrong``, ``kendall_tau``
    (predicted vs true permutation, both ``perm[i]`` = position of number ``i``), ``l1`` and ``l2``
    (mean absolute / squared error between the hard reconstruction ``P^T x`` and the sorted list)
    and ``prop_tied`` (fraction of test lists holding two equal numbers after the cast to float32).
    """
    out = {}
    for name in distributions:
        low, high = TEST_DISTRIBUTIONS[name]
        acc: dict[str, float] = {}
        done = 0
        while done < n_test:
            b = min(chunk, n_test - done)
            batch = sample_sorting_batch(b, model.n, low, high, generator=generator)
            pred = model.predict(batch.x)
            recon = reconstruct(permutation_matrix(pred, dtype=batch.x.dtype), batch.x)
            sorted_x = batch.x_sorted
            tied = (sorted_x[:, 1:] == sorted_x[:, :-1]).any(dim=-1).float()
            vals = {
                "prop_wrong": metrics.prop_wrong(pred, batch.perm, reduction="none"),
                "prop_any_wrong": metrics.prop_any_wrong(pred, batch.perm, reduction="none"),
                "kendall_tau": metrics.kendall_tau(pred, batch.perm, reduction="none"),
                "l1": metrics.l1_error(recon, sorted_x, dim=-1),
                "l2": metrics.l2_error(recon, sorted_x, dim=-1),
                "prop_tied": tied,
            }
            for k, v in vals.items():
                acc[k] = acc.get(k, 0.0) + float(v.double().sum())
            done += b
        out[name] = {k: v / n_test for k, v in acc.items()}
    return out


def _curve(losses: Sequence[float], points: int = 100) -> dict[str, list]:
    """Learning curve thinned to about ``points`` points: steps and mean loss over each window."""
    if not losses:
        return {"step": [], "loss": []}
    w = max(1, math.ceil(len(losses) / points))
    steps, vals = [], []
    for i in range(0, len(losses), w):
        chunk = losses[i : i + w]
        steps.append(i + len(chunk))
        vals.append(sum(chunk) / len(chunk))
    return {"step": steps, "loss": vals}


def run_cell(
    config: SortingConfig,
    *,
    checkpoint: str | Path | None = None,
    progress: bool = True,
    keep_model: bool = False,
) -> dict:
    """Train and test one configuration; JSON-serializable result (``model`` if ``keep_model``)."""
    tr = train(config, checkpoint=checkpoint, progress=progress)
    t_eval = time.perf_counter()
    res = evaluate(
        tr.model,
        config.n_test,
        config.test_distributions,
        generator=_generators(config.seed)["test"],
    )
    out = {
        "config": config.to_dict(),
        "metrics": res,
        "train": {
            "wall_s": round(tr.wall_s, 2),
            "steps": tr.step,
            "final_loss": tr.losses[-1] if tr.losses else None,
            "loss_curve": _curve(tr.losses),
            "convergence_warnings": tr.convergence_warnings,
            "resumed_from_step": tr.resumed_from,
        },
        "eval_wall_s": round(time.perf_counter() - t_eval, 2),
    }
    # training time over every session that worked on the cell (it resumes from checkpoints)
    out["wall_s"] = round(tr.wall_s + out["eval_wall_s"], 2)
    if keep_model:
        out["model"] = tr.model
        out["losses"] = tr.losses
    return out


# --------------------------------------------------------------------------- result files


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Exclusive lock for updating ``path`` (several runners may share a results file)."""
    import fcntl
    import hashlib
    import tempfile

    # outside the results folder, so that it holds only results
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:16]
    lock = Path(tempfile.gettempdir()) / f"permlib-results-{digest}.lock"
    with open(lock, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextlib.contextmanager
def _claim(ckpt: Path) -> Iterator[bool]:
    """Non-blocking exclusive lock on a cell: yields ``False`` if another runner holds it."""
    import fcntl

    lock = ckpt.with_suffix(".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def results_path(table: str, results_dir: str | Path = RESULTS_DIR) -> Path:
    return Path(results_dir) / f"sorting_{table}.json"


def load_results(table: str, results_dir: str | Path = RESULTS_DIR) -> dict | None:
    """The results file of ``table`` (``"table1"`` or ``"table5"``), or ``None`` if absent."""
    path = results_path(table, results_dir)
    if not path.exists():
        return None
    return json.loads(path.read_text())


def _write_cell(path: Path, table: str, key: str, cell: dict) -> None:
    with _locked(path):
        data = json.loads(path.read_text()) if path.exists() else {"cells": {}}
        spec = TABLES[table]
        data |= {  # the grid as the code defines it now, so it can grow between sessions
            "experiment": "sorting",
            "table": table,
            "title": spec["title"],
            "grid": {"methods": list(spec["methods"]), "ns": list(spec["ns"])},
            "cells": data["cells"],
        }
        data["cells"][key] = cell
        data["cells"] = dict(sorted(data["cells"].items(), key=lambda kv: _cell_order(kv[0])))
        done = [c["wall_s"] for c in data["cells"].values()]
        data["summary"] = {"cells_done": len(done), "wall_s_total": round(sum(done), 1)}
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(data, indent=1) + "\n")
        os.replace(tmp, path)


def cell_key(method: str, n: int) -> str:
    return f"{method}/N={n}"


def _cell_order(key: str) -> tuple:
    method, n = key.split("/N=")
    order = list(METHODS)
    return (order.index(method) if method in order else len(order), int(n))


def run_table(
    table: str,
    *,
    seed: int = 0,
    methods: Sequence[str] | None = None,
    ns: Sequence[int] | None = None,
    results_dir: str | Path = RESULTS_DIR,
    checkpoint_dir: str | Path = CHECKPOINT_DIR,
    force: bool = False,
    progress: bool = True,
    mode: str = "full",
) -> dict:
    """Run the missing cells of a table, smallest N first, writing each one as it finishes.

    Cells already in ``sorting_<table>.json`` are skipped (unless ``force``); an interrupted
    training resumes from ``checkpoint_dir``. Unless both ``methods`` and ``ns`` are given, a
    method listed in the table's ``ns_by_method`` only runs those N. Several runners may share a
    table: each cell is claimed with a lock. Returns the (updated) results file content.
    """
    spec = TABLES[table]
    path = results_path(table, results_dir)
    explicit = methods is not None and ns is not None
    methods = tuple(methods or spec["methods"])
    ns = tuple(ns or spec["ns"])
    existing = (load_results(table, results_dir) or {}).get("cells", {})
    limits = {} if explicit else spec.get("ns_by_method", {})
    todo = [
        (n, m)
        for m in methods
        for n in sorted(ns)
        if n in limits.get(m, ns) and (force or cell_key(m, n) not in existing)
    ]
    # the papers' methods first, then the extra head; small N first within each
    todo.sort(key=lambda nm: (nm[1] == "gumbel_sinkhorn_implicit", nm[0], methods.index(nm[1])))
    for n, method in tqdm(todo, desc=table, disable=not progress):
        key = cell_key(method, n)
        config = SortingConfig(
            n=n, method=method, seed=seed,
            test_distributions=spec["test_distributions"], **spec["protocol"],
        )  # fmt: skip
        ckpt = Path(checkpoint_dir) / table / f"{method}_N{n}_seed{seed}.pt"
        with _claim(ckpt) as mine:
            # another runner may be training this cell, or may have finished it meanwhile
            if not mine or (
                not force and key in (load_results(table, results_dir) or {}).get("cells", {})
            ):
                continue
            cell = run_cell(config, checkpoint=ckpt, progress=progress)
            cell["provenance"] = provenance(seed=seed, mode=mode)
            _write_cell(path, table, key, cell)
            ckpt.unlink(missing_ok=True)
    return load_results(table, results_dir) or {}


# --------------------------------------------------------------------------- paper comparison


def load_paper_tables(path: str | Path = PAPER_TABLES) -> dict:
    """The papers' values (``benchmarks/reference/paper_tables.json``)."""
    return json.loads(Path(path).read_text())


_HIGHER_IS_BETTER = {"kendall_tau"}


def _row(paper: float | None, ours: float | None, metric: str, digits: int = 2) -> dict:
    gap = None if paper is None or ours is None else ours - paper
    if paper is None or ours is None:
        status = "missing" if ours is None else "no paper value"
    else:
        o = round(ours, digits)
        ok = o >= paper if metric in _HIGHER_IS_BETTER else o <= paper
        status = "met" if ok else "worse"
    return {"paper": paper, "ours": ours, "gap": gap, "status": status}


def compare_table1(
    results: dict | None,
    paper: dict,
    metric: str = "prop_any_wrong",
    method: str = "gumbel_sinkhorn",
    source: str = "sorting_sinkhorn_networks_table1",
) -> list[dict]:
    """Rows ``test_distribution, N, paper, ours, gap, status`` for one metric of Table 1.

    ``source`` is ``"sorting_sinkhorn_networks_table1"`` (000: N = 80, 100, 120; P.W. and
    P.A.W.) or ``"sorting_gumbel_sinkhorn_table1"`` (002: N = 5 ... 120, P.A.W.). ``gap`` is
    ours minus paper (negative is better for error rates); ``ours`` is ``None`` for cells not run.
    """
    cells = (results or {}).get("cells", {})
    rows = []
    for ref in paper[source]["rows"]:
        if "method" in ref or metric not in ref:  # skip the pointer-network baseline rows
            continue
        cell = cells.get(cell_key(method, ref["N"]))
        ours = None if cell is None else cell["metrics"][ref["test_distribution"]][metric]
        rows.append(
            {"test_distribution": ref["test_distribution"], "N": ref["N"]}
            | _row(ref[metric], ours, metric)
        )
    return rows


_T5_SCALE = {"kendall_tau": 1.0, "prop_wrong": 1.0, "prop_any_wrong": 1.0, "l1": 100, "l2": 1000}
_T5_PAPER_KEY = {"l1": "l1_x100", "l2": "l2_x1000"}


def compare_table5(
    results: dict | None,
    paper: dict,
    metric: str = "kendall_tau",
    methods: Sequence[str] = tuple(PAPER_METHODS),
) -> list[dict]:
    """Rows ``method, N, paper, ours, gap, status`` for one metric of 003 Table 5.

    ``l1`` and ``l2`` are scaled as in the paper (``100 x l1``, ``1000 x l2``). N values run by us
    but absent from the paper (N = 300) get ``paper = None``.
    """
    cells = (results or {}).get("cells", {})
    refs = {(r["method"], r["N"]): r for r in paper["hste_sorting_table5"]["rows"]}
    ns = sorted(
        {r["N"] for r in paper["hste_sorting_table5"]["rows"]} | set(TABLES["table5"]["ns"])
    )
    scale, pkey = _T5_SCALE[metric], _T5_PAPER_KEY.get(metric, metric)
    rows = []
    for method in methods:
        for n in ns:
            ref = refs.get((PAPER_METHODS.get(method, method), n))
            cell = cells.get(cell_key(method, n))
            ours = None if cell is None else cell["metrics"]["U(0,1)"][metric] * scale
            if ref is None and cell is None:
                continue
            rows.append(
                {"method": method, "N": n} | _row(None if ref is None else ref[pkey], ours, metric)
            )
    return rows


def summarize(rows: Sequence[dict]) -> dict:
    """Counts of ``met``, ``worse`` and ``missing`` cells, and the worse rows themselves.

    ``total`` counts the cells with a paper value; ``ours_only`` those without one (N = 300 of
    Table 5), which can be neither met nor missed.
    """
    count = {s: sum(r["status"] == s for r in rows) for s in ("met", "worse", "missing")}
    ours_only = sum(r["status"] == "no paper value" for r in rows)
    return count | {
        "total": len(rows) - ours_only,
        "ours_only": ours_only,
        "worse_rows": [r for r in rows if r["status"] == "worse"],
    }


def markdown_table(rows: Sequence[dict], columns: Sequence[str], digits: int = 2) -> str:
    """A Markdown table of ``rows`` (missing values as an em dash, gaps signed)."""

    def fmt(k: str, v) -> str:
        if v is None:
            return "—"
        if isinstance(v, float):
            return f"{v:+.{digits}f}" if k == "gap" else f"{v:.{digits}f}"
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(c, r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------- entry points


@torch.no_grad()
def _example(model: SortingNetwork, seed: int) -> dict:
    """One test list with its soft permutation (no noise), matching and true permutation."""
    batch = sample_sorting_batch(1, model.n, generator=torch.Generator().manual_seed(seed + 7))
    log_alpha = model.log_alpha(batch.x)[0]
    return {
        "x": batch.x[0].tolist(),
        "soft_perm": sinkhorn(log_alpha, tau=model.tau, n_iters=model.n_iters).tolist(),
        "pred_perm": model.predict(batch.x)[0].tolist(),
        "true_perm": batch.perm[0].tolist(),
    }


@contextlib.contextmanager
def _threads(n: int | None) -> Iterator[None]:
    """Temporarily use ``n`` intra-op threads (the small matrices here run best on one)."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run(
    mode: str = "ci", seed: int = 0, progress: bool = False, threads: int | None = 1, **overrides
) -> dict:
    """Run the sorting experiment.

    ``mode="ci"`` trains one small model (N = 15, Gumbel-Sinkhorn, 300 steps: about 15 s on two
    CPU cores) and tests it on the seven distributions; ``overrides`` change any
    :class:`SortingConfig` field. Returns ``config``, ``metrics``, ``train`` (learning curve), the
    trained ``model`` and ``losses``, an ``example`` list (soft permutation, matching, truth) and
    ``provenance``.

    ``mode="full"`` runs (or resumes) every table of :data:`TABLES` and returns
    ``{"table1": ..., "table5": ...}``, the content of the results files. ``threads``: torch
    threads during the run (1 is fastest for these sizes on a shared 2-core machine).
    """
    with _threads(threads):
        return _run(mode, seed, progress, **overrides)


def _run(mode: str, seed: int, progress: bool, **overrides) -> dict:
    if mode == "ci":
        config = SortingConfig(**(_CI | {"seed": seed} | overrides))
        out = run_cell(config, progress=progress, keep_model=True)
        out["example"] = _example(out["model"], seed)
        out["provenance"] = provenance(seed=seed, mode=mode)
        return out
    if mode == "full":
        return {t: run_table(t, seed=seed, progress=progress, **overrides) for t in TABLES}
    raise ValueError(f"mode must be 'ci' or 'full', got {mode!r}")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m permlib.experiments.sorting", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--mode", choices=("ci", "full"), default="ci")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--table", nargs="+", choices=tuple(TABLES), default=list(TABLES))
    p.add_argument("--methods", nargs="+", choices=tuple(METHODS), default=None)
    p.add_argument("--n", nargs="+", type=int, default=None, help="subset of the table's N")
    p.add_argument("--results-dir", default=str(RESULTS_DIR))
    p.add_argument("--checkpoint-dir", default=str(CHECKPOINT_DIR))
    p.add_argument("--force", action="store_true", help="rerun cells already in the results")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    progress = not args.no_progress
    t0 = time.perf_counter()
    if args.mode == "ci":
        out = run("ci", seed=args.seed, progress=progress)
        print(json.dumps({k: out[k] for k in ("metrics", "train", "wall_s")}, indent=1))
        return 0
    for table in args.table:
        spec = TABLES[table]
        methods = args.methods and [m for m in args.methods if m in spec["methods"]]
        ns = args.n and [n for n in args.n if n in spec["ns"]]
        if methods == [] or ns == []:
            continue
        data = run_table(
            table, seed=args.seed, methods=methods, ns=ns, results_dir=args.results_dir,
            checkpoint_dir=args.checkpoint_dir, force=args.force, progress=progress,
        )  # fmt: skip
        print(f"{table}: {data.get('summary')}", file=sys.stderr)
    print(f"total wall time {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
