"""Data of the experiments; every sampler takes ``generator=`` and ``device=``.

* :mod:`permlib.data.sorting`: lists of numbers to sort, the test intervals of the papers;
* :mod:`permlib.data.jigsaw`: images cut into scrambled pieces;
* :mod:`permlib.data.images`: MNIST and natural images from disk (nothing is downloaded).
"""

from permlib.data.images import ImageSplit, image_folder, mnist, standin_faces, standin_photos
from permlib.data.jigsaw import (
    JigsawBatch,
    from_pieces,
    sample_jigsaw_batch,
    scramble,
    tile,
    to_pieces,
)
from permlib.data.sorting import (
    TEST_DISTRIBUTIONS,
    SortingBatch,
    sample_sorting_batch,
    sorting_permutation,
)

__all__ = [
    "ImageSplit",
    "JigsawBatch",
    "from_pieces",
    "image_folder",
    "mnist",
    "sample_jigsaw_batch",
    "scramble",
    "standin_faces",
    "standin_photos",
    "tile",
    "to_pieces",
    "TEST_DISTRIBUTIONS",
    "SortingBatch",
    "sample_sorting_batch",
    "sorting_permutation",
]
