"""Networks: permutation heads shared by every experiment, and the experiments' scorers."""

from permlib.nn.heads import HEADS, Head, PermutationHead, make_head, reconstruct
from permlib.nn.jigsaw import JIGSAW_INITS, JigsawNetwork
from permlib.nn.sorting import INITS, Init, SortingNetwork

__all__ = [
    "HEADS",
    "INITS",
    "JIGSAW_INITS",
    "Head",
    "Init",
    "JigsawNetwork",
    "PermutationHead",
    "SortingNetwork",
    "make_head",
    "reconstruct",
]
