import math

import pytest
import torch

import permlib
from permlib.birkhoff import (
    rounding,
    rounding_inverse,
    rounding_log_prob,
    sample_rounding,
    stick_breaking,
    stick_breaking_inverse,
    stick_breaking_log_prob,
)

F64 = torch.float64


def _psi(shape, scale=2.0, seed=0, dtype=F64):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype) * scale


# --------------------------------------------------------------------------- stick-breaking


@pytest.mark.parametrize("n", [1, 2, 3, 5, 7])
@pytest.mark.parametrize("tau", [0.1, 1.0, 3.0])
def test_stick_breaking_lands_in_the_polytope(n, tau):
    x, log_det = stick_breaking(_psi((4, 3, n - 1, n - 1), scale=3.0), tau)
    assert x.shape == (4, 3, n, n) and log_det.shape == (4, 3)
    assert x.min() >= 0 and x.max() <= 1
    ones = torch.ones(4, 3, n, dtype=F64)
    torch.testing.assert_close(x.sum(-1), ones, rtol=0, atol=1e-12)
    torch.testing.assert_close(x.sum(-2), ones, rtol=0, atol=1e-12)
    assert torch.isfinite(log_det).all()


@pytest.mark.parametrize("n", [2, 3, 4, 6])
@pytest.mark.parametrize("tau", [0.25, 1.0, 2.0])
def test_log_det_matches_the_autograd_jacobian_of_the_free_coordinates(n, tau):
    k = n - 1
    for seed in range(3):
        psi = _psi((k, k), seed=seed)

        def free(p):
            return stick_breaking(p, tau)[0][:k, :k].reshape(-1)

        jac = torch.autograd.functional.jacobian(free, psi).reshape(k * k, k * k)
        # feed-forward: entry (i, j) depends on psi up to (i, j) in raster order only
        assert torch.equal(jac.triu(1), torch.zeros_like(jac))
        sign, logabs = torch.linalg.slogdet(jac)
        assert sign > 0
        torch.testing.assert_close(stick_breaking(psi, tau)[1], logabs, rtol=1e-10, atol=1e-10)


def test_stick_breaking_is_batched_like_a_loop_and_keeps_dtype():
    psi = _psi((5, 4, 4), dtype=torch.float32)
    x, log_det = stick_breaking(psi, 0.5)
    assert x.dtype == log_det.dtype == torch.float32
    for b in range(5):
        xb, ldb = stick_breaking(psi[b], 0.5)
        torch.testing.assert_close(x[b], xb)
        torch.testing.assert_close(log_det[b], ldb)


def test_stick_breaking_first_row_is_ordinary_stick_breaking():
    psi = _psi((3, 3))
    x, _ = stick_breaking(psi, 1.0)
    beta = torch.sigmoid(psi[0])
    left, row = 1.0, []
    for j in range(3):
        row.append(beta[j] * left)
        left = left - row[-1]
    torch.testing.assert_close(x[0], torch.stack([*row, left]))


def test_small_temperature_gives_nearly_a_permutation():
    x, _ = stick_breaking(_psi((6, 4, 4), scale=1.0), 1e-3)
    perm = permlib.matching(x)
    hard = permlib.permutation_matrix(perm, dtype=F64)
    assert (x - hard).abs().amax(dim=(-2, -1)).max() < 1e-3


@pytest.mark.parametrize("n", [2, 3, 6])
@pytest.mark.parametrize("tau", [0.5, 1.0])
def test_stick_breaking_inverse_round_trips(n, tau):
    psi = _psi((8, n - 1, n - 1))
    x, _ = stick_breaking(psi, tau)
    # the inverse divides by interval widths down to ~1e-6 here: a few 1e-7 of error in psi
    torch.testing.assert_close(stick_breaking_inverse(x, tau), psi, rtol=1e-6, atol=1e-6)
    # and the other way: any interior doubly stochastic matrix
    ds = permlib.sinkhorn(_psi((8, n, n), scale=0.5, seed=1), n_iters=500)
    back, _ = stick_breaking(stick_breaking_inverse(ds, tau), tau)
    torch.testing.assert_close(back, ds, rtol=0, atol=1e-10)


def test_stick_breaking_gradient_is_correct():
    psi = _psi((3, 3)).requires_grad_(True)

    def f(p):
        x, ld = stick_breaking(p, 0.7)
        return (x * torch.arange(16.0, dtype=F64).reshape(4, 4)).sum() + ld

    assert torch.autograd.gradcheck(f, (psi,))


