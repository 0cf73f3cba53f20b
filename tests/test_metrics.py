import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy.stats import kendalltau

from permlib import invert_permutation, permutation_matrix
from permlib.metrics import (
    constraint_error,
    kendall_tau,
    l1_error,
    l2_error,
    prop_any_wrong,
    prop_wrong,
)


def test_hand_computed_order_metrics():
    true = torch.tensor([[0, 1, 2, 3], [0, 1, 2, 3], [3, 2, 1, 0]])
    pred = torch.tensor([[0, 1, 2, 3], [1, 0, 2, 3], [0, 1, 2, 3]])
    assert prop_wrong(pred, true, reduction="none").tolist() == [0.0, 0.5, 1.0]
    assert prop_wrong(pred, true).item() == pytest.approx(0.5)
    assert prop_any_wrong(pred, true, reduction="none").tolist() == [0.0, 1.0, 1.0]
    assert prop_any_wrong(pred, true).item() == pytest.approx(2 / 3)
    # identical: 1; one adjacent swap of 4: (5 - 1) / 6; full reversal: -1
    assert kendall_tau(pred, true, reduction="none").tolist() == pytest.approx([1.0, 4 / 6, -1.0])


def test_prop_wrong_is_003s_formula(generator):
    """Prop. wrong = 1 - (1/N) sum P * Q for permutation matrices P, Q."""
    pred = torch.stack([torch.randperm(10, generator=generator) for _ in range(8)])
    true = torch.stack([torch.randperm(10, generator=generator) for _ in range(8)])
    ref = 1 - (permutation_matrix(pred) * permutation_matrix(true)).sum((-1, -2)) / 10
    torch.testing.assert_close(prop_wrong(pred, true, reduction="none"), ref)


@given(n=st.integers(2, 40), seed=st.integers(0, 10_000))
def test_kendall_tau_agrees_with_scipy(n, seed):
    g = torch.Generator().manual_seed(seed)
    pred, true = torch.randperm(n, generator=g), torch.randperm(n, generator=g)
    assert kendall_tau(pred, true).item() == pytest.approx(
        kendalltau(pred.numpy(), true.numpy()).statistic, abs=1e-6
    )


def test_kendall_tau_compares_permutations_not_their_inverses():
    pred, true = torch.tensor([1, 2, 0, 3]), torch.tensor([0, 1, 2, 3])
    ref = kendalltau([1, 2, 0, 3], [0, 1, 2, 3]).statistic
    assert kendall_tau(pred, true).item() == pytest.approx(ref)
    assert kendall_tau(torch.tensor([0]), torch.tensor([0])).item() == 1.0
    # it is a property of the pair, and inverting both generally changes it
    a, b = torch.tensor([0, 1, 3, 2]), torch.tensor([0, 2, 3, 1])
    assert kendall_tau(a, b).item() == pytest.approx(4 / 6)
    assert kendall_tau(invert_permutation(a), invert_permutation(b)).item() == pytest.approx(0.0)


def test_reconstruction_errors():
    pred = torch.tensor([[0.0, 1.0], [2.0, 3.0]])
    target = torch.tensor([[0.0, 2.0], [2.0, 1.0]])
    assert l1_error(pred, target).item() == pytest.approx(0.75)
    assert l2_error(pred, target).item() == pytest.approx(1.25)
    assert l1_error(pred, target, dim=-1).tolist() == pytest.approx([0.5, 1.0])
    assert l2_error(pred, target, dim=-1).tolist() == pytest.approx([0.5, 2.0])


def test_constraint_error():
    p = permutation_matrix(torch.tensor([[1, 0, 2], [2, 1, 0]]))
    assert constraint_error(p).tolist() == [0.0, 0.0]
    m = torch.tensor([[0.5, 0.5], [0.2, 0.3]])  # rows 1, 0.5; columns 0.7, 0.8
    assert constraint_error(m).item() == pytest.approx(0.5)
    batch = torch.stack([m, torch.eye(2)])
    assert constraint_error(batch, reduction="max").item() == pytest.approx(0.5)
    assert constraint_error(batch, reduction="mean").item() == pytest.approx(0.25)


def test_metrics_reject_mismatches():
    with pytest.raises(ValueError, match="same shape"):
        prop_wrong(torch.tensor([0, 1]), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="permutation"):
        kendall_tau(torch.tensor([0, 0, 1]), torch.tensor([0, 1, 2]))
    with pytest.raises(TypeError, match="integer"):
        prop_any_wrong(torch.tensor([0.0, 1.0]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="same device"):
        prop_wrong(torch.tensor([0, 1]), torch.tensor([0, 1], device="meta"))
    with pytest.raises(ValueError, match="same device"):
        l1_error(torch.zeros(2), torch.zeros(2, device="meta"))
    with pytest.raises(ValueError, match="reduction"):
        prop_wrong(torch.tensor([0, 1]), torch.tensor([0, 1]), reduction="sum")
    assert np.isfinite(kendall_tau(torch.tensor([[0, 1]]), torch.tensor([[1, 0]])).item())
