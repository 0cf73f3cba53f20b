import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy.stats import kendalltau

from permlib import invert_permutation, permutation_matrix, sinkhorn
from permlib.metrics import (
    constraint_error,
    kendall_tau,
    l1_error,
    l2_error,
    prop_any_wrong,
    prop_wrong,
)
from tests.test_sinkhorn import _HostReads


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


def _scipy_tau(a, b) -> float:
    return float(kendalltau(np.asarray(a), np.asarray(b)).statistic)


@pytest.mark.parametrize(
    ("pred", "true", "items", "papers"),
    [
        ([1, 2, 0], [0, 2, 1], 1 / 3, -1.0),  # a 3-cycle against a swap
        ([2, 0, 1], [0, 2, 1], -1.0, 1 / 3),
        ([0, 1, 3, 2], [0, 2, 3, 1], 4 / 6, 0.0),
        ([1, 2, 0, 3], [0, 1, 2, 3], 1 / 3, 1 / 3),  # against the identity the two agree
        ([3, 2, 1, 0], [0, 1, 2, 3], -1.0, -1.0),
    ],
)
def test_kendall_tau_conventions_by_hand(pred, true, items, papers):
    """"items" is scipy on the item -> position vectors, "papers" on position -> item."""
    p, t = torch.tensor(pred), torch.tensor(true)
    assert _scipy_tau(pred, true) == pytest.approx(items)
    assert _scipy_tau(invert_permutation(p), invert_permutation(t)) == pytest.approx(papers)
    assert kendall_tau(p, t).item() == pytest.approx(items)  # the default
    assert kendall_tau(p, t, convention="items").item() == pytest.approx(items)
    assert kendall_tau(p, t, convention="papers").item() == pytest.approx(papers)


def test_kendall_tau_papers_convention_is_the_reference_codes():
    """As google/gumbel_sinkhorn's sorting model: the true orderings are argsort(x) (top_k
    indices: the item at each position), the predicted ones the inverse of the matching, and
    scipy's kendalltau is applied per list to those."""
    g = torch.Generator().manual_seed(3)
    x = torch.rand(64, 9, generator=g)
    true_items = x.argsort(dim=-1).argsort(dim=-1)  # permlib's: position of item i
    pred_items = torch.stack([torch.randperm(9, generator=g) for _ in range(64)])
    order_true, order_pred = x.argsort(dim=-1), invert_permutation(pred_items)
    ref = [_scipy_tau(order_pred[b], order_true[b]) for b in range(64)]
    ours = kendall_tau(pred_items, true_items, reduction="none", convention="papers")
    assert ours.tolist() == pytest.approx(ref, abs=1e-6)
    assert not np.allclose(kendall_tau(pred_items, true_items, reduction="none").numpy(), ref)
    with pytest.raises(ValueError, match="convention must be one of"):
        kendall_tau(pred_items, true_items, convention="positions")


@given(n=st.integers(2, 30), batch=st.integers(1, 4), seed=st.integers(0, 10_000))
def test_kendall_tau_papers_agrees_with_scipy(n, batch, seed):
    g = torch.Generator().manual_seed(seed)
    pred = torch.stack([torch.randperm(n, generator=g) for _ in range(batch)])
    true = torch.stack([torch.randperm(n, generator=g) for _ in range(batch)])
    ref = [
        _scipy_tau(invert_permutation(pred[b]), invert_permutation(true[b])) for b in range(batch)
    ]
    ours = kendall_tau(pred, true, reduction="none", convention="papers")
    assert ours.tolist() == pytest.approx(ref, abs=1e-6)


DTYPES = [torch.uint8, torch.int8, torch.int16, torch.int32, torch.uint16, torch.uint32]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_small_and_unsigned_dtypes_give_the_int64_values(dtype, generator):
    """uint8 used to wrap around in the pairwise differences (tau 1.0 for a reversal)."""
    rev = torch.tensor([3, 2, 1, 0])
    ident = torch.arange(4)
    assert kendall_tau(rev.to(dtype), ident.to(dtype)).item() == -1.0
    pred = torch.stack([torch.randperm(12, generator=generator) for _ in range(6)])
    true = torch.stack([torch.randperm(12, generator=generator) for _ in range(6)])
    for fn in (prop_wrong, prop_any_wrong, kendall_tau):
        torch.testing.assert_close(
            fn(pred.to(dtype), true.to(dtype), reduction="none"),
            fn(pred, true, reduction="none"),
        )
    torch.testing.assert_close(
        kendall_tau(pred.to(dtype), true, reduction="none", convention="papers"),
        kendall_tau(pred, true, reduction="none", convention="papers"),
    )
    assert torch.equal(permutation_matrix(pred.to(dtype)), permutation_matrix(pred))
    assert torch.equal(invert_permutation(pred.to(dtype)), invert_permutation(pred))


