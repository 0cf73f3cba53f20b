"""Sinkhorn and matching implementations under test, each behind the same small interface.

Every Sinkhorn method gets the same ``(B, N, N)`` scores ``x``, weights ``w`` (loss
``sum(P * w)``), ``n_iters`` and ``tau`` and provides ``fwd()`` (returns ``P`` as a numpy
array) and ``fwdbwd()`` (returns ``dloss/dx`` as a numpy array). ``last`` says which
normalization comes last in its iteration: ``"cols"`` as in permlib and the textbook loop,
``"rows"`` for POT and OTT-JAX, whose results match the loop run on ``x^T``, transposed.
A peer that is not installed is left out, with the reason, by :func:`sinkhorn_methods`.
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

import permlib
from permlib.testing import sinkhorn_loop


@dataclass
class Method:
    fwd: Callable[[], np.ndarray]
    fwdbwd: Callable[[], np.ndarray]
    last: str = "cols"


def _torch_method(plan: Callable[[torch.Tensor], torch.Tensor], x, w, sync) -> Method:
    def fwd():
        with torch.no_grad():
            p = plan(x)
        sync()
        return p

    def fwdbwd():
        xg = x.detach().requires_grad_()
        (g,) = torch.autograd.grad((plan(xg) * w).sum(), xg)
        sync()
        return g

    return Method(fwd, fwdbwd)


def has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _pygmtools_plan(n_iters: int, tau: float):
    import pygmtools

    pygmtools.set_backend("pytorch")
    # max_iter counts half-steps (a row or a column normalization); rows come first
    return lambda t: pygmtools.sinkhorn(t, max_iter=2 * n_iters, tau=tau, backend="pytorch")


def _pot_plan(n_iters: int, tau: float):
    import ot

    def plan(t: torch.Tensor) -> torch.Tensor:
        n = t.shape[-1]
        marg = torch.full((n,), 1.0 / n, dtype=t.dtype, device=t.device)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "did not converge": we ask for exactly n_iters
            plans = [
                ot.bregman.sinkhorn_log(
                    marg, marg, -ti, tau, numItermax=n_iters, stopThr=0.0, warn=False
                )
                for ti in t
            ]
        return torch.stack(plans) * n

    return plan


def ott_method(x: torch.Tensor, w: torch.Tensor, n_iters: int, tau: float, implicit: bool):
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    from ott.geometry import geometry
    from ott.problems.linear import linear_problem
    from ott.solvers.linear import implicit_differentiation as imp
    from ott.solvers.linear import sinkhorn

    def plan(xi):
        geom = geometry.Geometry(cost_matrix=-xi, epsilon=tau)
        prob = linear_problem.LinearProblem(geom)
        solver = sinkhorn.Sinkhorn(
            min_iterations=n_iters,
            max_iterations=n_iters,
            inner_iterations=n_iters,
            threshold=0.0,
            implicit_diff=imp.ImplicitDiff() if implicit else None,
        )
        return solver(prob).matrix * xi.shape[-1]

    batched = jax.vmap(plan)
    fwd_j = jax.jit(batched)
    grad_j = jax.jit(jax.grad(lambda xi, wi: jnp.sum(batched(xi) * wi)))
    xj, wj = jnp.asarray(x.cpu().numpy()), jnp.asarray(w.cpu().numpy())
    return Method(
        lambda: np.asarray(fwd_j(xj).block_until_ready()),
        lambda: np.asarray(grad_j(xj, wj).block_until_ready()),
        last="rows",
    )


def sinkhorn_methods(
    x: torch.Tensor,
    w: torch.Tensor,
    n_iters: int,
    tau: float,
    peers: bool = True,
    skip: dict[str, str] | None = None,
) -> tuple[dict[str, Method], dict[str, str]]:
    """The methods to time on ``x`` (and its device), and the skipped ones with the reason.

    ``skip`` maps peers to leave out to the reason to report (e.g. too slow for the mode).
    """
    skip = skip or {}
    cuda = x.device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    methods = {
        "permlib": _torch_method(lambda t: permlib.sinkhorn(t, tau, n_iters), x, w, sync),
        "textbook loop": _torch_method(lambda t: sinkhorn_loop(t / tau, n_iters), x, w, sync),
    }
    skipped: dict[str, str] = {}
    if not peers:
        return methods, skipped
    skipped.update(skip)
    if "pygmtools" in skip:
        pass
    elif has("pygmtools"):
        methods["pygmtools"] = _torch_method(_pygmtools_plan(n_iters, tau), x, w, sync)
    else:
        skipped["pygmtools"] = "not installed (pip install '.[bench]')"
    if "POT" in skip:
        pass
    elif has("ot"):
        pot = _torch_method(_pot_plan(n_iters, tau), x, w, sync)
        pot.last = "rows"
        methods["POT"] = pot
    else:
        skipped["POT"] = "not installed (pip install '.[bench]')"
    if "OTT-JAX" in skip:
        pass
    elif cuda:
        skipped["OTT-JAX"] = "CPU-only jax here; not run on CUDA inputs"
    elif has("ott") and has("jax"):
        try:
            methods["OTT-JAX"] = ott_method(x, w, n_iters, tau, implicit=False)
        except Exception as err:  # noqa: BLE001 - a broken optional peer is reported, not fatal
            skipped["OTT-JAX"] = f"failed to set up: {err!r}"
    else:
        skipped["OTT-JAX"] = "not installed (pip install '.[bench]')"
    return methods, skipped


def as_numpy(t) -> np.ndarray:
    if isinstance(t, torch.Tensor):
        return t.detach().cpu().numpy()
    return np.asarray(t)


def matching_methods(scores: torch.Tensor) -> tuple[dict[str, Callable[[], np.ndarray]], dict]:
    """Batched maximum-score matching, each returning a ``(B, N)`` int array of columns."""
    import lap
    from scipy.optimize import linear_sum_assignment

    s = scores.cpu().numpy()

    def scipy_loop():
        return np.stack([linear_sum_assignment(m, maximize=True)[1] for m in s])

    def lapx_jvr():  # the user's code: negate (float64 as most do), solve, stack
        return np.stack(lap.lapjvr_batch(-s.astype(np.float64), return_cost=False)[1])

    def lapx_jvr_native():  # keeps the scores' dtype (float32 here)
        return np.stack(lap.lapjvr_batch(-s, return_cost=False)[1])

    def lapx_jvs():
        return np.stack(lap.lapjvs_batch(-s, return_cost=False)[1])

    return {
        "permlib": lambda: permlib.matching(scores).numpy(),
        "scipy loop": scipy_loop,
        "lapx jvr f64": lapx_jvr,
        "lapx jvr f32": lapx_jvr_native,
        "lapx jvs": lapx_jvs,
    }, {}
