import itertools
import math

import pytest
import torch

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
