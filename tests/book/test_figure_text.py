"""The overlap check of figure texts (figure_text.py) that test_notebooks.py::test_nbval runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import matplotlib
import nbformat
import numpy as np

matplotlib.use("agg")
import matplotlib.pyplot as plt  # noqa: E402

from .figure_text import overlapping_texts  # noqa: E402

HERE = Path(__file__).parent


def test_overlapping_texts_found_and_separate_ones_not():
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.text(0.5, 0.5, "first label", fontsize=12)
    ax.text(0.52, 0.51, "second label", fontsize=12)
    ax.text(0.05, 0.9, "far away")
    ax.set_xlabel("x")
    bad = overlapping_texts(fig)
    plt.close(fig)
    assert bad == ["'first label' / 'second label'"]

    fig, ax = plt.subplots(figsize=(4, 3))
    ax.plot([1, 10, 100], [1, 2, 3])
    ax.set_xscale("log")
    ax.set_xlabel("matrix size $N$")
    ax.set_ylabel("time (ms)")
    ax.legend(["permlib"])
    assert overlapping_texts(fig) == []
    plt.close(fig)


def test_tick_labels_too_dense_are_found():
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.set_xticks(range(30), [f"label {i}" for i in range(30)])
    bad = overlapping_texts(fig)
    plt.close(fig)
    assert bad and all("label" in pair for pair in bad)


def test_hook_sees_the_figures_in_an_nbval_kernel(tmp_path):
    """Installed as nbval runs a notebook, the check runs before matplotlib-inline closes the
    figures of a cell: a figure with overlapping texts is logged, a clean one is not."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("import matplotlib.pyplot as plt"),
        nbformat.v4.new_code_cell(
            "fig, ax = plt.subplots(num='clash')\n"
            "ax.text(0.5, 0.5, 'AAAA', fontsize=20)\nax.text(0.5, 0.5, 'BBBB', fontsize=20)\n"
            "plt.show()"),
        nbformat.v4.new_code_cell(
            "fig, ax = plt.subplots(num='clean')\nax.set_xlabel('x')\nplt.show()"),
    ]
    path = tmp_path / "probe.ipynb"
    nbformat.write(nb, path)
    log = tmp_path / "figure_text.jsonl"
    cmd = [sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-current-env",
           "-p", "figure_text", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
           "-c", "/dev/null", str(path)]
    env = {**os.environ, "PYTHONPATH": str(HERE), "BOOK_FIGURE_TEXT_LOG": str(log)}
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert [e["figure"] for e in entries] == ["clash"], entries
    assert entries[0]["overlaps"] == ["'AAAA' / 'BBBB'"]


def test_stale_and_out_of_view_tick_labels_are_not_counted():
    """After set_ylim on a log axis, the axis keeps Tick objects of an earlier draw (stale
    positions, never drawn) and labels ticks outside the limits: neither is on the page."""
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(7, 7), sharex=True, layout="constrained")
    k = np.arange(1, 81)
    for rate in (0.2, 0.4, 0.8):
        ax.semilogy(k, np.maximum(np.exp(-rate * k), 1e-16))
        ax2.semilogy(k, np.minimum(1e-10 * np.exp(rate * k), 0.3))
    fig.canvas.draw()  # a first draw with the automatic limits, as a notebook might do
    ax.set_ylim(1e-12, 3)
    ax2.set_ylim(1e-11, 2)
    assert overlapping_texts(fig) == []
    plt.close(fig)


def test_log_axis_ticks_below_the_limits_are_not_counted():
    """A log axis labels 10^-14 below ylim(1e-12, 3) without drawing it (the sinkhorn_failures
    figure that found this: the undrawn label sat on the next panel's 10^0). A text placed where
    that label would be is no overlap; the same text on a drawn label is one."""
    fig, ax = plt.subplots(figsize=(7, 7))
    ax.semilogy(np.arange(1, 81), np.logspace(0, -16, 80))
    ax.set_ylim(1e-12, 3)
    fig.canvas.draw()
    ticks = {t.get_loc(): t for t in ax.yaxis.get_major_ticks()}
    assert 1e-14 in ticks, "the case: a tick outside the limits"
    renderer = fig.canvas.get_renderer()

    def put_text_on(loc):
        box = ticks[loc].label1.get_window_extent(renderer)
        x, y = fig.transFigure.inverted().transform((box.x0, box.y0))
        return fig.text(x, y, "10^0")

    probe = put_text_on(1e-14)
    assert overlapping_texts(fig) == []
    probe.remove()
    put_text_on(1e-4)
    assert overlapping_texts(fig) == ["'$\\\\mathdefault{10^{-4}}$' / '10^0'"]
    plt.close(fig)
