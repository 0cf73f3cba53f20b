"""NeuralSort, SoftSort, the optimal-transport sort and the Plackett-Luce perturbation
(permlib.relaxed_sort)."""

import math

import pytest
import torch

from permlib.relaxed_sort import (
    neural_sort,
    ot_sort,
    plackett_luce_perturb,
    soft_sort,
    sort_permutation,
)

OPERATORS = [neural_sort, soft_sort, ot_sort]


def _converged(op):
    """``op`` with ot_sort's Sinkhorn run to convergence (its gradient is the fixed point's)."""
    if op is ot_sort:
        return lambda s, tau: ot_sort(s, tau, tol=1e-12, n_iters=20_000)
    return op


def test_sort_permutation_is_ascending_with_ties_by_index():
    s = torch.tensor([[0.3, -1.0, 0.3, 2.0]])
    assert sort_permutation(s).tolist() == [[1, 0, 2, 3]]
    assert sort_permutation(torch.zeros(0, 5)).shape == (0, 5)


@pytest.mark.parametrize("op", OPERATORS)
def test_columns_are_distributions_and_the_limit_is_the_sort(op):
    gen = torch.Generator().manual_seed(0)
    s = torch.randn(6, 9, generator=gen, dtype=torch.float64)
    p = op(s, 0.7)
    assert p.shape == (6, 9, 9) and (p >= 0).all()
    torch.testing.assert_close(p.sum(dim=-2), torch.ones(6, 9, dtype=torch.float64))
    if op is ot_sort:
        # Sinkhorn needs ~1/epsilon iterations: take scores that are the targets, shuffled
        s = torch.linspace(0, 1, 9, dtype=torch.float64)[torch.randperm(9, generator=gen)]
        hard = ot_sort(s, 1e-4, squash=False)
    else:
        hard = op(s, 1e-4)
    expected = torch.nn.functional.one_hot(sort_permutation(s), 9).double()
    torch.testing.assert_close(hard, expected, atol=1e-6, rtol=0)
    # P^T x is then the ascending sort
    x_sorted = (hard.transpose(-1, -2) @ s.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(x_sorted, s.sort(dim=-1).values, atol=1e-6, rtol=0)


def test_neural_sort_by_hand():
    # two items: position 1 (k=1) logits (N + 1 - 2k) u_i - sum_j |u_i - u_j|, u = -s
    s = torch.tensor([0.0, 1.0], dtype=torch.float64)
    u = -s
    spread = torch.tensor([1.0, 1.0], dtype=torch.float64)
    for k, col in ((1, 0), (2, 1)):
        expected = torch.softmax((3 - 2 * k) * u - spread, dim=0)
        torch.testing.assert_close(neural_sort(s)[:, col], expected)


def test_soft_sort_by_hand():
    s = torch.tensor([2.0, 0.0, 1.0], dtype=torch.float64)
    p = soft_sort(s, tau=0.5)
    ordered = torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64)
    for k in range(3):
        torch.testing.assert_close(p[:, k], torch.softmax(-(s - ordered[k]).abs() / 0.5, 0))
    q = soft_sort(s, tau=0.5, power=2.0)
    torch.testing.assert_close(q[:, 0], torch.softmax(-(s - 0.0).square() / 0.5, 0))


def test_against_difftopk():
    difftopk = pytest.importorskip("difftopk")
    s = torch.randn(4, 7, generator=torch.Generator().manual_seed(1))
    # difftopk's NeuralSort already returns items x positions, ascending (it negates the scores)
    torch.testing.assert_close(neural_sort(s, 0.3), difftopk.NeuralSort(0.3)(s))
    # difftopk's SoftSort returns positions x items, descending: transpose and flip
    theirs = difftopk.SoftSort(0.3)(s).transpose(-1, -2).flip(-1)
    torch.testing.assert_close(soft_sort(s, 0.3), theirs)


