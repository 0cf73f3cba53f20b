import pytest
import torch

from permlib.data import sample_sorting_batch
from permlib.nn import PermutationHead, SortingNetwork, reconstruct
from permlib.permutations import permutation_matrix


@pytest.mark.parametrize("init", ["glorot", "torch"])
def test_equivariance(init, generator):
    """Permuting the inputs permutes the rows of log_alpha, of S(log_alpha) and the prediction."""
    net = SortingNetwork(6, head="sinkhorn", init=init, generator=generator)
    x = torch.rand(3, 6, generator=generator)
    sigma = torch.randperm(6, generator=generator)
    la, la_p = net.log_alpha(x), net.log_alpha(x[:, sigma])
    torch.testing.assert_close(la_p, la[:, sigma])
    torch.testing.assert_close(net(x[:, sigma]), net(x)[:, :, sigma])
    assert torch.equal(net.predict(x[:, sigma]), net.predict(x)[:, sigma])


def test_shapes_and_heads(generator):
    x = torch.rand(4, 5, generator=generator)
    gs = SortingNetwork(5, head="gumbel_sinkhorn", n_samples=3, generator=generator)
    p = gs(x, generator=generator)
    assert p.shape == (3, 4, 5, 5)
    torch.testing.assert_close(p.sum(-2), torch.ones(3, 4, 5))  # columns sum to 1
    hard = SortingNetwork(5, head="hste", noise_factor=1.0, n_samples=2)(x, generator=generator)
    assert hard.shape == (2, 4, 5, 5) and set(hard.unique().tolist()) <= {0.0, 1.0}
    assert SortingNetwork(5, head="sinkhorn")(x).shape == (1, 4, 5, 5)
    assert gs.predict(x).shape == (4, 5)


def test_head_arguments_checked():
    with pytest.raises(ValueError):
        SortingNetwork(5, head="softsort")
    with pytest.raises(ValueError):
        SortingNetwork(5, head="sinkhorn", noise_factor=1.0)
    with pytest.raises(ValueError):
        SortingNetwork(5, head="gumbel_sinkhorn", noise_factor=0.0)
    with pytest.raises(ValueError):
        SortingNetwork(5, init="zeros")
    with pytest.raises(ValueError):
        SortingNetwork(5).log_alpha(torch.rand(2, 4))


def test_seeded_init():
    a = SortingNetwork(5, generator=torch.Generator().manual_seed(1))
    b = SortingNetwork(5, generator=torch.Generator().manual_seed(1))
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert torch.all(a.g1.bias == 0)


def test_reconstruct_with_true_permutation_sorts(generator):
    batch = sample_sorting_batch(3, 8, generator=generator)
    p = permutation_matrix(batch.perm)
    torch.testing.assert_close(reconstruct(p, batch.x), batch.x_sorted)
    # a leading sample dimension broadcasts
    assert reconstruct(p.expand(2, 3, 8, 8), batch.x).shape == (2, 3, 8)


def test_hste_gradient_flows(generator):
    net = SortingNetwork(5, head="hste", generator=generator)
    batch = sample_sorting_batch(4, 5, generator=generator)
    net.loss(batch.x, batch.x_sorted).backward()
    assert net.g2.weight.grad is not None and net.g2.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("bad", [{"n": -1}, {"n": 2.5}, {"n": 5, "hidden": 0}])
def test_sizes_checked(bad):
    with pytest.raises(ValueError, match="n must be|hidden must be"):
        SortingNetwork(**bad)


def test_runs_on_each_device(device, generator):
    net = SortingNetwork(5, generator=generator).to(device)
    batch = sample_sorting_batch(3, 5, generator=generator, device=device)
    assert batch.x.device.type == device.type
    noise = torch.Generator(device=device).manual_seed(0)
    loss = net.loss(batch.x, batch.x_sorted, generator=noise)
    loss.backward()
    assert net.predict(batch.x).device.type == device.type


def test_input_dtype_and_device_checked(generator):
    net = SortingNetwork(5, generator=generator)
    with pytest.raises(TypeError, match="x is torch.float64"):
        net.log_alpha(torch.rand(2, 5, dtype=torch.float64))
    double = SortingNetwork(5, generator=generator).double()
    assert double.log_alpha(torch.rand(2, 5, dtype=torch.float64)).dtype == torch.float64
    with pytest.raises(ValueError, match="x must be lists of 5"):
        net.log_alpha(torch.rand(2, 4))


