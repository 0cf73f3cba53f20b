"""Build the book "Learning Permutations": execute the notebooks, then render the HTML.

Steps (all output under ``_build/``, nothing in the source tree is modified):

1. Stage ``_config.yml``, ``_toc.yml`` and ``book/`` into ``_build/src/``.
2. Execute every ``notebooks/*.md`` (jupytext MyST) with papermill, injecting
   ``mode`` into the cell tagged ``parameters``; the executed notebook is
   written to ``_build/src/notebooks/<name>.ipynb``. A notebook is re-executed
   only when one of its inputs changed: its source, the mode, a file of
   ``permlib/``, or a file it reads (see :func:`chapter_inputs`: the repository
   files its source names, the ``benchmarks`` modules it imports with theirs,
   and the globs declared under ``reads:`` in its front matter). A stamp file
   ``<name>.stamp`` (JSON) records the digest of every input, so the build says
   which input made a chapter stale. A failing cell fails the build, and the
   partial notebook is kept as ``_build/failed/<name>.ipynb``.
3. ``jupyter-book build _build/src --path-output . -W -n --keep-going`` writes
   ``_build/html`` (warnings are errors). Jupyter Book does not re-execute.

Usage: ``python scripts/build_book.py [--mode ci|full] [--force] [--no-html] [--only CHAPTER]``
(``make book`` and ``make book MODE=full`` call it).
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import re
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
# A repository path in a chapter's source (prose or code): ``benchmarks/results/x.json``,
# ``../benchmarks/reference/paper_tables.json`` (relative to notebooks/, where chapters run).
PATH_STRING = re.compile(r"(?<![\w/.-])(?:\.\./)?((?:[\w-]+/)+[\w.*-]+\.[A-Za-z0-9]+)\b")
# Top-level folders whose files a chapter can read (permlib/ is an input of every chapter).
READABLE = ("benchmarks", "book", "data", "notebooks")
# Folders of data files that a chapter may name by file name alone (``sorting_table5.json``).
DATA_DIRS = ("benchmarks/results", "benchmarks/reference")
FILE_NAME = re.compile(r"(?<![\w/.-])([\w-]+\.(?:json|csv|npz|png))\b")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "missing"


def _front_matter_reads(text: str) -> list[str]:
    """The ``reads:`` globs of a chapter's YAML front matter (repository-relative)."""
    import yaml

    m = re.match(r"---\n(.*?)\n---\n", text, re.DOTALL)
    meta = yaml.safe_load(m.group(1)) if m else None
    reads = (meta or {}).get("reads", [])
    if not isinstance(reads, list) or not all(isinstance(r, str) for r in reads):
        raise SystemExit("front matter 'reads:' must be a list of repository-relative globs")
    return list(reads)


def _benchmark_imports(code: str) -> set[str]:
    """Modules of the ``benchmarks`` package that ``code`` imports (dotted names)."""
    try:
        tree = ast.parse(code)
    except SyntaxError:  # IPython magics: fall back to the import lines
        lines = [ln for ln in code.splitlines() if re.match(r"\s*(from|import)\s", ln)]
        try:
            tree = ast.parse("\n".join(ln.strip() for ln in lines))
        except SyntaxError:
            return set()
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "benchmarks"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] == "benchmarks":
                found.add(node.module)
                found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


def _module_files(names: set[str]) -> set[Path]:
    """The files of ``benchmarks`` modules ``names`` and, transitively, of what they import."""
    files: set[Path] = set()
    todo = set(names)
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        seen.add(name)
        parts = name.split(".")
        for k in range(1, len(parts) + 1):  # the package __init__ files on the way
            base = ROOT.joinpath(*parts[:k])
            for f in (base.with_suffix(".py"), base / "__init__.py"):
                if f.is_file() and f not in files:
                    files.add(f)
                    todo |= _benchmark_imports(f.read_text(encoding="utf-8")) - seen
    return files


