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


# --- Issue 19: rectangular problems, forbidden pairs, padded batches -------------------------


def _padded(seed, batch=4, n=4, m=6):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, n, m, generator=g, dtype=torch.float64)
    rows = torch.tensor([n, 2, 1, 3])[:batch]
    cols = torch.tensor([3, m, 2, 5])[:batch]  # item 0 has more rows than columns
    exists = (torch.arange(n)[:, None] < rows[:, None, None]) & (
        torch.arange(m) < cols[:, None, None]
    )
    return x.masked_fill(~exists, math.nan), rows, cols, exists


def test_gumbel_sinkhorn_on_a_padded_batch():
    x, rows, cols, exists = _padded(80)
    x.requires_grad_()
    gen = torch.Generator().manual_seed(0)
    samples, perturbed = gumbel_sinkhorn(
        x, tau=0.5, n_samples=3, n_rows=rows, n_cols=cols, generator=gen
    )
    assert samples.shape == perturbed.shape == (3, 4, 4, 6)
    assert (samples[:, ~exists] == 0).all() and (perturbed[:, ~exists] == -math.inf).all()
    ref = sinkhorn(perturbed.detach(), tau=0.5, n_rows=rows, n_cols=cols)
    torch.testing.assert_close(samples.detach(), ref, rtol=0, atol=0)
    w = torch.randn(samples.shape, dtype=torch.float64)
    (samples * w).sum().backward()
    assert torch.isfinite(x.grad).all() and (x.grad[~exists] == 0).all()
    assert (x.grad[exists] != 0).any()


def test_gumbel_matching_rectangular_and_padded():
    x = torch.randn(3, 4, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(81))
    hard, _ = gumbel_matching(x, n_samples=2, noise_factor=0.0)
    expect = permutation_matrix(matching(x), m=7, dtype=torch.float64)
    assert hard.shape == (2, 3, 4, 7) and torch.equal(hard[1], expect)
    tall, _ = gumbel_matching(x.mT, n_samples=5, generator=torch.Generator().manual_seed(1))
    assert (tall.sum(-2) == 1).all() and (tall.sum(-1) <= 1).all()  # every column assigned
    y, rows, cols, exists = _padded(82)
    hard, perturbed = gumbel_matching(y, n_samples=4, n_rows=rows, n_cols=cols,
                                      generator=torch.Generator().manual_seed(2))
    assert (hard[:, ~exists] == 0).all() and (perturbed[:, ~exists] == -math.inf).all()
    again = matching(perturbed, n_rows=rows, n_cols=cols)
    assert torch.equal(hard, permutation_matrix(again, m=6, dtype=torch.float64))
    # forbidden pairs are never sampled
    z = torch.zeros(6, 6)
    z[torch.arange(6), torch.arange(6)] = -math.inf
    derangements, _ = gumbel_matching(z, n_samples=200, generator=torch.Generator().manual_seed(3))
    assert (derangements.diagonal(dim1=-2, dim2=-1) == 0).all()


def test_perturb_keeps_forbidden_pairs_and_refuses_nan():
    x = torch.zeros(3, 4)
    x[1, 2] = -math.inf
    out = perturb(x, 5, generator=torch.Generator().manual_seed(0))
    assert (out[:, 1, 2] == -math.inf).all() and torch.isfinite(out[:, 0]).all()
    x[0, 0] = math.nan
    with pytest.raises(ValueError, match=r"log_alpha contains invalid numeric entries \(NaN or"):
        perturb(x)


def test_deferred_perturb_accepts_forbidden_pairs(deferred_checks):
    x = torch.randn(2, 5, 5, generator=torch.Generator().manual_seed(4))
    x[0, 1, 1] = -math.inf
    samples, perturbed = gumbel_sinkhorn(x, n_samples=2, n_iters=50)
    assert (perturbed[:, 0, 1, 1] == -math.inf).all() and (samples[:, 0, 1, 1] == 0).all()
    assert torch.isfinite(samples).all()


@pytest.mark.parametrize("kind", ["rectangular", "tall", "padded", "forbidden"])
def test_hste_partial_permutations_and_masked_identity_gradient(kind):
    g = torch.Generator().manual_seed(83)
    kwargs = {}
    if kind == "padded":
        x, rows, cols, exists = _padded(84)
        kwargs = {"n_rows": rows, "n_cols": cols}
        keep = exists
    else:
        x = torch.randn(3, 4, 6 if kind != "tall" else 3, generator=g, dtype=torch.float64)
        if kind == "forbidden":
            x[:, 0, :2] = -math.inf
        keep = x > -math.inf
    x.requires_grad_()
    hard = hungarian_ste(x, **kwargs)
    perm = matching(x.detach(), **kwargs)
    assert torch.equal(hard, permutation_matrix(perm, m=x.shape[-1], dtype=torch.float64))
    w = torch.randn(x.shape, generator=g, dtype=torch.float64)
    (hard * w).sum().backward()
    assert torch.equal(x.grad, torch.where(keep, w, 0.0))


@JIT_DEPRECATION
def test_hste_padded_under_torch_func():
    x, rows, cols, exists = _padded(85)
    ref = hungarian_ste(x, n_rows=rows, n_cols=cols)
    mapped = torch.func.vmap(lambda a, r, c: hungarian_ste(a, n_rows=r, n_cols=c))(x, rows, cols)
    assert torch.equal(mapped, ref)
    jac = torch.func.jacfwd(lambda a: hungarian_ste(a, n_rows=2, n_cols=6))(x[1])
    masked_identity = torch.diag(exists[1].flatten().double()).reshape(4, 6, 4, 6)
    assert torch.equal(jac, masked_identity)
    assert torch.equal(torch.func.jacrev(lambda a: hungarian_ste(a, n_rows=2, n_cols=6))(x[1]),
                       masked_identity)
