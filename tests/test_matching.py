import math
import re

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


# --- rectangular problems, forbidden pairs, padded batches (issue 19) ---------------------------


def check_partial(perm: np.ndarray, allowed: np.ndarray) -> None:
    """``perm`` (N,) is a valid partial assignment of the (N, M) problem: injective, only
    allowed pairs, min(N, M) pairs."""
    n, m = allowed.shape
    assigned = perm[perm >= 0]
    assert len(set(assigned.tolist())) == len(assigned) == min(n, m)
    assert ((perm >= -1) & (perm < m)).all()
    rows = np.flatnonzero(perm >= 0)
    assert allowed[rows, perm[rows]].all()
    if n <= m:
        assert (perm >= 0).all()


def scipy_total(costs: np.ndarray) -> float | None:
    """scipy's optimal total of a cost matrix (``inf``: forbidden), ``None`` if infeasible."""
    try:
        r, c = linear_sum_assignment(costs)
    except ValueError:
        return None
    return float(costs[r, c].sum())


@given(
    n=st.integers(1, 12),
    m=st.integers(1, 12),
    batch=st.integers(1, 4),
    forbid=st.sampled_from([0.0, 0.3, 0.6, 0.9]),
    kind=st.sampled_from(["normal", "ties"]),
    maximize=st.booleans(),
    solver=st.sampled_from(["auto", "scipy"]),
    single=st.booleans(),
    seed=st.integers(0, 10_000),
)
def test_rectangular_and_forbidden_attain_scipy_optimum(
    n, m, batch, forbid, kind, maximize, solver, single, seed
):
    """Equal objective to scipy on every feasible case; a ValueError naming the item otherwise."""
    rng = np.random.default_rng(seed)
    s = rng.standard_normal((batch, n, m)) if kind == "normal" else (
        rng.integers(0, 3, (batch, n, m)).astype(float)
    )
    if single:  # float32 input, solved in float32
        s = s.astype(np.float32).astype(np.float64)
    allowed = rng.random((batch, n, m)) >= forbid
    costs = np.where(allowed, -s if maximize else s, np.inf)  # scipy's form: minimize, inf
    given_ = np.where(allowed, s, -np.inf if maximize else np.inf)
    x = torch.from_numpy(given_).float() if single else torch.from_numpy(given_)
    totals = [scipy_total(c) for c in costs]
    if any(t is None for t in totals):
        first = next(b for b, t in enumerate(totals) if t is None)
        named = rf"no feasible assignment for batch item \({first},\)"
        with pytest.raises(ValueError, match=named):
            matching(x, maximize=maximize, solver=solver)
        return
    perm = matching(x, maximize=maximize, solver=solver).numpy()
    assert perm.shape == (batch, n)
    for b in range(batch):
        check_partial(perm[b], allowed[b])
        rows = np.flatnonzero(perm[b] >= 0)
        total = costs[b][rows, perm[b][rows]].sum()
        assert total == pytest.approx(totals[b], rel=1e-12, abs=1e-9)


def test_rectangular_convention_and_matrix_form(generator):
    """N <= M: every row gets a distinct column; N > M: every column gets a row, the rest -1."""
    wide = torch.randn(3, 4, 7, generator=generator, dtype=torch.float64)
    perm = matching(wide)
    assert perm.shape == (3, 4) and (perm >= 0).all()
    p = permutation_matrix(perm, m=7, dtype=torch.float64)
    assert p.shape == (3, 4, 7) and torch.equal(p.sum(-1), torch.ones(3, 4))
    assert (p.sum(-2) <= 1).all()
    # the transpose problem has the same optimum, read from the other side
    tall = matching(wide.mT)
    assert tall.shape == (3, 7) and ((tall >= 0).sum(-1) == 4).all()
    assert torch.equal(permutation_matrix(tall, m=4, dtype=torch.float64), p.mT)
    for b in range(3):
        r, c = linear_sum_assignment(wide[b].numpy(), maximize=True)
        assert (p[b] * wide[b]).sum().item() == pytest.approx(wide[b].numpy()[r, c].sum())


def test_forbidden_pairs_are_never_used(generator):
    x = torch.randn(50, 6, 6, generator=generator)
    # forbid each item's best pair, row by row: the optimum must go around them
    best = x.argmax(-1)
    forbidden = x.scatter(-1, best.unsqueeze(-1), -math.inf)
    perm = matching(forbidden)
    assert not (perm == best).any()
    costs = matching(-forbidden, maximize=False)  # +inf costs: the same problem
    assert torch.equal(costs, perm)


@pytest.mark.parametrize("maximize", [True, False])
@pytest.mark.parametrize("padded", [False, True])
def test_wrong_infinities_and_nan_are_errors(maximize, padded):
    """NaN and the infinity that is no forbidden pair are errors, also in a padded batch."""
    wrong = "+inf" if maximize else "-inf"
    for value in (math.inf if maximize else -math.inf, math.nan):
        x = torch.zeros(2, 3, 4)
        x[1, 2, 0] = value
        kwargs = {"n_rows": torch.tensor([3, 3])} if padded else {}
        msg = re.escape(f"invalid numeric entries (NaN or {wrong};")
        with pytest.raises(ValueError, match=msg):
            matching(x, maximize=maximize, **kwargs)


