"""Which relaxation should I use? Sinkhorn, Gumbel-Sinkhorn and HSTE against NeuralSort,
SoftSort and differentiable sorting networks, on the same tasks; one runner over the shared
harness.

Two tasks, two tables:

* ``numbers``: sort lists of ``N`` numbers from ``U(0, 1)``, the task of the sorting chapter
  (Mena et al.'s Table 1), with its protocol (1,500 steps, cosine-decayed Adam ``0.1``, batches
  of 10) for every method. The Sinkhorn-family heads use the founding papers' network (each
  number's ``g`` emits a row of ``N`` log-potentials); the score-based relaxations use the same
  ``g1`` with a one-score output (:class:`permlib.nn.ranking.ScoreSortingNetwork`). Test:
  1,000 lists, exact matching (Sinkhorn family) or the sort of the scores (the others).
* ``multidigit``: the large-MNIST sorting benchmark of NeuralSort (Grover et al., ICLR 2019,
  Table 1): ``n`` numbers of four MNIST digits drawn as ``28 x 112`` images, one CNN per image
  (:class:`permlib.nn.multidigit.MultiDigitCNN`), the cross-entropy between the relaxed and the
  true permutation matrix, Adam and batches of 20 lists (the paper's batch size; their code's
  default is 1), at ``1e-3`` for 1,000 steps instead of their ``1e-4`` for 200 epochs of 55,000
  digits (about 137 times our training lists): the shortfall is mostly undertraining (the
  learning curves of :mod:`permlib.experiments.relaxations_search`; ``augment_shift`` moves
  the training digits, which helps longer runs but not this budget). Metrics:
  **exact match** (the whole permutation right) and **element-wise accuracy** (the share of
  positions right); their code calls them ``prop_correct`` and ``prop_any_correct``. The
  Sinkhorn-family rows are decoded two ways: exact matching, and Grover et al.'s decoding, the
  row argmax of the Sinkhorn operator at temperature ``1e-10`` after 20 iterations (which need
  not be a permutation).

The method ``gumbel_sinkhorn_grover`` trains Gumbel-Sinkhorn the way Grover et al.'s baseline
code does: the rows of the network's matrix (one per image) are scored against the rows of the
true matrix in their layout, which index *positions*, so each image must name the item that
sits at its own index, which one image cannot know. It is here to explain their baseline's
numbers, not as a way to train.

Peers: NeuralSort and SoftSort are implemented in :mod:`permlib.relaxed_sort` (tested against
the ``difftopk`` package), and so is the optimal-transport sort of Cuturi et al. (tested against
OTT-JAX's ``soft_sort`` where ``ott-jax`` is installed); the sorting networks come from the
``diffsort`` package, an optional extra (``pip install -e '.[peers]'``), and the soft ranks of
Blondel et al. from ``torchsort`` (``pip install --no-build-isolation torchsort==0.1.10``, a
C++ extension built against the installed torch): without them their cells are skipped with a
message saying how to install them.

Usage (from the repository root)::

    python -m permlib.experiments.relaxations --mode ci        # one small cell per task
    python -m permlib.experiments.relaxations --mode full --table numbers --seed 0 1 2
    python -m permlib.experiments.relaxations --mode full --table multidigit --n 3 5
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from permlib import metrics
from permlib.data.images import ImageSplit
from permlib.data.multidigit import sample_multidigit_batch
from permlib.data.sorting import sample_sorting_batch
from permlib.experiments import harness
from permlib.experiments.harness import FitResult
from permlib.experiments.methods import METHODS
from permlib.nn import PermutationHead, SortingNetwork
from permlib.nn.multidigit import MultiDigitSorter
from permlib.nn.ranking import (
    INSTALL_PEERS,
    INSTALL_TORCHSORT,
    ScoreSortingNetwork,
    SoftRank,
    SortRelaxation,
    rank_loss,
    torchsort_available,
)
from permlib.nn.ranking import diffsort_available as _diffsort_available
from permlib.permutations import invert_permutation, permutation_matrix
from permlib.sinkhorn import sinkhorn

__all__ = [
    "AXES",
    "EXPERIMENT",
    "RELAXATION_METHODS",
    "TABLES",
    "RelaxationsConfig",
    "RelaxationsExperiment",
    "available",
    "build",
    "compare_multidigit",
    "evaluate",
    "layout_ceiling",
    "main",
    "multidigit_table",
    "run",
    "run_table",
    "train",
]

AXES = ("method", "n", "seed")

#: Every method: ``family`` ``"matrix"`` (a :class:`~permlib.nn.PermutationHead` on an n x n
#: matrix of log-potentials), ``"scores"`` (a :class:`~permlib.nn.ranking.SortRelaxation`
#: on one score per item) or ``"ranks"`` (a :class:`~permlib.nn.ranking.SoftRank`: one score
#: per item, soft ranks out, trained by :func:`~permlib.nn.ranking.rank_loss`), the head's
#: options, and where the method comes from.
RELAXATION_METHODS: dict[str, dict] = {
    **{name: {"family": "matrix", "head": dict(opts), "source": "permlib"}
       for name, opts in METHODS.items()},  # fmt: skip
    "gumbel_sinkhorn_grover": {
        "family": "matrix", "head": dict(METHODS["gumbel_sinkhorn"]), "layout": "positions",
        "source": "permlib, trained in Grover et al.'s baseline layout",
    },  # fmt: skip
    "neuralsort": {"family": "scores", "head": {"kind": "neuralsort", "tau": 1.0},
                   "source": "permlib.relaxed_sort (Grover et al., 2019)"},  # fmt: skip
    "neuralsort_stochastic": {
        "family": "scores",
        "head": {"kind": "neuralsort", "tau": 1.0, "noise_factor": 1.0, "n_samples": 5},
        "source": "permlib.relaxed_sort (Grover et al., 2019)",
    },
    "softsort": {"family": "scores", "head": {"kind": "softsort", "tau": 1.0},
                 "source": "permlib.relaxed_sort (Prillo and Eisenschlos, 2020)"},  # fmt: skip
    "torchsort_rank": {"family": "ranks", "head": {"kind": "torchsort_rank", "tau": 1.0},
                       "source": "torchsort 0.1.10 (Blondel et al., 2020)", "peer": "torchsort"},
    "ot_sort": {"family": "scores", "head": {"kind": "ot_sort", "tau": 1e-2},
                "source": "permlib.relaxed_sort (Cuturi et al., 2019; OTT-JAX's soft_sort plan)"},
    "diffsort_odd_even": {"family": "scores", "head": {"kind": "diffsort_odd_even", "tau": 0.1},
                          "source": "diffsort 0.2.0 (Petersen et al.)", "peer": "diffsort"},
    "diffsort_bitonic": {"family": "scores", "head": {"kind": "diffsort_bitonic", "tau": 0.1},
                         "source": "diffsort 0.2.0 (Petersen et al.)", "peer": "diffsort"},
}  # fmt: skip

_PEERS = {"diffsort": _diffsort_available, "torchsort": torchsort_available}
_INSTALL = {"diffsort": INSTALL_PEERS, "torchsort": INSTALL_TORCHSORT}

TABLES: dict[str, dict] = {
    "numbers": {
        "title": "Sorting numbers: every relaxation under the protocol of Table 1 (U(0, 1))",
        "protocol": {"n_steps": 1500, "lr": 0.1, "lr_schedule": "cosine", "batch_size": 10,
                     "n_test": 1000},  # fmt: skip
        "methods": ("gumbel_sinkhorn", "sinkhorn", "hste", "gumbel_sinkhorn_implicit",
                    "neuralsort", "neuralsort_stochastic", "softsort", "diffsort_odd_even",
                    "diffsort_bitonic", "ot_sort", "torchsort_rank"),  # fmt: skip
        "ns": (5, 15, 80, 120),
    },
    "multidigit": {
        "title": "Sorting four-digit MNIST numbers (Grover et al., 2019, Table 1)",
        # Adam and batches of 20 lists as in Grover et al.'s paper (their code's default is 1);
        # 1,000 steps instead of their 200 epochs (two CPU cores); the learning rate (their
        # code: 1e-4) from the probe on seed 100
        # (benchmarks/results/relaxations_search/); the CNN on 32 strips at a time (speed)
        "protocol": {"task": "multidigit", "lr": 1e-3, "lr_schedule": "constant",
                     "batch_size": 20, "n_steps": 1000, "n_test": 1000,
                     "cnn_chunk": 32},  # fmt: skip
        # the rows of their table first (the grid runs in this order)
        "methods": ("neuralsort", "neuralsort_stochastic", "gumbel_sinkhorn",
                    "gumbel_sinkhorn_grover", "sinkhorn", "softsort", "hste",
                    "diffsort_odd_even", "ot_sort", "torchsort_rank"),
        "ns": (3, 5, 7, 9, 15),
    },
}  # fmt: skip

#: Grover et al.'s names of the methods in their Table 1.
PAPER_NAMES = {
    "neuralsort": "Deterministic NeuralSort",
    "neuralsort_stochastic": "Stochastic NeuralSort",
    "sinkhorn": "Sinkhorn",
    "gumbel_sinkhorn": "Gumbel-Sinkhorn",
    "gumbel_sinkhorn_grover": "Gumbel-Sinkhorn",
}
_STREAMS = ("init", "data", "noise", "test")
#: The streams of evaluation: ``"test"`` (lists of test digits) and, appended so the others keep
#: their seeds, ``"train_eval"`` (lists of training digits, to tell underfitting from
#: overfitting).
_EVAL_STREAMS = (*_STREAMS, "train_eval")
_CI = {
    "numbers": {"n": 15, "n_steps": 300, "n_test": 200},
    "multidigit": {"task": "multidigit", "n": 3, "lr": 1e-3, "batch_size": 20, "n_steps": 100,
                   "n_test": 200, "cnn_chunk": 32},  # fmt: skip
}


@dataclass(frozen=True)
class RelaxationsConfig:
    """One training run (a cell).

    Attributes:
        task: ``"numbers"`` or ``"multidigit"``.
        method: a key of :data:`RELAXATION_METHODS`.
        n: items per list.
        hidden: width of ``g1`` (numbers task).
        lr, lr_schedule, batch_size, n_steps: Adam's learning rate, ``"constant"`` or
            ``"cosine"`` (to 0 over ``n_steps``), lists per step, steps.
        n_test: test lists.
        n_digits: digits per number (multidigit task).
        augment_shift: multidigit task: translate each training digit by up to this many pixels
            (:func:`~permlib.data.multidigit.sample_multidigit_batch`'s ``shift``; test lists
            never are); 0, Grover et al.'s setting, is the default.
        cnn_chunk: multidigit task: strips per call of the CNN (0: the whole batch at once).
            Speed only: the forward pass is per strip, and only the summation order of the
            weights' gradients changes (:class:`~permlib.nn.multidigit.MultiDigitCNN`).
        tau: the head's temperature (``epsilon`` for ``ot_sort``, ``1 / steepness`` for the
            sorting networks) instead of the method's own (``None``), for protocol searches.
        data_dir: folder of the MNIST IDX files (``None``: the 5,000 bundled digits).
        seed: seeds the initialization, training data, noise and test lists.
    """

    task: str = "numbers"
    method: str = "gumbel_sinkhorn"
    n: int = 15
    hidden: int = 32
    lr: float = 0.1
    lr_schedule: str = "cosine"
    batch_size: int = 10
    n_steps: int = 1500
    n_test: int = 1000
    n_digits: int = 4
    data_dir: str | None = None
    seed: int = 0
    augment_shift: int = 0
    cnn_chunk: int = 0
    tau: float | None = None

    def __post_init__(self) -> None:
        if self.task not in ("numbers", "multidigit"):
            raise ValueError(f"task must be 'numbers' or 'multidigit', got {self.task!r}")
        if self.method not in RELAXATION_METHODS:
            raise ValueError(f"method must be one of {tuple(RELAXATION_METHODS)}, "
                             f"got {self.method!r}")  # fmt: skip
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(
                f"lr_schedule must be 'constant' or 'cosine', got {self.lr_schedule!r}"
            )
        for name in ("n", "hidden", "batch_size", "n_test", "n_digits"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        s = self.augment_shift
        if isinstance(s, bool) or not isinstance(s, int) or s < 0:
            raise ValueError(f"augment_shift must be a non-negative int, got {s!r}")
        if s and self.task != "multidigit":
            raise ValueError("augment_shift exists for the multidigit task only")
        c = self.cnn_chunk
        if isinstance(c, bool) or not isinstance(c, int) or c < 0:
            raise ValueError(f"cnn_chunk must be a non-negative int, got {c!r}")
        if c and self.task != "multidigit":
            raise ValueError("cnn_chunk exists for the multidigit task only")
        t = self.tau
        if t is not None and (isinstance(t, bool) or not isinstance(t, int | float)
                              or not math.isfinite(t) or t <= 0):  # fmt: skip
            raise ValueError(f"tau must be a finite number > 0 or None, got {t!r}")
        if t is not None and RELAXATION_METHODS[self.method]["head"].get("head") == "hste":
            raise ValueError(f"method {self.method!r} has no temperature to set (tau)")
        if RELAXATION_METHODS[self.method].get("layout") and self.task != "multidigit":
            raise ValueError(f"method {self.method!r} exists for the multidigit task only")

    def to_dict(self) -> dict:
        """The identity of the run: every field (the later ones only when set) and the head."""
        d = harness.config_dict(self, added=_ADDED_FIELDS)
        d["head"] = _head_options(self)
        return d


#: Fields added after cells were recorded: left out of a run's identity at their default, so
#: the recorded cells stay current.
_ADDED_FIELDS = {"augment_shift": 0, "cnn_chunk": 0, "tau": None}


def _head_options(config: RelaxationsConfig) -> dict:
    """The method's head options, with ``config.tau`` when set."""
    opts = dict(RELAXATION_METHODS[config.method]["head"])
    if config.tau is not None:
        opts["tau"] = float(config.tau)
    return opts


