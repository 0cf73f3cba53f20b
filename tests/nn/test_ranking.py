import pytest
import torch

from permlib.nn import PermutationHead
from permlib.nn.multidigit import MultiDigitCNN, MultiDigitSorter
from permlib.nn.ranking import ScoreSortingNetwork, SortRelaxation, diffsort_available


@pytest.mark.parametrize("kind", ["neuralsort", "softsort", "ot_sort", "diffsort_odd_even",
                                  "diffsort_bitonic"])  # fmt: skip
def test_relaxation_shapes_and_decoding(kind):
    if kind.startswith("diffsort") and not diffsort_available():
        pytest.skip("diffsort not installed")
    head = SortRelaxation(kind, 5, tau=0.01)
    s = torch.randn(3, 5, generator=torch.Generator().manual_seed(0))
    p = head(s)
    assert p.shape == (1, 3, 5, 5)
    torch.testing.assert_close(p.sum(dim=-2), torch.ones(1, 3, 5), atol=1e-5, rtol=0)
    pred = head.predict(s)
    assert torch.equal(pred, torch.argsort(torch.argsort(s, dim=-1), dim=-1))
    assert torch.equal(p[0].argmax(dim=-1), pred)  # rows items: the argmax is the position


def test_diffsort_layout_matches_ours():
    if not diffsort_available():
        pytest.skip("diffsort not installed")
    from permlib.nn import reconstruct

    head = SortRelaxation("diffsort_odd_even", 6, tau=0.001)
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(reconstruct(head.relax(x), x), x.sort(dim=-1).values,
                               atol=1e-2, rtol=0)  # Cauchy swaps: heavy tails  # fmt: skip


def test_stochastic_head_draws_samples_from_the_generator():
    head = SortRelaxation("neuralsort", 4, noise_factor=1.0, n_samples=6)
    s = torch.randn(2, 4)
    a = head(s, generator=torch.Generator().manual_seed(0))
    b = head(s, generator=torch.Generator().manual_seed(0))
    assert a.shape == (6, 2, 4, 4) and torch.equal(a, b)


def test_relaxation_errors():
    with pytest.raises(ValueError, match="kind"):
        SortRelaxation("bogus")
    with pytest.raises(ValueError, match="tau"):
        SortRelaxation("softsort", tau=0)
    with pytest.raises(TypeError, match="tau must be a real number"):
        SortRelaxation("softsort", tau=True)
    with pytest.raises(ValueError, match="n_samples"):
        SortRelaxation("softsort", n_samples=3)
    with pytest.raises(ValueError, match="N = 4"):
        SortRelaxation("softsort", 4)(torch.randn(2, 5))
    with pytest.raises(ValueError, match=r"\(B, N\)"):
        SortRelaxation("softsort", 4)(torch.randn(4))


def _exact_match_after_training(net, steps=150):
    """Train ``net`` on lists of 6 numbers from U(0, 1); its exact match on 200 fresh lists."""
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.rand(16, 6, generator=gen)
        loss = net.loss(x, x.sort(dim=-1).values)
        opt.zero_grad()
        loss.backward()
        opt.step()
    x = torch.rand(200, 6, generator=gen)
    truth = torch.argsort(torch.argsort(x, dim=-1), dim=-1)
    return float((net.predict(x) == truth).all(dim=-1).double().mean())


def test_score_network_learns_to_sort():
    torch.manual_seed(0)
    net = ScoreSortingNetwork(6, relaxation="neuralsort",
                              generator=torch.Generator().manual_seed(0))
    assert _exact_match_after_training(net) > 0.95


