"""Data of the experiments; every sampler takes ``generator=`` and ``device=``.

* :mod:`permlib.data.sorting`: lists of numbers to sort, the test intervals of the papers.
"""

from permlib.data.sorting import (
    TEST_DISTRIBUTIONS,
    SortingBatch,
    sample_sorting_batch,
    sorting_permutation,
)

__all__ = ["TEST_DISTRIBUTIONS", "SortingBatch", "sample_sorting_batch", "sorting_permutation"]