def available(method: str) -> str | None:
    """``None`` if ``method`` can run here, else why not (with the install command)."""
    peer = RELAXATION_METHODS[method].get("peer")
    if peer and not _PEERS[peer]():
        return f"needs the package {peer}: {_INSTALL[peer]}"
    return None


# --------------------------------------------------------------------------- models


def _head(config: RelaxationsConfig) -> PermutationHead | SortRelaxation | SoftRank:
    spec = RELAXATION_METHODS[config.method]
    opts = _head_options(config)
    if spec["family"] == "ranks":
        opts.pop("kind")
        return SoftRank(config.n, **opts)
    if spec["family"] == "scores":
        return SortRelaxation(opts.pop("kind"), config.n, **opts)
    return PermutationHead(opts.pop("head"), **opts)


def build(config: RelaxationsConfig, generator: torch.Generator | None = None) -> torch.nn.Module:
    """A freshly initialized network for ``config``."""
    head = _head(config)
    if config.task == "multidigit":
        return MultiDigitSorter(config.n, head, config.n_digits, chunk=config.cnn_chunk or None,
                                generator=generator)
    if isinstance(head, SortRelaxation | SoftRank):
        return ScoreSortingNetwork(config.n, config.hidden, head, generator=generator)
    return SortingNetwork(config.n, config.hidden, head, generator=generator)


