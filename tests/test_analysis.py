"""Tests of permlib.analysis, the measurements behind the book's theory chapters."""

import math
from pathlib import Path

import pytest
import torch

import permlib
from permlib import analysis as an
from permlib.experiments.harness import load_paper_tables
from permlib.metrics import constraint_error

REPO = Path(__file__).resolve().parents[1]
PAPER_TABLES = REPO / "benchmarks" / "reference" / "paper_tables.json"


def test_entropy_of_uniform_and_permutation():
    n = 4
    uniform = torch.full((n, n), 1.0 / n, dtype=torch.float64)
    assert an.entropy(uniform).item() == pytest.approx(n * math.log(n))
    assert an.entropy(torch.eye(n, dtype=torch.float64)).item() == 0.0


def test_epsilon_matrix_shapes(device):
    a = an.epsilon_matrix(0.1)
    assert a.shape == (3, 3) and a[0, 0] == pytest.approx(0.1) and a[0, 1] == 1
    assert an.epsilon_matrix(torch.tensor([0.1, 0.01])).shape == (2, 3, 3)
    assert an.epsilon_matrix(torch.tensor([0.1], device=device)).device == device
    assert an.oscillating_patterns(device=device).device == device


def test_oscillating_patterns_never_converge():
    errs = an.normalization_errors(an.oscillating_patterns(), 40)
    assert errs.shape == (6, 40)
    assert bool((errs[:, -2:] > 0.4).all())


def test_normalization_errors_are_the_constraint_error_of_each_half_step():
    a = an.epsilon_matrix(torch.tensor([1e-1, 1e-3]))
    steps = an.alternate_normalizations(a, 6)
    assert steps.shape == (2, 7, 3, 3) and torch.equal(steps[:, 0], a)
    assert torch.equal(an.normalization_errors(a, 6), constraint_error(steps[:, 1:]))
    # after a row step the rows are exact: the error is the columns' (Err_c), and vice versa
    after_rows = steps[:, 1]
    col_err = (after_rows.sum(dim=-2) - 1).abs().amax(dim=-1)
    torch.testing.assert_close(an.normalization_errors(a, 1)[:, 0], col_err, rtol=0, atol=1e-15)
    with pytest.raises(ValueError, match="n_normalizations"):
        an.alternate_normalizations(a, -1)


def test_normalization_errors_match_log_sinkhorn_residuals():
    a = an.epsilon_matrix(1e-3)
    half = an.normalization_errors(a, 20)
    _, info = permlib.log_sinkhorn(a.log(), n_iters=10, return_info=True)
    # After L full iterations (k = 2L normalizations) both report the row-sum error.
    assert torch.allclose(half[1::2], info.errors, atol=1e-10)


def test_plateau_exit_grows_like_log2_inverse_epsilon():
    eps = torch.tensor([1e-2, 1e-4, 1e-6, 1e-8])
    k = an.plateau_exit(an.normalization_errors(an.epsilon_matrix(eps), 80))
    slope = (k[-1] - k[0]).item() / 6.0  # normalizations per decade of epsilon
    assert slope == pytest.approx(math.log2(10), abs=0.5)
    assert an.plateau_exit(torch.ones(1, 5)).item() == -1


def test_the_paper_table_of_the_plateau_chapter_loads():
    """The chapter on Sinkhorn's failures reads this table through the harness."""
    table = load_paper_tables(PAPER_TABLES)["sinkhorn_plateau_appendix_d"]
    assert {row["epsilon"] for row in table["rows"]} >= {0.1, 1e-10}


def test_linear_loss_gradient_of_hste_is_weights(generator):
    x = torch.randn(2, 4, 4, generator=generator)
    w = torch.randn(2, 4, 4, generator=generator)
    assert torch.equal(an.linear_loss_gradient(permlib.hungarian_ste, x, w), w)


def test_operator_gradient_matches_linear_case(generator):
    x = torch.randn(3, 4, 4, generator=generator, dtype=torch.float64)
    w = torch.randn(4, 4, generator=generator, dtype=torch.float64)
    op = lambda s: permlib.sinkhorn(s, tau=0.5)  # noqa: E731
    g1 = an.operator_gradient(op, x, lambda p: (p * w).sum(dim=(-2, -1)))
    assert torch.allclose(g1, an.linear_loss_gradient(op, x, w))
    g2 = an.operator_gradient(op, x, lambda p: (p * w).square().sum(dim=(-2, -1)))
    assert not torch.allclose(g1, g2) and not x.requires_grad


def test_autograd_graph_names_nodes(generator):
    x = torch.randn(3, 3, generator=generator, requires_grad=True)
    edges = an.autograd_graph((x * 2).sum())
    assert ("SumBackward0", "MulBackward0") in edges
    assert ("MulBackward0", "AccumulateGrad") in edges
    assert an.autograd_graph(torch.ones(2)) == []
