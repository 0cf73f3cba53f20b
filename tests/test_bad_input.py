"""Every public function rejects bad input with a clear error that names the argument."""

import math

import pytest
import torch

import permlib
from permlib.metrics import constraint_error

SQUARE_FUNCTIONS = {
    "log_sinkhorn": lambda x: permlib.log_sinkhorn(x),
    "sinkhorn": lambda x: permlib.sinkhorn(x),
    "matching": lambda x: permlib.matching(x),
    "gumbel_sinkhorn": lambda x: permlib.gumbel_sinkhorn(x),
    "gumbel_matching": lambda x: permlib.gumbel_matching(x),
    "hungarian_ste": lambda x: permlib.hungarian_ste(x),
    "perturb": lambda x: permlib.perturb(x),
    "constraint_error": lambda x: constraint_error(x),
}

BAD_MATRICES = [
    ("1-D", torch.zeros(3), ValueError, "at least 2 dimensions"),
    ("non-square", torch.zeros(2, 3), ValueError, "square"),
    ("batched non-square", torch.zeros(4, 3, 2), ValueError, "square"),
    ("empty", torch.zeros(0, 0), ValueError, "N >= 1"),
    ("nan", torch.tensor([[0.0, math.nan], [1.0, 0.0]]), ValueError, "invalid numeric entries"),
    ("inf", torch.tensor([[0.0, math.inf], [1.0, 0.0]]), ValueError, "invalid numeric entries"),
    ("-inf", torch.tensor([[0.0, -math.inf], [1.0, 0.0]]), ValueError, "invalid numeric entries"),
    ("integer", torch.zeros(3, 3, dtype=torch.int64), TypeError, "floating dtype"),
    ("not a tensor", [[0.0, 1.0], [1.0, 0.0]], TypeError, "torch.Tensor"),
]


#: Cases that are no longer errors (issue 19): rectangular problems and forbidden pairs (-inf
#: scores), each with a check that the call did the right thing (not merely that it did not raise).
def _plan(fname: str, out, x):
    """The (first) plan or permutation matrix of an output, as a float matrix."""
    if fname == "matching":
        return permlib.permutation_matrix(out, m=x.shape[-1])
    if fname in ("gumbel_sinkhorn", "gumbel_matching"):
        out = out[0][0]
    if fname == "log_sinkhorn":
        out = out.exp()
    return out


def _forbidden_unused(fname: str, out, x) -> bool:
    if fname == "perturb":
        return bool(out[0, 0, 1] == -math.inf)
    p = _plan(fname, out, x)
    return bool(p[0, 1] == 0 and p[0, 0] > 0.9)


def _partial_permutation(fname: str, out, x) -> bool:
    if fname == "constraint_error":
        return out.shape == x.shape[:-2] and bool((out >= 0).all())
    if fname == "perturb":
        return out.shape == (1,) + x.shape
    p = _plan(fname, out, x)
    shorter = -1 if x.shape[-2] <= x.shape[-1] else -2
    return p.shape[-2:] == x.shape[-2:] and torch.allclose(
        p.sum(shorter), torch.ones(()), atol=0.05  # 20 iterations: near 1
    )


ALL = set(SQUARE_FUNCTIONS)
ACCEPTED = {
    "non-square": (ALL, _partial_permutation),
    "batched non-square": (ALL, _partial_permutation),
    "-inf": (ALL - {"constraint_error"}, _forbidden_unused),
}


@pytest.mark.parametrize("fname", SQUARE_FUNCTIONS)
@pytest.mark.parametrize("case,x,exc,msg", BAD_MATRICES, ids=[c[0] for c in BAD_MATRICES])
def test_bad_matrices_are_rejected(fname, case, x, exc, msg):
    accepted, check = ACCEPTED.get(case, ((), None))
    if fname in accepted:
        assert check(fname, SQUARE_FUNCTIONS[fname](x), x)
        return
    with pytest.raises(exc, match=msg):
        SQUARE_FUNCTIONS[fname](x)


@pytest.mark.parametrize(
    "kwargs,exc,msg",
    [
        ({"tau": 0.0}, ValueError, "tau must be a finite number > 0"),
        ({"tau": -1.0}, ValueError, "tau"),
        ({"tau": math.nan}, ValueError, "tau"),
        ({"tau": math.inf}, ValueError, "tau"),
        ({"tau": "1"}, TypeError, "tau"),
        ({"n_iters": 0}, ValueError, "n_iters must be >= 1"),
        ({"n_iters": 2.5}, TypeError, "n_iters must be an integer"),
        ({"tol": 0.0}, ValueError, "tol"),
        ({"tol": -1e-3}, ValueError, "tol"),
        ({"backward": "adjoint"}, ValueError, "backward must be one of"),
    ],
)
@pytest.mark.parametrize("fn", [permlib.log_sinkhorn, permlib.sinkhorn, permlib.gumbel_sinkhorn])
def test_bad_sinkhorn_arguments(fn, kwargs, exc, msg):
    with pytest.raises(exc, match=msg):
        fn(torch.zeros(3, 3), **kwargs)


