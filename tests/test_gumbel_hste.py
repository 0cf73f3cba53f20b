import importlib
import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from permlib import (
    gumbel_matching,
    gumbel_sinkhorn,
    hungarian_ste,
    matching,
    permutation_matrix,
    perturb,
    sample_gumbel,
    sinkhorn,
)
from tests.test_sinkhorn import _HostReads


def test_gumbel_moments_and_reproducibility():
    g = torch.Generator().manual_seed(1)
    x = sample_gumbel((200_000,), generator=g, dtype=torch.float64)
    assert x.mean().item() == pytest.approx(0.5772156649, abs=0.01)  # Euler-Mascheroni
    assert x.var().item() == pytest.approx(math.pi**2 / 6, rel=0.02)
    assert torch.isfinite(x).all()
    a = sample_gumbel((3, 4), generator=torch.Generator().manual_seed(7))
    b = sample_gumbel((3, 4), generator=torch.Generator().manual_seed(7))
    c = sample_gumbel((3, 4), generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_samplers_are_reproducible_under_a_generator(generator):
    log_alpha = torch.randn(2, 5, 5, generator=generator)
    runs = [
        gumbel_sinkhorn(log_alpha, 0.5, n_samples=3, generator=torch.Generator().manual_seed(3))
        for _ in range(2)
    ]
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
    m1 = gumbel_matching(log_alpha, 4, generator=torch.Generator().manual_seed(3))
    m2 = gumbel_matching(log_alpha, 4, generator=torch.Generator().manual_seed(3))
    assert torch.equal(m1[0], m2[0])


def test_gumbel_sinkhorn_shapes_and_gradient(generator):
    log_alpha = torch.randn(2, 6, 6, generator=generator, requires_grad=True)
    samples, perturbed = gumbel_sinkhorn(log_alpha, tau=1.0, n_samples=4, generator=generator)
    assert samples.shape == perturbed.shape == (4, 2, 6, 6)
    torch.testing.assert_close(samples.sum(-2), torch.ones(4, 2, 6))
    samples.sum(dim=0)[..., 0].sum().backward()
    assert log_alpha.grad is not None and torch.isfinite(log_alpha.grad).all()


def test_zero_noise_gives_the_plain_operators(generator):
    log_alpha = torch.randn(3, 5, 5, generator=generator)
    samples, _ = gumbel_sinkhorn(log_alpha, tau=0.5, n_samples=2, noise_factor=0.0)
    torch.testing.assert_close(samples[1], sinkhorn(log_alpha, tau=0.5))
    hard, _ = gumbel_matching(log_alpha, n_samples=2, noise_factor=0.0)
    assert torch.equal(hard[0], permutation_matrix(matching(log_alpha)))


def test_gumbel_matching_is_uniform_for_constant_scores():
    """With equal scores every permutation of 3 items is equally likely (1/6)."""
    samples, _ = gumbel_matching(
        torch.zeros(3, 3), n_samples=12_000, generator=torch.Generator().manual_seed(0)
    )
    perms = samples.argmax(-1)
    counts = {p: 0 for p in itertools.permutations(range(3))}
    for row in perms.tolist():
        counts[tuple(row)] += 1
    freqs = torch.tensor(list(counts.values()), dtype=torch.float64) / 12_000
    assert (freqs - 1 / 6).abs().max() < 0.015


def test_gumbel_matching_favours_the_mode(generator):
    log_alpha = 3 * permutation_matrix(torch.tensor([2, 0, 1]))
    samples, _ = gumbel_matching(log_alpha, n_samples=2000, generator=generator)
    mode_freq = (samples.argmax(-1) == torch.tensor([2, 0, 1])).all(-1).float().mean()
    assert mode_freq > 0.6


def test_perturb_shapes():
    out = perturb(torch.zeros(2, 4, 4), n_samples=5, generator=torch.Generator().manual_seed(0))
    assert out.shape == (5, 2, 4, 4) and out.std() > 0.5


def test_hste_forward_is_the_matching_and_backward_the_identity(generator):
    log_alpha = torch.randn(3, 7, 7, generator=generator, dtype=torch.float64, requires_grad=True)
    hard = hungarian_ste(log_alpha)
    assert hard.dtype == torch.float64
    assert torch.equal(hard, permutation_matrix(matching(log_alpha), dtype=torch.float64))
    assert set(hard.unique().tolist()) == {0.0, 1.0}
    torch.testing.assert_close(hard.sum(-1), torch.ones(3, 7, dtype=torch.float64))
    w = torch.randn(3, 7, 7, generator=generator, dtype=torch.float64)
    (hard * w).sum().backward()
    assert torch.equal(log_alpha.grad, w)


@given(n=st.integers(1, 7), batch_shape=st.sampled_from([(0,), (0, 2), (3, 0)]),
       n_samples=st.integers(1, 3))
def test_empty_batches(n, batch_shape, n_samples):
    x = torch.zeros(*batch_shape, n, n, requires_grad=True)
    assert perturb(x, n_samples).shape == (n_samples, *batch_shape, n, n)
    samples, perturbed = gumbel_matching(x, n_samples)
    assert samples.shape == perturbed.shape == (n_samples, *batch_shape, n, n)
    hard = hungarian_ste(x)
    assert hard.shape == x.shape
    hard.sum().backward()
    assert x.grad.shape == x.shape


JIT_DEPRECATION = pytest.mark.filterwarnings(  # torch's own jacfwd machinery, not permlib's
    "ignore:`torch.jit.script` is deprecated:DeprecationWarning"
)


@JIT_DEPRECATION
def test_hste_under_torch_func(generator):
    x = torch.randn(4, 5, 5, generator=generator, dtype=torch.float64)
    ref = hungarian_ste(x)
    assert torch.equal(torch.func.vmap(hungarian_ste)(x), ref)
    assert torch.equal(torch.func.vmap(hungarian_ste, in_dims=2, out_dims=1)(x.permute(1, 2, 0)),
                       ref.permute(1, 0, 2))
    nested = torch.randn(2, 3, 4, 4, generator=generator)
    assert torch.equal(torch.func.vmap(torch.func.vmap(hungarian_ste))(nested),
                       hungarian_ste(nested))
    identity = torch.eye(25, dtype=torch.float64).reshape(5, 5, 5, 5)
    assert torch.equal(torch.func.jacrev(hungarian_ste)(x[0]), identity)
    assert torch.equal(torch.func.jacfwd(hungarian_ste)(x[0]), identity)
    w = torch.randn(5, 5, generator=generator, dtype=torch.float64)
    loss = lambda a: (hungarian_ste(a) * w).sum()  # noqa: E731
    assert torch.equal(torch.func.grad(loss)(x[0]), w)
    assert torch.equal(torch.func.vmap(torch.func.grad(loss))(x), w.expand(4, 5, 5))
    with pytest.raises(ValueError, match="log_alpha contains invalid numeric entries"):
        torch.func.vmap(hungarian_ste)(torch.full((2, 3, 3), float("nan")))


def test_sample_gumbel_shapes():
    g = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    assert torch.equal(sample_gumbel(3, generator=g()), sample_gumbel((3,), generator=g()))
    assert sample_gumbel(np.int64(2)).shape == (2,)
    assert sample_gumbel(torch.Size([2, 3])).shape == (2, 3)
    assert sample_gumbel([2, 0]).shape == (2, 0)
    assert sample_gumbel(()).shape == ()


@given(
    dtype=st.sampled_from([torch.float16, torch.bfloat16, torch.float32, torch.float64]),
    offset_frac=st.sampled_from([0.0, 1e-30, 1e-10, 0.5, 0.9, 0.99, 1.0]),
    noise_frac=st.sampled_from([0.0, 1e-30, 1e-6, 1e-3, 0.01, 0.05, 0.1, 1.0]),
    sign=st.sampled_from([1.0, -1.0]),
    seed=st.integers(0, 1000),
)
def test_perturbed_scores_are_finite_or_noise_factor_is_blamed(
    dtype, offset_frac, noise_frac, sign, seed
):
    """Extreme offsets and noise factors: never inf, and an overflow is blamed on noise_factor."""
    big = torch.finfo(dtype).max
    x = torch.full((2, 4, 4), sign * offset_frac * big, dtype=dtype)
    noise_factor = noise_frac * big
    gen = torch.Generator().manual_seed(seed)
    if noise_factor == 0:
        assert torch.equal(perturb(x, 3, 0.0)[0], x)
        return
    try:
        out = perturb(x, 3, noise_factor, generator=gen)
    except ValueError as err:
        assert "noise_factor" in str(err) and "log_alpha" in str(err)
        # |Gumbel samples| stay below 40 in every dtype: refused only where one could overflow
        assert offset_frac * big + 40 * noise_factor > big
        return
    assert torch.isfinite(out).all()
    # samples reach beyond 2 in magnitude in every dtype: a clear overflow risk is never accepted
    assert offset_frac * big + 2 * noise_factor <= big


def test_noise_factor_that_overflows_is_blamed():
    for fn in (perturb, gumbel_matching, gumbel_sinkhorn):
        with pytest.raises(ValueError, match=r"noise_factor=1e\+38 is too large for torch.float32"):
            fn(torch.zeros(3, 3), noise_factor=1e38)
    with pytest.raises(ValueError, match="noise_factor=10000 is too large for torch.float16"):
        perturb(torch.zeros(3, 3, dtype=torch.float16), noise_factor=1e4)
    out = perturb(torch.zeros(3, 3, dtype=torch.float64), 100, noise_factor=1e38)
    assert torch.isfinite(out).all() and out.abs().max() > 1e37


@pytest.fixture
def deferred_checks(monkeypatch):
    """The CUDA way on the CPU: perturb's and Sinkhorn's checks deferred to device flags."""
    import permlib.gumbel as gumbel_module

    sinkhorn_module = importlib.import_module("permlib.sinkhorn")
    monkeypatch.setattr(gumbel_module, "defers", lambda device: True)
    monkeypatch.setattr(sinkhorn_module, "_defers", lambda device: True)
    return monkeypatch


def test_deferred_perturb_checks_read_the_host_once_and_name_the_argument(deferred_checks):
    """On CUDA perturb's input checks are device flags: gumbel_sinkhorn reads the host once in
    all (the Sinkhorn call's one check), perturb once; bad input still raises naming
    log_alpha or noise_factor, from every entry point."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 5, generator=gen)
    reads = _HostReads(deferred_checks)
    samples, perturbed = gumbel_sinkhorn(x, n_samples=3, generator=gen)
    assert reads.count == 1 and torch.isfinite(samples).all()
    reads.count = 0
    out = perturb(x, 2, generator=gen)
    assert reads.count == 1 and torch.isfinite(out).all()
    for fn in (perturb, gumbel_matching, gumbel_sinkhorn):
        for bad in (math.nan, math.inf):
            y = x.clone()
            y[1, 2, 3] = bad
            with pytest.raises(ValueError, match="log_alpha contains invalid numeric entries"):
                fn(y)
        with pytest.raises(ValueError, match=r"noise_factor=1e\+38 is too large for torch.float32"):
            fn(torch.zeros(3, 3), noise_factor=1e38)
    # the same samples as the eager (CPU) path from the same generator
    deferred_checks.undo()
    ref, _ = gumbel_sinkhorn(x, n_samples=3, generator=torch.Generator().manual_seed(1))
    gen = torch.Generator().manual_seed(1)
    import permlib.gumbel as gumbel_module

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(gumbel_module, "defers", lambda device: True)
        ours, _ = gumbel_sinkhorn(x, n_samples=3, generator=gen)
    assert torch.equal(ours, ref)
