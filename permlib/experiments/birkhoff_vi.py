"""Variational inference over permutations: the synthetic matching experiment of Linderman et al.
(2018, :cite:`linderman2018reparameterizing`, Table 1 and Figure 2), one runner over the shared
harness (:mod:`permlib.experiments.harness`).

The problem: ``N = 6`` cluster centres ``c_n`` in the plane and one observation per centre,
``y_m = c_{pi(m)} + sigma * eps_m``, in an unknown order ``pi``. Under a uniform prior the
posterior over the ``720`` matchings is ``p(pi | y) ∝ prod_m N(y_m | c_{pi(m)}, sigma^2 I)``,
computed exactly by enumeration. Each method approximates it and is scored by the distance
between its distribution over permutations and the exact posterior:

* ``"stick_breaking"`` and ``"rounding"``: the variational families of
  :mod:`permlib.birkhoff`, fitted by maximizing the relaxed ELBO of the model
  ``y_m ~ N(sum_n X_mn c_n, sigma^2 I)`` with the prior
  ``prod_mn [N(x_mn | 0, eta^2) + N(x_mn | 1, eta^2)] / 2`` on the relaxed matrix ``X`` (the
  paper's supplement), with Adam (lr 0.1), no gradient through the rounding; then ``1000``
  samples are rounded to permutations (:func:`permlib.matching`) and their histogram is
  compared with the exact posterior. The temperature and the largest noise scale are chosen on
  a grid (the paper: "calibrated using a grid search on ``[1e-2, 1]``"): every setting of the
  grid is fitted and recorded, and the table reports the setting with the smallest mean
  distance (``best``, what a grid search against the exact posterior gives) beside the one
  with the largest mean ELBO (``best_by_elbo``, a choice that needs no exact posterior).
* ``"mallows"``: the Mallows baseline ``p(phi) ∝ exp(-theta sum_i |phi(i) - phi0(i)|)``
  (:class:`permlib.mallows.Mallows`) centred at the MAP matching, for each ``theta`` of the
  table; the distance of the exact Mallows law and of a histogram of MCMC samples (as the
  authors sampled it) are both recorded.
* ``"gumbel_sinkhorn"`` (not in the paper): ``X = S((log_alpha + G) / tau)`` with Gumbel noise
  ``G``, fitted with the relaxed ELBO of Mena et al. (2018, :cite:`mena2018learning`): the
  likelihood of ``X`` minus the KL divergence between the perturbed scores
  ``Gumbel(log_alpha, 1)`` and a ``Gumbel(0, 1)`` prior.
* ``"exact_samples"`` (not in the paper): a histogram of ``1000`` exact posterior samples, the
  floor that sampling alone puts under every histogram-based number.

The distance: the paper calls it the Bhattacharyya distance, but ``-ln BC`` exceeds 1 where the
table stays below 1; the Hellinger distance ``sqrt(1 - BC)`` reproduces the Mallows rows
(``distance="hellinger"``, the default; ``"bhattacharyya"`` gives ``-ln BC``). This is our
inference, not the paper's statement.

A cell is ``(method, sigma, seed)``; it runs ``n_reps`` problems (the same problems for every
method: problem ``r`` of seed ``s`` is drawn from its own generator) as one batch, since the
problems are independent and Adam updates each parameter on its own. Every choice the paper
leaves open is a :class:`BirkhoffVIConfig` field whose help says it is ours.

Usage (from the repository root; ``--results-dir``/``$PERMLIB_RESULTS_DIR`` elsewhere)::

    python -m permlib.experiments.birkhoff_vi --mode ci                # a few problems, < 60 s
    python -m permlib.experiments.birkhoff_vi --mode full              # Table 1, resumable
    python -m permlib.experiments.birkhoff_vi --mode full --method rounding --sigma 0.5
    python -m permlib.experiments.birkhoff_vi --verify --cell method=rounding,sigma=0.5,seed=0

Each finished cell is written to ``<results dir>/birkhoff_vi_table1.json`` at once, with its
provenance and the fitted variational parameters (an artifact, from which ``--verify``
recomputes the distances exactly).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch

from permlib.birkhoff import stick_breaking, stick_breaking_inverse
from permlib.distributions import (
    bhattacharyya_distance,
    enumerate_permutations,
    gibbs_distribution,
    hellinger_distance,
    permutation_rank,
)
from permlib.experiments import harness
from permlib.mallows import Mallows
from permlib.matching import matching
from permlib.permutations import permutation_matrix
from permlib.sinkhorn import sinkhorn

__all__ = [
    "AXES",
    "EXPERIMENT",
    "FAMILIES",
    "METHODS",
    "SIGMAS",
    "TABLES",
    "BirkhoffVIConfig",
    "BirkhoffVIExperiment",
    "Problems",
    "cells",
    "compare_table1",
    "evaluate_family",
    "fit_family",
    "histogram",
    "load_results",
    "main",
    "make_problems",
    "our_choices",
    "recompute",
    "run",
    "run_cell",
    "run_table",
    "store",
    "verify",
]

#: The grid axes of a cell.
AXES = ("method", "sigma", "seed")
#: The observation noise levels of Table 1 (standard deviations).
SIGMAS = (0.1, 0.25, 0.5, 0.75)
#: The variational families fitted by stochastic optimization.
FAMILIES = ("stick_breaking", "rounding", "gumbel_sinkhorn")
#: Every method, in the table's order (the last two are not in the paper).
METHODS = ("stick_breaking", "rounding", "mallows", "gumbel_sinkhorn", "exact_samples")

_DTYPE = torch.float64  # N = 6 costs nothing in float64, and stick-breaking needs its range


def _ours(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass(frozen=True)
class BirkhoffVIConfig:
    """One cell: ``n_reps`` synthetic matching problems at noise ``sigma``, one method.

    The fields marked "our choice" are not given by the paper (nor by the authors' repository,
    which lacks the code of this experiment); where an early notebook of theirs had a value we
    took it.
    """

    method: str = field(default="rounding", metadata=_ours(f"one of {METHODS}"))
    sigma: float = field(default=0.5, metadata=_ours("observation noise (std); paper's grid"))
    seed: int = field(default=0, metadata=_ours("seeds the problems, the fits, the evaluation"))
    n: int = field(default=6, metadata=_ours("items per problem (paper: 6, 720 matchings)"))
    n_reps: int = field(default=200, metadata=_ours("problems per cell (paper: 200)"))
    centre_scale: float = field(default=1.0, metadata=_ours(
        "our choice: centres ~ N(0, centre_scale^2 I) (the authors' early notebook: N(0, I))"))
    prior_eta: float = field(default=0.25, metadata=_ours(
        "our choice: the std eta of the prior's two Gaussians at 0 and 1 (not in the paper)"))
    n_iters: int = field(default=500, metadata=_ours(
        "our choice: Adam iterations per fit (the authors' early notebook: 500)"))
    lr: float = field(default=0.1, metadata=_ours("Adam learning rate (paper: 0.1)"))
    lr_schedule: str = field(default="cosine", metadata=_ours(
        "our choice: 'cosine' (decay from lr to 0 over n_iters; the final iterate of a "
        "constant rate jitters) or 'constant'"))
    n_mc: int = field(default=10, metadata=_ours(
        "our choice: Monte Carlo samples per ELBO gradient (the early notebook: 10)"))
    n_eval_samples: int = field(default=1000, metadata=_ours(
        "our choice: samples in each histogram (the early notebook: 1000)"))
    n_elbo_samples: int = field(default=100, metadata=_ours(
        "our choice: samples of the final ELBO estimate that ranks grid settings"))
    init: str = field(default="uniform", metadata=_ours(
        "our choice: 'uniform' (start at the centre of the polytope) or 'map' (at the MAP, "
        "as the early notebook did)"))
    sb_taus: tuple[float, ...] = field(default=(0.03, 0.1, 0.3, 1.0), metadata=_ours(
        "our choice of grid: stick-breaking temperatures (paper: a grid on [1e-2, 1])"))
    sb_noise_maxes: tuple[float, ...] = field(default=(0.1, 0.3, 1.0), metadata=_ours(
        "our choice of grid: largest std nu of stick-breaking (paper: nu in [1e-8, 1])"))
    sb_noise_min: float = field(default=1e-8, metadata=_ours("smallest nu (paper: 1e-8)"))
    rounding_taus: tuple[float, ...] = field(default=(0.03, 0.1, 0.3, 1.0), metadata=_ours(
        "our choice of grid: rounding temperatures (paper: a grid on [1e-2, 1])"))
    rounding_noise_maxes: tuple[float, ...] = field(default=(0.2, 0.3, 0.5), metadata=_ours(
        "our choice of grid: largest std V of rounding (paper: V in [0.1, 0.5])"))
    rounding_noise_min: float = field(default=0.1, metadata=_ours("smallest V (paper: 0.1)"))
    rounding_sinkhorn_iters: int = field(default=10, metadata=_ours(
        "Sinkhorn iterations giving M~ (paper: 10)"))
    gs_taus: tuple[float, ...] = field(default=(0.1, 0.3, 1.0), metadata=_ours(
        "our choice of grid: Gumbel-Sinkhorn temperatures (not in the paper)"))
    gs_sinkhorn_iters: int = field(default=20, metadata=_ours(
        "our choice: Sinkhorn iterations of the Gumbel-Sinkhorn family"))
    thetas: tuple[float, ...] = field(default=(0.1, 0.5, 1.0, 2.0, 5.0, 10.0), metadata=_ours(
        "Mallows concentrations (paper: .1, .5, 2, 5, 10 in Table 1, 1.0 in Figure 2)"))
    mallows_mcmc_steps: int = field(default=200, metadata=_ours(
        "our choice: Metropolis steps per Mallows chain (one chain per sample)"))
    distance: str = field(default="hellinger", metadata=_ours(
        "'hellinger' (sqrt(1 - BC), matches the paper's table) or 'bhattacharyya' (-ln BC)"))

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got "
                             f"{self.lr_schedule!r}")  # fmt: skip
        if self.init not in ("uniform", "map"):
            raise ValueError(f"init must be 'uniform' or 'map', got {self.init!r}")
        if self.distance not in ("hellinger", "bhattacharyya"):
            raise ValueError(f"distance must be 'hellinger' or 'bhattacharyya', got "
                             f"{self.distance!r}")  # fmt: skip
        if not 2 <= self.n <= 8:
            raise ValueError(f"n must be in 2..8 (the exact posterior enumerates n!), got {self.n}")
        for name in ("sigma", "centre_scale", "prior_eta", "lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("sb_taus", "rounding_taus", "gs_taus"):
            if not all(0 < t <= 1 for t in getattr(self, name)) or not getattr(self, name):
                raise ValueError(f"{name} must hold temperatures in (0, 1], got "
                                 f"{getattr(self, name)}")  # fmt: skip
        if any(v <= self.rounding_noise_min for v in self.rounding_noise_maxes):
            raise ValueError("rounding_noise_maxes must exceed rounding_noise_min")
        if any(v <= self.sb_noise_min for v in self.sb_noise_maxes):
            raise ValueError("sb_noise_maxes must exceed sb_noise_min")
        if any(t < 0 for t in self.thetas):
            raise ValueError(f"thetas must be >= 0, got {self.thetas}")

    def settings(self) -> list[dict[str, float]]:
        """The grid settings a cell runs: ``tau``/``noise_max`` for the families, ``theta``
        for Mallows, one empty setting for the exact samples."""
        if self.method == "stick_breaking":
            return [{"tau": t, "noise_max": v} for t in self.sb_taus for v in self.sb_noise_maxes]
        if self.method == "rounding":
            return [{"tau": t, "noise_max": v}
                    for t in self.rounding_taus for v in self.rounding_noise_maxes]  # fmt: skip
        if self.method == "gumbel_sinkhorn":
            return [{"tau": t} for t in self.gs_taus]
        if self.method == "mallows":
            return [{"theta": t} for t in self.thetas]
        return [{}]

    def to_dict(self) -> dict[str, Any]:
        """The identity of a cell: the fields its method uses (a change elsewhere, e.g. in
        another method's grid, leaves it current)."""
        d = harness.config_dict(self)
        fit = {"prior_eta", "n_iters", "lr", "lr_schedule", "n_mc", "n_elbo_samples", "init"}
        own = {
            "stick_breaking": fit | {"sb_taus", "sb_noise_maxes", "sb_noise_min"},
            "rounding": fit | {"rounding_taus", "rounding_noise_maxes", "rounding_noise_min",
                               "rounding_sinkhorn_iters"},
            "gumbel_sinkhorn": fit - {"prior_eta"} | {"gs_taus", "gs_sinkhorn_iters"},
            "mallows": {"thetas", "mallows_mcmc_steps"},
            "exact_samples": set(),
        }[self.method]  # fmt: skip
        others = {f.name for f in dataclasses.fields(self)} - set(_SHARED) - own
        return {k: v for k, v in d.items() if k not in others}


_SHARED = ("method", "sigma", "seed", "n", "n_reps", "centre_scale", "n_eval_samples", "distance")


def our_choices() -> dict[str, str]:
    """The :class:`BirkhoffVIConfig` fields the paper leaves open, with what we chose and why:
    field name -> its help text (those that start with "our choice")."""
    return {f.name: f.metadata["help"] for f in dataclasses.fields(BirkhoffVIConfig)
            if f.metadata.get("help", "").startswith("our choice")}  # fmt: skip

#: The table: the paper's grid of methods and noise levels.
TABLES: dict[str, dict] = {
    "table1": {
        "title": "Table 1 of Linderman et al. (2018): distance between variational and exact "
                 "posterior over 720 matchings, 200 problems per cell",
        "methods": METHODS,
        "sigmas": SIGMAS,
        "protocol": {},
    },
}  # fmt: skip

_CI = {"n_reps": 8, "n_iters": 250, "n_mc": 5, "n_eval_samples": 500, "n_elbo_samples": 20,
       "sb_taus": (1.0,), "sb_noise_maxes": (0.3,), "rounding_taus": (1.0,),
       "rounding_noise_maxes": (0.5,), "gs_taus": (0.3,), "mallows_mcmc_steps": 50}  # fmt: skip


# --------------------------------------------------------------------------- problems


@dataclass(frozen=True)
class Problems:
    """A batch of ``R`` matching problems of ``N`` items.

    Attributes:
        centres: ``(R, N, 2)`` cluster centres ``c_n``.
        obs: ``(R, N, 2)`` observations ``y_m = c_{true_perm[m]} + sigma eps_m``.
        true_perm: ``(R, N)`` the centre each observation came from.
        sigma: the observation noise (std).
        scores: ``(R, N, N)`` ``log N(y_m | c_n, sigma^2 I)`` up to a constant:
            ``-|y_m - c_n|^2 / (2 sigma^2)``; the log posterior of a matching is the sum of its
            entries.
        posterior: ``(R, N!)`` float64 exact posterior, indexed like
            :func:`permlib.distributions.enumerate_permutations`.
        map_perm: ``(R, N)`` the MAP matching.
    """

    centres: torch.Tensor
    obs: torch.Tensor
    true_perm: torch.Tensor
    sigma: float
    scores: torch.Tensor
    posterior: torch.Tensor
    map_perm: torch.Tensor


def _problem_seed(seed: int, rep: int) -> int:
    return 1_000_003 * seed + 15_485_863 + rep


def make_problems(
    n_reps: int, n: int, sigma: float, seed: int, centre_scale: float = 1.0
) -> Problems:
    """``n_reps`` problems; problem ``r`` of ``seed`` comes from its own generator, and the same
    centres, order and standard noise serve every ``sigma`` (only the noise's scale changes)."""
    centres, obs, perms = [], [], []
    for r in range(n_reps):
        g = torch.Generator().manual_seed(_problem_seed(seed, r))
        c = torch.randn(n, 2, generator=g, dtype=_DTYPE) * centre_scale
        perm = torch.randperm(n, generator=g)
        eps = torch.randn(n, 2, generator=g, dtype=_DTYPE)
        centres.append(c)
        perms.append(perm)
        obs.append(c[perm] + sigma * eps)
    centres, obs, true_perm = torch.stack(centres), torch.stack(obs), torch.stack(perms)
    scores = -((obs.unsqueeze(-2) - centres.unsqueeze(-3)) ** 2).sum(-1) / (2 * sigma**2)
    posterior = torch.stack([gibbs_distribution(s) for s in scores])
    return Problems(centres, obs, true_perm, sigma, scores, posterior, matching(scores))


# --------------------------------------------------------------------------- model


def _log_likelihood(x: torch.Tensor, p: Problems) -> torch.Tensor:
    """``sum_m log N(y_m | sum_n x_mn c_n, sigma^2 I)``: ``(S, R, N, N) -> (S, R)``."""
    mean = x @ p.centres
    n = x.shape[-1]
    sq = ((p.obs - mean) ** 2).sum(dim=(-2, -1))
    return -sq / (2 * p.sigma**2) - n * math.log(2 * math.pi * p.sigma**2)


def _log_prior(x: torch.Tensor, eta: float) -> torch.Tensor:
    """``sum_mn log([N(x | 0, eta^2) + N(x | 1, eta^2)] / 2)``: ``(..., N, N) -> (...)``."""
    both = torch.logaddexp(-(x**2) / (2 * eta**2), -((x - 1) ** 2) / (2 * eta**2))
    per = both - math.log(2) - 0.5 * math.log(2 * math.pi * eta**2)
    return per.sum(dim=(-2, -1))


def _gaussian_entropy(scale: torch.Tensor) -> torch.Tensor:
    """Entropy of independent Gaussians with std ``scale``: ``(R, a, b) -> (R,)``."""
    return (scale.log() + 0.5 * math.log(2 * math.pi * math.e)).sum(dim=(-2, -1))


def _bounded(rho: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    return lo + (hi - lo) * torch.sigmoid(rho)


def _init_params(
    method: str, setting: Mapping[str, float], p: Problems, config: BirkhoffVIConfig
) -> dict[str, torch.Tensor]:
    """Starting parameters (our choice): the centre of the polytope, or 0.95 of the way to the
    MAP (``init="map"``, as the authors' early notebook); small noise scales."""
    r, n = p.scores.shape[0], config.n
    centre = torch.full((r, n, n), 1.0 / n, dtype=_DTYPE)
    target = centre
    if config.init == "map":
        target = 0.05 * centre + 0.95 * permutation_matrix(p.map_perm, dtype=_DTYPE)
    if method == "stick_breaking":
        mean = stick_breaking_inverse(target, setting["tau"])
        return {"mean": mean, "rho": torch.full_like(mean, -3.0)}
    if method == "rounding":
        return {"log_m": target.log(), "rho": torch.zeros_like(target)}
    return {"log_alpha": target.log() - target.log().mean(dim=(-2, -1), keepdim=True)}


def _sample_x(
    method: str,
    params: Mapping[str, torch.Tensor],
    setting: Mapping[str, float],
    config: BirkhoffVIConfig,
    n_samples: int,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n_samples`` relaxed samples ``X (S, R, N, N)`` of the family and the part of the ELBO
    that is not the model: the entropy (per problem, ``(S, R)`` or ``(R,)``)."""
    tau = setting.get("tau", 1.0)
    if method == "stick_breaking":
        nu = _bounded(params["rho"], config.sb_noise_min, setting["noise_max"])
        mean = params["mean"]
        z = torch.randn((n_samples, *mean.shape), generator=generator, dtype=_DTYPE)
        x, log_det = stick_breaking(mean + nu * z, tau)
        return x, _gaussian_entropy(nu) + log_det
    if method == "rounding":
        v = _bounded(params["rho"], config.rounding_noise_min, setting["noise_max"])
        m = sinkhorn(params["log_m"], n_iters=config.rounding_sinkhorn_iters)
        z = torch.randn((n_samples, *m.shape), generator=generator, dtype=_DTYPE)
        psi = m + v * z
        hard = permutation_matrix(matching(psi), dtype=_DTYPE)
        n = m.shape[-1]
        return tau * psi + (1 - tau) * hard, _gaussian_entropy(v) + n * n * math.log(tau)
    log_alpha = params["log_alpha"]
    u = torch.rand((n_samples, *log_alpha.shape), generator=generator, dtype=_DTYPE)
    g = -torch.log(-torch.log(u.clamp(1e-300, 1 - 1e-16)))
    x = sinkhorn(log_alpha + g, tau=tau, n_iters=config.gs_sinkhorn_iters)
    kl = (log_alpha + torch.exp(-log_alpha) - 1).sum(dim=(-2, -1))  # KL(Gumbel(a)||Gumbel(0))
    return x, -kl


def _elbo(
    method: str,
    params: Mapping[str, torch.Tensor],
    setting: Mapping[str, float],
    p: Problems,
    config: BirkhoffVIConfig,
    n_samples: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """Monte Carlo estimate of each problem's relaxed ELBO: ``(R,)``."""
    x, rest = _sample_x(method, params, setting, config, n_samples, generator)
    model = _log_likelihood(x, p)
    if method != "gumbel_sinkhorn":  # the Gumbel-Sinkhorn ELBO puts its prior on the noise
        model = model + _log_prior(x, config.prior_eta)
    return (model + rest).mean(dim=0)


def fit_family(
    method: str,
    setting: Mapping[str, float],
    p: Problems,
    config: BirkhoffVIConfig,
    generator: torch.Generator,
) -> tuple[dict[str, torch.Tensor], list[float]]:
    """Fit one variational family to every problem of ``p`` at once (Adam on the sum of the
    problems' negative ELBOs: each problem's parameters get their own gradient and their own
    Adam statistics, as in separate fits). Returns the final parameters and the mean negative
    ELBO per iteration."""
    params = {k: v.clone().requires_grad_(True)
              for k, v in _init_params(method, setting, p, config).items()}  # fmt: skip
    opt = torch.optim.Adam(params.values(), lr=config.lr)
    steps = config.n_iters
    sched = None
    if config.lr_schedule == "cosine":
        sched = harness.cosine_schedule(opt, steps)
    losses = []
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        loss = -_elbo(method, params, setting, p, config, config.n_mc, generator).sum()
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        losses.append(float(loss.detach()) / p.scores.shape[0])
    return {k: v.detach() for k, v in params.items()}, losses


def histogram(perm: torch.Tensor) -> torch.Tensor:
    """Per-problem frequencies of sampled permutations: ``(S, R, N) -> (R, N!)`` float64."""
    s, r, n = perm.shape
    k = math.factorial(n)
    idx = permutation_rank(perm) + k * torch.arange(r).unsqueeze(0)
    return torch.bincount(idx.reshape(-1), minlength=r * k).reshape(r, k).double() / s


def _distance(q: torch.Tensor, posterior: torch.Tensor, kind: str) -> torch.Tensor:
    fn = hellinger_distance if kind == "hellinger" else bhattacharyya_distance
    return fn(q, posterior)


@torch.no_grad()
def _round_samples(
    method: str,
    params: Mapping[str, torch.Tensor],
    setting: Mapping[str, float],
    config: BirkhoffVIConfig,
    n_samples: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """``(S, R, N)`` rounded samples of a fitted family."""
    tau = setting.get("tau", 1.0)
    if method == "stick_breaking":
        nu = _bounded(params["rho"], config.sb_noise_min, setting["noise_max"])
        z = torch.randn((n_samples, *nu.shape), generator=generator, dtype=_DTYPE)
        return matching(stick_breaking(params["mean"] + nu * z, tau)[0])
    if method == "rounding":
        v = _bounded(params["rho"], config.rounding_noise_min, setting["noise_max"])
        m = sinkhorn(params["log_m"], n_iters=config.rounding_sinkhorn_iters)
        z = torch.randn((n_samples, *m.shape), generator=generator, dtype=_DTYPE)
        return matching(m + v * z)  # round(X) = round(psi)
    log_alpha = params["log_alpha"]
    u = torch.rand((n_samples, *log_alpha.shape), generator=generator, dtype=_DTYPE)
    # the matching of S((log_alpha + g) / tau) is the matching of log_alpha + g: the Sinkhorn
    # scalings add a constant to every matching's score
    return matching(log_alpha - torch.log(-torch.log(u.clamp(1e-300, 1 - 1e-16))))


def evaluate_family(
    method: str,
    params: Mapping[str, torch.Tensor],
    setting: Mapping[str, float],
    p: Problems,
    config: BirkhoffVIConfig,
    generator: torch.Generator,
) -> dict[str, list[float]]:
    """Per-problem ``distance`` (histogram of ``n_eval_samples`` rounded samples vs the exact
    posterior), ``elbo`` (``n_elbo_samples`` samples) and ``map_mass`` (the histogram's mass on
    the MAP matching)."""
    perm = _round_samples(method, params, setting, config, config.n_eval_samples, generator)
    q = histogram(perm)
    with torch.no_grad():
        elbo = _elbo(method, params, setting, p, config, config.n_elbo_samples, generator)
    map_idx = permutation_rank(p.map_perm)
    return {
        "distance": _distance(q, p.posterior, config.distance).tolist(),
        "elbo": elbo.tolist(),
        "map_mass": q.gather(-1, map_idx.unsqueeze(-1)).squeeze(-1).tolist(),
    }


# --------------------------------------------------------------------------- one cell


def _streams(seed: int, n_settings: int) -> dict[str, torch.Generator]:
    """A fitting and an evaluation stream per grid setting (``fit0``, ``eval0``, ...)."""
    names = tuple(f"{kind}{k}" for k in range(n_settings) for kind in ("fit", "eval"))
    return harness.generators(seed, names)


def _summary(per: Mapping[str, list[float]]) -> dict[str, float]:
    d = torch.tensor(per["distance"], dtype=_DTYPE)
    out = {"mean_distance": float(d.mean()), "n": len(d)}
    out["sd_distance"] = float(d.std()) if len(d) > 1 else math.nan
    out["se_distance"] = out["sd_distance"] / math.sqrt(len(d)) if len(d) > 1 else math.nan
    if "elbo" in per:
        out["mean_elbo"] = float(torch.tensor(per["elbo"], dtype=_DTYPE).mean())
    return out


def _evaluate_cell(
    config: BirkhoffVIConfig,
    p: Problems,
    params: Mapping[str, Mapping[str, torch.Tensor]] | None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The metrics of a cell (and, when ``params`` is ``None`` for a family, the fits: their
    parameters and learning curves). Returns ``(metrics, fitted)``."""
    settings = config.settings()
    gens = _streams(config.seed, len(settings))
    rows, fitted = [], {"params": {}, "losses": {}}
    for k, setting in enumerate(settings):
        if config.method in FAMILIES:
            if params is None:
                theta, losses = fit_family(config.method, setting, p, config, gens[f"fit{k}"])
                fitted["params"][str(k)] = theta
                fitted["losses"][str(k)] = losses
            else:
                theta = params[str(k)]
            per = evaluate_family(config.method, theta, setting, p, config, gens[f"eval{k}"])
        elif config.method == "mallows":
            model = Mallows(p.map_perm, setting["theta"])
            exact = _distance(model.probs(), p.posterior, config.distance)
            draws = model.sample_mcmc(config.n_eval_samples, n_steps=config.mallows_mcmc_steps,
                                      generator=gens[f"eval{k}"])  # fmt: skip
            sampled = _distance(histogram(draws), p.posterior, config.distance)
            per = {"distance": exact.tolist(), "distance_sampled": sampled.tolist()}
        else:  # exact posterior samples: the histogram floor
            idx = torch.multinomial(p.posterior, config.n_eval_samples, replacement=True,
                                    generator=gens[f"eval{k}"])  # fmt: skip
            draws = enumerate_permutations(config.n)[idx.T]
            per = {"distance": _distance(histogram(draws), p.posterior, config.distance).tolist()}
        row = {"setting": dict(setting), **_summary(per), **per}
        if "distance_sampled" in per:
            row["mean_distance_sampled"] = _summary({"distance": per["distance_sampled"]})[
                "mean_distance"]
        rows.append(row)
    means = [r["mean_distance"] for r in rows]
    metrics: dict[str, Any] = {"settings": rows, "best": int(min(range(len(rows)),
                                                              key=means.__getitem__))}
    if config.method in FAMILIES:
        elbos = [r["mean_elbo"] for r in rows]
        metrics["best_by_elbo"] = int(max(range(len(rows)), key=elbos.__getitem__))
    return metrics, fitted


def run_cell(config: BirkhoffVIConfig, *, keep_params: bool = False) -> dict[str, Any]:
    """Run one cell: draw its problems, fit (families) or evaluate (Mallows, exact samples)
    every grid setting, and score each problem. A JSON-ready record with ``metrics`` (per
    setting: the per-problem distances, their mean, sd and standard error, the ELBOs; the index
    of the ``best`` setting by mean distance and, for families, ``best_by_elbo``), ``train``
    (learning curves) and ``wall_s``; with ``keep_params`` also ``params`` (setting index ->
    fitted parameters)."""
    t0 = time.perf_counter()
    p = make_problems(config.n_reps, config.n, config.sigma, config.seed, config.centre_scale)
    metrics, fitted = _evaluate_cell(config, p, None)
    train = {}
    if fitted["losses"]:
        finals = [v[-1] for v in fitted["losses"].values()]
        train = {"steps": config.n_iters, "final_loss": sum(finals) / len(finals),
                 "loss_curves": {k: harness.learning_curve(v)
                                 for k, v in fitted["losses"].items()}}  # fmt: skip
    out = {"config": config.to_dict(), "metrics": metrics, "train": train,
           "wall_s": round(time.perf_counter() - t0, 2)}  # fmt: skip
    if keep_params and fitted["params"]:
        out["params"] = fitted["params"]
    return out


def recompute(config: BirkhoffVIConfig, artifacts: Mapping[str, Any]) -> dict[str, Any]:
    """A stored cell's metrics from its saved parameters (families) or from scratch (the
    others): the same problems, the same evaluation streams, the same numbers."""
    p = make_problems(config.n_reps, config.n, config.sigma, config.seed, config.centre_scale)
    params = artifacts.get("params.pt") if config.method in FAMILIES else None
    if config.method in FAMILIES and params is None:
        raise KeyError("a family's cell needs its params.pt artifact to be recomputed")
    return _evaluate_cell(config, p, params)[0]


# --------------------------------------------------------------------------- the grid


def _as_float_sigma(cell: Mapping[str, Any]) -> dict[str, Any]:
    """``--cell sigma=0.5`` arrives as a string: compare it as the float it names."""
    cell = dict(cell)
    if isinstance(cell.get("sigma"), str):
        cell["sigma"] = float(cell["sigma"])
    return cell


def cells(
    table: str = "table1",
    seeds: Sequence[int] = (0,),
    selection: Mapping[str, list] | None = None,
    only: Sequence[Mapping[str, Any]] = (),
    overrides: Mapping[str, Any] | None = None,
) -> list[tuple[dict, BirkhoffVIConfig]]:
    """The ``(cell, config)`` pairs of ``table`` in run order: the cheap methods (Mallows, the
    exact samples) first, then the families; small noise first within each."""
    spec = TABLES[table]
    selection = {k: ([float(x) for x in v] if k == "sigma" else list(v))
                 for k, v in (selection or {}).items() if k != "seed"}  # fmt: skip
    cheap = ("mallows", "exact_samples")
    order = [m for m in spec["methods"] if m in cheap] + [m for m in spec["methods"]
                                                          if m not in cheap]  # fmt: skip
    out = [({"method": m, "sigma": s, "seed": seed},
            BirkhoffVIConfig(method=m, sigma=s, seed=seed,
                             **(spec["protocol"] | dict(overrides or {}))))
           for seed in seeds for m in order for s in spec["sigmas"]]  # fmt: skip
    return harness.select_cells(out, selection, [_as_float_sigma(o) for o in only])


class BirkhoffVIExperiment(harness.Experiment):
    """The synthetic matching runner: :data:`TABLES` over the axes method, sigma and seed."""

    name, config_cls, axes, tables = "birkhoff_vi", BirkhoffVIConfig, AXES, TABLES

    def cells(self, table, seeds, selection, only, overrides):
        return cells(table, seeds, selection, only, overrides)

    def identity(self, config: BirkhoffVIConfig) -> dict:
        return config.to_dict()

    def table_meta(self, table: str) -> dict:
        spec = TABLES[table]
        return {"title": spec["title"], "protocol": spec["protocol"],
                "grid": {"method": list(spec["methods"]), "sigma": list(spec["sigmas"])}}

    def run_cell(self, config, *, checkpoint, progress, device):
        record = run_cell(config, keep_params=True)
        params = record.pop("params", None)
        return record | ({"artifacts": {"params.pt": params}} if params else {})

    def recompute(self, config: BirkhoffVIConfig, artifacts: dict) -> dict:
        return recompute(config, artifacts)

    def ci(self, *, seed=0, progress=False, device="cpu", **overrides):
        t0 = time.perf_counter()
        sigmas = overrides.pop("sigma", None)
        sigmas = SIGMAS if sigmas is None else (float(sigmas),)
        methods = overrides.pop("method", None)
        methods = METHODS if methods is None else (methods,)
        records = []
        for m in methods:
            for s in sigmas:
                config = BirkhoffVIConfig(**(_CI | {"method": m, "sigma": s, "seed": seed}
                                             | overrides))  # fmt: skip
                records.append({"cell": {"method": m, "sigma": s, "seed": seed}}
                               | run_cell(config))  # fmt: skip
        losses = [r["train"]["final_loss"] for r in records if r["train"]]
        return {
            "config": _CI | {"seed": seed} | overrides,
            "metrics": _ci_metrics(records),
            "train": {"steps": records[0]["config"].get("n_iters", 0) if losses else 0,
                      "final_loss": sum(losses) / len(losses) if losses else math.nan},
            "records": records,
            "wall_s": round(time.perf_counter() - t0, 2),
            "provenance": harness.provenance(seed=seed, mode="ci", device=device),
        }  # fmt: skip

    def ci_table(self, out: dict) -> str:
        paper = {(r["method"], r["sigma"]): r["paper"] for r in _paper_rows(None)}
        rows = []
        for label, by_sigma in out["metrics"].items():
            row = {"method": label}
            for s, v in by_sigma.items():
                ref = paper.get((label, float(s)))
                row[f"sigma={s}"] = f"{v:.2f}" + (f" ({ref:.2f})" if ref is not None else "")
            rows.append(row)
        cols = ["method", *[f"sigma={s}" for s in next(iter(out["metrics"].values()))]]
        return "ours (paper)\n" + harness.markdown_table(rows, cols)


def _label(method: str, setting: Mapping[str, float] | None = None) -> str:
    """The table's row name of a method (and Mallows setting)."""
    if method == "mallows":
        return f"Mallows (theta={setting['theta']:g})"
    return {"stick_breaking": "Stick-breaking", "rounding": "Rounding",
            "gumbel_sinkhorn": "Gumbel-Sinkhorn",
            "exact_samples": "Exact posterior, sampled"}[method]  # fmt: skip


def _rows_of(record: Mapping[str, Any], select: str = "best", mallows: str = "exact"):
    """``(label, setting row)`` pairs of a record: one per Mallows theta, else the chosen
    setting (``"best"`` by mean distance or ``"best_by_elbo"``)."""
    m, rows = record["cell"]["method"], record["metrics"]["settings"]
    if m == "mallows":
        key = "distance" if mallows == "exact" else "distance_sampled"
        return [(_label(m, r["setting"]), r[key]) for r in rows]
    chosen = rows[record["metrics"].get(select, record["metrics"]["best"])]
    return [(_label(m), chosen["distance"])]


def _ci_metrics(records: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for rec in records:
        for label, dist in _rows_of(rec):
            out.setdefault(label, {})[f"{rec['cell']['sigma']:g}"] = sum(dist) / len(dist)
    return out


def _paper_rows(paper: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """The paper's Table 1 as ``method, sigma, paper`` rows (transcribed numbers; the
    defaults below are used when no ``paper_tables.json`` is given)."""
    if paper is None:
        paper = {"variational_synthetic_matching_table1": {"rows": _PAPER_TABLE1}}
    rows = paper["variational_synthetic_matching_table1"]["rows"]
    return [{"method": r["method"], "sigma": float(r["observation_variance"].split("^")[0]),
             "paper": r["mean_bd"]} for r in rows]  # fmt: skip


# Table 1 of the paper (mean "Bhattacharyya distance", 200 repetitions), for the ci table.
_PAPER_TABLE1 = [
    {"method": m, "observation_variance": f"{s}^2", "mean_bd": v}
    for m, vals in (
        ("Stick-breaking", (0.09, 0.23, 0.41, 0.55)),
        ("Rounding", (0.06, 0.21, 0.32, 0.38)),
        ("Mallows (theta=0.1)", (0.93, 0.92, 0.89, 0.85)),
        ("Mallows (theta=0.5)", (0.51, 0.53, 0.61, 0.71)),
        ("Mallows (theta=2)", (0.23, 0.33, 0.53, 0.69)),
        ("Mallows (theta=5)", (0.08, 0.27, 0.54, 0.72)),
        ("Mallows (theta=10)", (0.08, 0.27, 0.54, 0.72)),
    )
    for s, v in zip((".1", ".25", ".5", ".75"), vals, strict=True)
]


def compare_table1(
    results: Mapping[str, Any] | None,
    paper: Mapping[str, Any] | None = None,
    *,
    select: str = "best",
    mallows: str = "exact",
) -> pd.DataFrame:
    """Table 1 beside ours: ``method, sigma, paper, ours, sd, n_seeds, gap, status, se,
    within_se``, one row per method and noise level (``n_seeds`` counts problems: every
    problem is one sample of the mean). ``status`` is the harness's (within one sd counts as
    met); ``within_se`` says whether the paper's number lies within our mean ± one standard
    error of the mean, or ours is better. ``select``: ``"best"`` (setting with the smallest
    mean distance) or ``"best_by_elbo"``; ``mallows``: ``"exact"`` (the exact Mallows law) or
    ``"sampled"`` (a histogram of MCMC samples, as the authors did). Rows the paper lacks
    (Mallows at theta = 1, Gumbel-Sinkhorn, the exact-sample floor) are ``"ours only"``."""
    if select not in ("best", "best_by_elbo"):
        raise ValueError(f"select must be 'best' or 'best_by_elbo', got {select!r}")
    if mallows not in ("exact", "sampled"):
        raise ValueError(f"mallows must be 'exact' or 'sampled', got {mallows!r}")
    ours = []
    for rec in (results or {}).get("cells", []):
        for label, dist in _rows_of(rec, select, mallows):
            ours += [{"method": label, "sigma": rec["cell"]["sigma"], "value": v,
                      "seed": (rec["cell"]["seed"], i)} for i, v in enumerate(dist)]  # fmt: skip
    table = harness.compare(_paper_rows(paper), ours, on=["method", "sigma"])
    table["se"] = table["sd"] / table["n_seeds"].clip(lower=1) ** 0.5
    table["within_se"] = [
        bool(ours_v <= p + 1e-12 or abs(ours_v - p) <= se) if p == p and ours_v == ours_v
        else None for p, ours_v, se in zip(table["paper"], table["ours"], table["se"], strict=True)
    ]  # fmt: skip
    return table


EXPERIMENT = BirkhoffVIExperiment()
store = EXPERIMENT.store
load_results = EXPERIMENT.load_results
run_table = EXPERIMENT.run_table
verify = EXPERIMENT.verify
main = EXPERIMENT.main


def run(
    mode: str = "ci",
    seed: int = 0,
    progress: bool = False,
    threads: int | None = 1,
    **overrides: Any,
) -> dict:
    """Run the experiment from Python (the notebook's entry point).

    ``mode="ci"``: every method at every noise level on a few problems with a small grid
    (seconds to a minute on one core); ``overrides`` change :class:`BirkhoffVIConfig` fields.
    Returns ``config``, ``metrics`` (row label -> sigma -> mean distance), ``records`` (each
    cell's full record), ``train``, ``wall_s`` and ``provenance``.
    ``mode="full"``: runs (or resumes) Table 1 (``overrides`` go to :func:`run_table`) and
    returns the results file's content.
    """
    if mode not in ("ci", "full"):
        raise ValueError(f"mode must be 'ci' or 'full', got {mode!r}")
    with harness.torch_threads(threads):
        if mode == "full":
            return run_table("table1", seeds=(seed,), progress=progress, **overrides)
        return EXPERIMENT.ci(seed=seed, progress=progress, **overrides)


if __name__ == "__main__":
    raise SystemExit(main())