def test_standardized_network_is_equivariant_and_shift_scale_invariant(generator):
    net = SortingNetwork(6, standardize=True, generator=generator)
    x = torch.rand(3, 6, generator=generator)
    sigma = torch.randperm(6, generator=generator)
    torch.testing.assert_close(net.log_alpha(x[:, sigma]), net.log_alpha(x)[:, sigma])
    torch.testing.assert_close(net.log_alpha(7.0 * x + 3.0), net.log_alpha(x), atol=1e-5,
                               rtol=1e-5)  # fmt: skip
    assert torch.isfinite(net.log_alpha(torch.full((2, 6), 5.0))).all()  # a constant list


def test_a_head_instance_plugs_in():
    head = PermutationHead("hste", noise_factor=1.0, n_samples=3)
    net = SortingNetwork(5, head=head)
    assert net.head is head and net(torch.rand(2, 5)).shape == (3, 2, 5, 5)
    with pytest.raises(ValueError, match="either a PermutationHead or its options"):
        SortingNetwork(5, head=head, tau=0.5)
    with pytest.raises(TypeError):
        SortingNetwork(5, head="sinkhorn", taux=0.5)  # a typo is not swallowed


def test_order_columns_relabels_the_initial_columns_by_slope():
    import torch

    from permlib.nn import SortingNetwork

    ends = torch.tensor([[0.0], [1.0]])

    def slopes(net):
        with torch.no_grad():
            scores = net.g2(torch.relu(net.g1(ends)))
        return scores[1] - scores[0]

    for init in ("glorot", "torch"):
        plain = SortingNetwork(20, init=init, generator=torch.Generator().manual_seed(3))
        ordered = SortingNetwork(20, init=init, order_columns=True,
                                 generator=torch.Generator().manual_seed(3))
        assert torch.equal(plain.g1.weight, ordered.g1.weight)  # only g2's rows move
        slope, plain_slope = slopes(ordered), slopes(plain)
        assert bool((slope[1:] >= slope[:-1]).all())
        assert torch.equal(slope.sort().values, plain_slope.sort().values)


def _sorter(n: int, slopes: torch.Tensor) -> SortingNetwork:
    """A network whose scores are ``slopes[j] * x_i`` (one hidden unit, ReLU of x > 0)."""
    net = SortingNetwork(n, hidden=1, head="sinkhorn")
    with torch.no_grad():
        net.g1.weight.fill_(1.0), net.g1.bias.zero_()
        net.g2.weight.copy_(slopes[:, None]), net.g2.bias.zero_()
    return net


def test_relabel_columns_unsticks_swapped_neighbours():
    """Two neighbouring columns in the wrong order swap those ranks in every list; relabelling on
    training lists puts them back (and the matching is right on fresh lists), a second call
    moves nothing, and the returned order undoes it."""
    n = 6
    slopes = torch.tensor([1.0, 2.0, 4.0, 3.0, 5.0, 6.0])  # columns 2 and 3 out of order
    net = _sorter(n, slopes)
    gen = torch.Generator().manual_seed(0)
    train = sample_sorting_batch(50, n, generator=gen)
    assert (net.predict(train.x) != train.perm).any(dim=-1).all()
    order = net.relabel_columns_(train.x)
    assert order.tolist() == [0, 1, 3, 2, 4, 5]
    test = sample_sorting_batch(200, n, 3.0, 4.0, generator=gen)
    assert torch.equal(net.predict(test.x), test.perm)
    assert torch.equal(net.relabel_columns_(train.x), torch.arange(n))
    assert torch.equal(net.g2.weight[order.argsort()][:, 0], slopes)


def test_relabel_columns_never_places_fewer_numbers_right(generator):
    net = SortingNetwork(12, generator=generator)
    lists = sample_sorting_batch(40, 12, generator=generator)
    before = (net.predict(lists.x) == lists.perm).sum()
    net.relabel_columns_(lists.x)
    assert (net.predict(lists.x) == lists.perm).sum() >= before


@pytest.mark.parametrize("bad", [torch.zeros(0, 4), torch.zeros(4), torch.zeros(2, 3)])
def test_relabel_columns_checks_its_lists(bad):
    with pytest.raises(ValueError, match="x must"):
        SortingNetwork(4).relabel_columns_(bad)