def _digits(config: RelaxationsConfig) -> ImageSplit:
    """The MNIST digits of ``config`` (the jigsaw runner's per-process cache)."""
    from permlib.experiments.jigsaw import load_data

    return load_data("mnist", config.data_dir)


def multidigit_loss(perms: torch.Tensor, perm: torch.Tensor, *, hard: bool = False,
                    layout: str = "items") -> torch.Tensor:  # fmt: skip
    """The loss of the multi-digit task, a scalar.

    ``perms``: ``(S, B, n, n)`` relaxed matrices (rows items, columns positions); ``perm``:
    ``(B, n)`` the true positions. Soft matrices: Grover et al.'s cross-entropy, each
    position's column against the one-hot of the item that belongs there,
    ``-mean log(P[true item, position] + 1e-20)``. With ``layout="positions"`` the rows are
    read as positions instead (their Sinkhorn baselines' layout). Hard matrices (``hard``,
    HSTE): the mean squared error to the true matrix (a cross-entropy of a 0/1 matrix is
    infinite).
    """
    target = permutation_matrix(perm, dtype=perms.dtype)  # (B, n, n)
    if hard:
        return (perms - target).square().mean()
    if layout == "positions":
        target = target.transpose(-1, -2)
    return -(target * torch.log(perms + 1e-20)).sum(dim=-2).mean()


