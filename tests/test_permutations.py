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
