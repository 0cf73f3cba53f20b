"""The methods every experiment compares: a name -> the options of its permutation head.

Keyword arguments of :class:`permlib.nn.PermutationHead` (through the experiments' networks):
the founding papers' heads, Sinkhorn, Gumbel-Sinkhorn (Mena et al., 2018) and the Hungarian
straight-through estimator with and without Gumbel noise, plus permlib's own: Gumbel-Sinkhorn
with tolerance-controlled iterations (``tol=1e-3``, at most 200) and the implicit backward.
"""

from __future__ import annotations

__all__ = ["METHODS", "PAPER_METHODS"]

#: Head settings of each method.
METHODS: dict[str, dict] = {
    "sinkhorn": {"head": "sinkhorn"},
    "gumbel_sinkhorn": {"head": "gumbel_sinkhorn", "noise_factor": 1.0, "n_samples": 10},
    "hste": {"head": "hste", "noise_factor": 0.0},
    "hste_gumbel": {"head": "hste", "noise_factor": 1.0, "n_samples": 10},
    "gumbel_sinkhorn_implicit": {
        "head": "gumbel_sinkhorn",
        "noise_factor": 1.0,
        "n_samples": 10,
        "tol": 1e-3,
        "n_iters": 200,
        "backward": "implicit",
    },
}

#: The method names of the Hungarian-STE paper's tables (and ``paper_tables.json``).
PAPER_METHODS: dict[str, str] = {
    "sinkhorn": "Sinkhorn",
    "hste": "Hungarian-STE without Gumbel noise",
    "gumbel_sinkhorn": "Gumbel-Sinkhorn",
    "hste_gumbel": "Hungarian-STE with Gumbel noise",
}