def test_infeasible_message_names_item_rows_and_columns():
    x = torch.zeros(2, 3, 4, 5)
    x[1, 2, :3, 1:] = -math.inf  # item (1, 2): rows 0-2 may only take column 0
    with pytest.raises(ValueError) as err:
        matching(x)
    msg = str(err.value)
    assert "batch item (1, 2)" in msg and "rows [0, 1, 2]" in msg and "columns [0]" in msg
    # the transposed case (N > M) names the columns that cannot all be assigned
    y = torch.zeros(5, 3)
    y[1:, :2] = -math.inf  # columns 0 and 1 can only take row 0
    with pytest.raises(ValueError, match=r"feasible assignment: columns \[0, 1\] can only be "
                       r"assigned to rows \[0\]"):
        matching(y)
    # a row all -inf, unpadded, with the scipy solver too
    z = torch.zeros(3, 3)
    z[1] = -math.inf
    with pytest.raises(ValueError, match=r"rows \[1\] can only be assigned to columns \[\]"):
        matching(z, solver="scipy")


@given(
    n=st.integers(1, 8),
    m=st.integers(1, 8),
    batch=st.integers(1, 5),
    forbid=st.sampled_from([0.0, 0.2]),
    use_mask=st.booleans(),
    seed=st.integers(0, 10_000),
)
def test_padded_batches_equal_each_item_alone(n, m, batch, forbid, use_mask, seed):
    """Each item of a padded batch is solved as its own (n_rows, n_cols) problem; the padding,
    whatever it holds (NaN, inf, huge), is never read and never assigned."""
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, n + 1, batch)
    cols = rng.integers(0, m + 1, batch)
    s = rng.standard_normal((batch, n, m))
    s[rng.random((batch, n, m)) < forbid] = -np.inf
    padded = s.copy()
    for b in range(batch):
        padded[b, rows[b]:, :] = rng.choice([np.nan, np.inf, -np.inf, 1e300])
        padded[b, :, cols[b]:] = rng.choice([np.nan, np.inf, -np.inf, 1e300])
    x = torch.from_numpy(padded)
    if use_mask:
        mask = (np.arange(n)[:, None] < rows[:, None, None]) & (np.arange(m) < cols[:, None, None])
        kwargs = {"mask": torch.from_numpy(mask)}
    else:
        kwargs = {"n_rows": torch.from_numpy(rows), "n_cols": torch.from_numpy(cols)}
    totals = [scipy_total(-s[b, : rows[b], : cols[b]]) if rows[b] and cols[b] else 0.0
              for b in range(batch)]
    if any(t is None for t in totals):
        first = next(b for b, t in enumerate(totals) if t is None)
        with pytest.raises(ValueError, match=rf"batch item \({first},\)"):
            matching(x, **kwargs)
        return
    perm = matching(x, **kwargs).numpy()
    for b in range(batch):
        assert (perm[b, rows[b]:] == -1).all()
        own = perm[b, : rows[b]]
        if rows[b] and cols[b]:
            check_partial(own, np.isfinite(s[b, : rows[b], : cols[b]]))
            picked = np.flatnonzero(own >= 0)
            assert -s[b][picked, own[picked]].sum() == pytest.approx(totals[b], rel=1e-12)
        else:
            assert (own == -1).all()


def test_mask_with_holes_is_forbidden_pairs_and_empty_rows_are_absent(generator):
    x = torch.randn(4, 5, generator=generator, dtype=torch.float64)
    mask = torch.ones(4, 5, dtype=torch.bool)
    mask[2] = False  # row 2: absent
    mask[:, 4] = False  # column 4: absent
    mask[0, 0] = False  # a forbidden pair
    perm = matching(x, mask=mask)
    assert perm[2] == -1 and perm[0] != 0 and not (perm == 4).any()
    sub = x[[0, 1, 3]][:, :4].clone()
    sub[0, 0] = -math.inf
    assert torch.equal(perm[[0, 1, 3]], matching(sub))
    # combined with n_rows: both must say an entry exists
    both = matching(x, mask=mask, n_rows=2)
    assert both[2:].eq(-1).all() and torch.equal(both[:2], matching(sub[:2]))


def test_size_arguments_are_checked_by_name():
    x = torch.zeros(2, 3, 4)
    with pytest.raises(ValueError, match=r"n_rows must hold sizes in 0..3, got values in 0..4"):
        matching(x, n_rows=torch.tensor([0, 4]))
    with pytest.raises(TypeError, match="n_cols must have an integer dtype"):
        matching(x, n_cols=torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match=r"n_rows must have the batch shape \(2,\)"):
        matching(x, n_rows=torch.tensor([1, 2, 3]))
    with pytest.raises(TypeError, match="mask must be a bool tensor"):
        matching(x, mask=torch.ones(2, 3, 4))
    with pytest.raises(ValueError, match="mask must have scores's shape"):
        matching(x, mask=torch.ones(3, 3, dtype=torch.bool))
    with pytest.raises(TypeError, match="n_rows must be an int or an integer tensor, got bool"):
        matching(x, n_rows=True)


def test_rectangular_and_padded_under_vmap(generator):
    x = torch.randn(4, 3, 6, generator=generator, dtype=torch.float64)
    assert torch.equal(torch.func.vmap(matching)(x), matching(x))
    rows = torch.tensor([1, 3, 2, 0])
    padded = torch.func.vmap(lambda s, r: matching(s, n_rows=r))(x, rows)
    assert torch.equal(padded, matching(x, n_rows=rows))
    mask = torch.rand(6, generator=generator) > 0.3
    assert torch.equal(
        torch.func.vmap(lambda s: matching(s, mask=mask.expand(3, 6)))(x),
        matching(x, mask=mask.expand(4, 3, 6)),
    )


def test_rectangular_padded_and_forbidden_stay_on_the_device(device, generator):
    x = torch.randn(3, 4, 6, generator=generator)
    x[0, 1, 2] = -math.inf
    rows = torch.tensor([4, 2, 3])
    on_device = matching(x.to(device), n_rows=rows.to(device))
    assert on_device.device == x.to(device).device
    assert torch.equal(on_device.cpu(), matching(x, n_rows=rows))
