"""Tests of permlib.permutations: index tensors <-> permutation matrices, inverses."""

import pytest
import torch

import permlib
from permlib.permutations import invert_permutation, permutation_matrix


def test_permutation_matrix_and_inverse(generator):
    perm = torch.stack([torch.randperm(9, generator=generator) for _ in range(4)])
    p = permutation_matrix(perm)
    assert p.shape == (4, 9, 9)
    assert torch.equal(p.sum(-1), torch.ones(4, 9)) and torch.equal(p.sum(-2), torch.ones(4, 9))
    assert torch.equal(p.argmax(-1), perm)
    inv = invert_permutation(perm)
    assert torch.equal(invert_permutation(inv), perm)
    assert torch.equal(permutation_matrix(inv), p.transpose(-1, -2))
    assert torch.equal(torch.gather(perm, -1, inv), torch.arange(9).expand(4, 9))
    assert permutation_matrix(perm, dtype=torch.float64).dtype == torch.float64


def test_results_stay_on_the_input_device(device):
    perm = torch.tensor([[2, 0, 1], [0, 1, 2]], device=device)
    p = permutation_matrix(perm, dtype=torch.float64)
    inv = invert_permutation(perm)
    assert p.device == perm.device and inv.device == perm.device
    assert inv.tolist() == [[1, 2, 0], [0, 1, 2]]
    # P applied to the items puts item i at position perm[i]: (P^T x)[perm[i]] = x[i]
    x = torch.tensor([10.0, 20.0, 30.0], dtype=torch.float64, device=device)
    assert (p[0].T @ x).tolist() == [20.0, 30.0, 10.0]


def test_top_level_exports_are_these_functions():
    assert permlib.permutation_matrix is permutation_matrix
    assert permlib.invert_permutation is invert_permutation
    with pytest.raises(ValueError, match="perm"):
        invert_permutation(torch.tensor([1, 1, 0]))


def test_partial_permutations_with_m(device):
    """``m=``: injective maps of N rows into m columns, -1 for an unassigned row."""
    perm = torch.tensor([[2, -1, 0], [-1, -1, 4]], device=device)
    p = permutation_matrix(perm, m=5, dtype=torch.float64)
    assert p.shape == (2, 3, 5) and p.device == perm.device
    assert p.tolist()[0] == [[0, 0, 1, 0, 0], [0, 0, 0, 0, 0], [1, 0, 0, 0, 0]]
    assert p[1].sum().item() == 1 and p[1, 2, 4].item() == 1
    inv = invert_permutation(perm, m=5)
    assert inv.tolist() == [[2, -1, 0, -1, -1], [-1, -1, -1, -1, 2]]
    assert torch.equal(permutation_matrix(inv, m=3, dtype=torch.float64), p.mT)
    # a full permutation with m = N is the plain case
    full = torch.tensor([1, 2, 0], device=device)
    assert torch.equal(permutation_matrix(full, m=3), permutation_matrix(full))
    assert torch.equal(invert_permutation(full, m=3), invert_permutation(full))


@pytest.mark.parametrize(
    "perm,m,exc,msg",
    [
        (torch.tensor([0, 0, -1]), 3, ValueError, "assigns a column to more than one row"),
        (torch.tensor([0, 3]), 3, ValueError, r"columns in 0..2 or -1 \(unassigned\)"),
        (torch.tensor([-2, 0]), 3, ValueError, "got values in -2..0"),
        (torch.tensor([0, 1]), 0, ValueError, "m must be >= 1"),
        (torch.tensor([0.0, 1.0]), 3, TypeError, "integer dtype"),
    ],
)
def test_bad_partial_permutations(perm, m, exc, msg):
    for fn in (permutation_matrix, invert_permutation):
        with pytest.raises(exc, match=msg):
            fn(perm, m=m)
    # without m, -1 is not a permutation
    with pytest.raises(ValueError, match="permutation of 0..1"):
        permutation_matrix(torch.tensor([-1, 0]))
