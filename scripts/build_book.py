"""Build the book "Learning Permutations": execute the notebooks, then render the HTML.

Steps (all output under ``_build/``, nothing in the source tree is modified):

1. Stage ``_config.yml``, ``_toc.yml`` and ``book/`` into ``_build/src/``.
2. Execute every ``notebooks/*.md`` (jupytext MyST) with papermill, injecting
   ``mode`` into the cell tagged ``parameters``; the executed notebook is
   written to ``_build/src/notebooks/<name>.ipynb``. A notebook is re-executed
   only when its source, the mode or a file of ``permlib/`` changed (a stamp
   file records the hash); a failing cell fails the build, and the partial
   notebook is kept as ``_build/failed/<name>.ipynb``.
3. ``jupyter-book build _build/src --path-output . -W -n --keep-going`` writes
   ``_build/html`` (warnings are errors). Jupyter Book does not re-execute.

Usage: ``python scripts/build_book.py [--mode ci|full] [--force] [--no-html]``
(``make book`` and ``make book MODE=full`` call it).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "_build"
SRC = BUILD / "src"
NOTEBOOKS = ROOT / "notebooks"
# Per-cell limit for papermill; a whole notebook in mode="ci" should take a minute or two.
CELL_TIMEOUT_S = 1800


def _digest(paths: list[Path], extra: str = "") -> str:
    h = hashlib.sha256(extra.encode())
    for p in sorted(paths):
        h.update(str(p.relative_to(ROOT)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def _sync_file(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` only if the content differs (keeps Sphinx incremental)."""
    if dst.exists() and dst.read_bytes() == src.read_bytes():
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dst)


def stage() -> None:
    """Copy the book configuration and the prose pages into the build source tree."""
    SRC.mkdir(parents=True, exist_ok=True)
    for name in ("_config.yml", "_toc.yml"):
        _sync_file(ROOT / name, SRC / name)
    wanted = {p.relative_to(ROOT) for p in (ROOT / "book").rglob("*") if p.is_file()}
    for rel in wanted:
        _sync_file(ROOT / rel, SRC / rel)
    for p in (SRC / "book").rglob("*"):
        if p.is_file() and p.relative_to(SRC) not in wanted:
            p.unlink()


def toc_notebooks() -> list[Path]:
    """The notebooks of the book: ``notebooks/<name>`` entries of ``_toc.yml`` (sources ``.md``).

    A notebook in ``notebooks/`` that the table of contents does not list yet is not executed.
    """
    import yaml

    def files(node: object) -> list[str]:
        if isinstance(node, dict):
            own = [node["file"]] if isinstance(node.get("file"), str) else []
            return own + [f for v in node.values() for f in files(v)]
        if isinstance(node, list):
            return [f for v in node for f in files(v)]
        return []

    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    entries = [f for f in files(toc) if f.startswith("notebooks/")]
    missing = [f for f in entries if not (ROOT / f"{f}.md").exists()]
    if missing:
        raise SystemExit(f"_toc.yml lists notebooks without a source .md: {missing}")
    return [ROOT / f"{f}.md" for f in entries]


def execute(mode: str, force: bool) -> list[str]:
    """Execute the notebooks that changed; return the names of those that failed."""
    import jupytext
    import nbformat
    import papermill

    out_dir = SRC / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    lib = [p for p in (ROOT / "permlib").rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    sources = toc_notebooks()
    names = {s.stem for s in sources}
    for stale in out_dir.glob("*"):  # notebooks that were removed from notebooks/
        if stale.stem.split(".")[0] not in names:
            stale.unlink()
    failed: list[str] = []
    timings: dict[str, float] = {}
    timing_file = BUILD / "notebook_timings.json"
    if timing_file.exists():
        timings = json.loads(timing_file.read_text())
    for src in sources:
        out = out_dir / f"{src.stem}.ipynb"
        stamp = out_dir / f"{src.stem}.stamp"
        key = _digest([src, *lib], extra=f"mode={mode}")
        if not force and out.exists() and stamp.exists() and stamp.read_text() == key:
            print(f"[book] {src.name}: up to date ({mode})", flush=True)
            continue
        print(f"[book] executing {src.name} (mode={mode}) ...", flush=True)
        nb = jupytext.read(src)
        tmp = out_dir / f"{src.stem}.running.ipynb"
        t0 = time.perf_counter()
        try:
            papermill.execute_notebook(
                nb,
                str(tmp),
                parameters={"mode": mode},
                kernel_name="python3",
                cwd=str(NOTEBOOKS),
                progress_bar=False,
                execution_timeout=CELL_TIMEOUT_S,
            )
        except Exception as exc:  # papermill raises PapermillExecutionError on a failing cell
            failed.append(src.name)
            (BUILD / "failed").mkdir(parents=True, exist_ok=True)
            if tmp.exists():
                shutil.move(tmp, BUILD / "failed" / f"{src.stem}.ipynb")
            out.unlink(missing_ok=True)
            stamp.unlink(missing_ok=True)
            print(f"[book] FAILED {src.name}: {exc}", file=sys.stderr, flush=True)
            continue
        dt = time.perf_counter() - t0
        executed = nbformat.read(tmp, as_version=4)
        for cell in executed.cells:  # the book shows the parameters cell once, not papermill's copy
            tags = cell.metadata.setdefault("tags", [])
            if "injected-parameters" in tags and "remove-cell" not in tags:
                tags.append("remove-cell")
        nbformat.write(executed, tmp)
        tmp.replace(out)
        stamp.write_text(key)
        timings[src.stem] = round(dt, 1)
        print(f"[book] {src.name}: {dt:.1f} s", flush=True)
    timing_file.write_text(json.dumps(timings, indent=1, sort_keys=True) + "\n")
    return failed


def build_html() -> int:
    """Render ``_build/src`` into ``_build/html`` with warnings as errors."""
    jb = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(jb), "build", str(SRC), "--path-output", str(ROOT), "-W", "-n", "--keep-going"]
    print("[book] " + " ".join(cmd), flush=True)
    return subprocess.call(cmd, cwd=ROOT)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["ci", "full"], default=os.environ.get("MODE", "ci"))
    parser.add_argument("--force", action="store_true", help="re-execute every notebook")
    parser.add_argument("--no-html", action="store_true", help="execute only")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    stage()
    failed = execute(args.mode, args.force)
    if failed:
        print(
            f"[book] notebooks with failing cells: {', '.join(failed)} "
            f"(partial outputs in _build/failed/)",
            file=sys.stderr,
        )
        return 1
    if not args.no_html:
        rc = build_html()
        if rc != 0:
            print("[book] jupyter-book build failed (warnings are errors)", file=sys.stderr)
            return rc
    print(f"[book] done in {time.perf_counter() - t0:.0f} s: {BUILD / 'html' / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
