import gzip
import struct

import numpy as np
import pytest
import torch

from permlib.data import images as imgs
from permlib.data.jigsaw import (
    RESIZE_SIDES,
    from_pieces,
    sample_jigsaw_batch,
    scramble,
    tile,
    to_pieces,
)
from permlib.nn import reconstruct
from permlib.permutations import permutation_matrix


def test_pieces_are_row_major_and_invertible():
    img = torch.arange(16.0).reshape(1, 1, 4, 4)
    pieces = to_pieces(img, 2)
    assert pieces.shape == (1, 4, 1, 2, 2)
    assert pieces[0, 1, 0].tolist() == [[2.0, 3.0], [6.0, 7.0]]  # top-right cell
    assert pieces[0, 2, 0].tolist() == [[8.0, 9.0], [12.0, 13.0]]  # bottom-left cell
    assert torch.equal(from_pieces(pieces, 2), img)
    x = torch.rand(3, 2, 12, 18)
    assert torch.equal(from_pieces(to_pieces(x, 3), 3), x)
    with pytest.raises(ValueError, match="does not divide"):
        to_pieces(torch.rand(1, 1, 5, 5), 2)


def test_scramble_label_puts_pieces_back():
    gen = torch.Generator().manual_seed(0)
    pieces = to_pieces(torch.rand(5, 1, 12, 12), 3)
    scrambled, perm = scramble(pieces, generator=gen)
    assert perm.dtype == torch.int64 and sorted(perm[0].tolist()) == list(range(9))
    for b in range(5):
        for i in range(9):
            assert torch.equal(scrambled[b, i], pieces[b, perm[b, i]])
    back = reconstruct(permutation_matrix(perm), scrambled, item_dims=3)
    assert torch.equal(back, pieces)


@pytest.mark.parametrize("grid", [2, 3, 4, 5, 6])
def test_tilings_of_mnist(grid):
    x = torch.rand(2, 1, 28, 28)
    crop = tile(x, grid, "crop")
    assert crop.shape[-1] == grid * (28 // grid)
    assert torch.equal(crop, x[..., : crop.shape[-2], : crop.shape[-1]])
    resized = tile(x, grid, "resize")
    assert resized.shape[-1] == RESIZE_SIDES[grid] and resized.shape[-1] % grid == 0
    assert 0 <= resized.min() and resized.max() <= 1


def test_sampling_is_deterministic_and_checks_input():
    x = torch.rand(10, 1, 28, 28)
    a = sample_jigsaw_batch(x, 3, 4, generator=torch.Generator().manual_seed(1))
    b = sample_jigsaw_batch(x, 3, 4, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a.scrambled, b.scrambled) and torch.equal(a.perm, b.perm)
    assert len(a) == 4 and a.pieces.shape == (4, 9, 1, 9, 9)
    with pytest.raises(ValueError, match="images must be"):
        sample_jigsaw_batch(torch.rand(28, 28), 3, 4)
    with pytest.raises(TypeError, match="floating"):
        sample_jigsaw_batch(torch.zeros(2, 1, 28, 28, dtype=torch.uint8), 3, 4)
    with pytest.raises(ValueError, match="grid must be"):
        tile(x, 0)
    with pytest.raises(ValueError, match="does not fit"):
        tile(torch.rand(1, 1, 3, 3), 4)
    with pytest.raises(ValueError, match="tiling"):
        tile(x, 2, "stretch")
    empty = sample_jigsaw_batch(x, 2, 0, generator=torch.Generator())
    assert len(empty) == 0 and empty.perm.shape == (0, 4)


def test_bundled_mnist_split_is_disjoint_and_balanced():
    m = imgs.mnist()
    assert m.train.shape == (4000, 1, 28, 28) and m.test.shape == (1000, 1, 28, 28)
    assert m.train.dtype == torch.float32 and 0 <= m.train.min() and m.train.max() <= 1
    assert torch.bincount(m.test_labels).tolist() == [100] * 10
    train = {r.numpy().tobytes() for r in m.train.flatten(1)}
    assert not any(r.numpy().tobytes() in train for r in m.test.flatten(1))


def _write_idx(path, array, gz=False):
    codes = {np.uint8: 0x08}
    header = bytes([0, 0, codes[array.dtype.type], array.ndim])
    header += struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.tobytes()
    (gzip.open if gz else open)(path, "wb").write(data)


def test_idx_folder_reads_and_bad_files_are_named(tmp_path):
    rng = np.random.default_rng(0)
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (6, 28, 28),
                                                                     dtype=np.uint8), gz=True)
    _write_idx(tmp_path / "train-labels-idx1-ubyte", rng.integers(0, 10, 6, dtype=np.uint8))
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", rng.integers(0, 256, (3, 28, 28),
                                                                  dtype=np.uint8))
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", rng.integers(0, 10, 3, dtype=np.uint8))
    m = imgs.mnist(tmp_path)
    assert m.train.shape == (6, 1, 28, 28) and m.test_labels.shape == (3,)
    # wrong shape: named
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((3, 27, 27), dtype=np.uint8))
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte.*28, 28"):
        imgs.mnist(tmp_path)
    # truncated: named
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + b"\x00" * 8)
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte.*truncated"):
        imgs.mnist(tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte.*not an IDX"):
        imgs.mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        imgs.mnist(tmp_path)


def test_image_folder(tmp_path):
    from PIL import Image

    with pytest.raises(FileNotFoundError, match="no .jpg"):
        imgs.image_folder(tmp_path)
    rng = np.random.default_rng(0)
    for i in range(10):
        pixels = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / f"{i}.png")
    split = imgs.image_folder(tmp_path, size=32)
    assert split.train.shape == (9, 3, 32, 32) and split.test.shape == (1, 3, 32, 32)
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="broken.jpg"):
        imgs.image_folder(tmp_path, size=32)


def test_standins():
    faces, photos = imgs.standin_faces(), imgs.standin_photos()
    assert faces.train.shape == (80, 1, 25, 25) and faces.test.shape == (20, 1, 25, 25)
    assert photos.train.shape[1:] == (3, 48, 48) and len(photos.test) >= 40
    assert "stand-in" in faces.source and "stand-in" in photos.source
