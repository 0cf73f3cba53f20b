import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy.optimize import Bounds, LinearConstraint, minimize

from permlib import ConvergenceWarning, log_sinkhorn, matching, permutation_matrix, sinkhorn
from permlib.metrics import constraint_error
from permlib.testing import log_sinkhorn_loop as reference_log_sinkhorn


def random_scores(seed: int, shape, dtype=torch.float64, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(shape, generator=g, dtype=dtype)


@pytest.mark.parametrize("tau", [1.0, 0.1])
@pytest.mark.parametrize("n_iters", [1, 7, 20])
def test_fixed_unrolling_matches_textbook_loop(tau, n_iters):
    x = random_scores(0, (3, 2, 6, 6))
    ours = log_sinkhorn(x, tau=tau, n_iters=n_iters)
    ref = reference_log_sinkhorn(x / tau, n_iters)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-10)


@given(
    n=st.integers(1, 7),
    batch=st.integers(1, 3),
    tau=st.floats(0.3, 3.0),
    scale=st.floats(0.1, 5.0),
    seed=st.integers(0, 10_000),
)
def test_doubly_stochastic_within_tolerance(n, batch, tau, scale, seed):
    x = random_scores(seed, (batch, n, n), scale=scale)
    p, info = sinkhorn(x, tau=tau, n_iters=10_000, tol=1e-8, return_info=True)
    assert info.converged.all()
    assert (info.residual <= 1e-8).all()
    assert (constraint_error(p) <= 1e-8).all()
    assert (p >= 0).all() and torch.isfinite(p).all()


@given(n=st.integers(2, 7), seed=st.integers(0, 10_000), tau=st.sampled_from([1.0, 0.1]))
def test_permutation_equivariance(n, seed, tau):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, n, generator=g, dtype=torch.float64)
    p_rows = permutation_matrix(torch.randperm(n, generator=g), dtype=torch.float64)
    q_cols = permutation_matrix(torch.randperm(n, generator=g), dtype=torch.float64)
    lhs = sinkhorn(p_rows @ x @ q_cols, tau=tau, n_iters=30)
    rhs = p_rows @ sinkhorn(x, tau=tau, n_iters=30) @ q_cols
    torch.testing.assert_close(lhs, rhs, rtol=0, atol=1e-12)


def entropic_objective(p: np.ndarray, x: np.ndarray, tau: float) -> float:
    p = np.clip(p, 1e-300, None)
    return float((p * x).sum() - tau * (p * np.log(p)).sum())


