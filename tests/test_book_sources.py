"""The book's sources agree with ``_toc.yml`` and with themselves, checked without building it.

The table of contents is the single list of pages. These tests read the MyST sources
(``book/*.md``, ``notebooks/*.md``) as text, so they run in a second, with nothing executed:

- the introduction's course map names every page of the table of contents, in its order;
- each chapter's "What's next?" links (``{doc}``) only to pages of the table of contents, and to
  the chapter that follows it there;
- theorems, exercises, figures and equations are referred to by label (``{prf:ref}``, ``{ref}``,
  ``{numref}``, ``{eq}``), never by a hard-coded number that the rendered numbering could
  contradict; a number is fine where it is a cited paper's own ("Fig. 1 of {cite:t}`hste`");
- every citation key is in ``book/references.bib``, every dated entry has its year, and no
  internal identifier of a copy of a paper ("000", "003's Err_c") appears in a page;
- code cells stay within 88 characters, so that they do not scroll sideways at 1280 px.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")  # PyYAML comes with the book extra (Jupyter Book)

ROOT = Path(__file__).resolve().parents[1]
CODE_WIDTH = 88

DOC_ROLE = re.compile(r"\{doc\}`([^`]*)`")
CITE_ROLE = re.compile(r"\{cite(?::[a-z]+)?\}`([^`]*)`")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*$")
# "Theorem 2", "Exercise 1", "Fig. 3", "Figure 3", "Eq. (4)", "Equation 4". Tables are left
# out: the experiment chapters name the papers' tables ("Table 5") throughout.
NUMBERED = re.compile(
    r"\b(Theorem|Lemma|Proposition|Corollary|Definition|Exercise|Fig\.|Figure|Eq\.|Equation)"
    r"\s+\(?\d+"
)
# Internal identifiers of copies of the papers: "000", "003", "003's Err_c" (not 0.003, 1e-003,
# nor the thousands of 5,000).
INTERNAL_ID = re.compile(r"(?<![\w.,\-+])00\d(?![\w.])")


def _toc_entries() -> list[str]:
    """Every page of ``_toc.yml`` in reading order (root first), as a path without suffix."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    entries = [toc["root"]]

    def walk(items):
        for item in items or []:
            if "file" in item:
                entries.append(item["file"])
            walk(item.get("sections"))

    for part in toc.get("parts", [{"chapters": toc.get("chapters")}]):
        walk(part.get("chapters"))
    return [posixpath.normpath(e.removesuffix(".md").removesuffix(".ipynb")) for e in entries]


TOC = _toc_entries()
ROOT_DOC = TOC[0]
PAGES = TOC[1:]
CHAPTERS = [p for p in PAGES if p.startswith("notebooks/")]


def _source(page: str) -> str:
    return (ROOT / f"{page}.md").read_text(encoding="utf-8")


def _prose(text: str) -> str:
    """The markdown outside code cells, front matter and display math, as one string."""
    text = re.sub(r"\A---\n.*?\n---\n", "", text, flags=re.DOTALL)
    text = re.sub(r"^```\{code-cell\}.*?^```\s*$", "", text, flags=re.DOTALL | re.MULTILINE)
    text = re.sub(r"^```\{math\}.*?^```\s*$", "", text, flags=re.DOTALL | re.MULTILINE)
    return re.sub(r"^\$\$\s*$.*?^\$\$\s*$", "", text, flags=re.DOTALL | re.MULTILINE)


def _section(text: str, title: str) -> str | None:
    """The text under the first heading matching ``title`` (a regex), up to the next heading."""
    lines = _prose(text).splitlines()
    for i, line in enumerate(lines):
        m = HEADING.match(line)
        if m and re.fullmatch(title, m.group(2)):
            body = []
            for nxt in lines[i + 1:]:
                if HEADING.match(nxt):
                    break
                body.append(nxt)
            return "\n".join(body)
    return None


def _doc_links(page: str, text: str) -> list[str]:
    """The ``{doc}`` targets in ``text`` (of ``page``), as toc-style paths, in order."""
    links = []
    for role in DOC_ROLE.findall(text):
        target = re.search(r"<([^>]+)>\s*$", role)
        target = (target.group(1) if target else role).strip()
        if target.startswith("/"):
            path = target.lstrip("/")
        else:
            path = posixpath.join(posixpath.dirname(page), target)
        links.append(posixpath.normpath(path))
    return links


def test_toc_pages_exist():
    for page in TOC:
        assert (ROOT / f"{page}.md").exists(), f"_toc.yml lists {page}, which has no source"
    assert len(set(TOC)) == len(TOC), "a page is listed twice"
    assert CHAPTERS, "the toc lists the chapters"


