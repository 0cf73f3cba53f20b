"""Time OTT-JAX in its own process: ``python -m benchmarks.ott_worker IN.npz OUT.npz``.

XLA's CPU thread pool keeps spinning after each JAX call, and torch's OpenMP threads then wait
for cores: measured on the 2-core machine, permlib's forward went from 3 ms to 470 ms right
after an OTT call. So OTT-JAX is timed here, on the very same arrays (saved by the parent),
with the same warm-up and repetitions, while the parent waits; the plan and the gradient come
back for the agreement check.
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from benchmarks.peers import has, ott_method
from benchmarks.timing import time_rounds

__all__ = ["run_ott"]


def run_ott(
    x: torch.Tensor,
    w: torch.Tensor,
    n_iters: int,
    tau: float,
    reps: int,
    implicit: bool = False,
    stages: tuple[str, ...] = ("fwd", "fwdbwd"),
) -> dict | None:
    """Timings (``{stage: [seconds]}``) and outputs of OTT-JAX from a subprocess; None if absent.

    ``implicit`` selects OTT's implicit differentiation of the fixed point instead of unrolling.
    """
    import os
    import subprocess
    import tempfile
    from pathlib import Path

    if not (has("ott") and has("jax")):
        return None
    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as d:
        src, dst = Path(d) / "in.npz", Path(d) / "out.npz"
        np.savez(src, x=x.cpu().numpy(), w=w.cpu().numpy(), n_iters=n_iters, tau=tau, reps=reps,
                 implicit=implicit, stages=np.array(stages))
        env = {**os.environ, "PYTHONPATH": str(root)}
        cmd = [sys.executable, "-m", "benchmarks.ott_worker", str(src), str(dst)]
        subprocess.run(cmd, check=True, cwd=root, env=env, capture_output=True)
        out = np.load(dst)
        return {k: out[k] for k in out.files}


def main(src: str, dst: str) -> None:
    data = np.load(src)
    x, w = torch.from_numpy(data["x"]), torch.from_numpy(data["w"])
    implicit = bool(data["implicit"]) if "implicit" in data.files else False
    stages = [str(s) for s in data["stages"]] if "stages" in data.files else ["fwd", "fwdbwd"]
    m = ott_method(x, w, int(data["n_iters"]), float(data["tau"]), implicit=implicit)
    out = {}
    for stage in stages:
        f = getattr(m, stage)
        result = f()  # warm-up: compilation
        out[stage] = np.asarray(time_rounds(f, int(data["reps"])))
        out[stage + "_out"] = result
    np.savez(dst, **out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
