"""Overlapping text in the chapters' figures, found while nbval re-executes them.

tests/book/test_notebooks.py::test_nbval already runs every cell of every chapter in a Jupyter
kernel; this module adds the check to that run at the cost of one extra draw per figure, instead
of executing the chapters a second time. Loaded into the nbval process with ``-p figure_text``, it
sends :func:`install` to each kernel nbval starts. Before a figure is shown (``plt.show()``, or
matplotlib-inline's ``post_execute`` flush), it is drawn and the boxes of its visible texts (tick
labels, axis labels, titles, legends, annotations, colorbar labels) are compared; one JSON line
per figure with overlapping text goes to the file named by ``$BOOK_FIGURE_TEXT_LOG``.

What it can measure: text boxes of one figure, in display pixels, as drawn at the figure's own
size and dpi. Tick labels that are not drawn (ticks outside the axis limits, stale Tick objects
an axis keeps from an earlier draw) are skipped, and two boxes count as overlapping when they
share more than a pixel in both directions. Text drawn inside an image, or a label crossing a
line or a marker, is not seen.
"""

from __future__ import annotations

import json
import os

SETUP = "import figure_text as _figure_text; _figure_text.install(); del _figure_text"


def overlapping_texts(fig) -> list[str]:
    """``'a' / 'b'`` for each pair of visible texts of ``fig`` whose drawn boxes overlap."""
    import numpy as np
    from matplotlib.text import Text

    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    # Tick labels that are not drawn: of ticks outside the view limits, and of Tick objects left
    # over from an earlier draw with more ticks (an axis keeps them, stale, after set_ylim).
    all_labels, drawn = set(), set()
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            scale = axis.get_transform()  # compared in scale space (log axes), as matplotlib does
            lo, hi = sorted(scale.transform(np.asarray(axis.get_view_interval(), float)))
            slack = 1e-10 * (hi - lo)
            for ticks, locs in ((axis.majorTicks, axis.get_majorticklocs()),
                                (axis.minorTicks, axis.get_minorticklocs())):
                all_labels.update(id(x) for t in ticks for x in (t.label1, t.label2))
                for tick in ticks[:len(locs)]:
                    with np.errstate(divide="ignore", invalid="ignore"):
                        loc = scale.transform(np.array([tick.get_loc()], float))[0]
                    if np.isfinite(loc) and lo - slack <= loc <= hi + slack:
                        drawn.update((id(tick.label1), id(tick.label2)))
    hidden = all_labels - drawn
    texts = [t for t in fig.findobj(Text)
             if t.get_visible() and t.get_text().strip() and id(t) not in hidden
             and (t.axes is None or t.axes.get_visible())]
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in texts]
    found = []
    for i, (text_a, a) in enumerate(boxes):
        for text_b, b in boxes[i + 1:]:
            width = min(a.x1, b.x1) - max(a.x0, b.x0)
            height = min(a.y1, b.y1) - max(a.y0, b.y0)
            if width > 1 and height > 1:
                found.append(f"{text_a!r} / {text_b!r}")
    return found


def install(ip=None) -> None:
    """Check every figure of the running IPython kernel before it is shown and closed (a no-op
    outside IPython or without ``$BOOK_FIGURE_TEXT_LOG``).

    Chapters end a figure cell with ``plt.show()``, which under matplotlib-inline displays and
    closes every open figure at once, so ``pyplot.show`` is wrapped to check the open figures
    first; a figure left open (shown as a cell's value or by matplotlib-inline's
    ``flush_figures``) is checked by a ``post_execute`` callback placed ahead of ``flush_figures``.
    """
    import weakref

    from IPython import get_ipython

    ip = ip or get_ipython()
    log = os.environ.get("BOOK_FIGURE_TEXT_LOG")
    if ip is None or not log:
        return
    import matplotlib.pyplot as plt  # the kernel's backend (matplotlib-inline) is set up here

    state = {"cell": 0}
    checked = weakref.WeakSet()

    def check_open_figures() -> None:
        for num in plt.get_fignums():
            fig = plt.figure(num)
            if fig in checked:
                continue
            checked.add(fig)
            try:
                bad = overlapping_texts(fig)
            except Exception as exc:  # noqa: BLE001 - reported, the cell's own error shows too
                bad = [f"could not draw the figure: {exc!r}"]
            if bad:
                label = fig.get_label() or f"figure {num}"
                with open(log, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps({"cell": state["cell"], "figure": label,
                                         "overlaps": bad}) + "\n")

    original_show = plt.show

    def show(*args, **kwargs):
        check_open_figures()
        return original_show(*args, **kwargs)

    def pre_execute() -> None:
        state["cell"] += 1

    plt.show = show
    ip.events.register("pre_execute", pre_execute)
    ip.events.callbacks["post_execute"].insert(0, check_open_figures)


def pytest_configure(config) -> None:
    """As a pytest plugin: run :data:`SETUP` in every kernel nbval starts."""
    if not os.environ.get("BOOK_FIGURE_TEXT_LOG"):
        return
    from nbval.kernel import RunningKernel

    original = RunningKernel._ensure_iopub_up
    if getattr(original, "_figure_text", False):
        return

    def ensure_iopub_up(self):
        original(self)
        msg_id = self.kc.execute(SETUP, silent=True, store_history=False)
        while True:
            reply = self.kc.get_shell_msg(timeout=60)
            if reply["parent_header"].get("msg_id") == msg_id:
                break
        if reply["content"]["status"] != "ok":
            raise RuntimeError(f"figure_text setup failed in the kernel: {reply['content']}")
        self.await_idle(msg_id, 60)

    ensure_iopub_up._figure_text = True
    RunningKernel._ensure_iopub_up = ensure_iopub_up
