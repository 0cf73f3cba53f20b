import itertools
import math

import pytest
import torch
from scipy.stats import chisquare

from permlib.distributions import (
    bhattacharyya_coefficient,
    bhattacharyya_distance,
    enumerate_permutations,
    hellinger_distance,
    permutation_frequencies,
    permutation_rank,
)
from permlib.mallows import Mallows, footrule_distance


def _brute_log_z(n, theta):
    return math.log(sum(math.exp(-theta * sum(abs(p[i] - i) for i in range(n)))
                        for p in itertools.permutations(range(n))))  # fmt: skip


@pytest.mark.parametrize("n", [1, 2, 3, 4, 6])
@pytest.mark.parametrize("theta", [0.0, 0.1, 1.0, 5.0])
def test_normalizer_matches_brute_force_for_any_centre(n, theta):
    for seed in range(2):
        centre = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        m = Mallows(centre, theta)
        assert m.log_normalizer == pytest.approx(_brute_log_z(n, theta), rel=1e-12, abs=1e-12)
        perms = enumerate_permutations(n)
        brute = torch.tensor([-theta * sum(abs(int(p[i]) - int(centre[i])) for i in range(n))
                              for p in perms], dtype=torch.float64)  # fmt: skip
        torch.testing.assert_close(m.log_prob(perms), brute - _brute_log_z(n, theta))
        torch.testing.assert_close(m.probs(), m.log_prob(perms).exp())


def test_probs_mode_uniform_limit_and_batch():
    centre = torch.tensor([2, 0, 3, 1])
    p = Mallows(centre, 2.0).probs()
    assert int(p.argmax()) == int(permutation_rank(centre))
    torch.testing.assert_close(Mallows(centre, 0.0).probs(), torch.full((24,), 1 / 24,
                                                                        dtype=torch.float64))
    centres = torch.stack([torch.randperm(5, generator=torch.Generator().manual_seed(s))
                           for s in range(3)])  # fmt: skip
    batch = Mallows(centres, 0.7)
    assert batch.batch_shape == (3,) and batch.probs().shape == (3, 120)
    for b in range(3):
        torch.testing.assert_close(batch.probs()[b], Mallows(centres[b], 0.7).probs())
    # large theta: all mass on the centre
    assert Mallows(centre, 60.0).probs().max() > 1 - 1e-12


def test_footrule_distance():
    a, b = torch.tensor([0, 1, 2, 3]), torch.tensor([3, 2, 1, 0])
    assert int(footrule_distance(a, b)) == 8 == 16 // 2  # the maximum, floor(N^2 / 2)
    assert int(footrule_distance(a, a)) == 0
    assert footrule_distance(torch.stack([a, b]), a).tolist() == [0, 8]


def _chi_square_p(samples, probs):
    counts = permutation_frequencies(samples) * samples.reshape(-1, samples.shape[-1]).shape[0]
    return chisquare(counts.numpy(), probs.numpy() * float(counts.sum())).pvalue


def test_exact_sampler_frequencies_match_the_probabilities():
    m = Mallows(torch.tensor([1, 3, 0, 2]), 0.5)
    draws = m.sample(20000, generator=torch.Generator().manual_seed(0))
    assert draws.shape == (20000, 4) and draws.dtype == torch.int64
    assert _chi_square_p(draws, m.probs()) > 1e-3
    # batched centres: each column of draws follows its own distribution
    centres = torch.stack([torch.tensor([0, 1, 2, 3]), torch.tensor([3, 1, 0, 2])])
    mb = Mallows(centres, 1.0)
    draws = mb.sample(20000, generator=torch.Generator().manual_seed(1))
    assert draws.shape == (20000, 2, 4)
    for b in range(2):
        assert _chi_square_p(draws[:, b], mb.probs()[b]) > 1e-3


@pytest.mark.parametrize("theta,init", [(0.7, "center"), (2.0, "uniform"), (0.0, "center")])
def test_mcmc_frequencies_match_the_probabilities(theta, init):
    m = Mallows(torch.tensor([2, 0, 3, 1]), theta)
    draws = m.sample_mcmc(20000, init=init, generator=torch.Generator().manual_seed(2))
    assert draws.shape == (20000, 4)
    assert _chi_square_p(draws, m.probs()) > 1e-3


def test_mcmc_at_eight_items_matches_the_exact_law_of_the_distance():
    # 40320 permutations: compare the distribution of d(phi, phi0), which has 33 values
    centre = torch.randperm(8, generator=torch.Generator().manual_seed(3))
    m = Mallows(centre, 0.4)
    perms = enumerate_permutations(8)
    exact = torch.bincount(m.distance(perms), weights=m.probs(), minlength=33)
    draws = m.sample_mcmc(20000, generator=torch.Generator().manual_seed(4))
    counts = torch.bincount(m.distance(draws), minlength=33).double()
    keep = exact * 20000 > 5  # the chi-square approximation needs expected counts above ~5
    expected = exact[keep] / exact[keep].sum() * counts[keep].sum()
    assert chisquare(counts[keep].numpy(), expected.numpy()).pvalue > 1e-3


