"""Tests of permlib.diagnostics, the analysis helpers behind the book's theory chapters."""

from __future__ import annotations

import math

import pytest
import torch

import permlib
from permlib import diagnostics as dg


@pytest.fixture
def generator() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def test_entropy_of_uniform_and_permutation():
    n = 4
    uniform = torch.full((n, n), 1.0 / n, dtype=torch.float64)
    assert dg.entropy(uniform).item() == pytest.approx(n * math.log(n))
    assert dg.entropy(torch.eye(n, dtype=torch.float64)).item() == 0.0


def test_entropic_reference_matches_sinkhorn(generator):
    """Theorem 1: S(X / tau) is the maximizer found by a generic solver."""
    x = torch.randn(4, 4, generator=generator, dtype=torch.float64)
    tau = 0.5
    ref = torch.from_numpy(dg.entropic_reference(x, tau))
    p = permlib.sinkhorn(x, tau=tau, n_iters=1000, tol=1e-12)
    assert torch.allclose(p, ref, atol=1e-5)
    assert dg.entropic_objective(p, x, tau) >= dg.entropic_objective(ref, x, tau) - 1e-9


def test_epsilon_matrix_shapes():
    a = dg.epsilon_matrix(0.1)
    assert a.shape == (3, 3) and a[0, 0] == pytest.approx(0.1) and a[0, 1] == 1
    assert dg.epsilon_matrix(torch.tensor([0.1, 0.01])).shape == (2, 3, 3)


def test_oscillating_patterns_never_converge():
    errs = dg.normalization_errors(dg.oscillating_patterns(), 40)
    assert errs.shape == (6, 40)
    assert bool((errs[:, -2:] > 0.4).all())


def test_normalization_errors_match_log_sinkhorn_residuals():
    a = dg.epsilon_matrix(1e-3)
    half = dg.normalization_errors(a, 20)
    _, info = permlib.log_sinkhorn(a.log(), n_iters=10, return_info=True)
    # After L full iterations (k = 2L normalizations) both report the row-sum error.
    assert torch.allclose(half[1::2], info.errors, atol=1e-10)


def test_plateau_exit_grows_like_log2_inverse_epsilon():
    eps = torch.tensor([1e-2, 1e-4, 1e-6, 1e-8])
    k = dg.plateau_exit(dg.normalization_errors(dg.epsilon_matrix(eps), 80))
    slope = (k[-1] - k[0]).item() / 6.0  # normalizations per decade of epsilon
    assert slope == pytest.approx(math.log2(10), abs=0.5)
    assert dg.plateau_exit(torch.ones(1, 5)).item() == -1


def test_enumeration_and_frequencies():
    perms = dg.enumerate_permutations(3)
    assert perms.shape == (6, 3)
    freq = dg.permutation_frequencies(perms)
    assert torch.allclose(freq, torch.full((6,), 1 / 6, dtype=torch.float64))
    mats = permlib.permutation_matrix(perms[[5, 5, 0]])
    assert dg.permutation_frequencies(mats)[5].item() == pytest.approx(2 / 3)


def test_gumbel_matching_reference_agrees_with_permlib(generator):
    x = torch.randn(3, 3, generator=generator, dtype=torch.float64)
    ref = dg.gumbel_matching_reference(x, 40_000, generator=generator)
    samples, _ = permlib.gumbel_matching(x, n_samples=40_000, generator=generator)
    assert dg.total_variation(ref, dg.permutation_frequencies(samples)) < 0.02
    assert dg.gibbs_distribution(x).sum().item() == pytest.approx(1.0)


def test_linear_loss_gradient_of_hste_is_weights(generator):
    x = torch.randn(2, 4, 4, generator=generator)
    w = torch.randn(2, 4, 4, generator=generator)
    assert torch.equal(dg.linear_loss_gradient(permlib.hungarian_ste, x, w), w)


def test_autograd_graph_names_nodes(generator):
    x = torch.randn(3, 3, generator=generator, requires_grad=True)
    edges = dg.autograd_graph((x * 2).sum())
    assert ("SumBackward0", "MulBackward0") in edges
    assert ("MulBackward0", "AccumulateGrad") in edges
    assert dg.autograd_graph(torch.ones(2)) == []


def test_load_paper_table():
    table = dg.load_paper_table("sinkhorn_plateau_appendix_d")
    assert {row["epsilon"] for row in table["rows"]} >= {0.1, 1e-10}
    with pytest.raises(KeyError):
        dg.load_paper_table("no such table")


def test_operator_gradient_matches_linear_case(generator):
    x = torch.randn(3, 4, 4, generator=generator, dtype=torch.float64)
    w = torch.randn(4, 4, generator=generator, dtype=torch.float64)
    op = lambda s: permlib.sinkhorn(s, tau=0.5)  # noqa: E731
    g1 = dg.operator_gradient(op, x, lambda p: (p * w).sum(dim=(-2, -1)))
    assert torch.allclose(g1, dg.linear_loss_gradient(op, x, w))