def test_course_map_follows_toc():
    section = _section(_source(ROOT_DOC), r"Map of the course")
    assert section is not None, f"{ROOT_DOC}.md has a '## Map of the course' section"
    links = list(dict.fromkeys(_doc_links(ROOT_DOC, section)))  # first mention of each page
    assert links == PAGES, (
        f"the course map must name every page of _toc.yml in its order:\n"
        f"  map: {links}\n  toc: {PAGES}"
    )


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_whats_next_follows_toc(chapter):
    section = _section(_source(chapter), r"What's next\??")
    assert section is not None, f"{chapter}.md has a \"What's next?\" section"
    links = _doc_links(chapter, section)
    missing = [link for link in links if link not in TOC]
    assert not missing, f"\"What's next?\" of {chapter} links to pages not in _toc.yml: {missing}"
    following = CHAPTERS[CHAPTERS.index(chapter) + 1:]
    if following:
        assert following[0] in links, (
            f"\"What's next?\" of {chapter} should link to the next chapter, {following[0]}"
        )
    else:
        assert links, f"\"What's next?\" of the last chapter, {chapter}, links to a page"


def _numbered_mentions(text: str) -> list[str]:
    """Hard-coded 'Theorem 2' etc. that are not a cited paper's own numbering."""
    prose = _prose(text)
    bad = []
    for m in NUMBERED.finditer(prose):
        before = prose[max(0, m.start() - 60):m.start()]
        after = prose[m.end():m.end() + 60]
        own = (
            "{cite" in after.split(".")[0]  # "Fig. 5 of {cite:t}`hste`"
            # "{cite:t}`hste`, Fig. 1" and "{cite:t}`hste` (its Fig. 1"
            or re.search(r"\{cite(?::[a-z]+)?\}`[^`]*`,?\s*(\([^)]*)?$", before)
            or re.search(r"\b(its|their|the paper's|the papers')\s+$", before)
        )
        if not own:
            line = prose.count("\n", 0, m.start()) + 1
            bad.append(f"prose line {line}: {prose[m.start():m.end() + 30]!r}")
    return bad


@pytest.mark.parametrize("page", PAGES)
def test_no_hard_coded_numbers(page):
    bad = _numbered_mentions(_source(page))
    assert not bad, (
        "refer to theorems, exercises, figures and equations by label ({prf:ref}, {ref}, "
        "{numref}, {eq}) so the text matches the rendered numbers:\n" + "\n".join(bad)
    )


def _bib_entries() -> dict[str, str]:
    bib = (ROOT / "book" / "references.bib").read_text(encoding="utf-8")
    starts = list(re.finditer(r"^@(\w+)\{([^,\s]+),", bib, re.MULTILINE))
    return {
        m.group(2): bib[m.start():(starts[i + 1].start() if i + 1 < len(starts) else len(bib))]
        for i, m in enumerate(starts)
    }


def test_bibliography_entries():
    entries = _bib_entries()
    assert entries
    for key, body in entries.items():
        assert re.search(r"^\s*title\s*=", body, re.MULTILINE), f"{key}: title"
        has_author = re.search(r"^\s*(author|editor)\s*=", body, re.MULTILINE)
        has_year = re.search(r"^\s*year\s*=\s*\{\d{4}\}", body, re.MULTILINE)
        # Only an anonymous work may lack a year (it is then cited by its title, "n.d.").
        assert has_year or not has_author, f"{key}: a dated work needs its year"
        for url in re.findall(r"^\s*url\s*=\s*\{([^}]*)\}", body, re.MULTILINE):
            assert url.startswith("https://"), f"{key}: url {url!r}"


@pytest.mark.parametrize("page", [ROOT_DOC, *PAGES])
def test_citations_and_identifiers(page):
    text = _source(page)
    keys = set(_bib_entries())
    for role in CITE_ROLE.findall(text):
        for key in (k.strip() for k in role.split(",")):
            assert key in keys, f"{page}: citation key {key!r} is not in book/references.bib"
    hits = [m.group(0) for m in INTERNAL_ID.finditer(text)]
    assert not hits, f"{page}: internal identifiers {hits}; cite papers by bibliography key"
    assert "anonymous authors" not in text.lower(), f"{page}: cite the anonymous work by title"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_code_cells_fit_the_page(chapter):
    text = _source(chapter)
    long = []
    for cell in re.finditer(r"^```\{code-cell\}[^\n]*\n(.*?)^```\s*$", text,
                            re.DOTALL | re.MULTILINE):
        body = cell.group(1)
        body = re.sub(r"\A---\n.*?\n---\n", "", body, flags=re.DOTALL)  # cell metadata
        for line in body.splitlines():
            if len(line) > CODE_WIDTH:
                long.append(f"{len(line)}: {line.strip()[:60]}")
    assert not long, (
        f"{chapter}: code lines longer than {CODE_WIDTH} characters scroll sideways at "
        f"1280 px:\n" + "\n".join(long)
    )