@pytest.mark.parametrize("op", OPERATORS)
def test_gradients_flow_and_are_finite(op):
    s = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    x = torch.randn(3, 5, dtype=torch.float64)
    loss = ((op(s, 0.5).transpose(-1, -2) @ x.unsqueeze(-1)).squeeze(-1) - x.sort().values)
    loss.square().sum().backward()
    assert torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0
    f = _converged(op)
    assert torch.autograd.gradcheck(lambda t: f(t, 0.5), (s.detach().clone().requires_grad_(),))


@pytest.mark.parametrize("op", OPERATORS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_dtypes_batches_and_extremes(op, dtype):
    s = torch.tensor([[1e4, -1e4, 0.0]], dtype=torch.float32).to(dtype)
    p = op(s, 1.0)
    assert p.dtype == dtype and torch.isfinite(p).all()
    assert torch.equal(p.float().argmax(dim=-2), torch.tensor([[1, 2, 0]]))
    assert op(torch.zeros(0, 4, dtype=dtype)).shape == (0, 4, 4)
    assert op(torch.randn(2, 3, 4).to(dtype)).shape == (2, 3, 4, 4)
    one = op(torch.tensor([0.5], dtype=dtype))
    assert one.shape == (1, 1) and float(one) == 1.0


@pytest.mark.parametrize("op", OPERATORS)
def test_bad_input_names_the_argument(op):
    with pytest.raises(TypeError, match="scores"):
        op([1.0, 2.0])
    with pytest.raises(TypeError, match="scores must be a floating"):
        op(torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="scores"):
        op(torch.tensor(1.0))
    with pytest.raises(ValueError, match="scores"):
        op(torch.tensor([1.0, math.nan]))
    with pytest.raises(ValueError, match="tau" if op is not ot_sort else "epsilon"):
        op(torch.randn(3), 0.0)


def test_plackett_luce_perturb():
    s = torch.zeros(2, 4)
    gen = torch.Generator().manual_seed(0)
    out = plackett_luce_perturb(s, 3, generator=gen)
    assert out.shape == (3, 2, 4) and torch.isfinite(out).all()
    gen.manual_seed(0)
    assert torch.equal(out, plackett_luce_perturb(s, 3, generator=gen))
    assert torch.equal(plackett_luce_perturb(s, 2, 0.0), torch.zeros(2, 2, 4))
    with pytest.raises(ValueError, match="n_samples"):
        plackett_luce_perturb(s, 0)
    with pytest.raises(ValueError, match="noise_factor"):
        plackett_luce_perturb(s, 1, -1.0)


def test_plackett_luce_frequencies():
    """Gumbel-perturbed log-weights give Plackett-Luce samples: the top item is ``i`` with
    probability ``w_i / sum w``. ``plackett_luce_perturb`` subtracts the noise (ascending keys),
    so the top of the Plackett-Luce order is the smallest key of ``-log w - g``."""
    w = torch.tensor([1.0, 2.0, 5.0])
    gen = torch.Generator().manual_seed(3)
    top = plackett_luce_perturb(-w.log(), 20000, generator=gen).argmin(dim=-1)
    share = torch.bincount(top, minlength=3).double() / 20000
    torch.testing.assert_close(share, (w / w.sum()).double(), atol=0.015, rtol=0)


def test_ot_sort_is_doubly_stochastic_and_the_transport_plan():
    s = torch.tensor([[0.2, -1.0, 3.0, 0.5]], dtype=torch.float64)
    p = ot_sort(s, 0.05, tol=1e-12, n_iters=20_000)
    ones = torch.ones(1, 4, dtype=torch.float64)
    torch.testing.assert_close(p.sum(dim=-1), ones)
    torch.testing.assert_close(p.sum(dim=-2), ones)
    # the entropic plan by hand: P = diag(u) K diag(v), K = exp(-(x_i - y_k)^2 / eps)
    x = torch.sigmoid((s - s.mean()) / s.std(correction=0))
    k = torch.exp(-(x.unsqueeze(-1) - torch.linspace(0, 1, 4, dtype=torch.float64)).square() / 0.05)
    ratio = p / k  # rank one: u_i v_k
    torch.testing.assert_close(ratio, ratio[..., :1] * ratio[..., :1, :] / ratio[..., :1, :1])
    # without squashing, scores in [0, 1] are used as they are
    raw = torch.tensor([0.9, 0.1, 0.5], dtype=torch.float64)
    assert torch.equal(ot_sort(raw, 1e-3, squash=False).argmax(dim=-1), torch.tensor([2, 0, 1]))


def test_ot_sort_warns_when_sinkhorn_stops_short():
    from permlib import ConvergenceWarning

    s = torch.randn(3, 40, generator=torch.Generator().manual_seed(0))
    with pytest.warns(ConvergenceWarning):
        ot_sort(s, 1e-3, n_iters=3)


def test_ot_sort_reports_sinkhorn():
    """``return_info``: the same plan, with log_sinkhorn's report on the squashed problem."""
    from permlib import log_sinkhorn

    s = torch.randn(4, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    p, info = ot_sort(s, 1e-2, return_info=True)
    torch.testing.assert_close(p, ot_sort(s, 1e-2), rtol=0, atol=0)
    x = torch.sigmoid((s - s.mean(-1, keepdim=True)) / s.std(-1, correction=0, keepdim=True))
    cost = (x.unsqueeze(-1) - torch.linspace(0, 1, 6, dtype=torch.float64)).square()
    _, ref = log_sinkhorn(-cost, tau=1e-2, n_iters=2000, tol=1e-3, return_info=True)
    assert torch.equal(info.n_iters, ref.n_iters) and info.all_converged
    assert info.n_iters.shape == (4,) and info.threshold == 1e-3
    # an empty batch, and N = 0, report converged items that ran no iteration
    for shape in [(0, 5), (3, 0)]:
        p, info = ot_sort(torch.zeros(shape), return_info=True)
        assert p.shape == (*shape, shape[-1]) and info.n_iters.shape == shape[:-1]
        assert info.all_converged and not info.n_iters.any()


@pytest.mark.slow
@pytest.mark.parametrize(("n", "eps"), [(5, 1e-2), (12, 1e-1)])
def test_ot_sort_against_ott_jax(n, eps):
    """The plan, the soft sort and its gradient of OTT-JAX (``ott.tools.soft_sort``)."""
    pytest.importorskip("ott")
    import jax
    import numpy as np

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    from ott.tools import soft_sort as ott_soft_sort

    gen = torch.Generator().manual_seed(n)
    s = torch.randn(n, generator=gen, dtype=torch.float64)
    w = torch.randn(n, generator=gen, dtype=torch.float64)
    opts = {"epsilon": eps, "threshold": 1e-10, "max_iterations": 50_000}
    uniform = jnp.ones(n) / n
    plan = ott_soft_sort.transport_for_sort(jnp.asarray(s.numpy()), uniform, uniform, **opts)
    t = s.clone().requires_grad_()
    ours = ot_sort(t, eps, tol=1e-10, n_iters=50_000)
    np.testing.assert_allclose(ours.detach().numpy(), np.asarray(plan.matrix) * n, atol=1e-7)
    soft_sorted = ours.transpose(-1, -2) @ t
    theirs_sorted = np.asarray(ott_soft_sort.sort(jnp.asarray(s.numpy()), **opts))
    np.testing.assert_allclose(soft_sorted.detach().numpy(), theirs_sorted, atol=1e-7)
    (soft_sorted @ w).backward()  # ours: the implicit backward

    def f(x):  # ott_soft_sort.sort without its sorting initializer (a loop that jax cannot
        # differentiate in reverse mode): the same plan
        out = ott_soft_sort.transport_for_sort(x, uniform, uniform, **opts)
        return jnp.dot(n * out.apply(x, axis=0), jnp.asarray(w.numpy()))

    theirs = np.asarray(jax.grad(f)(jnp.asarray(s.numpy())))
    np.testing.assert_allclose(t.grad.numpy(), theirs, atol=1e-5)
