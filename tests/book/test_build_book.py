"""scripts/build_book.py re-executes exactly the chapters whose inputs changed (no real build)."""

from __future__ import annotations

import ast
import json
import sys
import textwrap
from pathlib import Path

import jupytext
import pytest

from .conftest import NOTEBOOK_SOURCES, ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import build_book  # noqa: E402

sys.path.pop(0)

FRONT = "---\njupytext:\n  text_representation:\n    format_name: myst\n{extra}---\n"
CHAPTERS = {
    # reads a results file by its path relative to notebooks/, and names one not yet made
    "a": "```{code-cell} ipython3\n"
    'bench = json.loads(Path("../benchmarks/results/bench_quick_cpu.json").read_text())\n'
    'full = Path("../benchmarks/results/bench_full_cpu.json")\n```\n',
    # imports a benchmark module, which imports another
    "b": "```{code-cell} ipython3\nfrom benchmarks.report import tables\n```\n",
    # names a paper table by path in prose, a results file by its name alone
    "c": "The paper's numbers are in `benchmarks/reference/paper_tables.json`, ours in\n"
    "`sorting_table5.json`.\n\n```{code-cell} ipython3\nx = load()\n```\n",
    # declares what a library function reads for it
    "d": "```{code-cell} ipython3\nx = load_extras()\n```\n",
    # reads nothing
    "e": "```{code-cell} ipython3\nimport permlib\n```\n",
}
FILES = {
    "permlib/__init__.py": "",
    "benchmarks/__init__.py": "",
    "benchmarks/report.py": "from benchmarks.timing import best_seconds\n",
    "benchmarks/timing.py": "def best_seconds(): ...\n",
    "benchmarks/peers.py": "import permlib\n",
    "benchmarks/results/bench_quick_cpu.json": "{}",
    "benchmarks/results/sorting_table5.json": "{}",
    "benchmarks/results/extra_1.json": "{}",
    "benchmarks/results/unread.json": "{}",
    "benchmarks/reference/paper_tables.json": "{}",
}


@pytest.fixture
def book(tmp_path, monkeypatch):
    """A small repository with five chapters, each stamped as freshly executed."""
    toc = "format: jb-book\nroot: intro\nchapters:\n" + "".join(
        f"  - file: notebooks/{name}\n" for name in CHAPTERS
    )
    (tmp_path / "_toc.yml").write_text(toc)
    for name, body in CHAPTERS.items():
        extra = 'reads:\n  - "benchmarks/results/extra_*.json"\n' if name == "d" else ""
        path = tmp_path / "notebooks" / f"{name}.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(FRONT.format(extra=extra) + body)
    for rel, text in FILES.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    monkeypatch.setattr(build_book, "ROOT", tmp_path)
    monkeypatch.setattr(build_book, "BUILD", tmp_path / "_build")
    monkeypatch.setattr(build_book, "SRC", tmp_path / "_build" / "src")
    monkeypatch.setattr(build_book, "NOTEBOOKS", tmp_path / "notebooks")
    out = tmp_path / "_build" / "src" / "notebooks"
    out.mkdir(parents=True)
    for src in build_book.toc_notebooks():
        stamp = json.dumps(build_book.chapter_digests(src, "ci"))
        (out / f"{src.stem}.stamp").write_text(stamp)
    return tmp_path


def stale(root: Path, mode: str = "ci") -> set[str]:
    out = root / "_build" / "src" / "notebooks"
    return {
        src.stem
        for src in build_book.toc_notebooks()
        if build_book.stale_reason(src, mode, out / f"{src.stem}.stamp")
    }


