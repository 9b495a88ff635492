"""Reference data for the DARTS tests: the op lists, the published cells, hand-made α with worked-out answers."""
from __future__ import annotations

import torch

from selbench import CellGenotype

DARTS_OPS = ["none", "max_pool_3x3", "avg_pool_3x3", "skip_connect",
             "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5"]
DARTS_PT_OPS = DARTS_OPS[1:]

# The published cells (Liu et al., 2019), in its shorthand: "op,input" per pair, two pairs per node.
SHORT_NAMES = {"sep3": "sep_conv_3x3", "dil3": "dil_conv_3x3", "skip": "skip_connect",
               "max": "max_pool_3x3", "avg": "avg_pool_3x3"}
PUBLISHED = {
    "DARTS_V1": {"normal": "sep3,1 sep3,0 skip,0 sep3,1 skip,0 sep3,1 sep3,0 skip,2",
                 "reduce": "max,0 max,1 skip,2 max,0 max,0 skip,2 skip,2 avg,0"},
    "DARTS_V2": {"normal": "sep3,0 sep3,1 sep3,0 sep3,1 sep3,1 skip,0 skip,0 dil3,2",
                 "reduce": "max,0 max,1 skip,2 max,1 max,0 skip,2 skip,2 max,1"},
}
# The same cells written out in the DARTS text form, as the original code prints them.
DARTS_TEXT = {
    "DARTS_V1": "Genotype(normal=[('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('skip_connect', 0), "
                "('sep_conv_3x3', 1), ('skip_connect', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), "
                "('skip_connect', 2)], normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), "
                "('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 0), ('max_pool_3x3', 0), "
                "('skip_connect', 2), ('skip_connect', 2), ('avg_pool_3x3', 0)], reduce_concat=[2, 3, 4, 5])",
    "DARTS_V2": "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), "
                "('sep_conv_3x3', 1), ('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), "
                "('dil_conv_3x3', 2)], normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), "
                "('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1), ('max_pool_3x3', 0), "
                "('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], reduce_concat=range(2, 6))",
}
NB201_TEXT = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|"


def expand(short: str) -> list[tuple[str, int]]:
    """The shorthand "sep3,1 skip,0 ..." as a list of (op, input) pairs."""
    pairs = []
    for token in short.split():
        op, src = token.split(",")
        pairs.append((SHORT_NAMES[op], int(src)))
    return pairs


# -- hand-made α for the DARTS rule, with the cells it must give --------------------------------
# α rows: edges 0-1 feed node 2, 2-4 node 3, 5-8 node 4, 9-13 node 5; within a node, from input 0, 1, ... in turn
NUM_EDGES = 14


def alpha_table(ops: list[str], raised: dict[int, dict[str, float]], none: float = 0.0) -> torch.Tensor:
    """α with every entry 0 except ``raised[edge][op]`` (and ``none`` on every edge, when the space has it)."""
    alpha = torch.zeros(NUM_EDGES, len(ops))
    if "none" in ops:
        alpha[:, ops.index("none")] = none
    for edge, values in raised.items():
        for op, value in values.items():
            alpha[edge, ops.index(op)] = value
    return alpha


def cell(*nodes: list[tuple[str, int]]) -> CellGenotype:
    """A DARTS cell from its four nodes' (op, input) pairs, kept edges in rank order."""
    return CellGenotype.of(nodes, (2, 3, 4, 5))


