"""RobustDARTS's reduced DARTS spaces S1–S4 (Zela et al., ICLR 2020), on which DARTS-PT tests its robustness.

Each is the DARTS cell (two input nodes, four intermediate nodes, two inputs kept per node)
with fewer candidate ops: S2, S3 and S4 offer the same ops on every edge, S1 a pair of its
own on each edge of each cell type.  Column ``k`` of edge ``e`` in α is the op
``space.edge_ops(cell_type, e)[k]``.  A discrete cell may use on each edge only that edge's ops.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from selbench import GenotypeError, SearchSpace, hookimpl

from .darts import DartsSpace
from .darts_ops import OPS

SKIP, SEP3, DIL3, DIL5 = "skip_connect", "sep_conv_3x3", "dil_conv_3x3", "dil_conv_5x5"
MAX, AVG = "max_pool_3x3", "avg_pool_3x3"

# S1's op pairs per edge, edges in DARTS order (node 2: from 0, 1; node 3: from 0, 1, 2; ...)
S1_OPS: Mapping[str, tuple[tuple[str, str], ...]] = {
    "normal": ((SKIP, DIL3), (SKIP, DIL5), (SKIP, DIL5), (SKIP, SEP3), (SKIP, DIL3), (MAX, SKIP), (SKIP, SEP3),
               (SKIP, SEP3), (SKIP, DIL3), (SKIP, SEP3), (MAX, SKIP), (SKIP, DIL3), (DIL3, DIL5), (DIL3, DIL5)),
    "reduce": ((MAX, AVG), (MAX, DIL3), (MAX, AVG), (MAX, AVG), (SKIP, DIL5), (MAX, AVG), (MAX, SEP3),
               (SKIP, DIL3), (SKIP, DIL5), (MAX, AVG), (MAX, AVG), (SKIP, DIL5), (SKIP, DIL5), (SKIP, DIL5)),
}
UNIFORM_OPS: Mapping[str, tuple[str, ...]] = {
    "darts-s2": (SKIP, SEP3),
    "darts-s3": ("none", SKIP, SEP3),
    "darts-s4": ("noise", SEP3),
}


class RobustDartsSpace(DartsSpace):
    """A DARTS space with a fixed op set, the same on every edge (``per_edge=None``) or one per edge.

    Its ops cannot be changed; the number of intermediate nodes can where every edge has the
    same ops (S2–S4), for small test supernets.
    """

    alpha_shapes = "this space (its α has 14 rows, one column per op of an edge)"

    def __init__(self, name: str, ops: Sequence[str], steps: int = 4,
                 per_edge: Mapping[str, Sequence[Sequence[str]]] | None = None):
        self.name = name
        super().__init__(ops, steps)
        if per_edge is not None:
            self.set_per_edge_ops(per_edge, known_ops=OPS)

    def variant(self, ops: Sequence[str] | None = None, steps: int | None = None) -> RobustDartsSpace:
        if ops is not None and tuple(ops) != self.ops:
            raise GenotypeError(f"the {self.name} space has fixed ops {list(self.ops)}; got ops={list(ops)}")
        if self.per_edge_ops is not None and steps not in (None, self.steps):
            raise GenotypeError(f"the {self.name} space gives each of its {self.num_edges} edges its own ops, "
                                f"so it has {self.steps} nodes; got steps={steps}")
        return RobustDartsSpace(self.name, self.ops, self.steps if steps is None else steps, self.per_edge_ops)

    def network_rules(self, steps: int) -> SearchSpace:
        """The space itself: each edge of a discrete cell keeps to its own ops."""
        return self.variant(steps=steps)

    def ops_of_width(self, num_ops: int) -> Sequence[str] | None:
        return self.ops if num_ops == self.num_ops else None


def robust_darts_spaces() -> list[RobustDartsSpace]:
    """S1–S4 in their published configuration."""
    s1_ops = tuple(op for op in OPS if any(op in pair for cell in S1_OPS.values() for pair in cell))
    return [RobustDartsSpace("darts-s1", s1_ops, per_edge=S1_OPS),
            *(RobustDartsSpace(name, ops) for name, ops in UNIFORM_OPS.items())]


@hookimpl
def selbench_register_spaces(register: Any) -> None:
    for space in robust_darts_spaces():
        register(space)
