"""Assembly of arbitrary MNIST digits from pieces (Mena et al., 2017, section 4.3 and Fig. 1b),
judged by a CNN; one runner over the shared harness.

The jigsaw network of :mod:`permlib.experiments.jigsaw` with ten output heads sharing the piece
CNN, one per digit: during training each digit is scrambled and put back through the head of its
own class. At test time the pieces of a digit ``a`` go through the head of another digit ``b``,
and the reassembled image should look like a ``b``. A digit classifier (the judge, the classic
two-convolution MNIST network) reads every reassembled test image; the *agreement* is the share
it reads as the target ``b`` (Mena et al.: 85.1 %, with a judge of 99.2 % test accuracy).

Our choices where the paper is silent (each a :class:`AssemblyConfig` field): a 10 x 10 grid of
3-pixel pieces of digits resized to 30 pixels (the paper's "10 x 10 scrambled pieces"), the
jigsaw CNN (64 channels, affine map with bias), Adam with learning rate ``1e-3``, batches of 32,
1,000 steps; the judge: Adam ``1e-3``, batches of 50, 10 epochs, dropout 0.5. The agreement is
the mean over every (source, target) pair with source != target.

Usage (from the repository root)::

    python -m permlib.experiments.assembly --mode ci       # small, seconds
    python -m permlib.experiments.assembly --mode full     # 3 heads x 3 seeds, resumable
    python -m permlib.experiments.assembly --mode full --data-dir ~/mnist   # full MNIST

The judge is trained once per results folder and data set (``assembly_judge.json``, its weights
an artifact); every assembly cell records the SHA-256 of the judge it was scored with.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from permlib import metrics
from permlib.data.images import ImageSplit
from permlib.data.jigsaw import from_pieces, sample_jigsaw_batch, tile
from permlib.data.sampling import epoch_index
from permlib.experiments import harness
from permlib.experiments.harness import FitResult
from permlib.experiments.methods import METHODS
from permlib.nn import JigsawNetwork, reconstruct
from permlib.nn.classifier import DigitClassifier
from permlib.permutations import permutation_matrix

__all__ = [
    "AXES",
    "EXPERIMENT",
    "TABLES",
    "AssemblyConfig",
    "AssemblyExperiment",
    "class_templates",
    "evaluate",
    "example",
    "judge",
    "main",
    "pixel_assembly",
    "pixel_limit",
    "run",
    "run_table",
    "train",
    "train_judge",
]

AXES = ("method", "seed")
N_DIGITS = 10


@dataclass(frozen=True)
class AssemblyConfig:
    """One assembly run (a cell) and the judge it is scored with.

    Attributes:
        method: a key of :data:`permlib.experiments.methods.METHODS`.
        grid: pieces per side (10: the paper's "10 x 10 scrambled pieces").
        tiling: how a 28-pixel digit is cut (``"resize"``: to 30 pixels for a 10 x 10 grid).
        conv_channels, bias: the piece CNN and its affine map (our choice: 64, with bias).
        lr, batch_size, n_steps: Adam learning rate, digits per step, steps (our choice).
        n_eval: test digits per source class (all of them when larger).
        seed: seeds the initialization, data order, scrambles, noise and test scrambles.
        data_dir: folder of the MNIST IDX files (``None``: the 5,000 bundled digits).
        judge_epochs, judge_lr, judge_batch, judge_seed: the judge's training (our choice).
    """

    method: str = "gumbel_sinkhorn"
    grid: int = 10
    tiling: str = "resize"
    conv_channels: int = 64
    bias: bool = True
    lr: float = 1e-3
    batch_size: int = 32
    n_steps: int = 1000
    n_eval: int = 100
    seed: int = 0
    data_dir: str | None = None
    judge_epochs: int = 10
    judge_lr: float = 1e-3
    judge_batch: int = 50
    judge_seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {tuple(METHODS)}, got {self.method!r}")
        for name in ("grid", "batch_size", "n_eval", "judge_epochs", "judge_batch"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")

    def to_dict(self) -> dict:
        return harness.config_dict(self)

    def judge_identity(self) -> dict:
        """What makes two judges the same judge."""
        return {"data_dir": self.data_dir, "epochs": self.judge_epochs, "lr": self.judge_lr,
                "batch_size": self.judge_batch, "seed": self.judge_seed}  # fmt: skip


TABLES: dict[str, dict] = {
    "agreement": {
        "title": "Mena et al. (2017), section 4.3: assembly of arbitrary MNIST digits",
        "methods": ("gumbel_sinkhorn", "hste", "gumbel_sinkhorn_implicit"),
    },
}
_CI = {"n_steps": 100, "batch_size": 16, "n_eval": 10, "judge_epochs": 1}
_STREAMS = ("init", "data", "noise", "test")


def _data(config: AssemblyConfig) -> ImageSplit:
    from permlib.experiments.jigsaw import load_data

    return load_data("mnist", config.data_dir)


# --------------------------------------------------------------------------- the judge


def train_judge(config: AssemblyConfig, *, progress: bool = False,
                device: str | torch.device = "cpu") -> dict:  # fmt: skip
    """Train the judge on the training digits; ``{"model", "test_accuracy", "wall_s",
    "steps"}``. Dropout draws from torch's global generator, seeded from ``judge_seed`` inside a
    forked RNG state (the caller's state is left as it was)."""
    data = _data(config)
    x, y = data.train, data.train_labels
    steps = config.judge_epochs * (x.shape[0] // config.judge_batch)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.judge_seed)
        gen = torch.Generator().manual_seed(config.judge_seed)
        model = DigitClassifier(generator=gen).to(device)
        opt = torch.optim.Adam(model.parameters(), lr=config.judge_lr)

        def batch(step: int):
            i = epoch_index(step, x.shape[0], config.judge_batch, config.judge_seed)
            return x[i].to(device), y[i].to(device)

        fit = harness.fit(model, lambda m, b: F.cross_entropy(m(b[0]), b[1]), batch, opt, steps,
                          device=device, progress=progress, desc="judge")  # fmt: skip
    acc = (fit.model.predict(data.test.to(device)).cpu() == data.test_labels).double().mean()
    return {"model": fit.model.eval(), "test_accuracy": float(acc), "wall_s": fit.wall_s,
            "steps": fit.step}  # fmt: skip


def _judge_store(results_dir: str | Path | None) -> harness.ResultsStore:
    return harness.ResultsStore(harness.results_dir(results_dir), "assembly", "judge", ("seed",),
                                meta={"title": "the judge: a digit classifier"})  # fmt: skip


_JUDGES: dict[tuple, tuple[DigitClassifier, dict]] = {}


def judge(config: AssemblyConfig, results_dir: str | Path | None = None, *,
          progress: bool = False) -> tuple[DigitClassifier, dict]:  # fmt: skip
    """The judge for ``config``: loaded from ``<results dir>/assembly_judge.json`` (checked
    against its SHA-256) or trained and stored there first. Returns ``(model, info)`` with
    ``info = {"test_accuracy", "sha256", "data"}``."""
    store = _judge_store(results_dir)
    key = (str(store.path), tuple(sorted(config.judge_identity().items())))
    if key in _JUDGES:
        return _JUDGES[key]
    cell = {"seed": config.judge_seed}

    def run_one(cell: dict, identity: dict, ckpt: Path) -> dict:
        out = train_judge(config, progress=progress)
        return {"metrics": {"test_accuracy": out["test_accuracy"]}, "data": _data(config).source,
                "train": {"wall_s": round(out["wall_s"], 2), "steps": out["steps"]},
                "wall_s": round(out["wall_s"], 2),
                "artifacts": {"judge.pt": out["model"].state_dict()}}  # fmt: skip

    data = harness.run_grid(store, [(cell, config.judge_identity())], run_one,
                            identity=lambda ident: ident, checkpoint_dir=store.path.parent,
                            on_stale="rerun", progress=False)  # fmt: skip
    rec = harness.select_records(data, seed=config.judge_seed)[0]
    model = DigitClassifier()
    model.load_state_dict(store.load_artifact(rec, "judge.pt"))
    info = {"test_accuracy": rec["metrics"]["test_accuracy"], "data": rec["data"],
            "sha256": rec["provenance"]["artifacts"]["judge.pt"]["sha256"]}  # fmt: skip
    _JUDGES[key] = (model.eval(), info)
    return _JUDGES[key]


# --------------------------------------------------------------------------- training


def build(config: AssemblyConfig, generator: torch.Generator | None = None) -> JigsawNetwork:
    """The assembly network: the jigsaw CNN with one head per digit."""
    probe = tile(torch.zeros(1, 1, 28, 28), config.grid, config.tiling)
    return JigsawNetwork(config.grid, probe.shape[-1] // config.grid, 1, config.conv_channels,
                         bias=config.bias, n_heads=N_DIGITS, generator=generator,
                         **METHODS[config.method])  # fmt: skip


def train(
    config: AssemblyConfig,
    *,
    checkpoint: str | Path | None = None,
    until: int | None = None,
    progress: bool = True,
    device: str | torch.device = "cpu",
) -> FitResult:
    """Train the assembly network: every digit scrambled and put back through its own class's
    head, the jigsaw loss; resumable from ``checkpoint``."""
    data = _data(config)
    gens = harness.generators(config.seed, _STREAMS)
    if torch.device(device).type != "cpu":
        gens["noise"] = harness.generators(config.seed, _STREAMS, device=device)["noise"]
    model = build(config, generator=gens["init"]).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)

    def batch(step: int):
        index = epoch_index(step, data.train.shape[0], config.batch_size, config.seed)
        b = sample_jigsaw_batch(data.train, config.grid, tiling=config.tiling, index=index,
                                generator=gens["data"], device=device)  # fmt: skip
        return b, data.train_labels[index].to(device)

    return harness.fit(
        model,
        lambda m, b: m.loss(b[0].scrambled, b[0].pieces, b[1], generator=gens["noise"]),
        batch, opt, config.n_steps, generators=gens, device=device, checkpoint=checkpoint,
        identity=config.to_dict(), until=until, progress=progress,
        desc=f"assembly {config.method}",
    )  # fmt: skip


# --------------------------------------------------------------------------- evaluation


def _test_digits(data: ImageSplit, n_eval: int) -> torch.Tensor:
    """The first ``n_eval`` test digits of each class, in class order."""
    return torch.cat([torch.nonzero(data.test_labels == d).flatten()[:n_eval]
                      for d in range(N_DIGITS)])  # fmt: skip


@torch.no_grad()
def assemble(model: JigsawNetwork, scrambled: torch.Tensor, target: int) -> torch.Tensor:
    """Pieces ``(B, N, 1, p, p)`` put together by head ``target``: images ``(B, 1, 28, 28)``
    (resized back to MNIST's side for the judge)."""
    head = torch.full((scrambled.shape[0],), target, dtype=torch.long, device=scrambled.device)
    pred = model.predict(scrambled, head)
    put = reconstruct(permutation_matrix(pred, dtype=scrambled.dtype), scrambled, item_dims=3)
    img = from_pieces(put, model.grid)
    if img.shape[-1] != 28:
        img = F.interpolate(img, size=(28, 28), mode="bilinear", align_corners=False)
    return img


class _Agreement:
    """The judge's readings of assembled test digits, accumulated per (source, target) pair."""

    def __init__(self, labels: torch.Tensor) -> None:
        self.hits = torch.zeros(N_DIGITS, N_DIGITS, dtype=torch.float64)
        self.source = torch.zeros(N_DIGITS, N_DIGITS, dtype=torch.float64)
        self.counts = torch.bincount(labels, minlength=N_DIGITS).double()

    def add(self, labels: torch.Tensor, target: int, read: torch.Tensor) -> None:
        """``read``: the judge's classes of the digits ``labels`` put together as ``target``."""
        read, labels = read.cpu(), labels.cpu()
        self.hits[:, target].index_add_(0, labels, (read == target).double())
        self.source[:, target].index_add_(0, labels, (read == labels).double())

    def summary(self) -> dict:
        share = self.hits / self.counts[:, None]
        off = ~torch.eye(N_DIGITS, dtype=torch.bool)
        return {
            "agreement": float(share[off].mean()),
            "own_head": float(share.diagonal().mean()),
            "reads_as_source": float((self.source / self.counts[:, None])[off].mean()),
            "agreement_matrix": share.tolist(),
            "n_test_digits": int(self.counts.sum()),
        }


@torch.no_grad()
def evaluate(model: JigsawNetwork, judge_model: DigitClassifier, config: AssemblyConfig,
             *, chunk: int = 250) -> dict:  # fmt: skip
    """The judge's reading of every test digit put together by every head.

    Returns ``agreement`` (mean over source != target of the share read as the target),
    ``agreement_matrix`` (10 x 10, rows source digits, columns target heads; the diagonal is a
    digit put back by its own head), ``reads_as_source`` (source != target pairs the judge reads
    as the source digit), ``own_head`` (the diagonal's mean) and, for the own head, the jigsaw
    metrics ``prop_wrong`` and ``l1``.
    """
    data = _data(config)
    device = next(model.parameters()).device
    judge_model = judge_model.to(device)
    index = _test_digits(data, config.n_eval)
    labels = data.test_labels[index]
    gen = harness.generators(config.seed, _STREAMS)["test"]
    tally = _Agreement(labels)
    wrong = l1 = 0.0
    for start in range(0, len(index), chunk):
        idx, lab = index[start : start + chunk], labels[start : start + chunk]
        b = sample_jigsaw_batch(data.test, config.grid, tiling=config.tiling, index=idx,
                                generator=gen, device=device)  # fmt: skip
        own = model.predict(b.scrambled, lab.to(device))
        wrong += float(metrics.prop_wrong(own, b.perm, reduction="none").sum())
        put = reconstruct(permutation_matrix(own, dtype=b.scrambled.dtype), b.scrambled,
                          item_dims=3)  # fmt: skip
        l1 += float(metrics.l1_error(put.flatten(1), b.pieces.flatten(1), dim=-1).sum())
        for target in range(N_DIGITS):
            tally.add(lab, target, judge_model.predict(assemble(model, b.scrambled, target)))
    out = tally.summary()
    return out | {"prop_wrong": wrong / len(index), "l1": l1 / len(index)}


# --------------------------------------------------------------------------- one-pixel pieces


def pixel_assembly(images: torch.Tensor, templates: torch.Tensor) -> torch.Tensor:
    """The limit of 1 x 1 pieces: each image's pixels moved to where its template is brightest.

    With one-pixel pieces a piece is only an intensity, and the best a head can do for a target
    class is to maximize ``sum_p out[p] * template[p]`` over the permutations of the source's
    pixels. That score matrix (value ``x_i`` at position ``p``: ``x_i * t_p``) has rank one, so
    by the rearrangement inequality the optimal matching pairs the ``k``-th smallest pixel value
    with the ``k``-th smallest template pixel: a sort solves it exactly (ties broken by flat
    position, stably).

    Args:
        images: ``(..., H, W)`` floating source images.
        templates: ``(..., H, W)`` floating, broadcastable against ``images``.

    Returns:
        ``(..., H, W)`` in the broadcast shape: each image's pixel values, permuted.
    """
    for name, t in (("images", images), ("templates", templates)):
        if not isinstance(t, torch.Tensor) or not t.is_floating_point() or t.dim() < 2:
            raise ValueError(f"{name} must be a floating tensor of shape (..., H, W), got "
                             f"{type(t).__name__} {getattr(t, 'shape', '')}")  # fmt: skip
    if images.shape[-2:] != templates.shape[-2:]:
        hw = (tuple(images.shape[-2:]), tuple(templates.shape[-2:]))
        raise ValueError(f"images and templates must have the same (H, W), got {hw[0]} and {hw[1]}")
    images, templates = torch.broadcast_tensors(images, templates)
    values = images.flatten(-2).sort(dim=-1, stable=True).values
    where = templates.flatten(-2).argsort(dim=-1, stable=True)
    return torch.empty_like(values).scatter_(-1, where, values).reshape(images.shape)


def class_templates(config: AssemblyConfig) -> torch.Tensor:
    """The mean training digit of each class: ``(10, 28, 28)``."""
    data = _data(config)
    return torch.stack([data.train[data.train_labels == d, 0].mean(0) for d in range(N_DIGITS)])


@torch.no_grad()
def pixel_limit(judge_model: DigitClassifier, config: AssemblyConfig, *,
                chunk: int = 250) -> dict:  # fmt: skip
    """The judge's reading of every test digit with its pixels rearranged onto each class's mean
    training digit (:func:`pixel_assembly`): the one-pixel limit of the assembly task, with no
    network. Returns the agreement keys of :func:`evaluate` (``agreement``, ``own_head``,
    ``reads_as_source``, ``agreement_matrix``, ``n_test_digits``)."""
    data = _data(config)
    device = next(judge_model.parameters()).device
    templates = class_templates(config).to(device)
    index = _test_digits(data, config.n_eval)
    labels = data.test_labels[index]
    tally = _Agreement(labels)
    for start in range(0, len(index), chunk):
        lab = labels[start : start + chunk]
        digits = data.test[index[start : start + chunk], 0].to(device)
        for target in range(N_DIGITS):
            moved = pixel_assembly(digits, templates[target])
            tally.add(lab, target, judge_model.predict(moved[:, None]))
    return tally.summary()


def run_cell(config: AssemblyConfig, judged_by: tuple[DigitClassifier, dict], *,
             checkpoint: str | Path | None = None, progress: bool = True,
             keep_model: bool = False, device: str | torch.device = "cpu") -> dict:  # fmt: skip
    """Train and score one configuration; a JSON-ready record (and ``model``, ``losses``)."""
    tr = train(config, checkpoint=checkpoint, progress=progress, device=device)
    t0 = time.perf_counter()
    res = evaluate(tr.model, judged_by[0], config)
    out = {
        "config": config.to_dict(),
        "data": _data(config).source,
        "judge": judged_by[1],
        "metrics": res,
        "train": tr.summary(),
        "eval_wall_s": round(time.perf_counter() - t0, 2),
    }
    out["wall_s"] = round(tr.wall_s + out["eval_wall_s"], 2)
    if keep_model:
        out["model"], out["losses"] = tr.model, tr.losses
    return out


class AssemblyExperiment(harness.Experiment):
    """The assembly runner: the heads of :data:`TABLES` over seeds."""

    name, config_cls, axes, tables = "assembly", AssemblyConfig, AXES, TABLES
    _results_dir: str | Path | None = None

    def cells(self, table, seeds, selection, only, overrides):
        out = [({"method": m, "seed": s}, AssemblyConfig(method=m, seed=s, **overrides))
               for s in seeds for m in TABLES[table]["methods"]]  # fmt: skip
        return harness.select_cells(out, {k: v for k, v in selection.items() if k != "seed"},
                                    only)  # fmt: skip

    def identity(self, config: AssemblyConfig) -> dict:
        return config.to_dict()

    def run_table(self, table, *, results_dir=None, **kw):
        self._results_dir = results_dir
        return super().run_table(table, results_dir=results_dir, **kw)

    def verify(self, table, cell, results_dir=None):
        self._results_dir = results_dir
        return super().verify(table, cell, results_dir)

    def run_cell(self, config, *, checkpoint, progress, device):
        judged_by = judge(config, self._results_dir, progress=progress)
        return harness.model_record(run_cell(config, judged_by, checkpoint=checkpoint,
                                             progress=progress, keep_model=True,
                                             device=device))  # fmt: skip

    def recompute(self, config: AssemblyConfig, artifacts: dict) -> dict:
        model = build(config)
        model.load_state_dict(artifacts["model.pt"])
        return evaluate(model.eval(), judge(config, self._results_dir)[0], config)

    def ci(self, *, seed=0, progress=False, device="cpu", **overrides):
        config = AssemblyConfig(**(_CI | {"seed": seed} | overrides))
        out_judge = train_judge(config, progress=progress, device=device)
        judged_by = (out_judge["model"], {"test_accuracy": out_judge["test_accuracy"],
                                          "sha256": None, "data": _data(config).source})
        out = run_cell(config, judged_by, progress=progress, keep_model=True, device=device)
        out["judge_model"] = out_judge["model"]
        out["provenance"] = harness.provenance(seed=seed, mode="ci", device=device)
        return out

    def ci_table(self, out: dict) -> str:
        m = out["metrics"]
        rows = [{"quantity": k, "value": m[k]} for k in
                ("agreement", "own_head", "reads_as_source", "prop_wrong", "l1")]
        rows.append({"quantity": "judge test accuracy", "value": out["judge"]["test_accuracy"]})
        return harness.markdown_table(rows, ["quantity", "value"], digits=3)


EXPERIMENT = AssemblyExperiment()
store = EXPERIMENT.store
load_results = EXPERIMENT.load_results
run_table = EXPERIMENT.run_table
main = EXPERIMENT.main


@torch.no_grad()
def example(model: JigsawNetwork, config: AssemblyConfig, seed: int = 7) -> torch.Tensor:
    """One test digit of each class put together by every head: ``(10, 10, 28, 28)``, row =
    source digit, column = target head."""
    data = _data(config)
    index = _test_digits(data, 1)
    b = sample_jigsaw_batch(data.test, config.grid, tiling=config.tiling, index=index,
                            generator=torch.Generator().manual_seed(seed))  # fmt: skip
    device = next(model.parameters()).device
    return torch.stack([assemble(model, b.scrambled.to(device), t)[:, 0].cpu()
                        for t in range(N_DIGITS)], dim=1)  # fmt: skip


def run(mode: str = "ci", seed: int = 0, progress: bool = False, threads: int | None = 1,
        device: str | torch.device = "cpu", **overrides) -> dict:  # fmt: skip
    """Run the assembly experiment from Python (the notebook's entry point): ``mode="ci"``
    trains a small judge and model (seconds) and returns the record with ``model`` and
    ``judge_model``; ``mode="full"`` runs the table (resumable)."""
    if mode not in ("ci", "full"):
        raise ValueError(f"mode must be 'ci' or 'full', got {mode!r}")
    with harness.torch_threads(threads):
        if mode == "full":
            return run_table("agreement", seeds=(seed,), progress=progress, device=device,
                             overrides=overrides)  # fmt: skip
        return EXPERIMENT.ci(seed=seed, progress=progress, device=device, **overrides)


if __name__ == "__main__":
    raise SystemExit(main())