def test_stick_breaking_log_prob_of_two_items_is_the_logit_normal_density():
    # N = 2: X = [[x, 1 - x], [1 - x, x]], x = sigmoid(psi / tau), psi ~ N(mu, s^2)
    mu, s, tau = torch.tensor([[0.3]], dtype=F64), torch.tensor([[0.8]], dtype=F64), 0.5
    xs = torch.tensor([0.05, 0.3, 0.5, 0.9], dtype=F64)
    mats = torch.stack([torch.stack([torch.stack([x, 1 - x]), torch.stack([1 - x, x])])
                        for x in xs])  # fmt: skip
    got = stick_breaking_log_prob(mats, mu, s, tau)
    psi = tau * torch.logit(xs)
    normal = -0.5 * ((psi - 0.3) / 0.8) ** 2 - math.log(0.8) - 0.5 * math.log(2 * math.pi)
    want = normal + math.log(tau) - torch.log(xs * (1 - xs))
    torch.testing.assert_close(got, want)


def test_stick_breaking_log_prob_is_the_density_of_its_samples():
    # log q(X(psi)) = log N(psi) - log|det J(psi)| at the sampled psi
    mean, scale = _psi((3, 3), 0.5, 1), torch.full((3, 3), 0.6, dtype=F64)
    psi = mean + scale * _psi((10, 3, 3), 1.0, 2)
    x, log_det = stick_breaking(psi, 0.8)
    z = (psi - mean) / scale
    want = (-0.5 * z**2 - scale.log() - 0.5 * math.log(2 * math.pi)).sum((-2, -1)) - log_det
    torch.testing.assert_close(stick_breaking_log_prob(x, mean, scale, 0.8), want)
    # a permutation matrix lies on the boundary: density 0
    vertex = torch.eye(4, dtype=F64)
    assert stick_breaking_log_prob(vertex, mean, scale, 0.8) == -math.inf