def test_nothing_changed_nothing_stale(book):
    assert stale(book) == set()
    assert stale(book, mode="full") == set(CHAPTERS)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ("benchmarks/results/bench_quick_cpu.json", {"a"}),
        ("benchmarks/results/bench_full_cpu.json", {"a"}),  # created: named, did not exist
        ("benchmarks/report.py", {"b"}),
        ("benchmarks/timing.py", {"b"}),  # imported by the imported module
        ("benchmarks/__init__.py", {"b"}),
        ("benchmarks/peers.py", set()),  # no chapter imports it
        ("benchmarks/reference/paper_tables.json", {"c"}),
        ("benchmarks/results/sorting_table5.json", {"c"}),
        ("benchmarks/results/extra_1.json", {"d"}),
        ("benchmarks/results/extra_2.json", {"d"}),  # a new file matching the declared glob
        ("benchmarks/results/unread.json", set()),
        ("notebooks/e.md", {"e"}),
        ("permlib/__init__.py", set(CHAPTERS)),
    ],
)
def test_a_changed_input_marks_exactly_its_readers_stale(book, change, expected):
    path = book / change
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text((path.read_text() if path.exists() else "") + "\n# changed\n")
    assert stale(book) == expected


def test_the_stale_reason_names_the_changed_file(book):
    (book / "benchmarks" / "timing.py").write_text("def best_seconds(rounds): ...\n")
    src = book / "notebooks" / "b.md"
    why = build_book.stale_reason(src, "ci", book / "_build" / "src" / "notebooks" / "b.stamp")
    assert why == "changed: benchmarks/timing.py"


def test_execute_runs_only_the_stale_chapters(book, monkeypatch):
    import nbformat
    import papermill

    ran = []

    def fake_execute(nb, output_path, **kwargs):
        ran.append(Path(output_path).stem.split(".")[0])
        nbformat.write(nbformat.v4.new_notebook(), output_path)

    monkeypatch.setattr(papermill, "execute_notebook", fake_execute)
    assert build_book.execute("ci", force=False) == []
    assert sorted(ran) == sorted(CHAPTERS)  # no executed notebooks yet
    ran.clear()
    assert build_book.execute("ci", force=False) == [] and ran == []
    (book / "benchmarks" / "results" / "sorting_table5.json").write_text('{"new": 1}')
    build_book.execute("ci", force=False)
    assert ran == ["c"]


def test_the_front_matter_reads_list_is_checked(book):
    src = book / "notebooks" / "d.md"
    src.write_text(src.read_text().replace('  - "benchmarks/results/extra_*.json"\n', "  3\n"))
    with pytest.raises(SystemExit, match="reads:"):
        build_book.chapter_inputs(src)


def _data_literals(src: Path) -> set[str]:
    """File names of the data files that a chapter's code names in string literals."""
    nb = jupytext.read(src)
    names = set()
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        try:
            tree = ast.parse(textwrap.dedent(cell.source))
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                for suffix in (".json", ".csv", ".npz"):
                    if node.value.endswith(suffix) and "\n" not in node.value:
                        names.add(Path(node.value).name)
    return names


@pytest.mark.parametrize("src", NOTEBOOK_SOURCES, ids=lambda p: p.stem)
def test_every_data_file_a_chapter_names_is_one_of_its_inputs(src):
    """Checked against the real chapters: what the code opens is in the chapter's digest."""
    inputs = {p.name for p in build_book.chapter_inputs(src)}
    assert _data_literals(src) <= inputs


def test_the_performance_chapter_reads_the_benchmark_results_and_report():
    src = ROOT / "notebooks" / "performance.md"
    inputs = {str(p.relative_to(ROOT)) for p in build_book.chapter_inputs(src)}
    assert {"benchmarks/results/bench_full_cpu.json", "benchmarks/report.py"} <= inputs


@pytest.mark.parametrize("src", NOTEBOOK_SOURCES, ids=lambda p: p.stem)
def test_declared_reads_match_files(src):
    """A `reads:` glob in a chapter's front matter that matches nothing is a stale declaration."""
    for pattern in build_book._front_matter_reads(src.read_text(encoding="utf-8")):
        assert [p for p in ROOT.glob(pattern) if p.is_file()], f"{src.name}: {pattern}"