def test_bad_sampler_arguments():
    x = torch.zeros(3, 3)
    with pytest.raises(ValueError, match="n_samples"):
        permlib.gumbel_sinkhorn(x, n_samples=0)
    with pytest.raises(ValueError, match="noise_factor"):
        permlib.gumbel_matching(x, noise_factor=-1.0)
    with pytest.raises(ValueError, match="generator is on cpu"):
        permlib.perturb(torch.zeros(3, 3, device="meta"), generator=torch.Generator())
    with pytest.raises(TypeError, match="dtype"):
        permlib.sample_gumbel((2,), dtype=torch.int64)
    with pytest.raises(ValueError, match="solver"):
        permlib.matching(x, solver="hungarian")


def test_bad_permutations():
    with pytest.raises(ValueError, match="permutation of 0..2"):
        permlib.permutation_matrix(torch.tensor([0, 2, 2]))
    with pytest.raises(ValueError, match="permutation"):
        permlib.invert_permutation(torch.tensor([0, 3, 1]))
    with pytest.raises(TypeError, match="integer dtype"):
        permlib.permutation_matrix(torch.tensor([0.0, 1.0]))


def test_finite_extreme_input_never_gives_nan():
    x = torch.tensor([[3e38, -3e38], [-3e38, 3e38]])  # finite, near float32's limit
    out = permlib.sinkhorn(x, tau=1e-4)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert torch.equal(out, torch.eye(2))
    with pytest.raises(ValueError, match="overflows even in float64"):
        permlib.sinkhorn(torch.tensor([[1e300, 0.0], [0.0, 1e300]], dtype=torch.float64), 1e-20)


@pytest.mark.parametrize(
    "bad", [3, "seed", torch.zeros(1), object()], ids=["int", "str", "tensor", "object"]
)
@pytest.mark.parametrize(
    "call",
    [
        lambda g: permlib.sample_gumbel((2, 2), generator=g),
        lambda g: permlib.perturb(torch.zeros(3, 3), generator=g),
        lambda g: permlib.gumbel_sinkhorn(torch.zeros(3, 3), generator=g),
        lambda g: permlib.gumbel_matching(torch.zeros(3, 3), generator=g),
    ],
    ids=["sample_gumbel", "perturb", "gumbel_sinkhorn", "gumbel_matching"],
)
def test_generators_of_the_wrong_type_are_named(call, bad):
    """It used to fail with AttributeError: ... has no attribute 'device'."""
    with pytest.raises(TypeError, match="generator must be a torch.Generator or None, got"):
        call(bad)


def test_generator_on_another_device_than_the_samples():
    with pytest.raises(ValueError, match="generator is on cpu, device on meta"):
        permlib.sample_gumbel((2,), generator=torch.Generator(), device="meta")


@pytest.mark.parametrize(
    "shape,exc,msg",
    [
        (None, TypeError, "shape must be an int or a sequence of ints"),
        ("ab", TypeError, "shape must be an int or a sequence of ints"),
        (2.0, TypeError, "shape must be an int or a sequence of ints"),
        (True, TypeError, "shape must be an int or a sequence of ints"),
        ((2.5,), TypeError, r"shape must hold integers, got 2.5 in \(2.5,\)"),
        ((2, None), TypeError, "shape must hold integers"),
        ((-1,), ValueError, r"shape must hold sizes >= 0, got \(-1,\)"),
        ((2, -3), ValueError, "shape must hold sizes >= 0"),
        (-2, ValueError, "shape must hold sizes >= 0"),
    ],
    ids=repr,
)
def test_bad_gumbel_shapes(shape, exc, msg):
    with pytest.raises(exc, match=msg):
        permlib.sample_gumbel(shape)


def test_bad_gumbel_dtype():
    with pytest.raises(TypeError, match="dtype must be a floating torch.dtype"):
        permlib.sample_gumbel((2,), dtype="float32")


@pytest.mark.parametrize(
    "fname,name", [("matching", "scores"), ("hungarian_ste", "log_alpha"),
                   ("gumbel_matching", "scores")]
)
def test_meta_tensors_need_values(fname, name):
    with pytest.raises(ValueError, match=f"{name} is a meta tensor"):
        SQUARE_FUNCTIONS[fname](torch.zeros(2, 3, 3, device="meta"))


@pytest.mark.parametrize(
    "tau,exc,msg",
    [
        (torch.tensor([0.5, 1.0]), TypeError, r"tau must be a real number or a one-element tensor"),
        (torch.tensor(-1.0, requires_grad=True), ValueError, "tau must be a finite number > 0"),
        (torch.tensor(True), TypeError, "tau must be a real number"),
    ],
)
def test_bad_tensor_tau_is_rejected_naming_it(tau, exc, msg):
    with pytest.raises(exc, match=msg):
        permlib.sinkhorn(torch.zeros(3, 3), tau=tau)
