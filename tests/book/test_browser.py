"""Open every page of the built book in headless Chromium at 1280 px, as a reader sees it.

A copy of each page gets a small script that waits for MathJax (typeset offline) and the images,
measures the layout, and writes what it found as JSON into ``<pre id="layout-check">``;
``chromium --dump-dom`` returns the rendered DOM. Every page (intro, notation, bibliography and
each chapter of ``_toc.yml``) must not scroll sideways: not the page, not a display equation, not
a code cell, not a printed output, not a table; and no figure may be shown below 80 % of its
natural width (its text would be smaller than the figure's font sizes say). A full-page
screenshot of every page is saved as ``_build/screenshots/<page>.png`` (CI uploads the folder).

Overlapping text inside figures is checked where it can be measured, from matplotlib's text
boxes while the chapters are re-executed: ``figure_text.py``, run by ``test_notebooks.py``.

Chromium comes from ``make browser`` (Debian's ``chromium``, or a Chromium or Chrome already on
PATH, as on GitHub's runners); without one these tests are skipped locally and fail in CI.
"""

from __future__ import annotations

import functools
import html
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from .conftest import BUILD, IN_CI, NOTEBOOK_SOURCES, THEORY, require_build

PAGES = ["book/intro", "book/notation", "book/bibliography"] + [
    f"notebooks/{p.stem}" for p in NOTEBOOK_SOURCES
]
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")  # as make's
WIDTH = 1280
MIN_IMAGE_SCALE = 0.8  # a figure shown narrower than this shrinks its text below its font size
MAX_SHOT_HEIGHT = 16_000  # px; Chromium's screenshots stop there
SCREENSHOTS = BUILD / "screenshots"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--virtual-time-budget=20000"]
PROBE = """
<script>
window.addEventListener("load", function () {
  var report = function (typeset) {
    var over = function (el) { return el.scrollWidth > el.clientWidth + 1; };
    var name = function (el) {
      var owner = el.closest("[id]");
      return (owner ? owner.id : "?") + ": " + (el.textContent || "").trim().slice(0, 70);
    };
    var main = document.querySelector("main") || document.body;
    var right = main.getBoundingClientRect().right;
    var imgs = Array.from(document.querySelectorAll("img"));
    var found = {
      has_math: document.querySelector(".math, mjx-container") !== null,
      mathjax: typeset, mjx: document.querySelectorAll("mjx-container").length,
      img_total: imgs.length,
      img_ok: imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length,
      page: document.documentElement.scrollWidth > window.innerWidth,
      math: [], code: [], output: [], table: [], images: [],
      height: document.documentElement.scrollHeight};
    document.querySelectorAll("mjx-container[display='true'], div.math-wrapper, div.math")
      .forEach(function (el) {
        if (over(el) || el.getBoundingClientRect().right > right + 1) found.math.push(name(el));
      });
    document.querySelectorAll("div.highlight pre").forEach(function (el) {
      if (el.closest(".cell_output, .output")) return;
      if (over(el)) found.code.push(name(el));
    });
    document.querySelectorAll(".cell_output pre, .output pre").forEach(function (el) {
      if (over(el)) found.output.push(name(el));
    });
    document.querySelectorAll("table").forEach(function (el) {
      if (over(el.parentElement) || el.getBoundingClientRect().right > right + 1)
        found.table.push(name(el));
    });
    document.querySelectorAll("figure img, .cell_output img").forEach(function (img) {
      if (img.naturalWidth > 0 && img.clientWidth < MIN_SCALE * img.naturalWidth)
        found.images.push((img.closest("figure[id]") || img).id + " shown at " +
                          Math.round(100 * img.clientWidth / img.naturalWidth) + "%");
    });
    var out = document.createElement("pre");
    out.id = "layout-check";
    out.textContent = JSON.stringify(found);
    document.body.appendChild(out);
  };
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    MathJax.startup.promise.then(function () { report(true); }, function () { report(false); });
  } else { report(false); }
});
</script>
""".replace("MIN_SCALE", str(MIN_IMAGE_SCALE))


def _chromium() -> str:
    exe = next(filter(None, map(shutil.which, BROWSERS)), None)
    if exe is None:
        msg = "chromium not installed (`make browser` installs Debian's chromium package)"
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)
    return exe


def _html(page: str) -> Path:
    return BUILD / "html" / f"{page}.html"


