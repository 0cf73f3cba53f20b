"""Score-based relaxation heads and the sorting network that feeds them one score per number.

The founding papers' networks emit a square matrix of log-potentials per list (rows items,
columns positions) for a :class:`~permlib.nn.heads.PermutationHead`. The relaxations of the
literature that followed (NeuralSort, SoftSort, differentiable sorting networks) start instead
from one real *score* per item and relax the permutation that sorts the scores. A
:class:`SortRelaxation` is that kind of head: scores ``(B, N)`` in, ``(S, B, N, N)`` matrices out,
in the same layout as a :class:`~permlib.nn.heads.PermutationHead` (rows items, columns
positions, ascending), so the same losses and :func:`~permlib.nn.heads.reconstruct` apply.

Kinds:

* ``"neuralsort"``: :func:`permlib.relaxed_sort.neural_sort` (Grover et al., 2019); with
  ``noise_factor > 0`` the stochastic variant (Plackett-Luce samples by Gumbel perturbation of the
  scores, :func:`permlib.relaxed_sort.plackett_luce_perturb`);
* ``"softsort"``: :func:`permlib.relaxed_sort.soft_sort` (Prillo and Eisenschlos, 2020);
* ``"ot_sort"``: :func:`permlib.relaxed_sort.ot_sort` (Cuturi et al., 2019), ``tau`` its
  ``epsilon``;
* ``"diffsort_odd_even"``, ``"diffsort_bitonic"``: the differentiable sorting networks of
  Petersen et al. (2021, 2022) through their package ``diffsort`` (an optional dependency,
  ``pip install -e '.[peers]'``); ``tau`` is the inverse of its ``steepness``.

A :class:`SoftRank` head relaxes the *ranks* instead, through the package ``torchsort``
(Blondel et al., 2020; an optional dependency): scores ``(B, N)`` in, soft ranks ``(S, B, N)``
out, no matrix. Its loss compares ranks (:func:`rank_loss`), not reconstructions.

At test time every kind decodes by sorting the scores
(:func:`permlib.relaxed_sort.sort_permutation`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from permlib._checks import check_positive_real, compute_float
from permlib.nn.heads import noise_samples, reconstruct
from permlib.nn.init import init_linear_
from permlib.relaxed_sort import (
    _check_scores,
    neural_sort,
    ot_sort,
    plackett_luce_perturb,
    soft_sort,
    sort_permutation,
)

__all__ = [
    "RELAXATIONS",
    "ScoreSortingNetwork",
    "SoftRank",
    "SortRelaxation",
    "diffsort_available",
    "rank_loss",
    "torchsort_available",
]

RELAXATIONS: tuple[str, ...] = ("neuralsort", "softsort", "ot_sort", "diffsort_odd_even",
                                 "diffsort_bitonic")  # fmt: skip
_DIFFSORT_TYPES = {"diffsort_odd_even": "odd_even", "diffsort_bitonic": "bitonic"}
INSTALL_PEERS = "pip install -e '.[peers]' (or pip install diffsort==0.2.0)"
#: torchsort is a C++ extension compiled against the installed torch, so pip must not build it
#: in an isolated environment (which would download another torch); where nvcc is on PATH but
#: torch is a CPU build, its setup also fails to find CUDA: hide nvcc from PATH for the build.
INSTALL_TORCHSORT = "pip install --no-build-isolation torchsort==0.1.10"


def torchsort_available() -> bool:
    """Whether the optional package ``torchsort`` (and its compiled extension) imports."""
    try:
        import torchsort  # noqa: F401
    except ImportError:
        return False
    return True


def diffsort_available() -> bool:
    """Whether the optional package ``diffsort`` imports."""
    try:
        import diffsort  # noqa: F401
    except ImportError:
        return False
    return True


class SortRelaxation(nn.Module):
    """Scores in, relaxed sorting permutations out.

    Args:
        kind: one of :data:`RELAXATIONS`.
        n: items per list (needed by the sorting networks of ``diffsort``, which are built for
            one size; checked against the input for every kind).
        tau: temperature (``neuralsort``, ``softsort``), the regularization ``epsilon``
            (``ot_sort``) or ``1 / steepness`` (``diffsort``), > 0.
        noise_factor: scale of the Gumbel noise on the scores during training (0: deterministic).
        n_samples: noise draws per list (``None``: 10 with noise, 1 without).
        distribution: ``diffsort``'s relaxation of a swap (its default ``"cauchy"``).

    Shape:
        ``forward(scores)``: ``(B, N) -> (S, B, N, N)``. ``predict(scores)``: ``(B, N)`` int64,
        ``perm[b, i]`` = position of item ``i`` in the ascending order of its score.
    """

    def __init__(
        self,
        kind: str = "neuralsort",
        n: int | None = None,
        *,
        tau: float = 1.0,
        noise_factor: float = 0.0,
        n_samples: int | None = None,
        distribution: str = "cauchy",
    ) -> None:
        super().__init__()
        if kind not in RELAXATIONS:
            raise ValueError(f"kind must be one of {RELAXATIONS}, got {kind!r}")
        tau = check_positive_real(tau, "tau")
        if not noise_factor >= 0:
            raise ValueError(f"noise_factor must be >= 0, got {noise_factor!r}")
        n_samples = noise_samples(noise_factor, n_samples)
        self.kind, self.n, self.tau = kind, n, float(tau)
        self.noise_factor, self.n_samples = float(noise_factor), int(n_samples)
        if kind in _DIFFSORT_TYPES:
            if n is None:
                raise ValueError(f"kind {kind!r} needs n (the sorting network's size)")
            try:
                from diffsort import DiffSortNet
            except ImportError as err:
                raise ImportError(f"kind {kind!r} needs the package diffsort: "
                                  f"{INSTALL_PEERS}") from err  # fmt: skip
            self._diffsort = (DiffSortNet, _DIFFSORT_TYPES[kind], distribution)
            self._nets: dict[str, nn.Module] = {}

    def extra_repr(self) -> str:
        return (f"kind={self.kind!r}, n={self.n}, tau={self.tau}, "
                f"noise_factor={self.noise_factor}, n_samples={self.n_samples}")  # fmt: skip

    def _check(self, scores: torch.Tensor) -> None:
        if not isinstance(scores, torch.Tensor) or scores.dim() != 2:
            shape = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores)
            raise ValueError(f"scores must be (B, N), got {shape}")
        if self.n is not None and scores.shape[-1] != self.n:
            raise ValueError(f"scores must have N = {self.n} items, got {scores.shape[-1]}")

    def relax(self, scores: torch.Tensor) -> torch.Tensor:
        """The deterministic relaxation ``(..., N) -> (..., N, N)`` (no noise)."""
        if self.kind == "neuralsort":
            return neural_sort(scores, self.tau)
        if self.kind == "softsort":
            return soft_sort(scores, self.tau)
        if self.kind == "ot_sort":
            return ot_sort(scores, self.tau)
        flat = scores.reshape(-1, scores.shape[-1])
        if flat.shape[0] == 0:
            return scores.new_zeros(*scores.shape, scores.shape[-1])
        # diffsort builds its network's matrices on one device: one network per device
        key = str(scores.device)
        if key not in self._nets:
            cls, kind, distribution = self._diffsort
            self._nets[key] = cls(kind, self.n, device=key, steepness=1.0 / self.tau,
                                  distribution=distribution)  # fmt: skip
        _, perm = self._nets[key](flat)  # sorted = x @ P: rows items, columns positions
        return perm.reshape(*scores.shape, scores.shape[-1]).to(scores.dtype)

    def forward(self, scores: torch.Tensor, *,
                generator: torch.Generator | None = None) -> torch.Tensor:  # fmt: skip
        """Training-time matrices ``(S, B, N, N)``."""
        self._check(scores)
        if self.noise_factor > 0:
            scores = plackett_luce_perturb(scores, self.n_samples, self.noise_factor,
                                           generator=generator)  # fmt: skip
        else:
            scores = scores.unsqueeze(0)
        return self.relax(scores)

    @torch.no_grad()
    def predict(self, scores: torch.Tensor) -> torch.Tensor:
        """Test-time permutation: the ascending sort of the scores (no noise), ``(B, N)``."""
        self._check(scores)
        return sort_permutation(scores)


class SoftRank(nn.Module):
    """Scores in, soft ranks out: ``torchsort.soft_rank`` (Blondel et al., 2020), the
    projection of the scores onto the permutahedron with an ``"l2"`` or ``"kl"`` regularization
    of strength ``tau``. No permutation matrix: train it with :func:`rank_loss`.

    Args:
        n: items per list (checked against the input), or ``None``.
        tau: ``regularization_strength``, > 0 (as ``tau -> 0`` the soft ranks become the ranks).
        regularization: ``"l2"`` (torchsort's default) or ``"kl"``.

    Shape:
        ``forward(scores)``: ``(B, N) -> (1, B, N)`` soft ranks, 0-based and ascending (the
        smallest score's rank tends to 0), the layout of positions in
        :func:`~permlib.relaxed_sort.sort_permutation`. ``predict(scores)``: ``(B, N)`` int64.
    """

    kind = "torchsort_rank"

    def __init__(self, n: int | None = None, *, tau: float = 1.0,
                 regularization: str = "l2") -> None:  # fmt: skip
        super().__init__()
        tau = check_positive_real(tau, "tau")
        if regularization not in ("l2", "kl"):
            raise ValueError(f"regularization must be 'l2' or 'kl', got {regularization!r}")
        try:
            import torchsort
        except ImportError as err:
            raise ImportError(f"SoftRank needs the package torchsort: {INSTALL_TORCHSORT}") from err
        self._soft_rank = torchsort.soft_rank
        self.n, self.tau, self.regularization = n, float(tau), regularization

    def extra_repr(self) -> str:
        return f"n={self.n}, tau={self.tau}, regularization={self.regularization!r}"

    _check = SortRelaxation._check

    def forward(self, scores: torch.Tensor, *,
                generator: torch.Generator | None = None) -> torch.Tensor:  # fmt: skip
        """Training-time soft ranks ``(1, B, N)`` (no noise; ``generator`` is unused).
        Half-precision scores are ranked in float32 (torchsort has no bfloat16 kernel) and the
        ranks returned in their dtype."""
        self._check(scores)
        scores = _check_scores(scores)  # floating and finite
        if scores.shape[0] == 0:
            return scores.new_zeros(1, *scores.shape)
        ranks = self._soft_rank(compute_float(scores), regularization=self.regularization,
                                regularization_strength=self.tau)  # fmt: skip
        return (ranks - 1).to(scores.dtype).unsqueeze(0)

    @torch.no_grad()
    def predict(self, scores: torch.Tensor) -> torch.Tensor:
        """Test-time ranks: the ascending sort of the scores, ``(B, N)``."""
        self._check(scores)
        return sort_permutation(scores)


def rank_loss(soft_ranks: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """Mean squared error between soft ranks ``(S, B, N)`` and the true positions ``(B, N)``,
    both divided by ``N`` (so that the loss lies on the scale of ``[0, 1]`` whatever ``N``): a
    scalar."""
    n = perm.shape[-1]
    return ((soft_ranks - perm.to(soft_ranks.dtype)) / n).square().mean()


class ScoreSortingNetwork(nn.Module):
    """The sorting network of :class:`~permlib.nn.SortingNetwork` with a one-score output: each
    number goes through ``g1`` (affine ``1 -> hidden`` + ReLU) and an affine map to a single
    score, and a :class:`SortRelaxation` relaxes the sort of the scores.

    The same ``g1``, initialization, input and loss as the Sinkhorn network, so that the
    relaxations chapter compares heads, not networks; only ``g2``'s width differs (1 instead
    of ``N``).

    Args:
        n: numbers per list.
        hidden: width of ``g1``.
        relaxation: a :class:`SortRelaxation` or its kind, built with ``relaxation_options``,
            or a :class:`SoftRank` (then ``forward`` returns soft ranks ``(S, B, N)``).
        init: ``"glorot"`` (Glorot-uniform weights, zero biases) or ``"torch"``.
        generator: CPU generator for the initial weights.

    Shape:
        ``x``: ``(B, N)``. ``scores(x)``: ``(B, N)``. ``forward(x)``: ``(S, B, N, N)``.
        ``predict(x)``: ``(B, N)`` int64 positions.
    """

    def __init__(self, n: int, hidden: int = 32, relaxation: str | SortRelaxation = "neuralsort",
                 *, init: str = "glorot", generator: torch.Generator | None = None,
                 **relaxation_options: Any) -> None:  # fmt: skip
        super().__init__()
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive int, got {n!r}")
        if init not in ("glorot", "torch"):
            raise ValueError(f"init must be 'glorot' or 'torch', got {init!r}")
        self.n, self.init = n, init
        if isinstance(relaxation, SortRelaxation | SoftRank):
            if relaxation_options:
                raise ValueError("pass relaxation options to the SortRelaxation, not here")
            self.head = relaxation
        else:
            self.head = SortRelaxation(relaxation, n, **relaxation_options)
        self.g1 = nn.Linear(1, hidden)
        self.g2 = nn.Linear(hidden, 1)
        self.reset_parameters(generator=generator)

    @torch.no_grad()
    def reset_parameters(self, *, generator: torch.Generator | None = None) -> None:
        """Initialize ``g1`` and ``g2`` as :class:`~permlib.nn.SortingNetwork` does."""
        init_linear_((self.g1, self.g2), self.init, generator)

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """One score per number, ``(B, N) -> (B, N)``."""
        if not isinstance(x, torch.Tensor) or x.dim() < 1 or x.shape[-1] != self.n:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must be lists of {self.n} numbers (..., {self.n}), got {shape}")
        return self.g2(torch.relu(self.g1(x.unsqueeze(-1)))).squeeze(-1)

    def forward(self, x: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """Training-time matrices ``(S, B, N, N)``."""
        return self.head(self.scores(x), generator=generator)

    def loss(self, x: torch.Tensor, x_sorted: torch.Tensor, *,
             generator: torch.Generator | None = None) -> torch.Tensor:  # fmt: skip
        """The sorting loss of :meth:`permlib.nn.SortingNetwork.loss`: mean squared error
        between ``P^T x`` and the sorted list; with a :class:`SoftRank` head, which has no
        ``P``, :func:`rank_loss` against the ranks of ``x``."""
        if isinstance(self.head, SoftRank):
            return rank_loss(self(x, generator=generator), sort_permutation(x))
        return (reconstruct(self(x, generator=generator), x) - x_sorted).square().mean()

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Test-time permutation ``(B, N)``: the ascending sort of the scores."""
        return sort_permutation(self.scores(x))