def train(
    config: RelaxationsConfig,
    *,
    checkpoint: str | Path | None = None,
    until: int | None = None,
    progress: bool = True,
    device: str | torch.device = "cpu",
) -> FitResult:
    """Train one cell with :func:`permlib.experiments.harness.fit`; resumable."""
    reason = available(config.method)
    if reason:
        raise RuntimeError(f"method {config.method!r} {reason}")
    gens = harness.generators(config.seed, _STREAMS)
    if torch.device(device).type != "cpu":
        gens["noise"] = harness.generators(config.seed, _STREAMS, device=device)["noise"]
    model = build(config, generator=gens["init"]).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    scheduler = None
    if config.lr_schedule == "cosine":
        scheduler = harness.cosine_schedule(opt, config.n_steps)
    spec = RELAXATION_METHODS[config.method]
    if config.task == "numbers":

        def batch(step: int):
            return sample_sorting_batch(config.batch_size, config.n, generator=gens["data"],
                                        device=device)  # fmt: skip

        def loss(m, b):
            return m.loss(b.x, b.x_sorted, generator=gens["noise"])
    else:
        data = _digits(config)
        hard = spec["head"].get("head") == "hste"
        layout = spec.get("layout", "items")
        ranks = spec["family"] == "ranks"

        def batch(step: int):
            return sample_multidigit_batch(data.train, data.train_labels, config.batch_size,
                                           config.n, config.n_digits,
                                           shift=config.augment_shift, generator=gens["data"],
                                           device=device)  # fmt: skip

        def loss(m, b):
            out = m(b.images, generator=gens["noise"])
            if ranks:
                return rank_loss(out, b.perm)
            return multidigit_loss(out, b.perm, hard=hard, layout=layout)

    return harness.fit(model, loss, batch, opt, config.n_steps, scheduler=scheduler,
                       generators=gens, device=device, checkpoint=checkpoint,
                       identity=config.to_dict(), until=until, progress=progress,
                       desc=f"{config.method} {config.task} n={config.n}")  # fmt: skip