def test_multidigit_sorter_families():
    images = torch.rand(2, 3, 1, 28, 112)
    gen = torch.Generator().manual_seed(0)
    scores = MultiDigitSorter(3, SortRelaxation("softsort", 3), generator=gen)
    assert scores.logits(images).shape == (2, 3) and scores(images).shape == (1, 2, 3, 3)
    matrix = MultiDigitSorter(3, PermutationHead("gumbel_sinkhorn", n_samples=4), generator=gen)
    assert matrix.logits(images).shape == (2, 3, 3) and matrix(images).shape == (4, 2, 3, 3)
    assert sorted(matrix.predict(images)[0].tolist()) == [0, 1, 2]
    with pytest.raises(ValueError, match=r"images must be \(B, 3"):
        matrix(torch.rand(2, 4, 1, 28, 112))
    with pytest.raises(ValueError, match="images must be"):
        MultiDigitCNN()(torch.rand(2, 1, 28, 28))
    with pytest.raises(TypeError, match="head"):
        MultiDigitSorter(3, torch.nn.Identity())


def test_multidigit_cnn_in_chunks_computes_the_same_forward():
    gen = torch.Generator().manual_seed(0)
    whole = MultiDigitCNN(4, 5, generator=gen)
    chunked = MultiDigitCNN(4, 5, chunk=3)
    chunked.load_state_dict(whole.state_dict())
    images = torch.rand(2, 4, 1, 28, 112, generator=gen)  # 8 strips: chunks of 3, 3, 2
    out_whole, out_chunked = whole(images), chunked(images)
    assert out_chunked.shape == (2, 4, 5)
    torch.testing.assert_close(out_chunked, out_whole, rtol=1e-6, atol=1e-6)
    out_whole.square().sum().backward()
    out_chunked.square().sum().backward()
    for p, q in zip(whole.parameters(), chunked.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-6)
    sorter = MultiDigitSorter(4, SortRelaxation("softsort", 4), chunk=3)
    assert sorter.cnn.chunk == 3 and sorter.logits(images).shape == (2, 4)
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match="chunk must be a positive int"):
            MultiDigitCNN(chunk=bad)


def test_soft_rank_head_ranks_and_trains():
    pytest.importorskip("torchsort")
    from permlib.nn.ranking import SoftRank, rank_loss

    head = SoftRank(5, tau=1e-3)
    s = torch.randn(3, 5, generator=torch.Generator().manual_seed(0), requires_grad=True)
    ranks = head(s)
    truth = torch.argsort(torch.argsort(s, dim=-1), dim=-1)
    assert ranks.shape == (1, 3, 5)
    torch.testing.assert_close(ranks[0], truth.float())  # 0-based, ascending
    assert torch.equal(head.predict(s), truth)
    soft = SoftRank(5, tau=10.0)(s)
    torch.testing.assert_close(soft.sum(dim=-1), torch.full((1, 3), 10.0))  # sum of 0..4
    rank_loss(soft, truth).backward()
    assert torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0
    assert SoftRank(5)(torch.zeros(0, 5)).shape == (1, 0, 5)
    for dtype in (torch.float16, torch.bfloat16, torch.float64):
        half = head(s.detach().to(dtype))
        assert half.dtype == dtype
        torch.testing.assert_close(half[0].float(), truth.float(), atol=0.05, rtol=0)
    with pytest.raises(ValueError, match="scores"):
        head(torch.tensor([[0.0, float("nan"), 1.0, 2.0, 3.0]]))
    with pytest.raises(TypeError, match="scores must be a floating"):
        head(torch.arange(5).unsqueeze(0))
    with pytest.raises(ValueError, match="tau"):
        SoftRank(5, tau=0.0)
    with pytest.raises(TypeError, match="tau must be a real number"):
        SoftRank(5, tau="1")
    with pytest.raises(ValueError, match="regularization"):
        SoftRank(5, regularization="l1")
    with pytest.raises(ValueError, match="N = 5"):
        head(torch.randn(2, 4))
    # the same small network as the score relaxations learns to sort with it
    net = ScoreSortingNetwork(6, 16, SoftRank(6), generator=torch.Generator().manual_seed(0))
    assert _exact_match_after_training(net) > 0.95


def test_soft_rank_without_torchsort_says_how_to_install(monkeypatch):
    import sys

    from permlib.nn.ranking import SoftRank, torchsort_available

    monkeypatch.setitem(sys.modules, "torchsort", None)  # import torchsort -> ImportError
    assert not torchsort_available()
    with pytest.raises(ImportError, match="no-build-isolation torchsort"):
        SoftRank(4)
