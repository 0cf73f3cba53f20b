"""A pytest plugin for the nbval run of tests/book/test_notebooks.py: execute cells as papermill
does, with ``store_history=True``.

nbval sends each cell with ``store_history=False``. IPython decides whether a trailing ``;``
silences a cell's last value by reading the cell from its input history, so without history it
reads the previous cell instead, and ``ax.legend();`` prints ``<matplotlib.legend.Legend ...>``
where papermill (and Jupyter) printed nothing: an output difference that says nothing about the
chapter. Loaded with ``-p nbval_history``.
"""

from __future__ import annotations

from nbval.kernel import RunningKernel


def _execute_with_history(self, cell_input, allow_stdin=None):
    return self.kc.execute(
        cell_input, store_history=True, allow_stdin=allow_stdin, stop_on_error=False
    )


RunningKernel.execute_cell_input = _execute_with_history