# --------------------------------------------------------------------------- evaluation


def _decode_grover(log_alpha: torch.Tensor, layout: str) -> torch.Tensor:
    """Grover et al.'s decoding of a Sinkhorn baseline: the row argmax of ``S(log_alpha /
    1e-10)`` after 20 iterations, returned as positions of items ``(B, n)`` (not necessarily a
    permutation). In the ``"positions"`` layout a row's argmax names the item at that position;
    the positions of items are then read back by scattering (a position named twice keeps one
    item, an item named by no position gets ``-1``)."""
    rows = sinkhorn(log_alpha.double(), tau=1e-10, n_iters=20).argmax(dim=-1)
    if layout == "items":
        return rows
    out = torch.full_like(rows, -1)
    items = torch.arange(rows.shape[-1], device=rows.device).expand_as(rows).contiguous()
    return out.scatter_(-1, rows, items)


@torch.no_grad()
def evaluate(model: torch.nn.Module, config: RelaxationsConfig, *, split: str = "test",
             chunk: int = 100) -> dict:  # fmt: skip
    """Test a trained network on ``config.n_test`` lists drawn from the seed's test stream.

    ``split="train"`` (multidigit task only) draws the lists from the *training* digits instead,
    from a stream of their own: the same network's score on digits it has seen, to tell
    underfitting (low on both) from overfitting (high on the training digits only).

    Returns ``exact_match``, ``elementwise`` (share of items in their right position),
    ``prop_any_wrong`` (``1 - exact_match``, the sorting chapter's P.A.W.), ``prop_wrong``,
    ``kendall_tau_papers``; for the multidigit task's Sinkhorn-family rows also
    ``exact_match_grover`` and ``elementwise_grover`` (Grover et al.'s decoding) and the share
    of those decodings that are not permutations.
    """
    if split not in ("test", "train"):
        raise ValueError(f"split must be 'test' or 'train', got {split!r}")
    if split == "train" and config.task != "multidigit":
        raise ValueError("split='train' exists for the multidigit task only (the numbers task "
                         "draws its training and test lists from one distribution)")
    model.eval()
    spec = RELAXATION_METHODS[config.method]
    layout = spec.get("layout", "items")
    gen = harness.generators(config.seed, _EVAL_STREAMS)["test" if split == "test"
                                                         else "train_eval"]  # fmt: skip
    device = next(model.parameters()).device
    data = _digits(config) if config.task == "multidigit" else None
    sums: dict[str, float] = {}
    done = 0
    while done < config.n_test:
        b = min(chunk, config.n_test - done)
        if data is None:
            batch = sample_sorting_batch(b, config.n, generator=gen, device=device)
            inputs, perm = batch.x, batch.perm
        else:
            images, labels = ((data.test, data.test_labels) if split == "test"
                              else (data.train, data.train_labels))
            batch = sample_multidigit_batch(images, labels, b, config.n, config.n_digits,
                                            generator=gen, device=device)  # fmt: skip
            inputs, perm = batch.images, batch.perm
        pred = model.predict(inputs)
        if layout == "positions":  # the matching of the rows read as positions
            pred = invert_permutation(pred)
        vals = {
            "exact_match": (pred == perm).all(dim=-1).double(),
            "elementwise": (pred == perm).double().mean(dim=-1),
            "kendall_tau_papers": metrics.kendall_tau(pred, perm, reduction="none",
                                                      convention="papers").double(),
        }
        if data is not None and spec["family"] == "matrix":
            grover = _decode_grover(model.logits(inputs), layout)
            vals["exact_match_grover"] = (grover == perm).all(dim=-1).double()
            vals["elementwise_grover"] = (grover == perm).double().mean(dim=-1)
            ok = torch.sort(grover, dim=-1).values == torch.arange(config.n, device=device)
            vals["not_a_permutation_grover"] = (~ok.all(dim=-1)).double()
        for k, v in vals.items():
            sums[k] = sums.get(k, 0.0) + float(v.sum())
        done += b
    out = {k: v / config.n_test for k, v in sums.items()}
    out["prop_any_wrong"] = 1.0 - out["exact_match"]
    out["prop_wrong"] = 1.0 - out["elementwise"]
    return out


