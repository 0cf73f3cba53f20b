"""Tests of permlib.testing, the references that tests, benchmarks and the book share."""

import pytest
import torch

import permlib
from permlib.analysis import entropic_objective
from permlib.distributions import (
    enumerate_permutations,
    gibbs_distribution,
    permutation_frequencies,
    total_variation,
)
from permlib.testing import (
    entropic_reference,
    gumbel_matching_reference,
    log_sinkhorn_loop,
    sinkhorn_loop,
)


def test_textbook_loop_scales_rank_one_potentials_in_one_iteration(generator):
    """exp(u_i + v_j) is an outer product: one row and one column step give the uniform 1/N."""
    u = torch.randn(2, 5, 1, generator=generator, dtype=torch.float64)
    v = torch.randn(2, 1, 5, generator=generator, dtype=torch.float64)
    p = sinkhorn_loop(u + v, 1)
    torch.testing.assert_close(p, torch.full((2, 5, 5), 0.2, dtype=torch.float64))


def test_textbook_loop_ends_on_columns_and_converges(generator):
    x = torch.randn(3, 6, 6, generator=generator, dtype=torch.float64, requires_grad=True)
    log_p = log_sinkhorn_loop(x, 200)
    p = log_p.exp()
    cols = p.sum(dim=-2)
    torch.testing.assert_close(cols, torch.ones_like(cols), rtol=0, atol=1e-14)
    rows = p.sum(dim=-1)
    torch.testing.assert_close(rows, torch.ones_like(rows), rtol=0, atol=1e-10)
    (grad,) = torch.autograd.grad(log_p.sum(), x)
    assert grad.shape == x.shape and bool(grad.isfinite().all())
    assert torch.equal(sinkhorn_loop(x, 0), x.exp())  # zero iterations change nothing


def test_entropic_reference_matches_sinkhorn(generator):
    """Theorem 1: S(X / tau) is the maximizer found by a generic solver."""
    x = torch.randn(4, 4, generator=generator, dtype=torch.float64)
    tau = 0.5
    ref = torch.from_numpy(entropic_reference(x, tau))
    p = permlib.sinkhorn(x, tau=tau, n_iters=1000, tol=1e-12)
    assert torch.allclose(p, ref, atol=1e-5)
    assert entropic_objective(p, x, tau) >= entropic_objective(ref, x, tau) - 1e-9


def test_entropic_reference_rejects_a_batch_and_bad_tau():
    with pytest.raises(ValueError, match="scores"):
        entropic_reference(torch.zeros(2, 3, 3), 1.0)
    with pytest.raises(ValueError, match="tau"):
        entropic_reference(torch.zeros(3, 3), 0.0)


def test_gumbel_matching_reference_agrees_with_permlib(generator):
    x = torch.randn(3, 3, generator=generator, dtype=torch.float64)
    ref = gumbel_matching_reference(x, 40_000, generator=generator)
    samples, _ = permlib.gumbel_matching(x, n_samples=40_000, generator=generator)
    assert total_variation(ref, permutation_frequencies(samples)) < 0.02
    assert gibbs_distribution(x).sum().item() == pytest.approx(1.0)


def test_gumbel_matching_reference_uses_the_library_noise():
    """Same generator state, same draws: the argmax over permutations of x + sample_gumbel."""
    x = torch.randn(3, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ref = gumbel_matching_reference(x, 7, generator=torch.Generator().manual_seed(2), chunk=3)
    g = permlib.sample_gumbel((7, 3, 3), generator=torch.Generator().manual_seed(2),
                              dtype=torch.float64)
    perms = enumerate_permutations(3)
    best = (x + g)[:, torch.arange(3), perms].sum(dim=-1).argmax(dim=-1)
    expected = torch.bincount(best, minlength=6).double() / 7
    assert torch.equal(ref, expected)


def test_gumbel_matching_reference_without_noise_is_the_matching():
    x = torch.tensor([[0.0, 2.0, 0.0], [0.0, 0.0, 2.0], [2.0, 0.0, 0.0]])
    ref = gumbel_matching_reference(x, 5, noise_factor=0.0)
    rank = enumerate_permutations(3).tolist().index([1, 2, 0])
    assert ref[rank].item() == 1.0
