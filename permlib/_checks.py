"""Argument validation shared by every public function.

Each check raises ``TypeError`` (wrong kind of object or dtype) or ``ValueError`` (wrong shape or
value) with a message that names the argument and says what was wrong, so that bad input fails
loudly at the call instead of surfacing later as a NaN, a hang or a device-side assert.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

import numpy as np
import torch

__all__ = [
    "LOW_PRECISION",
    "check_finite",
    "check_float_matrix",
    "check_generator",
    "check_has_data",
    "check_partial_permutation",
    "check_permutation",
    "check_positive_int",
    "check_positive_real",
    "check_same_device",
    "check_same_shape",
    "check_tensor",
    "compute_float",
    "defers",
    "entry_mask",
    "extremes",
    "finite_range",
    "hall_violation",
    "infeasible_error",
    "item_mask",
    "nonfinite",
    "plain",
]

#: Floating dtypes that permlib computes in float32, returning results in their own dtype.
LOW_PRECISION = (torch.float16, torch.bfloat16)


def compute_float(x: torch.Tensor) -> torch.Tensor:
    """``x`` in the dtype it is computed in: float32 for :data:`LOW_PRECISION`, else ``x``."""
    return x.float() if x.dtype in LOW_PRECISION else x



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
    """Check a floating ``(..., N, M)`` tensor (``N == M`` when ``square``), finite by default.

    ``N`` and ``M`` must be at least 1 (a batch may be empty)."""
    x = check_tensor(x, name)
    if not x.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype, got {x.dtype}")
    if x.dim() < 2:
        raise ValueError(
            f"{name} must have at least 2 dimensions (..., N, {'N' if square else 'M'}), got "
            f"shape {tuple(x.shape)}"
        )
    if square and x.shape[-1] != x.shape[-2]:
        raise ValueError(
            f"{name} must be square in its last two dimensions, got shape {tuple(x.shape)}"
        )
    if x.shape[-1] == 0 or x.shape[-2] == 0:
        what = "N >= 1" if square else "N >= 1 rows and M >= 1 columns"
        raise ValueError(f"{name} must have {what}, got shape {tuple(x.shape)}")
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


def plain(t: torch.Tensor) -> torch.Tensor:
    """The plain tensor under every ``torch.func`` wrapper of ``t`` (under ``vmap`` it holds the
    values of all the mapped items): what a host check can read. The mapped dimensions are
    moved to the front (outermost ``vmap`` first), so that the plain tensors of several
    arguments line up (broadcasting from the right) whatever their ``in_dims``."""
    functorch = torch._C._functorch
    while functorch.is_functorch_wrapped_tensor(t):
        bdim = functorch.maybe_get_bdim(t) if functorch.is_batchedtensor(t) else None
        t = functorch.get_unwrapped(t)
        if bdim is not None and bdim > 0:
            t = t.movedim(bdim, 0)
    return t


def _check_sizes(value: object, name: str, limit: int, batch: torch.Size, device) -> torch.Tensor:
    """``n_rows``/``n_cols``: an int or an integer tensor broadcastable to ``batch`` holding
    sizes ``0..limit``; returned as an int64 tensor on ``device``."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int or an integer tensor, got bool")
    if isinstance(value, Integral):
        value = torch.tensor(int(value), device=device)
    elif isinstance(value, torch.Tensor):
        if value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
            raise TypeError(f"{name} must have an integer dtype, got {value.dtype}")
        if value.device != device:
            raise ValueError(f"{name} is on {value.device}, the scores on {device}")
    else:
        raise TypeError(f"{name} must be an int or an integer tensor, got {type(value).__name__}")
    try:
        fits = torch.broadcast_shapes(tuple(value.shape), tuple(batch)) == tuple(batch)
    except RuntimeError:
        fits = False
    if not fits:
        raise ValueError(
            f"{name} must have the batch shape {tuple(batch)} (or broadcast to it), got "
            f"{tuple(value.shape)}"
        )
    values = plain(value)
    if values.device.type != "meta" and values.numel():
        lo, hi = int(values.min()), int(values.max())
        if lo < 0 or hi > limit:
            raise ValueError(f"{name} must hold sizes in 0..{limit}, got values in {lo}..{hi}")
    return value.long()