def run_cell(config: RelaxationsConfig, *, checkpoint: str | Path | None = None,
             progress: bool = True, keep_model: bool = False,
             device: str | torch.device = "cpu") -> dict:  # fmt: skip
    """Train and test one configuration; a JSON-ready record (and ``model``, ``losses``)."""
    tr = train(config, checkpoint=checkpoint, progress=progress, device=device)
    t0 = time.perf_counter()
    res = evaluate(tr.model, config)
    out = {"config": config.to_dict(), "source": RELAXATION_METHODS[config.method]["source"],
           "metrics": res, "train": tr.summary(),
           "eval_wall_s": round(time.perf_counter() - t0, 2)}  # fmt: skip
    if config.task == "multidigit":
        out["data"] = _digits(config).source
    out["wall_s"] = round(tr.wall_s + out["eval_wall_s"], 2)
    if keep_model:
        out["model"], out["losses"] = tr.model, tr.losses
    return out


# --------------------------------------------------------------------------- the grid


class RelaxationsExperiment(harness.Experiment):
    """The relaxations runner: tables ``numbers`` and ``multidigit``."""

    name, config_cls, axes, tables = "relaxations", RelaxationsConfig, AXES, TABLES

    def table_meta(self, table: str) -> dict:
        spec = TABLES[table]
        return {"title": spec["title"], "protocol": spec["protocol"]}

    def cells(self, table, seeds, selection, only, overrides):
        spec = TABLES[table]
        grid = [({"method": m, "n": n, "seed": seed}, None)
                for seed in seeds for n in spec["ns"] for m in spec["methods"]]  # fmt: skip
        # configs of the selected cells only: an override may not apply to every method
        keep = [(cell, RelaxationsConfig(**(spec["protocol"] | cell | dict(overrides))))
                for cell, _ in harness.select_cells(
                    grid, {k: v for k, v in selection.items() if k != "seed"}, only)]  # fmt: skip
        missing = sorted({c.method for _, c in keep if available(c.method)})
        for m in missing:
            print(f"skipping {m}: {available(m)}")
        return [(cell, c) for cell, c in keep if c.method not in missing]

    def identity(self, config: RelaxationsConfig) -> dict:
        return config.to_dict()

    def run_cell(self, config, *, checkpoint, progress, device):
        return harness.model_record(run_cell(config, checkpoint=checkpoint, progress=progress,
                                             keep_model=True, device=device))  # fmt: skip

    def recompute(self, config: RelaxationsConfig, artifacts: dict) -> dict:
        model = build(config)
        model.load_state_dict(artifacts["model.pt"])
        return evaluate(model, config)

    def ci(self, *, seed=0, progress=False, device="cpu", **overrides):
        task = overrides.pop("task", "numbers")
        config = RelaxationsConfig(**(_CI[task] | {"seed": seed} | overrides))
        out = run_cell(config, progress=progress, keep_model=True, device=device)
        out["provenance"] = harness.provenance(seed=seed, mode="ci", device=device)
        return out

    def ci_table(self, out: dict) -> str:
        rows = [{"quantity": k, "value": v} for k, v in out["metrics"].items()]
        return harness.markdown_table(rows, ["quantity", "value"], digits=3)


