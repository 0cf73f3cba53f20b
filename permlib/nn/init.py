"""Seeded initializations shared by the experiments' networks.

Both draw from an explicit ``torch.Generator`` (``None``: torch's global generator), so that a
network's initial weights depend on its seed only.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

__all__ = ["init_linear_", "torch_default_init_"]


@torch.no_grad()
def init_linear_(layers: Iterable[nn.Linear], scheme: str,
                 generator: torch.Generator | None = None) -> None:  # fmt: skip
    """Initialize affine layers in place.

    ``scheme``: ``"glorot"`` (Glorot-uniform weights in ``±sqrt(6 / (fan_in + fan_out))``, zero
    biases: TensorFlow's defaults, those of Mena et al.'s code) or ``"torch"`` (``nn.Linear``'s
    default: weights and biases uniform in ``±1/sqrt(fan_in)``).
    """
    if scheme not in ("glorot", "torch"):
        raise ValueError(f"init must be 'glorot' or 'torch', got {scheme!r}")
    for layer in layers:
        fan_in, fan_out = layer.in_features, layer.out_features
        if scheme == "glorot":
            bound = math.sqrt(6.0 / (fan_in + fan_out))
            layer.weight.uniform_(-bound, bound, generator=generator)
            layer.bias.zero_()
        else:
            bound = 1.0 / math.sqrt(fan_in)
            layer.weight.uniform_(-bound, bound, generator=generator)
            layer.bias.uniform_(-bound, bound, generator=generator)


@torch.no_grad()
def torch_default_init_(module: nn.Module, generator: torch.Generator | None = None) -> None:
    """Re-draw every ``Conv2d`` and ``Linear`` of ``module`` as PyTorch's default does (weights
    and biases uniform in ``±1/sqrt(fan_in)``), from ``generator``."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            bound = 1.0 / m.weight[0].numel() ** 0.5
            m.weight.uniform_(-bound, bound, generator=generator)
            m.bias.uniform_(-bound, bound, generator=generator)