def entry_mask(
    x: torch.Tensor,
    name: str,
    n_rows: object = None,
    n_cols: object = None,
    mask: object = None,
) -> torch.Tensor | None:
    """The entries of a ``(..., N, M)`` tensor ``x`` that exist, as a bool ``(..., N, M)`` mask
    (an expanded view), or ``None`` when every entry does (all three arguments ``None``).

    ``n_rows``/``n_cols`` (an int, or integer tensors broadcastable to the batch shape
    ``x.shape[:-2]``): item ``b`` has the rows ``0 .. n_rows[b] - 1`` and the columns
    ``0 .. n_cols[b] - 1``; the rest is padding. ``mask`` (bool, broadcastable to ``x.shape``):
    ``True`` where an entry exists. Given together they are combined (an entry exists where
    both say so). Errors name the argument (``name`` is ``x``'s).
    """
    if n_rows is None and n_cols is None and mask is None:
        return None
    batch, (n, m) = x.shape[:-2], x.shape[-2:]
    out = None
    if n_rows is not None:
        rows = _check_sizes(n_rows, "n_rows", n, batch, x.device)
        out = torch.arange(n, device=x.device) < rows.unsqueeze(-1)  # (..., N)
        out = out.unsqueeze(-1)
    if n_cols is not None:
        cols = _check_sizes(n_cols, "n_cols", m, batch, x.device)
        col_ok = (torch.arange(m, device=x.device) < cols.unsqueeze(-1)).unsqueeze(-2)
        out = col_ok if out is None else out & col_ok
    if mask is not None:
        mask = check_tensor(mask, "mask")
        if mask.dtype != torch.bool:
            raise TypeError(f"mask must be a bool tensor, got {mask.dtype}")
        if mask.device != x.device:
            raise ValueError(f"mask is on {mask.device}, {name} on {x.device}")
        try:
            fits = torch.broadcast_shapes(tuple(mask.shape), tuple(x.shape)) == tuple(x.shape)
        except RuntimeError:
            fits = False
        if mask.dim() < 2 or not fits:
            raise ValueError(
                f"mask must have {name}'s shape {tuple(x.shape)} (or broadcast to it), got "
                f"{tuple(mask.shape)}"
            )
        out = mask if out is None else out & mask
    return out.expand(x.shape)