# Normal cell: `none` (6) is the largest logit on every edge and must play no part.  Among the other ops each
# edge has one or two raised logits; with the rest of a row equal, a larger raised logit means a larger
# softmax weight, which makes the ranking readable off the numbers below.
NORMAL_8 = {
    # node 2: edge 1 (dil_conv_5x5, 3) outranks edge 0 (sep_conv_3x3, 2); DARTS lists kept edges by rank
    0: {"sep_conv_3x3": 2}, 1: {"dil_conv_5x5": 3},
    # node 3: its best edge is a skip_connect from node 0; then sep_conv_5x5 from node 2
    2: {"skip_connect": 4}, 3: {"max_pool_3x3": 1}, 4: {"sep_conv_5x5": 2.5},
    # node 4: edges 6 and 8 are identical and strongest; within each, avg_pool_3x3 and dil_conv_3x3 tie
    # and the lower op index (avg_pool_3x3) wins
    5: {"sep_conv_3x3": 3}, 6: {"avg_pool_3x3": 4, "dil_conv_3x3": 4}, 7: {"sep_conv_3x3": 1},
    8: {"avg_pool_3x3": 4, "dil_conv_3x3": 4},
    # node 5: edge 9 wins clearly; edges 11 and 13 tie for the second place and the lower edge index wins
    9: {"dil_conv_3x3": 5}, 10: {"skip_connect": 1}, 11: {"max_pool_3x3": 2}, 13: {"max_pool_3x3": 2},
}
NORMAL_8_EXPECTED = cell(
    [("dil_conv_5x5", 1), ("sep_conv_3x3", 0)],
    [("skip_connect", 0), ("sep_conv_5x5", 2)],
    [("avg_pool_3x3", 1), ("avg_pool_3x3", 3)],
    [("dil_conv_3x3", 0), ("max_pool_3x3", 2)],
)
REDUCE_8 = {
    # node 2: max_pool_3x3 from node 0 (3 beats its own avg 1), then avg_pool_3x3 from node 1
    0: {"max_pool_3x3": 3, "avg_pool_3x3": 1}, 1: {"avg_pool_3x3": 2},
    # node 3: best edge is the skip from node 2, then dil_conv_5x5 from node 1
    2: {"sep_conv_3x3": 1}, 3: {"dil_conv_5x5": 2}, 4: {"skip_connect": 3},
    # node 4: nothing raised: all edges and all ops tie -> first two edges, first non-none op
    # node 5: dil_conv_3x3 from node 2, then the skip from node 3 (3.5 beats avg's 3 on edge 13)
    9: {"sep_conv_5x5": 1}, 10: {"sep_conv_5x5": 1}, 11: {"dil_conv_3x3": 4}, 12: {"skip_connect": 3.5},
    13: {"avg_pool_3x3": 3},
}
REDUCE_8_EXPECTED = cell(
    [("max_pool_3x3", 0), ("avg_pool_3x3", 1)],
    [("skip_connect", 2), ("dil_conv_5x5", 1)],
    [("max_pool_3x3", 0), ("max_pool_3x3", 1)],
    [("dil_conv_3x3", 2), ("skip_connect", 3)],
)

# DARTS-PT's 7-op space: no `none`.
NORMAL_7 = {
    0: {"sep_conv_5x5": 1}, 1: {"skip_connect": 2},
    2: {"dil_conv_3x3": 3}, 4: {"max_pool_3x3": 2},
    6: {"avg_pool_3x3": 1}, 7: {"sep_conv_3x3": 4}, 8: {"dil_conv_5x5": 2},
    9: {"skip_connect": 3}, 10: {"skip_connect": 3}, 11: {"skip_connect": 3},
}
NORMAL_7_EXPECTED = cell(
    [("skip_connect", 1), ("sep_conv_5x5", 0)],
    [("dil_conv_3x3", 0), ("max_pool_3x3", 2)],
    [("sep_conv_3x3", 2), ("dil_conv_5x5", 3)],
    [("skip_connect", 0), ("skip_connect", 1)],
)
REDUCE_7 = {13: {"sep_conv_3x3": 5}}
REDUCE_7_EXPECTED = cell(
    [("max_pool_3x3", 0), ("max_pool_3x3", 1)],
    [("max_pool_3x3", 0), ("max_pool_3x3", 1)],
    [("max_pool_3x3", 0), ("max_pool_3x3", 1)],
    [("sep_conv_3x3", 4), ("max_pool_3x3", 0)],
)