@pytest.mark.parametrize("n,tau,seed", [(3, 1.0, 0), (3, 0.5, 1), (4, 0.5, 2), (4, 2.0, 3)])
def test_theorem1_maximizes_entropic_objective(n, tau, seed):
    """Theorem 1 of 000: S(X/tau) maximizes <P, X> + tau H(P) over doubly stochastic P."""
    x = random_scores(seed, (n, n))
    p = sinkhorn(x, tau=tau, n_iters=10_000, tol=1e-12).numpy()
    xn = x.numpy()
    # rows and all but one column sum to 1 (the last column constraint is implied)
    a_eq = np.vstack([np.kron(np.eye(n), np.ones(n)), np.kron(np.ones(n), np.eye(n))[:-1]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = minimize(
            lambda v: -entropic_objective(v, xn.ravel(), tau),
            np.full(n * n, 1.0 / n),
            jac=lambda v: -(xn.ravel() - tau * (np.log(np.clip(v, 1e-300, None)) + 1)),
            hess=lambda v: np.diag(tau / np.clip(v, 1e-300, None)),
            method="trust-constr",
            bounds=Bounds(1e-12, 1.0),
            constraints=[LinearConstraint(a_eq, 1.0, 1.0)],
            options={"gtol": 1e-12, "xtol": 1e-14, "maxiter": 5000},
        )
    assert entropic_objective(p, xn, tau) >= -res.fun - 1e-9
    np.testing.assert_allclose(p, res.x.reshape(n, n), atol=1e-3)
    # and no doubly stochastic perturbation towards a vertex does better
    g = torch.Generator().manual_seed(seed)
    for _ in range(20):
        vertex = permutation_matrix(torch.randperm(n, generator=g), dtype=torch.float64).numpy()
        for t in (1e-3, 0.1, 0.5):
            q = (1 - t) * p + t * vertex
            assert entropic_objective(p, xn, tau) >= entropic_objective(q, xn, tau) - 1e-12


@pytest.mark.filterwarnings("ignore::permlib.ConvergenceWarning")  # tol=1e-8 at tau=0.01 is slow
def test_theorem1_limit_is_the_matching():
    """As tau -> 0, S(X/tau) -> M(X) for X with a unique optimum; the gap shrinks with tau."""
    g = torch.Generator().manual_seed(5)
    truth = permutation_matrix(torch.randperm(6, generator=g), dtype=torch.float64)
    x = 2 * truth + 0.5 * torch.randn(6, 6, generator=g, dtype=torch.float64)
    hard = permutation_matrix(matching(x), dtype=torch.float64)
    gaps = []
    for tau in (1.0, 0.3, 0.1, 0.03, 0.01):
        p = sinkhorn(x, tau=tau, n_iters=20_000, tol=1e-8)
        gaps.append((p - hard).abs().sum().item())
    assert all(a > b for a, b in zip(gaps, gaps[1:], strict=False))
    assert gaps[-1] < 1e-3


def test_tolerance_stops_each_item_and_reports():
    x = random_scores(1, (5, 8, 8)) * torch.tensor([0.1, 0.5, 1, 2, 3]).view(5, 1, 1)
    log_p, info = log_sinkhorn(x, tau=1.0, n_iters=5000, tol=1e-9, return_info=True)
    assert info.converged.all() and (info.residual <= 1e-9).all()
    assert info.n_iters.min() < info.n_iters.max()  # items stop at different iterations
    assert info.errors.shape == (5, int(info.n_iters.max()))
    # an item's result does not depend on the rest of the batch
    alone = log_sinkhorn(x[2], tau=1.0, n_iters=5000, tol=1e-9)
    torch.testing.assert_close(log_p[2], alone)


def test_info_with_fixed_unrolling():
    x = random_scores(2, (4, 5, 5))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # fixed unrolling never warns
        _, info = log_sinkhorn(x, tau=0.1, n_iters=3, return_info=True)
    assert (info.n_iters == 3).all()
    assert info.errors.shape == (4, 3)
    torch.testing.assert_close(info.errors[..., -1], info.residual)
    assert info.threshold == 1e-3
    assert torch.equal(info.converged, info.residual <= 1e-3)


@pytest.mark.parametrize("eps", [1e-2, 1e-4, 1e-6])
def test_epsilon_matrices_of_003_appendix_d(eps):
    """[[e,1,e],[1,e,1],[e,1,e]] plateaus: not converged after a few iterations, then converges."""
    a = torch.tensor([[eps, 1, eps], [1, eps, 1], [eps, 1, eps]], dtype=torch.float64)
    with pytest.warns(ConvergenceWarning, match="1 of 1"):
        _, early = log_sinkhorn(a.log(), n_iters=2, tol=1e-6, return_info=True)
    assert not early.converged.item() and early.residual.item() > 0.1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, late = log_sinkhorn(a.log(), n_iters=200, tol=1e-6, return_info=True)
    assert late.converged.item() and late.residual.item() <= 1e-6
    # the plateau lasts about -log2(eps) normalizations (k counts half-steps), longer as eps shrinks
    assert late.n_iters.item() >= np.log2(1 / eps) / 2 - 1


def test_plateau_grows_as_epsilon_shrinks():
    iters = []
    for eps in (1e-2, 1e-4, 1e-6, 1e-8):
        a = torch.tensor([[eps, 1, eps], [1, eps, 1], [eps, 1, eps]], dtype=torch.float64)
        _, info = log_sinkhorn(a.log(), n_iters=500, tol=1e-6, return_info=True)
        iters.append(info.n_iters.item())
    assert iters == sorted(iters) and iters[0] < iters[-1]


def test_small_temperature_large_scores_stay_finite():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 30, 30, generator=g) * 999 + 1  # scale 1-1000, float32
    log_p, info = log_sinkhorn(x, tau=1e-4, n_iters=20, return_info=True)
    p = log_p.exp()
    assert torch.isfinite(log_p).all() and torch.isfinite(info.residual).all()
    assert ((p >= 0) & (p <= 1)).all()
    torch.testing.assert_close(p.sum(-2), torch.ones(4, 30), atol=1e-5, rtol=0)
    # the report is honest: converged exactly where the residual is small
    assert torch.equal(info.converged, info.residual <= info.threshold)
    # far below the score gaps the result is close to the matching wherever it converged
    hard = matching(x)
    assert (p.argmax(-1)[info.converged] == hard[info.converged]).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_is_computed_stably(dtype):
    x = random_scores(3, (2, 10, 10), dtype=torch.float32, scale=20)
    out = sinkhorn(x.to(dtype), tau=0.05, n_iters=20)
    assert out.dtype == dtype and torch.isfinite(out).all()
    ref = sinkhorn(x.to(dtype).float(), tau=0.05, n_iters=20)
    torch.testing.assert_close(out.float(), ref, atol=2e-2, rtol=0)


@pytest.mark.parametrize("n_iters", [1, 2, 5])
def test_unroll_gradcheck(n_iters):
    x = random_scores(4, (2, 4, 4)).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: log_sinkhorn(t, tau=0.5, n_iters=n_iters), (x,))
    assert torch.autograd.gradcheck(lambda t: sinkhorn(t, tau=0.5, n_iters=n_iters), (x,))