def hall_violation(allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Why the rows of a bipartite graph cannot all be matched, or ``None`` when they can.

    ``allowed``: ``(R, C)`` bool, ``allowed[i, j]`` when row ``i`` may take column ``j``. When no
    matching covers every row, returns ``(rows, cols)``: a set of rows and every column any of
    them may take, with fewer columns than rows (Hall's theorem: such a set exists exactly when
    no matching covers the rows). Found from a maximum matching (scipy's Hopcroft-Karp) and the
    rows and columns reachable from its unmatched rows by alternating paths.
    """
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import maximum_bipartite_matching

    r, c = allowed.shape
    if r == 0:
        return None
    graph = csr_matrix(allowed.astype(np.int8))
    col_of = maximum_bipartite_matching(graph, perm_type="column")  # row -> column or -1
    free = np.flatnonzero(col_of < 0)
    if not free.size:
        return None
    row_of = np.full(c, -1)
    matched = np.flatnonzero(col_of >= 0)
    row_of[col_of[matched]] = matched
    seen_rows = np.zeros(r, dtype=bool)
    seen_cols = np.zeros(c, dtype=bool)
    seen_rows[free] = True
    frontier = free
    while frontier.size:
        cols = np.flatnonzero(allowed[frontier].any(axis=0) & ~seen_cols)
        seen_cols[cols] = True
        nxt = row_of[cols]  # every reached column is matched (else an augmenting path exists)
        nxt = nxt[(nxt >= 0) & ~seen_rows[np.maximum(nxt, 0)]]
        seen_rows[nxt] = True
        frontier = nxt
    return np.flatnonzero(seen_rows), np.flatnonzero(seen_cols)


def _listed(idx: np.ndarray, limit: int = 12) -> str:
    shown = ", ".join(str(int(i)) for i in idx[:limit])
    return f"[{shown}{', ...' if idx.size > limit else ''}]"


def infeasible_error(
    name: str,
    item: tuple[int, ...],
    rows: np.ndarray,
    cols: np.ndarray,
    transposed: bool,
) -> ValueError:
    """The ``ValueError`` for an assignment problem without a feasible solution.

    ``rows``/``cols`` are a Hall violator of :func:`hall_violation` in the frame where the
    rows must all be assigned; ``transposed`` says they are the problem's columns (``N > M``).
    ``item`` is the batch index (``()`` without batch dimensions).
    """
    side, other = ("column", "row") if transposed else ("row", "column")
    where = f" for batch item {item}" if item else ""
    need = "every column must be assigned when N > M" if transposed else (
        "every row must be assigned when N <= M"
    )

    def count(k: int, word: str) -> str:
        return f"{k} {word}{'' if k == 1 else 's'}"

    return ValueError(
        f"{name} has no feasible assignment{where}: {side}s {_listed(rows)} can only be "
        f"assigned to {other}s {_listed(cols)} ({count(len(rows), side)} for "
        f"{count(len(cols), other)}; {need}, and forbidden pairs (-inf scores, +inf costs, "
        "False in mask) cannot be used)"
    )


def check_partial_permutation(perm: object, name: str, m: int) -> torch.Tensor:
    """Check an integer ``(..., N)`` tensor whose last axis is an injective partial map from the
    ``N`` rows to the columns ``0..m-1``: entries in ``-1 .. m-1`` (``-1``: the row is not
    assigned), the assigned ones distinct. Returns ``perm`` unchanged."""
    perm = check_tensor(perm, name)
    if perm.is_floating_point() or perm.is_complex() or perm.dtype == torch.bool:
        raise TypeError(f"{name} must have an integer dtype, got {perm.dtype}")
    m = check_positive_int(m, "m")
    if perm.dim() < 1 or perm.shape[-1] == 0:
        raise ValueError(f"{name} must have shape (..., N) with N >= 1, got {tuple(perm.shape)}")
    if m - 1 > torch.iinfo(perm.dtype).max:
        raise ValueError(
            f"{name} has dtype {perm.dtype}, which cannot hold the indices 0..{m - 1}; use int64"
        )
    if perm.device.type == "meta" or not perm.numel():
        return perm
    p = plain(perm).long()
    if bool(((p < -1) | (p >= m)).any()):
        raise ValueError(f"{name} must hold columns in 0..{m - 1} or -1 (unassigned), got "
                         f"values in {int(p.min())}..{int(p.max())}")
    s = p.sort(dim=-1).values
    if bool(((s[..., 1:] == s[..., :-1]) & (s[..., 1:] >= 0)).any()):
        raise ValueError(f"{name} assigns a column to more than one row")
    return perm


def item_mask(
    perm: torch.Tensor, name: str, n_rows: object = None, mask: object = None
) -> torch.Tensor | None:
    """The items of a ``(..., N)`` batch of (partial) permutations that count, as a bool
    ``(..., N)`` mask (an expanded view), or ``None`` when all do.

    ``n_rows`` (an int or an integer tensor broadcastable to the batch shape ``perm.shape[:-1]``):
    item ``i`` of batch entry ``b`` counts when ``i < n_rows[b]``; ``mask`` (bool, broadcastable
    to ``perm.shape``): ``True`` where an item counts. Given together they are combined.
    """
    if n_rows is None and mask is None:
        return None
    batch, n = perm.shape[:-1], perm.shape[-1]
    out = None
    if n_rows is not None:
        rows = _check_sizes(n_rows, "n_rows", n, batch, perm.device)
        out = torch.arange(n, device=perm.device) < rows.unsqueeze(-1)
    if mask is not None:
        mask = check_tensor(mask, "mask")
        if mask.dtype != torch.bool:
            raise TypeError(f"mask must be a bool tensor, got {mask.dtype}")
        if mask.device != perm.device:
            raise ValueError(f"mask is on {mask.device}, {name} on {perm.device}")
        try:
            fits = torch.broadcast_shapes(tuple(mask.shape), tuple(perm.shape)) == perm.shape
        except RuntimeError:
            fits = False
        if mask.dim() < 1 or not fits:
            raise ValueError(
                f"mask must have {name}'s shape {tuple(perm.shape)} (or broadcast to it), got "
                f"{tuple(mask.shape)}"
            )
        out = mask if out is None else out & mask
    return out.expand(perm.shape)