def chapter_inputs(src: Path) -> list[Path]:
    """The repository files a chapter reads, besides its source and ``permlib/``.

    - every repository path its source names, in prose or code, under one of ``READABLE``
      (``benchmarks/results/bench_full_cpu.json``, or ``../benchmarks/...`` relative to the
      chapter), whether the file exists yet or not: creating it makes the chapter stale;
    - every file of ``DATA_DIRS`` that it names by file name alone;
    - the files of the ``benchmarks`` modules it imports, and of what those import;
    - the files matching the globs of ``reads:`` in its front matter, for reads the source does
      not spell out (a path built in a library function).
    """
    text = src.read_text(encoding="utf-8")
    found: set[Path] = set()
    for rel in PATH_STRING.findall(text):
        if rel.split("/")[0] in READABLE and "*" not in rel:
            found.add(ROOT / rel)
    for name in FILE_NAME.findall(text):
        found |= {ROOT / d / name for d in DATA_DIRS if (ROOT / d / name).is_file()}
    for pattern in _front_matter_reads(text):
        matches = sorted(p for p in ROOT.glob(pattern) if p.is_file())
        found |= set(matches) if matches else {ROOT / pattern}
    import jupytext

    code = "\n".join(c.source for c in jupytext.reads(text, fmt="md:myst").cells
                     if c.cell_type == "code")
    found |= _module_files(_benchmark_imports(code))
    found.discard(src)
    return sorted(found)


def chapter_digests(src: Path, mode: str) -> dict[str, str]:
    """``{input: sha256}`` of everything a chapter's outputs depend on (and ``mode``)."""
    lib = [p for p in (ROOT / "permlib").rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    inputs = {str(p.relative_to(ROOT)): _sha(p) for p in [src, *lib, *chapter_inputs(src)]}
    return {"mode": mode, **dict(sorted(inputs.items()))}


def stale_reason(src: Path, mode: str, stamp: Path) -> str | None:
    """Why the chapter must run again (None: its executed notebook is up to date)."""
    if not stamp.exists():
        return "never executed"
    try:
        old = json.loads(stamp.read_text())
    except json.JSONDecodeError:
        return "stamp of an older build"
    new = chapter_digests(src, mode)
    changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    if not changed:
        return None
    shown = ", ".join(changed[:4]) + (f" and {len(changed) - 4} more" if len(changed) > 4 else "")
    return f"changed: {shown}"


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


def execute(mode: str, force: bool, only: list[str] | None = None) -> list[str]:
    """Execute the notebooks that changed (of ``only``, chapter names, if given); return the names
    of those that failed."""
    import jupytext
    import nbformat
    import papermill

    out_dir = SRC / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    sources = toc_notebooks()
    names = {s.stem for s in sources}
    unknown = set(only or ()) - names
    if unknown:
        raise SystemExit(f"--only: not a chapter of _toc.yml: {sorted(unknown)}")
    for stale in out_dir.glob("*"):  # notebooks that were removed from notebooks/
        if stale.stem.split(".")[0] not in names:
            stale.unlink()
    failed: list[str] = []
    timings: dict[str, float] = {}
    timing_file = BUILD / "notebook_timings.json"
    if timing_file.exists():
        timings = json.loads(timing_file.read_text())
    for src in sources:
        if only and src.stem not in only:
            continue
        out = out_dir / f"{src.stem}.ipynb"
        stamp = out_dir / f"{src.stem}.stamp"
        why = "--force" if force else stale_reason(src, mode, stamp)
        if why is None and out.exists():
            print(f"[book] {src.name}: up to date ({mode})", flush=True)
            continue
        digests = chapter_digests(src, mode)  # before running: an input edited meanwhile re-runs
        print(f"[book] executing {src.name} (mode={mode}; {why or 'no output'}) ...", flush=True)
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
        stamp.write_text(json.dumps(digests, indent=1) + "\n")
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
    parser.add_argument(
        "--only",
        action="append",
        metavar="CHAPTER",
        help="execute only this chapter (e.g. performance; repeatable); implies --no-html",
    )
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    stage()
    failed = execute(args.mode, args.force, args.only)
    if failed:
        print(
            f"[book] notebooks with failing cells: {', '.join(failed)} "
            f"(partial outputs in _build/failed/)",
            file=sys.stderr,
        )
        return 1
    if not (args.no_html or args.only):
        rc = build_html()
        if rc != 0:
            print("[book] jupyter-book build failed (warnings are errors)", file=sys.stderr)
            return rc
    done = "executed" if args.only or args.no_html else str(BUILD / "html" / "index.html")
    print(f"[book] done in {time.perf_counter() - t0:.0f} s: {done}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
