import importlib
import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy.optimize import Bounds, LinearConstraint, minimize

from permlib import ConvergenceWarning, log_sinkhorn, matching, permutation_matrix, sinkhorn
from permlib.gumbel import perturb
from permlib.metrics import constraint_error
from permlib.testing import log_sinkhorn_loop as reference_log_sinkhorn


def random_scores(seed: int, shape, dtype=torch.float64, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(shape, generator=g, dtype=dtype)


@pytest.mark.parametrize("tau", [1.0, 0.1])
@pytest.mark.parametrize("n_iters", [1, 7, 20])
def test_fixed_unrolling_matches_textbook_loop(device, tau, n_iters):
    x = random_scores(0, (3, 2, 6, 6)).to(device)
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
    """Theorem 1 of Mena et al. (mena2017sinkhorn): S(X/tau) maximizes <P, X> + tau H(P) over
    doubly stochastic P."""
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
def test_epsilon_matrices_of_hste_appendix_d(eps):
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
def test_implicit_and_unrolled_gradients_agree_at_convergence(device, tau):
    x = random_scores(6, (3, 7, 7)).to(device)
    w = random_scores(7, (3, 7, 7)).to(device)
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
    with pytest.warns(ConvergenceWarning, match="backward='implicit'"):  # 20 iterations: far off
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
def test_plan_and_log_plan_match_textbook_loop_with_and_without_grad(device, dtype, tau, scale):
    """The scaling-domain paths (plan in place in K, log plan into K, hand-written backward) and
    the log-domain fallback all equal the textbook loop, values and gradients."""
    x = random_scores(21, (3, 30, 30), dtype=dtype, scale=scale).to(device)
    ref_in = x.detach().double().clone().requires_grad_()
    ref = reference_log_sinkhorn(ref_in / tau, 12)
    w = random_scores(22, x.shape, dtype=torch.float64).to(device)
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
def test_finite_range_rejects_nan_and_inf_anywhere(device, bad, dtype):
    from permlib._checks import finite_range

    x = torch.randn(5, 7, 7).to(dtype).to(device)
    assert finite_range(x, "x") == (x.min().item(), x.max().item())
    for index in [(0, 0, 0), (4, 6, 6), (2, 3, 1)]:
        y = x.clone()
        y[index] = bad
        with pytest.raises(ValueError, match="x contains invalid numeric entries"):
            finite_range(y, "x")
        if bad == -float("inf"):  # a forbidden pair (issue 19): exactly 0 in the plan
            p = sinkhorn(y, n_iters=50)
            assert p[index] == 0 and torch.isfinite(p).all()
            continue
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


# --- The convergence report and the tolerance stop on the fast path (issue 10, item 4) -------

sinkhorn_module = importlib.import_module("permlib.sinkhorn")


def _log_loop(x, n_iters, tol, record=True, init=None):
    """The log-domain loop of permlib (the fallback), for comparison with the scaling path."""
    return sinkhorn_module._solve(x, n_iters, tol, record, init)


def _shifted(x, tau):
    """What log_sinkhorn iterates on: each row shifted to its maximum, then divided by tau."""
    return (x - x.amax(dim=-1, keepdim=True)) / tau


def test_tolerance_stop_on_the_scaling_path_equals_the_log_domain_loop(device):
    """Per-item stops, report, potentials and unrolled gradients equal the log loop's to
    rounding (float64), though the fast path checks convergence only once per block."""
    scale = torch.tensor([0.1, 0.5, 1, 2, 3, 4.0]).view(6, 1, 1)
    x = (random_scores(31, (6, 12, 12)) * scale).to(device)
    w = random_scores(32, (6, 12, 12)).to(device)
    xg = x.clone().requires_grad_()
    log_p, info = log_sinkhorn(xg, tau=1.0, n_iters=5000, tol=1e-9, return_info=True)
    xr = x.clone().requires_grad_()
    ref = _log_loop(xr, 5000, 1e-9)
    assert info.n_iters.min() < info.n_iters.max()  # the items stopped at different iterations
    assert torch.equal(info.n_iters, ref.info.n_iters)
    assert torch.equal(info.converged, ref.info.converged)
    assert info.errors.shape == ref.info.errors.shape == (6, int(info.n_iters.max()))
    for ours, theirs in [
        (log_p, ref.log_p),
        (info.errors, ref.info.errors),
        (info.residual, ref.info.residual),
        (info.f, ref.info.f),
        (info.g, ref.info.g),
    ]:
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-10)
    (log_p.exp() * w).sum().backward()
    (ref.log_p.exp() * w).sum().backward()
    torch.testing.assert_close(xg.grad, xr.grad, rtol=0, atol=1e-10)


@pytest.mark.parametrize("n_iters", [1, 2, 8, 9, 20])
def test_report_of_fixed_unrolling_equals_the_log_domain_loop(device, n_iters):
    x = random_scores(33, (4, 9, 9)).to(device)
    log_p, info = log_sinkhorn(x, tau=0.3, n_iters=n_iters, return_info=True)
    ref = _log_loop(x / 0.3, n_iters, None)
    torch.testing.assert_close(log_p, ref.log_p, rtol=0, atol=1e-10)
    assert info.errors.shape == ref.info.errors.shape == (4, n_iters)
    torch.testing.assert_close(info.errors, ref.info.errors, rtol=0, atol=1e-10)
    torch.testing.assert_close(info.residual, ref.info.residual, rtol=0, atol=1e-10)
    assert (info.n_iters == n_iters).all()
    # the potentials describe the result: log P = x / tau + f 1^T + 1 g^T
    rebuilt = x / 0.3 + info.f.unsqueeze(-1) + info.g.unsqueeze(-2)
    torch.testing.assert_close(rebuilt, log_p, rtol=0, atol=1e-10)


def test_report_and_tolerance_on_the_fallback_loop_too():
    """Scores that force the log-domain loop give the same kind of report, potentials included."""
    x = random_scores(34, (3, 20, 20), scale=1e3)
    with pytest.warns(ConvergenceWarning, match="within n_iters=30 for 3 of 3"):
        log_p, info = log_sinkhorn(x, tau=0.01, n_iters=30, tol=1e-6, return_info=True)
    ref = _log_loop(_shifted(x, 0.01), 30, 1e-6)
    # the fallback absorbs the first iteration: the loop's values and report up to rounding
    torch.testing.assert_close(log_p, ref.log_p, rtol=0, atol=1e-8)
    assert torch.equal(info.n_iters, ref.info.n_iters)
    torch.testing.assert_close(info.errors, ref.info.errors, rtol=1e-6, atol=1e-12)
    torch.testing.assert_close(info.residual, ref.info.residual, rtol=1e-6, atol=1e-12)
    torch.testing.assert_close(info.f, ref.info.f - x.amax(dim=-1) / 0.01, rtol=0, atol=1e-8)
    rebuilt = x / 0.01 + info.f.unsqueeze(-1) + info.g.unsqueeze(-2)  # sums of terms ~1e5
    torch.testing.assert_close(rebuilt, log_p, rtol=1e-14, atol=1e-9)


def test_a_late_convergence_check_changes_nothing(monkeypatch):
    """Checking for 'every item stopped' once per block instead of every iteration (as on an
    accelerator) freezes converged items, so results and report are the same."""
    x = random_scores(35, (5, 8, 8)) * torch.tensor([0.1, 0.5, 1, 2, 3]).view(5, 1, 1)
    every_iteration = _log_loop(x, 5000, 1e-9)
    monkeypatch.setattr(sinkhorn_module, "_sync_every", lambda device: 8)
    per_block = _log_loop(x, 5000, 1e-9)
    assert torch.equal(every_iteration.log_p, per_block.log_p)
    assert torch.equal(every_iteration.info.errors, per_block.info.errors)
    assert torch.equal(every_iteration.info.n_iters, per_block.info.n_iters)


