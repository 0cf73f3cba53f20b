import errno
import warnings

import pytest
import torch

from permlib import ConvergenceWarning
from permlib.experiments.harness import CheckpointWarning, fit, generators


def setup(seed=0):
    gens = generators(seed, ("init", "data"))
    model = torch.nn.Linear(3, 1)
    with torch.no_grad():
        model.weight.uniform_(-1, 1, generator=gens["init"])
        model.bias.zero_()
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=20)
    target = torch.tensor([[1.0], [-2.0], [0.5]])

    def batches(step):
        x = torch.randn(8, 3, generator=gens["data"])
        return x, x @ target

    def loss(m, batch):
        x, y = batch
        return (m(x) - y).square().mean()

    return model, loss, batches, opt, sched, gens


def run(ckpt=None, until=None, seed=0, **kw):
    model, loss, batches, opt, sched, gens = setup(seed)
    return fit(model, loss, batches, opt, 20, scheduler=sched, generators=gens, checkpoint=ckpt,
               identity={"seed": seed}, until=until, progress=False, **kw)  # fmt: skip


def test_fit_learns_and_resumes_to_identical_numbers(tmp_path):
    straight = run()
    assert straight.step == 20 and straight.losses[-1] < straight.losses[0]
    ckpt = tmp_path / "c.pt"
    part = run(ckpt, until=7)
    assert part.step == 7 and ckpt.exists()
    resumed = run(ckpt)
    assert resumed.resumed_from == 7 and resumed.losses == straight.losses
    for a, b in zip(resumed.model.parameters(), straight.model.parameters(), strict=True):
        assert torch.equal(a, b)
    assert resumed.wall_s >= part.wall_s  # every session's time counts
    other = run(ckpt, seed=1)  # another run's checkpoint is not resumed
    assert other.resumed_from is None


@pytest.mark.parametrize("content", [b"", b"\x00" * 100, b"random bytes \xff\xfe", "truncated"])
def test_unreadable_checkpoint_is_moved_aside_and_training_restarts(tmp_path, content):
    ckpt = tmp_path / "c.pt"
    if content == "truncated":
        run(ckpt, until=5)
        ckpt.write_bytes(ckpt.read_bytes()[:200])
    else:
        ckpt.write_bytes(content)
    with pytest.warns(CheckpointWarning, match="c.pt"):
        result = run(ckpt)
    assert result.resumed_from is None and result.step == 20
    assert (tmp_path / "c.pt.corrupt").exists() and ckpt.exists()


def test_full_disk_while_checkpointing_warns_and_goes_on(tmp_path, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.warns(CheckpointWarning, match="No space left"):
        result = run(tmp_path / "c.pt")
    assert result.step == 20 and not list(tmp_path.iterdir())


def test_convergence_warnings_are_counted_not_shown():
    model, _, batches, opt, _, gens = setup()

    def noisy_loss(m, batch):
        warnings.warn("not converged", ConvergenceWarning, stacklevel=1)
        x, y = batch
        return (m(x) - y).square().mean()

    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        result = fit(model, noisy_loss, batches, opt, 6, generators=gens, progress=False)
    assert result.convergence_warnings == 6 and result.largest_residual is None  # no residual
    assert not [w for w in shown if issubclass(w.category, ConvergenceWarning)]


def test_largest_residual_is_tracked_across_a_resume(tmp_path):
    """The largest residual the warnings report enters the record and survives a checkpoint."""

    def drifting(m, batch):  # the t-th call reports residual 0.01 * t, at most 0.1
        drifting.t += 1
        residual = min(0.01 * drifting.t, 0.1)
        warnings.warn(ConvergenceWarning("off", residual=residual), stacklevel=1)
        x, y = batch
        return (m(x) - y).square().mean()

    def go(until=None):
        model, _, batches, opt, sched, gens = setup()
        return fit(model, drifting, batches, opt, 20, scheduler=sched, generators=gens,
                   checkpoint=tmp_path / "c.pt", until=until, progress=False)  # fmt: skip

    drifting.t = 0
    part = go(until=5)
    assert part.largest_residual == pytest.approx(0.05)
    drifting.t = -100  # the resumed session reports smaller residuals: the maximum is kept
    whole = go()
    assert whole.resumed_from == 5 and whole.convergence_warnings == 20
    assert whole.largest_residual == pytest.approx(0.05)
    assert whole.summary()["largest_residual"] == pytest.approx(0.05)
    # a real Sinkhorn call reports its residual on the warning
    from permlib import log_sinkhorn

    x = torch.randn(2, 6, 6, generator=torch.Generator().manual_seed(0)) * 30
    with pytest.warns(ConvergenceWarning) as caught:
        log_sinkhorn(x, tau=0.05, n_iters=2, tol=1e-6)
    assert caught[0].message.residual > 1e-6


def test_loss_trend():
    from permlib.experiments.harness import learning_curve, loss_trend

    falling = learning_curve([1.0 / (1 + t) for t in range(1000)], points=100)
    flat = learning_curve([0.5] * 1000, points=100)
    assert loss_trend(falling) > 0.1 and loss_trend(flat) == pytest.approx(0.0)
    # the last fifth against the fifth before it
    assert loss_trend({"loss": [4, 4, 2, 2, 1, 1, 1, 1, 1, 0.5]}) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="tail"):
        loss_trend(flat, tail=0.6)
    with pytest.raises(ValueError, match="too few"):
        loss_trend({"loss": [1.0, 0.9]})