@functools.cache
def _render(page: str) -> tuple[dict, str]:
    """The probe's findings on ``page`` at 1280 px, and the rendered DOM (once per session)."""
    exe = _chromium()
    src = _html(page)
    probe = src.with_name(f"_browser_check_{src.stem}.html")
    probe.write_text(src.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"),
                     encoding="utf-8")
    try:
        with tempfile.TemporaryDirectory() as profile:
            proc = subprocess.run([exe, *FLAGS, f"--user-data-dir={profile}",
                                   f"--window-size={WIDTH},900", "--dump-dom", probe.as_uri()],
                                  capture_output=True, text=True, timeout=180)
    finally:
        probe.unlink()
    m = re.search(r'<pre id="layout-check"[^>]*>(.*?)</pre>', proc.stdout, re.DOTALL)
    assert m, f"the probe did not report on {page}: " + proc.stderr[-2000:]
    return json.loads(html.unescape(m.group(1))), proc.stdout


@pytest.mark.parametrize("page", PAGES)
def test_layout_at_1280(page):
    """Nothing scrolls sideways or is cut off, figures are not shrunk; MathJax typeset."""
    require_build()
    found, _ = _render(page)
    if found["has_math"]:
        assert found["mathjax"], "MathJax typeset the page"
    assert found["img_ok"] == found["img_total"], "every image loaded"
    assert not found["page"], "the page scrolls sideways"
    assert not found["math"], f"display equations wider than the column: {found['math']}"
    assert not found["code"], f"code cells that scroll sideways: {found['code']}"
    assert not found["output"], f"printed output that scrolls sideways: {found['output']}"
    assert not found["table"], f"tables wider than the column: {found['table']}"
    assert not found["images"], f"figures shrunk, their text too small: {found['images']}"


@pytest.mark.parametrize("name", sorted(THEORY))
def test_math_and_figures_render(name):
    """The theory lectures: many equations typeset, every figure loaded, no raw TeX left."""
    require_build()
    found, dom = _render(f"notebooks/{name}")
    assert found["mathjax"], "MathJax typeset the page"
    assert found["mjx"] > 20, "MathJax typeset the equations"
    assert found["img_total"] >= 1 and found["img_ok"] == found["img_total"], found
    text = re.sub(r"<(script|style)\b.*?</\1>", "", dom, flags=re.DOTALL)
    text = re.sub(r"<mjx-container\b.*?</mjx-container>", "", text, flags=re.DOTALL)
    text = re.sub(r'<pre id="layout-check".*?</pre>', "", text, flags=re.DOTALL)
    assert "$$" not in text, "raw display math left in the page"
    assert not re.search(r"\\\[|\\begin\{", re.sub(r"<[^>]+>", "", text)), "untypeset TeX"


@pytest.mark.parametrize("page", PAGES)
def test_screenshot(page):
    """A full-page screenshot at 1280 px: ``_build/screenshots/<page>.png`` (a CI artifact)."""
    require_build()
    exe = _chromium()
    height = min(int(_render(page)[0]["height"]), MAX_SHOT_HEIGHT)
    out = SCREENSHOTS / f"{Path(page).name}.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.run([exe, *FLAGS, f"--user-data-dir={profile}",
                               f"--window-size={WIDTH},{height}", f"--screenshot={out}",
                               _html(page).as_uri()],
                              capture_output=True, text=True, timeout=180)
    assert out.exists(), proc.stderr[-2000:]
    png = out.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, shot_height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width, shot_height) == (WIDTH, height), "the whole page, at 1280 px"
    assert len(png) > 20_000, "more than a blank page"


def test_make_test_installs_no_system_package_and_browser_upgrades_nothing():
    """Issue 13.7: `make test` installs no system package; `make browser` is the separate step,
    installing Debian's chromium without recommends, after a dry run that must upgrade nothing."""
    root = BUILD.parent
    if shutil.which("make") is None:
        pytest.skip("GNU make not installed")

    def dry(target: str) -> str:
        # -n prints the recipes without running them
        return subprocess.run(["make", "-n", target], cwd=root, capture_output=True,
                              text=True, check=True).stdout

    assert "apt-get" not in dry("test")
    recipe = dry("browser")
    assert "apt-get install -s --no-install-recommends chromium" in recipe
    assert "apt-get install -y -qq --no-install-recommends --no-upgrade chromium" in recipe
    assert "upgrade installed packages" in recipe, "a dry run that shows an upgrade stops it"
    ci = (root / ".ci" / "run").read_text(encoding="utf-8")
    assert ci.index("make browser") < ci.index("make test")