@pytest.mark.parametrize("plan", [True, False])
def test_warm_start_from_a_converged_solution_converges_in_one_iteration(device, plan):
    x = random_scores(36, (4, 10, 10)).to(device)
    fn = sinkhorn if plan else log_sinkhorn
    cold, info = fn(x, tau=0.5, n_iters=5000, tol=1e-10, return_info=True)
    assert info.converged.all() and (info.n_iters > 5).all()
    warm, again = fn(x, tau=0.5, n_iters=5000, tol=1e-10, return_info=True, init=info.potentials)
    assert (again.n_iters == 1).all() and again.converged.all()
    torch.testing.assert_close(warm, cold, rtol=0, atol=1e-9)
    # the scores moved a little: the warm start still helps
    y = x + 0.01 * random_scores(37, x.shape).to(device)
    _, moved = fn(y, tau=0.5, n_iters=5000, tol=1e-10, return_info=True, init=info.potentials)
    _, fresh = fn(y, tau=0.5, n_iters=5000, tol=1e-10, return_info=True)
    assert (moved.n_iters < fresh.n_iters).all()


def test_warm_start_gives_the_log_domain_loop_started_there():
    """A warm start is the loop started from those potentials, on both paths, any gauge."""
    x = random_scores(38, (3, 7, 7))
    f = random_scores(39, (3, 7))
    g = random_scores(40, (3, 7)) + 50.0  # a large gauge offset changes nothing
    ours, info = log_sinkhorn(x, n_iters=6, init=(f, g), return_info=True)
    ref = _log_loop(x, 6, None, init=(f, g))
    torch.testing.assert_close(ours, ref.log_p, rtol=0, atol=1e-10)
    torch.testing.assert_close(info.g, ref.info.g, rtol=0, atol=1e-10)
    # the unrolled gradient from a warm start (init itself is a constant)
    w = random_scores(51, x.shape)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    (log_sinkhorn(xa, n_iters=6, init=(f, g)).exp() * w).sum().backward()
    (_log_loop(xb, 6, None, record=False, init=(f, g)).log_p.exp() * w).sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad, rtol=0, atol=1e-10)
    # broadcast potentials: one g for the whole batch
    ours_b = log_sinkhorn(x, n_iters=6, init=(f[0], g[0]))
    ref_b = _log_loop(x, 6, None, init=(f[0].expand(3, 7), g[0].expand(3, 7)))
    torch.testing.assert_close(ours_b, ref_b.log_p, rtol=0, atol=1e-10)


@pytest.mark.parametrize(
    "init,exc,msg",
    [
        ((torch.zeros(3),), TypeError, "init must be a pair"),
        (torch.zeros(2, 3), TypeError, "init must be a pair"),
        ((torch.zeros(3), torch.zeros(4)), ValueError, r"init\[1\] \(g\) must have shape"),
        ((torch.zeros(2, 3), torch.zeros(3)), ValueError, r"init\[0\] \(f\) must have shape"),
        ((torch.zeros(3), torch.zeros(3, dtype=torch.int64)), TypeError, "floating dtype"),
        ((torch.zeros(3), torch.tensor([0.0, math.nan, 0.0])), ValueError, r"init\[1\]"),
        ((torch.tensor([math.inf, 0.0, 0.0]), torch.zeros(3)), ValueError, r"init\[0\]"),
    ],
)
def test_bad_init_is_rejected_naming_it(init, exc, msg):
    with pytest.raises(exc, match=msg):
        sinkhorn(torch.zeros(3, 3), init=init)


def test_empty_batch_gives_empty_results_and_report():
    x = torch.zeros(0, 4, 4)
    for kwargs in ({}, {"tol": 1e-6}, {"return_info": True}):
        out = sinkhorn(x, **kwargs)
        p = out[0] if isinstance(out, tuple) else out
        assert p.shape == (0, 4, 4)
    _, info = log_sinkhorn(x, tol=1e-6, return_info=True)
    assert info.residual.shape == info.n_iters.shape == (0,) and info.all_converged
    assert info.f.shape == info.g.shape == (0, 4)


# --- The implicit backward (issue 10 item 4, issue 11 items 2 and 3) ------------------------


