import pytest
import torch

from permlib.data.multidigit import sample_multidigit_batch


def _digits():
    # image of digit d: constant d / 10, so strips can be read back
    labels = torch.arange(10).repeat(3)
    images = (labels.float() / 10).reshape(-1, 1, 1, 1).expand(-1, 1, 28, 28).contiguous()
    return images, labels


def test_values_images_and_permutation_agree():
    images, labels = _digits()
    gen = torch.Generator().manual_seed(0)
    b = sample_multidigit_batch(images, labels, 5, 6, 3, generator=gen)
    assert b.images.shape == (5, 6, 1, 28, 84) and b.n == 6
    digits = (b.images[..., 0, 0, ::28] * 10).round().long()  # (5, 6, 3) first pixel per digit
    assert torch.equal((digits * torch.tensor([100, 10, 1])).sum(-1), b.values)
    assert b.values.min() >= 0 and b.values.max() <= 999
    order = torch.argsort(b.perm, dim=-1)  # item at each position
    assert torch.equal(torch.gather(b.values, 1, order), b.sorted_values)
    assert (b.sorted_values[:, 1:] >= b.sorted_values[:, :-1]).all()


def test_seeded_and_empty():
    images, labels = _digits()
    a = sample_multidigit_batch(images, labels, 2, 3, generator=torch.Generator().manual_seed(1))
    b = sample_multidigit_batch(images, labels, 2, 3, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a.images, b.images) and torch.equal(a.values, b.values)
    e = sample_multidigit_batch(images, labels, 0, 3)
    assert e.images.shape == (0, 3, 1, 28, 112) and e.values.shape == (0, 3)


def test_bad_input_names_the_argument():
    images, labels = _digits()
    with pytest.raises(ValueError, match="images"):
        sample_multidigit_batch(images[0], labels, 1, 2)
    with pytest.raises(ValueError, match="labels"):
        sample_multidigit_batch(images, labels[:3], 1, 2)
    with pytest.raises(ValueError, match="digits 0 .. 9"):
        sample_multidigit_batch(images, labels + 5, 1, 2)
    with pytest.raises(ValueError, match="n must"):
        sample_multidigit_batch(images, labels, 1, 0)
    with pytest.raises(ValueError, match="empty"):
        sample_multidigit_batch(images[:0], labels[:0], 1, 2)


def test_shift_translates_each_digit_and_keeps_the_numbers():
    # one bright pixel in the middle of each 28 x 28 digit: after a shift of at most s it lies
    # within s pixels of the middle, and each digit keeps exactly one bright pixel
    labels = torch.arange(10)
    images = torch.zeros(10, 1, 28, 28)
    images[:, 0, 14, 14] = 1.0
    plain = sample_multidigit_batch(images, labels, 50, 4, 3,
                                    generator=torch.Generator().manual_seed(2))  # fmt: skip
    moved = sample_multidigit_batch(images, labels, 50, 4, 3, shift=2,
                                    generator=torch.Generator().manual_seed(2))  # fmt: skip
    assert torch.equal(plain.values, moved.values) and torch.equal(plain.perm, moved.perm)
    digits = moved.images.unflatten(-1, (3, 28)).movedim(-2, 2)  # (B, n, d, C, 28, 28)
    assert torch.equal(digits.sum(dim=(-1, -2, -3)), torch.ones(50, 4, 3))
    rows, cols = torch.nonzero(digits[..., 0, :, :], as_tuple=True)[-2:]
    assert (rows - 14).abs().max() == 2 and (cols - 14).abs().max() == 2  # every offset used
    assert not torch.equal(plain.images, moved.images)
    # the next draw differs: the offsets came from the same stream, after the digits
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    sample_multidigit_batch(images, labels, 5, 4, generator=g1)
    sample_multidigit_batch(images, labels, 5, 4, shift=1, generator=g2)
    assert not torch.equal(g1.get_state(), g2.get_state())
    with pytest.raises(ValueError, match="shift"):
        sample_multidigit_batch(images, labels, 5, 4, shift=-1)
