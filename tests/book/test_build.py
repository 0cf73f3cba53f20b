"""The built HTML book: every page, offline MathJax, citations, figures, proofs, exercises."""

from __future__ import annotations

import re

import pytest

from .conftest import NOTEBOOK_SOURCES, ROOT, THEORY

PAGES = ["book/intro.html", "book/notation.html", "book/bibliography.html"] + [
    f"notebooks/{p.stem}.html" for p in NOTEBOOK_SOURCES
]


@pytest.mark.parametrize("page", PAGES)
def test_page_built(html_dir, page):
    html = (html_dir / page).read_text(encoding="utf-8")
    if 'class="math' in html:
        assert "_static/mathjax/tex-chtml.js" in html, "MathJax comes from the local copy"
    assert not re.search(r"<script[^>]+src=\"https?://", html), "no script from the network"


def test_mathjax_is_bundled(html_dir):
    assert (html_dir / "_static" / "mathjax" / "tex-chtml.js").stat().st_size > 100_000
    fonts = list((html_dir / "_static" / "mathjax").rglob("*.woff"))
    assert fonts, "MathJax fonts are bundled"


@pytest.mark.parametrize("name", [p.stem for p in NOTEBOOK_SOURCES])
def test_chapter_content(html_dir, name):
    html = (html_dir / "notebooks" / f"{name}.html").read_text(encoding="utf-8")
    if name in THEORY:
        assert 'class="proof' in html or "proof admonition" in html, "sphinx-proof rendered"
        assert "solution" in html and "dropdown" in html, "exercises with hidden solutions"
    assert re.search(r'<figure[^>]+id="fig-', html), "named figure"
    for img in re.findall(r'<img[^>]+src="([^"]+)"', html):
        if not img.startswith("data:"):
            assert (html_dir / "notebooks" / img).resolve().exists(), img
    assert "bibliography.html#id" in html or "bibliography.html#" in html, "citations link"
    assert "Traceback" not in html
    # Markdown tables printed by cells are rendered as tables, not as paragraphs of pipes.
    assert not re.search(r"<p>\|[^<]*\|\s*\n?\|", html), "raw Markdown table in the page"


def test_bibliography_lists_seed_papers(html_dir):
    html = (html_dir / "book" / "bibliography.html").read_text(encoding="utf-8")
    for needle in ("Sinkhorn Networks", "Gumbel-Sinkhorn", "Hungarian Algorithm"):
        assert needle.lower() in html.lower()


def test_toc_lists_only_existing_files():
    toc = (ROOT / "_toc.yml").read_text()
    for entry in re.findall(r"^\s*-\s*file:\s*(\S+)", toc, re.MULTILINE):
        assert list(ROOT.glob(entry + ".*")), entry
