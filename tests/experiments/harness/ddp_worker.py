"""Run by tests/experiments/harness/test_distributed.py, under torchrun or as one process.

``python ddp_worker.py OUT_DIR`` trains a tiny regression with :func:`harness.fit` three ways and
saves what each rank saw to ``OUT_DIR/rank<r>.pt``:

* ``plain``: 12 steps on global batches of 8 drawn from the shared ``"data"`` stream; the loss is
  a mean over the batch and draws no noise, so K processes must match one process up to float
  summation order.
* ``noisy_straight``: 60 steps with a loss that adds noise from the per-rank ``"noise"`` stream.
* ``noisy_resumed``: the same run stopped at step 50 (checkpointing every 25 steps through rank
  0's decision) and resumed from the checkpoint: it must equal ``noisy_straight`` exactly, on every
  rank (the per-rank noise states are restored from the checkpoint).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from permlib.experiments.harness import distributed, fit, generators


def _setup(seed: int = 0):
    gens = generators(seed, ("init", "data", "noise"))
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    with torch.no_grad():
        for p in model.parameters():
            p.uniform_(-1, 1, generator=gens["init"])
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    target = torch.tensor([[1.0], [-2.0], [0.5]])

    def batches(step: int):
        x = torch.randn(8, 3, generator=gens["data"])
        return {"x": x, "y": torch.sin(x @ target)}

    return model, opt, gens, batches


def run(kind: str, ckpt: Path | None = None, until: int | None = None):
    model, opt, gens, batches = _setup()

    def loss(m, b):
        out = m(b["x"])
        if kind != "plain":
            out = out + 0.1 * torch.randn(out.shape, generator=gens["noise"])
        return (out - b["y"]).square().mean()

    steps = 12 if kind == "plain" else 60
    res = fit(model, loss, batches, opt, steps, generators=gens, checkpoint=ckpt,
              checkpoint_every_s=0.0, identity={"kind": kind}, until=until,
              progress=False)  # fmt: skip
    return {
        "params": [p.detach().clone() for p in res.model.parameters()],
        "losses": res.losses,
        "noise_seed": gens["noise"].initial_seed(),
        "data_seed": gens["data"].initial_seed(),
        "resumed_from": res.resumed_from,
    }


def main(out: Path) -> None:
    torch.set_num_threads(1)
    out.mkdir(parents=True, exist_ok=True)
    r = distributed.rank()
    result = {"world_size": distributed.world_size(), "plain": run("plain")}
    result["noisy_straight"] = run("noisy_straight")
    ckpt = out / "noisy.pt"
    first = run("noisy_straight", ckpt, until=50)
    result["checkpoint_after_stop"] = ckpt.exists()
    result["noisy_first_part"] = first
    result["noisy_resumed"] = run("noisy_straight", ckpt)
    torch.save(result, out / f"rank{r}.pt")
    distributed.shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
