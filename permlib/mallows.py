r"""The Mallows model over permutations with the Spearman footrule distance.

``p(phi) ∝ exp(-theta * d(phi, phi0))`` with ``d(phi, phi0) = sum_i |phi(i) - phi0(i)|``
(Mallows, 1957; the distance of the baseline in Linderman et al., 2018,
``linderman2018reparameterizing``). ``phi0`` is the centre (the mode), ``theta >= 0`` the
concentration: 0 gives the uniform distribution, large values concentrate the mass on ``phi0``.

The normalizer does not depend on the centre: relabelling the positions by ``phi0^-1`` maps
``d(phi, phi0)`` to ``d(phi o phi0^-1, id)``, so
``Z(theta) = sum_k c_k exp(-theta k)`` where ``c_k`` counts the permutations at footrule
distance ``k`` from the identity. For ``N <= MAX_ITEMS`` (8) these counts come from enumerating
the ``N!`` permutations (once per ``N``), which makes :meth:`Mallows.log_prob` exact and
:meth:`Mallows.sample` an exact draw; beyond, :meth:`Mallows.sample_mcmc` runs a Metropolis
chain (the original authors sampled their baseline by MCMC).

Conventions are permlib's: a permutation is an int64 tensor ``perm (..., N)`` with
``perm[..., i]`` the column (position) of row (item) ``i``; batch dimensions first;
probabilities are float64, indexed like :func:`permlib.distributions.enumerate_permutations`.
"""

from __future__ import annotations

import functools
import math
from numbers import Real

import torch

from permlib._checks import check_generator, check_permutation, check_positive_int
from permlib.distributions import MAX_ITEMS, enumerate_permutations

__all__ = ["Mallows", "footrule_distance"]


