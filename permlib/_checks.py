"""Argument validation shared by every public function.

Each check raises ``TypeError`` (wrong kind of object or dtype) or ``ValueError`` (wrong shape or
value) with a message that names the argument and says what was wrong, so that bad input fails
loudly at the call instead of surfacing later as a NaN, a hang or a device-side assert.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

import torch

__all__ = [
    "check_finite",
    "check_float_matrix",
    "check_generator",
    "check_has_data",
    "check_permutation",
    "check_positive_int",
    "check_positive_real",
    "check_same_device",
    "check_same_shape",
    "check_tensor",
    "defers",
    "extremes",
    "finite_range",
    "nonfinite",
]


def check_tensor(x: object, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    return x


def extremes(x: torch.Tensor) -> torch.Tensor:
    """``(2,)`` tensor ``[min, max]`` of a floating tensor, on its device, without a host read.

    One fused reduction that makes no temporaries (``aminmax`` propagates NaN, and an infinite
    entry makes one of the two infinite), several times cheaper than ``isfinite(x).all()`` on
    large tensors. Device code (CUDA) can fold this into one combined check per call instead of
    synchronizing here; :func:`finite_range` reads it on the host. Empty tensors give zeros.
    """
    if not x.numel():
        return torch.zeros(2, dtype=x.dtype, device=x.device)
    lo, hi = x.detach().aminmax()
    return torch.stack([lo, hi])


def defers(device: torch.device) -> bool:
    """Whether calls on ``device`` gather their host checks into one deferred read (CUDA, where
    each read is a synchronization) instead of checking up front (CPU, where a read is free).

    The pattern: compute :func:`nonfinite` (or :func:`extremes`) flags on the device, do the
    work, read the flags once at the end (with whatever else the call reads anyway), and on a
    failed flag redo the eager host checks (:func:`finite_range`), which raise the same errors,
    naming the argument, as on the CPU.
    """
    return device.type == "cuda"


def nonfinite(*tensors: torch.Tensor) -> torch.Tensor:
    """0-d bool tensor on the first tensor's device, true when any entry of any floating tensor
    is NaN or +-inf; computed from :func:`extremes` (one fused reduction each), not read."""
    flags = [~torch.isfinite(extremes(t)).all() for t in tensors]
    out = flags[0]
    for f in flags[1:]:
        out = out | f.to(out.device)
    return out


def finite_range(x: torch.Tensor, name: str) -> tuple[float, float]:
    """``(min, max)`` of a floating tensor, rejecting NaN and +-inf entries.

    :func:`extremes` read on the host (one transfer; on CUDA a synchronization, which
    :func:`permlib.log_sinkhorn` avoids by deferring its checks). Empty and meta tensors give
    ``(0.0, 0.0)``. The message follows scipy's wording.
    """
    if x.device.type == "meta" or not x.numel():  # nothing to inspect
        return 0.0, 0.0
    lo, hi = extremes(x).tolist()
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"{name} contains invalid numeric entries (NaN or inf)")
    return lo, hi


def check_finite(x: torch.Tensor, name: str) -> None:
    """Reject NaN and +-inf entries (see :func:`finite_range`)."""
    finite_range(x, name)


def check_float_matrix(
    x: object, name: str, *, square: bool = True, finite: bool = True
) -> torch.Tensor:
    """Check a floating ``(..., N, M)`` tensor (``N == M`` when ``square``), finite by default."""
    x = check_tensor(x, name)
    if not x.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype, got {x.dtype}")
    if x.dim() < 2:
        raise ValueError(
            f"{name} must have at least 2 dimensions (..., N, N), got shape {tuple(x.shape)}"
        )
    if square and x.shape[-1] != x.shape[-2]:
        raise ValueError(
            f"{name} must be square in its last two dimensions, got shape {tuple(x.shape)}"
        )
    if x.shape[-1] == 0:
        raise ValueError(f"{name} must have N >= 1, got shape {tuple(x.shape)}")
    if finite:
        check_finite(x, name)
    return x


def check_positive_real(value: object, name: str) -> float:
    """A finite real number > 0 (bools are rejected); a one-element tensor counts as its value
    (read on the host)."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise TypeError(
                f"{name} must be a real number or a one-element tensor, got a tensor of shape "
                f"{tuple(value.shape)}"
            )
        if value.is_complex() or value.dtype == torch.bool:
            raise TypeError(f"{name} must be a real number, got a {value.dtype} tensor")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    return value