EXPERIMENT = RelaxationsExperiment()
store = EXPERIMENT.store
load_results = EXPERIMENT.load_results
run_table = EXPERIMENT.run_table
main = EXPERIMENT.main


# --------------------------------------------------------------------------- comparison


def compare_multidigit(results: dict | None, paper: dict, *, decode: str = "matching"):
    """Grover et al.'s Table 1 beside ours: one row per (method, n, metric) with paper / ours /
    sd / n_seeds / gap / status (:func:`permlib.experiments.harness.compare`).

    ``decode``: ``"matching"`` (ours: exact matching) or ``"grover"`` (their row-argmax
    decoding, for the Sinkhorn-family rows).
    """
    by_name = {v: k for k, v in PAPER_NAMES.items() if k != "gumbel_sinkhorn_grover"}
    rows = []
    for r in paper["neuralsort_multidigit_table1"]["rows"]:
        for metric in ("exact_match", "elementwise"):
            rows.append({"method": by_name[r["method"]], "n": r["n"], "metric": metric,
                         "paper": r[metric]})  # fmt: skip
    ours = []
    for rec in (results or {}).get("cells", []):
        cell, m = rec["cell"], rec["metrics"]
        for metric in ("exact_match", "elementwise"):
            key = f"{metric}_grover" if decode == "grover" and f"{metric}_grover" in m else metric
            ours.append({"method": cell["method"], "n": cell["n"], "metric": metric,
                         "seed": cell["seed"], "value": m[key]})  # fmt: skip
    return harness.compare(rows, ours, ("method", "n", "metric"), higher_is_better=True, digits=3)