def test_dtypes_too_small_for_the_permutation_are_rejected():
    with pytest.raises(ValueError, match="int8, which cannot hold the indices 0..199"):
        kendall_tau(torch.arange(200).to(torch.int8), torch.arange(200))
    with pytest.raises(TypeError, match="integer dtype"):
        prop_wrong(torch.tensor([True, False]), torch.tensor([0, 1]))


ORDER_METRICS = {"prop_wrong": prop_wrong, "prop_any_wrong": prop_any_wrong,
                 "kendall_tau": kendall_tau}


@given(
    n=st.integers(1, 12),
    batch_shape=st.sampled_from([(0,), (0, 3), (2, 0)]),
    metric=st.sampled_from(sorted(ORDER_METRICS)),
)
def test_empty_batches_of_order_metrics(n, batch_shape, metric):
    fn = ORDER_METRICS[metric]
    perm = torch.arange(n).expand(*batch_shape, n)
    out = fn(perm, perm, reduction="none")
    assert out.shape == batch_shape and out.dtype == torch.float32
    with pytest.raises(ValueError, match=r"pred is an empty batch .*reduction='mean'"):
        fn(perm, perm)
    if metric == "kendall_tau":
        assert kendall_tau(perm, perm, reduction="none", convention="papers").shape == batch_shape


@given(n=st.integers(1, 8), batch_shape=st.sampled_from([(0,), (0, 2), (3, 0)]))
def test_empty_batches_of_constraint_error(n, batch_shape):
    p = torch.zeros(*batch_shape, n, n)
    assert constraint_error(p).shape == batch_shape
    assert constraint_error(p, reduction="none").shape == batch_shape
    for reduction in ("mean", "max"):
        with pytest.raises(ValueError, match=f"p is an empty batch .*reduction='{reduction}'"):
            constraint_error(p, reduction=reduction)
    with pytest.raises(ValueError, match="reduction must be"):
        constraint_error(p, reduction="sum")


@given(shape=st.sampled_from([(0,), (0, 5), (3, 0), (0, 2, 3)]), dim=st.sampled_from([None, -1, 0]))
def test_empty_reconstruction_errors(shape, dim):
    x = torch.zeros(shape)
    expected_shape = None if dim is None else torch.zeros(shape).sum(dim=dim).shape
    for fn in (l1_error, l2_error):
        if expected_shape is not None and math.prod(expected_shape) == 0:
            out = fn(x, x, dim=dim)
            assert out.shape == expected_shape and out.dtype == torch.float32
        else:  # a mean over no entries
            with pytest.raises(ValueError, match="mean over no entries"):
                fn(x, x, dim=dim)


def test_nonempty_means_of_nonempty_batches_still_work():
    perm = torch.tensor([[0, 1], [1, 0]])
    assert prop_wrong(perm, perm.flip(0)).item() == 1.0
    assert constraint_error(torch.eye(3).expand(4, 3, 3), reduction="max").item() == 0.0
    assert l1_error(torch.zeros(2, 0), torch.zeros(2, 0), dim=0).shape == (0,)


def test_reconstruction_errors_check_finiteness():
    ok = torch.zeros(3)
    for bad in (math.nan, math.inf, -math.inf):
        x = torch.tensor([0.0, bad, 1.0])
        for fn in (l1_error, l2_error):
            with pytest.raises(ValueError, match="pred contains invalid numeric entries"):
                fn(x, ok)
            with pytest.raises(ValueError, match="target contains invalid numeric entries"):
                fn(ok, x)


@given(
    offset=st.sampled_from([0.0, 1e10, 1e30, 1e38, -3e38]),
    spread=st.sampled_from([1e-3, 1.0, 1e20, 1e37]),
    n=st.integers(1, 50),
    seed=st.integers(0, 1000),
)
def test_reconstruction_errors_at_extreme_offsets(offset, spread, n, seed):
    """float32 input near the top of its range: computed without overflow, the float64 value."""
    g = torch.Generator().manual_seed(seed)
    base = torch.full((2, n), offset, dtype=torch.float64)
    a = (base + spread * torch.randn(2, n, generator=g, dtype=torch.float64)).clamp(-3e38, 3e38)
    b = (base + spread * torch.randn(2, n, generator=g, dtype=torch.float64)).clamp(-3e38, 3e38)
    a32, b32 = a.float(), b.float()
    d = a32.double() - b32.double()  # exact reference of the float32 values
    for fn, ref in ((l1_error, d.abs()), (l2_error, d.square())):
        for dim in (None, -1):
            want = ref.mean() if dim is None else ref.mean(dim=dim)
            if (want > torch.finfo(torch.float32).max).any():
                with pytest.raises(ValueError, match="overflows torch.float32"):
                    fn(a32, b32, dim=dim)
                assert torch.allclose(fn(a32.double(), b32.double(), dim=dim), want, rtol=1e-12)
                continue
            out = fn(a32, b32, dim=dim)
            assert out.dtype == torch.float32 and torch.isfinite(out).all()
            torch.testing.assert_close(out.double(), want, rtol=1e-6, atol=0)


