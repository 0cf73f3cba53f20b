"""permlib: differentiable permutations in PyTorch.

Conventions used everywhere: inputs have shape ``(..., N, M)`` with batch dimensions first
(square, ``M = N``, for permutations; rectangular for partial matchings); rows index the items
and columns the positions they can take; scores (log-potentials) are maximized, and costs appear
only where a function says so; ``-inf`` scores mark forbidden pairs, and ``n_rows``/``n_cols``/
``mask`` describe padded batches of different sizes. A (partial) permutation is an index tensor
``perm`` of shape ``(..., N)`` with ``perm[..., i]`` the column given to row ``i`` (``-1``: not
assigned), and ``permutation_matrix(perm, m=M)`` is its one-hot ``(..., N, M)`` form.
"""

from permlib import metrics
from permlib.birkhoff import (
    rounding,
    rounding_inverse,
    rounding_log_prob,
    sample_rounding,
    stick_breaking,
    stick_breaking_inverse,
    stick_breaking_log_prob,
)
from permlib.distributions import (
    bhattacharyya_coefficient,
    bhattacharyya_distance,
    hellinger_distance,
)
from permlib.gumbel import gumbel_matching, gumbel_sinkhorn, perturb, sample_gumbel
from permlib.hste import hungarian_ste
from permlib.mallows import Mallows, footrule_distance
from permlib.matching import matching
from permlib.permutations import invert_permutation, permutation_matrix
from permlib.sinkhorn import ConvergenceWarning, SinkhornInfo, log_sinkhorn, sinkhorn

__version__ = "0.1.0"

__all__ = [
    "ConvergenceWarning",
    "Mallows",
    "SinkhornInfo",
    "bhattacharyya_coefficient",
    "bhattacharyya_distance",
    "footrule_distance",
    "gumbel_matching",
    "gumbel_sinkhorn",
    "hellinger_distance",
    "hungarian_ste",
    "invert_permutation",
    "log_sinkhorn",
    "matching",
    "metrics",
    "permutation_matrix",
    "perturb",
    "rounding",
    "rounding_inverse",
    "rounding_log_prob",
    "sample_gumbel",
    "sample_rounding",
    "sinkhorn",
    "stick_breaking",
    "stick_breaking_inverse",
    "stick_breaking_log_prob",
]
