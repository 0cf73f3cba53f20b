"""Same-run speed ratio of the working tree's permlib against a git revision of it.

``python -m benchmarks.same_run --ref HEAD --what matching`` (or ``sinkhorn``) times the square
fast paths of the two versions in one process, in interleaved rounds (:func:`benchmarks.timing.
interleaved`), and prints the minimum of the rounds of each and their ratio (working tree /
reference; 1.0 is unchanged, below 1 faster). The reference is the ``permlib/`` tree of ``--ref``
exported with ``git archive`` into a temporary folder and imported under the name
``permlib_ref`` (its ``permlib`` imports renamed), so both versions share the interpreter, its
thread pools and the machine's load of the moment: on a shared machine only such ratios are
meaningful, never times taken minutes apart.

It also checks that the two versions give the same result on every input timed (equal
permutations for matching; bit-for-bit equal plans and gradients for sinkhorn), so a speed
ratio is never reported for a path whose output changed.
"""

from __future__ import annotations

import argparse
import importlib
import io
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
import warnings
from pathlib import Path

import torch

from benchmarks.timing import interleaved

__all__ = ["load_reference", "main"]

_MATCHING_CASES = [(1024, 9), (1024, 36), (256, 100), (16, 500)]
_SINKHORN_CASES = [(256, 16), (64, 64), (16, 200)]


def load_reference(rev: str, repo: Path) -> object:
    """The ``permlib`` package of git revision ``rev`` of ``repo``, imported as ``permlib_ref``."""
    tmp = Path(tempfile.mkdtemp(prefix="permlib_ref_"))
    blob = subprocess.run(
        ["git", "archive", rev, "permlib"], cwd=repo, check=True, capture_output=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        tar.extractall(tmp, filter="data")
    src = tmp / "permlib"
    dst = tmp / "permlib_ref"
    src.rename(dst)
    pattern = re.compile(r"\bpermlib(?=[.\s])")
    for path in dst.rglob("*.py"):
        text = path.read_text()
        # only import statements: "from permlib.x import", "import permlib", "permlib.x" in them
        lines = [
            pattern.sub("permlib_ref", line) if re.match(r"\s*(from|import)\s+permlib", line)
            else line
            for line in text.splitlines(keepends=True)
        ]
        path.write_text("".join(lines))
    sys.path.insert(0, str(tmp))
    return importlib.import_module("permlib_ref")


def _report(name: str, times: dict[str, list[float]]) -> float:
    """Print the min of the rounds of each version and their ratio (and the medians' ratio, a
    check on a single lucky round); returns the ratio of the minima."""
    new, ref = min(times["new"]), min(times["ref"])
    ratio = new / ref
    med = statistics.median(times["new"]) / statistics.median(times["ref"])
    print(
        f"{name:>26}: new {new * 1e3:9.3f} ms  ref {ref * 1e3:9.3f} ms  ratio {ratio:.3f}"
        f"  (medians {med:.3f})"
    )
    return ratio


def bench_matching(ref: object, reps: int) -> list[float]:
    import permlib

    g = torch.Generator().manual_seed(0)
    ratios = []
    for b, n in _MATCHING_CASES:
        x = torch.randn(b, n, n, generator=g)
        if not torch.equal(permlib.matching(x), ref.matching(x)):
            raise AssertionError(f"matching changed its result at B={b}, N={n}")
        calls = {"new": lambda x=x: permlib.matching(x), "ref": lambda x=x: ref.matching(x)}
        ratios.append(_report(f"matching {b}x{n}^2", interleaved(calls, reps)))
    return ratios


def bench_sinkhorn(ref: object, reps: int) -> list[float]:
    import permlib

    for category in (permlib.ConvergenceWarning, ref.ConvergenceWarning):  # tol=1e-4, 30 its
        warnings.simplefilter("ignore", category)
    g = torch.Generator().manual_seed(0)
    ratios = []
    for b, n in _SINKHORN_CASES:
        x = torch.randn(b, n, n, generator=g)
        for tol, backward in ((None, False), (1e-4, False), (None, True)):
            def run(mod: object, x=x, tol=tol, backward=backward) -> torch.Tensor:
                xi = x.clone().requires_grad_(backward)
                p = mod.sinkhorn(xi, tau=0.5, n_iters=30, tol=tol)
                if backward:
                    p.pow(2).sum().backward()
                    return xi.grad
                return p

            if not torch.equal(run(permlib), run(ref)):
                raise AssertionError(f"sinkhorn changed its result at B={b}, N={n}, tol={tol}")
            label = f"sinkhorn {b}x{n}^2" + (" tol" if tol else "") + (" +bwd" if backward else "")
            calls = {"new": lambda run=run: run(permlib), "ref": lambda run=run: run(ref)}
            ratios.append(_report(label, interleaved(calls, reps)))
    return ratios


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", default="HEAD", help="git revision to compare against")
    parser.add_argument("--what", choices=("matching", "sinkhorn"), default="matching")
    parser.add_argument("--reps", type=int, default=30, help="interleaved rounds per case")
    parser.add_argument(
        "--threads", type=int, default=0,
        help="torch threads (0: torch's default); 1 steadies the ratios on a loaded machine",
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    repo = Path.cwd()
    ref = load_reference(args.ref, repo)
    bench = bench_matching if args.what == "matching" else bench_sinkhorn
    ratios = bench(ref, args.reps)
    print(f"geometric mean ratio: {torch.tensor(ratios).log().mean().exp().item():.3f}")


if __name__ == "__main__":
    main()