@pytest.mark.parametrize("plan", [True, False])
def test_implicit_gradcheck_of_both_outputs(plan):
    x = random_scores(41, (2, 5, 5)).requires_grad_()
    fn = sinkhorn if plan else log_sinkhorn
    assert torch.autograd.gradcheck(
        lambda t: fn(t, tau=0.6, n_iters=10_000, tol=1e-13, backward="implicit"), (x,), atol=1e-6
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_implicit_gradient_agrees_with_unrolled_at_convergence(device, dtype):
    """The conjugate-gradient adjoint solve, in the input dtype, at N = 60."""
    x = random_scores(42, (3, 60, 60), dtype=dtype).to(device)
    w = random_scores(43, (3, 60, 60), dtype=dtype).to(device)
    grads = {}
    for mode in ("unroll", "implicit"):
        xg = x.clone().requires_grad_()
        p = sinkhorn(xg, tau=0.5, n_iters=500, tol=1e-7 if dtype == torch.float32 else 1e-12,
                     backward=mode)
        (p * w).sum().backward()
        grads[mode] = xg.grad
    scale = grads["unroll"].abs().max()
    rel = 1e-4 if dtype == torch.float32 else 1e-9
    torch.testing.assert_close(grads["implicit"], grads["unroll"], rtol=0, atol=rel * scale)


def test_implicit_backward_on_an_unconverged_forward_warns():
    """Issue 11 item 2: tau = 0.01, N = 100, 20 iterations is far from the fixed point."""
    x = random_scores(44, (2, 100, 100), dtype=torch.float32).requires_grad_()
    with pytest.warns(ConvergenceWarning, match="backward='implicit' differentiates the fixed"):
        sinkhorn(x, tau=0.01, n_iters=20, backward="implicit")
    with pytest.warns(ConvergenceWarning, match="tol=0.0001.*backward='implicit'"):
        sinkhorn(x, tau=0.01, n_iters=20, tol=1e-4, backward="implicit")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sinkhorn(x, tau=1.0, n_iters=50, backward="implicit")  # converged: silent
        with torch.no_grad():
            sinkhorn(x, tau=0.01, n_iters=20, backward="implicit")  # no gradient: silent
        sinkhorn(x, tau=0.01, n_iters=20, backward="unroll")  # exact gradient of 20 iterations


@pytest.mark.parametrize("plan", [True, False])
def test_double_backward_through_implicit_raises(plan):
    """Issue 11 item 3: second derivatives through backward='implicit' are not silently wrong."""
    x = random_scores(45, (2, 4, 4)).requires_grad_()
    fn = sinkhorn if plan else log_sinkhorn
    out = fn(x, tau=0.7, n_iters=2000, tol=1e-12, backward="implicit")
    w = random_scores(46, (2, 4, 4))
    with pytest.raises(RuntimeError, match="second derivatives through backward='implicit'"):
        torch.autograd.grad((out * w).sum(), x, create_graph=True)
    (grad,) = torch.autograd.grad((out * w).sum(), x)  # first derivatives still work
    assert torch.isfinite(grad).all()


def test_unrolled_second_derivatives_with_tolerance_stops():
    """The unrolled path with per-item stops stays twice differentiable (gradgradcheck)."""
    x = (random_scores(47, (2, 4, 4)) * torch.tensor([0.3, 2.0]).view(2, 1, 1)).requires_grad_()

    def f(t):
        return sinkhorn(t, tau=1.0, n_iters=200, tol=1e-6)

    _, info = sinkhorn(x.detach(), tau=1.0, n_iters=200, tol=1e-6, return_info=True)
    assert info.n_iters[0] != info.n_iters[1]
    assert torch.autograd.gradgradcheck(f, (x,))


# --- Host synchronisations (issue 10 item 3) -------------------------------------------------


class _HostReads:
    """Counts the tensor-to-host reads (``bool``, ``item``, ``tolist``) made inside a block."""

    def __init__(self, monkeypatch):
        self.count = 0
        for name in ("__bool__", "item", "tolist"):
            original = getattr(torch.Tensor, name)

            def counted(t, *args, _original=original, **kwargs):
                self.count += 1
                return _original(t, *args, **kwargs)

            monkeypatch.setattr(torch.Tensor, name, counted)


@pytest.fixture
def deferred(monkeypatch):
    """Run the CUDA way on the CPU: checks deferred to one host read, loops ask every 8 steps."""
    monkeypatch.setattr(sinkhorn_module, "_defers", lambda device: True)
    monkeypatch.setattr(sinkhorn_module, "_sync_every", lambda device: 8)
    return monkeypatch


@pytest.mark.parametrize(
    "kwargs,reads",
    [
        ({}, 1),
        ({"return_info": True}, 1),
        ({"backward": "implicit"}, 1 + 1 + 60 // 8),  # + the CG's checks, once per 8 steps
        ({"tol": 1e-30}, 1 + 20 // 8),  # + one check per block of 8 iterations
    ],
)
def test_the_fast_path_reads_the_device_once_per_call_or_block(deferred, kwargs, reads):
    x = random_scores(48, (4, 30, 30), dtype=torch.float32).requires_grad_()
    w = random_scores(49, (4, 30, 30), dtype=torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        counter = _HostReads(deferred)
        out = sinkhorn(x, n_iters=20, **kwargs)
        p = out[0] if isinstance(out, tuple) else out
        forward_reads = counter.count
        torch.autograd.grad((p * w).sum(), x)
    assert 1 <= forward_reads <= (1 if "tol" not in kwargs else reads)
    assert counter.count <= reads


def test_deferred_checks_still_reject_bad_input_and_fall_back(deferred):
    """With the checks deferred (the CUDA way) NaN/inf still raise naming the argument, scores
    that overflow float32 are upcast, and out-of-range scalings take the log-domain loop."""
    for bad in (math.nan, math.inf, -math.inf):
        x = torch.randn(3, 5, 5)
        x[1, 2, 3] = bad
        if bad == -math.inf:  # a forbidden pair (issue 19): the eager re-run takes it
            p = sinkhorn(x, n_iters=2000, tol=1e-6)
            assert p[1, 2, 3] == 0 and constraint_error(p).amax() <= 1e-5  # float32 sums
        else:
            with pytest.raises(ValueError, match="log_alpha contains invalid numeric entries"):
                sinkhorn(x, tol=1e-6)
        with pytest.raises(ValueError, match=r"init\[1\] \(g\) contains invalid"):
            sinkhorn(torch.randn(3, 5, 5), init=(torch.zeros(5), x[1, 2]))
    big = torch.tensor([[3e38, -3e38], [-3e38, 3e38]])
    assert torch.equal(sinkhorn(big, tau=1e-4), torch.eye(2))
    x = random_scores(50, (3, 20, 20), scale=1e3)
    ref = _log_loop(_shifted(x, 0.01), 30, None, record=False).log_p
    # the fallback (one log-domain iteration absorbed, then the scaling domain): the loop's
    # values up to rounding
    torch.testing.assert_close(log_sinkhorn(x, tau=0.01, n_iters=30), ref, rtol=0, atol=1e-6)


def test_convergence_benchmark_reports_ratios_against_fixed_unrolling():
    """benchmarks/convergence.py at a toy size: every variant timed, ratios against 'fixed'."""
    from benchmarks.convergence import format_table, measure

    result = measure(B=2, N=5, L=3, dtype=torch.float64, reps=2, memory_iters=())
    rows = {r["method"]: r for r in result["timing"]}
    assert set(rows) == {"fixed", "tol", "return_info", "implicit"}
    assert rows["fixed"]["ratio_vs_fixed"] == 1.0
    for r in rows.values():
        assert r["min_ms"] > 0
        assert r["ratio_vs_fixed"] == pytest.approx(r["min_ms"] / rows["fixed"]["min_ms"])
    assert result["memory"] == [] and "return_info" in format_table(result)
    assert 0.0 <= result["config"]["tol_stopped_early"] <= 1.0


@pytest.mark.parametrize(
    "kwargs", [{}, {"tol": 1e-3}, {"return_info": True}, {"backward": "implicit"}]
)
def test_meta_tensors_give_shapes(kwargs):
    """Issue 11 item 8: meta tensors (shape inference) go through every mode without host reads."""
    x = torch.empty(2, 3, 5, 5, device="meta", requires_grad="backward" in kwargs)
    out = sinkhorn(x, n_iters=4, **kwargs)
    p = out[0] if isinstance(out, tuple) else out
    assert p.shape == (2, 3, 5, 5) and p.device.type == "meta"
    if isinstance(out, tuple):
        assert out[1].residual.shape == (2, 3) and out[1].errors.shape == (2, 3, 4)


# --- Issue 11: precision at large max|x|/tau (1), float16 log output (6), the fallback's memory
# (7) and a tensor tau with a gradient (8) ------------------------------------------------------


def _exact_plan(x32, tau, n_iters=20):
    """float64 reference of S^L(x / tau) for the float32 input itself: rows shifted to their max
    in float64 (exact, and S does not change), then the textbook loop."""
    x = x32.double()
    return reference_log_sinkhorn((x - x.amax(dim=-1, keepdim=True)) / tau, n_iters).exp()


@pytest.mark.parametrize("ratio", [1.0, 1e2, 1e4, 1e6, 1e8])
@pytest.mark.parametrize("grad", [False, True])
def test_float32_error_does_not_grow_with_max_score_over_tau(ratio, grad):
    """Issue 11.1: against float64 on the same input, float32 P stays within ~1e-6 whatever
    max|x|/tau (it was 1.5e-3 at 1e4, 0.094 at 1e6, 0.71 at 1e8); the textbook float32 loop
    stays within 4e-5 there."""
    x = random_scores(60, (8, 20, 20), dtype=torch.float32)
    tau = float(x.abs().max()) / ratio
    ref = _exact_plan(x, tau)
    out = log_sinkhorn(x.clone().requires_grad_(grad), tau=tau, n_iters=20)
    assert (out.detach().double().exp() - ref).abs().max() <= 5e-6


@given(
    offset=st.sampled_from([1e3, -1e4, 1e6, -1e6, 1e7, 1e8, 3e8]),
    log_tau=st.floats(-5, 0),
    n=st.integers(2, 12),
    seed=st.integers(0, 10_000),
    grad=st.booleans(),
    plan=st.booleans(),
)
def test_float32_precision_survives_extreme_offsets(offset, log_tau, n, seed, grad, plan):
    """Scores ``offset + noise`` (float32) at any tau: the result is the float64 result for the
    same input to float32 accuracy, with or without grad (1e6 + randn was off by 0.013 with
    requires_grad; torch.full((3, 3), 1e8) had column sums 3)."""
    tau = 10.0**log_tau
    x = (offset + random_scores(seed, (n, n), dtype=torch.float32)).requires_grad_(grad)
    ref = _exact_plan(x.detach(), tau)
    fn = sinkhorn if plan else log_sinkhorn
    out = fn(x, tau=tau, n_iters=20).detach().double()
    p = out if plan else out.exp()
    assert (p - ref).abs().max() <= 5e-6
    assert (p.sum(dim=-2) - 1).abs().max() <= 1e-5


def test_a_constant_huge_matrix_is_uniform():
    p = log_sinkhorn(torch.full((3, 3), 1e8)).exp()
    torch.testing.assert_close(p, torch.full((3, 3), 1 / 3), rtol=0, atol=1e-7)


def test_tiny_tau_on_a_random_matrix_matches_float64():
    """At tau = 1e-5 on a 20 x 20 random matrix, float32 entries were off by 1.5e-3."""
    x = torch.rand(20, 20, generator=torch.Generator().manual_seed(2))
    assert (log_sinkhorn(x, tau=1e-5).double().exp() - _exact_plan(x, 1e-5)).abs().max() <= 1e-6


@pytest.mark.parametrize("grad", [False, True])
def test_float16_log_output_is_finite(grad):
    """Issue 11.6: log-probabilities below -65504 do not fit float16; they are clamped to the
    most negative float16 (exp gives 0 there, as for the true value) instead of becoming -inf,
    and the gradient passes through as if they were held."""
    x16 = random_scores(61, (20, 8, 8), dtype=torch.float32, scale=30).half()
    x16.requires_grad_(grad)
    out = log_sinkhorn(x16, tau=1e-3, n_iters=10)
    assert out.dtype == torch.float16 and torch.isfinite(out).all()
    assert (out == -torch.finfo(torch.float16).max).any()  # the case that used to give -inf
    x32 = x16.detach().float().requires_grad_(grad)
    ref = log_sinkhorn(x32, tau=1e-3, n_iters=10)
    torch.testing.assert_close(out.float().exp(), ref.exp(), rtol=0, atol=2e-3)
    if grad:
        w = random_scores(62, (20, 8, 8), dtype=torch.float32).half().float()  # fp16 grads
        (g16,) = torch.autograd.grad((out.float() * w).sum(), x16)
        (g32,) = torch.autograd.grad((ref * w).sum(), x32)
        assert torch.isfinite(g16).all()
        scale = float(g32.abs().max())
        torch.testing.assert_close(g16.float(), g32, rtol=0, atol=1e-3 * scale)


@pytest.fixture
def log_loop_backward(monkeypatch):
    """Counts the calls of the fallback's hand-written backward (to be sure a case takes it)."""
    calls = []
    original = sinkhorn_module._UnrolledLog.apply

    def apply(*args):
        calls.append(1)
        return original(*args)

    monkeypatch.setattr(sinkhorn_module._UnrolledLog, "apply", apply)
    return calls


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_iters": 6},
        {"n_iters": 300, "tol": 1e-9},
        {"n_iters": 6, "init": (torch.zeros(5, dtype=torch.float64), torch.linspace(-3, 3, 5))},
    ],
    ids=["fixed", "tol", "init"],
)
def test_fallback_unrolled_gradients_are_exact(log_loop_backward, kwargs):
    """The log-domain loop's hand-written backward (issue 11.7) passes gradcheck and
    gradgradcheck, and equals autograd through the plain loop."""
    if "init" in kwargs:
        kwargs = {**kwargs, "init": tuple(t.double() for t in kwargs["init"])}
    # a moderate item (a gradient worth checking) beside one that forces the fallback
    scale = torch.tensor([1.0, 1e4], dtype=torch.float64).view(2, 1, 1)
    x = (random_scores(63, (2, 5, 5)) * scale).requires_grad_()
    fn = lambda t: log_sinkhorn(t, tau=0.3, **kwargs)  # noqa: E731
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        assert torch.autograd.gradcheck(fn, (x,))
        assert torch.autograd.gradgradcheck(lambda t: fn(t).exp(), (x,))
        assert log_loop_backward  # the fallback was taken
        w = random_scores(64, (2, 5, 5))
        (ours,) = torch.autograd.grad((fn(x).exp() * w).sum(), x)
        xs = (x - x.detach().amax(dim=-1, keepdim=True)) / 0.3
        init = kwargs.get("init")
        ref = _log_loop(xs, kwargs["n_iters"], kwargs.get("tol"), init=init).log_p
        (theirs,) = torch.autograd.grad((ref.exp() * w).sum(), x)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-9)


def _saved_bytes(fn):
    """Bytes of the tensors autograd saves for the backward of ``fn()`` (distinct storages)."""
    seen = {}

    def pack(t):
        seen[(t.untyped_storage().data_ptr(), t.dtype)] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


@pytest.mark.parametrize("kwargs", [{}, {"return_info": True}, {"tol": 1e-30}])
@pytest.mark.parametrize("absorb", [False, True], ids=["whole_loop", "absorbed"])
def test_fallback_memory_grows_by_o_n_per_iteration(
    monkeypatch, log_loop_backward, kwargs, absorb
):
    """Issue 11.7: unrolling the log-domain loop stores O(N) per iteration and matrix (the
    potentials), not an N x N tensor per step (13.9 GiB instead of 1.6 GiB at B = 4096); so
    does the fallback that absorbs the first iteration and goes on in the scaling domain."""
    if not absorb:
        monkeypatch.setattr(sinkhorn_module, "_absorbed", lambda *args: None)
    m, n = 4, 64
    x = random_scores(65, (m, n, n), dtype=torch.float32, scale=1e3).requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        short = _saved_bytes(lambda: log_sinkhorn(x, tau=0.01, n_iters=10, **kwargs))
        long = _saved_bytes(lambda: log_sinkhorn(x, tau=0.01, n_iters=50, **kwargs))
    assert log_loop_backward
    per_iteration = (long - short) / 40
    if not absorb:
        assert per_iteration <= 2 * m * n * 8 * 1.01  # f and g in float64
    else:  # the second part may take either domain: O(N) per iteration all the same
        assert long < 3 * m * n * n * 4 + 50 * 2 * m * n * 8
    assert short < 3 * m * n * n * 4  # x, and little else of size N x N


@pytest.mark.parametrize(
    "backward,scale",  # the scaling path and the log-domain fallback (implicit: converged only)
    [("unroll", 1.0), ("unroll", 1e4), ("implicit", 1.0)],
)
def test_tensor_tau_with_grad_gets_its_gradient(backward, scale):
    """Issue 11.8: a tau tensor that requires grad is not detached: d/dtau flows."""
    x = (random_scores(66, (2, 5, 5)) * torch.tensor([1.0, scale]).view(2, 1, 1)).requires_grad_()
    tau = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    n_iters = 400 if backward == "implicit" else 8
    tol = 1e-12 if backward == "implicit" else None

    def fn(x, tau):
        return sinkhorn(x, tau=tau, n_iters=n_iters, tol=tol, backward=backward)

    assert torch.autograd.gradcheck(fn, (x, tau), atol=1e-6)
    p = fn(x, tau)
    (g,) = torch.autograd.grad(p[..., 0, 0].sum(), tau)
    assert g != 0
    # the same as a float tau for log_alpha's gradient
    ref = sinkhorn(x, tau=0.7, n_iters=n_iters, tol=tol, backward=backward)
    torch.testing.assert_close(p, ref, rtol=0, atol=1e-12)


def test_tensor_tau_keeps_its_gradient_through_the_deferred_rerun(deferred):
    """On CUDA a failed deferred check re-runs the call eagerly: the tensor tau goes with it."""
    x = random_scores(67, (2, 6, 6), scale=1e3).requires_grad_()
    tau = torch.tensor(0.01, dtype=torch.float64, requires_grad=True)
    p = sinkhorn(x, tau=tau, n_iters=5)  # scores that force the fallback, hence the re-run
    (g,) = torch.autograd.grad((p * random_scores(68, (2, 6, 6))).sum(), tau)
    assert torch.isfinite(g)
    torch.testing.assert_close(p, sinkhorn(x, tau=0.01, n_iters=5), rtol=0, atol=1e-12)
    assert p.grad_fn is not None and tau.grad is None


@pytest.mark.parametrize("ratio", [1e6, 1e8])
def test_saturated_fallback_gradient_is_zero_as_through_the_textbook_loop(ratio):
    """Where P is a permutation to float32 precision its exact gradient is 0; the fallback's
    backward gets it (it takes its sums of the rounded gradient, as autograd through the loop
    does), instead of rounding noise of eps |G| / tau (1e-7 / tau before)."""
    x = random_scores(69, (4, 12, 12), dtype=torch.float32).requires_grad_()
    w = random_scores(70, (4, 12, 12), dtype=torch.float32)
    tau = float(x.detach().abs().max()) / ratio
    (ours,) = torch.autograd.grad((log_sinkhorn(x, tau=tau).exp() * w).sum(), x)
    (ref,) = torch.autograd.grad((reference_log_sinkhorn(x / tau, 20).exp() * w).sum(), x)
    assert (ref * tau).abs().max() <= 1e-30  # saturated: the textbook loop's gradient is 0
    assert (ours * tau).abs().max() <= 1e-30


# --- torch.func (issue 11, item 9): vmap, grad, jacrev, jacfwd, hessian ----------------------
# Fixed unrolling with backward="unroll" works under every transform: vmap folds the mapped
# dimension into the batch (the same call as the batched one, bit for bit), derivatives are
# those of the unrolled iterations. What needs host reads per item raises, naming the transform.

from torch.func import grad as func_grad  # noqa: E402
from torch.func import hessian, jacfwd, jacrev, vmap  # noqa: E402


@pytest.mark.parametrize("shape", [(3, 2, 5, 5), (4, 5, 5)])
@pytest.mark.parametrize("tau", [1.0, 0.3])
@pytest.mark.parametrize("plan", [False, True])
def test_vmap_equals_the_batched_call(device, shape, tau, plan):
    fn = sinkhorn if plan else log_sinkhorn
    x = random_scores(80, shape).to(device)
    ours = vmap(lambda y: fn(y, tau=tau, n_iters=7))(x)
    torch.testing.assert_close(ours, fn(x, tau=tau, n_iters=7), rtol=0, atol=1e-12)
    moved = vmap(lambda y: fn(y, tau=tau, n_iters=7), in_dims=1)(x.movedim(0, 1))
    torch.testing.assert_close(moved, fn(x, tau=tau, n_iters=7), rtol=0, atol=1e-12)


def test_nested_vmap_float16_and_the_fallback_equal_the_batched_call():
    x = random_scores(81, (3, 2, 5, 5))
    torch.testing.assert_close(vmap(vmap(log_sinkhorn))(x), log_sinkhorn(x), rtol=0, atol=1e-12)
    h = x.half()
    assert torch.equal(vmap(log_sinkhorn)(h), log_sinkhorn(h))
    # scores and tau that force the log-domain fallback of the plain call
    s = random_scores(82, (4, 6, 6), dtype=torch.float32, scale=30.0)
    ours = vmap(lambda y: log_sinkhorn(y, tau=0.01, n_iters=30))(s)
    torch.testing.assert_close(ours, log_sinkhorn(s, tau=0.01, n_iters=30), rtol=0, atol=0)


def test_vmap_over_tau_and_the_warm_start():
    x = random_scores(83, (3, 5, 5))
    taus = torch.tensor([0.3, 1.0, 2.0], dtype=torch.float64)
    ours = vmap(lambda y, t: log_sinkhorn(y, tau=t, n_iters=5))(x, taus)
    ref = torch.stack([log_sinkhorn(x[i], tau=float(taus[i]), n_iters=5) for i in range(3)])
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-12)
    f, g = log_sinkhorn(x, tau=0.5, n_iters=3, return_info=True)[1].potentials
    ours = vmap(lambda y, f, g: log_sinkhorn(y, tau=0.5, n_iters=4, init=(f, g)))(x, f, g)
    ref = log_sinkhorn(x, tau=0.5, n_iters=4, init=(f, g))
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-12)
    shared = vmap(lambda y: log_sinkhorn(y, tau=0.5, n_iters=4, init=(f[0], g[0])))(x)
    ref = log_sinkhorn(x, tau=0.5, n_iters=4, init=(f[0], g[0]))
    torch.testing.assert_close(shared, ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("plan", [False, True])
@pytest.mark.parametrize("tau", [1.0, 0.5])
def test_jacrev_and_jacfwd_equal_the_autograd_jacobian(plan, tau):
    fn = sinkhorn if plan else log_sinkhorn
    x = random_scores(84, (4, 4))

    def f(y):
        return fn(y, tau=tau, n_iters=6)

    ref = torch.autograd.functional.jacobian(f, x)
    assert ref.abs().max() > 0.01
    torch.testing.assert_close(jacrev(f)(x), ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(jacfwd(f)(x), ref, rtol=0, atol=1e-12)


def test_hessian_equals_the_autograd_hessian():
    x = random_scores(85, (4, 4))
    w = random_scores(86, (4, 4))

    def loss(y):
        return (log_sinkhorn(y, tau=0.5, n_iters=6).exp() * w).sum()

    ref = torch.autograd.functional.hessian(loss, x)
    assert ref.abs().max() > 0.01
    torch.testing.assert_close(hessian(loss)(x), ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("fallback", [False, True])
def test_vmap_of_grad_equals_per_sample_autograd_gradients(log_loop_backward, fallback):
    scale, tau, dtype = (5.0, 0.05, torch.float32) if fallback else (1.0, 0.5, torch.float64)
    x = random_scores(87, (5, 6, 6), dtype=dtype, scale=scale)
    w = random_scores(88, (6, 6), dtype=dtype)

    def loss(y):
        return (log_sinkhorn(y, tau=tau, n_iters=8).exp() * w).sum()

    ours = vmap(func_grad(loss))(x)
    ref = []
    for xi in x.clone().unbind(0):
        xi.requires_grad_()
        ref.append(torch.autograd.grad(loss(xi), xi)[0])
    ref = torch.stack(ref)
    assert bool(log_loop_backward) == fallback  # the per-sample calls take the fallback
    assert ref.abs().max() > 0.1
    atol = 1e-5 * float(ref.abs().max()) if fallback else 1e-12
    torch.testing.assert_close(ours, ref, rtol=0, atol=atol)


def test_grad_with_respect_to_a_tensor_tau():
    x = random_scores(89, (4, 4))
    w = random_scores(90, (4, 4))
    tau = torch.tensor(0.7, dtype=torch.float64)

    def loss(t):
        return (log_sinkhorn(x, tau=t, n_iters=6) * w).sum()

    ref_tau = tau.clone().requires_grad_()
    (ref,) = torch.autograd.grad(loss(ref_tau), ref_tau)
    assert ref != 0
    torch.testing.assert_close(func_grad(loss)(tau), ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "kwargs,what",
    [
        ({"tol": 1e-3}, "tol=None"),
        ({"return_info": True}, "return_info=False"),
        ({"backward": "implicit"}, "backward='unroll'"),
    ],
)
@pytest.mark.parametrize("transform", ["vmap", "grad"])
def test_host_reading_options_raise_under_transforms(kwargs, what, transform):
    x = random_scores(91, (3, 4, 4))
    if transform == "vmap":
        call = vmap(lambda y: log_sinkhorn(y, **kwargs))
        name = "torch.func vmap"
    else:
        call = func_grad(lambda y: log_sinkhorn(y, **kwargs).sum())
        name = "torch.func grad"
    with pytest.raises(NotImplementedError, match=f"not supported under {name}") as err:
        call(x)
    assert what in str(err.value) and "without the transform" in str(err.value)


def test_input_checks_under_vmap_name_the_argument():
    x = random_scores(92, (3, 4, 4))
    bad = x.clone()
    bad[1, 2, 3] = math.nan
    with pytest.raises(ValueError, match="log_alpha contains invalid"):
        vmap(log_sinkhorn)(bad)
    with pytest.raises(ValueError, match="tau must be a finite number > 0"):
        vmap(lambda y, t: log_sinkhorn(y, tau=t))(x, torch.tensor([1.0, -1.0, 2.0]))
    with pytest.raises(ValueError, match="n_iters must be >= 1"):
        vmap(lambda y: log_sinkhorn(y, n_iters=0))(x)


def test_plain_calls_do_not_take_the_transform_path(monkeypatch):
    calls = []
    original = sinkhorn_module._under_transform

    def counted(*args):
        calls.append(1)
        return original(*args)

    monkeypatch.setattr(sinkhorn_module, "_under_transform", counted)
    x = random_scores(93, (2, 4, 4)).requires_grad_()
    log_sinkhorn(x, tau=torch.tensor(0.5), init=(x.new_zeros(2, 4), x.new_zeros(2, 4)))
    assert not calls
    vmap(log_sinkhorn)(x.detach())
    assert len(calls) == 1


# --- Issue 19: rectangular problems, forbidden pairs (-inf), padded batches ------------------


def dense_reference(x: torch.Tensor, tau: float, n_iters: int) -> torch.Tensor:
    """The partial permutation of one (R, C) problem by the textbook loop on the explicit
    construction: transposed if R > C, C - R dummy rows of zeros, float64; ``(R, C)`` plan."""
    x = x.double() / tau
    flip = x.shape[0] > x.shape[1]
    if flip:
        x = x.T
    r, c = x.shape
    square = torch.cat([x, torch.zeros(c - r, c, dtype=x.dtype)])
    p = reference_log_sinkhorn(square, n_iters).exp()[:r]
    return p.T if flip else p


def padded_batch(seed, batch, n, m, forbid=0.0):
    """Random ``(batch, n, m)`` scores with per-item sizes and NaN padding, feasible."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, n, m, generator=g, dtype=torch.float64)
    rows = torch.randint(1, n + 1, (batch,), generator=g)
    cols = torch.randint(1, m + 1, (batch,), generator=g)
    short = max(1, min(n, m) - 2)  # item 0 has more rows than columns, item 1 fewer
    rows[0], cols[0], rows[1], cols[1] = n, short, short, m
    if forbid:
        hole = torch.rand(batch, n, m, generator=g) < forbid
        x = x.masked_fill(hole, -math.inf)
        for b in range(batch):  # keep it feasible: the diagonal of the item stays allowed
            k = min(rows[b], cols[b])
            x[b, torch.arange(k), torch.arange(k)] = 0.5
    for b in range(batch):
        x[b, rows[b]:] = math.nan
        x[b, :, cols[b]:] = math.nan
    return x, rows, cols


@pytest.mark.parametrize("shape", [(3, 4, 7), (3, 7, 4), (2, 1, 6), (2, 5, 1)])
@pytest.mark.parametrize("n_iters", [1, 5, 40])
def test_rectangular_equals_the_explicit_dummy_rows(device, shape, n_iters):
    x = random_scores(60, shape)
    ours = sinkhorn(x.to(device), tau=0.7, n_iters=n_iters).cpu()
    for b in range(shape[0]):
        ref = dense_reference(x[b], 0.7, n_iters)
        torch.testing.assert_close(ours[b], ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("n_iters", [3, 30])
@pytest.mark.parametrize("forbid", [0.0, 0.3])
@pytest.mark.parametrize("shape", [(6, 4, 6), (6, 6, 4), (5, 5, 5)])
def test_padded_batches_equal_pygmtools_n1_n2(shape, forbid, n_iters):
    """pygmtools' sinkhorn with n1/n2 and dummy rows (its iterations are half-steps) on the same
    padded batch: equal plans, including items that are transposed (n1 > n2) and a mixed batch.

    Both normalize first the rows of each item's frame with no more rows than columns. A square
    item (n1 = n2) is the exception: pygmtools transposes it when the padded batch has more
    rows than columns (its frame follows the batch's shape), permlib never does (a square
    item's result does not depend on the padding): those equal permlib's on the transpose."""
    pygm = pytest.importorskip("pygmtools")
    pygm.set_backend("pytorch")
    x, rows, cols = padded_batch(61 + n_iters, *shape, forbid=forbid)
    ours = sinkhorn(x, tau=0.5, n_iters=n_iters, n_rows=rows, n_cols=cols)
    padding = torch.nan_to_num(x, nan=0.0)
    theirs = pygm.sinkhorn(padding, rows, cols, dummy_row=True, max_iter=2 * n_iters, tau=0.5)
    same_frame = (rows != cols) | (shape[1] <= shape[2])
    assert same_frame.sum() >= 3 and ((rows > cols) & same_frame).any()
    torch.testing.assert_close(ours[same_frame], theirs[same_frame], rtol=0, atol=1e-12)
    for b in torch.nonzero(~same_frame).flatten().tolist():
        block = x[b, : rows[b], : cols[b]]
        transposed = sinkhorn(block.mT, tau=0.5, n_iters=n_iters).mT
        torch.testing.assert_close(theirs[b, : rows[b], : cols[b]], transposed, rtol=0, atol=1e-12)
    # and each item equals its own unpadded problem
    for b in range(shape[0]):
        alone = sinkhorn(x[b, : rows[b], : cols[b]], tau=0.5, n_iters=n_iters)
        torch.testing.assert_close(ours[b, : rows[b], : cols[b]], alone, rtol=0, atol=1e-13)


def test_partial_permutation_at_convergence_and_its_report():
    """Rows (the shorter side) sum to 1, columns to at most 1; the report's residual, stops and
    potentials: log P = log_alpha / tau + f + g on every entry that is used."""
    x = random_scores(62, (4, 5, 8))
    x[0, 1, 2] = -math.inf
    p, info = sinkhorn(x, tau=0.3, n_iters=5000, tol=1e-10, return_info=True)
    assert info.converged.all() and (info.residual <= 1e-10).all()
    assert (info.n_iters > 1).all() and info.errors.shape == (4, int(info.n_iters.max()))
    torch.testing.assert_close(p.sum(-1), torch.ones(4, 5, dtype=torch.float64), atol=1e-10, rtol=0)
    assert (p.sum(-2) <= 1 + 1e-10).all() and p[0, 1, 2] == 0
    log_p = x / 0.3 + info.f.unsqueeze(-1) + info.g.unsqueeze(-2)
    used = torch.isfinite(x)
    torch.testing.assert_close(p[used].log(), log_p[used], rtol=0, atol=1e-9)
    # the transposed problem: columns (now the shorter side) sum to 1
    q, info_t = sinkhorn(x.mT, tau=0.3, n_iters=5000, tol=1e-10, return_info=True)
    torch.testing.assert_close(q, p.mT, rtol=0, atol=1e-9)
    torch.testing.assert_close(info_t.f, info.g, rtol=0, atol=1e-6)  # up to the gauge, here 0


def test_small_tau_tends_to_the_rectangular_matching():
    g = torch.Generator().manual_seed(63)
    planted = torch.stack([torch.randperm(9, generator=g)[:4] for _ in range(3)])
    x = 3 * permutation_matrix(planted, m=9, dtype=torch.float64) + random_scores(63, (3, 4, 9))
    hard = permutation_matrix(matching(x), m=9, dtype=torch.float64)
    for y, h in ((x, hard), (x.mT, hard.mT)):
        # the slack makes the iterations slow at small tau (errors fall about as 1 / L here)
        p = sinkhorn(y, tau=0.1, n_iters=3000)
        torch.testing.assert_close(p, h, rtol=0, atol=5e-3)


@pytest.mark.filterwarnings("ignore::permlib.ConvergenceWarning")  # zeros, converged or not
@pytest.mark.parametrize("backward", ["unroll", "implicit"])
@pytest.mark.parametrize("plan", [True, False])
def test_padding_and_forbidden_pairs_are_exact_zeros_with_zero_gradient(device, backward, plan):
    x, rows, cols = padded_batch(64, 5, 5, 7, forbid=0.2)
    x, rows, cols = x.to(device).requires_grad_(), rows.to(device), cols.to(device)
    fn = sinkhorn if plan else log_sinkhorn
    out = fn(x, tau=0.5, n_iters=300, tol=1e-12, backward=backward, n_rows=rows, n_cols=cols)
    p = out if plan else out.exp()
    exists = (torch.arange(5, device=device)[:, None] < rows[:, None, None]) & (
        torch.arange(7, device=device) < cols[:, None, None]
    )
    excluded = ~exists | (x.detach() == -math.inf)
    assert (p[excluded] == 0).all() and torch.isfinite(p).all()
    if not plan:
        assert (out[excluded] == -math.inf).all() and torch.isfinite(out[~excluded]).all()
    w = random_scores(65, x.shape).to(device)
    (p * w).sum().backward()
    assert torch.isfinite(x.grad).all() and (x.grad[excluded] == 0).all()
    assert x.grad[~excluded].abs().amax() > 0


def test_implicit_and_unrolled_gradients_agree_on_rectangular_padded_batches():
    x, rows, cols = padded_batch(66, 4, 6, 5, forbid=0.15)
    w = random_scores(67, x.shape)
    grads = []
    for backward in ("unroll", "implicit"):
        xi = x.clone().requires_grad_()
        p = sinkhorn(xi, tau=0.6, n_iters=3000, tol=1e-13, backward=backward, n_rows=rows,
                     n_cols=cols)
        (p * w).sum().backward()
        grads.append(xi.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=1e-9)


def test_rectangular_gradchecks():
    x = random_scores(68, (2, 3, 5)).requires_grad_()
    x2 = random_scores(69, (2, 3, 4)).requires_grad_()

    def unrolled(t):
        return sinkhorn(t, tau=0.8, n_iters=4, n_rows=torch.tensor([3, 2]))

    def implicit(t):
        return sinkhorn(t.mT, tau=0.8, n_iters=5000, tol=1e-13, backward="implicit")

    assert torch.autograd.gradcheck(unrolled, x)
    assert torch.autograd.gradgradcheck(unrolled, x)
    assert torch.autograd.gradcheck(implicit, x2, atol=1e-6)


def test_tensor_tau_gets_a_finite_gradient_next_to_forbidden_pairs():
    x = random_scores(70, (2, 3, 4))
    x[0, 0, 0] = -math.inf
    tau = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    (sinkhorn(x, tau=tau, n_iters=10) * random_scores(71, x.shape)).sum().backward()
    assert torch.isfinite(tau.grad) and tau.grad != 0


def test_infeasible_forbidden_pairs_raise_naming_the_item():
    x = torch.zeros(2, 3, 3, 4)
    x[1, 2, :2, 1:] = -math.inf  # rows 0 and 1 of item (1, 2) may only take column 0
    with pytest.raises(ValueError, match=r"log_alpha has no feasible assignment for batch item "
                       r"\(1, 2\): rows \[0, 1\] can only be assigned to columns \[0\]"):
        sinkhorn(x)
    y = torch.zeros(4, 2)
    y[1:, 0] = -math.inf  # N > M: column 0 can only take row 0 ... which is feasible
    # (row 0's share of column 1 tends to 0, slowly: about as 1 / L, the limit is on the boundary)
    assert sinkhorn(y, n_iters=200)[:, 0].tolist() == pytest.approx([1.0, 0, 0, 0], abs=1e-2)
    y[0, 0] = -math.inf
    with pytest.raises(ValueError, match=r"columns \[0\] can only be assigned to rows \[\]"):
        log_sinkhorn(y)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_nan_and_plus_inf_that_exist_are_errors_padding_is_not_read(bad):
    x = torch.zeros(2, 3, 4)
    x[1, 2, 3] = bad
    with pytest.raises(ValueError, match="log_alpha contains invalid numeric entries"):
        sinkhorn(x)
    with pytest.raises(ValueError, match="log_alpha contains invalid numeric entries"):
        sinkhorn(x, n_rows=torch.tensor([3, 3]))
    p = sinkhorn(x, n_rows=torch.tensor([3, 2]))  # the bad entry is padding
    assert torch.isfinite(p).all() and (p[1, 2] == 0).all()


def test_square_with_sizes_or_mask_equals_the_fast_path():
    x = random_scores(72, (3, 6, 6))
    fast, info = sinkhorn(x, tau=0.4, n_iters=25, return_info=True)
    for kwargs in ({"n_rows": 6}, {"mask": torch.ones(6, 6, dtype=torch.bool)}):
        general, ginfo = sinkhorn(x, tau=0.4, n_iters=25, return_info=True, **kwargs)
        torch.testing.assert_close(general, fast, rtol=0, atol=1e-13)
        torch.testing.assert_close(ginfo.residual, info.residual, rtol=0, atol=1e-13)
        torch.testing.assert_close(ginfo.g - ginfo.g[..., :1], info.g - info.g[..., :1],
                                   rtol=0, atol=1e-9)


@pytest.mark.parametrize("shape", [(4, 3, 6), (4, 6, 3), (4, 5, 5)])
def test_rectangular_warm_start_converges_in_one_iteration(shape):
    x, rows, cols = padded_batch(73, *shape)
    kw = {"tau": 0.5, "n_iters": 5000, "tol": 1e-10, "return_info": True, "n_rows": rows,
          "n_cols": cols}
    cold, info = sinkhorn(x, **kw)
    assert info.converged.all()
    warm, again = sinkhorn(x, init=info.potentials, **kw)
    assert (again.n_iters == 1).all() and again.converged.all()
    torch.testing.assert_close(warm, cold, rtol=0, atol=1e-9)


def test_tolerance_stop_and_warning_on_rectangular_problems():
    x = random_scores(74, (3, 4, 6), scale=5.0)
    with pytest.warns(ConvergenceWarning, match="did not reach tol"):
        _, info = sinkhorn(x, tau=0.05, n_iters=3, tol=1e-12, return_info=True)
    assert (info.n_iters == 3).all() and not info.converged.any()
    x = random_scores(74, (3, 4, 6))
    p, info = sinkhorn(x, tau=0.5, n_iters=5000, tol=1e-9, return_info=True)
    assert info.converged.all() and len(set(info.n_iters.tolist())) > 1
    # each item stops at its own iteration, as on the square path
    for b in range(3):
        one = sinkhorn(x[b], tau=0.5, n_iters=int(info.n_iters[b]))
        torch.testing.assert_close(p[b], one, rtol=0, atol=0)


def test_rectangular_low_precision_meta_and_empty():
    x = random_scores(75, (2, 3, 5), dtype=torch.float16)
    x[0, 0, 0] = -math.inf
    out = log_sinkhorn(x, tau=0.01)
    assert out.dtype == torch.float16 and out[0, 0, 0] == -math.inf
    assert torch.isfinite(out.flatten()[1:]).all()
    meta = sinkhorn(torch.empty(2, 3, 5, device="meta"), n_iters=3, return_info=True)
    assert meta[0].shape == (2, 3, 5) and meta[1].errors.shape == (2, 3)
    empty, info = sinkhorn(torch.zeros(0, 3, 5), tol=1e-6, return_info=True)
    assert empty.shape == (0, 3, 5) and info.f.shape == (0, 3) and info.g.shape == (0, 5)


def test_rectangular_and_padded_under_vmap_and_grad():
    x = random_scores(76, (4, 3, 5))
    assert torch.equal(torch.func.vmap(sinkhorn)(x), sinkhorn(x))
    rows = torch.tensor([3, 1, 2, 3])
    mapped = torch.func.vmap(lambda s, r: sinkhorn(s, n_rows=r))(x, rows)
    torch.testing.assert_close(mapped, sinkhorn(x, n_rows=rows), rtol=0, atol=1e-14)
    w = random_scores(77, (3, 5))
    per_sample = torch.func.vmap(torch.func.grad(lambda s: (sinkhorn(s, n_iters=5) * w).sum()))(x)
    xa = x.clone().requires_grad_()
    (sinkhorn(xa, n_iters=5) * w).sum().backward()
    torch.testing.assert_close(per_sample, xa.grad, rtol=0, atol=1e-12)
    with pytest.raises(NotImplementedError, match="tol"):
        torch.func.vmap(lambda s: sinkhorn(s, tol=1e-3))(x)
    # a mask mapped on another dimension than the scores, NaN in the padding; an infeasible
    # item is named with the mapped dimension first
    y = random_scores(78, (3, 2, 4, 4))
    m = torch.rand(2, 4, 4, generator=torch.Generator().manual_seed(0)) > 0.2
    m[:, torch.arange(4), torch.arange(4)] = True
    y = y.masked_fill(~m, math.nan)
    mapped = torch.func.vmap(lambda s, k: sinkhorn(s, mask=k), in_dims=(1, None))(
        y.transpose(0, 1), m
    )
    torch.testing.assert_close(mapped, sinkhorn(y, mask=m), rtol=0, atol=1e-14)
    z = torch.zeros(3, 2, 3, 3)
    z[1, 1, :2, 1:] = -math.inf
    with pytest.raises(ValueError, match=r"batch item \(1, 1\): rows \[0, 1\]"):
        torch.func.vmap(sinkhorn, in_dims=1)(z.transpose(0, 1))


@given(n=st.integers(1, 6), m=st.integers(1, 6), seed=st.integers(0, 10_000))
def test_rectangular_permutation_equivariance(n, m, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, m, generator=g, dtype=torch.float64)
    pr = permutation_matrix(torch.randperm(n, generator=g), dtype=torch.float64)
    pc = permutation_matrix(torch.randperm(m, generator=g), dtype=torch.float64)
    lhs = sinkhorn(pr @ x @ pc, tau=0.5, n_iters=20)
    rhs = pr @ sinkhorn(x, tau=0.5, n_iters=20) @ pc
    torch.testing.assert_close(lhs, rhs, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    ("kind", "log_iterations"),
    [("squared", [1]), ("rank_one", [1, 19])],  # rank one stays out of range after one
)
def test_fallback_absorbs_one_iteration_then_scales(monkeypatch, kind, log_iterations):
    """Scores that leave the float32 scaling range (as a trained network's do, Table 5 at
    N = 400): the fallback runs one log-domain iteration and the other 19 in the scaling domain
    on its result, where that is in range (otherwise in the log domain). Values and gradients
    are the textbook loop's, as close as those of the plain log-domain loop."""
    runs = []
    solve = sinkhorn_module._solve
    monkeypatch.setattr(
        sinkhorn_module, "_solve", lambda x, n, *a, **k: runs.append(n) or solve(x, n, *a, **k)
    )
    g = torch.Generator().manual_seed(69)
    u = torch.rand(3, 40, 1, generator=g, dtype=torch.float64)
    v = torch.linspace(0, 1, 40, dtype=torch.float64).view(1, 1, 40)
    x = -16000 * (u - v) ** 2 if kind == "squared" else 400 * u * v
    ref_in = x.clone().requires_grad_()
    ref = reference_log_sinkhorn(ref_in, 20).exp()
    w = torch.randn(x.shape, dtype=torch.float64, generator=g)
    (ref * w).sum().backward()
    xf = x.float().requires_grad_()
    p = sinkhorn(xf, n_iters=20)
    assert runs == log_iterations
    (p * w.float()).sum().backward()
    torch.testing.assert_close(p.double(), ref.detach(), rtol=0, atol=1e-5)
    torch.testing.assert_close(xf.grad.double(), ref_in.grad, rtol=0, atol=1e-5)
    runs.clear()
    with torch.no_grad():
        torch.testing.assert_close(sinkhorn(xf, n_iters=20), p.detach(), rtol=0, atol=1e-5)
    assert runs == log_iterations
    runs.clear()
    _, info = sinkhorn(xf.detach(), n_iters=20, return_info=True)  # the report joins the parts
    assert runs == log_iterations
    monkeypatch.setattr(sinkhorn_module, "_absorbed", lambda *args: None)
    runs.clear()
    _, whole = sinkhorn(xf.detach(), n_iters=20, return_info=True)
    assert runs == [20]
    assert torch.equal(info.n_iters, whole.n_iters) and (info.n_iters == 20).all()
    torch.testing.assert_close(info.errors, whole.errors, rtol=1e-3, atol=1e-6)
    torch.testing.assert_close(info.residual, whole.residual, rtol=1e-3, atol=1e-6)
    for mine, theirs in ((info.f, whole.f), (info.g, whole.g)):  # up to the gauge f + c, g - c
        mine, theirs = mine - mine[..., :1], theirs - theirs[..., :1]
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-2)


def _trained_scores(n_lists: int = 2, n_samples: int = 2) -> torch.Tensor:
    """Perturbed scores ``(S, B, 80, 80)`` of the recorded Table 5 Gumbel-Sinkhorn network at
    N = 80 (seed 1): the spread (|x| ~ 150 at tau = 1) that sends Sinkhorn to its fallback."""
    from pathlib import Path

    from permlib.data import sample_sorting_batch
    from permlib.experiments import sorting

    results = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
    store = sorting.EXPERIMENT.store("table5", results)
    record = store.get({"method": "gumbel_sinkhorn", "n": 80, "seed": 1})
    model = sorting.load_network(store, record)  # its weights, checked by SHA-256
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        log_alpha = model.log_alpha(sample_sorting_batch(n_lists, 80, generator=g).x)
    return perturb(log_alpha, n_samples, 1.0, generator=g)


@pytest.mark.parametrize("backward", ["unroll", "implicit"])
def test_fallback_with_tol_absorbs_and_stops_each_item_where_the_loop_does(monkeypatch, backward):
    """With ``tol`` the absorbed fallback stops every item at the loop's iteration and reports
    as the loop does; its gradient (unrolled or implicit) is the loop's. A call where an item
    is within ``tol`` after the first iteration runs the whole loop (it could not stop there)."""
    x = _trained_scores()
    w = torch.randn(x.shape, generator=torch.Generator().manual_seed(72))
    kw = {"n_iters": 200, "tol": 1e-3, "backward": backward, "return_info": True}

    def call():
        xg = x.clone().requires_grad_()
        p, info = sinkhorn(xg, **kw)
        (p * w).sum().backward()
        return p.detach(), info, xg.grad

    runs = []
    solve, absorbed = sinkhorn_module._solve, sinkhorn_module._absorbed
    monkeypatch.setattr(
        sinkhorn_module, "_solve", lambda x, n, *a, **k: runs.append(n) or solve(x, n, *a, **k)
    )
    p, info, grad = call()
    assert runs == [1]
    assert info.converged.all() and (info.n_iters > 1).all()
    monkeypatch.setattr(sinkhorn_module, "_absorbed", lambda *args: None)
    p_ref, ref, grad_ref = call()
    assert torch.equal(info.n_iters, ref.n_iters)
    torch.testing.assert_close(p, p_ref, rtol=0, atol=1e-5)
    torch.testing.assert_close(info.errors, ref.errors, rtol=1e-2, atol=1e-6)
    # the implicit gradient is the fixed point's derivative taken at a plan within tol of it:
    # through the first iteration or not, the two agree to the order of tol
    rel = 1e-4 if backward == "unroll" else 10 * kw["tol"]
    torch.testing.assert_close(grad, grad_ref, rtol=0, atol=rel * float(grad_ref.abs().max()))
    monkeypatch.setattr(sinkhorn_module, "_absorbed", absorbed)
    runs.clear()
    big_tol = float(info.errors[..., 0].min()) * 1.01  # one item within it after iteration 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        _, early = sinkhorn(x, n_iters=200, tol=big_tol, return_info=True)
    assert runs == [1, 200] and int(early.n_iters.min()) == 1  # declined: the whole loop


def test_subnormal_kernel_entries_are_flushed_and_the_plan_is_unchanged():
    """Entries of K = exp(x - max) below float32's smallest normal are set to 0 (on the CPU a
    product with a subnormal is slow); the plan stays the textbook loop's."""
    x = random_scores(71, (2, 30, 30), dtype=torch.float32, scale=2.0)
    x[:, :, :10] -= 95.0  # exp(-95) ~ 5e-42: subnormal in float32
    sc = sinkhorn_module._scalings(x - x.amax(-1, keepdim=True), None, 20, False)
    tiny = torch.finfo(torch.float32).tiny
    assert not ((sc.k > 0) & (sc.k < tiny)).any()
    assert (sc.k[:, :, :10] == 0).any()
    ref = reference_log_sinkhorn(x.double(), 20).exp()
    torch.testing.assert_close(sinkhorn(x, n_iters=20).double(), ref, rtol=0, atol=1e-6)


@pytest.mark.parametrize("scale", [1.0, 30.0])  # the fast path; the log-domain fallback
@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize("n_iters", [1, 2, 3])
def test_a_tolerance_with_too_few_iterations_to_judge_reports_every_item_unconverged(
    scale, grad, n_iters
):
    """With tol and one or two iterations no residual is checked before the last one; the
    result equals fixed unrolling and the report says that no item converged (these raised)."""
    x = torch.randn(2, 6, 6, generator=torch.Generator().manual_seed(0)) * scale
    with pytest.warns(ConvergenceWarning) as caught:
        got, info = log_sinkhorn(x.clone().requires_grad_(grad), tau=0.05, n_iters=n_iters,
                                 tol=1e-9, return_info=True)  # fmt: skip
    torch.testing.assert_close(got.detach(), log_sinkhorn(x, tau=0.05, n_iters=n_iters))
    assert info.n_iters.tolist() == [n_iters, n_iters] and not info.converged.any()
    assert info.errors.shape == (2, n_iters)
    assert caught[0].message.residual == pytest.approx(float(info.residual.max()))
