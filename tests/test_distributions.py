"""Tests of permlib.distributions: exact laws over the n! permutations of a few items."""

import itertools
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import permlib
from permlib import distributions as ds


def test_enumeration_and_frequencies():
    perms = ds.enumerate_permutations(3)
    assert perms.shape == (6, 3)
    freq = ds.permutation_frequencies(perms)
    assert torch.allclose(freq, torch.full((6,), 1 / 6, dtype=torch.float64))
    mats = permlib.permutation_matrix(perms[[5, 5, 0]])
    assert ds.permutation_frequencies(mats)[5].item() == pytest.approx(2 / 3)


@pytest.mark.parametrize("n", [1, 2, 4, 5])
def test_rank_inverts_the_enumeration(n, device):
    perms = ds.enumerate_permutations(n, device=device)
    assert perms.device == device
    assert perms.tolist() == [list(p) for p in itertools.permutations(range(n))]
    ranks = ds.permutation_rank(perms)
    assert torch.equal(ranks, torch.arange(math.factorial(n), device=device))
    batch = perms[torch.tensor([[3 % len(perms), 0], [len(perms) - 1, 0]], device=device)]
    assert torch.equal(perms[ds.permutation_rank(batch)], batch)


def test_enumeration_is_for_small_n():
    for bad in (0, ds.MAX_ITEMS + 1, 2.0):
        with pytest.raises(ValueError, match="n must be"):
            ds.enumerate_permutations(bad)
    with pytest.raises(ValueError, match="n <= 8"):
        ds.permutation_frequencies(torch.arange(9).expand(2, 9))


def test_gibbs_distribution_by_hand(generator):
    x = torch.randn(3, 3, generator=generator, dtype=torch.float64)
    p = ds.gibbs_distribution(x)
    energies = torch.tensor([sum(x[i, s[i]].item() for i in range(3))
                             for s in itertools.permutations(range(3))], dtype=torch.float64)
    torch.testing.assert_close(p, energies.exp() / energies.exp().sum())
    with pytest.raises(ValueError, match="log_alpha"):
        ds.gibbs_distribution(torch.zeros(2, 3, 3))


def test_exact_distribution_of_another_family():
    """A Mallows-like law: weight exp(-theta * number of misplaced items) around the identity."""
    theta = 0.7
    p = ds.exact_distribution(
        lambda perms: -theta * (perms != torch.arange(4)).sum(dim=-1).double(), 4
    )
    assert p.dtype == torch.float64 and p.shape == (24,)
    assert p.sum().item() == pytest.approx(1.0)
    assert p.argmax().item() == 0  # the identity has rank 0
    assert p[0].item() / p[1].item() == pytest.approx(math.exp(2 * theta))  # 1 swap: 2 misplaced
    with pytest.raises(ValueError, match="log_weight"):
        ds.exact_distribution(lambda perms: perms.double(), 3)


def test_total_variation():
    p = torch.tensor([0.5, 0.5, 0.0])
    q = torch.tensor([0.0, 0.5, 0.5])
    assert ds.total_variation(p, q) == pytest.approx(0.5)
    assert ds.total_variation(p, p) == 0.0
    with pytest.raises(ValueError, match="same shape"):
        ds.total_variation(p, q[:2])


@given(n=st.integers(1, 5), batch_shape=st.sampled_from([(0,), (0, 3), (2, 0)]))
def test_empty_batches(n, batch_shape):
    perm = torch.zeros(*batch_shape, n, dtype=torch.int64)
    assert ds.permutation_rank(perm).shape == batch_shape
    with pytest.raises(ValueError, match="perm holds no samples"):
        ds.permutation_frequencies(perm)
    with pytest.raises(ValueError, match="perm holds no samples"):
        ds.permutation_frequencies(torch.zeros(*batch_shape, n, n))


def test_small_dtypes_and_non_tensors():
    perms = ds.enumerate_permutations(4)
    assert torch.equal(ds.permutation_rank(perms.to(torch.uint8)), torch.arange(24))
    with pytest.raises(TypeError, match="perm must be a torch.Tensor"):
        ds.permutation_frequencies([[0, 1], [1, 0]])
    with pytest.raises(TypeError, match="q must be a torch.Tensor"):
        ds.total_variation(torch.ones(2) / 2, [0.5, 0.5])