def test_more_than_eight_items_need_mcmc():
    centre = torch.randperm(12, generator=torch.Generator().manual_seed(0))
    m = Mallows(centre, 1.0)
    with pytest.raises(ValueError, match="N <= 8"):
        m.log_prob(centre)
    with pytest.raises(ValueError, match="N <= 8"):
        m.sample(3)
    assert float(m.unnormalized_log_prob(centre)) == 0.0
    draws = m.sample_mcmc(50, n_steps=300, generator=torch.Generator().manual_seed(0))
    assert draws.shape == (50, 12)
    assert torch.equal(draws.sort(dim=-1).values, torch.arange(12).expand(50, 12))
    # theta = 1 on 12 items keeps the chains near the centre
    assert m.distance(draws).double().mean() < 12


def test_mallows_on_a_device(device):
    m = Mallows(torch.tensor([1, 0, 2], device=device), 1.0)
    assert m.probs().device == m.phi0.device
    g = torch.Generator(device=device).manual_seed(0)
    assert m.sample(5, generator=g).device == m.phi0.device
    assert m.sample_mcmc(5, generator=g).device == m.phi0.device


@pytest.mark.parametrize(
    "call,exc,msg",
    [
        (lambda: Mallows(torch.tensor([0, 1, 2]), -0.1), ValueError, "theta must be"),
        (lambda: Mallows(torch.tensor([0, 1, 2]), math.nan), ValueError, "theta must be"),
        (lambda: Mallows(torch.tensor([0, 1, 2]), "1"), TypeError, "theta must be"),
        (lambda: Mallows(torch.tensor([0, 0, 2]), 1.0), ValueError, "phi0 must hold"),
        (lambda: Mallows(torch.tensor([0.0, 1.0]), 1.0), TypeError, "phi0 must have"),
        (lambda: Mallows(torch.tensor([0, 1]), 1.0).sample(-1), ValueError, "n_samples"),
        (lambda: Mallows(torch.tensor([0, 1]), 1.0).sample_mcmc(2, init="map"), ValueError,
         "init must be"),
        (lambda: Mallows(torch.tensor([0, 1]), 1.0).log_prob(torch.tensor([0, 1, 2])),
         ValueError, "same number of items"),
    ],
)  # fmt: skip
def test_bad_input_is_rejected_naming_the_argument(call, exc, msg):
    with pytest.raises(exc, match=msg):
        call()


# --------------------------------------------------------------------------- distances


def test_distances_between_distributions():
    p = torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64)
    q = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    r = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    assert float(bhattacharyya_coefficient(p, p)) == pytest.approx(1.0)
    assert float(hellinger_distance(p, p)) == 0.0 and float(bhattacharyya_distance(p, p)) == 0.0
    assert float(bhattacharyya_coefficient(p, q)) == pytest.approx(math.sqrt(0.5))
    assert float(hellinger_distance(p, q)) == pytest.approx(math.sqrt(1 - math.sqrt(0.5)))
    assert float(bhattacharyya_distance(p, q)) == pytest.approx(0.5 * math.log(2))
    assert float(hellinger_distance(p, r)) == 1.0
    assert float(bhattacharyya_distance(p, r)) == math.inf
    # Hellinger = ||sqrt p - sqrt q|| / sqrt 2, batched along the last dimension
    g = torch.Generator().manual_seed(0)
    a = torch.softmax(torch.randn(4, 720, generator=g, dtype=torch.float64), -1)
    b = torch.softmax(torch.randn(4, 720, generator=g, dtype=torch.float64), -1)
    want = (a.sqrt() - b.sqrt()).norm(dim=-1) / math.sqrt(2)
    torch.testing.assert_close(hellinger_distance(a, b), want)
    torch.testing.assert_close(hellinger_distance(a.T, b.T, dim=0), want)
    # -ln BC exceeds 1 once BC < 1/e, where Hellinger is still below 1
    far = torch.tensor([0.05, 0.05, 0.9], dtype=torch.float64)
    assert float(bhattacharyya_coefficient(p, far)) < 1 / math.e
    assert float(bhattacharyya_distance(p, far)) > 1 > float(hellinger_distance(p, far))
    assert hellinger_distance(a.float(), b.float()).dtype == torch.float64


@pytest.mark.parametrize(
    "p,q,exc,msg",
    [
        (torch.ones(3) / 3, torch.ones(4) / 4, ValueError, "same shape"),
        (torch.tensor([1.5, -0.5]), torch.tensor([0.5, 0.5]), ValueError, "p must be non-neg"),
        (torch.tensor([0.5, 0.5]), torch.tensor([0.5, 0.6]), ValueError, "q must hold prob"),
        (torch.tensor([1, 0]), torch.tensor([0, 1]), TypeError, "floating"),
        ([0.5, 0.5], torch.tensor([0.5, 0.5]), TypeError, "p must be a torch.Tensor"),
        (torch.tensor([math.nan, 1.0]), torch.tensor([0.5, 0.5]), ValueError, "p contains"),
    ],
)
def test_distances_reject_bad_input(p, q, exc, msg):
    for fn in (bhattacharyya_coefficient, bhattacharyya_distance, hellinger_distance):
        with pytest.raises(exc, match=msg):
            fn(p, q)