def multidigit_table(results: dict | None, paper: dict, *, decode: str = "matching"):
    """Grover et al.'s Table 1 in its own shape, with ours interleaved: a pandas DataFrame with
    one row per (method, source) (``source``: ``"paper"`` or ``"ours"``) and one column per
    ``n``, each cell ``"exact (element-wise)"``; ours are means over seeds, followed by the
    number of seeds in brackets. Methods without a published row get ours only.

    ``decode``: ``"matching"`` or ``"grover"`` (the Sinkhorn-family rows decoded their way;
    the other rows have only one decoding and are left out).
    """
    import pandas as pd

    ns = TABLES["multidigit"]["ns"]
    by_name = {v: k for k, v in PAPER_NAMES.items() if k != "gumbel_sinkhorn_grover"}
    published: dict[str, dict] = {}
    for r in paper["neuralsort_multidigit_table1"]["rows"]:
        published.setdefault(by_name[r["method"]], {})[r["n"]] = (r["exact_match"],
                                                                  r["elementwise"])
    ours: dict[str, dict] = {}
    for rec in (results or {}).get("cells", []):
        method, n, m = rec["cell"]["method"], rec["cell"]["n"], rec["metrics"]
        if decode == "grover":
            if "exact_match_grover" not in m:
                continue
            m = {"exact_match": m["exact_match_grover"], "elementwise": m["elementwise_grover"]}
        ours.setdefault(method, {}).setdefault(n, []).append((m["exact_match"],
                                                             m["elementwise"]))
    methods = [m for m in TABLES["multidigit"]["methods"] if m in published or m in ours]
    if decode == "grover":
        methods = [m for m in methods if RELAXATION_METHODS[m]["family"] == "matrix"]
    rows = []
    for method in methods:
        if method in published:
            rows.append({"method": method, "source": "paper"} | {
                f"n = {n}": f"{e:.3f} ({w:.3f})" for n, (e, w) in published[method].items()})
        if method in ours:
            cells = {}
            for n, vals in ours[method].items():
                e = sum(v[0] for v in vals) / len(vals)
                w = sum(v[1] for v in vals) / len(vals)
                cells[f"n = {n}"] = f"{e:.3f} ({w:.3f}) [{len(vals)}]"
            rows.append({"method": method, "source": "ours"} | cells)
    return pd.DataFrame(rows, columns=["method", "source", *(f"n = {n}" for n in ns)])


def layout_ceiling(n: int) -> dict[str, float]:
    """What a network trained in Grover et al.'s baseline layout can score at best, if it learns
    each image's rank perfectly: ``{"exact_match", "elementwise"}`` for uniformly random lists.

    Each image's row then names the image's own rank ``sigma(k)``, while the target row ``k``
    names the image at position ``k``, ``sigma^-1(k)``. Row ``k`` is right when
    ``sigma(sigma(k)) = k``: the whole list is right when ``sigma`` is an involution, a
    fraction ``I(n) / n!`` of the permutations (``I(n) = I(n - 1) + (n - 1) I(n - 2)``), and the
    expected number of right rows is 2 for ``n >= 2`` (one fixed point, plus two points of
    one 2-cycle, on average).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    inv = [1, 1]
    for k in range(2, n + 1):
        inv.append(inv[k - 1] + (k - 1) * inv[k - 2])
    return {"exact_match": inv[n] / math.factorial(n), "elementwise": min(1.0, 2.0 / n)}


def run(mode: str = "ci", task: str = "numbers", seed: int = 0, progress: bool = False,
        threads: int | None = 1, device: str | torch.device = "cpu",
        **overrides) -> dict:  # fmt: skip
    """Run from Python (the notebook's entry point): ``mode="ci"`` trains one small cell of
    ``task`` and returns its record with ``model`` and ``losses``; ``mode="full"`` runs the
    task's table for ``seed`` (resumable)."""
    if mode not in ("ci", "full"):
        raise ValueError(f"mode must be 'ci' or 'full', got {mode!r}")
    with harness.torch_threads(threads):
        if mode == "full":
            return run_table(task, seeds=(seed,), progress=progress, device=device,
                             overrides=overrides)  # fmt: skip
        return EXPERIMENT.ci(seed=seed, progress=progress, device=device, task=task, **overrides)


def seeds_summary(results: dict | None, metrics_: Sequence[str] = ("exact_match", "elementwise")):
    """Mean and sd over seeds of each (method, n): a pandas DataFrame."""
    import pandas as pd

    rows = [{"method": r["cell"]["method"], "n": r["cell"]["n"], "seed": r["cell"]["seed"],
             **{k: r["metrics"].get(k) for k in metrics_}}
            for r in (results or {}).get("cells", [])]  # fmt: skip
    if not rows:
        return pd.DataFrame(columns=["method", "n", "n_seeds"])
    df = pd.DataFrame(rows)
    agg = df.groupby(["method", "n"])[list(metrics_)].agg(["mean", "std"])
    agg.columns = [f"{a}_{b}" for a, b in agg.columns]
    agg["n_seeds"] = df.groupby(["method", "n"]).size()
    return agg.reset_index()


if __name__ == "__main__":
    raise SystemExit(main())
