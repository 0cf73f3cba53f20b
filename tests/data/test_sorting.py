import pytest
import torch

from permlib.data import TEST_DISTRIBUTIONS, sample_sorting_batch, sorting_permutation


def test_reproducible_with_generator():
    a = sample_sorting_batch(4, 7, generator=torch.Generator().manual_seed(3))
    b = sample_sorting_batch(4, 7, generator=torch.Generator().manual_seed(3))
    c = sample_sorting_batch(4, 7, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a.x, b.x) and torch.equal(a.perm, b.perm)
    assert not torch.equal(a.x, c.x)


@pytest.mark.parametrize("name", list(TEST_DISTRIBUTIONS))
def test_ranges_and_permutation(name, generator):
    low, high = TEST_DISTRIBUTIONS[name]
    batch = sample_sorting_batch(50, 20, low, high, generator=generator)
    assert batch.x.shape == batch.x_sorted.shape == batch.perm.shape == (50, 20)
    assert batch.x.dtype == torch.float32 and batch.perm.dtype == torch.int64
    assert (batch.x >= low).all() and (batch.x <= high).all()
    assert (batch.x_sorted.diff(dim=-1) >= 0).all()
    # perm[i] is the position of x[i] in the sorted list
    assert torch.equal(batch.x_sorted.gather(-1, batch.perm), batch.x)
    assert torch.equal(batch.perm.sort(dim=-1).values, torch.arange(20).expand(50, 20))


def test_seven_test_distributions():
    assert list(TEST_DISTRIBUTIONS) == [
        "U(0,1)", "U(0,10)", "U(0,1000)", "U(1,2)", "U(10,11)", "U(100,101)", "U(1000,1001)",
    ]  # fmt: skip


def test_sorting_permutation_is_rank():
    x = torch.tensor([[0.3, 0.1, 0.2]])
    assert sorting_permutation(x).tolist() == [[2, 0, 1]]


def test_bad_arguments():
    with pytest.raises(ValueError):
        sample_sorting_batch(0, 5)
    with pytest.raises(ValueError):
        sample_sorting_batch(2, 5, low=1.0, high=1.0)
