import pytest
import torch

from permlib.data.jigsaw import sample_jigsaw_batch
from permlib.nn import JigsawNetwork, PermutationHead


def test_network_is_permutation_equivariant():
    gen = torch.Generator().manual_seed(0)
    net = JigsawNetwork(3, 9, 1, 8, generator=gen)
    x = torch.rand(2, 9, 1, 9, 9, generator=gen)
    shuffle = torch.randperm(9, generator=gen)
    la = net.log_alpha(x)
    assert la.shape == (2, 9, 9)
    torch.testing.assert_close(net.log_alpha(x[:, shuffle]), la[:, shuffle])


def test_init_is_seeded_and_loss_trains():
    a = JigsawNetwork(2, 14, generator=torch.Generator().manual_seed(1))
    b = JigsawNetwork(2, 14, generator=torch.Generator().manual_seed(1))
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)
    assert a.g2.bias is None and JigsawNetwork(2, 14, bias=True).g2.bias is not None
    gen = torch.Generator().manual_seed(0)
    images = torch.zeros(8, 1, 28, 28)
    images[:, :, :14, :14] = 1.0  # one bright corner: easy 2x2 puzzles
    images[:, :, 14:, 14:] = 0.5
    images[:, :, :14, 14:] = 0.25
    opt = torch.optim.Adam(a.parameters(), lr=1e-2)
    for _ in range(60):
        batch = sample_jigsaw_batch(images, 2, 8, generator=gen)
        loss = a.loss(batch.scrambled, batch.pieces, generator=gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
    batch = sample_jigsaw_batch(images, 2, 8, generator=gen)
    assert torch.equal(a.predict(batch.scrambled), batch.perm)


def test_bad_input():
    with pytest.raises(ValueError, match="grid"):
        JigsawNetwork(0, 9)
    with pytest.raises(ValueError, match="kernel_size"):
        JigsawNetwork(3, 9, kernel_size=4)
    with pytest.raises(ValueError, match="piece_size"):
        JigsawNetwork(3, 1)
    with pytest.raises(ValueError, match="init"):
        JigsawNetwork(3, 9, init="xavier")
    with pytest.raises(ValueError, match="either"):
        JigsawNetwork(3, 9, head=PermutationHead("hste"), n_samples=3)
    net = JigsawNetwork(3, 9)
    with pytest.raises(ValueError, match=r"scrambled must be \(B, 9, 1, 9, 9\)"):
        net.log_alpha(torch.rand(2, 4, 1, 9, 9))
    with pytest.raises(TypeError, match="float64"):
        net.log_alpha(torch.rand(2, 9, 1, 9, 9, dtype=torch.float64))
    assert net.log_alpha(torch.rand(0, 9, 1, 9, 9)).shape == (0, 9, 9)


def test_heads_share_the_piece_network():
    gen = torch.Generator().manual_seed(0)
    net = JigsawNetwork(2, 6, 1, 4, n_heads=3, generator=gen)
    x = torch.rand(4, 4, 1, 6, 6, generator=gen)
    head = torch.tensor([0, 2, 1, 2])
    la = net.log_alpha(x, head)
    every = net.g2(net.g1(x.reshape(16, 1, 6, 6)).reshape(4, 4, -1)).reshape(4, 4, 3, 4)
    for b in range(4):
        torch.testing.assert_close(la[b], every[b, :, head[b]])
    assert net.forward(x, head, generator=gen).shape == (10, 4, 4, 4)
    assert net.predict(x, head).shape == (4, 4)
    with pytest.raises(ValueError, match="head must be"):
        net.log_alpha(x)
    with pytest.raises(ValueError, match=r"head values must lie in \[0, 3\)"):
        net.log_alpha(x, torch.tensor([0, 1, 2, 3]))
