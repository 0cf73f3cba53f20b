import pytest
import torch

from permlib import matching
from permlib.nn import PermutationHead, reconstruct
from permlib.permutations import permutation_matrix


def test_reconstruct_moves_image_pieces(device, generator):
    pieces = torch.rand(2, 4, 3, 5, 5, generator=generator).to(device)  # (B, N, C, H, W)
    perm = torch.stack([torch.randperm(4, generator=generator) for _ in range(2)]).to(device)
    out = reconstruct(permutation_matrix(perm, dtype=pieces.dtype), pieces, item_dims=3)
    assert out.shape == pieces.shape
    for b in range(2):
        for i in range(4):  # item i goes to position perm[b, i]
            assert torch.equal(out[b, perm[b, i]], pieces[b, i])


def test_reconstruct_mixes_with_soft_permutations_and_broadcasts(generator):
    items = torch.rand(3, 6, 2, generator=generator)
    soft = torch.full((3, 6, 6), 1 / 6)
    torch.testing.assert_close(reconstruct(soft, items, item_dims=1),
                               items.mean(1, keepdim=True).expand(3, 6, 2))  # fmt: skip
    samples = soft.expand(5, 3, 6, 6)  # a leading sample dimension
    assert reconstruct(samples, items, item_dims=1).shape == (5, 3, 6, 2)
    with pytest.raises(ValueError, match="item_dims"):
        reconstruct(soft, items, item_dims=-1)
    with pytest.raises(ValueError, match="items must be"):
        reconstruct(soft, items, item_dims=0)  # the N axis is not second to last


@pytest.mark.parametrize("kind", ["sinkhorn", "gumbel_sinkhorn", "hste"])
def test_heads(kind, device):
    g = torch.Generator(device=device).manual_seed(0)
    log_alpha = torch.randn(4, 5, 5, generator=g, device=device, requires_grad=True)
    head = PermutationHead(kind, n_samples=3 if kind == "gumbel_sinkhorn" else None)
    p = head(log_alpha, generator=g)
    assert p.shape == ((3 if kind == "gumbel_sinkhorn" else 1), 4, 5, 5)
    torch.testing.assert_close(p.sum(-2), torch.ones_like(p.sum(-2)))  # columns sum to 1
    (p * torch.randn_like(p)).sum().backward()
    assert log_alpha.grad is not None and log_alpha.grad.abs().sum() > 0
    assert torch.equal(head.predict(log_alpha), matching(log_alpha.detach()))
    assert kind in repr(head)


def test_head_arguments_checked():
    with pytest.raises(ValueError, match="head must be"):
        PermutationHead("softsort")
    with pytest.raises(ValueError, match="takes no noise"):
        PermutationHead("sinkhorn", noise_factor=1.0)
    with pytest.raises(ValueError, match="needs noise_factor"):
        PermutationHead("gumbel_sinkhorn", noise_factor=0.0)
    with pytest.raises(ValueError, match="n_samples"):
        PermutationHead("hste", n_samples=2)
    with pytest.raises(ValueError, match="noise_factor"):
        PermutationHead("hste", noise_factor=float("nan"))