def footrule_distance(perm: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """Spearman's footrule ``sum_i |perm[..., i] - other[..., i]|`` (broadcast over batches).

    Args:
        perm, other: ``(..., N)`` integer permutations of one ``N``, on one device.

    Returns:
        ``(...)`` int64 distances, between 0 and ``floor(N^2 / 2)``.
    """
    check_permutation(perm, "perm")
    check_permutation(other, "other")
    if perm.shape[-1] != other.shape[-1]:
        raise ValueError(
            f"perm and other must permute the same number of items, got {perm.shape[-1]} and "
            f"{other.shape[-1]}"
        )
    return (perm.long() - other.long().to(perm.device)).abs().sum(dim=-1)


@functools.cache
def _distance_counts(n: int) -> tuple[int, ...]:
    """``c_k``: how many permutations of ``n`` items lie at footrule distance ``k`` from the
    identity, ``k = 0 .. floor(n^2 / 2)``."""
    perms = enumerate_permutations(n)
    d = (perms - torch.arange(n)).abs().sum(dim=-1)
    return tuple(torch.bincount(d, minlength=n * n // 2 + 1).tolist())


def _check_theta(theta: object) -> float:
    if isinstance(theta, torch.Tensor):
        if theta.numel() != 1:
            raise TypeError(f"theta must be a number or a one-element tensor, got shape "
                            f"{tuple(theta.shape)}")  # fmt: skip
        theta = theta.item()
    if isinstance(theta, bool) or not isinstance(theta, Real):
        raise TypeError(f"theta must be a real number, got {type(theta).__name__}")
    theta = float(theta)
    if not math.isfinite(theta) or theta < 0:
        raise ValueError(f"theta must be a finite number >= 0, got {theta}")
    return theta


class Mallows:
    """Mallows distribution ``p(phi) ∝ exp(-theta * sum_i |phi(i) - phi0(i)|)``.

    Args:
        phi0: ``(..., N)`` integer centre permutation(s); batch dimensions give a batch of
            distributions sharing ``theta``.
        theta: concentration, a finite number ``>= 0`` (0 is the uniform distribution).

    Attributes:
        phi0: the centre, int64, on its device.
        theta: the concentration (a float).
        n: the number of items ``N``.
        batch_shape: ``phi0.shape[:-1]``.
    """

    def __init__(self, phi0: torch.Tensor, theta: float) -> None:
        check_permutation(phi0, "phi0")
        self.phi0 = phi0.long()
        self.theta = _check_theta(theta)
        self.n = phi0.shape[-1]
        self.batch_shape = phi0.shape[:-1]

    def __repr__(self) -> str:
        return f"Mallows(n={self.n}, theta={self.theta:g}, batch_shape={tuple(self.batch_shape)})"

    def distance(self, perm: torch.Tensor) -> torch.Tensor:
        """``d(perm, phi0)``: ``(..., N) -> (...)`` int64 (``perm`` broadcast against the
        centre's batch)."""
        return footrule_distance(perm, self.phi0.to(perm.device))

    def _check_enumerable(self, what: str) -> None:
        if self.n > MAX_ITEMS:
            raise ValueError(
                f"{what} enumerates the N! permutations and needs N <= {MAX_ITEMS}, got N = "
                f"{self.n}; use unnormalized_log_prob or sample_mcmc"
            )

    @property
    def log_normalizer(self) -> float:
        """``log Z(theta)``, exact (by enumeration, ``N <= 8``); the same for every centre."""
        self._check_enumerable("log_normalizer")
        counts = torch.tensor(_distance_counts(self.n), dtype=torch.float64)
        k = torch.arange(len(counts), dtype=torch.float64)
        keep = counts > 0
        return float(torch.logsumexp(counts[keep].log() - self.theta * k[keep], dim=0))

    def unnormalized_log_prob(self, perm: torch.Tensor) -> torch.Tensor:
        """``-theta * d(perm, phi0)``: ``(..., N) -> (...)`` float64, for any ``N``."""
        return -self.theta * self.distance(perm).double()

    def log_prob(self, perm: torch.Tensor) -> torch.Tensor:
        """Exact ``log p(perm)``: ``(..., N) -> (...)`` float64 (``N <= 8``)."""
        return self.unnormalized_log_prob(perm) - self.log_normalizer

    def probs(self, device: torch.device | str | None = None) -> torch.Tensor:
        """Every permutation's probability: ``(*batch_shape, N!)`` float64, indexed like
        :func:`permlib.distributions.enumerate_permutations` (``N <= 8``), on ``device``
        (default: the centre's)."""
        self._check_enumerable("probs")
        device = self.phi0.device if device is None else torch.device(device)
        perms = enumerate_permutations(self.n, device=device)
        centre = self.phi0.to(device).unsqueeze(-2)  # (..., 1, N)
        log_p = -self.theta * (perms - centre).abs().sum(dim=-1).double()
        return torch.softmax(log_p, dim=-1)

    def sample(
        self,
        n_samples: int,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """Exact draws, by inverting the distribution over the ``N!`` permutations (``N <= 8``).

        Args:
            n_samples: number of draws per distribution of the batch.
            generator: a ``torch.Generator`` on ``device`` for reproducible draws.
            device: where to draw and return (default: the centre's device).

        Returns:
            ``(n_samples, *batch_shape, N)`` int64 permutations.
        """
        n_samples = check_positive_int(n_samples, "n_samples", minimum=0)
        device = self.phi0.device if device is None else torch.device(device)
        check_generator(generator, device, "the samples")
        probs = self.probs(device).reshape(-1, math.factorial(self.n))
        if n_samples == 0:
            return torch.zeros((0, *self.batch_shape, self.n), dtype=torch.int64, device=device)
        idx = torch.multinomial(probs, n_samples, replacement=True, generator=generator)
        perms = enumerate_permutations(self.n, device=device)[idx.T]  # (S, B, N)
        return perms.reshape(n_samples, *self.batch_shape, self.n)

    def sample_mcmc(
        self,
        n_samples: int,
        *,
        n_steps: int | None = None,
        init: str = "center",
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """Approximate draws by Metropolis chains with random transpositions, for any ``N``.

        Each draw is the state of its own chain (all chains run at once, vectorized) after
        ``n_steps`` steps. A step picks two positions ``i`` and ``j`` independently and
        uniformly (``i = j`` proposes to stay, which makes the chain aperiodic also at
        ``theta = 0``: transpositions alone would alternate the parity), proposes to swap
        ``phi(i)`` and ``phi(j)``, and accepts with probability
        ``min(1, exp(-theta (d' - d)))``. The proposal is symmetric, so the chain leaves the
        Mallows distribution invariant; it mixes in ``O(N log N)`` steps at ``theta = 0``
        (Diaconis and Shahshahani's random transpositions) and stays near the centre for
        large ``theta``, where the distribution is.

        Args:
            n_samples: number of chains (draws) per distribution of the batch.
            n_steps: Metropolis steps per chain (default ``max(100, 20 N log N)``).
            init: ``"center"`` (start at ``phi0``) or ``"uniform"`` (uniformly random starts).
            generator: a ``torch.Generator`` on ``device``.
            device: where to run and return (default: the centre's device).

        Returns:
            ``(n_samples, *batch_shape, N)`` int64 permutations.
        """
        n_samples = check_positive_int(n_samples, "n_samples", minimum=0)
        n = self.n
        if n_steps is None:
            n_steps = max(100, math.ceil(20 * n * math.log(max(n, 2))))
        n_steps = check_positive_int(n_steps, "n_steps", minimum=0)
        if init not in ("center", "uniform"):
            raise ValueError(f"init must be 'center' or 'uniform', got {init!r}")
        device = self.phi0.device if device is None else torch.device(device)
        check_generator(generator, device, "the samples")
        centre = self.phi0.to(device).expand(n_samples, *self.batch_shape, n)
        if init == "center":
            state = centre.clone()
        else:
            keys = torch.rand(centre.shape, generator=generator, device=device)
            state = keys.argsort(dim=-1)
        if n_samples == 0 or n == 1:
            return state
        shape = state.shape[:-1]
        for _ in range(n_steps):
            i = torch.randint(n, shape + (1,), generator=generator, device=device)
            j = torch.randint(n, shape + (1,), generator=generator, device=device)
            si, sj = state.gather(-1, i), state.gather(-1, j)
            ci, cj = centre.gather(-1, i), centre.gather(-1, j)
            delta = ((sj - ci).abs() + (si - cj).abs() - (si - ci).abs() - (sj - cj).abs())
            delta = delta.squeeze(-1)
            u = torch.rand(shape, generator=generator, device=device, dtype=torch.float64)
            accept = u < torch.exp(-self.theta * delta.double())
            acc = accept.unsqueeze(-1)
            state = state.scatter(-1, i, torch.where(acc, sj, si))
            state = state.scatter(-1, j, torch.where(acc, si, sj))
        return state
