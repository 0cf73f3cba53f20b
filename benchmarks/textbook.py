"""The textbook baseline: the log-domain Sinkhorn loop exactly as the papers write it.

``L`` times: subtract the row log-sum-exp, then the column log-sum-exp (000_7091bfda3c1c82a1,
eq. 1, in the log domain). Every step rewrites the whole ``N x N`` matrix, and autograd stores
what each ``logsumexp`` needs, so memory grows by ``O(N^2)`` per iteration.
"""

from __future__ import annotations

import torch


def log_sinkhorn_loop(x: torch.Tensor, n_iters: int) -> torch.Tensor:
    """``(..., N, N) -> (..., N, N)``: ``log S^L(x)``, rows then columns, ``n_iters`` times."""
    for _ in range(n_iters):
        x = x - torch.logsumexp(x, dim=-1, keepdim=True)
        x = x - torch.logsumexp(x, dim=-2, keepdim=True)
    return x


def sinkhorn_loop(x: torch.Tensor, n_iters: int) -> torch.Tensor:
    """``exp`` of :func:`log_sinkhorn_loop`."""
    return log_sinkhorn_loop(x, n_iters).exp()
