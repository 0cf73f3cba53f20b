import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy.optimize import linear_sum_assignment

from permlib import matching, permutation_matrix


def objective(scores: np.ndarray, perm: np.ndarray) -> float:
    return float(scores[np.arange(len(perm)), perm].sum())


@given(
    n=st.integers(1, 30),
    batch=st.integers(1, 6),
    kind=st.sampled_from(["normal", "ties", "huge"]),
    seed=st.integers(0, 10_000),
    solver=st.sampled_from(["auto", "scipy"]),
)
def test_attains_scipy_optimum(n, batch, kind, seed, solver):
    rng = np.random.default_rng(seed)
    if kind == "normal":
        s = rng.standard_normal((batch, n, n))
    elif kind == "ties":
        s = rng.integers(0, 3, (batch, n, n)).astype(float)
    else:
        s = rng.uniform(1, 1000, (batch, n, n)) / 1e-4
    perm = matching(torch.from_numpy(s), solver=solver).numpy()
    for b in range(batch):
        assert sorted(perm[b]) == list(range(n))
        rows, cols = linear_sum_assignment(s[b], maximize=True)
        assert objective(s[b], perm[b]) == pytest.approx(s[b][rows, cols].sum(), rel=1e-12)


def test_minimize_costs_and_batch_shape(generator):
    s = torch.randn(2, 3, 7, 7, generator=generator)
    perm = matching(s, maximize=False)
    assert perm.shape == (2, 3, 7) and perm.dtype == torch.int64
    ref = matching(-s)
    flat_s, flat_p, flat_r = s.reshape(-1, 7, 7), perm.reshape(-1, 7), ref.reshape(-1, 7)
    for sb, pb, rb in zip(flat_s, flat_p, flat_r, strict=True):
        assert sb[torch.arange(7), pb].sum() == pytest.approx(sb[torch.arange(7), rb].sum().item())


def test_recovers_a_planted_permutation(generator):
    truth = torch.stack([torch.randperm(12, generator=generator) for _ in range(5)])
    scores = permutation_matrix(truth) * 5 + 0.1 * torch.randn(5, 12, 12, generator=generator)
    assert torch.equal(matching(scores), truth)


def test_works_with_gradients_and_single_item():
    x = torch.randn(4, 4, requires_grad=True)
    assert matching(x).shape == (4,)
    assert matching(torch.zeros(1, 1)).tolist() == [0]


@pytest.mark.parametrize("kind", ["normal", "large_offset", "near_ties"])
@pytest.mark.parametrize(("batch", "n"), [(200, 9), (40, 36), (3, 80)])
def test_float32_path_is_optimal(kind, batch, n):
    """float32 scores are solved in float32: still the optimum of the scores as given."""
    rng = np.random.default_rng({"normal": 0, "large_offset": 1, "near_ties": 2}[kind] + n)
    shape = (batch, n, n)
    if kind == "normal":
        s = rng.standard_normal(shape)
    elif kind == "large_offset":
        s = 1000 + 1e-3 * rng.standard_normal(shape)
    else:
        s = rng.integers(0, 5, shape) + 1e-4 * rng.standard_normal(shape)
    s32 = torch.from_numpy(s.astype(np.float32))
    exact = s32.double().numpy()  # the scores as given, without further rounding
    perm = matching(s32).numpy()
    for b in range(shape[0]):
        rows, cols = linear_sum_assignment(exact[b], maximize=True)
        assert objective(exact[b], perm[b]) == pytest.approx(exact[b][rows, cols].sum(), rel=1e-12)


@given(n=st.integers(1, 9), batch_shape=st.sampled_from([(0,), (0, 3), (2, 0)]),
       solver=st.sampled_from(["auto", "lapx", "scipy"]), maximize=st.booleans())
def test_empty_batches_give_empty_permutations(n, batch_shape, solver, maximize):
    perm = matching(torch.zeros(*batch_shape, n, n), maximize=maximize, solver=solver)
    assert perm.shape == (*batch_shape, n) and perm.dtype == torch.int64


def test_meta_tensors_are_refused_by_name():
    with pytest.raises(ValueError, match="scores is a meta tensor"):
        matching(torch.zeros(3, 3, device="meta"))


def test_vmap_is_one_batched_solve(generator):
    x = torch.randn(4, 6, 6, generator=generator, dtype=torch.float64)
    ref = matching(x)
    assert torch.equal(torch.func.vmap(matching)(x), ref)
    assert torch.equal(torch.func.vmap(matching, in_dims=1)(x.transpose(0, 1)), ref)
    nested = torch.randn(2, 3, 5, 5, generator=generator)
    assert torch.equal(torch.func.vmap(torch.func.vmap(matching))(nested), matching(nested))
    costs = torch.func.vmap(lambda s: matching(s, maximize=False, solver="scipy"))(x)
    assert torch.equal(costs, matching(-x))
    with pytest.raises(ValueError, match="scores contains invalid numeric entries"):
        torch.func.vmap(matching)(torch.full((2, 3, 3), float("nan")))


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_jacobians_through_matching_are_zero(generator):
    """The matching is piecewise constant: torch.func sees a non-differentiable output."""
    x = torch.randn(5, 5, generator=generator, dtype=torch.float64)
    for jac in (torch.func.jacrev, torch.func.jacfwd):
        j = jac(lambda s: matching(s).double())(x)
        assert j.shape == (5, 5, 5) and not j.any()