def test_reconstruction_errors_that_used_to_overflow():
    # each difference 6e38 overflows float32; its mean is representable
    a = torch.tensor([3e38, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    b = torch.tensor([-3e38, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    assert l1_error(a, b).item() == pytest.approx(6e38 / 8, rel=1e-6)
    # float64: the square of 1.5e154 overflows, the mean of the squares does not
    x = torch.tensor([1.5e154, 0.0, 0.0, 0.0], dtype=torch.float64)
    assert l2_error(x, torch.zeros(4, dtype=torch.float64)).item() == pytest.approx(5.625e307)
    # float64: each square 1e308 is finite, their sum is not
    y = torch.full((4, 3), 1e154, dtype=torch.float64)
    assert l2_error(y, torch.zeros_like(y), dim=0).tolist() == pytest.approx([1e308] * 3)
    assert l2_error(y, torch.zeros_like(y)).item() == pytest.approx(1e308)
    with pytest.raises(ValueError, match="l2_error of pred and target is 3.6e\\+77"):
        l2_error(torch.tensor([3e38]), torch.tensor([-3e38]))
    # gradients still flow (l2_error as a loss)
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    l2_error(w, torch.zeros(2)).backward()
    torch.testing.assert_close(w.grad, torch.tensor([1.0, 2.0]))


def test_deferred_metric_checks_read_the_host_once_and_name_the_argument(monkeypatch):
    """On CUDA (here: the deferral forced on the CPU) l1/l2_error read the host once instead of
    three times, constraint_error once; bad input raises naming the argument as before."""
    import permlib.metrics as metrics_module

    monkeypatch.setattr(metrics_module, "defers", lambda device: True)
    reads = _HostReads(monkeypatch)
    a, b = torch.randn(4, 5), torch.randn(4, 5)
    for fn in (l1_error, l2_error):
        reads.count = 0
        out = fn(a, b)
        assert reads.count == 1
        torch.testing.assert_close(out, (a - b).abs().pow(1 if fn is l1_error else 2).mean())
        for bad in (math.nan, math.inf):
            y = a.clone()
            y[1, 2] = bad
            with pytest.raises(ValueError, match="pred contains invalid numeric entries"):
                fn(y, b)
            with pytest.raises(ValueError, match="target contains invalid numeric entries"):
                fn(a, y)
        big = torch.full((3,), 3e38)
        with pytest.raises(ValueError, match="overflows torch.float32"):
            l2_error(big, -big)
    p = torch.full((2, 3, 3), 1 / 3)
    reads.count = 0
    err = constraint_error(p)
    assert reads.count == 1 and err.abs().max() < 1e-6
    p[0, 1, 1] = math.nan
    with pytest.raises(ValueError, match="p contains invalid numeric entries"):
        constraint_error(p)


# --- Issue 19: partial permutations, padded batches, rectangular constraint errors ----------


def _padded_perms(seed, batch=6, n=7):
    """Padded batches of permutations: item b is a permutation of 0..rows[b]-1, padding junk."""
    g = torch.Generator().manual_seed(seed)
    rows = torch.randint(1, n + 1, (batch,), generator=g)
    pred = torch.full((batch, n), 99)
    true = torch.full((batch, n), -5)
    for b in range(batch):
        r = int(rows[b])
        pred[b, :r] = torch.randperm(r, generator=g)
        true[b, :r] = torch.randperm(r, generator=g) if b % 2 else pred[b, :r]
    return pred, true, rows


def test_order_metrics_of_a_padded_batch_equal_each_item_alone():
    pred, true, rows = _padded_perms(90)
    wrong = prop_wrong(pred, true, reduction="none", n_rows=rows)
    anyw = prop_any_wrong(pred, true, reduction="none", n_rows=rows)
    items = kendall_tau(pred, true, reduction="none", n_rows=rows)
    papers = kendall_tau(pred, true, reduction="none", n_rows=rows, convention="papers")
    for b in range(len(rows)):
        p, t = pred[b, : rows[b]], true[b, : rows[b]]
        assert wrong[b].item() == pytest.approx(prop_wrong(p, t).item())
        assert anyw[b].item() == prop_any_wrong(p, t).item()
        assert items[b].item() == pytest.approx(kendall_tau(p, t).item(), abs=1e-6)
        assert papers[b].item() == pytest.approx(
            kendall_tau(p, t, convention="papers").item(), abs=1e-6
        )
    mask = torch.arange(7) < rows[:, None]
    assert torch.equal(prop_wrong(pred, true, reduction="none", mask=mask), wrong)
    assert prop_wrong(pred, true, n_rows=rows).item() == pytest.approx(wrong.mean().item())


def test_order_metrics_of_partial_permutations():
    """Rectangular matchings: -1 for an unassigned item, columns up to m - 1."""
    pred = torch.tensor([[4, -1, 0, 2], [1, 0, 3, -1]])
    true = torch.tensor([[4, 1, 0, 3], [1, 0, 3, -1]])
    assert prop_wrong(pred, true, reduction="none", m=5).tolist() == [0.5, 0.0]
    assert prop_any_wrong(pred, true, reduction="none", m=5).tolist() == [1.0, 0.0]
    # by items: the items assigned in both (0, 2, 3 | 0, 1, 2), scipy on their columns
    tau = kendall_tau(pred, true, reduction="none", m=5).tolist()
    assert tau[0] == pytest.approx(_scipy_tau([4, 0, 2], [4, 0, 3]))
    assert tau[1] == pytest.approx(1.0)
    # by positions: the columns both give (0, 4 | 0, 1, 3), scipy on the items there
    by_pos = kendall_tau(pred, true, reduction="none", m=5, convention="papers").tolist()
    assert by_pos[0] == pytest.approx(_scipy_tau([2, 0], [2, 0]))
    with pytest.raises(ValueError, match="assigns a column to more than one row"):
        prop_wrong(torch.tensor([1, 1, -1]), torch.tensor([0, 1, 2]), m=3)
    with pytest.raises(ValueError, match=r"pred must hold columns in 0..2 or -1"):
        prop_wrong(torch.tensor([0, 5, -1]), torch.tensor([0, 1, 2]), m=3)
    with pytest.raises(ValueError, match="n_rows must hold sizes in 0..3"):
        prop_wrong(torch.tensor([0, 1, 2]), torch.tensor([0, 1, 2]), n_rows=4)


def test_constraint_error_of_rectangular_and_padded_plans():
    p = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.6, 0.2]])  # rows 1, 0.9; columns 0.6, 0.9, 0.4
    assert constraint_error(p).item() == pytest.approx(0.1)
    assert constraint_error(p.mT).item() == pytest.approx(0.1)  # the columns must sum to 1
    over = torch.tensor([[0.9, 0.6, 0.0], [0.5, 0.0, 0.5]])  # column 0 sums to 1.4
    assert constraint_error(over).item() == pytest.approx(0.5)
    x = torch.randn(4, 5, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(91))
    rows, cols = torch.tensor([5, 2, 4, 3]), torch.tensor([7, 6, 2, 3])
    plan = sinkhorn(x, tau=0.5, n_iters=5000, tol=1e-12, n_rows=rows, n_cols=cols)
    err = constraint_error(plan, n_rows=rows, n_cols=cols)
    assert err.shape == (4,) and (err <= 1e-12).all()
    junk = plan.clone()
    junk[1, 2:, :] = math.nan  # padding (item 1 has 2 rows and 6 columns) is never read
    junk[1, :, 6] = math.inf
    assert torch.equal(constraint_error(junk, n_rows=rows, n_cols=cols), err)
    # against the square reading, a padded square item is measured on its own block
    assert constraint_error(plan[3, :3, :3]).item() == pytest.approx(err[3].item(), abs=1e-15)


def test_reconstruction_errors_with_a_mask():
    pred = torch.tensor([[1.0, 2.0, math.nan], [4.0, 0.0, 0.0]])
    target = torch.tensor([[1.0, 4.0, 7.0], [0.0, 0.0, 1e30]])
    mask = torch.tensor([[True, True, False], [True, True, False]])
    assert l1_error(pred, target, mask=mask).item() == pytest.approx(6 / 4)
    assert l2_error(pred, target, mask=mask).item() == pytest.approx(20 / 4)
    assert l1_error(pred, target, dim=-1, mask=mask).tolist() == pytest.approx([1.0, 2.0])
    assert l2_error(pred, target, dim=1, mask=mask).tolist() == pytest.approx([2.0, 8.0])
    with pytest.raises(ValueError, match="mask selects no entry"):
        l1_error(pred, target, dim=0, mask=mask)
    with pytest.raises(TypeError, match="mask must be a bool tensor"):
        l1_error(pred, target, mask=mask.float())
