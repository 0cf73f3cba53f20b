"""Open the built theory chapters in headless Chromium: math typeset offline, figures loaded.

A copy of each page gets a small script that waits for MathJax and the images, then writes what
it found into attributes of <body>; ``chromium --dump-dom`` returns the rendered DOM. A screenshot
of the first chapter is kept as ``_build/screenshots/<chapter>.png`` (a CI artifact).
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from .conftest import BUILD, IN_CI, require_build

CHAPTERS = ["sinkhorn_operator", "sinkhorn_failures", "matching_and_hste"]
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--virtual-time-budget=20000"]
PROBE = """
<script>
window.addEventListener("load", function () {
  var done = function (ok) {
    var imgs = Array.from(document.querySelectorAll("img"));
    var body = document.body;
    body.setAttribute("data-mathjax", ok ? "typeset" : "failed");
    body.setAttribute("data-mjx", document.querySelectorAll("mjx-container").length);
    body.setAttribute("data-img-total", imgs.length);
    body.setAttribute("data-img-ok", imgs.filter(function (i) {
      return i.complete && i.naturalWidth > 0; }).length);
  };
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    MathJax.startup.promise.then(function () { done(true); }, function () { done(false); });
  } else { done(false); }
});
</script>
"""


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        msg = "chromium not installed (`make test` installs the Debian package)"
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)
    return exe


def _profile(tmp_path):
    profile = tmp_path / "profile"
    profile.mkdir()
    return f"--user-data-dir={profile}"


@pytest.mark.parametrize("name", CHAPTERS)
def test_math_and_figures_render(name, tmp_path):
    require_build()
    exe = _chromium()
    page = BUILD / "html" / "notebooks" / f"{name}.html"
    probe = page.with_name(f"_browser_check_{name}.html")
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"),
                     encoding="utf-8")
    try:
        proc = subprocess.run([exe, *FLAGS, _profile(tmp_path), "--dump-dom", probe.as_uri()],
                              capture_output=True, text=True, timeout=180)
    finally:
        probe.unlink()
    dom = proc.stdout
    body = re.search(r"<body[^>]*>", dom)
    assert body, proc.stderr[-2000:]
    attrs = dict(re.findall(r'data-([\w-]+)="([^"]*)"', body.group(0)))
    assert attrs.get("mathjax") == "typeset", attrs
    assert int(attrs["mjx"]) > 20, "MathJax typeset the equations"
    assert int(attrs["img-total"]) >= 1 and attrs["img-ok"] == attrs["img-total"], attrs
    text = re.sub(r"<(script|style)\b.*?</\1>", "", dom, flags=re.DOTALL)
    text = re.sub(r"<mjx-container\b.*?</mjx-container>", "", text, flags=re.DOTALL)
    assert "$$" not in text, "raw display math left in the page"
    assert not re.search(r"\\\[|\\begin\{", re.sub(r"<[^>]+>", "", text)), "untypeset TeX"


def test_screenshot(tmp_path):
    require_build()
    exe = _chromium()
    out = BUILD / "screenshots" / f"{CHAPTERS[0]}.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    page = BUILD / "html" / "notebooks" / f"{CHAPTERS[0]}.html"
    subprocess.run([exe, *FLAGS, _profile(tmp_path), "--window-size=1280,4000",
                    f"--screenshot={out}", page.as_uri()],
                   capture_output=True, text=True, timeout=180)
    assert out.exists() and out.stat().st_size > 50_000