def check_positive_int(value: object, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_same_device(**tensors: torch.Tensor) -> None:
    devices = {name: t.device for name, t in tensors.items()}
    if len(set(devices.values())) > 1:
        listed = ", ".join(f"{name} on {dev}" for name, dev in devices.items())
        raise ValueError(f"tensors must be on the same device, got {listed}")


def check_same_shape(**tensors: torch.Tensor) -> None:
    """Two or more tensors of one shape, e.g. ``check_same_shape(pred=p, true=t)``."""
    shapes = [tuple(t.shape) for t in tensors.values()]
    if len(set(shapes)) > 1:
        names = " and ".join(tensors)
        listed = " and ".join(str(s) for s in shapes)
        raise ValueError(f"{names} must have the same shape, got {listed}")


def check_permutation(perm: object, name: str) -> torch.Tensor:
    """Check an integer tensor ``(..., N)`` whose last axis is a permutation of ``0..N-1``.

    Every integer dtype is accepted, signed or unsigned (e.g. ``uint8`` from numpy), as long as
    it can hold ``N - 1``; the callers compute in int64 (``perm.long()``), never in the
    input's dtype, where pairwise differences would wrap around. Returns ``perm`` unchanged.
    """
    perm = check_tensor(perm, name)
    if perm.is_floating_point() or perm.is_complex() or perm.dtype == torch.bool:
        raise TypeError(f"{name} must have an integer dtype, got {perm.dtype}")
    if perm.dim() < 1 or perm.shape[-1] == 0:
        raise ValueError(f"{name} must have shape (..., N) with N >= 1, got {tuple(perm.shape)}")
    n = perm.shape[-1]
    if n - 1 > torch.iinfo(perm.dtype).max:
        raise ValueError(
            f"{name} has dtype {perm.dtype}, which cannot hold the indices 0..{n - 1}; use int64"
        )
    if perm.device.type == "meta":
        return perm
    expected = torch.arange(n, device=perm.device)
    if not bool((perm.long().sort(dim=-1).values == expected).all()):
        raise ValueError(f"{name} must hold a permutation of 0..{n - 1} along its last dimension")
    return perm


def check_generator(
    generator: object,
    device: torch.device | str | None,
    what: str = "device",
    name: str = "generator",
) -> torch.Generator | None:
    """``None`` or a ``torch.Generator`` on ``device`` (any device when ``device`` is ``None``).

    ``what`` names the tensor or argument drawn for in the message (e.g. ``"log_alpha"``).

    A generator on another device than the tensor it draws for fails here, naming both, rather
    than inside ``torch.rand`` (and an object of another type, rather than with an
    ``AttributeError`` on ``.device``).
    """
    if generator is None:
        return None
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"{name} must be a torch.Generator or None, got {type(generator).__name__}")
    if device is not None:
        device = torch.device(device)
        gen_device = generator.device
        same = gen_device.type == device.type and (
            gen_device.index is None or device.index is None or gen_device.index == device.index
        )
        if not same:
            raise ValueError(
                f"{name} is on {gen_device}, {what} on {device}: they must be on the same device"
            )
    return generator


def check_has_data(x: torch.Tensor, name: str, what: str) -> None:
    """Reject a meta tensor (shape only, no values) where ``what`` needs the values."""
    if x.is_meta:  # about 10x cheaper than x.device.type
        raise ValueError(
            f"{name} is a meta tensor (a shape without values): {what} needs its values"
        )