def test_implicit_gradcheck():
    x = random_scores(5, (2, 4, 4)).requires_grad_()

    def f(t):
        return sinkhorn(t, tau=0.7, n_iters=10_000, tol=1e-13, backward="implicit")

    assert torch.autograd.gradcheck(f, (x,), atol=1e-6)


@pytest.mark.parametrize("tau", [1.0, 0.3])
def test_implicit_and_unrolled_gradients_agree_at_convergence(tau):
    x = random_scores(6, (3, 7, 7))
    w = random_scores(7, (3, 7, 7))
    grads = {}
    for mode in ("unroll", "implicit"):
        xi = x.clone().requires_grad_()
        p, info = sinkhorn(xi, tau=tau, n_iters=3000, tol=1e-13, backward=mode, return_info=True)
        assert info.all_converged
        (p * w).sum().backward()
        grads[mode] = xi.grad
    torch.testing.assert_close(grads["implicit"], grads["unroll"], atol=1e-8, rtol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("tau,scale", [(0.1, 3.0), (0.01, 10.0), (1e-4, 1000.0)])
def test_implicit_gradient_is_finite_even_when_p_is_nearly_a_permutation(dtype, tau, scale):
    x = random_scores(8, (4, 20, 20), dtype=dtype, scale=scale).requires_grad_()
    p = sinkhorn(x, tau=tau, n_iters=20, backward="implicit")
    (p * random_scores(9, (4, 20, 20), dtype=dtype)).sum().backward()
    assert torch.isfinite(x.grad).all()


def test_batched_shapes_and_sinkhorn_is_exp():
    x = random_scores(9, (2, 3, 5, 5))
    torch.testing.assert_close(sinkhorn(x, 0.5, 10), log_sinkhorn(x, 0.5, 10).exp())
    assert log_sinkhorn(x).shape == (2, 3, 5, 5)
    assert sinkhorn(torch.zeros(1, 1)).item() == pytest.approx(1.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("scale", [1.0, 50.0, 1e4])
def test_floored_logsumexp_matches_torch(dtype, scale):
    from permlib.sinkhorn import _logsumexp

    x = random_scores(12, (3, 40, 40), dtype=dtype, scale=scale)
    for dim in (-1, -2):
        a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
        ours, ref = _logsumexp(a, dim), torch.logsumexp(b, dim)
        atol = 1e-5 if dtype == torch.float32 else 1e-10
        torch.testing.assert_close(ours, ref, rtol=0, atol=atol)
        w = random_scores(13, ours.shape, dtype=dtype)
        (ours * w).sum().backward()
        (ref * w).sum().backward()
        torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=atol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    ("tau", "scale"),
    [(1.0, 1.0), (0.1, 3.0), (1.0, 50.0), (0.01, 1e3)],  # the last ones fall back to the log loop
)
def test_plan_and_log_plan_match_textbook_loop_with_and_without_grad(dtype, tau, scale):
    """The scaling-domain paths (plan in place in K, log plan into K, hand-written backward) and
    the log-domain fallback all equal the textbook loop, values and gradients."""
    x = random_scores(21, (3, 30, 30), dtype=dtype, scale=scale)
    ref_in = x.detach().double().clone().requires_grad_()
    ref = reference_log_sinkhorn(ref_in / tau, 12)
    w = random_scores(22, x.shape, dtype=torch.float64)
    (ref.exp() * w).sum().backward()
    # rounding x / tau costs eps * max|x / tau| in every log-potential (float32 at scale 1e5)
    extent = x.abs().max().item() / tau
    atol = (1e-5 if dtype == torch.float32 else 1e-10) + 4 * torch.finfo(dtype).eps * extent
    with torch.no_grad():
        p = sinkhorn(x, tau, 12)
        log_p = log_sinkhorn(x, tau, 12)
    torch.testing.assert_close(p.double(), ref.exp().detach(), rtol=0, atol=atol)
    finite = ref.detach() > -30  # entries whose log is meaningful in float32
    torch.testing.assert_close(
        log_p.double()[finite], ref.detach()[finite], rtol=0, atol=1e3 * atol
    )
    assert p.dtype == log_p.dtype == dtype
    xg = x.clone().requires_grad_()
    pg = sinkhorn(xg, tau, 12)
    (pg * w.to(dtype)).sum().backward()
    torch.testing.assert_close(pg.detach().double(), ref.exp().detach(), rtol=0, atol=atol)
    gtol = atol * max(1.0, 1 / tau)
    torch.testing.assert_close(xg.grad.double(), ref_in.grad, rtol=0, atol=gtol)


def test_sinkhorn_does_not_modify_its_input():
    x = random_scores(23, (4, 9, 9), dtype=torch.float32)
    before = x.clone()
    sinkhorn(x)
    log_sinkhorn(x)
    torch.testing.assert_close(x, before, rtol=0, atol=0)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_finite_range_rejects_nan_and_inf_anywhere(bad, dtype):
    from permlib._checks import finite_range

    x = torch.randn(5, 7, 7).to(dtype)
    assert finite_range(x, "x") == (x.min().item(), x.max().item())
    for index in [(0, 0, 0), (4, 6, 6), (2, 3, 1)]:
        y = x.clone()
        y[index] = bad
        with pytest.raises(ValueError, match="x contains invalid numeric entries"):
            finite_range(y, "x")
        with pytest.raises(ValueError, match="log_alpha contains invalid"):
            sinkhorn(y)


def test_range_check_of_the_scaling_domain_agrees_on_host_and_device():
    """The host path (few items) and the tensor path (many) of the over/underflow check agree."""
    from permlib.sinkhorn import _in_range

    g = torch.Generator().manual_seed(0)
    values = [0.0, 1e-30, 1e-3, 1.0, 7.0, 1e15, 1e30, float("inf"), float("nan")]
    pick = torch.randint(len(values), (400, 4), generator=g)
    items = torch.tensor(values, dtype=torch.float32)[pick]
    fi = torch.finfo(torch.float32)
    loss = math.log(fi.tiny) + math.log(10) - math.log(fi.eps)
    top = math.log(fi.max) - 2 * math.log(10) - math.log(84)
    outcomes = set()
    for row in items:
        host = _in_range(*(v.reshape(1) for v in row), loss, top)
        tensor = _in_range(*(v.expand(65) for v in row), loss, top)
        assert host == tensor
        outcomes.add(host)
    assert outcomes == {True, False}