def test_stick_breaking_on_a_device(device):
    psi = _psi((2, 4, 4), dtype=torch.float32).to(device)
    x, log_det = stick_breaking(psi, 0.5)
    assert x.device == psi.device == log_det.device
    cpu, _ = stick_breaking(psi.cpu(), 0.5)
    torch.testing.assert_close(x.cpu(), cpu, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- rounding


@pytest.mark.parametrize("tau", [0.1, 0.5, 1.0])
def test_rounding_moves_towards_the_nearest_permutation(tau):
    psi = _psi((6, 5, 5), 0.5)
    x, log_det = rounding(psi, tau)
    hard = permlib.permutation_matrix(permlib.matching(psi), dtype=F64)
    torch.testing.assert_close(x, tau * psi + (1 - tau) * hard)
    torch.testing.assert_close(log_det, torch.full((6,), 25 * math.log(tau), dtype=F64))
    # round(X) = round(psi), and the inverse recovers psi
    assert torch.equal(permlib.matching(x), permlib.matching(psi))
    back, inside = rounding_inverse(x, tau)
    assert inside.all()
    torch.testing.assert_close(back, psi)


def test_rounding_log_det_is_the_autograd_jacobian():
    psi, tau = _psi((4, 4), 0.5), 0.3
    jac = torch.autograd.functional.jacobian(lambda p: rounding(p, tau)[0].reshape(-1), psi)
    _, logabs = torch.linalg.slogdet(jac.reshape(16, 16))
    torch.testing.assert_close(rounding(psi, tau)[1], logabs)


def test_the_centre_of_the_polytope_is_outside_the_rounding_image():
    centre = torch.full((4, 4), 0.25, dtype=F64)
    _, inside = rounding_inverse(centre, 0.5)
    assert not inside
    log_m, scale = torch.zeros(4, 4, dtype=F64), torch.full((4, 4), 0.3, dtype=F64)
    assert rounding_log_prob(centre, log_m, scale, 0.5) == -math.inf


def test_sample_rounding_log_prob_and_reproducibility():
    log_m, scale = _psi((3, 5, 5), 1.0), 0.1 + torch.rand(3, 5, 5, dtype=F64) * 0.4
    a = sample_rounding(log_m, scale, 0.2, sample_shape=(4, 2),
                        generator=torch.Generator().manual_seed(3))  # fmt: skip
    b = sample_rounding(log_m, scale, 0.2, sample_shape=(4, 2),
                        generator=torch.Generator().manual_seed(3))  # fmt: skip
    assert a.x.shape == (4, 2, 3, 5, 5) and a.perm.shape == (4, 2, 3, 5)
    assert a.log_prob.shape == (4, 2, 3)
    assert torch.equal(a.x, b.x)
    assert torch.equal(a.perm, permlib.matching(a.psi))
    torch.testing.assert_close(rounding_log_prob(a.x, log_m, scale, 0.2), a.log_prob)
    # the mean is the Sinkhorn normalization of M: the psi average to it
    many = sample_rounding(log_m, scale, 0.2, sample_shape=4000,
                           generator=torch.Generator().manual_seed(4))  # fmt: skip
    m_tilde = permlib.sinkhorn(log_m, n_iters=10)
    assert (many.psi.mean(0) - m_tilde).abs().max() < 5 * 0.5 / math.sqrt(4000)


def test_sample_rounding_is_differentiable_in_its_parameters():
    log_m = torch.zeros(4, 4, dtype=F64, requires_grad=True)
    scale = torch.full((4, 4), 0.3, dtype=F64, requires_grad=True)
    s = sample_rounding(log_m, scale, 0.5, sample_shape=8,
                        generator=torch.Generator().manual_seed(0))  # fmt: skip
    (s.x.square().sum() + s.log_prob.sum()).backward()
    assert log_m.grad is not None and scale.grad is not None
    assert torch.isfinite(log_m.grad).all() and scale.grad.abs().sum() > 0


def test_sample_rounding_on_a_device(device):
    log_m = torch.zeros(2, 4, 4, device=device)
    scale = torch.full((2, 4, 4), 0.2, device=device)
    s = sample_rounding(log_m, scale, 0.5, sample_shape=3,
                        generator=torch.Generator(device=device).manual_seed(0))  # fmt: skip
    assert s.x.device == s.perm.device == s.log_prob.device == log_m.device
    assert s.x.dtype == torch.float32


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "call,exc,msg",
    [
        (lambda: stick_breaking(torch.zeros(2, 3)), ValueError, r"psi must hold \(N-1\)\^2"),
        (lambda: stick_breaking(torch.zeros(9)), ValueError, r"psi must hold \(N-1\)\^2"),
        (lambda: stick_breaking(torch.zeros(3, 3, dtype=torch.int64)), TypeError, "psi"),
        (lambda: stick_breaking(torch.full((2, 2), math.nan)), ValueError, "psi contains"),
        (lambda: stick_breaking([[0.0]]), TypeError, "psi must be a torch.Tensor"),
        (lambda: stick_breaking(torch.zeros(2, 2), 0.0), ValueError, "tau must be"),
        (lambda: stick_breaking(torch.zeros(2, 2), -1.0), ValueError, "tau must be"),
        (lambda: stick_breaking_inverse(torch.ones(3, 3)), ValueError, "x must be doubly"),
        (lambda: stick_breaking_inverse(torch.eye(3), tau=0), ValueError, "tau must be"),
        (lambda: stick_breaking_log_prob(torch.eye(3, dtype=F64), torch.zeros(3, 3, dtype=F64),
                                         torch.ones(2, 2, dtype=F64)), ValueError, "mean must"),
        (lambda: stick_breaking_log_prob(torch.eye(3, dtype=F64), torch.zeros(2, 2, dtype=F64),
                                         torch.zeros(2, 2, dtype=F64)), ValueError, "scale must"),
        (lambda: rounding(torch.zeros(3, 3), 0.0), ValueError, "tau must be"),
        (lambda: rounding(torch.zeros(3, 3), 1.5), ValueError, r"tau must be in \(0, 1\]"),
        (lambda: rounding(torch.zeros(2, 3), 0.5), ValueError, "psi must be square"),
        (lambda: sample_rounding(torch.zeros(3, 3), torch.zeros(3, 3), 0.5), ValueError,
         "scale must be > 0"),
        (lambda: sample_rounding(torch.zeros(3, 3), torch.ones(4, 4), 0.5), ValueError,
         "scale must have shape"),
        (lambda: sample_rounding(torch.zeros(3, 3), torch.ones(3, 3), 0.5, sample_shape=-1),
         ValueError, "sample_shape"),
        (lambda: sample_rounding(torch.zeros(3, 3), torch.ones(3, 3), 0.5, n_iters=0),
         ValueError, "n_iters"),
        (lambda: sample_rounding(torch.zeros(3, 3), torch.ones(3, 3), 0.5, generator=1),
         TypeError, "generator"),
    ],
)  # fmt: skip
def test_bad_input_is_rejected_naming_the_argument(call, exc, msg):
    with pytest.raises(exc, match=msg):
        call()
